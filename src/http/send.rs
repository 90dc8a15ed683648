//! Status-aware sending: [`send`] and [`send_via`], and what fusebox's HTTP integrations
//! return when they decline a request ([`Rejected`]).

use std::convert::Infallible;
use std::time::Duration;

use super::{check, HttpError};
use crate::{CallError, ProviderHandle};
#[cfg(any(
    feature = "tower",
    feature = "reqwest-middleware",
    feature = "async-openai"
))]
use crate::{Classify, Verdict};

/// What fusebox's HTTP integrations return, boxed, when fusebox itself declined a request or
/// abandoned it: a [`CallError`] that is never [`CallError::Inner`].
///
/// The tower layer (`fusebox::tower`, feature `tower`), the reqwest-middleware
/// `FuseMiddleware` (feature `reqwest-middleware`) and the async-openai integration
/// (`fusebox::async_openai`, feature `async-openai`) pass the errors of the stack below them
/// through unchanged, and add only these: [`CallError::Open`] (with its
/// `retry_after`), [`CallError::Isolated`], [`CallError::BulkheadFull`],
/// [`CallError::QueueTimeout`], [`CallError::Timeout`] (the provider's call timeout: this one
/// did reach the provider, and counted as a failure) and [`CallError::ShuttingDown`].
/// Downcast a boxed error to find them:
///
/// ```
/// use std::time::Duration;
/// use fusebox::http::Rejected;
///
/// fn retry_after(error: &(dyn std::error::Error + 'static)) -> Option<Duration> {
///     error.downcast_ref::<Rejected>()?.retry_after()
/// }
/// # let open: Box<dyn std::error::Error> = Box::new(Rejected::ShuttingDown);
/// # assert_eq!(retry_after(&*open), None);
/// ```
pub type Rejected = CallError<Infallible>;

/// Sends `request` and turns an error status into an [`HttpError`]: the call a guarded
/// operation should make, so that a 503 counts as the failure it is.
///
/// [`RequestBuilder::send`](reqwest::RequestBuilder::send) succeeds for every response, 5xx
/// included, so `fuse.call("openai", || request.send())` counts outages as successes. `send`
/// [`check`]s the response: a status of 100–399 is passed through; any other becomes
/// [`HttpError::Status`], classified from the status, the `Retry-After-Ms` / `Retry-After`
/// headers (delay-seconds or an HTTP date) and the first [`MAX_ERROR_BODY`](super::MAX_ERROR_BODY)
/// bytes of the provider's JSON error body (see [the module docs](super)).
///
/// Use it inside `fuse.call`, `fuse.route` or [`ProviderHandle::call`]; [`send_via`] does the
/// `call` for you.
///
/// ```no_run
/// use fusebox::http::{self, HttpError};
/// # async fn run(fuse: fusebox::Supervisor) -> Result<(), fusebox::CallError<HttpError>> {
/// let client = reqwest::Client::new();
/// let body = serde_json::json!({"model": "gpt-4o-mini", "messages": []});
/// let url = "http://127.0.0.1:8080/v1/chat/completions";
/// let reply = fuse.call("openai", || http::send(client.post(url).json(&body))).await?;
/// println!("{}", reply.status());
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`HttpError::Transport`] when the request cannot be built or sent (connect, timeout,
/// redirect); [`HttpError::Status`] for an error status.
///
/// # Cancel safety
///
/// Dropping the future abandons the request (reqwest closes the connection).
pub async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, HttpError> {
    check(request.send().await?).await
}

/// Sends `request` as a guarded call on `provider`: [`send`] inside
/// [`ProviderHandle::call`].
///
/// The call is admitted by the provider's circuit and bulkhead first (an open circuit
/// rejects it without sending anything), runs under the provider's call timeout (sending,
/// and reading at most [`MAX_ERROR_BODY`](super::MAX_ERROR_BODY) bytes of an error body), and
/// counts as the response's verdict: one HTTP request is one call. Its rate-limit headers
/// (OpenAI's and Anthropic's) are recorded as the provider's headroom. A 429's `Retry-After`
/// opens the circuit for at least the hint, which the next call's [`CallError::Open`]
/// carries as `retry_after`.
///
/// ```no_run
/// use fusebox::http::{self, HttpError};
/// use fusebox::CallError;
/// # async fn run(fuse: fusebox::Supervisor) -> Result<(), CallError<HttpError>> {
/// let openai = fuse.provider("openai").expect("configured");
/// let client = reqwest::Client::new();
/// let body = serde_json::json!({"model": "gpt-4o-mini", "messages": []});
/// let url = "http://127.0.0.1:8080/v1/chat/completions";
/// match http::send_via(&openai, client.post(url).json(&body)).await {
///     Ok(response) => println!("{}", response.status()),
///     Err(CallError::Open { retry_after, .. }) => println!("back in {retry_after:?}"),
///     Err(CallError::Inner(error)) => println!("{:?} {:?}", error.status(), error.message()),
///     Err(other) => return Err(other),
/// }
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`CallError::Inner`] with [`send`]'s error, or the [`CallError`] saying why the request
/// was not sent or was abandoned.
///
/// # Cancel safety
///
/// As [`ProviderHandle::call`]: dropping the future gives back the provider's slots and never
/// counts as a failure.
pub async fn send_via(
    provider: &ProviderHandle,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, CallError<HttpError>> {
    provider
        .call(|| async {
            let response = request.send().await?;
            // Every response's rate-limit headers, success or error, feed the headroom.
            super::record_headroom(provider, response.headers());
            check(response).await
        })
        .await
}

impl HttpError {
    /// The HTTP status the provider answered with; `None` for a transport error (but the
    /// status of an [`error_for_status`](reqwest::Response::error_for_status) error).
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            HttpError::Transport(error) => error.status().map(|s| s.as_u16()),
        }
    }

    /// The back-off hint of the response's `Retry-After-Ms` or `Retry-After` header
    /// (delay-seconds or an HTTP date), whatever the status; `None` for a transport error or
    /// a response without a usable hint.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            HttpError::Status { retry_after, .. } => *retry_after,
            HttpError::Transport(_) => None,
        }
    }

    /// The provider's error message from its JSON error body (OpenAI's or Anthropic's
    /// `error.message`, or a top-level `message`), trimmed and cut to 500 characters.
    pub fn message(&self) -> Option<&str> {
        match self {
            HttpError::Status { message, .. } => message.as_deref(),
            HttpError::Transport(_) => None,
        }
    }
}

#[cfg(any(feature = "reqwest-middleware", feature = "async-openai"))]
/// Splits a call's error into the operation's own error and fusebox's [`Rejected`].
pub(crate) fn split<E>(error: CallError<E>) -> Result<E, Rejected> {
    match error {
        CallError::Inner(error) => Ok(error),
        other => Err(other.map_inner(|_| unreachable!("`Inner` is matched above"))),
    }
}

#[cfg(any(
    feature = "tower",
    feature = "reqwest-middleware",
    feature = "async-openai"
))]
/// What a [`Rejected`] from a guarded stack below says about the provider above it: a
/// timeout, an open or isolated circuit count against it; a full bulkhead, a queue timeout
/// or a shutdown are local and [`Ignored`](Verdict::Ignored).
pub(crate) fn rejected_verdict(rejected: &Rejected) -> Verdict {
    match rejected {
        CallError::Timeout { .. } | CallError::Open { .. } | CallError::Isolated { .. } => {
            Verdict::Failure
        }
        _ => Verdict::Ignored,
    }
}

#[cfg(any(
    feature = "tower",
    feature = "reqwest-middleware",
    feature = "async-openai"
))]
/// The verdict of an error from a stack fusebox does not know, found by its type (looking
/// through its sources): an [`HttpError`], a [`reqwest::Error`], a [`Rejected`] from a
/// nested guard, an [`std::io::Error`]; anything else is a [`Failure`](Verdict::Failure).
pub(crate) fn error_verdict(error: &(dyn std::error::Error + 'static)) -> Verdict {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(error) = error.downcast_ref::<HttpError>() {
            return error.verdict();
        }
        if let Some(error) = error.downcast_ref::<reqwest::Error>() {
            return error.verdict();
        }
        if let Some(rejected) = error.downcast_ref::<Rejected>() {
            return rejected_verdict(rejected);
        }
        if let Some(error) = error.downcast_ref::<std::io::Error>() {
            return error.verdict();
        }
        next = error.source();
    }
    Verdict::Failure
}
