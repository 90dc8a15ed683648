//! `fusebox::http::FuseMiddleware` in a `reqwest_middleware::ClientWithMiddleware` against the
//! mock provider on loopback: N failing requests counted by fusebox are N requests seen by
//! the mock; `Retry-After` reaches `CallError::Open`, downcast from
//! `reqwest_middleware::Error::Middleware`; error responses come back whole.
//!
//! Real time (loopback sockets cannot run under paused tokio time), kept to seconds.
#![cfg(feature = "reqwest-middleware")]
#![allow(clippy::unwrap_used)]

#[path = "support/quota.rs"]
mod quota;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fusebox::http::{FuseMiddleware, Rejected};
use fusebox::testing::{FaultKind, FaultScript, MockLlm};
use fusebox::{Breaker, CallError, CircuitState, Provider, Supervisor};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};

async fn fuse(breaker: Breaker) -> Supervisor {
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

fn client(fuse: &Supervisor) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(FuseMiddleware::new(fuse.provider("openai").unwrap()))
        .build()
}

async fn chat(
    client: &ClientWithMiddleware,
    mock: &MockLlm,
) -> reqwest_middleware::Result<reqwest::Response> {
    let body = r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]}"#;
    client
        .post(mock.openai_url())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
}

fn rejected(error: &reqwest_middleware::Error) -> &Rejected {
    match error {
        reqwest_middleware::Error::Middleware(error) => error.downcast_ref::<Rejected>().unwrap(),
        other => panic!("expected fusebox's error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trips_after_exactly_the_configured_failing_requests() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::Status(503)))
        .await
        .unwrap();
    let fuse = fuse(Breaker::consecutive(3)).await;
    let client = client(&fuse);
    for n in 1..=3 {
        let response = chat(&client, &mock).await.unwrap();
        // Passed through as without the middleware: status, URL, headers and body.
        assert_eq!(response.status(), 503);
        assert_eq!(response.url().as_str(), mock.openai_url());
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "server_error", "{body}");
        assert_eq!(mock.requests(), n);
    }
    assert_eq!(fuse.status()[0].state, CircuitState::Open);
    for _ in 0..20 {
        let error = chat(&client, &mock).await.unwrap_err();
        assert!(
            matches!(
                rejected(&error),
                CallError::Open {
                    failure_count: 3,
                    ..
                }
            ),
            "{error:?}"
        );
    }
    assert_eq!(
        mock.requests(),
        3,
        "no request reached the provider while open"
    );
    assert_eq!(fuse.status()[0].failed, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_reaches_call_error_open() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::RateLimited {
        retry_after: Duration::from_secs(7),
    }))
    .await
    .unwrap();
    let fuse = fuse(Breaker::consecutive(5)).await;
    let client = client(&fuse);
    let response = chat(&client, &mock).await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("Rate limit exceeded"));
    let error = chat(&client, &mock).await.unwrap_err();
    let retry_after = rejected(&error).retry_after().unwrap();
    assert!(
        retry_after > Duration::from_secs(6) && retry_after <= Duration::from_secs(7),
        "{retry_after:?}"
    );
    assert_eq!(mock.requests(), 1);
}

/// Counts the requests that reach the middlewares after it.
struct Counter(Arc<AtomicU64>);

#[async_trait::async_trait]
impl Middleware for Counter {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        self.0.fetch_add(1, Ordering::SeqCst);
        next.run(request, extensions).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successes_pass_through_and_later_middlewares_are_skipped_while_open() {
    let mock = MockLlm::start(FaultScript::new()).await.unwrap();
    let fuse = fuse(Breaker::consecutive(2)).await;
    let after = Arc::new(AtomicU64::new(0));
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(FuseMiddleware::new(fuse.provider("openai").unwrap()))
        .with(Counter(Arc::clone(&after)))
        .build();
    let reply = chat(&client, &mock).await.unwrap();
    assert_eq!(reply.status(), 200);
    assert!(reply.text().await.unwrap().contains("mock reply 0"));
    assert_eq!(fuse.status()[0].successful, 1);

    mock.set_script(FaultScript::always(FaultKind::Reset));
    for _ in 0..2 {
        let error = chat(&client, &mock).await.unwrap_err();
        assert!(
            matches!(error, reqwest_middleware::Error::Reqwest(_)),
            "{error:?}"
        );
    }
    assert_eq!(fuse.status()[0].state, CircuitState::Open);
    assert!(rejected(&chat(&client, &mock).await.unwrap_err()).is_open());
    assert_eq!(after.load(Ordering::SeqCst), 3);
    assert_eq!(mock.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_feeds_the_providers_headroom() {
    let mock = quota::three_request_mock().await;
    let fuse = fuse(Breaker::consecutive(3)).await;
    let client = client(&fuse);
    assert_eq!(fuse.status()[0].headroom, None);
    for remaining in [2u64, 1] {
        assert_eq!(chat(&client, &mock).await.unwrap().status(), 200);
        let requests = fuse.status()[0].headroom.unwrap().requests.unwrap();
        assert_eq!((requests.remaining, requests.limit), (remaining, Some(3)));
    }
}
