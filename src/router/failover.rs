//! The failover loop of a routed call. It runs in the caller's task.
//!
//! The loop decides which provider to try next and records the trace; what one attempt does
//! with an admitted provider (a call, or opening a stream up to its first chunk) is passed
//! in, so calls and streams fail over by the same rules.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use smallvec::SmallVec;
use tokio::time::Instant;
use tracing::Instrument;

use super::retry;
use super::table::{AttemptResult, RouteView};
use super::{Attempt, AttemptOutcome, Attempts, Routed};
use crate::attempt::{self, Ended};
use crate::bulkhead::Denied;
use crate::config::{AllOpen, Policy};
use crate::provider::{Admitted, Reject, Ticket};
use crate::{CallError, CircuitState, ProviderHandle, RouteError, Verdict};

/// The shortest pause of an [`AllOpen::Wait`], so a zero `retry_after` cannot spin.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// What one routed attempt does with an admitted provider.
pub(crate) trait Attempter<T, E> {
    /// Tries `handle`, admitted by `admitted`, within the route's `deadline`.
    async fn attempt(
        &mut self,
        handle: &ProviderHandle,
        admitted: Admitted<&ProviderHandle>,
        deadline: Option<Instant>,
    ) -> Ended<T, E>;

    /// Whether [`attempt_timed`](Self::attempt_timed) times the attempt itself (otherwise
    /// the loop reads the clock around it, for the trace).
    const TIMED: bool = false;

    /// Like [`attempt`](Self::attempt), with how long the attempt took when it is
    /// [`TIMED`](Self::TIMED).
    async fn attempt_timed(
        &mut self,
        handle: &ProviderHandle,
        admitted: Admitted<&ProviderHandle>,
        deadline: Option<Instant>,
    ) -> (Ended<T, E>, Option<Duration>) {
        (self.attempt(handle, admitted, deadline).await, None)
    }

    /// Like [`attempt_timed`](Self::attempt_timed), for a call admitted on the plain path
    /// (see `ProviderHandle::admit_plain`), with no route deadline.
    async fn attempt_plain(
        &mut self,
        handle: &ProviderHandle,
        ticket: Ticket<'_>,
    ) -> (Ended<T, E>, Option<Duration>) {
        self.attempt_timed(handle, ticket.into_admitted(), None)
            .await
    }

    /// The class of an error (for the fallbacks by class: see `router::retry`).
    fn class(&self, error: &E) -> crate::ErrorClass {
        let _ = error;
        crate::ErrorClass::Other
    }

    /// The provider's back-off hint in an error, for a retry.
    fn hint(&self, error: &E) -> Option<Duration> {
        let _ = error;
        None
    }

    /// The tokens each attempt reserves from a member's budget (`None`: its default).
    fn estimate(&self) -> Option<u64> {
        None
    }

    /// The tokens a served attempt used, to settle its reservation.
    fn used(&self, value: &T) -> Option<u64> {
        let _ = value;
        None
    }
}

/// A routed call that goes on over another route (a content-policy fallback) with the same
/// attempter.
impl<T, E, A: Attempter<T, E>> Attempter<T, E> for &mut A {
    async fn attempt(
        &mut self,
        handle: &ProviderHandle,
        admitted: Admitted<&ProviderHandle>,
        deadline: Option<Instant>,
    ) -> Ended<T, E> {
        (**self).attempt(handle, admitted, deadline).await
    }

    const TIMED: bool = A::TIMED;

    async fn attempt_timed(
        &mut self,
        handle: &ProviderHandle,
        admitted: Admitted<&ProviderHandle>,
        deadline: Option<Instant>,
    ) -> (Ended<T, E>, Option<Duration>) {
        (**self).attempt_timed(handle, admitted, deadline).await
    }

    async fn attempt_plain(
        &mut self,
        handle: &ProviderHandle,
        ticket: Ticket<'_>,
    ) -> (Ended<T, E>, Option<Duration>) {
        (**self).attempt_plain(handle, ticket).await
    }

    fn class(&self, error: &E) -> crate::ErrorClass {
        (**self).class(error)
    }

    fn hint(&self, error: &E) -> Option<Duration> {
        (**self).hint(error)
    }

    fn estimate(&self) -> Option<u64> {
        (**self).estimate()
    }

    fn used(&self, value: &T) -> Option<u64> {
        (**self).used(value)
    }
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
        self.attempt_timed(handle, admitted, deadline).await.0
    }

    const TIMED: bool = true;

    /// One [`Attempt`](attempt::Attempt), timed by itself (its start and end clock reads
    /// serve the provider's duration histogram and the trace alike).
    async fn attempt_timed(
        &mut self,
        handle: &ProviderHandle,
        admitted: Admitted<&ProviderHandle>,
        deadline: Option<Instant>,
    ) -> (Ended<T, E>, Option<Duration>) {
        let call = (self.op)(handle.id().clone());
        let mut running = std::pin::pin!(attempt::Attempt::new(admitted, deadline, call, true));
        let classify = &self.classify;
        std::future::poll_fn(|cx| running.as_mut().poll_attempt(cx, classify)).await
    }

    /// A plain [`Attempt`](attempt::Attempt), timed for the trace by the cheap clock.
    async fn attempt_plain(
        &mut self,
        handle: &ProviderHandle,
        ticket: Ticket<'_>,
    ) -> (Ended<T, E>, Option<Duration>) {
        let call = (self.op)(handle.id().clone());
        let mut running = std::pin::pin!(attempt::Attempt::plain(ticket, call, true));
        let classify = &self.classify;
        std::future::poll_fn(|cx| running.as_mut().poll_attempt(cx, classify)).await
    }
}

/// The members of a route in the order one call tries them: the router's published order,
/// with the preferred (not demoted) members re-sorted per call by the per-call policies:
/// those that can take calls now (closed or half-open) first, by load or latency, then the
/// others in order. On the stack for routes of up to [`INLINE_MEMBERS`] members.
fn call_order(view: &RouteView) -> Order {
    let all = 0..view.members.len() as u16;
    let score: fn(&ProviderHandle) -> f64 = match view.config.policy {
        Policy::LeastLoaded => |h| h.shared.load(),
        Policy::LowestLatency => |h| h.shared.latency().map_or(0.0, |d| d.as_secs_f64()),
        // The published order as it is: nothing to build.
        _ => return Order::Published(all),
    };
    let mut order: SmallVec<[u16; INLINE_MEMBERS]> = all.collect();
    let head = &mut order[..view.preferred];
    let mut scored: SmallVec<[(bool, f64, u16); INLINE_MEMBERS]> = head
        .iter()
        .map(|&i| {
            let handle = &view.members[usize::from(i)].handle;
            let can_call = matches!(
                handle.state(),
                CircuitState::Closed | CircuitState::HalfOpen
            );
            (!can_call, if can_call { score(handle) } else { 0.0 }, i)
        })
        .collect();
    // Stable: ties keep the published order.
    scored.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    for (slot, (_, _, i)) in head.iter_mut().zip(scored) {
        *slot = i;
    }
    Order::Sorted(order.into_iter())
}

/// The order one call tries the members in: [`call_order`], with the slow-start ramps
/// applied (`router::ramp`) when a preferred member has one.
#[inline]
pub(super) fn ordered(view: &RouteView) -> Order {
    if view.as_published {
        // The published order as it is: nothing to build.
        return Order::Published(0..view.members.len() as u16);
    }
    let order = call_order(view);
    let preferred = &view.members[..view.preferred.min(view.members.len())];
    if preferred.iter().all(|m| m.ramp.is_none()) {
        return order;
    }
    let order: SmallVec<[u16; INLINE_MEMBERS]> = order.collect();
    Order::Sorted(super::ramp::apply(view, order).into_iter())
}

/// The member indices in the order one call tries them.
pub(super) enum Order {
    /// The router's published order.
    Published(std::ops::Range<u16>),
    /// Re-sorted for this call by a per-call policy.
    Sorted(smallvec::IntoIter<[u16; INLINE_MEMBERS]>),
}

impl Iterator for Order {
    type Item = u16;

    #[inline]
    fn next(&mut self) -> Option<u16> {
        match self {
            Order::Published(range) => range.next(),
            Order::Sorted(sorted) => sorted.next(),
        }
    }
}

/// Routes of up to this many providers are ordered on the stack.
const INLINE_MEMBERS: usize = 8;

/// The trace result of an attempt outcome, for the route metrics.
pub(super) fn result_of(outcome: &AttemptOutcome) -> AttemptResult {
    match outcome {
        AttemptOutcome::Succeeded => AttemptResult::Success,
        AttemptOutcome::Failed(v) if v.is_failure() => AttemptResult::Failure,
        AttemptOutcome::Failed(_) => AttemptResult::Ignored,
        AttemptOutcome::TimedOut(_) => AttemptResult::Timeout,
        AttemptOutcome::DeadlineExceeded => AttemptResult::Deadline,
        AttemptOutcome::SkippedOpen { .. } => AttemptResult::SkippedOpen,
        AttemptOutcome::SkippedIsolated => AttemptResult::SkippedIsolated,
        AttemptOutcome::SkippedSaturated => AttemptResult::SkippedSaturated,
        AttemptOutcome::SkippedBudget { .. } => AttemptResult::SkippedBudget,
    }
}

/// Where a routed call's failover loop starts: from scratch ([`Resume::default`]), or where
/// the fast first pass (`router::fast`) left it.
pub(crate) struct Resume<E> {
    /// The trace so far.
    pub(crate) attempts: Attempts,
    /// The member index of the first provider considered.
    pub(crate) first: Option<usize>,
    /// The members (bit `i` for member `i`) the fast first pass considered already: this
    /// loop's first pass skips them.
    pub(crate) considered: u64,
    /// The earliest `retry_after` among the members it skipped.
    pub(crate) earliest: Option<Duration>,
    /// A plain attempt of the first pass at member `index` that failed: its admission
    /// (unbound, see `Ticket::unbind`), clock, error and verdict, to be reported and settled
    /// here.
    pub(crate) failed: Option<Failed<E>>,
}

impl<E> Default for Resume<E> {
    fn default() -> Self {
        Resume {
            attempts: Attempts::new(),
            first: None,
            considered: 0,
            earliest: None,
            failed: None,
        }
    }
}

/// A plain attempt that failed in the fast first pass, not yet reported.
pub(crate) struct Failed<E> {
    pub(crate) index: usize,
    pub(crate) unbound: u64,
    pub(crate) clock: attempt::PlainClock,
    pub(crate) error: E,
    pub(crate) verdict: Verdict,
}

/// What the failover loop keeps across attempts.
struct Failover<E> {
    first: Option<usize>,
    last: Option<CallError<E>>,
    /// After a context-window error: the window it did not fit, and the error.
    too_long: Option<(u64, E)>,
    /// Whether a larger window was called after it, and failed (the provider's fault).
    failed_larger: bool,
}

impl<E> Failover<E> {
    /// Takes in the step of an attempt at member `index`: the routed call's answer when it
    /// ends the call, `None` to go on with the next member.
    fn step<T>(
        &mut self,
        step: Step<T, E>,
        view: &RouteView,
        index: usize,
        attempts: &mut Attempts,
    ) -> Option<Result<Routed<T>, RouteError<E>>> {
        match step {
            Step::Served(value) => Some(Ok(served(
                view,
                self.first,
                index,
                value,
                std::mem::replace(attempts, Attempts::new()),
            ))),
            Step::Next(error) => {
                self.failed_larger |= self.too_long.is_some();
                self.last = Some(error);
                None
            }
            Step::TooLong(error) => {
                let window = retry::max_context(&view.members[index].handle).unwrap_or(0);
                self.too_long = Some((window, error));
                None
            }
            step => Some(step.end(view, std::mem::replace(attempts, Attempts::new()))),
        }
    }
}

/// Tries the route's providers in order until one serves. `attempter` is given each
/// admitted provider, its admission and the route's deadline. `resume`: where the fast
/// first pass left off (or from scratch).
///
/// A first pass tries every member without waiting. When none could take the call because
/// every one that was not open was saturated, the call waits in the bulkhead queue of the
/// first saturated member that has one, bounded by that queue's timeout and the route's
/// deadline. When every member is open, [`AllOpen::Wait`] waits for the first to become
/// due.
pub(crate) async fn run<T, E, A>(
    view: &RouteView,
    mut attempter: A,
    resume: Resume<E>,
) -> Result<Routed<T>, RouteError<E>>
where
    A: Attempter<T, E>,
{
    let route_deadline = view.config.deadline;
    let deadline = route_deadline.map(|d| Instant::now() + d);
    let deadline_exceeded = |attempts: Attempts| RouteError::DeadlineExceeded {
        deadline: route_deadline.unwrap_or_default(),
        attempts: attempts.into_vec(),
    };
    let Resume {
        mut attempts,
        first,
        mut considered,
        earliest: mut resumed_earliest,
        mut failed,
        ..
    } = resume;
    let mut failover = Failover {
        first,
        last: None,
        too_long: None,
        failed_larger: false,
    };
    let mut waited = Duration::ZERO;
    loop {
        let mut earliest: Option<Duration> = resumed_earliest.take();
        // The first saturated member with a queue: where the call waits if nothing else can
        // take it.
        let mut queue_at: Option<usize> = None;
        let mut called = false;
        // Members skipped because they are being removed (or the supervisor shuts down).
        let mut retiring = 0;
        if let Some(failed) = failed.take() {
            called = true;
            let index = failed.index;
            let step = attempt(
                view,
                index,
                Admission::Failed(failed),
                deadline,
                &mut attempter,
                &mut attempts,
            )
            .await;
            if let Some(end) = failover.step(step, view, index, &mut attempts) {
                return end;
            }
        }
        // The first pass goes on where the fast pass left it; later passes consider all.
        let skipped = std::mem::take(&mut considered);
        for index in ordered(view) {
            let index = usize::from(index);
            if index < 64 && skipped & (1 << index) != 0 {
                continue;
            }
            let member = &view.members[index];
            let handle = &member.handle;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(deadline_exceeded(attempts));
            }
            if let Some((window, _)) = &failover.too_long {
                // Only a larger context window can serve what did not fit.
                if retry::max_context(handle).is_none_or(|m| m <= *window) {
                    continue;
                }
            }
            failover.first.get_or_insert(index);
            let skip = |attempts: &mut Attempts, outcome: AttemptOutcome| {
                member.counters.add(result_of(&outcome));
                attempts.push(Attempt {
                    provider: handle.id().clone(),
                    outcome,
                    elapsed: Duration::ZERO,
                });
            };
            // The plain path: a closed circuit that needs nothing but the counters, and no
            // deadline to bound the attempt by.
            let admission = match deadline.is_none().then(|| handle.admit_plain()).flatten() {
                Some(ticket) => Admission::Plain(ticket),
                None => {
                    let admitted = match handle.admit_now() {
                        Some(decided) => decided,
                        // A bulkhead or a trial admission by the actor: boxed, off the
                        // common path.
                        None => Box::pin(handle.admit(false)).await,
                    };
                    let admitted = match admitted {
                        Ok(admitted) => admitted,
                        Err(Reject::Circuit(r)) if r.state == CircuitState::Isolated => {
                            skip(&mut attempts, AttemptOutcome::SkippedIsolated);
                            continue;
                        }
                        Err(Reject::Circuit(r)) => {
                            let retry_after = r.retry_after.unwrap_or_default();
                            earliest = Some(earliest.map_or(retry_after, |e| e.min(retry_after)));
                            skip(&mut attempts, AttemptOutcome::SkippedOpen { retry_after });
                            continue;
                        }
                        Err(Reject::Bulkhead(Denied::Full | Denied::Timeout(_))) => {
                            if queue_at.is_none() && handle.has_queue() {
                                queue_at = Some(index);
                            }
                            skip(&mut attempts, AttemptOutcome::SkippedSaturated);
                            continue;
                        }
                        // This provider is being removed (or the supervisor shuts down),
                        // or its actor stopped for good: skip it (its fault stays its
                        // own).
                        Err(Reject::Bulkhead(Denied::Closed) | Reject::ShuttingDown)
                            if handle.is_retiring() || !handle.is_alive() =>
                        {
                            retiring += usize::from(handle.is_retiring());
                            continue;
                        }
                        Err(Reject::Bulkhead(Denied::Closed) | Reject::ShuttingDown) => {
                            return Err(RouteError::ShuttingDown {
                                attempts: attempts.into_vec(),
                            });
                        }
                    };
                    match retry::reserve(handle, attempter.estimate()) {
                        Ok(reserved) => Admission::General(admitted, reserved),
                        Err(over) => {
                            admitted.withdraw();
                            let retry_after = over.retry_after;
                            earliest = Some(earliest.map_or(retry_after, |e| e.min(retry_after)));
                            skip(&mut attempts, AttemptOutcome::SkippedBudget { retry_after });
                            continue;
                        }
                    }
                }
            };
            called = true;
            let step = attempt(
                view,
                index,
                admission,
                deadline,
                &mut attempter,
                &mut attempts,
            )
            .await;
            if let Some(end) = failover.step(step, view, index, &mut attempts) {
                return end;
            }
        }
        if let Some((_, error)) = failover.too_long.take_if(|_| !failover.failed_larger) {
            // No larger window could serve it: the caller's request does not fit.
            return Err(RouteError::NotRetryable {
                error,
                attempts: attempts.into_vec(),
            });
        }
        if !called && retiring == view.members.len() && retiring > 0 {
            return Err(RouteError::ShuttingDown {
                attempts: attempts.into_vec(),
            });
        }
        if let Some(last) = failover.last.take() {
            return Err(RouteError::Exhausted {
                last,
                attempts: attempts.into_vec(),
            });
        }
        if !called {
            if let Some(index) = queue_at {
                // Everything that could serve was saturated: wait in the best one's queue.
                let member = &view.members[index];
                // Boxed: the slow path's futures stay out of the common case's.
                let queue = Box::pin(member.handle.admit(true));
                let queued = match deadline {
                    Some(d) => Box::pin(tokio::time::timeout_at(d, queue)).await.ok(),
                    None => Some(queue.await),
                };
                match queued {
                    None => return Err(deadline_exceeded(attempts)),
                    Some(Ok(admitted)) => {
                        let reserved = match retry::reserve(&member.handle, attempter.estimate()) {
                            Ok(reserved) => reserved,
                            Err(over) => {
                                admitted.withdraw();
                                return Err(RouteError::AllUnavailable {
                                    retry_after: Some(over.retry_after),
                                    attempts: attempts.into_vec(),
                                });
                            }
                        };
                        let step = attempt(
                            view,
                            index,
                            Admission::General(admitted, reserved),
                            deadline,
                            &mut attempter,
                            &mut attempts,
                        )
                        .await;
                        // The queued member is the last chance: any step ends the call.
                        return match step {
                            Step::Served(value) => {
                                Ok(served(view, failover.first, index, value, attempts))
                            }
                            step => step.end(view, attempts),
                        };
                    }
                    // Waited the queue timeout, or the circuit changed meanwhile: counted as
                    // a saturated skip, then as unavailable below.
                    Some(Err(_)) => {
                        member.counters.add(AttemptResult::SkippedSaturated);
                        attempts.push(Attempt {
                            provider: member.handle.id().clone(),
                            outcome: AttemptOutcome::SkippedSaturated,
                            elapsed: Duration::ZERO,
                        });
                    }
                }
            }
        }
        let pause = match (view.config.when_all_open, earliest) {
            (AllOpen::Wait(max), Some(due)) if waited + due <= max => due.max(MIN_WAIT),
            _ => {
                return Err(RouteError::AllUnavailable {
                    retry_after: earliest,
                    attempts: attempts.into_vec(),
                })
            }
        };
        if let Some(d) = deadline {
            if Instant::now() + pause > d {
                Box::pin(tokio::time::sleep_until(d)).await;
                return Err(deadline_exceeded(attempts));
            }
        }
        Box::pin(tokio::time::sleep(pause)).await;
        waited += pause;
    }
}

/// What the loop does after an attempt.
enum Step<T, E> {
    Served(T),
    /// Failed over: go on with the next member.
    Next(CallError<E>),
    /// The caller's fault: the routed call ends with it.
    NotRetryable(E),
    /// The request did not fit the provider's context window: go on with larger ones.
    TooLong(E),
    /// The route's deadline passed during the attempt.
    Deadline,
}

impl<T, E> Step<T, E> {
    /// The routed call's end for a step that ends it.
    fn end(self, view: &RouteView, attempts: Attempts) -> Result<Routed<T>, RouteError<E>>
    where
        T: Sized,
    {
        let attempts = attempts.into_vec();
        Err(match self {
            Step::NotRetryable(error) | Step::TooLong(error) => {
                RouteError::NotRetryable { error, attempts }
            }
            Step::Next(last) => RouteError::Exhausted { last, attempts },
            Step::Deadline | Step::Served(_) => RouteError::DeadlineExceeded {
                deadline: view.config.deadline.unwrap_or_default(),
                attempts,
            },
        })
    }
}

/// How a member was admitted for its first try.
enum Admission<'h, E> {
    /// On the plain path (no deadline, no budget).
    Plain(Ticket<'h>),
    /// On the plain path, by the fast first pass, whose try failed (not yet reported).
    Failed(Failed<E>),
    /// By the general path, with its budget reservation if it has a budget.
    General(
        Admitted<&'h ProviderHandle>,
        Option<crate::budget::Reservation<'h>>,
    ),
}

/// One attempt at an admitted member, recorded in the trace and the route's counters.
async fn attempt<'h, T, E, A>(
    view: &'h RouteView,
    index: usize,
    admission: Admission<'h, E>,
    deadline: Option<Instant>,
    attempter: &mut A,
    attempts: &mut Attempts,
) -> Step<T, E>
where
    A: Attempter<T, E>,
{
    let member = &view.members[index];
    let handle = &member.handle;
    let provider = handle.id();
    // The fast first pass deposited for the try it made.
    if !matches!(admission, Admission::Failed(_)) {
        retry::deposit(view, handle);
    }
    let mut admission = Some(admission);
    let mut reserved = None;
    let mut tries = 1;
    loop {
        // Read only if the attempter does not time the attempt itself.
        let t0 = (!A::TIMED).then(Instant::now);
        let traced = tracing::level_enabled!(tracing::Level::DEBUG)
            .then(|| tracing::debug_span!("fusebox.attempt", provider = %provider))
            .filter(|span| !span.is_disabled());
        let (ended, elapsed) = match admission.take() {
            Some(Admission::Plain(ticket)) => match traced {
                None => attempter.attempt_plain(handle, ticket).await,
                Some(span) => {
                    attempter
                        .attempt_plain(handle, ticket)
                        .instrument(span)
                        .await
                }
            },
            Some(Admission::General(admitted, reservation)) => {
                reserved = reservation;
                match traced {
                    None => attempter.attempt_timed(handle, admitted, deadline).await,
                    Some(span) => {
                        attempter
                            .attempt_timed(handle, admitted, deadline)
                            .instrument(span)
                            .await
                    }
                }
            }
            Some(Admission::Failed(failed)) => {
                let ticket = Ticket::rebind(handle, failed.unbound);
                attempt::report_plain_failure(ticket, failed.clock, failed.error, failed.verdict)
                    .await
            }
            None => unreachable!("every try is admitted"),
        };
        let elapsed = elapsed
            .or_else(|| t0.map(|t| t.elapsed()))
            .unwrap_or_default();
        let mut record = |outcome: AttemptOutcome| {
            member.counters.add(result_of(&outcome));
            attempts.push(Attempt {
                provider: provider.clone(),
                outcome,
                elapsed,
            });
        };
        let (verdict, hint) = match &ended {
            Ended::Failed(verdict, error) => (*verdict, attempter.hint(error)),
            _ => (Verdict::Failure, None),
        };
        let failed = match ended {
            Ended::Served(value) => {
                record(AttemptOutcome::Succeeded);
                if let (Some(reserved), Some(used)) = (reserved, attempter.used(&value)) {
                    reserved.settle(used);
                }
                return Step::Served(value);
            }
            Ended::Failed(verdict, error) => {
                record(AttemptOutcome::Failed(verdict));
                if !verdict.is_failure() {
                    // The caller's fault (or not the provider's): another provider would refuse
                    // the same request, unless it has a larger context window (or the route
                    // sends content-policy refusals elsewhere).
                    return match attempter.class(&error) {
                        crate::ErrorClass::ContextWindow => Step::TooLong(error),
                        _ => Step::NotRetryable(error),
                    };
                }
                CallError::Inner(error)
            }
            Ended::TimedOut(after) => {
                record(AttemptOutcome::TimedOut(after));
                CallError::Timeout {
                    provider: provider.clone(),
                    after,
                }
            }
            Ended::Deadline => {
                record(AttemptOutcome::DeadlineExceeded);
                return Step::Deadline;
            }
        };
        // A failed attempt's reservation stands: it reported no usage.
        match retry::again(
            view,
            handle,
            tries,
            verdict,
            hint,
            attempter.estimate(),
            deadline,
        )
        .await
        {
            Some((readmitted, rereserved)) => {
                tries += 1;
                admission = Some(Admission::General(readmitted, rereserved));
            }
            None => return Step::Next(failed),
        }
    }
}

/// The answer of a routed call served by member `index`, counted as a fallback when the
/// first member considered was another.
#[inline(always)]
pub(super) fn served<T>(
    view: &RouteView,
    first: Option<usize>,
    index: usize,
    value: T,
    attempts: Attempts,
) -> Routed<T> {
    if let Some(first) = first.filter(|&f| f != index) {
        let n = view.members.len();
        view.fallbacks[first * n + index].fetch_add(1, Relaxed);
    }
    Routed {
        value,
        provider: view.members[index].handle.id().clone(),
        attempts,
    }
}
