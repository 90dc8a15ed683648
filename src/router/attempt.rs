//! The trace of a routed call: one [`Attempt`] per provider considered.

use std::time::Duration;

use smallvec::SmallVec;

use crate::{ProviderId, Verdict};

/// What happened at one provider during a routed call.
///
/// Serialises (`serde`) into its [`Attempt`]'s object as `"outcome":` [`label`](Self::label),
/// with `retry_after_seconds` for `SkippedOpen`, `verdict` (and `retry_after_seconds` for a
/// rate limit with a hint) for `Failed`, and `after_seconds` for `TimedOut`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// Not called: its circuit is open (or half-open with every trial slot taken).
    SkippedOpen {
        /// When it admits calls again.
        #[serde(
            rename = "retry_after_seconds",
            serialize_with = "crate::events::ser::secs"
        )]
        retry_after: Duration,
    },
    /// Not called: isolated until an operator resets it.
    SkippedIsolated,
    /// Not called: every bulkhead slot was taken.
    SkippedSaturated,
    /// Not called: its request or token budget had no room (not counted against it).
    SkippedBudget {
        /// When its budget has room for the call again.
        #[serde(
            rename = "retry_after_seconds",
            serialize_with = "crate::events::ser::secs"
        )]
        retry_after: Duration,
    },
    /// Called; the provider's error had this verdict (a failure, rate limit or isolating
    /// error moves on to the next provider; an ignored one ends the routed call, unless its
    /// class is a context window exceeded, which moves on to a larger window, or a content
    /// policy refusal on a route with an `on_content_policy` route).
    Failed(#[serde(serialize_with = "crate::events::ser::verdict")] Verdict),
    /// Called; exceeded the provider's call timeout (counts as a failure).
    TimedOut(#[serde(serialize_with = "crate::events::ser::after")] Duration),
    /// Called; abandoned when the route's deadline passed (not counted against it).
    DeadlineExceeded,
    /// Called; it answered.
    Succeeded,
}

impl AttemptOutcome {
    /// A stable snake-case name: `succeeded`, `failed`, `timed_out`, `deadline_exceeded`,
    /// `skipped_open`, `skipped_isolated`, `skipped_saturated`, `skipped_budget`.
    pub fn label(&self) -> &'static str {
        match self {
            AttemptOutcome::SkippedOpen { .. } => "skipped_open",
            AttemptOutcome::SkippedIsolated => "skipped_isolated",
            AttemptOutcome::SkippedSaturated => "skipped_saturated",
            AttemptOutcome::SkippedBudget { .. } => "skipped_budget",
            AttemptOutcome::Failed(_) => "failed",
            AttemptOutcome::TimedOut(_) => "timed_out",
            AttemptOutcome::DeadlineExceeded => "deadline_exceeded",
            AttemptOutcome::Succeeded => "succeeded",
        }
    }

    /// Whether the provider was actually called.
    pub fn was_called(&self) -> bool {
        !matches!(
            self,
            AttemptOutcome::SkippedOpen { .. }
                | AttemptOutcome::SkippedIsolated
                | AttemptOutcome::SkippedSaturated
                | AttemptOutcome::SkippedBudget { .. }
        )
    }
}

/// One provider's part in a routed call.
///
/// Serialises (`serde`) as one flat object:
/// `{"provider": "openai", "outcome": "failed", "verdict": "failure", "elapsed_seconds": 0.25}`
/// (see [`AttemptOutcome`] for the outcome's fields).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attempt {
    /// The provider.
    #[serde(serialize_with = "crate::events::ser::name")]
    pub provider: ProviderId,
    /// What happened.
    #[serde(flatten)]
    pub outcome: AttemptOutcome,
    /// How long the attempt took (zero for skips). An attempt at a provider without a
    /// call timeout, slow-call threshold or latency average, in a route without a deadline,
    /// that is ready at its first poll is timed by the CPU's cheap monotonic clock
    /// (`quanta`); one that suspends, by tokio's clock from its first suspension (so paused
    /// tokio time shows in it). Such a provider's duration histogram is timed the same way.
    #[serde(
        rename = "elapsed_seconds",
        serialize_with = "crate::events::ser::secs"
    )]
    pub elapsed: Duration,
}

/// The trace of a routed call: one [`Attempt`] per provider considered, in order.
///
/// Reads like a slice (`attempts.len()`, `attempts[0]`, `attempts.iter()`); the first two
/// attempts are held inline, so a call served by its first or second choice allocates
/// nothing for its trace.
///
/// Serialises (`serde`) as an array of [`Attempt`]s.
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(transparent)]
pub struct Attempts(#[serde(serialize_with = "crate::events::ser::seq")] SmallVec<[Attempt; 2]>);

impl Attempts {
    #[inline]
    pub(crate) fn new() -> Self {
        Attempts(SmallVec::new())
    }

    #[inline]
    pub(crate) fn push(&mut self, attempt: Attempt) {
        self.0.push(attempt);
    }

    /// The attempts as a vector.
    pub fn into_vec(self) -> Vec<Attempt> {
        self.0.into_vec()
    }
}

impl std::fmt::Debug for Attempts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl std::ops::Deref for Attempts {
    type Target = [Attempt];

    fn deref(&self) -> &[Attempt] {
        &self.0
    }
}

impl AsRef<[Attempt]> for Attempts {
    fn as_ref(&self) -> &[Attempt] {
        &self.0
    }
}

impl From<Vec<Attempt>> for Attempts {
    fn from(attempts: Vec<Attempt>) -> Self {
        Attempts(SmallVec::from_vec(attempts))
    }
}

impl From<Attempts> for Vec<Attempt> {
    fn from(attempts: Attempts) -> Self {
        attempts.into_vec()
    }
}

impl PartialEq<Vec<Attempt>> for Attempts {
    fn eq(&self, other: &Vec<Attempt>) -> bool {
        self[..] == other[..]
    }
}

impl PartialEq<[Attempt]> for Attempts {
    fn eq(&self, other: &[Attempt]) -> bool {
        self[..] == *other
    }
}

impl IntoIterator for Attempts {
    type Item = Attempt;
    type IntoIter = smallvec::IntoIter<[Attempt; 2]>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Attempts {
    type Item = &'a Attempt;
    type IntoIter = std::slice::Iter<'a, Attempt>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A routed call's value, with where it was served and every attempt on the way.
///
/// Serialises (`serde`, for a serialisable value) as
/// `{"value": .., "provider": "openai", "attempts": [..]}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Routed<T> {
    /// The provider's answer.
    pub value: T,
    /// The provider that served it.
    #[serde(serialize_with = "crate::events::ser::name")]
    pub provider: ProviderId,
    /// Every provider considered, in order, the serving one last.
    pub attempts: Attempts,
}

impl<T> Routed<T> {
    /// How many providers failed or were skipped before one served.
    pub fn fallbacks(&self) -> usize {
        self.attempts.len().saturating_sub(1)
    }
}
