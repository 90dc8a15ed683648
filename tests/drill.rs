//! The outage drill's default scenario at a small scale, over real HTTP on loopback.
//!
//! Real time (loopback sockets cannot run under paused tokio time): the scenario is scaled to
//! about six seconds.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

#[path = "../examples/outage_drill/engine.rs"]
mod engine;
#[path = "../examples/outage_drill/scenario.rs"]
mod scenario;

use fusebox::{EventKind, Verdict};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_incident_at_small_scale() {
    let mut scenario = scenario::Scenario::default_drill().scaled(0.2);
    scenario.agents = 8;
    let fuse = engine::supervisor_builder(&scenario).build().await.unwrap();
    let mocks = engine::start_mocks(&scenario).await.unwrap();
    let primary_mock = mocks[0].clone();
    let report = engine::run_fusebox(&scenario, fuse.clone(), mocks, |_| {}).await;

    // Every request was served, by one provider or another.
    assert!(report.served > 100, "served only {}", report.served);
    assert_eq!(report.failed, 0);

    // The primary's circuit opened within its failure threshold of the outage's start
    // (five consecutive failures, plus the calls already in flight when it tripped).
    let outage_start = 4.0 * 0.2;
    let opened = report
        .events
        .iter()
        .find(|(_, e)| e.provider == "primary" && matches!(e.kind, EventKind::CircuitOpened { .. }))
        .map(|(t, _)| *t)
        .expect("the primary's circuit opened");
    assert!(
        opened >= outage_start,
        "opened at {opened}s, before the outage"
    );
    let failed_before_trip = report
        .marks
        .iter()
        .filter(|m| m.provider == 0 && !m.ok && m.at <= opened)
        .count();
    assert!(
        failed_before_trip <= 5 + scenario.agents,
        "{failed_before_trip} calls failed on the primary before its circuit opened"
    );
    // While open, the primary saw only trials: far fewer failed calls than requests served.
    let primary_errors = primary_mock.stats().error_count();
    assert!(
        primary_errors < report.served / 10,
        "{primary_errors} requests reached the failing primary"
    );

    // After recovery the primary is back in service: it serves again before the run ends.
    // (Its last open lasts at most the cap, 2.4 s at this scale, after the outage's last
    // failed trial, so it returns between 3.2 s and about 5.7 s of a 6 s run.)
    let last = &report.served_last;
    let by_primary = last.iter().filter(|&&i| i == 0).count();
    assert!(
        by_primary > 0,
        "the primary served none of the last {} requests",
        last.len()
    );
    assert!(report
        .events
        .iter()
        .any(|(_, e)| e.provider == "primary" && matches!(e.kind, EventKind::CircuitClosed)));
    assert_eq!(
        fuse.provider("primary").unwrap().status().state,
        fusebox::CircuitState::Closed
    );
    // The secondary's 429s carried Retry-After: its circuit opened at once, for the hint.
    assert!(report.events.iter().any(|(_, e)| e.provider == "secondary"
        && matches!(
            e.kind,
            EventKind::CircuitOpened {
                cause: fusebox::breaker::Cause::RateLimited,
                ..
            }
        )));
    let _ = Verdict::Success;
}

#[test]
fn a_bad_scenario_file_names_the_field() {
    let err =
        scenario::Scenario::from_toml_str("agents = 0\n[[providers]]\nname = \"p\"\n").unwrap_err();
    assert!(err.contains("`agents` = 0"), "{err}");
    let err =
        scenario::Scenario::from_toml_str("duration = \"soon\"\n[[providers]]\nname = \"p\"\n")
            .unwrap_err();
    assert!(err.contains("`duration`"), "{err}");
    let err = scenario::Scenario::from_toml_str("[[providers]]\nname = \"p\"\nlatency = 5\n")
        .unwrap_err();
    assert!(err.contains("line 3"), "{err}");
    let err = scenario::Scenario::from_toml_str(
        "[[providers]]\nname = \"p\"\nfaults = [ { when = \"always\", kind = \"explode\" } ]\n",
    )
    .unwrap_err();
    assert!(err.contains("line 3"), "{err}");
    let ok = scenario::Scenario::from_toml_str(
        "duration = \"5s\"\nagents = 2\n[[providers]]\nname = \"p\"\napi = \"anthropic\"\nfaults = [ { when = { between = [\"1s\", \"2s\"] }, kind = { status = 503 } } ]\n",
    )
    .unwrap();
    assert_eq!((ok.agents, ok.providers.len()), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_probes_the_primary_serves_again_within_a_probe_interval_of_its_recovery() {
    let mut scenario = scenario::Scenario::default_drill().scaled(0.3);
    scenario.agents = 8;
    let mocks = engine::start_mocks(&scenario).await.unwrap();
    let fuse = engine::probed_supervisor_builder(&scenario, &mocks)
        .build()
        .await
        .unwrap();
    let primary_mock = mocks[0].clone();
    let report = engine::run_fusebox(&scenario, fuse.clone(), mocks, |_| {}).await;
    assert_eq!(report.failed, 0);

    let recovered = engine::primary_recovery(&scenario).unwrap().as_secs_f64();
    let interval = engine::PROBE_INTERVAL * scenario.time_scale;
    let (back, full) = report.back_after(recovered);
    let back = back.expect("the primary served again");
    // Within one probe interval, plus a trial's round trip and real-time scheduling slack
    // (generous: CI runs this beside every other test on 2 cores). Without probes the
    // primary is out for the rest of a grown open period, several times longer.
    assert!(
        back <= interval + 0.6,
        "the primary served again {back:.2}s after its recovery (probe interval {interval:.2}s)"
    );
    assert!(full.is_some(), "the primary took its full share again");
    // The probes went to the models endpoint, never to the API the calls use.
    let stats = primary_mock.stats();
    assert!(stats.models_requests > 0 && report.probes >= stats.models_requests);
    assert!(
        stats.error_count() < report.served / 10,
        "{} requests reached the failing primary",
        stats.error_count()
    );
    assert!(report
        .events
        .iter()
        .any(|(_, e)| e.provider == "primary" && e.cause == Some(fusebox::Cause::ProbeSucceeded)));
}
