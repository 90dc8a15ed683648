//! [`Provider`]: one LLM provider and its protections.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{check, Adaptive, Breaker, Bulkhead, Probe, Scope};
use crate::error::ConfigError;

/// One provider (an API, a model deployment, a region, a key: whatever you name) and the
/// protections around it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use fusebox::{Breaker, Bulkhead, Provider};
///
/// let anthropic = Provider::new("anthropic")
///     .breaker(Breaker::consecutive(3).open_for(Duration::from_secs(120)))
///     .bulkhead(Bulkhead::new(10).queue(100).queue_timeout(Duration::from_secs(30)))
///     .call_timeout(Duration::from_secs(90));
/// assert_eq!(anthropic.name(), "anthropic");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub(crate) name: String,
    pub(crate) breaker: Breaker,
    pub(crate) bulkhead: Option<Bulkhead>,
    pub(crate) adaptive: Option<Adaptive>,
    pub(crate) call_timeout: Option<Duration>,
    pub(crate) record_durations: bool,
    pub(crate) first_chunk_timeout: Option<Duration>,
    pub(crate) stall_timeout: Option<Duration>,
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) budget: Option<crate::budget::Budget>,
    pub(crate) retry: Option<crate::budget::Retry>,
    pub(crate) max_context: Option<u64>,
    pub(crate) probe: Option<Probe>,
    pub(crate) slow_start: Option<Duration>,
}

impl Provider {
    /// A provider with the default breaker (5 consecutive failures, open 60 s), no bulkhead,
    /// no adaptive thresholds and no call timeout.
    pub fn new(name: impl Into<String>) -> Self {
        Provider {
            name: name.into(),
            breaker: Breaker::default(),
            bulkhead: None,
            adaptive: None,
            call_timeout: None,
            record_durations: true,
            first_chunk_timeout: None,
            stall_timeout: None,
            meta: BTreeMap::new(),
            budget: None,
            retry: None,
            max_context: None,
            probe: None,
            slow_start: None,
        }
    }

    /// Free-form metadata: a base URL, a model name, a context size, whatever the operation
    /// needs to call this provider. Readable from the [`ProviderId`](crate::ProviderId) an
    /// operation is given ([`ProviderId::meta`](crate::ProviderId::meta)) and shown in
    /// status. Setting a key again replaces its value.
    ///
    /// Defaults to none.
    ///
    /// ```
    /// use fusebox::Provider;
    ///
    /// let p = Provider::new("anthropic")
    ///     .meta("base_url", "https://api.anthropic.com")
    ///     .meta("model", "claude-sonnet-4-6");
    /// assert_eq!(p.metadata().get("model").map(String::as_str), Some("claude-sonnet-4-6"));
    /// ```
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.insert(key.into(), value.into());
        self
    }

    /// The metadata set with [`meta`](Self::meta).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.meta
    }

    /// The circuit breaker settings.
    ///
    /// Defaults to [`Breaker::default()`].
    pub fn breaker(mut self, breaker: Breaker) -> Self {
        self.breaker = breaker;
        self
    }

    /// A concurrency limit.
    ///
    /// Defaults to none: any number of calls may run at once.
    pub fn bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }

    /// Thresholds that follow the request rate.
    ///
    /// Defaults to none: the breaker's thresholds are fixed.
    pub fn adaptive(mut self, adaptive: Adaptive) -> Self {
        self.adaptive = Some(adaptive);
        self
    }

    /// A deadline for each call; a call that exceeds it is abandoned, returns
    /// `CallError::Timeout` and counts as a failure.
    ///
    /// Defaults to none.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// Whether to time every call for the `fusebox_call_duration_seconds` histogram. Timing
    /// costs two clock reads per call; routed calls and providers with a slow-call
    /// threshold are timed anyway.
    ///
    /// Defaults to `true`.
    pub fn record_durations(mut self, record: bool) -> Self {
        self.record_durations = record;
        self
    }

    /// For streamed calls: how long the first chunk may take, from the start of the call.
    /// Exceeding it ends the stream with an error and counts as a failure.
    ///
    /// Defaults to none.
    pub fn first_chunk_timeout(mut self, timeout: Duration) -> Self {
        self.first_chunk_timeout = Some(timeout);
        self
    }

    /// For streamed calls: the longest silence between two chunks. Exceeding it ends the
    /// stream with an error and counts as a failure.
    ///
    /// Defaults to none.
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = Some(timeout);
        self
    }

    /// Request and token limits (see [`Budget`](crate::Budget)): a call over budget is not
    /// made, and never counts against the circuit.
    ///
    /// Defaults to none.
    pub fn budget(mut self, budget: crate::budget::Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Retries of failed calls on this provider (see [`Retry`](crate::Retry)), for its
    /// routed calls (unless the route sets its own) and `call_retrying`.
    ///
    /// Defaults to none: a failed call is not retried on the same provider.
    pub fn retry(mut self, retry: crate::budget::Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The model's context window, in tokens. A routed call that fails with a
    /// context-window error ([`ErrorClass::ContextWindow`](crate::ErrorClass::ContextWindow))
    /// fails over only to providers whose window is larger. Also readable as the `max_context`
    /// metadata key, which is used when this is not set.
    ///
    /// Defaults to none (unknown).
    pub fn max_context(mut self, tokens: u64) -> Self {
        self.max_context = Some(tokens);
        self
    }

    /// The budget, if any.
    pub fn budget_config(&self) -> Option<&crate::budget::Budget> {
        self.budget.as_ref()
    }

    /// The retry settings, if any.
    pub fn retry_config(&self) -> Option<&crate::budget::Retry> {
        self.retry.as_ref()
    }

    /// The context window: [`max_context`](Self::max_context), else a `max_context`
    /// metadata value that parses as a number of tokens.
    pub fn max_context_config(&self) -> Option<u64> {
        self.max_context.or_else(|| {
            self.meta
                .get("max_context")
                .and_then(|v| v.trim().replace('_', "").parse().ok())
        })
    }

    /// A recovery probe: while the circuit is open, the provider's actor runs `op` every
    /// `interval` (one at a time, each bounded by a timeout of one interval), and the first
    /// success ends the open period: the circuit becomes half-open and real calls confirm.
    /// `Ok` is a success, `Err` a failure. See [`Probe`] for the semantics and the cost (at
    /// most one request per interval while open), and [`probe_with`](Self::probe_with) for
    /// the timeout, a backoff and a success threshold.
    ///
    /// Builder only: a probe is code, so the TOML format has none.
    ///
    /// Defaults to none: an open circuit waits out its open duration, then admits trials.
    ///
    /// ```
    /// use std::time::Duration;
    /// use fusebox::Provider;
    ///
    /// let p = Provider::new("anthropic").probe(Duration::from_secs(5), || async {
    ///     // e.g. `GET /v1/models`, through `fusebox::http::send` or your own client
    ///     Ok::<_, std::io::Error>(())
    /// });
    /// assert_eq!(p.probe_config().map(|p| p.interval()), Some(Duration::from_secs(5)));
    /// ```
    pub fn probe<F, Fut, T, E>(self, interval: Duration, op: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<T, E>> + Send + 'static,
    {
        self.probe_with(Probe::new(interval, op))
    }

    /// A recovery probe with every setting: see [`Probe`].
    ///
    /// Defaults to none.
    pub fn probe_with(mut self, probe: Probe) -> Self {
        self.probe = Some(probe);
        self
    }

    /// Slow start after a close: for `window` after the circuit closes, the provider receives
    /// a growing share of the routed calls that would try it first, from
    /// [`SLOW_START_FLOOR_PERCENT`](crate::router::SLOW_START_FLOOR_PERCENT) % at the close to
    /// all of them at the end of the window (linearly); the calls it does not take go to the
    /// route's next provider first, and fall back to it. A provider that has just recovered
    /// is not hit by every agent at once. Direct calls (`Supervisor::call`) are not
    /// throttled. In TOML: `slow_start = "10s"`.
    ///
    /// Defaults to none: a closed circuit takes its full share at once.
    pub fn slow_start(mut self, window: Duration) -> Self {
        self.slow_start = Some(window);
        self
    }

    /// The recovery probe, if any.
    pub fn probe_config(&self) -> Option<&Probe> {
        self.probe.as_ref()
    }

    /// The slow-start window, if any.
    pub fn slow_start_config(&self) -> Option<Duration> {
        self.slow_start
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The breaker settings.
    pub fn breaker_config(&self) -> &Breaker {
        &self.breaker
    }

    /// The bulkhead settings, if any.
    pub fn bulkhead_config(&self) -> Option<&Bulkhead> {
        self.bulkhead.as_ref()
    }

    /// The adaptive settings, if any.
    pub fn adaptive_config(&self) -> Option<&Adaptive> {
        self.adaptive.as_ref()
    }

    /// The per-call timeout, if any.
    pub fn call_timeout_config(&self) -> Option<Duration> {
        self.call_timeout
    }

    /// Checks every setting.
    ///
    /// # Errors
    ///
    /// The first bad value, naming this provider and the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::EmptyName { kind: "provider" });
        }
        let scope = Scope::Provider(self.name.clone());
        self.breaker.validate(&scope)?;
        if let Some(bulkhead) = &self.bulkhead {
            bulkhead.validate(&scope)?;
        }
        if let Some(adaptive) = &self.adaptive {
            adaptive.validate(&scope)?;
        }
        if let Some(timeout) = self.call_timeout {
            check::nonzero(&scope, "call_timeout", timeout)?;
        }
        if let Some(timeout) = self.first_chunk_timeout {
            check::nonzero(&scope, "first_chunk_timeout", timeout)?;
        }
        if let Some(timeout) = self.stall_timeout {
            check::nonzero(&scope, "stall_timeout", timeout)?;
        }
        if let Some(budget) = &self.budget {
            budget.validate(&scope)?;
        }
        if let Some(retry) = &self.retry {
            retry.validate(&scope)?;
        }
        if self.max_context == Some(0) {
            return Err(ConfigError::invalid(
                &scope,
                "max_context",
                0,
                "must be at least 1",
            ));
        }
        if let Some(probe) = &self.probe {
            probe.validate(&scope)?;
        }
        if let Some(window) = self.slow_start {
            check::nonzero(&scope, "slow_start", window)?;
        }
        Ok(())
    }
}
