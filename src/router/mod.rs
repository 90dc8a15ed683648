//! Routes: named lists of providers to fall back across, ordered by their health.
//!
//! A router actor ([`RouterStatus`]) owns the registry of providers and routes and publishes
//! each route's current order as an immutable snapshot. A routed call reads it with one
//! atomic load (no message to the router, no lock) and runs in the caller's task, checking
//! each provider's published gate as it goes: a stale order changes only preference, never
//! lets a call reach an open circuit. A hand-written first pass serves the common case (the
//! first provider that can take the call needs nothing but its counters and perhaps a free
//! bulkhead slot: no budget, call timeout or slow-call threshold, and the route has no
//! deadline) without an allocation; anything else (a bulkhead queue to wait in, a failure to
//! fail over from) goes on in the failover loop, whose state is boxed once per call.
//!
//! How the router orders a route ([`Reason`] says why each provider stands where it does):
//!
//! - In configured order, every provider that is not demoted. A half-open one keeps its
//!   place, so that it receives exactly its free trial slots of routed traffic (a request
//!   that finds every slot taken moves on at once). Open and isolated ones keep their place
//!   too and are skipped without a call; the skip is in the trace (with an open one's
//!   `retry_after`, which feeds [`AllOpen::Wait`](crate::AllOpen::Wait)).
//! - Then demoted providers: closed, but failing at least [`DEMOTE_AT_PERCENT`] % of their
//!   calls over the last [`DEMOTION_WINDOW`] (with at least [`DEMOTION_MIN_CALLS`] calls),
//!   until that falls to [`PROMOTE_AT_PERCENT`] % (hysteresis), or a whole window passes
//!   without enough calls to tell. A partial outage (every other call failing) that never
//!   trips a consecutive-failure breaker still moves traffic away.
//!
//! - A closed provider whose tightest rate-limit quota (from its last response's headers,
//!   see `ProviderHandle::record_headroom`) has less than [`LOW_HEADROOM`] left is ranked
//!   behind the others too, until [`HEADROOM_RECOVERED`] is left: traffic moves away before
//!   the provider answers 429. A quota with nothing left opens the circuit until its reset.
//!
//! The router re-ranks when a provider's circuit changes (provider actors tell it every
//! transition) and on a timer (every second by default) that samples the providers and
//! resyncs from their gates.
//!
//! Per call, [`Policy::LeastLoaded`](crate::Policy::LeastLoaded) and
//! [`Policy::LowestLatency`](crate::Policy::LowestLatency) re-sort the preferred providers by
//! their load (in-flight and queued calls relative to the bulkhead) or their moving average
//! of latency (unmeasured ones first, to measure them), read without locks.
//!
//! When no provider can take a call because every one that is not open is saturated, the
//! call waits in the bulkhead queue of the first saturated provider that has one, bounded by
//! that queue's timeout and the route's deadline.

mod actor;
mod attempt;
mod failover;
mod fast;
mod ramp;
mod retry;
mod status;
mod table;

#[cfg(feature = "testing")]
pub(crate) use actor::CrashRouter;
pub(crate) use actor::{
    run_resampler, AddProvider, Reload, RemoveProvider, RemoveRoute, RouterActor, RouterCtx,
    Snapshot, UpsertRoute,
};
pub use actor::{
    DEMOTE_AT_PERCENT, DEMOTION_MIN_CALLS, DEMOTION_WINDOW, HEADROOM_RECOVERED, LOW_HEADROOM,
    PROMOTE_AT_PERCENT,
};
pub use attempt::{Attempt, AttemptOutcome, Attempts, Routed};
pub(crate) use failover::{run, Attempter, Calls, Resume};
pub(crate) use fast::{PlainAttempter, Routing};
pub use ramp::SLOW_START_FLOOR_PERCENT;
pub(crate) use retry::{on_content_policy, Classified, MeteredCalls};
pub use status::{RouteMember, RouteStatus, RouterStatus};
pub use table::Reason;
pub(crate) use table::{AttemptResult, NameMap, RouteCounters, Table, Tables};
