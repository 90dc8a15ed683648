//! Rate-limit headroom: what a provider says is left of its quota, and a lock-free cell that
//! keeps the latest of it per provider.
//!
//! LLM providers announce their quota on every response: OpenAI with
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, Anthropic with
//! `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`.
//! A [`Headroom`] is one response's announcement (parse one with
//! `fusebox::http::parse_headroom`, feature `reqwest`); a [`HeadroomCell`] keeps the latest
//! announcement of one provider and answers, at any later instant, the two questions a
//! router asks:
//!
//! - [`exhausted_until`](HeadroomCell::exhausted_until): a quota with nothing left is treated
//!   as rate-limited until its reset, without sending a request to collect the 429;
//! - [`ratio`](HeadroomCell::ratio): how much of the tightest quota is left, to demote a
//!   provider that is running low.
//!
//! # Validity
//!
//! A quota recorded at `t` with a reset `r` is *current* while `now < t + r`: after its
//! reset the provider has refilled it, and what it said is no longer news. A quota announced
//! without a reset is current for [`UNDATED_VALIDITY`] (60 seconds, the usual window of a
//! per-minute limit). Resets longer than a year are taken as a year. Every question is
//! answered from the current quotas only, so a provider demoted for a low quota is never
//! kept out past its reset by an announcement it had no occasion to renew.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;

/// How long a quota announced without a reset stays current: 60 seconds.
pub const UNDATED_VALIDITY: Duration = Duration::from_secs(60);

/// The longest reset taken into account: one year (longer ones are cut to it).
pub const MAX_RESET: Duration = Duration::from_secs(365 * 24 * 3600);

/// One quota of a provider: how much of it is left, out of how much, and when it is full
/// again.
///
/// ```
/// use std::time::Duration;
/// use fusebox::headroom::Quota;
///
/// let quota = Quota::new(250).with_limit(1000).with_reset(Duration::from_secs(6));
/// assert_eq!(quota.ratio(), Some(0.25));
/// assert!(!quota.is_exhausted());
/// assert_eq!(Quota::new(7).ratio(), None); // no limit announced
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[non_exhaustive]
pub struct Quota {
    /// What is left (`x-ratelimit-remaining-*`, `anthropic-ratelimit-*-remaining`).
    pub remaining: u64,
    /// The size of the quota (`x-ratelimit-limit-*`, `anthropic-ratelimit-*-limit`), if
    /// announced.
    pub limit: Option<u64>,
    /// How long after the response the quota is full again (`x-ratelimit-reset-*`,
    /// `anthropic-ratelimit-*-reset`), if announced. Serialised as `reset_seconds`.
    #[serde(
        rename = "reset_seconds",
        serialize_with = "crate::events::ser::opt_secs"
    )]
    pub reset: Option<Duration>,
}

impl Quota {
    /// A quota with `remaining` left, no limit and no reset.
    pub const fn new(remaining: u64) -> Quota {
        Quota {
            remaining,
            limit: None,
            reset: None,
        }
    }

    /// This quota with its limit.
    #[must_use]
    pub const fn with_limit(mut self, limit: u64) -> Quota {
        self.limit = Some(limit);
        self
    }

    /// This quota with its reset, counted from the response.
    #[must_use]
    pub const fn with_reset(mut self, reset: Duration) -> Quota {
        self.reset = Some(reset);
        self
    }

    /// `remaining / limit`, in `0.0..=1.0` (a `remaining` above the limit counts as the
    /// limit); `None` without a limit or with a limit of 0.
    pub fn ratio(&self) -> Option<f64> {
        match self.limit {
            Some(limit) if limit > 0 => Some(self.remaining.min(limit) as f64 / limit as f64),
            _ => None,
        }
    }

    /// Whether nothing is left.
    pub const fn is_exhausted(&self) -> bool {
        self.remaining == 0
    }
}

/// Which quota of a [`Headroom`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum QuotaKind {
    /// Requests (OpenAI and Anthropic).
    Requests,
    /// Tokens (OpenAI: input and output together; Anthropic: the most restrictive token
    /// limit in effect).
    Tokens,
    /// Input tokens (Anthropic).
    InputTokens,
    /// Output tokens (Anthropic).
    OutputTokens,
}

impl QuotaKind {
    /// Every kind, in the order of [`Headroom`]'s fields.
    pub const ALL: [QuotaKind; 4] = [
        QuotaKind::Requests,
        QuotaKind::Tokens,
        QuotaKind::InputTokens,
        QuotaKind::OutputTokens,
    ];

    /// `requests`, `tokens`, `input_tokens` or `output_tokens`.
    pub const fn as_str(self) -> &'static str {
        match self {
            QuotaKind::Requests => "requests",
            QuotaKind::Tokens => "tokens",
            QuotaKind::InputTokens => "input_tokens",
            QuotaKind::OutputTokens => "output_tokens",
        }
    }
}

/// What one response said about a provider's quotas. A quota the response did not mention
/// is `None`.
///
/// Build one by parsing a response's headers (`fusebox::http::parse_headroom`, feature
/// `reqwest`), or by hand:
///
/// ```
/// use std::time::Duration;
/// use fusebox::headroom::{Headroom, Quota};
///
/// let mut headroom = Headroom::default();
/// headroom.requests = Some(Quota::new(1).with_limit(50).with_reset(Duration::from_secs(1)));
/// headroom.tokens = Some(Quota::new(20_000).with_limit(80_000));
/// assert_eq!(headroom.ratio(), Some(0.02)); // the tightest quota: requests
/// assert_eq!(headroom.exhausted_for(), None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[non_exhaustive]
pub struct Headroom {
    /// Requests.
    pub requests: Option<Quota>,
    /// Tokens (OpenAI: input and output together; Anthropic: the most restrictive token
    /// limit in effect).
    pub tokens: Option<Quota>,
    /// Input tokens (Anthropic only).
    pub input_tokens: Option<Quota>,
    /// Output tokens (Anthropic only).
    pub output_tokens: Option<Quota>,
}

impl Headroom {
    /// The quota of this kind, if announced.
    pub const fn get(&self, kind: QuotaKind) -> Option<&Quota> {
        match kind {
            QuotaKind::Requests => self.requests.as_ref(),
            QuotaKind::Tokens => self.tokens.as_ref(),
            QuotaKind::InputTokens => self.input_tokens.as_ref(),
            QuotaKind::OutputTokens => self.output_tokens.as_ref(),
        }
    }

    /// The quota of this kind, to set or change it.
    pub fn get_mut(&mut self, kind: QuotaKind) -> &mut Option<Quota> {
        match kind {
            QuotaKind::Requests => &mut self.requests,
            QuotaKind::Tokens => &mut self.tokens,
            QuotaKind::InputTokens => &mut self.input_tokens,
            QuotaKind::OutputTokens => &mut self.output_tokens,
        }
    }

    /// The announced quotas, in the order of [`QuotaKind::ALL`].
    pub fn quotas(&self) -> impl Iterator<Item = (QuotaKind, &Quota)> + '_ {
        QuotaKind::ALL
            .into_iter()
            .filter_map(move |kind| self.get(kind).map(|q| (kind, q)))
    }

    /// Whether no quota is announced.
    pub fn is_empty(&self) -> bool {
        self.quotas().next().is_none()
    }

    /// The smallest [`Quota::ratio`] of the announced quotas: how much of the tightest one
    /// is left, in `0.0..=1.0`. `None` when no quota announced a (non-zero) limit.
    pub fn ratio(&self) -> Option<f64> {
        self.quotas()
            .filter_map(|(_, q)| q.ratio())
            .reduce(f64::min)
    }

    /// How long after the response the provider stays rate-limited: the longest reset of
    /// the quotas with nothing left. `None` when no quota is exhausted, or when none of the
    /// exhausted ones announced a reset (then only a 429 and its `Retry-After` can say).
    pub fn exhausted_for(&self) -> Option<Duration> {
        self.quotas()
            .filter(|(_, q)| q.is_exhausted())
            .filter_map(|(_, q)| q.reset)
            .max()
    }
}

/// The latest [`Headroom`] of one provider, recorded and read without a lock.
///
/// [`record`](Self::record) replaces what was there (the latest response wins); the readers
/// answer from the quotas that are still current at the instant they are given (see the
/// [module docs](self)). Every method is one atomic operation on an `arc_swap::ArcSwapOption`
/// plus arithmetic: no lock, no allocation on reads (a record allocates its snapshot).
///
/// ```
/// use std::time::Duration;
/// use fusebox::headroom::{Headroom, HeadroomCell, Quota};
/// use tokio::time::Instant;
///
/// let cell = HeadroomCell::new();
/// let t0 = Instant::now();
/// let mut spent = Headroom::default();
/// spent.requests = Some(Quota::new(0).with_limit(60).with_reset(Duration::from_secs(2)));
/// cell.record(spent, t0);
///
/// let later = t0 + Duration::from_secs(1);
/// assert_eq!(cell.exhausted_until(later), Some(t0 + Duration::from_secs(2)));
/// assert_eq!(cell.ratio(later), Some(0.0));
/// // After the reset the quota is full again: nothing is known any more.
/// let after = t0 + Duration::from_secs(2);
/// assert_eq!(cell.exhausted_until(after), None);
/// assert_eq!(cell.ratio(after), None);
/// assert_eq!(cell.snapshot(), Some(spent)); // as recorded
/// ```
#[derive(Debug, Default)]
pub struct HeadroomCell {
    latest: ArcSwapOption<Recorded>,
}

/// A clone holds the same latest record, with its instant (a provider rebuilt by a reload
/// keeps what its provider announced), and is recorded into apart from then on.
impl Clone for HeadroomCell {
    fn clone(&self) -> HeadroomCell {
        HeadroomCell {
            latest: ArcSwapOption::new(self.latest.load_full()),
        }
    }
}

#[derive(Debug)]
struct Recorded {
    headroom: Headroom,
    at: Instant,
}

impl Recorded {
    /// Until when `quota` is current.
    fn expires(&self, quota: &Quota) -> Instant {
        self.at + quota.reset.unwrap_or(UNDATED_VALIDITY)
    }

    /// The quotas still current at `now`, with their expiry.
    fn current(&self, now: Instant) -> impl Iterator<Item = (QuotaKind, &Quota, Instant)> + '_ {
        self.headroom
            .quotas()
            .map(|(kind, q)| (kind, q, self.expires(q)))
            .filter(move |(_, _, until)| now < *until)
    }
}

impl HeadroomCell {
    /// An empty cell.
    pub fn new() -> HeadroomCell {
        HeadroomCell::default()
    }

    /// Records what a response said, received at `now`, replacing what was there. A
    /// headroom without any quota is ignored (a response without rate-limit headers says
    /// nothing). Resets longer than [`MAX_RESET`] are cut to it.
    pub fn record(&self, mut headroom: Headroom, now: Instant) {
        if headroom.is_empty() {
            return;
        }
        for kind in QuotaKind::ALL {
            if let Some(q) = headroom.get_mut(kind) {
                q.reset = q.reset.map(|r| r.min(MAX_RESET));
            }
        }
        self.latest
            .store(Some(Arc::new(Recorded { headroom, at: now })));
    }

    /// Forgets what was recorded.
    pub fn clear(&self) {
        self.latest.store(None);
    }

    /// The latest headroom recorded, as it was recorded (resets counted from its response,
    /// even those that have passed since).
    pub fn snapshot(&self) -> Option<Headroom> {
        self.latest.load().as_ref().map(|r| r.headroom)
    }

    /// When the latest headroom was recorded.
    pub fn recorded_at(&self) -> Option<Instant> {
        self.latest.load().as_ref().map(|r| r.at)
    }

    /// The latest headroom as of `now`: only its quotas still current (see the
    /// [module docs](self)), each reset counted from `now`. `None` when nothing was recorded
    /// or no quota is current any more.
    pub fn current(&self, now: Instant) -> Option<Headroom> {
        let guard = self.latest.load();
        let recorded = guard.as_ref()?;
        let mut headroom = Headroom::default();
        for (kind, q, until) in recorded.current(now) {
            let reset = q.reset.map(|_| until.saturating_duration_since(now));
            *headroom.get_mut(kind) = Some(Quota { reset, ..*q });
        }
        (!headroom.is_empty()).then_some(headroom)
    }

    /// Until when the provider is rate-limited by its own announcement: among the quotas
    /// current at `now` that have nothing left (`remaining == 0`) and announced a reset, the
    /// latest reset instant (every exhausted quota must have refilled before a request can
    /// pass). `None` when no such quota is current; the instant returned is always after
    /// `now`.
    ///
    /// An exhausted quota without a reset does not count: how long it lasts is unknown, and
    /// the provider's 429 with its `Retry-After` will say.
    pub fn exhausted_until(&self, now: Instant) -> Option<Instant> {
        let guard = self.latest.load();
        let recorded = guard.as_ref()?;
        recorded
            .current(now)
            .filter(|(_, q, _)| q.is_exhausted() && q.reset.is_some())
            .map(|(_, _, until)| until)
            .max()
    }

    /// How much of the tightest quota is left at `now`: the smallest `remaining / limit`
    /// ([`Quota::ratio`]) among the quotas current at `now`, in `0.0..=1.0`. `None` when
    /// nothing was recorded, or once every quota with a limit has passed its reset (or,
    /// without a reset, [`UNDATED_VALIDITY`]).
    ///
    /// The value is exactly what the provider announced: `remaining` and `limit` as integers,
    /// divided once.
    pub fn ratio(&self, now: Instant) -> Option<f64> {
        let guard = self.latest.load();
        let recorded = guard.as_ref()?;
        recorded
            .current(now)
            .filter_map(|(_, q, _)| q.ratio())
            .reduce(f64::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn quota(remaining: u64, limit: u64, reset: Duration) -> Option<Quota> {
        Some(Quota::new(remaining).with_limit(limit).with_reset(reset))
    }

    #[test]
    fn ratios_take_the_tightest_quota() {
        let mut h = Headroom::default();
        assert_eq!((h.ratio(), h.is_empty()), (None, true));
        h.requests = quota(90, 100, S);
        h.tokens = quota(10, 100, 6 * S);
        h.output_tokens = Some(Quota::new(0)); // no limit: no ratio
        assert_eq!(h.ratio(), Some(0.1));
        assert_eq!(Quota::new(5).with_limit(0).ratio(), None);
        assert_eq!(Quota::new(500).with_limit(100).ratio(), Some(1.0));
        // Exhausted without a reset: no duration known.
        assert_eq!(h.exhausted_for(), None);
        h.requests = quota(0, 100, 3 * S);
        h.tokens = quota(0, 100, 6 * S);
        assert_eq!(h.exhausted_for(), Some(6 * S));
    }

    #[test]
    fn quotas_expire_one_by_one() {
        let cell = HeadroomCell::new();
        let t0 = Instant::now();
        assert_eq!((cell.ratio(t0), cell.exhausted_until(t0)), (None, None));
        let h = Headroom {
            requests: quota(0, 10, 2 * S),
            tokens: quota(50, 100, 5 * S),
            input_tokens: Some(Quota::new(3).with_limit(4)), // undated
            output_tokens: None,
        };
        cell.record(h, t0);
        assert_eq!(cell.recorded_at(), Some(t0));
        assert_eq!(cell.exhausted_until(t0), Some(t0 + 2 * S));
        assert_eq!(cell.ratio(t0 + S), Some(0.0));
        // Requests reset at 2 s: tokens decide.
        assert_eq!(cell.exhausted_until(t0 + 2 * S), None);
        assert_eq!(cell.ratio(t0 + 2 * S), Some(0.5));
        let now = Headroom {
            tokens: quota(50, 100, 2 * S),
            input_tokens: Some(Quota::new(3).with_limit(4)),
            ..Headroom::default()
        };
        assert_eq!(cell.current(t0 + 3 * S), Some(now));
        // Tokens reset at 5 s: the undated quota lasts 60 s.
        assert_eq!(cell.ratio(t0 + 5 * S), Some(0.75));
        assert_eq!(cell.ratio(t0 + UNDATED_VALIDITY), None);
        assert_eq!(cell.current(t0 + UNDATED_VALIDITY), None);
        assert_eq!(cell.snapshot(), Some(h));
    }

    #[test]
    fn the_latest_record_wins_and_empty_ones_are_ignored() {
        let cell = HeadroomCell::new();
        let t0 = Instant::now();
        let spent = Headroom {
            requests: quota(0, 10, 10 * S),
            ..Headroom::default()
        };
        cell.record(spent, t0);
        cell.record(Headroom::default(), t0 + S);
        assert_eq!(cell.exhausted_until(t0 + S), Some(t0 + 10 * S));
        let refilled = Headroom {
            requests: quota(9, 10, 10 * S),
            ..Headroom::default()
        };
        cell.record(refilled, t0 + S);
        assert_eq!(cell.exhausted_until(t0 + S), None);
        assert_eq!(cell.ratio(t0 + S), Some(0.9));
        cell.clear();
        assert_eq!(cell.snapshot(), None);
    }

    #[test]
    fn a_reloaded_provider_carries_its_headroom_over() {
        let old = HeadroomCell::new();
        let t0 = Instant::now();
        let spent = Headroom {
            requests: quota(0, 10, 10 * S),
            ..Headroom::default()
        };
        old.record(spent, t0);
        let new = old.clone();
        old.clear();
        assert_eq!(new.recorded_at(), Some(t0));
        assert_eq!(new.exhausted_until(t0 + S), Some(t0 + 10 * S));
    }

    #[test]
    fn huge_resets_are_cut_to_a_year() {
        let cell = HeadroomCell::new();
        let t0 = Instant::now();
        let h = Headroom {
            requests: Some(Quota::new(0).with_reset(Duration::MAX)),
            ..Headroom::default()
        };
        cell.record(h, t0);
        assert_eq!(cell.exhausted_until(t0), Some(t0 + MAX_RESET));
    }
}
