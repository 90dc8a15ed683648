//! The circuit breaker as a pure state machine: no async, no locks, no clock reads.
//!
//! [`State`] takes the current time as an argument and returns the [`Transition`] each call
//! caused, which makes every timer testable without waiting. The provider actor feeds it
//! `tokio::time::Instant`s; tests feed it whatever instants they like.
//!
//! - [`state`](State): Closed / Open / HalfOpen / Isolated, generations, statistics.
//! - `window`: the consecutive count and the count- and time-based sliding windows.
//! - `backoff`: the open duration's growth, cap and jitter.

mod backoff;
mod state;
mod window;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use state::{
    Admission, Cause, CircuitState, Outcome, Permit, Rejection, State, Stats, Transition,
    HISTORY_LEN,
};
