//! The cheap clock: the CPU's monotonic counter (`quanta`, calibrated once per process),
//! half the cost of a system clock read here. It times plain attempts that are ready at
//! their first poll, and counts down the published deadline of an open circuit's
//! rejections (see `provider::shared`). It does not follow paused tokio time: whatever
//! must (a timer, a deadline published while tokio's clock is paused, an attempt that
//! suspends) reads tokio's clock instead.

use std::sync::OnceLock;
use std::time::Duration;

static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();

#[inline(always)]
fn clock() -> &'static quanta::Clock {
    CLOCK.get_or_init(quanta::Clock::new)
}

/// A reading of the cheap clock, in its own units (see [`since`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reading(u64);

/// Reads the cheap clock.
#[inline(always)]
pub(crate) fn now() -> Reading {
    Reading(clock().raw())
}

/// Nanoseconds from `earlier` to `later` (zero if `later` is not later).
#[inline(always)]
pub(crate) fn nanos_between(earlier: Reading, later: Reading) -> u64 {
    clock().delta_as_nanos(earlier.0, later.0)
}

/// The time from `earlier` to now.
#[inline(always)]
pub(crate) fn since(earlier: Reading) -> Duration {
    Duration::from_nanos(nanos_between(earlier, now()))
}
