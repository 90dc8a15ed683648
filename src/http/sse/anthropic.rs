//! Anthropic message events: `message_start`, `content_block_start`, `ping`,
//! `content_block_delta`..., `content_block_stop`, `message_delta`, `message_stop`, or
//! `error`.

use eventsource_stream::Event;
use serde_json::Value;

use super::{in_band, json, text_of, DeltaKind, SseError, Step, Summary};

/// Reads one event of an Anthropic stream, by its data's `type` (the SSE event name when the
/// data has none).
///
/// - `message_stop` ends it; `error` is an in-band error; `ping` is dropped;
/// - `content_block_delta` is content when it adds something: a non-empty `text_delta`,
///   `thinking_delta` or `input_json_delta`, or a delta of any other type
///   (`signature_delta`, `citations_delta`, types added later);
/// - `message_start` (input tokens) and `message_delta` (stop reason, output tokens) are
///   kept for the end; they, the other events and unknown event types are context (the API
///   may add event types: they are not errors).
pub(super) fn step(event: &Event, summary: &mut Summary) -> Result<Step, SseError> {
    let value = json(event)?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or(&event.event);
    match kind {
        "ping" => Ok(Step::Skip),
        "error" => Err(in_band(event, &value)),
        _ if event.event == "error" => Err(in_band(event, &value)),
        "message_stop" => Ok(Step::Done(Some(value))),
        "message_start" => {
            if let Some(usage) = value.get("message").and_then(|m| m.get("usage")) {
                read_usage(usage, summary);
            }
            Ok(Step::Context(value))
        }
        "message_delta" => {
            if let Some(reason) = value.get("delta").and_then(|d| text_of(d, "stop_reason")) {
                summary.finish_reason = Some(reason.to_owned());
            }
            if let Some(usage) = value.get("usage") {
                read_usage(usage, summary);
            }
            Ok(Step::Context(value))
        }
        "content_block_delta" => Ok(match value.get("delta").and_then(delta_content) {
            Some((kind, text)) => Step::Content {
                kind,
                text,
                index: value.get("index").and_then(Value::as_u64).unwrap_or(0),
                event: value,
            },
            None => Step::Context(value),
        }),
        _ => Ok(Step::Context(value)),
    }
}

fn read_usage(usage: &Value, summary: &mut Summary) {
    let count = |key: &str| usage.get(key).and_then(Value::as_u64);
    summary.input_tokens = count("input_tokens").or(summary.input_tokens);
    summary.output_tokens = count("output_tokens").or(summary.output_tokens);
}

/// What a `content_block_delta`'s `delta` adds, if anything.
fn delta_content(delta: &Value) -> Option<(DeltaKind, String)> {
    let (kind, key) = match delta.get("type").and_then(Value::as_str) {
        Some("text_delta") => (DeltaKind::Text, "text"),
        Some("thinking_delta") => (DeltaKind::Reasoning, "thinking"),
        Some("input_json_delta") => (DeltaKind::ToolCall, "partial_json"),
        Some("signature_delta") => (DeltaKind::Other, "signature"),
        _ => {
            let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
            return Some((DeltaKind::Other, text.to_owned()));
        }
    };
    match (kind, text_of(delta, key)) {
        (_, Some(text)) => Some((kind, text.to_owned())),
        (DeltaKind::Other, None) => Some((kind, String::new())),
        (_, None) => None,
    }
}
