//! Slow start (`Provider::slow_start`): after a circuit closes, the provider's share of the
//! routed calls that would try it first grows from [`SLOW_START_FLOOR_PERCENT`] % to all of
//! them over its window, linearly, so that a provider that has just recovered is not hit by
//! every agent at once.
//!
//! The router actor owns one [`Ramp`] per provider with a slow-start window and hands it to
//! that provider's members in every published order. It arms the ramp whenever it sees the
//! provider out of service (its gate not closed) and starts it when it next sees it closed.
//! Routed calls read it without a lock or a message: [`apply`] takes one atomic load per
//! ramping member (none for members without slow start) and, while a ramp runs, a clock
//! read and one `fetch_add` on the ramp's call sequence, which admits exactly the share's
//! fraction of calls (spread evenly: the n-th call is admitted when `floor((n + 1) * share)`
//! passes `floor(n * share)`). A call that is not admitted tries the ramping provider after
//! the route's other preferred providers, so it is still the fallback's fallback.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use smallvec::{Array, SmallVec};
use tokio::time::Instant;

use super::table::{RouteView, Table};
use crate::breaker::CircuitState;
use crate::{ProviderHandle, ProviderId};

/// The share of routed calls (in percent) a provider with slow start receives at the moment
/// its circuit closes; it grows linearly to 100 % over the slow-start window.
pub const SLOW_START_FLOOR_PERCENT: u32 = 10;

/// Shares are kept in parts per million.
const FULL: u64 = 1_000_000;
const FLOOR: u64 = SLOW_START_FLOOR_PERCENT as u64 * FULL / 100;

/// No ramp: the full share.
const IDLE: u64 = 0;
/// Out of service: the ramp starts when the router next sees the circuit closed (a call
/// that finds it closed before then gets the floor share).
const ARMED: u64 = 1;
/// Larger words are a running ramp: `word - STARTED` nanoseconds after `origin`.
const STARTED: u64 = 2;

/// One provider's slow-start ramp. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Ramp {
    window: Duration,
    origin: Instant,
    word: AtomicU64,
    /// Calls that asked to take the provider first while the ramp ran.
    seq: AtomicU64,
}

impl Ramp {
    fn new(window: Duration) -> Self {
        Ramp {
            window,
            origin: Instant::now(),
            word: AtomicU64::new(IDLE),
            seq: AtomicU64::new(0),
        }
    }

    /// The router saw the provider out of service.
    fn arm(&self) {
        self.word.store(ARMED, Ordering::Release);
    }

    /// The router saw the provider closed at `now`: an armed ramp starts.
    fn closed(&self, now: Instant) {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        let word = u64::try_from(since)
            .unwrap_or(u64::MAX - STARTED)
            .saturating_add(STARTED);
        let _ = self
            .word
            .compare_exchange(ARMED, word, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The share of calls admitted now, in parts per million.
    fn share(&self) -> u64 {
        match self.word.load(Ordering::Acquire) {
            IDLE => FULL,
            ARMED => FLOOR,
            word => {
                let start = self.origin + Duration::from_nanos(word - STARTED);
                let elapsed = Instant::now().saturating_duration_since(start);
                if elapsed >= self.window {
                    // Over: back to the one-load path (unless it was re-armed meanwhile).
                    let _ =
                        self.word
                            .compare_exchange(word, IDLE, Ordering::AcqRel, Ordering::Acquire);
                    return FULL;
                }
                let grown =
                    (FULL - FLOOR) as u128 * elapsed.as_nanos() / self.window.as_nanos().max(1);
                FLOOR + u64::try_from(grown).unwrap_or(FULL - FLOOR)
            }
        }
    }

    /// Whether this call takes the provider at its place in the order.
    #[inline]
    fn admit(&self) -> bool {
        if self.word.load(Ordering::Relaxed) == IDLE {
            return true;
        }
        let share = self.share();
        if share >= FULL {
            return true;
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        // u128: no overflow whatever the count.
        let (n, share) = (u128::from(n), u128::from(share));
        (n + 1) * share / u128::from(FULL) > n * share / u128::from(FULL)
    }

    /// The share now, as a fraction (1 without a running ramp).
    pub(crate) fn current(&self) -> f64 {
        self.share() as f64 / FULL as f64
    }
}

/// The router actor's ramps: one per provider with a slow-start window.
#[derive(Debug, Default)]
pub(crate) struct Ramps {
    by_provider: HashMap<ProviderId, Arc<Ramp>>,
}

impl Ramps {
    /// The ramps of a published table (a restarted router carries on with them).
    pub(crate) fn from_table(table: &Table) -> Self {
        let mut by_provider = HashMap::new();
        for view in table.routes.values() {
            for member in &view.members {
                if let Some(ramp) = &member.ramp {
                    by_provider.insert(member.handle.id().clone(), ramp.clone());
                }
            }
        }
        Ramps { by_provider }
    }

    /// Keeps one ramp per provider with slow start (a new one when its window changed).
    pub(crate) fn sync(&mut self, providers: &HashMap<ProviderId, ProviderHandle>) {
        self.by_provider.retain(|id, ramp| {
            providers
                .get(id)
                .and_then(|h| h.shared.config.slow_start)
                .is_some_and(|w| w == ramp.window)
        });
        for (id, handle) in providers {
            if let Some(window) = handle.shared.config.slow_start {
                self.by_provider
                    .entry(id.clone())
                    .or_insert_with(|| Arc::new(Ramp::new(window)));
            }
        }
    }

    /// Arms a provider's ramp while its circuit is out of service, and starts it once the
    /// circuit is closed again.
    pub(crate) fn observe(&self, handle: &ProviderHandle, now: Instant) {
        let Some(ramp) = self.by_provider.get(handle.id()) else {
            return;
        };
        if handle.state() == CircuitState::Closed {
            ramp.closed(now);
        } else {
            ramp.arm();
        }
    }

    /// Hands each member of a freshly built view its provider's ramp.
    pub(crate) fn attach(&self, mut view: RouteView) -> RouteView {
        if !self.by_provider.is_empty() {
            for member in &mut view.members {
                member.ramp = self.by_provider.get(member.handle.id()).cloned();
            }
            let preferred = &view.members[..view.preferred.min(view.members.len())];
            view.as_published &= preferred.iter().all(|m| m.ramp.is_none());
        }
        view
    }
}

/// Applies the ramps to one call's order: a closed, ramping member among the preferred ones
/// that does not admit this call moves behind the other preferred members. No allocation,
/// no lock; one atomic load per member with slow start.
#[inline]
pub(crate) fn apply<A: Array<Item = u16>>(view: &RouteView, mut order: SmallVec<A>) -> SmallVec<A> {
    let mut end = view.preferred.min(order.len());
    let mut i = 0;
    while i < end {
        let member = &view.members[usize::from(order[i])];
        if let Some(ramp) = &member.ramp {
            if member.handle.state() == CircuitState::Closed && !ramp.admit() {
                order[i..end].rotate_left(1);
                end -= 1;
                continue;
            }
        }
        i += 1;
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_admits_exactly_the_share() {
        let ramp = Ramp::new(Duration::from_secs(10));
        ramp.arm();
        let admitted = (0..1000).filter(|_| ramp.admit()).count();
        assert_eq!(admitted, 100, "the floor share of 1000 calls");
        let idle = Ramp::new(Duration::from_secs(10));
        assert!((0..100).all(|_| idle.admit()));
    }

    #[test]
    fn the_share_is_exact_across_threads() {
        let ramp = Arc::new(Ramp::new(Duration::from_secs(10)));
        ramp.arm();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let ramp = ramp.clone();
                std::thread::spawn(move || (0..2500).filter(|_| ramp.admit()).count())
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert_eq!(admitted, 1000, "10 % of 10,000 calls from four threads");
    }

    #[tokio::test(start_paused = true)]
    async fn the_share_grows_linearly_and_ends() {
        let ramp = Ramp::new(Duration::from_secs(10));
        ramp.arm();
        assert_eq!(ramp.share(), FLOOR);
        ramp.closed(Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(ramp.share(), FLOOR + (FULL - FLOOR) / 2);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(ramp.share(), FULL);
        assert_eq!(ramp.word.load(Ordering::Relaxed), IDLE);
        // A close without an arm (a provider that never left closed) starts nothing.
        ramp.closed(Instant::now());
        assert_eq!(ramp.share(), FULL);
    }
}
