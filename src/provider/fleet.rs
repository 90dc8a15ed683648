//! The provider's side of a fleet (`fusebox::fleet`, feature `redis`): what a provider
//! actor hands the fleet link, what it applies from it, and the fleet-wide lease a
//! half-open trial asks for.
//!
//! The provider knows only [`FleetPort`]; the Redis link implements it. A provider without a
//! fleet has no port and behaves exactly as before. Nothing here runs on a closed circuit's
//! call path: the actor hands over its own transitions (never waiting), and only a caller
//! granted a half-open trial asks for the lease.

use std::fmt::Debug;
use std::time::Duration;

use kameo::message::{Context, Message};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::actor::ProviderActor;
use super::handle::ProviderHandle;
use crate::breaker::{Cause, CircuitState, Rejection};
use crate::events::Origin;
use crate::ProviderId;

/// A change of one provider's circuit that crosses the network: state changes only, never
/// per-call counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Open until `until` (on this replica's clock; the link sends the time left).
    Open {
        until: Instant,
        cause: Cause,
        failures: u32,
    },
    /// Isolated until a reset.
    Isolate { cause: Cause },
    /// An operator reset: closed, counts forgotten.
    Reset,
    /// Closed after successful trials.
    Close { cause: Cause },
}

/// A change this replica decided, on its way to the fleet link.
#[derive(Debug, Clone)]
pub(crate) struct LocalChange {
    pub(crate) provider: ProviderId,
    pub(crate) change: Change,
}

/// What the fleet says about a half-open trial on this replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lease {
    /// This replica holds the fleet's trial lease: run the trial.
    Granted,
    /// No lease applies (no link, Redis unreachable or too slow to answer, or the fleet
    /// already saw the provider recover): run the trial as a lone replica would.
    Local,
    /// Another replica holds the lease and is running the fleet's trial.
    Elsewhere { retry_after: Duration },
}

/// The fleet link as a provider sees it.
pub(crate) trait FleetPort: Debug + Send + Sync + 'static {
    /// Hands over a change this replica decided. Never waits: the actor calls it from its
    /// handler.
    fn local_change(&self, change: LocalChange);

    /// Whether the link to the fleet is up now.
    fn connected(&self) -> bool;

    /// Asks for the fleet's trial lease on `provider`, to hold for at most `ttl`. Answers
    /// within the link's own bounded wait, whatever Redis does; a dropped answer counts as
    /// [`Lease::Local`].
    fn trial_lease(&self, provider: &ProviderId, ttl: Duration) -> oneshot::Receiver<Lease>;
}

/// A change another replica decided, applied by this provider's actor like any decision.
#[derive(Debug)]
pub(crate) struct RemoteChange {
    pub(crate) change: Change,
}

impl Message<RemoteChange> for ProviderActor {
    type Reply = ();

    async fn handle(&mut self, msg: RemoteChange, _: &mut Context<Self, Self::Reply>) {
        self.decide_as(Origin::Remote, |core, now| match msg.change {
            Change::Open {
                until,
                cause,
                failures,
            } => {
                core.breaker
                    .remote_open(until.saturating_duration_since(now), cause, failures, now)
            }
            Change::Isolate { cause } => core.breaker.remote_isolate(cause, now),
            Change::Reset => core.breaker.reset(now),
            Change::Close { cause } => core.breaker.remote_close(cause, now),
        });
    }
}

/// What a caller granted a half-open trial does next.
#[derive(Debug)]
pub(crate) enum TrialGate {
    /// Run the trial.
    Proceed,
    /// Another replica runs the fleet's trial: reject this call.
    Elsewhere(Rejection),
    /// The circuit moved on while the lease was asked for: give the trial back and look
    /// again.
    Moved,
}

impl ProviderHandle {
    /// Before a half-open trial runs: asks the fleet's trial lease, when there is a fleet.
    /// The wait is bounded by the link; whatever Redis does, the answer is at worst
    /// [`Lease::Local`].
    pub(crate) async fn fleet_trial(&self, epoch: u64) -> TrialGate {
        let shared = &*self.shared;
        let Some(port) = &shared.fleet else {
            return TrialGate::Proceed;
        };
        let breaker = &shared.config.breaker;
        let ttl = breaker.trial_timeout.unwrap_or(breaker.open_for);
        let lease = port
            .trial_lease(&shared.id, ttl)
            .await
            .unwrap_or(Lease::Local);
        match lease {
            Lease::Granted | Lease::Local if shared.gate().epoch == epoch => TrialGate::Proceed,
            Lease::Granted | Lease::Local => TrialGate::Moved,
            Lease::Elsewhere { retry_after } => TrialGate::Elsewhere(Rejection {
                state: CircuitState::HalfOpen,
                retry_after: Some(retry_after),
                failure_count: shared.failure_count(),
            }),
        }
    }
}

/// The change to hand the fleet for what a local decision did: its transition (a move to
/// half-open is not shared: every replica's own deadline passes), or, without one, an open
/// deadline pushed later (a `Retry-After` hint, or a quota announced as used up).
pub(super) fn change_of(
    breaker: &crate::breaker::State,
    transition: Option<crate::breaker::Transition>,
    open_until_before: Option<Instant>,
) -> Option<Change> {
    let Some(t) = transition else {
        let until = breaker.open_until()?;
        return (open_until_before.is_some_and(|before| until > before)).then_some(Change::Open {
            until,
            cause: Cause::RateLimited,
            failures: breaker.failure_count(),
        });
    };
    match t.to {
        CircuitState::Open => Some(Change::Open {
            until: breaker.open_until()?,
            cause: t.cause,
            failures: t.failures,
        }),
        CircuitState::Isolated => Some(Change::Isolate { cause: t.cause }),
        CircuitState::Closed if t.cause == Cause::Operator => Some(Change::Reset),
        CircuitState::Closed => Some(Change::Close { cause: t.cause }),
        CircuitState::HalfOpen => None,
    }
}
