//! The checks behind the fuzz targets, shared with `tests/hostile_input.rs` (which includes
//! this file with `#[path]` and replays the seed corpus in `fuzz/seeds/` through it on every
//! CI run).
//!
//! Every check panics when fusebox breaks a promise about hostile input; a panic inside
//! fusebox itself is caught the same way. The rules checked are the documented ones
//! (`fusebox::config::file`, `fusebox::classify`, `fusebox::http`), written out again here
//! rather than read from the code under test.

#![allow(dead_code)] // each fuzz target uses half of these

use std::time::{Duration, SystemTime};

use fusebox::classify::{parse_retry_after, parse_retry_after_ms, retry_hint};
use fusebox::headroom::{Headroom, HeadroomCell, QuotaKind};
use fusebox::http::{
    classify_response, headroom_header_names, parse_headroom, parse_reset, MAX_ERROR_BODY,
};
use fusebox::{http_verdict_at, Config, ConfigError, HeaderError, Verdict};
use serde_json::Value;

/// The largest retry hint fusebox accepts: one year.
pub(crate) const ONE_YEAR: Duration = Duration::from_secs(31_536_000);

/// The longest a [`HeaderError`]'s message may be, in characters: the message quotes at
/// most 64 characters of the value with `{:?}`, which escapes a control character as up to
/// ten (`\u{10ffff}`), plus about a hundred characters of text.
pub(crate) const MAX_HEADER_ERROR_CHARS: usize = 64 * 10 + 120;

/// The statuses every header input is classified under: each class, its edges, and the
/// special cases (408, 429, 529, out of range).
pub(crate) const STATUSES: [u16; 24] = [
    0,
    99,
    100,
    101,
    200,
    204,
    301,
    399,
    400,
    401,
    402,
    403,
    404,
    408,
    413,
    422,
    429,
    499,
    500,
    503,
    529,
    599,
    600,
    u16::MAX,
];

/// A fixed wall clock, so that an HTTP-date hint means the same on every run.
pub(crate) fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

// ---------------------------------------------------------------------------------------
// Configuration

/// The `config_toml` target: `data` as lossy UTF-8 into [`config_text`].
pub(crate) fn config_toml(data: &[u8]) {
    config_text(&String::from_utf8_lossy(data));
}

/// `Config::from_toml_str` on `text` returns a valid configuration that round-trips through
/// `to_toml_string`, or an error [`check_config_error`] accepts.
pub(crate) fn config_text(text: &str) {
    match Config::from_toml_str(text) {
        Ok(config) => {
            if let Err(e) = config.validate() {
                panic!("accepted a configuration that does not validate: {e}\n{text}");
            }
            let rendered = config.to_toml_string();
            match Config::from_toml_str(&rendered) {
                Ok(again) => assert!(
                    again == config,
                    "the rendered configuration reads back differently\n--- input\n{text}\n\
                     --- rendered\n{rendered}\n--- first\n{config:?}\n--- again\n{again:?}"
                ),
                Err(e) => panic!(
                    "the rendered configuration does not read back: {e}\n--- input\n{text}\n\
                     --- rendered\n{rendered}"
                ),
            }
        }
        Err(e) => check_config_error(text, &e),
    }
}

/// How many lines `text` has, as a 1-based line number can count them: a line number may
/// point at the (possibly empty) line after the last newline.
pub(crate) fn line_count(text: &str) -> usize {
    text.bytes().filter(|&b| b == b'\n').count() + 1
}

/// An error from `Config::from_toml_str(text)`: shown as a non-empty message, and located
/// inside the document when it carries a line.
pub(crate) fn check_config_error(text: &str, e: &ConfigError) {
    let shown = e.to_string();
    assert!(!shown.trim().is_empty(), "an empty message for {e:?}");
    let lines = line_count(text);
    match e {
        ConfigError::Toml {
            line,
            column,
            message,
        } => {
            assert!(
                (1..=lines).contains(line),
                "line {line} of a {lines}-line document: {e:?}"
            );
            assert!(*column >= 1, "column {column}: {e:?}");
            assert!(!message.trim().is_empty(), "no message: {e:?}");
        }
        ConfigError::At { line, error } => {
            assert!(
                (1..=lines).contains(line),
                "line {line} of a {lines}-line document: {e:?}"
            );
            assert!(
                !matches!(
                    **error,
                    ConfigError::At { .. } | ConfigError::Toml { .. } | ConfigError::Io { .. }
                ),
                "a located error must wrap what is wrong, not another location: {e:?}"
            );
            assert!(!error.to_string().trim().is_empty(), "{e:?}");
        }
        ConfigError::Io { .. } => panic!("from_toml_str read a file: {e:?}"),
        ConfigError::InvalidValue { field, reason, .. } => {
            assert!(!field.is_empty() && !reason.is_empty(), "{e:?}");
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Headers and bodies

/// The `headers` target: `data` as a `Retry-After` and a `Retry-After-Ms` value, as a header
/// name, split at its first newline into a header value and a body, and whole as a body,
/// through every parser and classifier under every status of [`STATUSES`].
pub(crate) fn headers(data: &[u8]) {
    let now = now();
    check_hint(&parse_retry_after(data, now));
    check_hint(&parse_retry_after_ms(data));

    // The same bytes as rate-limit headers.
    headroom(data);

    let (value, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    };
    check_hint(&parse_retry_after(value, now));
    check_hint(&parse_retry_after_ms(value));
    let name = String::from_utf8_lossy(value).into_owned();

    let header_sets: [Vec<(&str, &[u8])>; 6] = [
        vec![],
        vec![("retry-after", data)],
        vec![("Retry-After-Ms", data)],
        vec![("RETRY-AFTER", value), ("retry-after-ms", rest)],
        vec![
            ("retry-after", rest),
            ("retry-after", value),
            ("x-other", data),
        ],
        vec![(name.as_str(), rest), (name.as_str(), b"7")],
    ];
    for (i, headers) in header_sets.iter().enumerate() {
        let hint = retry_hint(headers.iter().copied(), now);
        assert_eq!(
            hint,
            documented_hint(headers, now),
            "retry_hint of {headers:?}"
        );
        if let Some(hint) = hint {
            assert!(hint <= ONE_YEAR, "hint {hint:?} from {headers:?}");
        }
        for status in STATUSES {
            let verdict = http_verdict_at(status, headers.iter().copied(), now);
            assert_eq!(
                verdict,
                status_verdict(status, hint),
                "http_verdict_at({status}, {headers:?})"
            );
            // The bodies: the whole input and the part after the first newline under every
            // status with the first two header sets; the whole input under the statuses
            // whose verdict a body may change, with the others (bodies are the costly part).
            let bodies: &[&[u8]] = match (i, status) {
                (0 | 1, _) => &[data, rest],
                (_, 400 | 401 | 429 | 503) => &[data],
                _ => &[],
            };
            for &body in bodies {
                let verdict = classify_response(status, headers.iter().copied(), body, now);
                check_verdict(status, hint, body, verdict);
            }
        }
    }
}

/// A parsed hint is at most a year; an error is a short, non-empty message quoting at most
/// 64 characters of the value.
pub(crate) fn check_hint(parsed: &Result<Duration, HeaderError>) {
    match parsed {
        Ok(delay) => assert!(*delay <= ONE_YEAR, "{delay:?}"),
        Err(e) => {
            let shown = e.to_string();
            let chars = shown.chars().count();
            assert!(
                chars > 0 && chars <= MAX_HEADER_ERROR_CHARS,
                "{chars}: {e:?}"
            );
            let quoted = match e {
                HeaderError::Malformed { value, .. } | HeaderError::OutOfRange { value, .. } => {
                    value
                }
                _ => return,
            };
            assert!(quoted.chars().count() <= 64, "{e:?}");
        }
    }
}

/// The hint `retry_hint` must find: the first valid `retry-after-ms` (any case), else the
/// first valid `retry-after`.
pub(crate) fn documented_hint(headers: &[(&str, &[u8])], now: SystemTime) -> Option<Duration> {
    let named = |wanted: &str| {
        let mut valid = headers
            .iter()
            .filter(move |(name, _)| name.eq_ignore_ascii_case(wanted));
        valid.find_map(|(_, value)| match wanted {
            "retry-after-ms" => parse_retry_after_ms(value).ok(),
            _ => parse_retry_after(value, now).ok(),
        })
    };
    named("retry-after-ms").or_else(|| named("retry-after"))
}

/// The verdict of a status and the headers' hint (`http_verdict_at`'s table).
pub(crate) fn status_verdict(status: u16, hint: Option<Duration>) -> Verdict {
    match status {
        100..=399 => Verdict::Success,
        429 => Verdict::RateLimited { retry_after: hint },
        401..=403 => Verdict::Isolate,
        408 => Verdict::Failure,
        400..=499 => Verdict::Ignored,
        _ => Verdict::Failure,
    }
}

/// The verdict an error `code` or `type` stands for (the table in `fusebox::http`).
pub(crate) fn named_verdict(name: &str, hint: Option<Duration>) -> Option<Verdict> {
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

/// `error.code` and `error.type` of an OpenAI- or Anthropic-shaped error body, when they are
/// strings; `None` for a body that is not such an object (only the first
/// [`MAX_ERROR_BODY`] bytes count, after an optional UTF-8 byte order mark).
pub(crate) fn body_names(body: &[u8]) -> Option<(Option<String>, Option<String>)> {
    let body = &body[..body.len().min(MAX_ERROR_BODY)];
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let Ok(Value::Object(root)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let Some(Value::Object(error)) = root.get("error") else {
        return None;
    };
    let string = |key: &str| error.get(key).and_then(Value::as_str).map(str::to_owned);
    Some((string("code"), string("type")))
}

/// What `classify_response` must say, by the rules documented in `fusebox::http`.
pub(crate) fn documented_verdict(status: u16, hint: Option<Duration>, body: &[u8]) -> Verdict {
    let base = status_verdict(status, hint);
    if base == Verdict::Success {
        return base; // a success status is never changed by its body
    }
    let Some((code, kind)) = body_names(body) else {
        return base;
    };
    if let Some(verdict) = code.as_deref().and_then(|c| named_verdict(c, hint)) {
        return verdict; // the code wins
    }
    match kind.as_deref().map(|k| (k, named_verdict(k, hint))) {
        // OpenAI's catch-all type alone does not turn a 401-403 into the caller's fault.
        Some(("invalid_request_error", Some(_))) if base == Verdict::Isolate => base,
        Some((_, Some(verdict))) => verdict,
        _ => base,
    }
}

/// `classify_response(status, headers, body)` gave `verdict`, where the headers' hint is
/// `hint`: it must be what the documentation says, and in particular
///
/// - 100-399 is always `Success`, whatever the body;
/// - 429 is `RateLimited` with the headers' hint, unless a recognised `code` or `type` in the
///   body says otherwise;
/// - 5xx, and statuses outside 100-599, are never `Success`;
/// - a rate limit always carries the headers' hint.
pub(crate) fn check_verdict(status: u16, hint: Option<Duration>, body: &[u8], verdict: Verdict) {
    let recognised = || {
        body_names(body).is_some_and(|(code, kind)| {
            [code, kind]
                .iter()
                .flatten()
                .any(|n| named_verdict(n, hint) == Some(verdict))
        })
    };
    match status {
        100..=399 => assert_eq!(verdict, Verdict::Success, "status {status}"),
        429 => assert!(
            verdict == (Verdict::RateLimited { retry_after: hint }) || recognised(),
            "429 gave {verdict:?} without a recognised body saying so"
        ),
        _ if !(100..500).contains(&status) => {
            assert_ne!(verdict, Verdict::Success, "status {status}");
        }
        _ => {}
    }
    if let Verdict::RateLimited { retry_after } = verdict {
        assert_eq!(
            retry_after, hint,
            "a rate limit must carry the headers' hint"
        );
    }
    assert_eq!(
        verdict,
        documented_verdict(status, hint, body),
        "classify_response({status}, hint {hint:?}, body {:?})",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
}

// ---------------------------------------------------------------------------------------
// Rate-limit headroom

/// The `headroom` target (also run by `headers` on every input): `data` as a header block
/// (`name: value` lines), and whole as the value of every rate-limit header, through
/// `parse_headroom`, `parse_reset` and a `HeadroomCell`: never a panic, and every field as
/// the documented rules say.
pub(crate) fn headroom(data: &[u8]) {
    let now = now();
    check_reset(data, parse_reset(data, now));
    let block: Vec<(String, &[u8])> = data
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let name = String::from_utf8_lossy(&line[..colon]).trim().to_owned();
            Some((
                name,
                line[colon + 1..]
                    .strip_suffix(b"\r")
                    .unwrap_or(&line[colon + 1..]),
            ))
        })
        .collect();
    for (_, value) in &block {
        check_reset(value, parse_reset(value, now));
    }
    check_headroom(&block, now);
    // The whole input as each header's value, and as every header's at once.
    let mut all = Vec::new();
    for name in headroom_header_names() {
        check_headroom(&[(name.to_owned(), data)], now);
        all.push((name.to_ascii_uppercase(), data));
    }
    check_headroom(&all, now);
}

/// A reset is at most a year; a value of only ASCII digits (after trimming spaces and tabs)
/// is that many seconds.
pub(crate) fn check_reset(value: &[u8], reset: Option<Duration>) {
    if let Some(reset) = reset {
        assert!(reset <= ONE_YEAR, "reset {reset:?} from {value:?}");
    }
    let text = String::from_utf8_lossy(value);
    let text = text.trim_matches([' ', '\t']);
    if !text.is_empty() && text.len() <= 12 && text.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = text.parse().unwrap_or(u64::MAX);
        let expected = (secs <= ONE_YEAR.as_secs()).then(|| Duration::from_secs(secs));
        assert_eq!(reset, expected, "parse_reset({text:?})");
    }
}

/// The documented header names of each field of a quota, lowercase.
fn documented_names(kind: QuotaKind, field: &str) -> Vec<String> {
    let (openai, anthropic) = match kind {
        QuotaKind::Requests => (Some("requests"), "requests"),
        QuotaKind::Tokens => (Some("tokens"), "tokens"),
        QuotaKind::InputTokens => (None, "input-tokens"),
        QuotaKind::OutputTokens => (None, "output-tokens"),
        _ => unreachable!("a quota kind this check does not know"),
    };
    let mut names = vec![format!("anthropic-ratelimit-{anthropic}-{field}")];
    names.extend(openai.map(|o| format!("x-ratelimit-{field}-{o}")));
    names
}

/// A limit or a remainder as documented: trimmed of spaces and tabs, non-empty ASCII digits
/// that fit a `u64`.
fn documented_count(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?.trim_matches([' ', '\t']);
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The first valid value of any of `names` (case-insensitive).
fn first_valid<T>(
    headers: &[(String, &[u8])],
    names: &[String],
    parse: impl Fn(&[u8]) -> Option<T>,
) -> Option<T> {
    headers
        .iter()
        .filter(|(n, _)| names.iter().any(|d| d.eq_ignore_ascii_case(n)))
        .find_map(|(_, v)| parse(v))
}

/// `parse_headroom` of `headers` is what the documented rules give, and a cell recording it
/// answers as documented.
pub(crate) fn check_headroom(headers: &[(String, &[u8])], now: SystemTime) {
    let parsed = parse_headroom(headers.iter().map(|(n, v)| (n.as_str(), *v)), now);
    let mut expected = Headroom::default();
    for kind in QuotaKind::ALL {
        let remaining = first_valid(
            headers,
            &documented_names(kind, "remaining"),
            documented_count,
        );
        let limit = first_valid(headers, &documented_names(kind, "limit"), documented_count);
        let reset = first_valid(headers, &documented_names(kind, "reset"), |v| {
            parse_reset(v, now)
        });
        *expected.get_mut(kind) = remaining.map(|r| {
            let mut q = fusebox::headroom::Quota::new(r);
            if let Some(limit) = limit {
                q = q.with_limit(limit);
            }
            if let Some(reset) = reset {
                q = q.with_reset(reset);
            }
            q
        });
    }
    let expected = (!expected.is_empty()).then_some(expected);
    assert_eq!(parsed, expected, "parse_headroom({headers:?})");
    let Some(headroom) = parsed else {
        return;
    };
    if let Some(ratio) = headroom.ratio() {
        assert!((0.0..=1.0).contains(&ratio), "ratio {ratio}");
    }

    // A cell: what is current at the instant of the record, then a year later.
    let cell = HeadroomCell::new();
    let t0 = tokio::time::Instant::now();
    cell.record(headroom, t0);
    assert_eq!(cell.snapshot(), Some(headroom));
    let mut current = headroom;
    for kind in QuotaKind::ALL {
        if current
            .get(kind)
            .is_some_and(|q| q.reset == Some(Duration::ZERO))
        {
            *current.get_mut(kind) = None;
        }
    }
    let current = (!current.is_empty()).then_some(current);
    assert_eq!(cell.current(t0), current);
    assert_eq!(cell.ratio(t0), current.and_then(|h| h.ratio()));
    assert_eq!(
        cell.exhausted_until(t0),
        current.and_then(|h| h.exhausted_for()).map(|d| t0 + d)
    );
    let later = t0 + ONE_YEAR;
    assert_eq!(
        (cell.current(later), cell.exhausted_until(later)),
        (None, None)
    );
}
