//! fusebox keeps long-running agent orchestrators working while their LLM providers fail.
//!
//! Every provider (an API, a model deployment, a region, a key) gets a circuit breaker, a
//! bulkhead and thresholds that adapt to its request rate.
//!
//! # Quick start
//!
//! ```
//! use std::time::Duration;
//! use fusebox::{Breaker, Bulkhead, Config, Provider, Route};
//!
//! let config = Config {
//!     providers: vec![
//!         Provider::new("anthropic")
//!             .breaker(Breaker::consecutive(3).open_for(Duration::from_secs(120)))
//!             .bulkhead(Bulkhead::new(10).queue(100).queue_timeout(Duration::from_secs(30))),
//!         Provider::new("openai"),
//!     ],
//!     routes: vec![Route::new("chat").providers(["anthropic", "openai"])],
//!     ..Config::default()
//! };
//! config.validate()?;
//! # Ok::<(), fusebox::ConfigError>(())
//! ```

pub mod breaker;
pub mod classify;
pub mod config;
mod error;

pub use breaker::CircuitState;
pub use classify::{http_verdict, http_verdict_at, Classify, HeaderError, Verdict};
pub use config::{
    Adaptive, AllOpen, Breaker, Bulkhead, Config, Policy, Provider, Route, Tier, Window,
};
pub use error::{ConfigError, Scope};
