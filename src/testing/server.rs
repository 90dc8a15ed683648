//! The server handle, its builder, and its counters.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::{KillableListener, Killer};
use super::handler;
use super::quota::{Ledger, Quota};
use super::script::{FaultKind, FaultScript};

/// How long [`MockLlm::shutdown`] waits for open connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running mock LLM provider: an HTTP server on loopback speaking the OpenAI chat
/// completions and Anthropic messages APIs, failing requests as its [`FaultScript`] says.
///
/// Clones share the server. It stops on [`shutdown`](Self::shutdown), or when the last clone
/// is dropped.
#[derive(Clone)]
pub struct MockLlm {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The server task stops accepting, closes hung connections and ends by itself.
        self.shared.shutdown.cancel();
    }
}

impl fmt::Debug for MockLlm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockLlm")
            .field("addr", &self.inner.addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl MockLlm {
    /// Starts a server on `127.0.0.1` (a free port) with this script and default settings.
    ///
    /// # Errors
    ///
    /// The socket cannot be bound.
    pub async fn start(script: FaultScript) -> io::Result<MockLlm> {
        MockLlm::builder().script(script).start().await
    }

    /// A builder, to choose the address, chunking of streamed answers and latency.
    pub fn builder() -> MockLlmBuilder {
        MockLlmBuilder::default()
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The OpenAI chat completions endpoint: [`base_url`](Self::base_url) +
    /// `/v1/chat/completions`.
    pub fn openai_url(&self) -> String {
        format!("{}/v1/chat/completions", self.base_url())
    }

    /// The Anthropic messages endpoint: [`base_url`](Self::base_url) + `/v1/messages`.
    pub fn anthropic_url(&self) -> String {
        format!("{}/v1/messages", self.base_url())
    }

    /// Replaces the script; requests arriving from now on follow the new one. Request numbers
    /// and [`When::Between`](super::When::Between) windows still count from the server's
    /// start.
    pub fn set_script(&self, script: FaultScript) {
        *self
            .inner
            .shared
            .script
            .write()
            .unwrap_or_else(PoisonError::into_inner) = script;
    }

    /// Replaces the rate-limit quota (`None`: no quota, no rate-limit headers). What the
    /// current window has spent is kept; windows still count from the server's start.
    pub fn set_quota(&self, quota: Option<Quota>) {
        self.inner.shared.ledger().quota = quota;
    }

    /// How many requests reached the API endpoints, counted on arrival, before any fault.
    pub fn requests(&self) -> u64 {
        self.inner.shared.stats().requests
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MockStats {
        self.inner.shared.stats().clone()
    }

    /// Stops accepting connections, closes hung and in-progress ones, and waits (up to a few
    /// seconds) for the server to end. Other clones of this handle see a stopped server.
    pub async fn shutdown(self) {
        self.inner.shared.shutdown.cancel();
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut task) = task {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                tracing::warn!("mock LLM server: connections still open after shutdown");
                task.abort();
            }
        }
    }
}

/// Settings of a [`MockLlm`], from [`MockLlm::builder`].
#[derive(Debug, Clone)]
pub struct MockLlmBuilder {
    script: FaultScript,
    bind: SocketAddr,
    chunks: usize,
    chunk_interval: Duration,
    latency: Duration,
    first_token_latency: Duration,
    framing_events: bool,
    quota: Option<Quota>,
}

impl Default for MockLlmBuilder {
    fn default() -> MockLlmBuilder {
        MockLlmBuilder {
            script: FaultScript::default(),
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            chunks: 5,
            chunk_interval: Duration::ZERO,
            latency: Duration::ZERO,
            first_token_latency: Duration::ZERO,
            framing_events: false,
            quota: None,
        }
    }
}

impl MockLlmBuilder {
    /// The fault script (default: none, every request is answered).
    #[must_use]
    pub fn script(mut self, script: FaultScript) -> MockLlmBuilder {
        self.script = script;
        self
    }

    /// The address to listen on (default `127.0.0.1:0`, a free port).
    #[must_use]
    pub fn bind(mut self, addr: SocketAddr) -> MockLlmBuilder {
        self.bind = addr;
        self
    }

    /// How many content chunks a streamed answer is cut into (default 5, at least 1; fewer
    /// when the text is shorter).
    #[must_use]
    pub fn chunks(mut self, chunks: usize) -> MockLlmBuilder {
        self.chunks = chunks.max(1);
        self
    }

    /// The pause between two content chunks of a streamed answer (default none).
    #[must_use]
    pub fn chunk_interval(mut self, interval: Duration) -> MockLlmBuilder {
        self.chunk_interval = interval;
        self
    }

    /// The base latency of every normal answer, before its first byte (default none).
    #[must_use]
    pub fn latency(mut self, latency: Duration) -> MockLlmBuilder {
        self.latency = latency;
        self
    }

    /// The pause, in a streamed answer, between its opening events (sent with the headers:
    /// Anthropic's `message_start`, `content_block_start` and `ping`, OpenAI's role-only
    /// delta) and its first content chunk: the model's time to first token (default none).
    #[must_use]
    pub fn first_token_latency(mut self, latency: Duration) -> MockLlmBuilder {
        self.first_token_latency = latency;
        self
    }

    /// Whether streamed answers also carry the events the real APIs send that are not
    /// content: OpenAI's first, role-only delta (`{"role": "assistant", "content": "",
    /// "refusal": null}`) and Anthropic's `ping` after `content_block_start` (default off).
    #[must_use]
    pub fn framing_events(mut self, on: bool) -> MockLlmBuilder {
        self.framing_events = on;
        self
    }

    /// A rate-limit quota announced in both vendors' headers and enforced with 429s (see
    /// [`Quota`]; default none).
    #[must_use]
    pub fn quota(mut self, quota: Quota) -> MockLlmBuilder {
        self.quota = Some(quota);
        self
    }

    /// Binds the socket and starts serving in a background task.
    ///
    /// # Errors
    ///
    /// The socket cannot be bound.
    pub async fn start(self) -> io::Result<MockLlm> {
        let listener = TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            script: RwLock::new(self.script),
            started: Instant::now(),
            chunks: self.chunks,
            chunk_interval: self.chunk_interval,
            latency: self.latency,
            first_token_latency: self.first_token_latency,
            framing_events: self.framing_events,
            ledger: Mutex::new(Ledger::new(self.quota)),
            stats: Mutex::new(MockStats::default()),
            shutdown: CancellationToken::new(),
        });
        let app =
            handler::router(Arc::clone(&shared)).into_make_service_with_connect_info::<Killer>();
        let signal = shared.shutdown.clone().cancelled_owned();
        let serve = axum::serve(KillableListener(listener), app).with_graceful_shutdown(signal);
        let task = tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "mock LLM server failed");
            }
        });
        Ok(MockLlm {
            inner: Arc::new(Inner {
                addr,
                shared,
                task: Mutex::new(Some(task)),
            }),
        })
    }
}

/// Counters of a [`MockLlm`], from [`MockLlm::stats`].
///
/// Every request counts in `requests` on arrival, then once in `ok`, `errors`, `resets`,
/// `hangs`, `cut_streams` or `stream_errors` when its outcome is decided (a request whose
/// client gives up while it is delayed counts in `requests` only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MockStats {
    /// Requests received by the API endpoints.
    pub requests: u64,
    /// Normal answers (streamed ones count when their headers are sent).
    pub ok: u64,
    /// Error answers, by status (including 400 for malformed requests).
    pub errors: BTreeMap<u16, u64>,
    /// Connections reset without a response ([`FaultKind::Reset`], and
    /// [`FaultKind::CutStream`] on non-streaming requests).
    pub resets: u64,
    /// Requests left hanging ([`FaultKind::Hang`]).
    pub hangs: u64,
    /// Streams cut short ([`FaultKind::CutStream`] on streaming requests).
    pub cut_streams: u64,
    /// Streams ended by an error event after their 200 ([`FaultKind::StreamError`] on
    /// streaming requests).
    pub stream_errors: u64,
    /// Of `errors` with status 429: those answered because the [`Quota`] was spent.
    pub quota_rejections: u64,
    /// Requests being handled now (streamed answers until their last byte).
    pub in_flight: u64,
    /// `GET /v1/models` requests (what recovery probes ask), in no other count.
    pub models_requests: u64,
}

impl MockStats {
    /// Error answers with this status.
    pub fn errors_with(&self, status: u16) -> u64 {
        self.errors.get(&status).copied().unwrap_or(0)
    }

    /// All error answers.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// What the handlers share.
#[derive(Debug)]
pub(super) struct Shared {
    script: RwLock<FaultScript>,
    started: Instant,
    pub(super) chunks: usize,
    pub(super) chunk_interval: Duration,
    pub(super) latency: Duration,
    pub(super) first_token_latency: Duration,
    pub(super) framing_events: bool,
    ledger: Mutex<Ledger>,
    stats: Mutex<MockStats>,
    pub(super) shutdown: CancellationToken,
}

impl Shared {
    pub(super) fn stats(&self) -> MutexGuard<'_, MockStats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Time since the server started, on the tokio clock.
    pub(super) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Counts an arriving request: its number and its place in `in_flight`.
    pub(super) fn arrive(self: &Arc<Self>) -> (u64, InFlight) {
        let mut stats = self.stats();
        let n = stats.requests;
        stats.requests += 1;
        stats.in_flight += 1;
        (n, InFlight(Arc::clone(self)))
    }

    /// The fault for request number `n`, arriving now.
    pub(super) fn fault_for(&self, n: u64) -> Option<FaultKind> {
        let script = self.script.read().unwrap_or_else(PoisonError::into_inner);
        script.fault_for(n, self.started.elapsed()).copied()
    }

    /// Waits `d`; `false` if the server shuts down first.
    pub(super) async fn wait(&self, d: Duration) -> bool {
        if d.is_zero() {
            return !self.shutdown.is_cancelled();
        }
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            () = self.shutdown.cancelled() => false,
        }
    }
}

/// A request's place in [`MockStats::in_flight`], given back on drop.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut stats = self.0.stats();
        stats.in_flight = stats.in_flight.saturating_sub(1);
    }
}
