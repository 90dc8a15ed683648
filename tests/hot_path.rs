//! The healthy path of a call is what every request pays: it must send no message to the
//! provider's actor and allocate nothing.
//!
//! Allocations are counted by the `#[global_allocator]` that the `allocation-counter`
//! dev-dependency installs in this test binary (it wraps `System` and counts per thread, only
//! inside `allocation_counter::measure`). The crate forbids `unsafe` code, tests included, so
//! the counting allocator is that crate's rather than a hand-written `GlobalAlloc`; it is
//! linked only into this binary, the one that names it. Counting per thread keeps the test
//! harness's own allocations (on other threads) out of the counts. Calls are polled once
//! with a no-op waker on the test's thread, inside a current-thread runtime's context
//! (paused time): nothing else runs while a measurement is open. No test here sleeps.

use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use allocation_counter::AllocationInfo;
use fusebox::{Breaker, Bulkhead, CallError, Provider, Route, Supervisor, Verdict};

const CALLS: u64 = 10_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

/// Polls a future once with a no-op waker: every path measured here completes at its first
/// poll, without the executor (whose own bookkeeping would be counted otherwise).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the call was not ready at its first poll"),
    }
}

async fn supervisor() -> Supervisor {
    Supervisor::builder()
        .provider(Provider::new("plain"))
        .provider(Provider::new("untimed").record_durations(false))
        .provider(Provider::new("bulkheaded").bulkhead(Bulkhead::new(8)))
        .provider(
            Provider::new("open")
                .breaker(Breaker::consecutive(1).open_for(Duration::from_secs(3600))),
        )
        .provider(Provider::new("secondary"))
        .route(Route::new("healthy").providers(["plain", "secondary"]))
        .route(Route::new("fallback").providers(["open", "secondary"]))
        .route(Route::new("bulkheaded").providers(["bulkheaded", "secondary"]))
        .route(
            Route::new("least_loaded")
                .providers(["plain", "secondary"])
                .policy(fusebox::Policy::LeastLoaded),
        )
        .build()
        .await
        .expect("config")
}

/// Lets every ready task run (paused time does not move: nothing here waits on a timer).
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

fn messages(fuse: &Supervisor, provider: &str) -> u64 {
    fuse.status()
        .into_iter()
        .find(|s| s.provider == provider)
        .expect("provider")
        .actor_messages
}

#[test]
fn healthy_calls_send_no_actor_message_and_a_failure_sends_one() {
    runtime().block_on(async {
        let fuse = supervisor().await;
        // Let the actors settle: each handles a message of its own as it starts.
        settle().await;
        let before = messages(&fuse, "plain");
        for _ in 0..CALLS {
            let r: Result<u64, CallError<Verdict>> = fuse.call("plain", || async { Ok(1) }).await;
            assert_eq!(r.expect("healthy"), 1);
        }
        // Anything sent would be handled by now.
        settle().await;
        let status = fuse.status().into_iter().find(|s| s.provider == "plain");
        let status = status.expect("provider");
        assert_eq!(status.successful, CALLS);
        assert_eq!(
            status.actor_messages, before,
            "healthy calls on a closed circuit reached the provider's actor"
        );

        // The counter does move: a counted failure is the actor's to decide.
        let failed: Result<u64, _> = fuse.call("plain", || async { Err(Verdict::Failure) }).await;
        assert!(matches!(failed, Err(CallError::Inner(Verdict::Failure))));
        assert_eq!(messages(&fuse, "plain"), before + 1);
    });
}

#[test]
fn healthy_calls_by_handle_allocate_nothing() {
    let rt = runtime();
    let fuse = rt.block_on(supervisor());
    let _entered = rt.enter();
    // The counter is live: one box is one allocation.
    let control = allocation_counter::measure(|| drop(std::hint::black_box(Box::new(1u64))));
    assert_eq!(control.count_total, 1);
    for name in ["plain", "untimed", "bulkheaded"] {
        let handle = fuse.provider(name).expect("provider");
        let call = || {
            let r: Result<u64, CallError<Verdict>> = ready(handle.call(|| async { Ok(1) }));
            assert_eq!(r.expect("healthy"), 1);
        };
        // Warm-up: first-use initialisation (thread-locals, lazy statics) is not per call.
        call();
        let counted: AllocationInfo = allocation_counter::measure(|| {
            for _ in 0..CALLS {
                call();
            }
        });
        assert_eq!(
            counted.count_total, 0,
            "{CALLS} healthy calls to `{name}` allocated ({} bytes in all)",
            counted.bytes_total,
        );
    }
}

/// Open rejections and routed calls allocate nothing either: the route's order is read from
/// the router's published table, its trace holds two attempts inline, and its metrics are
/// counters the route keeps.
#[test]
fn rejections_and_routed_calls_allocate_nothing() {
    let rt = runtime();
    let fuse = rt.block_on(supervisor());
    let tripped: Result<u64, _> =
        rt.block_on(fuse.call("open", || async { Err(Verdict::Failure) }));
    assert!(matches!(tripped, Err(CallError::Inner(_))));
    // The router has ranked the open provider last.
    rt.block_on(fuse.resync_routes());
    let _entered = rt.enter();
    let open = fuse.provider("open").expect("provider");

    let measure = |what: &str, call: &mut dyn FnMut()| {
        call();
        let counted = allocation_counter::measure(|| {
            for _ in 0..CALLS {
                call();
            }
        });
        println!(
            "{what}: {:.2} allocations, {:.1} bytes per call",
            counted.count_total as f64 / CALLS as f64,
            counted.bytes_total as f64 / CALLS as f64,
        );
        assert_eq!(
            counted.count_total, 0,
            "{what}: {CALLS} calls allocated {} bytes",
            counted.bytes_total
        );
    };
    measure("open rejection (by handle)", &mut || {
        let r: Result<u64, CallError<Verdict>> = ready(open.call(|| async { Ok(1) }));
        assert!(matches!(r, Err(CallError::Open { .. })));
    });
    measure("open rejection (by name)", &mut || {
        let r: Result<u64, CallError<Verdict>> = ready(fuse.call("open", || async { Ok(1) }));
        assert!(matches!(r, Err(CallError::Open { .. })));
    });
    measure("routed call, primary healthy", &mut || {
        let r = ready(fuse.route("healthy", |_| async { Ok::<u64, Verdict>(1) }));
        assert_eq!(r.expect("served").provider, "plain");
    });
    measure("routed call, least-loaded policy", &mut || {
        let r = ready(fuse.route("least_loaded", |_| async { Ok::<u64, Verdict>(1) }));
        assert!(r.is_ok());
    });
    measure("routed call, primary with a bulkhead", &mut || {
        let r = ready(fuse.route("bulkheaded", |_| async { Ok::<u64, Verdict>(1) }));
        assert_eq!(r.expect("served").provider, "bulkheaded");
    });
    measure(
        "routed call, primary open (served by the secondary)",
        &mut || {
            let r = ready(fuse.route("fallback", |_| async { Ok::<u64, Verdict>(1) }));
            assert_eq!(r.expect("served").provider, "secondary");
        },
    );
}

/// A half-open circuit with every trial slot taken rejects without a message to the actor:
/// the free slots are published with the gate.
#[test]
fn half_open_rejections_with_every_slot_taken_send_no_message() {
    runtime().block_on(async {
        let fuse = Supervisor::builder()
            .provider(
                Provider::new("trial").breaker(
                    Breaker::consecutive(1)
                        .open_for(Duration::from_secs(10))
                        .jitter(0.0)
                        .half_open_max_calls(1),
                ),
            )
            .build()
            .await
            .expect("config");
        let failed: Result<u64, _> = fuse.call("trial", || async { Err(Verdict::Failure) }).await;
        assert!(matches!(failed, Err(CallError::Inner(_))));
        tokio::time::sleep(Duration::from_secs(10)).await;
        settle().await;
        // The one trial: held open.
        let (release, hold) = tokio::sync::oneshot::channel::<()>();
        let trial = {
            let fuse = fuse.clone();
            tokio::spawn(async move {
                fuse.call("trial", || async move {
                    let _ = hold.await;
                    Ok::<u64, Verdict>(1)
                })
                .await
            })
        };
        settle().await;
        let before = messages(&fuse, "trial");
        for _ in 0..CALLS {
            let r: Result<u64, CallError<Verdict>> = fuse.call("trial", || async { Ok(1) }).await;
            assert!(matches!(
                r,
                Err(CallError::Open {
                    state: fusebox::CircuitState::HalfOpen,
                    ..
                })
            ));
        }
        settle().await;
        assert_eq!(
            messages(&fuse, "trial"),
            before,
            "half-open rejections reached the actor"
        );
        let status = fuse.provider("trial").expect("provider").status();
        assert_eq!(status.rejected_half_open, CALLS);
        let _ = release.send(());
        assert_eq!(trial.await.expect("task").expect("trial"), 1);
    });
}

#[cfg(feature = "redis")]
#[path = "support/redis.rs"]
mod redis_server;

/// With a fleet linked to a real `redis-server`, the healthy path is the same: no
/// allocation, no message to the actor, nothing handed to the fleet link (which only hears
/// of transitions).
#[cfg(feature = "redis")]
#[test]
fn healthy_calls_with_a_fleet_allocate_nothing_and_touch_no_network() {
    let Some(redis) = redis_server::RedisServer::start("hot_path with a fleet") else {
        return;
    };
    // Real time: the link connects over loopback while the supervisor is built.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let fuse = rt
        .block_on(
            Supervisor::builder()
                .provider(Provider::new("plain"))
                .provider(Provider::new("bulkheaded").bulkhead(Bulkhead::new(8)))
                .fleet(fusebox::fleet::Fleet::redis(redis.url()).namespace("hot"))
                .build(),
        )
        .expect("config");
    assert!(fuse.fleet_status().expect("a fleet").connected);
    rt.block_on(settle());
    let before: Vec<u64> = ["plain", "bulkheaded"]
        .iter()
        .map(|p| messages(&fuse, p))
        .collect();
    {
        let _entered = rt.enter();
        for name in ["plain", "bulkheaded"] {
            let handle = fuse.provider(name).expect("provider");
            let call = || {
                let r: Result<u64, CallError<Verdict>> = ready(handle.call(|| async { Ok(1) }));
                assert_eq!(r.expect("healthy"), 1);
            };
            call();
            let counted = allocation_counter::measure(|| {
                for _ in 0..CALLS {
                    call();
                }
            });
            assert_eq!(
                counted.count_total, 0,
                "{CALLS} healthy calls to `{name}` with a fleet allocated ({} bytes in all)",
                counted.bytes_total,
            );
        }
    }
    rt.block_on(settle());
    let after: Vec<u64> = ["plain", "bulkheaded"]
        .iter()
        .map(|p| messages(&fuse, p))
        .collect();
    assert_eq!(after, before, "healthy calls reached the provider actors");
    let link = fuse.fleet_status().expect("a fleet");
    assert_eq!(
        (link.changes_sent, link.trials_leased, link.trials_deferred),
        (0, 0, 0),
        "healthy calls reached the fleet link"
    );
}

/// A guarded call's future holds little more than the operation's own: what a caller's
/// future embeds (and moves) for each call. The slow paths (a bulkhead queue, a trial
/// admission, awaiting the actor's decision, a call timeout's timer) are boxed, only when
/// taken.
#[test]
fn call_futures_are_small() {
    let rt = runtime();
    let fuse = rt.block_on(supervisor());
    let _entered = rt.enter();
    let op = || async { Ok::<u64, Verdict>(1) };
    let operation = std::mem::size_of_val(&op());
    for name in ["plain", "untimed", "bulkheaded"] {
        let handle = fuse.provider(name).expect("provider");
        let call = handle.call(op);
        let size = std::mem::size_of_val(&call);
        println!("`{name}`: call future {size} bytes (the operation's own: {operation})");
        assert!(size <= 128, "`{name}`: the call future is {size} bytes");
        let r: Result<u64, CallError<Verdict>> = ready(call);
        assert_eq!(r.expect("healthy"), 1);
    }
    let routed = fuse.route("healthy", |_| async { Ok::<u64, Verdict>(1) });
    println!(
        "routed call future: {} bytes",
        std::mem::size_of_val(&routed)
    );
    assert_eq!(ready(routed).expect("served").value, 1);
}
