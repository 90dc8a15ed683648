//! `fusebox::http`: classifying providers' error responses (pure) and reqwest calls against
//! hand-written HTTP/1.1 servers on 127.0.0.1.
#![cfg(feature = "reqwest")]
#![allow(clippy::unwrap_used)]

use std::error::Error as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use fusebox::http::{check, classify_response, read_limited, HttpError, MAX_ERROR_BODY};
use fusebox::{Classify, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use Verdict::{Failure, Ignored, Isolate, Success};

const NO_HEADERS: [(&str, &str); 0] = [];

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn limited(secs: u64) -> Verdict {
    Verdict::RateLimited {
        retry_after: Some(Duration::from_secs(secs)),
    }
}

const LIMITED: Verdict = Verdict::RateLimited { retry_after: None };

fn classify(status: u16, body: &[u8]) -> Verdict {
    classify_response(status, NO_HEADERS, body, now())
}

fn openai(kind: Option<&str>, code: Option<&str>) -> String {
    let field = |v: Option<&str>| v.map_or("null".to_owned(), |v| format!("{v:?}"));
    format!(
        r#"{{"error": {{"message": "boom", "type": {}, "param": null, "code": {}}}}}"#,
        field(kind),
        field(code)
    )
}

fn anthropic(kind: &str) -> String {
    format!(r#"{{"type": "error", "error": {{"type": "{kind}", "message": "boom"}}}}"#)
}

// ---------------------------------------------------------------------------------------
// Pure classification
// ---------------------------------------------------------------------------------------

#[test]
fn status_classes_without_a_body() {
    #[rustfmt::skip]
    let cases = [
        (200, Success), (204, Success), (301, Success), (304, Success), (400, Ignored),
        (401, Isolate), (402, Isolate), (403, Isolate), (404, Ignored), (408, Failure),
        (409, Ignored), (413, Ignored), (422, Ignored), (429, LIMITED), (500, Failure),
        (502, Failure), (503, Failure), (504, Failure), (529, Failure), (599, Failure),
        (600, Failure), (99, Failure), (0, Failure), (u16::MAX, Failure),
    ];
    for (status, expected) in cases {
        for body in [
            &b""[..],
            b"{}",
            b"<html>Bad Gateway</html>",
            b"{\"error\": {}}",
        ] {
            assert_eq!(classify(status, body), expected, "{status} {body:?}");
        }
    }
}

/// Every recognised name, as an OpenAI `code`, an OpenAI `type` and an Anthropic `type`.
#[test]
fn every_error_name_in_both_shapes() {
    let hint = [("retry-after", "12")];
    #[rustfmt::skip]
    let table = [
        ("overloaded_error", Failure), ("api_error", Failure), ("server_error", Failure),
        ("service_unavailable", Failure), ("timeout", Failure),
        ("rate_limit_error", limited(12)), ("rate_limit_exceeded", limited(12)),
        ("requests", limited(12)), ("tokens", limited(12)),
        ("invalid_request_error", Ignored), ("context_length_exceeded", Ignored),
        ("string_above_max_length", Ignored), ("not_found_error", Ignored),
        ("content_filter", Ignored), ("content_policy_violation", Ignored),
        ("request_too_large", Ignored),
        ("authentication_error", Isolate), ("invalid_api_key", Isolate),
        ("permission_error", Isolate), ("billing_error", Isolate),
        ("insufficient_quota", Isolate), ("account_deactivated", Isolate),
    ];
    for (name, expected) in table {
        let bodies = [
            openai(Some("some_new_type"), Some(name)),
            openai(None, Some(name)),
            openai(Some(name), None),
            openai(Some(name), Some("some_new_code")),
            anthropic(name),
        ];
        for body in &bodies {
            // The body wins over any error status...
            for status in [400, 404, 408, 413, 429, 500, 503, 529, 600] {
                let verdict = classify_response(status, hint, body.as_bytes(), now());
                assert_eq!(verdict, expected, "{status} {body}");
            }
            // ...but never over a success.
            assert_eq!(classify(200, body.as_bytes()), Success, "{body}");
        }
        // Isolating statuses too, except for OpenAI's catch-all type alone.
        for status in [401, 402, 403] {
            let verdict = classify_response(status, hint, bodies[0].as_bytes(), now());
            assert_eq!(verdict, expected, "{status} {name}");
            let expected = match name {
                "invalid_request_error" => Isolate,
                _ => expected,
            };
            let verdict = classify_response(status, hint, anthropic(name).as_bytes(), now());
            assert_eq!(verdict, expected, "{status} {name}");
        }
    }
}

#[test]
fn provider_examples() {
    // Anthropic overloaded.
    let body = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    assert_eq!(classify(529, body), Failure);
    // OpenAI: an exhausted quota comes as 429 but is a billing problem.
    let body = br#"{"error": {"message": "You exceeded your current quota, please check your plan and billing details.", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}"#;
    assert_eq!(
        classify_response(429, [("retry-after", "20")], body, now()),
        Isolate
    );
    // OpenAI: a genuine rate limit keeps the headers' hint.
    let body = br#"{"error": {"message": "Rate limit reached for gpt-4o on requests per min (RPM): Limit 500.", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}"#;
    let headers = [
        ("x-ratelimit-remaining-requests", "0"),
        ("retry-after-ms", "1500"),
    ];
    let expected = Verdict::RateLimited {
        retry_after: Some(Duration::from_millis(1500)),
    };
    assert_eq!(classify_response(429, headers, body, now()), expected);
    assert_eq!(classify(429, body), LIMITED);
    // OpenAI: context too long.
    let body = br#"{"error": {"message": "This model's maximum context length is 8192 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}"#;
    assert_eq!(classify(400, body), Ignored);
    // ...even from a gateway answering 500.
    assert_eq!(classify(500, body), Ignored);
    // OpenAI: bad key (401, catch-all type, specific code); no key at all (code null).
    let body = br#"{"error": {"message": "Incorrect API key provided: sk-abc.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}"#;
    assert_eq!(classify(401, body), Isolate);
    let body = br#"{"error": {"message": "You didn't provide an API key.", "type": "invalid_request_error", "param": null, "code": null}}"#;
    assert_eq!(classify(401, body), Isolate);
    assert_eq!(classify(401, b""), Isolate);
    // Anthropic: every documented status with its type.
    #[rustfmt::skip]
    let anthropic_table = [
        (400, "invalid_request_error", Ignored), (401, "authentication_error", Isolate),
        (402, "billing_error", Isolate), (403, "permission_error", Isolate),
        (404, "not_found_error", Ignored), (413, "request_too_large", Ignored),
        (429, "rate_limit_error", LIMITED), (500, "api_error", Failure),
        (504, "timeout", Failure), (529, "overloaded_error", Failure),
    ];
    for (status, kind, expected) in anthropic_table {
        assert_eq!(
            classify(status, anthropic(kind).as_bytes()),
            expected,
            "{kind}"
        );
    }
    // A rate limit reported with another status still takes the hint.
    let body = anthropic("rate_limit_error");
    assert_eq!(
        classify_response(503, [("Retry-After", "9")], body.as_bytes(), now()),
        limited(9)
    );
}

#[test]
fn code_wins_over_type() {
    let cases = [
        (
            openai(Some("invalid_request_error"), Some("insufficient_quota")),
            Isolate,
        ),
        (
            openai(Some("insufficient_quota"), Some("rate_limit_exceeded")),
            LIMITED,
        ),
        (
            openai(Some("server_error"), Some("context_length_exceeded")),
            Ignored,
        ),
        (
            openai(Some("rate_limit_error"), Some("overloaded_error")),
            Failure,
        ),
        // An unknown code leaves the type to decide.
        (
            openai(Some("insufficient_quota"), Some("quota_gone_v2")),
            Isolate,
        ),
        // A code of another type is skipped.
        (
            r#"{"error": {"type": "rate_limit_error", "code": 429}}"#.to_owned(),
            LIMITED,
        ),
        (
            r#"{"error": {"type": "server_error", "code": {"name": "invalid_api_key"}}}"#
                .to_owned(),
            Failure,
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(classify(400, body.as_bytes()), expected, "{body}");
    }
}

#[test]
fn retry_after_forms() {
    let body = anthropic("rate_limit_error");
    let body = body.as_bytes();
    let date = httpdate::fmt_http_date(now() + Duration::from_secs(90));
    let cases: [(&[(&str, &str)], Verdict); 6] = [
        (&[("retry-after", "30")], limited(30)),
        (&[("Retry-After", &date)], limited(90)),
        (
            &[("retry-after-ms", "250"), ("retry-after", "30")],
            Verdict::RateLimited {
                retry_after: Some(Duration::from_millis(250)),
            },
        ),
        (&[("retry-after", "soon")], LIMITED),
        (&[("retry-after", "-1")], LIMITED),
        (&[], LIMITED),
    ];
    for (headers, expected) in cases {
        for body in [body, b""] {
            let verdict = classify_response(429, headers.iter().copied(), body, now());
            assert_eq!(verdict, expected, "{headers:?}");
        }
    }
    let digits = "9".repeat(10 * 1024);
    for name in ["retry-after", "retry-after-ms"] {
        let verdict = classify_response(429, [(name, digits.as_str())], body, now());
        assert_eq!(verdict, LIMITED);
    }
    let binary: [(&str, &[u8]); 1] = [("retry-after", b"\xff\xfe3")];
    assert_eq!(classify_response(429, binary, body, now()), LIMITED);
}

#[test]
fn unusable_bodies_leave_the_status_verdict() {
    let deep_arrays = "[".repeat(100_000);
    let deep_objects = r#"{"error":"#.repeat(100_000);
    let deep_inside = format!(
        r#"{{"error": {{"code": "insufficient_quota", "x": {}1{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"   ".to_vec(),
        b"not json".to_vec(),
        b"{\"error\": {\"type\": \"insufficient_quota\"".to_vec(),
        b"[{\"error\": {\"type\": \"insufficient_quota\"}}]".to_vec(),
        b"42".to_vec(),
        b"\"insufficient_quota\"".to_vec(),
        b"null".to_vec(),
        b"true".to_vec(),
        b"{\"error\": null}".to_vec(),
        b"{\"error\": \"insufficient_quota\"}".to_vec(),
        b"{\"error\": [\"insufficient_quota\"]}".to_vec(),
        b"{\"error\": {\"type\": null, \"code\": null, \"message\": null}}".to_vec(),
        b"{\"error\": {\"type\": 1, \"code\": [\"insufficient_quota\"], \"message\": {}}}".to_vec(),
        b"{\"type\": \"insufficient_quota\", \"code\": \"insufficient_quota\"}".to_vec(),
        b"{\"error\": {\"type\": \"INSUFFICIENT_QUOTA\"}}".to_vec(),
        b"{\"error\": {\"type\": \"\"}}".to_vec(),
        b"{\"error\": {\"code\": \"insufficient_quota\xff\"}}".to_vec(),
        b"\xff\xfe\x00\x01{}".to_vec(),
        b"\x00".to_vec(),
        deep_arrays.into_bytes(),
        deep_objects.into_bytes(),
        deep_inside.into_bytes(),
    ];
    for body in &bodies {
        for (status, expected) in [
            (400, Ignored),
            (401, Isolate),
            (429, LIMITED),
            (503, Failure),
        ] {
            assert_eq!(classify(status, body), expected, "{status}");
        }
        assert_eq!(
            classify_response(429, [("retry-after", "5")], body, now()),
            limited(5)
        );
    }
}

#[test]
fn bodies_are_truncated_to_max_error_body() {
    assert_eq!(MAX_ERROR_BODY, 64 * 1024);
    // A recognised body within the limit, however much follows it, is used.
    let head = r#"{"error": {"code": "insufficient_quota"}}"#;
    let mut body = head.as_bytes().to_vec();
    body.resize(MAX_ERROR_BODY, b' ');
    assert_eq!(classify(429, &body), Isolate);
    body.resize(10 * 1024 * 1024, b' ');
    assert_eq!(classify(429, &body), Isolate);

    // The same object closing one byte beyond the limit is not parsed.
    let padded = |len: usize| {
        let mut body = br#"{"error": {"code": "insufficient_quota"}, "pad": ""#.to_vec();
        body.resize(len - 2, b'a');
        body.extend_from_slice(b"\"}");
        assert_eq!(body.len(), len);
        body
    };
    assert_eq!(classify(429, &padded(MAX_ERROR_BODY)), Isolate);
    assert_eq!(classify(429, &padded(MAX_ERROR_BODY + 1)), LIMITED);

    // 10 MB: a valid JSON document (with a message far too long) and garbage.
    let mut huge = br#"{"error": {"type": "insufficient_quota", "message": ""#.to_vec();
    huge.resize(10 * 1024 * 1024, b'a');
    huge.extend_from_slice(b"\"}}");
    assert_eq!(classify(429, &huge), LIMITED);
    assert_eq!(classify(500, &huge), Failure);
    let garbage: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    assert_eq!(classify(429, &garbage), LIMITED);
    assert_eq!(classify(400, &garbage), Ignored);
}

/// Caller faults, caught before any I/O.
#[tokio::test]
async fn reqwest_builder_errors_are_ignored() {
    let client = client();
    for url in ["not a url", "ftp://127.0.0.1/", "http://"] {
        let error = client.get(url).send().await.unwrap_err();
        assert!(error.is_builder(), "{url}: {error:?}");
        assert_eq!(error.verdict(), Ignored, "{url}");
        assert_eq!(HttpError::from(error).verdict(), Ignored);
    }
    // A body that does not serialise (JSON map keys must be strings).
    let body = std::collections::HashMap::from([((1, 2), 3)]);
    let error = client
        .post("http://127.0.0.1:9/")
        .json(&body)
        .send()
        .await
        .unwrap_err();
    assert!(error.is_builder(), "{error:?}");
    assert_eq!(error.verdict(), Ignored);
}

// ---------------------------------------------------------------------------------------
// Hand-written HTTP/1.1 servers on 127.0.0.1
// ---------------------------------------------------------------------------------------

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A raw HTTP/1.1 response with `content-length` and `connection: close`.
fn response(status_line: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status_line}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// Reads a request up to the end of its head (these tests only send GETs).
async fn read_head(socket: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    (listener, format!("http://{addr}/v1/messages"))
}

/// Answers every connection with `raw`, then closes it.
async fn serve(raw: Vec<u8>) -> String {
    let (listener, url) = bind().await;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let raw = raw.clone();
            tokio::spawn(async move {
                read_head(&mut socket).await;
                let _ = socket.write_all(&raw).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

async fn check_status(raw: Vec<u8>) -> HttpError {
    let url = serve(raw).await;
    let resp = client().get(&url).send().await.unwrap();
    check(resp).await.unwrap_err()
}

#[tokio::test]
async fn check_passes_success_through() {
    let url = serve(response("200 OK", &[], b"{\"ok\": true}")).await;
    let resp = check(client().get(&url).send().await.unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "{\"ok\": true}");

    let url = serve(response("204 No Content", &[], b"")).await;
    assert!(check(client().get(&url).send().await.unwrap())
        .await
        .is_ok());
}

#[tokio::test]
async fn check_rate_limit_with_retry_after() {
    let body = br#"{"error": {"message": "Rate limit reached for requests", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}"#;
    let raw = response("429 Too Many Requests", &[("retry-after", "30")], body);
    let error = check_status(raw).await;
    let HttpError::Status {
        status,
        verdict,
        ref message,
        retry_after,
        ..
    } = error
    else {
        panic!("{error:?}");
    };
    assert_eq!(status, 429);
    assert_eq!(verdict, limited(30));
    assert_eq!(error.verdict(), limited(30));
    assert_eq!(message.as_deref(), Some("Rate limit reached for requests"));
    assert_eq!(retry_after, Some(Duration::from_secs(30)));
    assert_eq!(
        error.to_string(),
        "HTTP 429 Too Many Requests: Rate limit reached for requests"
    );
    assert!(error.source().is_none());
}

#[tokio::test]
async fn check_statuses_and_bodies() {
    let quota = br#"{"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}"#;
    let overloaded =
        br#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#;
    let context = br#"{"error": {"message": "maximum context length is 8192 tokens", "type": "invalid_request_error", "code": "context_length_exceeded"}}"#;
    let auth = br#"{"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}"#;
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    /// A raw response, its verdict, its message and its hint in whole seconds.
    type Case<'a> = (Vec<u8>, Verdict, Option<&'a str>, Option<u64>);
    let cases: Vec<Case<'_>> = vec![
        (
            response("429 Too Many Requests", &[("retry-after", "20")], quota),
            Isolate,
            Some("You exceeded your current quota"),
            Some(20),
        ),
        (
            response("529 Overloaded", &[], overloaded),
            Failure,
            Some("Overloaded"),
            None,
        ),
        (
            response(
                "503 Service Unavailable",
                &[("Retry-After", "7")],
                b"upstream down",
            ),
            Failure,
            None,
            Some(7),
        ),
        (
            response("400 Bad Request", &[], context),
            Ignored,
            Some("maximum context length is 8192 tokens"),
            None,
        ),
        (
            response("401 Unauthorized", &[], auth),
            Isolate,
            Some("invalid x-api-key"),
            None,
        ),
        (response("404 Not Found", &[], b""), Ignored, None, None),
        (
            response("429 Too Many Requests", &[("retry-after-ms", "1500")], b""),
            Verdict::RateLimited {
                retry_after: Some(Duration::from_millis(1500)),
            },
            None,
            Some(1),
        ),
    ];
    for (raw, expected, expected_message, hint_secs) in cases {
        let error = check_status(raw).await;
        assert_eq!(error.verdict(), expected, "{error}");
        let HttpError::Status {
            message,
            retry_after,
            ..
        } = &error
        else {
            panic!("{error:?}");
        };
        assert_eq!(message.as_deref(), expected_message, "{error}");
        // Whole seconds (an HTTP date loses sub-second precision).
        assert_eq!(retry_after.map(|d| d.as_secs()), hint_secs, "{error}");
    }

    // An HTTP-date hint, relative to the real clock.
    let raw = response("429 Too Many Requests", &[("retry-after", &date)], b"");
    let hint = check_status(raw).await.verdict().retry_after().unwrap();
    assert!(hint > Duration::from_secs(100) && hint <= Duration::from_secs(120));

    // Messages are cut to 500 characters.
    let long = format!(r#"{{"error": {{"message": "{}"}}}}"#, "é".repeat(5_000));
    let error = check_status(response("500 Internal Server Error", &[], long.as_bytes())).await;
    let HttpError::Status { message, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(message.as_ref().map(|m| m.chars().count()), Some(500));
    assert_eq!(error.verdict(), Failure);
}

#[tokio::test]
async fn check_reads_at_most_max_error_body() {
    // 10 MB of JSON whose recognised part fits in the limit: parsed from the first 64 KiB.
    let mut body = br#"{"error": {"code": "insufficient_quota"}}"#.to_vec();
    body.resize(10 * 1024 * 1024, b' ');
    let error = check_status(response("429 Too Many Requests", &[], &body)).await;
    assert_eq!(error.verdict(), Isolate);
    // 10 MB of garbage: the status verdict.
    let error = check_status(response("502 Bad Gateway", &[], &vec![0xff; 10 << 20])).await;
    assert_eq!(error.verdict(), Failure);
}

/// Streams a 10 MB body in 16 KiB writes; returns how many body bytes were written before
/// the client went away.
async fn streaming_server(status_line: &str) -> (String, JoinHandle<usize>) {
    const TOTAL: usize = 10 * 1024 * 1024;
    let (listener, url) = bind().await;
    let head = format!("HTTP/1.1 {status_line}\r\ncontent-length: {TOTAL}\r\n\r\n");
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        read_head(&mut socket).await;
        socket.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'x'; 16 * 1024];
        let mut written = 0;
        while written < TOTAL {
            match socket.write(&chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n,
            }
        }
        written
    });
    (url, server)
}

#[tokio::test]
async fn read_limited_stops_at_the_limit() {
    let (url, server) = streaming_server("200 OK").await;
    let resp = client().get(&url).send().await.unwrap();
    let body = read_limited(resp, 100_000).await.unwrap();
    assert_eq!(body.len(), 100_000);
    assert!(body.iter().all(|&b| b == b'x'));
    // The response is dropped: the connection closes and the server cannot finish.
    let written = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    assert!(written < 10 * 1024 * 1024, "the whole body was sent");

    // A limit beyond the body returns all of it; a zero limit nothing.
    let url = serve(response("200 OK", &[], b"hello")).await;
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(read_limited(resp, 1 << 20).await.unwrap(), b"hello");
    let resp = client().get(&url).send().await.unwrap();
    assert!(read_limited(resp, 0).await.unwrap().is_empty());
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(read_limited(resp, 3).await.unwrap(), b"hel");
}

#[tokio::test]
async fn check_stops_reading_a_huge_error_body() {
    let (url, server) = streaming_server("500 Internal Server Error").await;
    let resp = client().get(&url).send().await.unwrap();
    let error = check(resp).await.unwrap_err();
    assert_eq!(error.verdict(), Failure);
    let written = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    assert!(written < 10 * 1024 * 1024, "the whole body was sent");
}

#[tokio::test]
async fn connection_refused_is_a_transport_failure() {
    let (listener, url) = bind().await;
    drop(listener);
    let error: HttpError = client().get(&url).send().await.unwrap_err().into();
    let HttpError::Transport(inner) = &error else {
        panic!("{error:?}");
    };
    assert!(inner.is_connect(), "{inner:?}");
    assert_eq!(inner.verdict(), Failure);
    assert_eq!(error.verdict(), Failure);
    // Display is the reqwest error's; the source chain goes on from its cause, so the
    // reqwest error is not shown twice.
    assert_eq!(error.to_string(), inner.to_string());
    let source = error.source().unwrap();
    assert!(source.downcast_ref::<reqwest::Error>().is_none());
    assert_eq!(source.to_string(), inner.source().unwrap().to_string());
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let (listener, url) = bind().await;
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        read_head(&mut socket).await;
        // Hold the connection open without answering.
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(socket);
    });
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let started = Instant::now();
    let error = client.get(&url).send().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(error.verdict(), Failure);
    assert_eq!(HttpError::from(error).verdict(), Failure);
    server.abort();
}

#[tokio::test]
async fn a_connection_closed_mid_body_is_a_failure() {
    // The head promises 1000 bytes; 10 arrive before the server closes.
    let truncated = |status_line: &str, headers: &str| {
        format!("HTTP/1.1 {status_line}\r\n{headers}content-length: 1000\r\n\r\n{{\"error\": ")
            .into_bytes()
    };
    let url = serve(truncated("200 OK", "")).await;
    let resp = check(client().get(&url).send().await.unwrap())
        .await
        .unwrap();
    let error: HttpError = resp.text().await.unwrap_err().into();
    assert!(matches!(error, HttpError::Transport(_)), "{error:?}");
    assert_eq!(error.verdict(), Failure);

    let resp = client().get(&url).send().await.unwrap();
    let error = read_limited(resp, 1 << 20).await.unwrap_err();
    assert_eq!(error.verdict(), Failure);

    // An error body cut short still yields the status verdict and hint.
    let url = serve(truncated("429 Too Many Requests", "retry-after: 3\r\n")).await;
    let error = check(client().get(&url).send().await.unwrap())
        .await
        .unwrap_err();
    assert_eq!(error.verdict(), limited(3));
    let url = serve(truncated("503 Service Unavailable", "")).await;
    let error = check(client().get(&url).send().await.unwrap())
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        HttpError::Status {
            status: 503,
            message: None,
            ..
        }
    ));
    assert_eq!(error.verdict(), Failure);
}

#[tokio::test]
async fn error_for_status_is_classified_by_status() {
    #[rustfmt::skip]
    let cases = [
        ("429 Too Many Requests", LIMITED), ("401 Unauthorized", Isolate),
        ("403 Forbidden", Isolate), ("404 Not Found", Ignored), ("408 Request Timeout", Failure),
        ("500 Internal Server Error", Failure), ("529 Overloaded", Failure),
    ];
    for (status_line, expected) in cases {
        let url = serve(response(status_line, &[("retry-after", "30")], b"{}")).await;
        let resp = client().get(&url).send().await.unwrap();
        let error = resp.error_for_status().unwrap_err();
        assert!(error.status().is_some());
        assert_eq!(error.verdict(), expected, "{status_line}");
        assert_eq!(HttpError::from(error).verdict(), expected, "{status_line}");
    }
}
