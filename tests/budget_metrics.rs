//! Budget rejections, retries and retry-budget exhaustion as metrics, on a local recorder.
//!
//! One test only: the recorder is process-global.
#![allow(clippy::unwrap_used)]

mod support;

use fusebox::{metrics, Breaker, Budget, CallError, Provider, Retry, Supervisor};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use support::{ms, FakeProvider, Step};

#[tokio::test(start_paused = true)]
async fn rejections_retries_and_exhaustion_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let retry = Retry::new().backoff(ms(10), ms(100)).jitter(0.0);
    let fuse = Supervisor::builder()
        .provider(Provider::new("budgeted").budget(Budget::per_minute().requests(1)))
        // A floor of 1 a second over the 10 s window: 10 retries.
        .provider(
            Provider::new("retrying")
                .breaker(Breaker::consecutive(1_000))
                .retry(retry.budget(0.0, 1)),
        )
        .metrics_interval(None)
        .build()
        .await
        .unwrap();
    let fake = FakeProvider::new(Step::Ok);
    support::call(&fuse, "budgeted", &fake).await.unwrap();
    for _ in 0..2 {
        assert!(matches!(
            support::call(&fuse, "budgeted", &fake).await,
            Err(CallError::OverBudget { .. })
        ));
    }
    let down = FakeProvider::new(Step::Fail);
    for _ in 0..8 {
        let _ = fuse.call_retrying("retrying", || down.respond()).await;
    }
    // 8 calls of 3 attempts want up to 16 retries; the budget has 10: five calls take two,
    // the last three are refused their first (and so ask once).
    assert_eq!(down.calls(), 8 + 10);
    fuse.publish_metrics();

    // One snapshot: the debugging recorder hands each counter's value out once.
    let snapshot = snapshotter.snapshot().into_vec();
    let found = |name: &str, labels: &[(&str, &str)]| {
        snapshot
            .iter()
            .find(|(key, _, _, _)| {
                let key = key.key();
                key.name() == name
                    && labels
                        .iter()
                        .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
            })
            .map(|(_, _, _, value)| value)
    };
    assert_eq!(
        found(
            metrics::REJECTIONS,
            &[("provider", "budgeted"), ("reason", "over_budget")]
        ),
        Some(&DebugValue::Counter(2))
    );
    assert_eq!(
        found(metrics::RETRIES, &[("provider", "retrying")]),
        Some(&DebugValue::Counter(10))
    );
    assert_eq!(
        found(metrics::RETRY_BUDGET_EXHAUSTED, &[("provider", "retrying")]),
        Some(&DebugValue::Counter(3))
    );
    let status = fuse.provider("retrying").unwrap().status();
    assert_eq!((status.retries, status.retry_budget_exhausted), (10, 3));
}
