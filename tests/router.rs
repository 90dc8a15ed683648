//! Routed calls: fallback across providers, ordered by their health (paused time).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use fusebox::{
    AllOpen, AttemptOutcome, Breaker, Bulkhead, CircuitState, Policy, Provider, ProviderId, Route,
    RouteError, Routed, Supervisor, Verdict,
};
use support::{secs, settle, FakeError, FakeProvider, Step};

/// Fakes by provider name.
struct Fleet(HashMap<&'static str, FakeProvider>);

impl Fleet {
    fn new(fakes: impl IntoIterator<Item = (&'static str, FakeProvider)>) -> Self {
        Fleet(fakes.into_iter().collect())
    }

    fn get(&self, name: &str) -> &FakeProvider {
        &self.0[name]
    }

    async fn route(
        &self,
        fuse: &Supervisor,
        route: &str,
    ) -> Result<Routed<String>, RouteError<FakeError>> {
        fuse.route(route, |p: ProviderId| self.get(p.as_str()).respond())
            .await
    }
}

fn quiet_breaker() -> Breaker {
    Breaker::consecutive(3).open_for(secs(60)).jitter(0.0)
}

async fn two_providers(policy: Policy, all_open: AllOpen) -> Supervisor {
    Supervisor::builder()
        .provider(Provider::new("primary").breaker(quiet_breaker()))
        .provider(Provider::new("secondary").breaker(quiet_breaker()))
        .route(
            Route::new("chat")
                .providers(["primary", "secondary"])
                .policy(policy)
                .when_all_open(all_open),
        )
        .build()
        .await
        .unwrap()
}

fn outcomes(routed: &[fusebox::Attempt]) -> Vec<(&str, AttemptOutcome)> {
    routed
        .iter()
        .map(|a| (a.provider.as_str(), a.outcome.clone()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_fallback_chain_skips_an_open_primary_and_returns_to_it_after_recovery() {
    let fuse = two_providers(Policy::Priority, AllOpen::FailFast).await;
    let fleet = Fleet::new([
        (
            "primary",
            FakeProvider::scripted([Step::Fail, Step::Fail, Step::Fail], Step::Ok),
        ),
        ("secondary", FakeProvider::new(Step::Ok)),
    ]);

    // Three routed calls: each fails on the primary and is served by the secondary.
    for _ in 0..3 {
        let routed = fleet.route(&fuse, "chat").await.unwrap();
        assert_eq!(routed.provider, "secondary");
        assert_eq!(
            outcomes(&routed.attempts),
            [
                ("primary", AttemptOutcome::Failed(Verdict::Failure)),
                ("secondary", AttemptOutcome::Succeeded)
            ]
        );
    }
    assert_eq!(
        fuse.provider("primary").unwrap().state(),
        CircuitState::Open
    );
    settle().await;

    // Open: skipped without a call.
    tokio::time::advance(secs(10)).await;
    let routed = fleet.route(&fuse, "chat").await.unwrap();
    assert_eq!(routed.provider, "secondary");
    assert_eq!(
        outcomes(&routed.attempts)[0],
        (
            "primary",
            AttemptOutcome::SkippedOpen {
                retry_after: secs(50)
            }
        )
    );
    assert_eq!(fleet.get("primary").calls(), 3);

    // After the open duration, routed traffic carries the trial; on success the primary is
    // first again.
    tokio::time::advance(secs(50)).await;
    settle().await;
    let routed = fleet.route(&fuse, "chat").await.unwrap();
    assert_eq!(routed.provider, "primary");
    assert_eq!(routed.attempts.len(), 1);
    assert_eq!(
        fuse.provider("primary").unwrap().state(),
        CircuitState::Closed
    );
    settle().await;
    let routed = fleet.route(&fuse, "chat").await.unwrap();
    assert_eq!(
        (routed.provider.as_str(), routed.fallbacks()),
        ("primary", 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_primary_is_skipped_for_its_retry_after() {
    let fuse = two_providers(Policy::Priority, AllOpen::FailFast).await;
    let fleet = Fleet::new([
        (
            "primary",
            FakeProvider::scripted([Step::RateLimited(Some(secs(30)))], Step::Ok),
        ),
        ("secondary", FakeProvider::new(Step::Ok)),
    ]);
    // The same request is served by the secondary within the same routed call.
    let routed = fleet.route(&fuse, "chat").await.unwrap();
    assert_eq!(routed.provider, "secondary");
    assert_eq!(
        outcomes(&routed.attempts)[0],
        (
            "primary",
            AttemptOutcome::Failed(Verdict::RateLimited {
                retry_after: Some(secs(30))
            })
        )
    );
    // Not tried again for 30 s.
    for _ in 0..29 {
        tokio::time::advance(secs(1)).await;
        assert_eq!(
            fleet.route(&fuse, "chat").await.unwrap().provider,
            "secondary"
        );
    }
    assert_eq!(fleet.get("primary").calls(), 1);
    tokio::time::advance(secs(1)).await;
    settle().await;
    assert_eq!(
        fleet.route(&fuse, "chat").await.unwrap().provider,
        "primary"
    );
}

#[tokio::test(start_paused = true)]
async fn a_caller_fault_is_not_retried_elsewhere() {
    let fuse = two_providers(Policy::Priority, AllOpen::FailFast).await;
    let fleet = Fleet::new([
        ("primary", FakeProvider::new(Step::BadRequest)),
        ("secondary", FakeProvider::new(Step::Ok)),
    ]);
    let err = fleet.route(&fuse, "chat").await.unwrap_err();
    let attempts = err.attempts().to_vec();
    assert!(matches!(
        err,
        RouteError::NotRetryable {
            error: FakeError::BadRequest,
            ..
        }
    ));
    assert_eq!(
        outcomes(&attempts),
        [("primary", AttemptOutcome::Failed(Verdict::Ignored))]
    );
    assert_eq!(fleet.get("secondary").calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn every_provider_failing_exhausts_the_route_with_the_last_error() {
    let fuse = two_providers(Policy::Priority, AllOpen::FailFast).await;
    let fleet = Fleet::new([
        ("primary", FakeProvider::new(Step::Fail)),
        ("secondary", FakeProvider::new(Step::Unauthorized)),
    ]);
    let err = fleet.route(&fuse, "chat").await.unwrap_err();
    assert_eq!(err.attempts().len(), 2);
    assert!(matches!(err.into_inner(), Some(FakeError::Unauthorized)));
    assert_eq!(
        fuse.provider("secondary").unwrap().state(),
        CircuitState::Isolated
    );
}

/// Opens both circuits with direct calls: the primary at t0, the secondary 20 s later.
async fn open_both(fuse: &Supervisor, fleet: &Fleet) {
    for _ in 0..3 {
        let _ = support::call(fuse, "primary", fleet.get("primary")).await;
    }
    tokio::time::advance(secs(20)).await;
    for _ in 0..3 {
        let _ = support::call(fuse, "secondary", fleet.get("secondary")).await;
    }
    settle().await;
    assert_eq!(
        fuse.provider("primary").unwrap().state(),
        CircuitState::Open
    );
    assert_eq!(
        fuse.provider("secondary").unwrap().state(),
        CircuitState::Open
    );
}

fn failing_fleet() -> Fleet {
    Fleet::new([
        (
            "primary",
            FakeProvider::scripted(vec![Step::Fail; 3], Step::Ok),
        ),
        (
            "secondary",
            FakeProvider::scripted(vec![Step::Fail; 3], Step::Ok),
        ),
    ])
}

#[tokio::test(start_paused = true)]
async fn all_open_fail_fast_returns_the_earliest_retry_after() {
    let fuse = two_providers(Policy::Priority, AllOpen::FailFast).await;
    let fleet = Fleet::new([
        ("primary", FakeProvider::new(Step::Fail)),
        (
            "secondary",
            FakeProvider::scripted(vec![Step::Ok; 3], Step::Fail),
        ),
    ]);
    // The primary opens at t0 (the secondary serves); then the secondary at t0 + 20 s.
    for _ in 0..3 {
        fleet.route(&fuse, "chat").await.unwrap();
    }
    tokio::time::advance(secs(20)).await;
    for _ in 0..3 {
        let _ = fleet.route(&fuse, "chat").await;
    }
    settle().await;
    let calls = (fleet.get("primary").calls(), fleet.get("secondary").calls());
    let err = fleet.route(&fuse, "chat").await.unwrap_err();
    // The primary is due in 40 s, the secondary in 60 s.
    assert_eq!(err.retry_after(), Some(secs(40)));
    assert!(matches!(err, RouteError::AllUnavailable { .. }));
    assert!(err.attempts().iter().all(|a| !a.outcome.was_called()));
    assert_eq!(
        calls,
        (fleet.get("primary").calls(), fleet.get("secondary").calls())
    );
}

#[tokio::test(start_paused = true)]
async fn all_open_wait_succeeds_when_a_provider_recovers_in_time() {
    let fuse = two_providers(Policy::Priority, AllOpen::Wait(secs(45))).await;
    let fleet = failing_fleet();
    open_both(&fuse, &fleet).await;
    let start = tokio::time::Instant::now();
    let routed = fleet.route(&fuse, "chat").await.unwrap();
    assert_eq!(routed.provider, "primary");
    assert_eq!(start.elapsed(), secs(40));
    assert_eq!(
        outcomes(&routed.attempts),
        [
            (
                "primary",
                AttemptOutcome::SkippedOpen {
                    retry_after: secs(40)
                }
            ),
            (
                "secondary",
                AttemptOutcome::SkippedOpen {
                    retry_after: secs(60)
                }
            ),
            ("primary", AttemptOutcome::Succeeded),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn all_open_wait_gives_up_when_recovery_is_too_far() {
    let fuse = two_providers(Policy::Priority, AllOpen::Wait(secs(30))).await;
    let fleet = failing_fleet();
    open_both(&fuse, &fleet).await;
    let start = tokio::time::Instant::now();
    let err = fleet.route(&fuse, "chat").await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "does not wait in vain");
    assert!(
        matches!(err, RouteError::AllUnavailable { retry_after: Some(d), .. } if d == secs(40))
    );
}

#[tokio::test(start_paused = true)]
async fn the_route_deadline_bounds_the_whole_call() {
    let fuse = Supervisor::builder()
        .provider(Provider::new("slow"))
        .provider(Provider::new("fast"))
        .route(
            Route::new("chat")
                .providers(["slow", "fast"])
                .deadline(secs(5)),
        )
        .build()
        .await
        .unwrap();
    let fleet = Fleet::new([
        ("slow", FakeProvider::new(Step::Hang)),
        ("fast", FakeProvider::new(Step::Ok)),
    ]);
    let start = tokio::time::Instant::now();
    let err = fleet.route(&fuse, "chat").await.unwrap_err();
    assert_eq!(start.elapsed(), secs(5));
    assert!(matches!(err, RouteError::DeadlineExceeded { deadline, .. } if deadline == secs(5)));
    assert_eq!(
        outcomes(err.attempts()),
        [("slow", AttemptOutcome::DeadlineExceeded)]
    );
    // Abandoned for the route's deadline: cancelled, not a failure.
    let status = fuse.provider("slow").unwrap().status();
    assert_eq!(
        (status.cancelled, status.failed, status.in_flight),
        (1, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_timeout_fails_over_and_counts_against_the_provider() {
    let fuse = Supervisor::builder()
        .provider(Provider::new("slow").call_timeout(secs(2)))
        .provider(Provider::new("fast"))
        .route(Route::new("chat").providers(["slow", "fast"]))
        .build()
        .await
        .unwrap();
    let fleet = Fleet::new([
        ("slow", FakeProvider::new(Step::Hang)),
        ("fast", FakeProvider::new(Step::Ok)),
    ]);
    let routed = fleet.route(&fuse, "chat").await.unwrap();
    assert_eq!(
        outcomes(&routed.attempts),
        [
            ("slow", AttemptOutcome::TimedOut(secs(2))),
            ("fast", AttemptOutcome::Succeeded)
        ]
    );
    assert_eq!(routed.attempts[0].elapsed, secs(2));
    assert_eq!(fuse.provider("slow").unwrap().status().failed, 1);
}

#[tokio::test(start_paused = true)]
async fn least_loaded_prefers_spare_capacity() {
    let fuse = Supervisor::builder()
        .provider(Provider::new("a").bulkhead(Bulkhead::new(4)))
        .provider(Provider::new("b").bulkhead(Bulkhead::new(4)))
        .route(
            Route::new("pool")
                .providers(["a", "b"])
                .policy(Policy::LeastLoaded),
        )
        .build()
        .await
        .unwrap();
    let fleet = std::sync::Arc::new(Fleet::new([
        ("a", FakeProvider::new(Step::delay(secs(10), Step::Ok))),
        ("b", FakeProvider::new(Step::delay(secs(10), Step::Ok))),
    ]));
    // Eight concurrent routed calls spread evenly: each goes to the less busy provider.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (fuse, fleet) = (fuse.clone(), fleet.clone());
        tasks.push(tokio::spawn(async move {
            fleet.route(&fuse, "pool").await.unwrap().provider
        }));
        settle().await;
    }
    assert_eq!((fleet.get("a").running(), fleet.get("b").running()), (4, 4));
    // Both full: a ninth is not queued but finds every provider saturated.
    let err = fleet.route(&fuse, "pool").await.unwrap_err();
    assert!(matches!(
        err,
        RouteError::AllUnavailable {
            retry_after: None,
            ..
        }
    ));
    assert!(err
        .attempts()
        .iter()
        .all(|a| a.outcome == AttemptOutcome::SkippedSaturated));
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn lowest_latency_prefers_the_faster_provider() {
    let fuse = Supervisor::builder()
        .provider(Provider::new("slow"))
        .provider(Provider::new("fast"))
        .route(
            Route::new("chat")
                .providers(["slow", "fast"])
                .policy(Policy::LowestLatency),
        )
        .build()
        .await
        .unwrap();
    let fleet = Fleet::new([
        ("slow", FakeProvider::new(Step::delay(secs(3), Step::Ok))),
        (
            "fast",
            FakeProvider::new(Step::delay(Duration::from_millis(200), Step::Ok)),
        ),
    ]);
    // Unmeasured providers go first, in configured order: the slow one is measured first…
    assert_eq!(fleet.route(&fuse, "chat").await.unwrap().provider, "slow");
    // …then the unmeasured fast one…
    assert_eq!(fleet.route(&fuse, "chat").await.unwrap().provider, "fast");
    // …and from then on the faster one.
    for _ in 0..5 {
        assert_eq!(fleet.route(&fuse, "chat").await.unwrap().provider, "fast");
    }
    // When the fast one slows down past the other, the order follows.
    let slowed = Fleet::new([
        ("slow", FakeProvider::new(Step::delay(secs(3), Step::Ok))),
        ("fast", FakeProvider::new(Step::delay(secs(30), Step::Ok))),
    ]);
    for _ in 0..3 {
        slowed.route(&fuse, "chat").await.unwrap();
    }
    assert_eq!(slowed.route(&fuse, "chat").await.unwrap().provider, "slow");
}

#[tokio::test(start_paused = true)]
async fn a_slow_provider_does_not_delay_other_routes() {
    let fuse = Supervisor::builder()
        .provider(Provider::new("sluggish"))
        .provider(Provider::new("quick"))
        .route(Route::new("batch").providers(["sluggish"]))
        .route(Route::new("chat").providers(["quick"]))
        .build()
        .await
        .unwrap();
    let fleet = std::sync::Arc::new(Fleet::new([
        (
            "sluggish",
            FakeProvider::new(Step::delay(secs(60), Step::Ok)),
        ),
        ("quick", FakeProvider::new(Step::Ok)),
    ]));
    let mut slow_calls = Vec::new();
    for _ in 0..20 {
        let (fuse, fleet) = (fuse.clone(), fleet.clone());
        slow_calls.push(tokio::spawn(
            async move { fleet.route(&fuse, "batch").await },
        ));
    }
    settle().await;
    assert_eq!(fleet.get("sluggish").running(), 20);
    // The router answers for "chat" at once, while twenty 60-second calls are in flight.
    let start = tokio::time::Instant::now();
    for _ in 0..10 {
        assert_eq!(fleet.route(&fuse, "chat").await.unwrap().provider, "quick");
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    for call in slow_calls {
        assert_eq!(call.await.unwrap().unwrap().provider, "sluggish");
    }
}

#[tokio::test(start_paused = true)]
async fn an_unknown_route_is_an_error() {
    let fuse = two_providers(Policy::Priority, AllOpen::FailFast).await;
    let fleet = failing_fleet();
    let err = fleet.route(&fuse, "nope").await.unwrap_err();
    assert!(matches!(err, RouteError::UnknownRoute(ref name) if name == "nope"));
    assert_eq!(err.to_string(), "unknown route `nope`");
}

#[tokio::test(start_paused = true)]
async fn a_provider_may_serve_several_routes() {
    let fuse = Supervisor::builder()
        .provider(Provider::new("shared").breaker(quiet_breaker()))
        .provider(Provider::new("a"))
        .provider(Provider::new("b"))
        .route(Route::new("one").providers(["shared", "a"]))
        .route(Route::new("two").providers(["shared", "b"]))
        .build()
        .await
        .unwrap();
    let fleet = Fleet::new([
        ("shared", FakeProvider::new(Step::Fail)),
        ("a", FakeProvider::new(Step::Ok)),
        ("b", FakeProvider::new(Step::Ok)),
    ]);
    for _ in 0..3 {
        fleet.route(&fuse, "one").await.unwrap();
    }
    settle().await;
    // Its circuit opened through route "one"; route "two" skips it too.
    let routed = fleet.route(&fuse, "two").await.unwrap();
    assert_eq!(routed.provider, "b");
    assert!(matches!(
        routed.attempts[0].outcome,
        AttemptOutcome::SkippedOpen { .. }
    ));
    assert_eq!(fleet.get("shared").calls(), 3);
}

/// The fast first pass of a routed call gives back what it took however the call ends: an
/// operation that panics in its first poll, a pending call that is dropped, a failure the
/// failover loop takes over (reported, failed over from, and traced once).
#[tokio::test(start_paused = true)]
async fn the_fast_pass_gives_back_its_admission_on_panic_drop_and_failure() {
    use std::future::Future;
    use std::panic::AssertUnwindSafe;
    use std::task::{Context, Waker};

    let fuse = Supervisor::builder()
        .provider(Provider::new("first").breaker(quiet_breaker()))
        .provider(Provider::new("second").breaker(quiet_breaker()))
        .route(Route::new("chat").providers(["first", "second"]))
        .build()
        .await
        .unwrap();
    let status = |name: &str| fuse.provider(name).unwrap().status();

    // A panic in the operation's first poll.
    let panicked = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut routed = std::pin::pin!(fuse.route("chat", |_| async {
            panic!("the operation panicked");
            #[allow(unreachable_code)]
            Ok::<u64, Verdict>(1)
        }));
        let _ = routed
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
    }));
    assert!(panicked.is_err());
    settle().await;
    let first = status("first");
    assert_eq!((first.in_flight, first.cancelled), (0, 1), "{first:?}");

    // A call that is pending when it is dropped.
    {
        let mut routed =
            std::pin::pin!(fuse.route("chat", |_| std::future::pending::<Result<u64, Verdict>>()));
        let polled = routed
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending());
        assert_eq!(status("first").in_flight, 1);
    }
    settle().await;
    let first = status("first");
    assert_eq!((first.in_flight, first.cancelled), (0, 2), "{first:?}");

    // A failure: the loop reports it and fails over, and the trace has it once.
    let routed = fuse
        .route("chat", |p: ProviderId| async move {
            if p == "first" {
                Err(Verdict::Failure)
            } else {
                Ok::<_, Verdict>(p.as_str().to_owned())
            }
        })
        .await
        .unwrap();
    assert_eq!(routed.value, "second");
    assert_eq!(
        outcomes(&routed.attempts),
        vec![
            ("first", AttemptOutcome::Failed(Verdict::Failure)),
            ("second", AttemptOutcome::Succeeded)
        ]
    );
    let first = status("first");
    assert_eq!((first.in_flight, first.failed), (0, 1), "{first:?}");
    assert_eq!(status("second").in_flight, 0);
}

/// A route longer than the fast pass's bit set (64 members) is served by the failover loop
/// alone, past its 64th member too.
#[tokio::test(start_paused = true)]
async fn a_route_of_seventy_providers_reaches_its_last_members() {
    let names: Vec<String> = (0..70).map(|i| format!("p{i}")).collect();
    let mut builder = Supervisor::builder();
    for name in &names {
        builder = builder.provider(Provider::new(name.as_str()));
    }
    let fuse = builder
        .route(Route::new("long").providers(names.iter().map(String::as_str)))
        .build()
        .await
        .unwrap();
    for name in &names[..66] {
        fuse.provider(name).unwrap().isolate().await;
    }
    let routed = fuse
        .route("long", |p: ProviderId| async move {
            Ok::<_, Verdict>(p.as_str().to_owned())
        })
        .await
        .unwrap();
    assert_eq!(routed.value, "p66");
    assert_eq!(routed.attempts.len(), 67);
}
