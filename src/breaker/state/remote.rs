//! Changes another replica of the fleet decided (`fusebox::fleet`, feature `redis`), applied
//! to this circuit. Each takes `now` and returns the transition it caused, like every other
//! input of the state machine; none of them counts a call.

use std::time::Duration;

use tokio::time::Instant;

use super::{Cause, Phase, State, Transition};
use crate::breaker::time::{clamp, deadline_after};

impl State {
    /// Another replica opened this provider's circuit, for `remaining` more (with its
    /// cause and counted failures). A closed or half-open circuit opens for `remaining`
    /// (the backoff does not grow); an open one stays open at least that long, since a
    /// remote change never shortens a local deadline; an isolated one stays isolated.
    /// A zero `remaining` changes nothing.
    pub fn remote_open(
        &mut self,
        remaining: Duration,
        cause: Cause,
        failures: u32,
        now: Instant,
    ) -> Option<Transition> {
        if remaining.is_zero() {
            return None;
        }
        match &mut self.phase {
            Phase::Open { until } => {
                *until = (*until).max(deadline_after(now, clamp(remaining)));
                None
            }
            Phase::Isolated => None,
            Phase::Closed | Phase::HalfOpen { .. } => {
                Some(self.open(cause, failures, remaining, now))
            }
        }
    }

    /// Another replica closed the circuit (its trials succeeded): an open circuit ends its
    /// open period now and goes half-open, so that local trials confirm the recovery. Any
    /// other state is left as it is.
    pub fn remote_close(&mut self, cause: Cause, now: Instant) -> Option<Transition> {
        match self.phase {
            Phase::Open { .. } => Some(self.transition(
                Phase::HalfOpen {
                    trials: Vec::new(),
                    successes: 0,
                },
                cause,
                now,
            )),
            _ => None,
        }
    }

    /// Another replica isolated the provider (an operator, or an isolating verdict there):
    /// as [`isolate`](Self::isolate), with the remote cause. No transition if already
    /// isolated.
    pub fn remote_isolate(&mut self, cause: Cause, now: Instant) -> Option<Transition> {
        if matches!(self.phase, Phase::Isolated) {
            return None;
        }
        Some(self.transition(Phase::Isolated, cause, now))
    }
}
