//! `fusebox::http::send` and `send_via` over loopback: the mock's request counter proves that
//! N failing requests counted by fusebox are N requests seen by the provider, and that the
//! provider's `Retry-After` (seconds, an HTTP date, `retry-after-ms`) reaches
//! `CallError::Open`. Also `Breaker::rate_limited_for` for a 429 without a hint.
//!
//! Real time (loopback sockets cannot run under paused tokio time), kept to seconds.
#![cfg(feature = "reqwest")]
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fusebox::http::{self, HttpError};
use fusebox::testing::{FaultKind, FaultScript, MockLlm};
use fusebox::{Breaker, CallError, CircuitState, Provider, Supervisor, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn start(breaker: Breaker) -> Supervisor {
    Supervisor::builder()
        .provider(
            Provider::new("openai")
                .breaker(breaker.jitter(0.0))
                .call_timeout(Duration::from_secs(5)),
        )
        .build()
        .await
        .unwrap()
}

fn chat(client: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    client.post(url).json(&body)
}

fn open_retry_after<E: std::fmt::Debug>(error: CallError<E>) -> Duration {
    match error {
        CallError::Open { retry_after, .. } => retry_after,
        other => panic!("expected an open circuit, got {other:?}"),
    }
}

/// The new user's story: `fuse.call(|| client.post(..).send())` counted six 503s as
/// successes. Through `http::send` each is a failure, and the fifth opens the circuit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_503s_through_send_are_five_failures_and_one_rejection() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::Status(503)))
        .await
        .unwrap();
    let fuse = start(Breaker::default()).await;
    let client = reqwest::Client::new();
    let url = mock.openai_url();
    let mut errors = Vec::new();
    for _ in 0..6 {
        errors.push(
            fuse.call("openai", || http::send(chat(&client, &url)))
                .await
                .unwrap_err(),
        );
    }
    for error in &errors[..5] {
        let inner = error.inner().unwrap();
        assert_eq!(inner.status(), Some(503));
        assert!(inner.message().unwrap().contains("mock fault"), "{inner}");
    }
    assert!(errors[5].is_open(), "{:?}", errors[5]);
    let status = &fuse.status()[0];
    assert_eq!((status.successful, status.failed), (0, 5));
    assert_eq!(status.state, CircuitState::Open);
    assert_eq!(mock.requests(), 5, "five requests counted, five seen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_via_trips_after_exactly_the_configured_failures() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::Overloaded))
        .await
        .unwrap();
    let fuse = start(Breaker::consecutive(3)).await;
    let openai = fuse.provider("openai").unwrap();
    let client = reqwest::Client::new();
    let url = mock.openai_url();
    for n in 1..=3 {
        let error = http::send_via(&openai, chat(&client, &url))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                CallError::Inner(HttpError::Status { status: 529, .. })
            ),
            "{error:?}"
        );
        assert_eq!(mock.requests(), n);
    }
    for _ in 0..10 {
        let error = http::send_via(&openai, chat(&client, &url))
            .await
            .unwrap_err();
        assert!(open_retry_after(error) <= Duration::from_secs(60));
    }
    assert_eq!(
        mock.requests(),
        3,
        "no request reached the provider while open"
    );
    assert_eq!(fuse.status()[0].failed, 3);

    // A healthy provider: responses pass through, bodies unread.
    mock.set_script(FaultScript::new());
    openai.reset().await;
    let reply = http::send_via(&openai, chat(&client, &url)).await.unwrap();
    assert_eq!(reply.status(), 200);
    assert!(reply.text().await.unwrap().contains("mock reply 3"));
    assert_eq!(fuse.status()[0].successful, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429s_retry_after_reaches_call_error_open() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::RateLimited {
        retry_after: Duration::from_secs(7),
    }))
    .await
    .unwrap();
    let fuse = start(Breaker::consecutive(5)).await;
    let openai = fuse.provider("openai").unwrap();
    let client = reqwest::Client::new();
    let url = mock.openai_url();
    let error = http::send_via(&openai, chat(&client, &url))
        .await
        .unwrap_err();
    let inner = error.inner().unwrap();
    assert_eq!(inner.status(), Some(429));
    assert_eq!(inner.retry_after(), Some(Duration::from_secs(7)));
    assert!(matches!(
        inner,
        HttpError::Status {
            verdict: Verdict::RateLimited { .. },
            ..
        }
    ));
    let retry_after = open_retry_after(
        http::send_via(&openai, chat(&client, &url))
            .await
            .unwrap_err(),
    );
    assert!(
        retry_after > Duration::from_secs(6) && retry_after <= Duration::from_secs(7),
        "{retry_after:?}"
    );
    assert_eq!(mock.requests(), 1, "one request, then the circuit is open");
}

/// A server on 127.0.0.1 answering every request with `response`, counting requests.
async fn serve(response: String) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/v1/chat/completions",
        listener.local_addr().unwrap()
    );
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let (response, counter) = (response.clone(), counter.clone());
            tokio::spawn(async move {
                // Read the request head and its body (content-length), then answer.
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = tcp.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if seen.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = tcp.write_all(response.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    (url, requests)
}

fn response(status: &str, headers: &[(&str, String)], body: &str) -> String {
    let mut text = format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    text
}

const RATE_LIMITED: &str =
    r#"{"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_as_an_http_date_and_in_milliseconds() {
    let client = reqwest::Client::new();
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
    let cases = [
        (vec![("retry-after", date)], 28..=30),
        (vec![("retry-after-ms", "2500".to_owned())], 2..=3),
        (
            vec![
                ("retry-after", "40".to_owned()),
                ("retry-after-ms", "12000".to_owned()),
            ],
            11..=12,
        ),
    ];
    for (headers, expected) in cases {
        let (url, requests) =
            serve(response("429 Too Many Requests", &headers, RATE_LIMITED)).await;
        let fuse = start(Breaker::consecutive(5)).await;
        let openai = fuse.provider("openai").unwrap();
        let error = http::send_via(&openai, chat(&client, &url))
            .await
            .unwrap_err();
        assert_eq!(error.inner().unwrap().message(), Some("slow down"));
        let retry_after = open_retry_after(
            http::send_via(&openai, chat(&client, &url))
                .await
                .unwrap_err(),
        );
        assert!(
            expected.contains(&retry_after.as_secs()),
            "{headers:?}: {retry_after:?}"
        );
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_without_a_hint_opens_for_rate_limited_for() {
    let client = reqwest::Client::new();
    let (url, requests) = serve(response("429 Too Many Requests", &[], RATE_LIMITED)).await;

    // The default: 5 seconds, at the first 429.
    let fuse = start(Breaker::consecutive(5)).await;
    let openai = fuse.provider("openai").unwrap();
    let error = http::send_via(&openai, chat(&client, &url))
        .await
        .unwrap_err();
    assert_eq!(error.inner().unwrap().retry_after(), None);
    let retry_after = open_retry_after(
        http::send_via(&openai, chat(&client, &url))
            .await
            .unwrap_err(),
    );
    assert!(retry_after > Duration::from_secs(4) && retry_after <= Duration::from_secs(5));
    assert_eq!(requests.load(Ordering::SeqCst), 1);

    // Configured: the same 429 opens for 2 minutes.
    let fuse = fuse_with_rate_limit(Duration::from_secs(120)).await;
    let openai = fuse.provider("openai").unwrap();
    assert!(http::send_via(&openai, chat(&client, &url)).await.is_err());
    let retry_after = open_retry_after(
        http::send_via(&openai, chat(&client, &url))
            .await
            .unwrap_err(),
    );
    assert!(retry_after > Duration::from_secs(119), "{retry_after:?}");
    assert_eq!(requests.load(Ordering::SeqCst), 2);

    // Off: five 429s are five ordinary failures.
    let fuse = fuse_with_rate_limit(Duration::ZERO).await;
    let openai = fuse.provider("openai").unwrap();
    for _ in 0..4 {
        assert!(http::send_via(&openai, chat(&client, &url))
            .await
            .unwrap_err()
            .inner()
            .is_some());
        assert_eq!(openai.state(), CircuitState::Closed);
    }
    assert!(http::send_via(&openai, chat(&client, &url)).await.is_err());
    assert_eq!(openai.state(), CircuitState::Open);
    assert_eq!(requests.load(Ordering::SeqCst), 7);
}

async fn fuse_with_rate_limit(d: Duration) -> Supervisor {
    start(Breaker::consecutive(5).rate_limited_for(d)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_quota_isolates_and_a_bad_request_is_ignored() {
    let client = reqwest::Client::new();
    let quota = r#"{"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}}"#;
    let (url, _) = serve(response(
        "429 Too Many Requests",
        &[("retry-after", "1".to_owned())],
        quota,
    ))
    .await;
    let fuse = start(Breaker::consecutive(5)).await;
    let openai = fuse.provider("openai").unwrap();
    let error = http::send_via(&openai, chat(&client, &url))
        .await
        .unwrap_err();
    assert_eq!(
        error.inner().unwrap().message(),
        Some("You exceeded your current quota")
    );
    assert_eq!(openai.state(), CircuitState::Isolated);
    assert!(matches!(
        http::send_via(&openai, chat(&client, &url)).await,
        Err(CallError::Isolated { .. })
    ));

    let context = r#"{"error": {"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded"}}"#;
    let (url, _) = serve(response("400 Bad Request", &[], context)).await;
    let fuse = start(Breaker::consecutive(1)).await;
    let openai = fuse.provider("openai").unwrap();
    for _ in 0..3 {
        let error = http::send_via(&openai, chat(&client, &url))
            .await
            .unwrap_err();
        assert_eq!(error.inner().unwrap().status(), Some(400));
    }
    assert_eq!(openai.state(), CircuitState::Closed);
    assert_eq!(fuse.status()[0].ignored, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_are_failures_without_a_status() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/v1/chat/completions",
        listener.local_addr().unwrap()
    );
    drop(listener);
    let fuse = start(Breaker::consecutive(2)).await;
    let openai = fuse.provider("openai").unwrap();
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let error = http::send_via(&openai, chat(&client, &url))
            .await
            .unwrap_err();
        let inner = error.inner().unwrap();
        assert!(matches!(inner, HttpError::Transport(_)), "{inner:?}");
        assert_eq!(
            (inner.status(), inner.retry_after(), inner.message()),
            (None, None, None)
        );
    }
    assert_eq!(openai.state(), CircuitState::Open);
}
