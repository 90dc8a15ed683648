//! The router and its handlers.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONNECTION, CONTENT_SECURITY_POLICY, CONTENT_TYPE, RETRY_AFTER,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::auth::Admin;
use super::{BODY_LIMIT, BODY_READ_TIMEOUT, EVENT_STREAMS_RETRY_AFTER, KEEP_ALIVE};
use crate::{Event, Supervisor};

/// The content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What every handler sees.
#[derive(Debug, Clone)]
pub(super) struct AppState {
    pub(super) fuse: Supervisor,
    pub(super) prometheus: Option<PrometheusHandle>,
    pub(super) admin_token: Option<Arc<[u8]>>,
    /// One permit per open `/events` stream.
    pub(super) event_streams: Arc<Semaphore>,
    /// The number of those permits, for the refusal message.
    pub(super) max_event_streams: usize,
    /// Ends the event streams when the server shuts down.
    pub(super) shutdown: CancellationToken,
}

/// The router: the read-only routes always, the admin routes only with a token.
pub(super) fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/routes", get(routes))
        .route("/events", get(events));
    if state.admin_token.is_some() {
        router = router
            .route("/providers/{name}/isolate", post(isolate))
            .route("/providers/{name}/reset", post(reset))
            .route("/reload", post(reload));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// A JSON error: `{"error": message}`, never cached.
pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let mut response = (status, Json(json!({ "error": message.into() }))).into_response();
    no_store(&mut response);
    response
}

fn ok_json(status: StatusCode, body: impl serde::Serialize) -> Response {
    let mut response = (status, Json(body)).into_response();
    no_store(&mut response);
    response
}

fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

async fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// The status page: one self-contained document (its script and styles inline, nothing
/// fetched from elsewhere), fed by `/status`, `/health` and `/events`.
const STATUS_PAGE: &str = include_str!("status.html");

/// What the page may load: itself and its own origin, nothing else.
const STATUS_PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

async fn page() -> Response {
    let mut response = STATUS_PAGE.into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(STATUS_PAGE_CSP),
    );
    no_store(&mut response);
    response
}

/// Readiness: 200 while enough circuits serve, else 503 (see [`crate::Health`]).
async fn health(State(s): State<AppState>) -> Response {
    let health = s.fuse.health();
    let code = if health.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    ok_json(code, health)
}

/// Liveness: 200 whenever the process answers, whatever its providers' state.
async fn live() -> Response {
    ok_json(StatusCode::OK, json!({ "live": true }))
}

/// Every route's current order, as the router actor last published it.
async fn routes(State(s): State<AppState>) -> Response {
    ok_json(StatusCode::OK, s.fuse.routes())
}

/// Applies a TOML configuration (the body) with `Supervisor::reload`: 200 with the new
/// status, or 400 naming the problem (nothing changes then).
async fn reload(_: Admin, State(s): State<AppState>, body: TomlBody) -> Response {
    match s.fuse.reload_toml_str(&body.0).await {
        Ok(()) => {
            tracing::info!("configuration reloaded through the ops endpoint");
            ok_json(
                StatusCode::OK,
                json!({ "reloaded": true, "providers": s.fuse.status() }),
            )
        }
        Err(error) => {
            let mut body = json!({ "error": error.to_string() });
            if let Some(field) = error.field() {
                body["field"] = json!(field);
            }
            ok_json(StatusCode::BAD_REQUEST, body)
        }
    }
}

/// A UTF-8 request body read within [`BODY_LIMIT`] bytes and [`BODY_READ_TIMEOUT`].
#[derive(Debug)]
struct TomlBody(String);

impl<S: Send + Sync> FromRequest<S> for TomlBody {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        match tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(req, state)).await {
            Ok(Ok(bytes)) => String::from_utf8(bytes.to_vec())
                .map(TomlBody)
                .map_err(|_| error(StatusCode::BAD_REQUEST, "the body is not UTF-8")),
            Ok(Err(rejection)) => Err(error(rejection.status(), rejection.body_text())),
            Err(_) => Err(error(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            )),
        }
    }
}

async fn status(State(s): State<AppState>) -> Response {
    ok_json(StatusCode::OK, s.fuse.status())
}

async fn metrics(State(s): State<AppState>) -> Response {
    let Some(handle) = &s.prometheus else {
        return error(
            StatusCode::NOT_FOUND,
            "no Prometheus recorder configured (OpsServer::prometheus)",
        );
    };
    s.fuse.publish_metrics();
    handle.run_upkeep();
    let mut response = handle.render().into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT));
    no_store(&mut response);
    response
}

/// `GET /events`: the event stream, or 503 when [`AppState::event_streams`] are all taken.
async fn events(State(s): State<AppState>) -> Response {
    let Ok(permit) = s.event_streams.clone().try_acquire_owned() else {
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many event streams open (at most {}); retry later",
                s.max_event_streams
            ),
        );
        let headers = response.headers_mut();
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from(EVENT_STREAMS_RETRY_AFTER.as_secs()),
        );
        // Free the connection at once rather than let it idle on the server's budget.
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        return response;
    };
    let shutdown = s.shutdown.clone();
    let stream = frames(s.fuse.subscribe())
        .map(move |(name, data)| {
            // The stream owns the permit: it is released when the stream is dropped.
            let _held = &permit;
            Ok::<_, Infallible>(sse::Event::default().event(name).data(data))
        })
        .take_until(async move { shutdown.cancelled().await });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// An event's `data:`: its [`Serialize`](serde::Serialize) form, the same JSON a subscriber
/// serialising [`Event`] itself gets.
fn event_json(event: &Event) -> String {
    serde_json::to_string(event)
        .unwrap_or_else(|e| json!({ "name": event.name(), "error": e.to_string() }).to_string())
}

/// The bus as `(event name, JSON data)` frames; a lag becomes a `lagged` frame and the
/// stream goes on from the oldest event still held.
fn frames(receiver: Receiver<Event>) -> impl Stream<Item = (&'static str, String)> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        let frame = match receiver.recv().await {
            Ok(event) => (event.name(), event_json(&event)),
            Err(RecvError::Lagged(missed)) => ("lagged", json!({ "missed": missed }).to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((frame, receiver))
    })
}

async fn isolate(
    _: Admin,
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    _: Drained,
) -> Response {
    admin_action(&s, name, Action::Isolate).await
}

async fn reset(
    _: Admin,
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    _: Drained,
) -> Response {
    admin_action(&s, name, Action::Reset).await
}

/// An operator action on one provider.
#[derive(Debug, Clone, Copy)]
enum Action {
    Isolate,
    Reset,
}

/// Runs an admin action and answers with the provider's new status (or why not).
async fn admin_action(
    s: &AppState,
    name: Result<Path<String>, PathRejection>,
    action: Action,
) -> Response {
    let name = match name {
        Ok(Path(name)) => name,
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    let done = match action {
        Action::Isolate => s.fuse.isolate(&name).await,
        Action::Reset => s.fuse.reset(&name).await,
    };
    match done {
        Ok(()) => {
            tracing::info!(provider = %name, action = ?action, "admin action through the ops endpoint");
            provider_status(s, &name)
        }
        Err(unknown) => error(StatusCode::NOT_FOUND, unknown.to_string()),
    }
}

fn provider_status(s: &AppState, name: &str) -> Response {
    match s.fuse.provider(name) {
        Some(handle) => ok_json(StatusCode::OK, handle.status()),
        None => error(StatusCode::NOT_FOUND, format!("unknown provider `{name}`")),
    }
}

/// Reads (and discards) the request body within [`BODY_LIMIT`] bytes and
/// [`BODY_READ_TIMEOUT`]: 413 beyond the limit, 408 for a body that trickles in.
#[derive(Debug)]
struct Drained;

impl<S: Send + Sync> FromRequest<S> for Drained {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        match tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(req, state)).await {
            Ok(Ok(_)) => Ok(Drained),
            Ok(Err(rejection)) => Err(error(rejection.status(), rejection.body_text())),
            Err(_) => Err(error(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;
    use crate::ProviderId;
    use tokio::sync::broadcast;

    #[tokio::test]
    async fn a_lagging_subscriber_gets_a_lagged_frame_then_the_events_still_held() {
        let (sender, receiver) = broadcast::channel(2);
        for generation in 1..=5 {
            let _ = sender.send(Event::new(
                ProviderId::from("p"),
                EventKind::CircuitHalfOpened,
                tokio::time::Instant::now(),
                generation,
                None,
            ));
        }
        drop(sender);
        let frames: Vec<_> = frames(receiver).collect().await;
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert_eq!(frames[0], ("lagged", r#"{"missed":3}"#.to_owned()));
        assert_eq!(frames[1].0, "llm.circuit_half_opened");
        assert!(frames[1].1.contains(r#""generation":4"#), "{frames:?}");
        assert!(frames[2].1.contains(r#""generation":5"#), "{frames:?}");
    }
}
