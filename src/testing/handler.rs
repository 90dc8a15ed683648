//! The request handlers: count, look up the fault, answer.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::conn::Killer;
use super::quota;
use super::script::FaultKind;
use super::server::{InFlight, Shared};
use super::shapes::{self, Api, Request};

/// The largest request body read (larger ones are answered 400).
const MAX_BODY: usize = 16 << 20;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai))
        .route("/v1/messages", post(anthropic))
        .route("/v1/models", get(models))
        .with_state(shared)
}

/// `GET /v1/models`, what a recovery probe asks: answered at once, failing as the fault
/// script says for a request arriving now (request-numbered windows count these requests
/// apart from the API's). Counted in [`MockStats::models_requests`] only, never in
/// `requests`, so probes are told apart from calls.
async fn models(State(shared): State<Arc<Shared>>) -> Response {
    let n = {
        let mut stats = shared.stats();
        stats.models_requests += 1;
        stats.models_requests - 1
    };
    let status = match shared.fault_for(n) {
        None | Some(FaultKind::Slow(_)) => None,
        Some(FaultKind::Status(status)) if (400..=599).contains(&status) => Some(status),
        Some(FaultKind::RateLimited { .. }) => Some(429),
        Some(FaultKind::Overloaded) => Some(529),
        Some(FaultKind::Unauthorized) => Some(401),
        Some(FaultKind::Flap) if n % 2 == 1 => None,
        Some(_) => Some(503),
    };
    match status.and_then(|s| StatusCode::from_u16(s).ok()) {
        Some(status) => (status, "mock fault").into_response(),
        None => Json(serde_json::json!({
            "object": "list",
            "data": [{"id": "mock-model", "object": "model"}],
        }))
        .into_response(),
    }
}

async fn openai(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(killer): ConnectInfo<Killer>,
    body: Body,
) -> Response {
    handle(Api::OpenAi, shared, killer, body).await
}

async fn anthropic(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(killer): ConnectInfo<Killer>,
    body: Body,
) -> Response {
    handle(Api::Anthropic, shared, killer, body).await
}

/// One request, from arrival to response.
struct Call {
    api: Api,
    n: u64,
    shared: Arc<Shared>,
    killer: Killer,
    /// Gives the request's place in `in_flight` back when the call (or its stream) ends.
    _in_flight: InFlight,
}

async fn handle(api: Api, shared: Arc<Shared>, killer: Killer, body: Body) -> Response {
    let (n, in_flight) = shared.arrive();
    let fault = shared.fault_for(n);
    let call = Call {
        api,
        n,
        shared,
        killer,
        _in_flight: in_flight,
    };
    let request = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => shapes::parse(api, &bytes),
        Err(e) => Err(format!("cannot read the request body: {e}")),
    };
    let prompt = request.as_ref().ok().map(|r| r.prompt_tokens);
    let elapsed = call.shared.elapsed();
    let spent = call.shared.ledger().spend(api, prompt, elapsed);
    let headers = match spent {
        quota::Verdict::Unlimited => None,
        quota::Verdict::Spent(headers) => Some(headers),
        quota::Verdict::Exhausted(headers, retry_after) => {
            call.shared.stats().quota_rejections += 1;
            let message = format!(
                "Rate limit reached: quota spent, resets in {} (mock quota)",
                humantime::format_duration(retry_after)
            );
            let mut response = call.error(429, &message);
            retry_headers(&mut response, retry_after);
            response.headers_mut().extend(headers);
            return response;
        }
    };
    let mut response = apply(call, fault, request).await;
    if let Some(headers) = headers {
        response.headers_mut().extend(headers);
    }
    response
}

/// `retry-after` (whole seconds, rounded up) and `retry-after-ms`.
fn retry_headers(response: &mut Response, retry_after: Duration) {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let millis = retry_after.as_nanos().div_ceil(1_000_000);
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    headers.insert(
        "retry-after-ms",
        HeaderValue::from(u64::try_from(millis).unwrap_or(u64::MAX)),
    );
}

/// Answers `call` as its fault (if any) says.
async fn apply(call: Call, fault: Option<FaultKind>, request: Result<Request, String>) -> Response {
    let Some(fault) = fault else {
        return call.answer(request).await;
    };
    let n = call.n;
    match fault {
        FaultKind::Status(status) => {
            let status = if (400..=599).contains(&status) {
                status
            } else {
                500
            };
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Server error");
            call.error(status, &format!("{reason} (mock fault)"))
        }
        FaultKind::Overloaded => call.error(529, "Overloaded (mock fault)"),
        FaultKind::RateLimited { retry_after } => {
            let message = format!(
                "Rate limit exceeded, retry after {} (mock fault)",
                humantime::format_duration(retry_after)
            );
            let mut response = call.error(429, &message);
            retry_headers(&mut response, retry_after);
            response
        }
        FaultKind::Unauthorized => call.error(401, "Invalid API key (mock fault)"),
        FaultKind::Slow(delay) => {
            if call.shared.wait(delay).await {
                call.answer(request).await
            } else {
                call.abandon()
            }
        }
        FaultKind::Hang => {
            call.shared.stats().hangs += 1;
            call.shared.shutdown.cancelled().await;
            call.abandon()
        }
        FaultKind::Reset => call.reset(),
        FaultKind::CutStream { after_chunks } => match request {
            Ok(request) if request.stream => {
                call.shared.stats().cut_streams += 1;
                call.stream(&request, End::Cut(after_chunks))
            }
            _ => call.reset(),
        },
        FaultKind::StreamError {
            after_chunks,
            error,
        } => match request {
            Ok(request) if request.stream => {
                call.shared.stats().stream_errors += 1;
                let event = shapes::error_event(call.api, error);
                call.stream(&request, End::Error(after_chunks, event))
            }
            _ => {
                let message = format!("{error:?} (mock fault)");
                call.error(error.status(), &message)
            }
        },
        FaultKind::Flap if n.is_multiple_of(2) => {
            call.error(503, "Service Unavailable (mock fault)")
        }
        FaultKind::Flap => call.answer(request).await,
    }
}

impl Call {
    /// The normal answer (or 400 for a malformed request), after the base latency.
    async fn answer(self, request: Result<Request, String>) -> Response {
        let request = match request {
            Ok(request) => request,
            Err(message) => return self.error(400, &message),
        };
        if !self.shared.wait(self.shared.latency).await {
            return self.abandon();
        }
        self.shared.stats().ok += 1;
        if request.stream {
            self.stream(&request, End::Complete)
        } else {
            Json(shapes::completion(self.api, self.n, &request)).into_response()
        }
    }

    /// A provider-shaped error answer.
    fn error(self, status: u16, message: &str) -> Response {
        *self.shared.stats().errors.entry(status).or_default() += 1;
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, Json(shapes::error(self.api, status, message))).into_response()
    }

    /// Closes the connection without a response, counting it as a reset.
    fn reset(self) -> Response {
        self.shared.stats().resets += 1;
        self.abandon()
    }

    /// Closes the connection without a response (the response returned is never sent).
    fn abandon(self) -> Response {
        self.killer.kill();
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    }

    /// A server-sent events answer, ending as `end` says.
    fn stream(self, request: &Request, end: End) -> Response {
        let framing = self.shared.framing_events;
        let events = shapes::events(self.api, self.n, request, self.shared.chunks, framing);
        let stream = Stream {
            prelude: events.prelude,
            chunks: events.chunks.into(),
            trailer: Some(events.trailer),
            sent: 0,
            end,
            ended: false,
            interval: self.shared.chunk_interval,
            first_token: self.shared.first_token_latency,
            call: self,
        };
        let body = Body::from_stream(futures::stream::unfold(stream, Stream::next));
        (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response()
    }
}

/// How a streamed answer ends.
enum End {
    /// With its trailer (finish reason, `[DONE]` or `message_stop`).
    Complete,
    /// Failing the body after this many content chunks (or all of them).
    Cut(usize),
    /// With this error event after this many content chunks (or all of them), then a clean
    /// end of the body.
    Error(usize, Bytes),
}

/// The frames of a streamed answer, sent one by one.
struct Stream {
    prelude: Option<Bytes>,
    chunks: VecDeque<Bytes>,
    trailer: Option<Bytes>,
    sent: usize,
    end: End,
    ended: bool,
    interval: Duration,
    /// The pause before the first content chunk.
    first_token: Duration,
    /// Keeps the request in flight until the stream ends or the client goes away.
    call: Call,
}

type Frame = Result<Bytes, io::Error>;

impl Stream {
    async fn next(mut self) -> Option<(Frame, Stream)> {
        if self.ended {
            return None;
        }
        if let Some(prelude) = self.prelude.take() {
            return Some((Ok(prelude), self));
        }
        let stop_at = match &self.end {
            End::Complete => None,
            End::Cut(n) | End::Error(n, _) => Some(*n),
        };
        if stop_at.is_some_and(|n| self.sent >= n || self.chunks.is_empty()) {
            if let End::Error(_, event) = &self.end {
                let event = event.clone();
                if self.sent > 0 && !self.call.shared.wait(self.interval).await {
                    self.call.killer.kill();
                    return Some(self.fail("server shutting down"));
                }
                self.ended = true;
                return Some((Ok(event), self));
            }
            // Let hyper flush what was sent (it does when the body is pending), then fail
            // the body: hyper closes the connection without ending the chunked encoding.
            tokio::task::yield_now().await;
            return Some(self.fail("stream cut by fault"));
        }
        let Some(chunk) = self.chunks.pop_front() else {
            self.ended = true;
            return self.trailer.take().map(|t| (Ok(t), self));
        };
        let pause = if self.sent == 0 {
            self.first_token
        } else {
            self.interval
        };
        if (self.sent > 0 || !pause.is_zero()) && !self.call.shared.wait(pause).await {
            self.call.killer.kill();
            return Some(self.fail("server shutting down"));
        }
        self.sent += 1;
        Some((Ok(chunk), self))
    }

    fn fail(mut self, why: &str) -> (Frame, Stream) {
        self.ended = true;
        let error = io::Error::other(format!("mock LLM server: {why}"));
        (Err(error), self)
    }
}
