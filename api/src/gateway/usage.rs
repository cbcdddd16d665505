//! Reading token usage from model APIs' answers as they pass through, streamed or whole:
//! Anthropic's Messages API, OpenAI's Chat Completions and Responses APIs, and Google's
//! Gemini API (and the many APIs that answer in one of these shapes).
//!
//! Each answer's usage is read from the objects it carries (`usage`, `message.usage`,
//! `response.usage`, `usageMetadata`); a stream repeats or grows them event by event, so the
//! largest figure seen is the answer's.

use serde_json::Value;

/// The most of a whole (not streamed) answer kept to read its usage: a larger answer is still
/// passed on, and counted as a request without tokens.
const MAX_WHOLE_ANSWER: usize = 16 * 1024 * 1024;
/// The longest line of a stream kept to read: a longer event is passed on unread.
const MAX_EVENT_LINE: usize = 1024 * 1024;

/// The tokens one answer reports, and the model it names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub model: Option<String>,
}

impl AnswerUsage {
    /// Takes in what one JSON object of an answer says.
    fn read(&mut self, value: &Value) {
        if let Value::Array(items) = value {
            // Gemini's `streamGenerateContent` without SSE answers with an array of chunks.
            items.iter().for_each(|item| self.read(item));
            return;
        }
        let nested = |key: &str| value.get(key).filter(|v| v.is_object());
        for holder in [Some(value), nested("message"), nested("response")]
            .into_iter()
            .flatten()
        {
            if let Some(usage) = holder.get("usage").filter(|u| u.is_object()) {
                self.take(usage, INPUT_FIELDS, OUTPUT_FIELDS);
            }
            if let Some(usage) = holder.get("usageMetadata").filter(|u| u.is_object()) {
                self.take(usage, GEMINI_INPUT_FIELDS, GEMINI_OUTPUT_FIELDS);
            }
            for key in ["model", "modelVersion"] {
                if let Some(model) = holder.get(key).and_then(Value::as_str) {
                    self.model.get_or_insert_with(|| model.to_string());
                }
            }
        }
    }

    fn take(&mut self, usage: &Value, input: &[&str], output: &[&str]) {
        let sum = |fields: &[&str]| -> u64 {
            fields
                .iter()
                .filter_map(|f| usage.get(*f).and_then(Value::as_u64))
                .fold(0u64, u64::saturating_add)
        };
        self.input_tokens = self.input_tokens.max(sum(input));
        self.output_tokens = self.output_tokens.max(sum(output));
    }
}

/// Anthropic counts cache writes and reads apart from `input_tokens`; OpenAI's
/// `prompt_tokens`/`input_tokens` already include cached ones. Each API sets only its own.
const INPUT_FIELDS: &[&str] = &[
    "input_tokens",
    "prompt_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
];
const OUTPUT_FIELDS: &[&str] = &["output_tokens", "completion_tokens"];
const GEMINI_INPUT_FIELDS: &[&str] = &["promptTokenCount"];
/// Gemini counts its thinking apart from the answer, and bills both as output.
const GEMINI_OUTPUT_FIELDS: &[&str] = &["candidatesTokenCount", "thoughtsTokenCount"];

/// Reads an answer's usage from its bytes as they pass.
#[derive(Debug)]
pub struct Meter {
    kind: Kind,
    usage: AnswerUsage,
}

#[derive(Debug)]
enum Kind {
    /// Server-sent events: each `data:` line is one JSON object.
    Events { line: Vec<u8>, overlong: bool },
    /// One JSON document, read at the end.
    Whole { body: Vec<u8>, overlong: bool },
}

impl Meter {
    /// A meter for an answer of this `Content-Type`.
    pub fn new(content_type: Option<&str>) -> Self {
        let events = content_type.is_some_and(|t| t.trim_start().starts_with("text/event-stream"));
        let kind = if events {
            Kind::Events {
                line: Vec::new(),
                overlong: false,
            }
        } else {
            Kind::Whole {
                body: Vec::new(),
                overlong: false,
            }
        };
        Self {
            kind,
            usage: AnswerUsage::default(),
        }
    }

    /// Takes in the next bytes of the answer.
    pub fn feed(&mut self, bytes: &[u8]) {
        match &mut self.kind {
            Kind::Events { line, overlong } => {
                for part in bytes.split_inclusive(|b| *b == b'\n') {
                    let ends = part.ends_with(b"\n");
                    if !*overlong {
                        if line.len() + part.len() > MAX_EVENT_LINE {
                            *overlong = true;
                            line.clear();
                        } else {
                            line.extend_from_slice(part);
                        }
                    }
                    if ends {
                        if !*overlong {
                            read_event_line(line, &mut self.usage);
                        }
                        line.clear();
                        *overlong = false;
                    }
                }
            }
            Kind::Whole { body, overlong } => {
                if *overlong || body.len() + bytes.len() > MAX_WHOLE_ANSWER {
                    *overlong = true;
                    body.clear();
                } else {
                    body.extend_from_slice(bytes);
                }
            }
        }
    }

    /// The answer's usage, once all of it has passed (or as much as did).
    pub fn finish(mut self) -> AnswerUsage {
        match &mut self.kind {
            Kind::Events { line, overlong } => {
                if !*overlong {
                    read_event_line(line, &mut self.usage);
                }
            }
            Kind::Whole { body, overlong } => {
                if !*overlong && let Ok(value) = serde_json::from_slice::<Value>(body) {
                    self.usage.read(&value);
                }
            }
        }
        self.usage
    }
}

/// One line of an event stream: a `data:` line's JSON is read, anything else is not.
fn read_event_line(line: &[u8], usage: &mut AnswerUsage) {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(data) = line.strip_prefix(b"data:") else {
        return;
    };
    if let Ok(value) = serde_json::from_slice::<Value>(data.trim_ascii_start()) {
        usage.read(&value);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Feeds `answer` in chunks of `size` bytes, so lines and documents straddle chunks.
    fn metered(content_type: &str, answer: &str, size: usize) -> AnswerUsage {
        let mut meter = Meter::new(Some(content_type));
        for chunk in answer.as_bytes().chunks(size) {
            meter.feed(chunk);
        }
        meter.finish()
    }

    fn usage(input: u64, output: u64, model: &str) -> AnswerUsage {
        AnswerUsage {
            input_tokens: input,
            output_tokens: output,
            model: Some(model.into()),
        }
    }

    #[test]
    fn anthropic_answers_whole_and_streamed() {
        let whole = r#"{"id":"msg_1","type":"message","model":"claude-sonnet-4-5","content":[],
            "usage":{"input_tokens":120,"cache_read_input_tokens":30,"output_tokens":45}}"#;
        assert_eq!(
            metered("application/json", whole, 7),
            usage(150, 45, "claude-sonnet-4-5")
        );
        let stream = "event: message_start\n\
            data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":120,\"output_tokens\":1}}}\n\n\
            event: content_block_delta\n\
            data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"usage\"}}\n\n\
            event: message_delta\r\n\
            data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":45}}\r\n\r\n\
            event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        for size in [1, 5, 64, stream.len()] {
            assert_eq!(
                metered("text/event-stream; charset=utf-8", stream, size),
                usage(120, 45, "claude-sonnet-4-5"),
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn openai_chat_completions_and_responses() {
        let chat = r#"{"object":"chat.completion","model":"gpt-4.1",
            "usage":{"prompt_tokens":80,"completion_tokens":20,"total_tokens":100}}"#;
        assert_eq!(
            metered("application/json", chat, 3),
            usage(80, 20, "gpt-4.1")
        );
        let chat_stream = "data: {\"model\":\"gpt-4.1\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
            data: {\"model\":\"gpt-4.1\",\"choices\":[],\"usage\":{\"prompt_tokens\":80,\"completion_tokens\":20}}\n\n\
            data: [DONE]\n\n";
        assert_eq!(
            metered("text/event-stream", chat_stream, 11),
            usage(80, 20, "gpt-4.1")
        );
        let responses = "event: response.created\n\
            data: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-5-codex\",\"usage\":null}}\n\n\
            event: response.completed\n\
            data: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-5-codex\",\"usage\":{\"input_tokens\":900,\"input_tokens_details\":{\"cached_tokens\":800},\"output_tokens\":70}}}\n\n";
        assert_eq!(
            metered("text/event-stream", responses, 9),
            usage(900, 70, "gpt-5-codex")
        );
    }

    #[test]
    fn gemini_whole_streamed_and_as_an_array() {
        let chunk = |n: u64| {
            format!(
                r#"{{"candidates":[],"modelVersion":"gemini-2.5-pro","usageMetadata":{{"promptTokenCount":60,"candidatesTokenCount":{n},"thoughtsTokenCount":5}}}}"#
            )
        };
        assert_eq!(
            metered("application/json", &chunk(9), 4),
            usage(60, 14, "gemini-2.5-pro")
        );
        let sse = format!("data: {}\r\n\r\ndata: {}\r\n\r\n", chunk(3), chunk(9));
        assert_eq!(
            metered("text/event-stream", &sse, 13),
            usage(60, 14, "gemini-2.5-pro")
        );
        let array = format!("[{},\n{}]", chunk(3), chunk(9));
        assert_eq!(
            metered("application/json", &array, 8),
            usage(60, 14, "gemini-2.5-pro")
        );
    }

    #[test]
    fn answers_without_usage_or_not_json_count_nothing() {
        for (kind, answer) in [
            (
                "application/json",
                r#"{"error":{"type":"overloaded_error"}}"#,
            ),
            ("application/json", "<html>502 Bad Gateway</html>"),
            ("text/event-stream", "data: not json\n\n: a comment\n\n"),
            ("application/json", r#"{"usage":"lots","model":7}"#),
            (
                "application/json",
                r#"{"usage":{"input_tokens":-5,"output_tokens":1.5}}"#,
            ),
        ] {
            assert_eq!(metered(kind, answer, 4), AnswerUsage::default(), "{answer}");
        }
    }

    #[test]
    fn an_overlong_answer_or_event_is_passed_over_not_kept() {
        let mut meter = Meter::new(Some("application/json"));
        let block = vec![b' '; 1024 * 1024];
        for _ in 0..17 {
            meter.feed(&block);
        }
        meter.feed(br#"{"usage":{"input_tokens":1,"output_tokens":1}}"#);
        assert_eq!(meter.finish(), AnswerUsage::default());
        // A huge event is skipped; the next event is still read.
        let mut meter = Meter::new(Some("text/event-stream"));
        meter.feed(b"data: ");
        meter.feed(&vec![b'x'; MAX_EVENT_LINE + 1]);
        meter.feed(b"\ndata: {\"usage\":{\"input_tokens\":4,\"output_tokens\":2}}\n");
        let read = meter.finish();
        assert_eq!((read.input_tokens, read.output_tokens), (4, 2));
    }
}
