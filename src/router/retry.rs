//! What a routed call adds to one attempt for budgets, retries and class-based fallback:
//! the budget admission of a member, the same-member retry decision, and attempters that
//! carry a call's token estimate and its errors' class.
//!
//! The failover loop calls in here from small hooks; the state (limiters, retry budgets)
//! lives in [`crate::budget`].

use std::future::Future;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::failover::{Attempter, Calls};
use super::table::{RouteCounters, RouteView};
use crate::attempt::Ended;
use crate::budget::{Metered, OverBudget, Reservation, Retry, RetryState};
use crate::provider::{Admitted, Ticket};
use crate::{CircuitState, Classify, ErrorClass, ProviderHandle, ProviderId, Verdict};

impl RouteCounters {
    /// The route's own retry budget for `config` (kept across publications while the
    /// setting is unchanged; called when the router publishes, never by a routed call).
    pub(crate) fn retry_state(
        &self,
        route: &str,
        config: Option<Retry>,
    ) -> Option<Arc<RetryState>> {
        let config = config?;
        let mut kept = self.retry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = kept.as_ref().filter(|s| s.config == config) {
            return Some(state.clone());
        }
        let seed = route.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let state = Arc::new(RetryState::new(config, seed, Instant::now()));
        *kept = Some(state.clone());
        Some(state)
    }
}

/// The retry policy and budget that apply to `handle` on this route: the route's own, else
/// the provider's, else none.
#[inline]
pub(super) fn retry_of<'a>(
    view: &'a RouteView,
    handle: &'a ProviderHandle,
) -> Option<&'a RetryState> {
    view.retry.as_deref().or(handle.shared.retry.as_deref())
}

/// Reserves the member's budget for one attempt (`estimate` tokens, or the budget's default).
/// `Ok(None)` when it has no budget.
#[inline]
pub(super) fn reserve(
    handle: &ProviderHandle,
    estimate: Option<u64>,
) -> Result<Option<Reservation<'_>>, OverBudget> {
    match &handle.shared.budget {
        None => Ok(None),
        Some(budget) => budget
            .reserve(estimate.unwrap_or_else(|| budget.default_estimate()))
            .map(Some),
    }
}

/// Decides whether the failed attempt number `tries` at `handle` is retried and, if so,
/// waits the back-off and admits the retry: its admission and budget reservation. `None`:
/// fail over (not retryable, attempts used up, the hint is longer than the back-off cap,
/// the retry budget is spent, the deadline would pass, or the circuit no longer admits it).
pub(super) async fn again<'h>(
    view: &RouteView,
    handle: &'h ProviderHandle,
    tries: u32,
    verdict: Verdict,
    hint: Option<Duration>,
    estimate: Option<u64>,
    deadline: Option<Instant>,
) -> Option<(Admitted<&'h ProviderHandle>, Option<Reservation<'h>>)> {
    let retry = retry_of(view, handle)?;
    // Never on an open circuit.
    let admits = matches!(
        handle.state(),
        CircuitState::Closed | CircuitState::HalfOpen
    );
    let pause = retry.next_pause(tries, verdict, hint, admits, deadline)?;
    tokio::time::sleep(pause).await;
    let admitted = handle.admit(false).await.ok()?;
    match reserve(handle, estimate) {
        Ok(reserved) => Some((admitted, reserved)),
        Err(_) => {
            admitted.withdraw();
            None
        }
    }
}

/// Counts a routed call's first attempt at `handle` with its retry budget.
#[inline]
pub(super) fn deposit(view: &RouteView, handle: &ProviderHandle) {
    if let Some(retry) = retry_of(view, handle) {
        retry.deposit(Instant::now());
    }
}

/// The context window of a member (configured, or its `max_context` metadata).
pub(super) fn max_context(handle: &ProviderHandle) -> Option<u64> {
    handle.shared.config.max_context_config()
}

/// An attempter whose errors implement [`Classify`]: their class and back-off hint reach
/// the failover loop.
pub(crate) struct Classified<A>(pub(crate) A);

impl<T, E: Classify, A: Attempter<T, E>> Attempter<T, E> for Classified<A> {
    async fn attempt(
        &mut self,
        handle: &ProviderHandle,
        admitted: Admitted<&ProviderHandle>,
        deadline: Option<Instant>,
    ) -> Ended<T, E> {
        self.0.attempt(handle, admitted, deadline).await
    }

    const TIMED: bool = A::TIMED;

    async fn attempt_timed(
        &mut self,
        handle: &ProviderHandle,
        admitted: Admitted<&ProviderHandle>,
        deadline: Option<Instant>,
    ) -> (Ended<T, E>, Option<Duration>) {
        self.0.attempt_timed(handle, admitted, deadline).await
    }

    async fn attempt_plain(
        &mut self,
        handle: &ProviderHandle,
        ticket: Ticket<'_>,
    ) -> (Ended<T, E>, Option<Duration>) {
        self.0.attempt_plain(handle, ticket).await
    }

    fn class(&self, error: &E) -> ErrorClass {
        error.error_class()
    }

    fn hint(&self, error: &E) -> Option<Duration> {
        error.backoff_hint()
    }

    fn estimate(&self) -> Option<u64> {
        self.0.estimate()
    }

    fn used(&self, value: &T) -> Option<u64> {
        self.0.used(value)
    }
}

/// Routed calls declaring `estimate` tokens and reporting their usage ([`Metered`]).
pub(crate) struct MeteredCalls<C, F> {
    pub(crate) calls: Calls<C, F>,
    pub(crate) estimate: u64,
}

impl<T, E, C, F, Fut> Attempter<Metered<T>, E> for MeteredCalls<C, F>
where
    C: Fn(&E) -> Verdict,
    F: FnMut(ProviderId) -> Fut,
    Fut: Future<Output = Result<Metered<T>, E>>,
{
    async fn attempt(
        &mut self,
        handle: &ProviderHandle,
        admitted: Admitted<&ProviderHandle>,
        deadline: Option<Instant>,
    ) -> Ended<Metered<T>, E> {
        self.calls.attempt(handle, admitted, deadline).await
    }

    const TIMED: bool = true;

    async fn attempt_timed(
        &mut self,
        handle: &ProviderHandle,
        admitted: Admitted<&ProviderHandle>,
        deadline: Option<Instant>,
    ) -> (Ended<Metered<T>, E>, Option<Duration>) {
        self.calls.attempt_timed(handle, admitted, deadline).await
    }

    async fn attempt_plain(
        &mut self,
        handle: &ProviderHandle,
        ticket: Ticket<'_>,
    ) -> (Ended<Metered<T>, E>, Option<Duration>) {
        self.calls.attempt_plain(handle, ticket).await
    }

    fn estimate(&self) -> Option<u64> {
        Some(self.estimate)
    }

    fn used(&self, value: &Metered<T>) -> Option<u64> {
        value.tokens
    }
}

/// A routed call going on over `fallback` after a content-policy refusal: `before` (the
/// trace so far) comes first in the result's trace.
pub(crate) async fn on_content_policy<T, E, A: Attempter<T, E>>(
    fallback: &RouteView,
    attempter: A,
    before: Vec<crate::Attempt>,
) -> Result<crate::Routed<T>, crate::RouteError<E>> {
    use crate::RouteError;
    let prepend = |attempts: &mut Vec<crate::Attempt>| {
        let later = std::mem::replace(attempts, before.clone());
        attempts.extend(later);
    };
    match super::run(fallback, attempter, super::Resume::default()).await {
        Ok(mut routed) => {
            let mut all = before.clone();
            all.extend(routed.attempts);
            routed.attempts = all.into();
            Ok(routed)
        }
        Err(mut error) => {
            match &mut error {
                RouteError::AllUnavailable { attempts, .. }
                | RouteError::Exhausted { attempts, .. }
                | RouteError::NotRetryable { attempts, .. }
                | RouteError::DeadlineExceeded { attempts, .. }
                | RouteError::ShuttingDown { attempts } => prepend(attempts),
                _ => {}
            }
            Err(error)
        }
    }
}
