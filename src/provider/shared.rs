//! What a provider's actor and its callers share: the published gate, the counters, the
//! bulkhead, and the decision state the actor alone mutates.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::counters::{Count, Counters};
use crate::adaptive::{RateMeter, Thresholds, TierSelector};
use crate::breaker::{CircuitState, State};
use crate::bulkhead::Compartment;
use crate::config::Provider;
use crate::error::ConfigError;
use crate::ProviderId;

/// The supervisor-wide shutdown flag and the signal that in-flight calls finished.
#[derive(Debug, Default)]
pub(crate) struct Closing {
    pub(crate) closed: AtomicBool,
    pub(crate) settled: Notify,
}

impl Closing {
    /// Whether the supervisor is shutting down. Sequentially consistent: see
    /// `ProviderHandle::enter` for the pairing with the admission counters.
    #[inline(always)]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Starts a shutdown (sequentially consistent, before the in-flight counts are read).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Called whenever a call finishes: wakes a shutdown that waits for in-flight calls.
    #[inline(always)]
    pub(crate) fn call_finished(&self) {
        if self.is_closed() {
            self.settled.notify_waiters();
        }
    }
}

/// The gate as read by a caller: the circuit's state and its outcome epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gate {
    pub(crate) state: CircuitState,
    pub(crate) epoch: u64,
    /// The provider's actor stopped for good.
    pub(crate) stopped: bool,
}

/// The decision state. Only the provider actor mutates it; `status()` reads it. It lives
/// outside the actor so that an actor recovering from a panic carries on with the same
/// circuit.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) breaker: State,
    pub(crate) meter: Option<RateMeter>,
    pub(crate) tiers: Option<TierSelector>,
    pub(crate) thresholds: Option<Thresholds>,
    /// Lock-free successes folded into the breaker.
    pub(crate) folded_successes: u64,
    /// Lock-free successes of an epoch that ended before the actor folded them: counted,
    /// never folded.
    pub(crate) late_successes: u64,
    /// When the actor last sampled its counters.
    pub(crate) last_sample: Instant,
    /// Messages the actor has handled (each runs one decision).
    pub(crate) decisions: u64,
}

/// Everything about one provider that outlives its actor.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: ProviderId,
    pub(crate) config: Provider,
    gate: AtomicU64,
    open_until: AtomicU64,
    /// The same deadline on the cheap clock (nanoseconds since `cheap_epoch`), or 0 when it
    /// was published while tokio's clock was paused: rejections then read tokio's clock.
    open_until_cheap: AtomicU64,
    /// The origin of `open_until_cheap`.
    cheap_epoch: crate::clock::Reading,
    /// Free half-open trial slots, as last published.
    trial_slots: AtomicU32,
    failure_count: AtomicU32,
    /// The origin of `open_until`.
    epoch: Instant,
    pub(crate) counters: Counters,
    pub(crate) bulkhead: Option<Compartment>,
    pub(crate) slow_threshold: Option<Duration>,
    /// Whether the bulkhead is the only reason its calls leave the plain path (no budget,
    /// call timeout or slow-call threshold): a routed call then admits one with a slot
    /// (`ProviderHandle::admit_slotted`), unless a route reads its latency average.
    bulkhead_only: bool,
    pub(crate) core: Mutex<Core>,
    /// The call-duration histograms.
    pub(crate) durations: crate::metrics::Durations,
    /// Whether calls are timed (for the histogram or the slow-call threshold).
    pub(crate) timed: bool,
    /// Test hook: while set, the actor panics on every report.
    #[cfg(feature = "testing")]
    pub(crate) poison_reports: AtomicBool,
    /// Whether a lowest-latency route counts on this provider's latency average (set by the
    /// router actor): calls are timed for it then.
    latency_wanted: AtomicBool,
    /// Lock-free successes taken from the counters by the actor (for [`Shared::load`]).
    taken_successes: AtomicU64,
    /// Moving average of successful routed-call latency, in seconds, as `f64` bits; 0 until
    /// the first sample.
    latency: AtomicU64,
    /// The provider's latest rate-limit headroom (`ProviderHandle::record_headroom`).
    pub(crate) headroom: crate::headroom::HeadroomCell,
    /// Its request and token budgets, if configured.
    pub(crate) budget: Option<std::sync::Arc<crate::budget::Limiter>>,
    /// Its retry budget, if it retries.
    pub(crate) retry: Option<std::sync::Arc<crate::budget::RetryState>>,
    /// Recovery probes run, by outcome (`provider::probe`).
    pub(crate) probes: super::probe::ProbeCounts,
    /// The fleet link, when replicas share circuit state (`fusebox::fleet`): set by the
    /// supervisor before the actor starts, never read on a closed circuit's call path.
    pub(crate) fleet: Option<std::sync::Arc<dyn super::fleet::FleetPort>>,
}

/// A duration in nanoseconds, saturating (a u64 holds 584 years).
#[inline(always)]
fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

/// The gate word: the outcome epoch above [`FLAG_BITS`], then two flags, then the state in
/// the low two bits. A word with its low four bits clear is a closed circuit whose calls take
/// the plain path ([`Shared::plain_epoch`]).
const FLAG_BITS: u32 = 4;
/// Flag: the provider's actor has stopped for good (shut down, or past its panic limit).
const STOPPED: u64 = 1 << 2;
/// Flag: calls need more than the plain path: a bulkhead, a budget, a call timeout, a
/// slow-call threshold, or a latency average a route reads (all need the general path).
const GENERAL: u64 = 1 << 3;
const FLAGS: u64 = STOPPED | GENERAL;

fn encode(state: CircuitState, epoch: u64) -> u64 {
    epoch << FLAG_BITS | u64::from(state.as_gauge())
}

fn decode(word: u64) -> Gate {
    let state = match word & 3 {
        0 => CircuitState::Closed,
        1 => CircuitState::HalfOpen,
        2 => CircuitState::Open,
        _ => CircuitState::Isolated,
    };
    Gate {
        state,
        epoch: word >> FLAG_BITS,
        stopped: word & STOPPED != 0,
    }
}

impl Shared {
    pub(crate) fn new(config: Provider, seed: u64, now: Instant) -> Result<Self, ConfigError> {
        let breaker = State::with_seed(&config.breaker, now, seed)?;
        let tiers = config
            .adaptive
            .as_ref()
            .map(|a| TierSelector::new(a, &config.breaker));
        let thresholds = tiers.as_ref().map(TierSelector::thresholds);
        let mut core = Core {
            breaker,
            meter: config
                .adaptive
                .as_ref()
                .map(|a| RateMeter::new(a.window, now, 0)),
            tiers,
            thresholds,
            folded_successes: 0,
            late_successes: 0,
            last_sample: now,
            decisions: 0,
        };
        if let Some(t) = thresholds {
            core.breaker.set_thresholds(t.failures, t.open_for);
        }
        let id = ProviderId::with_meta(
            &config.name,
            config.meta.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let general = config.bulkhead.is_some()
            || config.budget.is_some()
            || config.call_timeout.is_some()
            || config.breaker.slow_call.is_some();
        let flags = if general { GENERAL } else { 0 };
        let bulkhead_only = config.bulkhead.is_some()
            && config.budget.is_none()
            && config.call_timeout.is_none()
            && config.breaker.slow_call.is_none();
        Ok(Shared {
            durations: crate::metrics::Durations::new(&id),
            timed: config.record_durations || config.breaker.slow_call.is_some(),
            id,
            gate: AtomicU64::new(encode(CircuitState::Closed, 0) | flags),
            open_until: AtomicU64::new(0),
            open_until_cheap: AtomicU64::new(0),
            cheap_epoch: crate::clock::now(),
            trial_slots: AtomicU32::new(0),
            failure_count: AtomicU32::new(0),
            epoch: now,
            counters: Counters::new(),
            bulkhead: config.bulkhead.as_ref().map(Compartment::new),
            slow_threshold: config.breaker.slow_call.map(|(d, _)| d),
            bulkhead_only,
            core: Mutex::new(core),
            latency: AtomicU64::new(0),
            taken_successes: AtomicU64::new(0),
            latency_wanted: AtomicBool::new(false),
            headroom: crate::headroom::HeadroomCell::new(),
            budget: config
                .budget
                .as_ref()
                .map(|b| std::sync::Arc::new(crate::budget::Limiter::new(b, now))),
            retry: config
                .retry
                .map(|r| std::sync::Arc::new(crate::budget::RetryState::new(r, seed, now))),
            probes: super::probe::ProbeCounts::default(),
            fleet: None,
            #[cfg(feature = "testing")]
            poison_reports: AtomicBool::new(false),
            config,
        })
    }

    /// A provider built from `config` that takes over `previous`'s circuit (its state, open
    /// deadline, generation and counts: see `State::carry_over`): a reloaded provider.
    pub(crate) fn carrying(
        config: Provider,
        seed: u64,
        now: Instant,
        previous: &Shared,
    ) -> Result<Self, ConfigError> {
        let mut shared = Shared::new(config, seed, now)?;
        // An unchanged budget or retry setting keeps what it has counted.
        if shared.config.budget == previous.config.budget {
            shared.budget.clone_from(&previous.budget);
        }
        if shared.config.retry == previous.config.retry {
            shared.retry.clone_from(&previous.retry);
        }
        {
            let old = previous.core();
            let mut core = shared.core();
            core.breaker.carry_over(&old.breaker);
            if let (Some(headroom), Some(at)) = (
                previous.headroom.snapshot(),
                previous.headroom.recorded_at(),
            ) {
                shared.headroom.record(headroom, at);
            }
            if let Some(t) = core.thresholds {
                core.breaker.set_thresholds(t.failures, t.open_for);
            }
            shared.publish(&core.breaker);
        }
        Ok(shared)
    }

    #[inline]
    pub(crate) fn gate(&self) -> Gate {
        decode(self.gate.load(Ordering::Acquire))
    }

    /// The epoch of a closed circuit whose calls take the plain path (no bulkhead, budget,
    /// call timeout, slow-call threshold or latency average; the actor running): one load.
    #[inline(always)]
    pub(crate) fn plain_epoch(&self) -> Option<u64> {
        let word = self.gate.load(Ordering::Acquire);
        (word & ((1 << FLAG_BITS) - 1) == 0).then_some(word >> FLAG_BITS)
    }

    /// The epoch of a closed circuit whose calls leave the plain path for its bulkhead alone
    /// (see `bulkhead_only`), its actor running: `None` otherwise.
    #[inline]
    pub(crate) fn slotted_epoch(&self) -> Option<u64> {
        if !self.bulkhead_only || self.latency_wanted() {
            return None;
        }
        let word = self.gate.load(Ordering::Acquire);
        (word & ((1 << FLAG_BITS) - 1) == GENERAL).then_some(word >> FLAG_BITS)
    }

    /// Publishes that the provider's actor stopped for good: calls take the general path,
    /// which refuses them.
    pub(crate) fn mark_stopped(&self) {
        self.gate.fetch_or(STOPPED, Ordering::AcqRel);
    }

    /// Free half-open trial slots as published (read after the gate).
    #[inline]
    pub(crate) fn trial_slots(&self) -> u32 {
        self.trial_slots.load(Ordering::Acquire)
    }

    /// The time left until the deadline published with the gate (the open deadline, or
    /// while half-open the earliest trial timeout: see [`publish`](Self::publish)): one read
    /// of the cheap clock and one subtraction of nanoseconds, or of tokio's clock when the
    /// deadline was published while that clock was paused. Zero once it is due.
    #[inline]
    pub(crate) fn until_deadline(&self) -> Duration {
        let cheap = self.open_until_cheap.load(Ordering::Acquire);
        if cheap != 0 {
            let now = crate::clock::nanos_between(self.cheap_epoch, crate::clock::now());
            return Duration::from_nanos(cheap.saturating_sub(now));
        }
        let now = nanos(Instant::now().saturating_duration_since(self.epoch));
        Duration::from_nanos(self.open_until.load(Ordering::Acquire).saturating_sub(now))
    }

    pub(crate) fn failure_count(&self) -> u32 {
        self.failure_count.load(Ordering::Acquire)
    }

    /// Whether calls must be timed for a lowest-latency route.
    #[inline]
    pub(crate) fn latency_wanted(&self) -> bool {
        self.latency_wanted.load(Ordering::Relaxed)
    }

    /// Marks this provider as a member of a lowest-latency route (from then on its calls are
    /// timed for the latency average).
    pub(crate) fn want_latency(&self) {
        self.latency_wanted.store(true, Ordering::Relaxed);
        // Timed calls take the general path.
        self.gate.fetch_or(GENERAL, Ordering::AcqRel);
    }

    /// Folds a successful call's latency into the moving average (weight 0.2).
    pub(crate) fn record_latency(&self, latency: Duration) {
        let sample = latency.as_secs_f64();
        let _ = self
            .latency
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                let old = f64::from_bits(bits);
                let new = if bits == 0 {
                    sample
                } else {
                    old + 0.2 * (sample - old)
                };
                Some(new.to_bits())
            });
    }

    /// The moving average of successful routed-call latency; `None` before any sample.
    pub(crate) fn latency(&self) -> Option<Duration> {
        let bits = self.latency.load(Ordering::Acquire);
        (bits != 0).then(|| Duration::from_secs_f64(f64::from_bits(bits)))
    }

    /// Calls in flight and queued relative to the bulkhead's capacity (a provider without a
    /// bulkhead counts as capacity 1), read without locks. Half-open trials are not counted.
    pub(crate) fn load(&self) -> f64 {
        let c = &self.counters;
        let (busy, capacity) = match &self.bulkhead {
            Some(b) => (u64::from(b.in_use() + b.queued()), b.capacity()),
            None => {
                let ended = self.taken_successes.load(Ordering::Acquire)
                    + c.pending_successes()
                    + c.get(Count::StaleSuccesses)
                    + c.get(Count::FastIgnored)
                    + c.get(Count::FastCancelled)
                    + c.get(Count::Reported);
                (c.get(Count::Admitted).saturating_sub(ended), 1)
            }
        };
        busy as f64 / f64::from(capacity)
    }

    /// Folds the lock-free successes of the current epoch into the breaker: they end the
    /// run of failures and fill the rate window. Status reads fold too, so what they show
    /// includes every success counted so far.
    pub(crate) fn fold(&self, core: &mut Core, now: Instant) {
        let (current, late) = self.counters.take_successes(core.breaker.epoch());
        core.breaker.record_successes(current, now);
        self.note_taken(core, current, late);
    }

    /// Retags the success counters for the epoch the breaker has just entered, before it is
    /// published: successes still arriving for the old epoch are refused from now on, and
    /// any that landed after the last fold are counted as late.
    pub(crate) fn retag(&self, core: &mut Core) {
        let (current, late) = self.counters.take_successes(core.breaker.epoch());
        self.note_taken(core, current, late);
    }

    fn note_taken(&self, core: &mut Core, current: u64, late: u64) {
        core.folded_successes += current;
        core.late_successes += late;
        self.taken_successes
            .fetch_add(current + late, Ordering::Release);
    }

    /// Locks the decision state. A panic while it was held (a bug) leaves it usable.
    pub(crate) fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes the breaker's state for the lock-free path. Only the actor calls this.
    ///
    /// Published with the gate: the next deadline (the open deadline, or while half-open the
    /// earliest trial timeout, what a rejection's `retry_after` counts down to) and the free
    /// trial slots, so that a half-open circuit with every slot taken rejects without a
    /// message. Both are stored before the gate, which callers read first.
    pub(crate) fn publish(&self, breaker: &State) {
        if let Some(until) = breaker.next_deadline() {
            let now = Instant::now();
            // Tokio's clock runs unless it is paused (then two reads agree, since nothing
            // advances it between them on this thread). A running clock lets rejections count
            // down on the cheap clock, which keeps real time with it: the deadline is moved
            // onto it here. A paused one (tests) keeps them on tokio's clock, so that its
            // advances show in `retry_after`.
            let running = Instant::now() != now;
            let cheap = if running {
                let left = until.saturating_duration_since(now);
                let at = crate::clock::nanos_between(self.cheap_epoch, crate::clock::now());
                at.saturating_add(nanos(left)).max(1)
            } else {
                0
            };
            self.open_until.store(
                nanos(until.saturating_duration_since(self.epoch)),
                Ordering::Release,
            );
            self.open_until_cheap.store(cheap, Ordering::Release);
        }
        self.trial_slots
            .store(breaker.free_trial_slots().unwrap_or(0), Ordering::Release);
        self.failure_count
            .store(breaker.failure_count(), Ordering::Release);
        let word = encode(breaker.state(), breaker.epoch());
        // The flags are kept (set by others, never cleared).
        let _ = self
            .gate
            .fetch_update(Ordering::Release, Ordering::Relaxed, |old| {
                Some(old & FLAGS | word)
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_words_round_trip() {
        for state in [
            CircuitState::Closed,
            CircuitState::HalfOpen,
            CircuitState::Open,
            CircuitState::Isolated,
        ] {
            for epoch in [0, 1, 7, u64::MAX >> FLAG_BITS] {
                let gate = Gate {
                    state,
                    epoch,
                    stopped: false,
                };
                assert_eq!(decode(encode(state, epoch)), gate);
                assert!(decode(encode(state, epoch) | STOPPED).stopped);
            }
        }
    }
}
