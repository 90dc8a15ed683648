//! The async-openai integration against the mock provider on loopback.
//!
//! First what async-openai 0.43 does by default, measured (retries, backoff, headers
//! dropped: the numbers in `fusebox::async_openai`'s docs come from here, printed with
//! `--nocapture`); then fusebox's clients: N failing requests counted by fusebox are N
//! requests seen by the mock, and `Retry-After` reaches `CallError::Open`.
//!
//! Real time (loopback sockets cannot run under paused tokio time), kept to seconds.
#![cfg(feature = "async-openai")]
#![allow(clippy::unwrap_used)]

#[path = "support/quota.rs"]
mod quota;

use std::time::{Duration, Instant};

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessage, CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
};
use fusebox::testing::{FaultKind, FaultScript, MockLlm};
use fusebox::{Breaker, CallError, CircuitState, Classify, Provider, Supervisor, Verdict};

fn config(mock: &MockLlm) -> OpenAIConfig {
    OpenAIConfig::new()
        .with_api_base(format!("{}/v1", mock.base_url()))
        .with_api_key("sk-test")
}

fn request() -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model("gpt-4o-mini")
        .messages([ChatCompletionRequestUserMessage::from("hi").into()])
        .build()
        .unwrap()
}

async fn fuse(breaker: Breaker) -> Supervisor {
    Supervisor::builder()
        .provider(
            Provider::new("openai")
                .breaker(breaker.jitter(0.0))
                .call_timeout(Duration::from_secs(30)),
        )
        .build()
        .await
        .unwrap()
}

fn open_retry_after<E: std::fmt::Debug>(error: &CallError<E>) -> Duration {
    match error {
        CallError::Open { retry_after, .. } => *retry_after,
        other => panic!("expected an open circuit, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// async-openai's defaults, measured
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_each_failed_call_is_four_requests_over_700ms() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::Status(503)))
        .await
        .unwrap();
    let openai = async_openai::Client::with_config(config(&mock));
    let fuse = fuse(Breaker::consecutive(5)).await;
    let started = Instant::now();
    let error = fuse
        .call("openai", || async { openai.chat().create(request()).await })
        .await
        .unwrap_err();
    let one_call = started.elapsed();
    println!(
        "async-openai default, 503: 1 call = {} requests in {one_call:?}",
        mock.requests()
    );
    assert_eq!(mock.requests(), 4, "1 request + 3 retries");
    assert!(
        one_call >= Duration::from_millis(700),
        "100 + 200 + 400 ms: {one_call:?}"
    );
    // What comes out keeps the status, and `fuse.call` classifies it (impl Classify).
    let CallError::Inner(OpenAIError::ApiError(response)) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(response.status_code, 503);
    assert_eq!(error.inner().unwrap().verdict(), Verdict::Failure);

    for _ in 0..4 {
        assert!(fuse
            .call("openai", || async { openai.chat().create(request()).await })
            .await
            .is_err());
    }
    println!(
        "async-openai default, 503: consecutive(5) opened after 5 calls = {} requests in {:?}",
        mock.requests(),
        started.elapsed()
    );
    assert_eq!(fuse.status()[0].state, CircuitState::Open);
    assert_eq!(mock.requests(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_429_is_retried_after_its_hint_which_is_then_dropped() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::RateLimited {
        retry_after: Duration::from_secs(1),
    }))
    .await
    .unwrap();
    let openai = async_openai::Client::with_config(config(&mock));
    let fuse = fuse(Breaker::consecutive(5).rate_limited_for(Duration::ZERO)).await;
    let started = Instant::now();
    let error = fuse
        .call("openai", || async { openai.chat().create(request()).await })
        .await
        .unwrap_err();
    let one_call = started.elapsed();
    println!(
        "async-openai default, 429 + Retry-After: 1: 1 call = {} requests in {one_call:?}",
        mock.requests()
    );
    assert_eq!(mock.requests(), 4);
    assert!(
        one_call >= Duration::from_secs(3),
        "slept the hint 3 times: {one_call:?}"
    );
    let CallError::Inner(OpenAIError::ApiError(response)) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(response.status_code, 429);
    // No header survives: the hint is lost, and the breaker stays closed.
    assert_eq!(
        error.inner().unwrap().verdict(),
        Verdict::RateLimited { retry_after: None }
    );
    assert_eq!(
        fusebox::async_openai::retry_after(error.inner().unwrap()),
        None
    );
    assert_eq!(fuse.status()[0].state, CircuitState::Closed);
}

// ---------------------------------------------------------------------------------------
// fusebox's clients
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guarded_client_trips_after_exactly_the_configured_failing_requests() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::Status(503)))
        .await
        .unwrap();
    let fuse = fuse(Breaker::consecutive(3)).await;
    let openai = fusebox::async_openai::client(config(&mock), fuse.provider("openai").unwrap());
    let started = Instant::now();
    for n in 1..=3 {
        let error = openai.chat().create(request()).await.unwrap_err();
        let http = fusebox::async_openai::http_error(&error).unwrap();
        assert_eq!(http.status(), Some(503));
        assert!(http.message().unwrap().contains("mock fault"));
        assert_eq!(fusebox::async_openai::status(&error), Some(503));
        assert_eq!(mock.requests(), n, "one request per call");
    }
    assert_eq!(fuse.status()[0].state, CircuitState::Open);
    for _ in 0..10 {
        let error = openai.chat().create(request()).await.unwrap_err();
        let rejected = fusebox::async_openai::rejected(&error).unwrap();
        assert!(
            matches!(
                rejected,
                CallError::Open {
                    failure_count: 3,
                    ..
                }
            ),
            "{rejected:?}"
        );
        assert_eq!(error.verdict(), Verdict::Failure);
    }
    assert_eq!(
        mock.requests(),
        3,
        "no request reached the provider while open"
    );
    println!(
        "fusebox client, 503: consecutive(3) opened after 3 requests in {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "no backoff sleeps"
    );

    // Recovered: the reply comes through.
    mock.set_script(FaultScript::new());
    fuse.provider("openai").unwrap().reset().await;
    let reply = openai.chat().create(request()).await.unwrap();
    assert_eq!(
        reply.choices[0].message.content.as_deref(),
        Some("mock reply 3")
    );
    assert_eq!(fuse.status()[0].successful, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guarded_client_carries_retry_after_into_call_error_open() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::RateLimited {
        retry_after: Duration::from_secs(7),
    }))
    .await
    .unwrap();
    let fuse = fuse(Breaker::consecutive(5)).await;
    let openai = fusebox::async_openai::client(config(&mock), fuse.provider("openai").unwrap());
    let started = Instant::now();
    let error = openai.chat().create(request()).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no sleep on the hint"
    );
    assert_eq!(
        fusebox::async_openai::retry_after(&error),
        Some(Duration::from_secs(7))
    );
    assert_eq!(
        error.verdict(),
        Verdict::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    let error = openai.chat().create(request()).await.unwrap_err();
    let rejected = fusebox::async_openai::rejected(&error).unwrap();
    let retry_after = open_retry_after(rejected);
    assert!(
        retry_after > Duration::from_secs(6) && retry_after <= Duration::from_secs(7),
        "{retry_after:?}"
    );
    assert_eq!(
        fusebox::async_openai::retry_after(&error),
        Some(retry_after)
    );
    assert_eq!(mock.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_client_under_fuse_call_counts_requests_and_keeps_the_hint() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::Overloaded))
        .await
        .unwrap();
    let fuse = fuse(Breaker::consecutive(2)).await;
    let openai = fusebox::async_openai::plain_client(config(&mock));
    for _ in 0..2 {
        let error = fuse
            .call("openai", || async { openai.chat().create(request()).await })
            .await
            .unwrap_err();
        assert_eq!(
            fusebox::async_openai::status(error.inner().unwrap()),
            Some(529)
        );
    }
    let error = fuse
        .call("openai", || async { openai.chat().create(request()).await })
        .await
        .unwrap_err();
    assert!(error.is_open(), "{error:?}");
    assert_eq!(mock.requests(), 2);

    // A 429 with a hint opens the circuit for it, through `impl Classify for OpenAIError`.
    mock.set_script(FaultScript::always(FaultKind::RateLimited {
        retry_after: Duration::from_millis(2500),
    }));
    fuse.provider("openai").unwrap().reset().await;
    assert!(fuse
        .call("openai", || async { openai.chat().create(request()).await })
        .await
        .is_err());
    let error = fuse
        .call("openai", || async { openai.chat().create(request()).await })
        .await
        .unwrap_err();
    let retry_after = open_retry_after(&error);
    assert!(
        retry_after > Duration::from_millis(1500) && retry_after <= Duration::from_millis(2500),
        "retry-after-ms is read: {retry_after:?}"
    );
    assert_eq!(mock.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_client_fails_over_on_a_route() {
    let down = MockLlm::start(FaultScript::always(FaultKind::Status(500)))
        .await
        .unwrap();
    let up = MockLlm::start(FaultScript::new()).await.unwrap();
    let fuse = Supervisor::builder()
        .provider(Provider::new("primary").breaker(Breaker::consecutive(1)))
        .provider(Provider::new("secondary"))
        .route(fusebox::Route::new("chat").providers(["primary", "secondary"]))
        .build()
        .await
        .unwrap();
    let primary = fusebox::async_openai::plain_client(config(&down));
    let secondary = fusebox::async_openai::plain_client(config(&up));
    for _ in 0..3 {
        let routed = fuse
            .route("chat", |provider| {
                let client = if provider == "primary" {
                    &primary
                } else {
                    &secondary
                };
                async move { client.chat().create(request()).await }
            })
            .await
            .unwrap();
        assert_eq!(routed.provider, "secondary");
    }
    assert_eq!(
        down.requests(),
        1,
        "the primary's circuit opened at its first failure"
    );
    assert_eq!(up.requests(), 3);
}

#[test]
fn classification_of_async_openais_own_errors() {
    use async_openai::error::{ApiError, ApiErrorResponse};
    let api = |status: u16, kind: Option<&str>, code: Option<&str>| {
        OpenAIError::ApiError(ApiErrorResponse {
            status_code: reqwest::StatusCode::from_u16(status).unwrap(),
            api_error: ApiError {
                message: "boom".to_owned(),
                r#type: kind.map(str::to_owned),
                param: None,
                code: code.map(str::to_owned),
                misalignment: None,
            },
        })
    };
    let limited = Verdict::RateLimited { retry_after: None };
    assert_eq!(api(503, None, None).verdict(), Verdict::Failure);
    assert_eq!(api(429, Some("requests"), None).verdict(), limited);
    assert_eq!(
        api(429, Some("insufficient_quota"), Some("insufficient_quota")).verdict(),
        Verdict::Isolate
    );
    assert_eq!(
        api(
            400,
            Some("invalid_request_error"),
            Some("context_length_exceeded")
        )
        .verdict(),
        Verdict::Ignored
    );
    assert_eq!(
        api(401, Some("invalid_request_error"), None).verdict(),
        Verdict::Isolate
    );
    assert_eq!(
        OpenAIError::InvalidArgument("no model".to_owned()).verdict(),
        Verdict::Ignored
    );
    let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
    assert_eq!(
        OpenAIError::JSONDeserialize(json, "{".to_owned()).verdict(),
        Verdict::Failure
    );
    let boxed = OpenAIError::Boxed(Box::new(fusebox::http::Rejected::BulkheadFull {
        provider: fusebox::ProviderId::from("openai"),
    }));
    assert_eq!(boxed.verdict(), Verdict::Ignored);
    let other = OpenAIError::Boxed("something else".into());
    assert_eq!(other.verdict(), Verdict::Failure);
}

#[test]
fn async_openai_errors_carry_their_class() {
    use async_openai::error::{ApiError, ApiErrorResponse};
    use fusebox::ErrorClass;
    let api = |code: Option<&str>| {
        OpenAIError::ApiError(ApiErrorResponse {
            status_code: reqwest::StatusCode::BAD_REQUEST,
            api_error: ApiError {
                message: "boom".to_owned(),
                r#type: Some("invalid_request_error".to_owned()),
                param: None,
                code: code.map(str::to_owned),
                misalignment: None,
            },
        })
    };
    assert_eq!(
        api(Some("context_length_exceeded")).error_class(),
        ErrorClass::ContextWindow
    );
    assert_eq!(
        api(Some("content_policy_violation")).error_class(),
        ErrorClass::ContentPolicy
    );
    assert_eq!(api(None).error_class(), ErrorClass::Other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guarded_client_feeds_the_providers_headroom() {
    let mock = quota::three_request_mock().await;
    let fuse = fuse(Breaker::consecutive(3)).await;
    let openai = fusebox::async_openai::client(config(&mock), fuse.provider("openai").unwrap());
    assert_eq!(fuse.status()[0].headroom, None);
    for remaining in [2u64, 1] {
        openai.chat().create(request()).await.unwrap();
        let requests = fuse.status()[0].headroom.unwrap().requests.unwrap();
        assert_eq!((requests.remaining, requests.limit), (remaining, Some(3)));
    }
}
