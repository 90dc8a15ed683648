//! After a scripted scenario, a local recorder holds exactly the expected metrics.
//!
//! One test only: the recorder is process-global.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;

use fusebox::metrics;
use fusebox::{Breaker, Bulkhead, Provider, ProviderId, Route, Supervisor};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use support::{secs, settle, FakeProvider, Step};

type Labels = Vec<(String, String)>;

fn snapshot(
    snapshotter: &metrics_util::debugging::Snapshotter,
) -> HashMap<(String, Labels), DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            ((key.name().to_owned(), labels), value)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut labels: Labels = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    labels
}

#[tokio::test(start_paused = true)]
async fn a_scripted_scenario_leaves_exact_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let fuse = Supervisor::builder()
        .provider(
            Provider::new("primary")
                .breaker(Breaker::consecutive(2).jitter(0.0))
                .bulkhead(Bulkhead::new(1)),
        )
        .provider(Provider::new("secondary").record_durations(false))
        .route(Route::new("chat").providers(["primary", "secondary"]))
        .metrics_interval(None)
        .build()
        .await
        .unwrap();

    let primary = FakeProvider::scripted(
        [Step::Ok, Step::BadRequest, Step::Fail, Step::Fail],
        Step::Ok,
    );
    let secondary = FakeProvider::new(Step::Ok);
    // primary: one success, one ignored, two failures (the circuit opens), one rejection.
    for _ in 0..5 {
        let _ = support::call(&fuse, "primary", &primary).await;
    }
    // Routed: the open primary is skipped, the secondary serves (a fallback).
    let routed = fuse
        .route("chat", |p: ProviderId| {
            let fake = if p == "primary" { &primary } else { &secondary };
            fake.respond()
        })
        .await
        .unwrap();
    assert_eq!(routed.provider, "secondary");
    settle().await;
    fuse.publish_metrics();

    let m = snapshot(&snapshotter);
    let get = |name: &str, pairs: &[(&str, &str)]| {
        m.get(&(name.to_owned(), labels(pairs)))
            .unwrap_or_else(|| panic!("missing {name} {pairs:?}"))
    };
    let calls = |provider, outcome| {
        get(
            metrics::CALLS,
            &[("provider", provider), ("outcome", outcome)],
        )
    };
    assert_eq!(calls("primary", "success"), &DebugValue::Counter(1));
    assert_eq!(calls("primary", "ignored"), &DebugValue::Counter(1));
    assert_eq!(calls("primary", "failure"), &DebugValue::Counter(2));
    assert_eq!(calls("primary", "timeout"), &DebugValue::Counter(0));
    assert_eq!(calls("primary", "cancelled"), &DebugValue::Counter(0));
    assert_eq!(calls("secondary", "success"), &DebugValue::Counter(1));
    let rejections = |reason| {
        get(
            metrics::REJECTIONS,
            &[("provider", "primary"), ("reason", reason)],
        )
    };
    assert_eq!(
        rejections("open"),
        &DebugValue::Counter(2),
        "one direct call, one routed skip"
    );
    assert_eq!(rejections("bulkhead_full"), &DebugValue::Counter(0));

    let gauge = |name, provider| get(name, &[("provider", provider)]);
    assert_eq!(
        gauge(metrics::CIRCUIT_STATE, "primary"),
        &DebugValue::Gauge(2.0.into())
    );
    assert_eq!(
        gauge(metrics::CIRCUIT_STATE, "secondary"),
        &DebugValue::Gauge(0.0.into())
    );
    assert_eq!(
        gauge(metrics::IN_FLIGHT, "primary"),
        &DebugValue::Gauge(0.0.into())
    );
    assert_eq!(
        gauge(metrics::QUEUE_DEPTH, "primary"),
        &DebugValue::Gauge(0.0.into())
    );
    assert_eq!(
        gauge(metrics::FAILURE_THRESHOLD, "primary"),
        &DebugValue::Gauge(2.0.into())
    );

    assert_eq!(
        get(
            metrics::TRANSITIONS,
            &[("provider", "primary"), ("from", "closed"), ("to", "open")]
        ),
        &DebugValue::Counter(1)
    );
    // Durations: four primary calls were timed (the rejected one never ran); the
    // secondary (`record_durations(false)`) records none, routed or direct: every call shape
    // goes through one attempt path.
    let durations = |provider, outcome| match get(
        metrics::CALL_DURATION,
        &[("provider", provider), ("outcome", outcome)],
    ) {
        DebugValue::Histogram(samples) => samples.len(),
        other => panic!("not a histogram: {other:?}"),
    };
    assert_eq!(
        durations("primary", "success"),
        2,
        "one success plus the ignored call"
    );
    assert_eq!(durations("primary", "failure"), 2);
    assert_eq!(durations("secondary", "success"), 0);

    let attempts = |provider, result| {
        get(
            metrics::ROUTE_ATTEMPTS,
            &[
                ("route", "chat"),
                ("provider", provider),
                ("result", result),
            ],
        )
    };
    assert_eq!(attempts("primary", "skipped_open"), &DebugValue::Counter(1));
    assert_eq!(attempts("secondary", "success"), &DebugValue::Counter(1));
    assert_eq!(
        get(
            metrics::ROUTE_FALLBACKS,
            &[("route", "chat"), ("from", "primary"), ("to", "secondary")]
        ),
        &DebugValue::Counter(1)
    );

    // Only documented names are emitted.
    for (name, _) in m.keys() {
        assert!(
            metrics::ALL.contains(&name.as_str()),
            "undocumented metric {name}"
        );
    }

    // Publishing again after recovery moves the gauges.
    tokio::time::advance(secs(60)).await;
    support::call(&fuse, "primary", &primary).await.unwrap();
    fuse.publish_metrics();
    let m = snapshot(&snapshotter);
    assert_eq!(
        m[&(
            metrics::CIRCUIT_STATE.to_owned(),
            labels(&[("provider", "primary")])
        )],
        DebugValue::Gauge(0.0.into())
    );
}
