//! The fast first pass of a routed call: a hand-written future for the common case, a route
//! walked in this call's order (the router's published order, re-sorted by a per-call
//! policy or a slow-start ramp as the failover loop would) whose first member that can take
//! the call is admitted on the plain path (see `ProviderHandle::admit_plain`), or, when a
//! bulkhead is all it needs besides, with one of its free slots (`admit_slotted`), held in
//! the pass's state until the operation ends.
//!
//! Members rejected without their actor (open, isolated, half-open with every trial slot
//! taken) are skipped into the trace as the failover loop would skip them; the first member
//! admitted on the plain path is called, and its success is the routed call's answer. Any
//! other turn (a member that needs the general admission, a failure to fail over from, every
//! member skipped, a route with a deadline, debug tracing on) hands what the pass has done,
//! and the members it considered, to the failover loop ([`Resume`]), which goes on from there:
//! the pass never decides differently from the loop, it only gets there with less
//! machinery. The hand-over boxes the loop's future: one allocation, for a call that takes
//! the loop.
//!
//! Within its first poll the pass reads the table through its thread's cache
//! (`Published::with`: one load of the table's version, no read-modify-write); it keeps the
//! table (an `Arc` clone) only if the operation is pending, and holds the admission of the
//! member it calls unbound from its handle (`Ticket::unbind`), since the handle lives in
//! that table: it is looked up again (by the route's name, in the same table) whenever it
//! is needed across polls. Dropped mid-call, the future gives that admission back
//! ([`PinnedDrop`](pin_project_lite)); a panic in the operation's first poll does too.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::Guard;
use pin_project_lite::pin_project;
use smallvec::SmallVec;

use super::failover::{self, Attempter, Calls, Failed, Resume};
use super::retry::{self, Classified};
use super::table::{AttemptResult, RouteView, Table, Tables};
use super::{Attempt, AttemptOutcome, Attempts, Routed};
use crate::attempt::{self as one, PlainClock};
use crate::provider::{Reject, Ticket};
use crate::{CircuitState, Classify, ProviderId, RouteError, Verdict};

/// An attempter whose attempts the fast pass can run itself: an operation called with each
/// provider's id, and a verdict on its errors.
pub(crate) trait PlainAttempter<T, E>: Attempter<T, E> {
    /// The operation's future.
    type Fut: Future<Output = Result<T, E>>;

    /// Calls the operation for `provider`.
    fn start(&mut self, provider: ProviderId) -> Self::Fut;

    /// What an error says about the provider.
    fn verdict(&self, error: &E) -> Verdict;
}

impl<T, E, C, F, Fut> PlainAttempter<T, E> for Calls<C, F>
where
    C: Fn(&E) -> Verdict,
    F: FnMut(ProviderId) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    type Fut = Fut;

    #[inline(always)]
    fn start(&mut self, provider: ProviderId) -> Fut {
        (self.op)(provider)
    }

    fn verdict(&self, error: &E) -> Verdict {
        (self.classify)(error)
    }
}

impl<T, E: Classify, A: PlainAttempter<T, E>> PlainAttempter<T, E> for Classified<A> {
    type Fut = A::Fut;

    #[inline(always)]
    fn start(&mut self, provider: ProviderId) -> A::Fut {
        self.0.start(provider)
    }

    fn verdict(&self, error: &E) -> Verdict {
        self.0.verdict(error)
    }
}

pin_project! {
    /// A routed call: the fast first pass, or the failover loop it handed over to.
    #[project = RoutingProj]
    pub(crate) struct Routing<'a, T, E, A, Fut, Mk, G> {
        name: &'a str,
        #[pin]
        stage: Stage<Fut, G>,
        // What the pass hands over (taken then).
        attempter: Option<A>,
        general: Option<Mk>,
        // What the walk has done so far.
        walked: Walked,
        tables: &'a Tables,
        // The table the call reads, once it must keep it past a poll (the operation it calls
        // is pending): within its first poll it borrows the thread's cache. Declared after
        // `stage`, so dropped after it: the stage's admission is given back while its handle
        // is still alive.
        table: Option<Arc<Table>>,
        _answer: PhantomData<fn() -> (T, E)>,
    }

    impl<'a, T, E, A, Fut, Mk, G> PinnedDrop for Routing<'a, T, E, A, Fut, Mk, G> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if let StageProj::Plain { .. } = this.stage.as_mut().project() {
                // The operation's future is dropped first, then its admission is given back
                // (as a cancellation), then its bulkhead slot.
                if let StageOwn::Plain {
                    index,
                    unbound,
                    slotted,
                    ..
                } = this.stage.as_mut().project_replace(Stage::Done)
                {
                    if let Some(view) = this.table.as_ref().and_then(|t| t.routes.get(*this.name))
                    {
                        let handle = &view.members[index as usize].handle;
                        drop(Ticket::rebind(handle, unbound));
                        if slotted {
                            handle.give_back_slot();
                        }
                    }
                }
            }
        }
    }
}

pin_project! {
    #[project = StageProj]
    #[project_replace = StageOwn]
    enum Stage<Fut, G> {
        Start,
        // Calling member `index`, admitted on the plain path (holding a slot of its
        // bulkhead, if that is all it needs besides).
        Plain {
            #[pin]
            fut: Fut,
            unbound: u64,
            clock: PlainClock,
            index: u32,
            // Whether it holds a slot of the member's bulkhead (`admit_slotted`).
            slotted: bool,
        },
        // The failover loop, from where the pass left it: boxed, so that the fast pass's
        // future stays small (it is moved when the call is made, and its stage replaced as
        // it goes), at one allocation for a call that hands over.
        General { fut: Pin<Box<G>> },
        Done,
    }
}

impl<'a, T, E, A, Mk, G> Routing<'a, T, E, A, A::Fut, Mk, G>
where
    A: PlainAttempter<T, E>,
    Mk: FnOnce(A, Guard<Arc<Table>>, Resume<E>) -> G,
    G: Future<Output = Result<Routed<T>, RouteError<E>>>,
{
    /// A routed call on route `name` of the tables published in `tables`. `general` starts
    /// the failover loop from a [`Resume`].
    #[inline(always)]
    pub(crate) fn new(name: &'a str, tables: &'a Tables, attempter: A, general: Mk) -> Self {
        Routing {
            name,
            stage: Stage::Start,
            attempter: Some(attempter),
            general: Some(general),
            walked: Walked::default(),
            tables,
            table: None,
            _answer: PhantomData,
        }
    }
}

/// What a walk has done: the members it skipped, the first member it considered, the
/// earliest `retry_after` it skipped, and the members it considered (bit `i` for member `i`).
#[derive(Default)]
struct Walked {
    skipped: Skipped,
    first: Option<usize>,
    earliest: Option<Duration>,
    considered: u64,
}

impl Walked {
    /// Where the failover loop goes on from, with the attempt that `failed` (the skips
    /// traced at the members of `view`, the view they were walked in).
    fn resume<E>(&self, view: &RouteView, failed: Option<Failed<E>>) -> Resume<E> {
        Resume {
            attempts: self.skipped.trace(view),
            first: self.first,
            considered: self.considered,
            earliest: self.earliest,
            failed,
        }
    }
}

/// The members a walk skipped, in order, held compactly while the call runs (the answer's
/// trace is built from them once, with the success or on the hand-over): two inline, as the
/// trace holds two.
#[derive(Default)]
struct Skipped(SmallVec<[Skip; 2]>);

/// A member skipped: its index, and its `retry_after` in nanoseconds (`ISOLATED` for an
/// isolated one).
#[derive(Clone, Copy)]
struct Skip {
    index: u32,
    retry_after: u64,
}

impl Skip {
    const ISOLATED: u64 = u64::MAX;

    fn isolated(index: usize) -> Self {
        Skip {
            // A walked route has at most 64 members.
            index: index as u32,
            retry_after: Self::ISOLATED,
        }
    }

    fn open(index: usize, retry_after: Duration) -> Self {
        Skip {
            index: index as u32,
            // Below `ISOLATED` for 584 years.
            retry_after: u64::try_from(retry_after.as_nanos())
                .unwrap_or(Self::ISOLATED - 1)
                .min(Self::ISOLATED - 1),
        }
    }

    fn outcome(self) -> AttemptOutcome {
        match self.retry_after {
            Self::ISOLATED => AttemptOutcome::SkippedIsolated,
            nanos => AttemptOutcome::SkippedOpen {
                retry_after: Duration::from_nanos(nanos),
            },
        }
    }
}

impl Skipped {
    /// The trace of the skips, at the members of `view` (the view they were walked in).
    #[inline(always)]
    fn trace(&self, view: &RouteView) -> Attempts {
        let mut attempts = Attempts::new();
        for skip in &self.0 {
            attempts.push(Attempt {
                provider: view.members[skip.index as usize].handle.id().clone(),
                outcome: skip.outcome(),
                elapsed: Duration::ZERO,
            });
        }
        attempts
    }
}

/// Whether the fast pass may walk this route: no deadline bounds its attempts, no debug
/// span is wanted, and its members fit the pass's bit set.
#[inline]
fn walkable(view: &RouteView) -> bool {
    view.config.deadline.is_none()
        && view.members.len() <= 64
        && !tracing::level_enabled!(tracing::Level::DEBUG)
}

/// Walks the route's members in this call's order (see `failover::ordered`), marking each
/// in `walked.considered`: skips those rejected without their actor into the trace, and stops at
/// the first admitted on the plain path (returned, with its ticket), or at one the failover
/// loop must decide (left unmarked; `None`). A route the pass may not walk goes to the loop
/// from scratch.
#[inline(always)]
fn walk<'v>(view: &'v RouteView, walked: &mut Walked) -> Option<(usize, Ticket<'v>, bool)> {
    if !walkable(view) {
        return None;
    }
    if view.as_published {
        // The common case, without the order's enum.
        let order = 0..view.members.len();
        return walk_in(order, view, walked);
    }
    let order = failover::ordered(view).map(usize::from);
    walk_in(order, view, walked)
}

/// [`walk`] in `order`.
#[inline(always)]
fn walk_in<'v>(
    order: impl Iterator<Item = usize>,
    view: &'v RouteView,
    walked: &mut Walked,
) -> Option<(usize, Ticket<'v>, bool)> {
    for index in order {
        let member = &view.members[index];
        let handle = &member.handle;
        walked.first.get_or_insert(index);
        if let Some(ticket) = handle.admit_plain() {
            walked.considered |= 1 << index;
            return Some((index, ticket, false));
        }
        // A bulkhead alone keeps it off the plain path: admitted with a free slot.
        if let Some(ticket) = handle.admit_slotted() {
            walked.considered |= 1 << index;
            return Some((index, ticket, true));
        }
        let skip = match handle.reject_early() {
            Some(Reject::Circuit(r)) if r.state == CircuitState::Isolated => Skip::isolated(index),
            Some(Reject::Circuit(r)) => {
                let retry_after = r.retry_after.unwrap_or_default();
                let earliest = &mut walked.earliest;
                *earliest = Some(earliest.map_or(retry_after, |e| e.min(retry_after)));
                Skip::open(index, retry_after)
            }
            // Anything else is the failover loop's to decide, from this member.
            _ => return None,
        };
        walked.considered |= 1 << index;
        member.counters.add(failover::result_of(&skip.outcome()));
        walked.skipped.0.push(skip);
    }
    // Every member skipped: the loop decides what an unavailable route answers (or waits,
    // under `AllOpen::Wait`).
    None
}

impl<'a, T, E, A, Mk, G> Future for Routing<'a, T, E, A, A::Fut, Mk, G>
where
    A: PlainAttempter<T, E>,
    Mk: FnOnce(A, Guard<Arc<Table>>, Resume<E>) -> G,
    G: Future<Output = Result<Routed<T>, RouteError<E>>>,
{
    type Output = Result<Routed<T>, RouteError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        match this.stage.as_mut().project() {
            StageProj::General { fut } => fut.as_mut().poll(cx),
            StageProj::Done => panic!("routed call polled after it was ready"),
            StageProj::Start => {
                // Read for this poll through the thread's cache; cloned only if the call
                // must keep it.
                this.tables.with(|table| start(&mut this, table, cx))
            }
            StageProj::Plain { fut, clock, .. } => {
                let Poll::Ready(output) = one::poll_plain(fut, clock, cx) else {
                    return Poll::Pending;
                };
                // The operation's future is dropped here, before the outcome is recorded,
                // and its bulkhead slot is free again.
                let StageOwn::Plain {
                    unbound,
                    clock,
                    index,
                    slotted,
                    ..
                } = this.stage.as_mut().project_replace(Stage::Done)
                else {
                    unreachable!("the call was plain")
                };
                let table = this.table.take().expect("kept while the call was pending");
                let view = table.routes.get(*this.name).expect("the same table");
                let index = index as usize;
                if slotted {
                    view.members[index].handle.give_back_slot();
                }
                let ended = Ended {
                    output,
                    index,
                    unbound,
                    clock,
                };
                finish(&mut this, &table, view, ended, cx)
            }
        }
    }
}

/// Gives an unbound admission back when dropped: armed while an operation's first poll
/// runs, so that a panic in it cancels the call (a routed call's future cannot reach the
/// handle from its own drop before it keeps the table).
struct GiveBack<'h> {
    handle: &'h crate::ProviderHandle,
    unbound: u64,
    slotted: bool,
}

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        drop(Ticket::rebind(self.handle, self.unbound));
        if self.slotted {
            self.handle.give_back_slot();
        }
    }
}

/// How the plain attempt at member `index` ended.
struct Ended<T, E> {
    output: Result<T, E>,
    index: usize,
    unbound: u64,
    clock: PlainClock,
}

type Proj<'p, 'a, T, E, A, Fut, Mk, G> = RoutingProj<'p, 'a, T, E, A, Fut, Mk, G>;

/// The first poll: walks the route in `table` and calls the first member admitted on the
/// plain path, or hands over.
#[inline(always)]
fn start<'a, T, E, A, Mk, G>(
    this: &mut Proj<'_, 'a, T, E, A, A::Fut, Mk, G>,
    table: &Arc<Table>,
    cx: &mut Context<'_>,
) -> Poll<Result<Routed<T>, RouteError<E>>>
where
    A: PlainAttempter<T, E>,
    Mk: FnOnce(A, Guard<Arc<Table>>, Resume<E>) -> G,
    G: Future<Output = Result<Routed<T>, RouteError<E>>>,
{
    let Some(view) = table.routes.get(*this.name) else {
        return Poll::Ready(Err(RouteError::UnknownRoute((*this.name).to_owned())));
    };
    if let Some((index, ticket, slotted)) = walk(view, this.walked) {
        let handle = &view.members[index].handle;
        retry::deposit(view, handle);
        let clock = PlainClock::start(&ticket, true);
        let unbound = ticket.unbind();
        let attempter = this.attempter.as_mut().expect("held until the hand-over");
        this.stage.set(Stage::Plain {
            fut: attempter.start(handle.id().clone()),
            unbound,
            clock,
            // A walked route has at most 64 members.
            index: index as u32,
            slotted,
        });
        let StageProj::Plain { fut, clock, .. } = this.stage.as_mut().project() else {
            unreachable!("the call was just made plain")
        };
        // Until the table is kept (below), only this frame can give the admission back
        // if the operation panics.
        let unwinding = GiveBack {
            handle,
            unbound,
            slotted,
        };
        let polled = one::poll_plain(fut, clock, cx);
        std::mem::forget(unwinding);
        let Poll::Ready(output) = polled else {
            // Kept past this poll: the handle it called lives in it.
            *this.table = Some(table.clone());
            return Poll::Pending;
        };
        let StageOwn::Plain { unbound, clock, .. } =
            this.stage.as_mut().project_replace(Stage::Done)
        else {
            unreachable!("the call was plain")
        };
        if slotted {
            handle.give_back_slot();
        }
        let ended = Ended {
            output,
            index,
            unbound,
            clock,
        };
        return finish(this, table, view, ended, cx);
    }
    hand_over(this, view, table.clone(), None);
    this.stage.as_mut().poll_general(cx)
}

/// Records how the plain attempt ended: a success is the routed call's answer; a failure is
/// handed over to the failover loop, which reports it and goes on.
#[inline(always)]
fn finish<'a, T, E, A, Mk, G>(
    this: &mut Proj<'_, 'a, T, E, A, A::Fut, Mk, G>,
    table: &Arc<Table>,
    view: &RouteView,
    ended: Ended<T, E>,
    cx: &mut Context<'_>,
) -> Poll<Result<Routed<T>, RouteError<E>>>
where
    A: PlainAttempter<T, E>,
    Mk: FnOnce(A, Guard<Arc<Table>>, Resume<E>) -> G,
    G: Future<Output = Result<Routed<T>, RouteError<E>>>,
{
    let Ended {
        output,
        index,
        unbound,
        clock,
    } = ended;
    let member = &view.members[index];
    let ticket = Ticket::rebind(&member.handle, unbound);
    match output {
        Ok(value) => {
            let elapsed = one::plain_success(ticket, clock).unwrap_or_default();
            member.counters.add(AttemptResult::Success);
            let mut attempts = this.walked.skipped.trace(view);
            attempts.push(Attempt {
                provider: member.handle.id().clone(),
                outcome: AttemptOutcome::Succeeded,
                elapsed,
            });
            Poll::Ready(Ok(failover::served(
                view,
                this.walked.first,
                index,
                value,
                attempts,
            )))
        }
        Err(error) => {
            // Reported, traced and failed over from by the loop.
            let verdict = this
                .attempter
                .as_ref()
                .expect("held until the hand-over")
                .verdict(&error);
            let failed = Failed {
                index,
                unbound: ticket.unbind(),
                clock,
                verdict,
                error,
            };
            hand_over(this, view, table.clone(), Some(failed));
            this.stage.as_mut().poll_general(cx)
        }
    }
}

impl<Fut, G: Future> Stage<Fut, G> {
    /// Polls the failover loop the call was handed over to.
    fn poll_general(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<G::Output> {
        match self.project() {
            StageProj::General { fut } => fut.as_mut().poll(cx),
            _ => unreachable!("the call was handed over"),
        }
    }
}

/// Hands the call over to the failover loop: with the members the pass's walk considered,
/// its trace, and the attempt that `failed`.
#[inline(never)]
fn hand_over<'a, T, E, A, Fut, Mk, G>(
    this: &mut Proj<'_, 'a, T, E, A, Fut, Mk, G>,
    view: &RouteView,
    table: Arc<Table>,
    failed: Option<Failed<E>>,
) where
    Mk: FnOnce(A, Guard<Arc<Table>>, Resume<E>) -> G,
{
    let taken = "held until the hand-over";
    let resume = this.walked.resume(view, failed);
    let general = this.general.take().expect(taken);
    // An `Arc` wrapped as a guard (no reference count touched).
    let fut = general(
        this.attempter.take().expect(taken),
        Guard::from(table),
        resume,
    );
    this.stage.set(Stage::General { fut: Box::pin(fut) });
}
