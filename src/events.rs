//! Circuit events and the bus they are published on.
//!
//! Every state change of every provider is published as an [`Event`] on a
//! [`tokio::sync::broadcast`] channel; `Supervisor::subscribe` hands out receivers. Alerting
//! rules match on the stable names from [`Event::name`]: `llm.circuit_opened`,
//! `llm.circuit_half_opened`, `llm.circuit_closed`, `llm.circuit_isolated`,
//! `llm.thresholds_adapted`.
//!
//! # Lag
//!
//! Publishing never waits for subscribers: a call is never slowed by a slow or absent
//! subscriber. The bus keeps the last `event_capacity` events (1024 by default; tokio rounds
//! the capacity up to the next power of two, so 1000 keeps 1024); a receiver that falls
//! further behind gets [`RecvError::Lagged(n)`](tokio::sync::broadcast::error::RecvError::Lagged)
//! telling it how many events it missed, then continues from the oldest one still held.
//! Nothing is dropped silently: after a lag, call `Supervisor::status` to resynchronise
//! with the current state of every circuit. Each event's `generation` is the provider's
//! transition count, so a gap in generations also shows what a receiver missed.

use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::{Cause, CircuitState};
use crate::ProviderId;

/// One state change of one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The provider.
    pub provider: ProviderId,
    /// What happened.
    pub kind: EventKind,
    /// When (the supervisor's tokio clock).
    pub at: Instant,
    /// The provider's circuit generation after the change (threshold changes carry the
    /// current generation without bumping it).
    pub generation: u64,
    /// Why the circuit changed state: for a close, [`Cause::TrialsSucceeded`] or
    /// [`Cause::Operator`]; for an isolation, [`Cause::IsolatingVerdict`] or
    /// [`Cause::Operator`]. `None` for threshold changes.
    pub cause: Option<Cause>,
}

impl Event {
    /// The stable name alerting rules match on, such as `llm.circuit_opened`.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }
}

/// What happened to a provider.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// The circuit opened (`llm.circuit_opened`).
    CircuitOpened {
        /// The condition that tripped it.
        cause: Cause,
        /// The counted failures behind it.
        failures: u32,
        /// How long it stays open.
        retry_after: Duration,
    },
    /// The open deadline passed; trial calls may go through (`llm.circuit_half_opened`).
    CircuitHalfOpened,
    /// The circuit closed (`llm.circuit_closed`), after successful trials or an operator
    /// reset ([`Event::cause`] says which).
    CircuitClosed,
    /// The provider was isolated (`llm.circuit_isolated`) by a verdict or an operator
    /// ([`Event::cause`] says which).
    CircuitIsolated,
    /// Adaptive thresholds moved to another tier (`llm.thresholds_adapted`).
    ThresholdsAdapted {
        /// The tier's boundary in requests a minute; `None` when no tier applies.
        tier: Option<u32>,
        /// The measured request rate, per minute.
        request_rate: f64,
        /// The consecutive-failure threshold now in force.
        failure_threshold: Option<u32>,
        /// The base open duration now in force.
        open_for: Duration,
    },
}

impl EventKind {
    /// The stable name of this kind of event.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::CircuitOpened { .. } => "llm.circuit_opened",
            EventKind::CircuitHalfOpened => "llm.circuit_half_opened",
            EventKind::CircuitClosed => "llm.circuit_closed",
            EventKind::CircuitIsolated => "llm.circuit_isolated",
            EventKind::ThresholdsAdapted { .. } => "llm.thresholds_adapted",
        }
    }

    /// The circuit state this event leaves the provider in, for state changes.
    pub fn state(&self) -> Option<CircuitState> {
        match self {
            EventKind::CircuitOpened { .. } => Some(CircuitState::Open),
            EventKind::CircuitHalfOpened => Some(CircuitState::HalfOpen),
            EventKind::CircuitClosed => Some(CircuitState::Closed),
            EventKind::CircuitIsolated => Some(CircuitState::Isolated),
            EventKind::ThresholdsAdapted { .. } => None,
        }
    }
}

/// The event for a breaker transition.
pub(crate) fn from_transition(provider: &ProviderId, t: &crate::breaker::Transition) -> Event {
    let kind = match t.to {
        CircuitState::Open => EventKind::CircuitOpened {
            cause: t.cause,
            failures: t.failures,
            retry_after: t.open_for.unwrap_or_default(),
        },
        CircuitState::HalfOpen => EventKind::CircuitHalfOpened,
        CircuitState::Closed => EventKind::CircuitClosed,
        CircuitState::Isolated => EventKind::CircuitIsolated,
    };
    Event {
        provider: provider.clone(),
        kind,
        at: t.at,
        generation: t.generation,
        cause: Some(t.cause),
    }
}
