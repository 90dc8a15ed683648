//! The router actor and the live registry: published orders, demotion with hysteresis, the
//! router's own supervision, providers and routes added, removed and reloaded while calls
//! run, and routes that wait in a bulkhead queue (paused time unless noted).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fusebox::{
    AttemptOutcome, Breaker, Bulkhead, CallError, CircuitState, Config, ConfigError, Policy,
    Provider, ProviderId, Reason, Route, RouteError, Supervisor, Verdict,
};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Down;

impl fusebox::Classify for Down {
    fn verdict(&self) -> Verdict {
        Verdict::Failure
    }
}

fn breaker() -> Breaker {
    Breaker::consecutive(3).open_for(secs(60)).jitter(0.0)
}

async fn two(builder: fusebox::SupervisorBuilder) -> Supervisor {
    builder
        .provider(Provider::new("primary").breaker(breaker()))
        .provider(Provider::new("secondary").breaker(breaker()))
        .route(Route::new("chat").providers(["primary", "secondary"]))
        .build()
        .await
        .unwrap()
}

async fn served_by(fuse: &Supervisor) -> ProviderId {
    fuse.route("chat", |_p: ProviderId| async { Ok::<_, Down>(()) })
        .await
        .unwrap()
        .provider
}

async fn fail_primary(fuse: &Supervisor, n: usize) {
    for _ in 0..n {
        let _ = fuse.call("primary", || async { Err::<(), _>(Down) }).await;
    }
}

#[tokio::test(start_paused = true)]
async fn routed_calls_send_the_router_no_message() {
    let fuse = two(Supervisor::builder().resample_every(secs(3600))).await;
    settle().await;
    let before = fuse.router_status();
    for _ in 0..1_000 {
        assert_eq!(served_by(&fuse).await, "primary");
    }
    let after = fuse.router_status();
    assert_eq!(
        after.messages, before.messages,
        "routed calls messaged the router"
    );
    assert_eq!(after.publications, before.publications);
    // A circuit change does reach it, and the order follows.
    fail_primary(&fuse, 3).await;
    settle().await;
    assert!(fuse.router_status().messages > after.messages);
    let status = fuse.route_status("chat").unwrap();
    assert_eq!(status.providers(), ["primary", "secondary"]);
    assert_eq!(status.order[0].reason, Reason::Open);
    assert_eq!(status.order_changes, 1);
}

#[tokio::test(start_paused = true)]
async fn the_next_routed_call_skips_a_provider_that_just_tripped() {
    // The router is told after the trip, but the gate is checked in the loop: read-your-writes
    // for routing does not wait for the router.
    let fuse = two(Supervisor::builder().resample_every(secs(3600))).await;
    fail_primary(&fuse, 3).await;
    let routed = fuse
        .route("chat", |_p: ProviderId| async { Ok::<_, Down>(()) })
        .await
        .unwrap();
    assert_eq!(routed.provider, "secondary");
    assert!(routed
        .attempts
        .iter()
        .all(|a| a.provider != "primary" || !a.outcome.was_called()));
}

#[tokio::test(start_paused = true)]
async fn the_router_crashing_mid_traffic_restarts_resyncs_and_leaves_providers_alone() {
    let fuse = two(Supervisor::builder().resample_every(secs(1))).await;
    let served = Arc::new(AtomicU64::new(0));
    let traffic = {
        let (fuse, served) = (fuse.clone(), served.clone());
        tokio::spawn(async move {
            for _ in 0..200 {
                let routed = fuse
                    .route("chat", |_p: ProviderId| async {
                        tokio::time::sleep(ms(10)).await;
                        Ok::<_, Down>(())
                    })
                    .await;
                assert!(routed.is_ok(), "{routed:?}");
                served.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(ms(300)).await;
    fuse.crash_router_actor();
    // While it restarts, and after, calls go on; the providers never noticed.
    fail_primary(&fuse, 3).await;
    traffic.await.unwrap();
    assert_eq!(served.load(Ordering::Relaxed), 200);
    tokio::time::sleep(secs(2)).await;
    let router = fuse.router_status();
    assert!(router.alive);
    assert_eq!(router.restarts, 1);
    // Rebuilt from the last table and the gates: the primary is marked open.
    assert_eq!(
        fuse.route_status("chat").unwrap().order[0].reason,
        Reason::Open
    );
    assert!(fuse.status().iter().all(|s| s.alive));
    assert_eq!(
        fuse.provider("primary").unwrap().state(),
        CircuitState::Open
    );
}

#[tokio::test(start_paused = true)]
async fn a_provider_past_its_panic_limit_does_not_stop_the_router() {
    let fuse = two(Supervisor::builder()).await;
    let primary = fuse.provider("primary").unwrap();
    for _ in 0..10 {
        let _ = fuse.crash_provider_actor("primary");
        settle().await;
        tokio::time::sleep(ms(1)).await;
    }
    assert!(!primary.is_alive());
    fuse.resync_routes().await;
    let status = fuse.route_status("chat").unwrap();
    assert!(fuse.router_status().alive);
    assert_eq!(status.providers(), ["primary", "secondary"]);
    assert_eq!(status.order[0].reason, Reason::Stopped);
    assert_eq!(served_by(&fuse).await, "secondary");
}

#[tokio::test(start_paused = true)]
async fn a_provider_added_at_run_time_is_routed_to() {
    let fuse = two(Supervisor::builder()).await;
    fuse.add_provider(Provider::new("tertiary").meta("model", "small"))
        .await
        .unwrap();
    fuse.upsert_route(Route::new("cheap").providers(["tertiary", "secondary"]))
        .await
        .unwrap();
    let routed = fuse
        .route("cheap", |p: ProviderId| async move {
            Ok::<_, Down>(p.meta("model").map(str::to_owned))
        })
        .await
        .unwrap();
    assert_eq!(routed.provider, "tertiary");
    assert_eq!(routed.value.as_deref(), Some("small"));
    assert_eq!(fuse.status().len(), 3);
    assert!(fuse
        .config()
        .providers
        .iter()
        .any(|p| p.name() == "tertiary"));
    // A second provider of the same name, and a route naming an unknown one, are refused.
    assert!(matches!(
        fuse.add_provider(Provider::new("tertiary")).await,
        Err(ConfigError::DuplicateProvider(name)) if name == "tertiary"
    ));
    assert!(matches!(
        fuse.upsert_route(Route::new("bad").providers(["nope"]))
            .await,
        Err(ConfigError::UnknownProvider { .. })
    ));
    // A bad setting is named, and nothing starts.
    let bad = fuse
        .add_provider(Provider::new("broken").breaker(Breaker::consecutive(0)))
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("broken"), "{bad}");
    assert!(fuse.provider("broken").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_removed_provider_finishes_its_calls_and_is_skipped_afterwards() {
    let fuse = two(Supervisor::builder()).await;
    let in_flight = {
        let fuse = fuse.clone();
        tokio::spawn(async move {
            fuse.call("primary", || async {
                tokio::time::sleep(secs(5)).await;
                Ok::<_, Down>("finished")
            })
            .await
        })
    };
    settle().await;
    let old = fuse.provider("primary").unwrap();
    let report = fuse.remove_provider("primary", secs(30)).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.waited, secs(5), "waited for the call in flight");
    assert_eq!(in_flight.await.unwrap().unwrap(), "finished");
    // Skipped by the route, gone from status, and an old handle refuses calls.
    assert_eq!(served_by(&fuse).await, "secondary");
    assert_eq!(
        fuse.route_status("chat").unwrap().providers(),
        ["secondary"]
    );
    assert!(fuse.provider("primary").is_none());
    assert_eq!(fuse.status().len(), 1);
    let refused: Result<(), CallError<Down>> = old.call(|| async { Ok(()) }).await;
    assert!(matches!(refused, Err(CallError::ShuttingDown)));
    assert!(matches!(
        fuse.remove_provider("primary", secs(1)).await,
        Err(ConfigError::NotRunning {
            kind: "provider",
            ..
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_route_holding_an_old_order_skips_a_removed_provider() {
    let fuse = two(Supervisor::builder()).await;
    let started = Arc::new(tokio::sync::Notify::new());
    let go = Arc::new(tokio::sync::Notify::new());
    // A routed call whose first attempt (primary) fails after the removal: the failover goes
    // on to the secondary, never aborting because the primary is gone.
    let routed = {
        let (fuse, started, go) = (fuse.clone(), started.clone(), go.clone());
        tokio::spawn(async move {
            fuse.route("chat", |p: ProviderId| {
                let (started, go) = (started.clone(), go.clone());
                async move {
                    if p == "primary" {
                        started.notify_one();
                        go.notified().await;
                        return Err(Down);
                    }
                    Ok(p.to_string())
                }
            })
            .await
        })
    };
    started.notified().await;
    let removal = {
        let fuse = fuse.clone();
        tokio::spawn(async move { fuse.remove_provider("primary", secs(30)).await })
    };
    settle().await;
    go.notify_one();
    let routed = routed.await.unwrap().unwrap();
    assert_eq!(routed.value, "secondary");
    assert!(removal.await.unwrap().unwrap().is_clean());
}

#[tokio::test(start_paused = true)]
async fn reload_keeps_an_open_circuit_open_until_the_same_deadline() {
    let fuse = two(Supervisor::builder()).await;
    fail_primary(&fuse, 3).await;
    tokio::time::sleep(secs(10)).await;
    let before = fuse.provider("primary").unwrap().status();
    assert_eq!(before.retry_after, Some(secs(50)));

    let mut config = (*fuse.config()).clone();
    config.providers[0] =
        Provider::new("primary").breaker(Breaker::consecutive(5).open_for(secs(120)).jitter(0.0));
    config.providers.retain(|p| p.name() != "secondary");
    config.providers.push(Provider::new("tertiary"));
    config.routes = vec![Route::new("chat").providers(["primary", "tertiary"])];
    fuse.reload(config).await.unwrap();

    let after = fuse.provider("primary").unwrap().status();
    assert_eq!(after.state, CircuitState::Open);
    assert_eq!(after.retry_after, Some(secs(50)), "the deadline moved");
    assert_eq!(after.generation, before.generation);
    assert_eq!(after.failed, 3, "lifetime counts carry over");
    assert_eq!(
        after.failure_threshold,
        Some(5),
        "the new threshold applies"
    );
    assert_eq!(
        fuse.route_status("chat").unwrap().providers(),
        ["primary", "tertiary"]
    );
    assert!(
        fuse.provider("secondary").is_none(),
        "removed by the reload"
    );
    // The circuit half-opens at the old deadline, and the new settings decide from there.
    tokio::time::sleep(secs(50)).await;
    settle().await;
    assert_eq!(
        fuse.provider("primary").unwrap().state(),
        CircuitState::HalfOpen
    );

    // An invalid configuration changes nothing and names the problem.
    let mut bad = (*fuse.config()).clone();
    bad.routes.push(Route::new("x").providers(["nope"]));
    assert!(matches!(
        fuse.reload(bad).await,
        Err(ConfigError::UnknownProvider { .. })
    ));
    assert_eq!(fuse.status().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn reload_leaves_unchanged_providers_running_as_they_are() {
    let fuse = two(Supervisor::builder()).await;
    fail_primary(&fuse, 2).await;
    let primary = fuse.provider("primary").unwrap();
    let config = (*fuse.config()).clone();
    fuse.reload(config).await.unwrap();
    // The very same provider: the handle taken before still calls it.
    let ok: Result<(), CallError<Down>> = primary.call(|| async { Ok(()) }).await;
    assert!(ok.is_ok());
    assert_eq!(fuse.provider("primary").unwrap().status().failed, 2);
}

#[tokio::test(start_paused = true)]
async fn reload_from_toml() {
    let fuse = two(Supervisor::builder()).await;
    fuse.reload_toml_str(
        r#"
        [[providers]]
        name = "primary"
        [[providers]]
        name = "secondary"
        [[routes]]
        name = "chat"
        providers = ["secondary", "primary"]
        "#,
    )
    .await
    .unwrap();
    assert_eq!(served_by(&fuse).await, "secondary");
    let err = fuse
        .reload_toml_str("[[providers]]\nname = 3\n")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
    assert_eq!(
        served_by(&fuse).await,
        "secondary",
        "a bad file changes nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn a_half_open_primary_gets_exactly_its_trial_slots_of_a_thousand_concurrent_calls() {
    let fuse = Supervisor::builder()
        .provider(
            Provider::new("primary").breaker(
                Breaker::consecutive(1)
                    .open_for(secs(10))
                    .jitter(0.0)
                    .half_open_max_calls(3)
                    .success_threshold(3),
            ),
        )
        .provider(Provider::new("secondary"))
        .route(Route::new("chat").providers(["primary", "secondary"]))
        .build()
        .await
        .unwrap();
    fail_primary(&fuse, 1).await;
    tokio::time::sleep(secs(10)).await;
    settle().await;
    assert_eq!(
        fuse.provider("primary").unwrap().state(),
        CircuitState::HalfOpen
    );

    let reached = Arc::new(AtomicU32::new(0));
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            let (fuse, reached) = (fuse.clone(), reached.clone());
            tokio::spawn(async move {
                fuse.route("chat", |p: ProviderId| {
                    let reached = reached.clone();
                    async move {
                        if p == "primary" {
                            reached.fetch_add(1, Ordering::SeqCst);
                        }
                        tokio::time::sleep(secs(1)).await;
                        Ok::<_, Down>(p)
                    }
                })
                .await
                .unwrap()
                .provider
            })
        })
        .collect();
    let mut by_secondary = 0;
    for task in tasks {
        if task.await.unwrap() == "secondary" {
            by_secondary += 1;
        }
    }
    assert_eq!(reached.load(Ordering::SeqCst), 3);
    assert_eq!(by_secondary, 997);
    assert_eq!(
        fuse.provider("primary").unwrap().state(),
        CircuitState::Closed
    );
}

/// A provider answering every other call with a failure never trips a consecutive
/// breaker, but the router moves traffic away within its window.
#[tokio::test(start_paused = true)]
async fn a_partial_outage_demotes_the_primary_and_recovery_promotes_it() {
    let fuse = Supervisor::builder()
        .provider(Provider::new("primary").breaker(Breaker::consecutive(5)))
        .provider(Provider::new("secondary"))
        .route(Route::new("chat").providers(["primary", "secondary"]))
        .build()
        .await
        .unwrap();
    let flip = Arc::new(AtomicU32::new(0));
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut first_demoted = None;
    let mut primary_served_after_demotion = 0;
    for tick in 0..200u32 {
        // 20 calls a second.
        tokio::time::sleep(ms(50)).await;
        let (flip, healthy) = (flip.clone(), healthy.clone());
        let routed = fuse
            .route("chat", move |p: ProviderId| {
                let (flip, healthy) = (flip.clone(), healthy.clone());
                async move {
                    if p == "primary"
                        && flip.fetch_add(1, Ordering::Relaxed) % 2 == 1
                        && !healthy.load(Ordering::Relaxed)
                    {
                        return Err(Down);
                    }
                    Ok(())
                }
            })
            .await
            .unwrap();
        let demoted = matches!(
            fuse.route_status("chat").unwrap().order[0]
                .provider
                .as_str(),
            "secondary"
        );
        if demoted && first_demoted.is_none() {
            first_demoted = Some(tick);
        }
        if first_demoted.is_some() && routed.provider == "primary" {
            primary_served_after_demotion += 1;
        }
    }
    let first_demoted = first_demoted.expect("the primary was never demoted") as u64;
    // Within the 10 s window (200 ticks of 50 ms): demoted once 10 calls showed 50 % failing.
    assert!(
        first_demoted * 50 <= 10_000,
        "demoted only at {} ms",
        first_demoted * 50
    );
    let status = fuse.route_status("chat").unwrap();
    assert!(
        matches!(status.order[1].reason, Reason::Demoted { failure_rate } if failure_rate >= 0.5)
            || status.order[0].provider == "primary",
        "{status:?}"
    );
    assert_eq!(
        fuse.provider("primary").unwrap().state(),
        CircuitState::Closed
    );
    let _ = primary_served_after_demotion;

    // Recovery: the primary is healthy again. Demoted, it gets no routed calls, so after a
    // window without evidence it gets traffic back, and stays preferred.
    healthy.store(true, Ordering::Relaxed);
    let changes_before = fuse.route_status("chat").unwrap().order_changes;
    for _ in 0..600 {
        tokio::time::sleep(ms(50)).await;
        fuse.route("chat", |_p: ProviderId| async { Ok::<_, Down>(()) })
            .await
            .unwrap();
    }
    let status = fuse.route_status("chat").unwrap();
    assert_eq!(status.providers(), ["primary", "secondary"]);
    assert_eq!(status.order[0].reason, Reason::Healthy);
    // Promoted once, and never demoted again: no flapping.
    assert_eq!(status.order_changes - changes_before, 1, "{status:?}");
}

/// Between the two thresholds a demoted provider stays demoted, and a promoted one stays
/// promoted: a failure rate hovering at 40 % does not flap the order.
#[tokio::test(start_paused = true)]
async fn demotion_has_hysteresis() {
    let fuse = Supervisor::builder()
        .provider(Provider::new("primary").breaker(Breaker::consecutive(100)))
        .provider(Provider::new("secondary"))
        .route(Route::new("chat").providers(["primary", "secondary"]))
        .build()
        .await
        .unwrap();
    // Direct calls feed the same provider statistics the router samples.
    async fn second(fuse: &Supervisor, failing_in_ten: u32) {
        for i in 0..10 {
            let fail = i < failing_in_ten;
            let _ = fuse
                .call("primary", || async move {
                    if fail {
                        Err(Down)
                    } else {
                        Ok(())
                    }
                })
                .await;
            tokio::time::sleep(ms(100)).await;
        }
    }
    let first = |fuse: &Supervisor| {
        fuse.route_status("chat").unwrap().order[0]
            .provider
            .as_str()
            .to_owned()
    };
    for _ in 0..12 {
        second(&fuse, 4).await; // 40 %: below the demotion threshold
    }
    assert_eq!(first(&fuse), "primary");
    for _ in 0..12 {
        second(&fuse, 5).await; // 50 %: demoted
    }
    assert_eq!(first(&fuse), "secondary");
    let changes = fuse.route_status("chat").unwrap().order_changes;
    for _ in 0..12 {
        second(&fuse, 4).await; // back to 40 %: stays demoted
    }
    assert_eq!(first(&fuse), "secondary");
    assert_eq!(fuse.route_status("chat").unwrap().order_changes, changes);
    for _ in 0..12 {
        second(&fuse, 2).await; // 20 %: promoted
    }
    assert_eq!(first(&fuse), "primary");
}

#[tokio::test(start_paused = true)]
async fn routes_wait_in_the_bulkhead_queue_when_every_provider_is_saturated() {
    let fuse = Supervisor::builder()
        .provider(
            Provider::new("only").bulkhead(Bulkhead::new(1).queue(10).queue_timeout(secs(30))),
        )
        .route(Route::new("chat").providers(["only"]))
        .build()
        .await
        .unwrap();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let fuse = fuse.clone();
            tokio::spawn(async move {
                fuse.route("chat", |_p: ProviderId| async {
                    tokio::time::sleep(ms(100)).await;
                    Ok::<_, Down>(())
                })
                .await
            })
        })
        .collect();
    let mut served = 0;
    for task in tasks {
        if task.await.unwrap().is_ok() {
            served += 1;
        }
    }
    assert_eq!(served, 5);
}

#[tokio::test(start_paused = true)]
async fn a_queued_route_is_bounded_by_its_deadline() {
    let fuse = Supervisor::builder()
        .provider(
            Provider::new("only").bulkhead(Bulkhead::new(1).queue(10).queue_timeout(secs(30))),
        )
        .route(Route::new("chat").providers(["only"]).deadline(secs(1)))
        .build()
        .await
        .unwrap();
    let hog = {
        let fuse = fuse.clone();
        tokio::spawn(async move {
            fuse.call("only", || async {
                tokio::time::sleep(secs(10)).await;
                Ok::<_, Down>(())
            })
            .await
        })
    };
    settle().await;
    let started = tokio::time::Instant::now();
    let routed = fuse
        .route("chat", |_p: ProviderId| async { Ok::<_, Down>(()) })
        .await;
    assert!(
        matches!(routed, Err(RouteError::DeadlineExceeded { .. })),
        "{routed:?}"
    );
    assert_eq!(started.elapsed(), secs(1));
    hog.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn least_loaded_and_lowest_latency_routes_keep_their_per_call_order() {
    let fuse = Supervisor::builder()
        .provider(Provider::new("a").bulkhead(Bulkhead::new(2)))
        .provider(Provider::new("b").bulkhead(Bulkhead::new(2)))
        .route(
            Route::new("spread")
                .providers(["a", "b"])
                .policy(Policy::LeastLoaded),
        )
        .build()
        .await
        .unwrap();
    let busy = {
        let fuse = fuse.clone();
        tokio::spawn(async move {
            fuse.call("a", || async {
                tokio::time::sleep(secs(1)).await;
                Ok::<_, Down>(())
            })
            .await
        })
    };
    settle().await;
    let routed = fuse
        .route("spread", |_p: ProviderId| async { Ok::<_, Down>(()) })
        .await
        .unwrap();
    assert_eq!(routed.provider, "b");
    assert_eq!(routed.attempts.len(), 1);
    assert_eq!(routed.attempts[0].outcome, AttemptOutcome::Succeeded);
    busy.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn registry_changes_after_shutdown_are_refused() {
    let fuse = two(Supervisor::builder()).await;
    assert!(fuse.shutdown(secs(1)).await.is_clean());
    assert!(matches!(
        fuse.add_provider(Provider::new("late")).await,
        Err(ConfigError::ShuttingDown)
    ));
    assert!(matches!(
        fuse.reload(Config::default()).await,
        Err(ConfigError::NoProviders | ConfigError::ShuttingDown)
    ));
}

/// A provider announcing low headroom is ranked behind the others before any 429; one
/// announcing none left opens until its reset, without a request.
#[tokio::test(start_paused = true)]
async fn low_headroom_steers_away_and_an_exhausted_quota_opens_until_its_reset() {
    use fusebox::headroom::{Headroom, Quota};
    let fuse = two(Supervisor::builder().resample_every(secs(3600))).await;
    let primary = fuse.provider("primary").unwrap();
    let announce = |remaining: u64| {
        let mut h = Headroom::default();
        h.requests = Some(Quota::new(remaining).with_limit(100).with_reset(secs(30)));
        primary.record_headroom(h);
    };
    announce(50);
    fuse.resync_routes().await;
    assert_eq!(served_by(&fuse).await, "primary");
    announce(5);
    fuse.resync_routes().await;
    let status = fuse.route_status("chat").unwrap();
    assert_eq!(status.providers(), ["secondary", "primary"]);
    assert!(matches!(status.order[1].reason, Reason::LowHeadroom { ratio } if ratio == 0.05));
    assert_eq!(served_by(&fuse).await, "secondary");
    // Between the thresholds: stays behind (hysteresis); above the second: back in front.
    announce(15);
    fuse.resync_routes().await;
    assert_eq!(served_by(&fuse).await, "secondary");
    announce(25);
    fuse.resync_routes().await;
    assert_eq!(served_by(&fuse).await, "primary");
    // Nothing left: open until the reset, with no failure counted.
    announce(0);
    settle().await;
    let status = primary.status();
    assert_eq!((status.state, status.failed), (CircuitState::Open, 0));
    assert_eq!(status.retry_after, Some(secs(30)));
    let rejected: Result<(), CallError<Down>> = primary.call(|| async { Ok(()) }).await;
    assert!(
        matches!(rejected, Err(CallError::Open { retry_after, .. }) if retry_after == secs(30))
    );
}

/// Routed calls read the router's table through their thread's cache: a route changed while
/// worker threads hold the old table in theirs is read afresh by every call that starts after
/// `upsert_route` returned, on every thread (real time, several worker threads).
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn every_thread_reads_a_route_changed_after_it_cached_the_old_table() {
    let fuse = two(Supervisor::builder()).await;
    let route = |fuse: Supervisor| async move {
        let mut served = Vec::new();
        for _ in 0..50 {
            served.push(served_by(&fuse).await);
            tokio::task::yield_now().await;
        }
        served
    };
    // Every worker thread reads (and caches) the table with "primary" first.
    let before: Vec<_> = (0..12).map(|_| tokio::spawn(route(fuse.clone()))).collect();
    for task in before {
        assert!(task.await.unwrap().iter().all(|p| *p == "primary"));
    }
    fuse.upsert_route(Route::new("chat").providers(["secondary", "primary"]))
        .await
        .unwrap();
    let after: Vec<_> = (0..12).map(|_| tokio::spawn(route(fuse.clone()))).collect();
    for task in after {
        let served = task.await.unwrap();
        assert!(served.iter().all(|p| *p == "secondary"), "{served:?}");
    }
}

/// A routed call made inside another supervisor's routed call (its operation routes again,
/// before its first poll returns) reads each supervisor's own table: the thread's cache
/// holds one, the nested call reads the other past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_call_nested_in_another_supervisors_routed_call_reads_its_own_table() {
    let outer = two(Supervisor::builder()).await;
    let inner = Supervisor::builder()
        .provider(Provider::new("inner"))
        .route(Route::new("chat").providers(["inner"]))
        .build()
        .await
        .unwrap();
    for _ in 0..3 {
        let routed = outer
            .route("chat", |p: ProviderId| {
                let inner = inner.clone();
                async move {
                    let nested = served_by(&inner).await;
                    Ok::<_, Down>((p, nested))
                }
            })
            .await
            .unwrap();
        assert_eq!(routed.value.0, "primary");
        assert_eq!(routed.value.1, "inner");
        // And back: the outer supervisor's route after the inner one took the cache.
        assert_eq!(served_by(&outer).await, "primary");
        assert_eq!(served_by(&inner).await, "inner");
    }
}

/// A routed call to a provider whose only setting beyond its breaker is a bulkhead holds one
/// of its slots for as long as the operation runs, without the failover loop: the bulkhead
/// bounds routed calls as it bounds direct ones, and the slot comes back when the call
/// succeeds, fails or is dropped.
#[tokio::test(start_paused = true)]
async fn a_routed_call_holds_a_bulkhead_slot_until_it_ends() {
    let fuse = Supervisor::builder()
        .provider(
            Provider::new("primary")
                .breaker(breaker())
                .bulkhead(Bulkhead::new(2)),
        )
        .provider(Provider::new("secondary"))
        .route(Route::new("chat").providers(["primary", "secondary"]))
        .build()
        .await
        .unwrap();
    let in_flight = || fuse.provider("primary").unwrap().status().in_flight;
    let (release, held) = tokio::sync::watch::channel(false);
    let hold = |fuse: Supervisor, held: tokio::sync::watch::Receiver<bool>| {
        tokio::spawn(async move {
            fuse.route("chat", move |p: ProviderId| {
                let mut held = held.clone();
                async move {
                    let _ = held.wait_for(|go| *go).await;
                    Ok::<_, Down>(p)
                }
            })
            .await
            .map(|r| r.provider)
        })
    };
    // Two calls take both slots; the third goes to the secondary, whose answer is at once.
    let first = hold(fuse.clone(), held.clone());
    let second = hold(fuse.clone(), held.clone());
    settle().await;
    assert_eq!(in_flight(), 2);
    let third = hold(fuse.clone(), held.clone());
    settle().await;
    release.send(true).unwrap();
    assert_eq!(first.await.unwrap().unwrap(), "primary");
    assert_eq!(second.await.unwrap().unwrap(), "primary");
    assert_eq!(third.await.unwrap().unwrap(), "secondary");
    assert_eq!(in_flight(), 0);

    // A failed call gives its slot back (and fails over); a dropped one does too.
    let failed = fuse
        .route("chat", |p: ProviderId| async move {
            if p == "primary" {
                Err(Down)
            } else {
                Ok(p)
            }
        })
        .await
        .unwrap();
    assert_eq!(failed.provider, "secondary");
    let (_never, pending) = tokio::sync::watch::channel(false);
    let dropped = hold(fuse.clone(), pending.clone());
    settle().await;
    assert_eq!(in_flight(), 1);
    dropped.abort();
    settle().await;
    assert_eq!(in_flight(), 0);
    // So does one whose operation panics in its first poll.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        use std::future::Future;
        let mut routed = std::pin::pin!(fuse.route("chat", |_p: ProviderId| async {
            panic!("the operation panicked");
            #[allow(unreachable_code)]
            Ok::<(), Down>(())
        }));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = routed.as_mut().poll(&mut cx);
    }));
    assert!(panicked.is_err());
    settle().await;
    assert_eq!(in_flight(), 0);
    // Both slots are free again: two calls held at once are both served by the primary.
    let (release, held) = tokio::sync::watch::channel(false);
    let a = hold(fuse.clone(), held.clone());
    let b = hold(fuse.clone(), held.clone());
    settle().await;
    release.send(true).unwrap();
    assert_eq!(a.await.unwrap().unwrap(), "primary");
    assert_eq!(b.await.unwrap().unwrap(), "primary");
    let status = fuse.provider("primary").unwrap().status();
    assert_eq!(
        (status.in_flight, status.failed, status.cancelled),
        (0, 1, 2)
    );
}
