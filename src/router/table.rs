//! The registry snapshot the router actor publishes and every call reads: the providers by
//! name and each route's current order, with why each member stands where it does.

use std::cell::{Ref, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use crate::breaker::CircuitState;
use crate::config::{Config, Route};
use crate::{ProviderHandle, ProviderId};

/// Why a member of a route stands where it does in the route's order.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Reason {
    /// Closed and healthy: in its configured place.
    Healthy,
    /// Half-open: in its configured place, so that its free trial slots are taken by real
    /// requests; a request that finds every slot taken moves on at once.
    Trial,
    /// Closed, but failing often: behind every healthy member until its failure rate falls
    /// (see [`crate::router`] for the thresholds).
    Demoted {
        /// The failure rate over the sampling window when it was last sampled.
        failure_rate: f64,
    },
    /// Closed, but with little rate-limit headroom left: behind every healthy member.
    LowHeadroom {
        /// The fraction of its quota left.
        ratio: f64,
    },
    /// Open: skipped without a call until its deadline.
    Open,
    /// Isolated: skipped until an operator resets it.
    Isolated,
    /// Its actor stopped for good: skipped.
    Stopped,
}

impl Reason {
    /// A stable snake-case name: `healthy`, `trial`, `demoted`, `low_headroom`, `open`,
    /// `isolated`, `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Healthy => "healthy",
            Reason::Trial => "trial",
            Reason::Demoted { .. } => "demoted",
            Reason::LowHeadroom { .. } => "low_headroom",
            Reason::Open => "open",
            Reason::Isolated => "isolated",
            Reason::Stopped => "stopped",
        }
    }

    /// Whether a member with this reason is ranked behind every member that is not.
    pub(crate) fn is_demoted(self) -> bool {
        matches!(self, Reason::Demoted { .. } | Reason::LowHeadroom { .. })
    }
}

/// Counters of one route, kept across the route's publications. Routed calls add to them
/// without a lock; the metrics timer publishes them.
#[derive(Debug, Default)]
pub(crate) struct RouteCounters {
    /// By provider: attempts by [`AttemptResult`].
    attempts: Mutex<HashMap<ProviderId, Arc<MemberCounters>>>,
    /// By (first choice, server): calls served after a fallback.
    fallbacks: Mutex<HashMap<(ProviderId, ProviderId), Arc<AtomicU64>>>,
    /// How many times the router changed this route's order.
    pub(crate) order_changes: AtomicU64,
    /// The route's own retry budget, if it sets a `Retry` (see `router::retry`).
    pub(crate) retry: Mutex<Option<Arc<crate::budget::RetryState>>>,
}

/// How a routed attempt ended, for the route metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptResult {
    Success,
    Failure,
    Timeout,
    Ignored,
    SkippedOpen,
    SkippedIsolated,
    SkippedSaturated,
    SkippedBudget,
    Deadline,
}

impl AttemptResult {
    pub(crate) const ALL: [AttemptResult; 9] = [
        AttemptResult::Success,
        AttemptResult::Failure,
        AttemptResult::Timeout,
        AttemptResult::Ignored,
        AttemptResult::SkippedOpen,
        AttemptResult::SkippedIsolated,
        AttemptResult::SkippedSaturated,
        AttemptResult::SkippedBudget,
        AttemptResult::Deadline,
    ];

    /// The `result` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Success => "success",
            AttemptResult::Failure => "failure",
            AttemptResult::Timeout => "timeout",
            AttemptResult::Ignored => "ignored",
            AttemptResult::SkippedOpen => "skipped_open",
            AttemptResult::SkippedIsolated => "skipped_isolated",
            AttemptResult::SkippedSaturated => "skipped_saturated",
            AttemptResult::SkippedBudget => "skipped_budget",
            AttemptResult::Deadline => "deadline",
        }
    }
}

/// One member's attempt counters on one route.
#[derive(Debug, Default)]
pub(crate) struct MemberCounters(crate::tally::Tally<{ AttemptResult::ALL.len() }>);

impl MemberCounters {
    /// Counts one attempt: on this thread's own line (see [`crate::tally`]).
    #[inline(always)]
    pub(crate) fn add(&self, result: AttemptResult) {
        self.0.add(result as usize, 1);
    }

    pub(crate) fn get(&self, result: AttemptResult) -> u64 {
        self.0.get(result as usize)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RouteCounters {
    /// The counters of `provider` on this route (created on first use; the router calls this
    /// when it publishes, never a routed call).
    pub(crate) fn member(&self, provider: &ProviderId) -> Arc<MemberCounters> {
        lock(&self.attempts)
            .entry(provider.clone())
            .or_default()
            .clone()
    }

    /// The fallback counter from `first` to `to`.
    pub(crate) fn fallback(&self, first: &ProviderId, to: &ProviderId) -> Arc<AtomicU64> {
        lock(&self.fallbacks)
            .entry((first.clone(), to.clone()))
            .or_default()
            .clone()
    }

    /// Every member's counters, for publication.
    pub(crate) fn members(&self) -> Vec<(ProviderId, Arc<MemberCounters>)> {
        lock(&self.attempts)
            .iter()
            .map(|(p, c)| (p.clone(), c.clone()))
            .collect()
    }

    /// Every fallback counter, for publication.
    pub(crate) fn fallbacks(&self) -> Vec<((ProviderId, ProviderId), u64)> {
        lock(&self.fallbacks)
            .iter()
            .map(|(k, c)| (k.clone(), c.load(Relaxed)))
            .collect()
    }
}

/// One member of a route, in the route's current order.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) handle: ProviderHandle,
    pub(crate) reason: Reason,
    pub(crate) counters: Arc<MemberCounters>,
    /// Its slow-start ramp, for a provider with `slow_start` (`router::ramp`).
    pub(crate) ramp: Option<Arc<super::ramp::Ramp>>,
}

/// One route as routed calls see it: its configuration and its current order.
#[derive(Debug)]
pub(crate) struct RouteView {
    pub(crate) config: Route,
    /// The members, in the order the router ranked them.
    pub(crate) members: Vec<Member>,
    /// How many members lead the order as preferred (not demoted); a per-call policy (least
    /// loaded, lowest latency) re-sorts only these.
    pub(crate) preferred: usize,
    /// `fallbacks[first * n + served]`: calls served by member `served` after the first
    /// choice `first` (indices into `members`).
    pub(crate) fallbacks: Vec<Arc<AtomicU64>>,
    pub(crate) counters: Arc<RouteCounters>,
    /// How many orders the router has published for this route.
    pub(crate) version: u64,
    /// The route's retry budget, if it sets a `Retry`.
    pub(crate) retry: Option<Arc<crate::budget::RetryState>>,
    /// Whether one call's order is the published order as it is: the policy sorts nothing
    /// per call and no preferred member ramps up (see `router::failover::ordered`).
    pub(crate) as_published: bool,
}

impl RouteView {
    /// The publication of `config` with its members in `order`.
    pub(crate) fn new(
        config: Route,
        order: Vec<(ProviderHandle, Reason)>,
        counters: Arc<RouteCounters>,
        version: u64,
    ) -> Self {
        let members: Vec<Member> = order
            .into_iter()
            .map(|(handle, reason)| Member {
                counters: counters.member(handle.id()),
                handle,
                reason,
                ramp: None,
            })
            .collect();
        let preferred = members
            .iter()
            .take_while(|m| !m.reason.is_demoted())
            .count();
        let mut fallbacks = Vec::with_capacity(members.len() * members.len());
        for first in &members {
            for served in &members {
                fallbacks.push(counters.fallback(first.handle.id(), served.handle.id()));
            }
        }
        let retry = counters.retry_state(&config.name, config.retry);
        RouteView {
            as_published: !matches!(
                config.policy,
                crate::config::Policy::LeastLoaded | crate::config::Policy::LowestLatency
            ),
            retry,
            config,
            members,
            preferred,
            fallbacks,
            counters,
            version,
        }
    }

    /// The order as (provider, reason) pairs, to compare publications.
    pub(crate) fn order(&self) -> impl Iterator<Item = (&ProviderId, Reason)> {
        self.members.iter().map(|m| (m.handle.id(), m.reason))
    }
}

/// The registry as published: what every call reads with one atomic load.
#[derive(Debug)]
pub(crate) struct Table {
    /// The running configuration (providers and routes as configured).
    pub(crate) config: Arc<Config>,
    pub(crate) providers: HashMap<ProviderId, ProviderHandle>,
    /// The providers in configured order.
    pub(crate) order: Vec<ProviderHandle>,
    pub(crate) routes: NameMap<Arc<RouteView>>,
}

/// A map by configured name, hashed with [`NameHasher`]: every routed call looks its route
/// up by name.
pub(crate) type NameMap<V> = HashMap<String, V, BuildHasherDefault<NameHasher>>;

/// A multiply-rotate hash over 8 bytes at a time (FxHash's mixing step), for the short names
/// of configured routes: a few instructions per lookup where SipHash costs a hundred. Its
/// keys are the configuration's own names, never inserted from requests, so there is no
/// collision attack to resist (a lookup of any string costs at most the probes of the
/// configured keys).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NameHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl NameHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for NameHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // Byte by byte: a copy of a variable length would be a call to `memcpy`.
            let word = rest
                .iter()
                .rev()
                .fold(0, |word, &byte| word << 8 | u64::from(byte));
            self.add(word ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Where the router publishes its tables and calls read them.
pub(crate) type Tables = Arc<Published>;

/// The router's current table: an `arc_swap` cell, and a version bumped after every store
/// so that a routed call can read the table through its thread's cache ([`with`](Self::with))
/// with one plain load, no read-modify-write.
#[derive(Debug)]
pub(crate) struct Published {
    swap: arc_swap::ArcSwap<Table>,
    version: AtomicU64,
    /// Tells this cell from others in a thread's cache.
    id: u64,
}

/// The table a thread last read, of which cell, at which version. One per thread: it keeps
/// that table (its handles and their counters, not their actors, which their supervisor
/// stops) alive until the thread reads another table or exits.
struct Seen {
    id: u64,
    version: u64,
    table: Arc<Table>,
}

thread_local! {
    static SEEN: RefCell<Option<Seen>> = const { RefCell::new(None) };
}

impl Published {
    pub(crate) fn new(table: Table) -> Self {
        static IDS: AtomicU64 = AtomicU64::new(0);
        Published {
            swap: arc_swap::ArcSwap::from_pointee(table),
            version: AtomicU64::new(0),
            id: IDS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The current table, through an `arc_swap` guard.
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<Table>> {
        self.swap.load()
    }

    /// The current table.
    pub(crate) fn load_full(&self) -> Arc<Table> {
        self.swap.load_full()
    }

    /// Publishes `table`: a call that reads after this returns reads it (or a later one).
    pub(crate) fn store(&self, table: Arc<Table>) {
        self.swap.store(table);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Runs `f` on the current table, as this thread last read it if no table was published
    /// since (one load of the version), else read afresh and kept for the next call. A call
    /// nested in `f` reads the same cache; one that would replace it while `f` runs (another
    /// supervisor's), or a read during the thread's exit, reads the cell itself.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&Arc<Table>) -> R) -> R {
        let version = self.version.load(Ordering::Acquire);
        let mut f = Some(f);
        let read = SEEN.try_with(|seen| {
            let f = f.take().expect("taken once");
            let cached = seen.try_borrow().ok().and_then(|seen| {
                Ref::filter_map(seen, |seen| {
                    seen.as_ref()
                        .filter(|s| s.id == self.id && s.version == version)
                        .map(|s| &s.table)
                })
                .ok()
            });
            match cached {
                Some(table) => f(&table),
                None => self.refresh(Some(seen), version, f),
            }
        });
        match read {
            Ok(done) => done,
            Err(_) => self.refresh(None, version, f.take().expect("not run")),
        }
    }

    /// [`with`](Self::with) when this thread's cache (`seen`) does not hold the current table.
    #[inline(never)]
    fn refresh<R>(
        &self,
        seen: Option<&RefCell<Option<Seen>>>,
        version: u64,
        f: impl FnOnce(&Arc<Table>) -> R,
    ) -> R {
        // At least as new as `version`: it was read first.
        let table = self.swap.load_full();
        if let Some(mut seen) = seen.and_then(|seen| seen.try_borrow_mut().ok()) {
            *seen = Some(Seen {
                id: self.id,
                version,
                table: table.clone(),
            });
        }
        f(&table)
    }
}

impl Table {
    /// The current state of a member, from its published gate.
    pub(crate) fn gate_reason(handle: &ProviderHandle) -> Option<Reason> {
        if !handle.is_alive() {
            return Some(Reason::Stopped);
        }
        match handle.state() {
            CircuitState::Closed => None,
            CircuitState::HalfOpen => Some(Reason::Trial),
            CircuitState::Open => Some(Reason::Open),
            CircuitState::Isolated => Some(Reason::Isolated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_hash_apart_and_look_up() {
        let hash = |s: &str| {
            let mut h = NameHasher::default();
            h.write(s.as_bytes());
            h.write_u8(0xff);
            h.finish()
        };
        let names = [
            "",
            "a",
            "b",
            "ab",
            "ba",
            "healthy",
            "fallback",
            "a-much-longer-route",
        ];
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert_ne!(hash(a), hash(b), "{a:?} and {b:?}");
            }
        }
        let mut map: NameMap<usize> = NameMap::default();
        for (i, name) in names.iter().enumerate() {
            map.insert((*name).to_owned(), i);
        }
        for (i, name) in names.iter().enumerate() {
            assert_eq!(map.get(*name), Some(&i));
        }
        assert_eq!(map.get("missing"), None);
    }
}
