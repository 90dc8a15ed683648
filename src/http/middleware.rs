//! [`FuseMiddleware`]: a reqwest-middleware `Middleware` making each request a guarded call
//! (feature `reqwest-middleware`).

use std::time::SystemTime;

use futures::StreamExt;
use reqwest::{Request, Response, ResponseBuilderExt};
use reqwest_middleware::{Error, Middleware, Next};

use super::{classify_response, error_verdict, split, MAX_ERROR_BODY};
use crate::{Classify, ProviderHandle, Verdict};

/// A [`reqwest_middleware::Middleware`] that sends every request through a provider's
/// circuit breaker and bulkhead: one HTTP request is one guarded call, classified from the
/// response's status, retry headers and (bounded) error body. Every response's rate-limit
/// headers are recorded as the provider's headroom ([`record_headroom`](super::record_headroom)).
///
/// Responses come back as they would without it, error statuses included (as
/// `RetryTransientMiddleware` does), so code that reads a 4xx or 5xx body keeps working: to
/// classify an error response, the middleware reads its first
/// [`MAX_ERROR_BODY`](super::MAX_ERROR_BODY) bytes and hands on a response that replays them
/// before the rest of the body, with the same status, headers, extensions and URL.
///
/// When fusebox declines a request (open circuit, full bulkhead...) or abandons it (the
/// provider's call timeout), the error is [`Error::Middleware`] around a
/// [`Rejected`](super::Rejected), found with `downcast_ref`. Errors of the client and of the
/// middlewares after this one pass through unchanged; they count as failures by their type
/// (a builder error is [`Ignored`](Verdict::Ignored), see [`Classify for
/// reqwest::Error`](super)).
///
/// Put retrying middleware *before* this one (`.with(retry).with(fuse)`), so that each
/// attempt is a call of its own and an open circuit stops the retries:
/// reqwest-retry treats a middleware error as fatal.
///
/// # Examples
///
/// ```no_run
/// use fusebox::http::{FuseMiddleware, Rejected};
/// # async fn run(fuse: fusebox::Supervisor) -> Result<(), Box<dyn std::error::Error>> {
/// let openai = fuse.provider("openai").expect("configured");
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(FuseMiddleware::new(openai))
///     .build();
/// match client.post("http://127.0.0.1:8080/v1/chat/completions").send().await {
///     Ok(response) => println!("{}", response.status()),
///     Err(reqwest_middleware::Error::Middleware(error)) => {
///         if let Some(rejected) = error.downcast_ref::<Rejected>() {
///             println!("not sent; retry after {:?}", rejected.retry_after());
///         }
///     }
///     Err(error) => return Err(error.into()),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FuseMiddleware {
    provider: ProviderHandle,
}

impl FuseMiddleware {
    /// A middleware guarding every request with `provider`, obtained from
    /// `Supervisor::provider`.
    pub fn new(provider: ProviderHandle) -> Self {
        FuseMiddleware { provider }
    }

    /// The provider requests are guarded with.
    pub fn provider(&self) -> &ProviderHandle {
        &self.provider
    }
}

/// How a request ended that is not a plain success.
enum Ended {
    /// An error status, with the response to hand on and what it says about the provider.
    Status(Response, Verdict),
    /// The client or a later middleware failed.
    Error(Error),
}

impl Ended {
    fn verdict(&self) -> Verdict {
        match self {
            Ended::Status(_, verdict) => *verdict,
            Ended::Error(Error::Reqwest(error)) => error.verdict(),
            Ended::Error(Error::Middleware(error)) => error_verdict(error.as_ref()),
        }
    }
}

#[async_trait::async_trait]
impl Middleware for FuseMiddleware {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let provider = &self.provider;
        let sent = provider
            .call_with(Ended::verdict, || async move {
                let sent = next.run(request, extensions).await;
                if let Ok(response) = &sent {
                    // Every response's rate-limit headers, success or error, feed the
                    // provider's headroom.
                    super::record_headroom(provider, response.headers());
                }
                match sent {
                    Ok(response) if is_success(&response) => Ok(response),
                    Ok(response) => {
                        let (response, verdict) = inspect(response).await;
                        Err(Ended::Status(response, verdict))
                    }
                    Err(error) => Err(Ended::Error(error)),
                }
            })
            .await;
        match sent.map_err(split) {
            Ok(response) | Err(Ok(Ended::Status(response, _))) => Ok(response),
            Err(Ok(Ended::Error(error))) => Err(error),
            Err(Err(rejected)) => Err(Error::middleware(rejected)),
        }
    }
}

/// A status of 100–399, as [`check`](super::check) passes through.
fn is_success(response: &Response) -> bool {
    Verdict::from_http_status(response.status().as_u16()) == Verdict::Success
}

/// Reads at most [`MAX_ERROR_BODY`] bytes of an error response's body and classifies it;
/// returns a response that replays what was read before the rest of the body.
async fn inspect(mut response: Response) -> (Response, Verdict) {
    let status = response.status();
    let version = response.version();
    let url = response.url().clone();
    let headers = std::mem::take(response.headers_mut());
    let mut extensions = std::mem::take(response.extensions_mut());
    let mut chunks = Vec::new();
    let mut read = 0;
    let (mut ended, mut failed) = (false, None);
    while read < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                chunks.push(chunk);
            }
            Ok(None) => {
                ended = true;
                break;
            }
            Err(error) => {
                failed = Some(error);
                break;
            }
        }
    }
    let mut prefix = Vec::with_capacity(read.min(MAX_ERROR_BODY));
    for chunk in &chunks {
        let room = MAX_ERROR_BODY - prefix.len();
        prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    let verdict = classify_response(status.as_u16(), &headers, &prefix, SystemTime::now());
    let replayed = futures::stream::iter(chunks.into_iter().map(Ok::<_, reqwest::Error>));
    let body = match failed {
        // The body failed while being read: replay what came, then the error.
        Some(error) => {
            reqwest::Body::wrap_stream(replayed.chain(futures::stream::iter([Err(error)])))
        }
        None if ended => reqwest::Body::wrap_stream(replayed),
        None => reqwest::Body::wrap_stream(replayed.chain(response.bytes_stream())),
    };
    // `ResponseBuilderExt::url` is the only way to give a rebuilt response its URL.
    if let Ok(marker) = http::Response::builder().url(url).body(()) {
        extensions.extend(marker.into_parts().0.extensions);
    }
    let mut rebuilt = http::Response::new(body);
    *rebuilt.status_mut() = status;
    *rebuilt.version_mut() = version;
    *rebuilt.headers_mut() = headers;
    *rebuilt.extensions_mut() = extensions;
    (Response::from(rebuilt), verdict)
}
