//! [`ResponseFuture`], the future of [`Fuse`](super::Fuse)'s responses.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Buf;
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::BoxError;

use super::body::{End, Replay, ResponseBody};
use crate::http::{classify_response, error_verdict, Rejected, MAX_ERROR_BODY};
use crate::provider::{Admitted, Count, Delivery};
use crate::{CallError, ProviderHandle, Verdict};

type Output<B> = Result<http::Response<ResponseBody<B>>, BoxError>;

pin_project! {
    /// The future of a [`Fuse`](super::Fuse) response: the inner service's response once
    /// the provider's breaker has recorded it.
    ///
    /// Resolves to the inner response (error statuses included, with a [`ResponseBody`]), the
    /// inner service's error, or a boxed [`Rejected`]: declined (the circuit was open when
    /// the service was polled ready) or timed out (the provider's call timeout passed before
    /// the response, and an error response's first bytes, arrived).
    ///
    /// # Cancel safety
    ///
    /// Dropping it abandons the request: the provider's slots are given back and nothing is
    /// counted against it.
    pub struct ResponseFuture<F, B: Body> {
        #[pin]
        state: State<F, B>,
        #[pin]
        timeout: Option<Sleep>,
        guard: Option<Guard>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B: Body> {
        Rejected { error: Option<Rejected> },
        Calling { #[pin] future: F },
        Reading { reading: Box<Reading<B>> },
        Reporting { delivery: Option<Delivery>, output: Option<Output<B>> },
    }
}

/// An admitted request: what is needed to record its outcome.
struct Guard {
    admitted: Admitted<ProviderHandle>,
    started: Option<Instant>,
    limit: Option<Duration>,
}

/// An error response whose first bytes are being read.
struct Reading<B: Body> {
    parts: Option<http::response::Parts>,
    body: Option<Pin<Box<B>>>,
    replay: Replay<B>,
    read: usize,
    /// Whether the body ended (or failed) while being read.
    ended: bool,
}

impl<F, B: Body> ResponseFuture<F, B> {
    pub(super) fn rejected(error: Rejected) -> Self {
        ResponseFuture {
            state: State::Rejected { error: Some(error) },
            timeout: None,
            guard: None,
        }
    }

    pub(super) fn admitted(future: F, admitted: Admitted<ProviderHandle>) -> Self {
        let shared = &admitted.handle().shared;
        let limit = shared.config.call_timeout;
        let started = admitted.needs_clock().then(Instant::now);
        ResponseFuture {
            state: State::Calling { future },
            timeout: limit.map(tokio::time::sleep),
            guard: Some(Guard {
                admitted,
                started,
                limit,
            }),
        }
    }
}

impl<F, E, B> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
    B: Body,
{
    type Output = Output<B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let (verdict, output) = match this.state.as_mut().project() {
                StateProj::Rejected { error } => {
                    let error = error.take().unwrap_or(CallError::ShuttingDown);
                    return Poll::Ready(Err(error.into()));
                }
                StateProj::Reporting { delivery, output } => {
                    if let Some(delivery) = delivery {
                        ready!(Pin::new(delivery).poll(cx));
                    }
                    let output = output.take();
                    return Poll::Ready(output.unwrap_or(Err(Rejected::ShuttingDown.into())));
                }
                StateProj::Calling { future } => match future.poll(cx) {
                    Poll::Ready(Ok(response)) if is_success(response.status()) => {
                        record_headroom(this.guard.as_ref(), response.headers());
                        (Verdict::Success, Ok(response.map(ResponseBody::plain)))
                    }
                    Poll::Ready(Ok(response)) => {
                        record_headroom(this.guard.as_ref(), response.headers());
                        let (parts, body) = response.into_parts();
                        let reading = Box::new(Reading {
                            parts: Some(parts),
                            body: Some(Box::pin(body)),
                            replay: Replay {
                                prefix: VecDeque::new(),
                                end: None,
                                rest: None,
                            },
                            read: 0,
                            ended: false,
                        });
                        this.state.set(State::Reading { reading });
                        continue;
                    }
                    Poll::Ready(Err(error)) => {
                        let error = error.into();
                        (error_verdict(&*error), Err(error))
                    }
                    Poll::Pending => match timed_out(this.timeout.as_mut(), cx) {
                        Some(()) => timeout(this.guard),
                        None => return Poll::Pending,
                    },
                },
                StateProj::Reading { reading } => match reading.poll_read(cx) {
                    Poll::Ready(()) => reading.finish(),
                    Poll::Pending => match timed_out(this.timeout.as_mut(), cx) {
                        Some(()) => timeout(this.guard),
                        None => return Poll::Pending,
                    },
                },
            };
            let delivery = this.guard.take().and_then(|guard| {
                let elapsed = match (&output, guard.limit) {
                    (Err(error), Some(limit)) if is_timeout(error) => limit,
                    _ => guard.started.map_or(Duration::ZERO, |s| s.elapsed()),
                };
                let shared = &guard.admitted.handle().shared;
                if guard.started.is_some() {
                    shared.durations.record(verdict.is_failure(), elapsed);
                }
                guard.admitted.report(verdict, elapsed)
            });
            this.timeout.set(None);
            this.state.set(State::Reporting {
                delivery,
                output: Some(output),
            });
        }
    }
}

/// Every response's rate-limit headers, success or error, feed the provider's headroom.
fn record_headroom(guard: Option<&Guard>, headers: &http::HeaderMap) {
    if let Some(guard) = guard {
        crate::http::record_headroom(guard.admitted.handle(), headers);
    }
}

/// A status of 100–399, as [`check`](crate::http::check) passes through.
fn is_success(status: http::StatusCode) -> bool {
    Verdict::from_http_status(status.as_u16()) == Verdict::Success
}

/// Whether the call timeout has passed.
fn timed_out(timeout: Pin<&mut Option<Sleep>>, cx: &mut Context<'_>) -> Option<()> {
    let sleep = timeout.as_pin_mut()?;
    sleep.poll(cx).is_ready().then_some(())
}

/// The outcome of a call abandoned at its timeout.
fn timeout<B: Body>(guard: &Option<Guard>) -> (Verdict, Output<B>) {
    let error: Rejected = match guard {
        Some(guard) => {
            let handle = guard.admitted.handle();
            handle.shared.counters.add(Count::Timeouts, 1);
            CallError::Timeout {
                provider: handle.id().clone(),
                after: guard.limit.unwrap_or_default(),
            }
        }
        None => CallError::ShuttingDown,
    };
    (Verdict::Failure, Err(error.into()))
}

fn is_timeout(error: &BoxError) -> bool {
    matches!(
        error.downcast_ref::<Rejected>(),
        Some(CallError::Timeout { .. })
    )
}

impl<B: Body> Reading<B> {
    /// Reads data frames until [`MAX_ERROR_BODY`] bytes, the trailers, an error or the end.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(());
        };
        while self.read < MAX_ERROR_BODY {
            let frame = match ready!(body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    self.replay.end = Some(End::Error(error));
                    break;
                }
                None => break,
            };
            match frame.into_data() {
                Ok(mut data) => {
                    let chunk = data.copy_to_bytes(data.remaining());
                    self.read += chunk.len();
                    self.replay.prefix.push_back(chunk);
                    continue;
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.replay.end = Some(End::Trailers(trailers));
                    }
                    break;
                }
            }
        }
        // Left the loop early: the body is over. Otherwise more may follow, given out after
        // what was read.
        self.ended = self.read < MAX_ERROR_BODY;
        Poll::Ready(())
    }

    /// Classifies what was read and rebuilds the response around it.
    fn finish(&mut self) -> (Verdict, Output<B>) {
        let mut prefix = Vec::with_capacity(self.read.min(MAX_ERROR_BODY));
        for chunk in &self.replay.prefix {
            let room = MAX_ERROR_BODY - prefix.len();
            prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        let Some(parts) = self.parts.take() else {
            return (Verdict::Ignored, Err(Rejected::ShuttingDown.into()));
        };
        let status = parts.status.as_u16();
        let verdict = classify_response(status, &parts.headers, &prefix, SystemTime::now());
        let replay = Replay {
            prefix: std::mem::take(&mut self.replay.prefix),
            end: self.replay.end.take(),
            rest: if self.ended { None } else { self.body.take() },
        };
        let body = ResponseBody::replay(replay);
        (verdict, Ok(http::Response::from_parts(parts, body)))
    }
}

impl<F, B: Body> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Rejected { .. } => "rejected",
            State::Calling { .. } => "calling",
            State::Reading { .. } => "reading an error body",
            State::Reporting { .. } => "reporting",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
