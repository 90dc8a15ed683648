//! The failover loop of a routed call. It runs in the caller's task.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::{Attempt, AttemptOutcome, RouteEntry, Routed};
use crate::bulkhead::Denied;
use crate::config::AllOpen;
use crate::provider::{Count, Reject};
use crate::{CallError, CircuitState, ProviderId, RouteError, Verdict};

/// The shortest pause of an [`AllOpen::Wait`], so a zero `retry_after` cannot spin.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// How one admitted attempt ended.
enum Ended<T, E> {
    Done(Result<T, E>),
    CallTimeout(Duration),
    Deadline,
}

/// Runs `fut` under the provider's call timeout and the route's deadline.
async fn bounded<T, E>(
    fut: impl Future<Output = Result<T, E>>,
    call_timeout: Option<Duration>,
    deadline: Option<Instant>,
) -> Ended<T, E> {
    let call_deadline = call_timeout.map(|t| Instant::now() + t);
    let first = match (call_deadline, deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let Some(at) = first else {
        return Ended::Done(fut.await);
    };
    match tokio::time::timeout_at(at, fut).await {
        Ok(result) => Ended::Done(result),
        // The call's own timeout wins a tie: it is what the provider is judged by.
        Err(_) if call_deadline == Some(at) => Ended::CallTimeout(call_timeout.unwrap_or_default()),
        Err(_) => Ended::Deadline,
    }
}

/// Tries the route's providers in order until one answers.
pub(crate) async fn run<T, E, C, F, Fut>(
    entry: &RouteEntry,
    classify: C,
    mut op: F,
) -> Result<Routed<T>, RouteError<E>>
where
    C: Fn(&E) -> Verdict,
    F: FnMut(ProviderId) -> Fut,
    Fut: Future<Output = Result<T, E>>,
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
            let call = op(provider.clone()).instrument(span);
            let ended = bounded(call, handle.shared.config.call_timeout, deadline).await;
            let elapsed = t0.elapsed();
            let failed = match &ended {
                Ended::Done(Ok(_)) => Some(false),
                Ended::Done(Err(e)) => Some(classify(e).is_failure()),
                Ended::CallTimeout(_) => Some(true),
                Ended::Deadline => None,
            };
            if let Some(failed) = failed {
                handle.shared.durations.record(failed, elapsed);
            }
            let mut record = |outcome| {
                attempts.push(Attempt {
                    provider: provider.clone(),
                    outcome,
                    elapsed,
                })
            };
            match ended {
                Ended::Done(Ok(value)) => {
                    admitted.finish(Verdict::Success, elapsed).await;
                    handle.shared.record_latency(elapsed);
                    record(AttemptOutcome::Succeeded);
                    return Ok(Routed {
                        value,
                        provider,
                        attempts,
                    });
                }
                Ended::Done(Err(error)) => {
                    let verdict = classify(&error);
                    admitted.finish(verdict, elapsed).await;
                    record(AttemptOutcome::Failed(verdict));
                    if !verdict.is_failure() {
                        // The caller's fault (or not the provider's): another provider would
                        // refuse the same request.
                        return Err(RouteError::NotRetryable { error, attempts });
                    }
                    last = Some(CallError::Inner(error));
                }
                Ended::CallTimeout(after) => {
                    handle.shared.counters.add(Count::Timeouts, 1);
                    admitted.finish(Verdict::Failure, after).await;
                    record(AttemptOutcome::TimedOut(after));
                    last = Some(CallError::Timeout {
                        provider: provider.clone(),
                        after,
                    });
                }
                Ended::Deadline => {
                    // Abandoned for the route's sake, not the provider's: counted as cancelled.
                    drop(admitted);
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
