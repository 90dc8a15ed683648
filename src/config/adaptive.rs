//! [`Adaptive`]: thresholds that tighten as the request rate rises.

use std::time::Duration;

use super::{check, Scope};
use crate::error::ConfigError;

/// One band of request rate and the thresholds that apply in it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use fusebox::Tier;
///
/// // Above 100 requests a minute: trip after 3 failures and stay open 30 seconds.
/// let busy = Tier::above(100).failures(3).open_for(Duration::from_secs(30));
/// # let _ = busy;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tier {
    pub(crate) above: u32,
    pub(crate) failures: Option<u32>,
    pub(crate) open_for: Option<Duration>,
}

impl Tier {
    /// A tier that applies while the request rate is above `per_minute` requests a minute
    /// (`Tier::above(0)` is the quiet tier that applies to any rate). Its thresholds default
    /// to the breaker's own until set.
    pub fn above(per_minute: u32) -> Self {
        Tier {
            above: per_minute,
            failures: None,
            open_for: None,
        }
    }

    /// The consecutive-failure threshold in this tier.
    ///
    /// Defaults to the breaker's `consecutive` setting.
    pub fn failures(mut self, n: u32) -> Self {
        self.failures = Some(n);
        self
    }

    /// The base open duration in this tier.
    ///
    /// Defaults to the breaker's `open_for` setting.
    pub fn open_for(mut self, duration: Duration) -> Self {
        self.open_for = Some(duration);
        self
    }

    /// The rate (requests a minute) above which this tier applies.
    pub fn per_minute(&self) -> u32 {
        self.above
    }

    /// The tier's failure threshold, if it sets one.
    pub fn failure_threshold(&self) -> Option<u32> {
        self.failures
    }

    /// The tier's base open duration, if it sets one.
    pub fn base_open_for(&self) -> Option<Duration> {
        self.open_for
    }
}

/// Adaptive thresholds: a request-rate meter over a sliding window picks a [`Tier`], whose
/// failure threshold and open duration replace the breaker's.
///
/// Under heavy traffic a failing provider hurts more requests per second, so the busy tiers
/// trip sooner and probe again sooner; a quiet provider gets more slack. A rate must fall
/// below a tier's boundary by the [`hysteresis`](Self::hysteresis) margin before the tier is
/// left, so a rate hovering at a boundary does not flap.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use fusebox::{Adaptive, Tier};
///
/// let adaptive = Adaptive::new(Duration::from_secs(60))
///     .tier(Tier::above(300).failures(2).open_for(Duration::from_secs(15)))
///     .tier(Tier::above(0).failures(8).open_for(Duration::from_secs(60)));
/// # let _ = adaptive;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Adaptive {
    pub(crate) window: Duration,
    pub(crate) tiers: Vec<Tier>,
    pub(crate) hysteresis: f64,
}

impl Default for Adaptive {
    /// A 60-second window and three tiers: above 100 requests a minute, trip after 3
    /// failures and open for 30 s; above 50, 5 failures and 45 s; otherwise 10 failures and
    /// 60 s. Hysteresis 0.1.
    fn default() -> Self {
        Adaptive::new(Duration::from_secs(60))
            .tier(
                Tier::above(100)
                    .failures(3)
                    .open_for(Duration::from_secs(30)),
            )
            .tier(
                Tier::above(50)
                    .failures(5)
                    .open_for(Duration::from_secs(45)),
            )
            .tier(
                Tier::above(0)
                    .failures(10)
                    .open_for(Duration::from_secs(60)),
            )
    }
}

impl Adaptive {
    /// Adaptive thresholds measuring the request rate over `window`, with no tiers yet.
    pub fn new(window: Duration) -> Self {
        Adaptive {
            window,
            tiers: Vec::new(),
            hysteresis: 0.1,
        }
    }

    /// Adds a tier. Order does not matter: the tier with the highest boundary below the
    /// current rate applies. While the rate is below every tier, the breaker's own settings
    /// apply.
    pub fn tier(mut self, tier: Tier) -> Self {
        self.tiers.push(tier);
        self.tiers.sort_by_key(|t| std::cmp::Reverse(t.above));
        self
    }

    /// How far (as a fraction of the boundary, in `[0, 1)`) the rate must fall below a tier's
    /// boundary before that tier is left.
    ///
    /// Defaults to 0.1: a tier entered above 100 requests a minute is left below 90.
    pub fn hysteresis(mut self, ratio: f64) -> Self {
        self.hysteresis = ratio;
        self
    }

    /// The rate meter's window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The tiers, busiest first.
    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    pub(crate) fn validate(&self, scope: &Scope) -> Result<(), ConfigError> {
        check::nonzero(scope, "adaptive.window", self.window)?;
        if self.tiers.is_empty() {
            return Err(ConfigError::invalid(
                scope,
                "adaptive.tiers",
                "[]",
                "needs at least one tier",
            ));
        }
        if !(0.0..1.0).contains(&self.hysteresis) {
            return Err(ConfigError::invalid(
                scope,
                "adaptive.hysteresis",
                self.hysteresis,
                "must be in [0, 1)",
            ));
        }
        for pair in self.tiers.windows(2) {
            if pair[0].above == pair[1].above {
                return Err(ConfigError::invalid(
                    scope,
                    "adaptive.tiers.above",
                    pair[0].above,
                    "two tiers share this boundary",
                ));
            }
        }
        for tier in &self.tiers {
            if let Some(n) = tier.failures {
                check::positive(scope, "adaptive.tiers.failures", n)?;
            }
            if let Some(d) = tier.open_for {
                check::nonzero(scope, "adaptive.tiers.open_for", d)?;
            }
        }
        Ok(())
    }
}
