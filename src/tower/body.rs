//! [`ResponseBody`]: the inner service's body, or an error body's first bytes replayed.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response from [`Fuse`](super::Fuse): the inner service's body as it
    /// is, except that the first bytes of an error response, read to classify it, are
    /// replayed before the rest. Every byte, trailer and error of the inner body comes out,
    /// in order; data frames are [`Bytes`] (a copy only for bodies whose data is not
    /// `Bytes` already).
    pub struct ResponseBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        Plain { #[pin] body: B },
        Replay { replay: Box<Replay<B>> },
    }
}

/// What was read of an error body, and what is left of it.
pub(super) struct Replay<B: Body> {
    /// The data read, to give out first.
    pub(super) prefix: VecDeque<Bytes>,
    /// What ended the reading early: the trailers, or an error of the body.
    pub(super) end: Option<End<B::Error>>,
    /// The rest of the body; `None` once it ended (or failed) while being read.
    pub(super) rest: Option<Pin<Box<B>>>,
}

/// The last frame of a body read to its end while classifying it.
pub(super) enum End<E> {
    Trailers(HeaderMap),
    Error(E),
}

impl<B: Body> ResponseBody<B> {
    pub(super) fn plain(body: B) -> Self {
        ResponseBody {
            kind: Kind::Plain { body },
        }
    }

    pub(super) fn replay(replay: Replay<B>) -> Self {
        ResponseBody {
            kind: Kind::Replay {
                replay: Box::new(replay),
            },
        }
    }
}

fn into_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Plain { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map(into_bytes))),
            KindProj::Replay { replay } => {
                if let Some(chunk) = replay.prefix.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                match replay.end.take() {
                    Some(End::Trailers(trailers)) => {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    Some(End::Error(error)) => return Poll::Ready(Some(Err(error))),
                    None => {}
                }
                let Some(rest) = replay.rest.as_mut() else {
                    return Poll::Ready(None);
                };
                rest.as_mut()
                    .poll_frame(cx)
                    .map(|frame| frame.map(|frame| frame.map(into_bytes)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Plain { body } => body.is_end_stream(),
            Kind::Replay { replay } => {
                replay.prefix.is_empty()
                    && replay.end.is_none()
                    && replay.rest.as_ref().is_none_or(|rest| rest.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Plain { body } => body.size_hint(),
            Kind::Replay { replay } => {
                let read: u64 = replay.prefix.iter().map(|c| c.len() as u64).sum();
                let rest = replay
                    .rest
                    .as_ref()
                    .map_or_else(|| SizeHint::with_exact(0), |rest| rest.size_hint());
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(read));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(read));
                }
                hint
            }
        }
    }
}

impl<B: Body> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Plain { .. } => "plain",
            Kind::Replay { .. } => "replay",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}
