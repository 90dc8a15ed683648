//! A mock provider announcing a small quota in its rate-limit headers: 3 requests and 100
//! tokens an hour, each request taking one request (shared by the HTTP integrations' tests).

use std::time::Duration;

use fusebox::testing::{FaultScript, MockLlm, Quota};

/// Starts a healthy mock on 127.0.0.1 whose responses carry a draining 3-request quota.
pub(crate) async fn three_request_mock() -> MockLlm {
    MockLlm::builder()
        .quota(
            Quota::requests(3)
                .tokens(100)
                .window(Duration::from_secs(3600)),
        )
        .script(FaultScript::new())
        .start()
        .await
        .expect("mock provider on 127.0.0.1")
}
