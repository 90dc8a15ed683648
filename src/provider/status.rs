//! [`ProviderStatus`]: a snapshot of one provider.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;

use super::counters::Count;
use super::shared::Shared;
use crate::breaker::CircuitState;
use crate::ProviderId;

/// A snapshot of one provider: its circuit, its counts, the thresholds in force and its load.
///
/// Counts are lifetime totals. Every admitted call is in `total` and, once finished, in
/// exactly one of `successful`, `failed`, `ignored` and `cancelled`; the rest are
/// `in_flight`. Rejected calls were never admitted. Read while calls run, the counters are
/// each exact but not taken at one instant.
///
/// Serialises (`serde`) as one flat object: every field under its own name, with the
/// provider as `provider` (its name) and `meta` (its metadata), durations as fractional
/// seconds (`open_for_seconds`, `retry_after_seconds`) and `last_failure` as
/// `last_failure_seconds_ago`. This is the ops endpoint's `/status` (feature `server`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct ProviderStatus {
    /// The provider.
    #[serde(flatten, serialize_with = "crate::events::ser::name_and_meta")]
    pub provider: ProviderId,
    /// The circuit's state.
    pub state: CircuitState,
    /// Whether the provider's actor is running (see `ProviderHandle::is_alive`).
    pub alive: bool,
    /// How many transitions the circuit has made.
    pub generation: u64,
    /// Calls admitted.
    pub total: u64,
    /// Calls that succeeded.
    pub successful: u64,
    /// Calls counted against the provider (failures, timeouts, rate limits, isolating
    /// verdicts).
    pub failed: u64,
    /// Calls whose error was the caller's fault.
    pub ignored: u64,
    /// Calls dropped by their caller before finishing.
    pub cancelled: u64,
    /// Calls rejected without being made (open circuit, isolation, full bulkhead, queue
    /// timeout).
    pub rejected: u64,
    /// Of `rejected`: by an open circuit.
    pub rejected_open: u64,
    /// Of `rejected`: by a half-open circuit with every trial slot taken (most without a
    /// message; the few the provider's actor decided are counted here too).
    pub rejected_half_open: u64,
    /// Of `rejected`: by an isolated circuit.
    pub rejected_isolated: u64,
    /// Of `rejected`: by a full bulkhead.
    pub bulkhead_full: u64,
    /// Of `rejected`: after waiting the whole queue timeout.
    pub queue_timeouts: u64,
    /// Of `failed`: calls that exceeded the call timeout (by a direct or routed call).
    pub timeouts: u64,
    /// Calls slower than the slow-call threshold, if one is set.
    pub slow: u64,
    /// Of `failed`, the rate limits.
    pub rate_limited: u64,
    /// Half-open trials that exceeded the trial timeout.
    pub trial_timeouts: u64,
    /// The current run of consecutive counted failures.
    pub consecutive_failures: u32,
    /// The consecutive-failure threshold in force (adaptive thresholds change it).
    pub failure_threshold: Option<u32>,
    /// The base open duration in force (adaptive thresholds change it).
    #[serde(
        rename = "open_for_seconds",
        serialize_with = "crate::events::ser::secs"
    )]
    pub open_for: Duration,
    /// While open: how long until a trial is admitted.
    #[serde(
        rename = "retry_after_seconds",
        serialize_with = "crate::events::ser::opt_secs"
    )]
    pub retry_after: Option<Duration>,
    /// Calls admitted and not yet finished.
    pub in_flight: u64,
    /// Callers waiting for a bulkhead slot.
    pub queued: u32,
    /// Callers dropped while they waited for a bulkhead slot. They were never admitted, so
    /// they are in no other count.
    pub queue_abandoned: u64,
    /// The bulkhead's slot count, if there is a bulkhead.
    pub capacity: Option<u32>,
    /// Requests a minute over the adaptive window, for providers with adaptive thresholds.
    pub request_rate: Option<f64>,
    /// The adaptive tier in force, by its boundary in requests a minute; `None` without
    /// adaptive thresholds or when no tier applies.
    pub tier: Option<u32>,
    /// Failed calls over finished, counted calls (`failed / (successful + failed)`); 0 when
    /// there were none.
    pub failure_rate: f64,
    /// Failed calls over finished, counted calls recently: over the breaker's failure-rate
    /// window, or the last minute when it has none, half-open trials included, since the
    /// circuit last closed. `None` without such calls. (`failure_rate` is the lifetime rate.)
    pub recent_failure_rate: Option<f64>,
    /// When the last counted failure was reported.
    #[serde(
        rename = "last_failure_seconds_ago",
        serialize_with = "crate::events::ser::ago"
    )]
    pub last_failure: Option<Instant>,
    /// Messages the provider's actor has handled: failures, trials, slow calls, timers and
    /// operator actions. Healthy calls on a closed circuit send none.
    pub actor_messages: u64,
    /// The provider's rate-limit headroom as of this snapshot: what its latest response
    /// said about its quotas (`fusebox::http::record_headroom`,
    /// [`ProviderHandle::record_headroom`](crate::ProviderHandle::record_headroom)), keeping
    /// only the quotas whose reset has not passed, each reset counted from now
    /// ([`HeadroomCell::current`](crate::headroom::HeadroomCell::current)). `None` when
    /// nothing was recorded or every quota has reset since.
    pub headroom: Option<crate::headroom::Headroom>,
    /// The provider's request and token budget, if it has one
    /// ([`Provider::budget`](crate::Provider::budget)).
    pub budget: Option<crate::budget::BudgetStatus>,
    /// Retries made on this provider under its own [`Retry`](crate::Retry) (a route's own
    /// `Retry` counts apart).
    pub retries: u64,
    /// Retries its retry budget refused.
    pub retry_budget_exhausted: u64,
    /// Recovery probes run (`Provider::probe`), counted apart from calls: in no other count.
    /// Each finished probe is in exactly one of `probe_successes`, `probe_failures` and
    /// `probe_timeouts`.
    pub probes: u64,
    /// Of `probes`: those that succeeded.
    pub probe_successes: u64,
    /// Of `probes`: those that failed (returned an error).
    pub probe_failures: u64,
    /// Of `probes`: those that did not finish within the probe timeout.
    pub probe_timeouts: u64,
    /// With a fleet (feature `redis`): whether the fleet link reaches Redis, so that this
    /// provider's changes are shared (`false`: it decides alone for now). `None`, and
    /// absent from the JSON, without a fleet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet_connected: Option<bool>,
}

impl ProviderStatus {
    pub(crate) fn read(shared: &Shared, alive: bool) -> Self {
        let c = &shared.counters;
        let now = Instant::now();
        let mut core = shared.core();
        // Successes counted on the lock-free path end the current run of failures.
        shared.fold(&mut core, now);
        let s = *core.breaker.stats();
        let (request_rate, tier) = match (&core.meter, core.thresholds) {
            (Some(m), Some(t)) => (Some(m.per_minute()), t.tier),
            (Some(m), None) => (Some(m.per_minute()), None),
            _ => (None, None),
        };
        let (probe_ok, probe_failed, probe_timed_out) = shared.probes.get();
        let status = ProviderStatus {
            provider: shared.id.clone(),
            state: core.breaker.state(),
            alive,
            generation: core.breaker.generation(),
            total: c.get(Count::Admitted) + s.total - s.external,
            successful: core.folded_successes
                + core.late_successes
                + c.get(Count::StaleSuccesses)
                + s.successful,
            failed: s.failed,
            ignored: c.get(Count::FastIgnored) + s.ignored,
            cancelled: c.get(Count::FastCancelled) + s.cancelled,
            rejected: c.get(Count::RejectedOpen)
                + c.get(Count::RejectedIsolated)
                + c.get(Count::BulkheadFull)
                + c.get(Count::QueueTimeout)
                + c.get(Count::RejectedHalfOpen)
                + s.rejected,
            rejected_open: c.get(Count::RejectedOpen),
            rejected_half_open: s.rejected + c.get(Count::RejectedHalfOpen),
            rejected_isolated: c.get(Count::RejectedIsolated),
            bulkhead_full: c.get(Count::BulkheadFull),
            queue_timeouts: c.get(Count::QueueTimeout),
            timeouts: c.get(Count::Timeouts),
            slow: s.slow,
            rate_limited: s.rate_limited,
            trial_timeouts: s.trial_timeouts,
            consecutive_failures: core.breaker.consecutive_failures(),
            failure_threshold: core.breaker.failure_threshold(),
            open_for: core.breaker.base_open_for(),
            retry_after: core.breaker.retry_after(now),
            in_flight: 0,
            queued: shared.bulkhead.as_ref().map_or(0, |b| b.queued()),
            queue_abandoned: shared.bulkhead.as_ref().map_or(0, |b| b.abandoned()),
            capacity: shared.bulkhead.as_ref().map(|b| b.capacity()),
            request_rate,
            tier,
            failure_rate: 0.0,
            recent_failure_rate: core.breaker.recent_failure_rate(now),
            last_failure: s.last_failure,
            actor_messages: core.decisions,
            headroom: shared.headroom.current(now),
            budget: shared.budget.as_ref().map(|b| b.status()),
            retries: shared.retry.as_ref().map_or(0, |r| r.retries.load(Relaxed)),
            retry_budget_exhausted: shared
                .retry
                .as_ref()
                .map_or(0, |r| r.exhausted.load(Relaxed)),
            probes: probe_ok + probe_failed + probe_timed_out,
            probe_successes: probe_ok,
            probe_failures: probe_failed,
            probe_timeouts: probe_timed_out,
            fleet_connected: shared.fleet.as_ref().map(|port| port.connected()),
        };
        drop(core);
        let finished = status.successful + status.failed + status.ignored + status.cancelled;
        let counted = status.successful + status.failed;
        ProviderStatus {
            in_flight: status.total.saturating_sub(finished),
            failure_rate: if counted == 0 {
                0.0
            } else {
                status.failed as f64 / counted as f64
            },
            ..status
        }
    }
}
