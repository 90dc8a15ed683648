//! Recovery without waste: probes end an open period as soon as the provider is back, slow
//! start ramps its routed traffic up after a close (paused time unless said otherwise).
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fusebox::{
    Breaker, Cause, CircuitState, ConfigError, EventKind, Probe, Provider, ProviderId, Route,
    Supervisor,
};
use support::{ms, secs, settle, FakeError};
use tokio::time::{sleep, Instant};

/// A provider that is up or down, counting user calls and probes apart.
#[derive(Debug, Default)]
struct Backend {
    up: AtomicBool,
    user_calls: AtomicU64,
    probes: AtomicU64,
    probes_running: AtomicU64,
    max_probes_running: AtomicU64,
    /// Probes whose future was dropped before it finished (timed out or aborted).
    probes_dropped: AtomicU64,
    /// While set, probes hang.
    hang: AtomicBool,
    /// While set, probes succeed whatever `up` says (a models list that answers while
    /// completions fail).
    models_up: AtomicBool,
    /// When each user call was made.
    calls_at: std::sync::Mutex<Vec<Instant>>,
}

struct ProbeGuard(Arc<Backend>, bool);

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.0.probes_running.fetch_sub(1, Ordering::SeqCst);
        if !self.1 {
            self.0.probes_dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Backend {
    fn new(up: bool) -> Arc<Self> {
        let b = Backend::default();
        b.up.store(up, Ordering::SeqCst);
        Arc::new(b)
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    fn user_calls(&self) -> u64 {
        self.user_calls.load(Ordering::SeqCst)
    }

    fn probes(&self) -> u64 {
        self.probes.load(Ordering::SeqCst)
    }

    async fn call(&self) -> Result<String, FakeError> {
        self.user_calls.fetch_add(1, Ordering::SeqCst);
        self.calls_at.lock().unwrap().push(Instant::now());
        if self.up.load(Ordering::SeqCst) {
            Ok("answer".to_owned())
        } else {
            Err(FakeError::Unavailable)
        }
    }

    /// The probe operation: `GET /v1/models`, as it were; `took` long.
    fn probe_op(
        self: &Arc<Self>,
        took: Duration,
    ) -> impl Fn() -> futures::future::BoxFuture<'static, Result<(), FakeError>> + Send + Sync + 'static
    {
        let backend = self.clone();
        move || {
            let backend = backend.clone();
            Box::pin(async move {
                backend.probes.fetch_add(1, Ordering::SeqCst);
                let now = backend.probes_running.fetch_add(1, Ordering::SeqCst) + 1;
                backend.max_probes_running.fetch_max(now, Ordering::SeqCst);
                let mut guard = ProbeGuard(backend.clone(), false);
                if backend.hang.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                sleep(took).await;
                guard.1 = true;
                let up =
                    backend.up.load(Ordering::SeqCst) || backend.models_up.load(Ordering::SeqCst);
                drop(guard);
                if up {
                    Ok(())
                } else {
                    Err(FakeError::Unavailable)
                }
            })
        }
    }
}

/// A long open duration: with a probe, real traffic never has to find out.
fn breaker() -> Breaker {
    Breaker::consecutive(3)
        .open_for(secs(600))
        .max_open_for(secs(3600))
        .jitter(0.0)
}

async fn probed(probe: Probe) -> Supervisor {
    Supervisor::builder()
        .provider(
            Provider::new("primary")
                .breaker(breaker())
                .probe_with(probe),
        )
        .provider(Provider::new("fallback"))
        .route(Route::new("chat").providers(["primary", "fallback"]))
        .build()
        .await
        .unwrap()
}

/// One routed call: the primary through `primary`, the fallback always answers. Returns who
/// served it.
async fn route(fuse: &Supervisor, primary: &Arc<Backend>) -> String {
    let routed = fuse
        .route("chat", |p: ProviderId| {
            let primary = primary.clone();
            async move {
                if p == "primary" {
                    primary.call().await
                } else {
                    Ok("fallback answer".to_owned())
                }
            }
        })
        .await
        .unwrap();
    routed.provider.as_str().to_owned()
}

/// Routed calls every 100 ms until `until`; returns (time, server) of each.
async fn traffic(
    fuse: &Supervisor,
    primary: &Arc<Backend>,
    until: Instant,
) -> Vec<(Instant, String)> {
    let mut served = Vec::new();
    while Instant::now() < until {
        let at = Instant::now();
        served.push((at, route(fuse, primary).await));
        sleep(ms(100)).await;
    }
    served
}

fn status(fuse: &Supervisor, name: &str) -> fusebox::ProviderStatus {
    fuse.provider(name).unwrap().status()
}

#[tokio::test(start_paused = true)]
async fn a_hard_down_provider_with_a_probe_every_5s_gets_no_user_call_and_returns_within_an_interval(
) {
    let primary = Backend::new(false);
    let fuse = probed(Probe::new(secs(5), primary.probe_op(ms(50)))).await;
    let mut events = fuse.subscribe();
    let t0 = Instant::now();

    // Four minutes hard down, under 10 calls a second.
    let down = traffic(&fuse, &primary, t0 + secs(240)).await;
    assert_eq!(status(&fuse, "primary").state, CircuitState::Open);
    assert_eq!(
        primary.user_calls(),
        3,
        "the three failures that tripped it, then none"
    );
    assert!(down.iter().skip(3).all(|(_, p)| p == "fallback"));
    // One probe every 5 s while open, none before the trip.
    let probes = primary.probes();
    assert!((46..=48).contains(&probes), "{probes} probes in 4 minutes");
    let s = status(&fuse, "primary");
    assert_eq!(
        (
            s.probes,
            s.probe_failures,
            s.probe_successes,
            s.probe_timeouts
        ),
        (probes, probes, 0, 0)
    );
    // Probes are in no call count.
    assert_eq!((s.total, s.failed), (3, 3));

    // Back: the first probe after the recovery ends the open period, and routed traffic
    // returns within one probe interval.
    primary.set_up(true);
    let recovered = Instant::now();
    let after = traffic(&fuse, &primary, recovered + secs(20)).await;
    let back = after
        .iter()
        .find(|(_, p)| p == "primary")
        .map(|(at, _)| *at)
        .expect("the primary serves again");
    assert!(
        back - recovered <= secs(5),
        "back after {:?}",
        back - recovered
    );
    assert!(after
        .iter()
        .filter(|(at, _)| *at > back)
        .all(|(_, p)| p == "primary"));
    assert_eq!(primary.probes(), probes + 1, "one probe found it back");
    assert_eq!(status(&fuse, "primary").state, CircuitState::Closed);

    let events = support::drain(&mut events);
    let half_open: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::CircuitHalfOpened))
        .collect();
    assert_eq!(half_open.len(), 1, "{events:#?}");
    assert_eq!(half_open[0].cause, Some(Cause::ProbeSucceeded));
    assert!(half_open[0].at >= recovered && half_open[0].at - recovered <= secs(5));
    assert!(half_open[0]
        .to_string()
        .contains("a recovery probe succeeded"));
    assert!(matches!(
        events.last().map(|e| &e.kind),
        Some(EventKind::CircuitClosed)
    ));
    // Probes stop once the circuit is closed.
    sleep(secs(60)).await;
    assert_eq!(primary.probes(), probes + 1);
}

#[tokio::test(start_paused = true)]
async fn without_a_probe_the_same_outage_sends_trials_and_recovers_late() {
    // The baseline the probe is measured against: the same breaker without a probe.
    let primary = Backend::new(false);
    let fuse = Supervisor::builder()
        .provider(
            Provider::new("primary").breaker(
                Breaker::consecutive(3)
                    .open_for(secs(30))
                    .max_open_for(secs(300))
                    .jitter(0.0),
            ),
        )
        .provider(Provider::new("fallback"))
        .route(Route::new("chat").providers(["primary", "fallback"]))
        .build()
        .await
        .unwrap();
    let t0 = Instant::now();
    traffic(&fuse, &primary, t0 + secs(240)).await;
    // Trials at 30, 90 and 210 s (open 30, 60, 120 s): user calls that fail.
    assert_eq!(primary.user_calls(), 3 + 3);
    primary.set_up(true);
    let recovered = Instant::now();
    let after = traffic(&fuse, &primary, recovered + secs(20)).await;
    assert!(
        after.iter().all(|(_, p)| p == "fallback"),
        "still open 20 s later"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_probe_times_out_and_does_not_block_the_next() {
    let primary = Backend::new(false);
    primary.hang.store(true, Ordering::SeqCst);
    let probe = Probe::new(secs(5), primary.probe_op(ms(10))).timeout(secs(2));
    let fuse = probed(probe).await;
    for _ in 0..3 {
        route(&fuse, &primary).await;
    }
    assert_eq!(status(&fuse, "primary").state, CircuitState::Open);
    let opened = Instant::now();

    // The first probe starts at +5 s and hangs; at +7 s it is dropped as timed out.
    sleep(secs(5) + ms(1)).await;
    assert_eq!(
        (
            primary.probes(),
            primary.probes_running.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    sleep(secs(2)).await;
    settle().await;
    assert_eq!(primary.probes_running.load(Ordering::SeqCst), 0);
    assert_eq!(primary.probes_dropped.load(Ordering::SeqCst), 1);
    let s = status(&fuse, "primary");
    assert_eq!((s.probes, s.probe_timeouts), (1, 1));

    // The next runs on schedule, at +10 s, and this one finds the provider back.
    primary.hang.store(false, Ordering::SeqCst);
    primary.set_up(true);
    sleep_until_after(opened + secs(10) + ms(20)).await;
    settle().await;
    assert_eq!(primary.probes(), 2);
    assert_eq!(status(&fuse, "primary").state, CircuitState::HalfOpen);
    assert_eq!(primary.max_probes_running.load(Ordering::SeqCst), 1);
    let s = status(&fuse, "primary");
    assert_eq!(
        (
            s.probes,
            s.probe_successes,
            s.probe_timeouts,
            s.probe_failures
        ),
        (2, 1, 1, 0)
    );
}

async fn sleep_until_after(t: Instant) {
    tokio::time::sleep_until(t).await;
    tokio::task::yield_now().await;
}

#[tokio::test(start_paused = true)]
async fn false_alarms_back_the_probe_off_up_to_its_cap_and_a_close_resets_it() {
    // The models list answers while completions fail: every probe succeeds, every trial fails.
    let primary = Backend::new(false);
    primary.models_up.store(true, Ordering::SeqCst);
    let probe = Probe::new(secs(2), primary.probe_op(ms(0))).max_interval(secs(8));
    let fuse = probed(probe).await;
    let t0 = Instant::now();
    traffic(&fuse, &primary, t0 + secs(60)).await;
    let calls = primary.calls_at.lock().unwrap().clone();
    // Three calls trip it; then one trial after each probe: the wait doubles to the cap.
    let trials: Vec<u64> = calls[3..]
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64().round() as u64)
        .collect();
    assert_eq!(trials, [4, 8, 8, 8, 8, 8, 8], "{calls:?}");
    assert_eq!(status(&fuse, "primary").state, CircuitState::Open);

    // Back: found within the capped interval; the close resets the interval.
    primary.set_up(true);
    let recovered = Instant::now();
    let after = traffic(&fuse, &primary, recovered + secs(10)).await;
    let back = after.iter().find(|(_, p)| p == "primary").unwrap().0;
    assert!(back - recovered <= secs(8), "{:?}", back - recovered);
    primary.set_up(false);
    primary.models_up.store(false, Ordering::SeqCst);
    for _ in 0..3 {
        route(&fuse, &primary).await;
    }
    let probes = primary.probes();
    sleep(secs(2) + ms(1)).await;
    assert_eq!(
        primary.probes(),
        probes + 1,
        "a probe 2 s after the new trip"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_probes_keep_their_interval() {
    let primary = Backend::new(false);
    let probe = Probe::new(secs(2), primary.probe_op(ms(0))).max_interval(secs(8));
    let fuse = probed(probe).await;
    for _ in 0..3 {
        route(&fuse, &primary).await;
    }
    sleep(secs(20) + ms(1)).await;
    assert_eq!(primary.probes(), 10);
}

#[tokio::test(start_paused = true)]
async fn two_successes_in_a_row_are_needed_when_configured() {
    let primary = Backend::new(false);
    let probe = Probe::new(secs(5), primary.probe_op(ms(0))).successes(2);
    let fuse = probed(probe).await;
    for _ in 0..3 {
        route(&fuse, &primary).await;
    }
    primary.set_up(true);
    sleep(secs(5) + ms(1)).await;
    settle().await;
    assert_eq!(primary.probes(), 1);
    assert_eq!(
        status(&fuse, "primary").state,
        CircuitState::Open,
        "one is not enough"
    );
    sleep(secs(5)).await;
    settle().await;
    assert_eq!(status(&fuse, "primary").state, CircuitState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn probes_never_run_while_closed() {
    let primary = Backend::new(true);
    let fuse = probed(Probe::new(secs(1), primary.probe_op(ms(0)))).await;
    let t0 = Instant::now();
    let served = traffic(&fuse, &primary, t0 + secs(120)).await;
    assert!(served.iter().all(|(_, p)| p == "primary"));
    assert_eq!(primary.probes(), 0);
    assert_eq!(status(&fuse, "primary").probes, 0);
}

#[tokio::test(start_paused = true)]
async fn probes_stop_when_the_circuit_is_isolated_and_resume_after_a_reset_and_a_new_trip() {
    let primary = Backend::new(false);
    let fuse = probed(Probe::new(secs(5), primary.probe_op(secs(3)))).await;
    for _ in 0..3 {
        route(&fuse, &primary).await;
    }
    // A probe in flight (it takes 3 s) when an operator isolates the provider is dropped.
    sleep(secs(6)).await;
    assert_eq!(primary.probes_running.load(Ordering::SeqCst), 1);
    fuse.isolate("primary").await.unwrap();
    settle().await;
    assert_eq!(primary.probes_running.load(Ordering::SeqCst), 0);
    assert_eq!(primary.probes_dropped.load(Ordering::SeqCst), 1);
    let probes = primary.probes();
    primary.set_up(true);
    sleep(secs(120)).await;
    assert_eq!(primary.probes(), probes, "no probe while isolated");
    assert_eq!(status(&fuse, "primary").state, CircuitState::Isolated);

    // Reset closes it: still no probe. A new trip probes again.
    fuse.reset("primary").await.unwrap();
    sleep(secs(60)).await;
    assert_eq!(primary.probes(), probes);
    primary.set_up(false);
    for _ in 0..3 {
        route(&fuse, &primary).await;
    }
    sleep(secs(5) + ms(1)).await;
    assert_eq!(primary.probes(), probes + 1);
}

#[tokio::test(start_paused = true)]
async fn probes_stop_when_the_provider_is_removed_or_the_supervisor_shuts_down() {
    let primary = Backend::new(false);
    let fuse = probed(Probe::new(secs(5), primary.probe_op(ms(0)))).await;
    for _ in 0..3 {
        route(&fuse, &primary).await;
    }
    sleep(secs(11)).await;
    assert_eq!(primary.probes(), 2);
    fuse.remove_provider("primary", secs(1)).await.unwrap();
    sleep(secs(120)).await;
    assert_eq!(primary.probes(), 2, "no probe after the removal");

    let other = Backend::new(false);
    let fuse = Supervisor::builder()
        .provider(
            Provider::new("p")
                .breaker(breaker())
                .probe(secs(5), other.probe_op(ms(0))),
        )
        .build()
        .await
        .unwrap();
    for _ in 0..3 {
        let _ = fuse.call("p", || other.call()).await;
    }
    sleep(secs(6)).await;
    assert_eq!(other.probes(), 1);
    fuse.shutdown(secs(1)).await;
    sleep(secs(120)).await;
    assert_eq!(other.probes(), 1, "no probe after the shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_probe_does_not_end_an_open_the_provider_asked_for() {
    // A 429 with Retry-After 60 s: the provider said when to come back.
    let primary = Backend::new(true);
    let fuse = probed(Probe::new(secs(5), primary.probe_op(ms(0)))).await;
    let limited: Result<(), _> = fuse
        .call("primary", || async {
            Err(FakeError::RateLimited(Some(secs(60))))
        })
        .await;
    assert!(limited.is_err());
    assert_eq!(status(&fuse, "primary").state, CircuitState::Open);
    sleep(secs(59)).await;
    assert!(primary.probes() >= 10);
    assert_eq!(status(&fuse, "primary").state, CircuitState::Open);
    // After the hint, the next probe success ends it (or the deadline does).
    sleep(secs(6)).await;
    assert_eq!(status(&fuse, "primary").state, CircuitState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_probe_is_a_failed_probe() {
    let fuse = Supervisor::builder()
        .provider(
            Provider::new("p")
                .breaker(breaker())
                .probe(secs(5), || async {
                    if true {
                        panic!("probe bug");
                    }
                    Ok::<(), FakeError>(())
                }),
        )
        .build()
        .await
        .unwrap();
    for _ in 0..3 {
        let _ = fuse
            .call("p", || async { Err::<(), _>(FakeError::Unavailable) })
            .await;
    }
    sleep(secs(16)).await;
    let s = status(&fuse, "p");
    assert_eq!((s.probes, s.probe_failures), (3, 3));
    assert!(s.alive);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_most_one_probe_at_a_time_across_threads() {
    // Real time, short: probes every 10 ms that take 25 ms (timeout 100 ms).
    let primary = Backend::new(false);
    let probe = Probe::new(ms(10), primary.probe_op(ms(25))).timeout(ms(100));
    let fuse = probed(probe).await;
    for _ in 0..3 {
        route(&fuse, &primary).await;
    }
    // Other threads keep the provider's actor busy meanwhile.
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (fuse, primary) = (fuse.clone(), primary.clone());
            tokio::spawn(async move {
                for _ in 0..200 {
                    route(&fuse, &primary).await;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for c in callers {
        c.await.unwrap();
    }
    tokio::time::sleep(ms(400)).await;
    assert!(primary.probes() >= 5, "{} probes", primary.probes());
    assert_eq!(primary.max_probes_running.load(Ordering::SeqCst), 1);
    assert_eq!(primary.user_calls(), 3);
}

// ---- slow start ----------------------------------------------------------------------------

async fn slow_started(window: Duration) -> Supervisor {
    Supervisor::builder()
        .provider(
            Provider::new("primary")
                .breaker(Breaker::consecutive(1).open_for(secs(10)).jitter(0.0))
                .slow_start(window),
        )
        .provider(Provider::new("fallback"))
        .route(Route::new("chat").providers(["primary", "fallback"]))
        .build()
        .await
        .unwrap()
}

/// Trips the primary with one failed direct call and closes it with one trial 10 s later
/// (direct calls are not throttled).
async fn trip_and_close(fuse: &Supervisor, primary: &Arc<Backend>) {
    primary.set_up(false);
    let _ = fuse.call("primary", || primary.call()).await;
    assert_eq!(status(fuse, "primary").state, CircuitState::Open);
    sleep(secs(10)).await;
    primary.set_up(true);
    fuse.call("primary", || primary.call()).await.unwrap();
    assert_eq!(status(fuse, "primary").state, CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn slow_start_admits_at_most_the_ramp_share_early_and_everything_by_the_end() {
    let window = secs(100);
    let primary = Backend::new(true);
    let fuse = slow_started(window).await;
    trip_and_close(&fuse, &primary).await;
    let closed = Instant::now();

    // The first tenth of the window: 10 s, a call every 10 ms.
    let mut first_tenth = (0u64, 0u64);
    while Instant::now() < closed + window / 10 {
        let served = route(&fuse, &primary).await;
        first_tenth.0 += 1;
        first_tenth.1 += u64::from(served == "primary");
        sleep(ms(10)).await;
    }
    // The ramp share at the end of the first tenth: 10 % + 90 % / 10 = 19 %.
    let (calls, to_primary) = first_tenth;
    assert!(calls >= 990, "{calls}");
    assert!(
        to_primary * 100 <= calls * 19 + 100,
        "{to_primary} of {calls} calls went to the primary in the first tenth"
    );
    assert!(
        to_primary * 100 >= calls * 10,
        "at least the floor share: {to_primary} of {calls}"
    );
    let status = fuse.route_status("chat").unwrap();
    assert!(
        status.order[0].share > 0.1 && status.order[0].share < 0.25,
        "{status:?}"
    );

    // By the end of the window, every call.
    sleep_until_after(closed + window).await;
    for _ in 0..100 {
        assert_eq!(route(&fuse, &primary).await, "primary");
    }
    assert_eq!(fuse.route_status("chat").unwrap().order[0].share, 1.0);
}

#[tokio::test(start_paused = true)]
async fn slow_start_grows_its_share_over_the_window_and_spares_direct_calls() {
    let window = secs(20);
    let primary = Backend::new(true);
    let fuse = slow_started(window).await;
    trip_and_close(&fuse, &primary).await;
    let closed = Instant::now();

    // Direct calls are not throttled.
    let before = primary.user_calls();
    for _ in 0..50 {
        fuse.call("primary", || primary.call()).await.unwrap();
    }
    assert_eq!(primary.user_calls(), before + 50);

    // Routed calls: the share of each quarter of the window grows.
    let mut shares = Vec::new();
    for quarter in 1..=4u32 {
        let (mut calls, mut to_primary) = (0u64, 0u64);
        while Instant::now() < closed + window * quarter / 4 {
            calls += 1;
            to_primary += u64::from(route(&fuse, &primary).await == "primary");
            sleep(ms(10)).await;
        }
        shares.push(to_primary as f64 / calls as f64);
    }
    assert!(shares.windows(2).all(|w| w[0] < w[1]), "{shares:?}");
    assert!(shares[0] < 0.35 && shares[3] > 0.8, "{shares:?}");
}

#[tokio::test(start_paused = true)]
async fn a_provider_without_slow_start_takes_everything_at_once() {
    let primary = Backend::new(true);
    let fuse = Supervisor::builder()
        .provider(
            Provider::new("primary")
                .breaker(Breaker::consecutive(1).open_for(secs(10)).jitter(0.0)),
        )
        .provider(Provider::new("fallback"))
        .route(Route::new("chat").providers(["primary", "fallback"]))
        .build()
        .await
        .unwrap();
    trip_and_close(&fuse, &primary).await;
    for _ in 0..100 {
        assert_eq!(route(&fuse, &primary).await, "primary");
    }
}

#[tokio::test(start_paused = true)]
async fn probes_and_slow_start_together() {
    let primary = Backend::new(false);
    let fuse = Supervisor::builder()
        .provider(
            Provider::new("primary")
                .breaker(breaker())
                .probe(secs(2), primary.probe_op(ms(0)))
                .slow_start(secs(4)),
        )
        .provider(Provider::new("fallback"))
        .route(Route::new("chat").providers(["primary", "fallback"]))
        .build()
        .await
        .unwrap();
    let t0 = Instant::now();
    traffic(&fuse, &primary, t0 + secs(60)).await;
    assert_eq!(primary.user_calls(), 3);
    primary.set_up(true);
    let recovered = Instant::now();
    let after = traffic(&fuse, &primary, recovered + secs(12)).await;
    let first = after.iter().position(|(_, p)| p == "primary").unwrap();
    assert!(after[first].0 - recovered <= secs(2));
    // Within the 4 s ramp some calls still go to the fallback; from then on, none.
    let ramp_end = after[first].0 + secs(4) + ms(200);
    assert!(after[first..].iter().any(|(_, p)| p == "fallback"));
    assert!(after
        .iter()
        .filter(|(at, _)| *at >= ramp_end)
        .all(|(_, p)| p == "primary"));
}

// ---- configuration -------------------------------------------------------------------------

#[tokio::test]
async fn bad_probe_and_slow_start_settings_name_their_field() {
    let op = || async { Ok::<(), FakeError>(()) };
    let cases: Vec<(Provider, &str)> = vec![
        (
            Provider::new("p").probe(Duration::ZERO, op),
            "probe.interval",
        ),
        (
            Provider::new("p").probe_with(Probe::new(secs(5), op).timeout(Duration::ZERO)),
            "probe.timeout",
        ),
        (
            Provider::new("p").probe_with(Probe::new(secs(5), op).max_interval(secs(1))),
            "probe.max_interval",
        ),
        (
            Provider::new("p").probe_with(Probe::new(secs(5), op).successes(0)),
            "probe.successes",
        ),
        (
            Provider::new("p").probe(secs(366 * 86_400), op),
            "probe.interval",
        ),
        (Provider::new("p").slow_start(Duration::ZERO), "slow_start"),
    ];
    for (provider, field) in cases {
        let err = provider.validate().unwrap_err();
        assert_eq!(err.field(), Some(field), "{err}");
        assert!(err.to_string().contains("provider `p`"), "{err}");
        let built = Supervisor::builder().provider(provider).build().await;
        assert!(
            matches!(built, Err(ConfigError::InvalidValue { .. })),
            "{field}"
        );
    }
}

#[test]
fn slow_start_is_in_the_toml_format_and_a_probe_is_not() {
    let config = fusebox::Config::from_toml_str(
        "[defaults]\nslow_start = \"30s\"\n[[providers]]\nname = \"a\"\n[[providers]]\nname = \"b\"\nslow_start = \"5s\"\n",
    )
    .unwrap();
    assert_eq!(config.providers[0].slow_start_config(), Some(secs(30)));
    assert_eq!(config.providers[1].slow_start_config(), Some(secs(5)));
    let text = config.to_toml_string();
    assert!(text.contains("slow_start = \"5s\""), "{text}");
    assert_eq!(fusebox::Config::from_toml_str(&text).unwrap(), config);

    let err =
        fusebox::Config::from_toml_str("[[providers]]\nname = \"a\"\nslow_start = \"soon\"\n")
            .unwrap_err();
    assert_eq!(err.field(), Some("slow_start"), "{err}");
    let err = fusebox::Config::from_toml_str("[[providers]]\nname = \"a\"\nprobe = \"5s\"\n")
        .unwrap_err();
    assert!(err.to_string().contains("unknown field `probe`"), "{err}");
}

#[test]
fn providers_with_probes_stay_clone_debug_and_comparable() {
    let p = Provider::new("p").probe(secs(5), || async { Ok::<(), FakeError>(()) });
    let q = p.clone();
    assert_eq!(p, q, "a clone runs the same probe");
    let other = Provider::new("p").probe(secs(5), || async { Ok::<(), FakeError>(()) });
    assert_ne!(p, other, "another closure is another probe");
    let shown = format!("{p:?}");
    assert!(
        shown.contains("Probe") && shown.contains("interval: 5s"),
        "{shown}"
    );
    let probe = p.probe_config().unwrap();
    assert_eq!(
        (
            probe.interval(),
            probe.timeout_config(),
            probe.max_interval_config(),
            probe.successes_config()
        ),
        (secs(5), secs(5), secs(40), 1)
    );
}

/// A probe is code, which TOML cannot hold: a TOML reload keeps each provider's probe, also
/// when the provider's other settings change (it restarts with the new ones and the probe).
#[tokio::test(start_paused = true)]
async fn a_toml_reload_keeps_each_providers_probe() {
    let primary = Backend::new(true);
    let fuse = probed(Probe::new(secs(5), primary.probe_op(ms(0)))).await;
    fuse.reload_toml_str(
        r#"
        [[providers]]
        name = "primary"
        breaker = { consecutive = 2, open_for = "10m", jitter = 0.0 }
        [[providers]]
        name = "fallback"
        [[routes]]
        name = "chat"
        providers = ["primary", "fallback"]
        "#,
    )
    .await
    .unwrap();
    let config = fuse.config();
    let reloaded = config.providers.iter().find(|p| p.name() == "primary");
    assert!(reloaded.unwrap().probe_config().is_some());
    assert!(config.providers[1].probe_config().is_none());

    primary.set_up(false);
    for _ in 0..2 {
        route(&fuse, &primary).await;
    }
    settle().await;
    let s = status(&fuse, "primary");
    assert_eq!(
        s.state,
        CircuitState::Open,
        "the reloaded threshold (2) applies"
    );
    primary.set_up(true);
    sleep(secs(6)).await;
    settle().await;
    assert!(primary.probes() >= 1, "the probe ran after the reload");
    let s = status(&fuse, "primary");
    assert_eq!(
        s.state,
        CircuitState::HalfOpen,
        "the probe ended the open period"
    );
    assert_eq!(primary.user_calls(), 2, "no user call before the probe");
    assert_eq!(route(&fuse, &primary).await, "primary");
    assert_eq!(status(&fuse, "primary").state, CircuitState::Closed);
}
