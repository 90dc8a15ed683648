//! [`SupervisorBuilder`]: configuration in code.

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

    /// How many events the bus buffers for a subscriber that falls behind.
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

    /// Validates the configuration and starts one actor per provider.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad value.
    pub async fn build(self) -> Result<Supervisor, ConfigError> {
        Supervisor::from_config(self.config).await
    }
}
