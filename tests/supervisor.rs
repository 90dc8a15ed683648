//! The supervisor: actor restarts, shutdown, health, unknown providers and the event bus.
#![allow(clippy::unwrap_used)]

mod support;

use fusebox::{
    Breaker, Bulkhead, CallError, CircuitState, EventKind, Provider, ShutdownReport, Supervisor,
    UnknownProvider,
};
use support::{call, drain, secs, settle, spawn_call, FakeProvider, Step};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::{timeout, Instant};

async fn start(providers: impl IntoIterator<Item = Provider>) -> Supervisor {
    let mut builder = Supervisor::builder();
    for provider in providers {
        builder = builder.provider(provider);
    }
    builder.build().await.unwrap()
}

async fn fail(fuse: &Supervisor, provider: &str, times: usize) {
    let fake = FakeProvider::new(Step::Fail);
    for _ in 0..times {
        assert!(matches!(
            call(fuse, provider, &fake).await,
            Err(CallError::Inner(_))
        ));
    }
}

/// Supervision, through the `testing` feature's crash hook.
#[cfg(feature = "testing")]
mod restarts {
    use std::cell::Cell;
    use std::sync::Once;

    use super::*;
    use tokio::time::sleep;

    thread_local! {
        /// Provider-actor crashes seen on this thread (paused-time tests run every task on it).
        static CRASHES: Cell<u32> = const { Cell::new(0) };
    }

    /// Counts the test hook's panics, so a test can tell the actor really died.
    fn count_crashes() {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .copied()
                    .unwrap_or_default();
                if message.contains("provider actor crash requested") {
                    CRASHES.with(|c| c.set(c.get() + 1));
                } else {
                    previous(info);
                }
            }));
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_provider_actor_keeps_the_open_circuit() {
        count_crashes();
        let fuse = start([Provider::new("p")]).await;
        fail(&fuse, "p", 5).await;
        sleep(secs(10)).await;
        let before = fuse.status().remove(0);
        assert_eq!(before.state, CircuitState::Open);
        assert_eq!(before.retry_after, Some(secs(50)));

        fuse.crash_provider_actor("p").unwrap();
        settle().await;
        assert_eq!(CRASHES.with(Cell::get), 1, "the actor panicked");
        let after = fuse.status().remove(0);
        assert_eq!(
            (after.state, after.retry_after, after.generation),
            (before.state, before.retry_after, before.generation)
        );
        let fake = FakeProvider::new(Step::Ok);
        let reply = call(&fuse, "p", &fake).await;
        assert_eq!(reply.unwrap_err().retry_after(), Some(secs(50)));

        // The restarted actor still runs the timer and decides the trial.
        sleep(secs(50)).await;
        settle().await;
        assert_eq!(fuse.status()[0].state, CircuitState::HalfOpen);
        call(&fuse, "p", &fake).await.unwrap();
        assert_eq!(fuse.status()[0].state, CircuitState::Closed);
        assert_eq!(fuse.status()[0].generation, before.generation + 2);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_before_and_after_a_restart_add_up() {
        count_crashes();
        let fuse = start([Provider::new("p").breaker(Breaker::consecutive(5))]).await;
        fail(&fuse, "p", 2).await;
        fuse.crash_provider_actor("p").unwrap();
        settle().await;
        fuse.crash_provider_actor("p").unwrap();
        settle().await;
        assert_eq!(CRASHES.with(Cell::get), 2);
        assert_eq!(fuse.status()[0].consecutive_failures, 2);
        fail(&fuse, "p", 2).await;
        assert_eq!(fuse.status()[0].state, CircuitState::Closed);
        fail(&fuse, "p", 1).await;
        assert_eq!(fuse.status()[0].state, CircuitState::Open, "2 + 3 failures");
        assert_eq!(fuse.status()[0].failed, 5);
        assert!(fuse.crash_provider_actor("nope").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_queued_behind_a_crash_are_still_decided() {
        count_crashes();
        let fuse = start([Provider::new("p")]).await;
        fail(&fuse, "p", 5).await;
        sleep(secs(60)).await;
        // The trial's admission waits in the mailbox behind the crash.
        fuse.crash_provider_actor("p").unwrap();
        let fake = FakeProvider::new(Step::Ok);
        assert_eq!(call(&fuse, "p", &fake).await.unwrap(), "reply #1");
        assert_eq!(CRASHES.with(Cell::get), 1);
        assert_eq!(fuse.status()[0].state, CircuitState::Closed);
        // And so is a failure report.
        fuse.crash_provider_actor("p").unwrap();
        fail(&fuse, "p", 1).await;
        assert_eq!(CRASHES.with(Cell::get), 2);
        let s = fuse.status().remove(0);
        assert_eq!((s.failed, s.consecutive_failures), (6, 1));
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_calls_in_flight_up_to_the_grace_period() {
    let fuse = start([
        Provider::new("a").bulkhead(Bulkhead::new(1).queue(4).queue_timeout(secs(60))),
        Provider::new("b"),
    ])
    .await;
    let slow = FakeProvider::new(Step::delay(secs(10), Step::Ok));
    let hung = FakeProvider::new(Step::Hang);
    let finishing = spawn_call(&fuse, "a", &slow);
    let hanging = spawn_call(&fuse, "b", &hung);
    let queued = spawn_call(&fuse, "a", &slow);
    settle().await;
    assert_eq!(fuse.status()[0].queued, 1);

    let t0 = Instant::now();
    let shutdown = tokio::spawn({
        let fuse = fuse.clone();
        async move { fuse.shutdown(secs(20)).await }
    });
    settle().await;
    assert!(matches!(
        queued.await.unwrap(),
        Err(CallError::ShuttingDown)
    ));
    for provider in ["a", "b"] {
        let reply = call(&fuse, provider, &slow).await;
        assert!(matches!(reply, Err(CallError::ShuttingDown)), "{reply:?}");
    }
    assert_eq!(finishing.await.unwrap().unwrap(), "reply #1");
    assert_eq!(t0.elapsed(), secs(10));
    assert!(!shutdown.is_finished(), "still waiting for the hung call");

    let report: ShutdownReport = shutdown.await.unwrap();
    assert_eq!(t0.elapsed(), secs(20));
    assert_eq!(report.waited, secs(20));
    assert!(!report.is_clean());
    assert_eq!(report.abandoned.len(), 1);
    assert_eq!(report.abandoned[0].0, "b");
    assert_eq!(report.abandoned[0].1, 1);
    assert_eq!(slow.calls(), 1);

    let reply = call(&fuse, "b", &hung).await;
    assert!(matches!(reply, Err(CallError::ShuttingDown)));
    assert_eq!(hung.calls(), 1);
    hanging.abort();
}

#[tokio::test(start_paused = true)]
async fn shutdown_returns_as_soon_as_the_last_call_finishes() {
    let fuse = start([Provider::new("a")]).await;
    let slow = FakeProvider::new(Step::delay(secs(3), Step::Ok));
    let call = spawn_call(&fuse, "a", &slow);
    settle().await;
    let report = fuse.shutdown(secs(30)).await;
    assert!(report.is_clean());
    assert_eq!(report.waited, secs(3));
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn health_counts_open_circuits_against_the_half_mark() {
    let breaker = Breaker::consecutive(2);
    let fuse = start(["a", "b", "c"].map(|n| Provider::new(n).breaker(breaker.clone()))).await;
    let health = fuse.health();
    assert!(health.healthy);
    assert_eq!(health.summary, "3/3 circuits healthy");

    fail(&fuse, "a", 2).await;
    let health = fuse.health();
    assert!(health.healthy, "one of three open");
    assert_eq!(health.summary, "2/3 circuits healthy");
    assert_eq!(health.circuits[0].provider, "a");
    assert_eq!(health.circuits[0].state, CircuitState::Open);
    assert!(!health.circuits[0].healthy);
    assert_eq!(health.circuits[0].failure_rate, 1.0);
    assert!(health.circuits[1].healthy);

    let a = fuse.status().remove(0);
    assert_eq!(a.provider, "a");
    assert_eq!(a.state, CircuitState::Open);
    assert_eq!(a.retry_after, Some(secs(60)));
    assert_eq!(a.failure_threshold, Some(2));
    assert_eq!(a.open_for, secs(60));
    assert_eq!((a.failed, a.total, a.successful), (2, 2, 0));
    assert_eq!(a.generation, 1);
    assert_eq!((a.in_flight, a.queued, a.capacity), (0, 0, None));
    assert!(a.last_failure.is_some());

    fail(&fuse, "b", 2).await;
    let health = fuse.health();
    assert!(!health.healthy, "two of three open");
    assert_eq!(health.summary, "1/3 circuits healthy");
}

#[tokio::test(start_paused = true)]
async fn unknown_providers_are_named_in_the_error() {
    let fuse = start([Provider::new("p")]).await;
    let fake = FakeProvider::new(Step::Ok);
    match call(&fuse, "nope", &fake).await {
        Err(CallError::UnknownProvider(name)) => assert_eq!(name, "nope"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.calls(), 0);
    assert_eq!(
        fuse.isolate("nope").await,
        Err(UnknownProvider("nope".to_owned()))
    );
    assert!(fuse.reset("nope").await.is_err());
    assert!(fuse.provider("nope").is_none());
}

/// Publishing never waits for a subscriber: one that reads nothing while the bus is full
/// loses the oldest events (and is told how many), and every call completes meanwhile.
#[tokio::test(start_paused = true)]
async fn a_slow_subscriber_lags_and_never_blocks_a_call() {
    let fuse = Supervisor::builder()
        .provider(Provider::new("p"))
        .event_capacity(4)
        .build()
        .await
        .unwrap();
    let mut events = fuse.subscribe(); // not read until every call is done
    let fake = FakeProvider::new(Step::Ok);
    // Nothing here sleeps, so time stands still unless something waits: a call stuck on the
    // subscriber would leave the runtime idle, the paused clock would jump to the deadline
    // and the call would fail here instead of hanging the test.
    let deadline = secs(60);
    for round in 1..=5 {
        timeout(deadline, fuse.isolate("p"))
            .await
            .unwrap_or_else(|_| panic!("round {round}: isolate waited for the subscriber"))
            .unwrap();
        let rejected = timeout(deadline, call(&fuse, "p", &fake))
            .await
            .unwrap_or_else(|_| panic!("round {round}: a rejected call waited"));
        assert!(matches!(rejected, Err(CallError::Isolated { .. })));
        timeout(deadline, fuse.reset("p"))
            .await
            .unwrap_or_else(|_| panic!("round {round}: reset waited for the subscriber"))
            .unwrap();
        timeout(deadline, call(&fuse, "p", &fake))
            .await
            .unwrap_or_else(|_| panic!("round {round}: a call waited for the subscriber"))
            .unwrap();
        if round == 2 {
            // Four events unread: the bus is full, and the next six are published over them.
            assert_eq!(events.len(), 4, "the bus is full");
        }
    }
    assert_eq!(fuse.status()[0].generation, 10);

    // The subscriber missed the six oldest events and is told so, then gets the four kept.
    assert_eq!(events.recv().await, Err(RecvError::Lagged(6)));
    let generations: Vec<_> = drain(&mut events).iter().map(|e| e.generation).collect();
    assert_eq!(generations, [7, 8, 9, 10], "the newest four are kept");
    assert_eq!(events.try_recv(), Err(TryRecvError::Empty));
}

#[tokio::test(start_paused = true)]
async fn events_are_optional() {
    let fuse = start([Provider::new("p").breaker(Breaker::consecutive(1))]).await;
    drop(fuse.subscribe());
    fail(&fuse, "p", 1).await;
    assert_eq!(fuse.status()[0].state, CircuitState::Open);
    fuse.reset("p").await.unwrap();
    call(&fuse, "p", &FakeProvider::new(Step::Ok))
        .await
        .unwrap();
    // A subscriber that joins later sees only what happens next.
    let mut late = fuse.subscribe();
    fail(&fuse, "p", 1).await;
    let event = late.try_recv().unwrap();
    assert!(matches!(event.kind, EventKind::CircuitOpened { .. }));
    assert_eq!(event.generation, 3);
}
