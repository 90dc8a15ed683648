//! The errors fusebox returns.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::breaker::CircuitState;
use crate::router::{Attempt, AttemptOutcome};
use crate::ProviderId;

/// A duration as every `Display` in the crate shows it: rounded to the nearest millisecond
/// (a nonzero duration below half a millisecond shows as `1ms`, never as `0s`), in
/// humantime's notation (`1s 997ms`, `2m`, `1h 30m`).
pub(crate) fn human(d: Duration) -> humantime::FormattedDuration {
    const MS: u128 = 1_000_000;
    let nanos = d.as_nanos();
    let millis = match (nanos + MS / 2) / MS {
        0 if nanos > 0 => 1,
        n => n,
    };
    humantime::format_duration(Duration::from_millis(
        u64::try_from(millis).unwrap_or(u64::MAX),
    ))
}

/// Where in a configuration a bad value sits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scope {
    /// A setting of the whole supervisor.
    Supervisor,
    /// A setting of the named provider.
    Provider(String),
    /// A setting of the named route.
    Route(String),
    /// A setting of the TOML `[defaults]` table, which every provider inherits.
    Defaults,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Supervisor => f.write_str("supervisor"),
            Scope::Provider(name) => write!(f, "provider `{name}`"),
            Scope::Route(name) => write!(f, "route `{name}`"),
            Scope::Defaults => f.write_str("[defaults]"),
        }
    }
}

/// A configuration that cannot be used, with what is wrong and where.
///
/// Every variant names the offending field or item; errors found in a TOML document also
/// carry its line (see [`ConfigError::At`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field holds a value outside its allowed range, or (in a TOML document) a value of
    /// the wrong type: `provider `a`: bulkhead.max_concurrent = "ten": expected an integer`.
    #[error("{scope}: {field} = {value}: {reason}")]
    InvalidValue {
        /// The provider, route or supervisor the field belongs to.
        scope: Scope,
        /// The field, as named in the TOML format (`breaker.failure_rate`).
        field: &'static str,
        /// The rejected value, as written (strings quoted, in a TOML document).
        value: String,
        /// What the value must be.
        reason: &'static str,
    },
    /// A TOML document has a key the format does not know (a typo, usually).
    #[error("{scope}: unknown field `{field}`; expected one of {}", expected.join(", "))]
    UnknownField {
        /// The provider, route, `[defaults]` or supervisor the key sits in.
        scope: Scope,
        /// The key, with the table it sits in (`breaker.consecutiv`).
        field: String,
        /// The keys that table accepts.
        expected: &'static [&'static str],
    },
    /// A provider or route was given an empty name.
    #[error("{kind} name must not be empty")]
    EmptyName {
        /// `"provider"` or `"route"`.
        kind: &'static str,
    },
    /// Two providers share a name.
    #[error("provider `{0}` is defined twice")]
    DuplicateProvider(String),
    /// Two routes share a name.
    #[error("route `{0}` is defined twice")]
    DuplicateRoute(String),
    /// A supervisor needs at least one provider.
    #[error("no providers configured")]
    NoProviders,
    /// A registry change named a provider or route that is not running.
    #[error("no {kind} named `{name}` is running")]
    NotRunning {
        /// `"provider"` or `"route"`.
        kind: &'static str,
        /// The name given.
        name: String,
    },
    /// A registry change arrived after `Supervisor::shutdown` (or while the router actor
    /// was stopped for good).
    #[error("the supervisor is shutting down: the registry takes no more changes")]
    ShuttingDown,
    /// A route lists no providers.
    #[error("route `{0}` lists no providers")]
    EmptyRoute(String),
    /// A route names a provider that is not configured.
    #[error("route `{route}` names unknown provider `{provider}`")]
    UnknownProvider {
        /// The route.
        route: String,
        /// The name it lists that matches no provider.
        provider: String,
    },
    /// A route lists the same provider twice.
    #[error("route `{route}` lists provider `{provider}` twice")]
    DuplicateRouteProvider {
        /// The route.
        route: String,
        /// The provider listed more than once.
        provider: String,
    },
    /// A TOML document is malformed (a syntax error).
    #[error("TOML line {line}, column {column}: {message}")]
    Toml {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// A value in a TOML document was well-formed but rejected; `line` locates it.
    #[error("TOML line {line}: {error}")]
    At {
        /// 1-based line of the rejected value.
        line: usize,
        /// What is wrong with it.
        error: Box<ConfigError>,
    },
    /// A configuration file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
}

impl ConfigError {
    pub(crate) fn invalid(
        scope: &Scope,
        field: &'static str,
        value: impl std::fmt::Display,
        reason: &'static str,
    ) -> Self {
        ConfigError::InvalidValue {
            scope: scope.clone(),
            field,
            value: value.to_string(),
            reason,
        }
    }

    /// The field this error names: the field of a bad value or of a value of the wrong type,
    /// or an unknown key (looks through [`ConfigError::At`]).
    ///
    /// ```
    /// let e = fusebox::Config::from_toml_str("[[providers]]\nname = \"a\"\nbulkhead = { max_concurrent = \"ten\" }\n")
    ///     .unwrap_err();
    /// assert_eq!(e.field(), Some("bulkhead.max_concurrent"));
    /// assert_eq!(e.line(), Some(3));
    /// assert_eq!(
    ///     e.to_string(),
    ///     "TOML line 3: provider `a`: bulkhead.max_concurrent = \"ten\": expected an integer"
    /// );
    /// ```
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::InvalidValue { field, .. } => Some(field),
            ConfigError::UnknownField { field, .. } => Some(field),
            ConfigError::At { error, .. } => error.field(),
            _ => None,
        }
    }

    /// The TOML line this error points at, if it came from a TOML document.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Toml { line, .. } | ConfigError::At { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// Why a guarded call did not return the provider's value.
///
/// Everything but [`CallError::Inner`] is fusebox declining or abandoning the call; `Inner`
/// is the provider's own error, returned as is.
#[derive(Debug)]
#[non_exhaustive]
pub enum CallError<E> {
    /// The circuit is open (or half-open with every trial slot taken): the call was not made.
    Open {
        /// The provider.
        provider: ProviderId,
        /// When to try again.
        retry_after: Duration,
        /// The counted failures that opened the circuit.
        failure_count: u32,
        /// [`CircuitState::Open`] or [`CircuitState::HalfOpen`].
        state: CircuitState,
    },
    /// The provider is isolated until an operator resets it: the call was not made.
    Isolated {
        /// The provider.
        provider: ProviderId,
    },
    /// Every bulkhead slot and queue place is taken: the call was not made.
    BulkheadFull {
        /// The provider.
        provider: ProviderId,
    },
    /// The call waited in the bulkhead queue for its whole queue timeout: it was not made.
    QueueTimeout {
        /// The provider.
        provider: ProviderId,
        /// How long it waited.
        waited: Duration,
    },
    /// The call exceeded the provider's call timeout and was abandoned. Counts as a failure.
    Timeout {
        /// The provider.
        provider: ProviderId,
        /// The timeout.
        after: Duration,
    },
    /// The provider's request or token budget has no room for the call: it was not made,
    /// and it does not count against the provider.
    OverBudget {
        /// The provider.
        provider: ProviderId,
        /// When the budget has room for the call again.
        retry_after: Duration,
    },
    /// The provider's own error.
    Inner(E),
    /// No provider has this name.
    UnknownProvider(String),
    /// The supervisor is shutting down, or the provider's actor is gone for good (it kept
    /// panicking past its restart limit): no new calls.
    ShuttingDown,
}

impl<E> CallError<E> {
    /// When to try this provider again, for an open circuit.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Open { retry_after, .. } | CallError::OverBudget { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// The provider's own error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            CallError::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// A reference to the provider's own error, if that is what this is.
    pub fn inner(&self) -> Option<&E> {
        match self {
            CallError::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the circuit rejected the call (open, half-open full, or isolated).
    pub fn is_open(&self) -> bool {
        matches!(self, CallError::Open { .. } | CallError::Isolated { .. })
    }

    /// Whether the call was declined before reaching the provider (circuit, bulkhead, queue,
    /// unknown provider, shutdown): the provider never saw it.
    pub fn is_rejected(&self) -> bool {
        !matches!(self, CallError::Inner(_) | CallError::Timeout { .. })
    }

    /// The provider the error is about, when known.
    pub fn provider(&self) -> Option<&ProviderId> {
        match self {
            CallError::Open { provider, .. }
            | CallError::Isolated { provider }
            | CallError::BulkheadFull { provider }
            | CallError::QueueTimeout { provider, .. }
            | CallError::Timeout { provider, .. }
            | CallError::OverBudget { provider, .. } => Some(provider),
            _ => None,
        }
    }

    /// Maps the provider's error type.
    pub fn map_inner<F, T>(self, f: F) -> CallError<T>
    where
        F: FnOnce(E) -> T,
    {
        match self {
            CallError::Open {
                provider,
                retry_after,
                failure_count,
                state,
            } => CallError::Open {
                provider,
                retry_after,
                failure_count,
                state,
            },
            CallError::Isolated { provider } => CallError::Isolated { provider },
            CallError::BulkheadFull { provider } => CallError::BulkheadFull { provider },
            CallError::QueueTimeout { provider, waited } => {
                CallError::QueueTimeout { provider, waited }
            }
            CallError::Timeout { provider, after } => CallError::Timeout { provider, after },
            CallError::OverBudget {
                provider,
                retry_after,
            } => CallError::OverBudget {
                provider,
                retry_after,
            },
            CallError::Inner(e) => CallError::Inner(f(e)),
            CallError::UnknownProvider(name) => CallError::UnknownProvider(name),
            CallError::ShuttingDown => CallError::ShuttingDown,
        }
    }
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Open {
                provider,
                retry_after,
                failure_count,
                state,
            } => {
                let state = match state {
                    CircuitState::HalfOpen => "half-open with every trial slot taken",
                    other => other.as_str(),
                };
                let s = if *failure_count == 1 { "" } else { "s" };
                write!(
                    f,
                    "circuit for provider `{provider}` is {state} after {failure_count} failure{s}; retry after {}",
                    human(*retry_after)
                )
            }
            CallError::Isolated { provider } => {
                write!(
                    f,
                    "provider `{provider}` is isolated until an operator resets it"
                )
            }
            CallError::BulkheadFull { provider } => {
                write!(f, "bulkhead for provider `{provider}` is full")
            }
            CallError::QueueTimeout { provider, waited } => write!(
                f,
                "no bulkhead slot for provider `{provider}` after waiting {}",
                human(*waited)
            ),
            CallError::Timeout { provider, after } => write!(
                f,
                "call to provider `{provider}` timed out after {}",
                human(*after)
            ),
            CallError::OverBudget {
                provider,
                retry_after,
            } => write!(
                f,
                "provider `{provider}` is over its request or token budget; retry after {}",
                human(*retry_after)
            ),
            // The inner error is shown here, so `source()` skips it and goes to its source.
            CallError::Inner(e) => e.fmt(f),
            CallError::UnknownProvider(name) => write!(f, "unknown provider `{name}`"),
            CallError::ShuttingDown => f.write_str("fusebox is shutting down"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Inner(e) => e.source(),
            _ => None,
        }
    }
}

/// Why a routed call returned no value. Every variant but `UnknownRoute` carries the trace of
/// attempts.
#[derive(Debug)]
#[non_exhaustive]
pub enum RouteError<E> {
    /// Every provider on the route was unavailable (open, isolated or saturated): none was
    /// called.
    AllUnavailable {
        /// The earliest time any of them admits calls again (`None` if all are isolated or
        /// merely saturated).
        retry_after: Option<Duration>,
        /// Every provider considered.
        attempts: Vec<Attempt>,
    },
    /// Every available provider was called and failed; `last` is the last failure.
    Exhausted {
        /// The last provider's error.
        last: CallError<E>,
        /// Every provider considered.
        attempts: Vec<Attempt>,
    },
    /// A provider answered with an error that is the caller's fault ([`Verdict::Ignored`](crate::Verdict::Ignored)):
    /// another provider would refuse it too, so no other was tried.
    NotRetryable {
        /// The provider's error.
        error: E,
        /// Every provider considered.
        attempts: Vec<Attempt>,
    },
    /// The route's deadline passed.
    DeadlineExceeded {
        /// The deadline.
        deadline: Duration,
        /// Every provider considered.
        attempts: Vec<Attempt>,
    },
    /// The supervisor is shutting down.
    ShuttingDown {
        /// Every provider considered.
        attempts: Vec<Attempt>,
    },
    /// No route has this name.
    UnknownRoute(String),
}

impl<E> RouteError<E> {
    /// The attempts made before giving up.
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            RouteError::AllUnavailable { attempts, .. }
            | RouteError::Exhausted { attempts, .. }
            | RouteError::NotRetryable { attempts, .. }
            | RouteError::DeadlineExceeded { attempts, .. }
            | RouteError::ShuttingDown { attempts } => attempts,
            RouteError::UnknownRoute(_) => &[],
        }
    }

    /// When to try the route again: for `AllUnavailable`, the earliest time any of its
    /// providers admits calls again; for `Exhausted`, the hint of the last provider tried
    /// (its open circuit's retry-after, or the `Retry-After` of its rate limit), if it gave
    /// one. `None` otherwise.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RouteError::AllUnavailable { retry_after, .. } => *retry_after,
            RouteError::Exhausted { last, attempts } => last.retry_after().or_else(|| {
                attempts.last().and_then(|a| match &a.outcome {
                    AttemptOutcome::SkippedOpen { retry_after } => Some(*retry_after),
                    AttemptOutcome::Failed(verdict) => verdict.retry_after(),
                    _ => None,
                })
            }),
            _ => None,
        }
    }

    /// How many distinct providers the attempts reached or skipped (a provider tried again
    /// after a wait counts once).
    fn providers_considered(&self) -> usize {
        let attempts = self.attempts();
        let mut seen: Vec<&ProviderId> = Vec::with_capacity(attempts.len());
        for a in attempts {
            if !seen.contains(&&a.provider) {
                seen.push(&a.provider);
            }
        }
        seen.len()
    }

    /// The provider's own error, for `NotRetryable` and an `Exhausted` whose last failure
    /// was the provider's error.
    pub fn into_inner(self) -> Option<E> {
        match self {
            RouteError::NotRetryable { error, .. } => Some(error),
            RouteError::Exhausted { last, .. } => last.into_inner(),
            _ => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for RouteError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tried = self.attempts().len();
        let attempts = if tried == 1 { "attempt" } else { "attempts" };
        match self {
            RouteError::AllUnavailable {
                retry_after,
                attempts,
            } => {
                match (self.providers_considered(), attempts.first()) {
                    (1, Some(only)) => write!(f, "provider `{}` unavailable", only.provider)?,
                    (n, _) => write!(f, "all {n} providers unavailable")?,
                }
                match retry_after {
                    Some(d) => write!(f, "; retry after {}", human(*d)),
                    None => Ok(()),
                }
            }
            RouteError::Exhausted { last, .. } => {
                write!(
                    f,
                    "every provider failed ({tried} {attempts}); last: {last}"
                )
            }
            RouteError::NotRetryable { error, .. } => write!(f, "request refused: {error}"),
            RouteError::DeadlineExceeded { deadline, .. } => write!(
                f,
                "route deadline of {} exceeded after {tried} {attempts}",
                human(*deadline)
            ),
            RouteError::ShuttingDown { .. } => f.write_str("fusebox is shutting down"),
            RouteError::UnknownRoute(name) => write!(f, "unknown route `{name}`"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for RouteError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RouteError::NotRetryable { error, .. } => error.source(),
            RouteError::Exhausted { last, .. } => last.source(),
            _ => None,
        }
    }
}
