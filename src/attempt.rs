//! One attempt at an admitted provider: run it under its bounds, time it when something uses
//! the time, classify its outcome and record it with the provider.
//!
//! Every call shape goes through here: a direct call and a routed attempt run
//! [`call`]; a streamed call opens its stream with [`bounded`] and records its end (or its
//! failure before the first chunk) with [`record`]. So the duration histogram, the timeout
//! count, the latency average routes read and the report to the actor are kept in one place.

use std::borrow::Borrow;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::provider::{Admitted, Count, Delivery};
use crate::{ProviderHandle, Verdict};

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

/// When an attempt started, if anything uses how long it took (the slow-call threshold, the
/// duration histogram, a lowest-latency route): otherwise no clock is read.
#[inline]
pub(crate) fn start<H: Borrow<ProviderHandle>>(admitted: &Admitted<H>) -> Option<Instant> {
    admitted.needs_clock().then(Instant::now)
}

/// Records how an attempt ended with its provider: the duration histogram and the latency
/// average (a success's `latency`: the whole call, or a stream's time to first chunk), the
/// timeout count, and the outcome (healthy ones settle at once; a decision is returned to
/// await).
pub(crate) fn record<H: Borrow<ProviderHandle>>(
    admitted: Admitted<H>,
    verdict: Verdict,
    elapsed: Option<Duration>,
    timed_out: bool,
    latency: Option<Duration>,
) -> Option<Delivery> {
    let shared = &admitted.handle().shared;
    if let Some(elapsed) = elapsed {
        if shared.config.record_durations {
            shared.durations.record(verdict.is_failure(), elapsed);
        }
    }
    if timed_out {
        shared.counters.add(Count::Timeouts, 1);
    }
    if verdict == Verdict::Success {
        if let Some(latency) = latency.or(elapsed) {
            shared.record_latency(latency);
        }
    }
    admitted.report(verdict, elapsed.unwrap_or_default())
}

/// One attempt: `fut` under the call timeout and `deadline`, its outcome classified and
/// recorded with the provider; returns once any decision it caused is published.
pub(crate) async fn call<T, E, C, Fut>(
    admitted: Admitted<&ProviderHandle>,
    deadline: Option<Instant>,
    classify: &C,
    fut: Fut,
) -> Ended<T, E>
where
    C: Fn(&E) -> Verdict,
    Fut: Future<Output = Result<T, E>>,
{
    let started = start(&admitted);
    let limit = admitted.handle().shared.config.call_timeout;
    let ended = bounded(fut, limit, deadline).await;
    let elapsed = started.map(|s| s.elapsed());
    let (verdict, ended, timed_out) = match ended {
        Ok(Ok(value)) => (Verdict::Success, Ended::Served(value), false),
        Ok(Err(error)) => {
            let verdict = classify(&error);
            (verdict, Ended::Failed(verdict, error), false)
        }
        Err(Some(after)) => (Verdict::Failure, Ended::TimedOut(after), true),
        // Abandoned for the route's sake, not the provider's: dropping the admission counts
        // it as cancelled.
        Err(None) => return Ended::Deadline,
    };
    // A timed-out call is judged by its timeout, not by when the clock was read.
    let elapsed = match ended {
        Ended::TimedOut(after) => Some(after),
        _ => elapsed,
    };
    if let Some(decided) = record(admitted, verdict, elapsed, timed_out, None) {
        // The report is queued: even if this caller is dropped now, it is decided. Boxed:
        // a decision already allocates (its reply channel), and the common case's future
        // stays small.
        Box::pin(decided).await;
    }
    ended
}
