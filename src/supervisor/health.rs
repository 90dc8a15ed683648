//! [`Health`]: is the supervisor healthy enough to serve?

use crate::breaker::CircuitState;
use crate::{ProviderId, ProviderStatus};

/// The health of every circuit, and a verdict.
///
/// Healthy while the fraction of circuits that are open or isolated is below the configured
/// `unhealthy_ratio` (by default: while fewer than half of the circuits are open).
///
/// This is a *readiness* verdict: whether this process can serve LLM calls right now. Point
/// load balancers and readiness probes at it (the ops endpoint's `GET /health` answers 503
/// when unhealthy), never a liveness probe: a provider outage would then restart healthy
/// processes, which fixes nothing and loses their circuits' state. The ops endpoint's
/// `GET /health/live` is the liveness probe.
///
/// Serialises (`serde`) as `{"healthy": true, "summary": "2/3 circuits healthy",
/// "circuits": [{"provider": "openai", "state": "closed", "healthy": true, "failure_rate": 0.02}]}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct Health {
    /// The verdict.
    pub healthy: bool,
    /// Each provider's circuit.
    pub circuits: Vec<CircuitHealth>,
    /// A line for humans: `"2/3 circuits healthy"` (with `"; fleet link down"` while a
    /// fleet's Redis is unreachable).
    pub summary: String,
    /// With a fleet (feature `redis`): whether its link reaches Redis. A replica whose link
    /// is down still serves, deciding alone, so this does not change `healthy`. `None`
    /// (and absent from the JSON) without a fleet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet_connected: Option<bool>,
}

/// One circuit's health.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct CircuitHealth {
    /// The provider.
    #[serde(serialize_with = "crate::events::ser::name")]
    pub provider: ProviderId,
    /// Its circuit's state.
    pub state: CircuitState,
    /// Whether it serves calls: closed or half-open, with its actor running (open and
    /// isolated circuits do not, nor does a provider whose actor is gone).
    pub healthy: bool,
    /// Its recent failure rate: failed over counted calls in its breaker's failure-rate
    /// window, or in the last minute when it has none, half-open trials included, since
    /// the circuit last closed ([`ProviderStatus::recent_failure_rate`]); 0 without such
    /// calls. A provider failing every call now shows 1, however long it served before.
    pub failure_rate: f64,
}

impl Health {
    pub(crate) fn from_status(status: &[ProviderStatus], unhealthy_ratio: f64) -> Self {
        let circuits: Vec<CircuitHealth> = status
            .iter()
            .map(|s| CircuitHealth {
                provider: s.provider.clone(),
                state: s.state,
                healthy: s.alive
                    && matches!(s.state, CircuitState::Closed | CircuitState::HalfOpen),
                failure_rate: s.recent_failure_rate.unwrap_or(0.0),
            })
            .collect();
        let up = circuits.iter().filter(|c| c.healthy).count();
        let down = circuits.len() - up;
        Health {
            healthy: (down as f64) < unhealthy_ratio * circuits.len() as f64,
            summary: format!("{up}/{} circuits healthy", circuits.len()),
            circuits,
            fleet_connected: None,
        }
    }

    /// With the state of the fleet link.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn with_fleet(mut self, connected: bool) -> Self {
        if !connected {
            self.summary.push_str("; fleet link down");
        }
        self.fleet_connected = Some(connected);
        self
    }
}
