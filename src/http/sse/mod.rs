//! Decoding LLM providers' server-sent event streams: OpenAI chat-completion chunks and
//! Anthropic message events, with [eventsource-stream](https://docs.rs/eventsource-stream)
//! (the SSE decoder async-openai uses, through reqwest-eventsource).
//!
//! [`openai`] and [`anthropic`] turn a response body (`reqwest::Response::bytes_stream()`, or
//! any `Stream<Item = Result<B, E>>` of bytes) into a stream of [`Chunk`]s:
//!
//! - **Only content is a chunk.** A [`Chunk::Delta`] is a piece of the answer: text,
//!   reasoning, tool-call arguments, a refusal. Events that carry none (Anthropic's
//!   `message_start`, `content_block_start`, `content_block_stop`, `message_delta`; OpenAI's
//!   role-only first delta and its finish chunk) are not items: they are handed over with the
//!   next one, in [`Delta::preceding`] or [`Done::preceding`]. Anthropic's `ping` is dropped.
//!   So behind [`Supervisor::route_stream`](crate::Supervisor::route_stream) or
//!   `call_stream`, a provider's `first_chunk_timeout` is its time to first token, and its
//!   `stall_timeout` the longest silence between tokens.
//! - **The end is a chunk.** The last item is [`Chunk::Done`], with the finish reason, the
//!   token [`Usage`], the time to first token and the stream's duration. A body that ends
//!   before its final event (`data: [DONE]`, `message_stop`) and before any finish reason
//!   is [`SseError::Truncated`].
//! - **In-band errors are errors.** An error event after the 200 (Anthropic `event: error`
//!   with `overloaded_error`, `api_error`, `rate_limit_error`...; an OpenAI `{"error": ...}`
//!   object) ends the stream with [`SseError::InBand`], classified by its type as error
//!   bodies are (see [`crate::http`]): `overloaded_error` and `api_error` are
//!   [`Failure`](Verdict::Failure), `rate_limit_error` is
//!   [`RateLimited`](Verdict::RateLimited), `invalid_request_error` is
//!   [`Ignored`](Verdict::Ignored), an unknown type a `Failure`. Behind a routed stream, one
//!   before the first content fails over to the next provider; one after it ends the stream
//!   as a mid-stream failure counted against the provider.
//!
//! [`SseError`] implements [`Classify`] and converts from [`HttpError`] and
//! [`reqwest::Error`], so one error type serves both opening the stream and reading it:
//!
//! ```no_run
//! use fusebox::http::{self, sse};
//! use futures::StreamExt;
//! # async fn run(fuse: fusebox::Supervisor) -> Result<(), Box<dyn std::error::Error>> {
//! let client = reqwest::Client::new();
//! let body = serde_json::json!({
//!     "model": "claude-sonnet-4-6", "max_tokens": 1024, "stream": true,
//!     "messages": [{"role": "user", "content": "Hello"}],
//! });
//! let routed = fuse
//!     .route_stream("chat", |provider| {
//!         let request = client.post(provider.meta("url").unwrap_or_default()).json(&body);
//!         async move {
//!             let started = tokio::time::Instant::now();
//!             let response = http::send(request).await?;
//!             Ok::<_, sse::SseError>(
//!                 sse::anthropic(response.bytes_stream()).provider(&provider).since(started),
//!             )
//!         }
//!     })
//!     .await?;
//! let mut stream = routed.value;
//! while let Some(chunk) = stream.next().await {
//!     match chunk? {
//!         sse::Chunk::Delta(delta) => print!("{}", delta.text),
//!         sse::Chunk::Done(done) => println!("\n{:?} {:?}", done.finish_reason, done.usage),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Metrics
//!
//! With [`SseStream::provider`], a stream records `fusebox_stream_first_token_seconds` (at
//! its first content delta) and `fusebox_stream_duration_seconds` (at its end or its error,
//! `outcome` = `success` or `error`), labelled `provider` and `api` (`openai`,
//! `anthropic`). Both count from the stream's creation, or from [`SseStream::since`]. A
//! stream dropped before its end records no duration.
//!
//! # Limits
//!
//! An event is at most [`MAX_EVENT_BYTES`] (1 MiB) unless [`SseStream::max_event_bytes`]
//! says otherwise: a body sending more without completing an event ends with
//! [`SseError::EventTooLarge`], so a hostile or broken server cannot grow the buffer without
//! bound.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use eventsource_stream::{Event, EventStream, EventStreamError};
use futures::Stream;
use serde_json::Value;
use tokio::time::Instant;

use super::body::ErrorBody;
use super::HttpError;
use crate::{Classify, ProviderId, Verdict};

mod anthropic;
mod openai;

/// The largest event accepted by default: 1 MiB.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Which provider's event format a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Vendor {
    /// OpenAI chat-completion chunks (`POST /v1/chat/completions` with `"stream": true`),
    /// and the many servers speaking the same format.
    OpenAi,
    /// Anthropic message events (`POST /v1/messages` with `"stream": true`).
    Anthropic,
}

impl Vendor {
    /// `openai` or `anthropic`, as in the metrics' `api` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Vendor::OpenAi => "openai",
            Vendor::Anthropic => "anthropic",
        }
    }
}

/// One item of a decoded stream: a piece of content, or the end.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Chunk {
    /// A piece of the answer.
    Delta(Delta),
    /// The end of the stream, always the last item of a complete stream.
    Done(Done),
}

impl Chunk {
    /// The delta's text, if this is a delta.
    pub fn text(&self) -> Option<&str> {
        match self {
            Chunk::Delta(delta) => Some(&delta.text),
            Chunk::Done(_) => None,
        }
    }

    /// The end, if this is it.
    pub fn done(&self) -> Option<&Done> {
        match self {
            Chunk::Done(done) => Some(done),
            Chunk::Delta(_) => None,
        }
    }
}

/// What a [`Delta`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeltaKind {
    /// Answer text (OpenAI `delta.content`, Anthropic `text_delta`).
    Text,
    /// Reasoning (Anthropic `thinking_delta`; `delta.reasoning_content` or `delta.reasoning`
    /// of OpenAI-compatible servers).
    Reasoning,
    /// Tool-call arguments, as JSON text in pieces (OpenAI `delta.tool_calls[].function.
    /// arguments`, Anthropic `input_json_delta`). An OpenAI tool-call delta naming its tool
    /// is content even when its arguments are still empty.
    ToolCall,
    /// A refusal (OpenAI `delta.refusal`).
    Refusal,
    /// Any other delta (Anthropic `signature_delta`, `citations_delta`, and types added
    /// later): `text` holds its text, if it has one.
    Other,
}

/// A piece of content.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Delta {
    /// What it is.
    pub kind: DeltaKind,
    /// The text it adds (for a [`DeltaKind::ToolCall`], a piece of the arguments' JSON).
    pub text: String,
    /// The OpenAI choice index, or the Anthropic content block index.
    pub index: u64,
    /// The event that carried it, decoded (for what fusebox does not model: tool-call ids,
    /// logprobs...).
    pub event: Value,
    /// The events without content received since the previous item, in order (Anthropic's
    /// `message_start` and `content_block_start`, which name the message, the model and a
    /// tool use; OpenAI's role-only delta).
    pub preceding: Vec<Value>,
}

/// Token counts of a stream, as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Usage {
    /// Prompt tokens (OpenAI `usage.prompt_tokens`; Anthropic `input_tokens` of
    /// `message_start`, or of `message_delta` when it has them).
    pub input_tokens: u64,
    /// Completion tokens (OpenAI `usage.completion_tokens`; Anthropic `output_tokens`, the
    /// cumulative count of the last `message_delta`).
    pub output_tokens: u64,
}

impl Usage {
    /// Token counts of `input_tokens` and `output_tokens`.
    pub const fn new(input_tokens: u64, output_tokens: u64) -> Usage {
        Usage {
            input_tokens,
            output_tokens,
        }
    }
}

/// The end of a stream.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Done {
    /// Why the model stopped: OpenAI `finish_reason` (`stop`, `length`, `tool_calls`...; of
    /// choice 0 when there are several), Anthropic `stop_reason` (`end_turn`, `max_tokens`,
    /// `tool_use`...).
    pub finish_reason: Option<String>,
    /// Token counts, if the provider reported any (OpenAI sends them only when the request
    /// asks with `"stream_options": {"include_usage": true}`).
    pub usage: Option<Usage>,
    /// From the stream's start ([`SseStream::since`], or its creation) to its first content
    /// delta; `None` if there was none.
    pub time_to_first_token: Option<Duration>,
    /// From the stream's start to its end.
    pub duration: Duration,
    /// The events without content received since the previous item, in order (Anthropic's
    /// `content_block_stop`, `message_delta` and `message_stop`; OpenAI's finish and usage
    /// chunks).
    pub preceding: Vec<Value>,
}

/// Why a decoded stream failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SseError {
    /// The request failed or the response was an error status (from
    /// [`http::send`](super::send) or [`check`](super::check) with `?`), or the body failed
    /// (a [`reqwest::Error`] while reading it: connection reset, timeout).
    Http(HttpError),
    /// Reading the body failed, with a body stream of another HTTP client. A
    /// [`Failure`](Verdict::Failure).
    Body(Box<dyn std::error::Error + Send + Sync>),
    /// The provider reported an error in the stream, after its 200.
    InBand {
        /// What the error's type (or code) says about the provider, as for error bodies.
        verdict: Verdict,
        /// The error's `type` (Anthropic `overloaded_error`; OpenAI `server_error`...), or its
        /// `code` when it has no type.
        kind: Option<String>,
        /// The provider's message, trimmed and cut to 500 characters.
        message: Option<String>,
    },
    /// An event that is not what the API sends (not UTF-8, not JSON). A
    /// [`Failure`](Verdict::Failure).
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// More than the limit was received without completing an event. A
    /// [`Failure`](Verdict::Failure).
    EventTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body ended before the stream's final event and without a finish reason. A
    /// [`Failure`](Verdict::Failure).
    Truncated,
}

impl SseError {
    /// Whether the provider reported this error in the stream.
    pub fn is_in_band(&self) -> bool {
        matches!(self, SseError::InBand { .. })
    }

    fn malformed(reason: impl Into<String>) -> SseError {
        SseError::Malformed {
            reason: reason.into(),
        }
    }
}

/// [`Http`](SseError::Http) gives the [`HttpError`]'s verdict, [`InBand`](SseError::InBand)
/// its own; everything else is a [`Failure`](Verdict::Failure).
impl Classify for SseError {
    fn verdict(&self) -> Verdict {
        match self {
            SseError::Http(error) => error.verdict(),
            SseError::InBand { verdict, .. } => *verdict,
            SseError::Body(_)
            | SseError::Malformed { .. }
            | SseError::EventTooLarge { .. }
            | SseError::Truncated => Verdict::Failure,
        }
    }
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::Http(error) => fmt::Display::fmt(error, f),
            SseError::Body(_) => f.write_str("reading the event stream failed"),
            SseError::InBand { kind, message, .. } => {
                f.write_str("error event in the stream")?;
                if let Some(kind) = kind {
                    write!(f, ": {kind}")?;
                }
                if let Some(message) = message {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            SseError::Malformed { reason } => write!(f, "malformed event stream: {reason}"),
            SseError::EventTooLarge { limit } => {
                write!(f, "an event of the stream exceeds {limit} bytes")
            }
            SseError::Truncated => f.write_str("the event stream ended before its final event"),
        }
    }
}

impl std::error::Error for SseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Shown by `Display` already.
            SseError::Http(error) => error.source(),
            SseError::Body(error) => Some(&**error),
            _ => None,
        }
    }
}

impl From<HttpError> for SseError {
    fn from(error: HttpError) -> Self {
        SseError::Http(error)
    }
}

impl From<reqwest::Error> for SseError {
    fn from(error: reqwest::Error) -> Self {
        SseError::Http(HttpError::from(error))
    }
}

impl From<std::io::Error> for SseError {
    fn from(error: std::io::Error) -> Self {
        SseError::Body(Box::new(error))
    }
}

impl From<std::convert::Infallible> for SseError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// Decodes an OpenAI chat-completion stream (see the [module docs](self)).
pub fn openai<S, B, E>(body: S) -> SseStream<S>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: Into<SseError>,
{
    SseStream::new(Vendor::OpenAi, body)
}

/// Decodes an Anthropic message stream (see the [module docs](self)).
pub fn anthropic<S, B, E>(body: S) -> SseStream<S>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: Into<SseError>,
{
    SseStream::new(Vendor::Anthropic, body)
}

/// A provider's event stream, decoded into [`Chunk`]s (see the [module docs](self)). Built
/// by [`openai`], [`anthropic`] or [`SseStream::new`].
///
/// After an error or [`Chunk::Done`] it yields nothing more.
pub struct SseStream<S> {
    events: EventStream<Counted<S>>,
    vendor: Vendor,
    /// Bytes received since the last event, and their limit, shared with [`Counted`].
    budget: Arc<Budget>,
    preceding: Vec<Value>,
    summary: Summary,
    started: Instant,
    first_token: Option<Duration>,
    provider: Option<ProviderId>,
    finished: bool,
}

impl<S> fmt::Debug for SseStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseStream")
            .field("vendor", &self.vendor)
            .field("provider", &self.provider)
            .field("first_token", &self.first_token)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// What the events said so far about the end.
#[derive(Debug, Default)]
struct Summary {
    finish_reason: Option<String>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl Summary {
    fn usage(&self) -> Option<Usage> {
        if self.input_tokens.is_none() && self.output_tokens.is_none() {
            return None;
        }
        Some(Usage {
            input_tokens: self.input_tokens.unwrap_or(0),
            output_tokens: self.output_tokens.unwrap_or(0),
        })
    }
}

/// What one event means, as a vendor's decoder reads it.
enum Step {
    /// Content.
    Content {
        kind: DeltaKind,
        text: String,
        index: u64,
        event: Value,
    },
    /// No content: kept for the next item.
    Context(Value),
    /// Dropped (keep-alive).
    Skip,
    /// The final event.
    Done(Option<Value>),
}

impl<S> SseStream<S> {
    /// Decodes `body` in `vendor`'s format. The stream's clock starts now (see
    /// [`since`](Self::since)).
    pub fn new(vendor: Vendor, body: S) -> SseStream<S> {
        let budget = Arc::new(Budget {
            since_event: AtomicUsize::new(0),
            limit: AtomicUsize::new(MAX_EVENT_BYTES),
        });
        let counted = Counted {
            inner: Box::pin(body),
            budget: Arc::clone(&budget),
            failed: false,
        };
        SseStream {
            events: EventStream::new(counted),
            vendor,
            budget,
            preceding: Vec::new(),
            summary: Summary::default(),
            started: Instant::now(),
            first_token: None,
            provider: None,
            finished: false,
        }
    }

    /// Records this stream's time to first token and duration under `provider` (see
    /// [Metrics](self#metrics)). Without it no metric is recorded.
    #[must_use]
    pub fn provider(mut self, provider: &ProviderId) -> Self {
        self.provider = Some(provider.clone());
        self
    }

    /// Counts the time to first token and the duration from `started` (when the request was
    /// sent, say) rather than from the stream's creation (when the response's headers had
    /// arrived).
    #[must_use]
    pub fn since(mut self, started: Instant) -> Self {
        self.started = started;
        self
    }

    /// The largest event accepted, in bytes ([`MAX_EVENT_BYTES`] unless set).
    #[must_use]
    pub fn max_event_bytes(self, limit: usize) -> Self {
        self.budget.limit.store(limit, Ordering::Relaxed);
        self
    }

    /// The format decoded.
    pub fn vendor(&self) -> Vendor {
        self.vendor
    }

    /// The time to the first content delta, once it has arrived.
    pub fn time_to_first_token(&self) -> Option<Duration> {
        self.first_token
    }

    fn record_first_token(&mut self) {
        let elapsed = self.started.elapsed();
        self.first_token = Some(elapsed);
        if let Some(provider) = &self.provider {
            metrics::histogram!(
                crate::metrics::STREAM_FIRST_TOKEN,
                "provider" => provider.to_string(),
                "api" => self.vendor.as_str(),
            )
            .record(elapsed.as_secs_f64());
        }
    }

    /// Ends the stream, recording its duration.
    fn finish(&mut self, outcome: &'static str) -> Duration {
        self.finished = true;
        let elapsed = self.started.elapsed();
        if let Some(provider) = &self.provider {
            metrics::histogram!(
                crate::metrics::STREAM_DURATION,
                "provider" => provider.to_string(),
                "api" => self.vendor.as_str(),
                "outcome" => outcome,
            )
            .record(elapsed.as_secs_f64());
        }
        elapsed
    }

    fn fail(&mut self, error: SseError) -> Poll<Option<Result<Chunk, SseError>>> {
        self.finish("error");
        Poll::Ready(Some(Err(error)))
    }

    fn done(&mut self, last: Option<Value>) -> Poll<Option<Result<Chunk, SseError>>> {
        let duration = self.finish("success");
        let mut preceding = std::mem::take(&mut self.preceding);
        preceding.extend(last);
        Poll::Ready(Some(Ok(Chunk::Done(Done {
            finish_reason: self.summary.finish_reason.take(),
            usage: self.summary.usage(),
            time_to_first_token: self.first_token,
            duration,
            preceding,
        }))))
    }

    /// Reads one event.
    fn step(&mut self, event: &Event) -> Result<Step, SseError> {
        match self.vendor {
            Vendor::OpenAi => openai::step(event, &mut self.summary),
            Vendor::Anthropic => anthropic::step(event, &mut self.summary),
        }
    }
}

impl<S, B, E> Stream for SseStream<S>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: Into<SseError>,
{
    type Item = Result<Chunk, SseError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            let event = match Pin::new(&mut this.events).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(event))) => event,
                Poll::Ready(Some(Err(error))) => return this.fail(decoder_error(error)),
                Poll::Ready(None) if this.summary.finish_reason.is_some() => {
                    return this.done(None)
                }
                Poll::Ready(None) => return this.fail(SseError::Truncated),
            };
            this.budget.since_event.store(0, Ordering::Relaxed);
            match this.step(&event) {
                Err(error) => return this.fail(error),
                Ok(Step::Skip) => {}
                Ok(Step::Context(value)) => this.preceding.push(value),
                Ok(Step::Done(last)) => return this.done(last),
                Ok(Step::Content {
                    kind,
                    text,
                    index,
                    event,
                }) => {
                    if this.first_token.is_none() {
                        this.record_first_token();
                    }
                    return Poll::Ready(Some(Ok(Chunk::Delta(Delta {
                        kind,
                        text,
                        index,
                        event,
                        preceding: std::mem::take(&mut this.preceding),
                    }))));
                }
            }
        }
    }
}

fn decoder_error(error: EventStreamError<SseError>) -> SseError {
    match error {
        EventStreamError::Transport(error) => error,
        EventStreamError::Utf8(_) => SseError::malformed("the body is not UTF-8"),
        EventStreamError::Parser(error) => {
            SseError::malformed(format!("not server-sent events ({:?})", error.code))
        }
    }
}

/// Decodes an event's data as JSON.
fn json(event: &Event) -> Result<Value, SseError> {
    serde_json::from_str(&event.data).map_err(|e| {
        SseError::malformed(format!(
            "event `{}` is not JSON: {e}",
            event.event.chars().take(64).collect::<String>()
        ))
    })
}

/// An in-band error event, classified as an error body is under a failing status.
fn in_band(event: &Event, value: &Value) -> SseError {
    let parsed = ErrorBody::parse(event.data.as_bytes());
    let error = value.get("error");
    let name = |key: &str| {
        error
            .and_then(|e| e.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    SseError::InBand {
        verdict: parsed.refine(Verdict::Failure, None),
        kind: name("type").or_else(|| name("code")),
        message: parsed.message,
    }
}

/// A non-empty string field.
fn text_of<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Bytes received since the last event, and how many are allowed.
#[derive(Debug)]
struct Budget {
    since_event: AtomicUsize,
    limit: AtomicUsize,
}

/// The body, counting the bytes received since the last event, and failing once they exceed
/// the limit.
struct Counted<S> {
    inner: Pin<Box<S>>,
    budget: Arc<Budget>,
    failed: bool,
}

impl<S, B, E> Stream for Counted<S>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: Into<SseError>,
{
    type Item = Result<B, SseError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                let len = bytes.as_ref().len();
                let total =
                    (self.budget.since_event.fetch_add(len, Ordering::Relaxed)).saturating_add(len);
                let limit = self.budget.limit.load(Ordering::Relaxed);
                if total > limit {
                    self.failed = true;
                    return Poll::Ready(Some(Err(SseError::EventTooLarge { limit })));
                }
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(Some(Err(error))) => {
                self.failed = true;
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
