//! [`RouteStatus`] and [`RouterStatus`]: what the router actor published, for reading.

use std::sync::atomic::Ordering;

use super::actor::RouterCtx;
use super::table::{Reason, RouteView};
use crate::breaker::CircuitState;
use crate::config::Policy;
use crate::ProviderId;

/// A route's order as the router actor last published it.
///
/// The order is a preference: a routed call still checks every provider's gate as it goes,
/// so a provider that opened after this order was published is skipped without a call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RouteStatus {
    /// The route.
    pub route: String,
    /// Its policy.
    pub policy: Policy,
    /// Its providers, in the order a routed call tries them (a per-call policy re-sorts the
    /// leading, preferred ones by load or latency).
    pub order: Vec<RouteMember>,
    /// How many times the router has changed this route's order.
    pub order_changes: u64,
}

/// One provider of a route.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RouteMember {
    /// The provider (with its metadata).
    pub provider: ProviderId,
    /// Its circuit's state now.
    pub state: CircuitState,
    /// Why it stands where it does, as last ranked.
    pub reason: Reason,
    /// The share of the calls trying it first that it takes now: below 1 while slow start
    /// (`Provider::slow_start`) ramps it up after a close, 1 otherwise.
    pub share: f64,
}

impl RouteStatus {
    pub(crate) fn of(view: &RouteView) -> Self {
        RouteStatus {
            route: view.config.name.clone(),
            policy: view.config.policy,
            order: view
                .members
                .iter()
                .map(|m| RouteMember {
                    provider: m.handle.id().clone(),
                    state: m.handle.state(),
                    reason: m.reason,
                    share: m.ramp.as_ref().map_or(1.0, |r| r.current()),
                })
                .collect(),
            order_changes: view.counters.order_changes.load(Ordering::Relaxed),
        }
    }

    /// The providers in order, by name.
    pub fn providers(&self) -> Vec<&str> {
        self.order.iter().map(|m| m.provider.as_str()).collect()
    }
}

fn policy_name(policy: Policy) -> &'static str {
    match policy {
        Policy::LeastLoaded => "least_loaded",
        Policy::LowestLatency => "lowest_latency",
        _ => "priority",
    }
}

/// Serialises as `{"route", "policy", "order": [{"provider", "state", "reason", ...}],
/// "order_changes"}`, the `/routes` document of the ops endpoint.
impl serde::Serialize for RouteStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("RouteStatus", 4)?;
        s.serialize_field("route", &self.route)?;
        s.serialize_field("policy", policy_name(self.policy))?;
        s.serialize_field("order", &self.order)?;
        s.serialize_field("order_changes", &self.order_changes)?;
        s.end()
    }
}

impl serde::Serialize for RouteMember {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("provider", self.provider.as_str())?;
        m.serialize_entry("state", self.state.as_str())?;
        match self.reason {
            Reason::Demoted { failure_rate } => {
                m.serialize_entry("reason", "demoted")?;
                m.serialize_entry("failure_rate", &failure_rate)?;
            }
            Reason::LowHeadroom { ratio } => {
                m.serialize_entry("reason", "low_headroom")?;
                m.serialize_entry("headroom_ratio", &ratio)?;
            }
            other => m.serialize_entry("reason", other.as_str())?,
        }
        if self.share < 1.0 {
            m.serialize_entry("slow_start_share", &self.share)?;
        }
        m.end()
    }
}

/// The router actor's own status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterStatus {
    /// Whether the router actor is running. When it is not (it kept panicking), routing goes
    /// on with the last published orders and the gates.
    pub alive: bool,
    /// Messages the router actor has handled: circuit changes, samples, registry changes.
    /// Routed calls send none.
    pub messages: u64,
    /// Registry tables it has published.
    pub publications: u64,
    /// How many times it was restarted after a panic.
    pub restarts: u64,
}

impl RouterStatus {
    pub(crate) fn read(ctx: &RouterCtx, alive: bool) -> Self {
        RouterStatus {
            alive,
            messages: ctx.messages.load(Ordering::Relaxed),
            publications: ctx.publications.load(Ordering::Relaxed),
            restarts: ctx.starts.load(Ordering::Relaxed).saturating_sub(1),
        }
    }
}
