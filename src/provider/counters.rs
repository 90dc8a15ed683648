//! Per-provider call counters, striped across cache lines so that threads recording calls
//! at the same time do not contend on one line.
//!
//! Successes on the lock-free path are counted per outcome epoch: each stripe holds one word
//! with the epoch it counts for in its top [`TAG_BITS`] bits and the count below. A success
//! lands only if its stripe still counts for the epoch the call was admitted under (one
//! compare-and-swap), so the actor, which retags every stripe before it publishes a new
//! epoch, never folds a success of an older epoch into the breaker.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, Ordering::Relaxed};
use std::sync::OnceLock;

/// What the lock-free call path counts. Everything the actor decides is counted by the
/// breaker state instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    /// Calls admitted on the provider's own path (closed circuits, with or without a
    /// bulkhead). Half-open trials are admitted by the actor and counted by the breaker.
    Admitted,
    /// Ignored outcomes settled without a message.
    FastIgnored,
    /// Cancellations settled without a message.
    FastCancelled,
    /// Calls rejected by an open circuit without a message.
    RejectedOpen,
    /// Calls rejected by an isolated circuit.
    RejectedIsolated,
    /// Calls rejected without a message by a half-open circuit with every trial slot taken.
    RejectedHalfOpen,
    /// Calls turned away by a full bulkhead.
    BulkheadFull,
    /// Calls that waited the whole queue timeout.
    QueueTimeout,
    /// Calls that exceeded the call timeout (also counted as failures by the actor).
    Timeouts,
    /// Calls admitted on the fast path whose outcome was handed to the actor.
    Reported,
    /// Successes of calls admitted under an older epoch: counted, never folded into the
    /// breaker.
    StaleSuccesses,
}

const COUNTS: usize = 11;

/// Bits of a success word that hold the epoch it counts for.
pub(crate) const TAG_BITS: u32 = 24;
const COUNT_BITS: u32 = 64 - TAG_BITS;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

fn tag(epoch: u64) -> u64 {
    epoch << COUNT_BITS
}

fn same_epoch(word: u64, epoch: u64) -> bool {
    word >> COUNT_BITS == epoch & ((1 << TAG_BITS) - 1)
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe {
    counts: [AtomicU64; COUNTS],
    /// Successes not yet folded into the breaker, tagged with their epoch.
    successes: AtomicU64,
}

/// A set of striped counters.
#[derive(Debug)]
pub(crate) struct Counters {
    stripes: Box<[Stripe]>,
    /// The counts added with [`add`](Counters::add): each thread on a line of its own.
    plain: crate::tally::Tally<COUNTS>,
}

fn stripe_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(4, |n| n.get())
            .next_power_of_two()
            .min(64)
    })
}

thread_local! {
    /// This thread's stripe, assigned at its first count (`usize::MAX` until then). A `const`
    /// initialiser: reading it is one thread-local load, with no lazy-initialisation check.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's stripe number (any number: it is masked by the stripe count).
#[inline(always)]
fn slot() -> usize {
    let slot = SLOT.get();
    if slot != usize::MAX {
        return slot;
    }
    assign_slot()
}

#[cold]
fn assign_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // Masked below usize::MAX, the "unassigned" mark.
    let slot = NEXT.fetch_add(1, Relaxed) & (usize::MAX >> 1);
    SLOT.set(slot);
    slot
}

impl Counters {
    pub(crate) fn new() -> Self {
        Counters {
            stripes: (0..stripe_count()).map(|_| Stripe::default()).collect(),
            plain: crate::tally::Tally::default(),
        }
    }

    #[inline(always)]
    fn stripe(&self) -> &Stripe {
        let slot = slot() & (self.stripes.len() - 1);
        &self.stripes[slot]
    }

    /// Adds `n` to a count nothing pairs with the shutdown flag (a rejection, a timeout):
    /// on this thread's own line, without a read-modify-write (see [`crate::tally`]).
    #[inline(always)]
    pub(crate) fn add(&self, count: Count, n: u64) {
        self.plain.add(count as usize, n);
    }

    /// Counts the end of a call admitted on the lock-free path (ignored, cancelled, stale or
    /// handed to the actor), sequentially consistent like [`admit`](Self::admit): the
    /// caller reads the shutdown flag next (`Closing::call_finished`), and a shutdown that
    /// set it and then reads the counts must either see this end or be seen, so that it is
    /// woken. (On x86 a sequentially consistent increment is the same `lock` instruction as
    /// a relaxed one.)
    #[inline]
    pub(crate) fn end(&self, count: Count) {
        self.stripe().counts[count as usize].fetch_add(1, Ordering::SeqCst);
    }

    /// Counts an admission with a sequentially consistent increment, so that a shutdown
    /// that sets its flag and then reads [`get`](Self::get) either sees this admission or
    /// is seen by the caller's next (sequentially consistent) read of the flag.
    #[inline(always)]
    pub(crate) fn admit(&self) {
        self.stripe().counts[Count::Admitted as usize].fetch_add(1, Ordering::SeqCst);
    }

    /// Takes back an admission counted by [`admit`](Self::admit) on this thread (the caller
    /// found the supervisor closing and never ran the call).
    #[inline]
    pub(crate) fn unadmit(&self) {
        self.stripe().counts[Count::Admitted as usize].fetch_sub(1, Ordering::SeqCst);
    }

    /// Counts a success of a call admitted under `epoch`. `false` when the epoch is over
    /// (the actor has retagged the stripes): the caller counts it as stale instead.
    ///
    /// The successful update is sequentially consistent, as for [`end`](Self::end): the
    /// shutdown flag is read next.
    #[inline(always)]
    pub(crate) fn success(&self, epoch: u64) -> bool {
        self.stripe()
            .successes
            .fetch_update(Ordering::SeqCst, Relaxed, |word| {
                // Saturates: past 2^40 unfolded successes only the rate window's count is
                // short, never the run-ending fact that one succeeded.
                (same_epoch(word, epoch)).then(|| word + u64::from(word & COUNT_MASK != COUNT_MASK))
            })
            .is_ok()
    }

    /// Takes every unfolded success of `epoch` (the actor's fold), leaving the stripes
    /// counting `epoch` from zero. Returns the successes of `epoch`, and those of any other
    /// epoch found (late successes of an epoch already over).
    pub(crate) fn take_successes(&self, epoch: u64) -> (u64, u64) {
        let (mut current, mut stale) = (0, 0);
        for stripe in self.stripes.iter() {
            let word = stripe.successes.swap(tag(epoch), Ordering::AcqRel);
            if same_epoch(word, epoch) {
                current += word & COUNT_MASK;
            } else {
                stale += word & COUNT_MASK;
            }
        }
        (current, stale)
    }

    /// Successes counted and not yet taken, whatever their epoch. Lock-free and not a
    /// snapshot: for load estimates.
    pub(crate) fn pending_successes(&self) -> u64 {
        self.stripes
            .iter()
            // Sequentially consistent: read by a shutdown after it set its flag (see `end`).
            .map(|s| s.successes.load(Ordering::SeqCst) & COUNT_MASK)
            .sum()
    }

    /// The total over all stripes. Not a snapshot across counters: read at quiescence for
    /// exact sums. Sequentially consistent (see [`admit`](Self::admit)).
    pub(crate) fn get(&self, count: Count) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.counts[count as usize].load(Ordering::SeqCst))
            .fold(self.plain.get(count as usize), u64::wrapping_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_across_threads() {
        let c = std::sync::Arc::new(Counters::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        c.add(Count::Admitted, 1);
                    }
                    c.add(Count::FastIgnored, 3);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(c.get(Count::Admitted), 40_000);
        assert_eq!(c.get(Count::FastIgnored), 12);
        assert_eq!(c.get(Count::StaleSuccesses), 0);
    }

    #[test]
    fn successes_of_an_epoch_that_is_over_are_refused() {
        let c = Counters::new();
        assert!(c.success(0));
        assert!(c.success(0));
        assert_eq!(c.take_successes(0), (2, 0));
        assert!(c.success(0));
        // The actor moves to epoch 1: the leftover success of epoch 0 is stale.
        assert_eq!(c.take_successes(1), (0, 1));
        assert!(
            !c.success(0),
            "a success of epoch 0 must not land in epoch 1"
        );
        assert!(c.success(1));
        assert_eq!(c.pending_successes(), 1);
        assert_eq!(c.take_successes(1), (1, 0));
        // Tags wrap at 2^TAG_BITS epochs, far beyond any call's lifetime.
        let wrapped = 1u64 << TAG_BITS;
        assert_eq!(c.take_successes(wrapped + 1), (0, 0));
        assert!(c.success(wrapped + 1));
        assert!(!c.success(wrapped + 2));
    }

    #[test]
    fn admissions_taken_back_leave_no_trace() {
        let c = Counters::new();
        c.admit();
        c.admit();
        c.unadmit();
        assert_eq!(c.get(Count::Admitted), 1);
    }
}
