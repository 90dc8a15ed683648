//! One attempt at an admitted provider: run it under its bounds, time it when something uses
//! the time, classify its outcome and record it with the provider.
//!
//! Every call shape goes through here: a direct call and a routed attempt run
//! [`call`]; a streamed call opens its stream with [`bounded`] and records its end (or its
//! failure before the first chunk) with [`record`]. So the duration histogram, the timeout
//! count, the latency average routes read and the report to the actor are kept in one place.
//!
//! [`Attempt`] is a hand-written future with no more state than the operation's own future,
//! the admission and the start time: a call timeout (or a route deadline) adds one boxed
//! timer, and a report the actor must decide one boxed delivery, only when there is one.

use std::borrow::Borrow;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::provider::{Admitted, Count, Delivery, Ticket};
use crate::{CallError, ProviderHandle, Verdict};

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

impl<T, E> Ended<T, E> {
    /// The result of a direct call that ended so.
    #[inline]
    pub(crate) fn into_call(self, handle: &ProviderHandle) -> Result<T, CallError<E>> {
        match self {
            Ended::Served(value) => Ok(value),
            Ended::Failed(_, error) => Err(CallError::Inner(error)),
            Ended::TimedOut(after) => Err(CallError::Timeout {
                provider: handle.id().clone(),
                after,
            }),
            // No route deadline applies to a direct call.
            Ended::Deadline => Err(CallError::ShuttingDown),
        }
    }
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

pin_project! {
    /// The timer bounding a running attempt: the earlier of the provider's call timeout and
    /// the route's deadline. Boxed into an attempt only when one of them is set.
    struct Bound {
        #[pin]
        sleep: Sleep,
        // The call timeout, when it is what the timer fires for (it wins a tie with the
        // route's deadline: it is what the provider is judged by); `None` for the deadline.
        timeout: Option<Duration>,
    }
}

impl Bound {
    /// The bound of an attempt started `now` (which is read whenever a call timeout is set).
    fn new(
        now: Option<Instant>,
        call_timeout: Option<Duration>,
        deadline: Option<Instant>,
    ) -> Option<Pin<Box<Bound>>> {
        let call_deadline = now.zip(call_timeout).map(|(now, t)| now + t);
        let at = match (call_deadline, deadline) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(Box::pin(Bound {
            sleep: tokio::time::sleep_until(at),
            timeout: call_timeout.filter(|_| call_deadline == Some(at)),
        }))
    }

    /// `Ready` once the timer fired, with the call timeout if it is what fired.
    fn poll_fired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Duration>> {
        let this = self.project();
        this.sleep.poll(cx).map(|()| *this.timeout)
    }
}

pin_project! {
    /// One attempt at an admitted provider: its operation's future under the call timeout
    /// and the route's deadline, timed when something uses the time, its outcome classified
    /// and recorded with the provider; ready once any decision it caused is published.
    ///
    /// Dropped before it is ready, its admission reports the call cancelled (and gives back
    /// its slots); dropped while awaiting a decision, the report goes on in a task of its own
    /// (see `Delivery`).
    #[project = AttemptProj]
    #[project_replace = AttemptOwn]
    pub(crate) enum Attempt<'a, Fut, T, E> {
        // Admitted on the plain path: no timer, no tokio clock; timed with the cheap clock
        // only for the duration histogram or a routed call's trace.
        Plain {
            #[pin]
            fut: Fut,
            ticket: Ticket<'a>,
            clock: PlainClock,
        },
        Running {
            #[pin]
            fut: Fut,
            admitted: Admitted<&'a ProviderHandle>,
            started: Option<Instant>,
            // Whether the provider uses the duration (`started` may be read for the trace
            // alone).
            judged: bool,
            bound: Option<Pin<Box<Bound>>>,
        },
        // The outcome is reported; the actor's decision, if it must decide, is awaited
        // before it is handed out.
        Deciding {
            decided: Option<Pin<Box<Delivery>>>,
            ended: Ended<T, E>,
            elapsed: Option<Duration>,
        },
        Done,
    }
}

impl<'a, Fut, T, E> Attempt<'a, Fut, T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    /// Starts an attempt: `fut` (the operation's future, not yet polled) at `admitted`,
    /// within the route's `deadline`. `timed`: time it even when the provider needs no
    /// duration (for a routed call's trace). No clock is read unless something uses it.
    #[inline]
    pub(crate) fn new(
        admitted: Admitted<&'a ProviderHandle>,
        deadline: Option<Instant>,
        fut: Fut,
        timed: bool,
    ) -> Self {
        let limit = admitted.handle().shared.config.call_timeout;
        let judged = admitted.needs_clock();
        let clock = timed || judged;
        let now = (clock || limit.is_some()).then(Instant::now);
        let bound = if limit.is_none() && deadline.is_none() {
            None
        } else {
            Bound::new(now, limit, deadline)
        };
        Attempt::Running {
            fut,
            admitted,
            started: now.filter(|_| clock),
            judged,
            bound,
        }
    }

    /// Starts an attempt admitted on the plain path. `timed`: time it even when the provider
    /// records no durations (for a routed call's trace).
    #[inline(always)]
    pub(crate) fn plain(ticket: Ticket<'a>, fut: Fut, timed: bool) -> Self {
        Attempt::Plain {
            clock: PlainClock::start(&ticket, timed),
            fut,
            ticket,
        }
    }

    /// A plain attempt that failed with `error` (its future already dropped): the failure
    /// is reported, and the attempt awaits the actor's decision when there is one.
    #[inline(never)]
    pub(crate) fn plain_failed<C>(
        ticket: Ticket<'a>,
        clock: PlainClock,
        error: E,
        classify: &C,
    ) -> Self
    where
        C: Fn(&E) -> Verdict,
    {
        let verdict = classify(&error);
        Self::plain_failed_as(ticket, clock, error, verdict)
    }

    /// [`plain_failed`](Self::plain_failed) with the error already classified.
    #[inline(never)]
    pub(crate) fn plain_failed_as(
        ticket: Ticket<'a>,
        clock: PlainClock,
        error: E,
        verdict: Verdict,
    ) -> Self {
        let elapsed = clock.elapsed();
        let shared = &ticket.handle().shared;
        let histogram = elapsed.filter(|_| shared.config.record_durations);
        let decided = record(ticket.into_admitted(), verdict, histogram, false, None);
        Attempt::Deciding {
            decided: decided.map(Box::pin),
            ended: Ended::Failed(verdict, error),
            elapsed,
        }
    }

    /// Polls the attempt. Ready with how it ended and, if it was timed, how long its
    /// operation took (measured, even for a timeout).
    #[inline(always)]
    pub(crate) fn poll_attempt<C>(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        classify: &C,
    ) -> Poll<(Ended<T, E>, Option<Duration>)>
    where
        C: Fn(&E) -> Verdict,
    {
        if let AttemptProj::Plain { fut, clock, .. } = self.as_mut().project() {
            let output = ready!(poll_plain(fut, clock, cx));
            // Ended: the operation's future is dropped here, before the outcome is recorded.
            let AttemptOwn::Plain { ticket, clock, .. } =
                self.as_mut().project_replace(Attempt::Done)
            else {
                unreachable!("the attempt was plain")
            };
            match output {
                Ok(value) => {
                    let elapsed = plain_success(ticket, clock);
                    return Poll::Ready((Ended::Served(value), elapsed));
                }
                Err(error) => self.set(Attempt::plain_failed(ticket, clock, error, classify)),
            }
        }
        self.poll_general(cx, classify)
    }

    /// [`poll_attempt`](Self::poll_attempt) past the plain path.
    #[inline(never)]
    fn poll_general<C>(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        classify: &C,
    ) -> Poll<(Ended<T, E>, Option<Duration>)>
    where
        C: Fn(&E) -> Verdict,
    {
        let ended = match self.as_mut().project() {
            AttemptProj::Running { fut, bound, .. } => match fut.poll(cx) {
                Poll::Ready(output) => Ok(output),
                Poll::Pending => match bound {
                    Some(bound) => Err(ready!(bound.as_mut().poll_fired(cx))),
                    None => return Poll::Pending,
                },
            },
            AttemptProj::Deciding { decided, .. } => {
                if let Some(decided) = decided {
                    ready!(decided.as_mut().poll(cx));
                }
                let AttemptOwn::Deciding { ended, elapsed, .. } =
                    self.project_replace(Attempt::Done)
                else {
                    unreachable!("the attempt was deciding")
                };
                return Poll::Ready((ended, elapsed));
            }
            AttemptProj::Done => panic!("attempt polled after it was ready"),
            AttemptProj::Plain { .. } => unreachable!("polled above"),
        };
        // Ended: the operation's future is dropped here, before the outcome is recorded.
        let AttemptOwn::Running {
            admitted,
            started,
            judged,
            ..
        } = self.as_mut().project_replace(Attempt::Done)
        else {
            unreachable!("the attempt was running")
        };
        let elapsed = started.map(|s| s.elapsed());
        let (verdict, ended, timed_out) = match ended {
            Ok(Ok(value)) => (Verdict::Success, Ended::Served(value), false),
            Ok(Err(error)) => {
                let verdict = classify(&error);
                (verdict, Ended::Failed(verdict, error), false)
            }
            Err(Some(after)) => (Verdict::Failure, Ended::TimedOut(after), true),
            // Abandoned for the route's sake, not the provider's: dropping the admission
            // counts it as cancelled.
            Err(None) => {
                drop(admitted);
                return Poll::Ready((Ended::Deadline, elapsed));
            }
        };
        // A timed-out call is judged by its timeout, not by when the clock was read.
        let judged = match ended {
            Ended::TimedOut(after) => Some(after),
            _ => elapsed.filter(|_| judged),
        };
        let Some(decided) = record(admitted, verdict, judged, timed_out, None) else {
            return Poll::Ready((ended, elapsed));
        };
        // The report is queued: even if this attempt is dropped now, it is decided. Boxed: a
        // decision already allocates (its reply channel), and the common case stays small.
        self.set(Attempt::Deciding {
            decided: Some(Box::pin(decided)),
            ended,
            elapsed,
        });
        self.poll_general(cx, classify)
    }
}

/// The clock of a plain attempt, when it is timed (for the duration histogram, or a routed
/// call's trace). An operation ready at its first poll is timed by the CPU's cheap monotonic
/// clock (`quanta`, half the cost of a system clock read); one that suspends is timed by
/// tokio's clock from its first suspension, so that paused tokio time shows in what it
/// reports (the synchronous part before its first suspension, typically building a
/// request, is not counted then).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlainClock {
    started: Option<crate::clock::Reading>,
    suspended: Option<Instant>,
}

impl PlainClock {
    /// The clock of a plain attempt starting now: running when the provider records
    /// durations or `timed` asks for it.
    #[inline(always)]
    pub(crate) fn start(ticket: &Ticket<'_>, timed: bool) -> Self {
        PlainClock {
            started: (timed || ticket.handle().shared.config.record_durations)
                .then(crate::clock::now),
            suspended: None,
        }
    }

    /// The operation returned `Pending`.
    #[inline]
    pub(crate) fn suspend(&mut self) {
        if self.started.is_some() && self.suspended.is_none() {
            self.suspended = Some(Instant::now());
        }
    }

    /// How long the attempt took, if it is timed.
    #[inline(always)]
    pub(crate) fn elapsed(&self) -> Option<Duration> {
        match (self.suspended, self.started) {
            (Some(at), _) => Some(at.elapsed()),
            (None, started) => started.map(crate::clock::since),
        }
    }
}

/// Records a plain attempt's success; returns how long it took, if it was timed.
#[inline(always)]
pub(crate) fn plain_success(ticket: Ticket<'_>, clock: PlainClock) -> Option<Duration> {
    let elapsed = clock.elapsed();
    let histogram = elapsed.filter(|_| ticket.handle().shared.config.record_durations);
    ticket.succeed(histogram);
    elapsed
}

/// Reports a plain attempt that failed with `error` (its future already dropped) and
/// awaits the actor's decision, if it must decide: for a caller that could not keep the
/// attempt itself (a routed call's fast pass, handing the failure to the failover loop).
pub(crate) async fn report_plain_failure<T, E>(
    ticket: Ticket<'_>,
    clock: PlainClock,
    error: E,
    verdict: Verdict,
) -> (Ended<T, E>, Option<Duration>) {
    // No operation is left to run: the attempt only awaits the decision.
    let mut reporting = std::pin::pin!(
        Attempt::<std::future::Pending<Result<T, E>>, T, E>::plain_failed_as(
            ticket, clock, error, verdict
        )
    );
    std::future::poll_fn(|cx| reporting.as_mut().poll_attempt(cx, &|_: &E| verdict)).await
}

/// Polls a plain attempt's operation: on `Pending`, its clock notes the suspension (see
/// [`PlainClock`]).
#[inline(always)]
pub(crate) fn poll_plain<F: Future>(
    fut: Pin<&mut F>,
    clock: &mut PlainClock,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    let polled = fut.poll(cx);
    if polled.is_pending() {
        clock.suspend();
    }
    polled
}

/// One attempt, as an `async` function: see [`Attempt`].
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
    let mut attempt = std::pin::pin!(Attempt::new(admitted, deadline, fut, false));
    std::future::poll_fn(|cx| attempt.as_mut().poll_attempt(cx, classify))
        .await
        .0
}
