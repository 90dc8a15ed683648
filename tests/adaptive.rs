//! Adaptive thresholds driven by a simulated request rate on paused time.
//!
//! The default tiers: above 100 requests/min trip after 3 failures and open for 30 s; above
//! 50/min, 5 and 45 s; else 10 and 60 s. The meter samples every 3 s (window / 20) and
//! counts admitted plus rejected calls over the last 60 s.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use fusebox::breaker::Cause;
use fusebox::{Adaptive, CallError, CircuitState, Event, EventKind, Provider, Supervisor};
use support::{call, drain, secs, settle, FakeProvider, Step};
use tokio::sync::broadcast::Receiver;
use tokio::time::{sleep_until, Instant};

/// Issues calls at a steady rate, at half-second marks (never on a 3 s sample instant).
struct Load {
    fuse: Supervisor,
    fake: FakeProvider,
    next: Instant,
    owed: f64,
}

impl Load {
    fn new(fuse: &Supervisor) -> Self {
        Load {
            fuse: fuse.clone(),
            fake: FakeProvider::new(Step::Ok),
            next: Instant::now() + Duration::from_millis(500),
            owed: 0.0,
        }
    }

    /// `per_minute` calls a minute for `seconds` seconds; returns how many were admitted.
    async fn run(&mut self, per_minute: f64, seconds: u64) -> u64 {
        let mut admitted = 0;
        for _ in 0..seconds {
            sleep_until(self.next).await;
            self.next += secs(1);
            self.owed += per_minute / 60.0;
            while self.owed >= 1.0 {
                self.owed -= 1.0;
                admitted += u64::from(call(&self.fuse, "p", &self.fake).await.is_ok());
            }
        }
        admitted
    }
}

async fn start(adaptive: Adaptive) -> Supervisor {
    Supervisor::builder()
        .provider(Provider::new("p").adaptive(adaptive))
        .build()
        .await
        .unwrap()
}

fn status(fuse: &Supervisor) -> fusebox::ProviderStatus {
    fuse.status().remove(0)
}

/// The tier changes received so far, as (tier, measured rate).
fn adaptations(events: &mut Receiver<Event>) -> Vec<(Option<u32>, f64)> {
    drain(events)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ThresholdsAdapted {
                tier, request_rate, ..
            } => Some((tier, request_rate)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn rising_load_tightens_the_thresholds() {
    let fuse = start(Adaptive::default()).await;
    let mut events = fuse.subscribe();
    let quiet = status(&fuse);
    assert_eq!(quiet.tier, Some(0));
    assert_eq!(quiet.failure_threshold, Some(10));
    assert_eq!(quiet.open_for, secs(60));

    let mut load = Load::new(&fuse);
    assert_eq!(load.run(120.0, 90).await, 180);
    let busy = status(&fuse);
    assert_eq!(busy.tier, Some(100));
    assert_eq!(busy.failure_threshold, Some(3));
    assert_eq!(busy.open_for, secs(30));
    let rate = busy.request_rate.unwrap();
    assert!((117.0..=123.0).contains(&rate), "{rate}");
    let changes = adaptations(&mut events);
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0].0, Some(50));
    assert!(changes[0].1 > 50.0 && changes[0].1 <= 100.0, "{changes:?}");
    assert_eq!(changes[1].0, Some(100));
    assert!(changes[1].1 > 100.0, "{changes:?}");

    // Three consecutive failures now open the circuit, for 30 s.
    let failing = FakeProvider::new(Step::Fail);
    for _ in 0..2 {
        assert!(call(&fuse, "p", &failing).await.is_err());
    }
    assert_eq!(status(&fuse).state, CircuitState::Closed);
    assert!(call(&fuse, "p", &failing).await.is_err());
    assert_eq!(status(&fuse).state, CircuitState::Open);
    let opened = drain(&mut events).pop().unwrap();
    assert_eq!(
        opened.kind,
        EventKind::CircuitOpened {
            cause: Cause::ConsecutiveFailures,
            failures: 3,
            retry_after: secs(30),
        }
    );
    let reply = call(&fuse, "p", &failing).await;
    assert!(matches!(reply, Err(CallError::Open { .. })));
    assert_eq!(reply.unwrap_err().retry_after(), Some(secs(30)));
}

#[tokio::test(start_paused = true)]
async fn falling_load_loosens_them_again_with_hysteresis() {
    let fuse = start(Adaptive::default()).await;
    let mut load = Load::new(&fuse);
    load.run(120.0, 90).await;
    assert_eq!(status(&fuse).tier, Some(100));
    let mut events = fuse.subscribe();

    let mut seen = vec![Some(100)];
    for _ in 0..30 {
        load.run(0.0, 3).await;
        let tier = status(&fuse).tier;
        if seen.last() != Some(&tier) {
            seen.push(tier);
        }
    }
    assert_eq!(seen, [Some(100), Some(50), Some(0)]);
    let changes = adaptations(&mut events);
    assert_eq!(changes.len(), 2, "{changes:?}");
    // Down a tier only 10 % below its boundary.
    assert_eq!(changes[0].0, Some(50));
    assert!(changes[0].1 < 90.0 && changes[0].1 > 50.0, "{changes:?}");
    assert_eq!(changes[1].0, Some(0));
    assert!(changes[1].1 < 45.0, "{changes:?}");
    let quiet = status(&fuse);
    assert_eq!(quiet.failure_threshold, Some(10));
    assert_eq!(quiet.open_for, secs(60));
    assert_eq!(quiet.request_rate, Some(0.0));
}

/// Runs 98/min, then six minutes alternating 102/min and 98/min; returns every tier
/// change.
async fn hover_at_the_boundary(adaptive: Adaptive) -> Vec<(Option<u32>, f64)> {
    let fuse = start(adaptive).await;
    let mut events = fuse.subscribe();
    let mut load = Load::new(&fuse);
    load.run(98.0, 90).await;
    assert_eq!(status(&fuse).tier, Some(50));
    for _ in 0..3 {
        load.run(102.0, 60).await;
        load.run(98.0, 60).await;
    }
    let rate = status(&fuse).request_rate.unwrap();
    assert!((97.0..=99.0).contains(&rate), "{rate}");
    adaptations(&mut events)
}

#[tokio::test(start_paused = true)]
async fn a_rate_hovering_at_a_boundary_does_not_flap() {
    let changes = hover_at_the_boundary(Adaptive::default()).await;
    let tiers: Vec<_> = changes.iter().map(|c| c.0).collect();
    assert_eq!(tiers, [Some(50), Some(100)], "{changes:?}");
}

#[tokio::test(start_paused = true)]
async fn without_hysteresis_the_same_load_flaps() {
    // The control for the test above: it can tell flapping from not.
    let changes = hover_at_the_boundary(Adaptive::default().hysteresis(0.0)).await;
    assert!(changes.len() >= 6, "{changes:?}");
}

#[tokio::test(start_paused = true)]
async fn rejected_calls_count_as_demand() {
    let fuse = start(Adaptive::default()).await;
    fuse.isolate("p").await.unwrap();
    let mut load = Load::new(&fuse);
    assert_eq!(load.run(120.0, 90).await, 0, "every call rejected");
    settle().await;
    let s = status(&fuse);
    assert_eq!((s.state, s.tier), (CircuitState::Isolated, Some(100)));
    assert_eq!(s.rejected, 180);
}
