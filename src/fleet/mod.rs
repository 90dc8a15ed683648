//! The fleet: replicas of one application share their circuits' state changes over Redis
//! (feature `redis`).
//!
//! An orchestrator running as N replicas otherwise discovers an outage N times (N ×
//! threshold failing calls), sends N trials to a recovering provider, and an operator's
//! isolate reaches one replica. With a [`Fleet`], every replica's provider actors hand each
//! transition they decide to the fleet link, which writes it to Redis and publishes it; the
//! other replicas' links apply it through their own provider actors, like any decision.
//!
//! ```no_run
//! use fusebox::fleet::Fleet;
//! use fusebox::{Provider, Supervisor};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), fusebox::ConfigError> {
//! let fuse = Supervisor::builder()
//!     .provider(Provider::new("anthropic"))
//!     .fleet(Fleet::redis("redis://127.0.0.1:6379/").namespace("prod"))
//!     .build()
//!     .await?;
//! let link = fuse.fleet_status().expect("a fleet is configured");
//! println!("fleet link up: {}", link.connected);
//! # Ok(())
//! # }
//! ```
//!
//! # What is shared
//!
//! State changes only, never per-call counts: an open (with its remaining duration, cause
//! and counted failures), a pushed-back open deadline (a `Retry-After` hint), an isolation,
//! an operator reset, a close after successful trials. A move to half-open is not shared:
//! each replica's own copy of the deadline passes. Remaining durations travel as
//! durations, so replicas need no shared clock (records re-read later are aged by the Redis
//! server's own clock).
//!
//! # How it is applied
//!
//! - A remote open opens the local circuit for the time left, and never shortens a local
//!   deadline; a remote isolate isolates; a remote reset resets; a remote close ends the
//!   local open period (half-open, so that local traffic confirms the recovery).
//! - Events for applied changes carry [`Origin::Remote`](crate::events::Origin::Remote).
//! - One record per provider, in a Redis hash `fusebox:<namespace>:circuit:<provider>`,
//!   written by one Lua script with a compare-and-set on a per-provider fleet generation: a
//!   writer that has not seen the stored generation cannot overwrite it (it applies the
//!   newer record instead; an operator's isolate or reset is then written on top of it). A
//!   record with a generation at or below the last one a replica applied is ignored. The
//!   same script publishes the record on `fusebox:<namespace>:changes`.
//! - Pub/sub delivers at most once, so every replica also re-reads every record each
//!   [`resync_every`](Fleet::resync_every) (default 1 s) and on every reconnect.
//! - Records are validated strictly ([`RecordProblem`]): a hostile or corrupt one is
//!   logged (`tracing` warning), counted in [`FleetStatus::invalid_records`] and ignored,
//!   never applied; the next local change for that provider overwrites it.
//!
//! # One trial for the whole fleet
//!
//! A caller granted a half-open trial asks Redis for the provider's trial lease (`SET NX
//! PX`, held at most [`trial_lease`](Fleet::trial_lease) and given back when the trial
//! decides). Callers on other replicas get `CallError::Open` with the half-open state and
//! the lease's time left, without a message to Redis until then. If Redis does not answer
//! within [`lease_wait`](Fleet::lease_wait), or the link is down, the trial runs as a lone
//! replica's would. Once the fleet has seen the provider close, local confirmation trials
//! need no lease. Calls on a closed circuit never touch the network.
//!
//! # When Redis is unreachable
//!
//! Every replica keeps deciding locally; no call waits for or fails because of Redis. The
//! link reconnects with a backoff (at most a second between attempts), then writes the
//! latest local change of each provider made meanwhile (by the compare-and-set above), and
//! re-reads every record. [`Supervisor::fleet_status`](crate::Supervisor::fleet_status),
//! `Health::fleet` and the gauge `fusebox_fleet_connected` report the link.

mod link;
pub mod record;

use std::time::Duration;

pub use crate::config::Fleet;
pub(crate) use link::{start, Link};
pub use record::RecordProblem;

/// What went wrong on the fleet link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// Redis could not be reached, timed out, or refused a command. The link keeps
    /// deciding locally and reconnects.
    #[error("redis unreachable: {0}")]
    Unreachable(String),
    /// A record in Redis, or a message on the change channel, was refused; nothing was
    /// applied.
    #[error("invalid fleet record{}: {problem}", provider.as_ref().map(|p| format!(" for `{p}`")).unwrap_or_default())]
    InvalidRecord {
        /// The provider it was filed under or names, when known.
        provider: Option<String>,
        /// What is wrong with it.
        problem: RecordProblem,
    },
}

/// The state of a supervisor's fleet link.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct FleetStatus {
    /// Whether the link reaches Redis now.
    pub connected: bool,
    /// The fleet's namespace.
    pub namespace: String,
    /// This replica's name in the records it writes.
    pub replica: String,
    /// Local changes written to the fleet.
    pub changes_sent: u64,
    /// Other replicas' changes applied here.
    pub changes_applied: u64,
    /// Writes refused because another replica had written a newer record first.
    pub conflicts: u64,
    /// Records or messages refused as invalid.
    pub invalid_records: u64,
    /// Times the link reconnected after losing Redis.
    pub reconnects: u64,
    /// Half-open trials run under this replica's fleet lease.
    pub trials_leased: u64,
    /// Half-open trials not run here because another replica held the lease.
    pub trials_deferred: u64,
    /// Local changes waiting to be written (made while Redis was unreachable).
    pub pending: u64,
    /// How often every record is re-read.
    #[serde(
        rename = "resync_every_seconds",
        serialize_with = "crate::events::ser::secs"
    )]
    pub resync_every: Duration,
    /// The last error, if any since the link last connected.
    #[serde(serialize_with = "ser_error")]
    pub last_error: Option<FleetError>,
}

fn ser_error<S: serde::Serializer>(e: &Option<FleetError>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.collect_str(e),
        None => s.serialize_none(),
    }
}
