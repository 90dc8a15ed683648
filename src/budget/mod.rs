//! Budgets and retries: what bounds the load fusebox sends a provider beyond its circuit and
//! bulkhead.
//!
//! - [`Budget`]: request and token limits per provider (a provider's RPM and TPM), with
//!   token reservations settled from the usage a call reports ([`Metered`]).
//! - [`Retry`]: same-provider retries of failures and timeouts, with back-off and jitter,
//!   bounded by a retry budget so that an outage cannot multiply the load.
//!
//! Both are per-provider state shared by every caller, lock-free on the call path, and
//! absent (no cost at all) unless configured. Neither ever counts against a circuit: a call
//! over budget is not made (`CallError::OverBudget`, or a routed skip,
//! `AttemptOutcome::SkippedBudget`), and each retry is an ordinary attempt.
//!
//! # The retry budget
//!
//! Retries are bounded the way Finagle's `RetryBudget` and Envoy's retry budgets bound them:
//! every call (its first attempt at a provider) deposits one unit, every retry withdraws
//! one, and a retry is allowed only while the retries in the sliding window stay within
//!
//! ```text
//! retries ≤ ⌊ratio × calls⌋ + min_per_second × window_seconds
//! ```
//!
//! with `ratio` 0.2, `min_per_second` 10 and a 10-second window by default
//! ([`Retry::budget`], [`Retry::budget_window`]). So while a provider is down, retries add
//! at most 20 % to the load it receives (plus the small floor that lets a provider with
//! little traffic retry at all), where three attempts per call would triple it. The window
//! is ten slots of a tenth of it each, every slot one atomic word (its slot number and its
//! count): deposits and withdrawals take no lock, and a withdrawal re-checks the bound in
//! the compare-and-swap that takes it, so concurrent retries cannot overshoot it.
//!
//! A provider's [`Retry`] has its budget; a route's own `Retry` (`Route::retry`) has one
//! for the route, shared by its members.
//!
//! # Tokens
//!
//! Request budgets are a governor GCRA limiter (one atomic word, driven by tokio's clock so
//! paused time moves it). Token budgets are reserved at an estimate and settled with the
//! actual usage, which governor cannot express (its cells are spent, never given back), so
//! they are a GCRA of the same shape kept here: see `Budget`.

mod limits;
mod retry;

pub use limits::{Budget, BudgetStatus, DEFAULT_ESTIMATE};
pub(crate) use limits::{Limiter, OverBudget, Reservation};
pub use retry::Retry;
pub(crate) use retry::RetryState;

/// A provider's answer with the tokens it used, returned by the operation of a metered call
/// (`Supervisor::call_metered`, `Supervisor::route_metered`), so the provider's token
/// budget is settled with the actual usage rather than the estimate.
///
/// `fusebox::http::usage` (feature `reqwest`) reads the usage of an OpenAI or Anthropic
/// response body.
///
/// ```
/// use fusebox::Metered;
///
/// let reply = Metered::new("hello".to_owned(), 212);
/// assert_eq!(reply.tokens, Some(212));
/// let unknown = Metered::unknown(());
/// assert_eq!(unknown.tokens, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metered<T> {
    /// The answer.
    pub value: T,
    /// The tokens the call used (prompt and completion), if the provider said; `None`
    /// leaves the estimate reserved.
    pub tokens: Option<u64>,
}

impl<T> Metered<T> {
    /// `value`, having used `tokens`.
    pub fn new(value: T, tokens: u64) -> Self {
        Metered {
            value,
            tokens: Some(tokens),
        }
    }

    /// `value`, its usage unknown: the estimate stands.
    pub fn unknown(value: T) -> Self {
        Metered {
            value,
            tokens: None,
        }
    }
}
