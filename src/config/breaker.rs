//! [`Breaker`]: when a provider's circuit trips, and how long it stays open.

use std::time::Duration;

use super::{check, Scope};
use crate::error::ConfigError;

/// The largest [`Window::Calls`] accepted (the window keeps one byte per call).
pub const MAX_WINDOW_CALLS: u32 = 1_000_000;

/// The default cap of a grown open duration, in multiples of the base
/// ([`Breaker::max_open_for`]).
pub const DEFAULT_MAX_OPEN_FACTOR: u32 = 2;

/// The default of [`Breaker::rate_limited_for`].
const DEFAULT_RATE_LIMITED_FOR: Duration = Duration::from_secs(5);

/// The window a failure rate or slow-call rate is measured over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// The last `n` completed calls (a ring buffer: it really slides, one call in, one out).
    Calls(u32),
    /// The calls completed in the last `d`, counted in 20 buckets of `d / 20`, so the cost
    /// of recording a call does not depend on traffic.
    Time(Duration),
}

impl Default for Window {
    /// The last 100 calls.
    fn default() -> Self {
        Window::Calls(100)
    }
}

/// Circuit breaker settings for one provider.
///
/// A breaker trips (opens) on any enabled condition: `n` consecutive counted failures, a
/// failure rate over a [`Window`], or a slow-call rate over the same window. An open circuit
/// rejects calls at once until its deadline; then it lets a bounded number of trial calls
/// through (half-open), closes after enough of them succeed and re-opens, for longer, when
/// one fails.
///
/// Every duration setting must be at most [`MAX_DURATION`](super::MAX_DURATION) (365 days);
/// longer ones are rejected by validation. Durations that do not come from configuration (a
/// provider's `Retry-After` hint) saturate instead: no deadline overflows.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use fusebox::{Breaker, Window};
///
/// // Trip after 3 consecutive failures, or when half of the last 20 calls failed.
/// let breaker = Breaker::consecutive(3)
///     .failure_rate(0.5, Window::Calls(20))
///     .open_for(Duration::from_secs(120))
///     .max_open_for(Duration::from_secs(600));
/// # let _ = breaker;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Breaker {
    pub(crate) consecutive: Option<u32>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) window: Window,
    pub(crate) minimum_calls: Option<u32>,
    pub(crate) slow_call: Option<(Duration, f64)>,
    pub(crate) open_for: Duration,
    pub(crate) max_open_for: Option<Duration>,
    pub(crate) jitter: f64,
    pub(crate) half_open_max_calls: u32,
    pub(crate) success_threshold: u32,
    pub(crate) trial_timeout: Option<Duration>,
    pub(crate) rate_limited_for: Duration,
}

impl Default for Breaker {
    /// Five consecutive failures trip the circuit for 60 seconds; no rate conditions; a
    /// rate limit without a hint opens it for 5 seconds.
    fn default() -> Self {
        Breaker {
            consecutive: Some(5),
            failure_rate: None,
            window: Window::default(),
            minimum_calls: None,
            slow_call: None,
            open_for: Duration::from_secs(60),
            max_open_for: None,
            jitter: 0.1,
            half_open_max_calls: 1,
            success_threshold: 1,
            trial_timeout: None,
            rate_limited_for: DEFAULT_RATE_LIMITED_FOR,
        }
    }
}

impl Breaker {
    /// A breaker that trips after `n` consecutive counted failures (a success resets the
    /// count). Every other setting keeps its default.
    pub fn consecutive(n: u32) -> Self {
        Breaker {
            consecutive: Some(n),
            ..Breaker::default()
        }
    }

    /// A breaker with no consecutive-failure condition: it trips only on the rate conditions
    /// added to it ([`failure_rate`](Self::failure_rate), [`slow_call`](Self::slow_call)), on a
    /// rate limit with a `Retry-After` hint, or on an isolating verdict.
    pub fn rate_based() -> Self {
        Breaker {
            consecutive: None,
            ..Breaker::default()
        }
    }

    /// Also trips when at least `ratio` (in `(0, 1]`) of the calls in `window` failed, once the
    /// window holds [`minimum_calls`](Self::minimum_calls). Catches partial outages where every
    /// other call fails, which never produces a run of consecutive failures.
    ///
    /// The comparison is exact: `ratio` is rounded once to the nearest billionth, and a rate
    /// equal to it trips (0.55 trips at 55 failures of 100 calls).
    ///
    /// Disabled by default.
    pub fn failure_rate(mut self, ratio: f64, window: Window) -> Self {
        self.failure_rate = Some(ratio);
        self.window = window;
        self
    }

    /// The number of calls the window must hold before a rate condition may trip.
    ///
    /// Defaults to 10, or to the window's size for a [`Window::Calls`] smaller than 10.
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.minimum_calls = Some(n);
        self
    }

    /// Also trips when at least `ratio` (in `(0, 1]`) of the calls in the window took longer
    /// than `threshold`, successful or not. Uses the window given to
    /// [`failure_rate`](Self::failure_rate), or the last 100 calls. Compared exactly, like
    /// the failure rate.
    ///
    /// Disabled by default. While half-open, a trial slower than `threshold` counts as a
    /// failed trial.
    pub fn slow_call(mut self, threshold: Duration, ratio: f64) -> Self {
        self.slow_call = Some((threshold, ratio));
        self
    }

    /// How long the circuit stays open after it first trips.
    ///
    /// Defaults to 60 seconds. Each re-open straight from half-open doubles it (capped by
    /// [`max_open_for`](Self::max_open_for), jittered); a clean close resets it. An open
    /// caused by a rate limit with a `Retry-After` hint lasts exactly the hint and does not
    /// grow the backoff.
    pub fn open_for(mut self, duration: Duration) -> Self {
        self.open_for = duration;
        self
    }

    /// The cap on the grown open duration.
    ///
    /// Defaults to [`DEFAULT_MAX_OPEN_FACTOR`] (2) times [`open_for`](Self::open_for): 2
    /// minutes for the default minute. A `Retry-After` hint from the provider is honoured
    /// even above the cap.
    ///
    /// Why 2 and not 10 (the default before, and Envoy's ejection cap): the cap is how long
    /// a provider that has recovered may still be kept out, and for an LLM API that is the
    /// cheapest or fastest provider serving nothing. A failed trial costs one call that falls
    /// over to the next provider (one failed request's latency, for one user). In the outage
    /// replay (`cargo bench --bench outage`: 200 requests a second, 4 minutes hard down, a
    /// 30-second base), a cap of 10× kept the recovered primary out for more than 60 s (the
    /// open duration had grown 30 → 55 → 111 → 222 s), while 2× brought it back in 13 s for
    /// one more failed call (47 calls instead of 46 in the outage). With a recovery
    /// [`Probe`](crate::Probe), the cap no longer delays recovery and can be long.
    pub fn max_open_for(mut self, cap: Duration) -> Self {
        self.max_open_for = Some(cap);
        self
    }

    /// The fraction (in `[0, 1)`) by which a grown open duration is randomly shortened, so
    /// that many clients do not retry a recovering provider in lockstep. The first open
    /// after a close is never jittered.
    ///
    /// Defaults to 0.1.
    pub fn jitter(mut self, ratio: f64) -> Self {
        self.jitter = ratio;
        self
    }

    /// How many trial calls a half-open circuit admits. A trial that succeeds keeps its
    /// slot until the circuit closes (so at most this many calls probe a recovering
    /// provider); a cancelled or ignored trial frees its slot; a failed or timed-out one
    /// re-opens the circuit.
    ///
    /// Defaults to 1.
    pub fn half_open_max_calls(mut self, n: u32) -> Self {
        self.half_open_max_calls = n;
        self
    }

    /// How many successful trials close the circuit. At most
    /// [`half_open_max_calls`](Self::half_open_max_calls).
    ///
    /// Defaults to 1.
    pub fn success_threshold(mut self, n: u32) -> Self {
        self.success_threshold = n;
        self
    }

    /// How long a trial call may run before it counts as a failure (and its slot is freed),
    /// so a probe that hangs cannot keep the circuit half-open forever.
    ///
    /// Defaults to the open duration that preceded the half-open state.
    pub fn trial_timeout(mut self, timeout: Duration) -> Self {
        self.trial_timeout = Some(timeout);
        self
    }

    /// How long a rate limit without a hint opens the circuit: a
    /// [`Verdict::RateLimited`](crate::Verdict::RateLimited) whose `retry_after` is `None`
    /// (an HTTP 429 without `Retry-After` or `Retry-After-Ms`, or with a malformed one).
    ///
    /// The circuit opens at once for `duration`, as for a provider's own hint: the open does
    /// not grow the backoff, is not capped by [`max_open_for`](Self::max_open_for), and a
    /// rate-limited half-open trial re-opens for `duration` again. Without this, a provider
    /// that is rate limiting keeps receiving every call until enough 429s pile up to trip a
    /// failure condition, and each of those calls spends its quota further.
    ///
    /// Defaults to 5 seconds: rate limits are per-minute
    /// budgets that providers replenish continuously, so a hint-less 429 usually clears
    /// within seconds, and a longer default would sideline a healthy provider for a blip.
    /// It is also what LiteLLM's router cools a deployment down for after a 429 (its
    /// `DEFAULT_COOLDOWN_TIME_SECONDS`). `Duration::ZERO` turns this off: a hint-less rate
    /// limit then counts as one ordinary failure, as an explicit `Retry-After: 0` always
    /// does. At most [`MAX_DURATION`](super::MAX_DURATION).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    /// use fusebox::breaker::{CircuitState, Outcome, State};
    /// use fusebox::{Breaker, Verdict};
    ///
    /// let breaker = Breaker::consecutive(5).rate_limited_for(Duration::from_secs(30));
    /// let now = Instant::now();
    /// let mut state = State::new(&breaker, now)?;
    /// let permit = state.on_admit(now).decision.unwrap();
    /// let limited = Verdict::RateLimited { retry_after: None };
    /// state.on_outcome(permit, Outcome::Completed { verdict: limited, elapsed: Duration::ZERO }, now);
    /// assert_eq!(state.state(), CircuitState::Open);
    /// assert_eq!(state.retry_after(now), Some(Duration::from_secs(30)));
    /// # Ok::<(), fusebox::ConfigError>(())
    /// ```
    pub fn rate_limited_for(mut self, duration: Duration) -> Self {
        self.rate_limited_for = duration;
        self
    }

    /// The consecutive-failure threshold, if that condition is enabled.
    pub fn consecutive_threshold(&self) -> Option<u32> {
        self.consecutive
    }

    /// The base open duration.
    pub fn base_open_for(&self) -> Duration {
        self.open_for
    }

    /// The effective minimum number of calls for the rate conditions.
    pub(crate) fn effective_minimum_calls(&self) -> u32 {
        self.minimum_calls.unwrap_or(match self.window {
            Window::Calls(n) => n.min(10),
            Window::Time(_) => 10,
        })
    }

    /// The effective cap on the open duration.
    pub(crate) fn effective_max_open_for(&self) -> Duration {
        self.max_open_for
            .unwrap_or_else(|| self.open_for.saturating_mul(DEFAULT_MAX_OPEN_FACTOR))
    }

    /// Checks every field; the first bad one is reported.
    pub(crate) fn validate(&self, scope: &Scope) -> Result<(), ConfigError> {
        if let Some(n) = self.consecutive {
            check::positive(scope, "breaker.consecutive", n)?;
        }
        if let Some(ratio) = self.failure_rate {
            rate_ratio(scope, "breaker.failure_rate", ratio)?;
        }
        if self.failure_rate.is_some() || self.slow_call.is_some() {
            match self.window {
                Window::Calls(n) if n == 0 || n > MAX_WINDOW_CALLS => {
                    return Err(ConfigError::invalid(
                        scope,
                        "breaker.window",
                        format!("{n} calls"),
                        "must be between 1 and 1000000 calls",
                    ))
                }
                Window::Calls(_) => {}
                Window::Time(d) => check::nonzero(scope, "breaker.window", d)?,
            }
            let min = self.effective_minimum_calls();
            check::positive(scope, "breaker.minimum_calls", min)?;
            if let Window::Calls(n) = self.window {
                if min > n {
                    return Err(ConfigError::invalid(
                        scope,
                        "breaker.minimum_calls",
                        min,
                        "must not exceed the window's size in calls",
                    ));
                }
            }
        }
        if let Some((threshold, ratio)) = self.slow_call {
            check::nonzero(scope, "breaker.slow_call", threshold)?;
            rate_ratio(scope, "breaker.slow_call_ratio", ratio)?;
        }
        check::nonzero(scope, "breaker.open_for", self.open_for)?;
        if let Some(cap) = self.max_open_for {
            if cap < self.open_for {
                return Err(ConfigError::invalid(
                    scope,
                    "breaker.max_open_for",
                    humantime::format_duration(cap),
                    "must not be below breaker.open_for",
                ));
            }
            check::at_most_max(scope, "breaker.max_open_for", cap)?;
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(ConfigError::invalid(
                scope,
                "breaker.jitter",
                self.jitter,
                "must be in [0, 1)",
            ));
        }
        check::positive(
            scope,
            "breaker.half_open_max_calls",
            self.half_open_max_calls,
        )?;
        check::positive(scope, "breaker.success_threshold", self.success_threshold)?;
        if self.success_threshold > self.half_open_max_calls {
            return Err(ConfigError::invalid(
                scope,
                "breaker.success_threshold",
                self.success_threshold,
                "must not exceed breaker.half_open_max_calls",
            ));
        }
        if let Some(timeout) = self.trial_timeout {
            check::nonzero(scope, "breaker.trial_timeout", timeout)?;
        }
        check::at_most_max(scope, "breaker.rate_limited_for", self.rate_limited_for)?;
        Ok(())
    }
}

/// A rate threshold: in `(0, 1]`, and not below the precision rates are compared at (the
/// breaker keeps ratios in parts per billion, see
/// [`RATIO_SCALE`](crate::breaker::RATIO_SCALE)), where it would round to zero and trip on
/// no failures at all.
fn rate_ratio(scope: &Scope, field: &'static str, ratio: f64) -> Result<(), ConfigError> {
    check::ratio(scope, field, ratio)?;
    if crate::breaker::ratio_ppb(ratio) == 0 {
        return Err(ConfigError::invalid(
            scope,
            field,
            ratio,
            "must be at least 1e-9 (ratios are kept to the nearest billionth)",
        ));
    }
    Ok(())
}
