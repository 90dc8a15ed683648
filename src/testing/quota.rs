//! The mock's rate-limit quota: it drains per request, resets on a fixed schedule, is
//! announced in both vendors' rate-limit headers and enforced with 429s.

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::shapes::Api;

/// A rate-limit quota a [`MockLlm`](super::MockLlm) announces and enforces.
///
/// Windows follow each other from the server's start, each [`window`](Self::window) long;
/// at the start of each one the quota is full again. Every request arriving while the quota
/// has something left spends one request and, with a token limit, its tokens (its prompt's
/// words plus the three words of the answer, reserved on arrival as real providers reserve
/// `max_tokens`), whatever then happens to it (a scripted fault, a 400...). A request arriving
/// when the requests or the tokens are spent gets a 429 with `retry-after` and
/// `retry-after-ms` (until the window's end) and spends nothing.
///
/// Every response with a status carries the headers of the API called, showing what is left
/// after that request:
///
/// - OpenAI: `x-ratelimit-{limit,remaining,reset}-requests` and, with a token limit,
///   `-tokens`, resets as Go durations (`6m0s`, `1.5s`, `20ms`);
/// - Anthropic: `anthropic-ratelimit-requests-{limit,remaining,reset}` and, with a token
///   limit, `tokens`, `input-tokens` (prompt tokens) and `output-tokens` (answer tokens), each
///   with the same limit, resets as RFC 3339 times with milliseconds.
///
/// Resets are rounded up to the millisecond.
///
/// ```
/// use std::time::Duration;
/// use fusebox::testing::Quota;
///
/// // 100 requests and 10 000 tokens a minute.
/// let quota = Quota::requests(100).tokens(10_000).window(Duration::from_secs(60));
/// assert_eq!(quota.requests, 100);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quota {
    /// Requests allowed per window.
    pub requests: u64,
    /// Tokens allowed per window, if limited.
    pub tokens: Option<u64>,
    /// How long a window lasts (at least 1 ms).
    pub window: Duration,
}

impl Quota {
    /// `requests` requests a minute, no token limit.
    pub fn requests(requests: u64) -> Quota {
        Quota {
            requests,
            tokens: None,
            window: Duration::from_secs(60),
        }
    }

    /// This quota with a token limit per window.
    #[must_use]
    pub fn tokens(mut self, tokens: u64) -> Quota {
        self.tokens = Some(tokens);
        self
    }

    /// This quota with windows of `window` (at least 1 ms; default a minute).
    #[must_use]
    pub fn window(mut self, window: Duration) -> Quota {
        self.window = window.max(Duration::from_millis(1));
        self
    }
}

/// What a quota has spent in the current window.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    pub(super) quota: Option<Quota>,
    window: u128,
    requests: u64,
    input: u64,
    output: u64,
}

/// What the quota said about one request.
#[derive(Debug)]
pub(super) enum Verdict {
    /// No quota.
    Unlimited,
    /// Spent: the headers to send with the answer.
    Spent(HeaderMap),
    /// Nothing left: answer 429 with these headers, retry after this long.
    Exhausted(HeaderMap, Duration),
}

/// Tokens of the answer, reserved on arrival: `mock reply <n>` is three words.
const ANSWER_TOKENS: u64 = 3;

impl Ledger {
    pub(super) fn new(quota: Option<Quota>) -> Ledger {
        Ledger {
            quota,
            ..Ledger::default()
        }
    }

    /// A request to `api` with `prompt` tokens (`None`: malformed, spends no tokens), arriving
    /// `elapsed` after the server's start.
    pub(super) fn spend(&mut self, api: Api, prompt: Option<u64>, elapsed: Duration) -> Verdict {
        let Some(quota) = self.quota else {
            return Verdict::Unlimited;
        };
        let window = quota.window.max(Duration::from_millis(1));
        let index = elapsed.as_nanos() / window.as_nanos();
        if index != self.window {
            *self = Ledger {
                quota: self.quota,
                window: index,
                ..Ledger::default()
            };
        }
        let ends = window_end(index, window);
        let reset = ends.saturating_sub(elapsed);
        let spent_tokens = self.input + self.output;
        let exhausted = self.requests >= quota.requests
            || quota.tokens.is_some_and(|limit| spent_tokens >= limit);
        if !exhausted {
            self.requests += 1;
            if let Some(prompt) = prompt {
                self.input += prompt;
                self.output += ANSWER_TOKENS;
            }
        }
        let headers = self.headers(api, quota, reset);
        if exhausted {
            Verdict::Exhausted(headers, reset)
        } else {
            Verdict::Spent(headers)
        }
    }

    fn headers(&self, api: Api, quota: Quota, reset: Duration) -> HeaderMap {
        let reset = ceil_millis(reset);
        let left = |limit: u64, used: u64| limit.saturating_sub(used);
        let mut headers = HeaderMap::new();
        let mut put = |name: String, value: String| {
            if let (Ok(name), Ok(value)) =
                (HeaderName::try_from(name), HeaderValue::try_from(value))
            {
                headers.insert(name, value);
            }
        };
        match api {
            Api::OpenAi => {
                let reset = go_duration(reset);
                let mut quota_headers = |kind: &str, limit: u64, remaining: u64| {
                    put(format!("x-ratelimit-limit-{kind}"), limit.to_string());
                    put(
                        format!("x-ratelimit-remaining-{kind}"),
                        remaining.to_string(),
                    );
                    put(format!("x-ratelimit-reset-{kind}"), reset.clone());
                };
                quota_headers(
                    "requests",
                    quota.requests,
                    left(quota.requests, self.requests),
                );
                if let Some(tokens) = quota.tokens {
                    let spent = self.input + self.output;
                    quota_headers("tokens", tokens, left(tokens, spent));
                }
            }
            Api::Anthropic => {
                let at = humantime::format_rfc3339_millis(SystemTime::now() + reset).to_string();
                let mut quota_headers = |kind: &str, limit: u64, remaining: u64| {
                    put(
                        format!("anthropic-ratelimit-{kind}-limit"),
                        limit.to_string(),
                    );
                    put(
                        format!("anthropic-ratelimit-{kind}-remaining"),
                        remaining.to_string(),
                    );
                    put(format!("anthropic-ratelimit-{kind}-reset"), at.clone());
                };
                quota_headers(
                    "requests",
                    quota.requests,
                    left(quota.requests, self.requests),
                );
                if let Some(tokens) = quota.tokens {
                    let spent = self.input + self.output;
                    quota_headers("tokens", tokens, left(tokens, spent));
                    quota_headers("input-tokens", tokens, left(tokens, self.input));
                    quota_headers("output-tokens", tokens, left(tokens, self.output));
                }
            }
        }
        headers
    }
}

/// When window `index` ends, after the server's start.
fn window_end(index: u128, window: Duration) -> Duration {
    let nanos = (index + 1).saturating_mul(window.as_nanos());
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    Duration::new(secs, (nanos % 1_000_000_000) as u32)
}

fn ceil_millis(d: Duration) -> Duration {
    let millis = d.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

/// A whole number of milliseconds as Go prints a duration: `20ms`, `1s`, `1.5s`, `6m0s`,
/// `1h0m0.25s`.
pub(super) fn go_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let (hours, rest) = (millis / 3_600_000, millis % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let (secs, frac) = (rest / 1000, rest % 1000);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&secs.to_string());
    if frac > 0 {
        let frac = format!("{frac:03}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_read_like_openai_s() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(ms(20)), "20ms");
        assert_eq!(go_duration(ms(0)), "0ms");
        assert_eq!(go_duration(ms(1000)), "1s");
        assert_eq!(go_duration(ms(1500)), "1.5s");
        assert_eq!(go_duration(ms(360_000)), "6m0s");
        assert_eq!(go_duration(ms(90_042)), "1m30.042s");
        assert_eq!(go_duration(ms(3_600_250)), "1h0m0.25s");
    }

    #[test]
    fn a_quota_drains_and_resets_per_window() {
        let mut ledger = Ledger::new(Some(Quota::requests(2).window(Duration::from_secs(10))));
        let at = Duration::from_secs;
        let remaining = |v: &Verdict| match v {
            Verdict::Spent(h) | Verdict::Exhausted(h, _) => h["x-ratelimit-remaining-requests"]
                .to_str()
                .unwrap_or_default()
                .to_owned(),
            Verdict::Unlimited => String::new(),
        };
        let first = ledger.spend(Api::OpenAi, Some(5), at(1));
        assert_eq!(remaining(&first), "1");
        assert!(matches!(&first, Verdict::Spent(h) if h["x-ratelimit-reset-requests"] == "9s"));
        assert_eq!(remaining(&ledger.spend(Api::OpenAi, Some(5), at(2))), "0");
        let limited = ledger.spend(Api::OpenAi, Some(5), at(3));
        assert!(matches!(limited, Verdict::Exhausted(_, reset) if reset == at(7)));
        // The next window is full again.
        assert_eq!(remaining(&ledger.spend(Api::OpenAi, None, at(10))), "1");
        assert!(matches!(
            Ledger::new(None).spend(Api::OpenAi, None, at(0)),
            Verdict::Unlimited
        ));
    }
}
