//! How long an open circuit stays open.
//!
//! The first open after a close lasts the base duration. Each re-open straight from
//! half-open doubles it, up to the cap, and shortens it by a random fraction up to the jitter
//! ratio so that clients do not probe a recovering provider in lockstep. A clean close
//! starts again from the base. A `Retry-After` hint is a floor, even above the cap.

use std::time::Duration;

/// The open-duration schedule of one breaker, with its own deterministic random source.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: f64,
    /// Re-opens since the last close.
    level: u32,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration, jitter: f64, seed: u64) -> Self {
        Backoff {
            base,
            cap,
            jitter,
            level: 0,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// Continues from `previous`'s number of re-opens (a reloaded breaker).
    pub(crate) fn carry_level(&mut self, previous: &Backoff) {
        self.level = previous.level;
    }

    /// The base duration (which adaptive thresholds may change).
    pub(crate) fn base(&self) -> Duration {
        self.base
    }

    pub(crate) fn set_base(&mut self, base: Duration) {
        self.base = base;
    }

    /// The duration of the first open after a close.
    pub(crate) fn first(&mut self) -> Duration {
        self.level = 0;
        self.base.min(self.effective_cap())
    }

    /// The duration of a re-open from half-open: one level longer than the last.
    pub(crate) fn grow(&mut self) -> Duration {
        self.level = self.level.saturating_add(1);
        let factor = 1u32.checked_shl(self.level.min(31)).unwrap_or(u32::MAX);
        let grown = self.base.saturating_mul(factor).min(self.effective_cap());
        if self.jitter == 0.0 {
            return grown;
        }
        let factor = 1.0 - self.jitter * self.next_unit();
        // Not `mul_f64`, which panics when the product does not fit (`Duration::MAX` as
        // seconds rounds up past `u64::MAX`) or is negative: a jittered duration is never
        // longer than the grown one, and falls back to it if the float goes wrong.
        Duration::try_from_secs_f64(grown.as_secs_f64() * factor).map_or(grown, |d| d.min(grown))
    }

    /// Forgets the re-opens: the next open lasts the base duration.
    pub(crate) fn reset(&mut self) {
        self.level = 0;
    }

    fn effective_cap(&self) -> Duration {
        self.cap.max(self.base)
    }

    /// A uniform number in `[0, 1)` (xorshift64*).
    fn next_unit(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(MIN, MIN * 5, 0.0, 7);
        assert_eq!(b.first(), MIN);
        assert_eq!(b.grow(), MIN * 2);
        assert_eq!(b.grow(), MIN * 4);
        assert_eq!(b.grow(), MIN * 5);
        for _ in 0..100 {
            assert_eq!(b.grow(), MIN * 5);
        }
        b.reset();
        assert_eq!(b.first(), MIN);
    }

    #[test]
    fn jitter_only_shortens_and_stays_within_its_ratio() {
        let mut b = Backoff::new(MIN, MIN * 100, 0.25, 42);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            b.reset();
            let d = b.grow();
            assert!(d <= MIN * 2 && d >= (MIN * 2).mul_f64(0.75), "{d:?}");
            seen.insert(d);
        }
        assert!(seen.len() > 10, "jitter should vary: {seen:?}");
    }

    #[test]
    fn the_first_open_is_never_jittered() {
        let mut b = Backoff::new(MIN, MIN * 10, 0.5, 1);
        assert_eq!(b.first(), MIN);
    }

    #[test]
    fn extreme_durations_and_jitter_never_panic() {
        for base in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            Duration::from_nanos(1),
        ] {
            for jitter in [0.0, 0.5, 0.999_999, -1.0, 2.0, f64::NAN, f64::INFINITY] {
                let cap = base.saturating_mul(4);
                let mut b = Backoff::new(base, cap, jitter, 3);
                assert_eq!(b.first(), base);
                for _ in 0..70 {
                    assert!(b.grow() <= cap);
                }
            }
        }
        // The largest duration jittered by almost nothing: `mul_f64` would panic here.
        let mut b = Backoff::new(Duration::MAX, Duration::MAX, 1e-12, 9);
        for _ in 0..100 {
            b.grow();
        }
    }

    #[test]
    fn a_base_above_the_cap_wins() {
        let mut b = Backoff::new(MIN * 3, MIN, 0.0, 1);
        assert_eq!(b.first(), MIN * 3);
        assert_eq!(b.grow(), MIN * 3);
    }
}
