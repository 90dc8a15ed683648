//! Classification: deciding which outcomes count against a provider.
//!
//! A circuit breaker should open only when the *provider* misbehaves, not when
//! the caller sent a bad request. Every call outcome is therefore mapped to a
//! [`Verdict`]: [`Success`](Verdict::Success) and [`Ignored`](Verdict::Ignored)
//! (the caller's fault: 400, 404, context too long, content policy) never count
//! against a provider; [`Failure`](Verdict::Failure) (5xx, timeouts, connection
//! errors), [`RateLimited`](Verdict::RateLimited) (429) and
//! [`Isolate`](Verdict::Isolate) (401/402/403: credentials or billing) do.
//!
//! Error types opt in by implementing [`Classify`]. For HTTP APIs,
//! [`http_verdict`] classifies a status code plus headers without depending on
//! any HTTP crate, reading `Retry-After` and `Retry-After-Ms` hints.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The largest retry hint accepted: one year.
const MAX_HINT: Duration = Duration::from_secs(31_536_000);
/// The most characters of a header value quoted in a [`HeaderError`].
const MAX_QUOTED_CHARS: usize = 64;

/// How a call outcome affects the provider's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The provider worked.
    Success,
    /// Counts against the provider: 5xx responses, timeouts, connection errors.
    Failure,
    /// The provider is rate limiting (HTTP 429).
    ///
    /// With a hint the circuit opens at once for at least `retry_after`; without one it
    /// opens for the breaker's [`rate_limited_for`](crate::Breaker::rate_limited_for)
    /// (5 seconds by default; zero makes it an ordinary [`Verdict::Failure`]).
    RateLimited {
        /// How long the provider asked callers to back off, if it said.
        retry_after: Option<Duration>,
    },
    /// The caller's fault (400, 404, context too long, content policy).
    ///
    /// Neither a success nor a failure, and a router does not fail over on it:
    /// another provider would reject the same request.
    Ignored,
    /// Credentials or billing trouble (401, 402, 403).
    ///
    /// The provider is taken out of rotation until an operator resets it.
    Isolate,
}

impl Verdict {
    /// Whether this outcome counts against the provider
    /// ([`Failure`](Self::Failure), [`RateLimited`](Self::RateLimited) or
    /// [`Isolate`](Self::Isolate)).
    pub const fn is_failure(&self) -> bool {
        matches!(
            self,
            Self::Failure | Self::RateLimited { .. } | Self::Isolate
        )
    }

    /// The provider's back-off hint, if this is a rate limit that carried one.
    pub const fn retry_after(&self) -> Option<Duration> {
        match *self {
            Self::RateLimited { retry_after } => retry_after,
            _ => None,
        }
    }

    /// Classifies a bare HTTP status; see [`http_verdict_at`] for the rules.
    ///
    /// Without headers, 429 yields `RateLimited { retry_after: None }`.
    pub const fn from_http_status(status: u16) -> Self {
        match status {
            100..=399 => Self::Success,
            429 => Self::RateLimited { retry_after: None },
            401..=403 => Self::Isolate,
            408 => Self::Failure,
            400..=499 => Self::Ignored,
            // 5xx, and malformed statuses from a misbehaving provider.
            _ => Self::Failure,
        }
    }
}

/// Maps an outcome (usually an error type) to a [`Verdict`].
///
/// ```
/// use fusebox::{Classify, Verdict};
///
/// enum ApiError { Status(u16), Timeout, PromptTooLong }
///
/// impl Classify for ApiError {
///     fn verdict(&self) -> Verdict {
///         match self {
///             ApiError::Status(code) => Verdict::from_http_status(*code),
///             ApiError::Timeout => Verdict::Failure,
///             ApiError::PromptTooLong => Verdict::Ignored,
///         }
///     }
/// }
///
/// assert!(ApiError::Timeout.verdict().is_failure());
/// assert_eq!(ApiError::Status(403).verdict(), Verdict::Isolate);
/// assert!(!ApiError::PromptTooLong.verdict().is_failure());
/// ```
pub trait Classify {
    /// How this outcome affects the provider's health.
    fn verdict(&self) -> Verdict;

    /// What kind of error this is, for the fallbacks that depend on it (a routed call
    /// fails over on a [`ContextWindow`](ErrorClass::ContextWindow) or
    /// [`ContentPolicy`](ErrorClass::ContentPolicy) error where another caller fault ends
    /// it).
    ///
    /// Defaults to [`ErrorClass::Other`].
    fn error_class(&self) -> ErrorClass {
        ErrorClass::Other
    }

    /// How long the provider asked callers to wait before trying it again, whatever the
    /// verdict (a 503 may carry a `Retry-After` too): a retry waits at least this long.
    ///
    /// Defaults to the verdict's [`retry_after`](Verdict::retry_after).
    fn backoff_hint(&self) -> Option<Duration> {
        self.verdict().retry_after()
    }
}

/// What kind of error a provider answered with, beyond what it says about the provider's
/// health ([`Verdict`]). Both named classes are the caller's fault
/// ([`Verdict::Ignored`]): they never count against the provider, but another provider may
/// serve the same request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Any other error.
    #[default]
    Other,
    /// The request does not fit the model's context window (OpenAI
    /// `context_length_exceeded`, `string_above_max_length`; Anthropic
    /// `request_too_large`, or an `invalid_request_error` saying the prompt is too long). A
    /// routed call fails over to the next provider with a larger
    /// [`max_context`](crate::Provider::max_context).
    ContextWindow,
    /// The provider refused the content (OpenAI `content_filter`,
    /// `content_policy_violation`). A routed call fails over to the route's
    /// [`on_content_policy`](crate::Route::on_content_policy) route, if it has one.
    ContentPolicy,
}

// `Classify` must stay object safe.
const _: Option<&dyn Classify> = None;

impl Classify for Verdict {
    fn verdict(&self) -> Verdict {
        *self
    }
}

impl Classify for Infallible {
    fn verdict(&self) -> Verdict {
        match *self {}
    }
}

/// `InvalidInput` is the caller's fault and [`Ignored`](Verdict::Ignored);
/// every other kind (refused, reset, timed out, broken pipe, unexpected EOF,
/// ...) is a [`Failure`](Verdict::Failure).
impl Classify for io::Error {
    fn verdict(&self) -> Verdict {
        match self.kind() {
            io::ErrorKind::InvalidInput => Verdict::Ignored,
            _ => Verdict::Failure,
        }
    }
}

/// A timeout always counts against the provider.
impl Classify for tokio::time::error::Elapsed {
    fn verdict(&self) -> Verdict {
        Verdict::Failure
    }
}

impl<T: Classify + ?Sized> Classify for &T {
    fn verdict(&self) -> Verdict {
        (**self).verdict()
    }

    fn error_class(&self) -> ErrorClass {
        (**self).error_class()
    }

    fn backoff_hint(&self) -> Option<Duration> {
        (**self).backoff_hint()
    }
}

impl<T: Classify + ?Sized> Classify for Box<T> {
    fn verdict(&self) -> Verdict {
        (**self).verdict()
    }

    fn error_class(&self) -> ErrorClass {
        (**self).error_class()
    }

    fn backoff_hint(&self) -> Option<Duration> {
        (**self).backoff_hint()
    }
}

impl<T: Classify + ?Sized> Classify for Arc<T> {
    fn verdict(&self) -> Verdict {
        (**self).verdict()
    }

    fn error_class(&self) -> ErrorClass {
        (**self).error_class()
    }

    fn backoff_hint(&self) -> Option<Duration> {
        (**self).backoff_hint()
    }
}

/// A retry hint header that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The value is not valid UTF-8, not a non-negative number nor a date.
    #[error("malformed {header} header {value:?}: {reason}")]
    Malformed {
        /// The header name, lowercase.
        header: &'static str,
        /// The value (lossy UTF-8, at most 64 characters).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The value asks for a delay of more than one year.
    #[error("{header} header {value:?} is out of range (more than one year)")]
    OutOfRange {
        /// The header name, lowercase.
        header: &'static str,
        /// The value (lossy UTF-8, at most 64 characters).
        value: String,
    },
}

const RETRY_AFTER: &str = "retry-after";
const RETRY_AFTER_MS: &str = "retry-after-ms";
const NOT_DECIMAL: Reject = Reject::Malformed("not a non-negative decimal number");

/// Why a value was rejected, before the header name and value are attached.
enum Reject {
    Malformed(&'static str),
    OutOfRange,
}

/// Quotes at most [`MAX_QUOTED_CHARS`] characters of `raw`, never decoding
/// more than a few hundred bytes of it.
fn quote(raw: &[u8]) -> String {
    let head = &raw[..raw.len().min(MAX_QUOTED_CHARS * 4)];
    let mut chars = String::from_utf8_lossy(head).into_owned();
    if chars.chars().count() > MAX_QUOTED_CHARS || head.len() < raw.len() {
        chars = chars.chars().take(MAX_QUOTED_CHARS - 1).collect();
        chars.push('…');
    }
    chars
}

/// Decodes and trims `raw`, runs `parse` on it and enforces the one-year cap.
fn parse_header(
    header: &'static str,
    raw: &[u8],
    parse: impl FnOnce(&str) -> Result<Duration, Reject>,
) -> Result<Duration, HeaderError> {
    let parsed = match std::str::from_utf8(raw).map(str::trim) {
        Err(_) => Err(Reject::Malformed("not valid UTF-8")),
        Ok("") => Err(Reject::Malformed("empty")),
        Ok(text) => parse(text),
    };
    let capped = parsed.and_then(|delay| {
        (delay <= MAX_HINT)
            .then_some(delay)
            .ok_or(Reject::OutOfRange)
    });
    capped.map_err(|reject| {
        let value = quote(raw);
        match reject {
            Reject::Malformed(reason) => HeaderError::Malformed {
                header,
                value,
                reason,
            },
            Reject::OutOfRange => HeaderError::OutOfRange { header, value },
        }
    })
}

/// Parses a non-negative decimal number (`12`, `1.5`, `.5`) of units, where one unit is
/// `unit_nanos` nanoseconds, exactly (integer arithmetic; digits past a nanosecond are
/// dropped).
fn parse_delay(text: &str, unit_nanos: u64) -> Result<Duration, Reject> {
    if text.starts_with('-') {
        return Err(Reject::Malformed("negative delay"));
    }
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let decimal = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if int.len() + frac.len() == 0 || !decimal(int) || !decimal(frac) {
        return Err(NOT_DECIMAL);
    }
    let int = int.trim_start_matches('0');
    // More than 20 integer digits is beyond any u64, let alone the one-year cap.
    if int.len() > 20 {
        return Err(Reject::OutOfRange);
    }
    let whole: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| NOT_DECIMAL)?
    };
    let frac = &frac[..frac.len().min(18)];
    let fraction: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| NOT_DECIMAL)?
    };
    let unit = u128::from(unit_nanos);
    let nanos = whole * unit + fraction * unit / 10u128.pow(frac.len() as u32);
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| Reject::OutOfRange)?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Parses a `Retry-After` value: delay-seconds (a non-negative decimal is
/// tolerated) or an HTTP-date, relative to `now`. A date in the past gives
/// [`Duration::ZERO`]; anything beyond one year is
/// [`OutOfRange`](HeaderError::OutOfRange).
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Result<Duration, HeaderError> {
    parse_header(RETRY_AFTER, value, |text| {
        if text.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '.' | '-' | '+')) {
            return parse_delay(text, 1_000_000_000);
        }
        let date = httpdate::parse_http_date(text)
            .map_err(|_| Reject::Malformed("neither delay-seconds nor an HTTP-date"))?;
        Ok(date.duration_since(now).unwrap_or(Duration::ZERO))
    })
}

/// Parses a `Retry-After-Ms` value: a non-negative decimal number of
/// milliseconds, at most one year.
pub fn parse_retry_after_ms(value: &[u8]) -> Result<Duration, HeaderError> {
    parse_header(RETRY_AFTER_MS, value, |text| parse_delay(text, 1_000_000))
}

/// Extracts the back-off hint from response headers, at wall-clock time `now`.
///
/// Names are compared case-insensitively. The first valid `retry-after-ms`
/// wins; otherwise the first valid `retry-after`. Malformed values are skipped.
pub fn retry_hint<I, K, V>(headers: I, now: SystemTime) -> Option<Duration>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<[u8]>,
{
    let mut seconds = None;
    for (name, value) in headers {
        let (name, value) = (name.as_ref(), value.as_ref());
        if name.eq_ignore_ascii_case(RETRY_AFTER_MS) {
            if let Ok(delay) = parse_retry_after_ms(value) {
                return Some(delay);
            }
        } else if seconds.is_none() && name.eq_ignore_ascii_case(RETRY_AFTER) {
            seconds = parse_retry_after(value, now).ok();
        }
    }
    seconds
}

/// Classifies an HTTP response status plus its headers, at wall-clock time
/// `now` (used to turn an HTTP-date `Retry-After` into a delay).
///
/// * 100–399: [`Success`](Verdict::Success).
/// * 429: [`RateLimited`](Verdict::RateLimited), with the hint from
///   [`retry_hint`] (`None` if absent or malformed).
/// * 401, 402, 403: [`Isolate`](Verdict::Isolate).
/// * 408 Request Timeout: [`Failure`](Verdict::Failure). A deliberate
///   exception among the 4xx: it is a timeout, not a bad request.
/// * Other 4xx: [`Ignored`](Verdict::Ignored).
/// * 5xx (including 529 "overloaded"): [`Failure`](Verdict::Failure).
/// * Below 100 or from 600 on: [`Failure`](Verdict::Failure), since a
///   malformed status from a misbehaving provider counts against it.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use fusebox::{http_verdict_at, Verdict};
///
/// let verdict = http_verdict_at(429, [("Retry-After", "7")], SystemTime::UNIX_EPOCH);
/// assert_eq!(verdict, Verdict::RateLimited { retry_after: Some(Duration::from_secs(7)) });
/// ```
pub fn http_verdict_at<I, K, V>(status: u16, headers: I, now: SystemTime) -> Verdict
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<[u8]>,
{
    match Verdict::from_http_status(status) {
        Verdict::RateLimited { .. } => Verdict::RateLimited {
            retry_after: retry_hint(headers, now),
        },
        verdict => verdict,
    }
}

/// Same as [`http_verdict_at`], reading [`SystemTime::now`].
pub fn http_verdict<I, K, V>(status: u16, headers: I) -> Verdict
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<[u8]>,
{
    http_verdict_at(status, headers, SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn on_429(headers: &[(&str, &str)]) -> Verdict {
        http_verdict_at(429, headers.iter().copied(), now())
    }

    fn secs(value: &str) -> Result<Duration, HeaderError> {
        parse_retry_after(value.as_bytes(), now())
    }

    fn limited(millis: u64) -> Verdict {
        let retry_after = Some(Duration::from_millis(millis));
        Verdict::RateLimited { retry_after }
    }

    #[test]
    fn status_classes() {
        use Verdict::*;
        #[rustfmt::skip]
        let cases = [
            (200, Success), (301, Success), (400, Ignored), (401, Isolate),
            (402, Isolate), (403, Isolate), (404, Ignored), (408, Failure),
            (409, Ignored), (413, Ignored), (422, Ignored),
            (429, RateLimited { retry_after: None }), (500, Failure), (502, Failure),
            (503, Failure), (529, Failure), (599, Failure), (600, Failure), (99, Failure),
        ];
        for (status, expected) in cases {
            assert_eq!(http_verdict(status, Vec::<(&str, &str)>::new()), expected);
            assert_eq!(Verdict::from_http_status(status), expected, "{status}");
        }
        // Hints only matter on 429.
        assert_eq!(http_verdict(503, [("retry-after", "30")]), Failure);
        assert!(Verdict::Failure.is_failure() && Verdict::Isolate.is_failure());
        assert!(limited(1).is_failure() && !Verdict::Ignored.is_failure());
        assert!(!Verdict::Success.is_failure());
        assert_eq!(limited(2).retry_after(), Some(Duration::from_millis(2)));
        assert_eq!(Verdict::Failure.retry_after(), None);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(on_429(&[("retry-after", "30")]), limited(30_000));
        assert_eq!(on_429(&[("Retry-After", " 1.5 ")]), limited(1_500));
        assert_eq!(secs("0"), Ok(Duration::ZERO));
        let future = httpdate::fmt_http_date(now() + Duration::from_secs(120));
        assert_eq!(on_429(&[("RETRY-AFTER", &future)]), limited(120_000));
        let past = httpdate::fmt_http_date(now() - Duration::from_secs(120));
        assert_eq!(secs(&past), Ok(Duration::ZERO));
        let far = httpdate::fmt_http_date(now() + 2 * MAX_HINT);
        assert!(matches!(secs(&far), Err(HeaderError::OutOfRange { .. })));
    }

    #[test]
    fn retry_after_ms_takes_precedence() {
        let headers = [("Retry-After", "30"), ("Retry-After-Ms", "1500")];
        assert_eq!(on_429(&headers), limited(1_500));
        assert_eq!(
            parse_retry_after_ms(b"1500.0"),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after_ms(b" 250 "),
            Ok(Duration::from_millis(250))
        );
        // An invalid ms hint falls back to retry-after.
        let headers = [("retry-after-ms", "soon"), ("retry-after", "4")];
        assert_eq!(on_429(&headers), limited(4_000));
        // The first valid value of a repeated header wins.
        let headers = [("retry-after", "x"), ("RETRY-after", "5")];
        assert_eq!(
            on_429(&[headers[0], headers[1], headers[1]]),
            limited(5_000)
        );
    }

    #[test]
    fn malformed_and_out_of_range_hints_are_skipped() {
        #[rustfmt::skip]
        let bad: [&[u8]; 12] = [
            b"-1", b"abc", b"", b"   ", b"NaN", b"inf", b"1e300", b"+3", b"1.2.3", b".",
            b"\xff\xfe", b"3 s",
        ];
        for value in bad {
            assert!(parse_retry_after(value, now()).is_err(), "{value:?}");
            assert!(parse_retry_after_ms(value).is_err(), "{value:?}");
            let verdict = http_verdict_at(429, [("retry-after", value)], now());
            assert_eq!(verdict, Verdict::RateLimited { retry_after: None });
        }
        let reason = |err| match err {
            Err(HeaderError::Malformed { reason, .. }) => reason,
            _ => "",
        };
        assert_eq!(reason(secs("-1")), "negative delay");
        assert_eq!(reason(parse_retry_after_ms(b"\xff")), "not valid UTF-8");
        let huge = format!("1{}", "0".repeat(300));
        for value in [huge.as_str(), "31536001", "99999999999999999999"] {
            let verdict = on_429(&[("retry-after", value)]);
            assert_eq!(verdict, Verdict::RateLimited { retry_after: None });
            assert!(matches!(secs(value), Err(HeaderError::OutOfRange { .. })));
        }
        assert_eq!(secs("31536000"), Ok(MAX_HINT));
        assert!(parse_retry_after_ms(b"31536000001").is_err());
    }

    #[test]
    fn error_messages_stay_short() {
        for value in ["a", "9", "é"].map(|s| s.repeat(1 << 20)) {
            let message = secs(&value).map_err(|e| e.to_string()).err();
            assert!(message.is_some_and(|m| m.chars().count() < 150));
        }
        let message = parse_retry_after_ms(b"\xffabc").map_err(|e| e.to_string());
        let expected = "malformed retry-after-ms header \"\u{fffd}abc\": not valid UTF-8";
        assert_eq!(message, Err(expected.to_owned()));
        assert_eq!(quote(&[b'x'; 64]), "x".repeat(64));
        assert_eq!(quote(&[b'x'; 65]), format!("{}…", "x".repeat(63)));
    }

    #[test]
    fn io_errors() {
        use io::ErrorKind::*;
        assert_eq!(io::Error::from(InvalidInput).verdict(), Verdict::Ignored);
        #[rustfmt::skip]
        let kinds = [ConnectionRefused, ConnectionReset, TimedOut, BrokenPipe, UnexpectedEof];
        for kind in kinds.map(io::Error::from) {
            assert_eq!(kind.verdict(), Verdict::Failure, "{kind}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn elapsed_is_failure() {
        let elapsed = tokio::time::timeout(Duration::ZERO, std::future::pending::<()>()).await;
        assert_eq!(elapsed.map_err(|e| e.verdict()), Err(Verdict::Failure));
    }

    #[test]
    fn forwarding_impls() {
        fn via<C: Classify>(outcome: C) -> Verdict {
            outcome.verdict()
        }
        let boxed: Box<dyn Classify> = Box::new(Verdict::Isolate);
        assert_eq!(via(&boxed), Verdict::Isolate);
        let shared: Arc<dyn Classify + Send + Sync> =
            Arc::new(io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(via(shared), Verdict::Failure);
        assert_eq!(via(Verdict::Ignored), Verdict::Ignored);
    }
}
