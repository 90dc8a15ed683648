//! Streamed calls: first-chunk and stall deadlines, cuts before and after the first chunk,
//! half-open trials on streams, routed streams (paused time).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use fusebox::{
    Breaker, CircuitState, Provider, ProviderId, Route, RouteError, StreamError, Supervisor,
};
use futures::{Stream, StreamExt};
use support::{secs, settle, FakeError};

/// One scripted stream event: wait, then yield.
#[derive(Clone)]
enum Beat {
    Chunk(Duration, &'static str),
    Fail(Duration, FakeError),
    Hang,
}

fn scripted(beats: Vec<Beat>) -> impl Stream<Item = Result<String, FakeError>> + Send {
    futures::stream::unfold(beats.into_iter(), |mut beats| async move {
        match beats.next()? {
            Beat::Chunk(wait, text) => {
                tokio::time::sleep(wait).await;
                Some((Ok(text.to_owned()), beats))
            }
            Beat::Fail(wait, error) => {
                tokio::time::sleep(wait).await;
                Some((Err(error), beats))
            }
            Beat::Hang => {
                std::future::pending::<()>().await;
                None
            }
        }
    })
}

fn chunks(n: usize) -> Vec<Beat> {
    (0..n)
        .map(|_| Beat::Chunk(Duration::from_millis(100), "tok"))
        .collect()
}

async fn fuse_with(provider: Provider) -> Supervisor {
    Supervisor::builder()
        .provider(provider)
        .build()
        .await
        .unwrap()
}

fn streaming(name: &str) -> Provider {
    Provider::new(name)
        .breaker(Breaker::consecutive(2).jitter(0.0))
        .first_chunk_timeout(secs(5))
        .stall_timeout(secs(2))
}

async fn collect<S: Stream + Unpin>(mut s: S) -> Vec<S::Item> {
    let mut items = Vec::new();
    while let Some(item) = s.next().await {
        items.push(item);
    }
    items
}

#[tokio::test(start_paused = true)]
async fn a_complete_stream_is_a_success() {
    let fuse = fuse_with(streaming("p")).await;
    let stream = fuse
        .call_stream("p", || async { Ok(scripted(chunks(3))) })
        .await
        .unwrap();
    let items = collect(stream).await;
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(Result::is_ok));
    let s = fuse.status()[0].clone();
    assert_eq!((s.successful, s.failed, s.in_flight), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn no_first_chunk_in_time_is_a_failure() {
    let fuse = fuse_with(streaming("p")).await;
    let start = tokio::time::Instant::now();
    let stream = fuse
        .call_stream("p", || async { Ok(scripted(vec![Beat::Hang])) })
        .await
        .unwrap();
    let items = collect(stream).await;
    assert_eq!(start.elapsed(), secs(5));
    assert!(matches!(
        items.as_slice(),
        [Err(StreamError::FirstChunkTimeout { after, .. })] if *after == secs(5)
    ));
    assert!(!items[0].as_ref().unwrap_err().is_mid_stream());
    let s = fuse.status()[0].clone();
    assert_eq!((s.failed, s.timeouts, s.in_flight), (1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_stall_between_chunks_is_a_mid_stream_failure() {
    let fuse = fuse_with(streaming("p")).await;
    let mut beats = chunks(2);
    beats.push(Beat::Hang);
    let stream = fuse
        .call_stream("p", || async { Ok(scripted(beats)) })
        .await
        .unwrap();
    let items = collect(stream).await;
    assert_eq!(items.len(), 3);
    let err = items[2].as_ref().unwrap_err();
    assert!(matches!(err, StreamError::Stalled { after, .. } if *after == secs(2)));
    assert!(err.is_mid_stream());
    assert_eq!(fuse.status()[0].failed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_cut_is_classified_and_marked_by_whether_chunks_came_first() {
    let fuse = fuse_with(streaming("p")).await;
    // Cut before the first chunk.
    let stream = fuse
        .call_stream("p", || async {
            Ok(scripted(vec![Beat::Fail(secs(1), FakeError::Unavailable)]))
        })
        .await
        .unwrap();
    let items = collect(stream).await;
    assert!(matches!(
        items.as_slice(),
        [Err(StreamError::Inner {
            error: FakeError::Unavailable,
            mid_stream: false
        })]
    ));
    // Cut after two chunks: the second failure trips the breaker (threshold 2), and the
    // error is delivered only once the circuit is open.
    let mut beats = chunks(2);
    beats.push(Beat::Fail(secs(1), FakeError::Unavailable));
    let stream = fuse
        .call_stream("p", || async { Ok(scripted(beats)) })
        .await
        .unwrap();
    let items = collect(stream).await;
    assert!(matches!(
        items.last().unwrap(),
        Err(StreamError::Inner {
            mid_stream: true,
            ..
        })
    ));
    assert_eq!(fuse.status()[0].state, CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_caller_error_mid_stream_does_not_count() {
    let fuse = fuse_with(streaming("p")).await;
    for _ in 0..3 {
        let stream = fuse
            .call_stream("p", || async {
                Ok(scripted(vec![Beat::Fail(secs(1), FakeError::BadRequest)]))
            })
            .await
            .unwrap();
        collect(stream).await;
    }
    let s = fuse.status()[0].clone();
    assert_eq!((s.state, s.ignored, s.failed), (CircuitState::Closed, 3, 0));
}

#[tokio::test(start_paused = true)]
async fn dropping_a_stream_is_a_cancellation() {
    let fuse = fuse_with(streaming("p")).await;
    let mut stream = fuse
        .call_stream("p", || async { Ok(scripted(chunks(10))) })
        .await
        .unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    assert_eq!(stream.delivered(), 1);
    drop(stream);
    let s = fuse.status()[0].clone();
    assert_eq!((s.cancelled, s.failed, s.in_flight), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_half_open_trial_on_a_stream_succeeds_only_when_the_stream_completes() {
    let fuse = fuse_with(streaming("p")).await;
    let fail = || async {
        Err::<futures::stream::Empty<Result<String, FakeError>>, _>(FakeError::Unavailable)
    };
    for _ in 0..2 {
        assert!(fuse.call_stream("p", fail).await.is_err());
    }
    assert_eq!(fuse.status()[0].state, CircuitState::Open);
    tokio::time::advance(secs(60)).await;
    settle().await;

    // A trial stream that is dropped part-way decides nothing: the slot frees.
    let mut trial = fuse
        .call_stream("p", || async { Ok(scripted(chunks(5))) })
        .await
        .unwrap();
    trial.next().await.unwrap().unwrap();
    drop(trial);
    settle().await;
    assert_eq!(fuse.status()[0].state, CircuitState::HalfOpen);

    // The next trial streams to the end; only then does the circuit close.
    let mut trial = fuse
        .call_stream("p", || async { Ok(scripted(chunks(3))) })
        .await
        .unwrap();
    let rejected = fuse
        .call_stream("p", || async { Ok(scripted(chunks(1))) })
        .await
        .unwrap_err();
    assert!(rejected.is_open(), "one trial at a time");
    for _ in 0..3 {
        trial.next().await.unwrap().unwrap();
        assert_eq!(fuse.status()[0].state, CircuitState::HalfOpen);
    }
    assert!(trial.next().await.is_none());
    assert_eq!(fuse.status()[0].state, CircuitState::Closed);
}

async fn routed_pair() -> Supervisor {
    Supervisor::builder()
        .provider(streaming("primary"))
        .provider(streaming("secondary"))
        .route(Route::new("chat").providers(["primary", "secondary"]))
        .build()
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_routed_stream_fails_over_before_the_first_chunk() {
    let fuse = routed_pair().await;
    let routed = fuse
        .route_stream("chat", |p: ProviderId| async move {
            if p == "primary" {
                Ok(scripted(vec![Beat::Fail(secs(1), FakeError::Unavailable)]))
            } else {
                Ok(scripted(chunks(3)))
            }
        })
        .await
        .unwrap();
    assert_eq!(routed.provider, "secondary");
    assert_eq!(routed.attempts.len(), 2);
    let items = collect(routed.value).await;
    assert_eq!(items.len(), 3, "the first chunk is delivered, once");
    assert!(items.iter().all(Result::is_ok));
    assert_eq!(fuse.status()[0].failed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_routed_stream_that_times_out_before_its_first_chunk_fails_over() {
    let fuse = routed_pair().await;
    let start = tokio::time::Instant::now();
    let routed = fuse
        .route_stream("chat", |p: ProviderId| async move {
            if p == "primary" {
                Ok(scripted(vec![Beat::Hang]))
            } else {
                Ok(scripted(chunks(1)))
            }
        })
        .await
        .unwrap();
    assert_eq!(routed.provider, "secondary");
    assert!(start.elapsed() >= secs(5));
    assert!(matches!(
        routed.attempts[0].outcome,
        fusebox::AttemptOutcome::TimedOut(d) if d == secs(5)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_routed_stream_never_fails_over_mid_stream() {
    let fuse = routed_pair().await;
    let invoked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = invoked.clone();
    let routed = fuse
        .route_stream("chat", move |p: ProviderId| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                assert_eq!(p, "primary", "the secondary is never invoked");
                let mut beats = chunks(2);
                beats.push(Beat::Fail(secs(1), FakeError::Unavailable));
                Ok(scripted(beats))
            }
        })
        .await
        .unwrap();
    assert_eq!(routed.provider, "primary");
    let items = collect(routed.value).await;
    assert_eq!(items.len(), 3);
    assert!(items[2].as_ref().unwrap_err().is_mid_stream());
    assert_eq!(invoked.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_routed_stream_with_every_provider_failing_is_exhausted() {
    let fuse = routed_pair().await;
    let err = fuse
        .route_stream("chat", |_p: ProviderId| async {
            Err::<futures::stream::Empty<Result<String, FakeError>>, _>(FakeError::Unavailable)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, RouteError::Exhausted { .. }));
    assert_eq!(err.attempts().len(), 2);
}
