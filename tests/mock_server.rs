//! The fault-injecting mock LLM provider, over loopback with reqwest.
#![cfg(feature = "mock-server")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fusebox::testing::{FaultKind, FaultScript, MockLlm, MockStats, When};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Api {
    OpenAi,
    Anthropic,
}

const APIS: [Api; 2] = [Api::OpenAi, Api::Anthropic];

fn url(mock: &MockLlm, api: Api) -> String {
    match api {
        Api::OpenAi => mock.openai_url(),
        Api::Anthropic => mock.anthropic_url(),
    }
}

fn body(api: Api, stream: bool) -> Value {
    let messages = json!([{"role": "user", "content": "say something"}]);
    match api {
        Api::OpenAi => json!({"model": "gpt-4o", "messages": messages, "stream": stream}),
        Api::Anthropic => {
            json!({"model": "claude", "max_tokens": 64, "messages": messages, "stream": stream})
        }
    }
}

async fn send(mock: &MockLlm, api: Api, stream: bool) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::new()
        .post(url(mock, api))
        .json(&body(api, stream))
        .send()
        .await
}

/// Status and JSON body of a non-streaming call.
async fn call(mock: &MockLlm, api: Api) -> (u16, Value) {
    let response = send(mock, api, false).await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// The bytes of a streamed answer until its end or an error, and whether it failed.
async fn read_stream(response: reqwest::Response) -> (String, bool) {
    let mut bytes = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(_) => return (String::from_utf8(bytes).unwrap(), true),
        }
    }
    (String::from_utf8(bytes).unwrap(), false)
}

/// The `event:` names and the text pieces of a server-sent events body.
fn parse_sse(api: Api, text: &str) -> (Vec<String>, Vec<String>) {
    let mut events = Vec::new();
    let mut pieces = Vec::new();
    for line in text.lines() {
        if let Some(event) = line.strip_prefix("event: ") {
            events.push(event.to_owned());
        }
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            events.push("[DONE]".to_owned());
            continue;
        }
        let data: Value = serde_json::from_str(data).unwrap();
        let piece = match api {
            Api::OpenAi => data["choices"][0]["delta"]["content"].as_str(),
            Api::Anthropic => data["delta"]["text"].as_str(),
        };
        pieces.extend(piece.map(str::to_owned));
    }
    (events, pieces)
}

#[tokio::test]
async fn answers_both_apis_without_streaming() {
    let mock = MockLlm::start(FaultScript::new()).await.unwrap();
    let (status, reply) = call(&mock, Api::OpenAi).await;
    assert_eq!(status, 200);
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["model"], "gpt-4o");
    assert_eq!(reply["choices"][0]["message"]["role"], "assistant");
    assert_eq!(reply["choices"][0]["message"]["content"], "mock reply 0");
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    let usage = &reply["usage"];
    assert_eq!(usage["prompt_tokens"], 2);
    assert_eq!(usage["completion_tokens"], 3);
    assert_eq!(usage["total_tokens"], 5);

    let (status, reply) = call(&mock, Api::Anthropic).await;
    assert_eq!(status, 200);
    assert_eq!(reply["type"], "message");
    assert_eq!(reply["role"], "assistant");
    assert_eq!(reply["model"], "claude");
    assert_eq!(
        reply["content"],
        json!([{"type": "text", "text": "mock reply 1"}])
    );
    assert_eq!(reply["stop_reason"], "end_turn");
    assert_eq!(
        reply["usage"],
        json!({"input_tokens": 2, "output_tokens": 3})
    );
    assert!(reply["id"].is_string());
    mock.shutdown().await;
}

#[tokio::test]
async fn streams_both_apis_as_server_sent_events() {
    let mock = MockLlm::start(FaultScript::new()).await.unwrap();
    for (n, api) in APIS.into_iter().enumerate() {
        let response = send(&mock, api, true).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let (text, failed) = read_stream(response).await;
        assert!(!failed);
        let (events, pieces) = parse_sse(api, &text);
        assert_eq!(pieces.len(), 5, "{text}");
        assert_eq!(pieces.concat(), format!("mock reply {n}"));
        match api {
            Api::OpenAi => {
                assert!(events == ["[DONE]"], "{events:?}");
                assert!(text.contains(r#""finish_reason":"stop""#));
                assert_eq!(text.matches("chat.completion.chunk").count(), 6);
            }
            Api::Anthropic => {
                let mut expected = vec!["message_start", "content_block_start"];
                expected.extend(["content_block_delta"; 5]);
                expected.extend(["content_block_stop", "message_delta", "message_stop"]);
                assert_eq!(events, expected);
                assert!(text.contains(r#""stop_reason":"end_turn""#));
            }
        }
    }
    assert_eq!(mock.stats().ok, 2);
}

#[tokio::test]
async fn chunking_and_latency_are_configurable() {
    let mock = MockLlm::builder()
        .chunks(3)
        .chunk_interval(50 * MS)
        .latency(100 * MS)
        .start()
        .await
        .unwrap();
    let started = Instant::now();
    let (_, reply) = call(&mock, Api::OpenAi).await;
    assert_eq!(reply["choices"][0]["message"]["content"], "mock reply 0");
    assert!(started.elapsed() >= 100 * MS);

    let started = Instant::now();
    let (text, _) = read_stream(send(&mock, Api::Anthropic, true).await.unwrap()).await;
    assert!(started.elapsed() >= 200 * MS, "latency + 2 intervals");
    let (_, pieces) = parse_sse(Api::Anthropic, &text);
    assert_eq!(pieces, ["mock", " rep", "ly 1"]);
}

#[tokio::test]
async fn error_statuses_have_each_providers_body() {
    let cases = [
        (FaultKind::Status(500), 500, "server_error", "api_error"),
        (FaultKind::Status(502), 502, "server_error", "api_error"),
        (FaultKind::Status(503), 503, "server_error", "api_error"),
        (
            FaultKind::Overloaded,
            529,
            "server_error",
            "overloaded_error",
        ),
        (
            FaultKind::Unauthorized,
            401,
            "invalid_request_error",
            "authentication_error",
        ),
        (
            FaultKind::Status(404),
            404,
            "invalid_request_error",
            "not_found_error",
        ),
    ];
    let mock = MockLlm::start(FaultScript::new()).await.unwrap();
    for (kind, status, openai_type, anthropic_type) in cases {
        mock.set_script(FaultScript::always(kind));
        let (got, reply) = call(&mock, Api::OpenAi).await;
        assert_eq!(got, status, "{kind:?}");
        assert_eq!(reply["error"]["type"], openai_type, "{kind:?}");
        assert!(reply["error"]["message"].is_string());
        let (got, reply) = call(&mock, Api::Anthropic).await;
        assert_eq!(got, status, "{kind:?}");
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["error"]["type"], anthropic_type, "{kind:?}");
        assert!(reply["error"]["message"].is_string());
    }
    mock.set_script(FaultScript::always(FaultKind::Unauthorized));
    assert_eq!(
        call(&mock, Api::OpenAi).await.1["error"]["code"],
        "invalid_api_key"
    );
    let stats = mock.stats();
    assert_eq!(stats.requests, 13);
    assert_eq!(stats.errors_with(401), 3);
    assert_eq!(stats.errors_with(503), 2);
    assert_eq!(stats.error_count(), 13);
    assert_eq!(stats.ok, 0);
}

#[tokio::test]
async fn rate_limits_carry_retry_after_headers() {
    let retry_after = Duration::from_millis(1500);
    let mock = MockLlm::start(FaultScript::always(FaultKind::RateLimited { retry_after }))
        .await
        .unwrap();
    for api in APIS {
        let response = send(&mock, api, false).await.unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "2");
        assert_eq!(response.headers()["retry-after-ms"], "1500");
        let reply: Value = response.json().await.unwrap();
        match api {
            Api::OpenAi => {
                assert_eq!(reply["error"]["type"], "rate_limit_exceeded");
                assert_eq!(reply["error"]["code"], "rate_limit_exceeded");
            }
            Api::Anthropic => assert_eq!(reply["error"]["type"], "rate_limit_error"),
        }
    }
    assert_eq!(mock.stats().errors_with(429), 2);
}

#[tokio::test]
async fn reset_closes_the_connection_without_a_response() {
    let script = FaultScript::new().fault(When::Requests { from: 0, until: 2 }, FaultKind::Reset);
    let mock = MockLlm::start(script).await.unwrap();
    for api in APIS {
        let error = send(&mock, api, false).await.unwrap_err();
        assert!(is_connection_reset(&error), "{error:?}");
    }
    // The next request, on a fresh connection, is answered.
    let (status, reply) = call(&mock, Api::OpenAi).await;
    assert_eq!(status, 200);
    assert_eq!(reply["choices"][0]["message"]["content"], "mock reply 2");
    let stats = mock.stats();
    assert_eq!((stats.requests, stats.resets, stats.ok), (3, 2, 1));
}

#[tokio::test]
async fn hang_never_answers_until_the_client_gives_up() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::Hang))
        .await
        .unwrap();
    let client = reqwest::Client::builder()
        .timeout(200 * MS)
        .build()
        .unwrap();
    let started = Instant::now();
    let error = client
        .post(mock.anthropic_url())
        .json(&body(Api::Anthropic, false))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert!(started.elapsed() >= 200 * MS);
    assert_eq!(mock.stats().hangs, 1);
    // The server notices the client went away.
    eventually(|| mock.stats().in_flight == 0).await;

    // A hang still open at shutdown is closed, and shutdown does not wait for it.
    let pending = tokio::spawn({
        let mock = mock.clone();
        async move { send(&mock, Api::OpenAi, false).await }
    });
    eventually(|| mock.stats().in_flight == 1).await;
    let started = Instant::now();
    mock.clone().shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(pending.await.unwrap().is_err());
    assert_eq!(mock.stats().hangs, 2);
}

#[tokio::test]
async fn cut_stream_delivers_that_many_chunks_then_fails() {
    let script = FaultScript::always(FaultKind::CutStream { after_chunks: 2 });
    let mock = MockLlm::start(script).await.unwrap();
    for (n, api) in APIS.into_iter().enumerate() {
        let response = send(&mock, api, true).await.unwrap();
        assert_eq!(response.status(), 200);
        let (text, failed) = read_stream(response).await;
        assert!(failed, "{text}");
        let (events, pieces) = parse_sse(api, &text);
        assert_eq!(pieces.concat(), format!("mock reply {n}")[..6]);
        assert_eq!(pieces.len(), 2);
        assert!(!events.iter().any(|e| e == "[DONE]" || e == "message_stop"));
    }
    // Without streaming, a cut stream is a reset.
    let error = send(&mock, Api::OpenAi, false).await.unwrap_err();
    assert!(is_connection_reset(&error), "{error:?}");
    let stats = mock.stats();
    assert_eq!(
        (stats.requests, stats.cut_streams, stats.resets, stats.ok),
        (3, 2, 1, 0)
    );
    eventually(|| mock.stats().in_flight == 0).await;

    // Cutting after more chunks than there are still withholds the end of the stream.
    mock.set_script(FaultScript::always(FaultKind::CutStream {
        after_chunks: 9,
    }));
    let (text, failed) = read_stream(send(&mock, Api::OpenAi, true).await.unwrap()).await;
    let (events, pieces) = parse_sse(Api::OpenAi, &text);
    assert!(failed && events.is_empty());
    assert_eq!(pieces.concat(), "mock reply 3");
}

#[tokio::test]
async fn flap_fails_every_other_request() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::Flap))
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(call(&mock, Api::OpenAi).await.0);
    }
    assert_eq!(statuses, [503, 200, 503, 200, 503, 200]);
    let stats = mock.stats();
    assert_eq!((stats.ok, stats.errors_with(503)), (3, 3));
}

#[tokio::test]
async fn slow_delays_then_answers() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::Slow(100 * MS)))
        .await
        .unwrap();
    let started = Instant::now();
    let (status, reply) = call(&mock, Api::Anthropic).await;
    assert!(started.elapsed() >= 100 * MS);
    assert_eq!(status, 200);
    assert_eq!(reply["content"][0]["text"], "mock reply 0");
}

#[tokio::test]
async fn counters_are_exact() {
    let script = FaultScript::new()
        .fault(When::Requests { from: 0, until: 3 }, FaultKind::Status(500))
        .fault(When::Requests { from: 3, until: 5 }, FaultKind::Reset)
        .fault(When::Requests { from: 5, until: 6 }, FaultKind::Overloaded);
    let mock = MockLlm::start(script).await.unwrap();
    for n in 0..8 {
        let _ = send(&mock, APIS[n % 2], false).await;
    }
    let mut expected = MockStats::default();
    expected.requests = 8;
    expected.ok = 2;
    expected.errors = [(500, 3), (529, 1)].into();
    expected.resets = 2;
    assert_eq!(mock.stats(), expected);
    assert_eq!(mock.requests(), 8);

    // Concurrent requests: each numbered and counted once.
    mock.set_script(FaultScript::always(FaultKind::Flap));
    let calls = (0..50).map(|_| send(&mock, Api::OpenAi, false));
    let statuses: Vec<u16> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 25);
    let stats = mock.stats();
    assert_eq!(
        (stats.requests, stats.ok, stats.errors_with(503)),
        (58, 27, 25)
    );
}

#[tokio::test]
async fn the_script_can_be_replaced_at_runtime() {
    let mock = MockLlm::start(FaultScript::always(FaultKind::Status(503)))
        .await
        .unwrap();
    assert_eq!(call(&mock, Api::OpenAi).await.0, 503);
    mock.set_script(FaultScript::new());
    let (status, reply) = call(&mock, Api::OpenAi).await;
    assert_eq!(status, 200);
    assert_eq!(reply["choices"][0]["message"]["content"], "mock reply 1");
    // Request numbers count from the start, whatever the script.
    mock.set_script(FaultScript::new().fault(
        When::Requests { from: 2, until: 3 },
        FaultKind::Unauthorized,
    ));
    assert_eq!(call(&mock, Api::OpenAi).await.0, 401);
    assert_eq!(call(&mock, Api::OpenAi).await.0, 200);
}

#[tokio::test]
async fn time_windows_follow_the_clock() {
    let window = When::Between {
        from: Duration::ZERO,
        until: 300 * MS,
    };
    let mock = MockLlm::start(FaultScript::new().fault(window, FaultKind::Status(503)))
        .await
        .unwrap();
    assert_eq!(call(&mock, Api::OpenAi).await.0, 503);
    tokio::time::sleep(400 * MS).await;
    assert_eq!(call(&mock, Api::OpenAi).await.0, 200);
}

#[tokio::test]
async fn malformed_requests_get_400_and_unknown_paths_404() {
    let mock = MockLlm::start(FaultScript::new()).await.unwrap();
    let client = reqwest::Client::new();
    for api in APIS {
        for bad in ["{not json", r#"{"messages": []}"#] {
            let response = client.post(url(&mock, api)).body(bad).send().await.unwrap();
            assert_eq!(response.status(), 400);
            let reply: Value = response.json().await.unwrap();
            match api {
                Api::OpenAi => assert_eq!(reply["error"]["type"], "invalid_request_error"),
                Api::Anthropic => {
                    assert_eq!(reply["type"], "error");
                    assert_eq!(reply["error"]["type"], "invalid_request_error");
                }
            }
        }
    }
    let response = client
        .post(format!("{}/v1/nothing", mock.base_url()))
        .send()
        .await;
    assert_eq!(response.unwrap().status(), 404);
    let stats = mock.stats();
    assert_eq!((stats.requests, stats.errors_with(400)), (4, 4));
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    let mock = MockLlm::start(FaultScript::new()).await.unwrap();
    let addr = mock.addr();
    assert_eq!(call(&mock, Api::OpenAi).await.0, 200);
    mock.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let mock = MockLlm::start(FaultScript::new()).await.unwrap();
    let addr = mock.addr();
    let clone = mock.clone();
    drop(mock);
    assert_eq!(
        call(&clone, Api::OpenAi).await.0,
        200,
        "a clone keeps it running"
    );
    drop(clone);
    eventually_async(|| async { tokio::net::TcpStream::connect(addr).await.is_err() }).await;
}

#[test]
fn scripts_read_from_toml() {
    let script = FaultScript::from_toml_str(
        r#"
        [[faults]]
        when = { between = ["10s", "1m 30s"] }
        kind = { status = 503 }
        [[faults]]
        when = { requests = [5, 20] }
        kind = { rate_limited = "1500ms" }
        [[faults]]
        when = "always"
        kind = { slow = "5s" }
        [[faults]]
        when = "always"
        kind = { cut_stream = 2 }
        "#,
    )
    .unwrap();
    let secs = Duration::from_secs;
    let expected = FaultScript::new()
        .fault(
            When::Between {
                from: secs(10),
                until: secs(90),
            },
            FaultKind::Status(503),
        )
        .fault(
            When::Requests { from: 5, until: 20 },
            FaultKind::RateLimited {
                retry_after: 1500 * MS,
            },
        )
        .fault(When::Always, FaultKind::Slow(secs(5)))
        .fault(When::Always, FaultKind::CutStream { after_chunks: 2 });
    assert_eq!(script, expected);

    let units = [
        ("\"overloaded\"", FaultKind::Overloaded),
        ("\"unauthorized\"", FaultKind::Unauthorized),
        ("\"hang\"", FaultKind::Hang),
        ("\"reset\"", FaultKind::Reset),
        ("\"flap\"", FaultKind::Flap),
    ];
    for (text, kind) in units {
        let script =
            FaultScript::from_toml_str(&format!("[[faults]]\nwhen = \"always\"\nkind = {text}\n"));
        assert_eq!(script.unwrap(), FaultScript::always(kind));
    }
    assert_eq!(FaultScript::from_toml_str("").unwrap(), FaultScript::new());
}

#[test]
fn bad_scripts_name_the_field_and_line() {
    let kind = Some("faults.kind");
    let cases = [
        ("kind = \"explode\"", 7, kind, "unknown variant `explode`"),
        (
            "kind = { slow = \"5 parsecs\" }",
            7,
            kind,
            "invalid duration",
        ),
        (
            "kind = { status = 200 }",
            7,
            kind,
            "must be an error (400..=599)",
        ),
        ("kind = { cut_stream = -1 }", 7, kind, "invalid value"),
        (
            "kind = \"hang\"\nextra = 1",
            8,
            Some("faults"),
            "unknown field `extra`",
        ),
        ("kind = \"hang\" oops", 7, None, "newline"),
    ];
    let first =
        "[[faults]]\nwhen = \"always\"\nkind = \"reset\"\n\n[[faults]]\nwhen = \"always\"\n";
    for (line, at, field, message) in cases {
        let error = FaultScript::from_toml_str(&format!("{first}{line}\n")).unwrap_err();
        assert_eq!((error.line, error.field.as_deref()), (at, field), "{error}");
        assert!(error.message.contains(message), "{error}");
        let shown = error.to_string();
        assert!(
            shown.contains(&format!("line {at}")) && shown.contains(message),
            "{shown}"
        );
    }
    let text = format!("{first}kind = \"reset\"\n\n[[faults]]\nwhen = {{ requests = [5, 5] }}\n");
    let error = FaultScript::from_toml_str(&text).unwrap_err();
    assert_eq!(
        (error.line, error.field.as_deref()),
        (10, Some("faults.when"))
    );
    assert!(error.message.contains("empty window"), "{error}");
    let error =
        FaultScript::from_toml_str("[[faults]]\nwhen = { between = [\"2s\"] }\nkind = \"reset\"")
            .unwrap_err();
    assert_eq!(error.line, 2, "{error}");
}

/// Whether the error comes from a TCP reset (not a status, nor a timeout).
fn is_connection_reset(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionReset;
        }
        source = e.source();
    }
    false
}

async fn eventually(mut condition: impl FnMut() -> bool) {
    eventually_async(|| std::future::ready(condition())).await;
}

async fn eventually_async<F: std::future::Future<Output = bool>>(mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !condition().await {
        assert!(Instant::now() < deadline, "condition not met within 3s");
        tokio::time::sleep(10 * MS).await;
    }
}
