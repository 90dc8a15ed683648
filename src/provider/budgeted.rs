//! Direct calls that declare their tokens ([`ProviderHandle::call_metered`]) or retry on the
//! provider ([`ProviderHandle::call_retrying`]). The state (budgets, retry budgets) lives in
//! [`crate::budget`]; this is how a direct call uses it.

use std::future::Future;

use tokio::time::Instant;

use super::handle::Admitted;
use crate::attempt::{self, Ended};
use crate::budget::{Metered, Reservation};
use crate::{CallError, CircuitState, Classify, ProviderHandle, Verdict};

impl ProviderHandle {
    /// Admits a direct call and reserves `estimate` tokens (`None`: the budget's default)
    /// from the provider's budget, if it has one.
    async fn admit_budgeted<E>(
        &self,
        estimate: Option<u64>,
    ) -> Result<(Admitted<&Self>, Option<Reservation<'_>>), CallError<E>> {
        let admitted = match self.admit_now() {
            Some(admission) => admission,
            None => Box::pin(self.admit(true)).await,
        }
        .map_err(|r| r.into_error(&self.shared.id))?;
        let Some(budget) = &self.shared.budget else {
            return Ok((admitted, None));
        };
        match budget.reserve(estimate.unwrap_or_else(|| budget.default_estimate())) {
            Ok(reserved) => Ok((admitted, Some(reserved))),
            Err(over) => {
                admitted.withdraw();
                Err(over.into_error(&self.shared.id))
            }
        }
    }

    /// Calls the provider, reserving `estimate` tokens from its token budget
    /// ([`Provider::budget`](crate::Provider::budget)) and settling the reservation with
    /// the tokens the answer reports ([`Metered::tokens`]): a call estimated at 1,000 tokens
    /// that used 200 gives 800 back. An answer without usage, an error or a cancelled call
    /// leaves the estimate reserved. Without a budget, the same as [`call`](Self::call).
    ///
    /// # Errors
    ///
    /// As for [`call`](Self::call), and [`CallError::OverBudget`] (with when the budget has
    /// room) when the request or token budget has none: the call is not made.
    pub async fn call_metered<T, E, F, Fut>(&self, estimate: u64, op: F) -> Result<T, CallError<E>>
    where
        E: Classify,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Metered<T>, E>>,
    {
        let (admitted, reserved) = self.admit_budgeted(Some(estimate)).await?;
        match attempt::call(admitted, None, &E::verdict, op()).await {
            Ended::Served(metered) => {
                if let (Some(reserved), Some(used)) = (reserved, metered.tokens) {
                    reserved.settle(used);
                }
                Ok(metered.value)
            }
            Ended::Failed(_, error) => Err(CallError::Inner(error)),
            Ended::TimedOut(after) => Err(CallError::Timeout {
                provider: self.shared.id.clone(),
                after,
            }),
            Ended::Deadline => Err(CallError::ShuttingDown),
        }
    }

    /// Calls the provider, retrying failures and timeouts on it as its
    /// [`Provider::retry`](crate::Provider::retry) says (see [`Retry`](crate::Retry)):
    /// `op` is called once per attempt. Each retry is admitted like a new call, so a circuit
    /// that opened (or a budget that ran out) ends the retries, and the last attempt's
    /// error is returned. Without a `Retry`, the same as [`call`](Self::call).
    ///
    /// # Errors
    ///
    /// As for [`call`](Self::call), with the last attempt's error.
    pub async fn call_retrying<T, E, F, Fut>(&self, mut op: F) -> Result<T, CallError<E>>
    where
        E: Classify,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let retry = self.shared.retry.as_deref();
        if let Some(retry) = retry {
            retry.deposit(Instant::now());
        }
        let mut tries = 1;
        let mut last: Option<CallError<E>> = None;
        loop {
            let (admitted, _reserved) = match self.admit_budgeted(None).await {
                Ok(admission) => admission,
                Err(rejected) => return Err(last.unwrap_or(rejected)),
            };
            let (error, verdict, hint) =
                match attempt::call(admitted, None, &E::verdict, op()).await {
                    Ended::Served(value) => return Ok(value),
                    Ended::Failed(verdict, error) => {
                        let hint = error.backoff_hint();
                        (CallError::Inner(error), verdict, hint)
                    }
                    Ended::TimedOut(after) => (
                        CallError::Timeout {
                            provider: self.shared.id.clone(),
                            after,
                        },
                        Verdict::Failure,
                        None,
                    ),
                    Ended::Deadline => return Err(CallError::ShuttingDown),
                };
            let admits = matches!(self.state(), CircuitState::Closed | CircuitState::HalfOpen);
            let Some(pause) = retry.and_then(|r| r.next_pause(tries, verdict, hint, admits, None))
            else {
                return Err(error);
            };
            tokio::time::sleep(pause).await;
            tries += 1;
            last = Some(error);
        }
    }
}
