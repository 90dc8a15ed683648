//! [`ProviderActor`]: decides every transition of one provider's circuit.
//!
//! Callers send it only what needs a decision: a trial admission, a counted failure, a
//! trial's outcome, a slow call. It folds in the successes the lock-free path counted,
//! feeds the pure breaker, re-publishes the gate, emits events and schedules its next timer.
//! Every message is a `tell` with a oneshot reply where one is needed, so a caller that is
//! dropped mid-wait never strands a decision.
//!
//! # Panics in a handler
//!
//! A handler that panics (a bug) does not restart the actor. The actor recovers in place
//! ([`Actor::on_panic`] continues with the same mailbox, so every queued message is still
//! handled): it re-publishes its state, which lives in [`Shared`] and is intact, and goes on.
//! Only the message being handled is lost; a report among them is sent once more by its
//! [`Delivery`], the one place that works around a lost message. Past [`PANIC_LIMIT`] panics
//! within [`PANIC_WINDOW`] (a sliding window on the tokio clock, unlike kameo's restart
//! limit, which resets only after a quiet gap and reads the system monotonic clock) the actor
//! stops for good: that provider refuses calls, and nothing else stops with it. What kameo
//! itself does with queued messages is pinned by `tests/kameo_panic.rs`; messages sent
//! before an actor finished starting can be dropped by a panic, so the supervisor waits for
//! each provider actor to start before handing it out.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use kameo::actor::{Actor, ActorRef, Recipient, WeakActorRef};
use kameo::error::{ActorStopReason, PanicError};
use kameo::message::{Context, Message};
use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::Instant;

use super::counters::Count;
use super::fleet;
use super::shared::{Closing, Core, Shared};
use crate::breaker::{CircuitState, Outcome, Permit, Rejection, Transition};
use crate::events::{self, Event, EventKind, Origin};
use crate::ProviderId;

/// How many handler panics a provider actor survives within [`PANIC_WINDOW`]: one more
/// stops it for good.
pub(crate) const PANIC_LIMIT: usize = 5;

/// The sliding window [`PANIC_LIMIT`] counts panics over.
pub(crate) const PANIC_WINDOW: Duration = Duration::from_secs(5);

/// What a provider actor is started with.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) events: broadcast::Sender<Event>,
    /// When the actor next wants a [`Tick`].
    pub(crate) wake: watch::Sender<Option<Instant>>,
    pub(crate) closing: Arc<Closing>,
    /// Told of every transition: the router actor, which re-ranks the routes.
    pub(crate) router: Option<Recipient<CircuitChanged>>,
}

/// A provider's circuit changed: the notification provider actors send the router. A
/// trigger only: the router reads the gate for the truth, and a later epoch supersedes an
/// earlier one.
#[derive(Debug, Clone)]
pub(crate) struct CircuitChanged {
    pub(crate) provider: ProviderId,
    /// The outcome epoch after the change (monotonic per provider).
    pub(crate) epoch: u64,
    pub(crate) state: CircuitState,
    /// A headroom notice rather than a transition: re-rank whatever the epoch.
    pub(crate) headroom: bool,
}

/// The actor deciding one provider's circuit. Its state lives in [`Shared`], so recovering
/// from a panic carries on with the same circuit, deadline and counts.
#[derive(Debug)]
pub(crate) struct ProviderActor {
    ctx: Arc<Ctx>,
    /// When its handlers panicked, within the last [`PANIC_WINDOW`].
    panics: VecDeque<Instant>,
    /// The recovery probe task, while open (`provider::probe`).
    probe: super::probe::Prober,
}

impl Actor for ProviderActor {
    type Args = Arc<Ctx>;
    type Error = Infallible;

    async fn on_start(ctx: Self::Args, me: ActorRef<Self>) -> Result<Self, Self::Error> {
        let actor = ProviderActor {
            ctx,
            panics: VecDeque::with_capacity(PANIC_LIMIT + 1),
            probe: super::probe::Prober::new(me.downgrade()),
        };
        actor.decide(|_, _| None);
        Ok(actor)
    }

    async fn on_panic(
        &mut self,
        _: WeakActorRef<Self>,
        err: PanicError,
    ) -> Result<ControlFlow<ActorStopReason>, Self::Error> {
        let now = Instant::now();
        while self
            .panics
            .front()
            .is_some_and(|&at| now.saturating_duration_since(at) >= PANIC_WINDOW)
        {
            self.panics.pop_front();
        }
        self.panics.push_back(now);
        let provider = &self.ctx.shared.id;
        if self.panics.len() > PANIC_LIMIT {
            tracing::error!(
                %provider, panics = self.panics.len(), window = ?PANIC_WINDOW, error = %err,
                "provider actor keeps panicking: stopped for good, the provider refuses calls"
            );
            return Ok(ControlFlow::Break(ActorStopReason::Panicked(err)));
        }
        tracing::error!(%provider, error = %err, "provider actor panicked: recovered in place");
        // The state is intact; make sure the gate and timer reflect it.
        self.decide(|_, _| None);
        Ok(ControlFlow::Continue(()))
    }

    async fn on_stop(
        &mut self,
        _: WeakActorRef<Self>,
        _: ActorStopReason,
    ) -> Result<(), Self::Error> {
        self.ctx.shared.mark_stopped();
        Ok(())
    }
}

impl Drop for ProviderActor {
    /// Also when its task is dropped without stopping (its runtime shut down).
    fn drop(&mut self) {
        self.ctx.shared.mark_stopped();
    }
}

/// Asks for a half-open trial permit.
#[derive(Debug)]
pub(crate) struct Admit {
    pub(crate) reply: oneshot::Sender<Result<TrialPermit, Rejection>>,
}

/// A granted trial permit on its way to the caller. If it is dropped before the caller
/// takes it (the caller gave up while the reply was in flight), it reports itself
/// cancelled, so the trial slot is never stranded.
#[derive(Debug)]
pub(crate) struct TrialPermit {
    permit: Option<Permit>,
    actor: ActorRef<ProviderActor>,
}

impl TrialPermit {
    /// The permit, now the caller's to report. (Always `Some`: only this method empties
    /// the guard, and it consumes it.)
    pub(crate) fn take(mut self) -> Option<Permit> {
        self.permit.take()
    }
}

impl Drop for TrialPermit {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            Delivery::spawn(&self.actor, permit, Outcome::Cancelled);
        }
    }
}

/// How many times a report lost in transit is sent again. A report is lost only when the
/// handler deciding it panicked, so once: a report whose handling always panics (a poison
/// message) costs two panics of the actor's budget, never all of it.
const REDELIVERIES: u8 = 1;

/// A report on its way to the actor, resolved once the actor has decided it.
///
/// When its acknowledgement channel closes unanswered while the actor is still alive (the
/// handler panicked on it and the actor recovered), it is sent again, at most
/// [`REDELIVERIES`] times. This is the one place that works around lost messages.
#[derive(Debug)]
pub(crate) struct Delivery {
    actor: ActorRef<ProviderActor>,
    permit: Permit,
    outcome: Outcome,
    decided: Option<oneshot::Receiver<()>>,
    resent: u8,
    /// Already driven by a task of its own: dropping it (the runtime is shutting down) ends
    /// it.
    detached: bool,
}

impl Delivery {
    /// Sends a report; `None` if the actor is gone for good.
    pub(crate) fn send(
        actor: &ActorRef<ProviderActor>,
        permit: Permit,
        outcome: Outcome,
    ) -> Option<Self> {
        let mut delivery = Delivery {
            actor: actor.clone(),
            permit,
            outcome,
            decided: None,
            resent: 0,
            detached: false,
        };
        delivery.post().then_some(delivery)
    }

    /// Sends a report from a context that cannot wait (a `Drop`): the delivery is driven by a
    /// task of its own, or sent once without redelivery outside a runtime.
    pub(crate) fn spawn(actor: &ActorRef<ProviderActor>, permit: Permit, outcome: Outcome) {
        let Some(mut delivery) = Delivery::send(actor, permit, outcome) else {
            return;
        };
        delivery.detached = true;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(delivery);
        }
    }

    fn post(&mut self) -> bool {
        let (ack, decided) = oneshot::channel();
        let report = Report {
            permit: self.permit.duplicate(),
            outcome: self.outcome,
            ack: Some(ack),
        };
        let sent = self.actor.tell(report).try_send().is_ok();
        self.decided = sent.then_some(decided);
        sent
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        // Dropped while undecided (its caller was cancelled): the rest of the delivery,
        // redeliveries included, goes on in a task of its own.
        if self.detached {
            return;
        }
        let Some(decided) = self.decided.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(Delivery {
                actor: self.actor.clone(),
                permit: self.permit.duplicate(),
                outcome: self.outcome,
                decided: Some(decided),
                resent: self.resent,
                detached: true,
            });
        }
    }
}

impl Future for Delivery {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        loop {
            let Some(decided) = self.decided.as_mut() else {
                return Poll::Ready(());
            };
            match Pin::new(decided).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {
                    self.decided = None;
                    return Poll::Ready(());
                }
                Poll::Ready(Err(_lost)) => {
                    self.decided = None;
                    if self.resent == REDELIVERIES || !self.actor.is_alive() {
                        return Poll::Ready(());
                    }
                    self.resent += 1;
                    self.post();
                }
            }
        }
    }
}

/// Reports an outcome that may change state.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) permit: Permit,
    pub(crate) outcome: Outcome,
    /// Answered once the decision is published (read-your-writes for the caller).
    pub(crate) ack: Option<oneshot::Sender<()>>,
}

/// Fires due timers and samples the counters.
#[derive(Debug)]
pub(crate) struct Tick;

/// An operator action.
#[derive(Debug)]
pub(crate) enum Control {
    Isolate(oneshot::Sender<()>),
    Reset(oneshot::Sender<()>),
}

/// The provider's own rate-limit headers crossed a line: a quota is used up until
/// `exhausted_until`, or its headroom fell low enough for the router to re-rank now rather
/// than at its next sample.
#[derive(Debug)]
pub(crate) struct HeadroomNotice {
    pub(crate) exhausted_until: Option<Instant>,
}

impl Message<HeadroomNotice> for ProviderActor {
    type Reply = ();

    async fn handle(&mut self, msg: HeadroomNotice, _: &mut Context<Self, Self::Reply>) {
        let transition = match msg.exhausted_until {
            Some(until) => self.decide(|core, now| core.breaker.quota_exhausted(until, now)),
            None => None,
        };
        // A transition has told the router already.
        if let (None, Some(router)) = (transition, &self.ctx.router) {
            let shared = &self.ctx.shared;
            let gate = shared.gate();
            let _ = router
                .tell(CircuitChanged {
                    provider: shared.id.clone(),
                    epoch: gate.epoch,
                    state: gate.state,
                    headroom: true,
                })
                .try_send();
        }
    }
}

/// Makes the actor panic, to test supervision.
#[cfg(feature = "testing")]
#[derive(Debug)]
pub(crate) struct Crash;

impl ProviderActor {
    /// Runs one decision against the state at `now`: folds in the lock-free successes,
    /// applies `f`, samples the rate meter when due, publishes the result and emits events.
    pub(super) fn decide<F>(&self, f: F) -> Option<Transition>
    where
        F: FnOnce(&mut Core, Instant) -> Option<Transition>,
    {
        self.decide_as(Origin::Local, f)
    }

    /// [`decide`](Self::decide), for a change of `origin`: a local one is handed to the
    /// fleet link, if there is one; a remote one (another replica's) is not sent back.
    pub(super) fn decide_as<F>(&self, origin: Origin, f: F) -> Option<Transition>
    where
        F: FnOnce(&mut Core, Instant) -> Option<Transition>,
    {
        let shared = &self.ctx.shared;
        let now = Instant::now();
        let mut core = shared.core();
        core.decisions += 1;
        let epoch = core.breaker.epoch();
        shared.fold(&mut core, now);

        let open_until = core.breaker.open_until();
        let transition = f(&mut core, now);
        let shared_change = match (&shared.fleet, origin) {
            (Some(_), Origin::Local) => fleet::change_of(&core.breaker, transition, open_until),
            _ => None,
        };
        let adapted = self.sample(&mut core, now);
        if core.breaker.epoch() != epoch {
            // Before the new epoch is published, so no success of it can be refused.
            shared.retag(&mut core);
        }
        shared.publish(&core.breaker);
        let wake = next_wake(&core, shared);
        let generation = core.breaker.generation();
        let circuit = (core.breaker.state(), core.breaker.epoch());
        drop(core);
        self.probe.sync(&self.ctx, circuit.0, circuit.1);

        if let Some(t) = &transition {
            crate::metrics::transition(&shared.id, t);
            log_transition(&shared.id, t);
            let mut event = events::from_transition(&shared.id, t);
            event.origin = origin;
            self.emit(event);
            if let Some(router) = &self.ctx.router {
                // A router that is restarting or gone resyncs from the gates.
                let _ = router
                    .tell(CircuitChanged {
                        provider: shared.id.clone(),
                        epoch: shared.gate().epoch,
                        state: t.to,
                        headroom: false,
                    })
                    .try_send();
            }
        }
        if let Some(kind) = adapted {
            self.emit(Event::new(shared.id.clone(), kind, now, generation, None));
        }
        self.ctx.wake.send_replace(wake);
        if let Some(change) = shared_change {
            self.share(change);
        }
        transition
    }

    /// Hands a change this replica decided to the fleet link, if there is one.
    fn share(&self, change: fleet::Change) {
        let shared = &self.ctx.shared;
        if let Some(port) = &shared.fleet {
            port.local_change(fleet::LocalChange {
                provider: shared.id.clone(),
                change,
            });
        }
    }

    /// Samples the request rate when a sample is due, and moves tiers.
    fn sample(&self, core: &mut Core, now: Instant) -> Option<EventKind> {
        let meter = core.meter.as_mut()?;
        if now < core.last_sample + meter.interval() {
            return None;
        }
        core.last_sample = now;
        // Demand, not throughput: calls rejected while open still count as requests.
        let counters = &self.ctx.shared.counters;
        meter.observe(
            counters.get(Count::Admitted)
                + counters.get(Count::RejectedOpen)
                + counters.get(Count::RejectedHalfOpen)
                + counters.get(Count::RejectedIsolated),
            now,
        );
        let rate = meter.per_minute();
        let thresholds = core.tiers.as_mut()?.update(rate)?;
        core.thresholds = Some(thresholds);
        core.breaker
            .set_thresholds(thresholds.failures, thresholds.open_for);
        Some(EventKind::ThresholdsAdapted {
            tier: thresholds.tier,
            request_rate: rate,
            failure_threshold: thresholds.failures,
            open_for: thresholds.open_for,
        })
    }

    /// What the actor was started with.
    pub(super) fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    /// The recovery probe runner.
    pub(super) fn prober(&self) -> &super::probe::Prober {
        &self.probe
    }

    fn emit(&self, event: Event) {
        // No subscriber is not an error: the event is simply not wanted.
        let _ = self.ctx.events.send(event);
    }
}

/// Logs a transition: a warning when a provider goes out of service, info otherwise.
fn log_transition(provider: &ProviderId, t: &Transition) {
    let (from, to, cause) = (t.from.as_str(), t.to.as_str(), t.cause.as_str());
    match t.to {
        CircuitState::Open => tracing::warn!(
            %provider, from, to, cause, failures = t.failures,
            open_for = ?t.open_for.unwrap_or_default(), "circuit opened"
        ),
        CircuitState::Isolated => {
            tracing::warn!(%provider, from, to, cause, "circuit isolated")
        }
        CircuitState::Closed => tracing::info!(%provider, from, to, cause, "circuit closed"),
        CircuitState::HalfOpen => tracing::info!(%provider, from, to, cause, "circuit half-open"),
    }
}

/// The earliest of the breaker's next deadline and the next counter sample.
fn next_wake(core: &Core, shared: &Shared) -> Option<Instant> {
    let sampling = core
        .meter
        .as_ref()
        .map(|m| core.last_sample + m.interval())
        .or_else(|| {
            // A time-based window needs lock-free successes folded in as time passes.
            match shared.config.breaker.window {
                crate::config::Window::Time(d)
                    if shared.config.breaker.failure_rate.is_some()
                        || shared.config.breaker.slow_call.is_some() =>
                {
                    Some(core.last_sample + d / 20)
                }
                _ => None,
            }
        });
    match (core.breaker.next_deadline(), sampling) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Message<Admit> for ProviderActor {
    type Reply = ();

    async fn handle(&mut self, msg: Admit, ctx: &mut Context<Self, Self::Reply>) {
        let mut decision = None;
        self.decide(|core, now| {
            let admission = core.breaker.on_admit(now);
            decision = Some(admission.decision);
            admission.transition
        });
        let Some(decision) = decision else { return };
        let decision = decision.map(|permit| TrialPermit {
            permit: Some(permit),
            actor: ctx.actor_ref().clone(),
        });
        // If the caller is gone, the returned permit is dropped here and reports itself.
        let _ = msg.reply.send(decision);
    }
}

impl Message<Report> for ProviderActor {
    type Reply = ();

    async fn handle(&mut self, msg: Report, _: &mut Context<Self, Self::Reply>) {
        #[cfg(feature = "testing")]
        if self
            .ctx
            .shared
            .poison_reports
            .load(std::sync::atomic::Ordering::Acquire)
        {
            panic!("fusebox test hook: poisoned report");
        }
        let Report {
            permit,
            outcome,
            ack,
        } = msg;
        self.decide(|core, now| core.breaker.on_outcome(permit, outcome, now));
        if let Some(ack) = ack {
            let _ = ack.send(());
        }
        self.ctx.closing.call_finished();
    }
}

impl Message<Tick> for ProviderActor {
    type Reply = ();

    async fn handle(&mut self, _: Tick, _: &mut Context<Self, Self::Reply>) {
        self.decide(|core, now| {
            if core.meter.is_none() {
                core.last_sample = now;
            }
            core.breaker.poll(now)
        });
    }
}

impl Message<Control> for ProviderActor {
    type Reply = ();

    async fn handle(&mut self, msg: Control, _: &mut Context<Self, Self::Reply>) {
        let ack = match msg {
            Control::Isolate(ack) => {
                self.decide(|core, now| core.breaker.isolate(now));
                ack
            }
            Control::Reset(ack) => {
                // An operator's reset reaches the whole fleet, even where this replica's
                // circuit was already closed.
                if self.decide(|core, now| core.breaker.reset(now)).is_none() {
                    self.share(fleet::Change::Reset);
                }
                ack
            }
        };
        let _ = ack.send(());
    }
}

#[cfg(feature = "testing")]
impl Message<Crash> for ProviderActor {
    type Reply = ();

    async fn handle(&mut self, _: Crash, _: &mut Context<Self, Self::Reply>) {
        panic!("fusebox test hook: provider actor crash requested");
    }
}
