//! The trace of a routed call: one [`Attempt`] per provider considered.

use std::time::Duration;

use crate::{ProviderId, Verdict};

/// What happened at one provider during a routed call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// Not called: its circuit is open (or half-open with every trial slot taken).
    SkippedOpen {
        /// When it admits calls again.
        retry_after: Duration,
    },
    /// Not called: isolated until an operator resets it.
    SkippedIsolated,
    /// Not called: every bulkhead slot was taken.
    SkippedSaturated,
    /// Called; the provider's error had this verdict (a failure, rate limit or isolating
    /// error moves on to the next provider; an ignored one ends the routed call).
    Failed(Verdict),
    /// Called; exceeded the provider's call timeout (counts as a failure).
    TimedOut(Duration),
    /// Called; abandoned when the route's deadline passed (not counted against it).
    DeadlineExceeded,
    /// Called; it answered.
    Succeeded,
}

impl AttemptOutcome {
    /// Whether the provider was actually called.
    pub fn was_called(&self) -> bool {
        !matches!(
            self,
            AttemptOutcome::SkippedOpen { .. }
                | AttemptOutcome::SkippedIsolated
                | AttemptOutcome::SkippedSaturated
        )
    }
}

/// One provider's part in a routed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The provider.
    pub provider: ProviderId,
    /// What happened.
    pub outcome: AttemptOutcome,
    /// How long the attempt took (zero for skips).
    pub elapsed: Duration,
}

/// A routed call's value, with where it was served and every attempt on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed<T> {
    /// The provider's answer.
    pub value: T,
    /// The provider that served it.
    pub provider: ProviderId,
    /// Every provider considered, in order, the serving one last.
    pub attempts: Vec<Attempt>,
}

impl<T> Routed<T> {
    /// How many providers failed or were skipped before one served.
    pub fn fallbacks(&self) -> usize {
        self.attempts.len().saturating_sub(1)
    }
}
