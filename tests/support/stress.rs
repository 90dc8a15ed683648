//! Stress episodes on the multi-thread runtime, shared by `tests/stress.rs` (a few thousand
//! episodes in CI) and `examples/stress.rs` (100,000 and more, in release).
//!
//! Each episode builds a fresh supervisor, races calls against the provider's actor and
//! checks one invariant; every violation is returned as a line saying what broke.
//!
//! - `stale`: a success admitted before a trip and a reset must not end the run of failures
//!   of the closed epoch after the reset (stale outcomes ignored), and the call that trips
//!   the circuit returns with the circuit already open (read-your-writes).
//! - `trials`: a half-open circuit runs at most `half_open_max_calls` trials however many
//!   callers race for them (bounded trials).
//! - `shutdown`: no operation starts after a shutdown returned clean, and nothing is lost:
//!   every admitted call is in exactly one outcome (counts adding up).
//! - every episode: nothing in flight at the end, and a bulkhead gives back every slot
//!   (permits conserved).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fusebox::{
    Breaker, Bulkhead, CallError, CircuitState, Classify, Provider, ProviderStatus, Supervisor,
    Verdict,
};

/// The episodes' error: a provider failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Down;

impl Classify for Down {
    fn verdict(&self) -> Verdict {
        Verdict::Failure
    }
}

/// A small deterministic random source (xorshift64*), so a failing seed can be replayed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn yields(n: u64) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

/// The totals of a stress run.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub episodes: u64,
    pub calls: u64,
    pub violations: Vec<String>,
}

/// Checks that the counts of a quiescent provider add up and that nothing is in flight.
fn counts_add_up(kind: &str, seed: u64, s: &ProviderStatus, out: &mut Vec<String>) {
    let finished = s.successful + s.failed + s.ignored + s.cancelled;
    if s.total != finished || s.in_flight != 0 {
        out.push(format!(
            "{kind} seed {seed}: counts do not add up: total {} != {} finished \
             (ok {}, failed {}, ignored {}, cancelled {}), in flight {}",
            s.total, finished, s.successful, s.failed, s.ignored, s.cancelled, s.in_flight
        ));
    }
    if s.queued != 0 {
        out.push(format!(
            "{kind} seed {seed}: {} callers still queued",
            s.queued
        ));
    }
}

/// Waits (real time, bounded) until the provider has nothing in flight.
async fn quiesce(fuse: &Supervisor, provider: &str) -> ProviderStatus {
    let handle = fuse.provider(provider).unwrap();
    for _ in 0..2_000 {
        let status = handle.status();
        if status.in_flight == 0 {
            return status;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    handle.status()
}

/// Every bulkhead slot can be taken again at once: none leaked.
async fn slots_conserved(
    fuse: &Supervisor,
    provider: &str,
    capacity: u32,
    kind: &str,
    seed: u64,
    out: &mut Vec<String>,
) {
    let handle = fuse.provider(provider).unwrap();
    if handle.state() != CircuitState::Closed {
        handle.reset().await;
    }
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let held = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..capacity {
        let (handle, release, held) = (handle.clone(), release.clone(), held.clone());
        tasks.push(tokio::spawn(async move {
            handle
                .call(|| async move {
                    held.fetch_add(1, Ordering::SeqCst);
                    let _ = release.acquire().await;
                    Ok::<_, Down>(())
                })
                .await
        }));
    }
    for _ in 0..2_000 {
        if held.load(Ordering::SeqCst) == capacity {
            break;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let got = held.load(Ordering::SeqCst);
    release.add_permits(capacity as usize);
    for task in tasks {
        let _ = task.await;
    }
    if got != capacity {
        out.push(format!(
            "{kind} seed {seed}: only {got} of {capacity} bulkhead slots could be taken"
        ));
    }
}

/// A success admitted before a trip and a reset must not end the next closed epoch's run.
pub async fn stale(seed: u64, tally: &mut Tally) {
    let mut rng = Rng::new(seed);
    let threshold = 2 + rng.below(3) as u32;
    let fuse = Supervisor::builder()
        .provider(
            Provider::new("p")
                .breaker(Breaker::consecutive(threshold).open_for(Duration::from_secs(3600))),
        )
        .build()
        .await
        .unwrap();
    let handle = fuse.provider("p").unwrap();
    let stragglers = 1 + rng.below(3);
    let admitted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..stragglers {
        let (handle, admitted) = (handle.clone(), admitted.clone());
        let delay = rng.below(64);
        tasks.push(tokio::spawn(async move {
            handle
                .call(|| async move {
                    admitted.fetch_add(1, Ordering::SeqCst);
                    yields(delay).await;
                    Ok::<_, Down>(())
                })
                .await
        }));
    }
    while admitted.load(Ordering::SeqCst) < stragglers {
        tokio::task::yield_now().await;
    }
    // Trip it (a straggler finishing first may end a run: keep failing until open).
    let mut calls = stragglers;
    for _ in 0..64 {
        let _ = handle.call(|| async { Err::<(), _>(Down) }).await;
        calls += 1;
        if handle.state() == CircuitState::Open {
            break;
        }
    }
    yields(rng.below(8)).await;
    handle.reset().await;
    // The stragglers were admitted two epochs ago: nothing they report may end this run.
    for i in 0..threshold {
        let result = handle.call(|| async { Err::<(), _>(Down) }).await;
        calls += 1;
        if !matches!(result, Err(CallError::Inner(Down))) {
            tally.violations.push(format!(
                "stale seed {seed}: failure {} of the new run was not made: {result:?}",
                i + 1
            ));
        }
    }
    let state = handle.state();
    if state != CircuitState::Open {
        tally.violations.push(format!(
            "stale seed {seed}: {threshold} consecutive failures in one closed epoch left the \
             circuit {state} (a stale success ended the run, or the trip was not read back)"
        ));
    }
    for task in tasks {
        let _ = task.await;
    }
    let status = quiesce(&fuse, "p").await;
    counts_add_up("stale", seed, &status, &mut tally.violations);
    tally.calls += calls;
    tally.episodes += 1;
}

/// However many callers race for a half-open circuit, at most `half_open_max_calls` run.
pub async fn trials(seed: u64, tally: &mut Tally) {
    let mut rng = Rng::new(seed);
    let max_trials = 1 + rng.below(3) as u32;
    let capacity = 4 + rng.below(5) as u32;
    let with_bulkhead = rng.below(2) == 0;
    let mut provider = Provider::new("p").breaker(
        Breaker::consecutive(1)
            .open_for(Duration::from_millis(1))
            .half_open_max_calls(max_trials)
            .success_threshold(max_trials)
            .trial_timeout(Duration::from_secs(3600)),
    );
    if with_bulkhead {
        provider = provider.bulkhead(
            Bulkhead::new(capacity)
                .queue(4)
                .queue_timeout(Duration::from_millis(1)),
        );
    }
    let fuse = Supervisor::builder()
        .provider(provider)
        .build()
        .await
        .unwrap();
    let handle = fuse.provider("p").unwrap();
    let _ = handle.call(|| async { Err::<(), _>(Down) }).await;
    tokio::time::sleep(Duration::from_millis(2)).await;

    let racers = 8 + rng.below(16);
    let running = Arc::new(AtomicU32::new(0));
    let settled = Arc::new(AtomicU64::new(0));
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let mut tasks = Vec::new();
    for _ in 0..racers {
        let (handle, running, settled, release) = (
            handle.clone(),
            running.clone(),
            settled.clone(),
            release.clone(),
        );
        let delay = rng.below(4);
        tasks.push(tokio::spawn(async move {
            yields(delay).await;
            let result = handle
                .call(|| async {
                    running.fetch_add(1, Ordering::SeqCst);
                    settled.fetch_add(1, Ordering::SeqCst);
                    let _ = release.acquire().await;
                    Ok::<_, Down>(())
                })
                .await;
            if result.is_err() {
                settled.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for _ in 0..5_000 {
        if settled.load(Ordering::SeqCst) == racers {
            break;
        }
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
    let ran = running.load(Ordering::SeqCst);
    if ran > max_trials {
        tally.violations.push(format!(
            "trials seed {seed}: {ran} calls ran on a half-open circuit allowing {max_trials}"
        ));
    }
    if settled.load(Ordering::SeqCst) != racers {
        tally.violations.push(format!(
            "trials seed {seed}: {} of {racers} callers never settled while trials were held",
            racers - settled.load(Ordering::SeqCst)
        ));
    }
    release.add_permits(racers as usize);
    for task in tasks {
        let _ = task.await;
    }
    let status = quiesce(&fuse, "p").await;
    counts_add_up("trials", seed, &status, &mut tally.violations);
    if with_bulkhead {
        slots_conserved(&fuse, "p", capacity, "trials", seed, &mut tally.violations).await;
    }
    tally.calls += 1 + racers;
    tally.episodes += 1;
}

/// No operation starts after a clean shutdown returned, and no outcome is lost.
pub async fn shutdown(seed: u64, tally: &mut Tally) {
    let mut rng = Rng::new(seed);
    let mut provider = Provider::new("p").breaker(Breaker::consecutive(1_000));
    if rng.below(2) == 0 {
        provider = provider.bulkhead(Bulkhead::new(2 + rng.below(4) as u32).queue(8));
    }
    let fuse = Supervisor::builder()
        .provider(provider)
        .build()
        .await
        .unwrap();
    let returned = Arc::new(AtomicBool::new(false));
    let late = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..4u64 {
        let (fuse, returned, late, calls) =
            (fuse.clone(), returned.clone(), late.clone(), calls.clone());
        let mut rng = Rng::new(seed ^ ((worker + 1) << 32));
        tasks.push(tokio::spawn(async move {
            for _ in 0..10_000 {
                let fail = rng.below(2) == 0;
                let pause = rng.below(3);
                calls.fetch_add(1, Ordering::Relaxed);
                let result = fuse
                    .call("p", || async {
                        if returned.load(Ordering::SeqCst) {
                            late.fetch_add(1, Ordering::SeqCst);
                        }
                        yields(pause).await;
                        if fail {
                            Err(Down)
                        } else {
                            Ok(())
                        }
                    })
                    .await;
                if matches!(result, Err(CallError::ShuttingDown)) {
                    return;
                }
            }
        }));
    }
    yields(rng.below(32)).await;
    let report = fuse.shutdown(Duration::from_secs(10)).await;
    returned.store(true, Ordering::SeqCst);
    for task in tasks {
        let _ = task.await;
    }
    let late = late.load(Ordering::SeqCst);
    if late > 0 {
        tally.violations.push(format!(
            "shutdown seed {seed}: {late} operations started after shutdown returned"
        ));
    }
    let status = fuse.provider("p").unwrap().status();
    if report.is_clean() {
        counts_add_up("shutdown", seed, &status, &mut tally.violations);
    } else {
        tally.violations.push(format!(
            "shutdown seed {seed}: calls of a few microseconds outlived a 10 s grace: {report:?}"
        ));
    }
    tally.calls += calls.load(Ordering::Relaxed);
    tally.episodes += 1;
}

/// Runs `episodes` episodes of each kind, `parallel` at a time.
pub async fn run(episodes: u64, parallel: u64, first_seed: u64) -> Tally {
    let mut total = Tally::default();
    let mut next = 0;
    while next < episodes {
        let batch: Vec<_> = (next..(next + parallel).min(episodes))
            .map(|i| {
                let seed = first_seed + i;
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    match i % 3 {
                        0 => stale(seed, &mut tally).await,
                        1 => trials(seed, &mut tally).await,
                        _ => shutdown(seed, &mut tally).await,
                    }
                    tally
                })
            })
            .collect();
        next += batch.len() as u64;
        for task in batch {
            let tally = task.await.unwrap();
            total.episodes += tally.episodes;
            total.calls += tally.calls;
            total.violations.extend(tally.violations);
        }
    }
    total
}
