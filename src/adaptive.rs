//! Adaptive thresholds: a request-rate meter and the tier it selects, with hysteresis.
//!
//! Both are pure: the provider actor samples its admitted-call counter on a timer and feeds
//! the running total here with the time; nothing on the call path touches them.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Adaptive, Breaker, Tier};

/// Buckets per meter window.
const BUCKETS: usize = 20;

/// Requests per minute over a sliding window, from samples of a running total.
#[derive(Debug, Clone)]
pub(crate) struct RateMeter {
    window: Duration,
    width: Duration,
    origin: Instant,
    counts: [u64; BUCKETS],
    /// Bucket index (since `origin`) of the newest sample.
    latest: u64,
    last_total: u64,
}

impl RateMeter {
    pub(crate) fn new(window: Duration, now: Instant, total: u64) -> Self {
        RateMeter {
            window,
            width: (window / BUCKETS as u32).max(Duration::from_millis(1)),
            origin: now,
            counts: [0; BUCKETS],
            latest: 0,
            last_total: total,
        }
    }

    /// How often to sample: one bucket.
    pub(crate) fn interval(&self) -> Duration {
        self.width
    }

    /// Records the running total of admitted calls at `now`.
    pub(crate) fn observe(&mut self, total: u64, now: Instant) {
        let delta = total.saturating_sub(self.last_total);
        self.last_total = total;
        let epoch = u64::try_from(
            now.saturating_duration_since(self.origin).as_nanos() / self.width.as_nanos(),
        )
        .unwrap_or(u64::MAX);
        if epoch > self.latest {
            let steps = (epoch - self.latest).min(BUCKETS as u64);
            for e in epoch - steps + 1..=epoch {
                self.counts[(e % BUCKETS as u64) as usize] = 0;
            }
            self.latest = epoch;
        }
        self.counts[(self.latest % BUCKETS as u64) as usize] += delta;
    }

    /// Requests per minute over the window.
    pub(crate) fn per_minute(&self) -> f64 {
        let total: u64 = self.counts.iter().sum();
        total as f64 * 60.0 / self.window.as_secs_f64()
    }
}

/// The thresholds a tier (or the breaker, with no tier) puts in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Thresholds {
    /// The tier's boundary in requests a minute; `None` when no tier applies.
    pub(crate) tier: Option<u32>,
    pub(crate) failures: Option<u32>,
    pub(crate) open_for: Duration,
}

/// Picks the tier for a rate, moving to a busier tier at once and to a quieter one only
/// when the rate has fallen below the current tier's boundary by the hysteresis margin.
#[derive(Debug, Clone)]
pub(crate) struct TierSelector {
    tiers: Vec<Tier>,
    hysteresis: f64,
    base_failures: Option<u32>,
    base_open_for: Duration,
    current: Option<usize>,
}

impl TierSelector {
    pub(crate) fn new(adaptive: &Adaptive, breaker: &Breaker) -> Self {
        let mut selector = TierSelector {
            tiers: adaptive.tiers.clone(),
            hysteresis: adaptive.hysteresis,
            base_failures: breaker.consecutive,
            base_open_for: breaker.open_for,
            current: None,
        };
        selector.current = selector.raw(0.0);
        selector
    }

    /// The tier index (busiest first) a rate falls in, ignoring hysteresis.
    fn raw(&self, per_minute: f64) -> Option<usize> {
        self.tiers
            .iter()
            .position(|t| t.above == 0 || per_minute > f64::from(t.above))
    }

    /// Feeds a rate; returns the new thresholds when the tier changed.
    pub(crate) fn update(&mut self, per_minute: f64) -> Option<Thresholds> {
        let target = self.raw(per_minute);
        let busier = match (target, self.current) {
            (a, b) if a == b => return None,
            (Some(t), Some(c)) => t < c,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        if !busier {
            let boundary = self.current.map_or(0.0, |c| f64::from(self.tiers[c].above));
            if per_minute >= boundary * (1.0 - self.hysteresis) {
                return None;
            }
        }
        self.current = target;
        Some(self.thresholds())
    }

    /// The thresholds in force.
    pub(crate) fn thresholds(&self) -> Thresholds {
        match self.current.map(|c| self.tiers[c]) {
            Some(tier) => Thresholds {
                tier: Some(tier.above),
                failures: tier.failures.or(self.base_failures),
                open_for: tier.open_for.unwrap_or(self.base_open_for),
            },
            None => Thresholds {
                tier: None,
                failures: self.base_failures,
                open_for: self.base_open_for,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn selector() -> TierSelector {
        TierSelector::new(&Adaptive::default(), &Breaker::default())
    }

    #[test]
    fn defaults_start_in_the_quiet_tier() {
        let s = selector();
        let t = s.thresholds();
        assert_eq!(
            (t.tier, t.failures, t.open_for),
            (Some(0), Some(10), 60 * S)
        );
    }

    #[test]
    fn rising_load_tightens_and_falling_load_loosens() {
        let mut s = selector();
        assert_eq!(s.update(40.0), None);
        let mid = s.update(60.0).expect("to the middle tier");
        assert_eq!(
            (mid.tier, mid.failures, mid.open_for),
            (Some(50), Some(5), 45 * S)
        );
        let busy = s.update(150.0).expect("to the busy tier");
        assert_eq!(
            (busy.tier, busy.failures, busy.open_for),
            (Some(100), Some(3), 30 * S)
        );
        assert_eq!(s.update(95.0), None, "inside the hysteresis band");
        assert_eq!(s.update(85.0).expect("down").tier, Some(50));
        assert_eq!(s.update(10.0).expect("down").tier, Some(0));
    }

    #[test]
    fn a_rate_hovering_at_a_boundary_does_not_flap() {
        let mut s = selector();
        let changes = [99.0, 101.0, 99.5, 100.5, 98.0, 102.0, 99.0]
            .into_iter()
            .filter_map(|r| s.update(r))
            .count();
        assert_eq!(changes, 2, "50 → 100 once, never back");
        assert_eq!(s.thresholds().tier, Some(100));
    }

    #[test]
    fn without_a_floor_tier_the_breaker_settings_apply() {
        let adaptive = Adaptive::new(60 * S).tier(Tier::above(100).failures(2));
        let mut s = TierSelector::new(&adaptive, &Breaker::consecutive(7).open_for(9 * S));
        assert_eq!(s.thresholds().failures, Some(7));
        let busy = s.update(200.0).expect("busy");
        assert_eq!((busy.failures, busy.open_for), (Some(2), 9 * S));
        let quiet = s.update(1.0).expect("quiet");
        assert_eq!((quiet.tier, quiet.failures), (None, Some(7)));
    }

    #[test]
    fn meter_measures_a_steady_rate_and_forgets_it() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(60 * S, t0, 0);
        let mut total = 0;
        let mut now = t0;
        for _ in 0..40 {
            now += m.interval();
            total += 6; // 6 per 3 s = 120 a minute
            m.observe(total, now);
        }
        assert!((m.per_minute() - 120.0).abs() < 1e-9, "{}", m.per_minute());
        m.observe(total, now + 120 * S);
        assert_eq!(m.per_minute(), 0.0);
    }
}
