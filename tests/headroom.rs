//! Rate-limit headroom: both vendors' headers parsed (table tests on real header samples, the
//! fuzz seeds replayed), the per-provider cell under paused time, and a draining `MockLlm`
//! quota seen through `status()` and the `fusebox_headroom_ratio` gauge over loopback.
#![cfg(all(feature = "reqwest", feature = "mock-server"))]
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, SystemTime};

use fusebox::headroom::{Headroom, HeadroomCell, Quota, QuotaKind};
use fusebox::http::{self, parse_headroom, HttpError};
use fusebox::testing::{self, FaultScript, MockLlm};
use fusebox::{CallError, Provider, Supervisor, Verdict};
use serde_json::json;

#[path = "../fuzz/src/checks.rs"]
mod checks;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// 2025-10-09T08:53:20Z.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_760_000_000)
}

fn quota(remaining: u64, limit: u64, reset: Duration) -> Option<Quota> {
    Some(Quota::new(remaining).with_limit(limit).with_reset(reset))
}

fn parse(block: &str) -> Option<Headroom> {
    let headers = block.lines().filter_map(|line| {
        let (name, value) = line.split_once(':')?;
        Some((name.trim(), value.trim()))
    });
    parse_headroom(headers, now())
}

/// Response headers as OpenAI sends them on a chat completion.
const OPENAI_200: &str = "\
date: Thu, 09 Oct 2025 08:53:20 GMT
content-type: application/json
openai-organization: user-abc123
openai-processing-ms: 412
openai-version: 2020-10-01
x-ratelimit-limit-requests: 10000
x-ratelimit-limit-tokens: 30000000
x-ratelimit-remaining-requests: 9999
x-ratelimit-remaining-tokens: 29999986
x-ratelimit-reset-requests: 6ms
x-ratelimit-reset-tokens: 0s
x-request-id: req_6f1b2c3d4e5f
cf-ray: 98b1c2d3e4f5a6b7-CDG";

/// A free-tier OpenAI 429: the requests are spent.
const OPENAI_429: &str = "\
x-ratelimit-limit-requests: 200
x-ratelimit-limit-tokens: 40000
x-ratelimit-remaining-requests: 0
x-ratelimit-remaining-tokens: 39211
x-ratelimit-reset-requests: 7m12s
x-ratelimit-reset-tokens: 1.183s
retry-after: 432";

/// Response headers as Anthropic sends them on a message.
const ANTHROPIC_200: &str = "\
request-id: req_011CTxyz
anthropic-organization-id: 5d2c1b3a-0000-4000-8000-000000000000
anthropic-ratelimit-requests-limit: 4000
anthropic-ratelimit-requests-remaining: 3999
anthropic-ratelimit-requests-reset: 2025-10-09T08:53:21Z
anthropic-ratelimit-input-tokens-limit: 2000000
anthropic-ratelimit-input-tokens-remaining: 1998000
anthropic-ratelimit-input-tokens-reset: 2025-10-09T08:53:21Z
anthropic-ratelimit-output-tokens-limit: 400000
anthropic-ratelimit-output-tokens-remaining: 399000
anthropic-ratelimit-output-tokens-reset: 2025-10-09T08:53:23Z
anthropic-ratelimit-tokens-limit: 2400000
anthropic-ratelimit-tokens-remaining: 2397000
anthropic-ratelimit-tokens-reset: 2025-10-09T08:53:21Z
content-type: application/json";

/// An Anthropic 429 on output tokens.
const ANTHROPIC_429: &str = "\
anthropic-ratelimit-requests-limit: 50
anthropic-ratelimit-requests-remaining: 49
anthropic-ratelimit-requests-reset: 2025-10-09T08:53:21Z
anthropic-ratelimit-output-tokens-limit: 8000
anthropic-ratelimit-output-tokens-remaining: 0
anthropic-ratelimit-output-tokens-reset: 2025-10-09T08:53:48Z
anthropic-ratelimit-tokens-limit: 48000
anthropic-ratelimit-tokens-remaining: 0
anthropic-ratelimit-tokens-reset: 2025-10-09T08:53:48Z
retry-after: 28
x-should-retry: true";

#[test]
fn real_header_samples_of_both_vendors() {
    let mut openai = Headroom::default();
    openai.requests = quota(9999, 10_000, 6 * MS);
    openai.tokens = quota(29_999_986, 30_000_000, Duration::ZERO);
    let mut openai_429 = Headroom::default();
    openai_429.requests = quota(0, 200, 432 * S);
    openai_429.tokens = quota(39_211, 40_000, 1183 * MS);
    let mut anthropic = Headroom::default();
    anthropic.requests = quota(3999, 4000, S);
    anthropic.tokens = quota(2_397_000, 2_400_000, S);
    anthropic.input_tokens = quota(1_998_000, 2_000_000, S);
    anthropic.output_tokens = quota(399_000, 400_000, 3 * S);
    let mut anthropic_429 = Headroom::default();
    anthropic_429.requests = quota(49, 50, S);
    anthropic_429.tokens = quota(0, 48_000, 28 * S);
    anthropic_429.output_tokens = quota(0, 8000, 28 * S);

    /// A header block, what it parses to, its ratio and how long it is exhausted for.
    type Case = (
        &'static str,
        Option<Headroom>,
        Option<f64>,
        Option<Duration>,
    );
    #[rustfmt::skip]
    let table: [Case; 4] = [
        (OPENAI_200, Some(openai), Some(0.9999), None),
        (OPENAI_429, Some(openai_429), Some(0.0), Some(432 * S)),
        (ANTHROPIC_200, Some(anthropic), Some(0.99750), None),
        (ANTHROPIC_429, Some(anthropic_429), Some(0.0), Some(28 * S)),
    ];
    for (block, expected, ratio, exhausted_for) in table {
        let parsed = parse(block);
        assert_eq!(parsed, expected, "{block}");
        let parsed = parsed.unwrap();
        assert_eq!(parsed.ratio(), ratio, "{block}");
        assert_eq!(parsed.exhausted_for(), exhausted_for, "{block}");
    }
}

#[test]
fn partial_odd_and_malformed_headers() {
    let cell = |block: &str, kind: QuotaKind| parse(block).and_then(|h| h.get(kind).copied());
    #[rustfmt::skip]
    let table: [(&str, QuotaKind, Option<Quota>); 13] = [
        // Azure OpenAI: remaining only.
        ("x-ratelimit-remaining-requests: 99\nx-ratelimit-remaining-tokens: 9000",
            QuotaKind::Tokens, Some(Quota::new(9000))),
        // A limit or a reset alone announces nothing.
        ("x-ratelimit-limit-requests: 60\nx-ratelimit-reset-requests: 1s", QuotaKind::Requests, None),
        // Names are case-insensitive; values trimmed.
        ("X-RateLimit-Remaining-Requests:  7 \nX-RATELIMIT-LIMIT-REQUESTS: 10",
            QuotaKind::Requests, Some(Quota::new(7).with_limit(10))),
        // The first valid value wins; invalid ones are skipped.
        ("x-ratelimit-remaining-requests: -1\nx-ratelimit-remaining-requests: 5\nx-ratelimit-remaining-requests: 6",
            QuotaKind::Requests, Some(Quota::new(5))),
        ("x-ratelimit-remaining-requests: 1.5", QuotaKind::Requests, None),
        ("x-ratelimit-remaining-requests: 18446744073709551616", QuotaKind::Requests, None),
        ("x-ratelimit-remaining-requests: 18446744073709551615", QuotaKind::Requests, Some(Quota::new(u64::MAX))),
        // Go durations with every unit; bare seconds; RFC 3339 with an offset or a fraction.
        ("x-ratelimit-remaining-tokens: 1\nx-ratelimit-reset-tokens: 1h2m3.5s", QuotaKind::Tokens,
            Some(Quota::new(1).with_reset(3723500 * MS))),
        ("x-ratelimit-remaining-tokens: 1\nx-ratelimit-reset-tokens: 250us", QuotaKind::Tokens,
            Some(Quota::new(1).with_reset(Duration::from_micros(250)))),
        ("x-ratelimit-remaining-tokens: 1\nx-ratelimit-reset-tokens: 20", QuotaKind::Tokens,
            Some(Quota::new(1).with_reset(20 * S))),
        ("anthropic-ratelimit-tokens-remaining: 1\nanthropic-ratelimit-tokens-reset: 2025-10-09T10:53:30.25+02:00",
            QuotaKind::Tokens, Some(Quota::new(1).with_reset(10250 * MS))),
        // A reset in the past is zero; one beyond a year, or unreadable, is dropped.
        ("anthropic-ratelimit-requests-remaining: 1\nanthropic-ratelimit-requests-reset: 2020-01-01T00:00:00Z",
            QuotaKind::Requests, Some(Quota::new(1).with_reset(Duration::ZERO))),
        ("x-ratelimit-remaining-requests: 1\nx-ratelimit-reset-requests: 9000h\nx-ratelimit-reset-requests: soon",
            QuotaKind::Requests, Some(Quota::new(1))),
    ];
    for (block, kind, expected) in table {
        assert_eq!(cell(block, kind), expected, "{block}");
    }
    assert_eq!(parse("retry-after: 20\ncontent-type: text/plain"), None);
    assert_eq!(parse(""), None);
    assert_eq!(http::headroom_header_names().len(), 18);
}

#[test]
fn a_header_map_parses_the_same() {
    let mut map = reqwest::header::HeaderMap::new();
    for line in OPENAI_429.lines() {
        let (name, value) = line.split_once(": ").unwrap();
        map.append(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let parsed = http::headroom(&map).unwrap();
    assert_eq!(parsed.requests, quota(0, 200, 432 * S));
}

#[test]
fn the_fuzz_seeds_pass_the_headroom_checks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/headers");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| checks::headroom(&data));
        assert!(outcome.is_ok(), "seed {} failed its check", path.display());
        n += 1;
    }
    assert!(n >= 20, "only {n} seeds");
    // The checks agree with the table above on a real sample.
    checks::headroom(OPENAI_200.as_bytes());
    checks::headroom(ANTHROPIC_429.as_bytes());
}

#[tokio::test(start_paused = true)]
async fn the_cell_answers_the_router_exactly() {
    let cell = HeadroomCell::new();
    let t0 = tokio::time::Instant::now();
    let headroom = parse(OPENAI_429).unwrap();
    cell.record(headroom, t0);
    // Requests spent until 432 s; tokens 39211/40000 until 1.183 s.
    assert_eq!(cell.exhausted_until(t0), Some(t0 + 432 * S));
    assert_eq!(cell.ratio(t0), Some(0.0));
    tokio::time::advance(2 * S).await;
    let now = tokio::time::Instant::now();
    let current = cell.current(now).unwrap();
    assert_eq!(current.tokens, None, "the token quota has reset");
    assert_eq!(current.requests, quota(0, 200, 430 * S));
    tokio::time::advance(430 * S).await;
    let now = tokio::time::Instant::now();
    assert_eq!((cell.exhausted_until(now), cell.ratio(now)), (None, None));
    assert_eq!(cell.snapshot(), Some(headroom));
}

async fn chat(
    fuse: &Supervisor,
    mock: &MockLlm,
    client: &reqwest::Client,
) -> Result<u16, CallError<HttpError>> {
    let handle = fuse.provider("openai").unwrap();
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "two words"}]});
    handle
        .call(|| async {
            let response = client.post(mock.openai_url()).json(&body).send().await?;
            http::record_headroom(&handle, response.headers());
            Ok(http::check(response).await?.status().as_u16())
        })
        .await
}

#[tokio::test]
async fn a_draining_mock_quota_shows_in_status_and_reaches_zero_at_the_scripted_request() {
    let quota = testing::Quota::requests(3)
        .tokens(100)
        .window(Duration::from_secs(3600));
    let mock = MockLlm::builder()
        .quota(quota)
        .script(FaultScript::new())
        .start()
        .await
        .unwrap();
    let fuse = Supervisor::builder()
        .provider(Provider::new("openai"))
        .build()
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let status = || fuse.provider("openai").unwrap().status();
    assert_eq!(status().headroom, None);
    // Each request spends one request and 2 + 3 tokens.
    for (n, remaining) in [2u64, 1, 0].into_iter().enumerate() {
        assert_eq!(chat(&fuse, &mock, &client).await.unwrap(), 200);
        let headroom = status().headroom.unwrap();
        let requests = headroom.requests.unwrap();
        assert_eq!((requests.remaining, requests.limit), (remaining, Some(3)));
        let tokens = headroom.tokens.unwrap();
        assert_eq!(tokens.remaining, 100 - 5 * (n as u64 + 1));
        assert!(requests.reset.unwrap() <= Duration::from_secs(3600));
        assert_eq!(headroom.ratio(), Some(remaining as f64 / 3.0));
    }
    // At 0 the provider is rate-limited by its own announcement until the window's end.
    let cell_until = fuse
        .provider("openai")
        .unwrap()
        .status()
        .headroom
        .and_then(|h| h.exhausted_for())
        .unwrap();
    assert!(cell_until > Duration::from_secs(3500), "{cell_until:?}");
    // So its circuit opens until then (the provider's actor decides on the notice), and the
    // next call is turned away without reaching the provider: no 429 collected.
    for _ in 0..100 {
        if status().state == fusebox::CircuitState::Open {
            break;
        }
        tokio::time::sleep(10 * MS).await;
    }
    let error = chat(&fuse, &mock, &client).await.unwrap_err();
    assert!(
        matches!(error, CallError::Open { retry_after, .. } if retry_after > Duration::from_secs(3500)),
        "{error:?}"
    );
    let stats = mock.stats();
    assert_eq!(
        (stats.requests, stats.ok, stats.errors_with(429)),
        (3, 3, 0)
    );

    // A request sent anyway gets the quota's 429, with Retry-After and the same headers.
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let response = client
        .post(mock.openai_url())
        .json(&body)
        .send()
        .await
        .unwrap();
    let headroom = http::headroom(response.headers()).unwrap();
    assert_eq!(headroom.requests.unwrap().remaining, 0);
    let error = http::check(response).await.unwrap_err();
    assert_eq!(error.status(), Some(429));
    assert!(matches!(
        fusebox::Classify::verdict(&error),
        Verdict::RateLimited { retry_after: Some(d) } if d > Duration::from_secs(3500)
    ));
    let stats = mock.stats();
    assert_eq!(
        (
            stats.requests,
            stats.ok,
            stats.errors_with(429),
            stats.quota_rejections
        ),
        (4, 3, 1, 1)
    );
}

#[tokio::test]
async fn the_mock_quota_resets_on_its_schedule_for_both_apis() {
    let mock = MockLlm::builder()
        .quota(testing::Quota::requests(1).tokens(50).window(400 * MS))
        .start()
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let send = |anthropic: bool| {
        let (url, body) = if anthropic {
            (
                mock.anthropic_url(),
                json!({"model": "c", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
            )
        } else {
            (
                mock.openai_url(),
                json!({"model": "g", "messages": [{"role": "user", "content": "hi"}]}),
            )
        };
        client.post(url).json(&body).send()
    };
    // Wait for the start of a window, so that two requests fall in it.
    let window = 400 * MS;
    loop {
        let response = send(false).await.unwrap();
        let reset = http::headroom(response.headers())
            .and_then(|h| h.requests)
            .and_then(|q| q.reset)
            .unwrap();
        if reset > window / 2 {
            break;
        }
        tokio::time::sleep(reset + 10 * MS).await;
    }
    // Spent: a 429 for Anthropic too, with Anthropic's headers.
    let response = send(true).await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let headroom = http::headroom(response.headers()).unwrap();
    assert_eq!(headroom.requests.unwrap().remaining, 0);
    assert_eq!(headroom.input_tokens.unwrap().limit, Some(50));
    assert_eq!(headroom.output_tokens.unwrap().remaining, 50 - 3);
    let reset = headroom.exhausted_for().unwrap();
    assert!(reset <= window, "{reset:?}");
    // After the reset the quota is full again.
    tokio::time::sleep(reset + 50 * MS).await;
    let response = send(true).await.unwrap();
    assert_eq!(response.status(), 200);
    let headroom = http::headroom(response.headers()).unwrap();
    assert_eq!(headroom.requests.unwrap().remaining, 0);
    assert_eq!(headroom.tokens.unwrap().remaining, 50 - 4);
}

#[tokio::test]
async fn the_headroom_ratio_gauge_is_published_from_status() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let fuse = Supervisor::builder()
        .provider(Provider::new("openai"))
        .provider(Provider::new("quiet"))
        .metrics_interval(None)
        .build()
        .await
        .unwrap();
    let mut headroom = Headroom::default();
    headroom.requests = quota(30, 120, 60 * S);
    headroom.tokens = quota(9000, 10_000, 60 * S);
    fuse.provider("openai").unwrap().record_headroom(headroom);
    fuse.publish_metrics();
    let gauges: Vec<(String, f64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == fusebox::metrics::HEADROOM_RATIO)
        .map(|(key, _, _, value)| {
            let provider = key.key().labels().next().unwrap().value().to_owned();
            let DebugValue::Gauge(v) = value else {
                panic!("{value:?}")
            };
            (provider, v.into_inner())
        })
        .collect();
    let mut gauges = gauges;
    gauges.sort_by(|a, b| a.0.cmp(&b.0));
    // The tightest quota (requests, 25%); 1 for a provider that announced none.
    assert_eq!(
        gauges,
        [("openai".to_owned(), 0.25), ("quiet".to_owned(), 1.0)]
    );
}
