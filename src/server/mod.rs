//! The ops endpoint: health, status, Prometheus metrics, a live event stream and admin
//! actions over HTTP, for load balancers, dashboards and on-call engineers.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let handle = fusebox::prometheus::install()?;
//! # let fuse = fusebox::Supervisor::builder().provider(fusebox::Provider::new("openai")).build().await?;
//! let ops = fusebox::server::OpsServer::new(fuse.clone())
//!     .prometheus(handle)
//!     .admin_token("s3cret")
//!     .bind("127.0.0.1:9464".parse()?)
//!     .start().await?;
//! println!("ops endpoint on http://{}", ops.addr());
//! // ...
//! ops.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Install the Prometheus recorder ([`crate::prometheus::install`]) before building the
//! supervisor. The server binds `127.0.0.1:9464` unless told otherwise: expose it beyond the
//! host deliberately, behind whatever network policy guards your other admin ports.
//!
//! # Routes
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the status page: HTML (below) |
//! | `GET /health` | readiness: 200 when healthy, else 503: `{"healthy": true, "summary": "2/3 circuits healthy", "circuits": [{"provider": "openai", "state": "closed", "healthy": true, "failure_rate": 0.02}]}` ([`Health`](crate::Health)'s JSON) |
//! | `GET /health/live` | liveness: 200 `{"live": true}` whenever the process serves |
//! | `GET /status` | 200: an array, one object per provider in configured order (below) |
//! | `GET /routes` | 200: an array, each route's order as the router last published it ([`RouteStatus`](crate::RouteStatus)'s JSON) |
//! | `GET /metrics` | 200: the Prometheus text format, after publishing every provider's counters; 404 without [`OpsServer::prometheus`] |
//! | `GET /events` | server-sent events (below) |
//! | `POST /providers/{name}/isolate` | admin: isolates the provider; 200 with its status object |
//! | `POST /providers/{name}/reset` | admin: closes its circuit and forgets its failures; 200 with its status object |
//!
//! A status object is [`ProviderStatus`](crate::ProviderStatus)'s JSON: every field under its
//! own name, except: `meta` holds the provider's metadata; `state` is `"closed"`,
//! `"half_open"`, `"open"` or `"isolated"`; durations are fractional seconds named
//! `open_for_seconds` and `retry_after_seconds` (null unless open); `last_failure` becomes
//! `last_failure_seconds_ago` (null without failures). Every error is JSON,
//! `{"error": "..."}`: unknown paths 404, wrong methods 405.
//!
//! # Readiness and liveness
//!
//! `/health` is for load balancers and readiness probes: 503 means this process cannot serve
//! LLM calls now (at least [`unhealthy_ratio`](crate::Config::unhealthy_ratio) of its circuits
//! are open), so traffic should go elsewhere until it recovers. Never use it as a liveness
//! probe: restarting a process because its providers are down fixes nothing and throws its
//! circuits' state away. `/health/live` is the liveness probe: it answers 200 as long as the
//! process serves HTTP, whatever its providers do.
//!
//! # Status page
//!
//! `GET /` is a live status page for on-call engineers: one self-contained HTML document (no
//! CDN, no build step; a `Content-Security-Policy` keeps it from loading anything but this
//! server's own routes) showing each provider's circuit, counts, metadata and rate-limit
//! headroom, each route's order (from `GET /routes`), and a live log of events fed by
//! `/events`. A state change shows on the page as soon as its event arrives; the counts are
//! re-read every two seconds. The page fetches `status`, `health`, `routes`
//! and `events` relative to itself: mount [`OpsServer::router`] at the root of its host, or
//! nest it under a path ending in `/`.
//!
//! # Events
//!
//! `GET /events` streams the event bus as `text/event-stream`: each event is
//! `event: llm.circuit_opened` (see [`Event::name`](crate::Event::name)) with `data:` the
//! event's JSON, exactly as [`Event`](crate::Event) serialises (see
//! [`events`](crate::events#json)): `provider`, `name`, `timestamp` (RFC 3339), `generation`,
//! `state`, `cause`, the kind's fields (`failures` and `retry_after_seconds` for an opened
//! circuit, `out_for_seconds` for a close, `tier`, `request_rate`, `failure_threshold` and
//! `open_for_seconds` for adapted thresholds) and `message`, the event's one-line
//! `Display`. A comment keeps the connection alive every 15 s. A client that falls more
//! than the bus capacity behind gets `event: lagged` with `data: {"missed": n}` and the
//! stream goes on: re-read `/status` to resynchronise. A slow client never slows the bus.
//!
//! At most [`OpsServer::max_event_streams`] streams (256 by default) are open at once; beyond
//! that, `GET /events` gets 503 with `Retry-After: 5`, `Connection: close` and
//! `{"error": "too many event streams open (at most 256); retry later"}`.
//!
//! # Admin actions
//!
//! Mounted only with [`OpsServer::admin_token`] (otherwise 404). They require
//! `Authorization: Bearer <token>`, compared in constant time; a missing, malformed or wrong
//! token gets 401 with `WWW-Authenticate: Bearer`. An unknown provider gets 404
//! `{"error": "unknown provider `x`"}`. Percent-encode names holding `/`
//! (`/providers/openai%2Fchat/isolate`).
//!
//! # Bounds
//!
//! [`OpsServer::start`] serves HTTP/1.1 with hyper: request heads over 8 KiB (or 64 headers)
//! get 431 and the connection is closed; a head not received within 10 s (a slowloris, or an
//! idle keep-alive connection) closes the connection; request bodies over 4 KiB get 413 and a
//! body not received within 10 s gets 408 (only the admin routes read bodies, after checking
//! the token).
//!
//! Connections come in two budgets, so that event streams can never crowd out `/health`:
//!
//! * at most [`OpsServer::max_event_streams`] (256 by default) `/events` streams at once;
//!   further `GET /events` requests get the 503 above;
//! * [`OpsServer::max_connections`] (1024 by default) connections for everything else. The
//!   server accepts up to the sum of both limits, and since no more than
//!   `max_event_streams` of those connections can hold a stream, `max_connections` are always
//!   left for requests such as `/health` and `/status`. Connections beyond the sum wait in the
//!   listen backlog.
//!
//! [`OpsServer::router`] keeps the body limits and the event stream limit: the server you
//! embed it in sets the rest.

mod auth;
mod routes;
mod serve;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Supervisor;

/// The default address: loopback, the port Prometheus exporters conventionally use.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);

/// Largest request body read (only the admin routes read one).
const BODY_LIMIT: usize = 4 * 1024;
/// How long a request body may take to arrive.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request head may take to arrive, idle keep-alive time included.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request line and headers.
const MAX_HEADER_SIZE: usize = 8 * 1024;
/// Most header fields in a request.
const MAX_HEADERS: usize = 64;
/// A connection's read buffer.
const MAX_BUF_SIZE: usize = 16 * 1024;
/// The default of [`OpsServer::max_connections`]: connections served at once for requests
/// other than event streams.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// The default of [`OpsServer::max_event_streams`]: `/events` streams open at once.
pub const DEFAULT_MAX_EVENT_STREAMS: usize = 256;
/// The largest value either connection limit is clamped to (their sum must fit a semaphore).
const MAX_LIMIT: usize = tokio::sync::Semaphore::MAX_PERMITS / 2;
/// What `Retry-After` tells a client refused an event stream.
const EVENT_STREAMS_RETRY_AFTER: Duration = Duration::from_secs(5);
/// The pause after an accept error that is not about one connection (such as `EMFILE`).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How long shutdown lets connections finish their current response.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The interval of keep-alive comments on `/events`.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Settings of the ops endpoint; [`start`](Self::start) serves it, [`router`](Self::router)
/// hands it over for embedding in your own axum server.
#[derive(Clone)]
pub struct OpsServer {
    fuse: Supervisor,
    prometheus: Option<PrometheusHandle>,
    admin_token: Option<String>,
    bind: SocketAddr,
    max_connections: usize,
    max_event_streams: usize,
}

impl fmt::Debug for OpsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpsServer")
            .field("prometheus", &self.prometheus.is_some())
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("bind", &self.bind)
            .field("max_connections", &self.max_connections)
            .field("max_event_streams", &self.max_event_streams)
            .finish_non_exhaustive()
    }
}

impl OpsServer {
    /// The ops endpoint of this supervisor, on [`DEFAULT_ADDR`], without metrics or admin
    /// routes.
    pub fn new(fuse: Supervisor) -> Self {
        OpsServer {
            fuse,
            prometheus: None,
            admin_token: None,
            bind: DEFAULT_ADDR,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_event_streams: DEFAULT_MAX_EVENT_STREAMS,
        }
    }

    /// Serves this recorder on `GET /metrics` (from [`crate::prometheus::install`]).
    pub fn prometheus(mut self, handle: PrometheusHandle) -> Self {
        self.prometheus = Some(handle);
        self
    }

    /// Mounts the admin routes, guarded by this bearer token. An empty token mounts nothing.
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    /// The address [`start`](Self::start) listens on; port 0 picks a free one.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// How many connections [`start`](Self::start) serves at once besides those holding an
    /// event stream; [`DEFAULT_MAX_CONNECTIONS`] (1024) unless told otherwise, at least 1.
    /// Connections beyond this budget (plus [`max_event_streams`](Self::max_event_streams))
    /// wait in the listen backlog. [`router`](Self::router) ignores it.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.clamp(1, MAX_LIMIT);
        self
    }

    /// How many `GET /events` streams may be open at once; [`DEFAULT_MAX_EVENT_STREAMS`] (256)
    /// unless told otherwise. One more gets 503 with `Retry-After` until a stream ends; 0
    /// refuses them all. Applies to [`router`](Self::router) too.
    pub fn max_event_streams(mut self, n: usize) -> Self {
        self.max_event_streams = n.min(MAX_LIMIT);
        self
    }

    /// The routes, for embedding in your own axum server (which then bounds headers,
    /// connections and timeouts itself). Their `/events` streams end only when their clients
    /// leave: a graceful shutdown of that server should not wait for them forever.
    pub fn router(self) -> Router {
        self.into_router(CancellationToken::new())
    }

    fn into_router(self, shutdown: CancellationToken) -> Router {
        let admin_token = match self.admin_token {
            Some(token) if token.is_empty() => {
                tracing::warn!("ops server: empty admin token, admin routes stay off");
                None
            }
            token => token.map(|t| Arc::from(t.into_bytes())),
        };
        routes::router(routes::AppState {
            fuse: self.fuse,
            prometheus: self.prometheus,
            admin_token,
            event_streams: Arc::new(tokio::sync::Semaphore::new(self.max_event_streams)),
            max_event_streams: self.max_event_streams,
            shutdown,
        })
    }

    /// Binds the address and serves in a background task until [`OpsHandle::shutdown`] (or
    /// until the handle is dropped).
    ///
    /// # Errors
    ///
    /// The address cannot be bound.
    pub async fn start(self) -> io::Result<OpsHandle> {
        let listener = TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        // Request connections keep their own budget: at most `max_event_streams` of the
        // accepted connections can hold a stream.
        let connections = self.max_connections + self.max_event_streams;
        let router = self.into_router(shutdown.clone());
        let task = tokio::spawn(serve::serve(
            listener,
            router,
            connections,
            shutdown.clone(),
        ));
        tracing::info!(%addr, "ops server listening");
        Ok(OpsHandle {
            addr,
            shutdown,
            task: Some(task),
        })
    }
}

/// A running ops server. Dropping it stops the server too, without waiting.
#[derive(Debug)]
#[must_use = "the ops server stops when its handle is dropped"]
pub struct OpsHandle {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl OpsHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, ends the event streams, lets responses in progress finish
    /// (up to 5 s) and returns once the server has stopped.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for OpsHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
