//! Metrics, emitted through the [`metrics`] facade: fusebox records, the application picks
//! the exporter (see `fusebox::prometheus` with the `prometheus` feature).
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `fusebox_calls_total` | counter | `provider`, `outcome` | finished calls: `success`, `failure`, `rate_limited`, `timeout`, `ignored`, `cancelled` |
//! | `fusebox_rejections_total` | counter | `provider`, `reason` | calls not made: `open`, `half_open`, `isolated`, `bulkhead_full`, `queue_timeout` |
//! | `fusebox_circuit_state` | gauge | `provider` | 0 closed, 1 half-open, 2 open, 3 isolated |
//! | `fusebox_transitions_total` | counter | `provider`, `from`, `to` | circuit transitions |
//! | `fusebox_call_duration_seconds` | histogram | `provider`, `outcome` | call latency (`success` or `failure`) |
//! | `fusebox_in_flight` | gauge | `provider` | calls admitted and not finished |
//! | `fusebox_queue_depth` | gauge | `provider` | callers waiting for a bulkhead slot |
//! | `fusebox_request_rate` | gauge | `provider` | requests a minute (adaptive providers) |
//! | `fusebox_failure_threshold` | gauge | `provider` | consecutive-failure threshold in force |
//! | `fusebox_route_attempts_total` | counter | `route`, `provider`, `result` | routed attempts: `success`, `failure`, `timeout`, `ignored`, `skipped_open`, `skipped_isolated`, `skipped_saturated`, `deadline` |
//! | `fusebox_route_fallbacks_total` | counter | `route`, `from`, `to` | routed calls served by `to` after the first choice `from` failed or was skipped |
//!
//! The call counters and gauges are published from the providers' own counters, so the call
//! path never touches a metric: every `metrics_interval` (see
//! `SupervisorBuilder::metrics_interval`) and whenever `Supervisor::publish_metrics` is
//! called. Transitions, durations and route metrics are recorded as they happen. Install
//! your recorder before building the supervisor: duration histograms are registered then.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};

use crate::breaker::Transition;
use crate::router::{Attempt, AttemptOutcome};
use crate::{ProviderId, ProviderStatus};

/// Finished calls, by `provider` and `outcome`.
pub const CALLS: &str = "fusebox_calls_total";
/// Calls not made, by `provider` and `reason`.
pub const REJECTIONS: &str = "fusebox_rejections_total";
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

/// Every metric name fusebox emits.
pub const ALL: [&str; 11] = [
    CALLS,
    REJECTIONS,
    CIRCUIT_STATE,
    TRANSITIONS,
    CALL_DURATION,
    IN_FLIGHT,
    QUEUE_DEPTH,
    REQUEST_RATE,
    FAILURE_THRESHOLD,
    ROUTE_ATTEMPTS,
    ROUTE_FALLBACKS,
];

/// Registers a description and unit for every metric with the installed recorder. Called
/// when a supervisor is built.
pub fn describe() {
    describe_counter!(
        CALLS,
        Unit::Count,
        "Finished calls to a provider, by outcome."
    );
    describe_counter!(REJECTIONS, Unit::Count, "Calls not made, by reason.");
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
    gauge!(CIRCUIT_STATE, "provider" => p.clone()).set(f64::from(s.state.as_gauge()));
    gauge!(IN_FLIGHT, "provider" => p.clone()).set(s.in_flight as f64);
    gauge!(QUEUE_DEPTH, "provider" => p.clone()).set(f64::from(s.queued));
    if let Some(rate) = s.request_rate {
        gauge!(REQUEST_RATE, "provider" => p.clone()).set(rate);
    }
    if let Some(threshold) = s.failure_threshold {
        gauge!(FAILURE_THRESHOLD, "provider" => p).set(f64::from(threshold));
    }
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

/// Records one routed call's attempts, and its fallback when it was served by another
/// provider than the first choice.
pub(crate) fn route(route: &str, attempts: &[Attempt], served: Option<&ProviderId>) {
    for a in attempts {
        let result = match &a.outcome {
            AttemptOutcome::Succeeded => "success",
            AttemptOutcome::Failed(v) if v.is_failure() => "failure",
            AttemptOutcome::Failed(_) => "ignored",
            AttemptOutcome::TimedOut(_) => "timeout",
            AttemptOutcome::DeadlineExceeded => "deadline",
            AttemptOutcome::SkippedOpen { .. } => "skipped_open",
            AttemptOutcome::SkippedIsolated => "skipped_isolated",
            AttemptOutcome::SkippedSaturated => "skipped_saturated",
        };
        counter!(ROUTE_ATTEMPTS, "route" => route.to_owned(), "provider" => a.provider.to_string(), "result" => result)
            .increment(1);
    }
    if let (Some(first), Some(to)) = (attempts.first(), served) {
        if first.provider != *to {
            counter!(ROUTE_FALLBACKS, "route" => route.to_owned(), "from" => first.provider.to_string(), "to" => to.to_string())
                .increment(1);
        }
    }
}
