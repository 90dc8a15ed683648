//! OpenAI chat-completion chunks: `data: {"object": "chat.completion.chunk", ...}` events,
//! ended by `data: [DONE]`.

use eventsource_stream::Event;
use serde_json::Value;

use super::{in_band, json, text_of, DeltaKind, SseError, Step, Summary};

/// Reads one event of an OpenAI stream.
///
/// - `[DONE]` ends it;
/// - an `error` event, or an object with a non-null `error`, is an in-band error;
/// - `usage` (the last chunk's, with `stream_options.include_usage`) and each choice's
///   `finish_reason` (choice 0's wins) are kept for the end;
/// - the first choice whose delta has content makes the event a content delta: non-empty
///   `content`, `reasoning_content` or `reasoning`, `refusal`, a non-empty `tool_calls`
///   (or the legacy `function_call`); any other event (the role-only first delta, the finish
///   chunk, the usage chunk) is context.
pub(super) fn step(event: &Event, summary: &mut Summary) -> Result<Step, SseError> {
    if event.data.trim() == "[DONE]" {
        return Ok(Step::Done(None));
    }
    let value = json(event)?;
    if event.event == "error" || value.get("error").is_some_and(|e| !e.is_null()) {
        return Err(in_band(event, &value));
    }
    if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
        let count = |key: &str| usage.get(key).and_then(Value::as_u64);
        summary.input_tokens = count("prompt_tokens").or(summary.input_tokens);
        summary.output_tokens = count("completion_tokens").or(summary.output_tokens);
    }
    let mut content = None;
    let choices = value.get("choices").and_then(Value::as_array);
    for choice in choices.into_iter().flatten() {
        let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
        if let Some(reason) = text_of(choice, "finish_reason") {
            if index == 0 || summary.finish_reason.is_none() {
                summary.finish_reason = Some(reason.to_owned());
            }
        }
        if content.is_none() {
            content = choice
                .get("delta")
                .and_then(delta_content)
                .map(|(kind, text)| (kind, text, index));
        }
    }
    Ok(match content {
        Some((kind, text, index)) => Step::Content {
            kind,
            text,
            index,
            event: value,
        },
        None => Step::Context(value),
    })
}

/// What a choice's `delta` adds, if anything.
fn delta_content(delta: &Value) -> Option<(DeltaKind, String)> {
    if let Some(text) = text_of(delta, "content") {
        return Some((DeltaKind::Text, text.to_owned()));
    }
    if let Some(text) = text_of(delta, "reasoning_content").or_else(|| text_of(delta, "reasoning"))
    {
        return Some((DeltaKind::Reasoning, text.to_owned()));
    }
    if let Some(text) = text_of(delta, "refusal") {
        return Some((DeltaKind::Refusal, text.to_owned()));
    }
    let arguments = |call: &Value| {
        call.get("function")
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    match delta.get("tool_calls").and_then(Value::as_array) {
        Some(calls) if !calls.is_empty() => {
            return Some((DeltaKind::ToolCall, calls.iter().map(arguments).collect()));
        }
        _ => {}
    }
    delta
        .get("function_call")
        .filter(|call| call.is_object())
        .map(|call| {
            let text = call.get("arguments").and_then(Value::as_str).unwrap_or("");
            (DeltaKind::ToolCall, text.to_owned())
        })
}
