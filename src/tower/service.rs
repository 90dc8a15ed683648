//! [`Fuse`]: the service the [`FuseLayer`](super::FuseLayer) wraps around an HTTP service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::Body;
use tokio::time::Instant;
use tower::{BoxError, Service};

use super::future::ResponseFuture;
use super::ResponseBody;
use crate::http::Rejected;
use crate::provider::{Admitted, Reject};
use crate::{CallError, ProviderHandle};

type Admitting =
    Pin<Box<dyn Future<Output = Result<Admitted<ProviderHandle>, Reject>> + Send + Sync>>;

/// Sends every request of an HTTP service through a provider's circuit breaker and
/// bulkhead: each request is one guarded call, classified from the response's status,
/// retry headers and (for an error status) its first
/// [`MAX_ERROR_BODY`](crate::http::MAX_ERROR_BODY) bytes.
///
/// Built by [`FuseLayer`](super::FuseLayer); see [the module docs](super) for what it
/// returns.
///
/// # Readiness
///
/// [`poll_ready`](Service::poll_ready) first asks the provider to admit a request. While the
/// circuit is open (or isolated, or the bulkhead full) it is ready at once *without polling
/// the inner service*, and the next [`call`](Service::call) fails with a boxed [`Rejected`]
/// without calling it. Admitted, it polls the inner service and holds the admission (a
/// bulkhead slot, a half-open trial) until `call` uses it or the service is dropped; waiting
/// for a bulkhead slot or a trial decision is `Pending`, like any backpressure.
///
/// A clone shares the provider (the same breaker, bulkhead and counts) and starts without
/// an admission, as tower's `ConcurrencyLimit` clones start without a permit.
///
/// # Inner services whose error is `BoxError`
///
/// Like tower's own layers (they bound the inner error with `Into<BoxError>` too), a `Fuse`
/// over a service whose error type is `tower::BoxError` itself cannot be driven inside
/// `tokio::spawn`: rustc reports "implementation of `From` is not general enough" (a known
/// compiler limitation with `dyn Error` lifetimes in `Send` checks). Give the inner service
/// a concrete error type (`hyper_util`'s, `reqwest::Error`, your own).
pub struct Fuse<S> {
    inner: S,
    provider: ProviderHandle,
    admission: Admission,
}

/// Where `poll_ready` stands.
enum Admission {
    /// Nothing asked yet.
    Idle,
    /// Waiting for a bulkhead slot or for the actor's trial decision.
    Waiting(Admitting),
    /// Admitted: the next `call` makes the request.
    Admitted(Admitted<ProviderHandle>),
    /// Declined: the next `call` fails with this, unless `poll_ready` is called again after
    /// `until` (the open deadline), which asks again.
    Rejected {
        error: Rejected,
        until: Option<Instant>,
    },
}

impl<S> Fuse<S> {
    /// Guards `inner` with `provider`.
    pub fn new(inner: S, provider: ProviderHandle) -> Self {
        Fuse {
            inner,
            provider,
            admission: Admission::Idle,
        }
    }

    /// The provider requests are guarded with.
    pub fn provider(&self) -> &ProviderHandle {
        &self.provider
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service (any admission held is given back).
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Asks the provider to admit the next request; ready once decided.
    fn poll_admission(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.admission {
                Admission::Idle => match self
                    .provider
                    .admit_now()
                    .map(|d| d.map(Admitted::into_owned))
                {
                    Some(decided) => {
                        self.decided(decided);
                        return Poll::Ready(());
                    }
                    None => {
                        let provider = self.provider.clone();
                        self.admission = Admission::Waiting(Box::pin(async move {
                            provider.admit(true).await.map(Admitted::into_owned)
                        }));
                    }
                },
                Admission::Waiting(admitting) => {
                    let decided = ready!(admitting.as_mut().poll(cx));
                    self.decided(decided);
                    return Poll::Ready(());
                }
                // Polled again after the open deadline (or while isolated, or after a full
                // bulkhead): the decision may be stale, ask again.
                Admission::Rejected { until, .. }
                    if until.is_none_or(|until| Instant::now() >= until) =>
                {
                    self.admission = Admission::Idle;
                }
                Admission::Admitted(_) | Admission::Rejected { .. } => return Poll::Ready(()),
            }
        }
    }

    fn decided(&mut self, decided: Result<Admitted<ProviderHandle>, Reject>) {
        match decided {
            Ok(admitted) => self.admission = Admission::Admitted(admitted),
            Err(reject) => self.reject(reject),
        }
    }

    fn reject(&mut self, reject: Reject) {
        let error: Rejected = reject.into_error(self.provider.id());
        let until = match &error {
            CallError::Open { retry_after, .. } => Instant::now().checked_add(*retry_after),
            _ => None,
        };
        self.admission = Admission::Rejected { error, until };
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Fuse<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body,
{
    type Response = http::Response<ResponseBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        ready!(self.poll_admission(cx));
        if let Admission::Rejected { .. } = self.admission {
            // Declined: the inner service is not asked.
            return Poll::Ready(Ok(()));
        }
        match ready!(self.inner.poll_ready(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(error) => {
                // The admission is given back (not counted against the provider).
                self.admission = Admission::Idle;
                Poll::Ready(Err(error.into()))
            }
        }
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        match std::mem::replace(&mut self.admission, Admission::Idle) {
            Admission::Admitted(admitted) => {
                ResponseFuture::admitted(self.inner.call(request), admitted)
            }
            Admission::Rejected { error, .. } => ResponseFuture::rejected(error),
            Admission::Idle | Admission::Waiting(_) => {
                panic!(
                    "Fuse::call without a successful poll_ready: poll_ready must be called first"
                )
            }
        }
    }
}

impl<S: Clone> Clone for Fuse<S> {
    fn clone(&self) -> Self {
        Fuse::new(self.inner.clone(), self.provider.clone())
    }
}

impl<S: fmt::Debug> fmt::Debug for Fuse<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let admission = match &self.admission {
            Admission::Idle => "idle",
            Admission::Waiting(_) => "waiting",
            Admission::Admitted(_) => "admitted",
            Admission::Rejected { .. } => "rejected",
        };
        f.debug_struct("Fuse")
            .field("inner", &self.inner)
            .field("provider", self.provider.id())
            .field("admission", &admission)
            .finish()
    }
}
