//! Same-provider retries and the retry budget (paused time).
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fusebox::{
    AttemptOutcome, Breaker, CallError, CircuitState, Classify, ConfigError, Provider, ProviderId,
    Retry, Route, RouteError, Supervisor, Verdict,
};
use support::{ms, secs, FakeError, FakeProvider, Step};
use tokio::time::Instant;

fn retry() -> Retry {
    Retry::new()
        .attempts(3)
        .backoff(ms(100), secs(1))
        .jitter(0.0)
}

async fn supervisor(provider: Provider) -> Supervisor {
    Supervisor::builder()
        .provider(provider)
        .provider(Provider::new("secondary"))
        .route(Route::new("chat").providers(["primary", "secondary"]))
        .route(Route::new("solo").providers(["primary"]))
        .build()
        .await
        .unwrap()
}

fn quiet() -> Breaker {
    Breaker::consecutive(10).open_for(secs(60)).jitter(0.0)
}

#[tokio::test(start_paused = true)]
async fn a_transient_single_failure_is_retried_and_served() {
    let fuse = supervisor(Provider::new("primary").breaker(quiet()).retry(retry())).await;
    let fake = FakeProvider::scripted([Step::Fail], Step::Ok);
    let t0 = Instant::now();
    let routed = fuse
        .route("chat", |_p: ProviderId| fake.respond())
        .await
        .unwrap();
    assert_eq!(
        routed.provider, "primary",
        "served by a retry, not the fallback"
    );
    assert_eq!(routed.value, "reply #2");
    assert_eq!(t0.elapsed(), ms(100), "after the first back-off");
    let trace: Vec<_> = routed
        .attempts
        .iter()
        .map(|a| (a.provider.as_str(), a.outcome.clone()))
        .collect();
    assert_eq!(
        trace,
        [
            ("primary", AttemptOutcome::Failed(Verdict::Failure)),
            ("primary", AttemptOutcome::Succeeded),
        ]
    );
    let status = fuse.provider("primary").unwrap().status();
    assert_eq!((status.retries, status.retry_budget_exhausted), (1, 0));

    // A direct call retries the same way.
    let fake = FakeProvider::scripted([Step::Fail, Step::Fail], Step::Ok);
    let reply = fuse
        .call_retrying("primary", || fake.respond())
        .await
        .unwrap();
    assert_eq!(reply, "reply #3");
    assert_eq!(fake.calls(), 3);

    // Past its attempts, the routed call fails over; the direct one returns the last error.
    let fake = FakeProvider::scripted([Step::Fail, Step::Fail, Step::Fail], Step::Ok);
    let routed = fuse
        .route("chat", |_p: ProviderId| fake.respond())
        .await
        .unwrap();
    assert_eq!(routed.provider, "secondary");
    assert_eq!(routed.attempts.len(), 4);
    let fake = FakeProvider::new(Step::Fail);
    let err = fuse.call_retrying("primary", || fake.respond()).await;
    assert!(matches!(err, Err(CallError::Inner(FakeError::Unavailable))));
    assert_eq!(fake.calls(), 3);
    // A plain call is never retried (its operation runs once).
    let fake = FakeProvider::new(Step::Fail);
    let _ = support::call(&fuse, "primary", &fake).await;
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_retried_caller_faults_and_isolation_never() {
    let fuse = supervisor(
        Provider::new("primary")
            .breaker(quiet())
            .call_timeout(secs(1))
            .retry(retry()),
    )
    .await;
    let fake = FakeProvider::scripted([Step::Hang], Step::Ok);
    let routed = fuse
        .route("solo", |_p: ProviderId| fake.respond())
        .await
        .unwrap();
    assert_eq!(
        routed.attempts[0].outcome,
        AttemptOutcome::TimedOut(secs(1))
    );
    assert_eq!(routed.attempts[1].outcome, AttemptOutcome::Succeeded);

    let fake = FakeProvider::new(Step::BadRequest);
    let err = fuse
        .route("chat", |_p: ProviderId| fake.respond())
        .await
        .unwrap_err();
    assert!(matches!(err, RouteError::NotRetryable { .. }));
    assert_eq!(fake.calls(), 1);
    let err = fuse.call_retrying("primary", || fake.respond()).await;
    assert!(matches!(err, Err(CallError::Inner(FakeError::BadRequest))));
    assert_eq!(fake.calls(), 2);

    let fake = FakeProvider::new(Step::Unauthorized);
    let ok = FakeProvider::new(Step::Ok);
    let routed = fuse
        .route("chat", |p: ProviderId| {
            if p == "primary" {
                fake.respond()
            } else {
                ok.respond()
            }
        })
        .await;
    // Isolated and failed over at once, without a retry.
    assert_eq!(routed.unwrap().provider, "secondary");
    assert_eq!(fake.calls(), 1);
    assert_eq!(
        fuse.provider("primary").unwrap().state(),
        CircuitState::Isolated
    );
}

#[tokio::test(start_paused = true)]
async fn retries_never_run_on_an_open_circuit() {
    let fuse = supervisor(
        Provider::new("primary")
            .breaker(Breaker::consecutive(1).open_for(secs(60)))
            .retry(retry()),
    )
    .await;
    let fake = FakeProvider::new(Step::Fail);
    let ok = FakeProvider::new(Step::Ok);
    let routed = fuse
        .route("chat", |p: ProviderId| {
            if p == "primary" {
                fake.respond()
            } else {
                ok.respond()
            }
        })
        .await
        .unwrap();
    // The failure opened the circuit: no retry, straight to the secondary.
    assert_eq!(routed.provider, "secondary");
    assert_eq!(routed.attempts.len(), 2);
    assert_eq!(fake.calls(), 1);
    assert_eq!(fuse.provider("primary").unwrap().status().retries, 0);

    // A 429 with a hint opens the circuit for the hint: not retried either.
    fuse.reset("primary").await.unwrap();
    let fake = FakeProvider::new(Step::RateLimited(Some(secs(5))));
    let err = fuse.call_retrying("primary", || fake.respond()).await;
    assert!(matches!(
        err,
        Err(CallError::Inner(FakeError::RateLimited(_)))
    ));
    assert_eq!(fake.calls(), 1);
}

/// A 503 carrying `Retry-After`, as an HTTP client would report it.
#[derive(Debug)]
struct Busy(Duration);

impl Classify for Busy {
    fn verdict(&self) -> Verdict {
        Verdict::Failure
    }

    fn backoff_hint(&self) -> Option<Duration> {
        Some(self.0)
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_waits_at_least_the_retry_after_and_not_one_longer_than_its_cap() {
    let fuse = supervisor(Provider::new("primary").breaker(quiet()).retry(retry())).await;
    let calls = Arc::new(AtomicU64::new(0));
    let op = |hint: Duration| {
        let calls = calls.clone();
        move |_p: ProviderId| {
            let calls = calls.clone();
            async move {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(Busy(hint)),
                    _ => Ok("ok"),
                }
            }
        }
    };
    let t0 = Instant::now();
    let routed = fuse.route("solo", op(ms(700))).await.unwrap();
    assert_eq!(t0.elapsed(), ms(700), "the hint, not the 100 ms back-off");
    assert_eq!(routed.attempts.len(), 2);

    // A hint beyond the back-off cap (1 s): fail over instead of waiting.
    calls.store(0, Ordering::SeqCst);
    let t0 = Instant::now();
    let routed = fuse.route("chat", op(secs(30))).await.unwrap();
    assert_eq!(routed.provider, "secondary");
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_retry_never_outlives_the_route_deadline() {
    let fuse = Supervisor::builder()
        .provider(
            Provider::new("primary").breaker(quiet()).retry(
                Retry::new()
                    .attempts(5)
                    .backoff(secs(2), secs(10))
                    .jitter(0.0),
            ),
        )
        .route(Route::new("r").providers(["primary"]).deadline(secs(3)))
        .build()
        .await
        .unwrap();
    let fake = FakeProvider::new(Step::Fail);
    let t0 = Instant::now();
    let err = fuse
        .route("r", |_p: ProviderId| fake.respond())
        .await
        .unwrap_err();
    // One retry after 2 s; the next would wait 4 s, past the deadline: not started.
    assert_eq!(fake.calls(), 2);
    assert_eq!(t0.elapsed(), secs(2));
    assert!(matches!(err, RouteError::Exhausted { .. }), "{err:?}");
}

/// Requests a hard-down provider receives before its circuit opens, at `rate` calls a
/// second with `retry`; returns (calls made, requests received).
async fn outage(retry: Retry, rate: u64) -> (u64, u64) {
    let fuse = Supervisor::builder()
        .provider(
            Provider::new("primary")
                .breaker(Breaker::consecutive(2_400).open_for(secs(60)).jitter(0.0))
                .retry(retry),
        )
        .route(Route::new("solo").providers(["primary"]))
        .build()
        .await
        .unwrap();
    let fake = FakeProvider::new(Step::delay(ms(20), Step::Fail));
    let handle = fuse.provider("primary").unwrap();
    let mut calls = 0;
    let mut tasks = tokio::task::JoinSet::new();
    let tick = Duration::from_nanos(1_000_000_000 / rate);
    while handle.state() == CircuitState::Closed {
        calls += 1;
        let (fuse, fake) = (fuse.clone(), fake.clone());
        tasks.spawn(async move {
            let _ = fuse.route("solo", |_p: ProviderId| fake.respond()).await;
        });
        tokio::time::sleep(tick).await;
    }
    let requests = fake.calls();
    while tasks.join_next().await.is_some() {}
    // Nothing reached it once open.
    assert_eq!(fake.calls(), requests);
    (calls, requests)
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_bounds_the_load_on_a_hard_down_provider() {
    let rate = 200;
    let (calls, requests) = outage(retry(), rate).await;
    // 20 % of the calls, plus the floor of 10 a second over the 10 s window.
    let bound = calls + calls / 5 + 100;
    assert!(
        requests <= bound,
        "{requests} requests for {calls} calls; bound {bound}"
    );
    assert!(requests > calls, "some calls were retried");
    println!("budgeted: {calls} calls, {requests} requests");

    // The same outage without the budget: every call tries three times.
    let (calls, requests) = outage(retry().unbudgeted(), rate).await;
    println!("unbudgeted: {calls} calls, {requests} requests");
    // Calls still in their retries when the circuit opened have tried fewer times.
    assert!(
        requests * 4 >= calls * 11,
        "{requests} requests for {calls} calls"
    );
}

#[tokio::test(start_paused = true)]
async fn a_route_retry_replaces_the_providers_own_and_has_its_own_budget() {
    let fuse = Supervisor::builder()
        .provider(Provider::new("primary").breaker(quiet()))
        .provider(Provider::new("secondary"))
        .route(
            Route::new("chat")
                .providers(["primary", "secondary"])
                .retry(retry().attempts(2)),
        )
        .build()
        .await
        .unwrap();
    let fake = FakeProvider::scripted([Step::Fail], Step::Ok);
    let routed = fuse
        .route("chat", |_p: ProviderId| fake.respond())
        .await
        .unwrap();
    assert_eq!(routed.provider, "primary");
    assert_eq!(routed.attempts.len(), 2);
}

#[tokio::test]
async fn retry_settings_are_validated_and_read_from_toml() {
    let fuse = Supervisor::from_toml_str(
        r#"
        [[providers]]
        name = "a"
        retry = { attempts = 4, backoff = "50ms", max_backoff = "2s", jitter = 0.25, budget = 0.1, min_per_second = 5, budget_window = "30s" }

        [[routes]]
        name = "r"
        providers = ["a"]
        retry = { attempts = 2, budget = false }
        "#,
    )
    .await
    .unwrap();
    let config = fuse.config();
    let r = config.providers[0].retry_config().unwrap();
    assert_eq!(
        *r,
        Retry::new()
            .attempts(4)
            .backoff(ms(50), secs(2))
            .jitter(0.25)
            .budget(0.1, 5)
            .budget_window(secs(30))
    );
    let route = config.routes[0].retry_config().unwrap();
    assert_eq!(route.attempts_config(), 2);
    assert_eq!(route.budget_ratio(), None);
    let again = fusebox::Config::from_toml_str(&config.to_toml_string()).unwrap();
    assert_eq!(again, *config);

    for (retry, field) in [
        (Retry::new().attempts(0), "retry.attempts"),
        (Retry::new().jitter(1.5), "retry.jitter"),
        (Retry::new().budget(f64::NAN, 1), "retry.budget"),
        (Retry::new().backoff(secs(2), secs(1)), "retry.max_backoff"),
        (
            Retry::new().budget_window(Duration::ZERO),
            "retry.budget_window",
        ),
    ] {
        let err = Supervisor::builder()
            .provider(Provider::new("a").retry(retry))
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidValue { field: f, .. } if *f == field),
            "{field}: {err}"
        );
    }
    let err = Supervisor::from_toml_str(
        "[[providers]]\nname = \"a\"\n\n[[routes]]\nname = \"r\"\nproviders = [\"a\"]\nretry = { attemps = 2 }\n",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("retry.attemps"), "{err}");
}
