//! The circuit breaker as a pure state machine: no async, no locks, no clock reads.
//!
//! [`State`] takes the current time as an argument and returns the [`Transition`] each call
//! caused, which makes every timer testable without waiting. The provider actor feeds it
//! `tokio::time::Instant`s; tests feed it whatever instants they like.
//!
//! - [`state`](State): Closed / Open / HalfOpen / Isolated, generations and outcome epochs,
//!   statistics.
//! - `window`: the consecutive count and the count- and time-based sliding windows.
//! - `backoff`: the open duration's growth, cap and jitter.
//! - `time`: deadline arithmetic that saturates instead of overflowing.
//!
//! Ratios (failure rate, slow-call rate) are kept as integer parts per billion, converted
//! once when the [`State`] is built, so a rate exactly at its threshold always trips: see
//! [`RATIO_SCALE`].

mod backoff;
mod state;
mod time;
mod window;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use state::{
    Admission, Cause, CircuitState, Outcome, Permit, Rejection, State, Stats, Transition,
    HISTORY_LEN,
};

/// The precision of a configured ratio: ratios are rounded to the nearest billionth (parts
/// per billion) when a [`State`] is built, and rates are then compared with integers, so
/// that "at least `ratio` of the calls" holds exactly at the boundary (0.55 of 100 calls is
/// 55 calls, not 55.000000000000007).
pub const RATIO_SCALE: u64 = 1_000_000_000;

/// `ratio` in parts per billion, rounded to nearest (saturating; NaN and negative give 0).
pub(crate) fn ratio_ppb(ratio: f64) -> u64 {
    // An `as` cast from float saturates and maps NaN to 0.
    (ratio * RATIO_SCALE as f64).round() as u64
}

/// Whether `count` of `calls` is at least the ratio `ppb` (parts per billion), exactly:
/// `count / calls >= ppb / 1e9` without rounding.
pub(crate) fn reaches_ratio(count: u64, calls: u64, ppb: u64) -> bool {
    u128::from(count) * u128::from(RATIO_SCALE) >= u128::from(ppb) * u128::from(calls)
}
