//! Per-call cost of a guarded call, fusebox next to its peers and two baselines, each at 1
//! and 2 threads, measured in the same run.
//!
//! ```sh
//! cargo bench --bench overhead                          # about 3 minutes on 2 cores
//! FUSEBOX_BENCH_QUICK=1 cargo bench --bench overhead    # smoke run, about 30 s
//! cargo bench --bench overhead -- fusebox/              # a subset, by name
//! FUSEBOX_BENCH_PROFILE=fusebox/breaker/1t:1000000 \
//!     valgrind --tool=callgrind target/release/deps/overhead-*   # one row, for a profiler
//! ```
//!
//! The operation guarded everywhere is an `async` block that is ready at once, so what is
//! measured is the guard's own cost. Each future is polled once with [`Waker::noop`]
//! ([`ready`]): no executor round trip is paid, and a future that would return `Pending`
//! (which no fusebox path measured here may do) panics instead of being measured wrongly. The
//! one exception is tower-resilience, whose circuit lives behind a `tokio::sync::Mutex`: with
//! two threads its lock can be `Pending` for a moment, so its rows re-poll until ready
//! ([`spin`]), the same busy wait a caller would pay as latency.
//!
//! "2 threads" rows run two OS threads that hammer the same guard at once, each doing half
//! of criterion's iterations inside the runtime's context; the time reported is the wall time
//! for all of them divided by the total number of calls, i.e. the cost per call in aggregate.
//! With perfect scaling it halves; with a contended lock or cache line it grows.
//!
//! At the end a markdown summary (medians from criterion's `estimates.json`, ratios to the
//! mutex baseline and to each peer) is printed; `BENCHMARKS.md` holds one such run.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::{Barrier, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion};
use failsafe::futures::CircuitBreaker as _;
use fusebox::{Breaker, Bulkhead, CallError, Provider, Route, Supervisor, Verdict};
use tokio::runtime::Handle;
use tower::{Layer, Service, ServiceExt};

/// Polls a future that is ready at its first poll, with a no-op waker, inside whatever
/// runtime context the thread has entered (tokio's clock and semaphores need one).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmarked future was not ready at once"),
    }
}

/// Polls a future until it is ready, spinning in between: for guards whose uncontended path
/// is ready at once but whose contended path may briefly be `Pending` (an async mutex).
fn spin<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::hint::spin_loop();
    }
}

/// Runs `iters` calls of `body` over `threads` OS threads (each with its own state from
/// `make`, inside the runtime's context) and returns the wall time from the moment all were
/// ready to the moment the last one finished.
fn hammer<S, M, B>(rt: &Handle, threads: u64, iters: u64, make: M, body: B) -> Duration
where
    M: Fn() -> S + Sync,
    B: Fn(&mut S) + Sync,
{
    if threads == 1 {
        let _entered = rt.enter();
        let mut state = make();
        let start = Instant::now();
        for _ in 0..iters {
            body(&mut state);
        }
        return start.elapsed();
    }
    let barrier = Barrier::new(threads as usize + 1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let n = iters / threads + u64::from(i < iters % threads);
                let (barrier, make, body) = (&barrier, &make, &body);
                s.spawn(move || {
                    let _entered = rt.enter();
                    let mut state = make();
                    barrier.wait();
                    for _ in 0..n {
                        body(&mut state);
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for worker in workers {
            worker.join().expect("bench thread");
        }
        start.elapsed()
    })
}

/// `FUSEBOX_BENCH_PROFILE=fusebox/breaker/1t[:calls]`: run that row alone, `calls` times
/// (default 10 million), outside criterion, e.g. under `perf record` or
/// `valgrind --tool=callgrind`.
fn profile() -> Option<(String, u64)> {
    let spec = std::env::var("FUSEBOX_BENCH_PROFILE").ok()?;
    Some(match spec.split_once(':') {
        Some((row, calls)) => (row.to_owned(), calls.parse().expect("a number of calls")),
        None => (spec, 10_000_000),
    })
}

fn quick() -> bool {
    std::env::var_os("FUSEBOX_BENCH_QUICK").is_some_and(|v| v != "0" && !v.is_empty())
}

fn config() -> Criterion {
    let c = Criterion::default().without_plots();
    if quick() {
        c.warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_millis(300))
            .sample_size(10)
    } else {
        c.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(50)
    }
}

const THREADS: [u64; 2] = [1, 2];
const GROUP: &str = "per_call";
const HOUR: Duration = Duration::from_secs(3600);

/// The rows, in the order of the summary: (id, what it measures, owner).
const ROWS: &[(&str, &str)] = &[
    ("baseline/unguarded", "the bare operation, no guard"),
    (
        "baseline/mutex_counter",
        "a std::sync::Mutex-guarded counter",
    ),
    (
        "baseline/clock_read",
        "one `tokio::time::Instant::now()` (what an open rejection must read)",
    ),
    (
        "fusebox/breaker",
        "healthy call, breaker only, record_durations(false), by handle",
    ),
    (
        "fusebox/breaker_by_name",
        "the same, by name (`fuse.call(\"name\", ..)`)",
    ),
    (
        "fusebox/breaker_bulkhead",
        "healthy call, breaker + bulkhead(64)",
    ),
    (
        "fusebox/default_config",
        "healthy call, `Provider::new(name)` (timed)",
    ),
    ("fusebox/open_rejection", "open circuit: rejected"),
    (
        "fusebox/half_open_full",
        "half-open circuit, its one trial slot taken: rejected (no actor message)",
    ),
    ("fusebox/route_primary", "routed call, primary healthy"),
    (
        "fusebox/route_fallback",
        "routed call, primary open, served by the secondary",
    ),
    (
        "failsafe/consecutive",
        "healthy call, consecutive_failures(5) policy",
    ),
    (
        "failsafe/default",
        "healthy call, default policy (success rate or consecutive)",
    ),
    ("failsafe/open_rejection", "open circuit: rejected"),
    ("recloser/default", "healthy call, default ring buffers"),
    ("recloser/open_rejection", "open circuit: rejected"),
    (
        "tower_resilience/breaker",
        "healthy call, default circuit breaker",
    ),
    (
        "tower_resilience/breaker_bulkhead",
        "healthy call, circuit breaker + bulkhead(64)",
    ),
    (
        "tower_resilience/bulkhead",
        "healthy call, bulkhead(64) only",
    ),
    ("tower_resilience/open_rejection", "open circuit: rejected"),
];

fn per_call(c: &mut Criterion) {
    // One worker thread drives timers and actors; it sleeps while the rows run. (A
    // current-thread runtime would never fire the 1 ms timer tower-resilience arms when its
    // circuit's lock is taken, and its caller would wait forever.)
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let h = rt.handle().clone();
    let fast = |name: &str| Provider::new(name).record_durations(false);
    let fuse = rt.block_on(async {
        Supervisor::builder()
            .provider(fast("breaker"))
            .provider(fast("bulkheaded").bulkhead(Bulkhead::new(64)))
            .provider(Provider::new("default"))
            .provider(fast("open").breaker(Breaker::consecutive(1).open_for(HOUR)))
            .provider(fast("primary"))
            .provider(fast("secondary"))
            .provider(
                fast("trial").breaker(
                    Breaker::consecutive(1)
                        .open_for(Duration::from_millis(20))
                        .jitter(0.0)
                        .half_open_max_calls(1)
                        // The held trial outlives the run.
                        .trial_timeout(HOUR),
                ),
            )
            .route(Route::new("healthy").providers(["primary", "secondary"]))
            .route(Route::new("fallback").providers(["open", "secondary"]))
            .build()
            .await
            .expect("config")
    });
    // A failure is decided by the provider's actor: trip the circuit on the runtime.
    let tripped: Result<u64, _> =
        rt.block_on(fuse.call("open", || async { Err(Verdict::Failure) }));
    assert!(matches!(tripped, Err(CallError::Inner(Verdict::Failure))));
    // Half-open with its one trial slot held by a call that never ends.
    let trial: Result<u64, _> = rt.block_on(fuse.call("trial", || async { Err(Verdict::Failure) }));
    assert!(matches!(trial, Err(CallError::Inner(Verdict::Failure))));
    std::thread::sleep(Duration::from_millis(30));
    let held = fuse.clone();
    rt.spawn(async move {
        // Rejected while still open: try again. Admitted as the trial: never returns.
        loop {
            let _: Result<u64, CallError<Verdict>> = held
                .call("trial", std::future::pending::<Result<u64, Verdict>>)
                .await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let half_open = fuse.provider("trial").expect("provider");
    // Half-open is published before the held call takes the slot: wait until a call is
    // rejected at once (one that is not is dropped, which gives back what it took).
    let rejected_at_once = || {
        let _entered = rt.enter();
        let call = std::pin::pin!(half_open.call(|| async { Ok::<u64, Verdict>(1) }));
        matches!(
            call.poll(&mut Context::from_waker(Waker::noop())),
            Poll::Ready(Err(CallError::Open {
                state: fusebox::CircuitState::HalfOpen,
                ..
            }))
        )
    };
    while half_open.state() != fusebox::CircuitState::HalfOpen || !rejected_at_once() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _entered = rt.enter();
    let breaker = fuse.provider("breaker").expect("provider");
    let bulkheaded = fuse.provider("bulkheaded").expect("provider");
    let default = fuse.provider("default").expect("provider");
    let open = fuse.provider("open").expect("provider");

    // failsafe 1.3, through its futures API.
    let fs_consecutive = failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            5,
            failsafe::backoff::constant(Duration::from_secs(60)),
        ))
        .build();
    let fs_default = failsafe::Config::new().build();
    let fs_open = failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            1,
            failsafe::backoff::constant(HOUR),
        ))
        .build();
    let _ = ready(fs_open.call(async { Err::<u64, ()>(()) }));
    assert!(!fs_open.is_call_permitted());

    // recloser 1.4, through AsyncRecloser.
    let rc_default = recloser::AsyncRecloser::from(recloser::Recloser::custom().build());
    let rc_open = recloser::AsyncRecloser::from(
        recloser::Recloser::custom()
            .closed_len(1)
            .open_wait(HOUR)
            .build(),
    );
    for _ in 0..2 {
        let _ = ready(rc_open.call(async { Err::<u64, ()>(()) }));
    }
    assert!(matches!(
        ready(rc_open.call(async { Ok::<u64, ()>(1) })),
        Err(recloser::Error::Rejected)
    ));

    // tower-resilience 0.13: Tower middleware over a service answering at once.
    let svc = tower::service_fn(|x: u64| async move {
        if x == 0 {
            Err(())
        } else {
            Ok::<u64, ()>(x)
        }
    });
    let tr_breaker = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .build()
        .expect("config")
        .layer(svc);
    let tr_bulkhead = tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(64)
        .build()
        .expect("config")
        .layer(svc);
    let tr_both = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .build()
        .expect("config")
        .layer(
            tower_resilience::bulkhead::BulkheadLayer::builder()
                .max_concurrent_calls(64)
                .build()
                .expect("config")
                .layer(svc),
        );
    let mut tr_open = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .wait_duration_in_open(HOUR)
        .build()
        .expect("config")
        .layer(svc);
    let _ = ready(async { tr_open.ready().await?.call(0).await });
    assert!(ready(async { tr_open.ready().await?.call(1).await }).is_err());

    let profile = profile();
    // The size of each guarded call's future: what a caller's own future embeds (and what is
    // moved when the call is made).
    *SIZES.lock().expect("sizes") = vec![
        (
            "fusebox `handle.call(op)`",
            std::mem::size_of_val(&breaker.call(|| async { Ok::<u64, Verdict>(1) })),
        ),
        (
            "fusebox `fuse.route(name, op)`",
            std::mem::size_of_val(&fuse.route("healthy", |_| async { Ok::<u64, Verdict>(1) })),
        ),
        (
            "failsafe `breaker.call(fut)`",
            std::mem::size_of_val(&fs_consecutive.call(async { Ok::<u64, ()>(1) })),
        ),
        (
            "recloser `recloser.call(fut)`",
            std::mem::size_of_val(&rc_default.call(async { Ok::<u64, ()>(1) })),
        ),
        (
            "the guarded operation itself (`async { Ok(1) }`)",
            std::mem::size_of_val(&async { Ok::<u64, ()>(1) }),
        ),
    ];
    let lock = Mutex::new(0u64);
    let mut group = c.benchmark_group(GROUP);
    for threads in THREADS {
        let mut bench = |id: &str, f: &mut dyn FnMut(u64) -> Duration| {
            let name = format!("{id}/{threads}t");
            match &profile {
                // Profiling mode: run the one row, no statistics (for perf or callgrind).
                Some((row, calls)) if *row == name => {
                    let took = f(*calls);
                    println!("{name}: {calls} calls in {took:?}");
                }
                Some(_) => {}
                None => {
                    group.bench_function(BenchmarkId::new(id, format!("{threads}t")), |b| {
                        b.iter_custom(&mut *f)
                    });
                }
            }
        };
        let noop = || ();

        bench("baseline/unguarded", &mut |n| {
            hammer(&h, threads, n, noop, |_| {
                let r = ready(async { black_box(async { Ok::<u64, Infallible>(1) }.await) });
                black_box(r.expect("infallible"));
            })
        });
        bench("baseline/mutex_counter", &mut |n| {
            hammer(&h, threads, n, noop, |_| {
                let r = ready(async {
                    let r = async { Ok::<u64, Infallible>(1) }.await;
                    *lock.lock().expect("lock") += 1;
                    r
                });
                black_box(r.expect("infallible"));
            })
        });

        bench("baseline/clock_read", &mut |n| {
            hammer(&h, threads, n, noop, |_| {
                black_box(tokio::time::Instant::now());
            })
        });

        let fb = |handle: &fusebox::ProviderHandle, n| {
            hammer(&h, threads, n, noop, |_| {
                let r: Result<u64, CallError<Verdict>> = ready(handle.call(|| async { Ok(1) }));
                black_box(r.expect("healthy"));
            })
        };
        bench("fusebox/breaker", &mut |n| fb(&breaker, n));
        bench("fusebox/breaker_by_name", &mut |n| {
            hammer(&h, threads, n, noop, |_| {
                let r: Result<u64, CallError<Verdict>> =
                    ready(fuse.call("breaker", || async { Ok(1) }));
                black_box(r.expect("healthy"));
            })
        });
        bench("fusebox/breaker_bulkhead", &mut |n| fb(&bulkheaded, n));
        bench("fusebox/default_config", &mut |n| fb(&default, n));
        bench("fusebox/open_rejection", &mut |n| {
            hammer(&h, threads, n, noop, |_| {
                let r: Result<u64, CallError<Verdict>> = ready(open.call(|| async { Ok(1) }));
                black_box(r.is_err());
            })
        });
        bench("fusebox/half_open_full", &mut |n| {
            hammer(&h, threads, n, noop, |_| {
                let r: Result<u64, CallError<Verdict>> = ready(half_open.call(|| async { Ok(1) }));
                black_box(r.is_err());
            })
        });
        for (id, route) in [
            ("fusebox/route_primary", "healthy"),
            ("fusebox/route_fallback", "fallback"),
        ] {
            bench(id, &mut |n| {
                hammer(&h, threads, n, noop, |_| {
                    let r = ready(fuse.route(route, |_| async { Ok::<u64, Verdict>(1) }));
                    black_box(r.expect("served").value);
                })
            });
        }

        for (id, cb) in [
            ("failsafe/consecutive", &fs_consecutive as &dyn FailsafeCall),
            ("failsafe/default", &fs_default),
        ] {
            bench(id, &mut |n| {
                hammer(&h, threads, n, noop, |_| {
                    black_box(cb.ok().expect("healthy"));
                })
            });
        }
        bench("failsafe/open_rejection", &mut |n| {
            hammer(&h, threads, n, noop, |_| {
                black_box(ready(fs_open.call(async { Ok::<u64, ()>(1) })).is_err());
            })
        });
        bench("recloser/default", &mut |n| {
            hammer(&h, threads, n, noop, |_| {
                black_box(ready(rc_default.call(async { Ok::<u64, ()>(1) })).expect("healthy"));
            })
        });
        bench("recloser/open_rejection", &mut |n| {
            hammer(&h, threads, n, noop, |_| {
                black_box(ready(rc_open.call(async { Ok::<u64, ()>(1) })).is_err());
            })
        });
        bench("tower_resilience/breaker", &mut |n| {
            hammer(
                &h,
                threads,
                n,
                || tr_breaker.clone(),
                |s| {
                    let r = spin(async { s.ready().await?.call(1).await });
                    black_box(r.map_err(|_| ()).expect("healthy"));
                },
            )
        });
        bench("tower_resilience/breaker_bulkhead", &mut |n| {
            hammer(
                &h,
                threads,
                n,
                || tr_both.clone(),
                |s| {
                    let r = spin(async { s.ready().await?.call(1).await });
                    black_box(r.map_err(|_| ()).expect("healthy"));
                },
            )
        });
        bench("tower_resilience/bulkhead", &mut |n| {
            hammer(
                &h,
                threads,
                n,
                || tr_bulkhead.clone(),
                |s| {
                    let r = spin(async { s.ready().await?.call(1).await });
                    black_box(r.map_err(|_| ()).expect("healthy"));
                },
            )
        });
        bench("tower_resilience/open_rejection", &mut |n| {
            hammer(
                &h,
                threads,
                n,
                || tr_open.clone(),
                |s| {
                    black_box(spin(async { s.ready().await?.call(1).await }).is_err());
                },
            )
        });
    }
    group.finish();
    drop(_entered);
    drop(fuse);
}

/// A healthy failsafe call through its futures API, whatever the policy type.
trait FailsafeCall: Sync {
    fn ok(&self) -> Result<u64, failsafe::Error<()>>;
}

impl<P, I> FailsafeCall for failsafe::StateMachine<P, I>
where
    P: failsafe::FailurePolicy + Send + Sync,
    I: failsafe::Instrument + Send + Sync,
{
    fn ok(&self) -> Result<u64, failsafe::Error<()>> {
        ready(self.call(async { Ok::<u64, ()>(1) }))
    }
}

/// Future sizes measured in `per_call`, printed with the summary.
static SIZES: Mutex<Vec<(&str, usize)>> = Mutex::new(Vec::new());

/// Where criterion writes its results (as criterion itself decides, for the usual setups).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("criterion")
}

/// The median of one benchmark from this run, in ns per call.
fn median(id: &str, threads: u64, since: SystemTime) -> Option<f64> {
    let path = criterion_dir()
        .join(GROUP)
        .join(id.replace('/', "_"))
        .join(format!("{threads}t"))
        .join("new")
        .join("estimates.json");
    let fresh = std::fs::metadata(&path).ok()?.modified().ok()? >= since;
    if !fresh {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn fmt_ns(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"))
}

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".to_owned(),
    }
}

/// Prints the run's medians as markdown tables.
fn summary(since: SystemTime) {
    let m = |id: &str, t: u64| median(id, t, since);
    if ROWS
        .iter()
        .all(|(id, _)| m(id, 1).is_none() && m(id, 2).is_none())
    {
        println!(
            "(no fresh criterion estimates found under {:?})",
            criterion_dir()
        );
        return;
    }
    println!("\n## per-call cost (median ns per call; ratios of medians)\n");
    println!("| row | 1 thread | 2 threads | 2t / 1t | ÷ mutex 1t | ÷ mutex 2t | what |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for (id, what) in ROWS {
        let (one, two) = (m(id, 1), m(id, 2));
        println!(
            "| {id} | {} | {} | {} | {} | {} | {what} |",
            fmt_ns(one),
            fmt_ns(two),
            fmt_ratio(two, one),
            fmt_ratio(one, m("baseline/mutex_counter", 1)),
            fmt_ratio(two, m("baseline/mutex_counter", 2)),
        );
    }
    let pairs: &[(&str, &[&str])] = &[
        (
            "fusebox/breaker",
            &[
                "failsafe/consecutive",
                "failsafe/default",
                "recloser/default",
                "tower_resilience/breaker",
            ],
        ),
        (
            "fusebox/default_config",
            &[
                "failsafe/consecutive",
                "failsafe/default",
                "recloser/default",
                "tower_resilience/breaker",
            ],
        ),
        (
            "fusebox/breaker_bulkhead",
            &["tower_resilience/breaker_bulkhead"],
        ),
        (
            "fusebox/open_rejection",
            &[
                "failsafe/open_rejection",
                "recloser/open_rejection",
                "tower_resilience/open_rejection",
            ],
        ),
        // Goal: a half-open rejection costs at most twice an open one (above 0.5 here).
        ("fusebox/half_open_full", &["fusebox/open_rejection"]),
        // Goal: the timed default config costs at most 1.5 times breaker-only (above 0.67).
        ("fusebox/default_config", &["fusebox/breaker"]),
    ];
    println!(
        "\n## fusebox against each peer (peer median ÷ fusebox median: above 1 = fusebox faster)\n"
    );
    println!("| fusebox row | peer row | 1 thread | 2 threads |");
    println!("|---|---|---:|---:|");
    for (ours, peers) in pairs {
        for peer in *peers {
            println!(
                "| {ours} | {peer} | {} | {} |",
                fmt_ratio(m(peer, 1), m(ours, 1)),
                fmt_ratio(m(peer, 2), m(ours, 2)),
            );
        }
    }
    println!("\n## future sizes (bytes; tower-resilience boxes its futures)\n");
    println!("| future | bytes |");
    println!("|---|---:|");
    for (what, bytes) in SIZES.lock().expect("sizes").iter() {
        println!("| {what} | {bytes} |");
    }
}

fn main() {
    let since = SystemTime::now();
    let mut c = config().configure_from_args();
    per_call(&mut c);
    if profile().is_none() {
        c.final_summary();
        summary(since);
    }
}
