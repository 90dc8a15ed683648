//! The windows a breaker counts failures over.
//!
//! Both rate windows cost O(1) per recorded call, whatever the traffic: the count window is a
//! ring buffer with running sums, the time window a fixed ring of buckets with running sums.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Window;

/// One completed call as a rate window sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) failed: bool,
    pub(crate) slow: bool,
}

/// What a rate window holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// A failure-rate / slow-rate window of either kind.
#[derive(Debug, Clone)]
pub(crate) enum RateWindow {
    Calls(CountWindow),
    Time(Box<TimeWindow>),
}

impl RateWindow {
    /// Whether `other` measures over the same window (same kind and size).
    pub(crate) fn same_shape(&self, other: &RateWindow) -> bool {
        match (self, other) {
            (RateWindow::Calls(a), RateWindow::Calls(b)) => a.ring.len() == b.ring.len(),
            (RateWindow::Time(a), RateWindow::Time(b)) => a.width == b.width,
            _ => false,
        }
    }

    pub(crate) fn new(window: Window, now: Instant) -> Self {
        match window {
            Window::Calls(n) => RateWindow::Calls(CountWindow::new(n)),
            Window::Time(d) => RateWindow::Time(Box::new(TimeWindow::new(d, now))),
        }
    }

    pub(crate) fn record(&mut self, sample: Sample, now: Instant) {
        match self {
            RateWindow::Calls(w) => w.record(sample),
            RateWindow::Time(w) => w.record(sample, now),
        }
    }

    /// Records `n` identical calls at once.
    pub(crate) fn record_many(&mut self, sample: Sample, n: u64, now: Instant) {
        match self {
            RateWindow::Calls(w) => {
                for _ in 0..n.min(w.ring.len() as u64) {
                    w.record(sample);
                }
            }
            RateWindow::Time(w) => w.record_n(sample, n, now),
        }
    }

    pub(crate) fn totals(&mut self, now: Instant) -> Totals {
        match self {
            RateWindow::Calls(w) => w.totals,
            RateWindow::Time(w) => {
                w.advance(now);
                w.totals
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        match self {
            RateWindow::Calls(w) => w.clear(),
            RateWindow::Time(w) => w.clear(),
        }
    }
}

const FAILED: u8 = 1;
const SLOW: u8 = 2;

/// The last `n` calls, as a ring of flag bytes with running sums.
#[derive(Debug, Clone)]
pub(crate) struct CountWindow {
    ring: Box<[u8]>,
    next: usize,
    totals: Totals,
}

impl CountWindow {
    pub(crate) fn new(n: u32) -> Self {
        CountWindow {
            ring: vec![0; n as usize].into_boxed_slice(),
            next: 0,
            totals: Totals::default(),
        }
    }

    pub(crate) fn record(&mut self, sample: Sample) {
        let capacity = self.ring.len();
        if self.totals.calls == capacity as u64 {
            let evicted = self.ring[self.next];
            self.totals.failures -= u64::from(evicted & FAILED != 0);
            self.totals.slow -= u64::from(evicted & SLOW != 0);
        } else {
            self.totals.calls += 1;
        }
        let flags = if sample.failed { FAILED } else { 0 } | if sample.slow { SLOW } else { 0 };
        self.ring[self.next] = flags;
        self.totals.failures += u64::from(sample.failed);
        self.totals.slow += u64::from(sample.slow);
        self.next = (self.next + 1) % capacity;
    }

    fn clear(&mut self) {
        self.ring.fill(0);
        self.next = 0;
        self.totals = Totals::default();
    }
}

/// How many buckets a time window is split into.
pub(crate) const BUCKETS: usize = 20;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    totals: Totals,
}

/// The calls of the last `d`, in [`BUCKETS`] buckets of `d / BUCKETS` each. A bucket is
/// recycled when time moves past it, so the window slides in steps of one bucket.
#[derive(Debug, Clone)]
pub(crate) struct TimeWindow {
    origin: Instant,
    width: Duration,
    buckets: [Bucket; BUCKETS],
    /// The newest epoch (bucket index since `origin`) the window has advanced to.
    latest: u64,
    totals: Totals,
}

impl TimeWindow {
    pub(crate) fn new(window: Duration, now: Instant) -> Self {
        let width = (window / BUCKETS as u32).max(Duration::from_nanos(1));
        TimeWindow {
            origin: now,
            width,
            buckets: [Bucket::default(); BUCKETS],
            latest: 0,
            totals: Totals::default(),
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(elapsed / self.width.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Moves the window forward to `now`, emptying the buckets it leaves behind.
    fn advance(&mut self, now: Instant) {
        let epoch = self.epoch(now);
        if epoch <= self.latest {
            return;
        }
        let steps = (epoch - self.latest).min(BUCKETS as u64);
        for step in 1..=steps {
            let e = epoch - steps + step;
            let bucket = &mut self.buckets[(e % BUCKETS as u64) as usize];
            // Saturating, like `record_n`: the sums are exact below `u64::MAX` calls.
            self.totals.calls = self.totals.calls.saturating_sub(bucket.totals.calls);
            self.totals.failures = self.totals.failures.saturating_sub(bucket.totals.failures);
            self.totals.slow = self.totals.slow.saturating_sub(bucket.totals.slow);
            *bucket = Bucket {
                epoch: e,
                totals: Totals::default(),
            };
        }
        self.latest = epoch;
    }

    pub(crate) fn record(&mut self, sample: Sample, now: Instant) {
        self.record_n(sample, 1, now);
    }

    fn record_n(&mut self, sample: Sample, n: u64, now: Instant) {
        self.advance(now);
        let (failures, slow) = (n * u64::from(sample.failed), n * u64::from(sample.slow));
        let bucket = &mut self.buckets[(self.latest % BUCKETS as u64) as usize];
        bucket.epoch = self.latest;
        // `n` comes from a counter of folded successes: saturate rather than overflow.
        bucket.totals.calls = bucket.totals.calls.saturating_add(n);
        bucket.totals.failures = bucket.totals.failures.saturating_add(failures);
        bucket.totals.slow = bucket.totals.slow.saturating_add(slow);
        self.totals.calls = self.totals.calls.saturating_add(n);
        self.totals.failures = self.totals.failures.saturating_add(failures);
        self.totals.slow = self.totals.slow.saturating_add(slow);
    }

    fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
        self.totals = Totals::default();
        self.buckets[(self.latest % BUCKETS as u64) as usize].epoch = self.latest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Sample = Sample {
        failed: false,
        slow: false,
    };
    const FAIL: Sample = Sample {
        failed: true,
        slow: false,
    };

    #[test]
    fn count_window_slides_one_call_at_a_time() {
        let mut w = CountWindow::new(4);
        for s in [FAIL, FAIL, OK, OK] {
            w.record(s);
        }
        assert_eq!(w.totals.failures, 2);
        w.record(OK); // evicts the first failure
        assert_eq!((w.totals.calls, w.totals.failures), (4, 1));
        w.record(OK);
        assert_eq!((w.totals.calls, w.totals.failures), (4, 0));
    }

    #[test]
    fn count_window_forgets_a_long_run_of_successes() {
        let mut w = CountWindow::new(10);
        for _ in 0..100_000 {
            w.record(OK);
        }
        for _ in 0..5 {
            w.record(FAIL);
        }
        assert_eq!((w.totals.calls, w.totals.failures), (10, 5));
    }

    #[test]
    fn time_window_drops_calls_older_than_the_window() {
        let t0 = Instant::now();
        let mut w = TimeWindow::new(Duration::from_secs(20), t0);
        w.record(FAIL, t0);
        w.record(FAIL, t0 + Duration::from_secs(10));
        assert_eq!(w.totals.failures, 2);
        w.advance(t0 + Duration::from_secs(20)); // the first bucket leaves
        assert_eq!(w.totals.failures, 1);
        w.advance(t0 + Duration::from_secs(31));
        assert_eq!(w.totals, Totals::default());
    }

    #[test]
    fn time_window_survives_a_gap_longer_than_itself() {
        let t0 = Instant::now();
        let mut w = TimeWindow::new(Duration::from_secs(1), t0);
        w.record(FAIL, t0);
        w.record(OK, t0 + Duration::from_secs(3600));
        assert_eq!((w.totals.calls, w.totals.failures), (1, 0));
    }

    #[test]
    fn time_windows_of_extreme_sizes_and_counts_never_panic() {
        let t0 = Instant::now();
        for d in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            Duration::from_nanos(1),
            Duration::ZERO,
        ] {
            let mut w = RateWindow::new(Window::Time(d), t0);
            w.record_many(OK, u64::MAX, t0);
            w.record_many(FAIL, u64::MAX, t0);
            w.record(FAIL, t0 + Duration::from_secs(1));
            let totals = w.totals(t0 + Duration::from_secs(3600));
            assert!(totals.failures <= totals.calls, "{d:?}: {totals:?}");
            // Before the origin: counted in the first bucket, no underflow.
            let mut w = RateWindow::new(Window::Time(d), t0 + Duration::from_secs(10));
            w.record(FAIL, t0);
            assert_eq!(w.totals(t0).calls, 1);
        }
    }

    #[test]
    fn time_window_of_a_few_nanoseconds_still_works() {
        let t0 = Instant::now();
        let mut w = TimeWindow::new(Duration::from_nanos(3), t0);
        w.record(FAIL, t0);
        w.record(FAIL, t0 + Duration::from_nanos(100));
        assert_eq!(w.totals.calls, 1);
    }
}
