//! The breaker against a small reference model, on random sequences of admissions,
//! outcomes (every verdict, stale epochs, cancellations) and time advances; and the breaker
//! on extreme durations (settings, hints, elapsed times, clock jumps), where it must never
//! panic.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::time::{deadline_after, FAR_FUTURE};
use super::window::{CountWindow, Sample, TimeWindow, BUCKETS};
use super::*;
use crate::config::{Breaker, Window, MAX_DURATION};
use crate::Verdict;

/// The reference: the specification written as plainly as possible, for consecutive-count
/// breakers without jitter.
#[derive(Debug, Clone, PartialEq)]
enum ModelPhase {
    Closed,
    Open(Instant),
    HalfOpen {
        trials: Vec<(u64, Instant)>,
        successes: u32,
    },
    Isolated,
}

#[derive(Debug)]
struct Model {
    threshold: u32,
    base: Duration,
    cap: Duration,
    max_trials: u32,
    successes_needed: u32,
    trial_timeout: Option<Duration>,
    /// How long a rate limit without a hint opens the circuit (zero: an ordinary failure).
    rate_limited_for: Duration,
    phase: ModelPhase,
    generation: u64,
    /// The outcome epoch: the generation plus resets of a closed circuit.
    epoch: u64,
    consecutive: u32,
    reopens: u32,
    last_open: Duration,
    failures_at_open: u32,
    next_trial: u64,
}

impl Model {
    fn open(&mut self, d: Duration, failures: u32, now: Instant) {
        self.last_open = d;
        self.failures_at_open = failures;
        self.go(ModelPhase::Open(now + d));
    }

    fn go(&mut self, phase: ModelPhase) {
        if phase == ModelPhase::Closed {
            self.reopens = 0;
        }
        self.phase = phase;
        self.generation += 1;
        self.epoch += 1;
        self.consecutive = 0;
    }

    fn grown(&mut self) -> Duration {
        self.reopens += 1;
        let mut d = self.base;
        for _ in 0..self.reopens.min(40) {
            d = d.saturating_mul(2);
        }
        d.min(self.cap.max(self.base))
    }

    fn tick(&mut self, now: Instant) {
        if let ModelPhase::HalfOpen { trials, .. } = &self.phase {
            if trials.iter().any(|&(_, e)| now >= e) {
                let d = self.grown();
                self.open(d, self.failures_at_open, now);
                return;
            }
        }
        if let ModelPhase::Open(until) = self.phase {
            if now >= until {
                self.go(ModelPhase::HalfOpen {
                    trials: vec![],
                    successes: 0,
                });
            }
        }
    }

    /// Returns Ok((epoch, trial id)) or Err(rejecting state).
    fn admit(&mut self, now: Instant) -> Result<(u64, Option<u64>), CircuitState> {
        self.tick(now);
        let timeout = self.trial_timeout.unwrap_or(self.last_open);
        match &mut self.phase {
            ModelPhase::Closed => Ok((self.epoch, None)),
            ModelPhase::HalfOpen { trials, successes }
                if trials.len() as u32 + *successes < self.max_trials =>
            {
                let id = self.next_trial;
                self.next_trial += 1;
                trials.push((id, now + timeout));
                Ok((self.epoch, Some(id)))
            }
            ModelPhase::HalfOpen { .. } => Err(CircuitState::HalfOpen),
            ModelPhase::Open(_) => Err(CircuitState::Open),
            ModelPhase::Isolated => Err(CircuitState::Isolated),
        }
    }

    fn report(&mut self, epoch: u64, trial: Option<u64>, outcome: Option<Verdict>, now: Instant) {
        if let ModelPhase::HalfOpen { trials, .. } = &self.phase {
            if trials.iter().any(|&(_, e)| now >= e) {
                let d = self.grown();
                self.open(d, self.failures_at_open, now);
            }
        }
        let hint = match outcome {
            Some(Verdict::RateLimited { retry_after }) => {
                Some(retry_after.unwrap_or(self.rate_limited_for)).filter(|d| !d.is_zero())
            }
            _ => None,
        };
        if epoch != self.epoch {
            if let (Some(d), ModelPhase::Open(until)) = (hint, &mut self.phase) {
                *until = (*until).max(now + d);
            }
            return;
        }
        if let ModelPhase::HalfOpen { trials, .. } = &mut self.phase {
            trials.retain(|&(id, _)| Some(id) != trial);
        }
        let Some(verdict) = outcome else { return };
        match (&mut self.phase, verdict) {
            (_, Verdict::Ignored) => {}
            (ModelPhase::Closed | ModelPhase::HalfOpen { .. }, Verdict::Isolate) => {
                self.go(ModelPhase::Isolated)
            }
            (ModelPhase::Closed, Verdict::Success) => self.consecutive = 0,
            (ModelPhase::Closed, _) => {
                self.consecutive += 1;
                if let Some(d) = hint {
                    self.open(d, self.consecutive, now);
                } else if self.consecutive >= self.threshold {
                    self.reopens = 0;
                    self.open(
                        self.base.min(self.cap.max(self.base)),
                        self.consecutive,
                        now,
                    );
                }
            }
            (ModelPhase::HalfOpen { successes, .. }, Verdict::Success) => {
                *successes += 1;
                if *successes >= self.successes_needed {
                    self.go(ModelPhase::Closed);
                }
            }
            (ModelPhase::HalfOpen { .. }, _) => match hint {
                Some(d) => self.open(d, self.failures_at_open, now),
                None => {
                    let d = self.grown();
                    self.open(d, self.failures_at_open, now);
                }
            },
            (ModelPhase::Open(_) | ModelPhase::Isolated, _) => {}
        }
    }

    fn state(&self) -> CircuitState {
        match self.phase {
            ModelPhase::Closed => CircuitState::Closed,
            ModelPhase::Open(_) => CircuitState::Open,
            ModelPhase::HalfOpen { .. } => CircuitState::HalfOpen,
            ModelPhase::Isolated => CircuitState::Isolated,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Admit,
    /// Report the outstanding call at this index (modulo) with this outcome.
    Report(usize, Option<Verdict>, u64),
    Advance(u64),
    Poll,
    Isolate,
    Reset,
}

fn verdict() -> impl Strategy<Value = Option<Verdict>> {
    prop_oneof![
        4 => Just(Some(Verdict::Success)),
        4 => Just(Some(Verdict::Failure)),
        1 => Just(Some(Verdict::Ignored)),
        1 => Just(None),
        1 => (0u64..200).prop_map(|s| Some(Verdict::RateLimited {
            retry_after: (s > 0).then(|| Duration::from_secs(s))
        })),
        1 => Just(Some(Verdict::RateLimited { retry_after: None })),
        1 => Just(Some(Verdict::Isolate)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => Just(Op::Admit),
        8 => (any::<usize>(), verdict(), 0u64..30).prop_map(|(i, v, e)| Op::Report(i, v, e)),
        5 => (0u64..90).prop_map(Op::Advance),
        1 => Just(Op::Poll),
        1 => Just(Op::Isolate),
        1 => Just(Op::Reset),
    ]
}

fn config() -> impl Strategy<Value = Breaker> {
    (
        1u32..6,
        1u64..100,
        1u64..12,
        1u32..5,
        any::<u32>(),
        proptest::option::of(1u64..60),
        0u64..10,
    )
        .prop_map(|(n, base, cap, max, succ, timeout, rate_limited_for)| {
            let mut b = Breaker::consecutive(n)
                .open_for(Duration::from_secs(base))
                .max_open_for(Duration::from_secs(base * cap))
                .jitter(0.0)
                .half_open_max_calls(max)
                .success_threshold(1 + succ % max)
                .rate_limited_for(Duration::from_secs(rate_limited_for));
            if let Some(t) = timeout {
                b = b.trial_timeout(Duration::from_secs(t));
            }
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn breaker_matches_the_model_and_keeps_its_invariants(
        cfg in config(),
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        let mut now = Instant::now();
        let mut b = State::new(&cfg, now).unwrap();
        let mut m = Model {
            threshold: cfg.consecutive.unwrap(),
            base: cfg.open_for,
            cap: cfg.effective_max_open_for(),
            max_trials: cfg.half_open_max_calls,
            successes_needed: cfg.success_threshold,
            trial_timeout: cfg.trial_timeout,
            rate_limited_for: cfg.rate_limited_for,
            phase: ModelPhase::Closed,
            generation: 0,
            epoch: 0,
            consecutive: 0,
            reopens: 0,
            last_open: cfg.open_for,
            failures_at_open: 0,
            next_trial: 0,
        };
        let mut held: Vec<(Permit, u64, Option<u64>)> = Vec::new();
        let (mut admitted, mut rejected, mut reported) = (0u64, 0u64, 0u64);

        for op in ops {
            let before = (b.state(), b.generation(), b.open_until());
            match op {
                Op::Admit => {
                    let open_before = b.open_until().filter(|&until| now < until);
                    let a = b.on_admit(now);
                    let expected = m.admit(now);
                    match (a.decision, expected) {
                        (Ok(p), Ok((epoch, trial))) => {
                            // Invariant: nothing admitted while open before the deadline.
                            prop_assert!(open_before.is_none());
                            prop_assert_eq!(p.epoch(), epoch);
                            prop_assert_eq!(p.is_trial(), trial.is_some());
                            admitted += 1;
                            held.push((p, epoch, trial));
                        }
                        (Err(r), Err(state)) => {
                            prop_assert_eq!(r.state, state);
                            if state == CircuitState::Open {
                                prop_assert_eq!(r.retry_after, b.retry_after(now));
                            }
                            rejected += 1;
                        }
                        (got, want) => prop_assert!(false, "admission {:?} vs model {:?}", got, want),
                    }
                }
                Op::Report(i, outcome, elapsed) if !held.is_empty() => {
                    let (permit, epoch, trial) = held.swap_remove(i % held.len());
                    let stale = epoch != b.epoch();
                    let o = match outcome {
                        Some(verdict) => Outcome::Completed { verdict, elapsed: Duration::from_secs(elapsed) },
                        None => Outcome::Cancelled,
                    };
                    let t = b.on_outcome(permit, o, now);
                    m.report(epoch, trial, outcome, now);
                    reported += 1;
                    if stale {
                        // Invariant: a stale outcome never changes state (only a due trial
                        // timeout, which any call would fire, may).
                        match t {
                            None => prop_assert_eq!((b.state(), b.generation()), (before.0, before.1)),
                            Some(t) => prop_assert_eq!(t.cause, Cause::TrialTimedOut),
                        }
                    }
                }
                Op::Report(..) => {}
                Op::Advance(s) => now += Duration::from_secs(s),
                Op::Poll => {
                    b.poll(now);
                    m.tick(now);
                }
                Op::Isolate => {
                    b.isolate(now);
                    if m.phase != ModelPhase::Isolated {
                        m.go(ModelPhase::Isolated);
                    }
                }
                Op::Reset => {
                    b.reset(now);
                    m.reopens = 0;
                    if m.phase == ModelPhase::Closed {
                        m.consecutive = 0;
                        m.epoch += 1;
                    } else {
                        m.go(ModelPhase::Closed);
                    }
                }
            }

            // The model agrees.
            prop_assert_eq!(b.state(), m.state());
            prop_assert_eq!(b.generation(), m.generation);
            prop_assert_eq!(b.epoch(), m.epoch);
            if let ModelPhase::Open(until) = m.phase {
                prop_assert_eq!(b.open_until(), Some(until));
            }
            // Never more trials than allowed (in flight, plus those that already succeeded).
            prop_assert!(b.trials_in_flight() <= cfg.half_open_max_calls);
            if let ModelPhase::HalfOpen { trials, successes } = &m.phase {
                prop_assert!(trials.len() as u32 + successes <= cfg.half_open_max_calls);
            }
            // The open deadline never moves earlier within one open.
            if before.0 == CircuitState::Open && b.state() == CircuitState::Open && before.1 == b.generation() {
                prop_assert!(b.open_until() >= before.2);
            }
            // Isolated is left only by reset.
            if before.0 == CircuitState::Isolated && !matches!(op, Op::Reset) {
                prop_assert_eq!(b.state(), CircuitState::Isolated);
            }
            // Generations only grow, one per transition.
            prop_assert!(b.generation() >= before.1);
            // Statistics add up.
            let s = b.stats();
            prop_assert_eq!(s.total, admitted);
            prop_assert_eq!(s.rejected, rejected);
            prop_assert_eq!(s.successful + s.failed + s.ignored + s.cancelled, reported);
            prop_assert_eq!(s.outstanding(), held.len() as u64);
            prop_assert!(s.rate_limited <= s.failed);
        }
    }

    #[test]
    fn count_window_matches_a_naive_window(
        n in 1u32..50,
        samples in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..500),
    ) {
        let mut w = CountWindow::new(n);
        let mut naive: VecDeque<(bool, bool)> = VecDeque::new();
        for (failed, slow) in samples {
            w.record(Sample { failed, slow });
            naive.push_back((failed, slow));
            if naive.len() > n as usize {
                naive.pop_front();
            }
            let mut rw = super::window::RateWindow::Calls(w.clone());
            let t = rw.totals(Instant::now());
            prop_assert_eq!(t.calls as usize, naive.len());
            prop_assert_eq!(t.failures as usize, naive.iter().filter(|s| s.0).count());
            prop_assert_eq!(t.slow as usize, naive.iter().filter(|s| s.1).count());
        }
    }

    #[test]
    fn time_window_matches_a_naive_window(
        window_ms in 20u64..10_000,
        steps in proptest::collection::vec((0u64..3_000, any::<bool>()), 0..300),
    ) {
        let t0 = Instant::now();
        let window = Duration::from_millis(window_ms);
        let width = (window / BUCKETS as u32).as_nanos() as u64;
        let mut w = super::window::RateWindow::Time(Box::new(TimeWindow::new(window, t0)));
        let mut now = t0;
        let mut naive: Vec<(u64, bool)> = Vec::new();
        for (advance, failed) in steps {
            now += Duration::from_millis(advance);
            w.record(Sample { failed, slow: false }, now);
            let epoch = (now - t0).as_nanos() as u64 / width;
            naive.push((epoch, failed));
            let live: Vec<_> = naive.iter().filter(|(e, _)| epoch - e < BUCKETS as u64).collect();
            let t = w.totals(now);
            prop_assert_eq!(t.calls as usize, live.len());
            prop_assert_eq!(t.failures as usize, live.iter().filter(|s| s.1).count());
        }
    }
}

/// Durations from the degenerate to the absurd, with the limits of validation in between.
fn extreme() -> impl Strategy<Value = Duration> {
    prop_oneof![
        2 => Just(Duration::MAX),
        2 => Just(Duration::from_secs(u64::MAX)),
        1 => Just(Duration::from_secs(u64::MAX / 2)),
        2 => Just(Duration::ZERO),
        2 => Just(Duration::from_nanos(1)),
        2 => Just(MAX_DURATION),
        1 => Just(MAX_DURATION + Duration::from_nanos(1)),
        1 => Just(FAR_FUTURE),
        2 => any::<u64>().prop_map(Duration::from_nanos),
        2 => (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        2 => (0u64..1_000).prop_map(Duration::from_secs),
    ]
}

/// Durations that validation accepts, from the shortest to the longest.
fn valid_extreme() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::from_nanos(1)),
        Just(MAX_DURATION),
        Just(MAX_DURATION - Duration::from_nanos(1)),
        (1..=MAX_DURATION.as_nanos() as u64).prop_map(Duration::from_nanos),
        (1u64..1_000).prop_map(Duration::from_secs),
    ]
}

fn extreme_ratio() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(1.0),
        Just(1e-9),
        Just(4e-10),
        Just(0.55),
        Just(0.0),
        Just(f64::NAN),
        (1u32..=100).prop_map(|k| f64::from(k) / 100.0),
    ]
}

fn valid_ratio() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(1.0),
        Just(1e-9),
        Just(0.55),
        (1u32..=100).prop_map(|k| f64::from(k) / 100.0),
    ]
}

/// Every setting: three times in four at the limits of what validation accepts, otherwise
/// possibly absurd (and then mostly refused by the constructor).
fn extreme_config() -> impl Strategy<Value = Breaker> {
    prop_oneof![
        3 => config_from(valid_extreme().boxed(), valid_ratio().boxed(), 1),
        1 => config_from(extreme().boxed(), extreme_ratio().boxed(), 0),
    ]
}

fn config_from(
    duration: BoxedStrategy<Duration>,
    ratio: BoxedStrategy<f64>,
    least: u32,
) -> impl Strategy<Value = Breaker> {
    (
        (
            proptest::option::of(least..4),
            proptest::option::of(ratio.clone()),
            prop_oneof![
                (least..5).prop_map(Window::Calls),
                duration.clone().prop_map(Window::Time)
            ],
            proptest::option::of(least..2),
            proptest::option::of((duration.clone(), ratio)),
        ),
        (
            duration.clone(),
            proptest::option::of(duration.clone()),
            prop_oneof![
                Just(0.0),
                Just(0.5),
                Just(0.999_999_999),
                Just(1.0 - f64::from(least))
            ],
            1u32..4,
            1u32..4,
            proptest::option::of(duration),
        ),
    )
        .prop_map(
            |(
                (consecutive, rate, window, minimum, slow),
                (open_for, cap, jitter, max_calls, successes, trial_timeout),
            )| {
                let mut b = match consecutive {
                    Some(n) => Breaker::consecutive(n),
                    None => Breaker::rate_based(),
                };
                if let Some(ratio) = rate {
                    b = b.failure_rate(ratio, window);
                }
                if let Some(n) = minimum {
                    b = b.minimum_calls(n);
                }
                if let Some((threshold, ratio)) = slow {
                    b = b.slow_call(threshold, ratio);
                }
                b = b
                    .open_for(open_for)
                    .jitter(jitter)
                    .half_open_max_calls(max_calls)
                    .success_threshold(successes.min(max_calls));
                if let Some(cap) = cap {
                    b = b.max_open_for(cap.max(open_for));
                }
                if let Some(t) = trial_timeout {
                    b = b.trial_timeout(t);
                }
                b
            },
        )
}

fn extreme_verdict() -> impl Strategy<Value = Option<Verdict>> {
    prop_oneof![
        3 => Just(Some(Verdict::Success)),
        3 => Just(Some(Verdict::Failure)),
        1 => Just(Some(Verdict::Ignored)),
        1 => Just(Some(Verdict::Isolate)),
        1 => Just(None),
        1 => Just(Some(Verdict::RateLimited { retry_after: None })),
        4 => extreme().prop_map(|d| Some(Verdict::RateLimited { retry_after: Some(d) })),
    ]
}

#[derive(Debug, Clone)]
enum ExtremeOp {
    Admit,
    Report(usize, Option<Verdict>, Duration),
    /// Moves the clock (saturating: the test's own clock must not overflow either).
    Advance(Duration),
    /// Moves the clock to the next deadline, if any.
    ToDeadline,
    Poll,
    Isolate,
    Reset,
    /// Adaptive thresholds bypass validation: any base open duration.
    SetThresholds(Option<u32>, Duration),
}

fn extreme_op() -> impl Strategy<Value = ExtremeOp> {
    prop_oneof![
        6 => Just(ExtremeOp::Admit),
        6 => (any::<usize>(), extreme_verdict(), extreme())
            .prop_map(|(i, v, e)| ExtremeOp::Report(i, v, e)),
        2 => extreme().prop_map(ExtremeOp::Advance),
        2 => Just(ExtremeOp::ToDeadline),
        1 => Just(ExtremeOp::Poll),
        1 => Just(ExtremeOp::Isolate),
        1 => Just(ExtremeOp::Reset),
        1 => (proptest::option::of(0u32..3), extreme())
            .prop_map(|(n, d)| ExtremeOp::SetThresholds(n, d)),
    ]
}

fn durations_of(cfg: &Breaker) -> Vec<Duration> {
    let mut all = vec![cfg.open_for];
    all.extend(cfg.max_open_for);
    all.extend(cfg.trial_timeout);
    if cfg.failure_rate.is_some() || cfg.slow_call.is_some() {
        if let Window::Time(d) = cfg.window {
            all.push(d);
        }
    }
    all.extend(cfg.slow_call.map(|(d, _)| d));
    all
}

/// Checks what must hold after every step, whatever the durations.
fn check_deadlines(b: &State, now: Instant) -> Result<(), TestCaseError> {
    match b.state() {
        CircuitState::Open => {
            // An open circuit always has a deadline, within the horizon, and reaching it
            // moves the circuit to half-open.
            let until = b.next_deadline();
            prop_assert!(until.is_some() && until == b.open_until());
            let until = until.unwrap();
            let retry = b.retry_after(now);
            prop_assert_eq!(retry, Some(until.saturating_duration_since(now)));
            prop_assert!(retry.unwrap() <= FAR_FUTURE);
            prop_assert!(b.open_for() <= FAR_FUTURE);
            let mut probe = b.clone();
            let t = probe.poll(until.max(now));
            prop_assert_eq!(t.map(|t| t.to), Some(CircuitState::HalfOpen));
        }
        CircuitState::HalfOpen if b.trials_in_flight() > 0 => {
            let until = b.next_deadline();
            prop_assert!(until.is_some());
            prop_assert!(until.unwrap().saturating_duration_since(now) <= FAR_FUTURE);
        }
        CircuitState::Closed | CircuitState::Isolated => {
            prop_assert_eq!(b.next_deadline(), None);
            prop_assert_eq!(b.retry_after(now), None);
        }
        CircuitState::HalfOpen => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn extreme_durations_never_panic_and_deadlines_stay_sane(
        cfg in extreme_config(),
        ops in proptest::collection::vec(extreme_op(), 1..200),
        seed in any::<u64>(),
    ) {
        let mut now = Instant::now();
        let b = State::with_seed(&cfg, now, seed);
        // Validation is the first line: no accepted setting is longer than MAX_DURATION.
        if durations_of(&cfg).iter().any(|&d| d > MAX_DURATION) {
            prop_assert!(b.is_err(), "accepted {:?}", cfg);
        }
        let Ok(mut b) = b else { return Ok(()) };
        let mut held: Vec<Permit> = Vec::new();

        for op in ops {
            let before = (b.state(), b.generation(), b.epoch());
            let transition = match op {
                ExtremeOp::Admit => {
                    let a = b.on_admit(now);
                    match a.decision {
                        Ok(p) => held.push(p),
                        Err(r) => {
                            prop_assert_eq!(r.state == CircuitState::Isolated, r.retry_after.is_none());
                            if let Some(retry) = r.retry_after {
                                prop_assert!(retry <= FAR_FUTURE, "{:?}", retry);
                            }
                            if r.state == CircuitState::Open {
                                prop_assert_eq!(r.retry_after, b.retry_after(now));
                            }
                        }
                    }
                    a.transition
                }
                ExtremeOp::Report(i, outcome, elapsed) if !held.is_empty() => {
                    let permit = held.swap_remove(i % held.len());
                    let o = match outcome {
                        Some(verdict) => Outcome::Completed { verdict, elapsed },
                        None => Outcome::Cancelled,
                    };
                    b.on_outcome(permit, o, now)
                }
                ExtremeOp::Report(..) => None,
                ExtremeOp::Advance(d) => {
                    now = deadline_after(now, d);
                    None
                }
                ExtremeOp::ToDeadline => {
                    if let Some(deadline) = b.next_deadline() {
                        now = now.max(deadline);
                    }
                    None
                }
                ExtremeOp::Poll => b.poll(now),
                ExtremeOp::Isolate => b.isolate(now),
                ExtremeOp::Reset => b.reset(now),
                ExtremeOp::SetThresholds(n, d) => {
                    b.set_thresholds(n, d);
                    None
                }
            };
            if let Some(t) = transition {
                prop_assert_eq!(t.generation, b.generation());
                prop_assert!(t.open_for.is_some() == (t.to == CircuitState::Open));
                if let Some(d) = t.open_for {
                    prop_assert!(d <= FAR_FUTURE, "{:?}", d);
                }
            }
            check_deadlines(&b, now)?;
            // Generations count transitions; epochs never fall behind them.
            prop_assert!(b.generation() >= before.1 && b.generation() <= before.1 + 1);
            prop_assert!(b.epoch() >= before.2);
            prop_assert!(b.epoch() >= b.generation());
            let s = b.stats();
            prop_assert!(s.rate_limited <= s.failed);
            prop_assert_eq!(s.outstanding(), held.len() as u64);
        }
    }
}
