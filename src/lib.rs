//! fusebox keeps long-running agent orchestrators working while their LLM providers fail.
//!
//! Every provider (an API, a model deployment, a region, a key) gets a circuit breaker, a
//! bulkhead and thresholds that adapt to its request rate, owned by a supervised
//! [kameo](https://docs.rs/kameo) actor. Calls run in the caller's task; on a closed circuit
//! they take no lock and send no message.
//!
//! # Quick start
//!
//! ```
//! use std::time::Duration;
//! use fusebox::{Breaker, Bulkhead, CallError, Provider, Supervisor};
//!
//! #[derive(Debug)]
//! struct ApiError { status: u16 }
//!
//! impl std::fmt::Display for ApiError {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         write!(f, "HTTP {}", self.status)
//!     }
//! }
//!
//! impl std::error::Error for ApiError {}
//!
//! impl fusebox::Classify for ApiError {
//!     fn verdict(&self) -> fusebox::Verdict {
//!         fusebox::Verdict::from_http_status(self.status)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let fuse = Supervisor::builder()
//!     .provider(Provider::new("anthropic")
//!         .breaker(Breaker::consecutive(3).open_for(Duration::from_secs(120)))
//!         .bulkhead(Bulkhead::new(10).queue(100).queue_timeout(Duration::from_secs(30))))
//!     .provider(Provider::new("openai"))
//!     .build()
//!     .await?;
//!
//! let mut events = fuse.subscribe();
//! for _ in 0..3 {
//!     let reply: Result<String, _> =
//!         fuse.call("anthropic", || async { Err(ApiError { status: 503 }) }).await;
//!     assert!(matches!(reply, Err(CallError::Inner(ApiError { status: 503 }))));
//! }
//! assert_eq!(events.recv().await?.name(), "llm.circuit_opened");
//!
//! // Open: rejected at once, with when to come back.
//! let reply: Result<String, CallError<ApiError>> =
//!     fuse.call("anthropic", || async { Ok("never called".to_owned()) }).await;
//! assert_eq!(reply.unwrap_err().retry_after(), Some(Duration::from_secs(120)));
//!
//! let reply = fuse.call("openai", || async { Ok::<_, ApiError>("hello".to_owned()) }).await?;
//! assert_eq!(reply, "hello");
//! assert_eq!(fuse.health().summary, "1/2 circuits healthy");
//! # Ok(())
//! # }
//! ```
//!
//! # Isolation per operation
//!
//! A provider is whatever you name. Name chat, embeddings and tool calls against the same API
//! as separate providers, each with its own bulkhead and breaker, and a flood of embedding
//! calls cannot take the slots chat needs, nor can an embeddings outage open chat's circuit:
//!
//! ```
//! # use fusebox::{Bulkhead, Provider, Supervisor};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), fusebox::ConfigError> {
//! let fuse = Supervisor::builder()
//!     .provider(Provider::new("openai/chat").bulkhead(Bulkhead::new(10)))
//!     .provider(Provider::new("openai/embeddings").bulkhead(Bulkhead::new(20)))
//!     .provider(Provider::new("openai/tools").bulkhead(Bulkhead::new(5)))
//!     .build()
//!     .await?;
//! # let _ = fuse;
//! # Ok(())
//! # }
//! ```
//!
//! # On call
//!
//! Every state change is an [`Event`] with a wall-clock [`timestamp`](Event::timestamp), a
//! one-line `Display` for a pager (`anthropic: circuit opened after 3 consecutive failures;
//! retry after 2m`) and, on a close, how long the provider was out
//! ([`out_for`](Event::out_for)). [`Event`], [`ProviderStatus`], [`Health`] and [`Routed`]
//! traces implement `serde::Serialize`; [`Config`] implements `Serialize` and `Deserialize`,
//! so it embeds in an application's own configuration. The repository ships Prometheus
//! alerting rules (`dashboards/alerts.yml`) beside a Grafana dashboard, and the ops endpoint
//! (`fusebox::server`, feature `server`) serves a live status page.
//!
//! # Modules
//!
//! - [`breaker`]: the circuit breaker as a pure state machine (time is an argument).
//! - [`budget`]: request and token budgets, same-provider retries and the retry budget.
//! - [`classify`]: which outcomes count against a provider; HTTP status and `Retry-After`.
//! - [`config`]: builders, validation and the TOML format ([`config::file`]).
//! - [`events`]: the event bus, its stable event names, and events for alerting.
//! - [`headroom`]: rate-limit headroom: what a provider says is left of its quota.
//! - [`metrics`]: the metrics fusebox emits through the `metrics` facade.
//! - [`router`]: routes, their policies, the router's published order, and the trace of a
//!   routed call.
//! - [`stream`]: guarded streamed calls (first-chunk and stall deadlines).
//! - `fleet` (feature `redis`): replicas share circuit state changes over Redis, one
//!   half-open trial for the whole fleet.
//! - `http` (feature `reqwest`): classification of reqwest errors and LLM error bodies,
//!   `send()`, SSE decoding, headroom headers; with feature `reqwest-middleware`, a
//!   reqwest-middleware `Middleware`.
//! - `tower` (feature `tower`): a tower `Layer` making each HTTP request a guarded call.
//! - `async_openai` (feature `async-openai`): async-openai clients guarded per request.
//! - `prometheus` (feature `prometheus`): installs a Prometheus recorder with buckets for
//!   LLM latencies.
//! - `server` (feature `server`): the ops endpoint: health, status, metrics, events, admin
//!   actions and the status page.
//! - `testing` (feature `mock-server`): a fault-injecting mock LLM provider.
//!
//! Feature-gated items are marked with their feature on docs.rs.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod adaptive;
#[cfg(feature = "async-openai")]
#[cfg_attr(docsrs, doc(cfg(feature = "async-openai")))]
pub mod async_openai;
mod attempt;
pub mod breaker;
pub mod budget;
mod bulkhead;
pub mod classify;
mod clock;
pub mod config;
mod error;
pub mod events;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod fleet;
pub mod headroom;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod http;
mod id;
pub mod metrics;
#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub mod prometheus;
mod provider;
pub mod router;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
pub mod stream;
mod supervisor;
mod tally;
#[cfg(feature = "mock-server")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock-server")))]
pub mod testing;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

pub use breaker::{Cause, CircuitState};
pub use budget::{Budget, BudgetStatus, Metered, Retry};
pub use classify::{http_verdict, http_verdict_at, Classify, ErrorClass, HeaderError, Verdict};
pub use config::{
    Adaptive, AllOpen, Breaker, Bulkhead, Config, Policy, Probe, Provider, Route, Tier, Window,
};
pub use error::{CallError, ConfigError, RouteError, Scope};
pub use events::{Event, EventKind, Origin};
pub use id::ProviderId;
pub use provider::{ProviderHandle, ProviderStatus};
pub use router::{
    Attempt, AttemptOutcome, Attempts, Reason, RouteMember, RouteStatus, Routed, RouterStatus,
};
pub use stream::{GuardedStream, StreamError};
pub use supervisor::{
    CircuitHealth, Health, ShutdownReport, Supervisor, SupervisorBuilder, UnknownProvider,
    RELOAD_DRAIN,
};
