//! The ops endpoint over real HTTP on 127.0.0.1, in real time.
//!
//! The Prometheus recorder is process-global: it is installed once for this binary, before
//! any supervisor is built, and every test names its providers apart so that tests running in
//! parallel never read each other's series.
#![cfg(feature = "server")]
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;

use fusebox::prometheus::PrometheusHandle;
use fusebox::server::{OpsHandle, OpsServer};
use fusebox::{Breaker, CallError, CircuitState, Provider, Supervisor, Verdict};
use reqwest::StatusCode;
use serde_json::Value;

const OPEN_FOR: Duration = Duration::from_millis(300);
const TOKEN: &str = "s3cret";

fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| fusebox::prometheus::install().unwrap())
        .clone()
}

/// A supervisor of `names`, each opening on its first failure for [`OPEN_FOR`].
async fn supervisor(names: &[&str]) -> Supervisor {
    let _ = prometheus();
    let mut builder = Supervisor::builder().metrics_interval(None);
    for name in names {
        builder = builder.provider(
            Provider::new(*name).breaker(Breaker::consecutive(1).open_for(OPEN_FOR).jitter(0.0)),
        );
    }
    builder.build().await.unwrap()
}

async fn fail(fuse: &Supervisor, provider: &str) {
    let r: Result<(), CallError<Verdict>> = fuse
        .call(provider, || async { Err(Verdict::Failure) })
        .await;
    assert!(
        matches!(r, Err(CallError::Inner(Verdict::Failure))),
        "{r:?}"
    );
}

async fn succeed(fuse: &Supervisor, provider: &str) -> Result<(), CallError<Verdict>> {
    fuse.call(provider, || async { Ok(()) }).await
}

struct Ops {
    handle: OpsHandle,
    client: reqwest::Client,
}

impl Ops {
    async fn start(server: OpsServer) -> Ops {
        let handle = server
            .bind("127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        Ops { handle, client }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.handle.addr())
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    async fn post(&self, path: &str, auth: Option<&str>) -> reqwest::Response {
        let mut request = self.client.post(self.url(path));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send().await.unwrap()
    }
}

#[tokio::test]
async fn health_is_503_while_half_the_circuits_are_open_and_200_after_recovery() {
    let fuse = supervisor(&["health-a", "health-b"]).await;
    let ops = Ops::start(OpsServer::new(fuse.clone())).await;

    let (status, body) = ops.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["healthy"], true);
    assert_eq!(body["summary"], "2/2 circuits healthy");

    fail(&fuse, "health-a").await;
    let (status, body) = ops.get("/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["healthy"], false);
    assert_eq!(body["summary"], "1/2 circuits healthy");
    let circuits = body["circuits"].as_array().unwrap();
    assert_eq!(circuits.len(), 2);
    assert_eq!(circuits[0]["provider"], "health-a");
    assert_eq!(circuits[0]["state"], "open");
    assert_eq!(circuits[0]["healthy"], false);
    assert_eq!(circuits[0]["failure_rate"], 1.0);
    assert_eq!(circuits[1]["state"], "closed");

    // After the open duration a successful trial closes the circuit.
    tokio::time::sleep(OPEN_FOR).await;
    let mut closed = false;
    for _ in 0..20 {
        if succeed(&fuse, "health-a").await.is_ok() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "{:?}", fuse.status()[0]);
    let (status, body) = ops.get("/health").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["circuits"][0]["state"], "closed");
}

#[tokio::test]
async fn status_matches_the_supervisor() {
    let fuse = supervisor(&["status-a", "status-b", "status-c"]).await;
    let ops = Ops::start(OpsServer::new(fuse.clone())).await;
    succeed(&fuse, "status-a").await.unwrap();
    succeed(&fuse, "status-a").await.unwrap();
    fail(&fuse, "status-b").await;
    assert!(succeed(&fuse, "status-b").await.is_err()); // rejected: open

    let (code, body) = ops.get("/status").await;
    assert_eq!(code, StatusCode::OK);
    let served = body.as_array().unwrap();
    let expected = fuse.status();
    assert_eq!(served.len(), expected.len());
    for (json, s) in served.iter().zip(&expected) {
        assert_eq!(json["provider"], s.provider.as_str());
        assert_eq!(json["state"], s.state.as_str());
        for (key, value) in [
            ("generation", s.generation),
            ("total", s.total),
            ("successful", s.successful),
            ("failed", s.failed),
            ("rejected", s.rejected),
            ("rejected_open", s.rejected_open),
            ("in_flight", s.in_flight),
        ] {
            assert_eq!(json[key], value, "{key} of {}", s.provider);
        }
        assert_eq!(json["failure_threshold"], 1);
        assert_eq!(json["open_for_seconds"], OPEN_FOR.as_secs_f64());
        assert_eq!(json["failure_rate"], s.failure_rate);
        // The status object is the ProviderStatus's own serialisation.
        let own = serde_json::to_value(s).unwrap();
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(json), keys(&own), "{json}");
        assert_eq!(json["meta"], serde_json::json!({}));
        assert_eq!(json["alive"], true);
    }
    assert_eq!(served[0]["successful"], 2);
    assert_eq!(served[0]["retry_after_seconds"], Value::Null);
    assert_eq!(served[0]["last_failure_seconds_ago"], Value::Null);
    assert_eq!(served[1]["state"], "open");
    assert_eq!(served[1]["rejected_open"], 1);
    let retry = served[1]["retry_after_seconds"].as_f64().unwrap();
    assert!(retry > 0.0 && retry <= OPEN_FOR.as_secs_f64(), "{retry}");
    let ago = served[1]["last_failure_seconds_ago"].as_f64().unwrap();
    assert!((0.0..2.0).contains(&ago), "{ago}");
    assert_eq!(served[2]["total"], 0);
}

/// Checks the Prometheus text format line by line; returns the samples as
/// `(name, labels, value)`.
fn parse_prometheus(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            if words.first() == Some(&"TYPE") {
                assert_eq!(words.len(), 3, "{line}");
                let kinds = ["counter", "gauge", "histogram", "summary", "untyped"];
                assert!(kinds.contains(&words[2]), "{line}");
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("{line}"));
        let name = &line[..name_end];
        assert!(
            name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        let mut rest = &line[name_end..];
        let mut labels = HashMap::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            loop {
                let (start, c) = chars.next().unwrap_or_else(|| panic!("{line}"));
                if c == '}' {
                    rest = &inner[start + 1..];
                    break;
                }
                let eq = inner[start..]
                    .find("=\"")
                    .unwrap_or_else(|| panic!("{line}"))
                    + start;
                let key = &inner[start..eq];
                assert!(
                    key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{line}"
                );
                while chars.peek().is_some_and(|&(i, _)| i <= eq + 1) {
                    chars.next();
                }
                let mut value = String::new();
                loop {
                    match chars.next().unwrap_or_else(|| panic!("{line}")) {
                        (_, '\\') => match chars.next().unwrap_or_else(|| panic!("{line}")).1 {
                            'n' => value.push('\n'),
                            c @ ('\\' | '"') => value.push(c),
                            c => panic!("bad escape \\{c} in {line}"),
                        },
                        (_, '"') => break,
                        (_, c) => value.push(c),
                    }
                }
                labels.insert(key.to_owned(), value);
                if chars.peek().is_some_and(|&(_, c)| c == ',') {
                    chars.next();
                }
            }
        }
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .unwrap_or_else(|| panic!("no value in {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        if let Some(timestamp) = fields.next() {
            timestamp.parse::<i64>().unwrap();
        }
        assert!(fields.next().is_none(), "{line}");
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_the_right_counts() {
    let fuse = supervisor(&["metrics-a", "metrics-b"]).await;
    let ops = Ops::start(OpsServer::new(fuse.clone()).prometheus(prometheus())).await;
    for _ in 0..3 {
        succeed(&fuse, "metrics-a").await.unwrap();
    }
    fail(&fuse, "metrics-b").await;
    assert!(succeed(&fuse, "metrics-b").await.is_err());

    let response = ops.client.get(ops.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let samples = parse_prometheus(&text);
    let value = |name: &str, pairs: &[(&str, &str)]| {
        samples
            .iter()
            .find(|(n, labels, _)| {
                n == name
                    && pairs
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(v))
            })
            .map(|s| s.2)
            .unwrap_or_else(|| panic!("no {name} {pairs:?} in\n{text}"))
    };
    let calls = "fusebox_calls_total";
    assert_eq!(
        value(calls, &[("provider", "metrics-a"), ("outcome", "success")]),
        3.0
    );
    assert_eq!(
        value(calls, &[("provider", "metrics-a"), ("outcome", "failure")]),
        0.0
    );
    assert_eq!(
        value(calls, &[("provider", "metrics-b"), ("outcome", "failure")]),
        1.0
    );
    let rejected = [("provider", "metrics-b"), ("reason", "open")];
    assert_eq!(value("fusebox_rejections_total", &rejected), 1.0);
    assert_eq!(
        value("fusebox_circuit_state", &[("provider", "metrics-b")]),
        2.0
    );
    let transition = [
        ("provider", "metrics-b"),
        ("from", "closed"),
        ("to", "open"),
    ];
    assert_eq!(value("fusebox_transitions_total", &transition), 1.0);
    // The duration histogram has the LLM buckets.
    let durations = [("provider", "metrics-a"), ("outcome", "success")];
    assert_eq!(
        value("fusebox_call_duration_seconds_count", &durations),
        3.0
    );
    let bucket = [
        ("provider", "metrics-a"),
        ("outcome", "success"),
        ("le", "300"),
    ];
    assert_eq!(value("fusebox_call_duration_seconds_bucket", &bucket), 3.0);
    assert!(
        text.contains("# TYPE fusebox_calls_total counter"),
        "{text}"
    );
}

#[tokio::test]
async fn events_stream_a_circuit_opening_within_a_second() {
    let fuse = supervisor(&["sse-a", "sse-b"]).await;
    let ops = Ops::start(OpsServer::new(fuse.clone())).await;
    let mut stream = reqwest::Client::new()
        .get(ops.url("/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");

    let mut bus = fuse.subscribe();
    fail(&fuse, "sse-a").await;
    let published = bus.recv().await.unwrap();
    let mut buffer = String::new();
    let frame = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            if let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                if frame.starts_with(':') {
                    continue; // keep-alive comment
                }
                return frame;
            }
            let chunk = stream.chunk().await.unwrap().unwrap();
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .expect("no event within 1 s");
    let field = |name: &str| {
        frame
            .lines()
            .find_map(|l| l.strip_prefix(name).map(str::trim_start))
            .unwrap_or_else(|| panic!("no {name} in {frame:?}"))
            .to_owned()
    };
    assert_eq!(field("event:"), "llm.circuit_opened");
    let data: Value = serde_json::from_str(&field("data:")).unwrap();
    assert_eq!(data["provider"], "sse-a");
    assert_eq!(data["name"], "llm.circuit_opened");
    assert_eq!(data["state"], "open");
    assert_eq!(data["cause"], "consecutive_failures");
    assert_eq!(data["failures"], 1);
    assert_eq!(data["generation"], 1);
    assert_eq!(data["retry_after_seconds"], OPEN_FOR.as_secs_f64());
    assert_eq!(
        data["message"],
        "sse-a: circuit opened after 1 consecutive failure; retry after 300ms"
    );
    // The frame is the event's own serialisation, timestamp included.
    assert_eq!(data, serde_json::to_value(&published).unwrap());
    let stamp = data["timestamp"].as_str().unwrap();
    let parsed = humantime::parse_rfc3339(stamp).unwrap();
    let skew = std::time::SystemTime::now()
        .duration_since(parsed)
        .unwrap_or_default();
    assert!(skew < Duration::from_secs(5), "{stamp}");

    // Shutdown ends the stream rather than waiting for it.
    let stopped = tokio::time::timeout(Duration::from_secs(1), ops.handle.shutdown()).await;
    assert!(stopped.is_ok(), "shutdown waited for the event stream");
    let end = tokio::time::timeout(Duration::from_secs(1), stream.chunk())
        .await
        .unwrap();
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}

#[tokio::test]
async fn admin_actions_need_the_token_and_answer_with_the_new_status() {
    let fuse = supervisor(&["admin-a", "admin-b", "admin/c"]).await;
    let ops = Ops::start(OpsServer::new(fuse.clone()).admin_token(TOKEN)).await;
    let isolate = "/providers/admin-a/isolate";

    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer"),
        Some("Basic s3cret"),
        Some(TOKEN),
    ] {
        let response = ops.post(isolate, auth).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }
    assert_eq!(fuse.status()[0].state, CircuitState::Closed);

    let bearer = format!("Bearer {TOKEN}");
    let response = ops.post(isolate, Some(&bearer)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["provider"], "admin-a");
    assert_eq!(body["state"], "isolated");
    assert_eq!(fuse.status()[0].state, CircuitState::Isolated);

    let response = ops.post("/providers/admin-a/reset", Some(&bearer)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["state"], "closed");
    assert_eq!(fuse.status()[0].state, CircuitState::Closed);

    // A name holding a slash, percent-encoded.
    let response = ops
        .post("/providers/admin%2Fc/isolate", Some(&bearer))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(fuse.status()[2].state, CircuitState::Isolated);

    let response = ops.post("/providers/nope/reset", Some(&bearer)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unknown provider `nope`");

    let (code, body) = ops.get(isolate).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body["error"].is_string());

    // An oversized body is refused before the action runs.
    let response = ops
        .client
        .post(ops.url("/providers/admin-b/isolate"))
        .header("authorization", &bearer)
        .body(vec![b'x'; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(fuse.status()[1].state, CircuitState::Closed);
}

#[tokio::test]
async fn without_a_token_or_recorder_those_routes_are_404() {
    let fuse = supervisor(&["plain-a"]).await;
    let ops = Ops::start(OpsServer::new(fuse.clone())).await;
    for auth in [None, Some("Bearer anything")] {
        let response = ops.post("/providers/plain-a/isolate", auth).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string());
    }
    assert_eq!(fuse.status()[0].state, CircuitState::Closed);
    let (code, body) = ops.get("/metrics").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("Prometheus"),
        "{body}"
    );
    let (code, body) = ops.get("/nowhere").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not found");
}

#[tokio::test]
async fn oversized_and_slow_requests_do_not_take_the_server_down() {
    let fuse = supervisor(&["bounds-a"]).await;
    let ops = Ops::start(OpsServer::new(fuse.clone())).await;
    let addr = ops.handle.addr();

    // A slowloris: a request head that never ends. It must not hold up other clients.
    let slow = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
        s
    })
    .await
    .unwrap();

    // 32 KiB of headers: 431, or the connection closed.
    let huge = "x".repeat(32 * 1024);
    match ops
        .client
        .get(ops.url("/health"))
        .header("x-big", &huge)
        .send()
        .await
    {
        Ok(response) => {
            assert_eq!(
                response.status(),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            )
        }
        Err(error) => assert!(!error.is_timeout(), "{error}"),
    }
    // Same over a raw socket: hyper answers 431 and closes.
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut request = b"GET /health HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..100 {
            request.extend_from_slice(format!("x-{i}: {}\r\n", "y".repeat(200)).as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        let _ = s.write_all(&request);
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply
    })
    .await
    .unwrap();
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
        "{reply}"
    );

    let (code, _) = ops.get("/health").await;
    assert_eq!(code, StatusCode::OK);
    drop(slow);
}

/// A `GET` on a connection of its own, answered within a generous bound (only so that a
/// starved server fails the test rather than hanging it).
async fn get_fresh(addr: std::net::SocketAddr, path: &str) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        client.get(format!("http://{addr}{path}")).send(),
    )
    .await
    .unwrap_or_else(|_| panic!("GET {path} got no answer within 10 s: the server is starved"))
    .unwrap()
}

/// The next event frame of an `/events` response, keep-alive comments skipped.
async fn next_frame(stream: &mut reqwest::Response) -> String {
    let mut text = String::new();
    loop {
        if let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            if !frame.starts_with(':') {
                return frame;
            }
            continue;
        }
        let chunk = stream.chunk().await.unwrap().expect("the stream ended");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn event_streams_beyond_their_limit_are_refused_and_never_starve_health() {
    const STREAMS: usize = 4;
    let fuse = supervisor(&["streams-a", "streams-b"]).await;
    fuse.isolate("streams-a").await.unwrap(); // half the circuits down: /health is 503
                                              // A request budget no larger than the stream limit: were the streams to use it up,
                                              // neither /health nor the refusal of one more stream could be served.
    let ops = Ops::start(
        OpsServer::new(fuse.clone())
            .max_connections(STREAMS)
            .max_event_streams(STREAMS),
    )
    .await;
    let addr = ops.handle.addr();

    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let stream = get_fresh(addr, "/events").await;
        assert_eq!(stream.status(), StatusCode::OK);
        assert_eq!(stream.headers()["content-type"], "text/event-stream");
        streams.push(stream);
    }

    // Twice as many again: each one refused, with a reason and a time to retry.
    for _ in 0..2 * STREAMS {
        let refused = get_fresh(addr, "/events").await;
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()["retry-after"], "5");
        assert_eq!(refused.headers()["connection"], "close");
        assert_eq!(refused.headers()["content-type"], "application/json");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(
            body["error"],
            format!("too many event streams open (at most {STREAMS}); retry later")
        );
    }

    // The probes are still answered, and with the truth.
    for _ in 0..2 * STREAMS {
        let health = get_fresh(addr, "/health").await;
        assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: Value = health.json().await.unwrap();
        assert_eq!(body["summary"], "1/2 circuits healthy");
        let status = get_fresh(addr, "/status").await;
        assert_eq!(status.status(), StatusCode::OK);
        let body: Value = status.json().await.unwrap();
        assert_eq!(body[0]["state"], "isolated");
    }

    // The streams held open are live: each carries the next event.
    fuse.reset("streams-a").await.unwrap();
    for stream in &mut streams {
        let frame = tokio::time::timeout(Duration::from_secs(10), next_frame(stream))
            .await
            .expect("no event on a held stream within 10 s");
        assert!(frame.starts_with("event: llm.circuit_closed"), "{frame:?}");
    }
    let (code, _) = ops.get("/health").await;
    assert_eq!(code, StatusCode::OK);

    // A stream whose client leaves frees its place (the server notices when it next writes:
    // events are produced until it does).
    drop(streams.pop());
    let reopened = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            fuse.isolate("streams-b").await.unwrap();
            fuse.reset("streams-b").await.unwrap();
            let response = get_fresh(addr, "/events").await;
            if response.status() == StatusCode::OK {
                return response;
            }
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the place of a closed stream was never freed");
    assert_eq!(reopened.headers()["content-type"], "text/event-stream");
}

#[tokio::test]
async fn liveness_is_200_while_readiness_is_503() {
    let fuse = supervisor(&["live-a"]).await;
    let ops = Ops::start(OpsServer::new(fuse.clone())).await;
    fail(&fuse, "live-a").await;
    let (status, _) = ops.get("/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, body) = ops.get("/health/live").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({ "live": true }));
}

#[tokio::test]
async fn the_status_page_is_one_self_contained_document() {
    let fuse = supervisor(&["page-a"]).await;
    let ops = Ops::start(OpsServer::new(fuse.clone())).await;
    let response = ops.client.get(ops.url("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-store");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let page = response.text().await.unwrap();
    assert!(page.starts_with("<!doctype html>"));
    // Nothing from elsewhere: no external script, style, font or image.
    for needle in ["http://", "https://", "src=", "<link", "@import", "url("] {
        assert!(!page.contains(needle), "the page loads something: {needle}");
    }
    // It reads the server's own routes, relative to itself.
    for route in ["\"status\"", "\"health\"", "\"routes\"", "\"events\""] {
        assert!(page.contains(route), "{route}");
    }
    // Values are inserted as text, never as markup.
    assert!(!page.contains("innerHTML"));
}

#[tokio::test]
async fn routes_show_the_published_order_and_reload_applies_a_toml_body() {
    let _ = prometheus();
    let fuse = Supervisor::builder()
        .metrics_interval(None)
        .provider(Provider::new("routes-a").breaker(Breaker::consecutive(1).open_for(OPEN_FOR)))
        .provider(Provider::new("routes-b"))
        .route(fusebox::Route::new("chat").providers(["routes-a", "routes-b"]))
        .build()
        .await
        .unwrap();
    let ops = Ops::start(OpsServer::new(fuse.clone()).admin_token(TOKEN)).await;
    fail(&fuse, "routes-a").await;
    fuse.resync_routes().await;
    let (status, body) = ops.get("/routes").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0]["route"], "chat");
    assert_eq!(body[0]["policy"], "priority");
    assert_eq!(body[0]["order"][0]["provider"], "routes-a");
    assert_eq!(body[0]["order"][0]["reason"], "open");
    assert_eq!(body[0]["order"][1]["reason"], "healthy");

    let toml = "[[providers]]\nname = \"routes-b\"\n[[routes]]\nname = \"chat\"\nproviders = [\"routes-b\"]\n";
    let post = |auth: Option<&'static str>, body: &'static str| {
        let mut request = ops.client.post(ops.url("/reload")).body(body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    assert_eq!(
        post(None, toml).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let bad = post(Some("Bearer s3cret"), "[[providers]]\nname = 3\n")
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let bad: Value = bad.json().await.unwrap();
    assert!(bad["error"].as_str().unwrap().contains("line 2"), "{bad}");
    assert_eq!(fuse.status().len(), 2, "a bad body changes nothing");
    let ok = post(Some("Bearer s3cret"), toml).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(fuse.status().len(), 1);
    assert_eq!(fuse.route_status("chat").unwrap().providers(), ["routes-b"]);
}
