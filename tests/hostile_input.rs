//! Hostile input to the parsers of untrusted text: TOML configurations, retry headers and
//! LLM providers' error responses.
//!
//! - The seed corpus of the fuzz targets (`fuzz/seeds/<target>/`) is replayed through the
//!   very checks the targets run (`fuzz/src/checks.rs`, included below), so every CI run
//!   covers it even where the fuzzer itself (nightly, libFuzzer) cannot run.
//! - Property tests throw mutated TOML, random bytes and generated error bodies at the same
//!   functions: never a panic, typed errors located inside the document, and verdicts as the
//!   documented rules say.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fusebox::classify::{parse_retry_after, parse_retry_after_ms};
use fusebox::http::classify_response;
use fusebox::{Config, HeaderError, Verdict};
use proptest::prelude::*;
use proptest::sample::select;

#[path = "../fuzz/src/checks.rs"]
mod checks;

// ---------------------------------------------------------------------------------------
// The seed corpus

fn seeds(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every seed of `target`, naming the seed that fails.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let files = seeds(target);
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "seed {} failed its check", path.display());
    }
    files.len()
}

#[test]
fn every_seed_directory_belongs_to_a_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut dirs: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(dirs, ["config_toml", "headers"]);
}

#[test]
fn the_config_seed_corpus_passes_the_fuzz_checks() {
    let n = replay("config_toml", checks::config_toml);
    assert!(n >= 12, "only {n} seeds");
}

#[test]
fn the_header_seed_corpus_passes_the_fuzz_checks() {
    let n = replay("headers", checks::headers);
    assert!(n >= 12, "only {n} seeds");
}

#[test]
fn the_valid_config_seeds_are_accepted() {
    // The seeds include configurations that must load: if they stop loading, the fuzzer
    // starts from error paths only.
    for name in [
        "documented_example.toml",
        "inline_tables.toml",
        "minimal.toml",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/config_toml");
        let text = std::fs::read_to_string(path.join(name)).unwrap();
        let config = Config::from_toml_str(&text);
        assert!(config.is_ok(), "{name}: {config:?}");
    }
}

// ---------------------------------------------------------------------------------------
// TOML-ish text

const SECTIONS: &[&str] = &[
    "[[providers]]",
    "[providers.breaker]",
    "[providers.bulkhead]",
    "[providers.adaptive]",
    "[[routes]]",
    "[[providers.adaptive.tiers]]",
    "[routes.when_all_open]",
    "[[[providers]]]",
    "[providers",
    "[]",
    "[[]]",
    "[\"é\"]",
];

const KEYS: &[&str] = &[
    "event_capacity",
    "unhealthy_ratio",
    "name",
    "call_timeout",
    "record_durations",
    "first_chunk_timeout",
    "stall_timeout",
    "breaker",
    "bulkhead",
    "adaptive",
    "consecutive",
    "open_for",
    "max_open_for",
    "jitter",
    "failure_rate",
    "window",
    "minimum_calls",
    "slow_call",
    "slow_call_ratio",
    "half_open_max_calls",
    "success_threshold",
    "trial_timeout",
    "max_concurrent",
    "queue",
    "queue_timeout",
    "hysteresis",
    "tiers",
    "above",
    "failures",
    "providers",
    "policy",
    "deadline",
    "when_all_open",
    "wait",
    "breaker.consecutive",
    "\"quoted key\"",
    "é",
    "",
];

const VALUES: &[&str] = &[
    "\"a\"",
    "\"b\"",
    "\"openai\"",
    "\"\"",
    "\" \"",
    "\"é🦀\"",
    "\"\\u0000\"",
    "\"30s\"",
    "\"250ms\"",
    "\"1h 30m\"",
    "\"0s\"",
    "\"99999999999999999999999h\"",
    "\"100 calls\"",
    "\"0 calls\"",
    "\"4294967296 calls\"",
    "\"fail_fast\"",
    "\"priority\"",
    "\"least_loaded\"",
    "\"lowest_latency\"",
    "0",
    "1",
    "3",
    "-1",
    "4294967295",
    "4294967296",
    "99999999999999999999999999999999999999999",
    "170141183460469231731687303715884105727",
    "0.5",
    "1.0",
    "0.0",
    "-0.0",
    "1e400",
    "nan",
    "inf",
    "-inf",
    "true",
    "false",
    "[]",
    "[\"a\", \"b\"]",
    "[\"a\", \"a\"]",
    "[1, \"a\"]",
    "{}",
    "{ wait = \"30s\" }",
    "{ wait = 30 }",
    "{ max_concurrent = 2, queue = 1 }",
    "{ consecutive = false, failure_rate = 0.5, window = \"60s\" }",
    "[ { above = 100, failures = 3 }, { above = 0 } ]",
    "1979-05-27T07:32:00Z",
    "'''multi\nline'''",
];

/// Fragments inserted by mutations: brackets, quotes, huge numbers, unicode, controls.
const NOISE: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "=",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "#",
    "\n",
    "\r\n",
    "\\",
    ",",
    ".",
    " ",
    "\t",
    "\u{0}",
    "\u{feff}",
    "\u{202e}",
    "é",
    "🦀",
    "\u{fffd}",
    "99999999999999999999999999",
    "-",
    "1e999",
    "nan",
    "inf",
    "0x",
    "_",
];

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => select(SECTIONS).prop_map(str::to_owned),
        6 => (select(KEYS), select(VALUES)).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "[\\[\\]{}=\"a-z0-9 .,#\\\\é]{0,20}",
        1 => (1usize..2000).prop_map(|n| format!("x = {}", "[".repeat(n))),
        1 => (1usize..300).prop_map(|n| format!("y = {}1{}", "{ a = ".repeat(n), " }".repeat(n))),
        1 => (1usize..2000).prop_map(|n| format!("{} = 1", vec!["a"; n].join("."))),
    ]
}

fn document() -> impl Strategy<Value = String> {
    prop::collection::vec(line(), 0..40).prop_map(|lines| lines.join("\n"))
}

/// Documents that load, to start mutations from.
fn valid_document() -> impl Strategy<Value = String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/config_toml");
    let docs: Vec<String> = [
        "documented_example.toml",
        "inline_tables.toml",
        "minimal.toml",
    ]
    .iter()
    .map(|name| std::fs::read_to_string(dir.join(name)).unwrap())
    .collect();
    select(docs)
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete {
        at: usize,
        len: usize,
    },
    Insert {
        at: usize,
        text: &'static str,
    },
    InsertRepeated {
        at: usize,
        text: &'static str,
        times: usize,
    },
    Duplicate {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), 1usize..8).prop_map(|(at, len)| Mutation::Delete { at, len }),
        3 => (any::<usize>(), select(NOISE)).prop_map(|(at, text)| Mutation::Insert { at, text }),
        1 => (any::<usize>(), select(NOISE), 2usize..3000)
            .prop_map(|(at, text, times)| Mutation::InsertRepeated { at, text, times }),
        1 => (any::<usize>(), 1usize..200).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

/// The character boundary `at` picks in `text` (modulo its length).
fn boundary(text: &str, at: usize) -> usize {
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    bounds[at % bounds.len()]
}

fn mutate(mut text: String, mutations: &[Mutation]) -> String {
    for m in mutations {
        match *m {
            Mutation::Delete { at, len } => {
                let start = boundary(&text, at);
                let end = text[start..]
                    .char_indices()
                    .nth(len)
                    .map_or(text.len(), |(i, _)| start + i);
                text.replace_range(start..end, "");
            }
            Mutation::Insert { at, text: noise } => {
                let at = boundary(&text, at);
                text.insert_str(at, noise);
            }
            Mutation::InsertRepeated {
                at,
                text: noise,
                times,
            } => {
                let at = boundary(&text, at);
                text.insert_str(at, &noise.repeat(times));
            }
            Mutation::Duplicate { at, len } => {
                let start = boundary(&text, at);
                let end = text[start..]
                    .char_indices()
                    .nth(len)
                    .map_or(text.len(), |(i, _)| start + i);
                let copy = text[start..end].to_owned();
                text.insert_str(end, &copy);
            }
            Mutation::Truncate { at } => {
                let at = boundary(&text, at);
                text.truncate(at);
            }
        }
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Generated TOML-ish documents: a valid configuration that round-trips, or a typed error
    /// with a non-empty message and a line inside the document.
    #[test]
    fn generated_documents_load_or_fail_with_a_located_error(text in document()) {
        checks::config_text(&text);
    }

    /// Valid documents with random deletions, insertions (deep brackets, huge numbers,
    /// unicode, control characters), duplications and truncations.
    #[test]
    fn mutated_configurations_load_or_fail_with_a_located_error(
        text in valid_document(),
        mutations in prop::collection::vec(mutation(), 0..6),
    ) {
        checks::config_text(&mutate(text, &mutations));
    }

    /// Arbitrary characters.
    #[test]
    fn arbitrary_text_is_rejected_without_panicking(text in "\\PC{0,300}") {
        checks::config_text(&text);
    }

    /// The mock provider's fault scripts are read from TOML too.
    #[test]
    fn fault_scripts_load_or_fail_with_a_located_error(
        lines in prop::collection::vec(prop_oneof![
            Just("[[faults]]".to_owned()),
            (select(&["when", "kind", "faults", "x"][..]), select(&[
                "\"always\"", "{ requests = [0, 3] }", "{ requests = [3, 0] }",
                "{ between = [\"10s\", \"40s\"] }", "{ between = [\"40s\", \"1s\"] }",
                "{ status = 503 }", "{ status = 200 }", "{ status = 99999 }", "\"hang\"",
                "{ rate_limited = \"30s\" }", "{ slow = \"forever\" }", "{ cut_stream = -1 }",
                "\"flap\"", "\"reset\"", "\"overloaded\"", "\"unauthorized\"", "[", "é",
            ][..])).prop_map(|(k, v)| format!("{k} = {v}")),
            "[\\[\\]{}=\"a-z0-9 .,#é]{0,12}",
        ], 0..12),
    ) {
        let text = lines.join("\n");
        if let Err(e) = fusebox::testing::FaultScript::from_toml_str(&text) {
            prop_assert!(!e.to_string().is_empty());
            prop_assert!((1..=checks::line_count(&text)).contains(&e.line), "{e:?}");
            prop_assert!(e.column >= 1, "{e:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Headers and bodies

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the preferred HTTP-date format.
fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm), for dates after 1970.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[test]
fn the_date_formatter_writes_http_dates() {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
    assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_251_199);
    assert_eq!(http_date(t), "Thu, 29 Feb 2024 23:59:59 GMT");
}

const NAMES: &[&str] = &[
    "overloaded_error",
    "api_error",
    "server_error",
    "service_unavailable",
    "timeout",
    "rate_limit_error",
    "rate_limit_exceeded",
    "requests",
    "tokens",
    "invalid_request_error",
    "context_length_exceeded",
    "string_above_max_length",
    "not_found_error",
    "content_filter",
    "content_policy_violation",
    "request_too_large",
    "authentication_error",
    "invalid_api_key",
    "permission_error",
    "billing_error",
    "insufficient_quota",
    "account_deactivated",
    "Overloaded_Error",
    "unknown_error",
    "",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(NAMES).prop_map(str::to_owned),
        1 => "[a-z_]{0,16}",
    ]
}

/// OpenAI- and Anthropic-shaped error bodies, and near misses.
fn error_body() -> impl Strategy<Value = Vec<u8>> {
    let json = (
        0u8..8,
        proptest::option::of(name()),
        proptest::option::of(name()),
        "\\PC{0,40}",
    )
        .prop_map(|(shape, code, kind, message)| {
            use serde_json::json;
            let value = match shape {
                0 => json!({ "error": { "message": message, "type": kind, "code": code } }),
                1 => json!({ "type": "error", "error": { "type": kind, "message": message } }),
                2 => json!({ "error": message }),
                3 => json!({ "error": { "code": 429, "type": [kind], "message": null } }),
                4 => json!([{ "error": { "type": kind, "code": code } }]),
                5 => json!({ "message": message, "type": kind, "code": code }),
                6 => json!({ "error": { "error": { "type": kind, "code": code } } }),
                _ => json!({ "error": { "code": code, "type": kind }, "message": message }),
            };
            value.to_string().into_bytes()
        });
    (json, 0u8..4, any::<usize>()).prop_map(|(mut body, twist, at)| {
        match twist {
            1 => body.insert_str_bytes(0, b"\xEF\xBB\xBF"),
            2 => body.truncate(at % (body.len() + 1)), // truncated JSON
            3 => {
                body.insert_str_bytes(0, b" \n\t");
                body.extend_from_slice(b" \r\n");
            }
            _ => {}
        }
        body
    })
}

trait InsertBytes {
    fn insert_str_bytes(&mut self, at: usize, bytes: &[u8]);
}

impl InsertBytes for Vec<u8> {
    fn insert_str_bytes(&mut self, at: usize, bytes: &[u8]) {
        self.splice(at..at, bytes.iter().copied());
    }
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![select(&checks::STATUSES[..]), 100u16..600, any::<u16>(),]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random bytes through every header parser and `classify_response`, as the fuzz target
    /// runs them.
    #[test]
    fn random_bytes_through_every_header_parser(data in prop::collection::vec(any::<u8>(), 0..256)) {
        checks::headers(&data);
    }

    /// Text that looks like a hint: digits, dots, signs, spaces, letters of dates.
    #[test]
    fn hint_like_text_through_every_header_parser(text in "[0-9 .+\\-eE,:GMTSunNovDec]{0,40}") {
        checks::headers(text.as_bytes());
    }

    /// Whole seconds up to a year parse exactly; beyond it they are out of range.
    #[test]
    fn delay_seconds_parse_exactly(secs in prop_oneof![0u64..=31_536_000, any::<u64>()]) {
        let text = secs.to_string();
        let parsed = parse_retry_after(text.as_bytes(), checks::now());
        if secs <= 31_536_000 {
            prop_assert_eq!(parsed, Ok(Duration::from_secs(secs)));
        } else {
            prop_assert!(matches!(parsed, Err(HeaderError::OutOfRange { .. })), "{:?}", parsed);
        }
    }

    /// Whole milliseconds up to a year parse to within a microsecond; beyond it they are out
    /// of range.
    #[test]
    fn delay_milliseconds_parse_to_within_a_microsecond(
        ms in prop_oneof![0u64..=31_536_000_000, any::<u64>()],
    ) {
        let text = format!(" {ms}\t");
        let parsed = parse_retry_after_ms(text.as_bytes());
        if ms <= 31_536_000_000 {
            let exact = Duration::from_millis(ms);
            let parsed = parsed.unwrap();
            let error = parsed.max(exact) - parsed.min(exact);
            prop_assert!(error < Duration::from_micros(1), "{ms} ms parsed as {parsed:?}");
        } else {
            prop_assert!(matches!(parsed, Err(HeaderError::OutOfRange { .. })), "{:?}", parsed);
        }
    }

    /// Whole milliseconds parse exactly (they once went through an `f64` division, and
    /// `8728694560` came out as `8728694.560000001s`).
    #[test]
    fn delay_milliseconds_parse_exactly(ms in 0u64..=31_536_000_000) {
        let parsed = parse_retry_after_ms(ms.to_string().as_bytes());
        prop_assert_eq!(parsed, Ok(Duration::from_millis(ms)));
    }

    /// Decimal seconds with up to nine fraction digits parse exactly, below 2^22 seconds
    /// (where an `f64` still resolves nanoseconds).
    #[test]
    fn decimal_seconds_parse_exactly(secs in 0u64..4_194_304, nanos in 0u32..1_000_000_000) {
        let text = format!("{secs}.{nanos:09}");
        let parsed = parse_retry_after(text.as_bytes(), checks::now());
        prop_assert_eq!(parsed, Ok(Duration::new(secs, nanos)), "{}", text);
    }

    /// An HTTP-date up to a year ahead is that many seconds; one in the past is zero.
    #[test]
    fn http_dates_are_relative_to_now(offset in -100_000_000i64..=31_536_000) {
        let now = checks::now();
        let at = if offset >= 0 {
            now + Duration::from_secs(offset.unsigned_abs())
        } else {
            now - Duration::from_secs(offset.unsigned_abs())
        };
        let parsed = parse_retry_after(http_date(at).as_bytes(), now);
        let expected = Duration::from_secs(u64::try_from(offset).unwrap_or(0));
        prop_assert_eq!(parsed, Ok(expected));
    }

    /// Generated provider error bodies under any status, with and without a hint: the
    /// documented verdict (200-399 Success; 429 RateLimited unless a recognised name says
    /// otherwise; 5xx never Success; a rate limit carries the headers' hint).
    #[test]
    fn error_bodies_get_the_documented_verdict(
        status in status(),
        body in error_body(),
        hint in proptest::option::of(prop_oneof![
            Just("20".to_owned()), Just("-1".to_owned()), Just("soon".to_owned()),
            "[0-9]{1,12}",
        ]),
    ) {
        let now = checks::now();
        let headers: Vec<(&str, &str)> =
            hint.iter().map(|h| ("retry-after", h.as_str())).collect();
        let expected_hint = hint
            .as_deref()
            .and_then(|h| parse_retry_after(h.as_bytes(), now).ok());
        let verdict = classify_response(status, headers.iter().copied(), &body, now);
        checks::check_verdict(status, expected_hint, &body, verdict);
        if (200..400).contains(&status) {
            prop_assert_eq!(verdict, Verdict::Success);
        }
        if status >= 500 {
            prop_assert_ne!(verdict, Verdict::Success);
        }
    }

    /// Random bytes as the body under any status.
    #[test]
    fn random_bodies_never_override_the_status_class(
        status in status(),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let verdict = classify_response(status, [("retry-after", "3")], &body, checks::now());
        let hint = Some(Duration::from_secs(3));
        checks::check_verdict(status, hint, &body, verdict);
    }
}

#[test]
fn a_huge_or_deep_body_is_bounded() {
    let now = checks::now();
    // Far more than MAX_ERROR_BODY, deep nesting past serde_json's recursion limit, and a
    // recognised name behind the limit: all leave the status verdict.
    let mut late = vec![b' '; fusebox::http::MAX_ERROR_BODY];
    late.extend_from_slice(br#"{"error": {"type": "authentication_error"}}"#);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_objects = format!(
        "{}{{\"type\": \"api_error\"}}{}",
        "{\"error\": ".repeat(10_000),
        "}".repeat(10_000)
    );
    for body in [late, deep.into_bytes(), deep_objects.into_bytes()] {
        for status in [429, 503, 400] {
            let verdict = classify_response(status, [("retry-after", "1")], &body, now);
            let hint = Some(Duration::from_secs(1));
            assert_eq!(verdict, checks::status_verdict(status, hint), "{status}");
        }
    }
}
