//! Outage figures: one scripted incident replayed against several strategies, under paused
//! tokio time (10 simulated minutes run in seconds, deterministically).
//!
//! ```sh
//! cargo bench --bench outage
//! ```
//!
//! The script: 200 requests a second for 10 minutes, each wanting one answer. The primary
//! provider answers in 180–220 ms when healthy; from 2:00 to 6:00 it is hard down (every
//! call fails with a 503 after 50 ms); from 7:00 to 8:00 it flaps (every other call fails
//! the same way); it is healthy otherwise. A fallback provider is always healthy (180–220 ms).
//! Every strategy serves a request from the fallback when it does not get an answer from the
//! primary.
//!
//! Strategies: fusebox (a route primary → fallback with the breaker below; with the
//! previous default cap; with a recovery probe of the primary every 2 s, one success or two
//! in a row ending an open period, with slow start, with a long open duration; and with
//! same-provider retries: 3 attempts, 100 ms back-off doubling, the default 20 % retry
//! budget), a naive retry
//! loop (2/4/8 s backoff, then the fallback), the consecutive-count breaker the first article
//! describes (5 failures, 60 s recovery, one trial), and failsafe 1.3 (its default policy, and
//! its policies set to fusebox's thresholds). failsafe reads time through a `#[doc(hidden)]`
//! test clock (`failsafe::clock::freeze`), which this bench advances in 1 ms steps in lockstep
//! with tokio's paused clock. tower-resilience 0.13 is left out: its circuit breaker reads
//! `std::time::Instant::now()` directly (`circuit.rs`), so under paused time its open state
//! would never expire; real time would make the run take 10 minutes and be nondeterministic.
//!
//! Figures, per strategy:
//! - primary calls in the outage windows (and how many of them failed): load on a provider
//!   that is down; split into the hard-down window and the flapping window (a strategy that
//!   keeps the primary out from 6:00 past 7:00 never sees the flapping window);
//! - probe requests (fusebox's recovery probes: a models list, say, that follows the script
//!   like a call, answered in 20 ms when healthy), counted apart from calls;
//! - time from each window's end to the primary's first answer;
//! - requests served (from either provider) and the peak of requests in flight;
//! - time from each window's start to the breaker opening;
//! - time from each window's end to full traffic on the primary: after the last request of
//!   the healthy period that followed which did not go to the primary first;
//! - added latency (a request's end-to-end time minus the latency of the call that served it)
//!   at p50 / p99 over requests that started in the outage windows.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fusebox::{
    Breaker, Classify, EventKind, Probe, Provider, Retry, Route, Supervisor, Verdict, Window,
};
use tokio::task::LocalSet;
use tokio::time::Instant;

const RATE: u64 = 200;
const RUN: Duration = Duration::from_secs(600);
const INTERVAL: Duration = Duration::from_millis(1000 / RATE);
const REQUESTS: u64 = RATE * RUN.as_secs();
const FAIL_AFTER: Duration = Duration::from_millis(50);
/// Hard down.
const DOWN: (Duration, Duration) = (Duration::from_secs(120), Duration::from_secs(360));
/// Every other call fails.
const FLAP: (Duration, Duration) = (Duration::from_secs(420), Duration::from_secs(480));
/// What each window's recovery is measured against: the healthy period after it.
const HEALTHY_AFTER: [(Duration, Duration); 2] = [(DOWN.1, FLAP.0), (FLAP.1, RUN)];
const STEP: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Healthy,
    Down,
    Flapping,
}

fn phase(t: Duration, hard_down: bool) -> Phase {
    if hard_down && (DOWN.0..DOWN.1).contains(&t) {
        Phase::Down
    } else if (FLAP.0..FLAP.1).contains(&t) {
        Phase::Flapping
    } else {
        Phase::Healthy
    }
}

/// A provider's 503.
#[derive(Debug, Clone, Copy)]
struct Http503;

impl Classify for Http503 {
    fn verdict(&self) -> Verdict {
        Verdict::from_http_status(503)
    }
}

/// A deterministic latency in 180..=220 ms for one call.
fn latency(request: u64, salt: u64) -> Duration {
    let mut x = request
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    Duration::from_millis(180 + x % 41)
}

/// The two providers, following the script, and what reached them.
struct Script {
    start: Instant,
    /// Whether the script has its hard-down window (the flapping-only check has not).
    hard_down: bool,
    flapping_calls: Cell<u64>,
    calls_in_windows: Cell<u64>,
    failed: Cell<u64>,
    /// Calls and failed calls while hard down (the rest of the window counts are flapping).
    down_calls: Cell<(u64, u64)>,
    attempt: Cell<u64>,
}

impl Script {
    fn new(hard_down: bool) -> Self {
        Script {
            start: Instant::now(),
            hard_down,
            flapping_calls: Cell::new(0),
            calls_in_windows: Cell::new(0),
            failed: Cell::new(0),
            down_calls: Cell::new((0, 0)),
            attempt: Cell::new(0),
        }
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// One call to the primary: its latency, or a 503.
    async fn primary(&self, request: u64) -> Result<Duration, Http503> {
        let phase = phase(self.now(), self.hard_down);
        if phase != Phase::Healthy {
            self.calls_in_windows.set(self.calls_in_windows.get() + 1);
        }
        if phase == Phase::Down {
            let (calls, failed) = self.down_calls.get();
            self.down_calls.set((calls + 1, failed + 1));
        }
        let fails = match phase {
            Phase::Healthy => false,
            Phase::Down => true,
            Phase::Flapping => {
                let n = self.flapping_calls.get();
                self.flapping_calls.set(n + 1);
                n % 2 == 1
            }
        };
        if fails {
            tokio::time::sleep(FAIL_AFTER).await;
            self.failed.set(self.failed.get() + 1);
            return Err(Http503);
        }
        let attempt = self.attempt.get();
        self.attempt.set(attempt + 1);
        let took = latency(request, attempt);
        tokio::time::sleep(took).await;
        Ok(took)
    }

    /// One call to the fallback: always answers.
    async fn fallback(&self, request: u64) -> Duration {
        let took = latency(request, u64::MAX);
        tokio::time::sleep(took).await;
        took
    }
}

/// How one request was served.
#[derive(Debug, Clone, Copy, Default)]
struct Served {
    served: bool,
    /// Answered by the primary at the first attempt.
    primary_first: bool,
    /// The latency of the call that answered.
    own: Duration,
}

#[derive(Debug, Clone, Copy, Default)]
struct Record {
    start: Duration,
    total: Duration,
    served: Served,
}

/// A circuit opening, in simulated time since the start.
#[derive(Debug, Clone)]
struct Trip {
    at: Duration,
    why: String,
}

trait Strategy {
    async fn serve(&self, script: &Script, request: u64) -> Served;
    fn trips(&self) -> Vec<Trip>;
    /// Recovery probe requests sent to the primary (counted apart from calls).
    fn probes(&self) -> u64 {
        0
    }
}

// ---- fusebox -----------------------------------------------------------------------------

struct Fusebox {
    fuse: Supervisor,
    trips: Rc<RefCell<Vec<Trip>>>,
    probes: Arc<AtomicU64>,
}

/// A recovery probe of the primary (a models list, say): it follows the script like a call
/// (hard down: a 503 after 50 ms; flapping: every other probe fails; healthy: an answer in
/// 20 ms), counting itself in `probes`.
fn probe_op(
    start: Instant,
    probes: Arc<AtomicU64>,
) -> impl Fn() -> futures::future::BoxFuture<'static, Result<(), Http503>> + Send + Sync + 'static {
    let flapping = Arc::new(AtomicU64::new(0));
    move || {
        let (probes, flapping) = (probes.clone(), flapping.clone());
        Box::pin(async move {
            probes.fetch_add(1, Ordering::Relaxed);
            let fails = match phase(start.elapsed(), true) {
                Phase::Healthy => false,
                Phase::Down => true,
                Phase::Flapping => flapping.fetch_add(1, Ordering::Relaxed) % 2 == 1,
            };
            if fails {
                tokio::time::sleep(FAIL_AFTER).await;
                Err(Http503)
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(())
            }
        })
    }
}

impl Fusebox {
    async fn new(start: Instant, breaker: Breaker) -> Self {
        Self::with_primary(
            start,
            Provider::new("primary").breaker(breaker),
            Arc::default(),
        )
        .await
    }

    /// With a probe of the primary every `interval`, `successes` in a row to end an open.
    async fn probed(
        start: Instant,
        breaker: Breaker,
        interval: Duration,
        successes: u32,
        slow_start: Option<Duration>,
    ) -> Self {
        let probes = Arc::new(AtomicU64::new(0));
        let probe = Probe::new(interval, probe_op(start, probes.clone())).successes(successes);
        let mut primary = Provider::new("primary").breaker(breaker).probe_with(probe);
        if let Some(window) = slow_start {
            primary = primary.slow_start(window);
        }
        Self::with_primary(start, primary, probes).await
    }

    async fn with_primary(start: Instant, primary: Provider, probes: Arc<AtomicU64>) -> Self {
        let fuse = Supervisor::builder()
            .provider(primary)
            .provider(Provider::new("fallback"))
            .route(Route::new("chat").providers(["primary", "fallback"]))
            .build()
            .await
            .expect("config");
        let trips = Rc::new(RefCell::new(Vec::new()));
        let mut events = fuse.subscribe();
        let seen = trips.clone();
        tokio::task::spawn_local(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match events.recv().await {
                    Ok(event) => {
                        if let (
                            true,
                            EventKind::CircuitOpened {
                                cause, failures, ..
                            },
                        ) = (event.provider == "primary", &event.kind)
                        {
                            seen.borrow_mut().push(Trip {
                                at: event.at - start,
                                why: format!("{} ({failures} failures)", cause.as_str()),
                            });
                        }
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Fusebox {
            fuse,
            trips,
            probes,
        }
    }
}

impl Strategy for Fusebox {
    async fn serve(&self, script: &Script, request: u64) -> Served {
        let routed = self
            .fuse
            .route("chat", |provider| async move {
                if provider == "primary" {
                    script.primary(request).await
                } else {
                    Ok(script.fallback(request).await)
                }
            })
            .await;
        match routed {
            Ok(routed) => Served {
                served: true,
                primary_first: routed.provider == "primary" && routed.attempts.len() == 1,
                own: routed.value,
            },
            Err(_) => Served::default(),
        }
    }

    fn trips(&self) -> Vec<Trip> {
        self.trips.borrow().clone()
    }

    fn probes(&self) -> u64 {
        self.probes.load(Ordering::Relaxed)
    }
}

// ---- naive retry -------------------------------------------------------------------------

struct NaiveRetry;

impl Strategy for NaiveRetry {
    async fn serve(&self, script: &Script, request: u64) -> Served {
        for (attempt, backoff) in [0u64, 2, 4, 8].into_iter().enumerate() {
            tokio::time::sleep(Duration::from_secs(backoff)).await;
            if let Ok(own) = script.primary(request).await {
                return Served {
                    served: true,
                    primary_first: attempt == 0,
                    own,
                };
            }
        }
        Served {
            served: true,
            primary_first: false,
            own: script.fallback(request).await,
        }
    }

    fn trips(&self) -> Vec<Trip> {
        Vec::new()
    }
}

// ---- the first article's consecutive-count breaker ---------------------------------------

#[derive(Debug, Clone, Copy)]
enum Article {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial in flight.
    HalfOpen,
}

struct ArticleBreaker {
    state: Cell<Article>,
    trips: RefCell<Vec<Trip>>,
    start: Instant,
}

impl ArticleBreaker {
    const FAILURES: u32 = 5;
    const RECOVERY: Duration = Duration::from_secs(60);

    fn open(&self, why: &str) {
        let now = Instant::now();
        self.state.set(Article::Open {
            until: now + Self::RECOVERY,
        });
        self.trips.borrow_mut().push(Trip {
            at: now - self.start,
            why: why.to_owned(),
        });
    }
}

impl Strategy for ArticleBreaker {
    async fn serve(&self, script: &Script, request: u64) -> Served {
        let trial = match self.state.get() {
            Article::Closed { .. } => false,
            Article::Open { until } if Instant::now() >= until => {
                self.state.set(Article::HalfOpen);
                true
            }
            Article::Open { .. } | Article::HalfOpen => {
                let own = script.fallback(request).await;
                return Served {
                    served: true,
                    primary_first: false,
                    own,
                };
            }
        };
        match script.primary(request).await {
            Ok(own) => {
                // A success closes from the trial, resets the count while closed, and is
                // ignored when it arrives late, after the circuit opened.
                if trial || matches!(self.state.get(), Article::Closed { .. }) {
                    self.state.set(Article::Closed { failures: 0 });
                }
                Served {
                    served: true,
                    primary_first: true,
                    own,
                }
            }
            Err(Http503) => {
                match self.state.get() {
                    _ if trial => self.open("trial failed"),
                    Article::Closed { failures } if failures + 1 >= Self::FAILURES => {
                        self.open("5 consecutive failures")
                    }
                    Article::Closed { failures } => self.state.set(Article::Closed {
                        failures: failures + 1,
                    }),
                    _ => {}
                }
                Served {
                    served: true,
                    primary_first: false,
                    own: script.fallback(request).await,
                }
            }
        }
    }

    fn trips(&self) -> Vec<Trip> {
        self.trips.borrow().clone()
    }
}

// ---- failsafe ----------------------------------------------------------------------------

/// Records failsafe's transitions in simulated time.
#[derive(Debug, Clone)]
struct Recorder {
    start: Instant,
    trips: Arc<Mutex<Vec<Trip>>>,
}

impl failsafe::Instrument for Recorder {
    fn on_call_rejected(&self) {}

    fn on_open(&self) {
        self.trips.lock().expect("recorder").push(Trip {
            at: Instant::now() - self.start,
            why: "policy".to_owned(),
        });
    }

    fn on_half_open(&self) {}

    fn on_closed(&self) {}
}

struct Failsafe<P> {
    breaker: failsafe::StateMachine<P, Recorder>,
    recorder: Recorder,
}

impl<P: failsafe::FailurePolicy + Send + Sync> Strategy for Failsafe<P> {
    async fn serve(&self, script: &Script, request: u64) -> Served {
        use failsafe::futures::CircuitBreaker as _;
        match self.breaker.call(script.primary(request)).await {
            Ok(own) => Served {
                served: true,
                primary_first: true,
                own,
            },
            Err(_) => Served {
                served: true,
                primary_first: false,
                own: script.fallback(request).await,
            },
        }
    }

    fn trips(&self) -> Vec<Trip> {
        self.recorder.trips.lock().expect("recorder").clone()
    }
}

// ---- the run -----------------------------------------------------------------------------

struct Outcome {
    name: String,
    records: Vec<Record>,
    trips: Vec<Trip>,
    calls_in_windows: u64,
    failed: u64,
    down_calls: (u64, u64),
    peak_in_flight: u64,
    probes: u64,
    wall: Duration,
}

/// Replays the script against one strategy. `tick` is called after every `STEP` of
/// simulated time, for strategies with a clock of their own; without it the runtime's
/// paused clock jumps from timer to timer.
fn simulate<S, M>(
    name: &str,
    hard_down: bool,
    make: M,
    tick: Option<&mut dyn FnMut(Duration)>,
) -> Outcome
where
    S: Strategy + 'static,
    M: AsyncFnOnce(Instant) -> S,
{
    let wall = std::time::Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let local = LocalSet::new();
    let script = Rc::new(Script::new(hard_down));
    let strategy = Rc::new(local.block_on(&rt, make(script.start)));
    let records = Rc::new(RefCell::new(vec![Record::default(); REQUESTS as usize]));
    let in_flight = Rc::new(Cell::new(0u64));
    let peak = Rc::new(Cell::new(0u64));
    let run = {
        let (script, strategy, records) = (script.clone(), strategy.clone(), records.clone());
        let (in_flight, peak) = (in_flight.clone(), peak.clone());
        async move {
            let mut tasks = Vec::with_capacity(REQUESTS as usize);
            for request in 0..REQUESTS {
                tokio::time::sleep_until(script.start + INTERVAL * request as u32).await;
                let (script, strategy, records) =
                    (script.clone(), strategy.clone(), records.clone());
                let (in_flight, peak) = (in_flight.clone(), peak.clone());
                tasks.push(tokio::task::spawn_local(async move {
                    in_flight.set(in_flight.get() + 1);
                    peak.set(peak.get().max(in_flight.get()));
                    let t0 = Instant::now();
                    let served = strategy.serve(&script, request).await;
                    records.borrow_mut()[request as usize] = Record {
                        start: t0 - script.start,
                        total: t0.elapsed(),
                        served,
                    };
                    in_flight.set(in_flight.get() - 1);
                }));
            }
            for task in tasks {
                task.await.expect("request task");
            }
        }
    };
    match tick {
        None => local.block_on(&rt, run),
        Some(tick) => {
            let mut run: Pin<Box<dyn Future<Output = ()>>> = Box::pin(run);
            while local
                .block_on(&rt, async {
                    tokio::time::timeout(STEP, run.as_mut()).await
                })
                .is_err()
            {
                tick(STEP);
            }
        }
    }
    // Let the last events reach their listener.
    local.block_on(&rt, async {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
    });
    let records = records.borrow().clone();
    Outcome {
        name: name.to_owned(),
        records,
        trips: strategy.trips(),
        calls_in_windows: script.calls_in_windows.get(),
        failed: script.failed.get(),
        down_calls: script.down_calls.get(),
        peak_in_flight: peak.get(),
        probes: strategy.probes(),
        wall: wall.elapsed(),
    }
}

fn failsafe_run<P, F>(name: &str, policy: F) -> Outcome
where
    P: failsafe::FailurePolicy + Send + Sync + 'static,
    F: FnOnce() -> P,
{
    failsafe::clock::freeze(|clock| {
        let mut tick = |step| clock.advance(step);
        simulate(
            name,
            true,
            async |start| {
                let recorder = Recorder {
                    start,
                    trips: Arc::default(),
                };
                Failsafe {
                    breaker: failsafe::Config::new()
                        .failure_policy(policy())
                        .instrument(recorder.clone())
                        .build(),
                    recorder,
                }
            },
            Some(&mut tick),
        )
    })
}

// ---- the figures -------------------------------------------------------------------------

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn in_window(t: Duration, w: (Duration, Duration)) -> bool {
    (w.0..w.1).contains(&t)
}

/// From a window's start to the first opening within it (or "open since" an earlier one).
fn time_to_trip(o: &Outcome, window: (Duration, Duration)) -> String {
    if let Some(t) = o.trips.iter().find(|t| in_window(t.at, window)) {
        return format!("{} ({})", secs(t.at - window.0), t.why);
    }
    // Still open from before? Judge by what requests saw at the window's start.
    let skipped = o
        .records
        .iter()
        .filter(|r| in_window(r.start, (window.0, window.0 + Duration::from_secs(1))))
        .all(|r| !r.served.primary_first);
    if skipped && !o.trips.is_empty() {
        "already open".to_owned()
    } else {
        "never".to_owned()
    }
}

/// From a window's end to full traffic on the primary in the healthy period after it.
fn time_to_full(o: &Outcome, healthy: (Duration, Duration)) -> String {
    let last_off = o
        .records
        .iter()
        .filter(|r| in_window(r.start, healthy) && !r.served.primary_first)
        .map(|r| r.start)
        .max();
    match last_off {
        None => secs(Duration::ZERO),
        Some(t) if t + INTERVAL >= healthy.1 => {
            format!("> {} (not within the period)", secs(healthy.1 - healthy.0))
        }
        Some(t) => secs(t + INTERVAL - healthy.0),
    }
}

/// From a window's end to the first request the primary answered at the first attempt in
/// the healthy period after it.
fn time_to_first(o: &Outcome, healthy: (Duration, Duration)) -> String {
    match o
        .records
        .iter()
        .filter(|r| in_window(r.start, healthy) && r.served.primary_first)
        .map(|r| r.start)
        .min()
    {
        Some(t) => secs(t - healthy.0),
        None => format!("> {} (not within the period)", secs(healthy.1 - healthy.0)),
    }
}

fn report(outcomes: &[Outcome]) {
    println!("\n## Outage replay: 200 req/s for 10 min; primary hard down 2:00–6:00, flapping 7:00–8:00\n");
    println!(
        "| strategy | primary calls in outage windows (failed) | of which hard down / flapping | probe requests | served | peak in flight | trip, hard down | trip, flapping | primary answers again after 6:00 / 8:00 | to full traffic after 6:00 | after 8:00 | added latency in windows p50 / p99 | sim wall time |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|---|---|---|---|---|---:|");
    for o in outcomes {
        let mut added: Vec<Duration> = o
            .records
            .iter()
            .filter(|r| in_window(r.start, DOWN) || in_window(r.start, FLAP))
            .map(|r| r.total.saturating_sub(r.served.own))
            .collect();
        added.sort();
        let served = o.records.iter().filter(|r| r.served.served).count();
        println!(
            "| {} | {} ({}) | {} / {} ({}) | {} | {}/{} | {} | {} | {} | {} / {} | {} | {} | {} / {} | {:.1} s |",
            o.name,
            o.calls_in_windows,
            o.failed,
            o.down_calls.0,
            o.calls_in_windows - o.down_calls.0,
            o.failed - o.down_calls.1,
            o.probes,
            served,
            REQUESTS,
            o.peak_in_flight,
            time_to_trip(o, DOWN),
            time_to_trip(o, FLAP),
            time_to_first(o, HEALTHY_AFTER[0]),
            time_to_first(o, HEALTHY_AFTER[1]),
            time_to_full(o, HEALTHY_AFTER[0]),
            time_to_full(o, HEALTHY_AFTER[1]),
            secs(percentile(&added, 50.0)),
            secs(percentile(&added, 99.0)),
            o.wall.as_secs_f64(),
        );
    }
    println!("\nCircuit openings (simulated time since the start):\n");
    for o in outcomes.iter().filter(|o| !o.trips.is_empty()) {
        let list: Vec<String> = o
            .trips
            .iter()
            .map(|t| format!("{} {}", secs(t.at), t.why))
            .collect();
        println!("- {}: {}", o.name, list.join("; "));
    }
}

fn fusebox_breaker() -> Breaker {
    Breaker::consecutive(5)
        .failure_rate(0.5, Window::Time(Duration::from_secs(30)))
        .minimum_calls(20)
        .open_for(Duration::from_secs(30))
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported here.
    let mut outcomes = vec![
        simulate(
            "fusebox route (consecutive 5, rate 0.5/30 s, min 20, open 30 s, default cap 2× = 60 s)",
            true,
            async |start| Fusebox::new(start, fusebox_breaker()).await,
            None,
        ),
        simulate(
            "fusebox, same with max_open_for(300 s) (10×, the default before)",
            true,
            async |start| {
                let breaker = fusebox_breaker().max_open_for(Duration::from_secs(300));
                Fusebox::new(start, breaker).await
            },
            None,
        ),
        simulate(
            "fusebox, same with a probe every 2 s",
            true,
            async |start| {
                Fusebox::probed(start, fusebox_breaker(), Duration::from_secs(2), 1, None).await
            },
            None,
        ),
        simulate(
            "fusebox, same with a probe every 2 s, 2 successes in a row",
            true,
            async |start| {
                Fusebox::probed(start, fusebox_breaker(), Duration::from_secs(2), 2, None).await
            },
            None,
        ),
        simulate(
            "fusebox, same with a probe every 2 s, 2 in a row, slow start 2 s",
            true,
            async |start| {
                let slow_start = Some(Duration::from_secs(2));
                Fusebox::probed(start, fusebox_breaker(), Duration::from_secs(2), 2, slow_start)
                    .await
            },
            None,
        ),
        simulate(
            "fusebox, same with a probe every 2 s, 2 in a row, open_for(5 min)",
            true,
            async |start| {
                let breaker = fusebox_breaker().open_for(Duration::from_secs(300));
                Fusebox::probed(start, breaker, Duration::from_secs(2), 2, None).await
            },
            None,
        ),
        simulate(
            "naive retry (2/4/8 s, then fallback)",
            true,
            async |_| NaiveRetry,
            None,
        ),
        simulate(
            "fusebox with retries (3 attempts, 20 % budget)",
            true,
            async |start| {
                let primary = Provider::new("primary")
                    .breaker(fusebox_breaker())
                    .retry(Retry::new().attempts(3));
                Fusebox::with_primary(start, primary, Arc::default()).await
            },
            None,
        ),
        simulate(
            "consecutive-count breaker (5 failures, 60 s, one trial)",
            true,
            async |start| ArticleBreaker {
                state: Cell::new(Article::Closed { failures: 0 }),
                trips: RefCell::default(),
                start,
            },
            None,
        ),
    ];
    outcomes.push(failsafe_run(
        "failsafe 1.3, default policy",
        failsafe::failure_policy::SuccessRateOverTimeWindow::default,
    ));
    outcomes.push(failsafe_run(
        "failsafe 1.3, fusebox's thresholds (rate 0.5/30 s min 20, or 5 consecutive; 30 s doubling)",
        || {
            use failsafe::failure_policy::{consecutive_failures, success_rate_over_time_window};
            use failsafe::FailurePolicy as _;
            let backoff =
                failsafe::backoff::exponential(Duration::from_secs(30), Duration::from_secs(300));
            success_rate_over_time_window(0.5, 20, Duration::from_secs(30), backoff.clone())
                .or_else(consecutive_failures(5, backoff))
        },
    ));
    report(&outcomes);

    // The partial outage must trip fusebox's breaker on its own.
    let flapping = simulate_flapping_only();
    let trip = flapping.trips.iter().find(|t| in_window(t.at, FLAP));
    println!(
        "\nThe flapping window alone (primary healthy but for 7:00–8:00), fusebox: {}",
        trip.map_or_else(
            || "did NOT trip".to_owned(),
            |t| format!("tripped {} after it began ({})", secs(t.at - FLAP.0), t.why)
        )
    );
    assert!(
        trip.is_some(),
        "fusebox did not trip on a partial outage (every other call failing)"
    );
}

/// fusebox on a script whose only incident is the flapping window.
fn simulate_flapping_only() -> Outcome {
    simulate(
        "fusebox, flapping only",
        false,
        async |start| Fusebox::new(start, fusebox_breaker()).await,
        None,
    )
}
