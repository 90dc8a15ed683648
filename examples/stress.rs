//! A stress run of the provider's concurrency invariants on the multi-thread runtime:
//! `cargo run --release --example stress -- [EPISODES] [THREADS]` (default 120,000 episodes on
//! 4 worker threads). The episodes are those of `tests/stress.rs` (see
//! `tests/support/stress.rs`); this runs enough of them to catch races that show up a few
//! times in 100,000. Exits non-zero on any violation.
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/stress.rs"]
mod stress;

fn main() {
    let mut args = std::env::args().skip(1);
    let episodes: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(120_000);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let tally = runtime.block_on(stress::run(episodes, 16, 1));
    println!(
        "{} episodes ({} calls) on {threads} worker threads in {:.1} s: {} violations",
        tally.episodes,
        tally.calls,
        started.elapsed().as_secs_f64(),
        tally.violations.len()
    );
    for v in tally.violations.iter().take(20) {
        println!("  {v}");
    }
    if !tally.violations.is_empty() {
        std::process::exit(1);
    }
}
