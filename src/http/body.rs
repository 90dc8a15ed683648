//! Parsing LLM providers' JSON error bodies: pure, bounded, never panicking.

use std::time::Duration;

use serde_json::Value;

use crate::Verdict;

use super::MAX_ERROR_BODY;

/// The most characters of a provider's error message kept.
const MAX_MESSAGE_CHARS: usize = 500;

/// OpenAI's catch-all error type. It also comes with 401 when no API key was sent, so alone
/// (without a recognised `code`) it never turns an [`Isolate`](Verdict::Isolate) status into
/// [`Ignored`](Verdict::Ignored).
const CATCH_ALL_TYPE: &str = "invalid_request_error";

/// What a recognised error body says.
#[derive(Debug, Default)]
pub(super) struct ErrorBody {
    /// `error.code`, if a string.
    code: Option<String>,
    /// `error.type`, if a string.
    kind: Option<String>,
    /// The provider's error message, at most [`MAX_MESSAGE_CHARS`] characters.
    pub(super) message: Option<String>,
}

impl ErrorBody {
    /// Parses at most [`MAX_ERROR_BODY`] bytes of `body`. Anything unrecognised (invalid or
    /// truncated JSON, not an object, fields of the wrong type) yields empty fields.
    pub(super) fn parse(body: &[u8]) -> Self {
        let body = &body[..body.len().min(MAX_ERROR_BODY)];
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        // serde_json bounds its recursion (128 levels), so deep nesting is an error, not a
        // stack overflow.
        let Ok(Value::Object(root)) = serde_json::from_slice::<Value>(body) else {
            return Self::default();
        };
        let string = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
        match root.get("error") {
            Some(Value::Object(error)) => Self {
                code: string(error.get("code")),
                kind: string(error.get("type")),
                message: string(error.get("message"))
                    .or_else(|| string(root.get("message")))
                    .and_then(truncate),
            },
            // `{"error": "..."}`, as some OpenAI-compatible servers send.
            Some(Value::String(message)) => Self {
                message: truncate(message.clone()),
                ..Self::default()
            },
            _ => Self {
                message: string(root.get("message")).and_then(truncate),
                ..Self::default()
            },
        }
    }

    /// Refines `status_verdict` (the verdict of the status and headers) with what the body
    /// says; `hint` is the headers' retry hint, given to a rate limit the body reports.
    pub(super) fn refine(&self, status_verdict: Verdict, hint: Option<Duration>) -> Verdict {
        // A success status is a success, whatever its body.
        if status_verdict == Verdict::Success {
            return status_verdict;
        }
        let named = |name: &Option<String>| name.as_deref().and_then(|n| by_name(n, hint));
        if let Some(verdict) = named(&self.code) {
            return verdict;
        }
        match named(&self.kind) {
            Some(Verdict::Ignored)
                if status_verdict == Verdict::Isolate
                    && self.kind.as_deref() == Some(CATCH_ALL_TYPE) =>
            {
                status_verdict
            }
            Some(verdict) => verdict,
            None => status_verdict,
        }
    }
}

impl ErrorBody {
    /// The class of error the body names: the context window (`context_length_exceeded`,
    /// `string_above_max_length`, `request_too_large`, or an Anthropic
    /// `invalid_request_error` whose message says the prompt is too long) or a content
    /// policy refusal (`content_filter`, `content_policy_violation`).
    pub(super) fn class(&self) -> crate::ErrorClass {
        use crate::ErrorClass;
        let named = |name: &Option<String>| match name.as_deref() {
            Some("context_length_exceeded" | "string_above_max_length" | "request_too_large") => {
                Some(ErrorClass::ContextWindow)
            }
            Some("content_filter" | "content_policy_violation") => Some(ErrorClass::ContentPolicy),
            _ => None,
        };
        if let Some(class) = named(&self.code).or_else(|| named(&self.kind)) {
            return class;
        }
        // Anthropic says it in the message of an `invalid_request_error`: "prompt is too
        // long: 210000 tokens > 200000 maximum"; OpenAI-compatible servers often too.
        let message = self
            .message
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let context = [
            "prompt is too long",
            "context length",
            "context window",
            "maximum context",
        ];
        if self.kind.as_deref() == Some(CATCH_ALL_TYPE)
            && context.iter().any(|c| message.contains(c))
        {
            return ErrorClass::ContextWindow;
        }
        ErrorClass::Other
    }
}

/// The verdict an error `type` or `code` stands for, if it is a known one.
fn by_name(name: &str, hint: Option<Duration>) -> Option<Verdict> {
    Some(match name {
        "overloaded_error" | "api_error" | "server_error" | "service_unavailable" | "timeout" => {
            Verdict::Failure
        }
        "rate_limit_error" | "rate_limit_exceeded" | "requests" | "tokens" => {
            Verdict::RateLimited { retry_after: hint }
        }
        "invalid_request_error"
        | "context_length_exceeded"
        | "string_above_max_length"
        | "not_found_error"
        | "content_filter"
        | "content_policy_violation"
        | "request_too_large" => Verdict::Ignored,
        "authentication_error"
        | "invalid_api_key"
        | "permission_error"
        | "billing_error"
        | "insufficient_quota"
        | "account_deactivated" => Verdict::Isolate,
        _ => return None,
    })
}

/// Trims `message` and cuts it to [`MAX_MESSAGE_CHARS`] characters (the last one an
/// ellipsis when cut); `None` when blank.
fn truncate(message: String) -> Option<String> {
    let trimmed = message.trim();
    if trimmed.is_empty() {
        return None;
    }
    if trimmed.chars().count() <= MAX_MESSAGE_CHARS {
        return Some(if trimmed.len() == message.len() {
            message
        } else {
            trimmed.to_owned()
        });
    }
    let mut cut: String = trimmed.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    cut.push('…');
    Some(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_trimmed_and_cut() {
        assert_eq!(truncate("  hi \n".to_owned()), Some("hi".to_owned()));
        assert_eq!(truncate(" \t ".to_owned()), None);
        let long = truncate("é".repeat(10_000)).unwrap_or_default();
        assert_eq!(long.chars().count(), MAX_MESSAGE_CHARS);
        assert!(long.ends_with('…'));
        let exact = "x".repeat(MAX_MESSAGE_CHARS);
        assert_eq!(truncate(exact.clone()), Some(exact));
    }

    #[test]
    fn classes_from_openai_and_anthropic_bodies() {
        use crate::ErrorClass::{ContentPolicy, ContextWindow, Other};
        let class = |body: &str| ErrorBody::parse(body.as_bytes()).class();
        assert_eq!(
            class(
                r#"{"error": {"type": "invalid_request_error", "code": "context_length_exceeded"}}"#
            ),
            ContextWindow
        );
        assert_eq!(
            class(r#"{"type": "error", "error": {"type": "request_too_large", "message": "x"}}"#),
            ContextWindow
        );
        assert_eq!(
            class(
                r#"{"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"}}"#
            ),
            ContextWindow
        );
        assert_eq!(
            class(r#"{"error": {"type": "invalid_request_error", "code": "content_filter"}}"#),
            ContentPolicy
        );
        assert_eq!(
            class(r#"{"error": {"type": "invalid_request_error", "message": "bad field"}}"#),
            Other
        );
        // A message alone, without the request-error type, is not enough.
        assert_eq!(class(r#"{"error": "prompt is too long"}"#), Other);
        assert_eq!(class("<html>"), Other);
    }

    #[test]
    fn message_fallbacks() {
        let message = |body: &str| ErrorBody::parse(body.as_bytes()).message;
        assert_eq!(message(r#"{"error": "boom"}"#), Some("boom".to_owned()));
        assert_eq!(message(r#"{"message": "top"}"#), Some("top".to_owned()));
        assert_eq!(
            message(r#"{"error": {"type": "x"}, "message": "top"}"#),
            Some("top".to_owned())
        );
        assert_eq!(message(r#"{"error": {"message": 3}}"#), None);
        assert_eq!(
            message("\u{feff}{\"error\": \"bom\"}"),
            Some("bom".to_owned())
        );
    }
}
