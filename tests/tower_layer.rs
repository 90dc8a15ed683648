//! `fusebox::tower::FuseLayer` over a real HTTP service (reqwest behind `tower::service_fn`)
//! against the mock provider on loopback: N failing requests counted by fusebox are N
//! requests seen by the mock; an open circuit neither polls nor calls the inner service;
//! `Retry-After` reaches `CallError::Open`; error responses come back whole.
//!
//! Real time (loopback sockets cannot run under paused tokio time), kept to seconds.
#![cfg(feature = "tower")]
#![allow(clippy::unwrap_used)]

#[path = "support/quota.rs"]
mod quota;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fusebox::testing::{FaultKind, FaultScript, MockLlm};
use fusebox::tower::{FuseLayer, Rejected};
use fusebox::{Breaker, CallError, CircuitState, Provider, Supervisor};
use http_body_util::BodyExt;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};

/// Counts `poll_ready` and `call` of the service it wraps.
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    polls: Arc<AtomicU64>,
    calls: Arc<AtomicU64>,
}

impl<S: Service<R>, R> Service<R> for Counted<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> S::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.call(request)
    }
}

// A concrete error type: a service whose error is `BoxError` runs into a rustc limitation
// with `tokio::spawn` ("implementation of `From` is not general enough"), as tower's own
// layers do.
type Upstream = tower::util::BoxCloneSyncService<
    http::Request<String>,
    http::Response<reqwest::Body>,
    reqwest::Error,
>;

/// An HTTP service over reqwest, as a user might have (hyper's client would do as well).
fn upstream() -> (Counted<Upstream>, Arc<AtomicU64>, Arc<AtomicU64>) {
    let client = reqwest::Client::new();
    let service = tower::service_fn(move |request: http::Request<String>| {
        let client = client.clone();
        async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            Ok::<_, reqwest::Error>(http::Response::<reqwest::Body>::from(response))
        }
    });
    let (polls, calls) = (Arc::default(), Arc::default());
    let counted = Counted {
        inner: Upstream::new(service),
        polls: Arc::clone(&polls),
        calls: Arc::clone(&calls),
    };
    (counted, polls, calls)
}

fn chat(mock: &MockLlm) -> http::Request<String> {
    let body = r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]}"#;
    http::Request::post(mock.openai_url())
        .header("content-type", "application/json")
        .body(body.to_owned())
        .unwrap()
}

async fn fuse(breaker: Breaker, call_timeout: Duration) -> Supervisor {
    Supervisor::builder()
        .provider(
            Provider::new("openai")
                .breaker(breaker.jitter(0.0))
                .call_timeout(call_timeout),
        )
        .build()
        .await
        .unwrap()
}

fn rejected(error: &BoxError) -> &Rejected {
    error
        .downcast_ref::<Rejected>()
        .unwrap_or_else(|| panic!("expected fusebox's error, got {error:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trips_after_exactly_the_configured_failing_requests() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::Status(503)))
        .await
        .unwrap();
    let fuse = fuse(Breaker::consecutive(3), Duration::from_secs(5)).await;
    let (inner, polls, calls) = upstream();
    let mut service = ServiceBuilder::new()
        .layer(FuseLayer::new(fuse.provider("openai").unwrap()))
        .service(inner);

    for n in 1..=3 {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(chat(&mock))
            .await
            .unwrap();
        // Passed through whole: the bytes read to classify it are replayed.
        assert_eq!(response.status(), 503);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["type"], "server_error", "{body}");
        assert_eq!(mock.requests(), n);
    }
    assert_eq!(fuse.status()[0].state, CircuitState::Open);
    assert_eq!(fuse.status()[0].failed, 3);

    let (polled, called) = (polls.load(Ordering::SeqCst), calls.load(Ordering::SeqCst));
    for _ in 0..20 {
        let error = service
            .ready()
            .await
            .unwrap()
            .call(chat(&mock))
            .await
            .unwrap_err();
        match rejected(&error) {
            CallError::Open {
                retry_after,
                failure_count,
                ..
            } => {
                assert_eq!(*failure_count, 3);
                assert!(*retry_after <= Duration::from_secs(60));
            }
            other => panic!("expected an open circuit, got {other:?}"),
        }
    }
    assert_eq!(
        mock.requests(),
        3,
        "no request reached the provider while open"
    );
    assert_eq!(
        polls.load(Ordering::SeqCst),
        polled,
        "inner readiness never polled"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        called,
        "inner service never called"
    );
    assert_eq!(called, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_reaches_call_error_open() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::RateLimited {
        retry_after: Duration::from_secs(7),
    }))
    .await
    .unwrap();
    let fuse = fuse(Breaker::consecutive(5), Duration::from_secs(5)).await;
    let (inner, _, _) = upstream();
    let mut service = FuseLayer::new(fuse.provider("openai").unwrap()).layer(inner);

    let response = service
        .ready()
        .await
        .unwrap()
        .call(chat(&mock))
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let error = service
        .ready()
        .await
        .unwrap()
        .call(chat(&mock))
        .await
        .unwrap_err();
    let retry_after = rejected(&error).retry_after().unwrap();
    assert!(
        retry_after > Duration::from_secs(6) && retry_after <= Duration::from_secs(7),
        "{retry_after:?}"
    );
    assert_eq!(mock.requests(), 1);
    // Also reachable through `Display`, and as a `std::error::Error`.
    assert!(error.to_string().contains("retry after"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_share_the_provider() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::Overloaded))
        .await
        .unwrap();
    let fuse = fuse(Breaker::consecutive(4), Duration::from_secs(5)).await;
    let (inner, _, _) = upstream();
    let service = FuseLayer::new(fuse.provider("openai").unwrap()).layer(inner);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let response = service.clone().oneshot(chat(&mock));
        tasks.push(tokio::spawn(
            async move { response.await.unwrap().status() },
        ));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 529);
    }
    assert_eq!(fuse.status()[0].state, CircuitState::Open);
    let error = service.clone().oneshot(chat(&mock)).await.unwrap_err();
    assert!(rejected(&error).is_open());
    assert_eq!(mock.requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successes_pass_through_and_a_slow_provider_times_out() {
    let mock = MockLlm::start(FaultScript::new()).await.unwrap();
    let fuse = fuse(Breaker::consecutive(1), Duration::from_millis(300)).await;
    let (inner, _, _) = upstream();
    let mut service = FuseLayer::new(fuse.provider("openai").unwrap()).layer(inner);
    let response = service
        .ready()
        .await
        .unwrap()
        .call(chat(&mock))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("mock reply 0"));
    assert_eq!(fuse.status()[0].successful, 1);

    mock.set_script(FaultScript::always(FaultKind::Slow(Duration::from_secs(3))));
    let error = service
        .ready()
        .await
        .unwrap()
        .call(chat(&mock))
        .await
        .unwrap_err();
    assert!(
        matches!(rejected(&error), CallError::Timeout { after, .. } if *after == Duration::from_millis(300)),
        "{error:?}"
    );
    let status = &fuse.status()[0];
    assert_eq!((status.timeouts, status.state), (1, CircuitState::Open));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_pass_through_and_count() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/v1/chat/completions",
        listener.local_addr().unwrap()
    );
    drop(listener);
    let fuse = fuse(Breaker::consecutive(2), Duration::from_secs(5)).await;
    let (inner, _, _) = upstream();
    let mut service = FuseLayer::new(fuse.provider("openai").unwrap()).layer(inner);
    for _ in 0..2 {
        let request = http::Request::post(url.as_str())
            .body(String::new())
            .unwrap();
        let error = service
            .ready()
            .await
            .unwrap()
            .call(request)
            .await
            .unwrap_err();
        // The inner service's own error, downcastable as before.
        assert!(
            error.downcast_ref::<reqwest::Error>().is_some(),
            "{error:?}"
        );
    }
    assert_eq!(fuse.status()[0].state, CircuitState::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_feeds_the_providers_headroom() {
    let mock = quota::three_request_mock().await;
    let fuse = fuse(Breaker::consecutive(3), Duration::from_secs(5)).await;
    let (upstream, _, _) = upstream();
    let mut service = ServiceBuilder::new()
        .layer(FuseLayer::new(fuse.provider("openai").unwrap()))
        .service(upstream);
    assert_eq!(fuse.status()[0].headroom, None);
    for remaining in [2u64, 1] {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(chat(&mock))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let requests = fuse.status()[0].headroom.unwrap().requests.unwrap();
        assert_eq!((requests.remaining, requests.limit), (remaining, Some(3)));
    }
}
