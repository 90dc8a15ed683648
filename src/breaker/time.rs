//! Deadline arithmetic that cannot overflow.
//!
//! `Instant + Duration` panics when the sum does not fit, and a breaker's durations come from
//! configuration and from providers' `Retry-After` hints, so the breaker never adds them
//! directly: every deadline goes through [`deadline_after`], which clamps the duration to
//! [`FAR_FUTURE`] and never panics.

use std::time::Duration;

use tokio::time::Instant;

/// The farthest the breaker ever schedules anything: 30 years (the same horizon as tokio's
/// own "far future"). Longer than any validated setting (the longest is
/// [`MAX_DURATION`](crate::config::MAX_DURATION), and the default open-duration cap is
/// twice that), so only an absurd `Retry-After` hint or an unvalidated setting is clamped.
pub(crate) const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);

/// `d` clamped to [`FAR_FUTURE`].
pub(crate) fn clamp(d: Duration) -> Duration {
    d.min(FAR_FUTURE)
}

/// `now + d`, saturating: `d` is clamped to [`FAR_FUTURE`], and should even that not fit in
/// an `Instant` on this platform, the farthest instant that does fit of `now + FAR_FUTURE /
/// 2^k` is returned (`now` itself at worst). Never panics.
pub(crate) fn deadline_after(now: Instant, d: Duration) -> Instant {
    let mut d = clamp(d);
    loop {
        if let Some(deadline) = now.checked_add(d) {
            return deadline;
        }
        // `now + 0` always fits, so this ends.
        d /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_ordinary_durations_exactly() {
        let now = Instant::now();
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_secs(60),
            FAR_FUTURE,
        ] {
            assert_eq!(deadline_after(now, d), now + d);
        }
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let now = Instant::now();
        for d in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            Duration::from_secs(u64::MAX / 2),
            FAR_FUTURE + Duration::from_nanos(1),
        ] {
            let deadline = deadline_after(now, d);
            assert_eq!(deadline, now + FAR_FUTURE, "{d:?}");
            assert!(deadline > now);
        }
    }
}
