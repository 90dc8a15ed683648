//! The per-call cost of budgets and retries on the healthy path: a plain call, the same
//! provider with a request and token budget (a direct call, a metered call), and with a
//! retry budget (`call_retrying`), each polled once with a no-op waker (no executor round
//! trip), one thread.
//!
//! ```sh
//! cargo bench --bench budget
//! ```

use std::future::Future;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::Criterion;
use fusebox::{Budget, CallError, Metered, Provider, Retry, Supervisor, Verdict};

fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmarked future was not ready at once"),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    // Budgets large enough never to refuse during the run.
    let budget = Budget::per(Duration::from_secs(1))
        .requests(u32::MAX)
        .tokens(u64::from(u32::MAX));
    let fuse = rt.block_on(async {
        Supervisor::builder()
            .provider(Provider::new("plain").record_durations(false))
            .provider(
                Provider::new("budgeted")
                    .record_durations(false)
                    .budget(budget),
            )
            .provider(
                Provider::new("retrying")
                    .record_durations(false)
                    .retry(Retry::new()),
            )
            .build()
            .await
            .expect("config")
    });
    let _entered = rt.enter();
    let handle = |name| fuse.provider(name).expect("provider");
    let (plain, budgeted, retrying) = (handle("plain"), handle("budgeted"), handle("retrying"));
    let mut c = Criterion::default().configure_from_args();
    c.bench_function("budget/plain call", |b| {
        b.iter(|| {
            let r: Result<u64, CallError<Verdict>> = ready(plain.call(|| async { Ok(1) }));
            black_box(r)
        })
    });
    c.bench_function("budget/call, request and token budget", |b| {
        b.iter(|| {
            let r: Result<u64, CallError<Verdict>> = ready(budgeted.call(|| async { Ok(1) }));
            black_box(r)
        })
    });
    c.bench_function("budget/call_metered, settled", |b| {
        b.iter(|| {
            let r: Result<u64, CallError<Verdict>> =
                ready(budgeted.call_metered(100, || async { Ok(Metered::new(1, 10)) }));
            black_box(r)
        })
    });
    c.bench_function("budget/call_retrying, retry budget deposit", |b| {
        b.iter(|| {
            let r: Result<u64, CallError<Verdict>> =
                ready(retrying.call_retrying(|| async { Ok(1) }));
            black_box(r)
        })
    });
    c.final_summary();
}
