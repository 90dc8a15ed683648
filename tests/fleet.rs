//! The fleet (feature `redis`): replicas share circuit state over a real `redis-server` on
//! 127.0.0.1, started by each test (tests/support/redis.rs). A "replica" is a separate
//! `Supervisor` in this process with its own fleet connection.
//!
//! These run in real time (the network does), with generous but bounded waits: a condition
//! is polled up to a few seconds, never slept for a fixed time and then asserted on speed.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

#[path = "support/redis.rs"]
mod redis_server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fusebox::fleet::{Fleet, FleetError};
use fusebox::{Breaker, CallError, CircuitState, Origin, Provider, Supervisor, Verdict};
use redis_server::RedisServer;

/// The fleet's resync period in these tests.
const RESYNC: Duration = Duration::from_millis(300);

/// How long a condition that should hold "at once" (within the propagation bound) may take
/// to show under a loaded test machine.
const SOON: Duration = Duration::from_secs(2);

fn fleet(redis: &RedisServer, namespace: &str) -> Fleet {
    Fleet::redis(redis.url())
        .namespace(namespace)
        .resync_every(RESYNC)
}

async fn replica(fleet: Fleet, breaker: Breaker) -> Supervisor {
    Supervisor::builder()
        .provider(Provider::new("p").breaker(breaker))
        .fleet(fleet)
        .build()
        .await
        .expect("config")
}

/// Polls `f` every 5 ms until it holds or `within` passes; returns whether it held.
async fn until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether `fuse`'s circuit has at most `d` left open.
fn left_at_most(fuse: &Supervisor, d: Duration) -> bool {
    fuse.status()[0].retry_after.is_some_and(|left| left <= d)
}

fn state(fuse: &Supervisor) -> CircuitState {
    fuse.provider("p").expect("provider").state()
}

async fn fail(fuse: &Supervisor) -> Result<(), CallError<Verdict>> {
    fuse.call("p", || async { Err(Verdict::Failure) }).await
}

async fn connection(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_on_one_replica_is_rejected_on_another_without_a_call() {
    let Some(redis) = RedisServer::start("trip") else {
        return;
    };
    let breaker = Breaker::consecutive(3).open_for(Duration::from_secs(30));
    let a = replica(fleet(&redis, "trip"), breaker.clone()).await;
    let b = replica(fleet(&redis, "trip"), breaker).await;
    assert!(a.fleet_status().unwrap().connected);
    assert!(b.fleet_status().unwrap().connected);
    let mut b_events = b.subscribe();

    for _ in 0..3 {
        assert!(matches!(fail(&a).await, Err(CallError::Inner(_))));
    }
    assert_eq!(state(&a), CircuitState::Open);
    assert!(until(SOON, || state(&b) == CircuitState::Open).await);

    let called = AtomicU64::new(0);
    let rejected: Result<(), CallError<Verdict>> = b
        .call("p", || async {
            called.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await;
    assert_eq!(called.load(Ordering::SeqCst), 0, "B sent no call");
    let retry_after = rejected.unwrap_err().retry_after().expect("open");
    assert!(
        retry_after > Duration::from_secs(25) && retry_after <= Duration::from_secs(30),
        "B opens for the time A's open has left: {retry_after:?}"
    );
    let opened = b_events.recv().await.unwrap();
    assert_eq!(opened.name(), "llm.circuit_opened");
    assert_eq!(opened.origin, Origin::Remote);
    assert!(opened.to_string().ends_with("(from the fleet)"), "{opened}");
    let json = serde_json::to_value(&opened).unwrap();
    assert_eq!(json["origin"], "remote");
    assert_eq!(json["cause"], "consecutive_failures");
    assert_eq!(json["failures"], 3);
    // B counted no failure of its own, and A's own event is local.
    assert_eq!(b.status()[0].failed, 0);
    assert_eq!(b.fleet_status().unwrap().changes_applied, 1);
    assert_eq!(a.fleet_status().unwrap().changes_sent, 1);
    assert_eq!(b.status()[0].fleet_connected, Some(true));
    assert_eq!(b.health().fleet_connected, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolate_on_one_replica_isolates_the_other_and_a_reset_resets_both() {
    let Some(redis) = RedisServer::start("isolate") else {
        return;
    };
    let a = replica(fleet(&redis, "iso"), Breaker::consecutive(3)).await;
    let b = replica(fleet(&redis, "iso"), Breaker::consecutive(3)).await;
    b.isolate("p").await.unwrap();
    assert!(until(SOON, || state(&a) == CircuitState::Isolated).await);
    let rejected: Result<(), CallError<Verdict>> = a.call("p", || async { Ok(()) }).await;
    assert!(matches!(rejected, Err(CallError::Isolated { .. })));

    a.reset("p").await.unwrap();
    assert!(until(SOON, || state(&b) == CircuitState::Closed).await);

    // A reset of a circuit that is closed here still reaches the replica where it is open.
    for _ in 0..3 {
        let _ = fail(&b).await;
    }
    assert!(until(SOON, || state(&a) == CircuitState::Open).await);
    a.reset("p").await.unwrap();
    assert!(until(SOON, || state(&b) == CircuitState::Closed).await);
    assert_eq!(state(&a), CircuitState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_of_three_sends_one_trial() {
    let Some(redis) = RedisServer::start("one-trial") else {
        return;
    };
    let breaker = Breaker::consecutive(2)
        .open_for(Duration::from_millis(400))
        .jitter(0.0)
        .half_open_max_calls(1)
        .success_threshold(1);
    let mut fleet_of_three = Vec::new();
    for _ in 0..3 {
        // A loaded test machine must not make a lease request time out (the fallback to a
        // local trial is by design, and not what this test is about).
        let fleet = fleet(&redis, "trial").lease_wait(Duration::from_secs(2));
        fleet_of_three.push(replica(fleet, breaker.clone()).await);
    }
    let sent = Arc::new(AtomicU64::new(0));
    // The provider is down: every call that reaches it fails.
    let down = |sent: Arc<AtomicU64>| async move {
        sent.fetch_add(1, Ordering::SeqCst);
        Err::<(), _>(Verdict::Failure)
    };
    for _ in 0..2 {
        let _ = fleet_of_three[0].call("p", || down(sent.clone())).await;
    }
    assert_eq!(sent.load(Ordering::SeqCst), 2);
    for fuse in &fleet_of_three {
        assert!(until(SOON, || state(fuse) == CircuitState::Open).await);
    }
    let generation = |fuse: &Supervisor| fuse.status()[0].generation;
    let opened: Vec<u64> = fleet_of_three.iter().map(generation).collect();
    assert!(fleet_of_three
        .iter()
        .all(|f| left_at_most(f, Duration::from_millis(400))));

    // Every replica keeps calling through the half-open period until the failed trial has
    // re-opened every circuit.
    let mut callers = Vec::new();
    for fuse in fleet_of_three.clone() {
        let sent = sent.clone();
        callers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                let _ = fuse.call("p", || down(sent.clone())).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    // Re-opened everywhere: the failed trial's longer open (the backoff doubles to 800 ms)
    // applied on every replica (a replica whose own deadline had not passed yet only has it
    // pushed later, without a transition).
    let left = |fuse: &Supervisor| fuse.status()[0].retry_after.unwrap_or_default();
    let reopened = until(Duration::from_secs(4), || {
        fleet_of_three
            .iter()
            .any(|f| generation(f) >= opened[0] + 2)
            && fleet_of_three
                .iter()
                .all(|f| state(f) == CircuitState::Open && left(f) > Duration::from_millis(450))
    })
    .await;
    let trials = sent.load(Ordering::SeqCst) - 2;
    for caller in callers {
        caller.abort();
    }
    assert!(
        reopened,
        "the failed trial re-opened every replica's circuit"
    );
    let deferred: Vec<u64> = fleet_of_three
        .iter()
        .map(|f| f.fleet_status().unwrap().trials_deferred)
        .collect();
    assert_eq!(
        trials, 1,
        "one trial for the whole fleet (deferred: {deferred:?})"
    );
    let leased: u64 = fleet_of_three
        .iter()
        .map(|f| f.fleet_status().unwrap().trials_leased)
        .sum();
    assert_eq!(leased, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_traffic_delays_nothing_and_replicas_converge_after_restart() {
    let Some(mut redis) = RedisServer::start("outage") else {
        return;
    };
    let breaker = Breaker::consecutive(3).open_for(Duration::from_secs(60));
    let a = replica(fleet(&redis, "outage"), breaker.clone()).await;
    let b = replica(fleet(&redis, "outage"), breaker).await;
    redis.stop();
    assert!(until(SOON, || !a.fleet_status().unwrap().connected).await);
    assert!(until(SOON, || !b.fleet_status().unwrap().connected).await);
    assert_eq!(a.health().fleet_connected, Some(false));
    assert!(a.health().summary.ends_with("; fleet link down"));
    assert!(a.health().healthy, "a replica deciding alone still serves");

    // Traffic goes on: B's calls succeed, A's fail and trip A alone. No call waits for
    // Redis (each is bounded far below the link's connect timeout of 1 s).
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let started = Instant::now();
        let b_reply: Result<u32, CallError<Verdict>> = b.call("p", || async { Ok(i) }).await;
        assert_eq!(b_reply.unwrap(), i);
        let a_reply = fail(&a).await;
        slowest = slowest.max(started.elapsed());
        match a_reply {
            Err(CallError::Inner(_)) => assert!(i < 3),
            Err(CallError::Open { .. }) => assert!(i >= 3),
            other => panic!("call {i} on A: {other:?}"),
        }
    }
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
    assert_eq!(state(&a), CircuitState::Open, "A decided locally");
    assert_eq!(state(&b), CircuitState::Closed, "B decided locally");
    assert!(until(SOON, || a.fleet_status().unwrap().pending == 1).await);
    assert!(matches!(
        a.fleet_status().unwrap().last_error,
        Some(FleetError::Unreachable(_))
    ));

    redis.restart();
    // Reconnect (at most a second between attempts) and one resync period.
    let converged = until(Duration::from_secs(3) + RESYNC, || {
        state(&b) == CircuitState::Open && a.fleet_status().unwrap().connected
    })
    .await;
    assert!(
        converged,
        "A's open was written once Redis was back, and B applied it"
    );
    assert!(until(SOON, || a.fleet_status().unwrap().pending == 0).await);
    assert!(a.fleet_status().unwrap().reconnects >= 1);
    assert_eq!(b.health().fleet_connected, Some(true));
    assert_eq!(state(&a), state(&b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_record_never_overrides_a_newer_one() {
    let Some(redis) = RedisServer::start("stale") else {
        return;
    };
    let mut raw = connection(&redis).await;
    let key = "fusebox:stale:circuit:p";
    // A does not resync during the test: it must meet the newer record by its write.
    let slow = fleet(&redis, "stale").resync_every(Duration::from_secs(60));
    let a = replica(
        slow,
        Breaker::consecutive(1)
            .open_for(Duration::from_millis(300))
            .jitter(0.0)
            .success_threshold(1),
    )
    .await;
    let b = replica(fleet(&redis, "stale"), Breaker::consecutive(1)).await;
    let _ = fail(&a).await;
    assert!(until(SOON, || state(&b) == CircuitState::Open).await);
    let generation: u64 = redis::cmd("HGET")
        .arg(key)
        .arg("gen")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(generation, 1);

    // A record at or below the generation B applied, published and stored: ignored.
    let stale =
        r#"{"v":1,"gen":1,"provider":"p","change":"isolate","cause":"operator","replica":"old"}"#;
    let _: () = redis::cmd("PUBLISH")
        .arg("fusebox:stale:changes")
        .arg(stale)
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg("record")
        .arg(stale)
        .query_async(&mut raw)
        .await
        .unwrap();
    tokio::time::sleep(RESYNC * 3).await;
    assert_ne!(
        state(&b),
        CircuitState::Isolated,
        "a stale record changes nothing"
    );
    assert_ne!(
        state(&a),
        CircuitState::Isolated,
        "a stale record changes nothing"
    );

    // A newer record A has not seen (generation 5: another replica isolated the provider).
    let newer =
        r#"{"v":1,"gen":5,"provider":"p","change":"isolate","cause":"operator","replica":"ops"}"#;
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg("gen")
        .arg(5)
        .arg("record")
        .arg(newer)
        .query_async(&mut raw)
        .await
        .unwrap();
    // A's open ends; its trial succeeds and A closes: a write based on generation 1,
    // refused. A applies the newer record instead.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let trial: Result<(), CallError<Verdict>> = a.call("p", || async { Ok(()) }).await;
    trial.unwrap();
    assert!(until(SOON, || state(&a) == CircuitState::Isolated).await);
    assert!(a.fleet_status().unwrap().conflicts >= 1);
    let stored: (u64, String) = redis::cmd("HMGET")
        .arg(key)
        .arg("gen")
        .arg("record")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(stored, (5, newer.to_owned()), "the newer record stands");
    assert!(until(SOON, || state(&b) == CircuitState::Isolated).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_records_give_a_typed_error_and_change_nothing() {
    let Some(redis) = RedisServer::start("hostile") else {
        return;
    };
    let mut raw = connection(&redis).await;
    let a = replica(fleet(&redis, "hostile"), Breaker::consecutive(1)).await;
    let b = replica(fleet(&redis, "hostile"), Breaker::consecutive(1)).await;
    let channel = "fusebox:hostile:changes";
    let key = "fusebox:hostile:circuit:p";
    let huge = "x".repeat(1 << 20);
    let messages: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        vec![0xff, 0xfe, 0x00],
        br#"{"v":9,"gen":99,"provider":"p","change":"isolate","cause":"operator","replica":"x"}"#.to_vec(),
        br#"{"v":1,"gen":99,"provider":"p","change":"open","cause":"operator","failures":1,"remaining_ms":18446744073709551615,"replica":"x"}"#.to_vec(),
        br#"{"v":1,"gen":99,"provider":"p","change":"explode","cause":"operator","replica":"x"}"#.to_vec(),
        br#"{"v":1,"gen":99,"provider":"p","change":"isolate","cause":"operator","replica":"x","evil":true}"#.to_vec(),
        br#"{"v":1,"gen":99999999999999999,"provider":"p","change":"isolate","cause":"operator","replica":"x"}"#.to_vec(),
        huge.clone().into_bytes(),
    ];
    for message in &messages {
        let _: () = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message.as_slice())
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    // Stored garbage: a hash with a corrupt record, then a key of the wrong type.
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg("gen")
        .arg(3)
        .arg("record")
        .arg("{\"v\":1")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        until(SOON, || b.fleet_status().unwrap().invalid_records >= 8).await,
        "{:?}",
        b.fleet_status()
    );
    let _: () = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg(key)
        .arg("surprise")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        until(SOON, || matches!(
            b.fleet_status().unwrap().last_error,
            Some(FleetError::InvalidRecord {
                problem: fusebox::fleet::RecordProblem::WrongType(_),
                ..
            })
        ))
        .await,
        "{:?}",
        b.fleet_status()
    );
    for fuse in [&a, &b] {
        assert_eq!(state(fuse), CircuitState::Closed, "nothing was applied");
        assert!(fuse.provider("p").unwrap().is_alive());
        assert!(fuse.fleet_status().unwrap().connected);
    }
    // The link still works, and the next write replaces the wrong-typed key.
    let _ = fail(&a).await;
    assert!(until(SOON, || state(&b) == CircuitState::Open).await);
    let kind: String = redis::cmd("TYPE")
        .arg(key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(kind, "hash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_table_in_toml_starts_a_linked_replica() {
    let Some(redis) = RedisServer::start("toml") else {
        return;
    };
    let toml = format!(
        r#"
        [[providers]]
        name = "p"
        breaker = {{ consecutive = 1 }}

        [fleet]
        url = "{}"
        namespace = "toml"
        resync_every = "300ms"
        replica = "from-toml"
        "#,
        redis.url()
    );
    let a = Supervisor::from_toml_str(&toml).await.unwrap();
    let b = replica(fleet(&redis, "toml"), Breaker::consecutive(1)).await;
    let status = a.fleet_status().unwrap();
    assert_eq!(status.replica, "from-toml");
    assert!(status.connected);
    let _ = fail(&a).await;
    assert!(until(SOON, || state(&b) == CircuitState::Open).await);
    let rendered = a.config().to_toml_string();
    assert!(rendered.contains("[fleet]"), "{rendered}");
    assert_eq!(
        fusebox::Config::from_toml_str(&rendered).unwrap(),
        *a.config()
    );
}

#[test]
fn bad_fleet_settings_name_their_field() {
    let field = |toml: &str| {
        fusebox::Config::from_toml_str(toml)
            .unwrap_err()
            .field()
            .map(str::to_owned)
    };
    let with = |fleet: &str| format!("[[providers]]\nname = \"p\"\n[fleet]\n{fleet}\n");
    assert_eq!(
        field(&with("url = \"rediss://h/\"")).as_deref(),
        Some("fleet.url")
    );
    assert_eq!(
        field(&with("namespace = \"x\"")).as_deref(),
        Some("fleet.url")
    );
    assert_eq!(
        field(&with("url = \"redis://h/\"\nnamespace = \"a b\"")).as_deref(),
        Some("fleet.namespace")
    );
    assert_eq!(
        field(&with("url = \"redis://h/\"\nresync_every = \"soon\"")).as_deref(),
        Some("fleet.resync_every")
    );
    assert_eq!(
        field(&with("url = \"redis://h/\"\nresync = \"1s\"")).as_deref(),
        Some("fleet.resync")
    );
    let message = fusebox::Config::from_toml_str(&with("url = \"rediss://:pw@h/\""))
        .unwrap_err()
        .to_string();
    assert!(!message.contains("pw"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_reach_redis_starts_and_serves() {
    // Nothing listens on this port (bound and released by the OS just now).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let fuse = replica(
        Fleet::redis(format!("redis://127.0.0.1:{port}/")).namespace("none"),
        Breaker::consecutive(1),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!fuse.fleet_status().unwrap().connected);
    let reply: Result<u8, CallError<Verdict>> = fuse.call("p", || async { Ok(7) }).await;
    assert_eq!(reply.unwrap(), 7);
    let _ = fail(&fuse).await;
    assert_eq!(state(&fuse), CircuitState::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_deadline_on_an_open_circuit_reaches_the_other_replicas() {
    let Some(redis) = RedisServer::start("hint") else {
        return;
    };
    let breaker = Breaker::consecutive(1).open_for(Duration::from_secs(5));
    let a = replica(fleet(&redis, "hint"), breaker.clone()).await;
    let b = replica(fleet(&redis, "hint"), breaker).await;
    let _ = fail(&a).await;
    assert!(until(SOON, || state(&b) == CircuitState::Open).await);
    let left = |fuse: &Supervisor| fuse.status()[0].retry_after.unwrap_or_default();
    assert!(left(&b) <= Duration::from_secs(5));
    // The provider announces its quota spent for 40 s: A's open deadline moves later (no
    // transition), and B's with it.
    let mut headroom = fusebox::headroom::Headroom::default();
    headroom.requests = Some(
        fusebox::headroom::Quota::new(0)
            .with_limit(100)
            .with_reset(Duration::from_secs(40)),
    );
    a.provider("p").unwrap().record_headroom(headroom);
    assert!(until(SOON, || left(&a) > Duration::from_secs(35)).await);
    assert!(
        until(SOON, || left(&b) > Duration::from_secs(35)).await,
        "B's deadline: {:?}",
        left(&b)
    );
    assert_eq!(b.status()[0].generation, 1, "pushed later, not re-opened");
}
