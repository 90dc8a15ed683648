//! Metrics, emitted through the [`metrics`] facade: fusebox records, the application picks
//! the exporter (see `fusebox::prometheus` with the `prometheus` feature).
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `fusebox_calls_total` | counter | `provider`, `outcome` | finished calls: `success`, `failure`, `rate_limited`, `timeout`, `ignored`, `cancelled` |
//! | `fusebox_rejections_total` | counter | `provider`, `reason` | calls not made: `open`, `half_open`, `isolated`, `bulkhead_full`, `queue_timeout`, `over_budget` (direct calls rejected and routed calls skipped by the request or token budget) |
//! | `fusebox_retries_total` | counter | `provider` | same-provider retries made under the provider's `Retry` |
//! | `fusebox_retry_budget_exhausted_total` | counter | `provider` | retries the provider's retry budget refused |
//! | `fusebox_circuit_state` | gauge | `provider` | 0 closed, 1 half-open, 2 open, 3 isolated |
//! | `fusebox_transitions_total` | counter | `provider`, `from`, `to` | circuit transitions |
//! | `fusebox_call_duration_seconds` | histogram | `provider`, `outcome` | call latency (`success` or `failure`) |
//! | `fusebox_in_flight` | gauge | `provider` | calls admitted and not finished |
//! | `fusebox_queue_depth` | gauge | `provider` | callers waiting for a bulkhead slot |
//! | `fusebox_request_rate` | gauge | `provider` | requests a minute (adaptive providers) |
//! | `fusebox_failure_threshold` | gauge | `provider` | consecutive-failure threshold in force |
//! | `fusebox_route_attempts_total` | counter | `route`, `provider`, `result` | routed attempts: `success`, `failure`, `timeout`, `ignored`, `skipped_open`, `skipped_isolated`, `skipped_saturated`, `deadline` |
//! | `fusebox_route_fallbacks_total` | counter | `route`, `from`, `to` | routed calls served by `to` after the first choice `from` failed or was skipped |
//! | `fusebox_headroom_ratio` | gauge | `provider` | what is left of the provider's tightest rate-limit quota, 0 to 1 (`ProviderStatus::headroom`); 1 when unknown |
//! | `fusebox_stream_first_token_seconds` | histogram | `provider`, `api` | decoded SSE streams: time to the first content delta (`fusebox::http::sse`) |
//! | `fusebox_stream_duration_seconds` | histogram | `provider`, `api`, `outcome` | decoded SSE streams: time to their end (`success`) or error (`error`) |
//! | `fusebox_route_order_changes_total` | counter | `route` | changes of the route's order by the router actor |
//! | `fusebox_probes_total` | counter | `provider`, `outcome` | recovery probes (`Provider::probe`), counted apart from calls: `success`, `failure`, `timeout` |
//! | `fusebox_fleet_connected` | gauge | | the fleet link reaches Redis: 1, or 0 while replicas decide alone (feature `redis`) |
//! | `fusebox_fleet_changes_total` | counter | `direction` | circuit changes shared through the fleet: `sent` (written by this replica), `applied` (another replica's, applied here) |
//!
//! The call counters and gauges, and the route attempt and fallback counters, are published
//! from counters the providers and routes keep, so the call path never touches a metric: every `metrics_interval` (see
//! `SupervisorBuilder::metrics_interval`) and whenever `Supervisor::publish_metrics` is
//! called. Transitions, durations and order changes are recorded as they happen. Install
//! your recorder before building the supervisor: duration histograms are registered then.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};

use crate::breaker::Transition;
use crate::router::{AttemptResult, RouteCounters};
use crate::{ProviderId, ProviderStatus};

/// Finished calls, by `provider` and `outcome`.
pub const CALLS: &str = "fusebox_calls_total";
/// Calls not made, by `provider` and `reason`.
pub const REJECTIONS: &str = "fusebox_rejections_total";
/// Same-provider retries made, by `provider`.
pub const RETRIES: &str = "fusebox_retries_total";
/// Retries refused by the retry budget, by `provider`.
pub const RETRY_BUDGET_EXHAUSTED: &str = "fusebox_retry_budget_exhausted_total";
/// The circuit state gauge, by `provider`.
pub const CIRCUIT_STATE: &str = "fusebox_circuit_state";
/// Circuit transitions, by `provider`, `from` and `to`.
pub const TRANSITIONS: &str = "fusebox_transitions_total";
/// Call latency, by `provider` and `outcome`.
pub const CALL_DURATION: &str = "fusebox_call_duration_seconds";
/// Calls in flight, by `provider`.
pub const IN_FLIGHT: &str = "fusebox_in_flight";
/// Callers waiting for a bulkhead slot, by `provider`.
pub const QUEUE_DEPTH: &str = "fusebox_queue_depth";
/// Requests a minute, by `provider` (adaptive providers only).
pub const REQUEST_RATE: &str = "fusebox_request_rate";
/// The consecutive-failure threshold in force, by `provider`.
pub const FAILURE_THRESHOLD: &str = "fusebox_failure_threshold";
/// Routed attempts, by `route`, `provider` and `result`.
pub const ROUTE_ATTEMPTS: &str = "fusebox_route_attempts_total";
/// Routed calls served after a fallback, by `route`, `from` and `to`.
pub const ROUTE_FALLBACKS: &str = "fusebox_route_fallbacks_total";
/// Changes of a route's order by the router actor, by `route`.
pub const ROUTE_ORDER_CHANGES: &str = "fusebox_route_order_changes_total";

/// What is left of a provider's tightest rate-limit quota, by `provider`.
pub const HEADROOM_RATIO: &str = "fusebox_headroom_ratio";
/// Decoded SSE streams' time to first token, by `provider` and `api`.
pub const STREAM_FIRST_TOKEN: &str = "fusebox_stream_first_token_seconds";
/// Decoded SSE streams' duration, by `provider`, `api` and `outcome`.
pub const STREAM_DURATION: &str = "fusebox_stream_duration_seconds";

/// Recovery probes, by `provider` and `outcome`.
pub const PROBES: &str = "fusebox_probes_total";

/// Whether the fleet link reaches Redis (feature `redis`): 1 or 0.
pub const FLEET_CONNECTED: &str = "fusebox_fleet_connected";
/// Circuit state changes shared through the fleet (feature `redis`), by `direction`.
pub const FLEET_CHANGES: &str = "fusebox_fleet_changes_total";

/// Every metric name fusebox emits.
pub const ALL: [&str; 20] = [
    PROBES,
    CALLS,
    REJECTIONS,
    RETRIES,
    RETRY_BUDGET_EXHAUSTED,
    CIRCUIT_STATE,
    TRANSITIONS,
    CALL_DURATION,
    IN_FLIGHT,
    QUEUE_DEPTH,
    REQUEST_RATE,
    FAILURE_THRESHOLD,
    ROUTE_ATTEMPTS,
    ROUTE_FALLBACKS,
    ROUTE_ORDER_CHANGES,
    HEADROOM_RATIO,
    STREAM_FIRST_TOKEN,
    STREAM_DURATION,
    FLEET_CONNECTED,
    FLEET_CHANGES,
];

/// Registers a description and unit for every metric with the installed recorder. Called
/// when a supervisor is built.
pub fn describe() {
    describe_gauge!(
        FLEET_CONNECTED,
        "Whether the fleet link reaches Redis (1), or the replica decides alone (0)."
    );
    describe_counter!(
        FLEET_CHANGES,
        "Circuit state changes shared through the fleet, by direction (sent, applied)."
    );
    describe_gauge!(
        HEADROOM_RATIO,
        "What is left of the provider's tightest rate-limit quota (0 to 1; 1 when unknown)."
    );
    describe_histogram!(
        STREAM_FIRST_TOKEN,
        Unit::Seconds,
        "Decoded SSE streams: time to the first content delta."
    );
    describe_histogram!(
        STREAM_DURATION,
        Unit::Seconds,
        "Decoded SSE streams: time to their end or error."
    );
    describe_counter!(
        CALLS,
        Unit::Count,
        "Finished calls to a provider, by outcome."
    );
    describe_counter!(REJECTIONS, Unit::Count, "Calls not made, by reason.");
    describe_counter!(RETRIES, Unit::Count, "Same-provider retries made.");
    describe_counter!(
        RETRY_BUDGET_EXHAUSTED,
        Unit::Count,
        "Retries refused by the retry budget."
    );
    describe_counter!(
        PROBES,
        Unit::Count,
        "Recovery probes run while a circuit was open, by outcome."
    );
    describe_gauge!(
        CIRCUIT_STATE,
        "Circuit state: 0 closed, 1 half-open, 2 open, 3 isolated."
    );
    describe_counter!(TRANSITIONS, Unit::Count, "Circuit state transitions.");
    describe_histogram!(
        CALL_DURATION,
        Unit::Seconds,
        "Latency of calls to a provider."
    );
    describe_gauge!(
        IN_FLIGHT,
        Unit::Count,
        "Calls admitted and not yet finished."
    );
    describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Callers waiting for a bulkhead slot."
    );
    describe_gauge!(REQUEST_RATE, "Requests a minute over the adaptive window.");
    describe_gauge!(
        FAILURE_THRESHOLD,
        Unit::Count,
        "Consecutive-failure threshold in force."
    );
    describe_counter!(
        ROUTE_ATTEMPTS,
        Unit::Count,
        "Routed attempts per provider, by result."
    );
    describe_counter!(
        ROUTE_FALLBACKS,
        Unit::Count,
        "Routed calls served after a fallback."
    );
    describe_counter!(
        ROUTE_ORDER_CHANGES,
        Unit::Count,
        "Changes of a route's order by the router actor."
    );
}

/// Publishes one provider's counters and gauges.
pub(crate) fn publish(s: &ProviderStatus) {
    let p = s.provider.to_string();
    let calls = |outcome: &'static str, n: u64| {
        counter!(CALLS, "provider" => p.clone(), "outcome" => outcome).absolute(n);
    };
    let plain_failures = s.failed.saturating_sub(s.rate_limited + s.timeouts);
    calls("success", s.successful);
    calls("failure", plain_failures);
    calls("rate_limited", s.rate_limited);
    calls("timeout", s.timeouts);
    calls("ignored", s.ignored);
    calls("cancelled", s.cancelled);
    let rejections = |reason: &'static str, n: u64| {
        counter!(REJECTIONS, "provider" => p.clone(), "reason" => reason).absolute(n);
    };
    rejections("open", s.rejected_open);
    rejections("half_open", s.rejected_half_open);
    rejections("isolated", s.rejected_isolated);
    rejections("bulkhead_full", s.bulkhead_full);
    rejections("queue_timeout", s.queue_timeouts);
    if let Some(budget) = &s.budget {
        rejections("over_budget", budget.rejected);
    }
    if s.retries > 0 || s.retry_budget_exhausted > 0 {
        counter!(RETRIES, "provider" => p.clone()).absolute(s.retries);
        counter!(RETRY_BUDGET_EXHAUSTED, "provider" => p.clone())
            .absolute(s.retry_budget_exhausted);
    }
    gauge!(CIRCUIT_STATE, "provider" => p.clone()).set(f64::from(s.state.as_gauge()));
    gauge!(IN_FLIGHT, "provider" => p.clone()).set(s.in_flight as f64);
    gauge!(QUEUE_DEPTH, "provider" => p.clone()).set(f64::from(s.queued));
    let headroom = s
        .headroom
        .as_ref()
        .and_then(crate::headroom::Headroom::ratio);
    gauge!(HEADROOM_RATIO, "provider" => p.clone()).set(headroom.unwrap_or(1.0));
    if let Some(rate) = s.request_rate {
        gauge!(REQUEST_RATE, "provider" => p.clone()).set(rate);
    }
    if let Some(threshold) = s.failure_threshold {
        gauge!(FAILURE_THRESHOLD, "provider" => p).set(f64::from(threshold));
    }
}

/// Sets the fleet link gauge.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn fleet_connected(up: bool) {
    gauge!(FLEET_CONNECTED).set(if up { 1.0 } else { 0.0 });
}

/// Counts one change shared through the fleet: `sent` or `applied`.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn fleet_change(direction: &'static str) {
    counter!(FLEET_CHANGES, "direction" => direction).increment(1);
}

/// Records a transition as it happens.
pub(crate) fn transition(provider: &ProviderId, t: &Transition) {
    let p = provider.to_string();
    counter!(TRANSITIONS, "provider" => p.clone(), "from" => t.from.as_str(), "to" => t.to.as_str())
        .increment(1);
    gauge!(CIRCUIT_STATE, "provider" => p).set(f64::from(t.to.as_gauge()));
}

/// A provider's call-duration histograms, registered once.
#[derive(Debug)]
pub(crate) struct Durations {
    success: metrics::Histogram,
    failure: metrics::Histogram,
}

impl Durations {
    pub(crate) fn new(provider: &ProviderId) -> Self {
        let p = provider.to_string();
        Durations {
            success: metrics::histogram!(CALL_DURATION, "provider" => p.clone(), "outcome" => "success"),
            failure: metrics::histogram!(CALL_DURATION, "provider" => p, "outcome" => "failure"),
        }
    }

    pub(crate) fn record(&self, failed: bool, elapsed: Duration) {
        let histogram = if failed { &self.failure } else { &self.success };
        histogram.record(elapsed.as_secs_f64());
    }
}

/// Records a recovery probe's outcome as it finishes.
pub(crate) fn probe(provider: &ProviderId, outcome: crate::provider::ProbeOutcome) {
    use crate::provider::ProbeOutcome;
    let outcome = match outcome {
        ProbeOutcome::Succeeded => "success",
        ProbeOutcome::Failed => "failure",
        ProbeOutcome::TimedOut => "timeout",
    };
    counter!(PROBES, "provider" => provider.to_string(), "outcome" => outcome).increment(1);
}

/// Records that the router changed a route's order.
pub(crate) fn route_order_changed(route: &str) {
    counter!(ROUTE_ORDER_CHANGES, "route" => route.to_owned()).increment(1);
}

/// Publishes one route's attempt and fallback counters (kept by the route, so that routed
/// calls never touch a metric).
pub(crate) fn publish_route(route: &str, counters: &RouteCounters) {
    for (provider, member) in counters.members() {
        for result in AttemptResult::ALL {
            let n = member.get(result);
            if n > 0 {
                counter!(ROUTE_ATTEMPTS, "route" => route.to_owned(), "provider" => provider.to_string(), "result" => result.as_str())
                    .absolute(n);
            }
        }
    }
    for ((from, to), n) in counters.fallbacks() {
        if n > 0 && from != to {
            counter!(ROUTE_FALLBACKS, "route" => route.to_owned(), "from" => from.to_string(), "to" => to.to_string())
                .absolute(n);
        }
    }
}
