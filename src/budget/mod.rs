//! Budgets and retries: what bounds the load fusebox sends a provider beyond its circuit and
//! bulkhead.
//!
//! - [`Budget`]: request and token limits per provider (a provider's RPM and TPM), with
//!   token reservations settled from the usage a call reports ([`Metered`]).
//! - [`Retry`]: same-provider retries of failures and timeouts, with back-off and jitter,
//!   bounded by a retry budget so that an outage cannot multiply the load.
//!
//! Both are per-provider state shared by every caller, lock-free on the call path, and
//! absent (no cost at all) unless configured.

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
