//! A hostile worker step, for tests only: its `mode` param picks the attack. Each must end
//! the job with a message naming the step and the limit, and leave the worker running.

ckrv_wit::guest_bindings!("../../../wit", "ckrv:cloud/worker-step", generate_all);

use ckrv_wit::guest::http;
use exports::ckrv::cloud::step::{Guest, StepContext, StepOutput};

struct Hostile;

impl Guest for Hostile {
    fn run(ctx: StepContext) -> Result<StepOutput, String> {
        let param = |name: &str| {
            ctx.params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        match param("mode").as_str() {
            // A loop with no host call in it: only an epoch deadline stops it.
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            // Allocates and touches memory until something stops it.
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 * 1024 * 1024]);
                    std::hint::black_box(&hoard);
                }
            }
            // Reads outside the workspace, by absolute path and by climbing out of it.
            "escape" => {
                let mut reached = Vec::new();
                for path in [
                    "/etc/passwd",
                    "/workspace/../etc/passwd",
                    "../../../../etc/passwd",
                    "/proc/self/environ",
                ] {
                    if std::fs::read(path).is_ok() {
                        reached.push(path);
                    }
                }
                if reached.is_empty() {
                    Err("could not read outside /workspace".into())
                } else {
                    Ok(StepOutput {
                        outputs: vec![],
                        summary: format!("ESCAPED: read {}", reached.join(", ")),
                    })
                }
            }
            // Calls a URL the stage did not allow.
            "call" => http::send("GET", &param("url"), &[], None)
                .map(|_| StepOutput {
                    outputs: vec![],
                    summary: "CALLED OUT".into(),
                })
                .map_err(|e| format!("request failed: {e}")),
            "panic" => panic!("the hostile step panicked on purpose"),
            other => Err(format!("unknown mode `{other}`")),
        }
    }
}

export!(Hostile);
