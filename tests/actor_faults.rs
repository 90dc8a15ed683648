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
