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
    /// A re-open after a failed trial elsewhere also grows this replica's backoff one step,
    /// as its own failed trial would. A zero `remaining` changes nothing.
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
        // A failed trial elsewhere grew the fleet's backoff: this replica's grows with it, so
        // that whichever replica runs the next trial re-opens for as long as the fleet would.
        if matches!(cause, Cause::TrialFailed | Cause::TrialTimedOut)
            && !matches!(self.phase, Phase::Isolated)
        {
            self.backoff.grow();
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use crate::breaker::{Cause, CircuitState, State};
    use crate::Breaker;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_remote_open_opens_for_the_time_left_and_never_shortens_a_deadline() {
        let t0 = Instant::now();
        let mut b = State::new(&Breaker::consecutive(3).open_for(60 * S), t0).unwrap();
        let t = b
            .remote_open(10 * S, Cause::ConsecutiveFailures, 3, t0)
            .unwrap();
        assert_eq!(
            (t.to, t.cause, t.failures),
            (CircuitState::Open, Cause::ConsecutiveFailures, 3)
        );
        assert_eq!(b.retry_after(t0), Some(10 * S));
        // Shorter: the local deadline stands. Longer: pushed later, without a transition.
        assert_eq!(b.remote_open(2 * S, Cause::RateLimited, 0, t0), None);
        assert_eq!(b.retry_after(t0), Some(10 * S));
        assert_eq!(b.remote_open(20 * S, Cause::RateLimited, 0, t0), None);
        assert_eq!(b.retry_after(t0), Some(20 * S));
        assert_eq!(
            b.remote_open(Duration::ZERO, Cause::RateLimited, 0, t0),
            None
        );
        // The backoff did not grow: a local open later still lasts its base duration.
        assert_eq!(b.base_open_for(), 60 * S);
        assert!(b.remote_isolate(Cause::Operator, t0).is_some());
        assert_eq!(b.remote_open(5 * S, Cause::FailureRate, 1, t0), None);
        assert_eq!(b.state(), CircuitState::Isolated);
    }

    #[test]
    fn a_remote_re_open_grows_the_backoff_as_a_local_one_would() {
        let t0 = Instant::now();
        // A cap above the default 2 × open_for, so that the doubling shows.
        let config = Breaker::consecutive(1)
            .open_for(S)
            .max_open_for(10 * S)
            .jitter(0.0)
            .success_threshold(1);
        let mut b = State::new(&config, t0).unwrap();
        b.remote_open(S, Cause::ConsecutiveFailures, 1, t0);
        // Another replica's trial failed: it re-opened for 2 s.
        b.remote_open(2 * S, Cause::TrialFailed, 1, t0 + S);
        // This replica's own next failed trial re-opens for 4 s, not 2 s.
        let t = t0 + 3 * S;
        let permit = b.on_admit(t).decision.unwrap();
        let failure = crate::breaker::Outcome::Completed {
            verdict: crate::Verdict::Failure,
            elapsed: Duration::ZERO,
        };
        let reopened = b.on_outcome(permit, failure, t).unwrap();
        assert_eq!(reopened.open_for, Some(4 * S));
    }

    #[test]
    fn a_remote_close_ends_an_open_period_in_half_open_only() {
        let t0 = Instant::now();
        let mut b = State::new(&Breaker::consecutive(1), t0).unwrap();
        assert_eq!(b.remote_close(Cause::TrialsSucceeded, t0), None);
        b.remote_open(30 * S, Cause::ConsecutiveFailures, 1, t0);
        let t = b.remote_close(Cause::TrialsSucceeded, t0 + S).unwrap();
        assert_eq!((t.from, t.to), (CircuitState::Open, CircuitState::HalfOpen));
        assert_eq!(b.remote_close(Cause::TrialsSucceeded, t0 + S), None);
        b.remote_isolate(Cause::IsolatingVerdict, t0 + S);
        assert_eq!(b.remote_close(Cause::TrialsSucceeded, t0 + S), None);
        assert_eq!(b.state(), CircuitState::Isolated);
        assert_eq!(b.remote_isolate(Cause::Operator, t0 + S), None);
    }
}
