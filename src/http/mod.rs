//! Classification of [`reqwest`] errors and of LLM providers' HTTP error responses
//! (feature `reqwest`).
//!
//! [`check`] turns a response with an error status into an [`HttpError`] whose
//! [`Verdict`] comes from the status, the retry headers and the provider's JSON error body;
//! transport failures convert into [`HttpError::Transport`] with `?`. [`HttpError`]
//! implements [`Classify`], so it can be returned straight from a guarded call:
//!
//! ```no_run
//! use std::collections::HashMap;
//! use fusebox::http::{self, HttpError};
//! # async fn run(fuse: fusebox::Supervisor) -> Result<(), fusebox::CallError<HttpError>> {
//! let client = reqwest::Client::new();
//! let url = "http://127.0.0.1:8080/v1/chat/completions";
//! let body = HashMap::from([("model", "gpt-4o-mini")]);
//! let reply = fuse
//!     .call("openai", || async {
//!         let resp = client.post(url).json(&body).send().await?;
//!         let resp = fusebox::http::check(resp).await?;
//!         Ok::<_, HttpError>(resp.text().await?)
//!     })
//!     .await?;
//! # let _ = (reply, http::MAX_ERROR_BODY);
//! # Ok(())
//! # }
//! ```
//!
//! # Status and headers
//!
//! As [`http_verdict_at`]: 100–399 [`Success`](Verdict::Success); 429
//! [`RateLimited`](Verdict::RateLimited) with the `Retry-After-Ms` / `Retry-After` hint;
//! 401–403 [`Isolate`](Verdict::Isolate); 408 and 5xx (529 included)
//! [`Failure`](Verdict::Failure); other 4xx [`Ignored`](Verdict::Ignored).
//!
//! # Error bodies
//!
//! [`classify_response`] then reads the first [`MAX_ERROR_BODY`] bytes of the body as an
//! OpenAI (`{"error": {"message", "type", "code"}}`) or Anthropic
//! (`{"type": "error", "error": {"type", "message"}}`) error. A recognised `error.code` or
//! `error.type` replaces the status verdict (the code wins when both are recognised):
//!
//! | `code` or `type` | Verdict |
//! |---|---|
//! | `overloaded_error`, `api_error`, `server_error`, `service_unavailable`, `timeout` | [`Failure`](Verdict::Failure) |
//! | `rate_limit_error`, `rate_limit_exceeded`, `requests`, `tokens` | [`RateLimited`](Verdict::RateLimited), with the headers' hint |
//! | `invalid_request_error`, `context_length_exceeded`, `string_above_max_length`, `not_found_error`, `content_filter`, `content_policy_violation`, `request_too_large` | [`Ignored`](Verdict::Ignored) |
//! | `authentication_error`, `invalid_api_key`, `permission_error`, `billing_error`, `insufficient_quota`, `account_deactivated` | [`Isolate`](Verdict::Isolate) |
//!
//! So OpenAI's 429 with `insufficient_quota` isolates the provider (an exhausted quota is
//! a billing problem, not a rate limit), and a 500 from a gateway reporting
//! `context_length_exceeded` is the caller's fault.
//!
//! Exceptions: a success status is never changed by its body; and OpenAI's catch-all
//! *type* `invalid_request_error` without a recognised code does not turn a 401–403 into
//! `Ignored` (OpenAI answers a missing API key with 401 and that type).
//!
//! Unknown names and unusable bodies (empty, not JSON, truncated, not an object, fields of
//! the wrong type, nested too deep) leave the status verdict unchanged.
//!
//! # Transport errors
//!
//! A [`reqwest::Error`] is [`Failure`](Verdict::Failure) (connect, timeout, redirect,
//! body and decode errors), except a builder error (a bad URL, a body that does not
//! serialise: the caller's fault), which is [`Ignored`](Verdict::Ignored), and an error from
//! [`Response::error_for_status`](reqwest::Response::error_for_status), which is
//! classified by its status as [`Verdict::from_http_status`] does.
//!
//! [`http_verdict_at`]: crate::http_verdict_at

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::classify::retry_hint;
use crate::{Classify, Verdict};

mod body;
mod headroom;
#[cfg(feature = "reqwest-middleware")]
mod middleware;
mod send;
pub mod sse;
mod usage;

use body::ErrorBody;
pub use headroom::{headroom, headroom_header_names, parse_headroom, parse_reset, record_headroom};
#[cfg(feature = "reqwest-middleware")]
pub use middleware::FuseMiddleware;
/// The reqwest fusebox is built against, so that users name the same version.
pub use reqwest;
#[cfg(any(
    feature = "tower",
    feature = "reqwest-middleware",
    feature = "async-openai"
))]
pub(crate) use send::error_verdict;
#[cfg(any(feature = "reqwest-middleware", feature = "async-openai"))]
pub(crate) use send::split;
pub use send::{send, send_via, Rejected};
pub use usage::usage;

/// The most bytes of an error body read and parsed: 64 KiB.
///
/// [`check`] reads no more of the body than this, and [`classify_response`] parses no more
/// (a longer body is truncated first, which usually leaves invalid JSON and so the status
/// verdict).
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// Builder errors are [`Ignored`](Verdict::Ignored), errors from
/// [`error_for_status`](reqwest::Response::error_for_status) are classified by their status,
/// and everything else (connect, timeout, redirect, body, decode) is a
/// [`Failure`](Verdict::Failure).
impl Classify for reqwest::Error {
    fn verdict(&self) -> Verdict {
        if let Some(status) = self.status() {
            Verdict::from_http_status(status.as_u16())
        } else if self.is_builder() {
            Verdict::Ignored
        } else {
            Verdict::Failure
        }
    }
}

/// Classifies an HTTP response from its status, headers and (error) body, at wall-clock
/// time `now`.
///
/// Starts from [`http_verdict_at`](crate::http_verdict_at) and refines it with the
/// provider's JSON error body, as the [module docs](self) describe. Only the first
/// [`MAX_ERROR_BODY`] bytes of `body` are parsed. Never panics.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use fusebox::{http::classify_response, Verdict};
///
/// let now = SystemTime::now();
/// let quota = br#"{"error": {"message": "You exceeded your current quota",
///     "type": "insufficient_quota", "code": "insufficient_quota"}}"#;
/// assert_eq!(classify_response(429, [("retry-after", "20")], quota, now), Verdict::Isolate);
///
/// let limited = br#"{"type": "error", "error": {"type": "rate_limit_error"}}"#;
/// assert_eq!(
///     classify_response(429, [("retry-after", "20")], limited, now),
///     Verdict::RateLimited { retry_after: Some(Duration::from_secs(20)) },
/// );
///
/// let overloaded = br#"{"type": "error", "error": {"type": "overloaded_error"}}"#;
/// assert_eq!(classify_response(529, [("x", "y")], overloaded, now), Verdict::Failure);
/// assert_eq!(classify_response(400, [("x", "y")], b"<html>", now), Verdict::Ignored);
/// ```
pub fn classify_response<I, K, V>(status: u16, headers: I, body: &[u8], now: SystemTime) -> Verdict
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<[u8]>,
{
    let hint = retry_hint(headers, now);
    ErrorBody::parse(body).refine(status_verdict(status, hint), hint)
}

/// The [`ErrorClass`](crate::ErrorClass) an error body names (see [`HttpError`]'s `class`).
#[cfg(feature = "async-openai")]
pub(crate) fn body_class(body: &[u8]) -> crate::ErrorClass {
    ErrorBody::parse(body).class()
}

/// What [`http_verdict_at`](crate::http_verdict_at) says, given the headers' hint.
fn status_verdict(status: u16, hint: Option<Duration>) -> Verdict {
    match Verdict::from_http_status(status) {
        Verdict::RateLimited { .. } => Verdict::RateLimited { retry_after: hint },
        verdict => verdict,
    }
}

/// Reads at most `limit` bytes of `response`'s body, chunk by chunk.
///
/// Stops as soon as `limit` bytes are in; the rest of the body is never read (dropping the
/// response then closes the connection rather than draining it). Never holds more than
/// `limit` bytes plus the chunk being copied.
///
/// # Errors
///
/// The transport error if the body fails before `limit` bytes or its end (connection
/// closed early, timeout).
pub async fn read_limited(
    response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    read_into(response, limit, &mut body).await?;
    Ok(body)
}

/// [`read_limited`], keeping what was read when the body fails.
async fn read_into(
    mut response: reqwest::Response,
    limit: usize,
    body: &mut Vec<u8>,
) -> Result<(), reqwest::Error> {
    let expected = response
        .content_length()
        .and_then(|len| usize::try_from(len).ok())
        .unwrap_or(0);
    body.reserve(expected.min(limit));
    while body.len() < limit {
        let Some(chunk) = response.chunk().await? else {
            break;
        };
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(())
}

/// An HTTP call to an LLM provider that did not succeed, classified.
///
/// Built by [`check`] from an error response, and from a [`reqwest::Error`] with `?`.
#[derive(Debug)]
#[non_exhaustive]
pub enum HttpError {
    /// The provider answered with an error status.
    Status {
        /// The HTTP status code.
        status: u16,
        /// What the status, the retry headers and the error body say about the provider
        /// (see [`classify_response`]).
        verdict: Verdict,
        /// The provider's error message from its JSON body, trimmed and cut to 500
        /// characters.
        message: Option<String>,
        /// The back-off hint of the `Retry-After-Ms` or `Retry-After` header, whatever the
        /// status (a 503 may carry one too).
        retry_after: Option<Duration>,
        /// The class of error the body names (a context window exceeded, a content policy
        /// refusal), for the fallbacks that depend on it.
        class: crate::ErrorClass,
    },
    /// The request failed (connect, timeout, body...).
    Transport(reqwest::Error),
}

/// [`HttpError::Status`] gives its `verdict`; [`HttpError::Transport`] the
/// [`reqwest::Error`]'s.
impl Classify for HttpError {
    fn verdict(&self) -> Verdict {
        match self {
            HttpError::Status { verdict, .. } => *verdict,
            HttpError::Transport(error) => error.verdict(),
        }
    }

    fn error_class(&self) -> crate::ErrorClass {
        match self {
            HttpError::Status { class, .. } => *class,
            HttpError::Transport(_) => crate::ErrorClass::Other,
        }
    }

    fn backoff_hint(&self) -> Option<Duration> {
        match self {
            HttpError::Status { retry_after, .. } => *retry_after,
            HttpError::Transport(_) => None,
        }
    }
}

/// `HTTP 429 Too Many Requests: <message>` for a status; a transport error shows as the
/// [`reqwest::Error`] itself (and [`source`](std::error::Error::source) skips it, going
/// to its cause).
impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Status {
                status, message, ..
            } => {
                write!(f, "HTTP {status}")?;
                let reason = reqwest::StatusCode::from_u16(*status)
                    .ok()
                    .and_then(|code| code.canonical_reason());
                if let Some(reason) = reason {
                    write!(f, " {reason}")?;
                }
                if let Some(message) = message {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            HttpError::Transport(error) => fmt::Display::fmt(error, f),
        }
    }
}

impl std::error::Error for HttpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HttpError::Status { .. } => None,
            // Shown by `Display` already.
            HttpError::Transport(error) => error.source(),
        }
    }
}

impl From<reqwest::Error> for HttpError {
    fn from(error: reqwest::Error) -> Self {
        HttpError::Transport(error)
    }
}

/// Passes a response with a status of 100–399 through; turns any other into
/// [`HttpError::Status`].
///
/// Reads at most [`MAX_ERROR_BODY`] bytes of an error body, classifies it with
/// [`classify_response`] (with the response's headers and [`SystemTime::now`]) and keeps the
/// provider's message. If the error body fails midway, what was read is used (usually
/// leaving the status verdict).
///
/// # Errors
///
/// [`HttpError::Status`] for an error status (4xx, 5xx, or out of range).
pub async fn check(response: reqwest::Response) -> Result<reqwest::Response, HttpError> {
    let status = response.status().as_u16();
    if Verdict::from_http_status(status) == Verdict::Success {
        return Ok(response);
    }
    let retry_after = retry_hint(response.headers(), SystemTime::now());
    let mut body = Vec::new();
    // A body that fails midway still leaves the status to classify by.
    let _ = read_into(response, MAX_ERROR_BODY, &mut body).await;
    let parsed = ErrorBody::parse(&body);
    Err(HttpError::Status {
        status,
        verdict: parsed.refine(status_verdict(status, retry_after), retry_after),
        class: parsed.class(),
        message: parsed.message,
        retry_after,
    })
}
