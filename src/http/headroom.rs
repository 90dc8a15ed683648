//! Parsing both vendors' rate-limit headers into a [`Headroom`].

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

use crate::headroom::{Headroom, Quota, QuotaKind, MAX_RESET};
use crate::ProviderHandle;

/// Which part of a quota a header gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Limit,
    Remaining,
    Reset,
}

/// Every header read, lowercase, with the quota and the field it gives.
const NAMES: [(&str, QuotaKind, Field); 18] = [
    (
        "x-ratelimit-limit-requests",
        QuotaKind::Requests,
        Field::Limit,
    ),
    (
        "x-ratelimit-remaining-requests",
        QuotaKind::Requests,
        Field::Remaining,
    ),
    (
        "x-ratelimit-reset-requests",
        QuotaKind::Requests,
        Field::Reset,
    ),
    ("x-ratelimit-limit-tokens", QuotaKind::Tokens, Field::Limit),
    (
        "x-ratelimit-remaining-tokens",
        QuotaKind::Tokens,
        Field::Remaining,
    ),
    ("x-ratelimit-reset-tokens", QuotaKind::Tokens, Field::Reset),
    (
        "anthropic-ratelimit-requests-limit",
        QuotaKind::Requests,
        Field::Limit,
    ),
    (
        "anthropic-ratelimit-requests-remaining",
        QuotaKind::Requests,
        Field::Remaining,
    ),
    (
        "anthropic-ratelimit-requests-reset",
        QuotaKind::Requests,
        Field::Reset,
    ),
    (
        "anthropic-ratelimit-tokens-limit",
        QuotaKind::Tokens,
        Field::Limit,
    ),
    (
        "anthropic-ratelimit-tokens-remaining",
        QuotaKind::Tokens,
        Field::Remaining,
    ),
    (
        "anthropic-ratelimit-tokens-reset",
        QuotaKind::Tokens,
        Field::Reset,
    ),
    (
        "anthropic-ratelimit-input-tokens-limit",
        QuotaKind::InputTokens,
        Field::Limit,
    ),
    (
        "anthropic-ratelimit-input-tokens-remaining",
        QuotaKind::InputTokens,
        Field::Remaining,
    ),
    (
        "anthropic-ratelimit-input-tokens-reset",
        QuotaKind::InputTokens,
        Field::Reset,
    ),
    (
        "anthropic-ratelimit-output-tokens-limit",
        QuotaKind::OutputTokens,
        Field::Limit,
    ),
    (
        "anthropic-ratelimit-output-tokens-remaining",
        QuotaKind::OutputTokens,
        Field::Remaining,
    ),
    (
        "anthropic-ratelimit-output-tokens-reset",
        QuotaKind::OutputTokens,
        Field::Reset,
    ),
];

/// The names of every rate-limit header [`parse_headroom`] reads, lowercase: OpenAI's six
/// and Anthropic's twelve.
pub fn headroom_header_names() -> impl ExactSizeIterator<Item = &'static str> {
    NAMES.iter().map(|(name, _, _)| *name)
}

/// What the headers gave for one quota so far.
#[derive(Debug, Default, Clone, Copy)]
struct Slots {
    limit: Option<u64>,
    remaining: Option<u64>,
    reset: Option<Duration>,
}

/// Reads both vendors' rate-limit headers, at wall-clock time `now` (to turn an RFC 3339
/// reset into a delay).
///
/// | headers | quota |
/// |---|---|
/// | `x-ratelimit-{limit,remaining,reset}-requests`, `anthropic-ratelimit-requests-{limit,remaining,reset}` | [`requests`](Headroom::requests) |
/// | `x-ratelimit-{limit,remaining,reset}-tokens`, `anthropic-ratelimit-tokens-{limit,remaining,reset}` | [`tokens`](Headroom::tokens) |
/// | `anthropic-ratelimit-input-tokens-{limit,remaining,reset}` | [`input_tokens`](Headroom::input_tokens) |
/// | `anthropic-ratelimit-output-tokens-{limit,remaining,reset}` | [`output_tokens`](Headroom::output_tokens) |
///
/// - Names are compared case-insensitively; values are trimmed of spaces and tabs.
/// - Limits and remainders are non-negative decimal integers that fit a `u64`; resets are
///   read by [`parse_reset`].
/// - For each field of each quota the first valid value wins; invalid values are skipped.
/// - A quota is announced when its `remaining` is: a limit or a reset alone says nothing of
///   what is left, and is dropped.
///
/// Returns `None` when no quota is announced. Never panics.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use fusebox::http::parse_headroom;
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_760_000_000);
/// let openai = [
///     ("x-ratelimit-limit-requests", "10000"),
///     ("x-ratelimit-remaining-requests", "9999"),
///     ("x-ratelimit-reset-requests", "6ms"),
///     ("x-ratelimit-limit-tokens", "30000000"),
///     ("x-ratelimit-remaining-tokens", "29999990"),
///     ("x-ratelimit-reset-tokens", "0s"),
/// ];
/// let headroom = parse_headroom(openai, now).unwrap();
/// let requests = headroom.requests.unwrap();
/// assert_eq!((requests.remaining, requests.limit), (9999, Some(10000)));
/// assert_eq!(requests.reset, Some(Duration::from_millis(6)));
///
/// let anthropic = [
///     ("anthropic-ratelimit-requests-limit", "50"),
///     ("anthropic-ratelimit-requests-remaining", "0"),
///     ("anthropic-ratelimit-requests-reset", "2025-10-09T08:53:40Z"),
/// ];
/// let headroom = parse_headroom(anthropic, now).unwrap();
/// assert_eq!(headroom.ratio(), Some(0.0));
/// assert_eq!(headroom.exhausted_for(), Some(Duration::from_secs(20)));
///
/// assert_eq!(parse_headroom([("retry-after", "20")], now), None);
/// ```
pub fn parse_headroom<I, K, V>(headers: I, now: SystemTime) -> Option<Headroom>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<[u8]>,
{
    let mut slots = [Slots::default(); 4];
    for (name, value) in headers {
        let name = name.as_ref();
        if !(starts_with_ignore_case(name, "x-ratelimit-")
            || starts_with_ignore_case(name, "anthropic-ratelimit-"))
        {
            continue;
        }
        let Some(&(_, kind, field)) = NAMES.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(name))
        else {
            continue;
        };
        let slot = &mut slots[kind as usize];
        let value = value.as_ref();
        match field {
            Field::Limit if slot.limit.is_none() => slot.limit = parse_count(value),
            Field::Remaining if slot.remaining.is_none() => slot.remaining = parse_count(value),
            Field::Reset if slot.reset.is_none() => slot.reset = parse_reset(value, now),
            _ => {}
        }
    }
    let mut headroom = Headroom::default();
    for kind in QuotaKind::ALL {
        let slot = slots[kind as usize];
        *headroom.get_mut(kind) = slot.remaining.map(|remaining| Quota {
            remaining,
            limit: slot.limit,
            reset: slot.reset,
        });
    }
    (!headroom.is_empty()).then_some(headroom)
}

/// [`parse_headroom`] of a response's headers, at [`SystemTime::now`].
pub fn headroom(headers: &HeaderMap) -> Option<Headroom> {
    parse_headroom(headers, SystemTime::now())
}

/// Reads a response's rate-limit headers ([`headroom`]) and records them as `provider`'s
/// latest headroom, at [`tokio::time::Instant::now`]; returns what was recorded. A response
/// without rate-limit headers changes nothing.
///
/// Call it on every response of the provider, successful or not: a 429's headers say when
/// the quota is back, a 200's how much is left. What is recorded shows in
/// [`ProviderStatus::headroom`](crate::ProviderStatus::headroom) and the
/// `fusebox_headroom_ratio` gauge, and is what the router reads (see
/// [`HeadroomCell`](crate::headroom::HeadroomCell)).
///
/// ```no_run
/// # async fn run(fuse: fusebox::Supervisor, client: reqwest::Client) -> Result<(), fusebox::http::HttpError> {
/// let provider = fuse.provider("openai").unwrap();
/// let response = client.post("http://127.0.0.1:8080/v1/chat/completions").send().await?;
/// fusebox::http::record_headroom(&provider, response.headers());
/// let response = fusebox::http::check(response).await?;
/// # let _ = response; Ok(())
/// # }
/// ```
pub fn record_headroom(provider: &ProviderHandle, headers: &HeaderMap) -> Option<Headroom> {
    let headroom = headroom(headers)?;
    provider.record_headroom(headroom);
    Some(headroom)
}

fn starts_with_ignore_case(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// `value` without leading and trailing spaces and tabs, if it is UTF-8.
fn text(value: &[u8]) -> Option<&str> {
    std::str::from_utf8(value)
        .ok()
        .map(|t| t.trim_matches([' ', '\t']))
}

/// A non-negative decimal integer that fits a `u64`.
fn parse_count(value: &[u8]) -> Option<u64> {
    let text = text(value)?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses a rate-limit reset, at wall-clock time `now`: how long until the quota is full
/// again.
///
/// Accepted (after trimming spaces and tabs):
///
/// - a Go duration, as OpenAI sends: `6m0s`, `1s`, `20ms`, `1h2m3.5s`, `59.245s`, `0`
///   (units `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`; decimal fractions allowed);
/// - a non-negative decimal number of seconds: `20`, `1.5`;
/// - an RFC 3339 time, as Anthropic sends: `2025-10-09T08:53:40Z`, with fractional seconds,
///   a lowercase `t`/`z` or a numeric offset (`+02:00`). A time in the past gives
///   [`Duration::ZERO`].
///
/// Exact (integer arithmetic, digits past a nanosecond dropped). `None` for anything else,
/// a negative value, or more than one year ([`MAX_RESET`]). Never panics.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use fusebox::http::parse_reset;
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_760_000_000);
/// assert_eq!(parse_reset(b"6m0s", now), Some(Duration::from_secs(360)));
/// assert_eq!(parse_reset(b"1m30.042s", now), Some(Duration::from_millis(90_042)));
/// assert_eq!(parse_reset(b"20ms", now), Some(Duration::from_millis(20)));
/// assert_eq!(parse_reset(b"2025-10-09T08:53:21.5Z", now), Some(Duration::from_millis(1_500)));
/// assert_eq!(parse_reset(b"soon", now), None);
/// ```
pub fn parse_reset(value: &[u8], now: SystemTime) -> Option<Duration> {
    let text = text(value)?;
    let reset = if looks_like_date(text) {
        parse_rfc3339(text)?
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    } else {
        parse_go_duration(text)?
    };
    (reset <= MAX_RESET).then_some(reset)
}

/// `YYYY-`: a date, not a duration.
fn looks_like_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() > 4 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}

/// An RFC 3339 date-time; a missing offset is taken as UTC.
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    if !text.is_ascii() {
        return None;
    }
    let upper = text.to_ascii_uppercase();
    let (base, offset) = split_offset(&upper)?;
    // `YYYY-MM-DDTHH:MM:SS`, then only a fraction (humantime tolerates trailing bytes).
    let fraction = base.get(19..)?;
    let fraction_ok = fraction.is_empty()
        || fraction
            .strip_prefix('.')
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    if !fraction_ok {
        return None;
    }
    let utc = humantime::parse_rfc3339_weak(base).ok()?;
    // East of UTC (`+`): the UTC instant is earlier.
    if offset >= 0 {
        utc.checked_sub(Duration::from_secs(offset.unsigned_abs()))
    } else {
        utc.checked_add(Duration::from_secs(offset.unsigned_abs()))
    }
}

/// Splits `Z` or `±HH:MM` off the end of an (uppercase) date-time: the rest and the offset in
/// seconds. No zone designator is an offset of 0.
fn split_offset(text: &str) -> Option<(&str, i64)> {
    if let Some(base) = text.strip_suffix('Z') {
        return Some((base, 0));
    }
    let b = text.as_bytes();
    let n = b.len();
    // `±HH:MM` after at least a full date-time.
    if n >= 19 + 6 && matches!(b[n - 6], b'+' | b'-') && b[n - 3] == b':' {
        let two = |i: usize| -> Option<i64> {
            let (h, l) = (b[i], b[i + 1]);
            (h.is_ascii_digit() && l.is_ascii_digit())
                .then(|| i64::from(h - b'0') * 10 + i64::from(l - b'0'))
        };
        let (hours, minutes) = (two(n - 5)?, two(n - 2)?);
        if hours > 23 || minutes > 59 {
            return None;
        }
        let secs = hours * 3600 + minutes * 60;
        let sign = if b[n - 6] == b'-' { -1 } else { 1 };
        return Some((&text[..n - 6], sign * secs));
    }
    Some((text, 0))
}

/// A Go duration (`1h2m3.5s`), or a bare decimal number of seconds.
fn parse_go_duration(text: &str) -> Option<Duration> {
    const SECOND: u128 = 1_000_000_000;
    let text = text.strip_prefix('+').unwrap_or(text);
    if text.is_empty() {
        return None;
    }
    let is_number = |c: char| c.is_ascii_digit() || c == '.';
    if text.chars().all(is_number) {
        return nanos_to_duration(decimal(text, SECOND)?);
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !is_number(c)).unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_end);
        let unit_end = tail.find(is_number).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let unit = match unit {
            "h" => 3600 * SECOND,
            "m" => 60 * SECOND,
            "s" => SECOND,
            "ms" => 1_000_000,
            "us" | "µs" | "μs" => 1_000,
            "ns" => 1,
            _ => return None,
        };
        total = total.checked_add(decimal(number, unit)?)?;
        rest = tail;
    }
    nanos_to_duration(total)
}

/// `number` (digits, with at most one `.`) times `unit` nanoseconds, exactly; digits past
/// 18 decimals are dropped. `None` for an empty or malformed number or beyond a year.
fn decimal(number: &str, unit: u128) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if int.len() + frac.len() == 0 || !digits(int) || !digits(frac) {
        return None;
    }
    let int = int.trim_start_matches('0');
    // Beyond a year in any unit.
    if int.len() > 20 {
        return None;
    }
    let whole: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac = &frac[..frac.len().min(18)];
    let fraction: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let scale = 10u128.pow(frac.len() as u32);
    let nanos = whole
        .checked_mul(unit)?
        .checked_add(fraction * unit / scale)?;
    (nanos <= MAX_RESET.as_nanos()).then_some(nanos)
}

fn nanos_to_duration(nanos: u128) -> Option<Duration> {
    if nanos > MAX_RESET.as_nanos() {
        return None;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_760_000_000)
    }

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        #[rustfmt::skip]
        let cases: [(&str, Option<Duration>); 22] = [
            ("6m0s", Some(ms(360_000))), ("1s", Some(ms(1_000))), ("20ms", Some(ms(20))),
            ("0s", Some(ms(0))), ("0", Some(ms(0))), ("1h2m3.5s", Some(ms(3_723_500))),
            ("59.245s", Some(ms(59_245))), ("1.5", Some(ms(1_500))), (".5s", Some(ms(500))),
            ("250us", Some(Duration::from_micros(250))), ("3µs", Some(Duration::from_micros(3))),
            ("7ns", Some(Duration::from_nanos(7))), ("+2s", Some(ms(2_000))),
            ("8760h", Some(MAX_RESET)), ("8760h1ns", None), ("-1s", None), ("1", Some(ms(1_000))),
            ("1d", None), ("s", None), ("1.2.3s", None), ("", None), ("1 s", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_go_duration(text), expected, "{text:?}");
        }
        assert_eq!(
            parse_go_duration("0.0000000015s"),
            Some(Duration::from_nanos(1))
        );
        assert_eq!(parse_go_duration(&"9".repeat(40)), None);
    }

    #[test]
    fn rfc3339_resets() {
        let at = |secs: u64| parse_reset(format!("{secs}").as_bytes(), now());
        assert_eq!(at(20), Some(Duration::from_secs(20)));
        let cases = [
            ("2025-10-09T08:53:40Z", Some(20_000)),
            ("2025-10-09t08:53:40z", Some(20_000)),
            ("2025-10-09T08:53:40.250Z", Some(20_250)),
            ("2025-10-09T10:53:40+02:00", Some(20_000)),
            ("2025-10-09T06:53:40-02:00", Some(20_000)),
            ("2025-10-09T08:53:40", Some(20_000)),
            ("2025-10-09T08:53:00Z", Some(0)),
            ("2025-10-09T08:53:40+24:00", None),
            ("2025-13-09T08:53:40Z", None),
            ("2027-10-09T08:53:40Z", None),
            ("2025-10-09T08:53", None),
            ("2025-10-09T08:53:40Zjunk", None),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_reset(text.as_bytes(), now()),
                millis.map(Duration::from_millis),
                "{text}"
            );
        }
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count(b" 42\t"), Some(42));
        assert_eq!(parse_count(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b"18446744073709551616"[..],
            b"-1",
            b"1.0",
            b"",
            b"+1",
            b"\xff",
        ] {
            assert_eq!(parse_count(bad), None, "{bad:?}");
        }
    }
}
