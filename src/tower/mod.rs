//! A tower [`Layer`](::tower::Layer) making each HTTP request a guarded call on a provider
//! (feature `tower`).
//!
//! [`FuseLayer`] wraps any `Service<http::Request<B>, Response = http::Response<RB>>` (a
//! hyper client, an axum proxy's upstream, a reqwest adapter) in [`Fuse`], which sends every
//! request through the provider's circuit breaker and bulkhead:
//!
//! - **Admission in `poll_ready`.** An open (or isolated) circuit or a full bulkhead makes
//!   the service ready at once without polling the inner service, and the next `call` fails
//!   with a boxed [`Rejected`] without calling it: no request reaches a provider that is down.
//! - **Classification from the response.** A status of 100–399 is a success (the body is
//!   not read). Any other status is classified as [`fusebox::http`](crate::http) classifies
//!   it: from the status, the `Retry-After-Ms` / `Retry-After` headers and the provider's
//!   JSON error body, of which at most [`MAX_ERROR_BODY`](crate::http::MAX_ERROR_BODY) bytes
//!   are read. A 429's hint opens the circuit for at least that long, and the next request's
//!   [`CallError::Open`](crate::CallError::Open) carries it as `retry_after`.
//! - **Headroom.** Every response's rate-limit headers (OpenAI's and Anthropic's), success
//!   or error, are recorded as the provider's headroom
//!   ([`record_headroom`](crate::http::record_headroom)), which routes and `status()` read.
//! - **Transparent responses.** Error responses come back as `Ok`, status, headers and body
//!   intact: the [`ResponseBody`] replays the bytes read to classify them before the rest.
//! - **Errors.** The inner service's errors come back unchanged (boxed) and count by their
//!   type (a [`reqwest::Error`] or an [`std::io::Error`] among their sources by its verdict,
//!   anything else as a failure). fusebox's own are a boxed [`Rejected`]: declined, or
//!   [`CallError::Timeout`](crate::CallError::Timeout) when the provider's call timeout
//!   passes before the response (and an error response's first bytes) arrive.
//! - **Clones share the provider**: one breaker, one bulkhead and one set of counts for
//!   every clone, as for every call through `Supervisor::call`.
//!
//! The request's success or failure is decided when its response head (and, for an error,
//! the first bytes of its body) arrive; a streamed body failing later is not seen.
//!
//! # Examples
//!
//! ```
//! use std::convert::Infallible;
//! use fusebox::http::Rejected;
//! use fusebox::tower::FuseLayer;
//! use fusebox::{Breaker, CallError, Provider, Supervisor};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let fuse = Supervisor::builder()
//!     .provider(Provider::new("openai").breaker(Breaker::consecutive(2)))
//!     .build()
//!     .await?;
//! let openai = fuse.provider("openai").expect("configured");
//!
//! // Any HTTP service: here one that is overloaded.
//! let upstream = tower::service_fn(|_: http::Request<String>| async {
//!     let mut response = http::Response::new(String::from("overloaded"));
//!     *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
//!     Ok::<_, Infallible>(response)
//! });
//! let mut service = ServiceBuilder::new().layer(FuseLayer::new(openai)).service(upstream);
//!
//! for _ in 0..2 {
//!     let response = service.ready().await?.call(http::Request::default()).await?;
//!     assert_eq!(response.status(), 503); // passed through, and counted
//! }
//! // The circuit is open: the upstream is neither polled nor called.
//! let error = service.ready().await?.call(http::Request::default()).await.unwrap_err();
//! let rejected = error.downcast_ref::<Rejected>().expect("declined by fusebox");
//! assert!(matches!(rejected, CallError::Open { failure_count: 2, .. }));
//! # Ok(())
//! # }
//! ```

mod body;
pub mod future;
mod layer;
mod service;

pub use self::body::ResponseBody;
pub use self::layer::FuseLayer;
pub use self::service::Fuse;
pub use crate::http::Rejected;
