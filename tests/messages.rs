//! Messages that read well: every `Display` of the errors, asserted exactly, with durations
//! rounded to the millisecond; `RouteError` counting distinct providers and carrying the
//! last provider's hint.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fusebox::{
    AllOpen, Attempt, AttemptOutcome, Breaker, CallError, CircuitState, ConfigError, Provider,
    ProviderId, Route, RouteError, Scope, StreamError, Supervisor, Verdict,
};

/// The nanosecond-precise duration the issue quoted: `1s 996ms 562us 198ns`.
const ODD: Duration = Duration::from_nanos(1_996_562_198);

fn id(name: &str) -> ProviderId {
    ProviderId::from(name)
}

fn attempt(provider: &str, outcome: AttemptOutcome) -> Attempt {
    Attempt {
        provider: id(provider),
        outcome,
        elapsed: Duration::ZERO,
    }
}

#[test]
fn call_errors() {
    let cases: [(CallError<&str>, &str); 10] = [
        (
            CallError::Open {
                provider: id("anthropic"),
                retry_after: ODD,
                failure_count: 3,
                state: CircuitState::Open,
            },
            "circuit for provider `anthropic` is open after 3 failures; retry after 1s 997ms",
        ),
        (
            CallError::Open {
                provider: id("anthropic"),
                retry_after: Duration::from_micros(400),
                failure_count: 1,
                state: CircuitState::HalfOpen,
            },
            "circuit for provider `anthropic` is half-open with every trial slot taken after 1 failure; retry after 1ms",
        ),
        (
            CallError::Isolated {
                provider: id("anthropic"),
            },
            "provider `anthropic` is isolated until an operator resets it",
        ),
        (
            CallError::BulkheadFull {
                provider: id("openai"),
            },
            "bulkhead for provider `openai` is full",
        ),
        (
            CallError::QueueTimeout {
                provider: id("openai"),
                waited: Duration::from_nanos(30_000_499_999),
            },
            "no bulkhead slot for provider `openai` after waiting 30s",
        ),
        (
            CallError::Timeout {
                provider: id("openai"),
                after: Duration::from_nanos(90_000_500_000),
            },
            "call to provider `openai` timed out after 1m 30s 1ms",
        ),
        (
            CallError::Timeout {
                provider: id("openai"),
                after: Duration::ZERO,
            },
            "call to provider `openai` timed out after 0s",
        ),
        (CallError::Inner("HTTP 503"), "HTTP 503"),
        (
            CallError::UnknownProvider("gemini".into()),
            "unknown provider `gemini`",
        ),
        (CallError::ShuttingDown, "fusebox is shutting down"),
    ];
    for (error, shown) in cases {
        assert_eq!(error.to_string(), shown, "{error:?}");
    }
}

#[test]
fn route_errors_count_distinct_providers() {
    let open = |provider, secs| {
        attempt(
            provider,
            AttemptOutcome::SkippedOpen {
                retry_after: Duration::from_millis(secs),
            },
        )
    };
    // A route that waited and tried again lists each provider twice: still two providers.
    let error: RouteError<&str> = RouteError::AllUnavailable {
        retry_after: Some(ODD),
        attempts: vec![
            open("primary", 4_000),
            open("secondary", 1_996),
            open("primary", 2_000),
            open("secondary", 0),
        ],
    };
    assert_eq!(error.attempts().len(), 4);
    assert_eq!(
        error.to_string(),
        "all 2 providers unavailable; retry after 1s 997ms"
    );
    assert_eq!(error.retry_after(), Some(ODD));

    let error: RouteError<&str> = RouteError::AllUnavailable {
        retry_after: None,
        attempts: vec![
            attempt("primary", AttemptOutcome::SkippedIsolated),
            attempt("primary", AttemptOutcome::SkippedIsolated),
        ],
    };
    assert_eq!(error.to_string(), "provider `primary` unavailable");
}

#[test]
fn exhausted_routes_carry_the_last_providers_hint() {
    let failed = |provider, verdict| attempt(provider, AttemptOutcome::Failed(verdict));
    let limited = Verdict::RateLimited {
        retry_after: Some(Duration::from_secs(20)),
    };
    let error: RouteError<&str> = RouteError::Exhausted {
        last: CallError::Inner("HTTP 429"),
        attempts: vec![
            failed("primary", Verdict::Failure),
            failed("secondary", limited),
        ],
    };
    assert_eq!(error.retry_after(), Some(Duration::from_secs(20)));
    assert_eq!(
        error.to_string(),
        "every provider failed (2 attempts); last: HTTP 429"
    );

    // The last provider was open: its retry-after.
    let error: RouteError<&str> = RouteError::Exhausted {
        last: CallError::Open {
            provider: id("secondary"),
            retry_after: Duration::from_secs(7),
            failure_count: 5,
            state: CircuitState::Open,
        },
        attempts: vec![failed("primary", Verdict::Failure)],
    };
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(
        error.to_string(),
        "every provider failed (1 attempt); last: circuit for provider `secondary` is open after 5 failures; retry after 7s"
    );

    // The last one said nothing: no hint, even if an earlier one gave one.
    let error: RouteError<&str> = RouteError::Exhausted {
        last: CallError::Inner("HTTP 503"),
        attempts: vec![
            failed("primary", limited),
            failed("secondary", Verdict::Failure),
        ],
    };
    assert_eq!(error.retry_after(), None);
}

#[test]
fn other_route_errors() {
    let error: RouteError<&str> = RouteError::DeadlineExceeded {
        deadline: Duration::from_micros(2_000_700),
        attempts: vec![attempt("primary", AttemptOutcome::DeadlineExceeded)],
    };
    assert_eq!(
        error.to_string(),
        "route deadline of 2s 1ms exceeded after 1 attempt"
    );
    let error: RouteError<&str> = RouteError::NotRetryable {
        error: "HTTP 400: context too long",
        attempts: Vec::new(),
    };
    assert_eq!(
        error.to_string(),
        "request refused: HTTP 400: context too long"
    );
    let error: RouteError<&str> = RouteError::UnknownRoute("chat".into());
    assert_eq!(error.to_string(), "unknown route `chat`");
}

/// A provider's error, for calls whose errors are displayed.
#[derive(Debug)]
struct Down;

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HTTP 503")
    }
}

impl fusebox::Classify for Down {
    fn verdict(&self) -> Verdict {
        Verdict::Failure
    }
}

#[tokio::test(start_paused = true)]
async fn a_real_route_that_waited_reports_its_providers_once() {
    let breaker = || {
        Breaker::consecutive(1)
            .open_for(Duration::from_secs(30))
            .jitter(0.0)
    };
    let fuse = Supervisor::builder()
        .provider(Provider::new("primary").breaker(breaker()))
        .provider(Provider::new("secondary").breaker(breaker()))
        .route(
            Route::new("chat")
                .providers(["primary", "secondary"])
                .when_all_open(AllOpen::Wait(Duration::from_secs(1))),
        )
        .metrics_interval(None)
        .build()
        .await
        .unwrap();
    for p in ["primary", "secondary"] {
        let _: Result<(), CallError<Down>> = fuse.call(p, || async { Err(Down) }).await;
    }
    let error = fuse
        .route("chat", |_| async { Ok::<_, Down>(()) })
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("all 2 providers unavailable; retry after "),
        "{error}"
    );
}

#[test]
fn stream_errors() {
    let error: StreamError<&str> = StreamError::FirstChunkTimeout {
        provider: id("anthropic"),
        after: ODD,
    };
    assert_eq!(
        error.to_string(),
        "no first chunk from provider `anthropic` within 1s 997ms"
    );
    let error: StreamError<&str> = StreamError::Stalled {
        provider: id("anthropic"),
        after: Duration::from_nanos(10_000_000_001),
    };
    assert_eq!(
        error.to_string(),
        "stream from provider `anthropic` stalled for 10s"
    );
    let error: StreamError<&str> = StreamError::Inner {
        error: "overloaded_error",
        mid_stream: true,
    };
    assert_eq!(
        error.to_string(),
        "stream failed mid-stream: overloaded_error"
    );
}

#[test]
fn config_errors_name_their_scope() {
    let error = ConfigError::UnknownField {
        scope: Scope::Defaults,
        field: "breaker.consecutiv".into(),
        expected: &["consecutive", "open_for"],
    };
    assert_eq!(
        error.to_string(),
        "[defaults]: unknown field `breaker.consecutiv`; expected one of consecutive, open_for"
    );
    assert_eq!(error.field(), Some("breaker.consecutiv"));
    assert_eq!(Scope::Provider("a".into()).to_string(), "provider `a`");
    assert_eq!(Scope::Route("r".into()).to_string(), "route `r`");
    assert_eq!(Scope::Supervisor.to_string(), "supervisor");
}
