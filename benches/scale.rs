//! Scale: many providers, many calls in flight, many subscribers. Prints a table.
//!
//! ```sh
//! cargo bench --bench scale
//! ```
//!
//! Each part runs in a child process of its own (this binary, re-run with
//! `FUSEBOX_SCALE_PART=<part>`), so that memory freed by one part cannot make the next one
//! look cheaper. Memory is the resident set from `/proc/self/statm` (4 KiB pages), taken
//! before and after; a delta divided by a count is the average cost of one, allocator slack
//! included. Timings are wall-clock on the machine's real clock, medians where repeated.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fusebox::{CallError, Provider, Supervisor, Verdict};
use tokio::sync::Notify;

const PROVIDERS: usize = 10_000;
const IN_FLIGHT: usize = 100_000;
const SUBSCRIBERS: usize = 100;
const FAN_OUT_ROUNDS: usize = 50;
const PAGE: u64 = 4096;

/// The resident set, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("statm resident field");
    resident * PAGE
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fmt_bytes(b: f64) -> String {
    if b.abs() >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if b.abs() >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// 10,000 providers in one supervisor: spawn time, memory per provider, `status()` time.
fn providers() -> Vec<(String, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let names: Vec<String> = (0..PROVIDERS).map(|i| format!("provider-{i:05}")).collect();
    let before = rss();
    let start = Instant::now();
    let fuse = rt.block_on(async {
        let mut builder = Supervisor::builder();
        for name in &names {
            builder = builder.provider(Provider::new(name.as_str()));
        }
        builder.build().await.expect("config")
    });
    let spawned = start.elapsed();
    // Let every actor and timer task start.
    rt.block_on(async {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
    });
    let after = rss();
    let _entered = rt.enter();
    let times: Vec<Duration> = (0..21)
        .map(|_| {
            let t = Instant::now();
            let status = std::hint::black_box(fuse.status());
            assert_eq!(status.len(), PROVIDERS);
            t.elapsed()
        })
        .collect();
    let health = {
        let t = Instant::now();
        let h = std::hint::black_box(fuse.health());
        assert!(h.healthy);
        t.elapsed()
    };
    let call = {
        let handle = fuse.provider("provider-09999").expect("provider");
        let r: Result<u64, CallError<Verdict>> = rt.block_on(handle.call(|| async { Ok(1) }));
        r.is_ok()
    };
    assert!(call);
    vec![
        (
            format!("{PROVIDERS} providers: build().await (spawn)"),
            format!(
                "{:.1} ms ({:.1} µs per provider)",
                ms(spawned),
                us(spawned) / PROVIDERS as f64
            ),
        ),
        (
            format!("{PROVIDERS} providers: memory per provider (RSS delta / count)"),
            fmt_bytes((after.saturating_sub(before)) as f64 / PROVIDERS as f64),
        ),
        (
            format!("{PROVIDERS} providers: status() (median of 21)"),
            format!(
                "{:.2} ms ({:.0} ns per provider)",
                ms(median(times.clone())),
                median(times).as_nanos() as f64 / PROVIDERS as f64
            ),
        ),
        (
            format!("{PROVIDERS} providers: health()"),
            format!("{:.2} ms", ms(health)),
        ),
    ]
}

/// 100,000 calls in flight on one provider, each waiting on a shared `Notify`; then released.
/// Done twice, with a plain-task baseline for comparison.
fn in_flight() -> Vec<(String, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let fuse = rt.block_on(async {
        Supervisor::builder()
            .provider(Provider::new("llm"))
            .build()
            .await
            .expect("config")
    });
    let handle = fuse.provider("llm").expect("provider");
    let mut rows = Vec::new();
    let start_rss = rss();

    // Baseline: the same tasks and waits, no fusebox.
    let baseline = {
        let gate = Arc::new(Notify::new());
        let waiting = Arc::new(AtomicUsize::new(0));
        let before = rss();
        let tasks: Vec<_> = rt.block_on(async {
            let tasks: Vec<_> = (0..IN_FLIGHT)
                .map(|_| {
                    let (gate, waiting) = (gate.clone(), waiting.clone());
                    tokio::spawn(async move {
                        let notified = gate.notified();
                        waiting.fetch_add(1, Ordering::Relaxed);
                        notified.await;
                        Ok::<u64, Verdict>(1)
                    })
                })
                .collect();
            // Every task reaches its wait.
            while waiting.load(Ordering::Relaxed) < IN_FLIGHT {
                tokio::task::yield_now().await;
            }
            tasks
        });
        let during = rss();
        gate.notify_waiters();
        rt.block_on(async {
            for t in tasks {
                t.await.expect("task").expect("ok");
            }
        });
        during.saturating_sub(before) as f64 / IN_FLIGHT as f64
    };
    rows.push((
        format!("{IN_FLIGHT} in flight: baseline task waiting on a Notify (no fusebox)"),
        format!("{} per task", fmt_bytes(baseline)),
    ));

    let mut after_runs = Vec::new();
    for run in 1..=2 {
        let gate = Arc::new(Notify::new());
        let before = rss();
        let t0 = Instant::now();
        let tasks: Vec<_> = rt.block_on(async {
            let tasks: Vec<_> = (0..IN_FLIGHT)
                .map(|_| {
                    let (gate, handle) = (gate.clone(), handle.clone());
                    tokio::spawn(async move {
                        handle
                            .call(|| async move {
                                gate.notified().await;
                                Ok::<u64, Verdict>(1)
                            })
                            .await
                    })
                })
                .collect();
            // Every task reaches its wait.
            while fuse.status()[0].in_flight < IN_FLIGHT as u64 {
                tokio::task::yield_now().await;
            }
            tasks
        });
        let admitted = t0.elapsed();
        let during = rss();
        assert_eq!(fuse.status()[0].in_flight, IN_FLIGHT as u64);
        let t1 = Instant::now();
        gate.notify_waiters();
        rt.block_on(async {
            for t in tasks {
                assert_eq!(t.await.expect("task").expect("healthy"), 1);
            }
        });
        let drained = t1.elapsed();
        let status = &fuse.status()[0];
        assert_eq!(status.in_flight, 0, "calls still counted in flight");
        let after = rss();
        after_runs.push(after);
        let per_call = during.saturating_sub(before) as f64 / IN_FLIGHT as f64;
        rows.push((
            format!("{IN_FLIGHT} in flight, run {run}: memory per in-flight call (task included)"),
            format!(
                "{} ({} over the baseline task)",
                fmt_bytes(per_call),
                fmt_bytes(per_call - baseline)
            ),
        ));
        rows.push((
            format!("{IN_FLIGHT} in flight, run {run}: spawn + admit all, release + drain all"),
            format!("{:.0} ms, {:.0} ms", ms(admitted), ms(drained)),
        ));
        rows.push((
            format!("{IN_FLIGHT} in flight, run {run}: after completion"),
            format!(
                "in_flight = {}, successful = {}, RSS above the start {}",
                status.in_flight,
                status.successful,
                fmt_bytes(after.saturating_sub(start_rss) as f64)
            ),
        ));
    }
    let growth = after_runs[1] as f64 - after_runs[0] as f64;
    rows.push((
        format!("{IN_FLIGHT} in flight: RSS after run 2 minus after run 1 (leak check)"),
        format!(
            "{} ({} per call)",
            fmt_bytes(growth),
            fmt_bytes(growth / IN_FLIGHT as f64)
        ),
    ));
    rows
}

/// One event fanned out to 100 subscribers: time until the last one has it.
fn fan_out() -> Vec<(String, String)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let fuse = Supervisor::builder()
            .provider(Provider::new("llm"))
            .build()
            .await
            .expect("config");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..SUBSCRIBERS {
            let mut events = fuse.subscribe();
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Ok(event) = events.recv().await {
                    let _ = tx.send((event.generation, tokio::time::Instant::now(), event.at));
                }
            });
        }
        let mut from_call = Vec::new();
        let mut from_event = Vec::new();
        for round in 0..FAN_OUT_ROUNDS {
            let t0 = tokio::time::Instant::now();
            if round % 2 == 0 {
                fuse.isolate("llm").await.expect("provider");
            } else {
                fuse.reset("llm").await.expect("provider");
            }
            let mut last = t0;
            let mut at = t0;
            for _ in 0..SUBSCRIBERS {
                let (_, received, published) = rx.recv().await.expect("receipt");
                last = last.max(received);
                at = published;
            }
            from_call.push(last - t0);
            from_event.push(last.saturating_duration_since(at));
        }
        vec![
            (
                format!("1 event to {SUBSCRIBERS} subscribers: from isolate()/reset() to the last receipt (median of {FAN_OUT_ROUNDS})"),
                format!("{:.1} µs", us(median(from_call.clone()))),
            ),
            (
                format!("1 event to {SUBSCRIBERS} subscribers: from the event's `at` to the last receipt (median of {FAN_OUT_ROUNDS})"),
                format!("{:.1} µs (max {:.1} µs)", us(median(from_event.clone())), us(*from_event.iter().max().expect("rounds"))),
            ),
        ]
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

const PARTS: [&str; 3] = ["providers", "in_flight", "fan_out"];

fn main() {
    if let Ok(part) = std::env::var("FUSEBOX_SCALE_PART") {
        let rows = match part.as_str() {
            "providers" => providers(),
            "in_flight" => in_flight(),
            "fan_out" => fan_out(),
            other => panic!("unknown part {other}"),
        };
        for (what, value) in rows {
            println!("| {what} | {value} |");
        }
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    println!("\n## Scale (each part in a fresh process)\n");
    println!("| measurement | value |");
    println!("|---|---|");
    for part in PARTS {
        let out = Command::new(&exe)
            .env("FUSEBOX_SCALE_PART", part)
            .output()
            .expect("run part");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        assert!(
            out.status.success(),
            "part {part} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
