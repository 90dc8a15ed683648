//! The bulkhead at run time: permits plus a bounded waiting queue with a timeout.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::config::Bulkhead;

/// Why no slot was had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// Every slot and every queue place is taken.
    Full,
    /// Waited the whole queue timeout.
    Timeout(Duration),
    /// The bulkhead was closed for shutdown.
    Closed,
}

/// One provider's concurrency limit.
#[derive(Debug)]
pub(crate) struct Compartment {
    slots: Arc<Semaphore>,
    capacity: u32,
    waiting: AtomicU32,
    /// Waiters dropped (by their caller) before they got a slot or gave up.
    abandoned: AtomicU64,
    max_waiting: u32,
    queue_timeout: Duration,
}

/// Takes a queue place back when the waiter is done, however it ends, and counts a waiter
/// whose caller dropped it.
struct QueuePlace<'a> {
    bulkhead: &'a Compartment,
    settled: bool,
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.bulkhead.waiting.fetch_sub(1, Ordering::AcqRel);
        if !self.settled {
            self.bulkhead.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Compartment {
    pub(crate) fn new(config: &Bulkhead) -> Self {
        Compartment {
            slots: Arc::new(Semaphore::new(config.max_concurrent as usize)),
            capacity: config.max_concurrent,
            waiting: AtomicU32::new(0),
            abandoned: AtomicU64::new(0),
            max_waiting: config.queue,
            queue_timeout: config.queue_timeout,
        }
    }

    /// A slot if one is free now; `Err(None)` when every slot is taken but the queue may
    /// take the caller, `Err(Some(denied))` when it may not.
    #[inline]
    pub(crate) fn try_acquire(&self) -> Result<OwnedSemaphorePermit, Option<Denied>> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(permit),
            Err(TryAcquireError::Closed) => Err(Some(Denied::Closed)),
            Err(TryAcquireError::NoPermits) if self.max_waiting == 0 => Err(Some(Denied::Full)),
            Err(TryAcquireError::NoPermits) => Err(None),
        }
    }

    /// A slot if one is free now, taken without a permit to hold: it must be given back with
    /// [`give_back`](Self::give_back) exactly once. For a call that keeps its slot as a flag
    /// (a routed call's fast pass) rather than as a permit.
    #[inline]
    pub(crate) fn try_take(&self) -> bool {
        match self.slots.try_acquire() {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Gives back a slot taken by [`try_take`](Self::try_take).
    pub(crate) fn give_back(&self) {
        self.slots.add_permits(1);
    }

    /// A slot, at once or (when `queue` is set) after waiting in the queue. Returns whether
    /// it had to wait.
    ///
    /// Cancel safe: a dropped waiter gives its queue place back.
    pub(crate) async fn acquire(
        &self,
        queue: bool,
    ) -> Result<(OwnedSemaphorePermit, bool), Denied> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => return Ok((permit, false)),
            Err(TryAcquireError::Closed) => return Err(Denied::Closed),
            Err(TryAcquireError::NoPermits) if !queue => return Err(Denied::Full),
            Err(TryAcquireError::NoPermits) => {}
        }
        let max = self.max_waiting;
        if self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w < max).then_some(w + 1)
            })
            .is_err()
        {
            return Err(Denied::Full);
        }
        let mut place = QueuePlace {
            bulkhead: self,
            settled: false,
        };
        let waited =
            tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await;
        place.settled = true;
        match waited {
            Ok(Ok(permit)) => Ok((permit, true)),
            Ok(Err(_closed)) => Err(Denied::Closed),
            Err(_elapsed) => Err(Denied::Timeout(self.queue_timeout)),
        }
    }

    /// Whether callers may wait for a slot.
    pub(crate) fn has_queue(&self) -> bool {
        self.max_waiting > 0
    }

    /// Callers waiting for a slot.
    pub(crate) fn queued(&self) -> u32 {
        self.waiting.load(Ordering::Acquire)
    }

    /// Slots in use.
    pub(crate) fn in_use(&self) -> u32 {
        self.capacity
            .saturating_sub(u32::try_from(self.slots.available_permits()).unwrap_or(u32::MAX))
    }

    /// Waiters whose callers dropped them while they waited.
    pub(crate) fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// The slot count.
    pub(crate) fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Wakes every waiter with [`Denied::Closed`] and refuses new ones.
    pub(crate) fn close(&self) {
        self.slots.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn full_queue_and_timeout() {
        let b = Compartment::new(
            &Bulkhead::new(1)
                .queue(1)
                .queue_timeout(Duration::from_secs(5)),
        );
        let (held, waited) = b.acquire(true).await.expect("slot");
        assert!(!waited);
        let b = Arc::new(b);
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.acquire(true).await.map(|(_, waited)| waited) }
        });
        tokio::task::yield_now().await;
        assert_eq!(b.queued(), 1);
        assert_eq!(b.acquire(true).await.err(), Some(Denied::Full));
        drop(held);
        assert_eq!(waiter.await.expect("join"), Ok(true));
        assert_eq!((b.slots.available_permits(), b.queued()), (1, 0));

        let _held = b.acquire(true).await.expect("slot");
        let start = tokio::time::Instant::now();
        assert_eq!(
            b.acquire(true).await.err(),
            Some(Denied::Timeout(Duration::from_secs(5)))
        );
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(b.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_gives_its_place_back() {
        let b = Arc::new(Compartment::new(&Bulkhead::new(1).queue(1)));
        let _held = b.acquire(true).await.expect("slot");
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.acquire(true).await.is_ok() }
        });
        tokio::task::yield_now().await;
        assert_eq!(b.queued(), 1);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!((b.queued(), b.abandoned()), (0, 1));
    }

    #[tokio::test]
    async fn close_wakes_waiters() {
        let b = Arc::new(Compartment::new(&Bulkhead::new(1).queue(4)));
        let _held = b.acquire(true).await.expect("slot");
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.acquire(true).await.err() }
        });
        tokio::task::yield_now().await;
        b.close();
        assert_eq!(waiter.await.expect("join"), Some(Denied::Closed));
    }
}
