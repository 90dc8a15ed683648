//! The fleet drill: three replicas of an agent orchestrator, each a `Supervisor` in its own
//! thread and tokio runtime, route calls over three mock LLM providers (`MockLlm`, on
//! 127.0.0.1) while the primary goes down for four seconds and comes back. Run once with
//! every replica deciding alone and once as a fleet sharing state over one `redis-server`
//! (started here on a free loopback port); then measure how fast a trip on one replica
//! reaches the others, and kill Redis mid-run.
//!
//! ```text
//! cargo run --release --example fleet_drill --features redis,mock-server
//! ```
//!
//! Needs `redis-server` on the PATH (`apt-get install -y redis-server`). About 15 seconds.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fusebox::fleet::Fleet;
use fusebox::http::HttpError;
use fusebox::testing::{FaultKind, FaultScript, MockLlm};
use fusebox::{
    Breaker, Cause, CircuitState, Event, EventKind, Origin, Provider, ProviderId, Route, Supervisor,
};
use tokio::sync::broadcast::error::RecvError;

const REPLICAS: usize = 3;
const PROVIDERS: [&str; 3] = ["primary", "secondary", "tertiary"];
/// Between one replica's routed calls.
const THINK: Duration = Duration::from_millis(10);
const HEALTHY: Duration = Duration::from_millis(300);
const OUTAGE: Duration = Duration::from_secs(4);
const RECOVERY: Duration = Duration::from_millis(1200);
/// Trip-and-reset rounds for the propagation figures.
const ROUNDS: usize = 100;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A `redis-server` on 127.0.0.1, killed by pid on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    fn start() -> Result<Redis, Error> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut redis = Redis { child: None, port };
        redis.spawn()?;
        Ok(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn spawn(&mut self) -> Result<(), Error> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot start redis-server ({e}): apt-get install -y redis-server")
            })?;
        self.child = Some(child);
        let client = redis::Client::open(self.url())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) {
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("redis-server did not answer within 10 s".into())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What one replica's calls did while it was told to send traffic.
#[derive(Default)]
struct Calls {
    failed: u64,
    latencies: Vec<Duration>,
}

/// One replica: its supervisor (running in its own thread's runtime) and its traffic.
struct Replica {
    fuse: Supervisor,
    calls: Arc<Mutex<Calls>>,
    events: Arc<Mutex<Vec<Event>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The replicas of one run, and the switches their threads read.
struct Fleet3 {
    replicas: Vec<Replica>,
    traffic: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn builder() -> fusebox::SupervisorBuilder {
    let breaker = Breaker::consecutive(3)
        .open_for(Duration::from_millis(250))
        .max_open_for(Duration::from_secs(1))
        .jitter(0.0)
        .half_open_max_calls(1)
        .success_threshold(1);
    let mut builder = Supervisor::builder().metrics_interval(None);
    for name in PROVIDERS {
        builder = builder.provider(
            Provider::new(name)
                .breaker(breaker.clone())
                .call_timeout(Duration::from_secs(2)),
        );
    }
    builder
        // A provider only the propagation rounds trip.
        .provider(
            Provider::new("probe")
                .breaker(Breaker::consecutive(1).open_for(Duration::from_secs(60))),
        )
        .route(Route::new("chat").providers(PROVIDERS))
}

/// Starts three replicas, each in a thread of its own with its own runtime.
fn start(fleet: Option<Fleet>, urls: &[String]) -> Result<Fleet3, Error> {
    let traffic = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut replicas = Vec::new();
    for i in 0..REPLICAS {
        let (tx, rx) = std::sync::mpsc::channel();
        let calls = Arc::new(Mutex::new(Calls::default()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let (fleet, urls) = (fleet.clone(), urls.to_vec());
        let (traffic, stop) = (traffic.clone(), stop.clone());
        let (thread_calls, thread_events) = (calls.clone(), events.clone());
        let thread = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => return drop(tx.send(Err(e.to_string()))),
            };
            runtime.block_on(async move {
                let mut b = builder();
                if let Some(fleet) = fleet {
                    b = b.fleet(fleet.replica(format!("replica-{i}")));
                }
                let fuse = match b.build().await {
                    Ok(fuse) => fuse,
                    Err(e) => return drop(tx.send(Err(e.to_string()))),
                };
                let mut rx_events = fuse.subscribe();
                tokio::spawn(async move {
                    loop {
                        match rx_events.recv().await {
                            Ok(event) => lock(&thread_events).push(event),
                            Err(RecvError::Lagged(_)) => continue,
                            Err(RecvError::Closed) => return,
                        }
                    }
                });
                let _ = tx.send(Ok(fuse.clone()));
                let client = reqwest::Client::new();
                let mut n = 0u64;
                // Replicas are not in lockstep: each starts a little later and calls at its
                // own pace (10, 11, 12 ms apart).
                let think = THINK + Duration::from_millis(i as u64);
                let mut idle = true;
                while !stop.load(Ordering::Acquire) {
                    if !traffic.load(Ordering::Acquire) {
                        idle = true;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        continue;
                    }
                    if idle {
                        idle = false;
                        tokio::time::sleep(Duration::from_millis(3 * i as u64)).await;
                    }
                    n += 1;
                    let started = Instant::now();
                    let body = serde_json::json!({"model": "drill", "messages": [{"role": "user", "content": format!("task {i}-{n}")}]});
                    let routed = fuse
                        .route("chat", |p: ProviderId| {
                            let at = PROVIDERS.iter().position(|name| p == *name).unwrap_or(0);
                            let request = client.post(&urls[at]).json(&body);
                            async move {
                                let response = fusebox::http::send(request).await?;
                                Ok::<_, HttpError>(response.text().await?)
                            }
                        })
                        .await;
                    {
                        let mut calls = lock(&thread_calls);
                        calls.latencies.push(started.elapsed());
                        calls.failed += u64::from(routed.is_err());
                    }
                    tokio::time::sleep(think).await;
                }
                fuse.shutdown(Duration::from_secs(1)).await;
            });
        });
        let fuse = rx.recv()??;
        replicas.push(Replica {
            fuse,
            calls,
            events,
            thread: Some(thread),
        });
    }
    Ok(Fleet3 {
        replicas,
        traffic,
        stop,
    })
}

impl Fleet3 {
    fn finish(mut self) {
        self.stop.store(true, Ordering::Release);
        for replica in &mut self.replicas {
            if let Some(thread) = replica.thread.take() {
                let _ = thread.join();
            }
        }
    }

    fn clear(&self) {
        for r in &self.replicas {
            *lock(&r.calls) = Calls::default();
            lock(&r.events).clear();
        }
    }

    /// The circuit states of `provider` on every replica.
    fn states(&self, provider: &str) -> Vec<CircuitState> {
        self.replicas
            .iter()
            .map(|r| {
                r.fuse
                    .provider(provider)
                    .map_or(CircuitState::Closed, |p| p.state())
            })
            .collect()
    }
}

/// What one phase of traffic did, over the whole fleet.
struct Phase {
    failing_sent: u64,
    /// Local half-open trials that failed (the provider still down), and that closed.
    failed_trials: u64,
    closing_trials: u64,
    stop_spread: Option<Duration>,
    routed_failed: u64,
    calls: usize,
    p99: Duration,
    slowest: Duration,
}

fn phase(fleet: &Fleet3, primary: &MockLlm, errors_before: u64, outage_at: SystemTime) -> Phase {
    let (mut failed_trials, mut closing_trials) = (0, 0);
    let mut first_open = Vec::new();
    let mut latencies = Vec::new();
    let mut routed_failed = 0;
    for r in &fleet.replicas {
        let events = lock(&r.events);
        let primary_events = events.iter().filter(|e| e.provider == "primary");
        let mut opened = None;
        for e in primary_events {
            let local = e.origin == Origin::Local;
            match (&e.kind, e.cause) {
                (
                    EventKind::CircuitOpened {
                        cause: Cause::TrialFailed | Cause::TrialTimedOut,
                        ..
                    },
                    _,
                ) if local => failed_trials += 1,
                (EventKind::CircuitClosed, Some(Cause::TrialsSucceeded)) if local => {
                    closing_trials += 1
                }
                _ => {}
            }
            if matches!(e.kind, EventKind::CircuitOpened { .. }) && opened.is_none() {
                opened = Some(e.timestamp);
            }
        }
        first_open.extend(opened);
        let calls = lock(&r.calls);
        latencies.extend(calls.latencies.iter().copied());
        routed_failed += calls.failed;
    }
    let _ = outage_at;
    let stop_spread = match (first_open.iter().min(), first_open.iter().max()) {
        (Some(first), Some(last)) if first_open.len() == REPLICAS => {
            last.duration_since(*first).ok()
        }
        _ => None,
    };
    latencies.sort();
    let pick = |p: f64| {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Phase {
        failing_sent: primary.stats().errors_with(503) - errors_before,
        failed_trials,
        closing_trials,
        stop_spread,
        routed_failed,
        calls: latencies.len(),
        p99: pick(0.99),
        slowest: latencies.last().copied().unwrap_or_default(),
    }
}

/// One outage of the primary with traffic from every replica.
async fn outage(fleet: &Fleet3, primary: &MockLlm) -> Phase {
    fleet.clear();
    fleet.traffic.store(true, Ordering::Release);
    tokio::time::sleep(HEALTHY).await;
    let before = primary.stats().errors_with(503);
    let at = SystemTime::now();
    primary.set_script(FaultScript::always(FaultKind::Status(503)));
    tokio::time::sleep(OUTAGE).await;
    primary.set_script(FaultScript::new());
    tokio::time::sleep(RECOVERY).await;
    fleet.traffic.store(false, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(50)).await;
    phase(fleet, primary, before, at)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples
        .get(((samples.len().saturating_sub(1)) as f64 * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

/// Waits for `provider`'s next event of `name` on a receiver; its wall-clock time.
async fn next(
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    provider: &str,
    name: &str,
) -> Option<SystemTime> {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(e) if e.provider == provider && e.name() == name => return Some(e.timestamp),
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), wait)
        .await
        .ok()
        .flatten()
}

/// Trip-and-reset rounds on `probe`: how long one replica's open (and reset) takes to reach
/// the others, by the wall clock of this one process.
async fn propagation(fleet: &Fleet3) -> (Vec<Duration>, Vec<Duration>, usize) {
    let (mut opens, mut resets, mut missed) = (Vec::new(), Vec::new(), 0);
    for round in 0..ROUNDS {
        let k = round % REPLICAS;
        let others: Vec<usize> = (0..REPLICAS).filter(|&j| j != k).collect();
        let mut rxs: Vec<_> = others
            .iter()
            .map(|&j| fleet.replicas[j].fuse.subscribe())
            .collect();
        let started = SystemTime::now();
        let _ = fleet.replicas[k]
            .fuse
            .call("probe", || async {
                Err::<(), _>(fusebox::Verdict::Failure)
            })
            .await;
        for rx in &mut rxs {
            match next(rx, "probe", "llm.circuit_opened").await {
                Some(at) => opens.push(at.duration_since(started).unwrap_or_default()),
                None => missed += 1,
            }
        }
        let started = SystemTime::now();
        let _ = fleet.replicas[k].fuse.reset("probe").await;
        for rx in &mut rxs {
            match next(rx, "probe", "llm.circuit_closed").await {
                Some(at) => resets.push(at.duration_since(started).unwrap_or_default()),
                None => missed += 1,
            }
        }
    }
    (opens, resets, missed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let mut redis = Redis::start()?;
    let started = Instant::now();
    let mut mocks = Vec::new();
    for _ in PROVIDERS {
        mocks.push(MockLlm::start(FaultScript::new()).await?);
    }
    let urls: Vec<String> = mocks.iter().map(MockLlm::openai_url).collect();
    let primary = &mocks[0];

    println!(
        "fleet drill: {REPLICAS} replicas (a Supervisor each, in its own thread and runtime),"
    );
    println!(
        "route chat = {PROVIDERS:?} on MockLlm servers; each replica calls every {} ms;",
        THINK.as_millis()
    );
    println!(
        "the primary answers 503 for {} s, then recovers. Breaker: 3 consecutive failures, open 250 ms doubling to 1 s, 1 trial.",
        OUTAGE.as_secs()
    );

    let alone = start(None, &urls)?;
    let unshared = outage(&alone, primary).await;
    alone.finish();

    let namespace = format!("drill-{}", std::process::id());
    let fleet = Fleet::redis(redis.url())
        .namespace(namespace.as_str())
        .resync_every(Duration::from_millis(500));
    let linked = start(Some(fleet), &urls)?;
    let shared = outage(&linked, primary).await;

    println!(
        "(shared: one fleet-wide trial per half-open period; after the fleet sees the close, each"
    );
    println!(" other replica confirms with one local trial of its own.)\n");
    let spread = |p: &Phase| p.stop_spread.map_or("-".to_owned(), ms);
    println!("{:<52} {:>14} {:>16}", "", "unshared", "shared (Redis)");
    let row = |what: &str, a: String, b: String| println!("{what:<52} {a:>14} {b:>16}");
    row(
        "failing calls the fleet sent the primary",
        unshared.failing_sent.to_string(),
        shared.failing_sent.to_string(),
    );
    row(
        "  of which half-open trials (provider still down)",
        unshared.failed_trials.to_string(),
        shared.failed_trials.to_string(),
    );
    row(
        "trials that closed a circuit after the recovery",
        unshared.closing_trials.to_string(),
        shared.closing_trials.to_string(),
    );
    row(
        "last replica stopped calling, after the first",
        spread(&unshared),
        spread(&shared),
    );
    row(
        "routed calls failed (of all routed calls)",
        format!("{} / {}", unshared.routed_failed, unshared.calls),
        format!("{} / {}", shared.routed_failed, shared.calls),
    );
    row("routed call latency p99", ms(unshared.p99), ms(shared.p99));
    row(
        "slowest routed call",
        ms(unshared.slowest),
        ms(shared.slowest),
    );

    // Propagation: a trip (and a reset) on one replica, seen by the other two.
    let (mut opens, mut resets, missed) = propagation(&linked).await;
    println!(
        "\npropagation over Redis ({ROUNDS} rounds, {} samples each, {missed} missed):",
        opens.len()
    );
    println!(
        "  open:  p50 {}  p99 {}  max {}",
        ms(percentile(&mut opens, 0.5)),
        ms(percentile(&mut opens, 0.99)),
        ms(opens.last().copied().unwrap_or_default())
    );
    println!(
        "  reset: p50 {}  p99 {}  max {}",
        ms(percentile(&mut resets, 0.5)),
        ms(percentile(&mut resets, 0.99)),
        ms(resets.last().copied().unwrap_or_default())
    );

    // Redis killed mid-run: the primary goes down again while no replica can reach Redis.
    linked.clear();
    linked.traffic.store(true, Ordering::Release);
    tokio::time::sleep(HEALTHY).await;
    let killed_at = Instant::now();
    redis.kill();
    while linked
        .replicas
        .iter()
        .any(|r| r.fuse.fleet_status().is_some_and(|s| s.connected))
        && killed_at.elapsed() < Duration::from_secs(3)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let noticed = killed_at.elapsed();
    let before = primary.stats().errors_with(503);
    primary.set_script(FaultScript::always(FaultKind::Status(503)));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let during = phase(&linked, primary, before, SystemTime::now());
    let states_down = linked.states("primary");
    redis.spawn()?;
    let restarted = Instant::now();
    let converged = loop {
        let links_up = linked
            .replicas
            .iter()
            .all(|r| r.fuse.fleet_status().is_some_and(|s| s.connected));
        let states = linked.states("primary");
        if links_up && states.iter().all(|s| *s == states[0]) {
            break Some(restarted.elapsed());
        }
        if restarted.elapsed() > Duration::from_secs(5) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    primary.set_script(FaultScript::new());
    linked.traffic.store(false, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(50)).await;
    println!("\nRedis killed mid-run, then the primary went down (shared mode):");
    println!("  every link saw Redis gone after {}", ms(noticed));
    println!(
        "  failing calls the fleet sent the primary: {} (each replica decided alone); states {:?}",
        during.failing_sent, states_down
    );
    println!(
        "  routed calls failed: {} / {}; routed call latency p99 {}, slowest {}",
        during.routed_failed,
        during.calls,
        ms(during.p99),
        ms(during.slowest)
    );
    match converged {
        Some(d) => println!(
            "  Redis restarted (empty): every replica reconnected and agreed on the primary ({:?}) after {}",
            linked.states("primary")[0],
            ms(d)
        ),
        None => println!("  Redis restarted: the replicas did NOT converge within 5 s"),
    }
    let status: Vec<_> = linked
        .replicas
        .iter()
        .filter_map(|r| r.fuse.fleet_status())
        .map(|s| (s.changes_sent, s.changes_applied, s.reconnects))
        .collect();
    println!("  (changes sent, applied, reconnects) per replica: {status:?}");
    linked.finish();
    for mock in mocks {
        mock.shutdown().await;
    }
    println!("\ndrill took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
