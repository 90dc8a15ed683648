//! [`ProviderHandle`]: the call path, lock-free while the circuit is closed.

use std::borrow::Borrow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::future::Either;
use futures::Stream;
use kameo::actor::ActorRef;
use pin_project_lite::pin_project;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;
use tracing::Instrument;

use super::actor::{Admit, Control, Delivery, HeadroomNotice, ProviderActor, TrialPermit};
use super::counters::Count;
use super::fleet::TrialGate;
use super::shared::{Closing, Shared};
use super::status::ProviderStatus;
use crate::attempt::Attempt;
use crate::breaker::{CircuitState, Outcome, Permit, Rejection};
use crate::bulkhead::Denied;
use crate::stream::{self, GuardedStream};
use crate::{CallError, Classify, ProviderId, Verdict};

/// How often a caller retries an admission lost to a panic of the actor deciding it.
const ADMIT_RETRIES: u32 = 3;

/// A cheap, cloneable handle on one provider, for calling it without looking its name up.
///
/// Obtained from `Supervisor::provider`. A call on a closed circuit reads the published
/// gate, takes a bulkhead slot if one is configured, runs the operation in the caller's task
/// and, on success, bumps a striped counter: no lock and no message. Failures, half-open
/// trials and slow calls are reported to the provider's actor, and the call returns only
/// after the actor has decided (so when the call that trips the circuit returns, the circuit
/// is already open for the next one).
#[derive(Debug, Clone)]
pub struct ProviderHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) actor: ActorRef<ProviderActor>,
    pub(crate) closing: Arc<Closing>,
}

/// Why a call was not admitted.
#[derive(Debug)]
pub(crate) enum Reject {
    Circuit(Rejection),
    Bulkhead(Denied),
    ShuttingDown,
}

impl Reject {
    pub(crate) fn into_error<E>(self, provider: &ProviderId) -> CallError<E> {
        let provider = provider.clone();
        match self {
            Reject::Circuit(r) if r.state == CircuitState::Isolated => {
                CallError::Isolated { provider }
            }
            Reject::Circuit(r) => CallError::Open {
                provider,
                retry_after: r.retry_after.unwrap_or_default(),
                failure_count: r.failure_count,
                state: r.state,
            },
            Reject::Bulkhead(Denied::Full) => CallError::BulkheadFull { provider },
            Reject::Bulkhead(Denied::Timeout(waited)) => {
                CallError::QueueTimeout { provider, waited }
            }
            Reject::Bulkhead(Denied::Closed) | Reject::ShuttingDown => CallError::ShuttingDown,
        }
    }
}

/// An admitted call. Reports `Cancelled` and frees its slots if dropped before
/// [`finish`](Self::finish) (the caller's future was dropped, or it panicked). Holds its
/// provider by reference for calls, or owns a handle for streams that outlive the call.
#[derive(Debug)]
pub(crate) struct Admitted<H: Borrow<ProviderHandle>> {
    handle: H,
    permit: Option<Permit>,
    slot: Option<OwnedSemaphorePermit>,
}

impl<H: Borrow<ProviderHandle>> Admitted<H> {
    /// Records the call's outcome. When the actor must decide, returns the delivery to
    /// await for its decision to be published.
    #[inline]
    pub(crate) fn report(mut self, verdict: Verdict, elapsed: Duration) -> Option<Delivery> {
        // The common case first, small enough to inline: a success on the lock-free path,
        // with no slow-call threshold to check it against.
        if verdict == Verdict::Success {
            if let Some(permit) = &self.permit {
                let handle = self.handle.borrow();
                let shared = &handle.shared;
                if !permit.is_trial() && shared.slow_threshold.is_none() {
                    if !shared.counters.success(permit.epoch()) {
                        shared.counters.end(Count::StaleSuccesses);
                    }
                    self.permit = None;
                    handle.closing.call_finished();
                    return None;
                }
            }
        }
        self.report_slow(verdict, elapsed)
    }

    /// [`report`](Self::report) for everything but a plain success.
    #[inline(never)]
    fn report_slow(mut self, verdict: Verdict, elapsed: Duration) -> Option<Delivery> {
        let permit = self.permit.take()?;
        let handle = self.handle.borrow();
        let shared = &handle.shared;
        let slow = shared.slow_threshold.is_some_and(|t| elapsed > t);
        let is_trial = permit.is_trial();
        if is_trial || verdict.is_failure() || slow {
            if !is_trial {
                shared.counters.end(Count::Reported);
            }
            Delivery::send(
                &handle.actor,
                permit,
                Outcome::Completed { verdict, elapsed },
            )
        } else {
            if verdict == Verdict::Ignored {
                shared.counters.end(Count::FastIgnored);
            } else if !shared.counters.success(permit.epoch()) {
                // Admitted before the circuit last changed (or was reset): it must not end
                // the new epoch's run of failures.
                shared.counters.end(Count::StaleSuccesses);
            }
            handle.closing.call_finished();
            None
        }
    }

    /// Gives the admission back without having called the provider (its budget had no
    /// room): neither an outcome nor a cancellation.
    pub(crate) fn withdraw(mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let handle = self.handle.borrow();
        if permit.is_trial() {
            Delivery::spawn(&handle.actor, permit, Outcome::Cancelled);
        } else {
            handle.shared.counters.unadmit();
            handle.closing.call_finished();
        }
    }

    /// The provider this call was admitted to.
    pub(crate) fn handle(&self) -> &ProviderHandle {
        self.handle.borrow()
    }

    /// Whether the caller must time the call: for the slow-call threshold, the duration
    /// histogram, or a lowest-latency route's latency average.
    #[inline]
    pub(crate) fn needs_clock(&self) -> bool {
        let shared = &self.handle.borrow().shared;
        shared.timed || shared.latency_wanted()
    }

    /// The same admission, owning its provider handle.
    pub(crate) fn into_owned(mut self) -> Admitted<ProviderHandle> {
        Admitted {
            handle: self.handle.borrow().clone(),
            permit: self.permit.take(),
            slot: self.slot.take(),
        }
    }
}

/// A call admitted on the plain path ([`ProviderHandle::admit_plain`]): a closed circuit
/// without a bulkhead, budget, call timeout, slow-call threshold or latency average. Two
/// words; it reports `Cancelled` if dropped before [`succeed`](Self::succeed) or
/// [`into_admitted`](Self::into_admitted).
#[derive(Debug)]
pub(crate) struct Ticket<'a> {
    handle: &'a ProviderHandle,
    epoch: u64,
}

impl<'a> Ticket<'a> {
    /// The provider this call was admitted to.
    #[inline]
    pub(crate) fn handle(&self) -> &'a ProviderHandle {
        self.handle
    }

    /// Records a success: one compare-and-swap on this thread's stripe. `histogram`: the
    /// duration, if the provider records durations.
    #[inline(always)]
    pub(crate) fn succeed(self, histogram: Option<Duration>) {
        let (handle, epoch) = (self.handle, self.epoch);
        std::mem::forget(self);
        let shared = &*handle.shared;
        if let Some(elapsed) = histogram {
            shared.durations.record(false, elapsed);
        }
        if !shared.counters.success(epoch) {
            // Admitted before the circuit last changed (or was reset): it must not end the
            // new epoch's run of failures.
            shared.counters.end(Count::StaleSuccesses);
        }
        handle.closing.call_finished();
    }

    /// The ticket unbound from its handle, for a future that cannot hold the borrow across
    /// polls (a routed call holding the table its handles live in): the admission stands,
    /// and must be taken back with [`rebind`](Self::rebind) to the same handle to be
    /// settled or cancelled. Returns what `rebind` needs.
    #[inline(always)]
    pub(crate) fn unbind(self) -> u64 {
        let epoch = self.epoch;
        std::mem::forget(self);
        epoch
    }

    /// A ticket [`unbind`](Self::unbind) gave up, bound again to its handle.
    #[inline(always)]
    pub(crate) fn rebind(handle: &'a ProviderHandle, unbound: u64) -> Self {
        Ticket {
            handle,
            epoch: unbound,
        }
    }

    /// The same admission as a general one, to report anything but a success.
    pub(crate) fn into_admitted(self) -> Admitted<&'a ProviderHandle> {
        let (handle, epoch) = (self.handle, self.epoch);
        std::mem::forget(self);
        Admitted {
            handle,
            permit: Some(Permit::closed(epoch)),
            slot: None,
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.handle.shared.counters.end(Count::FastCancelled);
        self.handle.closing.call_finished();
    }
}

impl<H: Borrow<ProviderHandle>> Drop for Admitted<H> {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let handle = self.handle.borrow();
        if permit.is_trial() {
            Delivery::spawn(&handle.actor, permit, Outcome::Cancelled);
        } else {
            handle.shared.counters.end(Count::FastCancelled);
            handle.closing.call_finished();
        }
    }
}

impl ProviderHandle {
    /// The provider's name.
    pub fn id(&self) -> &ProviderId {
        &self.shared.id
    }

    /// Whether the provider's actor is running. After a supervisor shutdown, or when the
    /// actor kept panicking past its limit (more than 5 panics within 5 seconds), it is not,
    /// and every call fails with [`CallError::ShuttingDown`].
    pub fn is_alive(&self) -> bool {
        self.actor.is_alive()
    }

    /// Whether this provider has stopped taking calls for good (removed from the registry,
    /// replaced by a reload, or shut down).
    pub(crate) fn is_retiring(&self) -> bool {
        self.closing.is_closed()
    }

    /// Whether its bulkhead has a waiting queue.
    pub(crate) fn has_queue(&self) -> bool {
        self.shared.bulkhead.as_ref().is_some_and(|b| b.has_queue())
    }

    /// The circuit's outcome epoch as published to callers (monotonic).
    pub(crate) fn epoch(&self) -> u64 {
        self.shared.gate().epoch
    }

    /// The circuit's state as published to callers.
    pub fn state(&self) -> CircuitState {
        self.shared.gate().state
    }

    /// A snapshot of the provider: state, counts, thresholds, load.
    pub fn status(&self) -> ProviderStatus {
        ProviderStatus::read(&self.shared, self.actor.is_alive())
    }

    /// Records what one of the provider's responses said about its quotas, received now
    /// ([`tokio::time::Instant::now`]): it replaces the previous headroom (see
    /// [`HeadroomCell::record`](crate::headroom::HeadroomCell::record)), shows in
    /// [`ProviderStatus::headroom`] and the `fusebox_headroom_ratio` gauge, and is what the
    /// router reads. Lock-free; an empty headroom changes nothing.
    ///
    /// `fusebox::http::record_headroom` (feature `reqwest`) parses a response's rate-limit
    /// headers and calls this.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), fusebox::ConfigError> {
    /// use fusebox::headroom::{Headroom, Quota};
    /// use fusebox::{Provider, Supervisor};
    ///
    /// let fuse = Supervisor::builder().provider(Provider::new("openai")).build().await?;
    /// let openai = fuse.provider("openai").unwrap();
    /// let mut headroom = Headroom::default();
    /// headroom.requests = Some(Quota::new(3).with_limit(100));
    /// openai.record_headroom(headroom);
    /// assert_eq!(openai.status().headroom.and_then(|h| h.ratio()), Some(0.03));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A quota with nothing left (`remaining = 0`) and a reset opens the circuit until that
    /// reset, as a rate limit (no failure counted): the provider is not sent a request only
    /// to collect its 429. The provider's actor decides it as soon as it handles the notice.
    pub fn record_headroom(&self, headroom: crate::headroom::Headroom) {
        let now = Instant::now();
        let cell = &self.shared.headroom;
        let before = cell.ratio(now);
        if let Some(budget) = &self.shared.budget {
            budget.learn(
                headroom.requests.and_then(|q| q.limit),
                headroom.tokens.and_then(|q| q.limit),
            );
        }
        cell.record(headroom, now);
        let exhausted_until = cell.exhausted_until(now);
        // Crossing the router's line, either way, re-ranks now (not at the next sample).
        let low = |r: Option<f64>| r.is_some_and(|r| r < crate::router::LOW_HEADROOM);
        let recovered = |r: Option<f64>| r.is_none_or(|r| r >= crate::router::HEADROOM_RECOVERED);
        let after = cell.ratio(now);
        let crossed = (low(after) && !low(before)) || (recovered(after) && !recovered(before));
        if exhausted_until.is_some() || crossed {
            let _ = self
                .actor
                .tell(HeadroomNotice { exhausted_until })
                .try_send();
        }
    }

    /// Calls the provider through its circuit breaker and bulkhead, classifying errors with
    /// their [`Classify`] implementation.
    ///
    /// # Errors
    ///
    /// [`CallError::Inner`] with the operation's own error, or a [`CallError`] saying why
    /// the call was not made or was abandoned.
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future at any point gives back the bulkhead slot and any
    /// half-open trial slot, and never counts as a failure.
    #[inline(always)]
    pub fn call<'a, T, E, F, Fut>(
        &'a self,
        op: F,
    ) -> impl Future<Output = Result<T, CallError<E>>> + 'a
    where
        E: Classify + 'a,
        F: FnOnce() -> Fut + 'a,
        Fut: Future<Output = Result<T, E>> + 'a,
        T: 'a,
    {
        self.call_with(E::verdict, op)
    }

    /// Like [`call`](Self::call), with a closure deciding what each error says about the
    /// provider.
    ///
    /// # Errors
    ///
    /// As for [`call`](Self::call).
    #[inline(always)]
    pub fn call_with<'a, T, E, C, F, Fut>(
        &'a self,
        classify: C,
        op: F,
    ) -> impl Future<Output = Result<T, CallError<E>>> + 'a
    where
        C: Fn(&E) -> Verdict + 'a,
        F: FnOnce() -> Fut + 'a,
        Fut: Future<Output = Result<T, E>> + 'a,
        T: 'a,
        E: 'a,
    {
        let call = Call {
            handle: self,
            classify,
            state: CallState::Start { op },
        };
        // One load when no subscriber wants debug spans: the wrapper costs the hot path
        // nothing then (and is boxed when it is wanted).
        if tracing::level_enabled!(tracing::Level::DEBUG) {
            let span = tracing::debug_span!("fusebox.call", provider = %self.shared.id);
            if !span.is_disabled() {
                return Either::Right(Box::pin(call.instrument(span)));
            }
        }
        Either::Left(call)
    }

    /// Opens a streamed call, classifying errors with their [`Classify`] implementation. See
    /// [`call_stream_with`](Self::call_stream_with).
    ///
    /// # Errors
    ///
    /// As for [`call`](Self::call), for failures before the stream is established.
    pub async fn call_stream<S, T, E, F, Fut>(
        &self,
        op: F,
    ) -> Result<GuardedStream<S, E, fn(&E) -> Verdict>, CallError<E>>
    where
        E: Classify,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<S, E>>,
        S: Stream<Item = Result<T, E>>,
    {
        self.call_stream_with(E::verdict as fn(&E) -> Verdict, op)
            .await
    }

    /// Opens a streamed call (see [`crate::stream`]): `op` establishes the stream, under the
    /// provider's first-chunk timeout (or call timeout); the returned [`GuardedStream`]
    /// records the call's outcome when it ends.
    ///
    /// # Errors
    ///
    /// As for [`call_with`](Self::call_with), for failures before the stream is established.
    pub async fn call_stream_with<S, T, E, C, F, Fut>(
        &self,
        classify: C,
        op: F,
    ) -> Result<GuardedStream<S, E, C>, CallError<E>>
    where
        C: Fn(&E) -> Verdict,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<S, E>>,
        S: Stream<Item = Result<T, E>>,
    {
        let admitted = self
            .admit(true)
            .await
            .map_err(|r| r.into_error(&self.shared.id))?;
        if let Err(over) = self.reserve_default() {
            admitted.withdraw();
            return Err(over.into_error(&self.shared.id));
        }
        stream::open(self, admitted, None, classify, op(), false)
            .await
            .into_call(self)
    }

    /// Reserves the budget's default estimate, if the provider has a budget: what a call
    /// that reports no usage (a plain call, a stream) takes. The reservation stands (it is
    /// never settled).
    #[inline]
    fn reserve_default(&self) -> Result<(), crate::budget::OverBudget> {
        match &self.shared.budget {
            None => Ok(()),
            Some(budget) => budget.reserve(budget.default_estimate()).map(drop),
        }
    }

    /// Takes the provider out until [`reset`](Self::reset): every call is rejected with
    /// [`CallError::Isolated`]. Returns once the circuit is isolated.
    pub async fn isolate(&self) {
        self.control(Control::Isolate).await;
    }

    /// Closes the circuit, whatever its state, and forgets its failures.
    pub async fn reset(&self) {
        self.control(Control::Reset).await;
    }

    async fn control(&self, make: fn(oneshot::Sender<()>) -> Control) {
        // Sent again if lost to a panic of the actor (see `Delivery`).
        for _ in 0..3 {
            let (ack, done) = oneshot::channel();
            if self.actor.tell(make(ack)).try_send().is_err() || done.await.is_ok() {
                return;
            }
        }
    }

    /// Admits a call on the plain path: a closed circuit whose provider has no bulkhead,
    /// budget, call timeout, slow-call threshold or latency average, its actor running. One
    /// load of the gate, one increment, one load of the shutdown flag (see
    /// [`enter`](Self::enter) for their order). `None` when the call needs the general path
    /// (which also refuses it during a shutdown).
    #[inline(always)]
    pub(crate) fn admit_plain(&self) -> Option<Ticket<'_>> {
        let epoch = self.shared.plain_epoch()?;
        self.ticket(epoch)
    }

    /// Counts a call admitted under `epoch` in flight and hands out its ticket, unless a
    /// shutdown has begun (see [`enter`](Self::enter) for the order).
    #[inline(always)]
    fn ticket(&self, epoch: u64) -> Option<Ticket<'_>> {
        let counters = &self.shared.counters;
        counters.admit();
        if self.closing.is_closed() {
            counters.unadmit();
            self.closing.call_finished();
            return None;
        }
        Some(Ticket {
            handle: self,
            epoch,
        })
    }

    /// [`admit_plain`](Self::admit_plain) for a provider whose only general setting is its
    /// bulkhead: the ticket, with a free slot of the bulkhead taken, which the caller gives
    /// back with [`give_back_slot`](Self::give_back_slot) exactly once when the call ends.
    /// `None` when there is no free slot (the failover loop queues or skips), or as
    /// `admit_plain`.
    #[inline(never)]
    pub(crate) fn admit_slotted(&self) -> Option<Ticket<'_>> {
        let shared = &*self.shared;
        let epoch = shared.slotted_epoch()?;
        let bulkhead = shared.bulkhead.as_ref()?;
        if !bulkhead.try_take() {
            return None;
        }
        let ticket = self.ticket(epoch);
        if ticket.is_none() {
            bulkhead.give_back();
        }
        ticket
    }

    /// Gives back the bulkhead slot of a call admitted by [`admit_slotted`](Self::admit_slotted).
    #[inline(never)]
    pub(crate) fn give_back_slot(&self) {
        if let Some(bulkhead) = &self.shared.bulkhead {
            bulkhead.give_back();
        }
    }

    /// Admits a call without waiting, when that can be decided at once: a closed circuit
    /// (with a free bulkhead slot, or a full bulkhead without a queue), an open one not yet
    /// due, an isolated one, a half-open one with every trial slot taken, a closed
    /// supervisor. `None` when admission needs the bulkhead queue or the actor.
    #[inline]
    pub(crate) fn admit_now(&self) -> Option<Result<Admitted<&Self>, Reject>> {
        let shared = &*self.shared;
        let gate = shared.gate();
        if gate.state != CircuitState::Closed {
            return self.reject_now(gate).map(Err);
        }
        // A provider whose actor is gone for good (shut down, or past its panic limit)
        // would run unprotected: refuse instead.
        if gate.stopped || !self.actor.is_alive() {
            return Some(Err(Reject::ShuttingDown));
        }
        match &shared.bulkhead {
            None => Some(self.enter(gate.epoch, None)),
            // A free slot, or a full bulkhead without a queue: decided at once. A full one
            // with a queue waits (the slow path).
            Some(bulkhead) => match bulkhead.try_acquire() {
                Ok(slot) => Some(self.enter(gate.epoch, Some(slot))),
                Err(None) => None,
                Err(Some(denied)) => {
                    if denied == Denied::Full {
                        shared.counters.add(Count::BulkheadFull, 1);
                    }
                    Some(Err(Reject::Bulkhead(denied)))
                }
            },
        }
    }

    /// [`reject_now`](Self::reject_now) for a circuit found not closed, from a fresh read of
    /// the gate: `None` when it is closed or the actor decides.
    #[inline(always)]
    pub(crate) fn reject_early(&self) -> Option<Reject> {
        let gate = self.shared.gate();
        if gate.state == CircuitState::Closed {
            return None;
        }
        self.reject_now(gate)
    }

    /// The rejection of a call to a circuit that is not closed, when it is decided without
    /// the actor: an open circuit not yet due (one cheap-clock read and one subtraction), an
    /// isolated one, a half-open one with every trial slot taken. `None`: the actor decides.
    #[inline]
    fn reject_now(&self, gate: super::shared::Gate) -> Option<Reject> {
        let shared = &*self.shared;
        if gate.stopped || self.closing.is_closed() {
            return Some(Reject::ShuttingDown);
        }
        let (count, retry_after) = match gate.state {
            CircuitState::Open => {
                let left = shared.until_deadline();
                if left.is_zero() {
                    // Due: the actor decides (it admits the first trial).
                    return None;
                }
                (Count::RejectedOpen, Some(left))
            }
            // Every trial slot taken: rejected here, without a message to the actor. (A
            // caller that sees a free slot asks the actor, which decides.)
            CircuitState::HalfOpen if shared.trial_slots() == 0 => {
                (Count::RejectedHalfOpen, Some(shared.until_deadline()))
            }
            CircuitState::Isolated => (Count::RejectedIsolated, None),
            _ => return None,
        };
        shared.counters.add(count, 1);
        Some(Reject::Circuit(Rejection {
            state: gate.state,
            retry_after,
            failure_count: shared.failure_count(),
        }))
    }

    /// Admits a call on a closed circuit under `epoch`, holding `slot` if it has one.
    ///
    /// The admission is counted first and the shutdown flag read after, both sequentially
    /// consistent, while [`Supervisor::shutdown`](crate::Supervisor::shutdown) sets the flag
    /// and then reads the counts: either shutdown sees this call in flight and waits for it,
    /// or this call sees the flag and backs out without running. No call can start after a
    /// shutdown that found nothing in flight.
    #[inline]
    fn enter(
        &self,
        epoch: u64,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<Admitted<&Self>, Reject> {
        let counters = &self.shared.counters;
        counters.admit();
        if self.closing.is_closed() {
            counters.unadmit();
            drop(slot);
            self.closing.call_finished();
            return Err(Reject::ShuttingDown);
        }
        Ok(Admitted {
            handle: self,
            permit: Some(Permit::closed(epoch)),
            slot,
        })
    }

    /// Admits a call, or says why not.
    ///
    /// Cancel safe: a queue place, a bulkhead slot or a trial permit obtained before the
    /// future is dropped is given back.
    pub(crate) async fn admit(&self, queue: bool) -> Result<Admitted<&Self>, Reject> {
        let shared = &*self.shared;
        let mut retries = 0;
        // A bulkhead slot, once had, is kept across re-evaluations of the circuit: a waiter
        // never queues twice nor waits longer than its queue timeout.
        let mut slot = None;
        loop {
            if let Some(decided) = self.admit_now() {
                return decided;
            }
            // Left: a closed circuit with a bulkhead, or one due for (or in) a trial.
            if slot.is_none() {
                if let Some(bulkhead) = &shared.bulkhead {
                    match bulkhead.acquire(queue).await {
                        Ok((granted, waited)) => {
                            slot = Some(granted);
                            if waited {
                                // The circuit may have changed while this call waited.
                                continue;
                            }
                        }
                        Err(denied) => {
                            match denied {
                                Denied::Full => shared.counters.add(Count::BulkheadFull, 1),
                                Denied::Timeout(_) => shared.counters.add(Count::QueueTimeout, 1),
                                Denied::Closed => {}
                            }
                            return Err(Reject::Bulkhead(denied));
                        }
                    }
                }
            }
            let gate = shared.gate();
            let permit = if gate.state == CircuitState::Closed {
                return self.enter(gate.epoch, slot);
            } else {
                let (reply, decision) = oneshot::channel();
                if self.actor.tell(Admit { reply }).try_send().is_err() {
                    return Err(Reject::ShuttingDown);
                }
                match decision.await.map(|d| d.map(TrialPermit::take)) {
                    // The trial was counted (by the breaker, under the lock a shutdown
                    // reads its counts under) before this flag read: see `enter`.
                    Ok(Ok(Some(trial))) if self.closing.is_closed() => {
                        Delivery::spawn(&self.actor, trial, Outcome::Cancelled);
                        return Err(Reject::ShuttingDown);
                    }
                    Ok(Ok(Some(permit))) if permit.epoch() == shared.gate().epoch => permit,
                    // The circuit moved on (a concurrent trial failed) between the grant and
                    // now: give the trial back and look again, rather than call a provider
                    // just declared down.
                    Ok(Ok(Some(stale))) => {
                        Delivery::spawn(&self.actor, stale, Outcome::Cancelled);
                        continue;
                    }
                    Ok(Ok(None)) => continue,
                    Ok(Err(rejection)) => return Err(Reject::Circuit(rejection)),
                    // The actor panicked deciding and recovered with the circuit intact. Ask again.
                    Err(_) if retries < ADMIT_RETRIES => {
                        retries += 1;
                        continue;
                    }
                    Err(_) => return Err(Reject::ShuttingDown),
                }
            };
            let fleet_trial = permit.is_trial() && shared.fleet.is_some();
            let epoch = permit.epoch();
            let mut admitted = Admitted {
                handle: self,
                permit: Some(permit),
                slot,
            };
            // With a fleet, one trial for all replicas: dropping `admitted` gives it back.
            if fleet_trial {
                match self.fleet_trial(epoch).await {
                    TrialGate::Proceed => {}
                    TrialGate::Elsewhere(rejection) => {
                        shared.counters.add(Count::RejectedHalfOpen, 1);
                        return Err(Reject::Circuit(rejection));
                    }
                    TrialGate::Moved => {
                        slot = admitted.slot.take();
                        continue;
                    }
                }
            }
            return Ok(admitted);
        }
    }
}

/// A bulkhead queue wait or a trial admission by the actor: the slow paths of admission,
/// boxed so that the common case's future does not hold them.
type Admitting<'a> =
    Pin<Box<dyn Future<Output = Result<Admitted<&'a ProviderHandle>, Reject>> + Send + Sync + 'a>>;

pin_project! {
    /// The future of [`ProviderHandle::call_with`]: admission decided at the first poll
    /// without waiting wherever it can be (closed, open, isolated, half-open with every trial
    /// slot taken), then one attempt: on the plain path (see
    /// [`ProviderHandle::admit_plain`]) its state is the operation's future, the
    /// [`Ticket`] and an optional start time; otherwise one [`Attempt`]. The slow paths of
    /// admission (a bulkhead queue, a trial admission by the actor) run in a boxed future of
    /// their own.
    struct Call<'a, C, F, Fut, T, E> {
        handle: &'a ProviderHandle,
        classify: C,
        #[pin]
        state: CallState<'a, F, Fut, T, E>,
    }
}

pin_project! {
    #[project = CallProj]
    #[project_replace = CallOwn]
    enum CallState<'a, F, Fut, T, E> {
        Start { op: F },
        Plain {
            #[pin]
            fut: Fut,
            ticket: Ticket<'a>,
            clock: crate::attempt::PlainClock,
        },
        Admitting { op: F, admitting: Admitting<'a> },
        Running { #[pin] attempt: Attempt<'a, Fut, T, E> },
        Done,
    }
}

impl<'a, T, E, C, F, Fut> Future for Call<'a, C, F, Fut, T, E>
where
    C: Fn(&E) -> Verdict,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    type Output = Result<T, CallError<E>>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let handle: &'a ProviderHandle = this.handle;
        if let CallProj::Start { .. } = this.state.as_mut().project() {
            match handle.admit_plain() {
                Some(ticket) => {
                    let CallOwn::Start { op } =
                        this.state.as_mut().project_replace(CallState::Done)
                    else {
                        unreachable!("the call was starting")
                    };
                    let clock = crate::attempt::PlainClock::start(&ticket, false);
                    this.state.set(CallState::Plain {
                        fut: op(),
                        ticket,
                        clock,
                    });
                }
                // Rejected without the actor (open, isolated, half-open and full).
                None => {
                    if let Some(reject) = handle.reject_early() {
                        // Left `Start` (a call is not polled after it is ready): nothing to
                        // drop but the operation, never called.
                        return Poll::Ready(Err(reject.into_error(&handle.shared.id)));
                    }
                }
            }
        }
        if let CallProj::Plain { fut, clock, .. } = this.state.as_mut().project() {
            let output = ready!(crate::attempt::poll_plain(fut, clock, cx));
            // The operation's future is dropped here, before the outcome is recorded.
            let CallOwn::Plain { ticket, clock, .. } =
                this.state.as_mut().project_replace(CallState::Done)
            else {
                unreachable!("the call was plain")
            };
            let error = match output {
                Ok(value) => {
                    crate::attempt::plain_success(ticket, clock);
                    return Poll::Ready(Ok(value));
                }
                Err(error) => error,
            };
            // A failure: reported to the actor, whose decision is awaited.
            this.state.set(CallState::Running {
                attempt: Attempt::plain_failed(ticket, clock, error, this.classify),
            });
        }
        poll_general(this.state, handle, this.classify, cx)
    }
}

/// [`Call`] past the plain path: admission by the general path, and any attempt that is not
/// plain (or a plain one awaiting the actor's decision on its failure).
#[inline(never)]
fn poll_general<'a, T, E, C, F, Fut>(
    mut state: Pin<&mut CallState<'a, F, Fut, T, E>>,
    handle: &'a ProviderHandle,
    classify: &C,
    cx: &mut Context<'_>,
) -> Poll<Result<T, CallError<E>>>
where
    C: Fn(&E) -> Verdict,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        let admitted = match state.as_mut().project() {
            CallProj::Running { attempt } => {
                let (ended, _) = ready!(attempt.poll_attempt(cx, classify));
                state.set(CallState::Done);
                return Poll::Ready(ended.into_call(handle));
            }
            CallProj::Start { .. } => match handle.admit_now() {
                Some(decided) => decided,
                None => {
                    let CallOwn::Start { op } = state.as_mut().project_replace(CallState::Done)
                    else {
                        unreachable!("the call was starting")
                    };
                    state.set(CallState::Admitting {
                        op,
                        admitting: Box::pin(handle.admit(true)),
                    });
                    continue;
                }
            },
            CallProj::Admitting { admitting, .. } => ready!(admitting.as_mut().poll(cx)),
            CallProj::Plain { .. } => unreachable!("a plain call is polled by `Call`"),
            CallProj::Done => panic!("call polled after it was ready"),
        };
        let op = match state.as_mut().project_replace(CallState::Done) {
            CallOwn::Start { op } | CallOwn::Admitting { op, .. } => op,
            _ => unreachable!("the call was being admitted"),
        };
        let admitted = match admitted {
            Ok(admitted) => admitted,
            Err(reject) => return Poll::Ready(Err(reject.into_error(&handle.shared.id))),
        };
        // A budget reserves its default estimate (a plain call reports no usage).
        if let Err(over) = handle.reserve_default() {
            admitted.withdraw();
            return Poll::Ready(Err(over.into_error(&handle.shared.id)));
        }
        state.set(CallState::Running {
            attempt: Attempt::new(admitted, None, op(), false),
        });
    }
}
