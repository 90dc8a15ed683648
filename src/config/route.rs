//! [`Route`]: a named, ordered list of providers to fall back across.

use std::collections::HashSet;
use std::time::Duration;

use super::{check, Scope};
use crate::error::ConfigError;

/// How a route orders its providers for each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Policy {
    /// The configured order; open and isolated circuits are skipped without a call, a
    /// half-open one receives its free trial slots, and a provider the router demoted
    /// (failing often while still closed) goes behind the others. The default.
    #[default]
    Priority,
    /// The provider with the most spare capacity (in-flight and queued calls relative to its
    /// bulkhead) first.
    LeastLoaded,
    /// The provider with the lowest moving average of successful-call latency first.
    LowestLatency,
}

/// What a routed call does when every provider on its route is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AllOpen {
    /// Return `RouteError::AllUnavailable` at once, with the earliest `retry_after`. The
    /// default.
    #[default]
    FailFast,
    /// Wait for the first provider to become due for a trial, if that is within the given
    /// time; otherwise fail fast.
    Wait(Duration),
}

/// A named, ordered list of providers: a routed call tries them in the order the
/// [`Policy`] gives, failing over on provider failures.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use fusebox::{AllOpen, Policy, Route};
///
/// let chat = Route::new("chat")
///     .providers(["anthropic", "openai"])
///     .policy(Policy::Priority)
///     .deadline(Duration::from_secs(120))
///     .when_all_open(AllOpen::Wait(Duration::from_secs(10)));
/// assert_eq!(chat.provider_names(), ["anthropic", "openai"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub(crate) name: String,
    pub(crate) providers: Vec<String>,
    pub(crate) policy: Policy,
    pub(crate) deadline: Option<Duration>,
    pub(crate) when_all_open: AllOpen,
    pub(crate) retry: Option<crate::budget::Retry>,
    pub(crate) on_content_policy: Option<String>,
}

impl Route {
    /// A route with no providers yet, [`Policy::Priority`], no deadline and
    /// [`AllOpen::FailFast`].
    pub fn new(name: impl Into<String>) -> Self {
        Route {
            name: name.into(),
            providers: Vec::new(),
            policy: Policy::default(),
            deadline: None,
            when_all_open: AllOpen::default(),
            retry: None,
            on_content_policy: None,
        }
    }

    /// The providers, in priority order (replaces any set before).
    pub fn providers<I, S>(mut self, providers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.providers = providers.into_iter().map(Into::into).collect();
        self
    }

    /// The ordering policy.
    ///
    /// Defaults to [`Policy::Priority`].
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// A bound on the whole routed call, every attempt and wait included.
    ///
    /// Defaults to none.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// What to do when every provider is unavailable.
    ///
    /// Defaults to [`AllOpen::FailFast`].
    pub fn when_all_open(mut self, behaviour: AllOpen) -> Self {
        self.when_all_open = behaviour;
        self
    }

    /// Retries on each member before failing over (see [`Retry`](crate::Retry)), in place
    /// of the members' own [`Provider::retry`](crate::Provider::retry).
    ///
    /// Defaults to none: each member's own setting.
    pub fn retry(mut self, retry: crate::budget::Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Where a request a provider refused on content policy
    /// ([`ErrorClass::ContentPolicy`](crate::ErrorClass::ContentPolicy)) goes: the routed
    /// call goes on over `route` (once; that route's own content-policy fallback is not
    /// followed), its attempts added to this call's trace. The refusal never counts against
    /// the provider.
    ///
    /// Defaults to none: the refusal ends the routed call (`RouteError::NotRetryable`).
    pub fn on_content_policy(mut self, route: impl Into<String>) -> Self {
        self.on_content_policy = Some(route.into());
        self
    }

    /// The retry settings, if any.
    pub fn retry_config(&self) -> Option<&crate::budget::Retry> {
        self.retry.as_ref()
    }

    /// The content-policy fallback route, if any.
    pub fn on_content_policy_config(&self) -> Option<&str> {
        self.on_content_policy.as_deref()
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The providers, in configured order.
    pub fn provider_names(&self) -> &[String] {
        &self.providers
    }

    /// The ordering policy.
    pub fn policy_config(&self) -> Policy {
        self.policy
    }

    /// The overall deadline, if any.
    pub fn deadline_config(&self) -> Option<Duration> {
        self.deadline
    }

    /// The all-unavailable behaviour.
    pub fn when_all_open_config(&self) -> AllOpen {
        self.when_all_open
    }

    pub(crate) fn validate(&self, known: &HashSet<&str>) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::EmptyName { kind: "route" });
        }
        let scope = Scope::Route(self.name.clone());
        if self.providers.is_empty() {
            return Err(ConfigError::EmptyRoute(self.name.clone()));
        }
        let mut seen = HashSet::new();
        for provider in &self.providers {
            if !known.contains(provider.as_str()) {
                return Err(ConfigError::UnknownProvider {
                    route: self.name.clone(),
                    provider: provider.clone(),
                });
            }
            if !seen.insert(provider.as_str()) {
                return Err(ConfigError::DuplicateRouteProvider {
                    route: self.name.clone(),
                    provider: provider.clone(),
                });
            }
        }
        if let Some(deadline) = self.deadline {
            check::nonzero(&scope, "deadline", deadline)?;
        }
        if let AllOpen::Wait(max) = self.when_all_open {
            check::nonzero(&scope, "when_all_open", max)?;
        }
        if let Some(retry) = &self.retry {
            retry.validate(&scope)?;
        }
        if self.on_content_policy.as_deref() == Some(self.name.as_str()) {
            return Err(ConfigError::invalid(
                &scope,
                "on_content_policy",
                &self.name,
                "must name another route",
            ));
        }
        Ok(())
    }
}
