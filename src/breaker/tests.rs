//! Unit tests of the pure breaker: every transition and every default.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::config::{Breaker, Window};
use crate::Verdict;

const S: Duration = Duration::from_secs(1);

fn done(verdict: Verdict) -> Outcome {
    Outcome::Completed {
        verdict,
        elapsed: Duration::from_millis(10),
    }
}

fn slow(verdict: Verdict, elapsed: Duration) -> Outcome {
    Outcome::Completed { verdict, elapsed }
}

/// A breaker plus a clock the test moves by hand.
struct Rig {
    b: State,
    now: Instant,
}

impl Rig {
    fn new(config: Breaker) -> Self {
        let now = Instant::now();
        Rig {
            b: State::new(&config, now).expect("valid breaker settings"),
            now,
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn admit(&mut self) -> Permit {
        self.b.on_admit(self.now).decision.expect("admitted")
    }

    fn reject(&mut self) -> Rejection {
        self.b.on_admit(self.now).decision.expect_err("rejected")
    }

    fn call(&mut self, outcome: Outcome) -> Option<Transition> {
        let p = self.admit();
        self.b.on_outcome(p, outcome, self.now)
    }

    fn fail_n(&mut self, n: u32) -> Option<Transition> {
        let mut last = None;
        for _ in 0..n {
            last = self.call(done(Verdict::Failure)).or(last);
        }
        last
    }

    fn state(&self) -> CircuitState {
        self.b.state()
    }
}

#[test]
fn defaults() {
    let c = Breaker::default();
    assert_eq!(c.consecutive, Some(5));
    assert_eq!(c.open_for, 60 * S);
    assert_eq!(c.effective_max_open_for(), 120 * S);
    assert_eq!(c.half_open_max_calls, 1);
    assert_eq!(c.success_threshold, 1);
    assert_eq!(c.trial_timeout, None);
    assert_eq!(c.failure_rate, None);
    assert_eq!(c.slow_call, None);
    assert_eq!(c.window, Window::Calls(100));
    assert_eq!(c.effective_minimum_calls(), 10);
    assert_eq!(c.jitter, 0.1);
    assert_eq!(
        Breaker::default()
            .failure_rate(0.5, Window::Calls(4))
            .effective_minimum_calls(),
        4
    );
    let r = Rig::new(Breaker::default());
    assert_eq!(r.state(), CircuitState::Closed);
    assert_eq!(r.b.generation(), 0);
    assert_eq!(*r.b.stats(), Stats::default());
}

#[test]
fn closed_to_open_after_consecutive_failures() {
    let mut r = Rig::new(Breaker::default());
    assert_eq!(r.fail_n(4), None);
    assert_eq!(r.state(), CircuitState::Closed);
    let t = r.fail_n(1).unwrap();
    assert_eq!(
        (t.from, t.to, t.cause),
        (
            CircuitState::Closed,
            CircuitState::Open,
            Cause::ConsecutiveFailures
        )
    );
    assert_eq!((t.failures, t.open_for, t.generation), (5, Some(60 * S), 1));
    assert_eq!(r.b.open_until(), Some(r.now + 60 * S));
}

#[test]
fn a_success_resets_the_consecutive_count() {
    let mut r = Rig::new(Breaker::default());
    r.fail_n(4);
    r.call(done(Verdict::Success));
    assert_eq!(r.fail_n(4), None);
    assert_eq!(r.state(), CircuitState::Closed);
}

#[test]
fn ignored_and_cancelled_calls_neither_count_nor_reset() {
    let mut r = Rig::new(Breaker::consecutive(2));
    r.fail_n(1);
    r.call(done(Verdict::Ignored));
    r.call(Outcome::Cancelled);
    assert_eq!(r.b.consecutive_failures(), 1);
    assert!(r.fail_n(1).is_some());
    let s = r.b.stats();
    assert_eq!((s.ignored, s.cancelled, s.failed, s.total), (1, 1, 2, 4));
}

#[test]
fn open_rejects_with_a_retry_after_that_counts_down() {
    let mut r = Rig::new(Breaker::default());
    r.fail_n(5);
    let rej = r.reject();
    assert_eq!(rej.state, CircuitState::Open);
    assert_eq!(rej.retry_after, Some(60 * S));
    assert_eq!(rej.failure_count, 5);
    r.advance(59 * S);
    assert_eq!(r.reject().retry_after, Some(S));
    assert_eq!(r.b.stats().rejected, 2);
}

#[test]
fn open_to_half_open_at_the_deadline_admits_one_trial() {
    let mut r = Rig::new(Breaker::default());
    r.fail_n(5);
    r.advance(60 * S);
    let a = r.b.on_admit(r.now);
    let t = a.transition.unwrap();
    assert_eq!(
        (t.from, t.to, t.cause),
        (
            CircuitState::Open,
            CircuitState::HalfOpen,
            Cause::OpenElapsed
        )
    );
    assert!(a.decision.unwrap().is_trial());
    let rej = r.reject();
    assert_eq!(rej.state, CircuitState::HalfOpen);
    assert_eq!(
        rej.retry_after,
        Some(60 * S),
        "the trial times out after the open duration"
    );
}

#[test]
fn poll_moves_open_to_half_open_without_a_call() {
    let mut r = Rig::new(Breaker::default());
    r.fail_n(5);
    assert_eq!(r.b.next_deadline(), Some(r.now + 60 * S));
    assert_eq!(r.b.poll(r.now + 59 * S), None);
    let t = r.b.poll(r.now + 60 * S).unwrap();
    assert_eq!(t.to, CircuitState::HalfOpen);
}

#[test]
fn half_open_to_closed_on_a_successful_trial() {
    let mut r = Rig::new(Breaker::default());
    r.fail_n(5);
    r.advance(60 * S);
    let t = r.call(done(Verdict::Success)).unwrap();
    assert_eq!(
        (t.from, t.to, t.cause),
        (
            CircuitState::HalfOpen,
            CircuitState::Closed,
            Cause::TrialsSucceeded
        )
    );
    assert_eq!(r.b.generation(), 3);
    // A clean close forgets the failures and the growth.
    assert_eq!(r.fail_n(4), None);
    assert_eq!(r.fail_n(1).unwrap().open_for, Some(60 * S));
}

#[test]
fn half_open_to_open_on_a_failed_trial_with_a_longer_open() {
    let mut r = Rig::new(Breaker::default().jitter(0.0).max_open_for(600 * S));
    r.fail_n(5);
    r.advance(60 * S);
    let t = r.call(done(Verdict::Failure)).unwrap();
    assert_eq!(
        (t.from, t.to, t.cause),
        (
            CircuitState::HalfOpen,
            CircuitState::Open,
            Cause::TrialFailed
        )
    );
    assert_eq!(t.open_for, Some(120 * S));
    assert_eq!(t.failures, 5);
    r.advance(120 * S);
    assert_eq!(
        r.call(done(Verdict::Failure)).unwrap().open_for,
        Some(240 * S)
    );
}

#[test]
fn grown_open_durations_are_capped_and_jittered() {
    let mut r = Rig::new(Breaker::default().max_open_for(150 * S));
    r.fail_n(5);
    for _ in 0..5 {
        r.advance(r.b.retry_after(r.now).unwrap());
        let d = r.call(done(Verdict::Failure)).unwrap().open_for.unwrap();
        assert!(d <= 150 * S && d >= (120 * S).mul_f64(0.9), "{d:?}");
    }
}

#[test]
fn success_threshold_and_half_open_max_calls() {
    let mut r = Rig::new(
        Breaker::default()
            .half_open_max_calls(3)
            .success_threshold(3),
    );
    r.fail_n(5);
    r.advance(60 * S);
    let trials = [r.admit(), r.admit(), r.admit()];
    assert_eq!(r.reject().state, CircuitState::HalfOpen);
    let mut last = None;
    for p in trials {
        assert_eq!(last, None);
        last = r.b.on_outcome(p, done(Verdict::Success), r.now);
    }
    assert_eq!(last.unwrap().to, CircuitState::Closed);
}

#[test]
fn a_finished_trial_frees_its_slot_for_the_next() {
    let mut r = Rig::new(
        Breaker::default()
            .half_open_max_calls(2)
            .success_threshold(2),
    );
    r.fail_n(5);
    r.advance(60 * S);
    assert_eq!(r.call(done(Verdict::Success)), None);
    assert_eq!(r.b.trials_in_flight(), 0);
    assert_eq!(
        r.call(done(Verdict::Success)).unwrap().to,
        CircuitState::Closed
    );
}

#[test]
fn cancelled_or_ignored_trials_free_their_slot_without_deciding() {
    let mut r = Rig::new(Breaker::default());
    r.fail_n(5);
    r.advance(60 * S);
    assert_eq!(r.call(Outcome::Cancelled), None);
    assert_eq!(r.call(done(Verdict::Ignored)), None);
    assert_eq!(r.state(), CircuitState::HalfOpen);
    assert_eq!(
        r.call(done(Verdict::Success)).unwrap().to,
        CircuitState::Closed
    );
}

#[test]
fn a_hung_trial_times_out_as_a_failure() {
    let mut r = Rig::new(Breaker::default().jitter(0.0).trial_timeout(10 * S));
    r.fail_n(5);
    r.advance(60 * S);
    let hung = r.admit();
    r.advance(9 * S);
    assert_eq!(r.reject().retry_after, Some(S));
    r.advance(S);
    let a = r.b.on_admit(r.now);
    let t = a.transition.unwrap();
    assert_eq!(
        (t.from, t.to, t.cause),
        (
            CircuitState::HalfOpen,
            CircuitState::Open,
            Cause::TrialTimedOut
        )
    );
    assert_eq!(t.open_for, Some(120 * S));
    assert_eq!(a.decision.unwrap_err().state, CircuitState::Open);
    // When it finally reports, it is stale: counted, decides nothing.
    assert_eq!(r.b.on_outcome(hung, done(Verdict::Success), r.now), None);
    assert_eq!(r.state(), CircuitState::Open);
    let s = r.b.stats();
    assert_eq!((s.trial_timeouts, s.successful, s.outstanding()), (1, 1, 0));
}

#[test]
fn trial_timeout_defaults_to_the_open_duration() {
    let mut r = Rig::new(Breaker::default());
    r.fail_n(5);
    r.advance(60 * S);
    let _hung = r.admit();
    assert_eq!(r.b.next_deadline(), Some(r.now + 60 * S));
    assert!(r.b.poll(r.now + 60 * S).is_some());
}

#[test]
fn a_stale_success_does_not_close_the_circuit() {
    let mut r = Rig::new(Breaker::consecutive(1));
    let early = r.admit();
    r.fail_n(1);
    r.advance(90 * S);
    assert_eq!(r.b.on_outcome(early, done(Verdict::Success), r.now), None);
    assert_eq!(r.state(), CircuitState::Open);
    assert_eq!(r.b.stats().successful, 1);
}

#[test]
fn a_stale_failure_does_not_reopen_a_closed_circuit() {
    let mut r = Rig::new(Breaker::consecutive(1));
    let early = r.admit();
    r.fail_n(1);
    r.advance(60 * S);
    r.call(done(Verdict::Success));
    assert_eq!(r.b.on_outcome(early, done(Verdict::Failure), r.now), None);
    assert_eq!(r.state(), CircuitState::Closed);
    assert_eq!(r.b.consecutive_failures(), 0);
}

#[test]
fn rate_limit_with_a_hint_opens_at_once_for_the_hint() {
    let mut r = Rig::new(Breaker::default());
    let t = r
        .call(done(Verdict::RateLimited {
            retry_after: Some(30 * S),
        }))
        .unwrap();
    assert_eq!(
        (t.to, t.cause, t.open_for),
        (CircuitState::Open, Cause::RateLimited, Some(30 * S))
    );
    assert_eq!(r.reject().retry_after, Some(30 * S));
    assert_eq!(r.b.stats().rate_limited, 1);
}

#[test]
fn a_hint_above_the_cap_is_honoured() {
    let mut r = Rig::new(Breaker::default().max_open_for(60 * S));
    let t = r
        .call(done(Verdict::RateLimited {
            retry_after: Some(3600 * S),
        }))
        .unwrap();
    assert_eq!(t.open_for, Some(3600 * S));
}

#[test]
fn rate_limit_without_a_hint_opens_for_rate_limited_for() {
    let mut r = Rig::new(Breaker::consecutive(5));
    let t = r
        .call(done(Verdict::RateLimited { retry_after: None }))
        .unwrap();
    assert_eq!((t.cause, t.open_for), (Cause::RateLimited, Some(5 * S)));
    let mut r = Rig::new(Breaker::consecutive(5).rate_limited_for(30 * S));
    let t = r
        .call(done(Verdict::RateLimited { retry_after: None }))
        .unwrap();
    assert_eq!((t.cause, t.open_for), (Cause::RateLimited, Some(30 * S)));
}

#[test]
fn rate_limit_without_a_hint_is_an_ordinary_failure_when_rate_limited_for_is_zero() {
    let mut r = Rig::new(Breaker::consecutive(2).rate_limited_for(Duration::ZERO));
    let none = done(Verdict::RateLimited { retry_after: None });
    assert_eq!(r.call(none), None);
    assert_eq!(
        r.call(done(Verdict::RateLimited {
            retry_after: Some(Duration::ZERO)
        }))
        .unwrap()
        .cause,
        Cause::ConsecutiveFailures
    );
}

#[test]
fn a_later_hint_raises_the_deadline_but_a_shorter_one_never_lowers_it() {
    let mut r = Rig::new(Breaker::default());
    let in_flight = [r.admit(), r.admit()];
    r.call(done(Verdict::RateLimited {
        retry_after: Some(30 * S),
    }));
    let until = r.b.open_until().unwrap();
    let [a, b] = in_flight;
    r.advance(5 * S);
    r.b.on_outcome(
        a,
        done(Verdict::RateLimited {
            retry_after: Some(10 * S),
        }),
        r.now,
    );
    assert_eq!(r.b.open_until(), Some(until), "shorter hint ignored");
    r.b.on_outcome(
        b,
        done(Verdict::RateLimited {
            retry_after: Some(100 * S),
        }),
        r.now,
    );
    assert_eq!(
        r.b.open_until(),
        Some(r.now + 100 * S),
        "longer hint raises"
    );
    assert_eq!(r.state(), CircuitState::Open);
}

#[test]
fn a_rate_limited_trial_reopens_for_the_hint_without_growing() {
    let mut r = Rig::new(Breaker::default().jitter(0.0));
    r.fail_n(5);
    r.advance(60 * S);
    let t = r
        .call(done(Verdict::RateLimited {
            retry_after: Some(5 * S),
        }))
        .unwrap();
    assert_eq!((t.cause, t.open_for), (Cause::RateLimited, Some(5 * S)));
    // The backoff did not grow: a failed trial next time opens for 120 s, not 240 s.
    r.advance(5 * S);
    assert_eq!(
        r.call(done(Verdict::Failure)).unwrap().open_for,
        Some(120 * S)
    );
}

#[test]
fn isolate_verdict_isolates_from_closed_and_half_open() {
    let mut r = Rig::new(Breaker::default());
    let t = r.call(done(Verdict::Isolate)).unwrap();
    assert_eq!(
        (t.to, t.cause),
        (CircuitState::Isolated, Cause::IsolatingVerdict)
    );
    let rej = r.reject();
    assert_eq!((rej.state, rej.retry_after), (CircuitState::Isolated, None));

    let mut r = Rig::new(Breaker::default());
    r.fail_n(5);
    r.advance(60 * S);
    assert_eq!(
        r.call(done(Verdict::Isolate)).unwrap().to,
        CircuitState::Isolated
    );
}

#[test]
fn isolated_is_left_only_by_reset() {
    let mut r = Rig::new(Breaker::default());
    let t = r.b.isolate(r.now).unwrap();
    assert_eq!(
        (t.from, t.to, t.cause),
        (
            CircuitState::Closed,
            CircuitState::Isolated,
            Cause::Operator
        )
    );
    assert_eq!(r.b.isolate(r.now), None);
    r.advance(1_000_000 * S);
    assert_eq!(r.b.poll(r.now), None);
    r.reject();
    let t = r.b.reset(r.now).unwrap();
    assert_eq!(
        (t.from, t.to),
        (CircuitState::Isolated, CircuitState::Closed)
    );
    r.admit();
}

#[test]
fn reset_closes_an_open_circuit_and_forgets_growth() {
    let mut r = Rig::new(Breaker::default().jitter(0.0));
    r.fail_n(5);
    r.advance(60 * S);
    r.call(done(Verdict::Failure));
    assert_eq!(r.b.reset(r.now).unwrap().from, CircuitState::Open);
    assert_eq!(r.fail_n(5).unwrap().open_for, Some(60 * S));
    assert_eq!(Rig::new(Breaker::default()).b.reset(Instant::now()), None);
}

#[test]
fn failure_rate_trips_a_partial_outage() {
    // Every other call fails: never two consecutive failures, but a 50 % rate.
    let mut r = Rig::new(Breaker::consecutive(5).failure_rate(0.5, Window::Calls(10)));
    let mut tripped = None;
    for i in 0..10 {
        let v = if i % 2 == 0 {
            Verdict::Success
        } else {
            Verdict::Failure
        };
        tripped = tripped.or(r.call(done(v)));
    }
    let t = tripped.unwrap();
    assert_eq!((t.cause, t.failures), (Cause::FailureRate, 5));
}

#[test]
fn failure_rate_waits_for_minimum_calls() {
    let mut r = Rig::new(
        Breaker::rate_based()
            .failure_rate(0.5, Window::Calls(100))
            .minimum_calls(20),
    );
    for _ in 0..19 {
        assert_eq!(r.call(done(Verdict::Failure)), None);
    }
    assert_eq!(
        r.call(done(Verdict::Failure)).unwrap().cause,
        Cause::FailureRate
    );
}

#[test]
fn count_window_trips_after_100k_successes_within_a_window_of_failures() {
    let mut r = Rig::new(Breaker::rate_based().failure_rate(0.5, Window::Calls(100)));
    for _ in 0..100_000 {
        r.call(done(Verdict::Success));
    }
    let mut failures = 0;
    while r.state() == CircuitState::Closed {
        r.call(done(Verdict::Failure));
        failures += 1;
        assert!(failures <= 100, "did not trip within the window");
    }
    assert_eq!(failures, 50);
}

#[test]
fn time_window_forgets_old_failures() {
    let mut r = Rig::new(
        Breaker::rate_based()
            .failure_rate(0.5, Window::Time(60 * S))
            .minimum_calls(4),
    );
    for _ in 0..3 {
        r.call(done(Verdict::Failure));
    }
    r.advance(61 * S);
    for _ in 0..3 {
        assert_eq!(r.call(done(Verdict::Success)), None);
    }
    // Three old failures are gone: 1 failure in 4 calls is 25 %.
    assert_eq!(r.call(done(Verdict::Failure)), None);
    assert_eq!(r.state(), CircuitState::Closed);
}

#[test]
fn time_window_trips_on_a_burst() {
    let mut r = Rig::new(Breaker::rate_based().failure_rate(0.5, Window::Time(60 * S)));
    let mut t = None;
    for i in 0..10 {
        r.advance(S);
        t = t.or(r.call(done(if i % 2 == 0 {
            Verdict::Failure
        } else {
            Verdict::Success
        })));
    }
    assert_eq!(t.unwrap().cause, Cause::FailureRate);
}

#[test]
fn slow_call_rate_trips() {
    let mut r = Rig::new(
        Breaker::rate_based()
            .slow_call(10 * S, 0.5)
            .minimum_calls(4),
    );
    r.call(slow(Verdict::Success, 11 * S));
    r.call(slow(Verdict::Success, S));
    r.call(slow(Verdict::Success, 10 * S)); // not slower than the threshold
    let t = r.call(slow(Verdict::Success, 30 * S)).unwrap();
    assert_eq!(t.cause, Cause::SlowCallRate);
    assert_eq!(r.b.stats().slow, 2);
}

#[test]
fn a_slow_trial_counts_as_failed() {
    let mut r = Rig::new(
        Breaker::consecutive(1)
            .slow_call(10 * S, 1.0)
            .minimum_calls(1),
    );
    r.fail_n(1);
    r.advance(60 * S);
    assert_eq!(
        r.call(slow(Verdict::Success, 20 * S)).unwrap().to,
        CircuitState::Open
    );
}

#[test]
fn closing_clears_the_rate_window() {
    let mut r = Rig::new(Breaker::rate_based().failure_rate(0.5, Window::Calls(4)));
    r.fail_n(4);
    assert_eq!(r.state(), CircuitState::Open);
    r.advance(60 * S);
    r.call(done(Verdict::Success));
    assert_eq!(r.state(), CircuitState::Closed);
    // With the old failures still counted this would trip at once.
    assert_eq!(r.call(done(Verdict::Failure)), None);
}

#[test]
fn set_thresholds_applies_from_the_next_failure_and_open() {
    let mut r = Rig::new(Breaker::consecutive(10));
    r.fail_n(3);
    r.b.set_thresholds(Some(3), 30 * S);
    assert_eq!(r.b.failure_threshold(), Some(3));
    let t = r.fail_n(1).unwrap();
    assert_eq!((t.failures, t.open_for), (4, Some(30 * S)));
}

#[test]
fn history_is_bounded_and_in_order() {
    let mut r = Rig::new(Breaker::consecutive(1));
    for _ in 0..40 {
        r.b.isolate(r.now);
        r.b.reset(r.now);
    }
    assert_eq!(r.b.history().len(), HISTORY_LEN);
    let gens: Vec<u64> = r.b.history().map(|t| t.generation).collect();
    assert!(gens.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(*gens.last().unwrap(), r.b.generation());
}

#[test]
fn history_records_the_open_details() {
    let mut r = Rig::new(Breaker::consecutive(2));
    let t = r.fail_n(2).unwrap();
    assert_eq!(r.b.history().last(), Some(&t));
}

#[test]
fn circuit_state_names_and_gauges() {
    let all = [
        CircuitState::Closed,
        CircuitState::HalfOpen,
        CircuitState::Open,
        CircuitState::Isolated,
    ];
    let gauges: Vec<u8> = all.iter().map(|s| s.as_gauge()).collect();
    assert_eq!(gauges, [0, 1, 2, 3]);
    assert_eq!(CircuitState::HalfOpen.to_string(), "half_open");
}

// --- Constructors validate -------------------------------------------------------------

#[test]
fn constructors_refuse_invalid_settings() {
    let now = Instant::now();
    let empty_window = Breaker::rate_based().failure_rate(0.5, Window::Calls(0));
    let err = State::new(&empty_window, now).unwrap_err();
    assert_eq!(err.field(), Some("breaker.window"));
    match &err {
        crate::ConfigError::InvalidValue { scope, .. } => {
            assert_eq!(*scope, crate::Scope::Provider(String::new()));
        }
        other => panic!("unexpected {other:?}"),
    }
    let err = State::with_seed(&Breaker::default().open_for(Duration::MAX), now, 7).unwrap_err();
    assert_eq!(err.field(), Some("breaker.open_for"));
    assert!(State::with_seed(&Breaker::default(), now, 7).is_ok());
}

// --- No duration overflows ---------------------------------------------------------------

const HUGE: [Duration; 3] = [
    Duration::MAX,
    Duration::from_secs(u64::MAX),
    Duration::from_secs(u64::MAX / 2),
];

#[test]
fn a_huge_rate_limit_hint_saturates_the_deadline() {
    for huge in HUGE {
        let mut r = Rig::new(Breaker::default());
        let t = r
            .call(done(Verdict::RateLimited {
                retry_after: Some(huge),
            }))
            .unwrap();
        assert_eq!(t.to, CircuitState::Open);
        let until = r.b.open_until().unwrap();
        assert!(until > r.now + MAX_OPEN_CHECK, "{huge:?}");
        assert_eq!(t.open_for, Some(until - r.now));
        let retry = r.reject().retry_after.unwrap();
        assert_eq!(retry, until - r.now);
        // The deadline still fires, and the trial's default timeout (the last open) too.
        r.now = until;
        let trial = r.admit();
        assert!(trial.is_trial());
        let expires = r.b.next_deadline().unwrap();
        assert!(expires > r.now);
        assert!(r.b.poll(expires).is_some());
    }
}

/// Comfortably above any validated setting: the saturated deadline is far away.
const MAX_OPEN_CHECK: Duration = Duration::from_secs(3650 * 86_400);

#[test]
fn a_huge_hint_on_a_stale_outcome_or_a_trial_saturates() {
    for huge in HUGE {
        let mut r = Rig::new(Breaker::default());
        let stale = r.admit();
        r.call(done(Verdict::RateLimited {
            retry_after: Some(30 * S),
        }));
        let hint = done(Verdict::RateLimited {
            retry_after: Some(huge),
        });
        assert_eq!(r.b.on_outcome(stale, hint, r.now), None);
        assert!(r.b.open_until().unwrap() > r.now + MAX_OPEN_CHECK);

        let mut r = Rig::new(Breaker::default());
        r.fail_n(5);
        r.advance(60 * S);
        let t = r.call(hint).unwrap();
        assert_eq!(
            (t.from, t.cause),
            (CircuitState::HalfOpen, Cause::RateLimited)
        );
        assert!(r.b.retry_after(r.now).unwrap() > MAX_OPEN_CHECK);
    }
}

#[test]
fn a_huge_base_open_duration_from_adaptive_thresholds_saturates() {
    for huge in HUGE {
        let mut r = Rig::new(Breaker::consecutive(1).jitter(0.5));
        r.b.set_thresholds(Some(1), huge);
        let t = r.fail_n(1).unwrap();
        let until = r.b.open_until().unwrap();
        assert_eq!(t.open_for, Some(until - r.now));
        // Half-open, the trial times out (after the saturated open), and the grown,
        // jittered re-open saturates too.
        r.now = until;
        let _hung = r.admit();
        let expires = r.b.next_deadline().unwrap();
        r.now = expires;
        let t = r.b.poll(r.now).unwrap();
        assert_eq!(t.cause, Cause::TrialTimedOut);
        assert!(r.b.open_until().unwrap() > r.now);
    }
}

#[test]
fn the_longest_valid_settings_do_not_overflow() {
    let max = crate::config::MAX_DURATION;
    let mut r = Rig::new(
        Breaker::consecutive(1)
            .failure_rate(0.5, Window::Time(max))
            .slow_call(max, 0.5)
            .open_for(max)
            .max_open_for(max)
            .trial_timeout(max),
    );
    r.fail_n(1);
    for _ in 0..10 {
        // A failed trial, then a hung one, each re-opening for the (capped) longest.
        r.now = r.b.next_deadline().unwrap();
        assert_eq!(
            r.call(done(Verdict::Failure)).unwrap().cause,
            Cause::TrialFailed
        );
        r.now = r.b.next_deadline().unwrap();
        let _hung = r.admit();
        r.now = r.b.next_deadline().unwrap();
        assert_eq!(r.b.poll(r.now).unwrap().cause, Cause::TrialTimedOut);
        assert!(r.b.open_for() <= max);
    }
}

// --- Ratios are compared exactly ------------------------------------------------------------

#[test]
fn every_two_decimal_ratio_trips_exactly_at_its_threshold() {
    for k in 1..=100u64 {
        let ppb = ratio_ppb(k as f64 / 100.0);
        assert_eq!(ppb, k * 10_000_000, "{k}/100");
        for n in 1..=1000u64 {
            let f = (k * n).div_ceil(100);
            assert!(reaches_ratio(f, n, ppb), "{f} of {n} at {k}%");
            assert!(!reaches_ratio(f - 1, n, ppb), "{} of {n} at {k}%", f - 1);
        }
    }
}

/// Drives a `State` to `n - 1` calls in a `Window::Calls(n)` with `f - 1` failures, then
/// reports the `n`-th: a failure (f of n) must trip, a success (f - 1 of n) must not.
fn trips_at(n: u32, k: u32) {
    let ratio = f64::from(k) / 100.0;
    let f = (k * n).div_ceil(100);
    let cfg = Breaker::rate_based()
        .failure_rate(ratio, Window::Calls(n))
        .minimum_calls(n);
    let mut r = Rig::new(cfg.clone());
    for _ in 0..n - f {
        assert_eq!(r.call(done(Verdict::Success)), None);
    }
    for _ in 1..f {
        assert_eq!(r.call(done(Verdict::Failure)), None);
    }
    let mut other = Rig {
        b: r.b.clone(),
        now: r.now,
    };
    let t = r.call(done(Verdict::Failure));
    assert_eq!(
        t.map(|t| (t.cause, t.failures)),
        Some((Cause::FailureRate, f)),
        "{f} of {n} at {ratio}"
    );
    if f > 1 || n > 1 {
        assert_eq!(
            other.call(done(Verdict::Success)),
            None,
            "{} of {n} at {ratio}",
            f - 1
        );
    }
}

#[test]
fn a_failure_rate_equal_to_the_threshold_trips() {
    // 0.55 * 100.0 == 55.000000000000007 in floats: 55 failures of 100 did not trip.
    trips_at(100, 55);
    // Every small window and a few large ones, at every two-decimal ratio (the comparison
    // itself is checked for every window up to 1000 above).
    for n in (1..=200).chain([499, 500, 999, 1000]) {
        for k in 1..=100 {
            trips_at(n, k);
        }
    }
}

#[test]
fn a_slow_call_rate_equal_to_the_threshold_trips() {
    let mut r = Rig::new(
        Breaker::rate_based()
            .slow_call(S, 0.55)
            .failure_rate(1.0, Window::Calls(100))
            .minimum_calls(100),
    );
    for _ in 0..45 {
        assert_eq!(r.call(slow(Verdict::Success, S)), None);
    }
    for _ in 0..54 {
        assert_eq!(r.call(slow(Verdict::Success, 2 * S)), None);
    }
    let t = r.call(slow(Verdict::Success, 2 * S)).unwrap();
    assert_eq!(t.cause, Cause::SlowCallRate);
}

// --- Outcome epochs ----------------------------------------------------------------------

#[test]
fn a_call_admitted_before_a_reset_of_a_closed_circuit_does_not_count_after_it() {
    let mut r = Rig::new(Breaker::consecutive(2));
    let early = r.admit();
    assert_eq!(r.b.reset(r.now), None, "closed: no transition");
    assert_eq!((r.b.generation(), r.b.epoch()), (0, 1));
    assert_eq!(early.epoch(), 0);
    assert_eq!(r.b.on_outcome(early, done(Verdict::Failure), r.now), None);
    assert_eq!(r.b.consecutive_failures(), 0);
    assert_eq!(r.b.stats().failed, 1, "still counted in the statistics");
    // It did not count towards the next run either: one fresh failure does not trip.
    assert_eq!(r.fail_n(1), None);
    assert!(r.fail_n(1).is_some());
}

#[test]
fn a_rate_window_forgets_calls_admitted_before_a_reset() {
    let mut r = Rig::new(Breaker::rate_based().failure_rate(0.5, Window::Calls(2)));
    let early = [r.admit(), r.admit()];
    r.b.reset(r.now);
    for p in early {
        assert_eq!(r.b.on_outcome(p, done(Verdict::Failure), r.now), None);
    }
    assert_eq!(r.call(done(Verdict::Success)), None);
    assert_eq!(r.state(), CircuitState::Closed);
}

#[test]
fn epochs_follow_transitions_and_closed_resets() {
    let mut r = Rig::new(Breaker::consecutive(1));
    r.fail_n(1);
    assert_eq!((r.b.generation(), r.b.epoch()), (1, 1));
    r.b.reset(r.now);
    assert_eq!((r.b.generation(), r.b.epoch()), (2, 2));
    r.b.reset(r.now);
    assert_eq!((r.b.generation(), r.b.epoch()), (2, 3));
    assert_eq!(r.admit().epoch(), 3);
    r.b.isolate(r.now);
    assert_eq!((r.b.generation(), r.b.epoch()), (3, 4));
    // Event generations have no gaps.
    let gens: Vec<u64> = r.b.history().map(|t| t.generation).collect();
    assert_eq!(gens, [1, 2, 3]);
}

#[test]
fn a_probe_success_ends_an_open_period_only() {
    let mut r = Rig::new(Breaker::consecutive(2).jitter(0.0));
    assert_eq!(r.b.probe_succeeded(r.now), None, "closed: nothing to end");
    r.fail_n(2);
    r.advance(10 * S);
    let t = r.b.probe_succeeded(r.now).unwrap();
    assert_eq!(
        (t.from, t.to, t.cause),
        (
            CircuitState::Open,
            CircuitState::HalfOpen,
            Cause::ProbeSucceeded
        )
    );
    assert_eq!(r.b.probe_succeeded(r.now), None, "half-open: trials decide");
    // The backoff is kept: a failed trial re-opens for longer.
    let t = r.call(done(Verdict::Failure)).unwrap();
    assert_eq!(t.open_for, Some(120 * S));
    r.b.isolate(r.now);
    assert_eq!(r.b.probe_succeeded(r.now), None, "isolated: only a reset");
}

#[test]
fn a_probe_success_does_not_overrule_a_rate_limit() {
    let mut r = Rig::new(Breaker::consecutive(5));
    let hint = Verdict::RateLimited {
        retry_after: Some(30 * S),
    };
    r.call(done(hint)).unwrap();
    r.advance(29 * S);
    assert_eq!(r.b.probe_succeeded(r.now), None);
    assert_eq!(r.state(), CircuitState::Open);
    r.advance(S);
    // At the hint the deadline has passed too; either way it is half-open now.
    assert!(r.b.probe_succeeded(r.now).is_some() || r.b.poll(r.now).is_some());
    assert_eq!(r.state(), CircuitState::HalfOpen);
}

#[test]
fn a_probe_success_ends_a_failure_open_before_its_deadline() {
    let mut r = Rig::new(Breaker::consecutive(1).open_for(600 * S));
    r.fail_n(1);
    r.advance(S);
    assert!(r.b.probe_succeeded(r.now).is_some());
    assert_eq!(r.b.free_trial_slots(), Some(1));
}
