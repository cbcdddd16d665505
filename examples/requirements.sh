#!/usr/bin/env bash
# What a machine needs to build ckrv and run a job with its agent sandboxed: git, curl,
# bubblewrap (bwrap) with util-linux's prlimit and setpriv, and Rust through rustup (which adds
# the wasm32-wasip2 target rust-toolchain.toml names). Whatever is missing is installed where
# this can (as root, with apt-get, dnf, zypper or pacman; brew for what macOS can have), saying
# the command it runs; otherwise it stops at once with the command to run. It never falls back
# to running agents unsandboxed.
#
#   bash examples/requirements.sh           check, and install what is missing
#   bash examples/requirements.sh --check   check only; exit 1 naming what is missing
set -euo pipefail

install=1
[ "${1:-}" = "--check" ] && install=0

say() { printf '%s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
# Debian and others keep prlimit and setpriv in /usr/sbin or /sbin, off a user's PATH.
have_tool() { have "$1" || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

missing_tools() {
  local tool
  for tool in git curl bwrap prlimit setpriv; do
    have_tool "$tool" || printf '%s\n' "$tool"
  done
}

# The package manager's install command for the missing tools, one line, without sudo.
install_command() {
  local tools=("$@") packages=() tool
  if [ "$(uname -s)" = Darwin ]; then
    for tool in "${tools[@]}"; do
      case "$tool" in
        git | curl) packages+=("$tool") ;;
        *) return 1 ;; # bubblewrap and util-linux's tools are Linux only
      esac
    done
    [ ${#packages[@]} -gt 0 ] && echo "brew install ${packages[*]}"
    return 0
  fi
  if have apt-get; then
    for tool in "${tools[@]}"; do
      case "$tool" in
        bwrap) packages+=(bubblewrap) ;;
        prlimit | setpriv) packages+=(util-linux) ;;
        *) packages+=("$tool") ;;
      esac
    done
    echo "apt-get update -qq && apt-get install -y -qq $(printf '%s\n' "${packages[@]}" | sort -u | tr '\n' ' ')"
  elif have dnf; then
    # dnf and zypper resolve a program's path to the package that provides it.
    for tool in "${tools[@]}"; do packages+=("/usr/bin/$tool"); done
    echo "dnf install -y ${packages[*]}"
  elif have zypper; then
    for tool in "${tools[@]}"; do packages+=("/usr/bin/$tool"); done
    echo "zypper --non-interactive install ${packages[*]}"
  elif have pacman; then
    for tool in "${tools[@]}"; do
      case "$tool" in
        bwrap) packages+=(bubblewrap) ;;
        prlimit | setpriv) packages+=(util-linux) ;;
        *) packages+=("$tool") ;;
      esac
    done
    echo "pacman -S --needed --noconfirm $(printf '%s\n' "${packages[@]}" | sort -u | tr '\n' ' ')"
  else
    return 1
  fi
}

# 1. System tools.
mapfile -t missing < <(missing_tools)
if [ ${#missing[@]} -gt 0 ]; then
  if ! command_line="$(install_command "${missing[@]}")"; then
    say "error: missing ${missing[*]}, which this system's packages do not provide."
    say "  The agent sandbox needs Linux with bubblewrap and util-linux (prlimit, setpriv);"
    say "  on macOS run the service in a Linux VM or container, or see docs/security.md."
    exit 1
  fi
  if [ "$install" = 1 ] && [ "$(id -u)" = 0 ]; then
    say "==> installing ${missing[*]}: $command_line"
    bash -c "$command_line" >&2
    # Debian 13 moved setpriv into a package of its own.
    if ! have_tool setpriv && have apt-get && apt-cache show setpriv >/dev/null 2>&1; then
      say "==> installing setpriv: apt-get install -y -qq setpriv"
      apt-get install -y -qq setpriv >&2
    fi
    mapfile -t missing < <(missing_tools)
    if [ ${#missing[@]} -gt 0 ]; then
      say "error: still missing after the install: ${missing[*]}"
      exit 1
    fi
  elif [ "$install" = 1 ] && [ "$(uname -s)" = Darwin ]; then
    say "==> installing ${missing[*]}: $command_line"
    bash -c "$command_line" >&2
  else
    say "error: missing ${missing[*]}; install with:"
    if [ "$(id -u)" = 0 ] || [ "$(uname -s)" = Darwin ]; then
      say "  $command_line"
    else
      say "  sudo sh -c '$command_line'"
    fi
    exit 1
  fi
fi

# 2. The sandbox works here (a container may forbid the namespaces it needs).
if [ "$(uname -s)" = Linux ] && ! error="$(bwrap --unshare-all --die-with-parent --ro-bind / / true 2>&1)"; then
  say "error: bubblewrap is installed but cannot make a sandbox here: $error"
  say "  It needs user namespaces: run as root, or allow them (sysctl kernel.unprivileged_userns_clone=1;"
  say "  on Ubuntu 24.04 and later, an AppArmor profile for bwrap), or run on a machine that has them."
  exit 1
fi
# bubblewrap 0.8.0 added --size, which bounds the agent's memory-backed /tmp; the sandbox will
# not start an agent without that bound.
if [ "$(uname -s)" = Linux ] && ! bwrap --help 2>&1 | grep -q -- '--size'; then
  say "error: $(bwrap --version 2>&1 | head -1) is older than 0.8.0, which the sandbox needs to bound"
  say "  the agent's /tmp. Install bubblewrap 0.8.0 or later (Debian 12 and Ubuntu 24.04 ship it)."
  exit 1
fi

# 3. Rust through rustup, with the WebAssembly target the plugins and steps are built for.
if ! have cargo || ! have rustup; then
  say "error: Rust is not installed through rustup; install it with:"
  say "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y && . \"\$HOME/.cargo/env\""
  exit 1
fi
cd "$(dirname "$0")/.."
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  if [ "$install" = 1 ]; then
    say "==> adding the Rust target: rustup target add wasm32-wasip2"
    rustup target add wasm32-wasip2 >&2
  else
    say "error: the Rust target wasm32-wasip2 is missing; add it with: rustup target add wasm32-wasip2"
    exit 1
  fi
fi
