//! The stress episodes of `tests/support/stress.rs` on the multi-thread runtime: stale
//! outcomes ignored, read-your-writes, bounded trials, no call lost or started by a shutdown,
//! counts adding up, permits conserved. CI runs a few thousand episodes; `cargo run --release
//! --example stress` runs 100,000 and more.
#![allow(clippy::unwrap_used)]

#[path = "support/stress.rs"]
mod stress;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_invariant_breaks_under_contention() {
    let episodes = std::env::var("FUSEBOX_STRESS_EPISODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let tally = stress::run(episodes, 8, 1).await;
    assert_eq!(tally.episodes, episodes);
    assert!(
        tally.violations.is_empty(),
        "{} violations in {} episodes, first: {:#?}",
        tally.violations.len(),
        tally.episodes,
        &tally.violations[..tally.violations.len().min(10)]
    );
}
