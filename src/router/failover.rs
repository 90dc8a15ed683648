//! The failover loop of a routed call. It runs in the caller's task.
//!
//! The loop decides which provider to try next and records the trace; what one attempt does
//! with an admitted provider (a call, or opening a stream up to its first chunk) is passed
//! in, so calls and streams fail over by the same rules.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::{Attempt, AttemptOutcome, RouteEntry, Routed};
use crate::bulkhead::Denied;
use crate::config::AllOpen;
use crate::provider::{Admitted, Count, Reject};
use crate::{CallError, CircuitState, ProviderHandle, RouteError, Verdict};

/// The shortest pause of an [`AllOpen::Wait`], so a zero `retry_after` cannot spin.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// How one attempt at an admitted provider ended. The attempt has already recorded its
/// outcome with the provider.
pub(crate) enum Ended<T, E> {
    /// The provider served the request.
    Served(T),
    /// The provider answered with an error.
    Failed(Verdict, E),
    /// The provider's call timeout (or first-chunk timeout) passed.
    TimedOut(Duration),
    /// The route's deadline passed; the attempt was abandoned as cancelled.
    Deadline,
}

/// Runs `fut` under the provider's call timeout and the route's deadline. `Err` holds the
/// call timeout if it fired, `None` if the route's deadline did.
pub(crate) async fn bounded<F: Future>(
    fut: F,
    call_timeout: Option<Duration>,
    deadline: Option<Instant>,
) -> Result<F::Output, Option<Duration>> {
    let call_deadline = call_timeout.map(|t| Instant::now() + t);
    let first = match (call_deadline, deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let Some(at) = first else {
        return Ok(fut.await);
    };
    match tokio::time::timeout_at(at, fut).await {
        Ok(output) => Ok(output),
        // The call's own timeout wins a tie: it is what the provider is judged by.
        Err(_) if call_deadline == Some(at) => Err(call_timeout),
        Err(_) => Err(None),
    }
}

/// One routed call attempt at an admitted provider: `op` under the call timeout and the
/// route's deadline, its outcome recorded with the provider.
async fn call_attempt<T, E, C, Fut>(
    handle: &ProviderHandle,
    admitted: Admitted<&ProviderHandle>,
    deadline: Option<Instant>,
    classify: &C,
    call: Fut,
) -> Ended<T, E>
where
    C: Fn(&E) -> Verdict,
    Fut: Future<Output = Result<T, E>>,
{
    let shared = &handle.shared;
    let t0 = Instant::now();
    let ended = bounded(call, shared.config.call_timeout, deadline).await;
    let elapsed = t0.elapsed();
    match ended {
        Ok(Ok(value)) => {
            shared.durations.record(false, elapsed);
            admitted.finish(Verdict::Success, elapsed).await;
            shared.record_latency(elapsed);
            Ended::Served(value)
        }
        Ok(Err(error)) => {
            let verdict = classify(&error);
            shared.durations.record(verdict.is_failure(), elapsed);
            admitted.finish(verdict, elapsed).await;
            Ended::Failed(verdict, error)
        }
        Err(Some(after)) => {
            shared.durations.record(true, elapsed);
            shared.counters.add(Count::Timeouts, 1);
            admitted.finish(Verdict::Failure, after).await;
            Ended::TimedOut(after)
        }
        // Abandoned for the route's sake, not the provider's: counted as cancelled.
        Err(None) => Ended::Deadline,
    }
}

/// What one routed attempt does with an admitted provider.
pub(crate) trait Attempter<T, E> {
    /// Tries `handle`, admitted by `admitted`, within the route's `deadline`.
    async fn attempt(
        &mut self,
        handle: &ProviderHandle,
        admitted: Admitted<&ProviderHandle>,
        deadline: Option<Instant>,
    ) -> Ended<T, E>;
}

/// A routed call: `op` is called with each provider's id.
pub(crate) struct Calls<C, F> {
    pub(crate) classify: C,
    pub(crate) op: F,
}

impl<T, E, C, F, Fut> Attempter<T, E> for Calls<C, F>
where
    C: Fn(&E) -> Verdict,
    F: FnMut(crate::ProviderId) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    async fn attempt(
        &mut self,
        handle: &ProviderHandle,
        admitted: Admitted<&ProviderHandle>,
        deadline: Option<Instant>,
    ) -> Ended<T, E> {
        let call = (self.op)(handle.id().clone());
        call_attempt(handle, admitted, deadline, &self.classify, call).await
    }
}

/// Tries the route's providers in order until one serves. `attempter` is given each
/// admitted provider, its admission and the route's deadline.
pub(crate) async fn run<T, E, A>(
    entry: &RouteEntry,
    mut attempter: A,
) -> Result<Routed<T>, RouteError<E>>
where
    A: Attempter<T, E>,
{
    let start = Instant::now();
    let route_deadline = entry.config.deadline;
    let deadline = route_deadline.map(|d| start + d);
    let deadline_exceeded = |attempts| RouteError::DeadlineExceeded {
        deadline: route_deadline.unwrap_or_default(),
        attempts,
    };
    let mut attempts = Vec::new();
    let mut last: Option<CallError<E>> = None;
    let mut waited = Duration::ZERO;
    loop {
        let mut earliest: Option<Duration> = None;
        for handle in entry.order_for_call() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(deadline_exceeded(attempts));
            }
            let provider = handle.id().clone();
            let skip = |outcome| Attempt {
                provider: provider.clone(),
                outcome,
                elapsed: Duration::ZERO,
            };
            let admitted = match handle.admit(false).await {
                Ok(admitted) => admitted,
                Err(Reject::Circuit(r)) if r.state == CircuitState::Isolated => {
                    attempts.push(skip(AttemptOutcome::SkippedIsolated));
                    continue;
                }
                Err(Reject::Circuit(r)) => {
                    let retry_after = r.retry_after.unwrap_or_default();
                    earliest = Some(earliest.map_or(retry_after, |e| e.min(retry_after)));
                    attempts.push(skip(AttemptOutcome::SkippedOpen { retry_after }));
                    continue;
                }
                Err(Reject::Bulkhead(Denied::Full | Denied::Timeout(_))) => {
                    attempts.push(skip(AttemptOutcome::SkippedSaturated));
                    continue;
                }
                Err(Reject::Bulkhead(Denied::Closed) | Reject::ShuttingDown) => {
                    return Err(RouteError::ShuttingDown { attempts });
                }
            };
            let t0 = Instant::now();
            let span = tracing::debug_span!("fusebox.attempt", provider = %provider);
            let ended = attempter
                .attempt(handle, admitted, deadline)
                .instrument(span)
                .await;
            let mut record = |outcome| {
                attempts.push(Attempt {
                    provider: provider.clone(),
                    outcome,
                    elapsed: t0.elapsed(),
                })
            };
            match ended {
                Ended::Served(value) => {
                    record(AttemptOutcome::Succeeded);
                    return Ok(Routed {
                        value,
                        provider,
                        attempts,
                    });
                }
                Ended::Failed(verdict, error) => {
                    record(AttemptOutcome::Failed(verdict));
                    if !verdict.is_failure() {
                        // The caller's fault (or not the provider's): another provider would
                        // refuse the same request.
                        return Err(RouteError::NotRetryable { error, attempts });
                    }
                    last = Some(CallError::Inner(error));
                }
                Ended::TimedOut(after) => {
                    record(AttemptOutcome::TimedOut(after));
                    last = Some(CallError::Timeout {
                        provider: provider.clone(),
                        after,
                    });
                }
                Ended::Deadline => {
                    record(AttemptOutcome::DeadlineExceeded);
                    return Err(deadline_exceeded(attempts));
                }
            }
        }
        if let Some(last) = last {
            return Err(RouteError::Exhausted { last, attempts });
        }
        let pause = match (entry.config.when_all_open, earliest) {
            (AllOpen::Wait(max), Some(due)) if waited + due <= max => due.max(MIN_WAIT),
            _ => {
                return Err(RouteError::AllUnavailable {
                    retry_after: earliest,
                    attempts,
                })
            }
        };
        if let Some(d) = deadline {
            if Instant::now() + pause > d {
                tokio::time::sleep_until(d).await;
                return Err(deadline_exceeded(attempts));
            }
        }
        tokio::time::sleep(pause).await;
        waited += pause;
    }
}
