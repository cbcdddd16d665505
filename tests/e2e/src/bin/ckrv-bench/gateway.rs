//! What the model gateway adds to an agent's model requests: the same streamed Anthropic
//! Messages answer asked of a stand-in on loopback directly (with the real key) and through
//! the real `ckrv-api`'s gateway (with a running job's model token), one after the other.
//!
//! The stand-in sends its first event at once and the rest [`REST_AFTER`] later, so the time to
//! the first byte shows whether the gateway passes an answer on as it comes or holds it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use serde_json::Value;

use crate::engine::Engine;
use crate::table::Table;

/// The operator's key, which only the stand-in ever sees.
pub const KEY: &str = "sk-ant-bench-operators-key-0123456789";
/// How long the stand-in waits between its first event and the rest.
const REST_AFTER: Duration = Duration::from_millis(5);

const FIRST: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"usage\":{\"input_tokens\":1000,\"output_tokens\":1}}}\n\n";
const REST: &str = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Done.\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":50}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

/// A stand-in of Anthropic's Messages API that answers only the operator's key.
pub struct StandIn {
    pub url: String,
}

impl StandIn {
    /// Listens on loopback; serves until the runtime ends.
    pub fn start(runtime: &tokio::runtime::Runtime) -> Result<Self> {
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr: SocketAddr = listener.local_addr()?;
        let app = axum::Router::new().route("/v1/messages", axum::routing::post(answer));
        // As a vendor's API does, each streamed event goes out at once (no Nagle delay).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        runtime.spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            url: format!("http://{addr}"),
        })
    }
}

async fn answer(headers: HeaderMap, _body: Bytes) -> Response {
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(KEY) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(Body::from("{\"type\":\"error\"}"))
            .unwrap_or_default();
    }
    let events = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from(FIRST)) })
        .chain(futures::stream::once(async {
            tokio::time::sleep(REST_AFTER).await;
            Ok(Bytes::from(REST))
        }));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(events))
        .unwrap_or_default()
}

/// Times to the first byte and to the end of one streamed answer.
struct Timed {
    first: Duration,
    whole: Duration,
}

async fn ask(http: &reqwest::Client, url: &str, key: &str) -> Result<Timed> {
    let start = Instant::now();
    let response = http
        .post(url)
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Go."}]}"#)
        .send()
        .await?;
    ensure!(
        response.status() == 200,
        "POST {url}: {}",
        response.status()
    );
    let mut body = response.bytes_stream();
    let mut first = None;
    let mut text = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if first.is_none() && !chunk.is_empty() {
            first = Some(start.elapsed());
        }
        text.extend_from_slice(&chunk);
    }
    let whole = start.elapsed();
    ensure!(
        text.ends_with(b"{\"type\":\"message_stop\"}\n\n"),
        "POST {url}: the answer did not arrive whole"
    );
    Ok(Timed {
        first: first.context("an empty answer")?,
        whole,
    })
}

/// The `--agent-secrets` file giving the gateway the operator's key.
pub fn secrets_file(dir: &Path) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("agent-secrets.env");
    std::fs::write(&path, format!("ANTHROPIC_API_KEY={KEY}\n"))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(path)
}

/// `requests` answers each way, alternating, after a warm-up that opens the connections.
pub async fn measure(
    engine: &Engine,
    stand_in: &StandIn,
    requests: usize,
    table: &mut Table,
) -> Result<()> {
    let job = engine
        .running_job("---\nagent: claude-code\n---\n# Bench\n")
        .await?;
    let work: Value = engine
        .http
        .get(format!("{}/v1/worker/jobs/{}", engine.url, job.id))
        .bearer_auth(&job.token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let Some(token) = work["model_access"]["token"].as_str() else {
        bail!("the claude-code job has no model token: {work}");
    };
    let direct = format!("{}/v1/messages", stand_in.url);
    let gateway = format!("{}/v1/gateway/anthropic/v1/messages", engine.url);
    let http = reqwest::Client::new();
    for _ in 0..10 {
        ask(&http, &direct, KEY).await?;
        ask(&http, &gateway, token).await?;
    }
    let (mut plain, mut through) = (Vec::new(), Vec::new());
    for _ in 0..requests {
        plain.push(ask(&http, &direct, KEY).await?);
        through.push(ask(&http, &gateway, token).await?);
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let pick = |timed: &[Timed], f: fn(&Timed) -> Duration| timed.iter().map(f).collect();
    let (mut plain_whole, mut through_whole): (Vec<_>, Vec<_>) =
        (pick(&plain, |t| t.whole), pick(&through, |t| t.whole));
    let (mut plain_first, mut through_first): (Vec<_>, Vec<_>) =
        (pick(&plain, |t| t.first), pick(&through, |t| t.first));
    let added = |a: &mut Vec<Duration>, b: &mut Vec<Duration>| {
        median(a).as_secs_f64() * 1000.0 - median(b).as_secs_f64() * 1000.0
    };
    let whole_added = added(&mut through_whole, &mut plain_whole);
    let first_added = added(&mut through_first, &mut plain_first);
    table.row(
        "model request (streamed Messages answer), straight to the stand-in",
        &plain_whole,
    );
    table.row(
        &format!("same, through the model gateway (median {whole_added:+.2} ms)"),
        &through_whole,
    );
    table.row(
        "first streamed byte, straight to the stand-in",
        &plain_first,
    );
    table.row(
        &format!("first streamed byte, through the gateway (median {first_added:+.2} ms)"),
        &through_first,
    );
    let usage: Value = engine
        .http
        .get(format!("{}/v1/jobs/{}", engine.url, job.id))
        .bearer_auth(&engine.token)
        .send()
        .await?
        .json()
        .await?;
    let counted = usage["usage"]["requests"].as_u64().unwrap_or_default();
    ensure!(
        counted >= requests as u64,
        "the gateway counted {counted} requests of the {requests} it forwarded: {usage}"
    );
    Ok(())
}
