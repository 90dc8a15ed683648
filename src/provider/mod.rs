//! A provider at run time: its actor, its shared state and the handle callers use.

mod actor;
mod budgeted;
mod counters;
// Without the `redis` feature no link exists: the port is never set.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
mod fleet;
mod handle;
mod probe;
mod shared;
mod status;

#[cfg(feature = "testing")]
pub(crate) use actor::Crash;
pub(crate) use actor::{CircuitChanged, Ctx, Delivery, ProviderActor, Tick};
pub(crate) use counters::Count;
pub(crate) use fleet::FleetPort;
#[cfg(feature = "redis")]
pub(crate) use fleet::{Change, Lease, LocalChange, RemoteChange};
pub use handle::ProviderHandle;
pub(crate) use handle::{Admitted, Reject, Ticket};
pub(crate) use probe::ProbeOutcome;
pub(crate) use shared::{Closing, Shared};
pub use status::ProviderStatus;
