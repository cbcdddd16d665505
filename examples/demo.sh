#!/usr/bin/env bash
# Runs one cloud job end to end on the embedded default (SQLite, local artifacts, local worker
# processes): start the API, log in, dispatch a job on a sample repository with the script
# agent, follow it, pull it. Everything lives in a temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Checking what the demo needs (git, curl, bubblewrap, prlimit, setpriv, Rust)"
# Installs what is missing where it can, else stops now with the command to run: the agent is
# always sandboxed, so a machine without bubblewrap fails here, not after the build.
bash examples/requirements.sh

say "Building ckrv, ckrv-api and ckrv-orchestrator"
cargo build --locked -p ckrv -p ckrv-api -p ckrv-orchestrator
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
bin="${target_dir:-target}/debug"

demo="$(mktemp -d)"
api_pid=""
cleanup() { [ -n "$api_pid" ] && kill "$api_pid" 2>/dev/null; rm -rf "$demo"; }
trap cleanup EXIT
export CKRV_CONFIG_DIR="$demo/config" CKRV_CACHE_DIR="$demo/cache"

say "Creating a sample repository"
git init -q -b main "$demo/sample-src"
printf '# Sample\n\nStatus: draft\n' > "$demo/sample-src/README.md"
git -C "$demo/sample-src" add -A
git -C "$demo/sample-src" -c user.name=Demo -c user.email=demo@example.com commit -q -m initial
git clone -q --bare "$demo/sample-src" "$demo/sample.git"
repo="file://$demo/sample.git"

say "Adding your account (ckrv-api users add; accounts are made by an administrator)"
password="demo-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s' "$password" | "$bin/ckrv-api" users add you@example.com --admin --password-stdin \
  --data-dir "$demo/api"

say "Starting ckrv-api (SQLite + local artifacts + local workers in $demo/api)"
# --allow-local-repos: the demo's repository is a local file:// one.
"$bin/ckrv-api" serve --listen 127.0.0.1:0 --data-dir "$demo/api" --allow-local-repos \
  --orchestrator "$bin/ckrv-orchestrator" > "$demo/api.out" 2> "$demo/api.log" &
api_pid=$!
for _ in $(seq 100); do grep -q '^listening on ' "$demo/api.out" 2>/dev/null && break; sleep 0.1; done
export CKRV_API_URL="$(sed -n 's/^listening on //p' "$demo/api.out")"
[ -n "$CKRV_API_URL" ] || { echo "ckrv-api did not start:"; cat "$demo/api.log"; exit 1; }
echo "API at $CKRV_API_URL"

say "ckrv cloud login (the demo signs in on /activate and approves, as you would in a browser)"
"$bin/ckrv" cloud login --no-browser > "$demo/login.out" 2>&1 &
login_pid=$!
for _ in $(seq 100); do grep -q 'Enter code:' "$demo/login.out" && break; sleep 0.1; done
code="$(sed -n 's/.*Enter code: *//p' "$demo/login.out" | tr -d '[:space:]')"
jar="$demo/browser-cookies"
field() { sed -n "s/.*name=\"$1\" value=\"\([^\"]*\)\".*/\1/p" | head -n 1; }
nonce="$(curl -fsS -c "$jar" -b "$jar" "$CKRV_API_URL/signin" | field nonce)"
curl -fsS -o /dev/null -c "$jar" -b "$jar" --data-urlencode "email=you@example.com" \
  --data-urlencode "password=$password" --data-urlencode "nonce=$nonce" "$CKRV_API_URL/signin"
csrf="$(curl -fsS -c "$jar" -b "$jar" "$CKRV_API_URL/activate?user_code=$code" | field csrf)"
curl -fsS -o /dev/null -c "$jar" -b "$jar" --data-urlencode "csrf=$csrf" \
  --data-urlencode "user_code=$code" --data-urlencode "decision=approve" "$CKRV_API_URL/activate"
wait "$login_pid"
cat "$demo/login.out"

say "Preparing a worktree with a spec for the script agent"
git clone -q "$repo" "$demo/work"
cd "$demo/work"
mkdir -p specs/greeting
cat > specs/greeting/spec.md <<'SPEC'
---
agent: script
run: |
  echo "Reading the spec..."
  mkdir -p src
  printf 'pub fn greet() -> &str {\n    "hello"\n}\n' > src/greet.rs
  sed -i 's/draft/done/' README.md
  echo "Implemented the greeting."
---
# Greeting

Add a greeting function and mark the README done.
SPEC

say "ckrv run --cloud"
"$bin/ckrv" run --cloud --provider chakravarti --spec specs/greeting/spec.md \
  --repo "$repo" --base-branch main | tee "$demo/run.out"
job="$(sed -n 's/.*Job ID: *//p' "$demo/run.out" | tr -d '[:space:]')"

say "ckrv logs ${job:0:8} --follow"
"$bin/ckrv" logs "${job:0:8}" --follow

say "ckrv status ${job:0:8}"
"$bin/ckrv" status "${job:0:8}"

say "ckrv pull ${job:0:8}"
"$bin/ckrv" pull "${job:0:8}"

say "git diff HEAD (the agent's change, now in your worktree)"
git --no-pager diff HEAD
git status --short
