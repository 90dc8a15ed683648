//! Request and token budgets per provider: [`Budget`] (the setting) and [`Limiter`] (its
//! state, shared by every caller of the provider).
//!
//! Requests go through a [governor](https://docs.rs/governor) GCRA limiter on one atomic
//! word, driven by [`TokioClock`] so that paused tokio time moves it. Tokens cannot: a token
//! reservation is an *estimate* that is settled with the actual usage once the provider has
//! answered, and settling gives back what the call did not use (or takes what it used
//! beyond). governor's state only ever moves forward (its cells are spent, never returned),
//! so the token budget is a GCRA of the same shape kept here: one atomic theoretical arrival
//! time that a reservation advances (compare-and-swap, refused past the burst) and a
//! settlement moves back or forward (one fetch-and-add or saturating update).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use crate::error::{ConfigError, Scope};

/// The estimate a call that declares none reserves from a token budget, unless
/// [`Budget::default_estimate`] says otherwise.
pub const DEFAULT_ESTIMATE: u64 = 1_000;

/// Request and token limits of one provider over a period (a minute by default), as an LLM
/// provider states its RPM and TPM limits.
///
/// A call is admitted if both budgets have room: it takes one request and reserves its
/// estimated tokens (declared with `call_metered` / `route_metered`, else
/// [`default_estimate`](Self::default_estimate)); when it ends, its reservation is settled
/// with the tokens it reports using. A call over budget is not made: a direct call fails
/// with [`CallError::OverBudget`](crate::CallError::OverBudget) and the time the budget has
/// room again; a routed call skips the provider
/// ([`AttemptOutcome::SkippedBudget`](crate::AttemptOutcome::SkippedBudget)). Being over
/// budget never counts against the provider's circuit.
///
/// Both budgets refill continuously (GCRA): a budget of 60 requests a minute admits a burst
/// of 60, then one more each second.
///
/// ```
/// use fusebox::{Budget, Provider};
///
/// let openai = Provider::new("openai")
///     .budget(Budget::per_minute().requests(500).tokens(200_000).default_estimate(2_000));
/// # let _ = openai;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub(crate) period: Duration,
    pub(crate) requests: Option<u32>,
    pub(crate) tokens: Option<u64>,
    pub(crate) default_estimate: u64,
    pub(crate) from_headers: bool,
}

impl Budget {
    /// Limits per minute, none set yet.
    pub fn per_minute() -> Self {
        Self::per(Duration::from_secs(60))
    }

    /// Limits per `period` (for providers stating per-second or per-day limits).
    pub fn per(period: Duration) -> Self {
        Budget {
            period,
            requests: None,
            tokens: None,
            default_estimate: DEFAULT_ESTIMATE,
            from_headers: false,
        }
    }

    /// At most `n` requests per period (at least 1).
    ///
    /// Defaults to no request limit.
    pub fn requests(mut self, n: u32) -> Self {
        self.requests = Some(n);
        self
    }

    /// At most `m` tokens per period (prompt and completion; at least 1, at most
    /// 4,294,967,295).
    ///
    /// Defaults to no token limit.
    pub fn tokens(mut self, m: u64) -> Self {
        self.tokens = Some(m);
        self
    }

    /// What a call that declares no estimate reserves from the token budget (a plain
    /// `call` or `route`); it is never settled, since such a call reports no usage.
    ///
    /// Defaults to [`DEFAULT_ESTIMATE`] (1,000 tokens).
    pub fn default_estimate(mut self, tokens: u64) -> Self {
        self.default_estimate = tokens;
        self
    }

    /// Follows the limits the provider reports in its rate-limit headers (recorded with
    /// `ProviderHandle::record_headroom`, which `fusebox::http::record_headroom` calls): a
    /// reported request or token limit replaces the configured one (or sets it, if none
    /// was), so a budget configured too high learns the provider's real limit.
    ///
    /// Defaults to off: the configured limits hold.
    pub fn from_headers(mut self) -> Self {
        self.from_headers = true;
        self
    }

    /// A budget that sets nothing and follows the provider's headers:
    /// `Budget::per_minute().from_headers()`.
    pub fn learned() -> Self {
        Self::per_minute().from_headers()
    }

    /// The period the limits are over.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The request limit per period, if any.
    pub fn requests_limit(&self) -> Option<u32> {
        self.requests
    }

    /// The token limit per period, if any.
    pub fn tokens_limit(&self) -> Option<u64> {
        self.tokens
    }

    /// The estimate of calls that declare none.
    pub fn default_estimate_config(&self) -> u64 {
        self.default_estimate
    }

    /// Whether the limits follow the provider's headers.
    pub fn follows_headers(&self) -> bool {
        self.from_headers
    }

    pub(crate) fn validate(&self, scope: &Scope) -> Result<(), ConfigError> {
        if self.period.is_zero() || self.period > crate::config::MAX_DURATION {
            return Err(ConfigError::invalid(
                scope,
                "budget.period",
                format!("{:?}", self.period),
                "must be longer than zero and at most 365 days",
            ));
        }
        if self.requests == Some(0) {
            return Err(ConfigError::invalid(
                scope,
                "budget.requests",
                0,
                "must be at least 1",
            ));
        }
        match self.tokens {
            Some(0) => {
                return Err(ConfigError::invalid(
                    scope,
                    "budget.tokens",
                    0,
                    "must be at least 1",
                ))
            }
            Some(m) if m > u64::from(u32::MAX) => {
                return Err(ConfigError::invalid(
                    scope,
                    "budget.tokens",
                    m,
                    "must be at most 4294967295",
                ));
            }
            _ => {}
        }
        if self.requests.is_none() && self.tokens.is_none() && !self.from_headers {
            return Err(ConfigError::invalid(
                scope,
                "budget",
                "(no limit)",
                "needs a request or token limit, or from_headers",
            ));
        }
        Ok(())
    }
}

/// governor's [`Clock`] over [`tokio::time::Instant`]: paused tokio time drives the limiter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokioClock {
    origin: Instant,
}

impl TokioClock {
    fn nanos(&self, at: Instant) -> Nanos {
        let since = at.saturating_duration_since(self.origin).as_nanos();
        Nanos::from(u64::try_from(since).unwrap_or(u64::MAX))
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        self.nanos(Instant::now())
    }
}

type Requests = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// What a budget says of one admission that did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverBudget {
    /// When the budget has room for the same call again.
    pub(crate) retry_after: Duration,
}

impl OverBudget {
    /// The error of a direct call to `provider` turned away.
    pub(crate) fn into_error<E>(self, provider: &crate::ProviderId) -> crate::CallError<E> {
        crate::CallError::OverBudget {
            provider: provider.clone(),
            retry_after: self.retry_after,
        }
    }
}

/// The budgets of one provider, shared by all its callers. Lock-free: each admission is a
/// compare-and-swap on the token word and one on governor's request word.
#[derive(Debug)]
pub(crate) struct Limiter {
    clock: TokioClock,
    period: Duration,
    requests: arc_swap::ArcSwapOption<RequestLimit>,
    tokens: Tokens,
    default_estimate: u64,
    from_headers: bool,
    rejected: AtomicU64,
}

/// A request limit and its governor limiter (replaced whole when learned from headers).
#[derive(Debug)]
struct RequestLimit {
    limit: u32,
    limiter: Requests,
}

impl RequestLimit {
    fn new(limit: u32, period: Duration, clock: TokioClock) -> Option<Self> {
        let n = NonZeroU32::new(limit)?;
        let quota = Quota::with_period(period / limit)?.allow_burst(n);
        Some(RequestLimit {
            limit,
            limiter: RateLimiter::direct_with_clock(quota, clock),
        })
    }
}

impl Limiter {
    /// The budget's state, from `now` (validated config: limits above zero).
    pub(crate) fn new(budget: &Budget, now: Instant) -> Self {
        let clock = TokioClock { origin: now };
        let requests = budget
            .requests
            .and_then(|n| RequestLimit::new(n, budget.period, clock))
            .map(std::sync::Arc::new);
        Limiter {
            clock,
            period: budget.period,
            requests: arc_swap::ArcSwapOption::new(requests),
            tokens: Tokens::new(budget.tokens.unwrap_or(0), budget.period),
            default_estimate: budget.default_estimate,
            from_headers: budget.from_headers,
            rejected: AtomicU64::new(0),
        }
    }

    /// What a call that declares no estimate reserves.
    pub(crate) fn default_estimate(&self) -> u64 {
        self.default_estimate
    }

    /// Admits one request reserving `tokens`, or says when it would fit.
    pub(crate) fn reserve(&self, tokens: u64) -> Result<Reservation<'_>, OverBudget> {
        let now = self.clock.now().as_u64();
        let reserved = self.tokens.reserve(tokens, now).inspect_err(|_| {
            self.rejected.fetch_add(1, Relaxed);
        })?;
        if let Some(requests) = &*self.requests.load() {
            if let Err(not_until) = requests.limiter.check() {
                // The tokens were reserved for a request that is not made: all back.
                self.tokens.settle(reserved, 0);
                self.rejected.fetch_add(1, Relaxed);
                return Err(OverBudget {
                    retry_after: not_until.wait_time_from(Nanos::from(now)),
                });
            }
        }
        Ok(Reservation {
            limiter: self,
            tokens: reserved,
        })
    }

    /// Follows the limits a provider reported, if this budget is set to.
    pub(crate) fn learn(&self, requests: Option<u64>, tokens: Option<u64>) {
        if !self.from_headers {
            return;
        }
        if let Some(limit) = requests.and_then(|n| u32::try_from(n).ok()) {
            let current = self.requests.load().as_ref().map(|r| r.limit);
            if current != Some(limit) {
                if let Some(learned) = RequestLimit::new(limit, self.period, self.clock) {
                    self.requests.store(Some(std::sync::Arc::new(learned)));
                }
            }
        }
        if let Some(limit) = tokens.filter(|&m| m > 0 && m <= u64::from(u32::MAX)) {
            self.tokens.set_limit(limit);
        }
    }

    /// A snapshot for status.
    pub(crate) fn status(&self) -> BudgetStatus {
        let now = self.clock.now().as_u64();
        let tokens_limit = self.tokens.limit();
        BudgetStatus {
            period: self.period,
            requests_limit: self.requests.load().as_ref().map(|r| r.limit),
            tokens_limit: (tokens_limit > 0).then_some(tokens_limit),
            tokens_available: (tokens_limit > 0).then(|| self.tokens.available(now)),
            rejected: self.rejected.load(Relaxed),
        }
    }
}

/// A provider's budget as last seen: its limits, the tokens free now, the calls it turned
/// away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct BudgetStatus {
    /// The period the limits are over.
    #[serde(serialize_with = "crate::events::ser::secs", rename = "period_seconds")]
    pub period: Duration,
    /// Requests per period, if limited (configured, or learned from headers).
    pub requests_limit: Option<u32>,
    /// Tokens per period, if limited.
    pub tokens_limit: Option<u64>,
    /// Tokens that can be reserved now, if limited: the limit less reservations not yet
    /// refilled, settled ones counted at their actual usage.
    pub tokens_available: Option<u64>,
    /// Calls not made because the budget had no room (direct calls rejected, routed ones
    /// skipped).
    pub rejected: u64,
}

/// Tokens reserved by one admitted call; [`settle`](Self::settle) it with what the call
/// used. Dropped unsettled, the estimate stands (the call reported nothing).
#[derive(Debug)]
#[must_use = "settle the reservation with the tokens the call used"]
pub(crate) struct Reservation<'a> {
    limiter: &'a Limiter,
    tokens: u64,
}

impl Reservation<'_> {
    /// Settles the reservation with the tokens the call actually used.
    pub(crate) fn settle(self, used: u64) {
        self.limiter.tokens.settle(self.tokens, used);
    }
}

/// The token GCRA: `tat` is the theoretical arrival time, in nanoseconds from the clock's
/// origin, of a reservation made with the bucket full. A bucket of `limit` tokens refills
/// over `period`: each token costs `period / limit`, and a reservation fits while it leaves
/// `tat` at most one period ahead of now.
#[derive(Debug)]
struct Tokens {
    tat: AtomicU64,
    /// Tokens per period; 0 for no limit.
    limit: AtomicU64,
    period: u64,
}

impl Tokens {
    fn new(limit: u64, period: Duration) -> Self {
        Tokens {
            tat: AtomicU64::new(0),
            limit: AtomicU64::new(limit),
            period: u64::try_from(period.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    fn limit(&self) -> u64 {
        self.limit.load(Relaxed)
    }

    fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Relaxed);
    }

    /// The time `tokens` take to refill, in nanoseconds, rounded up.
    fn cost(&self, tokens: u64, limit: u64) -> u64 {
        let nanos = u128::from(tokens) * u128::from(self.period);
        u64::try_from(nanos.div_ceil(u128::from(limit.max(1)))).unwrap_or(u64::MAX)
    }

    /// Reserves `tokens` (capped at the whole budget: a larger estimate waits for a full
    /// bucket) at `now`; returns what was reserved.
    fn reserve(&self, tokens: u64, now: u64) -> Result<u64, OverBudget> {
        let limit = self.limit();
        if limit == 0 || tokens == 0 {
            return Ok(0);
        }
        let tokens = tokens.min(limit);
        let cost = self.cost(tokens, limit);
        let horizon = now.saturating_add(self.period);
        let mut tat = self.tat.load(Relaxed);
        loop {
            let next = tat.max(now).saturating_add(cost);
            if next > horizon {
                return Err(OverBudget {
                    retry_after: Duration::from_nanos(next - horizon),
                });
            }
            match self.tat.compare_exchange_weak(tat, next, Relaxed, Relaxed) {
                Ok(_) => return Ok(tokens),
                Err(seen) => tat = seen,
            }
        }
    }

    /// Settles a reservation of `reserved` tokens that used `used`: gives back the
    /// difference, or takes the excess (which may put the budget in debt: later calls wait
    /// for it to refill).
    fn settle(&self, reserved: u64, used: u64) {
        let limit = self.limit();
        if limit == 0 || reserved == used {
            return;
        }
        if used > reserved {
            self.tat
                .fetch_add(self.cost(used - reserved, limit), Relaxed);
        } else {
            // Rounded down, so that a refund never gives back more than was taken.
            let refund =
                u128::from(reserved - used) * u128::from(self.period) / u128::from(limit.max(1));
            let refund = u64::try_from(refund).unwrap_or(u64::MAX);
            let _ = self
                .tat
                .fetch_update(Relaxed, Relaxed, |tat| Some(tat.saturating_sub(refund)));
        }
    }

    /// Tokens that can be reserved at `now`.
    fn available(&self, now: u64) -> u64 {
        let limit = self.limit();
        let ahead = self.tat.load(Relaxed).saturating_sub(now);
        if ahead >= self.period {
            return 0;
        }
        let used = (u128::from(ahead) * u128::from(limit)).div_ceil(u128::from(self.period.max(1)));
        limit.saturating_sub(u64::try_from(used).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000_000_000;

    #[test]
    fn tokens_reserve_refill_and_settle() {
        let t = Tokens::new(1_000, Duration::from_secs(60));
        assert_eq!(t.reserve(600, 0), Ok(600));
        assert_eq!(t.available(0), 400);
        // 500 more do not fit: 100 tokens' refill (6 s) away.
        assert_eq!(
            t.reserve(500, 0),
            Err(OverBudget {
                retry_after: Duration::from_secs(6)
            })
        );
        t.settle(600, 100);
        assert_eq!(t.available(0), 900);
        // A full minute later the bucket is full again, never fuller.
        assert_eq!(t.available(MINUTE), 1_000);
        // Debt: used more than reserved.
        assert_eq!(t.reserve(100, MINUTE), Ok(100));
        t.settle(100, 1_100);
        assert_eq!(t.available(MINUTE), 0);
        assert!(t.reserve(1, MINUTE).is_err());
    }

    #[test]
    fn estimates_above_the_budget_wait_for_a_full_bucket() {
        let t = Tokens::new(10, Duration::from_secs(1));
        assert_eq!(t.reserve(1_000_000, 0), Ok(10));
        assert!(t.reserve(1, 0).is_err());
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let t = Tokens::new(u64::from(u32::MAX), Duration::MAX);
        assert!(t.reserve(u64::MAX, u64::MAX).is_ok());
        t.settle(0, u64::MAX);
        t.settle(u64::MAX, 0);
        let _ = t.available(u64::MAX);
    }
}
