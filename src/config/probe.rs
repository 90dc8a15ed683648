//! [`Probe`]: a recovery probe, the operation a provider's actor runs while its circuit is
//! open to learn that the provider is back.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::{check, Scope};
use crate::error::ConfigError;

/// The default cap of a probe's backoff after false alarms, in intervals
/// ([`Probe::max_interval`]).
pub const FALSE_ALARM_BACKOFF: u32 = 8;

/// The boxed probe operation: resolves to whether the probe succeeded.
pub(crate) type ProbeFn = dyn Fn() -> BoxFuture<'static, bool> + Send + Sync;

/// A recovery probe: an operation of yours (typically free, such as `GET /v1/models`, or a
/// one-token completion) that the provider's actor runs while the circuit is open, so that
/// the provider is back in service as soon as it is back, not when the open period ends.
///
/// # Semantics
///
/// - Probes run only while the circuit is **open**: never while closed, half-open (real
///   calls are the trials then) or isolated (only an operator's reset ends an isolation).
/// - The first probe of an open period starts one [interval](Self::new) after the circuit
///   opened, then one every interval (counted from the start of the previous probe). At most
///   one probe of a provider runs at a time: the next starts only once the previous one has
///   finished or timed out.
/// - A probe succeeds when its operation returns `Ok`, and fails when it returns `Err`, or
///   does not finish within the [timeout](Self::timeout) (it is dropped then).
/// - [`successes`](Self::successes) probes in a row that succeed (1 by default) end the open
///   period: the circuit becomes half-open, with cause
///   [`Cause::ProbeSucceeded`](crate::Cause::ProbeSucceeded), and real calls confirm the
///   recovery as trials. A failed probe changes nothing: the next one runs one interval
///   later. An open caused by a rate limit is not ended before its deadline (the provider
///   said when to come back).
/// - A false alarm (a probe ended the open period, and the trial calls that followed failed,
///   so the circuit re-opened) doubles the interval, up to [`max_interval`](Self::max_interval),
///   until the circuit closes: a probe that answers while real calls do not (a models list
///   that works while completions fail, or a provider failing only some requests) costs a
///   few trial calls, not one every interval.
/// - A probe result that arrives after the circuit changed (it closed, re-opened, was
///   isolated or reset) is counted and otherwise ignored. Probes stop when the circuit leaves
///   the open state, and for good when the provider is removed or the supervisor shuts
///   down.
/// - Probes are counted apart from calls: `ProviderStatus::probes` (and the `probe_*`
///   fields beside it) and the `fusebox_probes_total` metric. They never appear in a call
///   count, a failure rate or a breaker window.
///
/// # Cost
///
/// At most one probe request per interval while the circuit is open, and none otherwise: a
/// four-minute outage with a 5-second interval costs 48 probe requests, whatever the
/// traffic. With a probe, the open duration that real traffic waits out (the breaker's
/// `open_for`, grown up to `max_open_for`) no longer delays recovery, so it can be long: the
/// probe, not a user's request, finds out when the provider is back.
///
/// A probe is code, so it is set with the builder only: the TOML format has no key for it,
/// and a [`Config`](crate::Config) read from TOML has no probe. A running provider keeps its
/// probe through [`Supervisor::reload_toml_str`](crate::Supervisor::reload_toml_str) and
/// `reload_toml_file` (and the ops endpoint's `POST /reload`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use fusebox::{Probe, Provider};
///
/// // Any operation returning a `Result`: here, a stand-in for `GET /v1/models`.
/// async fn list_models() -> Result<Vec<String>, std::io::Error> {
///     Ok(vec!["claude-sonnet-4-6".to_owned()])
/// }
///
/// let anthropic = Provider::new("anthropic").probe(Duration::from_secs(5), list_models);
/// # let _ = anthropic;
///
/// // With a timeout, a cap on the backoff after false alarms, and two successes in a row to
/// // recover.
/// let openai = Provider::new("openai").probe_with(
///     Probe::new(Duration::from_secs(2), list_models)
///         .timeout(Duration::from_secs(1))
///         .max_interval(Duration::from_secs(8))
///         .successes(2),
/// );
/// # let _ = openai;
/// ```
#[derive(Clone)]
pub struct Probe {
    pub(crate) interval: Duration,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_interval: Option<Duration>,
    pub(crate) successes: u32,
    pub(crate) op: Arc<ProbeFn>,
}

impl Probe {
    /// A probe running `op` every `interval` while the circuit is open. `op` returning `Ok`
    /// is a success, `Err` a failure; what they hold is not looked at.
    pub fn new<F, Fut, T, E>(interval: Duration, op: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        Probe {
            interval,
            timeout: None,
            max_interval: None,
            successes: 1,
            op: Arc::new(move || op().map(|result| result.is_ok()).boxed()),
        }
    }

    /// How long one probe may run before it counts as failed (and is dropped).
    ///
    /// Defaults to the interval, so that a hung probe never delays the next one. A longer
    /// timeout is allowed: the next probe then starts when the previous one ends.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The cap of the backoff after false alarms: each time a probe ends an open period and
    /// the trial calls that follow fail, the interval doubles, up to `cap`; a close resets it
    /// to the interval. Failed probes do not grow it (they cost a probe, not a user's call).
    /// Equal to the interval, there is no backoff.
    ///
    /// Defaults to [`FALSE_ALARM_BACKOFF`] times the interval: a probe that keeps answering
    /// while real calls fail costs a trial call at most every 8 intervals, and a recovery
    /// after false alarms is found within 8 intervals.
    pub fn max_interval(mut self, cap: Duration) -> Self {
        self.max_interval = Some(cap);
        self
    }

    /// How many probes in a row must succeed to end the open period (like a health
    /// checker's healthy threshold): more than one keeps a provider that answers only some
    /// requests (a partial outage) from being let back on one lucky probe.
    ///
    /// Defaults to 1.
    pub fn successes(mut self, n: u32) -> Self {
        self.successes = n;
        self
    }

    /// The interval between probes.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The timeout of one probe in force.
    pub fn timeout_config(&self) -> Duration {
        self.timeout.unwrap_or(self.interval)
    }

    /// The cap on the interval after false alarms, in force.
    pub fn max_interval_config(&self) -> Duration {
        self.max_interval
            .unwrap_or_else(|| self.interval.saturating_mul(FALSE_ALARM_BACKOFF))
            .max(self.interval)
    }

    /// How many successful probes in a row end an open period.
    pub fn successes_config(&self) -> u32 {
        self.successes
    }

    /// Checks every setting.
    pub(crate) fn validate(&self, scope: &Scope) -> Result<(), ConfigError> {
        check::nonzero(scope, "probe.interval", self.interval)?;
        if let Some(timeout) = self.timeout {
            check::nonzero(scope, "probe.timeout", timeout)?;
        }
        if let Some(cap) = self.max_interval {
            if cap < self.interval {
                return Err(ConfigError::invalid(
                    scope,
                    "probe.max_interval",
                    humantime::format_duration(cap),
                    "must not be below probe.interval",
                ));
            }
            check::nonzero(scope, "probe.max_interval", cap)?;
        }
        check::positive(scope, "probe.successes", self.successes)?;
        Ok(())
    }
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("max_interval", &self.max_interval)
            .field("successes", &self.successes)
            .field("op", &"Fn() -> Future<Output = Result<..>>")
            .finish()
    }
}

/// Two probes are equal when their settings are and they run the same operation (the same
/// closure, cloned: operations are compared by identity).
impl PartialEq for Probe {
    fn eq(&self, other: &Self) -> bool {
        self.interval == other.interval
            && self.timeout == other.timeout
            && self.max_interval == other.max_interval
            && self.successes == other.successes
            && Arc::ptr_eq(&self.op, &other.op)
    }
}
