//! One provider's circuit breaker, end to end through `Supervisor::call`, on paused time.
#![allow(clippy::unwrap_used)]

mod support;

use fusebox::breaker::Cause;
use fusebox::{Breaker, CallError, CircuitState, EventKind, Provider, Supervisor};
use support::{call, drain, secs, settle, spawn_call, FakeError, FakeProvider, Step};
use tokio::time::{sleep, sleep_until, Instant};

async fn start(provider: Provider) -> Supervisor {
    Supervisor::builder()
        .provider(provider)
        .build()
        .await
        .unwrap()
}

fn state(fuse: &Supervisor) -> CircuitState {
    fuse.status()[0].state
}

/// Fails `n` calls in a row through the default step of a fresh fake.
async fn fail_times(fuse: &Supervisor, n: usize) {
    let failing = FakeProvider::new(Step::Fail);
    for _ in 0..n {
        let reply = call(fuse, "p", &failing).await;
        assert!(matches!(
            reply,
            Err(CallError::Inner(FakeError::Unavailable))
        ));
    }
}

/// The circuit's open deadline as `CallError::Open::retry_after` reports it.
async fn open_retry_after(fuse: &Supervisor, fake: &FakeProvider) -> std::time::Duration {
    match call(fuse, "p", fake).await {
        Err(CallError::Open {
            retry_after,
            state: CircuitState::Open,
            ..
        }) => retry_after,
        other => panic!("expected an open rejection, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn five_failures_open_for_a_minute_then_one_trial_decides() {
    let fuse = start(Provider::new("p")).await;
    let mut events = fuse.subscribe();
    let fake = FakeProvider::new(Step::Fail);

    for n in 1..=5 {
        assert_eq!(state(&fuse), CircuitState::Closed, "before failure {n}");
        let reply = call(&fuse, "p", &fake).await;
        assert!(matches!(
            reply,
            Err(CallError::Inner(FakeError::Unavailable))
        ));
    }
    // Read-your-writes: the fifth failure returned with the circuit already open.
    assert_eq!(state(&fuse), CircuitState::Open);
    let opened = events.try_recv().unwrap();
    assert_eq!(opened.name(), "llm.circuit_opened");
    assert_eq!(opened.provider, "p");
    assert_eq!(opened.generation, 1);
    assert_eq!(
        opened.kind,
        EventKind::CircuitOpened {
            cause: Cause::ConsecutiveFailures,
            failures: 5,
            retry_after: secs(60),
        }
    );

    // For a minute every call fails at once, without reaching the provider.
    let t0 = Instant::now();
    for (at, left) in [(0, 60), (30, 30), (59, 1)] {
        sleep_until(t0 + secs(at)).await;
        match call(&fuse, "p", &fake).await {
            Err(CallError::Open {
                provider,
                retry_after,
                failure_count,
                state,
            }) => {
                assert_eq!(provider, "p");
                assert_eq!(retry_after, secs(left), "at t+{at}s");
                assert_eq!(failure_count, 5);
                assert_eq!(state, CircuitState::Open);
            }
            other => panic!("at t+{at}s: {other:?}"),
        }
    }
    assert_eq!(fake.calls(), 5, "an open circuit never runs the closure");
    assert_eq!(fuse.status()[0].rejected, 3);

    // At exactly 60 s one trial goes through; a second caller is turned away meanwhile.
    sleep_until(t0 + secs(60)).await;
    fake.push([Step::delay(secs(1), Step::Ok)]);
    let trial = spawn_call(&fuse, "p", &fake);
    settle().await;
    assert_eq!(fake.calls(), 6);
    assert_eq!(state(&fuse), CircuitState::HalfOpen);
    match call(&fuse, "p", &fake).await {
        Err(CallError::Open { state, .. }) => assert_eq!(state, CircuitState::HalfOpen),
        other => panic!("second caller during the trial: {other:?}"),
    }
    assert_eq!(fake.calls(), 6);

    assert_eq!(trial.await.unwrap().unwrap(), "reply #6");
    assert_eq!(state(&fuse), CircuitState::Closed);
    let kinds: Vec<_> = drain(&mut events)
        .into_iter()
        .map(|e| (e.kind, e.cause))
        .collect();
    assert_eq!(
        kinds,
        [
            (EventKind::CircuitHalfOpened, Some(Cause::OpenElapsed)),
            (EventKind::CircuitClosed, Some(Cause::TrialsSucceeded))
        ]
    );

    // Second run: the trial fails, and the circuit re-opens for longer (x2, jittered by up
    // to 10 %).
    fail_times(&fuse, 5).await;
    let t1 = Instant::now();
    assert_eq!(
        open_retry_after(&fuse, &fake).await,
        secs(60),
        "back to base"
    );
    sleep_until(t1 + secs(60)).await;
    fake.push([Step::Fail]);
    let reply = call(&fuse, "p", &fake).await;
    assert!(matches!(
        reply,
        Err(CallError::Inner(FakeError::Unavailable))
    ));
    assert_eq!(state(&fuse), CircuitState::Open);
    let reopened = drain(&mut events).pop().unwrap();
    let EventKind::CircuitOpened {
        cause: Cause::TrialFailed,
        retry_after,
        ..
    } = reopened.kind
    else {
        panic!("expected a re-open, got {reopened:?}");
    };
    assert!(
        retry_after >= secs(108) && retry_after <= secs(120),
        "{retry_after:?}"
    );
    assert_eq!(open_retry_after(&fuse, &fake).await, retry_after);
    assert_eq!(fuse.status()[0].retry_after, Some(retry_after));
}

#[tokio::test(start_paused = true)]
async fn without_jitter_each_failed_trial_doubles_the_open_time_up_to_the_cap() {
    let breaker = Breaker::consecutive(5).jitter(0.0).max_open_for(secs(600));
    let fuse = start(Provider::new("p").breaker(breaker)).await;
    let fake = FakeProvider::new(Step::Fail);
    fail_times(&fuse, 5).await;
    // A cap of ten times the base.
    for expected in [120, 240, 480, 600, 600] {
        sleep(fuse.status()[0].retry_after.unwrap()).await;
        let reply = call(&fuse, "p", &fake).await;
        assert!(matches!(reply, Err(CallError::Inner(_))));
        assert_eq!(open_retry_after(&fuse, &fake).await, secs(expected));
    }
    // A successful trial starts again from the base.
    sleep(secs(600)).await;
    fake.push([Step::Ok]);
    call(&fuse, "p", &fake).await.unwrap();
    fail_times(&fuse, 5).await;
    assert_eq!(open_retry_after(&fuse, &fake).await, secs(60));
}

#[tokio::test(start_paused = true)]
async fn three_trials_at_once_and_three_successes_to_close() {
    let breaker = Breaker::consecutive(5)
        .success_threshold(3)
        .half_open_max_calls(3);
    let fuse = start(Provider::new("p").breaker(breaker)).await;
    fail_times(&fuse, 5).await;
    sleep(secs(60)).await;

    let fake = FakeProvider::scripted([1, 2, 3].map(|s| Step::delay(secs(s), Step::Ok)), Step::Ok);
    let trials: Vec<_> = (0..3).map(|_| spawn_call(&fuse, "p", &fake)).collect();
    settle().await;
    assert_eq!(fake.calls(), 3, "three trials admitted");
    match call(&fuse, "p", &fake).await {
        Err(CallError::Open { state, .. }) => assert_eq!(state, CircuitState::HalfOpen),
        other => panic!("fourth caller: {other:?}"),
    }
    assert_eq!(fake.calls(), 3, "the fourth never reached the provider");

    let t0 = Instant::now();
    sleep_until(t0 + secs(1) + support::ms(1)).await;
    assert_eq!(state(&fuse), CircuitState::HalfOpen, "after one success");
    sleep_until(t0 + secs(2) + support::ms(1)).await;
    assert_eq!(state(&fuse), CircuitState::HalfOpen, "after two successes");
    sleep_until(t0 + secs(3) + support::ms(1)).await;
    assert_eq!(
        state(&fuse),
        CircuitState::Closed,
        "after the third success"
    );
    for trial in trials {
        trial.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_max_calls_trials_in_all() {
    let breaker = Breaker::consecutive(5)
        .success_threshold(3)
        .half_open_max_calls(3);
    let fuse = start(Provider::new("p").breaker(breaker)).await;
    fail_times(&fuse, 5).await;
    sleep(secs(60)).await;
    let fake = FakeProvider::scripted([1, 5, 5].map(|s| Step::delay(secs(s), Step::Ok)), Step::Ok);
    let trials: Vec<_> = (0..3).map(|_| spawn_call(&fuse, "p", &fake)).collect();
    sleep(secs(2)).await;
    assert_eq!(state(&fuse), CircuitState::HalfOpen, "one success of three");
    // DESIGN.md: "admit at most half_open_max_calls trials"; only a cancelled or ignored
    // trial "frees its slot without deciding".
    let fourth = call(&fuse, "p", &fake).await;
    assert!(
        matches!(
            fourth,
            Err(CallError::Open {
                state: CircuitState::HalfOpen,
                ..
            })
        ),
        "a fourth trial ran: {fourth:?}"
    );
    assert_eq!(fake.calls(), 3);
    for trial in trials {
        trial.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_trial_times_out_and_reopens_instead_of_wedging_the_breaker() {
    let breaker = Breaker::consecutive(5).trial_timeout(secs(10));
    let fuse = start(Provider::new("p").breaker(breaker)).await;
    let mut events = fuse.subscribe();
    fail_times(&fuse, 5).await;
    sleep(secs(60)).await;

    let fake = FakeProvider::scripted([Step::Hang], Step::Ok);
    let hung = spawn_call(&fuse, "p", &fake);
    settle().await;
    assert_eq!(state(&fuse), CircuitState::HalfOpen);
    let t0 = Instant::now();
    sleep_until(t0 + secs(10)).await;
    settle().await;
    assert_eq!(
        state(&fuse),
        CircuitState::Open,
        "the trial timeout re-opened it"
    );
    let reopened = drain(&mut events).pop().unwrap();
    let EventKind::CircuitOpened {
        cause: Cause::TrialTimedOut,
        retry_after,
        ..
    } = reopened.kind
    else {
        panic!("expected a re-open on trial timeout, got {reopened:?}");
    };
    assert!(retry_after >= secs(108) && retry_after <= secs(120));
    assert_eq!(reopened.at, t0 + secs(10));
    assert_eq!(fuse.status()[0].trial_timeouts, 1);

    // After the next open period a new trial closes it, though the hung one still hangs.
    sleep(retry_after).await;
    assert_eq!(call(&fuse, "p", &fake).await.unwrap(), "reply #2");
    assert_eq!(state(&fuse), CircuitState::Closed);
    assert!(!hung.is_finished());
    hung.abort();
    let _ = hung.await;
    settle().await;
    assert_eq!(
        state(&fuse),
        CircuitState::Closed,
        "the stale trial decides nothing"
    );
}

async fn half_open_with_a_thousand_callers(max_trials: u32) {
    let breaker = Breaker::consecutive(5)
        .half_open_max_calls(max_trials)
        .success_threshold(max_trials);
    let fuse = start(Provider::new("p").breaker(breaker)).await;
    fail_times(&fuse, 5).await;
    sleep(secs(60)).await;

    let fake = FakeProvider::new(Step::delay(secs(1), Step::Ok));
    let callers: Vec<_> = (0..1000).map(|_| spawn_call(&fuse, "p", &fake)).collect();
    let (mut passed, mut rejected) = (0, 0);
    for caller in callers {
        match caller.await.unwrap() {
            Ok(_) => passed += 1,
            Err(CallError::Open {
                state: CircuitState::HalfOpen | CircuitState::Open,
                ..
            }) => rejected += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    let n = u64::from(max_trials);
    assert_eq!(fake.calls(), n, "exactly the trials reached the provider");
    assert_eq!((passed, rejected), (n, 1000 - n));
    assert_eq!(state(&fuse), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_callers_on_a_half_open_circuit_one_trial() {
    half_open_with_a_thousand_callers(1).await;
}

#[tokio::test(start_paused = true)]
async fn a_thousand_callers_on_a_half_open_circuit_three_trials() {
    half_open_with_a_thousand_callers(3).await;
}

/// The same race on real threads: the circuit opens for 1 ns, so it is due for trials at
/// once, and the trials wait for the test to release them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_callers_on_a_half_open_circuit_across_threads() {
    const N: u64 = 3;
    let breaker = Breaker::consecutive(5)
        .open_for(std::time::Duration::from_nanos(1))
        .trial_timeout(secs(600))
        .half_open_max_calls(N as u32)
        .success_threshold(N as u32);
    let fuse = start(Provider::new("p").breaker(breaker)).await;
    fail_times(&fuse, 5).await;

    let fake = FakeProvider::new(Step::Ok);
    let (release, released) = tokio::sync::watch::channel(false);
    let start_line = std::sync::Arc::new(tokio::sync::Barrier::new(1000));
    let rejected = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let callers: Vec<_> = (0..1000)
        .map(|_| {
            let (fuse, fake, start_line) = (fuse.clone(), fake.clone(), start_line.clone());
            let (mut released, rejected) = (released.clone(), rejected.clone());
            tokio::spawn(async move {
                start_line.wait().await;
                let reply = fuse
                    .call("p", || {
                        let reply = fake.respond();
                        async move {
                            released.wait_for(|r| *r).await.unwrap();
                            reply.await
                        }
                    })
                    .await;
                if let Err(CallError::Open { .. }) = reply {
                    rejected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                reply
            })
        })
        .collect();
    // Every caller is either rejected or inside the provider.
    let mut spins = 0u64;
    while rejected.load(std::sync::atomic::Ordering::SeqCst) + fake.calls() < 1000 {
        spins += 1;
        assert!(spins < 100_000_000, "callers neither rejected nor admitted");
        tokio::task::yield_now().await;
    }
    assert_eq!(fake.calls(), N);
    assert_eq!(rejected.load(std::sync::atomic::Ordering::SeqCst), 1000 - N);
    release.send(true).unwrap();
    let mut passed = 0;
    for caller in callers {
        passed += u64::from(caller.await.unwrap().is_ok());
    }
    assert_eq!(passed, N);
    assert_eq!(state(&fuse), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_success_admitted_before_the_trip_does_not_close_the_circuit() {
    let fuse = start(Provider::new("p")).await;
    let mut events = fuse.subscribe();
    let fake = FakeProvider::scripted([Step::delay(secs(90), Step::Ok)], Step::Fail);
    let slow = spawn_call(&fuse, "p", &fake);
    settle().await;
    fail_times(&fuse, 5).await;
    sleep(secs(60)).await;
    settle().await;
    assert_eq!(state(&fuse), CircuitState::HalfOpen);
    let generation = fuse.status()[0].generation;

    // The slow call succeeds at t+90 s, while the circuit waits for a trial.
    assert_eq!(slow.await.unwrap().unwrap(), "reply #1");
    settle().await;
    let status = &fuse.status()[0];
    assert_eq!(
        status.state,
        CircuitState::HalfOpen,
        "a stale success is no trial"
    );
    assert_eq!(status.generation, generation);
    assert_eq!((status.successful, status.failed), (1, 5));
    let names: Vec<_> = drain(&mut events).iter().map(|e| e.name()).collect();
    assert_eq!(names, ["llm.circuit_opened", "llm.circuit_half_opened"]);

    // The real trial still decides.
    fake.push([Step::Ok]);
    call(&fuse, "p", &fake).await.unwrap();
    assert_eq!(state(&fuse), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_success_admitted_before_the_trip_does_not_reset_the_next_failure_run() {
    let fuse = start(Provider::new("p").breaker(Breaker::consecutive(5))).await;
    let fake = FakeProvider::scripted([Step::delay(secs(90), Step::Ok)], Step::Fail);
    let slow = spawn_call(&fuse, "p", &fake);
    settle().await;
    fail_times(&fuse, 5).await;
    sleep(secs(60)).await;
    fake.push([Step::Ok]);
    call(&fuse, "p", &fake).await.unwrap();
    assert_eq!(
        state(&fuse),
        CircuitState::Closed,
        "closed again, generation 3"
    );

    // Four failures of the new generation, then the stale success lands, then a fifth.
    fail_times(&fuse, 4).await;
    assert_eq!(fuse.status()[0].consecutive_failures, 4);
    slow.await.unwrap().unwrap();
    fail_times(&fuse, 1).await;
    // Stale failures are kept out of the run (they "never change state"); a stale success
    // must be too.
    assert_eq!(state(&fuse), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_with_a_hint_opens_at_once_for_the_hint() {
    let fuse = start(Provider::new("p")).await;
    let mut events = fuse.subscribe();
    let fake = FakeProvider::scripted([Step::RateLimited(Some(secs(30)))], Step::Ok);
    let reply = call(&fuse, "p", &fake).await;
    assert!(matches!(
        reply,
        Err(CallError::Inner(FakeError::RateLimited(Some(_))))
    ));
    assert_eq!(
        state(&fuse),
        CircuitState::Open,
        "one 429 with a hint opens"
    );
    let event = events.try_recv().unwrap();
    assert_eq!(
        event.kind,
        EventKind::CircuitOpened {
            cause: Cause::RateLimited,
            failures: 1,
            retry_after: secs(30),
        }
    );
    assert_eq!(open_retry_after(&fuse, &fake).await, secs(30));
    let status = &fuse.status()[0];
    assert_eq!((status.failed, status.rate_limited), (1, 1));
    sleep(secs(30)).await;
    call(&fuse, "p", &fake).await.unwrap();
    assert_eq!(state(&fuse), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_without_a_hint_opens_for_rate_limited_for() {
    // By default: at once, for 5 seconds, without growing the backoff.
    let fuse = start(Provider::new("p")).await;
    let fake = FakeProvider::new(Step::RateLimited(None));
    let mut events = fuse.subscribe();
    assert!(call(&fuse, "p", &fake).await.is_err());
    assert_eq!(state(&fuse), CircuitState::Open);
    assert_eq!(
        events.try_recv().unwrap().kind,
        EventKind::CircuitOpened {
            cause: Cause::RateLimited,
            failures: 1,
            retry_after: secs(5),
        }
    );
    assert_eq!(open_retry_after(&fuse, &fake).await, secs(5));
    assert_eq!(
        fake.calls(),
        1,
        "no call reached the rate-limiting provider"
    );
    // The trial is rate limited again: open for 5 seconds again, not for a grown backoff.
    sleep(secs(5)).await;
    assert!(matches!(
        call(&fuse, "p", &fake).await,
        Err(CallError::Inner(_))
    ));
    assert_eq!(open_retry_after(&fuse, &fake).await, secs(5));
    assert_eq!(fuse.status()[0].rate_limited, 2);

    // Configured.
    let provider = Provider::new("p").breaker(Breaker::default().rate_limited_for(secs(30)));
    let fuse = start(provider).await;
    assert!(call(&fuse, "p", &fake).await.is_err());
    assert_eq!(open_retry_after(&fuse, &fake).await, secs(30));

    // Turned off: an ordinary failure, as before.
    let provider = Provider::new("p").breaker(Breaker::default().rate_limited_for(secs(0)));
    let fuse = start(provider).await;
    for n in 1..=4 {
        assert!(call(&fuse, "p", &fake).await.is_err());
        assert_eq!(state(&fuse), CircuitState::Closed);
        assert_eq!(fuse.status()[0].consecutive_failures, n);
    }
    let mut events = fuse.subscribe();
    assert!(call(&fuse, "p", &fake).await.is_err());
    assert_eq!(state(&fuse), CircuitState::Open);
    assert_eq!(
        events.try_recv().unwrap().kind,
        EventKind::CircuitOpened {
            cause: Cause::ConsecutiveFailures,
            failures: 5,
            retry_after: secs(60),
        }
    );
    assert_eq!(fuse.status()[0].rate_limited, 5);

    // Validated (at most `MAX_DURATION`), and read from TOML.
    let too_long = fusebox::config::MAX_DURATION + secs(1);
    let err = Provider::new("p")
        .breaker(Breaker::default().rate_limited_for(too_long))
        .validate()
        .unwrap_err();
    assert_eq!(err.field(), Some("breaker.rate_limited_for"));
    let config = fusebox::Config::from_toml_str(
        "[[providers]]\nname = \"p\"\nbreaker = { rate_limited_for = \"30s\" }\n",
    )
    .unwrap();
    let expected = Breaker::default().rate_limited_for(secs(30));
    assert_eq!(config.providers[0].breaker_config(), &expected);
    let again = fusebox::Config::from_toml_str(&config.to_toml_string()).unwrap();
    assert_eq!(again.providers[0].breaker_config(), &expected);
    let err = fusebox::Config::from_toml_str(
        "[[providers]]\nname = \"p\"\nbreaker = { rate_limited_for = \"soon\" }\n",
    )
    .unwrap_err();
    assert_eq!(err.field(), Some("breaker.rate_limited_for"));
}

#[tokio::test(start_paused = true)]
async fn unauthorized_isolates_until_an_operator_resets() {
    let fuse = start(Provider::new("p")).await;
    let mut events = fuse.subscribe();
    let fake = FakeProvider::scripted([Step::Unauthorized], Step::Ok);
    let reply = call(&fuse, "p", &fake).await;
    assert!(matches!(
        reply,
        Err(CallError::Inner(FakeError::Unauthorized))
    ));
    assert_eq!(state(&fuse), CircuitState::Isolated);
    let isolated = events.try_recv().unwrap();
    assert_eq!(
        (isolated.kind, isolated.cause),
        (EventKind::CircuitIsolated, Some(Cause::IsolatingVerdict))
    );
    for _ in 0..3 {
        let reply = call(&fuse, "p", &fake).await;
        assert!(
            matches!(reply, Err(CallError::Isolated { ref provider }) if provider == "p"),
            "{reply:?}"
        );
        assert_eq!(reply.unwrap_err().retry_after(), None);
        sleep(secs(3600)).await; // time alone never brings it back
    }
    assert_eq!(fake.calls(), 1);
    assert_eq!(fuse.status()[0].retry_after, None);

    fuse.reset("p").await.unwrap();
    assert_eq!(state(&fuse), CircuitState::Closed);
    let closed = events.try_recv().unwrap();
    assert_eq!(
        (closed.kind, closed.cause),
        (EventKind::CircuitClosed, Some(Cause::Operator))
    );
    assert_eq!(call(&fuse, "p", &fake).await.unwrap(), "reply #2");
}

#[tokio::test(start_paused = true)]
async fn bad_requests_never_open_the_circuit() {
    let fuse = start(Provider::new("p").breaker(Breaker::consecutive(1))).await;
    let mut events = fuse.subscribe();
    let fake = FakeProvider::new(Step::BadRequest);
    for _ in 0..100 {
        let reply = call(&fuse, "p", &fake).await;
        assert!(matches!(
            reply,
            Err(CallError::Inner(FakeError::BadRequest))
        ));
    }
    let status = &fuse.status()[0];
    assert_eq!(status.state, CircuitState::Closed);
    assert_eq!((status.ignored, status.failed, status.total), (100, 0, 100));
    assert!(drain(&mut events).is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_elapsed_call_timeout_is_a_failure() {
    let provider = Provider::new("p")
        .breaker(Breaker::consecutive(3))
        .call_timeout(secs(10));
    let fuse = start(provider).await;
    let fake = FakeProvider::new(Step::Hang);
    for n in 1..=3u64 {
        assert_eq!(state(&fuse), CircuitState::Closed);
        let t0 = Instant::now();
        match call(&fuse, "p", &fake).await {
            Err(CallError::Timeout { provider, after }) => {
                assert_eq!(provider, "p");
                assert_eq!(after, secs(10));
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(t0.elapsed(), secs(10));
        assert_eq!(fake.running(), 0, "the abandoned call was dropped");
        assert_eq!(fuse.status()[0].failed, n);
    }
    assert_eq!(state(&fuse), CircuitState::Open);
    assert_eq!(open_retry_after(&fuse, &fake).await, secs(60));
}

/// Status tells the current run: successes counted on the lock-free path end it at once,
/// before the actor has handled any message.
#[tokio::test(start_paused = true)]
async fn status_counts_lock_free_successes_in_the_current_run() {
    let fuse = start(Provider::new("p").breaker(Breaker::consecutive(5))).await;
    fail_times(&fuse, 4).await;
    assert_eq!(fuse.status()[0].consecutive_failures, 4);
    call(&fuse, "p", &FakeProvider::new(Step::Ok))
        .await
        .unwrap();
    let status = &fuse.status()[0];
    assert_eq!(
        (
            status.consecutive_failures,
            status.successful,
            status.failed
        ),
        (0, 1, 4)
    );
}

/// A reset forgets: a failure admitted before `reset()` of a closed circuit is counted, but
/// not in the run after the reset.
#[tokio::test(start_paused = true)]
async fn a_failure_admitted_before_a_reset_does_not_count_in_the_run_after_it() {
    let fuse = start(Provider::new("p").breaker(Breaker::consecutive(2))).await;
    let fake = FakeProvider::scripted([Step::delay(secs(10), Step::Fail)], Step::Fail);
    let slow = spawn_call(&fuse, "p", &fake);
    settle().await;
    fuse.reset("p").await.unwrap();
    // One failure after the reset, then the one admitted before it lands.
    fail_times(&fuse, 1).await;
    assert!(matches!(
        slow.await.unwrap(),
        Err(CallError::Inner(FakeError::Unavailable))
    ));
    settle().await;
    let status = &fuse.status()[0];
    assert_eq!(
        (status.state, status.consecutive_failures, status.failed),
        (CircuitState::Closed, 1, 2),
        "the stale failure is counted, but not in the run"
    );
    fail_times(&fuse, 1).await;
    assert_eq!(state(&fuse), CircuitState::Open);
}

/// On a running clock a rejection counts `retry_after` down on the CPU's cheap clock: it
/// keeps real time with tokio's, to well within a millisecond of the deadline the status
/// (tokio's clock) reports, and it shrinks from one rejection to the next. (No sleep: the
/// time between two calls is enough.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_running_clock_retry_after_keeps_real_time_with_the_open_deadline() {
    let fuse = start(Provider::new("p").breaker(Breaker::consecutive(1).open_for(secs(60)))).await;
    fail_times(&fuse, 1).await;
    let fake = FakeProvider::new(Step::Ok);
    let first = open_retry_after(&fuse, &fake).await;
    let told = fuse.status()[0].retry_after.unwrap();
    assert!(first <= secs(60) && first > secs(59), "{first:?}");
    let gap = first.abs_diff(told);
    assert!(
        gap < std::time::Duration::from_millis(1),
        "{first:?} vs {told:?}"
    );
    let later = open_retry_after(&fuse, &fake).await;
    assert!(later < first, "{first:?} then {later:?}");
    assert!(
        first - later < std::time::Duration::from_millis(1),
        "{first:?} then {later:?}"
    );
    assert_eq!(fake.calls(), 0);
}
