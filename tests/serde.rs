//! `serde::Serialize` for what fusebox hands out: events, provider status, health, and the
//! trace of a routed call. Asserted as whole JSON values, under paused tokio time.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fusebox::{
    AllOpen, Attempt, AttemptOutcome, Breaker, CallError, Cause, CircuitState, Event, Provider,
    Route, RouteError, Supervisor, Verdict,
};
use serde_json::{json, Value};

const OPEN_FOR: Duration = Duration::from_millis(1_500);

async fn supervisor() -> Supervisor {
    let breaker = || Breaker::consecutive(1).open_for(OPEN_FOR).jitter(0.0);
    Supervisor::builder()
        .provider(
            Provider::new("primary")
                .meta("model", "claude-sonnet-4-6")
                .meta("base_url", "https://api.anthropic.com")
                .breaker(breaker()),
        )
        .provider(Provider::new("secondary").breaker(breaker()))
        .route(Route::new("chat").providers(["primary", "secondary"]))
        .route(
            Route::new("only-primary")
                .providers(["primary"])
                .when_all_open(AllOpen::FailFast),
        )
        .metrics_interval(None)
        .build()
        .await
        .unwrap()
}

async fn fail(fuse: &Supervisor, provider: &str) {
    let _: Result<(), CallError<Verdict>> = fuse
        .call(provider, || async { Err(Verdict::Failure) })
        .await;
}

/// `value` without its `timestamp`, which must be RFC 3339 UTC with milliseconds.
fn untimed(mut value: Value) -> Value {
    let stamp = value
        .as_object_mut()
        .unwrap()
        .remove("timestamp")
        .expect("a timestamp");
    let stamp = stamp.as_str().unwrap();
    assert_eq!(stamp.len(), "2026-03-01T09:30:12.345Z".len(), "{stamp}");
    assert!(
        stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.',
        "{stamp}"
    );
    humantime::parse_rfc3339(stamp).unwrap();
    value
}

#[tokio::test(start_paused = true)]
async fn events_serialise_flat_with_a_wall_clock_timestamp() {
    let fuse = supervisor().await;
    let mut events = fuse.subscribe();
    fail(&fuse, "primary").await;
    let opened = events.recv().await.unwrap();
    assert_eq!(
        untimed(serde_json::to_value(&opened).unwrap()),
        json!({
            "provider": "primary", "name": "llm.circuit_opened", "generation": 1,
            "state": "open", "cause": "consecutive_failures", "failures": 1,
            "retry_after_seconds": 1.5,
            "message": "primary: circuit opened after 1 consecutive failure; retry after 1s 500ms",
        })
    );
    let stamp = serde_json::to_value(&opened).unwrap()["timestamp"].clone();
    assert_eq!(
        stamp,
        humantime::format_rfc3339_millis(opened.timestamp).to_string()
    );

    let half = events.recv().await.unwrap();
    assert_eq!(
        untimed(serde_json::to_value(&half).unwrap()),
        json!({
            "provider": "primary", "name": "llm.circuit_half_opened", "generation": 2,
            "state": "half_open", "cause": "open_elapsed",
            "message": "primary: circuit half-open, admitting trial calls",
        })
    );
    let _: Result<(), CallError<Verdict>> = fuse.call("primary", || async { Ok(()) }).await;
    let closed = events.recv().await.unwrap();
    assert_eq!(
        untimed(serde_json::to_value(&closed).unwrap()),
        json!({
            "provider": "primary", "name": "llm.circuit_closed", "generation": 3,
            "state": "closed", "cause": "trials_succeeded", "out_for_seconds": 1.5,
            "message": "primary: circuit closed, trial calls succeeded; out for 1s 500ms",
        })
    );
}

#[test]
fn states_and_causes_serialise_as_their_names() {
    assert_eq!(
        serde_json::to_value(CircuitState::HalfOpen).unwrap(),
        "half_open"
    );
    assert_eq!(
        serde_json::to_value(Cause::TrialTimedOut).unwrap(),
        "trial_timed_out"
    );
}

#[tokio::test(start_paused = true)]
async fn status_and_health_serialise_with_seconds_and_metadata() {
    let fuse = supervisor().await;
    fail(&fuse, "primary").await;
    tokio::time::sleep(Duration::from_millis(250)).await;

    let status = serde_json::to_value(fuse.status()).unwrap();
    let primary = &status[0];
    assert_eq!(primary["provider"], "primary");
    assert_eq!(
        primary["meta"],
        json!({ "base_url": "https://api.anthropic.com", "model": "claude-sonnet-4-6" })
    );
    assert_eq!(primary["state"], "open");
    assert_eq!(primary["alive"], true);
    assert_eq!(primary["failed"], 1);
    assert_eq!(primary["failure_rate"], 1.0);
    assert_eq!(primary["open_for_seconds"], 1.5);
    assert_eq!(primary["retry_after_seconds"], 1.25);
    assert_eq!(primary["last_failure_seconds_ago"], 0.25);
    assert_eq!(status[1]["meta"], json!({}));
    assert_eq!(status[1]["retry_after_seconds"], Value::Null);
    assert_eq!(status[1]["last_failure_seconds_ago"], Value::Null);
    // No field is a struct of its own but the metadata and the headroom.
    for (key, value) in primary.as_object().unwrap() {
        if !matches!(key.as_str(), "meta" | "headroom") {
            assert!(!value.is_object() && !value.is_array(), "{key}: {value}");
        }
    }

    let health = serde_json::to_value(fuse.health()).unwrap();
    assert_eq!(
        health,
        json!({
            "healthy": false,
            "summary": "1/2 circuits healthy",
            "circuits": [
                { "provider": "primary", "state": "open", "healthy": false, "failure_rate": 1.0 },
                { "provider": "secondary", "state": "closed", "healthy": true, "failure_rate": 0.0 },
            ],
        })
    );
}

#[tokio::test(start_paused = true)]
async fn routed_calls_serialise_their_trace() {
    let fuse = supervisor().await;
    fail(&fuse, "primary").await;
    let routed = fuse
        .route("chat", |provider| async move {
            tokio::time::sleep(Duration::from_millis(40)).await;
            Ok::<_, Verdict>(format!("hello from {provider}"))
        })
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&routed).unwrap(),
        json!({
            "value": "hello from secondary",
            "provider": "secondary",
            "attempts": [
                { "provider": "primary", "outcome": "skipped_open", "retry_after_seconds": 1.5, "elapsed_seconds": 0.0 },
                { "provider": "secondary", "outcome": "succeeded", "elapsed_seconds": 0.04 },
            ],
        })
    );

    // 40 ms later: 1.46 s left.
    let error = fuse
        .route("only-primary", |_| async { Ok::<_, Verdict>(()) })
        .await
        .unwrap_err();
    assert!(
        matches!(error, RouteError::AllUnavailable { .. }),
        "{error:?}"
    );
    assert_eq!(
        serde_json::to_value(error.attempts()).unwrap(),
        json!([{ "provider": "primary", "outcome": "skipped_open", "retry_after_seconds": 1.46, "elapsed_seconds": 0.0 }])
    );
}

#[test]
fn every_attempt_outcome_has_its_shape() {
    let attempt = |outcome| Attempt {
        provider: "p".into(),
        outcome,
        elapsed: Duration::from_millis(250),
    };
    let cases = [
        (
            AttemptOutcome::Failed(Verdict::Failure),
            json!({ "provider": "p", "outcome": "failed", "verdict": "failure", "elapsed_seconds": 0.25 }),
        ),
        (
            AttemptOutcome::Failed(Verdict::RateLimited {
                retry_after: Some(Duration::from_secs(20)),
            }),
            json!({ "provider": "p", "outcome": "failed", "verdict": "rate_limited", "retry_after_seconds": 20.0, "elapsed_seconds": 0.25 }),
        ),
        (
            AttemptOutcome::Failed(Verdict::RateLimited { retry_after: None }),
            json!({ "provider": "p", "outcome": "failed", "verdict": "rate_limited", "elapsed_seconds": 0.25 }),
        ),
        (
            AttemptOutcome::Failed(Verdict::Ignored),
            json!({ "provider": "p", "outcome": "failed", "verdict": "ignored", "elapsed_seconds": 0.25 }),
        ),
        (
            AttemptOutcome::Failed(Verdict::Isolate),
            json!({ "provider": "p", "outcome": "failed", "verdict": "isolate", "elapsed_seconds": 0.25 }),
        ),
        (
            AttemptOutcome::TimedOut(Duration::from_secs(30)),
            json!({ "provider": "p", "outcome": "timed_out", "after_seconds": 30.0, "elapsed_seconds": 0.25 }),
        ),
        (
            AttemptOutcome::DeadlineExceeded,
            json!({ "provider": "p", "outcome": "deadline_exceeded", "elapsed_seconds": 0.25 }),
        ),
        (
            AttemptOutcome::SkippedIsolated,
            json!({ "provider": "p", "outcome": "skipped_isolated", "elapsed_seconds": 0.25 }),
        ),
        (
            AttemptOutcome::SkippedSaturated,
            json!({ "provider": "p", "outcome": "skipped_saturated", "elapsed_seconds": 0.25 }),
        ),
    ];
    for (outcome, expected) in cases {
        let value = serde_json::to_value(attempt(outcome.clone())).unwrap();
        assert_eq!(value, expected, "{outcome:?}");
        assert_eq!(value["outcome"], outcome.label());
    }
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_can_forward_events_as_json_lines() {
    // What an alert relay does: one JSON object per line.
    let fuse = supervisor().await;
    let mut events = fuse.subscribe();
    fail(&fuse, "secondary").await;
    let event: Event = events.recv().await.unwrap();
    let line = serde_json::to_string(&event).unwrap();
    assert!(!line.contains('\n'));
    let back: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(back["message"], event.to_string());
}

#[tokio::test(start_paused = true)]
async fn health_tells_the_recent_failure_rate_not_the_lifetime_one() {
    let fuse = Supervisor::builder()
        .provider(
            Provider::new("a").breaker(
                Breaker::consecutive(3)
                    .open_for(Duration::from_secs(30))
                    .jitter(0.0),
            ),
        )
        .metrics_interval(None)
        .build()
        .await
        .unwrap();
    for _ in 0..300 {
        let _: Result<(), CallError<Verdict>> = fuse.call("a", || async { Ok(()) }).await;
    }
    // A minute later the provider goes fully down.
    tokio::time::sleep(Duration::from_secs(61)).await;
    for _ in 0..3 {
        fail(&fuse, "a").await;
    }
    let status = &fuse.status()[0];
    assert_eq!(status.state, CircuitState::Open);
    assert!(
        status.failure_rate < 0.01,
        "lifetime: {}",
        status.failure_rate
    );
    assert_eq!(status.recent_failure_rate, Some(1.0));
    assert_eq!(fuse.health().circuits[0].failure_rate, 1.0);
    // Its trials keep failing: still 1, however long the outage.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(600)).await;
        fail(&fuse, "a").await;
    }
    assert_eq!(fuse.health().circuits[0].failure_rate, 1.0);
}
