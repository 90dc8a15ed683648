//! The first article's scenario end to end over HTTP, against the mock provider on loopback:
//! the mock's own request counter proves that no call reached the provider while its circuit
//! was open, except the trials. Also a streamed call cut by the provider mid-stream.
//!
//! Real time (loopback sockets cannot run under paused tokio time), with the open duration
//! scaled down to a few hundred milliseconds.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fusebox::http::{check, HttpError};
use fusebox::testing::{FaultKind, FaultScript, MockLlm};
use fusebox::{Breaker, CallError, CircuitState, Provider, StreamError, Supervisor};
use futures::StreamExt;

const OPEN_FOR: Duration = Duration::from_millis(400);

async fn ask(client: &reqwest::Client, mock: &MockLlm) -> Result<String, HttpError> {
    let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let response = check(client.post(mock.openai_url()).json(&body).send().await?).await?;
    Ok(response.text().await?)
}

async fn fuse() -> Supervisor {
    Supervisor::builder()
        .provider(
            Provider::new("openai")
                .breaker(Breaker::default().open_for(OPEN_FOR).jitter(0.0))
                .call_timeout(Duration::from_secs(2))
                .first_chunk_timeout(Duration::from_secs(2))
                .stall_timeout(Duration::from_secs(1)),
        )
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_503s_open_the_circuit_and_no_call_reaches_the_provider_until_the_trial() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::Status(503)))
        .await
        .unwrap();
    let fuse = fuse().await;
    let client = reqwest::Client::new();
    let call = || fuse.call("openai", || ask(&client, &mock));

    // Five consecutive 503s open the circuit.
    for i in 0..5 {
        let err = call().await.unwrap_err();
        assert!(
            matches!(err, CallError::Inner(HttpError::Status { status: 503, .. })),
            "call {i}: {err:?}"
        );
    }
    assert_eq!(mock.requests(), 5);
    assert_eq!(fuse.status()[0].state, CircuitState::Open);

    // While open: every call fails at once, and none reaches the provider.
    let mut retry_afters = Vec::new();
    for _ in 0..50 {
        match call().await.unwrap_err() {
            CallError::Open {
                retry_after,
                failure_count,
                ..
            } => {
                assert_eq!(failure_count, 5);
                retry_afters.push(retry_after);
            }
            other => panic!("expected an open circuit, got {other:?}"),
        }
    }
    assert_eq!(
        mock.requests(),
        5,
        "no call reached the provider while open"
    );
    assert!(
        retry_afters.windows(2).all(|w| w[1] <= w[0]),
        "retry_after counts down"
    );
    assert!(retry_afters[0] <= OPEN_FOR);

    // After the open duration exactly one trial goes through; it fails, and the circuit
    // re-opens for twice as long.
    tokio::time::sleep(OPEN_FOR).await;
    assert!(matches!(call().await, Err(CallError::Inner(_))));
    assert_eq!(mock.requests(), 6, "one trial");
    match call().await.unwrap_err() {
        CallError::Open { retry_after, .. } => {
            assert!(
                retry_after > OPEN_FOR && retry_after <= OPEN_FOR * 2,
                "{retry_after:?}"
            )
        }
        other => panic!("expected a re-opened circuit, got {other:?}"),
    }
    assert_eq!(mock.requests(), 6);

    // The provider recovers; the next trial succeeds and closes the circuit.
    mock.set_script(FaultScript::new());
    tokio::time::sleep(OPEN_FOR * 2).await;
    assert!(call().await.unwrap().contains("mock reply"));
    assert_eq!(fuse.status()[0].state, CircuitState::Closed);
    for _ in 0..5 {
        call().await.unwrap();
    }
    assert_eq!(mock.requests(), 12);
    let stats = mock.stats();
    assert_eq!((stats.errors_with(503), stats.ok), (6, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_opens_the_circuit_for_the_hint() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::RateLimited {
        retry_after: Duration::from_millis(1500),
    }))
    .await
    .unwrap();
    let fuse = fuse().await;
    let client = reqwest::Client::new();
    let err = fuse
        .call("openai", || ask(&client, &mock))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        CallError::Inner(HttpError::Status { status: 429, .. })
    ));
    match fuse
        .call("openai", || ask(&client, &mock))
        .await
        .unwrap_err()
    {
        CallError::Open { retry_after, .. } => {
            assert!(retry_after > Duration::from_millis(1000), "{retry_after:?}")
        }
        other => panic!("expected open, got {other:?}"),
    }
    assert_eq!(mock.requests(), 1);
}

/// A streamed chat completion over real HTTP: SSE `data:` lines as chunks.
async fn stream_chat(
    client: &reqwest::Client,
    mock: &MockLlm,
) -> Result<impl futures::Stream<Item = Result<bytes_lines::Line, HttpError>>, HttpError> {
    let body = serde_json::json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let response = check(client.post(mock.openai_url()).json(&body).send().await?).await?;
    Ok(bytes_lines::data_lines(response.bytes_stream()))
}

/// Splits an SSE byte stream into its non-empty `data:` payloads.
mod bytes_lines {
    use fusebox::http::HttpError;
    use futures::{Stream, StreamExt};

    pub(crate) type Line = String;

    pub(crate) fn data_lines(
        bytes: impl Stream<Item = Result<impl AsRef<[u8]>, reqwest::Error>>,
    ) -> impl Stream<Item = Result<Line, HttpError>> {
        let mut buffer = String::new();
        bytes
            .map(move |chunk| -> Vec<Result<Line, HttpError>> {
                match chunk {
                    Err(e) => vec![Err(HttpError::from(e))],
                    Ok(bytes) => {
                        buffer.push_str(&String::from_utf8_lossy(bytes.as_ref()));
                        let mut lines = Vec::new();
                        while let Some(end) = buffer.find("\n\n") {
                            let event: String = buffer.drain(..end + 2).collect();
                            for line in event.lines() {
                                if let Some(data) = line.strip_prefix("data: ") {
                                    lines.push(Ok(data.to_owned()));
                                }
                            }
                        }
                        lines
                    }
                }
            })
            .flat_map(futures::stream::iter)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_mid_way_over_http_is_a_mid_stream_failure() {
    let mock = MockLlm::builder()
        .chunks(5)
        .script(FaultScript::always(FaultKind::CutStream {
            after_chunks: 2,
        }))
        .start()
        .await
        .unwrap();
    let fuse = fuse().await;
    let client = reqwest::Client::new();
    let stream = fuse
        .call_stream("openai", || stream_chat(&client, &mock))
        .await
        .unwrap();
    let items: Vec<_> = stream.collect().await;
    let chunks = items.iter().filter(|i| i.is_ok()).count();
    assert_eq!(chunks, 2, "{items:?}");
    let last = items.last().unwrap().as_ref().unwrap_err();
    assert!(
        matches!(
            last,
            StreamError::Inner {
                mid_stream: true,
                ..
            }
        ),
        "{last:?}"
    );
    let status = fuse.status()[0].clone();
    assert_eq!((status.failed, status.in_flight), (1, 0));

    // A healthy stream over the same route completes and counts as a success.
    mock.set_script(FaultScript::new());
    let stream = fuse
        .call_stream("openai", || stream_chat(&client, &mock))
        .await
        .unwrap();
    let items: Vec<_> = stream.collect().await;
    assert!(items.iter().all(Result::is_ok));
    assert!(items.iter().any(|l| l.as_ref().unwrap() == "[DONE]"));
    assert_eq!(fuse.status()[0].successful, 1);
}
