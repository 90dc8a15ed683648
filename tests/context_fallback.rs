//! Fallback by error class: a context window exceeded goes to a larger window, a content
//! policy refusal to the route's `on_content_policy` route. Real OpenAI and Anthropic error
//! bodies, served over loopback and classified by `fusebox::http::check`.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fusebox::http::{self, HttpError};
use fusebox::{
    AttemptOutcome, Classify, ErrorClass, Provider, ProviderId, Route, RouteError, Supervisor,
    Verdict,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const OPENAI_CONTEXT: &str = r#"{"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}"#;
const ANTHROPIC_CONTEXT: &str = r#"{"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"}}"#;
const OPENAI_POLICY: &str = r#"{"error": {"message": "Your request was rejected as a result of our safety system.", "type": "invalid_request_error", "param": null, "code": "content_policy_violation"}}"#;
const OK: &str = r#"{"choices": [{"message": {"content": "hi"}}]}"#;

/// A loopback HTTP server answering every request with `status` and `body`; counts them.
async fn serve(status: u16, body: &'static str) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/v1/chat/completions",
        listener.local_addr().unwrap()
    );
    let hits = Arc::new(AtomicU64::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

async fn post(client: &reqwest::Client, url: &str) -> Result<String, HttpError> {
    let response = client.post(url).body("{}").send().await?;
    let response = http::check(response).await?;
    Ok(response.text().await?)
}

struct Servers {
    urls: HashMap<&'static str, (String, Arc<AtomicU64>)>,
    client: reqwest::Client,
}

impl Servers {
    async fn new(servers: &[(&'static str, u16, &'static str)]) -> Self {
        let mut urls = HashMap::new();
        for &(name, status, body) in servers {
            urls.insert(name, serve(status, body).await);
        }
        Servers {
            urls,
            client: reqwest::Client::new(),
        }
    }

    fn hits(&self, name: &str) -> u64 {
        self.urls[name].1.load(Ordering::SeqCst)
    }

    async fn route(
        &self,
        fuse: &Supervisor,
        route: &str,
    ) -> Result<fusebox::Routed<String>, RouteError<HttpError>> {
        fuse.route(route, |p: ProviderId| {
            let url = self.urls[p.as_str()].0.clone();
            let client = self.client.clone();
            async move { post(&client, &url).await }
        })
        .await
    }
}

fn trace(attempts: &[fusebox::Attempt]) -> Vec<(&str, AttemptOutcome)> {
    attempts
        .iter()
        .map(|a| (a.provider.as_str(), a.outcome.clone()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_context_window_exceeded_is_served_by_a_larger_window_skipping_smaller_ones() {
    let servers = Servers::new(&[
        ("gpt-8k", 400, OPENAI_CONTEXT),
        ("gpt-4k", 200, OK),
        ("gpt-128k", 200, OK),
    ])
    .await;
    let fuse = Supervisor::builder()
        .provider(Provider::new("gpt-8k").max_context(8_192))
        .provider(Provider::new("gpt-4k").max_context(4_096))
        // The window from metadata works too.
        .provider(Provider::new("gpt-128k").meta("max_context", "128000"))
        .route(Route::new("chat").providers(["gpt-8k", "gpt-4k", "gpt-128k"]))
        .build()
        .await
        .unwrap();
    let routed = servers.route(&fuse, "chat").await.unwrap();
    assert_eq!(routed.provider, "gpt-128k");
    assert_eq!(
        trace(&routed.attempts),
        [
            ("gpt-8k", AttemptOutcome::Failed(Verdict::Ignored)),
            ("gpt-128k", AttemptOutcome::Succeeded),
        ]
    );
    assert_eq!(servers.hits("gpt-4k"), 0, "the smaller window was skipped");
    // Neither circuit counts a failure.
    for name in ["gpt-8k", "gpt-128k"] {
        let status = fuse.provider(name).unwrap().status();
        assert_eq!(status.failed, 0, "{name}");
        assert_eq!(status.consecutive_failures, 0, "{name}");
    }
    assert_eq!(fuse.provider("gpt-8k").unwrap().status().ignored, 1);
}

#[tokio::test(start_paused = true)]
async fn anthropic_prompt_too_long_with_no_larger_window_ends_the_call() {
    let servers = Servers::new(&[("claude", 400, ANTHROPIC_CONTEXT), ("small", 200, OK)]).await;
    let fuse = Supervisor::builder()
        .provider(Provider::new("claude").max_context(200_000))
        .provider(Provider::new("small").max_context(32_000))
        .route(Route::new("chat").providers(["claude", "small"]))
        .build()
        .await
        .unwrap();
    let err = servers.route(&fuse, "chat").await.unwrap_err();
    let attempts = err.attempts().len();
    match err {
        RouteError::NotRetryable { error, .. } => {
            assert_eq!(error.error_class(), ErrorClass::ContextWindow);
            assert_eq!(error.verdict(), Verdict::Ignored);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(attempts, 1);
    assert_eq!(servers.hits("small"), 0);
}

#[tokio::test(start_paused = true)]
async fn other_caller_faults_still_end_the_route() {
    let bad = r#"{"error": {"message": "Unrecognized request argument", "type": "invalid_request_error", "code": null}}"#;
    let servers = Servers::new(&[("a", 400, bad), ("b", 200, OK)]).await;
    let fuse = Supervisor::builder()
        .provider(Provider::new("a").max_context(8_000))
        .provider(Provider::new("b").max_context(128_000))
        .route(
            Route::new("chat")
                .providers(["a", "b"])
                .on_content_policy("chat2"),
        )
        .route(Route::new("chat2").providers(["b"]))
        .build()
        .await
        .unwrap();
    let err = servers.route(&fuse, "chat").await.unwrap_err();
    assert!(matches!(err, RouteError::NotRetryable { .. }), "{err:?}");
    assert_eq!(servers.hits("b"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_content_policy_refusal_goes_to_the_routes_fallback_route() {
    let servers = Servers::new(&[("strict", 400, OPENAI_POLICY), ("lenient", 200, OK)]).await;
    let fuse = Supervisor::builder()
        .provider(Provider::new("strict"))
        .provider(Provider::new("lenient"))
        .route(
            Route::new("chat")
                .providers(["strict"])
                .on_content_policy("moderated"),
        )
        .route(Route::new("moderated").providers(["lenient"]))
        .route(Route::new("plain").providers(["strict"]))
        .build()
        .await
        .unwrap();
    let routed = servers.route(&fuse, "chat").await.unwrap();
    assert_eq!(routed.provider, "lenient");
    assert_eq!(
        trace(&routed.attempts),
        [
            ("strict", AttemptOutcome::Failed(Verdict::Ignored)),
            ("lenient", AttemptOutcome::Succeeded),
        ]
    );
    assert_eq!(fuse.provider("strict").unwrap().status().failed, 0);

    // Without a fallback route the refusal ends the call.
    let err = servers.route(&fuse, "plain").await.unwrap_err();
    match err {
        RouteError::NotRetryable { error, .. } => {
            assert_eq!(error.error_class(), ErrorClass::ContentPolicy)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_fallback_route_must_exist() {
    let err = Supervisor::builder()
        .provider(Provider::new("a"))
        .route(
            Route::new("chat")
                .providers(["a"])
                .on_content_policy("nowhere"),
        )
        .build()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("on_content_policy") && text.contains("nowhere"),
        "{text}"
    );
    let config = fusebox::Config::from_toml_str(
        "[[providers]]\nname = \"a\"\nmax_context = 8192\n\n[[routes]]\nname = \"r\"\nproviders = [\"a\"]\non_content_policy = \"s\"\n\n[[routes]]\nname = \"s\"\nproviders = [\"a\"]\n",
    )
    .unwrap();
    assert_eq!(config.routes[0].on_content_policy_config(), Some("s"));
    assert_eq!(config.providers[0].max_context_config(), Some(8_192));
}
