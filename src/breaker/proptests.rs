//! The breaker against a small reference model, on random sequences of admissions,
//! outcomes (every verdict, stale generations, cancellations) and time advances.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::window::{CountWindow, Sample, TimeWindow, BUCKETS};
use super::*;
use crate::config::Breaker;
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
    phase: ModelPhase,
    generation: u64,
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

    /// Returns Ok((generation, trial id)) or Err(rejecting state).
    fn admit(&mut self, now: Instant) -> Result<(u64, Option<u64>), CircuitState> {
        self.tick(now);
        let timeout = self.trial_timeout.unwrap_or(self.last_open);
        match &mut self.phase {
            ModelPhase::Closed => Ok((self.generation, None)),
            ModelPhase::HalfOpen { trials, successes }
                if trials.len() as u32 + *successes < self.max_trials =>
            {
                let id = self.next_trial;
                self.next_trial += 1;
                trials.push((id, now + timeout));
                Ok((self.generation, Some(id)))
            }
            ModelPhase::HalfOpen { .. } => Err(CircuitState::HalfOpen),
            ModelPhase::Open(_) => Err(CircuitState::Open),
            ModelPhase::Isolated => Err(CircuitState::Isolated),
        }
    }

    fn report(&mut self, gen: u64, trial: Option<u64>, outcome: Option<Verdict>, now: Instant) {
        if let ModelPhase::HalfOpen { trials, .. } = &self.phase {
            if trials.iter().any(|&(_, e)| now >= e) {
                let d = self.grown();
                self.open(d, self.failures_at_open, now);
            }
        }
        let hint = match outcome {
            Some(Verdict::RateLimited {
                retry_after: Some(d),
            }) if !d.is_zero() => Some(d),
            _ => None,
        };
        if gen != self.generation {
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
    )
        .prop_map(|(n, base, cap, max, succ, timeout)| {
            let mut b = Breaker::consecutive(n)
                .open_for(Duration::from_secs(base))
                .max_open_for(Duration::from_secs(base * cap))
                .jitter(0.0)
                .half_open_max_calls(max)
                .success_threshold(1 + succ % max);
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
        let mut b = State::new(&cfg, now);
        let mut m = Model {
            threshold: cfg.consecutive.unwrap(),
            base: cfg.open_for,
            cap: cfg.effective_max_open_for(),
            max_trials: cfg.half_open_max_calls,
            successes_needed: cfg.success_threshold,
            trial_timeout: cfg.trial_timeout,
            phase: ModelPhase::Closed,
            generation: 0,
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
                        (Ok(p), Ok((gen, trial))) => {
                            // Invariant: nothing admitted while open before the deadline.
                            prop_assert!(open_before.is_none());
                            prop_assert_eq!(p.generation(), gen);
                            prop_assert_eq!(p.is_trial(), trial.is_some());
                            admitted += 1;
                            held.push((p, gen, trial));
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
                    let (permit, gen, trial) = held.swap_remove(i % held.len());
                    let stale = gen != b.generation();
                    let o = match outcome {
                        Some(verdict) => Outcome::Completed { verdict, elapsed: Duration::from_secs(elapsed) },
                        None => Outcome::Cancelled,
                    };
                    let t = b.on_outcome(permit, o, now);
                    m.report(gen, trial, outcome, now);
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
                    } else {
                        m.go(ModelPhase::Closed);
                    }
                }
            }

            // The model agrees.
            prop_assert_eq!(b.state(), m.state());
            prop_assert_eq!(b.generation(), m.generation);
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
