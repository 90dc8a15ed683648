//! Streamed calls: responses that arrive as a stream of chunks (server-sent events).
//!
//! A streamed call is admitted like any other, but its outcome is known only when the stream
//! ends, so [`GuardedStream`] holds the call's permit until then:
//!
//! - the stream ending normally is a success (a half-open trial succeeds only then);
//! - an error item is classified like a call's error, and ends the stream;
//! - no first chunk within the provider's `first_chunk_timeout` (counted from the start of
//!   the call), or a silence longer than its `stall_timeout` between chunks, ends the stream
//!   with an error and counts as a failure;
//! - dropping the stream before its end counts as cancelled (it frees the bulkhead slot and
//!   any trial slot, and decides nothing).
//!
//! When a stream's end needs a decision (a failure, a trial), the final item is delivered
//! only after the provider's actor has published it, as for calls.
//!
//! A routed stream (`Supervisor::route_stream`) fails over only until the first chunk has
//! been delivered: a provider that fails before it is skipped like a failed call; after it,
//! an error ends the stream and is marked [`StreamError::is_mid_stream`], so content is never
//! delivered twice.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::time::{Instant, Sleep};

use crate::attempt::{self, bounded, Ended};
use crate::provider::{Admitted, Delivery};
use crate::router::Attempter;
use crate::{ProviderHandle, ProviderId, Verdict};

/// Why a guarded stream ended early.
#[derive(Debug)]
#[non_exhaustive]
pub enum StreamError<E> {
    /// The provider's own error.
    Inner {
        /// The error.
        error: E,
        /// Whether chunks had already been delivered.
        mid_stream: bool,
    },
    /// No first chunk within the provider's `first_chunk_timeout`.
    FirstChunkTimeout {
        /// The provider.
        provider: ProviderId,
        /// The timeout.
        after: Duration,
    },
    /// No chunk for the provider's `stall_timeout` after the last one.
    Stalled {
        /// The provider.
        provider: ProviderId,
        /// The timeout.
        after: Duration,
    },
}

impl<E> StreamError<E> {
    /// Whether the stream had delivered chunks before it failed. A routed stream never
    /// fails over after that.
    pub fn is_mid_stream(&self) -> bool {
        match self {
            StreamError::Inner { mid_stream, .. } => *mid_stream,
            StreamError::FirstChunkTimeout { .. } => false,
            StreamError::Stalled { .. } => true,
        }
    }

    /// The provider's own error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            StreamError::Inner { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for StreamError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Inner { error, mid_stream } => {
                let when = if *mid_stream {
                    "mid-stream"
                } else {
                    "before the first chunk"
                };
                write!(f, "stream failed {when}: {error}")
            }
            StreamError::FirstChunkTimeout { provider, after } => write!(
                f,
                "no first chunk from provider `{provider}` within {}",
                crate::error::human(*after)
            ),
            StreamError::Stalled { provider, after } => write!(
                f,
                "stream from provider `{provider}` stalled for {}",
                crate::error::human(*after)
            ),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for StreamError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StreamError::Inner { error, .. } => error.source(),
            _ => None,
        }
    }
}

/// What a stream's first item was.
enum First<E> {
    Chunk,
    Error(StreamError<E>),
    End,
}

/// A provider's stream, guarded: it records the call's outcome when it ends. See the
/// [module docs](self).
pub struct GuardedStream<S: ChunkStream<E>, E, C> {
    inner: Option<Pin<Box<S>>>,
    admitted: Option<Admitted<ProviderHandle>>,
    classify: C,
    provider: ProviderId,
    started: Instant,
    delivered: usize,
    /// When the first chunk arrived, after `started`.
    first_chunk: Option<Duration>,
    /// The first-chunk or stall deadline, whichever applies now.
    timer: Option<Pin<Box<Sleep>>>,
    first_chunk_timeout: Option<Duration>,
    stall_timeout: Option<Duration>,
    /// A chunk read ahead by a routed stream, delivered first.
    buffered: Option<Item<S, E>>,
    /// The final item, held until the provider's actor has decided.
    ending: Option<Ending<S, E>>,
    done: bool,
}

type ItemOk<S, E> = <S as ChunkStream<E>>::Chunk;
/// The delivery of a stream's outcome, and the final item to hand out once it is decided.
type Ending<S, E> = (Option<Delivery>, Option<Item<S, E>>);
type Item<S, E> = Result<ItemOk<S, E>, StreamError<E>>;

/// A stream of `Result<T, E>` chunks.
pub trait ChunkStream<E>: Stream<Item = Result<Self::Chunk, E>> {
    /// The chunk type.
    type Chunk;
}

impl<S, T, E> ChunkStream<E> for S
where
    S: Stream<Item = Result<T, E>>,
{
    type Chunk = T;
}

impl<S: ChunkStream<E>, E, C> fmt::Debug for GuardedStream<S, E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedStream")
            .field("provider", &self.provider)
            .field("delivered", &self.delivered)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<S, E, C> GuardedStream<S, E, C>
where
    S: ChunkStream<E>,
    C: Fn(&E) -> Verdict,
{
    pub(crate) fn new(
        handle: &ProviderHandle,
        admitted: Admitted<ProviderHandle>,
        stream: S,
        classify: C,
        started: Instant,
    ) -> Self {
        let config = &handle.shared.config;
        let timer = config
            .first_chunk_timeout
            .map(|t| Box::pin(tokio::time::sleep_until(started + t)));
        GuardedStream {
            inner: Some(Box::pin(stream)),
            admitted: Some(admitted),
            classify,
            provider: handle.id().clone(),
            started,
            delivered: 0,
            first_chunk: None,
            timer,
            first_chunk_timeout: config.first_chunk_timeout,
            stall_timeout: config.stall_timeout,
            buffered: None,
            ending: None,
            done: false,
        }
    }

    /// The provider serving this stream.
    pub fn provider(&self) -> &ProviderId {
        &self.provider
    }

    /// How many chunks have been delivered so far.
    pub fn delivered(&self) -> usize {
        self.delivered
    }

    /// Ends the stream: records `verdict` (a stream's latency, for routes, is its time to
    /// first chunk), then delivers `last` once it is decided.
    fn end(&mut self, verdict: Verdict, last: Option<Item<S, E>>, timed_out: bool) {
        self.inner = None;
        self.timer = None;
        let decided = self.admitted.take().and_then(|admitted| {
            let elapsed = self.started.elapsed();
            attempt::record(
                admitted,
                verdict,
                Some(elapsed),
                timed_out,
                self.first_chunk,
            )
        });
        self.ending = Some((decided, last));
    }

    /// Reads the next item from the provider's stream, under the deadlines.
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item<S, E>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if self.delivered == 0 {
                    self.first_chunk = Some(self.started.elapsed());
                }
                self.delivered += 1;
                self.timer = self
                    .stall_timeout
                    .map(|t| Box::pin(tokio::time::sleep_until(Instant::now() + t)));
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => {
                let verdict = (self.classify)(&error);
                let mid_stream = self.delivered > 0;
                self.end(
                    verdict,
                    Some(Err(StreamError::Inner { error, mid_stream })),
                    false,
                );
                self.poll_next_unpinned(cx)
            }
            Poll::Ready(None) => {
                self.end(Verdict::Success, None, false);
                self.poll_next_unpinned(cx)
            }
            Poll::Pending => {
                let expired = self
                    .timer
                    .as_mut()
                    .is_some_and(|t| t.as_mut().poll(cx).is_ready());
                if !expired {
                    return Poll::Pending;
                }
                let provider = self.provider.clone();
                let error = match (self.delivered, self.first_chunk_timeout, self.stall_timeout) {
                    (0, Some(after), _) => StreamError::FirstChunkTimeout { provider, after },
                    (_, _, after) => StreamError::Stalled {
                        provider,
                        after: after.unwrap_or_default(),
                    },
                };
                self.end(Verdict::Failure, Some(Err(error)), true);
                self.poll_next_unpinned(cx)
            }
        }
    }

    /// Waits for the first item without delivering a chunk (routed streams decide on it).
    /// An error is taken out; a chunk stays buffered for the caller.
    async fn first(&mut self) -> First<E> {
        let item = std::future::poll_fn(|cx| self.poll_next_unpinned(cx)).await;
        match item {
            Some(Ok(chunk)) => {
                self.buffered = Some(Ok(chunk));
                First::Chunk
            }
            Some(Err(error)) => First::Error(error),
            None => First::End,
        }
    }

    fn poll_next_unpinned(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item<S, E>>> {
        if let Some(item) = self.buffered.take() {
            return Poll::Ready(Some(item));
        }
        if self.done {
            return Poll::Ready(None);
        }
        if let Some((decided, _)) = &mut self.ending {
            if let Some(delivery) = decided {
                if Pin::new(delivery).poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            let last = self.ending.take().and_then(|(_, last)| last);
            self.done = true;
            return Poll::Ready(last);
        }
        self.poll_inner(cx)
    }
}

// No field is structurally pinned: the provider's stream and the timer are boxed.
impl<S: ChunkStream<E>, E, C> Unpin for GuardedStream<S, E, C> {}

/// Opens a stream at an admitted provider: `open` under the first-chunk timeout (or the call
/// timeout) and the route's deadline. With `wait_first`, also waits for the first item, so a
/// provider failing before its first chunk can be failed over.
pub(crate) async fn open<S, E, C, Fut>(
    handle: &ProviderHandle,
    admitted: Admitted<&ProviderHandle>,
    deadline: Option<Instant>,
    classify: C,
    open: Fut,
    wait_first: bool,
) -> Ended<GuardedStream<S, E, C>, E>
where
    S: ChunkStream<E>,
    C: Fn(&E) -> Verdict,
    Fut: Future<Output = Result<S, E>>,
{
    let config = &handle.shared.config;
    let started = Instant::now();
    let limit = config.first_chunk_timeout.or(config.call_timeout);
    let stream = match bounded(open, limit, deadline).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            let verdict = classify(&error);
            let elapsed = Some(started.elapsed());
            if let Some(decided) = attempt::record(admitted, verdict, elapsed, false, None) {
                decided.await;
            }
            return Ended::Failed(verdict, error);
        }
        Err(Some(after)) => {
            if let Some(decided) =
                attempt::record(admitted, Verdict::Failure, Some(after), true, None)
            {
                decided.await;
            }
            return Ended::TimedOut(after);
        }
        Err(None) => return Ended::Deadline,
    };
    let mut guarded = GuardedStream::new(handle, admitted.into_owned(), stream, classify, started);
    if !wait_first {
        return Ended::Served(guarded);
    }
    match bounded(guarded.first(), None, deadline).await {
        Ok(First::Chunk | First::End) => Ended::Served(guarded),
        Ok(First::Error(StreamError::Inner { error, .. })) => {
            let verdict = (guarded.classify)(&error);
            Ended::Failed(verdict, error)
        }
        Ok(First::Error(StreamError::FirstChunkTimeout { after, .. })) => Ended::TimedOut(after),
        Ok(First::Error(StreamError::Stalled { after, .. })) => Ended::TimedOut(after),
        // Dropping the stream reports it cancelled.
        Err(_) => Ended::Deadline,
    }
}

/// A routed stream: `op` opens a stream at each provider's id; an attempt succeeds when the
/// first chunk arrives.
pub(crate) struct Streams<C, F> {
    pub(crate) classify: C,
    pub(crate) op: F,
}

impl<S, E, C, F, Fut> Attempter<GuardedStream<S, E, C>, E> for Streams<C, F>
where
    S: ChunkStream<E>,
    C: Fn(&E) -> Verdict + Clone,
    F: FnMut(ProviderId) -> Fut,
    Fut: Future<Output = Result<S, E>>,
{
    async fn attempt(
        &mut self,
        handle: &ProviderHandle,
        admitted: Admitted<&ProviderHandle>,
        deadline: Option<Instant>,
    ) -> Ended<GuardedStream<S, E, C>, E> {
        let opening = (self.op)(handle.id().clone());
        open(
            handle,
            admitted,
            deadline,
            self.classify.clone(),
            opening,
            true,
        )
        .await
    }
}

impl<S, E, C> Stream for GuardedStream<S, E, C>
where
    S: ChunkStream<E>,
    C: Fn(&E) -> Verdict,
{
    type Item = Result<S::Chunk, StreamError<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_unpinned(cx)
    }
}
