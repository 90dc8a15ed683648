//! Token usage of a non-streamed response body, to settle a token budget
//! ([`Metered`](crate::Metered)).

use serde_json::Value;

use super::sse::Usage;
use super::MAX_ERROR_BODY;

/// The token usage an OpenAI (`usage.prompt_tokens`, `usage.completion_tokens`) or
/// Anthropic (`usage.input_tokens`, `usage.output_tokens`) response body reports; `None`
/// when the body is not JSON or reports neither. Anthropic's cache reads and writes
/// (`cache_creation_input_tokens`, `cache_read_input_tokens`) count as input. Only the first
/// 16 times [`MAX_ERROR_BODY`] bytes (1 MiB) are parsed; never panics.
///
/// For streams, [`sse::Done::usage`](super::sse::Done::usage) carries the same counts.
///
/// ```
/// use fusebox::http::{self, sse::Usage};
///
/// let openai = br#"{"choices": [], "usage": {"prompt_tokens": 150, "completion_tokens": 50, "total_tokens": 200}}"#;
/// assert_eq!(http::usage(openai), Some(Usage::new(150, 50)));
/// let anthropic = br#"{"type": "message", "usage": {"input_tokens": 12, "output_tokens": 30}}"#;
/// assert_eq!(http::usage(anthropic).map(|u| u.total()), Some(42));
/// assert_eq!(http::usage(b"not json"), None);
/// ```
pub fn usage(body: &[u8]) -> Option<Usage> {
    let body = &body[..body.len().min(16 * MAX_ERROR_BODY)];
    let Ok(Value::Object(root)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let usage = root.get("usage")?;
    let count = |key: &str| usage.get(key).and_then(Value::as_u64);
    let input = count("prompt_tokens").or_else(|| {
        let cached = ["cache_creation_input_tokens", "cache_read_input_tokens"]
            .iter()
            .filter_map(|k| count(k))
            .fold(0u64, u64::saturating_add);
        count("input_tokens").map(|n| n.saturating_add(cached))
    });
    let output = count("completion_tokens").or_else(|| count("output_tokens"));
    if input.is_none() && output.is_none() {
        // Only a total (some OpenAI-compatible servers).
        return count("total_tokens").map(|total| Usage::new(total, 0));
    }
    Some(Usage::new(input.unwrap_or(0), output.unwrap_or(0)))
}

impl Usage {
    /// Input and output tokens together: what a token budget is settled with.
    pub const fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

impl<T> From<(T, Option<Usage>)> for crate::Metered<T> {
    /// A value with the usage its response reported (none: the estimate stands).
    fn from((value, usage): (T, Option<Usage>)) -> Self {
        crate::Metered {
            value,
            tokens: usage.map(|u| u.total()),
        }
    }
}
