//! Per-provider call counters, striped across cache lines so that threads recording calls
//! at the same time do not contend on one line.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

/// What the lock-free call path counts. Everything the actor decides is counted by the
/// breaker state instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    /// Calls admitted (fast path and trials).
    Admitted,
    /// Successes settled without a message to the actor.
    FastSuccesses,
    /// Ignored outcomes settled without a message.
    FastIgnored,
    /// Cancellations settled without a message.
    FastCancelled,
    /// Calls rejected by an open circuit without a message.
    RejectedOpen,
    /// Calls rejected by an isolated circuit.
    RejectedIsolated,
    /// Calls turned away by a full bulkhead.
    BulkheadFull,
    /// Calls that waited the whole queue timeout.
    QueueTimeout,
    /// Calls that exceeded the call timeout (also counted as failures by the actor).
    Timeouts,
    /// Calls admitted on the fast path whose outcome was handed to the actor.
    Reported,
    /// Successes of calls admitted under an older generation: counted, never folded into
    /// the breaker.
    StaleSuccesses,
}

const COUNTS: usize = 11;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe([AtomicU64; COUNTS]);

/// A set of striped counters.
#[derive(Debug)]
pub(crate) struct Counters {
    stripes: Box<[Stripe]>,
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
    static SLOT: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Relaxed)
    };
}

impl Counters {
    pub(crate) fn new() -> Self {
        Counters {
            stripes: (0..stripe_count()).map(|_| Stripe::default()).collect(),
        }
    }

    #[inline]
    pub(crate) fn add(&self, count: Count, n: u64) {
        let slot = SLOT.with(|s| *s) & (self.stripes.len() - 1);
        self.stripes[slot].0[count as usize].fetch_add(n, Relaxed);
    }

    /// The total over all stripes. Not a snapshot across counters: read at quiescence for
    /// exact sums.
    pub(crate) fn get(&self, count: Count) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0[count as usize].load(Relaxed))
            .fold(0, u64::wrapping_add)
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
        assert_eq!(c.get(Count::FastSuccesses), 0);
    }
}
