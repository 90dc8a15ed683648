//! [`Bulkhead`]: how many calls may run against a provider at once.

use std::time::Duration;

use super::{check, Scope};
use crate::error::ConfigError;

/// Concurrency limit for one provider: at most `max_concurrent` calls in flight, at most
/// `queue` callers waiting for a slot, each for at most `queue_timeout`.
///
/// A full bulkhead rejects with `CallError::BulkheadFull`; a caller that waited too long gets
/// `CallError::QueueTimeout`. Neither counts against the provider's circuit.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use fusebox::Bulkhead;
///
/// let bulkhead = Bulkhead::new(10).queue(100).queue_timeout(Duration::from_secs(30));
/// # let _ = bulkhead;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bulkhead {
    pub(crate) max_concurrent: u32,
    pub(crate) queue: u32,
    pub(crate) queue_timeout: Duration,
}

impl Bulkhead {
    /// At most `max_concurrent` calls in flight at once, and no waiting queue.
    pub fn new(max_concurrent: u32) -> Self {
        Bulkhead {
            max_concurrent,
            queue: 0,
            queue_timeout: Duration::from_secs(30),
        }
    }

    /// How many callers may wait for a slot when all are taken.
    ///
    /// Defaults to 0: a call that finds every slot taken is rejected at once.
    pub fn queue(mut self, max_waiting: u32) -> Self {
        self.queue = max_waiting;
        self
    }

    /// How long a queued caller waits for a slot before giving up.
    ///
    /// Defaults to 30 seconds.
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// The concurrency limit.
    pub fn max_concurrent(&self) -> u32 {
        self.max_concurrent
    }

    /// The queue's capacity.
    pub fn max_waiting(&self) -> u32 {
        self.queue
    }

    pub(crate) fn validate(&self, scope: &Scope) -> Result<(), ConfigError> {
        check::positive(scope, "bulkhead.max_concurrent", self.max_concurrent)?;
        // A semaphore holds at most `Semaphore::MAX_PERMITS` (usize::MAX >> 3); u32 fits.
        if self.queue > 0 {
            check::nonzero(scope, "bulkhead.queue_timeout", self.queue_timeout)?;
        }
        check::at_most_max(scope, "bulkhead.queue_timeout", self.queue_timeout)?;
        Ok(())
    }
}
