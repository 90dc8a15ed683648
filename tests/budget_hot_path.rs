//! With a budget and a retry configured, the healthy path still sends no message and
//! allocates nothing (counted as in `tests/hot_path.rs`: allocation-counter's allocator,
//! linked only into the binaries that name it, one poll per call with a no-op waker).

use std::future::Future;
use std::task::{Context, Poll, Waker};

use fusebox::{Budget, CallError, Metered, Provider, Retry, Route, Supervisor, Verdict};

const CALLS: u64 = 10_000;

fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the call was not ready at its first poll"),
    }
}

#[test]
fn budgeted_and_retrying_healthy_calls_allocate_nothing_and_send_no_message() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let fuse = rt.block_on(async {
        let budget = Budget::per_minute()
            .requests(1_000_000)
            .tokens(4_000_000_000);
        Supervisor::builder()
            .provider(Provider::new("budgeted").budget(budget).retry(Retry::new()))
            .provider(Provider::new("secondary"))
            .route(Route::new("chat").providers(["budgeted", "secondary"]))
            .route(
                Route::new("retrying")
                    .providers(["budgeted", "secondary"])
                    .retry(Retry::new()),
            )
            .build()
            .await
            .expect("config")
    });
    rt.block_on(async {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
    });
    let _entered = rt.enter();
    let messages = || {
        fuse.provider("budgeted")
            .expect("provider")
            .status()
            .actor_messages
    };
    // The counter counts on this thread.
    let control = allocation_counter::measure(|| drop(std::hint::black_box(Box::new(1u64))));
    assert_eq!(control.count_total, 1);
    let before = messages();
    let measure = |what: &str, call: &mut dyn FnMut()| {
        call();
        let counted = allocation_counter::measure(|| {
            for _ in 0..CALLS {
                call();
            }
        });
        assert_eq!(
            counted.count_total, 0,
            "{what}: {CALLS} calls allocated {} bytes",
            counted.bytes_total
        );
    };
    measure("call", &mut || {
        let r: Result<u64, CallError<Verdict>> = ready(fuse.call("budgeted", || async { Ok(1) }));
        assert_eq!(r.ok(), Some(1));
    });
    measure("call_metered", &mut || {
        let r: Result<u64, CallError<Verdict>> =
            ready(fuse.call_metered("budgeted", 100, || async { Ok(Metered::new(1, 10)) }));
        assert_eq!(r.ok(), Some(1));
    });
    measure("call_retrying", &mut || {
        let r: Result<u64, CallError<Verdict>> =
            ready(fuse.call_retrying("budgeted", || async { Ok(1) }));
        assert_eq!(r.ok(), Some(1));
    });
    for route in ["chat", "retrying"] {
        measure(route, &mut || {
            let r = ready(fuse.route_metered(route, 100, |_p| async {
                Ok::<_, Verdict>(Metered::new(1u64, 10))
            }));
            assert_eq!(r.map(|r| r.provider == "budgeted").ok(), Some(true));
        });
    }
    assert_eq!(messages(), before, "no message to the provider's actor");
    let status = fuse.provider("budgeted").expect("provider").status();
    assert_eq!(status.failed, 0);
    assert_eq!(status.retries, 0);
}
