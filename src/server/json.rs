//! The JSON bodies of the ops endpoint. Core types carry no serde derives; these DTOs convert
//! them: states as lower-case names, durations as fractional seconds, instants as seconds ago.

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::{CircuitHealth, Event, EventKind, Health, ProviderStatus};

/// `GET /health`.
#[derive(Debug, Serialize)]
pub(super) struct HealthJson {
    healthy: bool,
    summary: String,
    circuits: Vec<CircuitJson>,
}

/// One circuit in `GET /health`.
#[derive(Debug, Serialize)]
struct CircuitJson {
    provider: String,
    state: &'static str,
    healthy: bool,
    failure_rate: f64,
}

impl From<&Health> for HealthJson {
    fn from(h: &Health) -> Self {
        HealthJson {
            healthy: h.healthy,
            summary: h.summary.clone(),
            circuits: h.circuits.iter().map(CircuitJson::from).collect(),
        }
    }
}

impl From<&CircuitHealth> for CircuitJson {
    fn from(c: &CircuitHealth) -> Self {
        CircuitJson {
            provider: c.provider.to_string(),
            state: c.state.as_str(),
            healthy: c.healthy,
            failure_rate: c.failure_rate,
        }
    }
}

/// One provider in `GET /status`, and the answer of the admin actions: every
/// [`ProviderStatus`] field, durations in seconds.
#[derive(Debug, Serialize)]
pub(super) struct StatusJson {
    provider: String,
    state: &'static str,
    generation: u64,
    total: u64,
    successful: u64,
    failed: u64,
    ignored: u64,
    cancelled: u64,
    rejected: u64,
    rejected_open: u64,
    rejected_half_open: u64,
    rejected_isolated: u64,
    bulkhead_full: u64,
    queue_timeouts: u64,
    timeouts: u64,
    slow: u64,
    rate_limited: u64,
    trial_timeouts: u64,
    consecutive_failures: u32,
    failure_threshold: Option<u32>,
    open_for_seconds: f64,
    retry_after_seconds: Option<f64>,
    in_flight: u64,
    queued: u32,
    queue_abandoned: u64,
    capacity: Option<u32>,
    request_rate: Option<f64>,
    tier: Option<u32>,
    failure_rate: f64,
    last_failure_seconds_ago: Option<f64>,
}

impl From<&ProviderStatus> for StatusJson {
    fn from(s: &ProviderStatus) -> Self {
        StatusJson {
            provider: s.provider.to_string(),
            state: s.state.as_str(),
            generation: s.generation,
            total: s.total,
            successful: s.successful,
            failed: s.failed,
            ignored: s.ignored,
            cancelled: s.cancelled,
            rejected: s.rejected,
            rejected_open: s.rejected_open,
            rejected_half_open: s.rejected_half_open,
            rejected_isolated: s.rejected_isolated,
            bulkhead_full: s.bulkhead_full,
            queue_timeouts: s.queue_timeouts,
            timeouts: s.timeouts,
            slow: s.slow,
            rate_limited: s.rate_limited,
            trial_timeouts: s.trial_timeouts,
            consecutive_failures: s.consecutive_failures,
            failure_threshold: s.failure_threshold,
            open_for_seconds: s.open_for.as_secs_f64(),
            retry_after_seconds: s.retry_after.map(|d| d.as_secs_f64()),
            in_flight: s.in_flight,
            queued: s.queued,
            queue_abandoned: s.queue_abandoned,
            capacity: s.capacity,
            request_rate: s.request_rate.filter(|r| r.is_finite()),
            tier: s.tier,
            failure_rate: s.failure_rate,
            last_failure_seconds_ago: s.last_failure.map(|at| at.elapsed().as_secs_f64()),
        }
    }
}

/// The `data:` of a server-sent event: `provider`, `name`, `generation`, `state` (for state
/// changes) and the fields of its kind.
pub(super) fn event(e: &Event) -> Value {
    let mut map = Map::new();
    map.insert("provider".into(), json!(e.provider.as_str()));
    map.insert("name".into(), json!(e.name()));
    map.insert("generation".into(), json!(e.generation));
    if let Some(state) = e.kind.state() {
        map.insert("state".into(), json!(state.as_str()));
    }
    if let Some(cause) = e.cause {
        map.insert("cause".into(), json!(cause.as_str()));
    }
    match &e.kind {
        EventKind::CircuitOpened {
            cause,
            failures,
            retry_after,
        } => {
            map.insert("cause".into(), json!(cause.as_str()));
            map.insert("failures".into(), json!(failures));
            map.insert("retry_after_seconds".into(), json!(secs(*retry_after)));
        }
        EventKind::ThresholdsAdapted {
            tier,
            request_rate,
            failure_threshold,
            open_for,
        } => {
            map.insert("tier".into(), json!(tier));
            map.insert("request_rate".into(), json!(request_rate));
            map.insert("failure_threshold".into(), json!(failure_threshold));
            map.insert("open_for_seconds".into(), json!(secs(*open_for)));
        }
        // CircuitHalfOpened carries nothing more; kinds added later show their name only.
        _ => {}
    }
    Value::Object(map)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::Cause;
    use crate::ProviderId;
    use tokio::time::Instant;

    #[test]
    fn an_opened_event_carries_its_cause_failures_and_retry_after() {
        let e = Event {
            provider: ProviderId::from("anthropic"),
            kind: EventKind::CircuitOpened {
                cause: Cause::ConsecutiveFailures,
                failures: 3,
                retry_after: Duration::from_millis(1500),
            },
            at: Instant::now(),
            generation: 7,
            cause: Some(Cause::ConsecutiveFailures),
        };
        assert_eq!(
            event(&e),
            json!({
                "provider": "anthropic", "name": "llm.circuit_opened", "generation": 7,
                "state": "open", "cause": "consecutive_failures", "failures": 3,
                "retry_after_seconds": 1.5,
            })
        );
    }

    #[test]
    fn an_adapted_event_carries_the_new_thresholds() {
        let e = Event {
            provider: ProviderId::from("openai"),
            kind: EventKind::ThresholdsAdapted {
                tier: None,
                request_rate: 12.5,
                failure_threshold: Some(5),
                open_for: Duration::from_secs(30),
            },
            at: Instant::now(),
            generation: 2,
            cause: None,
        };
        assert_eq!(
            event(&e),
            json!({
                "provider": "openai", "name": "llm.thresholds_adapted", "generation": 2,
                "tier": null, "request_rate": 12.5, "failure_threshold": 5,
                "open_for_seconds": 30.0,
            })
        );
    }
}
