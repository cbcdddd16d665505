#!/usr/bin/env bash
# The real agent CLIs, at the releases their images pin (ARG …_VERSION in agents/*/Containerfile),
# installed where a local worker's sandbox finds them: under /usr/local, which the sandbox binds
# read-only (a user's ~/.local or a pyenv Python would not be there). claude, codex and gemini
# come from npm (Node.js 20 or later); aider from PyPI, in a virtualenv of the system's Python
# (/usr/bin/python3, 3.10 to 3.12, with venv), linked from /usr/local/bin. A CLI already at its
# pinned release is left as it is. Needs root.
#
#   bash examples/agent-clis.sh                  all four
#   bash examples/agent-clis.sh claude aider     only these
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
say() { printf '%s\n' "$*" >&2; }
pinned() { sed -n "s/^ARG $2=//p" "agents/$1/Containerfile"; }
# at PROGRAM RELEASE: whether PROGRAM in the prefix reports RELEASE.
at() { [ -x "$prefix/bin/$1" ] && "$prefix/bin/$1" --version 2>/dev/null | grep -qF "$2"; }

npm_cli() {
  local program="$1" package="$2" release="$3"
  shift 3
  if at "$program" "$release"; then
    say "$program $release: installed"
    return
  fi
  say "$program: npm install --global --prefix $prefix $package@$release"
  npm install --global --prefix "$prefix" --no-audit --no-fund --loglevel=error "$@" "$package@$release"
  at "$program" "$release" || { say "error: $prefix/bin/$program does not report $release"; exit 1; }
}

aider_cli() {
  local release venv
  release="$(pinned aider AIDER_VERSION)"
  venv="$prefix/lib/ckrv-agents/aider-$release"
  if at aider "$release"; then
    say "aider $release: installed"
    return
  fi
  if ! /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null; then
    say "error: aider needs the system's Python with venv at /usr/bin/python3 (apt-get install python3-venv)"
    exit 1
  fi
  say "aider: pip install aider-chat==$release into $venv"
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "aider-chat==$release"
  ln -sf "$venv/bin/aider" "$prefix/bin/aider"
  at aider "$release" || { say "error: $prefix/bin/aider does not report $release"; exit 1; }
}

[ "$(id -u)" = 0 ] || { say "error: installing under $prefix needs root"; exit 1; }
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(claude codex gemini aider)
for cli in "${wanted[@]}"; do
  case "$cli" in
    # Its postinstall puts this platform's native binary in place: scripts must run.
    claude) npm_cli claude @anthropic-ai/claude-code "$(pinned claude-code CLAUDE_CODE_VERSION)" ;;
    # Prebuilt (a native binary, a bundle): nothing to build, so no install scripts.
    codex) npm_cli codex @openai/codex "$(pinned codex CODEX_VERSION)" --ignore-scripts ;;
    gemini) npm_cli gemini @google/gemini-cli "$(pinned gemini-cli GEMINI_CLI_VERSION)" --ignore-scripts ;;
    aider) aider_cli ;;
    *) say "error: unknown agent CLI \`$cli\`; known: claude codex gemini aider"; exit 2 ;;
  esac
done
