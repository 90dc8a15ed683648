//! Configuration builders, their validation, and TOML loading.
//!
//! Builders take plain values so that configuration reads naturally; nothing is checked until
//! [`Config::validate`] (called by the supervisor's `build()`), which reports the first bad
//! value as a [`ConfigError`] naming the provider or route, the field and the value.

mod adaptive;
mod breaker;
mod bulkhead;
pub mod file;
mod probe;
#[cfg(feature = "redis")]
mod fleet;
mod provider;
mod route;

pub use adaptive::{Adaptive, Tier};
pub use breaker::{Breaker, Window, DEFAULT_MAX_OPEN_FACTOR, MAX_WINDOW_CALLS};
pub use bulkhead::Bulkhead;
pub use probe::{Probe, FALSE_ALARM_BACKOFF};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use fleet::{Fleet, MAX_NAMESPACE_LEN, MAX_REPLICA_LEN};
pub use provider::Provider;
pub use route::{AllOpen, Policy, Route};

use std::collections::HashSet;

use crate::error::ConfigError;
pub use crate::error::Scope;

/// The default capacity of the event bus.
pub const DEFAULT_EVENT_CAPACITY: usize = 1024;

/// The longest duration any setting accepts: 365 days.
///
/// Every configured duration (open durations and their cap, timeouts, windows, deadlines,
/// waits) above it is rejected by [`Config::validate`] with a [`ConfigError`] naming the
/// field, so that no setting can overflow the clock arithmetic built on it.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

/// The largest `event_capacity` accepted: 2^20 events. The bus allocates its whole capacity
/// when it is created, so a larger value would abort the process on allocation rather than
/// fail with an error.
pub const MAX_EVENT_CAPACITY: usize = 1 << 20;

/// A whole supervisor's configuration: its providers, its routes and its event bus.
///
/// Built by `Supervisor::builder()` or loaded from TOML with [`Config::from_toml_str`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The providers, in the order they were added.
    pub providers: Vec<Provider>,
    /// The routes, in the order they were added.
    pub routes: Vec<Route>,
    /// How many events the bus buffers for a subscriber that falls behind.
    ///
    /// Defaults to 1024.
    pub event_capacity: usize,
    /// The fraction of circuits that may be open while the supervisor still reports healthy:
    /// healthy while strictly fewer than this fraction are open.
    ///
    /// Defaults to 0.5 (healthy while fewer than half the circuits are open).
    pub unhealthy_ratio: f64,
    /// The fleet this supervisor shares circuit state with (feature `redis`), if any.
    ///
    /// Defaults to none: every decision is this process's alone.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fleet: Option<Fleet>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            providers: Vec::new(),
            routes: Vec::new(),
            event_capacity: DEFAULT_EVENT_CAPACITY,
            unhealthy_ratio: 0.5,
            #[cfg(feature = "redis")]
            fleet: None,
        }
    }
}

impl Config {
    /// Checks every provider and route, and the references between them.
    ///
    /// # Errors
    ///
    /// The first problem found, as a [`ConfigError`] that names it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let top = Scope::Supervisor;
        if self.event_capacity == 0 || self.event_capacity > MAX_EVENT_CAPACITY {
            return Err(ConfigError::invalid(
                &top,
                "event_capacity",
                self.event_capacity,
                "must be at least 1 and at most 1048576 (the bus allocates it up front)",
            ));
        }
        check::ratio(&top, "unhealthy_ratio", self.unhealthy_ratio)?;
        if self.providers.is_empty() {
            return Err(ConfigError::NoProviders);
        }
        let mut names = HashSet::new();
        for provider in &self.providers {
            provider.validate()?;
            if !names.insert(provider.name()) {
                return Err(ConfigError::DuplicateProvider(provider.name().to_owned()));
            }
        }
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            fleet.validate()?;
        }
        let mut routes = HashSet::new();
        for route in &self.routes {
            route.validate(&names)?;
            if !routes.insert(route.name()) {
                return Err(ConfigError::DuplicateRoute(route.name().to_owned()));
            }
        }
        for route in &self.routes {
            if let Some(fallback) = route.on_content_policy_config() {
                if !routes.contains(fallback) {
                    return Err(ConfigError::invalid(
                        &Scope::Route(route.name().to_owned()),
                        "on_content_policy",
                        fallback,
                        "must name a configured route",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Small checks shared by the builders.
pub(crate) mod check {
    use std::time::Duration;

    use crate::error::{ConfigError, Scope};

    pub(crate) fn positive(scope: &Scope, field: &'static str, n: u32) -> Result<(), ConfigError> {
        if n == 0 {
            return Err(ConfigError::invalid(scope, field, n, "must be at least 1"));
        }
        Ok(())
    }

    /// Longer than zero and at most [`MAX_DURATION`](super::MAX_DURATION).
    pub(crate) fn nonzero(
        scope: &Scope,
        field: &'static str,
        d: Duration,
    ) -> Result<(), ConfigError> {
        if d.is_zero() {
            return Err(ConfigError::invalid(
                scope,
                field,
                "0s",
                "must be longer than zero",
            ));
        }
        at_most_max(scope, field, d)
    }

    /// At most [`MAX_DURATION`](super::MAX_DURATION) (zero allowed).
    pub(crate) fn at_most_max(
        scope: &Scope,
        field: &'static str,
        d: Duration,
    ) -> Result<(), ConfigError> {
        if d > super::MAX_DURATION {
            // In seconds: exact, and not in humantime's 365.25-day years.
            return Err(ConfigError::invalid(
                scope,
                field,
                format!("{d:?}"),
                "must be at most 365 days (31536000s)",
            ));
        }
        Ok(())
    }

    pub(crate) fn ratio(scope: &Scope, field: &'static str, r: f64) -> Result<(), ConfigError> {
        if !(r > 0.0 && r <= 1.0) {
            return Err(ConfigError::invalid(scope, field, r, "must be in (0, 1]"));
        }
        Ok(())
    }
}
