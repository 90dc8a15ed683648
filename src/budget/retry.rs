//! Same-provider retries: [`Retry`] (the setting) and [`RetryState`] (the retry budget and
//! the jitter source one provider's callers share).
//!
//! The retry budget's rule and its lock-free window are described in [`crate::budget`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{ConfigError, Scope};

/// Retries of a failed call on the same provider, with exponential back-off, jitter and a
/// retry budget.
///
/// Only a provider's failures are retried: [`Verdict::Failure`](crate::Verdict::Failure),
/// call timeouts, and rate limits that did not open the circuit (waiting at least their
/// `Retry-After`). Never an [`Ignored`](crate::Verdict::Ignored) error (the caller's fault)
/// nor an [`Isolate`](crate::Verdict::Isolate) one, never on an open circuit (a retry is
/// admitted like any call, and a circuit that opened stops it), never past a route's
/// deadline, and never beyond the retry budget (see [the retry budget](crate::budget#the-retry-budget)).
///
/// Set on a provider ([`Provider::retry`](crate::Provider::retry)) for its routed calls and
/// `call_retrying`; on a route ([`Route::retry`](crate::Route::retry)) for every member of
/// that route, in place of the providers' own. Each retry shows in the routed call's trace
/// as another [`Attempt`](crate::Attempt) at the same provider.
///
/// ```
/// use std::time::Duration;
/// use fusebox::{Provider, Retry};
///
/// let openai = Provider::new("openai").retry(
///     Retry::new()
///         .attempts(3)
///         .backoff(Duration::from_millis(200), Duration::from_secs(5))
///         .jitter(0.5)
///         .budget(0.2, 10),
/// );
/// # let _ = openai;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub(crate) attempts: u32,
    pub(crate) base: Duration,
    pub(crate) cap: Duration,
    pub(crate) jitter: f64,
    pub(crate) ratio: Option<f64>,
    pub(crate) min_per_second: u32,
    pub(crate) window: Duration,
}

/// Floats compare by their bits, so that equality is total (a route holding a `Retry` is
/// `Eq`).
impl PartialEq for Retry {
    fn eq(&self, other: &Self) -> bool {
        self.attempts == other.attempts
            && self.base == other.base
            && self.cap == other.cap
            && self.jitter.to_bits() == other.jitter.to_bits()
            && self.ratio.map(f64::to_bits) == other.ratio.map(f64::to_bits)
            && self.min_per_second == other.min_per_second
            && self.window == other.window
    }
}

impl Eq for Retry {}

impl Default for Retry {
    fn default() -> Self {
        Self::new()
    }
}

impl Retry {
    /// Three attempts (two retries), back-off from 100 ms doubling up to 2 s, jitter 0.5,
    /// and the default retry budget (20 % of calls over 10 s, plus 10 a second).
    pub fn new() -> Self {
        Retry {
            attempts: 3,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
            jitter: 0.5,
            ratio: Some(0.2),
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }

    /// Attempts per call on one provider, the first included (1 disables retries).
    ///
    /// Defaults to 3.
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = n;
        self
    }

    /// The pause before the first retry (`base`), doubled before each further one, at most
    /// `cap`. A longer `Retry-After` from the provider replaces it.
    ///
    /// Defaults to 100 ms and 2 s.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.base = base;
        self.cap = cap;
        self
    }

    /// Shortens each pause by a random fraction of up to `ratio` (0 to 1), so that callers
    /// that failed together do not retry together.
    ///
    /// Defaults to 0.5.
    pub fn jitter(mut self, ratio: f64) -> Self {
        self.jitter = ratio;
        self
    }

    /// The retry budget: retries may add at most `ratio` (0 to 1) of the calls made over
    /// the [window](Self::budget_window), plus `min_per_second` a second.
    ///
    /// Defaults to 0.2 and 10.
    pub fn budget(mut self, ratio: f64, min_per_second: u32) -> Self {
        self.ratio = Some(ratio);
        self.min_per_second = min_per_second;
        self
    }

    /// The sliding window the retry budget counts calls and retries over.
    ///
    /// Defaults to 10 seconds.
    pub fn budget_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// No retry budget: every failed call is retried up to its attempts. During an outage
    /// this multiplies the load on the failing provider by the number of attempts; meant for
    /// comparisons and tests.
    pub fn unbudgeted(mut self) -> Self {
        self.ratio = None;
        self
    }

    /// Attempts per call, the first included.
    pub fn attempts_config(&self) -> u32 {
        self.attempts
    }

    /// The budget's ratio of calls, or `None` when unbudgeted.
    pub fn budget_ratio(&self) -> Option<f64> {
        self.ratio
    }

    pub(crate) fn validate(&self, scope: &Scope) -> Result<(), ConfigError> {
        let max = crate::config::MAX_DURATION;
        if self.attempts == 0 || self.attempts > 100 {
            return Err(ConfigError::invalid(
                scope,
                "retry.attempts",
                self.attempts,
                "must be at least 1 and at most 100",
            ));
        }
        if self.base > max || self.cap > max {
            return Err(ConfigError::invalid(
                scope,
                "retry.backoff",
                format!("{:?}", self.base.max(self.cap)),
                "must be at most 365 days",
            ));
        }
        if self.cap < self.base {
            return Err(ConfigError::invalid(
                scope,
                "retry.max_backoff",
                format!("{:?}", self.cap),
                "must be at least the base back-off",
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(ConfigError::invalid(
                scope,
                "retry.jitter",
                self.jitter,
                "must be in [0, 1]",
            ));
        }
        if let Some(ratio) = self.ratio {
            if !(0.0..=1.0).contains(&ratio) {
                return Err(ConfigError::invalid(
                    scope,
                    "retry.budget",
                    ratio,
                    "must be in [0, 1]",
                ));
            }
        }
        if self.window.is_zero() || self.window > max {
            return Err(ConfigError::invalid(
                scope,
                "retry.budget_window",
                format!("{:?}", self.window),
                "must be longer than zero and at most 365 days",
            ));
        }
        Ok(())
    }
}

/// Slots of the retry budget's sliding window.
const SLOTS: usize = 10;
const COUNT_BITS: u32 = 32;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// The retry budget and jitter source shared by the callers of one provider (or of one
/// route's members under a route's [`Retry`]).
#[derive(Debug)]
pub(crate) struct RetryState {
    pub(crate) config: Retry,
    origin: Instant,
    slot_nanos: u64,
    deposits: [AtomicU64; SLOTS],
    withdrawals: [AtomicU64; SLOTS],
    rng: AtomicU64,
    /// Retries made.
    pub(crate) retries: AtomicU64,
    /// Retries the budget refused.
    pub(crate) exhausted: AtomicU64,
}

impl RetryState {
    pub(crate) fn new(config: Retry, seed: u64, now: Instant) -> Self {
        let window = u64::try_from(config.window.as_nanos()).unwrap_or(u64::MAX);
        RetryState {
            config,
            origin: now,
            slot_nanos: (window / SLOTS as u64).max(1),
            deposits: Default::default(),
            withdrawals: Default::default(),
            rng: AtomicU64::new(seed),
            retries: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
        }
    }

    /// The current slot number.
    fn slot(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since / u128::from(self.slot_nanos)).unwrap_or(u64::MAX)
    }

    /// The count of `word` if it belongs to the window ending at slot `slot`.
    fn live(word: u64, slot: u64) -> u64 {
        let at = word >> COUNT_BITS;
        let tag = slot & COUNT_MASK;
        // Slots are tagged with their number's low 32 bits.
        let age = tag.wrapping_sub(at) & COUNT_MASK;
        if age < SLOTS as u64 {
            word & COUNT_MASK
        } else {
            0
        }
    }

    fn sum(words: &[AtomicU64; SLOTS], slot: u64) -> u64 {
        words
            .iter()
            .map(|w| Self::live(w.load(Relaxed), slot))
            .sum()
    }

    /// Adds one to `slot` in `words`, unless `allow(current count)` says no.
    fn add(words: &[AtomicU64; SLOTS], slot: u64, mut allow: impl FnMut(u64) -> bool) -> bool {
        let cell = &words[(slot % SLOTS as u64) as usize];
        let tag = (slot & COUNT_MASK) << COUNT_BITS;
        let mut word = cell.load(Relaxed);
        loop {
            let count = if word & !COUNT_MASK == tag {
                word & COUNT_MASK
            } else {
                0
            };
            if !allow(count) {
                return false;
            }
            let next = tag | (count + 1).min(COUNT_MASK);
            match cell.compare_exchange_weak(word, next, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(seen) => word = seen,
            }
        }
    }

    /// Counts a call (its first attempt): one deposit.
    #[inline]
    pub(crate) fn deposit(&self, now: Instant) {
        if self.config.ratio.is_some() {
            Self::add(&self.deposits, self.slot(now), |_| true);
        }
    }

    /// Takes one retry from the budget, if it has room.
    pub(crate) fn withdraw(&self, now: Instant) -> bool {
        let Some(ratio) = self.config.ratio else {
            self.retries.fetch_add(1, Relaxed);
            return true;
        };
        let slot = self.slot(now);
        let calls = Self::sum(&self.deposits, slot);
        let floor = u64::from(self.config.min_per_second)
            .saturating_mul(self.config.window.as_secs().max(1));
        let allowed = ((calls as f64 * ratio) as u64).saturating_add(floor);
        let current = slot % SLOTS as u64;
        // The other slots' retries, then a compare-and-swap on this one's that re-checks.
        let others: u64 = self
            .withdrawals
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u64 != current)
            .map(|(_, w)| Self::live(w.load(Relaxed), slot))
            .sum();
        let took = Self::add(&self.withdrawals, slot, |mine| others + mine < allowed);
        if took {
            self.retries.fetch_add(1, Relaxed);
        } else {
            self.exhausted.fetch_add(1, Relaxed);
        }
        took
    }

    /// The pause before retry number `retry` (1 for the first), at least `hint`.
    pub(crate) fn pause(&self, retry: u32, hint: Option<Duration>) -> Duration {
        let c = &self.config;
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        let grown = c.base.saturating_mul(factor).min(c.cap);
        let jittered = if c.jitter == 0.0 {
            grown
        } else {
            let unit = self.next_unit();
            Duration::try_from_secs_f64(grown.as_secs_f64() * (1.0 - c.jitter * unit))
                .map_or(grown, |d| d.min(grown))
        };
        hint.map_or(jittered, |h| h.max(jittered))
    }

    /// A uniform number in `[0, 1)` (splitmix64 over an atomic counter: no lock).
    fn next_unit(&self) -> f64 {
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether an attempt that ended with `verdict` (or a timeout) after `attempt` attempts
    /// may be retried, as far as the policy goes (the budget is asked separately).
    pub(crate) fn retryable(&self, attempt: u32, verdict: crate::Verdict) -> bool {
        attempt < self.config.attempts
            && matches!(
                verdict,
                crate::Verdict::Failure | crate::Verdict::RateLimited { .. }
            )
    }

    /// Decides a retry of a call whose attempt number `tries` failed with `verdict`
    /// (`Failure` for a timeout), the provider having asked to wait `hint`: the pause
    /// before it, with one retry taken from the budget; `None` for no retry.
    ///
    /// No retry when the verdict is not retryable or the attempts are used up, when the
    /// hint is longer than the back-off cap (the caller is better served elsewhere), when
    /// the circuit does not admit calls (`admits` false: never on an open circuit), when
    /// the pause would reach `deadline`, or when the budget is spent.
    pub(crate) fn next_pause(
        &self,
        tries: u32,
        verdict: crate::Verdict,
        hint: Option<Duration>,
        admits: bool,
        deadline: Option<Instant>,
    ) -> Option<Duration> {
        if !admits || !self.retryable(tries, verdict) || hint.is_some_and(|h| h > self.config.cap) {
            return None;
        }
        let now = Instant::now();
        let pause = self.pause(tries, hint);
        if deadline.is_some_and(|d| now + pause >= d) {
            return None;
        }
        self.withdraw(now).then_some(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_budget_allows_a_fraction_of_calls_plus_the_floor() {
        let state = RetryState::new(Retry::new().budget(0.2, 1), 7, Instant::now());
        // The floor: 1 a second over 10 s.
        let now = Instant::now();
        for _ in 0..10 {
            assert!(state.withdraw(now));
        }
        assert!(!state.withdraw(now));
        for _ in 0..100 {
            state.deposit(now);
        }
        for _ in 0..20 {
            assert!(state.withdraw(now));
        }
        assert!(!state.withdraw(now));
        // After the window, everything has aged out: the floor only.
        let later = now + Duration::from_secs(11);
        for _ in 0..10 {
            assert!(state.withdraw(later));
        }
        assert!(!state.withdraw(later));
        assert_eq!(state.retries.load(Relaxed), 40);
        assert_eq!(state.exhausted.load(Relaxed), 3);
    }

    #[test]
    fn concurrent_withdrawals_never_pass_the_budget() {
        let now = Instant::now();
        let state = std::sync::Arc::new(RetryState::new(Retry::new().budget(0.2, 1), 3, now));
        for _ in 0..1_000 {
            state.deposit(now);
        }
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let state = state.clone();
                std::thread::spawn(move || (0..100).filter(|_| state.withdraw(now)).count())
            })
            .collect();
        let took: usize = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
        // 20 % of 1,000 calls plus 1 a second over 10 s.
        assert_eq!(took, 210);
        assert_eq!(state.exhausted.load(Relaxed), 800 - 210);
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_grow_to_the_cap_and_honour_hints() {
        let retry = Retry::new()
            .backoff(Duration::from_millis(100), Duration::from_millis(350))
            .jitter(0.0);
        let state = RetryState::new(retry, 1, Instant::now());
        assert_eq!(state.pause(1, None), Duration::from_millis(100));
        assert_eq!(state.pause(2, None), Duration::from_millis(200));
        assert_eq!(state.pause(3, None), Duration::from_millis(350));
        assert_eq!(state.pause(40, None), Duration::from_millis(350));
        assert_eq!(
            state.pause(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        let jittered = RetryState::new(Retry::new(), 1, Instant::now());
        for _ in 0..100 {
            let p = jittered.pause(1, None);
            assert!(p <= Duration::from_millis(100) && p >= Duration::from_millis(50));
        }
    }
}
