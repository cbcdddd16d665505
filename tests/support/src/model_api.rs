//! Scripted stand-ins of the model vendors' APIs, for the real agent CLIs: each answers the
//! CLI's requests in its vendor's own wire format (streamed when asked, whole otherwise), with
//! the tool calls or edits of a script, and reports usage a test finds again in `ckrv status`.
//! On every request it also takes an [`AgentView`]: the agent is waiting on its model then, so
//! its processes are there to be looked at.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::response::Response;
use serde_json::{Value, json};

use crate::agent_view::AgentView;
use crate::fake_endpoint::{FakeEndpoint, Recorded};

/// What one answer reports as used, as the vendor would bill it.
const INPUT_TOKENS: u64 = 1000;
const OUTPUT_TOKENS: u64 = 50;

/// A scripted model API on loopback.
pub struct ModelApi {
    pub endpoint: FakeEndpoint,
    seen: Arc<Mutex<Seen>>,
}

#[derive(Default)]
struct Seen {
    views: Vec<AgentView>,
    answered: u64,
}

impl ModelApi {
    /// The tokens each answer reports.
    pub const INPUT_TOKENS: u64 = INPUT_TOKENS;
    pub const OUTPUT_TOKENS: u64 = OUTPUT_TOKENS;

    /// Anthropic's Messages API (`POST /v1/messages`): while the agent's conversation has
    /// fewer tool results than `tools` has calls, the next call is the answer (`(name, input)`
    /// of one of the CLI's tools); then a last text answer ends the turn. A request without
    /// tools (a title, a summary) gets a text answer.
    pub async fn anthropic(secret: &str, tools: Vec<(&'static str, Value)>) -> Self {
        Self::start(secret, move |request| {
            if !request.path().ends_with("/v1/messages") {
                return None;
            }
            let body: Value = serde_json::from_slice(&request.body).ok()?;
            let offered = body["tools"].as_array().is_some_and(|t| !t.is_empty());
            let done = tool_results(&body["messages"]);
            let (block, delta, stop) = match tools.get(done).filter(|_| offered) {
                Some((name, input)) => (
                    json!({"type": "tool_use", "id": format!("toolu_{done}"), "name": name, "input": {}}),
                    json!({"type": "input_json_delta", "partial_json": input.to_string()}),
                    "tool_use",
                ),
                None => (
                    json!({"type": "text", "text": ""}),
                    json!({"type": "text_delta", "text": "Done."}),
                    "end_turn",
                ),
            };
            let model = body["model"].as_str().unwrap_or("claude").to_string();
            if body["stream"] == true {
                let events = [
                    json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": 1}}}),
                    json!({"type": "content_block_start", "index": 0, "content_block": block}),
                    json!({"type": "content_block_delta", "index": 0, "delta": delta}),
                    json!({"type": "content_block_stop", "index": 0}),
                    json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": OUTPUT_TOKENS}}),
                    json!({"type": "message_stop"}),
                ];
                return Some(event_stream(sse(&events)));
            }
            let mut content = block;
            match content["type"].as_str() {
                Some("tool_use") => {
                    content["input"] =
                        serde_json::from_str(delta["partial_json"].as_str().unwrap_or("{}"))
                            .unwrap_or_default()
                }
                _ => content["text"] = json!("Done."),
            }
            Some(json_answer(&json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": model,
                "content": [content], "stop_reason": stop, "stop_sequence": null,
                "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS},
            })))
        })
        .await
    }

    /// OpenAI's Chat Completions API (`POST /v1/chat/completions`): every answer is `text`,
    /// streamed as chunks with the usage in a last chunk when asked to stream.
    pub async fn openai_chat(secret: &str, text: &'static str) -> Self {
        Self::start(secret, move |request| {
            if !request.path().ends_with("/chat/completions") {
                return None;
            }
            let body: Value = serde_json::from_slice(&request.body).ok()?;
            let model = body["model"].as_str().unwrap_or("gpt").to_string();
            let usage = json!({"prompt_tokens": INPUT_TOKENS, "completion_tokens": OUTPUT_TOKENS, "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS});
            if body["stream"] == true {
                let chunk = |choices: Value| json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": choices});
                let mut last = chunk(json!([]));
                last["usage"] = usage;
                let chunks = [
                    chunk(
                        json!([{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": null}]),
                    ),
                    chunk(json!([{"index": 0, "delta": {}, "finish_reason": "stop"}])),
                    last,
                ];
                let mut stream: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
                stream.push_str("data: [DONE]\n\n");
                return Some(event_stream(stream));
            }
            Some(json_answer(&json!({
                "id": "c1", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": usage,
            })))
        })
        .await
    }

    /// OpenAI's Responses API (`POST /v1/responses`, streamed), as Codex calls it: while the
    /// conversation has fewer function-call outputs than `commands`, the next is run with the
    /// CLI's `exec_command` tool; then a last message ends the turn.
    pub async fn openai_responses(secret: &str, commands: Vec<String>) -> Self {
        Self::start(secret, move |request| {
            if !request.path().ends_with("/responses") {
                return None;
            }
            let body: Value = serde_json::from_slice(&request.body).ok()?;
            let done = body["input"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|item| item["type"] == "function_call_output")
                .count();
            let item = match commands.get(done) {
                Some(command) => json!({
                    "type": "function_call", "id": format!("fc_{done}"),
                    "call_id": format!("call_{done}"), "name": "exec_command",
                    "arguments": json!({"cmd": command}).to_string(), "status": "completed",
                }),
                None => json!({
                    "type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": "Done.", "annotations": []}],
                }),
            };
            let response = json!({
                "id": "resp_1", "object": "response", "status": "completed",
                "model": body["model"], "output": [item],
                "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS, "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS},
            });
            let events = [
                json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}),
                json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
                json!({"type": "response.completed", "response": response}),
            ];
            Some(event_stream(sse(&events)))
        })
        .await
    }

    /// Google's Gemini API (`POST /v1beta/models/{model}:streamGenerateContent?alt=sse` or
    /// `:generateContent`): while the conversation has fewer function responses than `calls`,
    /// the next is the answer (`(name, args)` of one of the CLI's tools); then a last text.
    /// A request for JSON (Gemini CLI asks who speaks next) gets `{"next_speaker": "user"}`.
    pub async fn gemini(secret: &str, calls: Vec<(&'static str, Value)>) -> Self {
        Self::start(secret, move |request| {
            let path = request.path();
            if !path.ends_with(":streamGenerateContent") && !path.ends_with(":generateContent") {
                return None;
            }
            let body: Value = serde_json::from_slice(&request.body).ok()?;
            let done = body["contents"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["parts"].as_array())
                .flatten()
                .filter(|part| part.get("functionResponse").is_some())
                .count();
            let config = &body["generationConfig"];
            let wants_json = config["responseMimeType"] == "application/json"
                || config.get("responseJsonSchema").is_some()
                || config.get("responseSchema").is_some();
            let part = match calls.get(done) {
                _ if wants_json => {
                    json!({"text": json!({"reasoning": "The task is done.", "next_speaker": "user"}).to_string()})
                }
                Some((name, args)) => json!({"functionCall": {"name": name, "args": args}}),
                None => json!({"text": "Done."}),
            };
            let answer = json!({
                "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": INPUT_TOKENS, "candidatesTokenCount": OUTPUT_TOKENS, "totalTokenCount": INPUT_TOKENS + OUTPUT_TOKENS},
                "modelVersion": "gemini-2.5-pro",
            });
            if path.ends_with(":streamGenerateContent") {
                return Some(event_stream(format!("data: {answer}\r\n\r\n")));
            }
            Some(json_answer(&answer))
        })
        .await
    }

    /// Serves `answer`; a request it has no answer for gets a 404 in the vendor's error shape.
    /// A request without `secret` in a header gets a 401 and no answer.
    async fn start(
        secret: &str,
        answer: impl Fn(&Recorded) -> Option<Response> + Clone + Send + Sync + 'static,
    ) -> Self {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let seen_by_server = Arc::clone(&seen);
        let secret = secret.to_string();
        let endpoint = FakeEndpoint::start(move |request: Recorded| {
            let answer = answer.clone();
            let seen = Arc::clone(&seen_by_server);
            let secret = secret.clone();
            async move {
                let view = tokio::task::spawn_blocking({
                    let secret = secret.clone();
                    move || AgentView::look_for(&secret)
                })
                .await
                .unwrap();
                seen.lock().unwrap().views.push(view);
                let keyed = request
                    .headers
                    .values()
                    .any(|v| v.to_str().is_ok_and(|v| v.contains(&secret)));
                if !keyed {
                    return error(401, "no valid key");
                }
                match answer(&request) {
                    Some(response) => {
                        seen.lock().unwrap().answered += 1;
                        response
                    }
                    None => error(404, "no such endpoint in the stand-in"),
                }
            }
        })
        .await;
        Self { endpoint, seen }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.endpoint.requests()
    }

    /// How many requests were answered (each reporting [`INPUT_TOKENS`] and [`OUTPUT_TOKENS`]).
    pub fn answered(&self) -> u64 {
        self.seen.lock().unwrap().answered
    }

    /// What the agent could read, each time it called its model.
    pub fn views(&self) -> Vec<AgentView> {
        self.seen.lock().unwrap().views.clone()
    }
}

/// How many tool results an Anthropic conversation holds.
fn tool_results(messages: &Value) -> usize {
    messages
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .filter(|block| block["type"] == "tool_result")
        .count()
}

/// Server-sent events, each named by its `type`.
fn sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("")))
        .collect()
}

fn event_stream(text: String) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from(text))
        .unwrap()
}

fn json_answer(value: &Value) -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(value.to_string()))
        .unwrap()
}

fn error(status: u16, message: &str) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"type": "error", "error": {"type": "stand_in", "message": message}}).to_string(),
        ))
        .unwrap()
}
