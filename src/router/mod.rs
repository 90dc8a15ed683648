//! Routes: named lists of providers to fall back across, ordered by their health.
//!
//! A routed call computes its order from what every provider publishes without locks (its
//! circuit gate, its bulkhead occupancy and its latency average), so it never awaits a
//! provider, an actor or another call, and a slow provider cannot delay the answer for any
//! route. Then it runs the failover loop in the caller's task.
//!
//! - [`Policy::Priority`]: the configured order.
//! - [`Policy::LeastLoaded`]: providers that can take calls (closed or half-open), least
//!   loaded first; then the others in configured order.
//! - [`Policy::LowestLatency`]: providers that can take calls, lowest moving average of
//!   routed-call latency first (unmeasured ones first, to measure them); then the others.
//!
//! Providers whose circuit is open or isolated, or whose bulkhead is full, are skipped
//! without a call, and the skip is recorded in the trace.

mod attempt;
mod failover;

pub use attempt::{Attempt, AttemptOutcome, Routed};
pub(crate) use failover::{bounded, run, Attempter, Calls, Ended};

use std::collections::HashMap;

use crate::breaker::CircuitState;
use crate::config::{Policy, Route};
use crate::{ProviderHandle, ProviderId};

/// One route at run time.
#[derive(Debug)]
pub(crate) struct RouteEntry {
    pub(crate) config: Route,
    /// The route's providers, in configured order.
    members: Vec<ProviderHandle>,
}

impl RouteEntry {
    pub(crate) fn new(config: Route, providers: &HashMap<ProviderId, ProviderHandle>) -> Self {
        let members: Vec<ProviderHandle> = config
            .providers
            .iter()
            .filter_map(|name| providers.get(name.as_str()).cloned())
            .collect();
        RouteEntry { config, members }
    }

    /// The providers to try for one call, in order.
    pub(crate) fn order_for_call(&self) -> Vec<&ProviderHandle> {
        let mut order: Vec<&ProviderHandle> = self.members.iter().collect();
        if self.config.policy == Policy::Priority {
            return order;
        }
        let can_call =
            |h: &ProviderHandle| matches!(h.state(), CircuitState::Closed | CircuitState::HalfOpen);
        // Providers that can take calls first, keeping configured order within each group.
        order.sort_by_key(|h| !can_call(h));
        let available = order.iter().take_while(|h| can_call(h)).count();
        let head = &mut order[..available];
        match self.config.policy {
            Policy::Priority => {}
            Policy::LeastLoaded => {
                let loads: Vec<f64> = head.iter().map(|h| h.shared.load()).collect();
                sort_by_score(head, &loads);
            }
            Policy::LowestLatency => {
                let latencies: Vec<f64> = head
                    .iter()
                    .map(|h| h.shared.latency().map_or(0.0, |d| d.as_secs_f64()))
                    .collect();
                sort_by_score(head, &latencies);
            }
        }
        order
    }
}

/// Stable-sorts `items` by ascending `scores` (ties keep configured order).
fn sort_by_score(items: &mut [&ProviderHandle], scores: &[f64]) {
    let mut ranked: Vec<(f64, usize, &ProviderHandle)> = items
        .iter()
        .enumerate()
        .map(|(i, h)| (scores[i], i, *h))
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    for (slot, (_, _, h)) in items.iter_mut().zip(ranked) {
        *slot = h;
    }
}

/// Every route, by name.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    pub(crate) entries: HashMap<String, RouteEntry>,
}
