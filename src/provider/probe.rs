//! Recovery probes: while a provider's circuit is open, its actor runs the user's
//! [`Probe`](crate::Probe) in a task of its own, one probe at a time, and a success ends the
//! open period (the circuit becomes half-open; real calls confirm).
//!
//! The actor decides everything: after every decision it [`sync`](Prober::sync)s the probe
//! task with the circuit (one task per open period, tagged with the circuit's outcome epoch;
//! none in any other state). The task sleeps to the next probe, runs it under its timeout and
//! reports the outcome to the actor with a [`ProbeDone`] carrying that epoch; the actor
//! answers with the wait before the next probe (the backoff lives in the actor), or tells it
//! to stop. A result from an older epoch (the circuit closed, re-opened, was isolated or reset
//! meanwhile) is counted and changes nothing. The task is aborted when the circuit leaves
//! the open state and when the actor stops (the [`Prober`] aborts it when dropped), and checks
//! the provider's closing flag before every probe (a removed provider drains, then stops).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use kameo::actor::WeakActorRef;
use kameo::message::{Context, Message};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::actor::{Ctx, ProviderActor};
use super::shared::Closing;
use crate::breaker::CircuitState;
use crate::config::Probe;

/// How one probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeOutcome {
    /// The operation returned `Ok`.
    Succeeded,
    /// The operation returned `Err` (or panicked).
    Failed,
    /// The operation did not finish within the probe's timeout.
    TimedOut,
}

/// Probe counters of one provider, over its life (they survive the actor's panics).
#[derive(Debug, Default)]
pub(crate) struct ProbeCounts {
    succeeded: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
}

impl ProbeCounts {
    fn add(&self, outcome: ProbeOutcome) {
        let counter = match outcome {
            ProbeOutcome::Succeeded => &self.succeeded,
            ProbeOutcome::Failed => &self.failed,
            ProbeOutcome::TimedOut => &self.timed_out,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (succeeded, failed, timed out): failed excludes the timeouts.
    pub(crate) fn get(&self) -> (u64, u64, u64) {
        (
            self.succeeded.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.timed_out.load(Ordering::Relaxed),
        )
    }
}

/// A probe task, aborted when dropped.
#[derive(Debug)]
struct Task {
    /// The outcome epoch of the open period it probes.
    epoch: u64,
    handle: JoinHandle<()>,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

#[derive(Debug, Default)]
struct ProberState {
    task: Option<Task>,
    /// Successful probes in a row, in the current open period.
    in_row: u32,
    /// The wait between probes: the interval, doubled by each false alarm up to the cap,
    /// until the circuit closes; `None` for the interval.
    delay: Option<Duration>,
    /// A probe ended the last open period and its trials have not decided yet: if the
    /// circuit re-opens, the probe was a false alarm.
    confirming: bool,
}

/// The provider actor's probe runner. Only the actor uses it (the mutex is never
/// contended: it is there because the actor decides through `&self`).
#[derive(Debug)]
pub(crate) struct Prober {
    actor: WeakActorRef<ProviderActor>,
    state: Mutex<ProberState>,
}

impl Prober {
    pub(crate) fn new(actor: WeakActorRef<ProviderActor>) -> Self {
        Prober {
            actor,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ProberState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the probe task match the circuit after a decision: one task for the current
    /// open period while open, none otherwise; a close forgets the backoff.
    pub(crate) fn sync(&self, ctx: &Ctx, state: CircuitState, epoch: u64) {
        let Some(probe) = &ctx.shared.config.probe else {
            return;
        };
        let mut s = self.state();
        if state != CircuitState::Open {
            // Dropping the task aborts it (with the probe it may be running).
            s.task = None;
            if state != CircuitState::HalfOpen {
                // Closed (confirmed), or isolated: the next outage starts afresh.
                *s = ProberState::default();
            }
            return;
        }
        if s.task.as_ref().is_some_and(|t| t.epoch == epoch) {
            return;
        }
        s.in_row = 0;
        if std::mem::take(&mut s.confirming) {
            // The probe said the provider was back, and real calls said it was not.
            let current = s.delay.unwrap_or(probe.interval);
            s.delay = Some(current.saturating_mul(2).min(probe.max_interval_config()));
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let first = s.delay.unwrap_or(probe.interval);
        let handle = runtime.spawn(run(
            self.actor.clone(),
            probe.clone(),
            ctx.closing.clone(),
            epoch,
            first,
        ));
        s.task = Some(Task { epoch, handle });
    }

    /// Notes a probe's outcome for the current open period; returns whether the open period
    /// ends (enough successes in a row) and the wait before the next probe.
    fn note(&self, probe: &Probe, outcome: ProbeOutcome) -> (bool, Duration) {
        let mut s = self.state();
        let delay = s.delay.unwrap_or(probe.interval);
        if outcome == ProbeOutcome::Succeeded {
            s.in_row = s.in_row.saturating_add(1);
        } else {
            s.in_row = 0;
        }
        (s.in_row >= probe.successes, delay)
    }

    /// The open period ended on a probe: its trials confirm it, or re-open (a false alarm).
    fn confirming(&self) {
        self.state().confirming = true;
    }
}

/// A probe's outcome, reported by its task; answered with the wait before the next probe,
/// or `None` when the task should stop (the result was stale).
#[derive(Debug)]
pub(crate) struct ProbeDone {
    epoch: u64,
    outcome: ProbeOutcome,
    reply: oneshot::Sender<Option<Duration>>,
}

impl Message<ProbeDone> for ProviderActor {
    type Reply = ();

    async fn handle(&mut self, msg: ProbeDone, _: &mut Context<Self, Self::Reply>) {
        let ctx = self.ctx();
        ctx.shared.probes.add(msg.outcome);
        crate::metrics::probe(&ctx.shared.id, msg.outcome);
        let Some(probe) = ctx.shared.config.probe.as_ref() else {
            return;
        };
        let mut next = None;
        let prober = self.prober();
        self.decide(|core, now| {
            let current =
                core.breaker.epoch() == msg.epoch && core.breaker.state() == CircuitState::Open;
            if !current {
                return None;
            }
            let (ends, delay) = prober.note(probe, msg.outcome);
            next = Some(delay);
            if !ends {
                return None;
            }
            let transition = core.breaker.probe_succeeded(now);
            if transition.is_some() {
                prober.confirming();
            }
            transition
        });
        let _ = msg.reply.send(next);
    }
}

/// The probe task of one open period: sleeps to each probe, runs it under its timeout and
/// reports to the actor, until the actor says stop, aborts it, or is gone.
async fn run(
    actor: WeakActorRef<ProviderActor>,
    probe: Probe,
    closing: Arc<Closing>,
    epoch: u64,
    first: Duration,
) {
    let mut next = Instant::now() + first;
    loop {
        tokio::time::sleep_until(next).await;
        if closing.is_closed() {
            return;
        }
        let started = Instant::now();
        // A panicking probe is a failed probe, and the task goes on.
        let call = AssertUnwindSafe((probe.op)()).catch_unwind();
        let outcome = match tokio::time::timeout(probe.timeout_config(), call).await {
            Ok(Ok(true)) => ProbeOutcome::Succeeded,
            Ok(Ok(false) | Err(_)) => ProbeOutcome::Failed,
            Err(_) => ProbeOutcome::TimedOut,
        };
        let (reply, answer) = oneshot::channel();
        let sent = actor.upgrade().is_some_and(|actor| {
            actor
                .tell(ProbeDone {
                    epoch,
                    outcome,
                    reply,
                })
                .try_send()
                .is_ok()
        });
        if !sent {
            return;
        }
        match answer.await {
            Ok(Some(delay)) => next = started + delay,
            _ => return,
        }
    }
}
