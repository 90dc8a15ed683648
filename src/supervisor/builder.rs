//! [`SupervisorBuilder`]: configuration in code.

use std::time::Duration;

use super::Supervisor;
use crate::config::{Config, Provider, Route};
use crate::ConfigError;

/// Builds a [`Supervisor`]; nothing is checked until [`build`](Self::build).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use fusebox::{Breaker, Provider, Route, Supervisor};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), fusebox::ConfigError> {
/// let fuse = Supervisor::builder()
///     .provider(Provider::new("anthropic").breaker(Breaker::consecutive(3)))
///     .provider(Provider::new("openai"))
///     .route(Route::new("chat").providers(["anthropic", "openai"]))
///     .event_capacity(4096)
///     .build()
///     .await?;
/// assert_eq!(fuse.status().len(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct SupervisorBuilder {
    config: Config,
    options: Options,
}

/// Run-time options that are not part of the (TOML) configuration.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) metrics_interval: Option<Duration>,
    pub(crate) resample_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            metrics_interval: Some(Duration::from_secs(5)),
            resample_every: Duration::from_secs(1),
        }
    }
}

impl SupervisorBuilder {
    pub(crate) fn new() -> Self {
        SupervisorBuilder::default()
    }

    /// Adds a provider.
    pub fn provider(mut self, provider: Provider) -> Self {
        self.config.providers.push(provider);
        self
    }

    /// Adds a route.
    pub fn route(mut self, route: Route) -> Self {
        self.config.routes.push(route);
        self
    }

    /// How many events the bus buffers for a subscriber that falls behind (see
    /// [`crate::events`]): tokio rounds it up to the next power of two.
    ///
    /// Defaults to 1024.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.config.event_capacity = capacity;
        self
    }

    /// The fraction of open (or isolated) circuits at which the supervisor reports
    /// unhealthy.
    ///
    /// Defaults to 0.5: healthy while fewer than half of the circuits are open.
    pub fn unhealthy_ratio(mut self, ratio: f64) -> Self {
        self.config.unhealthy_ratio = ratio;
        self
    }

    /// How often the providers' call counters and gauges are published to the `metrics`
    /// recorder; `None` publishes only when `Supervisor::publish_metrics` is called (the ops
    /// endpoint calls it before every scrape).
    ///
    /// Defaults to every 5 seconds.
    pub fn metrics_interval(mut self, interval: Option<Duration>) -> Self {
        self.options.metrics_interval = interval;
        self
    }

    /// How often the router actor samples every provider (for demotion) and resyncs every
    /// route's order from the providers' gates. Zero is taken as 1 ms.
    ///
    /// Defaults to every second.
    pub fn resample_every(mut self, every: Duration) -> Self {
        self.options.resample_every = every.max(Duration::from_millis(1));
        self
    }

    /// Shares this supervisor's circuit state changes with the other replicas of its fleet,
    /// over Redis (see [`crate::fleet`]). Calls never wait for Redis: a replica that cannot
    /// reach it decides alone until it is back.
    ///
    /// Defaults to no fleet.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn fleet(mut self, fleet: crate::fleet::Fleet) -> Self {
        self.config.fleet = Some(fleet);
        self
    }

    /// Validates the configuration and starts one actor per provider.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad value.
    pub async fn build(self) -> Result<Supervisor, ConfigError> {
        Supervisor::start(self.config, self.options).await
    }
}
