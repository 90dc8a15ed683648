//! Bulkheads, cancellation and many concurrent calls, on paused time.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use fusebox::{
    Adaptive, Breaker, Bulkhead, CallError, CircuitState, Event, EventKind, Provider, Supervisor,
};
use support::{call, secs, settle, spawn_call, FakeError, FakeProvider, Step};
use tokio::time::{sleep, timeout, Instant};

async fn start(provider: Provider) -> Supervisor {
    Supervisor::builder()
        .provider(provider)
        .build()
        .await
        .unwrap()
}

fn status(fuse: &Supervisor) -> fusebox::ProviderStatus {
    fuse.status().remove(0)
}

#[tokio::test(start_paused = true)]
async fn a_bulkhead_bounds_concurrency_and_queues_with_a_timeout() {
    let bulkhead = Bulkhead::new(2).queue(3).queue_timeout(secs(5));
    let fuse = start(Provider::new("p").bulkhead(bulkhead)).await;
    let fake = FakeProvider::new(Step::Hang);

    let running: Vec<_> = (0..2).map(|_| spawn_call(&fuse, "p", &fake)).collect();
    settle().await;
    assert_eq!((status(&fuse).in_flight, status(&fuse).queued), (2, 0));
    let queued: Vec<_> = (0..3).map(|_| spawn_call(&fuse, "p", &fake)).collect();
    settle().await;
    assert_eq!((status(&fuse).in_flight, status(&fuse).queued), (2, 3));
    assert_eq!(status(&fuse).capacity, Some(2));

    let reply = call(&fuse, "p", &fake).await;
    assert!(
        matches!(reply, Err(CallError::BulkheadFull { ref provider }) if provider == "p"),
        "{reply:?}"
    );

    let t0 = Instant::now();
    for waiter in queued {
        match waiter.await.unwrap() {
            Err(CallError::QueueTimeout { provider, waited }) => {
                assert_eq!(provider, "p");
                assert_eq!(waited, secs(5));
            }
            other => panic!("expected a queue timeout, got {other:?}"),
        }
    }
    assert_eq!(t0.elapsed(), secs(5));
    assert_eq!(
        fake.calls(),
        2,
        "only the two slot holders reached the provider"
    );
    assert_eq!(fake.max_running(), 2);

    // Saturation is not the provider's fault.
    let s = status(&fuse);
    assert_eq!(s.state, CircuitState::Closed);
    assert_eq!((s.failed, s.queued, s.in_flight), (0, 0, 2));
    assert_eq!((s.rejected, s.bulkhead_full, s.queue_timeouts), (4, 1, 3));

    for task in running {
        task.abort();
        let _ = task.await;
    }
    let s = status(&fuse);
    assert_eq!((s.in_flight, s.cancelled, s.failed), (0, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn queued_calls_run_in_turn_and_never_exceed_the_limit() {
    let bulkhead = Bulkhead::new(2).queue(20).queue_timeout(secs(60));
    let fuse = start(Provider::new("p").bulkhead(bulkhead)).await;
    let fake = FakeProvider::new(Step::delay(secs(1), Step::Ok));
    let t0 = Instant::now();
    let calls: Vec<_> = (0..20).map(|_| spawn_call(&fuse, "p", &fake)).collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(t0.elapsed(), secs(10), "20 one-second calls, two at a time");
    assert_eq!(fake.max_running(), 2);
    let s = status(&fuse);
    assert_eq!((s.successful, s.in_flight, s.queued), (20, 0, 0));
}

/// Asserts nothing holds the single slot: a new call is admitted at once.
async fn slot_is_free(fuse: &Supervisor) {
    assert_eq!(status(fuse).in_flight, 0);
    let ok = FakeProvider::new(Step::Ok);
    assert!(call(fuse, "p", &ok).await.is_ok(), "the slot came back");
}

#[tokio::test(start_paused = true)]
async fn the_slot_comes_back_however_the_call_ends() {
    let provider = Provider::new("p")
        .breaker(Breaker::consecutive(100))
        .bulkhead(Bulkhead::new(1));
    let fuse = start(provider).await;

    // Success and error.
    call(&fuse, "p", &FakeProvider::new(Step::Ok))
        .await
        .unwrap();
    slot_is_free(&fuse).await;
    assert!(call(&fuse, "p", &FakeProvider::new(Step::Fail))
        .await
        .is_err());
    slot_is_free(&fuse).await;

    // A panic inside the caller's future.
    let panicking = spawn_call(&fuse, "p", &FakeProvider::new(Step::Panic));
    assert!(panicking.await.unwrap_err().is_panic());
    slot_is_free(&fuse).await;

    // Cancellation mid-call.
    let hung = spawn_call(&fuse, "p", &FakeProvider::new(Step::Hang));
    settle().await;
    assert_eq!(status(&fuse).in_flight, 1);
    let reply = call(&fuse, "p", &FakeProvider::new(Step::Ok)).await;
    assert!(matches!(reply, Err(CallError::BulkheadFull { .. })));
    hung.abort();
    assert!(hung.await.unwrap_err().is_cancelled());
    slot_is_free(&fuse).await;

    let s = status(&fuse);
    assert_eq!(
        (s.failed, s.cancelled),
        (1, 2),
        "panic and abort are cancellations"
    );
    assert_eq!(s.successful, 5);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_running_call_frees_its_slot_and_is_no_failure() {
    let provider = Provider::new("p")
        .breaker(Breaker::consecutive(1))
        .bulkhead(Bulkhead::new(1));
    let fuse = start(provider).await;
    let hang = FakeProvider::new(Step::Hang);
    let dropped = timeout(secs(1), call(&fuse, "p", &hang)).await;
    assert!(dropped.is_err(), "the wrapper timed out");
    assert_eq!(hang.running(), 0);
    let s = status(&fuse);
    assert_eq!((s.cancelled, s.failed, s.in_flight), (1, 0, 0));
    assert_eq!(
        s.state,
        CircuitState::Closed,
        "even with a threshold of one"
    );
    slot_is_free(&fuse).await;
}

#[tokio::test(start_paused = true)]
async fn dropping_a_queued_call_gives_its_place_back() {
    let bulkhead = Bulkhead::new(1).queue(1).queue_timeout(secs(60));
    let fuse = start(Provider::new("p").bulkhead(bulkhead)).await;
    let holder = spawn_call(&fuse, "p", &FakeProvider::new(Step::Hang));
    settle().await;

    let never = FakeProvider::new(Step::Ok);
    let dropped = timeout(secs(1), call(&fuse, "p", &never)).await;
    assert!(dropped.is_err());
    assert_eq!(never.calls(), 0);
    let s = status(&fuse);
    assert_eq!((s.queued, s.in_flight, s.failed), (0, 1, 0));
    // The queue place is free again: one more waiter fits.
    let waiter = spawn_call(&fuse, "p", &FakeProvider::new(Step::Ok));
    settle().await;
    assert_eq!(status(&fuse).queued, 1);
    holder.abort();
    let _ = holder.await;
    waiter.await.unwrap().unwrap();
    slot_is_free(&fuse).await;
}

/// A call dropped while queued was never admitted: it is in no call count (so totals still
/// add up), but the bulkhead counts it as abandoned.
#[tokio::test(start_paused = true)]
async fn dropping_a_queued_call_is_counted_as_abandoned() {
    let bulkhead = Bulkhead::new(1).queue(1).queue_timeout(secs(60));
    let fuse = start(Provider::new("p").bulkhead(bulkhead)).await;
    let _holder = spawn_call(&fuse, "p", &FakeProvider::new(Step::Hang));
    settle().await;
    let dropped = timeout(secs(1), call(&fuse, "p", &FakeProvider::new(Step::Ok))).await;
    assert!(dropped.is_err());
    let status = status(&fuse);
    assert_eq!((status.queue_abandoned, status.queued), (1, 0));
    assert_eq!(
        (status.total, status.cancelled, status.in_flight),
        (1, 0, 1)
    );
}

/// Opens the default breaker with five failures and waits out the minute.
async fn due_for_a_trial(fuse: &Supervisor) {
    let fail = FakeProvider::new(Step::Fail);
    for _ in 0..5 {
        let _ = call(fuse, "p", &fail).await;
    }
    assert_eq!(status(fuse).state, CircuitState::Open);
    sleep(secs(60)).await;
    settle().await;
}

#[tokio::test(start_paused = true)]
async fn dropping_a_trial_frees_its_slot_without_deciding() {
    let fuse = start(Provider::new("p")).await;
    due_for_a_trial(&fuse).await;
    let hang = FakeProvider::new(Step::Hang);
    let dropped = timeout(secs(1), call(&fuse, "p", &hang)).await;
    assert!(dropped.is_err());
    assert_eq!(hang.calls(), 1, "it was the trial");
    settle().await;
    let s = status(&fuse);
    assert_eq!(
        s.state,
        CircuitState::HalfOpen,
        "a cancelled trial decides nothing"
    );
    assert_eq!((s.cancelled, s.failed, s.in_flight), (1, 5, 0));

    // The next caller is the new trial, at once.
    let ok = FakeProvider::new(Step::Ok);
    call(&fuse, "p", &ok).await.unwrap();
    assert_eq!(status(&fuse).state, CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_caller_waiting_for_its_trial_permit_frees_the_slot() {
    let fuse = start(Provider::new("p")).await;
    due_for_a_trial(&fuse).await;
    assert_eq!(status(&fuse).state, CircuitState::HalfOpen);

    // Poll the call once: it asks the actor for a trial permit and waits for the answer.
    let never = FakeProvider::new(Step::Ok);
    {
        let mut pending = pin!(call(&fuse, "p", &never));
        let first = std::future::poll_fn(|cx| Poll::Ready(pending.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        // The actor grants the permit, but the caller goes away before reading it.
        settle().await;
    }
    settle().await;
    assert_eq!(never.calls(), 0);

    let ok = FakeProvider::new(Step::Ok);
    let reply = call(&fuse, "p", &ok).await;
    assert!(reply.is_ok(), "the trial slot is still taken: {reply:?}");
    assert_eq!(status(&fuse).state, CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_caller_before_its_trial_permit_is_decided_frees_the_slot() {
    let fuse = start(Provider::new("p")).await;
    due_for_a_trial(&fuse).await;
    let never = FakeProvider::new(Step::Ok);
    {
        let mut pending = pin!(call(&fuse, "p", &never));
        let first = std::future::poll_fn(|cx| Poll::Ready(pending.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        // Dropped before the actor has read the request.
    }
    settle().await;
    let s = status(&fuse);
    assert_eq!((s.in_flight, s.failed), (0, 5));
    call(&fuse, "p", &FakeProvider::new(Step::Ok))
        .await
        .unwrap();
    assert_eq!(status(&fuse).state, CircuitState::Closed);
}

/// xorshift64*: a tiny deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const NAMES: [&str; 8] = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"];

fn legal(from: CircuitState, to: CircuitState) -> bool {
    use CircuitState::*;
    matches!(
        (from, to),
        (Closed, Open | Isolated)
            | (Open, HalfOpen | Closed | Isolated)
            | (HalfOpen, Open | Closed | Isolated)
            | (Isolated, Closed)
    )
}

fn random_step(rng: &mut Rng) -> Step {
    let answer = match rng.below(1000) {
        0..=719 => Step::Ok,
        720..=869 => Step::Fail,
        870..=939 => Step::BadRequest,
        940..=959 => Step::RateLimited(Some(secs(1 + rng.below(5)))),
        960..=969 => Step::RateLimited(None),
        970..=971 => Step::Unauthorized,
        _ => Step::Hang, // cut short by the call timeout
    };
    match rng.below(3) {
        0 => answer,
        _ => Step::delay(support::ms(rng.below(4_000)), answer),
    }
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_calls_over_eight_providers_keep_every_invariant() {
    let mut builder = Supervisor::builder().event_capacity(100_000);
    for (i, name) in NAMES.iter().enumerate() {
        let mut provider = Provider::new(*name).call_timeout(secs(15)).breaker(
            Breaker::consecutive(3 + i as u32 % 3)
                .open_for(secs(5 + i as u64))
                .half_open_max_calls(1 + i as u32 % 3)
                .trial_timeout(secs(10)),
        );
        if i % 2 == 0 {
            provider = provider.bulkhead(Bulkhead::new(8).queue(8).queue_timeout(secs(2)));
        }
        if i % 4 == 1 {
            provider = provider.adaptive(Adaptive::default());
        }
        builder = builder.provider(provider);
    }
    let fuse = builder.build().await.unwrap();
    let mut events = fuse.subscribe();
    let fake = FakeProvider::new(Step::Ok);
    let mut rng = Rng(0x5EED_1234_ABCD_0001);

    let mut tasks = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let name = NAMES[rng.below(8) as usize];
        let start = support::ms(rng.below(300_000));
        let step = random_step(&mut rng);
        let (fuse, fake) = (fuse.clone(), fake.clone());
        tasks.push(tokio::spawn(async move {
            sleep(start).await;
            fuse.call(name, || fake.answer(step)).await
        }));
    }
    // Cancel a random tenth of the calls at random times, and reset isolated providers
    // every 10 s, as an operator would.
    let mut cancels: Vec<_> = (0..1_000)
        .map(|_| (rng.below(320_000), rng.below(10_000) as usize))
        .collect();
    cancels.sort_unstable();
    let t0 = Instant::now();
    let mut next_reset = 10_000;
    for (at, victim) in cancels {
        while next_reset <= at {
            sleep_until_ms(t0, next_reset).await;
            for s in fuse.status() {
                if s.state == CircuitState::Isolated {
                    fuse.reset(s.provider.as_str()).await.unwrap();
                }
            }
            next_reset += 10_000;
        }
        sleep_until_ms(t0, at).await;
        tasks[victim].abort();
    }
    let mut outcomes: HashMap<&str, u64> = HashMap::new();
    for task in tasks {
        let key = match task.await {
            Err(e) if e.is_cancelled() => "aborted",
            Err(e) => panic!("a caller panicked: {e}"),
            Ok(Ok(_)) => "ok",
            Ok(Err(CallError::Inner(FakeError::Unavailable))) => "failed",
            Ok(Err(CallError::Inner(_))) => "other inner",
            Ok(Err(CallError::Timeout { .. })) => "timeout",
            Ok(Err(CallError::Open { .. } | CallError::Isolated { .. })) => "circuit",
            Ok(Err(CallError::BulkheadFull { .. } | CallError::QueueTimeout { .. })) => "bulkhead",
            Ok(Err(other)) => panic!("unexpected {other:?}"),
        };
        *outcomes.entry(key).or_default() += 1;
    }
    // Let trial timeouts and open deadlines play out.
    sleep(secs(120)).await;
    settle().await;
    for key in ["ok", "failed", "timeout", "circuit", "bulkhead", "aborted"] {
        assert!(
            outcomes.get(key).copied().unwrap_or(0) > 0,
            "{key}: {outcomes:?}"
        );
    }

    let statuses = fuse.status();
    let mut events_by_provider: HashMap<String, Vec<Event>> = HashMap::new();
    for event in support::drain(&mut events) {
        events_by_provider
            .entry(event.provider.to_string())
            .or_default()
            .push(event);
    }
    let (mut admitted, mut cancelled) = (0, 0);
    for s in &statuses {
        assert_eq!(s.in_flight, 0, "{}", s.provider);
        assert_eq!(s.queued, 0, "{}", s.provider);
        assert_eq!(
            s.total,
            s.successful + s.failed + s.ignored + s.cancelled,
            "{s:#?}"
        );
        admitted += s.total;
        cancelled += s.cancelled;

        let events = &events_by_provider[s.provider.as_str()];
        let mut state = CircuitState::Closed;
        let mut generation = 0;
        for event in events {
            let Some(to) = event.kind.state() else {
                assert!(matches!(event.kind, EventKind::ThresholdsAdapted { .. }));
                assert_eq!(event.generation, generation, "{event:?}");
                continue;
            };
            assert_eq!(
                event.generation,
                generation + 1,
                "{}: {event:?}",
                s.provider
            );
            assert!(legal(state, to), "{}: {state:?} -> {event:?}", s.provider);
            if (state, to) == (CircuitState::Open, CircuitState::Closed) {
                assert_eq!(
                    (&event.kind, event.cause),
                    (
                        &EventKind::CircuitClosed,
                        Some(fusebox::breaker::Cause::Operator)
                    ),
                    "only a reset closes an open circuit"
                );
            }
            (state, generation) = (to, event.generation);
        }
        assert!(generation >= 4, "{}: too few transitions", s.provider);
        assert_eq!(
            (state, generation),
            (s.state, s.generation),
            "{}",
            s.provider
        );
    }
    assert!(admitted > 3_000, "{admitted} {outcomes:?}");
    assert!(cancelled > 0, "some calls were aborted mid-call");
    let all: Vec<&Event> = events_by_provider.values().flatten().collect();
    for name in ["llm.circuit_isolated", "llm.thresholds_adapted"] {
        assert!(all.iter().any(|e| e.name() == name), "no {name}");
    }
    assert_eq!(fake.running(), 0);
}

async fn sleep_until_ms(t0: Instant, ms: u64) {
    tokio::time::sleep_until(t0 + support::ms(ms)).await;
}
