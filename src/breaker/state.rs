//! The circuit's states and the transitions between them.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

mod remote;

use super::backoff::Backoff;
use super::time::{clamp, deadline_after};
use super::window::{RateWindow, Sample};
use super::{ratio_ppb, reaches_ratio};
use crate::classify::Verdict;
use crate::config::{Breaker, Scope};
use crate::error::ConfigError;

/// The window [`State::recent_failure_rate`] is measured over for a breaker without a rate
/// condition: the last minute.
const OBSERVED_WINDOW: Duration = Duration::from_secs(60);

/// How many transitions [`State::history`] keeps.
pub const HISTORY_LEN: usize = 32;

/// The state of a circuit, without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls pass; outcomes are counted.
    Closed,
    /// A bounded number of trial calls test whether the provider recovered.
    HalfOpen,
    /// Calls are rejected at once until the open deadline.
    Open,
    /// Taken out by a verdict or an operator; only a reset brings it back.
    Isolated,
}

impl CircuitState {
    /// The circuit state gauge value: 0 closed, 1 half-open, 2 open, 3 isolated.
    pub fn as_gauge(self) -> u8 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
            CircuitState::Isolated => 3,
        }
    }

    /// A lower-case name: `closed`, `half_open`, `open`, `isolated`.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::HalfOpen => "half_open",
            CircuitState::Open => "open",
            CircuitState::Isolated => "isolated",
        }
    }
}

impl std::fmt::Display for CircuitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// The consecutive-failure threshold was reached.
    ConsecutiveFailures,
    /// The failure rate over the window reached its threshold.
    FailureRate,
    /// The slow-call rate over the window reached its threshold.
    SlowCallRate,
    /// The provider rate-limited a call: for its `Retry-After` hint, or for
    /// [`Breaker::rate_limited_for`] when it gave none.
    RateLimited,
    /// A half-open trial failed.
    TrialFailed,
    /// A half-open trial did not report within the trial timeout.
    TrialTimedOut,
    /// A call's verdict was [`Verdict::Isolate`].
    IsolatingVerdict,
    /// An operator isolated or reset the circuit.
    Operator,
    /// The open deadline passed.
    OpenElapsed,
    /// Enough half-open trials succeeded.
    TrialsSucceeded,
    /// A recovery probe (`Provider::probe`) succeeded while open: the open period ended
    /// early, and real calls confirm as half-open trials.
    ProbeSucceeded,
}

impl Cause {
    /// A stable snake-case name, for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::ConsecutiveFailures => "consecutive_failures",
            Cause::FailureRate => "failure_rate",
            Cause::SlowCallRate => "slow_call_rate",
            Cause::RateLimited => "rate_limited",
            Cause::TrialFailed => "trial_failed",
            Cause::TrialTimedOut => "trial_timed_out",
            Cause::IsolatingVerdict => "isolating_verdict",
            Cause::Operator => "operator",
            Cause::OpenElapsed => "open_elapsed",
            Cause::TrialsSucceeded => "trials_succeeded",
            Cause::ProbeSucceeded => "probe_succeeded",
        }
    }
}

/// One change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: CircuitState,
    /// The state entered.
    pub to: CircuitState,
    /// The generation entered (every transition bumps it).
    pub generation: u64,
    /// Why.
    pub cause: Cause,
    /// When.
    pub at: Instant,
    /// The counted failures behind an open (consecutive count, or failures in the window).
    pub failures: u32,
    /// When `to` is [`CircuitState::Open`]: how long it stays open.
    pub open_for: Option<Duration>,
    /// When `to` is [`CircuitState::Closed`]: how long the provider was out of service, from
    /// the transition that took it out of closed (its first open, or an isolation) to this
    /// close, re-opens and half-open trials included.
    pub out_for: Option<Duration>,
}

/// The right to make one call, handed out by [`State::on_admit`] and given back with its
/// outcome to [`State::on_outcome`].
///
/// It carries the [outcome epoch](State::epoch) it was admitted under: reported under a later
/// epoch (after a transition, or a reset of a closed circuit), its outcome is stale and only
/// updates the statistics.
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    epoch: u64,
    trial: Option<u64>,
    /// Admitted outside [`State::on_admit`] (the provider's lock-free path for closed
    /// circuits), so not yet in [`Stats::total`].
    external: bool,
}

impl Permit {
    /// A permit for a call admitted while closed without asking the state machine (the
    /// lock-free path), under the [epoch](State::epoch) the caller read.
    pub(crate) fn closed(epoch: u64) -> Self {
        Permit {
            epoch,
            trial: None,
            external: true,
        }
    }

    /// A copy, to send again a report that was lost in transit (the caller knows the first
    /// was never processed).
    pub(crate) fn duplicate(&self) -> Permit {
        Permit {
            epoch: self.epoch,
            trial: self.trial,
            external: self.external,
        }
    }

    /// The [outcome epoch](State::epoch) the call was admitted under.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the call is a half-open trial.
    pub fn is_trial(&self) -> bool {
        self.trial.is_some()
    }
}

/// Why a call was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// The state that rejected it: open, half-open with every trial slot taken, or isolated.
    pub state: CircuitState,
    /// When to try again: the open deadline, or the earliest trial timeout while half-open;
    /// `None` while isolated.
    pub retry_after: Option<Duration>,
    /// The counted failures behind the current open.
    pub failure_count: u32,
}

/// The result of [`State::on_admit`].
#[derive(Debug, PartialEq, Eq)]
pub struct Admission {
    /// The permit, or why there is none.
    pub decision: Result<Permit, Rejection>,
    /// The transition admission caused (open deadline passed, or a trial timed out).
    pub transition: Option<Transition>,
}

/// How an admitted call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The call completed (or timed out, as a [`Verdict::Failure`]) after `elapsed`.
    Completed {
        /// What the call's result says about the provider.
        verdict: Verdict,
        /// How long the call took.
        elapsed: Duration,
    },
    /// The caller dropped the call before it finished. Decides nothing.
    Cancelled,
}

/// Counters over the breaker's life. Every admitted call is in `total` and, once it reports,
/// in exactly one of `successful`, `failed`, `ignored` and `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Calls admitted.
    pub total: u64,
    /// Calls that succeeded.
    pub successful: u64,
    /// Calls counted against the provider (failures, rate limits, isolating verdicts).
    pub failed: u64,
    /// Calls whose verdict was [`Verdict::Ignored`].
    pub ignored: u64,
    /// Calls dropped by their caller.
    pub cancelled: u64,
    /// Calls rejected without being admitted.
    pub rejected: u64,
    /// Completed calls slower than the slow-call threshold (a subset of the above).
    pub slow: u64,
    /// Failed calls that were rate limits (a subset of `failed`).
    pub rate_limited: u64,
    /// Half-open trials that exceeded the trial timeout (they are still counted in their
    /// own outcome when they report).
    pub trial_timeouts: u64,
    /// Calls admitted outside [`State::on_admit`] (a provider's lock-free path for closed
    /// circuits) whose outcome was reported here; they are counted in `total` when reported.
    pub external: u64,
    /// When the last counted failure was reported.
    pub last_failure: Option<Instant>,
}

impl Stats {
    /// Admitted calls that have not reported yet.
    pub fn outstanding(&self) -> u64 {
        self.total - (self.successful + self.failed + self.ignored + self.cancelled)
    }
}

#[derive(Debug, Clone)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { trials: Vec<Trial>, successes: u32 },
    Isolated,
}

#[derive(Debug, Clone, Copy)]
struct Trial {
    id: u64,
    expires: Instant,
}

/// A circuit breaker as a pure state machine.
///
/// It never reads a clock, locks or spawns: every method takes `now`, and returns the
/// transition it caused. Drive it with [`on_admit`](Self::on_admit) before a call and
/// [`on_outcome`](Self::on_outcome) after; [`poll`](Self::poll) lets timers fire without a
/// call.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use fusebox::breaker::{CircuitState, Outcome, State};
/// use fusebox::{Breaker, Verdict};
///
/// let t0 = Instant::now();
/// let mut breaker = State::new(&Breaker::consecutive(2), t0)?;
/// let failure = Outcome::Completed { verdict: Verdict::Failure, elapsed: Duration::ZERO };
/// for _ in 0..2 {
///     let permit = breaker.on_admit(t0).decision.unwrap();
///     breaker.on_outcome(permit, failure, t0);
/// }
/// assert_eq!(breaker.state(), CircuitState::Open);
/// let rejected = breaker.on_admit(t0 + Duration::from_secs(1)).decision.unwrap_err();
/// assert_eq!(rejected.retry_after, Some(Duration::from_secs(59)));
/// # Ok::<(), fusebox::ConfigError>(())
/// ```
///
/// Invalid settings are refused, not left to fail later:
///
/// ```
/// use tokio::time::Instant;
/// use fusebox::breaker::State;
/// use fusebox::{Breaker, Window};
///
/// let empty_window = Breaker::rate_based().failure_rate(0.5, Window::Calls(0));
/// let err = State::new(&empty_window, Instant::now()).unwrap_err();
/// assert_eq!(err.field(), Some("breaker.window"));
/// ```
#[derive(Debug, Clone)]
pub struct State {
    phase: Phase,
    generation: u64,
    /// The outcome epoch: bumped with every transition and by a reset of a closed circuit.
    epoch: u64,
    consecutive_threshold: Option<u32>,
    /// The failure-rate threshold, in parts per billion.
    failure_rate: Option<u64>,
    /// The slow-call threshold and the slow-call rate threshold, in parts per billion.
    slow_call: Option<(Duration, u64)>,
    minimum_calls: u32,
    half_open_max_calls: u32,
    success_threshold: u32,
    trial_timeout: Option<Duration>,
    /// How long a rate limit without a hint opens the circuit (zero: it does not).
    rate_limited_for: Duration,
    window: Option<RateWindow>,
    backoff: Backoff,
    consecutive: u32,
    /// The counted failures behind the current (or last) open.
    open_failures: u32,
    /// How long the current (or last) open lasts.
    last_open_for: Duration,
    next_trial: u64,
    stats: Stats,
    history: VecDeque<Transition>,
    /// When the circuit last left closed; `None` while closed.
    out_since: Option<Instant>,
    /// While open: the earliest instant a probe may end the open period (a rate limit's
    /// deadline: the provider said when to come back).
    probe_floor: Option<Instant>,
}

impl State {
    /// A closed breaker with the given settings.
    ///
    /// # Errors
    ///
    /// The first invalid setting, as [`Provider::validate`](crate::Provider::validate) would
    /// report it. A `Breaker` alone has no provider name, so the error's scope is
    /// `Scope::Provider("")`.
    pub fn new(config: &Breaker, now: Instant) -> Result<Self, ConfigError> {
        Self::with_seed(config, now, 0x9E37_79B9_7F4A_7C15)
    }

    /// Like [`new`](Self::new), with the seed of the jitter's random source (give each
    /// provider its own, so that their re-opens do not line up).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_seed(config: &Breaker, now: Instant, seed: u64) -> Result<Self, ConfigError> {
        config.validate(&Scope::Provider(String::new()))?;
        // Without a rate condition the window only observes (for the recent failure rate):
        // the last minute. Nothing trips on it, since no rate threshold is set.
        let observed = if config.failure_rate.is_some() || config.slow_call.is_some() {
            config.window
        } else {
            crate::config::Window::Time(OBSERVED_WINDOW)
        };
        let window = Some(RateWindow::new(observed, now));
        Ok(State {
            phase: Phase::Closed,
            generation: 0,
            epoch: 0,
            consecutive_threshold: config.consecutive,
            failure_rate: config.failure_rate.map(ratio_ppb),
            slow_call: config
                .slow_call
                .map(|(threshold, ratio)| (threshold, ratio_ppb(ratio))),
            minimum_calls: config.effective_minimum_calls(),
            half_open_max_calls: config.half_open_max_calls,
            success_threshold: config.success_threshold,
            trial_timeout: config.trial_timeout,
            rate_limited_for: config.rate_limited_for,
            window,
            backoff: Backoff::new(
                config.open_for,
                config.effective_max_open_for(),
                config.jitter,
                seed,
            ),
            consecutive: 0,
            open_failures: 0,
            last_open_for: config.open_for,
            next_trial: 0,
            stats: Stats::default(),
            history: VecDeque::with_capacity(HISTORY_LEN),
            out_since: None,
            probe_floor: None,
        })
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        match self.phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
            Phase::Isolated => CircuitState::Isolated,
        }
    }

    /// The current generation: how many transitions have happened (the number events
    /// carry; it has no gaps).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The outcome epoch: the transition [generation](Self::generation) plus the resets of a
    /// closed circuit. Every [`Permit`] carries the epoch it was admitted under; a permit from
    /// an older epoch is stale, and its outcome only updates the statistics.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The open deadline, while open.
    pub fn open_until(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open { until } => Some(until),
            _ => None,
        }
    }

    /// How long until the circuit admits a trial, while open.
    pub fn retry_after(&self, now: Instant) -> Option<Duration> {
        self.open_until()
            .map(|until| until.saturating_duration_since(now))
    }

    /// The lifetime counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Counted failures over counted calls (successes and failures, half-open trials
    /// included) in the breaker's window: its rate window, or the last minute when it has
    /// no rate condition. The window starts afresh when the
    /// circuit closes. `None` without calls in it.
    pub fn recent_failure_rate(&mut self, now: Instant) -> Option<f64> {
        let totals = self.window.as_mut()?.totals(now);
        (totals.calls > 0).then(|| totals.failures as f64 / totals.calls as f64)
    }

    /// The latest transitions, oldest first (at most [`HISTORY_LEN`]).
    pub fn history(&self) -> impl ExactSizeIterator<Item = &Transition> {
        self.history.iter()
    }

    /// The consecutive-failure threshold in force, if that condition is enabled.
    pub fn failure_threshold(&self) -> Option<u32> {
        self.consecutive_threshold
    }

    /// The current run of consecutive counted failures.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    /// The base open duration in force.
    pub fn base_open_for(&self) -> Duration {
        self.backoff.base()
    }

    /// How long the current (or last) open lasts.
    pub fn open_for(&self) -> Duration {
        self.last_open_for
    }

    /// The counted failures behind the current (or last) open.
    pub fn failure_count(&self) -> u32 {
        self.open_failures
    }

    /// The provider announced (in its rate-limit headers) that a quota has nothing left
    /// until `until`: a closed or half-open circuit opens for the time left, as a rate limit
    /// (no failure is counted and the backoff does not grow); an open one stays open at least
    /// until then (a deadline is never shortened); an isolated one stays isolated.
    pub fn quota_exhausted(&mut self, until: Instant, now: Instant) -> Option<Transition> {
        let left = until.saturating_duration_since(now);
        if left.is_zero() {
            return None;
        }
        match &mut self.phase {
            Phase::Open { until: deadline } => {
                *deadline = (*deadline).max(until);
                self.probe_floor = Some(self.probe_floor.map_or(until, |f| f.max(until)));
                None
            }
            Phase::Isolated => None,
            Phase::Closed | Phase::HalfOpen { .. } => {
                let failures = self.open_failures;
                Some(self.open(Cause::RateLimited, failures, left, now))
            }
        }
    }

    /// While half-open: how many more trials it admits now (0 when every slot is taken);
    /// `None` in any other state.
    pub fn free_trial_slots(&self) -> Option<u32> {
        match &self.phase {
            Phase::HalfOpen { trials, successes } => Some(
                self.half_open_max_calls
                    .saturating_sub(trials.len() as u32 + *successes),
            ),
            _ => None,
        }
    }

    /// Half-open trials in flight.
    pub fn trials_in_flight(&self) -> u32 {
        match &self.phase {
            Phase::HalfOpen { trials, .. } => trials.len() as u32,
            _ => 0,
        }
    }

    /// Replaces the consecutive-failure threshold and the base open duration (adaptive
    /// thresholds). Takes effect from the next failure and the next open; never trips by
    /// itself.
    pub fn set_thresholds(&mut self, consecutive: Option<u32>, base_open_for: Duration) {
        self.consecutive_threshold = consecutive;
        self.backoff.set_base(base_open_for);
    }

    /// Records `n` successes of calls admitted while closed and settled without a report
    /// (the provider's lock-free path): they end the consecutive-failure run and fill the rate
    /// window. Does nothing unless closed, and leaves [`Stats`] alone (their caller counts
    /// them).
    pub fn record_successes(&mut self, n: u64, now: Instant) {
        if n == 0 || !matches!(self.phase, Phase::Closed) {
            return;
        }
        self.consecutive = 0;
        if let Some(window) = &mut self.window {
            window.record_many(
                Sample {
                    failed: false,
                    slow: false,
                },
                n,
                now,
            );
        }
    }

    /// Asks to make a call at `now`.
    ///
    /// Closed: admitted. Open before the deadline, isolated, or half-open with every trial
    /// slot taken: rejected (and counted in [`Stats::rejected`]). Open at or after the
    /// deadline: moves to half-open and admits the first trial.
    pub fn on_admit(&mut self, now: Instant) -> Admission {
        let transition = self.poll(now);
        let decision = match &mut self.phase {
            Phase::Closed => Ok(Permit {
                epoch: self.epoch,
                trial: None,
                external: false,
            }),
            Phase::HalfOpen { trials, successes }
                if trials.len() as u32 + *successes < self.half_open_max_calls =>
            {
                let id = self.next_trial;
                self.next_trial += 1;
                let timeout = self.trial_timeout.unwrap_or(self.last_open_for);
                trials.push(Trial {
                    id,
                    expires: deadline_after(now, timeout),
                });
                Ok(Permit {
                    epoch: self.epoch,
                    trial: Some(id),
                    external: false,
                })
            }
            Phase::HalfOpen { trials, .. } => Err(Rejection {
                state: CircuitState::HalfOpen,
                retry_after: trials
                    .iter()
                    .map(|t| t.expires.saturating_duration_since(now))
                    .min(),
                failure_count: self.open_failures,
            }),
            Phase::Open { until } => Err(Rejection {
                state: CircuitState::Open,
                retry_after: Some(until.saturating_duration_since(now)),
                failure_count: self.open_failures,
            }),
            Phase::Isolated => Err(Rejection {
                state: CircuitState::Isolated,
                retry_after: None,
                failure_count: self.open_failures,
            }),
        };
        match decision {
            Ok(_) => self.stats.total += 1,
            Err(_) => self.stats.rejected += 1,
        }
        Admission {
            decision,
            transition,
        }
    }

    /// Reports how an admitted call ended.
    ///
    /// Statistics always count it. Only an outcome admitted under the current
    /// [epoch](Self::epoch) can change state; an older one (a call that started before the
    /// last transition or reset) never does, except that a rate limit still pushes an open
    /// deadline later (to its `Retry-After` hint, or [`Breaker::rate_limited_for`] without
    /// one).
    pub fn on_outcome(
        &mut self,
        permit: Permit,
        outcome: Outcome,
        now: Instant,
    ) -> Option<Transition> {
        let expired = self.expire_trials(now);
        self.stats.total += u64::from(permit.external);
        self.stats.external += u64::from(permit.external);
        let sample = self.count(outcome, now);
        let stale = permit.epoch != self.epoch;
        if let Phase::HalfOpen { trials, .. } = &mut self.phase {
            if !stale {
                trials.retain(|t| Some(t.id) != permit.trial);
            }
        }
        if stale {
            if let (Some(d), Phase::Open { until }) =
                (self.rate_limit_open(outcome), &mut self.phase)
            {
                *until = (*until).max(deadline_after(now, d));
                self.probe_floor = Some(*until);
            }
            return expired;
        }
        let Some(sample) = sample else {
            // Ignored or cancelled: decides nothing (a trial's slot is already freed).
            return expired;
        };
        let Outcome::Completed { verdict, .. } = outcome else {
            return expired;
        };
        match self.phase {
            Phase::Closed => self.closed_outcome(verdict, sample, now),
            Phase::HalfOpen { .. } => self.trial_outcome(verdict, sample, now),
            // Nothing is admitted under the epoch of an open or isolated phase.
            Phase::Open { .. } | Phase::Isolated => None,
        }
    }

    /// Fires the timers due at `now`: a half-open trial past its timeout re-opens the
    /// circuit; an open circuit past its deadline becomes half-open. At most one transition.
    pub fn poll(&mut self, now: Instant) -> Option<Transition> {
        if let Some(transition) = self.expire_trials(now) {
            return Some(transition);
        }
        match self.phase {
            Phase::Open { until } if now >= until => Some(self.transition(
                Phase::HalfOpen {
                    trials: Vec::new(),
                    successes: 0,
                },
                Cause::OpenElapsed,
                now,
            )),
            _ => None,
        }
    }

    /// When the next timer is due: the open deadline, or the earliest trial timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Open { until } => Some(*until),
            Phase::HalfOpen { trials, .. } => trials.iter().map(|t| t.expires).min(),
            _ => None,
        }
    }

    /// A recovery probe succeeded at `now`: an open circuit becomes half-open at once, as if
    /// its deadline had passed (the backoff level is kept, so a failed trial re-opens for
    /// longer), with [`Cause::ProbeSucceeded`]. No transition in any other state, nor before
    /// the deadline of an open caused by a rate limit (the provider said when to come back:
    /// a probe of another endpoint does not overrule it).
    pub fn probe_succeeded(&mut self, now: Instant) -> Option<Transition> {
        if !matches!(self.phase, Phase::Open { .. }) || self.probe_floor.is_some_and(|f| now < f) {
            return None;
        }
        Some(self.transition(
            Phase::HalfOpen {
                trials: Vec::new(),
                successes: 0,
            },
            Cause::ProbeSucceeded,
            now,
        ))
    }

    /// Takes the provider out until [`reset`](Self::reset). No transition if already isolated.
    pub fn isolate(&mut self, now: Instant) -> Option<Transition> {
        if matches!(self.phase, Phase::Isolated) {
            return None;
        }
        Some(self.transition(Phase::Isolated, Cause::Operator, now))
    }

    /// Closes the circuit from any state and forgets its failures and re-opens. No
    /// transition if already closed: the counts are still cleared, and the
    /// [epoch](Self::epoch) moves on, so calls admitted before the reset do not count in the
    /// run after it.
    pub fn reset(&mut self, now: Instant) -> Option<Transition> {
        self.backoff.reset();
        if matches!(self.phase, Phase::Closed) {
            self.epoch += 1;
            self.clear_counts();
            return None;
        }
        Some(self.transition(Phase::Closed, Cause::Operator, now))
    }

    /// Updates the statistics for an outcome; returns the window sample for a completed,
    /// counted or successful call (None for ignored and cancelled calls).
    fn count(&mut self, outcome: Outcome, now: Instant) -> Option<Sample> {
        let Outcome::Completed { verdict, elapsed } = outcome else {
            self.stats.cancelled += 1;
            return None;
        };
        let slow = self
            .slow_call
            .is_some_and(|(threshold, _)| elapsed > threshold);
        self.stats.slow += u64::from(slow);
        match verdict {
            Verdict::Success => self.stats.successful += 1,
            Verdict::Ignored => {
                self.stats.ignored += 1;
                return None;
            }
            Verdict::Failure | Verdict::RateLimited { .. } | Verdict::Isolate => {
                self.stats.failed += 1;
                self.stats.rate_limited +=
                    u64::from(matches!(verdict, Verdict::RateLimited { .. }));
                self.stats.last_failure = Some(now);
            }
        }
        Some(Sample {
            failed: verdict.is_failure(),
            slow,
        })
    }

    fn closed_outcome(
        &mut self,
        verdict: Verdict,
        sample: Sample,
        now: Instant,
    ) -> Option<Transition> {
        if verdict == Verdict::Isolate {
            return Some(self.transition(Phase::Isolated, Cause::IsolatingVerdict, now));
        }
        if let Some(d) = self.rate_limit_open_for(verdict) {
            self.consecutive = self.consecutive.saturating_add(1);
            return Some(self.open(Cause::RateLimited, self.consecutive, d, now));
        }
        self.consecutive = if sample.failed {
            self.consecutive.saturating_add(1)
        } else {
            0
        };
        let totals = self.window.as_mut().map(|window| {
            window.record(sample, now);
            window.totals(now)
        });
        if sample.failed
            && self
                .consecutive_threshold
                .is_some_and(|n| self.consecutive >= n)
        {
            let d = self.backoff.first();
            return Some(self.open(Cause::ConsecutiveFailures, self.consecutive, d, now));
        }
        let totals = totals?;
        if totals.calls < u64::from(self.minimum_calls) {
            return None;
        }
        let cause = if self
            .failure_rate
            .is_some_and(|ppb| reaches_ratio(totals.failures, totals.calls, ppb))
        {
            Cause::FailureRate
        } else if self
            .slow_call
            .is_some_and(|(_, ppb)| reaches_ratio(totals.slow, totals.calls, ppb))
        {
            Cause::SlowCallRate
        } else {
            return None;
        };
        let d = self.backoff.first();
        let failures = u32::try_from(totals.failures).unwrap_or(u32::MAX);
        Some(self.open(cause, failures, d, now))
    }

    fn trial_outcome(
        &mut self,
        verdict: Verdict,
        sample: Sample,
        now: Instant,
    ) -> Option<Transition> {
        // A trial's outcome is recent evidence too (the window is cleared when the circuit
        // closes, so it never trips a closed circuit).
        if let Some(window) = &mut self.window {
            window.record(sample, now);
        }
        if verdict == Verdict::Isolate {
            return Some(self.transition(Phase::Isolated, Cause::IsolatingVerdict, now));
        }
        if let Some(hint) = self.rate_limit_open_for(verdict) {
            // A rate limit is a quota signal, not ill health: the open lasts what the provider
            // said (or `rate_limited_for`), without growing the backoff.
            return Some(self.open(Cause::RateLimited, self.open_failures, hint, now));
        }
        if sample.failed || sample.slow {
            let grown = self.backoff.grow();
            return Some(self.open(Cause::TrialFailed, self.open_failures, grown, now));
        }
        let Phase::HalfOpen { successes, .. } = &mut self.phase else {
            return None;
        };
        *successes += 1;
        if *successes < self.success_threshold {
            return None;
        }
        self.backoff.reset();
        Some(self.transition(Phase::Closed, Cause::TrialsSucceeded, now))
    }

    /// Re-opens the circuit if a half-open trial is past its timeout.
    fn expire_trials(&mut self, now: Instant) -> Option<Transition> {
        let Phase::HalfOpen { trials, .. } = &self.phase else {
            return None;
        };
        if !trials.iter().any(|t| now >= t.expires) {
            return None;
        }
        self.stats.trial_timeouts += 1;
        let d = self.backoff.grow();
        Some(self.open(Cause::TrialTimedOut, self.open_failures, d, now))
    }

    fn open(
        &mut self,
        cause: Cause,
        failures: u32,
        open_for: Duration,
        now: Instant,
    ) -> Transition {
        // However long the setting or the hint, the open ends within the breaker's horizon.
        let open_for = clamp(open_for);
        self.open_failures = failures;
        self.last_open_for = open_for;
        let mut transition = self.transition(
            Phase::Open {
                until: deadline_after(now, open_for),
            },
            cause,
            now,
        );
        transition.failures = failures;
        transition.open_for = Some(open_for);
        self.probe_floor = (cause == Cause::RateLimited).then(|| deadline_after(now, open_for));
        if let Some(last) = self.history.back_mut() {
            *last = transition;
        }
        transition
    }

    fn transition(&mut self, to: Phase, cause: Cause, now: Instant) -> Transition {
        let from = self.state();
        self.phase = to;
        let closed = matches!(self.phase, Phase::Closed);
        if from == CircuitState::Closed && !closed {
            self.out_since = Some(now);
        }
        let out_for = if closed {
            let since = self.out_since.take();
            since.map(|since| now.saturating_duration_since(since))
        } else {
            None
        };
        self.generation += 1;
        self.epoch += 1;
        if matches!(self.phase, Phase::Closed) {
            self.clear_counts();
        } else {
            self.consecutive = 0;
        }
        let transition = Transition {
            from,
            to: self.state(),
            generation: self.generation,
            cause,
            at: now,
            failures: 0,
            open_for: None,
            out_for,
        };
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(transition);
        transition
    }

    fn clear_counts(&mut self) {
        self.consecutive = 0;
        if let Some(window) = &mut self.window {
            window.clear();
        }
    }
}

impl State {
    /// Takes over `previous`'s circuit (phase, open deadline, trials, generation, epoch,
    /// backoff level, counts and history) under this breaker's settings: a provider whose
    /// settings were reloaded keeps an open circuit open until the same deadline. The rate
    /// window carries over only when its configuration is the same.
    pub(crate) fn carry_over(&mut self, previous: &State) {
        self.phase = previous.phase.clone();
        self.generation = previous.generation;
        self.epoch = previous.epoch;
        self.consecutive = previous.consecutive;
        self.open_failures = previous.open_failures;
        self.last_open_for = previous.last_open_for;
        self.next_trial = previous.next_trial;
        self.stats = previous.stats;
        self.history = previous.history.clone();
        self.out_since = previous.out_since;
        self.probe_floor = previous.probe_floor;
        self.backoff.carry_level(&previous.backoff);
        if let (Some(window), Some(old)) = (&mut self.window, &previous.window) {
            if window.same_shape(old) {
                *window = old.clone();
            }
        }
    }
}

impl State {
    /// How long a rate limit opens the circuit: its hint, or `rate_limited_for` without one;
    /// `None` for other verdicts, an explicit zero hint (the provider said to come back at
    /// once: an ordinary failure), and a hint-less one when `rate_limited_for` is zero.
    fn rate_limit_open_for(&self, verdict: Verdict) -> Option<Duration> {
        match verdict {
            Verdict::RateLimited { retry_after } => {
                Some(retry_after.unwrap_or(self.rate_limited_for)).filter(|d| !d.is_zero())
            }
            _ => None,
        }
    }

    /// [`rate_limit_open_for`](Self::rate_limit_open_for) of a completed outcome.
    fn rate_limit_open(&self, outcome: Outcome) -> Option<Duration> {
        match outcome {
            Outcome::Completed { verdict, .. } => self.rate_limit_open_for(verdict),
            Outcome::Cancelled => None,
        }
    }
}
