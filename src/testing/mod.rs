//! A fault-injecting mock LLM provider, to chaos-test agents (feature `mock-server`).
//!
//! [`MockLlm`] is an HTTP server on `127.0.0.1` speaking two APIs:
//!
//! - OpenAI chat completions, `POST /v1/chat/completions` (`model`, `messages`, `stream`);
//! - Anthropic messages, `POST /v1/messages` (`model`, `max_tokens`, `messages`, `stream`).
//!
//! Both answer with the text `mock reply <n>`, where `n` is the request's number (0-based, in
//! arrival order), as one JSON body or, with `"stream": true`, as server-sent events in the
//! API's format, cut into [`chunks`](MockLlmBuilder::chunks) pieces. A malformed request gets
//! a 400 with an `invalid_request_error` body; other paths get a 404.
//!
//! A [`FaultScript`] says which requests fail and how: error statuses with the provider's
//! error body, 429 with `retry-after`, slow answers, hung requests, connections reset without
//! a response, streams cut after some chunks, error events after a 200 (Anthropic's
//! `overloaded_error`...: [`FaultKind::StreamError`]), flapping. Scripts are built in code or
//! read from TOML, and can be replaced while the server runs
//! ([`set_script`](MockLlm::set_script)). The counters ([`MockLlm::stats`]) are exact, so a
//! test can prove how many calls reached a failing provider.
//!
//! A [`Quota`] ([`MockLlmBuilder::quota`], [`MockLlm::set_quota`]) drains per request, resets
//! on a fixed schedule, shows in both vendors' rate-limit headers on every response
//! (`x-ratelimit-*`, `anthropic-ratelimit-*`) and, once spent, answers 429 until the window
//! resets. Streams can be made to look like the real APIs' around their content:
//! [`first_token_latency`](MockLlmBuilder::first_token_latency) (a pause after the opening
//! events) and [`framing_events`](MockLlmBuilder::framing_events) (OpenAI's role-only first
//! delta, Anthropic's `ping`); OpenAI streams end with a usage chunk when the request asks
//! (`"stream_options": {"include_usage": true}`).
//!
//! # Example
//!
//! ```
//! use fusebox::testing::{FaultKind, FaultScript, MockLlm, When};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The second request fails with 503; the others are answered.
//! let script =
//!     FaultScript::new().fault(When::Requests { from: 1, until: 2 }, FaultKind::Status(503));
//! let mock = MockLlm::start(script).await?;
//!
//! let post = |body: &str| {
//!     format!(
//!         "POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\n\
//!          content-length: {}\r\nconnection: close\r\n\r\n{body}",
//!         body.len()
//!     )
//! };
//! let body = r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}"#;
//! for expected in ["200 OK", "503 Service Unavailable"] {
//!     let mut tcp = tokio::net::TcpStream::connect(mock.addr()).await?;
//!     tcp.write_all(post(body).as_bytes()).await?;
//!     let mut reply = String::new();
//!     tcp.read_to_string(&mut reply).await?;
//!     assert!(reply.starts_with(&format!("HTTP/1.1 {expected}")), "{reply}");
//!     if expected == "200 OK" {
//!         assert!(reply.contains(r#""content":"mock reply 0""#));
//!     }
//! }
//! assert_eq!(mock.requests(), 2);
//! assert_eq!(mock.stats().errors_with(503), 1);
//! mock.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! The same script in TOML (durations as [humantime](https://docs.rs/humantime) strings):
//!
//! ```
//! # use fusebox::testing::{FaultKind, FaultScript, When};
//! let script = FaultScript::from_toml_str(r#"
//!     [[faults]]
//!     when = { requests = [1, 2] }
//!     kind = { status = 503 }
//!
//!     [[faults]]
//!     when = { between = ["10s", "40s"] }
//!     kind = { rate_limited = "30s" }
//! "#)?;
//! assert_eq!(script.faults[0].kind, FaultKind::Status(503));
//! assert_eq!(script.faults[1].when, When::Between {
//!     from: std::time::Duration::from_secs(10),
//!     until: std::time::Duration::from_secs(40),
//! });
//! # Ok::<(), fusebox::testing::ScriptError>(())
//! ```

mod conn;
mod handler;
mod quota;
mod script;
mod server;
mod shapes;

pub use quota::Quota;
pub use script::{Fault, FaultKind, FaultScript, ScriptError, StreamFault, When};
pub use server::{MockLlm, MockLlmBuilder, MockStats};
