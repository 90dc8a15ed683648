//! Per-call cost of a guarded call: healthy (closed), with a bulkhead, and an open
//! rejection, next to an unguarded call and a plain mutex-guarded counter as baselines.
//!
//! `cargo bench --bench overhead` (add `-- --quick` for a smoke run).

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use fusebox::{Breaker, Bulkhead, CallError, Provider, Supervisor, Verdict};

/// Polls a future that is ready at its first poll (every path measured here is), without
/// the cost of an executor round trip. Runs inside the runtime's context so tokio's clock
/// and semaphores work.
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("benchmarked future was not ready at once"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn overhead(c: &mut Criterion) {
    let rt = runtime();
    let fuse = rt.block_on(async {
        Supervisor::builder()
            .provider(Provider::new("healthy"))
            .provider(Provider::new("bulkheaded").bulkhead(Bulkhead::new(64)))
            .provider(
                Provider::new("open")
                    .breaker(Breaker::consecutive(1).open_for(Duration::from_secs(3600))),
            )
            .build()
            .await
            .expect("config")
    });
    rt.block_on(async {
        let _ = fuse
            .call("open", || async { Err::<(), _>(Verdict::Failure) })
            .await;
    });
    let healthy = fuse.provider("healthy").expect("provider");
    let bulkheaded = fuse.provider("bulkheaded").expect("provider");
    let open = fuse.provider("open").expect("provider");

    let _guard = rt.enter();
    let mut group = c.benchmark_group("per_call");
    group.bench_function("baseline/unguarded", |b| {
        b.iter(|| ready(async { black_box(async { Ok::<u64, Infallible>(1) }.await) }))
    });
    let lock = Mutex::new(0u64);
    group.bench_function("baseline/mutex_counter", |b| {
        b.iter(|| {
            ready(async {
                let r = async { Ok::<u64, Infallible>(1) }.await;
                *lock.lock().expect("lock") += 1;
                black_box(r)
            })
        })
    });
    group.bench_function("fusebox/healthy_by_handle", |b| {
        b.iter(|| {
            ready(async { black_box(healthy.call(|| async { Ok::<u64, Verdict>(1) }).await) })
        })
    });
    group.bench_function("fusebox/healthy_by_name", |b| {
        b.iter(|| {
            ready(async {
                black_box(
                    fuse.call("healthy", || async { Ok::<u64, Verdict>(1) })
                        .await,
                )
            })
        })
    });
    group.bench_function("fusebox/healthy_with_bulkhead", |b| {
        b.iter(|| {
            ready(async { black_box(bulkheaded.call(|| async { Ok::<u64, Verdict>(1) }).await) })
        })
    });
    group.bench_function("fusebox/open_rejection", |b| {
        b.iter(|| {
            ready(async {
                let r: Result<u64, CallError<Verdict>> = open.call(|| async { Ok(1) }).await;
                black_box(r.is_err())
            })
        })
    });
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
