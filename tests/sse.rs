//! Decoding providers' event streams (`fusebox::http::sse`): over loopback against `MockLlm`
//! through `route_stream` and `call_stream` (failover before content, mid-stream failures,
//! time to first token, usage at the end), and on scripted bytes under paused time (chunk
//! boundaries, truncation, hostile input).
#![cfg(all(feature = "reqwest", feature = "mock-server"))]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fusebox::http::sse::{self, Chunk, DeltaKind, SseError, SseStream, Usage};
use fusebox::testing::{FaultKind, FaultScript, MockLlm, StreamFault};
use fusebox::{
    AttemptOutcome, Breaker, Provider, ProviderId, Route, RouteError, StreamError, Supervisor,
    Verdict,
};
use futures::{Stream, StreamExt};
use serde_json::{json, Value};

const MS: Duration = Duration::from_millis(1);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Api {
    OpenAi,
    Anthropic,
}

fn request(api: Api, mock: &MockLlm, extra: Value) -> reqwest::RequestBuilder {
    let messages = json!([{"role": "user", "content": "say something"}]);
    let (url, mut body) = match api {
        Api::OpenAi => (
            mock.openai_url(),
            json!({"model": "gpt-4o", "messages": messages, "stream": true}),
        ),
        Api::Anthropic => (
            mock.anthropic_url(),
            json!({"model": "claude", "max_tokens": 64, "messages": messages, "stream": true}),
        ),
    };
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    reqwest::Client::new().post(url).json(&body)
}

/// Opens a decoded stream on `mock`: the op of a routed or direct streamed call.
async fn open(
    api: Api,
    mock: &MockLlm,
    provider: &ProviderId,
    extra: Value,
) -> Result<SseStream<impl Stream<Item = reqwest::Result<impl AsRef<[u8]>>>>, SseError> {
    let started = tokio::time::Instant::now();
    let response = fusebox::http::send(request(api, mock, extra)).await?;
    let body = response.bytes_stream();
    let stream = match api {
        Api::OpenAi => sse::openai(body),
        Api::Anthropic => sse::anthropic(body),
    };
    Ok(stream.provider(provider).since(started))
}

async fn collect<S: Stream + Unpin>(mut s: S) -> Vec<S::Item> {
    let mut items = Vec::new();
    while let Some(item) = s.next().await {
        items.push(item);
    }
    items
}

fn text<E>(items: &[Result<Chunk, E>]) -> String {
    items
        .iter()
        .filter_map(|i| i.as_ref().ok().and_then(Chunk::text))
        .collect()
}

async fn two_providers() -> Supervisor {
    Supervisor::builder()
        .provider(Provider::new("primary").breaker(Breaker::consecutive(3)))
        .provider(Provider::new("secondary"))
        .route(Route::new("chat").providers(["primary", "secondary"]))
        .build()
        .await
        .unwrap()
}

fn status(fuse: &Supervisor, name: &str) -> fusebox::ProviderStatus {
    fuse.provider(name).unwrap().status()
}

/// Lets the provider actors settle (a failed stream is decided before its last item is
/// delivered, so this is only for successes counted on the lock-free path).
async fn settle() {
    tokio::time::sleep(10 * MS).await;
}

#[tokio::test]
async fn anthropic_overloaded_before_content_fails_over_to_the_secondary() {
    let overloaded = FaultKind::StreamError {
        after_chunks: 0,
        error: StreamFault::Overloaded,
    };
    let primary = MockLlm::builder()
        .framing_events(true)
        .script(FaultScript::always(overloaded))
        .start()
        .await
        .unwrap();
    let secondary = MockLlm::start(FaultScript::new()).await.unwrap();
    let fuse = two_providers().await;
    let routed = fuse
        .route_stream("chat", |p: ProviderId| {
            let mock = if p == "primary" { &primary } else { &secondary };
            async move { open(Api::Anthropic, mock, &p, json!({})).await }
        })
        .await
        .unwrap();
    // The primary answered 200 and sent message_start, content_block_start and ping, then
    // `event: error` with overloaded_error: no content, so the route failed over.
    assert_eq!(routed.provider, "secondary");
    assert_eq!(routed.attempts.len(), 2);
    assert_eq!(
        routed.attempts[0].outcome,
        AttemptOutcome::Failed(Verdict::Failure)
    );
    let items = collect(routed.value).await;
    assert_eq!(text(&items), "mock reply 0");
    let done = items.last().unwrap().as_ref().unwrap().done().unwrap();
    assert_eq!(done.finish_reason.as_deref(), Some("end_turn"));
    settle().await;

    let p = status(&fuse, "primary");
    assert_eq!((p.failed, p.successful, p.in_flight), (1, 0, 0));
    let s = status(&fuse, "secondary");
    assert_eq!((s.failed, s.successful, s.in_flight), (0, 1, 0));
    let stats = primary.stats();
    assert_eq!((stats.requests, stats.stream_errors, stats.ok), (1, 1, 0));
    assert_eq!(secondary.requests(), 1);
}

#[tokio::test]
async fn anthropic_overloaded_after_content_is_a_mid_stream_failure() {
    let overloaded = FaultKind::StreamError {
        after_chunks: 2,
        error: StreamFault::Overloaded,
    };
    let primary = MockLlm::start(FaultScript::always(overloaded))
        .await
        .unwrap();
    let secondary = MockLlm::start(FaultScript::new()).await.unwrap();
    let fuse = two_providers().await;
    let routed = fuse
        .route_stream("chat", |p: ProviderId| {
            let mock = if p == "primary" { &primary } else { &secondary };
            async move { open(Api::Anthropic, mock, &p, json!({})).await }
        })
        .await
        .unwrap();
    assert_eq!(routed.provider, "primary");
    let items = collect(routed.value).await;
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(text(&items), "mock r");
    let error = items[2].as_ref().unwrap_err();
    assert!(error.is_mid_stream());
    assert!(matches!(
        error,
        StreamError::Inner {
            error: SseError::InBand {
                verdict: Verdict::Failure,
                kind: Some(kind),
                ..
            },
            mid_stream: true,
        } if kind == "overloaded_error"
    ));
    // Counted against the primary; nothing was sent to the secondary.
    let p = status(&fuse, "primary");
    assert_eq!((p.failed, p.successful, p.in_flight), (1, 0, 0));
    assert_eq!(secondary.requests(), 0);
    // Three such streams open the primary's circuit (consecutive(3)).
    for _ in 0..2 {
        let routed = fuse
            .route_stream("chat", |p: ProviderId| {
                let mock = if p == "primary" { &primary } else { &secondary };
                async move { open(Api::Anthropic, mock, &p, json!({})).await }
            })
            .await
            .unwrap();
        let _ = collect(routed.value).await;
    }
    assert_eq!(status(&fuse, "primary").state, fusebox::CircuitState::Open);
}

#[tokio::test]
async fn openai_role_only_first_delta_is_not_the_first_chunk() {
    // The mock sends the role-only delta with the headers, then thinks for 600 ms.
    let mock = MockLlm::builder()
        .framing_events(true)
        .first_token_latency(600 * MS)
        .start()
        .await
        .unwrap();
    let fuse = Supervisor::builder()
        .provider(Provider::new("openai").first_chunk_timeout(200 * MS))
        .build()
        .await
        .unwrap();
    let id = fuse.provider("openai").unwrap().id().clone();

    // Raw bytes: the role-only delta is a chunk, and arrives in time.
    let mut raw = fuse
        .call_stream("openai", || async {
            fusebox::http::send(request(Api::OpenAi, &mock, json!({})))
                .await
                .map(reqwest::Response::bytes_stream)
                .map_err(SseError::from)
                .map(|s| s.map(|item| item.map_err(SseError::from)))
        })
        .await
        .unwrap();
    let first = raw.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains(r#""role":"assistant""#));
    drop(raw);

    // Decoded: the role-only delta is not content, so the first chunk is 600 ms away and the
    // first-chunk timeout (time to first token) fires.
    let decoded = fuse
        .call_stream("openai", || open(Api::OpenAi, &mock, &id, json!({})))
        .await
        .unwrap();
    let items = collect(decoded).await;
    assert!(
        matches!(
            items.as_slice(),
            [Err(StreamError::FirstChunkTimeout { after, .. })] if *after == 200 * MS
        ),
        "{items:?}"
    );
    let s = status(&fuse, "openai");
    assert_eq!((s.failed, s.timeouts), (1, 1));
}

#[tokio::test]
async fn the_first_item_is_the_first_token_with_the_events_before_it() {
    let mock = MockLlm::builder()
        .framing_events(true)
        .first_token_latency(50 * MS)
        .start()
        .await
        .unwrap();
    let fuse = Supervisor::builder()
        .provider(Provider::new("p").first_chunk_timeout(Duration::from_secs(5)))
        .build()
        .await
        .unwrap();
    let id = fuse.provider("p").unwrap().id().clone();
    for (n, api) in [Api::OpenAi, Api::Anthropic].into_iter().enumerate() {
        let mut stream = fuse
            .call_stream("p", || open(api, &mock, &id, json!({})))
            .await
            .unwrap();
        let Chunk::Delta(first) = stream.next().await.unwrap().unwrap() else {
            panic!("the first item is not a delta")
        };
        assert_eq!((first.kind, first.text.as_str()), (DeltaKind::Text, "moc"));
        let kinds: Vec<&str> = first
            .preceding
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("chunk"))
            .collect();
        match api {
            // The role-only delta (no `type`: a chat.completion.chunk).
            Api::OpenAi => {
                assert_eq!(kinds, ["chunk"]);
                assert_eq!(
                    first.preceding[0]["choices"][0]["delta"]["role"],
                    "assistant"
                );
            }
            // The ping is dropped.
            Api::Anthropic => assert_eq!(kinds, ["message_start", "content_block_start"]),
        }
        let rest = collect(stream).await;
        let done = rest
            .last()
            .unwrap()
            .as_ref()
            .unwrap()
            .done()
            .unwrap()
            .clone();
        assert_eq!(
            format!("moc{}", text(&rest)),
            format!("mock reply {n}"),
            "{rest:?}"
        );
        let ttft = done.time_to_first_token.unwrap();
        assert!(ttft >= 50 * MS && ttft <= done.duration, "{done:?}");
    }
}

#[tokio::test]
async fn usage_and_finish_reason_are_read_at_the_end() {
    let mock = MockLlm::start(FaultScript::new()).await.unwrap();
    let id = ProviderId::from("p");
    // OpenAI sends usage only when asked.
    let cases = [
        (
            Api::OpenAi,
            json!({"stream_options": {"include_usage": true}}),
            "stop",
            true,
        ),
        (Api::OpenAi, json!({}), "stop", false),
        (Api::Anthropic, json!({}), "end_turn", true),
    ];
    for (api, extra, reason, usage) in cases {
        let stream = open(api, &mock, &id, extra).await.unwrap();
        let items = collect(stream).await;
        let done = items.last().unwrap().as_ref().unwrap().done().unwrap();
        assert_eq!(done.finish_reason.as_deref(), Some(reason));
        let expected = usage.then(|| Usage::new(2, 3));
        assert_eq!(done.usage, expected, "{api:?}");
        // Every item but the last is content.
        assert!(items[..items.len() - 1]
            .iter()
            .all(|i| matches!(i, Ok(Chunk::Delta(_)))));
        assert_eq!(items.len(), 6);
    }
}

#[tokio::test]
async fn in_band_errors_are_classified_by_their_type() {
    let secondary = MockLlm::start(FaultScript::new()).await.unwrap();
    let cases = [
        (Api::Anthropic, StreamFault::RateLimit, "rate_limit_error"),
        (Api::Anthropic, StreamFault::ApiError, "api_error"),
        (Api::OpenAi, StreamFault::RateLimit, "rate_limit_exceeded"),
        (Api::OpenAi, StreamFault::Overloaded, "server_error"),
    ];
    for (api, fault, kind) in cases {
        let primary = MockLlm::start(FaultScript::always(FaultKind::StreamError {
            after_chunks: 0,
            error: fault,
        }))
        .await
        .unwrap();
        let fuse = two_providers().await;
        let routed = fuse
            .route_stream("chat", |p: ProviderId| {
                let mock = if p == "primary" { &primary } else { &secondary };
                async move { open(api, mock, &p, json!({})).await }
            })
            .await
            .unwrap();
        assert_eq!(routed.provider, "secondary", "{api:?} {fault:?}");
        let expected = match fault {
            StreamFault::RateLimit => Verdict::RateLimited { retry_after: None },
            _ => Verdict::Failure,
        };
        assert_eq!(routed.attempts[0].outcome, AttemptOutcome::Failed(expected));
        // The same error, read directly.
        let items = collect(open(api, &primary, &"p".into(), json!({})).await.unwrap()).await;
        assert!(
            matches!(items.as_slice(), [Err(SseError::InBand { kind: Some(k), .. })] if k == kind),
            "{items:?}"
        );
        let _ = collect(routed.value).await;
    }

    // An invalid request is the caller's fault: no failover, not counted.
    let primary = MockLlm::start(FaultScript::always(FaultKind::StreamError {
        after_chunks: 0,
        error: StreamFault::InvalidRequest,
    }))
    .await
    .unwrap();
    let fuse = two_providers().await;
    let before = secondary.requests();
    let error = fuse
        .route_stream("chat", |p: ProviderId| {
            let mock = if p == "primary" { &primary } else { &secondary };
            async move { open(Api::Anthropic, mock, &p, json!({})).await }
        })
        .await
        .unwrap_err();
    assert!(
        matches!(error, RouteError::NotRetryable { .. }),
        "{error:?}"
    );
    assert_eq!(secondary.requests(), before);
    let p = status(&fuse, "primary");
    assert_eq!((p.failed, p.ignored), (0, 1));

    // Without streaming the same fault is the error status.
    let response = request(Api::Anthropic, &primary, json!({"stream": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn a_cut_or_truncated_body_is_a_failure() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::CutStream {
        after_chunks: 2,
    }))
    .await
    .unwrap();
    let items = collect(
        open(Api::OpenAi, &mock, &"p".into(), json!({}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(items.len(), 3, "{items:?}");
    let error = items[2].as_ref().unwrap_err();
    assert!(matches!(error, SseError::Http(_)), "{error:?}");
    assert_eq!(fusebox::Classify::verdict(error), Verdict::Failure);
}

#[tokio::test]
async fn streams_record_time_to_first_token_and_duration() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let ok = MockLlm::builder()
        .first_token_latency(30 * MS)
        .start()
        .await
        .unwrap();
    let failing = MockLlm::start(FaultScript::always(FaultKind::StreamError {
        after_chunks: 1,
        error: StreamFault::Overloaded,
    }))
    .await
    .unwrap();
    let id = ProviderId::from("claude");
    let _ = collect(open(Api::Anthropic, &ok, &id, json!({})).await.unwrap()).await;
    let _ = collect(
        open(Api::Anthropic, &failing, &id, json!({}))
            .await
            .unwrap(),
    )
    .await;
    // Without a provider nothing is recorded.
    let stream = sse::openai(
        request(Api::OpenAi, &ok, json!({}))
            .send()
            .await
            .unwrap()
            .bytes_stream(),
    );
    let _ = collect(stream).await;

    let mut seen = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let samples = match value {
            DebugValue::Histogram(samples) => samples.into_iter().map(|s| s.0).collect(),
            other => panic!("{other:?}"),
        };
        seen.push((key.name().to_owned(), labels.join(","), samples));
    }
    seen.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let names: Vec<(&str, &str, usize)> = seen
        .iter()
        .map(|(n, l, s): &(String, String, Vec<f64>)| (n.as_str(), l.as_str(), s.len()))
        .collect();
    assert_eq!(
        names,
        [
            (
                fusebox::metrics::STREAM_DURATION,
                "api=anthropic,outcome=error,provider=claude",
                1
            ),
            (
                fusebox::metrics::STREAM_DURATION,
                "api=anthropic,outcome=success,provider=claude",
                1
            ),
            (
                fusebox::metrics::STREAM_FIRST_TOKEN,
                "api=anthropic,provider=claude",
                2
            ),
        ]
    );
    // The successful stream waited 30 ms for its first token.
    assert!(seen[2].2.iter().any(|&s| s >= 0.030), "{seen:?}");
}

// ---------------------------------------------------------------------------------------
// Scripted bytes

fn body(parts: Vec<&'static [u8]>) -> impl Stream<Item = Result<&'static [u8], std::io::Error>> {
    futures::stream::iter(parts.into_iter().map(Ok))
}

async fn decode_openai(parts: Vec<&'static [u8]>) -> Vec<Result<Chunk, SseError>> {
    collect(sse::openai(body(parts))).await
}

async fn decode_anthropic(parts: Vec<&'static [u8]>) -> Vec<Result<Chunk, SseError>> {
    collect(sse::anthropic(body(parts))).await
}

const OPENAI: &[u8] = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"finish_reason\":null}]}\n\n\
: keep-alive comment\n\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"h\u{e9}llo \u{2713}\"},\"finish_reason\":null}]}\r\n\r\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":12,\"total_tokens\":31}}\n\n\
data: [DONE]\n\n"
    .as_bytes();

/// What a stream decodes to, for comparison: kind and text of each delta, then the end.
fn summary(items: &[Result<Chunk, SseError>]) -> Vec<String> {
    items
        .iter()
        .map(|item| match item {
            Ok(Chunk::Delta(d)) => format!("{:?} {:?} #{}", d.kind, d.text, d.preceding.len()),
            Ok(Chunk::Done(d)) => format!(
                "done {:?} {:?} #{}",
                d.finish_reason,
                d.usage,
                d.preceding.len()
            ),
            Ok(other) => format!("{other:?}"),
            Err(e) => format!("error {e}"),
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn openai_chunks_decode_whatever_the_byte_boundaries() {
    let whole = decode_openai(vec![OPENAI]).await;
    let expected = summary(&whole);
    assert_eq!(
        expected,
        [
            "Text \"héllo ✓\" #1",
            "ToolCall \"\" #0",
            "ToolCall \"{\\\"city\\\":\" #0",
            "done Some(\"tool_calls\") Some(Usage { input_tokens: 19, output_tokens: 12 }) #2",
        ]
    );
    // Split anywhere, even inside a multi-byte character or a CRLF.
    for at in 1..OPENAI.len() {
        let (a, b) = OPENAI.split_at(at);
        let items = collect(sse::openai(futures::stream::iter([
            Ok::<_, std::io::Error>(a),
            Ok(b),
        ])))
        .await;
        assert_eq!(summary(&items), expected, "split at {at}");
    }
    // One byte at a time.
    let bytes = futures::stream::iter(
        OPENAI
            .iter()
            .map(|b| Ok::<_, std::io::Error>(std::slice::from_ref(b))),
    );
    assert_eq!(summary(&collect(sse::openai(bytes)).await), expected);
}

#[tokio::test(start_paused = true)]
async fn anthropic_events_thinking_tools_and_unknown_types() {
    let items = decode_anthropic(vec![
        b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
        b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
        b"event: ping\ndata: {\"type\": \"ping\"}\n\n",
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me think\"}}\n\n",
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQB\"}}\n\n",
        b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}\n\n",
        b"event: brand_new_event\ndata: {\"type\":\"brand_new_event\"}\n\n",
        b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n\n",
        b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ])
    .await;
    assert_eq!(
        summary(&items),
        [
            "Reasoning \"Let me think\" #2",
            "Other \"EqQB\" #0",
            // content_block_stop, content_block_start (tool_use), the empty input_json_delta.
            "ToolCall \"{\\\"city\\\": \\\"Paris\\\"}\" #3",
            "done Some(\"tool_use\") Some(Usage { input_tokens: 25, output_tokens: 89 }) #4",
        ]
    );
    let Ok(Chunk::Delta(tool)) = &items[2] else {
        panic!()
    };
    assert_eq!(tool.index, 1);
    assert_eq!(tool.preceding[1]["content_block"]["name"], "get_weather");
}

#[tokio::test(start_paused = true)]
async fn truncated_malformed_and_oversized_streams_fail() {
    let delta = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
    // No [DONE] and no finish reason: truncated.
    let items = decode_openai(vec![delta]).await;
    assert!(matches!(
        items.as_slice(),
        [Ok(_), Err(SseError::Truncated)]
    ));
    // A finish reason without [DONE] is a complete stream.
    let finish =
        b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n";
    let items = decode_openai(vec![delta, finish]).await;
    assert!(
        matches!(items.last(), Some(Ok(Chunk::Done(d))) if d.finish_reason.as_deref() == Some("length"))
    );
    // Anthropic without message_stop nor stop_reason.
    let items = decode_anthropic(vec![
        b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
    ])
    .await;
    assert!(matches!(items.as_slice(), [Err(SseError::Truncated)]));
    // Not JSON.
    let items = decode_openai(vec![b"data: {oops\n\n"]).await;
    assert!(
        matches!(items.as_slice(), [Err(SseError::Malformed { .. })]),
        "{items:?}"
    );
    // Not UTF-8 (then the end): malformed.
    let items = decode_openai(vec![b"data: \xff\xfe\n\n"]).await;
    assert!(
        matches!(items.as_slice(), [Err(SseError::Malformed { .. })]),
        "{items:?}"
    );
    // A transport error mid-stream ends it.
    let failing = futures::stream::iter([
        Ok(&delta[..]),
        Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
    ]);
    let items = collect(sse::openai(failing)).await;
    assert!(
        matches!(items.as_slice(), [Ok(_), Err(SseError::Body(_))]),
        "{items:?}"
    );
    // An endless event: stopped at the limit, without buffering the rest.
    let endless = futures::stream::repeat_with(|| Ok::<_, std::io::Error>(vec![b'a'; 4096]));
    let items = collect(
        sse::openai(
            futures::stream::once(async { Ok::<_, std::io::Error>(b"data: ".to_vec()) })
                .chain(endless),
        )
        .max_event_bytes(64 * 1024),
    )
    .await;
    assert!(
        matches!(
            items.as_slice(),
            [Err(SseError::EventTooLarge { limit: 65_536 })]
        ),
        "{items:?}"
    );
    // Nothing after the end or an error.
    let mut stream = sse::openai(body(vec![b"data: [DONE]\n\ndata: {\"choices\":[]}\n\n"]));
    assert!(matches!(stream.next().await, Some(Ok(Chunk::Done(_)))));
    assert!(stream.next().await.is_none());
    // Errors are classified.
    use fusebox::Classify;
    assert_eq!(SseError::Truncated.verdict(), Verdict::Failure);
    let error = decode_openai(vec![b"data: {\"error\":{\"message\":\"bad\",\"type\":\"invalid_request_error\",\"code\":\"context_length_exceeded\"}}\n\n"]).await;
    let error = error[0].as_ref().unwrap_err();
    assert_eq!(error.verdict(), Verdict::Ignored);
    assert_eq!(
        error.to_string(),
        "error event in the stream: invalid_request_error: bad"
    );
}
