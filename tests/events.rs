//! Events fit for alerting: every event's wall-clock timestamp, how long a provider was out on
//! every close, and the one-line `Display` of `Event`, `EventKind` and `Cause`, asserted
//! exactly. Real supervisors under paused tokio time, so every duration is exact.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use fusebox::{
    Breaker, CallError, Cause, CircuitState, Event, EventKind, Provider, Supervisor, Verdict,
    Window,
};
use tokio::sync::broadcast::Receiver;

const OPEN_FOR: Duration = Duration::from_secs(120);

async fn supervisor(breaker: Breaker) -> (Supervisor, Receiver<Event>) {
    let fuse = Supervisor::builder()
        .provider(Provider::new("anthropic").breaker(breaker))
        .metrics_interval(None)
        .build()
        .await
        .unwrap();
    let events = fuse.subscribe();
    (fuse, events)
}

fn consecutive(n: u32) -> Breaker {
    Breaker::consecutive(n).open_for(OPEN_FOR).jitter(0.0)
}

async fn answer(fuse: &Supervisor, verdict: Verdict) -> Result<(), CallError<Verdict>> {
    fuse.call("anthropic", || async move {
        match verdict {
            Verdict::Success => Ok(()),
            other => Err(other),
        }
    })
    .await
}

async fn next(events: &mut Receiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(3600), events.recv())
        .await
        .expect("an event")
        .unwrap()
}

/// The wall clock of a fresh event is now (paused tokio time does not stop it).
fn assert_stamped_now(event: &Event) {
    let age = SystemTime::now()
        .duration_since(event.timestamp)
        .unwrap_or_default();
    assert!(age < Duration::from_secs(5), "{:?}", event.timestamp);
}

#[tokio::test(start_paused = true)]
async fn an_outage_reads_as_four_lines_with_how_long_the_provider_was_out() {
    let (fuse, mut events) = supervisor(consecutive(3)).await;
    for _ in 0..3 {
        let _ = answer(&fuse, Verdict::Failure).await;
    }
    let opened = next(&mut events).await;
    assert_stamped_now(&opened);
    assert_eq!(opened.name(), "llm.circuit_opened");
    assert_eq!(opened.out_for, None);
    assert_eq!(
        opened.to_string(),
        "anthropic: circuit opened after 3 consecutive failures; retry after 2m"
    );
    assert_eq!(
        opened.kind.to_string(),
        "circuit opened after 3 consecutive failures; retry after 2m"
    );

    let half = next(&mut events).await;
    assert_eq!(half.at - opened.at, OPEN_FOR);
    assert_eq!(
        half.to_string(),
        "anthropic: circuit half-open, admitting trial calls"
    );

    // The trial fails: re-opened for twice as long.
    let _ = answer(&fuse, Verdict::Failure).await;
    let reopened = next(&mut events).await;
    assert_eq!(
        reopened.to_string(),
        "anthropic: circuit re-opened, a trial call failed; retry after 4m"
    );
    let _ = next(&mut events).await; // half-open again, 4 minutes later

    tokio::time::sleep(Duration::from_millis(1_250)).await;
    answer(&fuse, Verdict::Success).await.unwrap();
    let closed = next(&mut events).await;
    assert_stamped_now(&closed);
    assert_eq!(closed.cause, Some(Cause::TrialsSucceeded));
    let out = Duration::from_secs(6 * 60) + Duration::from_millis(1_250);
    assert_eq!(closed.out_for, Some(out));
    assert_eq!(closed.at - opened.at, out);
    assert_eq!(
        closed.to_string(),
        "anthropic: circuit closed, trial calls succeeded; out for 6m 1s 250ms"
    );
    assert_eq!(closed.kind.to_string(), "circuit closed");
    // Wall-clock stamps follow publication order.
    assert!(closed.timestamp >= opened.timestamp);
}

#[tokio::test(start_paused = true)]
async fn operator_isolation_and_reset() {
    let (fuse, mut events) = supervisor(consecutive(3)).await;
    fuse.isolate("anthropic").await.unwrap();
    let isolated = next(&mut events).await;
    assert_eq!(isolated.kind, EventKind::CircuitIsolated);
    assert_eq!(
        isolated.to_string(),
        "anthropic: circuit isolated by an operator, until reset"
    );
    assert_eq!(isolated.kind.to_string(), "circuit isolated");

    tokio::time::sleep(Duration::from_secs(3_725)).await;
    fuse.reset("anthropic").await.unwrap();
    let closed = next(&mut events).await;
    assert_eq!(closed.out_for, Some(Duration::from_secs(3_725)));
    assert_eq!(
        closed.to_string(),
        "anthropic: circuit closed by an operator; out for 1h 2m 5s"
    );

    // Resetting a closed circuit is no transition: no event, and the next close measures
    // its own outage only.
    fuse.reset("anthropic").await.unwrap();
    for _ in 0..3 {
        let _ = answer(&fuse, Verdict::Failure).await;
    }
    let opened = next(&mut events).await;
    assert_eq!(opened.name(), "llm.circuit_opened");
    tokio::time::sleep(Duration::from_secs(10)).await;
    fuse.reset("anthropic").await.unwrap();
    let closed = next(&mut events).await;
    assert_eq!(closed.out_for, Some(Duration::from_secs(10)));
}

#[tokio::test(start_paused = true)]
async fn every_cause_of_an_open_has_its_line() {
    let (fuse, mut events) = supervisor(consecutive(1)).await;
    let _ = answer(&fuse, Verdict::Failure).await;
    assert_eq!(
        next(&mut events).await.to_string(),
        "anthropic: circuit opened after 1 consecutive failure; retry after 2m"
    );

    let (fuse, mut events) = supervisor(consecutive(5)).await;
    let hint = Some(Duration::from_millis(20_400));
    let _ = answer(&fuse, Verdict::RateLimited { retry_after: hint }).await;
    assert_eq!(
        next(&mut events).await.to_string(),
        "anthropic: circuit opened, rate limited by the provider; retry after 20s 400ms"
    );

    let rate = Breaker::rate_based()
        .failure_rate(0.5, Window::Calls(4))
        .minimum_calls(4)
        .open_for(Duration::from_secs(60));
    let (fuse, mut events) = supervisor(rate).await;
    for verdict in [
        Verdict::Success,
        Verdict::Failure,
        Verdict::Success,
        Verdict::Failure,
    ] {
        let _ = answer(&fuse, verdict).await;
    }
    assert_eq!(
        next(&mut events).await.to_string(),
        "anthropic: circuit opened on its failure rate (2 failures in the window); retry after 1m"
    );

    let (fuse, mut events) = supervisor(consecutive(5)).await;
    let _ = answer(&fuse, Verdict::Isolate).await;
    let isolated = next(&mut events).await;
    assert_eq!(isolated.cause, Some(Cause::IsolatingVerdict));
    assert_eq!(
        isolated.to_string(),
        "anthropic: circuit isolated after a credentials or billing error, until an operator resets it"
    );
}

#[tokio::test(start_paused = true)]
async fn durations_are_rounded_to_the_millisecond() {
    let breaker = Breaker::consecutive(1)
        .open_for(Duration::from_nanos(1_996_562_198))
        .jitter(0.0);
    let (fuse, mut events) = supervisor(breaker).await;
    let _ = answer(&fuse, Verdict::Failure).await;
    let opened = next(&mut events).await;
    assert_eq!(
        opened.to_string(),
        "anthropic: circuit opened after 1 consecutive failure; retry after 1s 997ms"
    );
    let rejected = answer(&fuse, Verdict::Success)
        .await
        .unwrap_err()
        .map_inner(|v| format!("{v:?}"));
    assert_eq!(
        rejected.to_string(),
        "circuit for provider `anthropic` is open after 1 failure; retry after 1s 997ms"
    );
}

#[test]
fn event_kinds_display_without_their_provider() {
    let opened = |cause, failures| EventKind::CircuitOpened {
        cause,
        failures,
        retry_after: Duration::from_secs(90),
    };
    let cases = [
        (
            opened(Cause::ConsecutiveFailures, 5),
            "circuit opened after 5 consecutive failures; retry after 1m 30s",
        ),
        (
            opened(Cause::FailureRate, 1),
            "circuit opened on its failure rate (1 failure in the window); retry after 1m 30s",
        ),
        (
            opened(Cause::SlowCallRate, 0),
            "circuit opened on its slow-call rate; retry after 1m 30s",
        ),
        (
            opened(Cause::RateLimited, 1),
            "circuit opened, rate limited by the provider; retry after 1m 30s",
        ),
        (
            opened(Cause::TrialFailed, 5),
            "circuit re-opened, a trial call failed; retry after 1m 30s",
        ),
        (
            opened(Cause::TrialTimedOut, 5),
            "circuit re-opened, a trial call timed out; retry after 1m 30s",
        ),
        (
            opened(Cause::Operator, 0),
            "circuit opened (an operator); retry after 1m 30s",
        ),
        (
            EventKind::CircuitHalfOpened,
            "circuit half-open, admitting trial calls",
        ),
        (EventKind::CircuitClosed, "circuit closed"),
        (EventKind::CircuitIsolated, "circuit isolated"),
        (
            EventKind::ThresholdsAdapted {
                tier: Some(100),
                request_rate: 150.04,
                failure_threshold: Some(3),
                open_for: Duration::from_secs(30),
            },
            "thresholds adapted at 150.0 requests a minute (tier above 100): trips after 3 consecutive failures, opens for 30s",
        ),
        (
            EventKind::ThresholdsAdapted {
                tier: None,
                request_rate: 2.26,
                failure_threshold: Some(1),
                open_for: Duration::from_micros(2_500_400),
            },
            "thresholds adapted at 2.3 requests a minute (no tier): trips after 1 consecutive failure, opens for 2s 500ms",
        ),
        (
            EventKind::ThresholdsAdapted {
                tier: Some(0),
                request_rate: 0.0,
                failure_threshold: None,
                open_for: Duration::from_secs(60),
            },
            "thresholds adapted at 0.0 requests a minute (tier above 0): no consecutive-failure trip, opens for 1m",
        ),
    ];
    for (kind, line) in cases {
        assert_eq!(kind.to_string(), line, "{kind:?}");
    }
}

#[test]
fn causes_display_as_phrases_and_keep_their_stable_names() {
    let cases = [
        (
            Cause::ConsecutiveFailures,
            "consecutive failures",
            "consecutive_failures",
        ),
        (
            Cause::FailureRate,
            "failure rate over the window",
            "failure_rate",
        ),
        (
            Cause::SlowCallRate,
            "slow-call rate over the window",
            "slow_call_rate",
        ),
        (
            Cause::RateLimited,
            "rate limited by the provider",
            "rate_limited",
        ),
        (Cause::TrialFailed, "a trial call failed", "trial_failed"),
        (
            Cause::TrialTimedOut,
            "a trial call timed out",
            "trial_timed_out",
        ),
        (
            Cause::IsolatingVerdict,
            "a credentials or billing error",
            "isolating_verdict",
        ),
        (Cause::Operator, "an operator", "operator"),
        (
            Cause::OpenElapsed,
            "the open period elapsed",
            "open_elapsed",
        ),
        (
            Cause::TrialsSucceeded,
            "trial calls succeeded",
            "trials_succeeded",
        ),
    ];
    for (cause, shown, name) in cases {
        assert_eq!(cause.to_string(), shown);
        assert_eq!(cause.as_str(), name);
    }
    // The crate root and the breaker module name the same type.
    let _: fusebox::breaker::Cause = Cause::Operator;
    assert_eq!(
        EventKind::CircuitHalfOpened.state(),
        Some(CircuitState::HalfOpen)
    );
}
