//! Request and response bodies of the two APIs the mock speaks.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::script::StreamFault;

/// Which API a request was made to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Api {
    /// `POST /v1/chat/completions`.
    OpenAi,
    /// `POST /v1/messages`.
    Anthropic,
}

/// What the mock needs from a well-formed request.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub(super) model: String,
    pub(super) stream: bool,
    pub(super) prompt_tokens: u64,
    /// OpenAI `stream_options.include_usage`: end the stream with a usage chunk.
    pub(super) include_usage: bool,
}

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct MessagesRequest {
    model: String,
    #[allow(dead_code)] // required, as by the real API
    max_tokens: u64,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Value,
}

/// Parses a request body, or says why it is not one.
pub(super) fn parse(api: Api, body: &[u8]) -> Result<Request, String> {
    let (model, messages, stream, include_usage) = match api {
        Api::OpenAi => serde_json::from_slice::<ChatRequest>(body).map(|r| {
            let usage = r.stream_options.is_some_and(|o| o.include_usage);
            (r.model, r.messages, r.stream, usage)
        }),
        Api::Anthropic => serde_json::from_slice::<MessagesRequest>(body)
            .map(|r| (r.model, r.messages, r.stream, false)),
    }
    .map_err(|e| format!("invalid request body: {e}"))?;
    let prompt_tokens = messages.iter().map(|m| words(&m.content)).sum::<u64>();
    Ok(Request {
        model,
        stream,
        prompt_tokens: prompt_tokens.max(1),
        include_usage,
    })
}

/// Words in a message's content: a string, or an array of `{"text": ...}` blocks.
fn words(content: &Value) -> u64 {
    let count = |s: &str| u64::try_from(s.split_whitespace().count()).unwrap_or(u64::MAX);
    match content {
        Value::String(s) => count(s),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .map(count)
            .sum(),
        _ => 0,
    }
}

/// The text of the answer to request number `n`.
pub(super) fn reply_text(n: u64) -> String {
    format!("mock reply {n}")
}

/// `text` cut into `pieces` nearly equal, non-empty parts (fewer if it is shorter).
pub(super) fn split(text: &str, pieces: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let pieces = pieces.clamp(1, chars.len().max(1));
    let (base, extra) = (chars.len() / pieces, chars.len() % pieces);
    let mut parts = Vec::with_capacity(pieces);
    let mut rest = chars.as_slice();
    for i in 0..pieces {
        let (part, tail) = rest.split_at(base + usize::from(i < extra));
        parts.push(part.iter().collect());
        rest = tail;
    }
    parts
}

fn completion_tokens(text: &str) -> u64 {
    words(&Value::String(text.to_owned()))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn id(api: Api, n: u64) -> String {
    match api {
        Api::OpenAi => format!("chatcmpl-mock-{n}"),
        Api::Anthropic => format!("msg_mock_{n}"),
    }
}

/// The non-streaming answer to request number `n`.
pub(super) fn completion(api: Api, n: u64, req: &Request) -> Value {
    let text = reply_text(n);
    let out = completion_tokens(&text);
    match api {
        Api::OpenAi => json!({
            "id": id(api, n),
            "object": "chat.completion",
            "created": now_secs(),
            "model": req.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }],
            "usage": {
                "prompt_tokens": req.prompt_tokens,
                "completion_tokens": out,
                "total_tokens": req.prompt_tokens + out,
            },
        }),
        Api::Anthropic => json!({
            "id": id(api, n),
            "type": "message",
            "role": "assistant",
            "model": req.model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": req.prompt_tokens, "output_tokens": out},
        }),
    }
}

/// The server-sent events answering request number `n`, in `chunks` content chunks.
#[derive(Debug)]
pub(super) struct Events {
    /// Sent at once, before any content (Anthropic's `message_start`...).
    pub(super) prelude: Option<Bytes>,
    /// One frame per content chunk.
    pub(super) chunks: Vec<Bytes>,
    /// The end of the stream (finish reason, `[DONE]` or `message_stop`).
    pub(super) trailer: Bytes,
}

fn sse(event: Option<&str>, data: &Value) -> String {
    match event {
        Some(event) => format!("event: {event}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

/// With `framing`, the events that are not content are added as the real APIs send them:
/// OpenAI's role-only first delta, Anthropic's `ping`.
pub(super) fn events(api: Api, n: u64, req: &Request, chunks: usize, framing: bool) -> Events {
    let text = reply_text(n);
    let parts = split(&text, chunks);
    match api {
        Api::OpenAi => {
            let created = now_secs();
            let frame = |choices: Value, usage: Option<Value>| {
                let mut chunk = json!({
                    "id": id(api, n),
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": req.model,
                    "choices": choices,
                });
                if let Some(usage) = usage {
                    chunk["usage"] = usage;
                }
                sse(None, &chunk)
            };
            let chunk = |delta: Value, finish: Value| {
                frame(
                    json!([{"index": 0, "delta": delta, "finish_reason": finish}]),
                    None,
                )
            };
            let mut trailer = chunk(json!({}), json!("stop"));
            if req.include_usage {
                let out = completion_tokens(&text);
                let usage = json!({
                    "prompt_tokens": req.prompt_tokens,
                    "completion_tokens": out,
                    "total_tokens": req.prompt_tokens + out,
                });
                trailer += &frame(json!([]), Some(usage));
            }
            trailer += "data: [DONE]\n\n";
            let role = json!({"role": "assistant", "content": "", "refusal": null});
            Events {
                prelude: framing.then(|| Bytes::from(chunk(role, Value::Null))),
                chunks: parts
                    .iter()
                    .map(|p| Bytes::from(chunk(json!({ "content": p }), Value::Null)))
                    .collect(),
                trailer: Bytes::from(trailer),
            }
        }
        Api::Anthropic => {
            let start = json!({
                "type": "message_start",
                "message": {
                    "id": id(api, n), "type": "message", "role": "assistant",
                    "model": req.model, "content": [], "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {"input_tokens": req.prompt_tokens, "output_tokens": 1},
                },
            });
            let block = json!({
                "type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""},
            });
            let delta = |p: &String| {
                let delta = json!({
                    "type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": p},
                });
                Bytes::from(sse(Some("content_block_delta"), &delta))
            };
            let stop = json!({"type": "content_block_stop", "index": 0});
            let message_delta = json!({
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": completion_tokens(&text)},
            });
            let mut prelude =
                sse(Some("message_start"), &start) + &sse(Some("content_block_start"), &block);
            if framing {
                prelude += &sse(Some("ping"), &json!({"type": "ping"}));
            }
            Events {
                prelude: Some(Bytes::from(prelude)),
                chunks: parts.iter().map(delta).collect(),
                trailer: Bytes::from(
                    sse(Some("content_block_stop"), &stop)
                        + &sse(Some("message_delta"), &message_delta)
                        + &sse(Some("message_stop"), &json!({"type": "message_stop"})),
                ),
            }
        }
    }
}

/// The in-band error event of a stream, in the API's format.
pub(super) fn error_event(api: Api, fault: StreamFault) -> Bytes {
    let message = match fault {
        StreamFault::Overloaded => "Overloaded (mock stream fault)",
        StreamFault::ApiError => "Internal server error (mock stream fault)",
        StreamFault::RateLimit => "Rate limit exceeded (mock stream fault)",
        StreamFault::InvalidRequest => "Invalid request (mock stream fault)",
    };
    let body = error(api, fault.status(), message);
    Bytes::from(match api {
        Api::OpenAi => sse(None, &body),
        Api::Anthropic => sse(Some("error"), &body),
    })
}

/// A provider-shaped error body for `status`.
pub(super) fn error(api: Api, status: u16, message: &str) -> Value {
    match api {
        Api::OpenAi => {
            let (kind, code) = match status {
                401 => ("invalid_request_error", json!("invalid_api_key")),
                429 => ("rate_limit_exceeded", json!("rate_limit_exceeded")),
                500.. => ("server_error", Value::Null),
                _ => ("invalid_request_error", Value::Null),
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Api::Anthropic => {
            let kind = match status {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                500.. => "api_error",
                _ => "invalid_request_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_every_character() {
        assert_eq!(split("mock reply 7", 5), ["moc", "k r", "ep", "ly", " 7"]);
        assert_eq!(split("ab", 5), ["a", "b"]);
        assert_eq!(split("abc", 0), ["abc"]);
        assert_eq!(split("mock reply 12", 1), ["mock reply 12"]);
    }

    #[test]
    fn parse_requires_the_fields_each_api_requires() {
        let chat = br#"{"model":"m","messages":[{"role":"user","content":"hi there"}]}"#;
        let parsed = parse(Api::OpenAi, chat);
        assert!(matches!(
            parsed,
            Ok(Request {
                prompt_tokens: 2,
                stream: false,
                ..
            })
        ));
        assert!(
            parse(Api::Anthropic, chat).is_err_and(|e| e.contains("missing field `max_tokens`"))
        );
        assert!(parse(Api::OpenAi, b"{").is_err());
    }
}
