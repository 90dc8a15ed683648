//! Provider actors that keep panicking: restarts keep the circuit; past the restart limit
//! the provider enters a clear terminal state instead of hanging or running unprotected.
#![cfg(feature = "testing")]
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use fusebox::{Breaker, CallError, CircuitState, Provider, Supervisor};
use support::{settle, FakeProvider, Step};

async fn two() -> Supervisor {
    Supervisor::builder()
        .provider(Provider::new("fragile").breaker(Breaker::consecutive(1)))
        .provider(Provider::new("steady"))
        .build()
        .await
        .unwrap()
}

/// Crashes the actor and waits until it is running again (or gone for good).
async fn crash(fuse: &Supervisor, provider: &str) {
    fuse.crash_provider_actor(provider).unwrap();
    for _ in 0..50 {
        settle().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn reports_queued_behind_a_crash_are_still_decided() {
    let fuse = two().await;
    let fake = FakeProvider::new(Step::Fail);
    fuse.crash_provider_actor("fragile").unwrap();
    // This failure's report is queued behind the crash; the restarted actor decides it.
    let result = support::call(&fuse, "fragile", &fake).await;
    assert!(matches!(result, Err(CallError::Inner(_))));
    settle().await;
    let status = fuse.provider("fragile").unwrap().status();
    assert_eq!(
        (status.state, status.failed, status.alive),
        (CircuitState::Open, 1, true)
    );
}

#[tokio::test(start_paused = true)]
async fn past_the_restart_limit_calls_fail_fast_and_health_says_so() {
    let fuse = two().await;
    let fragile = fuse.provider("fragile").unwrap();
    let mut crashes = 0;
    while fragile.is_alive() && crashes < 20 {
        crash(&fuse, "fragile").await;
        crashes += 1;
    }
    assert!(!fragile.is_alive(), "still alive after {crashes} crashes");
    assert!(
        crashes > 5,
        "the restart limit allows 5 restarts, gave up after {crashes}"
    );

    // A clear terminal state: calls fail at once, never hang, never run unprotected.
    let fake = FakeProvider::new(Step::Ok);
    let result = tokio::time::timeout(
        Duration::from_secs(1),
        support::call(&fuse, "fragile", &fake),
    )
    .await
    .expect("no hang");
    assert!(matches!(result, Err(CallError::ShuttingDown)));
    assert_eq!(fake.calls(), 0);
    let health = fuse.health();
    let fragile_health = health
        .circuits
        .iter()
        .find(|c| c.provider == "fragile")
        .unwrap();
    assert!(!fragile_health.healthy);
    assert!(!fuse.provider("fragile").unwrap().status().alive);
}

/// Item: one provider's crash loop stops no other provider.
#[tokio::test(start_paused = true)]
async fn a_provider_past_its_limit_leaves_every_other_provider_serving() {
    let fuse = two().await;
    let fragile = fuse.provider("fragile").unwrap();
    for _ in 0..20 {
        if !fragile.is_alive() {
            break;
        }
        crash(&fuse, "fragile").await;
    }
    assert!(!fragile.is_alive());
    for _ in 0..50 {
        settle().await;
    }
    // The healthy provider is untouched: alive, calls served, failures still decided.
    let steady = fuse.provider("steady").unwrap();
    assert!(
        steady.is_alive(),
        "the steady provider stopped with the fragile one"
    );
    let ok = FakeProvider::new(Step::Ok);
    assert!(support::call(&fuse, "steady", &ok).await.is_ok());
    let bad = FakeProvider::new(Step::Fail);
    for _ in 0..5 {
        let _ = support::call(&fuse, "steady", &bad).await;
    }
    let status = steady.status();
    assert_eq!(
        (status.state, status.failed, status.alive),
        (CircuitState::Open, 5, true)
    );
    let health = fuse.health();
    let steady_health = health
        .circuits
        .iter()
        .find(|c| c.provider == "steady")
        .unwrap();
    assert!(!steady_health.healthy, "open, so unhealthy, but reported");
}

/// Item: the restart limit counts panics in a sliding window: one crash every 3 seconds is
/// never more than 2 within 5 seconds, so the provider survives any number of them.
#[tokio::test(start_paused = true)]
async fn spaced_crashes_never_use_up_the_limit() {
    let fuse = two().await;
    let fragile = fuse.provider("fragile").unwrap();
    for round in 0..12 {
        crash(&fuse, "fragile").await;
        assert!(fragile.is_alive(), "stopped after crash {}", round + 1);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let ok = FakeProvider::new(Step::Ok);
    assert!(support::call(&fuse, "fragile", &ok).await.is_ok());
}

/// Item: six panics within the window stop the provider, five do not.
#[tokio::test(start_paused = true)]
async fn the_limit_is_five_panics_within_five_seconds() {
    let fuse = two().await;
    let fragile = fuse.provider("fragile").unwrap();
    for _ in 0..5 {
        crash(&fuse, "fragile").await;
    }
    assert!(fragile.is_alive(), "five panics are within the limit");
    // The window slides: once the first five are older than 5 s, five more are allowed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for _ in 0..5 {
        crash(&fuse, "fragile").await;
    }
    assert!(fragile.is_alive(), "the old panics left the window");
    crash(&fuse, "fragile").await;
    assert!(!fragile.is_alive(), "a sixth panic within 5 s stops it");
}

/// Item: a report whose handling always panics (a poison message) is redelivered once, so
/// it costs two panics and cannot use up the budget.
#[tokio::test(start_paused = true)]
async fn a_poison_report_cannot_use_up_the_restart_budget() {
    let fuse = two().await;
    let fragile = fuse.provider("fragile").unwrap();
    fuse.poison_provider_reports("fragile", true).unwrap();
    let bad = FakeProvider::new(Step::Fail);
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        support::call(&fuse, "fragile", &bad),
    )
    .await
    .expect("a poisoned report must not hang its caller");
    assert!(matches!(result, Err(CallError::Inner(_))));
    fuse.poison_provider_reports("fragile", false).unwrap();
    for _ in 0..20 {
        settle().await;
    }
    assert!(
        fragile.is_alive(),
        "one poison message stopped the provider"
    );
    // Three more panics are still allowed (two were used): the budget was not used up.
    for _ in 0..3 {
        crash(&fuse, "fragile").await;
    }
    assert!(fragile.is_alive());
    let ok = FakeProvider::new(Step::Ok);
    assert!(support::call(&fuse, "fragile", &ok).await.is_ok());
}
