//! Request and token budgets per provider (paused time).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use fusebox::headroom::{Headroom, Quota};
use fusebox::{
    AllOpen, AttemptOutcome, Budget, CallError, CircuitState, ConfigError, Metered, Provider,
    ProviderId, Route, RouteError, Supervisor,
};
use support::{secs, FakeError, FakeProvider, Step};
use tokio::time::Instant;

async fn budgeted(budget: Budget) -> Supervisor {
    Supervisor::builder()
        .provider(Provider::new("primary").budget(budget))
        .provider(Provider::new("secondary"))
        .route(Route::new("chat").providers(["primary", "secondary"]))
        .route(
            Route::new("waiting")
                .providers(["primary"])
                .when_all_open(AllOpen::Wait(secs(5)))
                .deadline(secs(30)),
        )
        .build()
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_61st_call_within_the_minute_is_rejected_with_the_refill_time() {
    let fuse = budgeted(Budget::per_minute().requests(60)).await;
    let fake = FakeProvider::new(Step::Ok);
    for _ in 0..60 {
        support::call(&fuse, "primary", &fake).await.unwrap();
    }
    let over = support::call(&fuse, "primary", &fake).await.unwrap_err();
    match &over {
        CallError::OverBudget {
            provider,
            retry_after,
        } => {
            assert_eq!(provider, &"primary");
            // 60 a minute refill one a second.
            assert_eq!(*retry_after, secs(1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(over.retry_after(), Some(secs(1)));
    assert!(over.is_rejected());
    assert_eq!(fake.calls(), 60, "the 61st call was not made");

    // Not the provider's fault: nothing counted against it, nothing cancelled.
    let status = fuse.provider("primary").unwrap().status();
    assert_eq!(status.state, CircuitState::Closed);
    assert_eq!(status.failed, 0);
    assert_eq!(status.cancelled, 0);
    assert_eq!(status.in_flight, 0);
    assert_eq!(status.total, 60);
    assert_eq!(status.budget.unwrap().rejected, 1);
    assert_eq!(status.budget.unwrap().requests_limit, Some(60));

    // A second later, one more fits; not two.
    tokio::time::advance(secs(1)).await;
    support::call(&fuse, "primary", &fake).await.unwrap();
    assert!(matches!(
        support::call(&fuse, "primary", &fake).await,
        Err(CallError::OverBudget { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_routed_call_over_budget_goes_to_the_secondary() {
    let fuse = budgeted(Budget::per_minute().requests(60)).await;
    let fake = FakeProvider::new(Step::Ok);
    let route = || fuse.route("chat", |_p: ProviderId| fake.respond());
    for _ in 0..60 {
        assert_eq!(route().await.unwrap().provider, "primary");
    }
    let routed = route().await.unwrap();
    assert_eq!(routed.provider, "secondary");
    assert_eq!(routed.attempts.len(), 2);
    assert_eq!(
        routed.attempts[0].outcome,
        AttemptOutcome::SkippedBudget {
            retry_after: secs(1)
        }
    );
    assert_eq!(routed.attempts[0].outcome.label(), "skipped_budget");
    assert!(!routed.attempts[0].outcome.was_called());
    let primary = fuse.provider("primary").unwrap().status();
    assert_eq!(
        (primary.failed, primary.cancelled, primary.total),
        (0, 0, 60)
    );
}

#[tokio::test(start_paused = true)]
async fn a_routed_call_waits_for_the_budget_within_its_deadline_under_wait() {
    let fuse = budgeted(Budget::per_minute().requests(60)).await;
    let fake = FakeProvider::new(Step::Ok);
    for _ in 0..60 {
        fuse.route("waiting", |_p: ProviderId| fake.respond())
            .await
            .unwrap();
    }
    let t0 = Instant::now();
    let routed = fuse
        .route("waiting", |_p: ProviderId| fake.respond())
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), secs(1), "waited for the refill, no longer");
    assert_eq!(routed.provider, "primary");
    assert_eq!(
        routed.attempts[0].outcome,
        AttemptOutcome::SkippedBudget {
            retry_after: secs(1)
        }
    );
    assert_eq!(routed.attempts[1].outcome, AttemptOutcome::Succeeded);

    // The fail-fast route says when to come back.
    let fuse = Supervisor::builder()
        .provider(Provider::new("only").budget(Budget::per_minute().requests(1)))
        .route(Route::new("r").providers(["only"]))
        .build()
        .await
        .unwrap();
    fuse.route("r", |_p: ProviderId| fake.respond())
        .await
        .unwrap();
    match fuse.route("r", |_p: ProviderId| fake.respond()).await {
        Err(RouteError::AllUnavailable { retry_after, .. }) => {
            assert_eq!(retry_after, Some(secs(60)))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn usage_settles_from_actual_tokens() {
    let fuse = budgeted(Budget::per_minute().tokens(10_000)).await;
    let handle = fuse.provider("primary").unwrap();
    let available = || handle.status().budget.unwrap().tokens_available.unwrap();
    assert_eq!(available(), 10_000);

    // Estimated at 1,000, used 200: 800 come back when it settles.
    let reply = fuse
        .call_metered("primary", 1_000, || async {
            assert_eq!(available(), 9_000, "the estimate is reserved while it runs");
            Ok::<_, FakeError>(Metered::new("hi", 200))
        })
        .await
        .unwrap();
    assert_eq!(reply, "hi");
    assert_eq!(available(), 9_800);

    // Used more than estimated: the excess is taken too.
    fuse.call_metered("primary", 100, || async {
        Ok::<_, FakeError>(Metered::new((), 1_800))
    })
    .await
    .unwrap();
    assert_eq!(available(), 8_000);

    // Unknown usage, or an error: the estimate stands.
    fuse.call_metered("primary", 500, || async {
        Ok::<_, FakeError>(Metered::unknown(()))
    })
    .await
    .unwrap();
    assert_eq!(available(), 7_500);
    let failed = fuse
        .call_metered("primary", 500, || async {
            Err::<Metered<()>, _>(FakeError::Unavailable)
        })
        .await;
    assert!(matches!(
        failed,
        Err(CallError::Inner(FakeError::Unavailable))
    ));
    assert_eq!(available(), 7_000);

    // A plain call reserves the default estimate (1,000).
    let fake = FakeProvider::new(Step::Ok);
    support::call(&fuse, "primary", &fake).await.unwrap();
    assert_eq!(available(), 6_000);

    // Over the token budget: when the missing tokens have refilled (10,000 a minute: 6 ms
    // a token).
    let over = fuse
        .call_metered("primary", 7_000, || async {
            Ok::<_, FakeError>(Metered::new((), 1))
        })
        .await
        .unwrap_err();
    assert_eq!(over.retry_after(), Some(Duration::from_secs(6)));

    // A minute later the budget is full again, never fuller.
    tokio::time::advance(secs(60)).await;
    assert_eq!(available(), 10_000);
}

#[tokio::test(start_paused = true)]
async fn routed_usage_settles_at_the_provider_that_served() {
    let fuse = budgeted(Budget::per_minute().tokens(5_000)).await;
    let available = || {
        fuse.provider("primary")
            .unwrap()
            .status()
            .budget
            .unwrap()
            .tokens_available
            .unwrap()
    };
    let routed = fuse
        .route_metered("chat", 3_000, |p: ProviderId| async move {
            Ok::<_, FakeError>(Metered::new(p.to_string(), 1_000))
        })
        .await
        .unwrap();
    assert_eq!(routed.value, "primary");
    assert_eq!(available(), 4_000);
    // 4,000 left: an estimate of 4,500 goes to the secondary, which has no budget.
    let routed = fuse
        .route_metered("chat", 4_500, |p: ProviderId| async move {
            Ok::<_, FakeError>(Metered::new(p.to_string(), 10))
        })
        .await
        .unwrap();
    assert_eq!(routed.value, "secondary");
    assert!(matches!(
        routed.attempts[0].outcome,
        AttemptOutcome::SkippedBudget { .. }
    ));
    assert_eq!(available(), 4_000);
}

#[tokio::test(start_paused = true)]
async fn a_budget_learns_the_limits_the_provider_reports() {
    let fuse = budgeted(Budget::per_minute().requests(1_000).from_headers()).await;
    let handle = fuse.provider("primary").unwrap();
    let mut headroom = Headroom::default();
    headroom.requests = Some(Quota::new(2).with_limit(2));
    handle.record_headroom(headroom);
    assert_eq!(handle.status().budget.unwrap().requests_limit, Some(2));
    let fake = FakeProvider::new(Step::Ok);
    support::call(&fuse, "primary", &fake).await.unwrap();
    support::call(&fuse, "primary", &fake).await.unwrap();
    let over = support::call(&fuse, "primary", &fake).await.unwrap_err();
    assert_eq!(over.retry_after(), Some(secs(30)));

    // Without from_headers the configured limit holds.
    let fuse = budgeted(Budget::per_minute().requests(1_000)).await;
    let handle = fuse.provider("primary").unwrap();
    handle.record_headroom(headroom);
    assert_eq!(handle.status().budget.unwrap().requests_limit, Some(1_000));
}

#[tokio::test]
async fn budgets_from_toml_and_bad_values_name_the_field() {
    let fuse = Supervisor::from_toml_str(
        r#"
        [[providers]]
        name = "openai"
        max_context = 128_000
        budget = { requests = 500, tokens = 200_000, default_estimate = 2_000 }
        "#,
    )
    .await
    .unwrap();
    let config = fuse.config();
    let budget = config.providers[0].budget_config().unwrap();
    assert_eq!(budget.requests_limit(), Some(500));
    assert_eq!(budget.tokens_limit(), Some(200_000));
    assert_eq!(budget.default_estimate_config(), 2_000);
    assert_eq!(budget.period(), secs(60));
    assert_eq!(config.providers[0].max_context_config(), Some(128_000));
    // And back: the written document reads the same.
    let again = fusebox::Config::from_toml_str(&config.to_toml_string()).unwrap();
    assert_eq!(again.providers[0], config.providers[0]);

    let err = Supervisor::from_toml_str(
        "[[providers]]\nname = \"a\"\nbudget = { requests = 10, tokens = 0 }\n",
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("budget.tokens"), "{text}");
    assert_eq!(err.line(), Some(3), "{text}");

    let err = Supervisor::builder()
        .provider(Provider::new("a").budget(Budget::per_minute()))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ConfigError::InvalidValue {
                field: "budget",
                ..
            }
        ),
        "{err}"
    );
    let err = Supervisor::builder()
        .provider(Provider::new("a").budget(Budget::per(Duration::ZERO).requests(1)))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ConfigError::InvalidValue {
                field: "budget.period",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_never_exceed_the_request_budget() {
    let fuse = Supervisor::builder()
        .provider(Provider::new("p").budget(Budget::per(secs(3_600)).requests(500)))
        .build()
        .await
        .unwrap();
    let fake = FakeProvider::new(Step::Ok);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (fuse, fake) = (fuse.clone(), fake.clone());
        tasks.push(tokio::spawn(async move {
            let mut served = 0u64;
            for _ in 0..200 {
                if support::call(&fuse, "p", &fake).await.is_ok() {
                    served += 1;
                }
            }
            served
        }));
    }
    let mut served = 0;
    for t in tasks {
        served += t.await.unwrap();
    }
    // An hour refills 500 requests: a few may refill during the run, never more than that.
    assert!((500..=502).contains(&served), "{served}");
    assert_eq!(fake.calls(), served);
    let status = fuse.provider("p").unwrap().status();
    assert_eq!(status.budget.unwrap().rejected, 1_600 - served);
    assert_eq!(status.in_flight, 0);
}

/// Settling from the response: the mock LLM's OpenAI and Anthropic bodies, read with
/// `fusebox::http::usage`, over loopback.
#[tokio::test]
async fn usage_from_openai_and_anthropic_bodies_settles_the_budget() {
    use fusebox::http::{self, HttpError};
    use fusebox::testing::{FaultScript, MockLlm};

    let mock = MockLlm::start(FaultScript::new()).await.unwrap();
    let fuse = Supervisor::builder()
        .provider(Provider::new("openai").budget(Budget::per_minute().tokens(100_000)))
        .provider(Provider::new("anthropic").budget(Budget::per_minute().tokens(100_000)))
        .build()
        .await
        .unwrap();
    let client = reqwest::Client::new();
    for (provider, url, body) in [
        (
            "openai",
            mock.openai_url(),
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "one two three"}]}),
        ),
        (
            "anthropic",
            mock.anthropic_url(),
            serde_json::json!({"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "one two three"}]}),
        ),
    ] {
        let (client, url, body) = (&client, &url, &body);
        let used = fuse
            .call_metered(provider, 5_000, || async move {
                let response = client.post(url).json(body).send().await?;
                let bytes = http::check(response).await?.bytes().await?;
                let usage = http::usage(&bytes);
                Ok::<_, HttpError>(fusebox::Metered::from((usage, usage)))
            })
            .await
            .unwrap()
            .unwrap();
        assert!(used.total() > 0, "{provider}: {used:?}");
        let available = fuse
            .provider(provider)
            .unwrap()
            .status()
            .budget
            .unwrap()
            .tokens_available
            .unwrap();
        // The 5,000 estimate came back but for what was used (real time refills a little
        // more, never past the limit).
        assert!(
            available >= 100_000 - used.total() && used.total() < 5_000,
            "{provider}: {available} after using {}",
            used.total()
        );
    }
    mock.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn streamed_calls_take_from_the_budget_too() {
    use futures::StreamExt;
    let fuse = budgeted(Budget::per_minute().requests(1)).await;
    let open = || {
        fuse.call_stream("primary", || async {
            Ok::<_, FakeError>(futures::stream::iter([Ok::<_, FakeError>("chunk")]))
        })
    };
    let mut stream = open().await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap(), "chunk");
    drop(stream);
    let over = open().await.err().unwrap();
    assert!(matches!(over, CallError::OverBudget { .. }), "{over:?}");
    assert_eq!(over.retry_after(), Some(secs(60)));
    // A routed stream skips it.
    let routed = fuse
        .route_stream("chat", |_p: ProviderId| async {
            Ok::<_, FakeError>(futures::stream::iter([Ok::<_, FakeError>("chunk")]))
        })
        .await
        .unwrap();
    assert_eq!(routed.provider, "secondary");
    assert!(matches!(
        routed.attempts[0].outcome,
        AttemptOutcome::SkippedBudget { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_an_unchanged_budget_and_its_spending() {
    let fuse = budgeted(Budget::per_minute().requests(2)).await;
    let fake = FakeProvider::new(Step::Ok);
    support::call(&fuse, "primary", &fake).await.unwrap();
    support::call(&fuse, "primary", &fake).await.unwrap();
    // Another setting of the provider changes; its budget does not.
    let mut config = (*fuse.config()).clone();
    config.providers[0] = config.providers[0].clone().call_timeout(secs(30));
    fuse.reload(config.clone()).await.unwrap();
    assert!(matches!(
        support::call(&fuse, "primary", &fake).await,
        Err(CallError::OverBudget { .. })
    ));
    // A changed budget starts afresh.
    config.providers[0] = config.providers[0]
        .clone()
        .budget(Budget::per_minute().requests(3));
    fuse.reload(config).await.unwrap();
    support::call(&fuse, "primary", &fake).await.unwrap();
}
