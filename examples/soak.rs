//! A soak test: minutes of mixed traffic through fusebox against three fault-injecting mock
//! LLM providers on 127.0.0.1, watching for slow leaks.
//!
//! ```sh
//! cargo run --release --example soak                    # two minutes
//! cargo run --release --example soak -- --seconds 600   # ten
//! ```
//!
//! Three [`MockLlm`]s (one Anthropic-shaped, two OpenAI-shaped) cycle through a 20-second
//! fault schedule for as long as the soak runs: windows of 5xx, 529, 429 with `Retry-After`,
//! slow answers, hung requests, connection resets, a flapping provider and a 401 that
//! isolates a provider until the "operator" task resets it. Agent tasks send requests through
//! two fusebox routes and straight to single providers, with `reqwest` and
//! [`fusebox::http::check`]. A subscriber reads every event; another never reads (its backlog
//! is bounded by the bus capacity).
//!
//! Every few seconds a line shows the resident set size (`/proc/self/statm`), the tokio
//! task count, the requests of the last window with their p50/p99 latency, each circuit's
//! state and the calls in flight. At the end the soak checks that RSS, the task count and the
//! p99 latency stayed flat (the last third of the run against the middle third, within a
//! tolerance), that every permit came back and every provider's counts add up once the
//! traffic stops, and that the events were delivered in order or their loss reported. It
//! exits with status 1 if any check fails.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fusebox::http::{check, HttpError};
use fusebox::testing::{FaultKind, FaultScript, MockLlm};
use fusebox::{
    Adaptive, AllOpen, Breaker, Bulkhead, CircuitState, Policy, Provider, ProviderId, Route,
    Supervisor, Tier, Verdict, Window,
};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;

/// The fault schedule repeats with this period.
const CYCLE: u64 = 20;
/// Agent tasks sending requests.
const AGENTS: usize = 48;
/// Event bus capacity.
const EVENT_CAPACITY: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Api {
    OpenAi,
    Anthropic,
}

struct Mock {
    name: &'static str,
    api: Api,
    /// `(from, until, fault)` in seconds within each [`CYCLE`].
    schedule: &'static [(u64, u64, FaultKind)],
    server: MockLlm,
}

const ALPHA: &[(u64, u64, FaultKind)] = &[
    (2, 6, FaultKind::Status(503)),
    (10, 12, FaultKind::Hang),
    (15, 16, FaultKind::Reset),
];
const BETA: &[(u64, u64, FaultKind)] = &[
    (
        4,
        8,
        FaultKind::RateLimited {
            retry_after: Duration::from_secs(1),
        },
    ),
    (12, 14, FaultKind::Overloaded),
    (17, 18, FaultKind::Reset),
];
const GAMMA: &[(u64, u64, FaultKind)] = &[
    (0, 4, FaultKind::Slow(Duration::from_millis(400))),
    (8, 12, FaultKind::Flap),
    (14, 16, FaultKind::Status(500)),
    (18, 19, FaultKind::Unauthorized),
];

/// What the agents' requests go through.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// fusebox over HTTP to the mocks (the soak proper).
    Fusebox,
    /// HTTP to the mocks without fusebox (naive failover): a baseline for leak hunting.
    Direct,
    /// fusebox with operations that answer as the fault schedule says, without any HTTP.
    Synthetic,
}

struct Args {
    mode: Mode,
    seconds: u64,
    sample: u64,
    tolerance: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        mode: Mode::Fusebox,
        seconds: 120,
        sample: 5,
        tolerance: 0.25,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<String, String> {
            it.next().ok_or(format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--seconds" => {
                let v = value("--seconds")?;
                args.seconds = v.parse().ok().filter(|&s| s >= 3 * CYCLE).ok_or(format!(
                    "--seconds {v:?}: at least {} (three fault cycles)",
                    3 * CYCLE
                ))?;
            }
            "--sample" => {
                let v = value("--sample")?;
                args.sample = v
                    .parse()
                    .ok()
                    .filter(|&s| s >= 1)
                    .ok_or(format!("--sample {v:?}: at least 1 (seconds)"))?;
            }
            "--mode" => {
                args.mode = match value("--mode")?.as_str() {
                    "fusebox" => Mode::Fusebox,
                    "direct" => Mode::Direct,
                    "synthetic" => Mode::Synthetic,
                    other => {
                        return Err(format!(
                            "--mode {other:?}: \"fusebox\", \"direct\" or \"synthetic\""
                        ))
                    }
                };
            }
            "--tolerance" => {
                let v = value("--tolerance")?;
                args.tolerance = v
                    .parse()
                    .ok()
                    .filter(|t: &f64| *t >= 0.0 && t.is_finite())
                    .ok_or(format!("--tolerance {v:?}: a non-negative ratio"))?;
            }
            "-h" | "--help" => {
                println!(
                    "usage: soak [--seconds N (120)] [--sample N (5)] [--tolerance R (0.25)] \
                     [--mode fusebox|direct|synthetic]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

/// A small xorshift generator: each agent has its own.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The resident set size, in bytes (0 where `/proc` cannot be read).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn percentile(sorted: &[u32], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    Duration::from_micros(u64::from(sorted[rank.min(sorted.len() - 1)]))
}

/// A latency histogram with buckets 5 % apart from 100 µs to about 100 s: what a sample keeps
/// of its latencies (a soak that kept every latency would grow by 4 bytes a request).
#[derive(Clone)]
struct Histogram(Vec<u32>);

impl Histogram {
    const BUCKETS: usize = 290;
    const RATIO: f64 = 1.05;

    fn new(latencies_us: &[u32]) -> Histogram {
        let mut counts = vec![0u32; Self::BUCKETS];
        for &us in latencies_us {
            let i = if us <= 100 {
                0
            } else {
                ((f64::from(us) / 100.0).ln() / Self::RATIO.ln()).ceil() as usize
            };
            counts[i.min(Self::BUCKETS - 1)] += 1;
        }
        Histogram(counts)
    }

    fn add(&mut self, other: &Histogram) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a += b;
        }
    }

    /// The upper bound of the bucket holding the `p`th percentile.
    fn percentile(&self, p: f64) -> Duration {
        let total: u64 = self.0.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.0.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Duration::from_secs_f64(100e-6 * Self::RATIO.powi(i as i32));
            }
        }
        Duration::from_secs_f64(100e-6 * Self::RATIO.powi(Self::BUCKETS as i32 - 1))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What the agents share with the sampler.
#[derive(Default)]
struct Tally {
    /// Latencies (µs) of requests finished since the last sample.
    latencies: Mutex<Vec<u32>>,
    ok: AtomicU64,
    failed: AtomicU64,
}

struct Sample {
    at: f64,
    rss: u64,
    tasks: usize,
    latencies: Histogram,
    ok: u64,
    failed: u64,
    states: String,
    in_flight: u64,
}

async fn ask(client: &reqwest::Client, mock: &Mock, n: u64) -> Result<String, HttpError> {
    let (url, body) = match mock.api {
        Api::OpenAi => (
            mock.server.openai_url(),
            serde_json::json!({"model": "soak", "messages": [{"role": "user", "content": format!("task {n}")}]}),
        ),
        Api::Anthropic => (
            mock.server.anthropic_url(),
            serde_json::json!({"model": "soak", "max_tokens": 64, "messages": [{"role": "user", "content": format!("task {n}")}]}),
        ),
    };
    let response = check(client.post(url).json(&body).send().await?).await?;
    Ok(response.text().await?)
}

/// The fault `mock`'s schedule names at `elapsed`, if any.
fn scheduled(mock: &Mock, elapsed: Duration) -> Option<FaultKind> {
    let second = elapsed.as_secs() % CYCLE;
    mock.schedule
        .iter()
        .find(|(from, until, _)| (*from..*until).contains(&second))
        .map(|&(_, _, kind)| kind)
}

/// `--mode synthetic`: answers as the mock would, without HTTP.
async fn simulate(mock: &Mock, start: Instant, n: u64) -> Result<String, HttpError> {
    let status = |status: u16, verdict: Verdict, retry_after: Option<Duration>| {
        Err(HttpError::Status {
            status,
            verdict,
            message: None,
            retry_after,
            class: fusebox::ErrorClass::Other,
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    match scheduled(mock, start.elapsed()) {
        None => Ok(format!("mock reply {n}")),
        Some(FaultKind::Slow(d)) => {
            tokio::time::sleep(d).await;
            Ok(format!("mock reply {n}"))
        }
        Some(FaultKind::Hang) => std::future::pending().await,
        Some(FaultKind::Flap) if n % 2 == 1 => Ok(format!("mock reply {n}")),
        Some(FaultKind::RateLimited { retry_after }) => status(
            429,
            Verdict::RateLimited {
                retry_after: Some(retry_after),
            },
            Some(retry_after),
        ),
        Some(FaultKind::Unauthorized) => status(401, Verdict::Isolate, None),
        Some(_) => status(503, Verdict::Failure, None),
    }
}

/// What an agent sends its requests through.
#[derive(Clone)]
struct Traffic {
    mode: Mode,
    fuse: Supervisor,
    client: reqwest::Client,
    mocks: Arc<Vec<Mock>>,
    start: Instant,
}

/// One request numbered `n`, through `route` or else straight to mock number `mock`.
async fn request(t: &Traffic, route: Option<&'static str>, mock: usize, n: u64) -> bool {
    let Traffic {
        mode,
        fuse,
        client,
        mocks,
        start,
    } = t;
    let (mode, start) = (*mode, *start);
    let find = |p: &ProviderId| {
        mocks
            .iter()
            .position(|m| *p == m.name)
            .expect("a known provider")
    };
    match (mode, route) {
        (Mode::Fusebox, Some(route)) => fuse
            .route(route, |p: ProviderId| {
                let (mocks, client) = (mocks.clone(), client.clone());
                async move { ask(&client, &mocks[find(&p)], n).await }
            })
            .await
            .is_ok(),
        (Mode::Synthetic, Some(route)) => fuse
            .route(route, |p: ProviderId| {
                let mocks = mocks.clone();
                async move { simulate(&mocks[find(&p)], start, n).await }
            })
            .await
            .is_ok(),
        (Mode::Fusebox, None) => fuse
            .call(mocks[mock].name, || ask(client, &mocks[mock], n))
            .await
            .is_ok(),
        (Mode::Synthetic, None) => fuse
            .call(mocks[mock].name, || simulate(&mocks[mock], start, n))
            .await
            .is_ok(),
        // Without fusebox: try each provider in turn, with the client's own timeout.
        (Mode::Direct, Some(_)) => {
            for m in mocks.iter() {
                if ask(client, m, n).await.is_ok() {
                    return true;
                }
            }
            false
        }
        (Mode::Direct, None) => ask(client, &mocks[mock], n).await.is_ok(),
    }
}

async fn supervisor() -> Result<Supervisor, fusebox::ConfigError> {
    let provider = |name: &str| {
        Provider::new(name)
            .breaker(
                Breaker::consecutive(5)
                    .failure_rate(0.5, Window::Time(Duration::from_secs(10)))
                    .minimum_calls(10)
                    .open_for(Duration::from_secs(2))
                    .max_open_for(Duration::from_secs(8))
                    .trial_timeout(Duration::from_secs(2)),
            )
            .bulkhead(
                Bulkhead::new(24)
                    .queue(48)
                    .queue_timeout(Duration::from_secs(1)),
            )
            .call_timeout(Duration::from_secs(1))
    };
    Supervisor::builder()
        .event_capacity(EVENT_CAPACITY)
        .provider(provider("alpha"))
        .provider(
            // Adaptive thresholds, with open durations short enough for a 20 s fault cycle.
            provider("beta").adaptive(
                Adaptive::new(Duration::from_secs(30))
                    .tier(
                        Tier::above(600)
                            .failures(3)
                            .open_for(Duration::from_secs(3)),
                    )
                    .tier(Tier::above(0).failures(6).open_for(Duration::from_secs(2))),
            ),
        )
        .provider(provider("gamma"))
        .route(
            Route::new("chat")
                .providers(["alpha", "beta", "gamma"])
                .deadline(Duration::from_secs(4))
                .when_all_open(AllOpen::Wait(Duration::from_secs(1))),
        )
        .route(
            Route::new("cheap")
                .providers(["gamma", "beta"])
                .policy(Policy::LowestLatency),
        )
        .build()
        .await
}

#[tokio::main]
async fn main() {
    match run().await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(error) => {
            eprintln!("soak: {error}");
            std::process::exit(2);
        }
    }
}

async fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let fuse = supervisor().await?;
    let mut mocks = Vec::new();
    for (name, api, schedule, latency) in [
        ("alpha", Api::Anthropic, ALPHA, 10),
        ("beta", Api::OpenAi, BETA, 15),
        ("gamma", Api::OpenAi, GAMMA, 20),
    ] {
        let server = MockLlm::builder()
            .latency(Duration::from_millis(latency))
            .start()
            .await?;
        mocks.push(Mock {
            name,
            api,
            schedule,
            server,
        });
    }
    let mocks = Arc::new(mocks);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?;
    println!(
        "soak ({:?}): {}s, {AGENTS} agents, 3 mock providers on 127.0.0.1 ({}), fault cycle {CYCLE}s, \
         sampling every {}s",
        args.mode,
        args.seconds,
        mocks
            .iter()
            .map(|m| format!("{} {}", m.name, m.server.addr()))
            .collect::<Vec<_>>()
            .join(", "),
        args.sample
    );

    let start = Instant::now();
    let until = start + Duration::from_secs(args.seconds);
    let stop = Arc::new(AtomicBool::new(false));

    // Chaos: each second, every mock gets the fault its schedule names (or none).
    let chaos = {
        let (mocks, stop) = (mocks.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                for mock in mocks.iter() {
                    mock.server
                        .set_script(match scheduled(mock, start.elapsed()) {
                            Some(kind) => FaultScript::always(kind),
                            None => FaultScript::new(),
                        });
                }
            }
            for mock in mocks.iter() {
                mock.server.set_script(FaultScript::new());
            }
        })
    };

    // The operator: resets isolated providers every few seconds.
    let operator = {
        let (fuse, stop) = (fuse.clone(), stop.clone());
        tokio::spawn(async move {
            let mut resets = 0u64;
            let mut tick = tokio::time::interval(Duration::from_secs(3));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                for s in fuse.status() {
                    if s.state == CircuitState::Isolated {
                        let _ = fuse.reset(s.provider.as_str()).await;
                        resets += 1;
                    }
                }
            }
            resets
        })
    };

    // A subscriber that reads every event, checking generations per provider; and one that
    // never reads (the bus bounds what it holds).
    let never_reads = fuse.subscribe();
    let (done_reading, mut reading_done) = tokio::sync::oneshot::channel::<()>();
    let reader = {
        let mut events = fuse.subscribe();
        tokio::spawn(async move {
            let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
            let mut generations: BTreeMap<String, u64> = BTreeMap::new();
            let (mut missed, mut gaps) = (0u64, 0u64);
            let mut finishing = false;
            loop {
                let received = if finishing {
                    match events.try_recv() {
                        Ok(event) => Ok(event),
                        Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                        Err(_) => break,
                    }
                } else {
                    tokio::select! {
                        received = events.recv() => received,
                        _ = &mut reading_done => { finishing = true; continue; }
                    }
                };
                match received {
                    Ok(event) => {
                        *by_kind.entry(event.name()).or_default() += 1;
                        let last = generations.entry(event.provider.to_string()).or_default();
                        if event.kind.state().is_some() {
                            // After a lag, generations jump: that loss was reported.
                            if event.generation != *last + 1 && missed == 0 {
                                gaps += 1;
                            }
                            *last = event.generation;
                        }
                    }
                    Err(RecvError::Lagged(n)) => missed += n,
                    Err(RecvError::Closed) => break,
                }
            }
            (by_kind, missed, gaps)
        })
    };

    // The agents.
    let tally = Arc::new(Tally::default());
    let mut agents = Vec::new();
    for agent in 0..AGENTS {
        let traffic = Traffic {
            mode: args.mode,
            fuse: fuse.clone(),
            client: client.clone(),
            mocks: mocks.clone(),
            start,
        };
        let tally = tally.clone();
        agents.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((agent as u64 + 1) * 0x2545_F491));
            let mut n = agent as u64 * 10_000_000;
            while Instant::now() < until {
                n += 1;
                let t0 = Instant::now();
                let (route, mock) = match rng.below(10) {
                    // Through a route: failover across providers.
                    0..=6 => (Some(if rng.below(4) == 0 { "cheap" } else { "chat" }), 0),
                    // Straight to one provider.
                    _ => (None, rng.below(3) as usize),
                };
                let ok = request(&traffic, route, mock, n).await;
                let micros = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
                tally
                    .latencies
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(micros);
                let counter = if ok { &tally.ok } else { &tally.failed };
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5 + rng.below(20))).await;
            }
        }));
    }

    // Sampling.
    println!();
    println!(
        "{:>6} {:>8} {:>6} {:>7} {:>6} {:>8} {:>8}  {:<26} {:>9}",
        "t (s)",
        "RSS MiB",
        "tasks",
        "reqs",
        "ok %",
        "p50 ms",
        "p99 ms",
        "alpha/beta/gamma",
        "in flight"
    );
    let mut samples: Vec<Sample> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(args.sample));
    tick.tick().await;
    let (mut ok_before, mut failed_before) = (0, 0);
    while Instant::now() < until {
        tick.tick().await;
        let mut latencies = std::mem::take(
            &mut *tally
                .latencies
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        latencies.sort_unstable();
        let (p50, p99) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
        let (ok, failed) = (
            tally.ok.load(Ordering::Relaxed),
            tally.failed.load(Ordering::Relaxed),
        );
        let status = fuse.status();
        let sample = Sample {
            at: start.elapsed().as_secs_f64(),
            rss: rss_bytes(),
            tasks: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
            latencies: Histogram::new(&latencies),
            ok: ok - ok_before,
            failed: failed - failed_before,
            states: status
                .iter()
                .map(|s| s.state.as_str())
                .collect::<Vec<_>>()
                .join("/"),
            in_flight: status.iter().map(|s| s.in_flight).sum(),
        };
        (ok_before, failed_before) = (ok, failed);
        let reqs = sample.ok + sample.failed;
        println!(
            "{:>6.0} {:>8.1} {:>6} {:>7} {:>6.1} {:>8.1} {:>8.1}  {:<26} {:>9}",
            sample.at,
            sample.rss as f64 / 1048576.0,
            sample.tasks,
            reqs,
            100.0 * sample.ok as f64 / reqs.max(1) as f64,
            ms(p50),
            ms(p99),
            sample.states,
            sample.in_flight
        );
        samples.push(sample);
    }

    // Stop the traffic and let every call finish.
    for agent in agents {
        tokio::time::timeout(Duration::from_secs(10), agent)
            .await
            .map_err(|_| "an agent did not finish within 10 s of the end")??;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = chaos.await;
    let resets = operator.await?;
    let settle = Instant::now();
    while fuse
        .status()
        .iter()
        .any(|s| s.in_flight > 0 || s.queued > 0)
        && settle.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let statuses = fuse.status();
    let report = fuse.shutdown(Duration::from_secs(5)).await;
    let _ = done_reading.send(());
    let (by_kind, missed, gaps) = reader.await?;
    let backlog = never_reads.len();

    // The verdict.
    println!();
    let total_ok = tally.ok.load(Ordering::Relaxed);
    let total_failed = tally.failed.load(Ordering::Relaxed);
    println!(
        "requests: {} ({total_ok} ok, {total_failed} failed: {:.1}% ok); operator resets: {resets}",
        total_ok + total_failed,
        100.0 * total_ok as f64 / (total_ok + total_failed).max(1) as f64
    );
    for mock in mocks.iter() {
        let s = mock.server.stats();
        println!(
            "  mock {:<6} requests {:>6}, ok {:>6}, errors {:?}, resets {}, hangs {}",
            mock.name, s.requests, s.ok, s.errors, s.resets, s.hangs
        );
    }
    println!(
        "events: {by_kind:?}; {missed} reported missed; generation gaps without a lag report: \
         {gaps}; backlog of the subscriber that never read: {backlog} (capacity {EVENT_CAPACITY})"
    );
    println!("shutdown: {report:?}");

    let mut pass = true;
    let mut verdict = |name: &str, ok: bool, detail: String| {
        println!(
            "{:<44} {}  {detail}",
            name,
            if ok { "OK  " } else { "FAIL" }
        );
        pass &= ok;
    };

    // The windows compared are whole fault cycles, so that both saw the same faults: the
    // last third of the cycles against the third before it.
    let cycles = args.seconds / CYCLE;
    let k = cycles / 3;
    let window = |from: u64, to: u64| -> Vec<&Sample> {
        let (from, to) = ((from * CYCLE) as f64, (to * CYCLE) as f64);
        samples
            .iter()
            .filter(|s| s.at > from + 0.5 && s.at <= to + 0.5)
            .collect()
    };
    let (middle, last) = (
        window(cycles - 2 * k, cycles - k),
        window(cycles - k, cycles),
    );
    if k == 0 || middle.len() < 2 || last.len() < 2 {
        verdict(
            "enough samples for the flatness checks",
            false,
            format!(
                "{} samples over {cycles} fault cycles; run at least {}s",
                samples.len(),
                3 * CYCLE
            ),
        );
        return Ok(false);
    }
    let (middle, last) = (&middle[..], &last[..]);
    println!(
        "flatness: seconds {}-{} (middle) against {}-{} (last)",
        (cycles - 2 * k) * CYCLE,
        (cycles - k) * CYCLE,
        (cycles - k) * CYCLE,
        cycles * CYCLE
    );
    let mean =
        |s: &[&Sample], f: fn(&Sample) -> f64| s.iter().map(|x| f(x)).sum::<f64>() / s.len() as f64;
    let pooled_p99 = |s: &[&Sample]| {
        let mut all = Histogram(vec![0; Histogram::BUCKETS]);
        for sample in s {
            all.add(&sample.latencies);
        }
        all.percentile(99.0)
    };
    let tol = args.tolerance;

    let (rss_mid, rss_last) = (
        mean(middle, |s| s.rss as f64) / 1048576.0,
        mean(last, |s| s.rss as f64) / 1048576.0,
    );
    // Tighter than the others: a fifth of the tolerance, plus 1 MiB.
    let rss_limit = rss_mid * (1.0 + tol / 5.0) + 1.0;
    let minutes = (k * CYCLE) as f64 / 60.0;
    verdict(
        "RSS flat (last third vs middle third)",
        rss_last <= rss_limit,
        format!(
            "middle {rss_mid:.1} MiB, last {rss_last:.1} MiB ({:+.2} MiB/min), limit {rss_limit:.1} MiB",
            (rss_last - rss_mid) / minutes
        ),
    );
    let (tasks_mid, tasks_last) = (
        mean(middle, |s| s.tasks as f64),
        mean(last, |s| s.tasks as f64),
    );
    let tasks_limit = tasks_mid * (1.0 + tol) + 10.0;
    verdict(
        "tokio task count flat",
        tasks_last <= tasks_limit,
        format!("middle {tasks_mid:.0}, last {tasks_last:.0}, limit {tasks_limit:.0}"),
    );
    let (p99_mid, p99_last) = (ms(pooled_p99(middle)), ms(pooled_p99(last)));
    let p99_limit = p99_mid * (1.0 + 2.0 * tol) + 100.0;
    verdict(
        "p99 latency flat",
        p99_last <= p99_limit,
        format!("middle {p99_mid:.0} ms, last {p99_last:.0} ms, limit {p99_limit:.0} ms"),
    );
    let leftover: Vec<String> = statuses
        .iter()
        .filter(|s| s.in_flight > 0 || s.queued > 0)
        .map(|s| {
            format!(
                "{}: {} in flight, {} queued",
                s.provider, s.in_flight, s.queued
            )
        })
        .collect();
    verdict(
        "every permit returned after the traffic stopped",
        leftover.is_empty(),
        leftover.join("; "),
    );
    let unbalanced: Vec<String> = statuses
        .iter()
        .filter(|s| s.total != s.successful + s.failed + s.ignored + s.cancelled)
        .map(|s| {
            format!(
                "{}: total {} != {} ok + {} failed + {} ignored + {} cancelled",
                s.provider, s.total, s.successful, s.failed, s.ignored, s.cancelled
            )
        })
        .collect();
    let admitted: u64 = statuses.iter().map(|s| s.total).sum();
    verdict(
        "counts add up (total = ok + failed + ignored + cancelled)",
        unbalanced.is_empty(),
        if unbalanced.is_empty() {
            format!("{admitted} admitted calls")
        } else {
            unbalanced.join("; ")
        },
    );
    verdict(
        "events in order, or their loss reported",
        gaps == 0,
        format!(
            "{} delivered, {missed} reported missed",
            by_kind.values().sum::<u64>()
        ),
    );
    verdict(
        "a subscriber that never reads holds at most the capacity",
        backlog <= EVENT_CAPACITY,
        format!("{backlog} held"),
    );
    let opened = by_kind.get("llm.circuit_opened").copied().unwrap_or(0);
    verdict(
        "the faults were felt (circuits opened)",
        opened > 0 || args.mode == Mode::Direct,
        match args.mode {
            Mode::Direct => "no fusebox in this mode".to_owned(),
            _ => format!("{opened} openings"),
        },
    );
    println!();
    println!("soak {}", if pass { "PASSED" } else { "FAILED" });
    Ok(pass)
}
