//! A stand-in for every real coding agent's CLI: installed under each program's name in a
//! directory given to workers as `--agent-bin`, it writes to its output exactly how it was
//! called (arguments, environment, standard input, a prompt file), a SHA-256 of every `*_KEY`
//! it received (so a test can prove the exact secret arrived while the log shows it redacted),
//! calls its model through the gateway as its CLI would when it was pointed at one (Anthropic's
//! Messages API, with its key variable's value in `x-api-key`), tries a host outside its egress
//! policy (`localhost:9`), then edits the workspace like an agent would.

use std::path::Path;

const SCRIPT: &str = r#"#!/bin/sh
name=$(basename "$0")
echo "$name: starting"
for arg in "$@"; do printf 'argv: %s\n' "$arg"; done
for arg in "$@"; do
  case "$arg" in
    /run/ckrv/*) [ -f "$arg" ] && sed 's/^/prompt-file: /' "$arg" ;;
  esac
done
if [ ! -t 0 ]; then sed 's/^/stdin: /'; fi
env | sort | sed 's/^/env: /'
for var in $(env | sed -n 's/^\([A-Z_]*_KEY\)=.*/\1/p' | sort); do
  eval "value=\$$var"
  printf 'key-sha256: %s=%s\n' "$var" "$(printf %s "$value" | sha256sum | cut -d' ' -f1)"
done
if [ -n "$ANTHROPIC_BASE_URL" ] && [ -n "$ANTHROPIC_API_KEY" ]; then
  answer=$(curl -sS --max-time 20 -X POST "$ANTHROPIC_BASE_URL/v1/messages" \
    -H "x-api-key: $ANTHROPIC_API_KEY" -H 'anthropic-version: 2023-06-01' \
    -H 'content-type: application/json' \
    -d '{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}' 2>&1)
  printf 'model-answer: %s\n' "$answer"
fi
# What a hostile prompt asks for: a host outside the job's egress policy (loopback, so nothing
# leaves the machine if the policy fails).
printf 'outside: %s\n' "$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' http://localhost:9/ 2>&1)"
printf 'edited by %s\n' "$name" >> README.md
# Aider keeps its repository map here, whatever it is told.
if [ "$name" = aider ]; then mkdir -p .aider.tags.cache.v4 && echo cache > .aider.tags.cache.v4/cache.db; fi
echo "$name: done"
"#;

/// Writes the stand-in under each of `programs` in `dir`, and opens `dir` (and the stand-ins)
/// to the sandbox's unprivileged user, which must read them.
pub fn install_agent_stand_ins(dir: &Path, programs: &[&str]) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).expect("creating the stand-ins' directory");
    for program in programs {
        let path = dir.join(program);
        std::fs::write(&path, SCRIPT).expect("writing a stand-in");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("making a stand-in executable");
    }
    // Up to, not including, the temporary directory itself (sticky, and not ours to change).
    let tmp = std::env::temp_dir();
    for open in dir
        .ancestors()
        .take_while(|d| d.starts_with(&tmp) && *d != tmp)
    {
        let _ = std::fs::set_permissions(open, std::fs::Permissions::from_mode(0o755));
    }
}

/// The workspace's `ckrv-egress-bridge` (built with the workspace's binaries), for a sandbox
/// run in a test's own process, whose program is not beside it.
pub fn egress_bridge() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's program");
    let mut dir = exe.parent().expect("a directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bridge = dir.join("ckrv-egress-bridge");
    assert!(
        bridge.is_file(),
        "{} is not built; run `cargo build -p ckrv-agents --bins` (or `cargo test` for the workspace)",
        bridge.display()
    );
    bridge
}
