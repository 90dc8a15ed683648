//! async-openai clients whose own retries are off, so that one guarded call is one HTTP
//! request, and whose error responses keep their status and `Retry-After` (feature
//! `async-openai`, for async-openai 0.43 with its `middleware` feature).
//!
//! # What async-openai does by default, measured
//!
//! Measured against `fusebox::testing::MockLlm` on loopback with async-openai 0.43's
//! default client (`Client::with_config`; `Client::build` and `with_http_client` install the
//! same executor), by `tests/async_openai.rs` (the numbers are printed with `--nocapture`):
//!
//! - **Retries.** A 503 is retried 3 times: one call is 4 HTTP requests and took 712 ms
//!   (backoff 100 + 200 + 400 ms). Behind a `consecutive(5)` breaker the circuit opened
//!   after 5 calls that were **20 HTTP requests**, 3.5 s. Its source retries every 429,
//!   every 5xx and every connect error the same way (backoff doubling up to 8 s).
//! - **`Retry-After`.** A 429 with `Retry-After: 1` (and `retry-after-ms: 1000`) was 4
//!   requests in 3.0 s: it sleeps the hint before each retry, read as whole seconds only
//!   (`retry-after-ms` and HTTP dates are ignored), so `Retry-After: 7` costs 21 s of
//!   sleeping inside one call.
//! - **Headers dropped.** The error that comes out, `OpenAIError::ApiError`, keeps the
//!   status and the error body but no header: the 429 reached the breaker as a rate limit
//!   *without* a hint (with `rate_limited_for` off it left the circuit closed).
//! - `with_http_client(..)` installs that retrying executor again, silently: do not call it
//!   on the clients built here.
//!
//! # The clients built here
//!
//! [`client`] and [`plain_client`] install a [`Transport`] with
//! `Client::with_http_service`: plain reqwest, no retries, and an error status becomes
//! `OpenAIError::Boxed` around an [`HttpError`] classified from the status, the
//! `Retry-After-Ms` / `Retry-After` headers (seconds or an HTTP date) and the first
//! [`MAX_ERROR_BODY`](crate::http::MAX_ERROR_BODY) bytes of the error body, with the
//! provider's message ([`http_error`] finds it).
//!
//! - [`client`]`(config, provider)` guards every HTTP request with the provider: the circuit,
//!   the bulkhead and the call timeout apply per request, and when fusebox declines a request
//!   the error is `OpenAIError::Boxed` around a [`Rejected`] ([`rejected`] finds it, with its
//!   `retry_after`), and every response's rate-limit headers are recorded as the provider's
//!   headroom. Call it directly: `openai.chat().create(request).await`.
//! - [`plain_client`]`(config)` guards nothing: use it inside `fuse.call`, `fuse.route` or
//!   [`ProviderHandle::call`], which classify its errors with the [`Classify`] implementation
//!   below (the orphan rule keeps it from being written anywhere but here).
//!
//! Do not combine them (a guarded client inside `fuse.call` on the same provider counts
//! every failure twice).
//!
//! ```no_run
//! use async_openai::config::OpenAIConfig;
//! use async_openai::types::chat::CreateChatCompletionRequestArgs;
//! # async fn run(fuse: fusebox::Supervisor) -> Result<(), Box<dyn std::error::Error>> {
//! let config = OpenAIConfig::new().with_api_base("http://127.0.0.1:8080/v1");
//! let openai = fusebox::async_openai::client(config, fuse.provider("openai").expect("configured"));
//! let request = CreateChatCompletionRequestArgs::default()
//!     .model("gpt-4o-mini")
//!     .messages([async_openai::types::chat::ChatCompletionRequestUserMessage::from("hi").into()])
//!     .build()?;
//! match openai.chat().create(request).await {
//!     Ok(reply) => println!("{:?}", reply.choices[0].message.content),
//!     Err(error) => match fusebox::async_openai::rejected(&error) {
//!         Some(rejected) => println!("not sent, retry after {:?}", rejected.retry_after()),
//!         None => println!("{error}"),
//!     },
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Streams (`create_stream`) are guarded until the response head arrives; an error inside
//! the stream is not seen by the breaker.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use ::async_openai::config::Config;
use ::async_openai::error::{ApiErrorResponse, OpenAIError};
use ::async_openai::middleware::HttpRequestFactory;
use ::async_openai::Client;

use crate::http::{check, classify_response, error_verdict, split, HttpError, Rejected};
use crate::{Classify, ProviderHandle, Verdict};

/// An async-openai client guarding every HTTP request with `provider`, with async-openai's
/// retries off. See [the module docs](self).
///
/// Uses a new [`reqwest::Client`]; build a [`Transport`] to give your own.
///
/// # Panics
///
/// As [`reqwest::Client::new`], if the HTTP client cannot be initialised.
pub fn client<C: Config>(config: C, provider: ProviderHandle) -> Client<C> {
    Transport::new(reqwest::Client::new())
        .guarded(provider)
        .client(config)
}

/// An async-openai client with its retries off and error responses as [`HttpError`], for use
/// inside `fuse.call`, `fuse.route` and [`ProviderHandle::call`]. See [the module
/// docs](self).
///
/// ```no_run
/// use async_openai::config::OpenAIConfig;
/// use async_openai::types::chat::CreateChatCompletionRequestArgs;
/// # async fn run(fuse: fusebox::Supervisor) -> Result<(), Box<dyn std::error::Error>> {
/// let openai = fusebox::async_openai::plain_client(OpenAIConfig::new());
/// let request = CreateChatCompletionRequestArgs::default().model("gpt-4o-mini").build()?;
/// let reply = fuse.call("openai", || async { openai.chat().create(request).await }).await?;
/// # let _ = reply;
/// # Ok(())
/// # }
/// ```
///
/// # Panics
///
/// As [`reqwest::Client::new`], if the HTTP client cannot be initialised.
pub fn plain_client<C: Config>(config: C) -> Client<C> {
    Transport::new(reqwest::Client::new()).client(config)
}

/// The HTTP service of the clients built here: executes async-openai's requests with a
/// [`reqwest::Client`], once each, optionally as guarded calls on a provider.
///
/// A `tower::Service<HttpRequestFactory>` for `Client::with_http_service`, to wrap in tower
/// layers of your own:
///
/// ```no_run
/// use std::time::Duration;
/// use async_openai::config::OpenAIConfig;
/// use fusebox::async_openai::Transport;
/// # fn run(fuse: fusebox::Supervisor) {
/// let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build().unwrap();
/// let transport = Transport::new(http.clone()).guarded(fuse.provider("openai").unwrap());
/// let openai = async_openai::Client::build(http, OpenAIConfig::new()).with_http_service(transport);
/// # let _ = openai;
/// # }
/// ```
///
/// Errors: [`OpenAIError::Reqwest`] for a transport error, `OpenAIError::Boxed` around an
/// [`HttpError`] for an error status, and (guarded) around a [`Rejected`] when fusebox
/// declined or abandoned the request.
#[derive(Debug, Clone)]
pub struct Transport {
    http: reqwest::Client,
    provider: Option<ProviderHandle>,
}

impl Transport {
    /// Requests executed with `http`, unguarded.
    pub fn new(http: reqwest::Client) -> Self {
        Transport {
            http,
            provider: None,
        }
    }

    /// Every request a guarded call on `provider`.
    #[must_use]
    pub fn guarded(mut self, provider: ProviderHandle) -> Self {
        self.provider = Some(provider);
        self
    }

    /// An async-openai client building its requests with this transport's
    /// [`reqwest::Client`] and executing them with this transport.
    pub fn client<C: Config>(self, config: C) -> Client<C> {
        Client::build(self.http.clone(), config).with_http_service(self)
    }
}

/// Sends `request` once; an error status becomes `Boxed(HttpError)`.
async fn execute(
    http: &reqwest::Client,
    request: reqwest::Request,
    provider: Option<&ProviderHandle>,
) -> Result<reqwest::Response, OpenAIError> {
    let response = http.execute(request).await?;
    if let Some(provider) = provider {
        // Every response's rate-limit headers, success or error, feed the headroom.
        crate::http::record_headroom(provider, response.headers());
    }
    check(response).await.map_err(|error| match error {
        HttpError::Transport(error) => OpenAIError::Reqwest(error),
        status => OpenAIError::Boxed(Box::new(status)),
    })
}

impl tower::Service<HttpRequestFactory> for Transport {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), OpenAIError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let (http, provider) = (self.http.clone(), self.provider.clone());
        Box::pin(async move {
            // A request that cannot be built was never sent: not the provider's business.
            let request = factory.build().await?;
            let Some(provider) = provider else {
                return execute(&http, request, None).await;
            };
            provider
                .call(|| execute(&http, request, Some(&provider)))
                .await
                .map_err(|error| {
                    split(error).unwrap_or_else(|rejected| OpenAIError::Boxed(Box::new(rejected)))
                })
        })
    }
}

/// Classifies async-openai's errors:
///
/// - `Boxed` around an [`HttpError`] (an error status from the clients built here): its
///   verdict, from the status, the retry headers and the error body;
/// - `Reqwest`: as [`reqwest::Error`] (builder errors are ignored, others are failures);
/// - `ApiError` (an error status from async-openai's own client, without its headers): from
///   the status and the error's `type` and `code`, as [`classify_response`] does;
/// - `JSONDeserialize` (a response that is not what the API promises) and `StreamError`:
///   [`Failure`](Verdict::Failure);
/// - `InvalidArgument`, `FileReadError`, `FileSaveError`: the caller's side,
///   [`Ignored`](Verdict::Ignored);
/// - other `Boxed` errors by their type (a [`Rejected`] from a guarded client: open,
///   isolated or timed out is a failure, a full bulkhead is ignored), else a failure.
impl Classify for OpenAIError {
    fn verdict(&self) -> Verdict {
        match self {
            OpenAIError::Reqwest(error) => error.verdict(),
            OpenAIError::ApiError(response) => api_error_verdict(response),
            OpenAIError::JSONDeserialize(..) | OpenAIError::StreamError(_) => Verdict::Failure,
            #[cfg(not(target_family = "wasm"))]
            OpenAIError::FileSaveError(_) | OpenAIError::FileReadError(_) => Verdict::Ignored,
            OpenAIError::InvalidArgument(_) => Verdict::Ignored,
            OpenAIError::Boxed(error) => error_verdict(error.as_ref()),
        }
    }

    /// The class of an error status (a context window exceeded, a content policy
    /// refusal), from the clients built here or async-openai's own.
    fn error_class(&self) -> crate::ErrorClass {
        match self {
            OpenAIError::ApiError(response) => {
                let error = &response.api_error;
                let body = serde_json::json!({"error": {
                    "type": error.r#type, "code": error.code, "message": error.message,
                }});
                crate::http::body_class(&serde_json::to_vec(&body).unwrap_or_default())
            }
            _ => http_error(self).map_or(crate::ErrorClass::Other, HttpError::error_class),
        }
    }

    fn backoff_hint(&self) -> Option<Duration> {
        retry_after(self).or_else(|| self.verdict().retry_after())
    }
}

fn api_error_verdict(response: &ApiErrorResponse) -> Verdict {
    let error = &response.api_error;
    let body = serde_json::json!({"error": {"type": error.r#type, "code": error.code}});
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let status = response.status_code.as_u16();
    classify_response(status, [("", "")], &body, SystemTime::now())
}

/// The [`HttpError`] of an error status, from the clients built here.
pub fn http_error(error: &OpenAIError) -> Option<&HttpError> {
    match error {
        OpenAIError::Boxed(error) => error.downcast_ref(),
        _ => None,
    }
}

/// The [`Rejected`] of a request fusebox declined or abandoned, from a [`client`].
pub fn rejected(error: &OpenAIError) -> Option<&Rejected> {
    match error {
        OpenAIError::Boxed(error) => error.downcast_ref(),
        _ => None,
    }
}

/// The HTTP status of an error response, whichever client it came from.
pub fn status(error: &OpenAIError) -> Option<u16> {
    match error {
        OpenAIError::ApiError(response) => Some(response.status_code.as_u16()),
        OpenAIError::Reqwest(error) => error.status().map(|s| s.as_u16()),
        _ => http_error(error).and_then(HttpError::status),
    }
}

/// When to come back: the `Retry-After` of an error response (from the clients built here),
/// or the open circuit's `retry_after` of a declined request.
pub fn retry_after(error: &OpenAIError) -> Option<Duration> {
    http_error(error)
        .and_then(HttpError::retry_after)
        .or_else(|| rejected(error).and_then(Rejected::retry_after))
}
