//! Every rejected configuration value, with the exact error it gets.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fusebox::{
    Adaptive, AllOpen, Breaker, Bulkhead, Config, ConfigError, Provider, Route, Scope, Supervisor,
    Tier, Window,
};

const S: Duration = Duration::from_secs(1);

fn with_provider(provider: Provider) -> Config {
    Config {
        providers: vec![provider],
        ..Config::default()
    }
}

fn with_breaker(breaker: Breaker) -> Config {
    with_provider(Provider::new("p").breaker(breaker))
}

fn with_route(route: Route) -> Config {
    Config {
        providers: vec![Provider::new("a"), Provider::new("b")],
        routes: vec![route],
        ..Config::default()
    }
}

#[test]
fn every_rejected_value_gets_an_error_naming_it() {
    let cases: Vec<(&str, Config, &str)> = vec![
        ("zero consecutive", with_breaker(Breaker::consecutive(0)),
         "provider `p`: breaker.consecutive = 0: must be at least 1"),
        ("failure rate above 1", with_breaker(Breaker::default().failure_rate(1.5, Window::Calls(10))),
         "provider `p`: breaker.failure_rate = 1.5: must be in (0, 1]"),
        ("zero failure rate", with_breaker(Breaker::default().failure_rate(0.0, Window::Calls(10))),
         "provider `p`: breaker.failure_rate = 0: must be in (0, 1]"),
        ("NaN failure rate", with_breaker(Breaker::default().failure_rate(f64::NAN, Window::Calls(10))),
         "provider `p`: breaker.failure_rate = NaN: must be in (0, 1]"),
        ("zero count window", with_breaker(Breaker::default().failure_rate(0.5, Window::Calls(0))),
         "provider `p`: breaker.window = 0 calls: must be between 1 and 1000000 calls"),
        ("huge count window", with_breaker(Breaker::default().failure_rate(0.5, Window::Calls(2_000_000))),
         "provider `p`: breaker.window = 2000000 calls: must be between 1 and 1000000 calls"),
        ("zero time window", with_breaker(Breaker::default().failure_rate(0.5, Window::Time(Duration::ZERO))),
         "provider `p`: breaker.window = 0s: must be longer than zero"),
        ("zero minimum calls", with_breaker(Breaker::default().failure_rate(0.5, Window::Calls(10)).minimum_calls(0)),
         "provider `p`: breaker.minimum_calls = 0: must be at least 1"),
        ("minimum calls above window", with_breaker(Breaker::default().failure_rate(0.5, Window::Calls(10)).minimum_calls(11)),
         "provider `p`: breaker.minimum_calls = 11: must not exceed the window's size in calls"),
        ("zero slow threshold", with_breaker(Breaker::default().slow_call(Duration::ZERO, 0.5)),
         "provider `p`: breaker.slow_call = 0s: must be longer than zero"),
        ("slow ratio above 1", with_breaker(Breaker::default().slow_call(S, 2.0)),
         "provider `p`: breaker.slow_call_ratio = 2: must be in (0, 1]"),
        ("zero open duration", with_breaker(Breaker::default().open_for(Duration::ZERO)),
         "provider `p`: breaker.open_for = 0s: must be longer than zero"),
        ("cap below base", with_breaker(Breaker::default().open_for(60 * S).max_open_for(30 * S)),
         "provider `p`: breaker.max_open_for = 30s: must not be below breaker.open_for"),
        ("jitter of 1", with_breaker(Breaker::default().jitter(1.0)),
         "provider `p`: breaker.jitter = 1: must be in [0, 1)"),
        ("negative jitter", with_breaker(Breaker::default().jitter(-0.1)),
         "provider `p`: breaker.jitter = -0.1: must be in [0, 1)"),
        ("zero half-open calls", with_breaker(Breaker::default().half_open_max_calls(0).success_threshold(0)),
         "provider `p`: breaker.half_open_max_calls = 0: must be at least 1"),
        ("zero success threshold", with_breaker(Breaker::default().success_threshold(0)),
         "provider `p`: breaker.success_threshold = 0: must be at least 1"),
        ("success threshold above half-open max", with_breaker(Breaker::default().half_open_max_calls(2).success_threshold(3)),
         "provider `p`: breaker.success_threshold = 3: must not exceed breaker.half_open_max_calls"),
        ("zero trial timeout", with_breaker(Breaker::default().trial_timeout(Duration::ZERO)),
         "provider `p`: breaker.trial_timeout = 0s: must be longer than zero"),
        ("zero bulkhead", with_provider(Provider::new("p").bulkhead(Bulkhead::new(0))),
         "provider `p`: bulkhead.max_concurrent = 0: must be at least 1"),
        ("queue without a timeout", with_provider(Provider::new("p").bulkhead(Bulkhead::new(1).queue(5).queue_timeout(Duration::ZERO))),
         "provider `p`: bulkhead.queue_timeout = 0s: must be longer than zero"),
        ("zero call timeout", with_provider(Provider::new("p").call_timeout(Duration::ZERO)),
         "provider `p`: call_timeout = 0s: must be longer than zero"),
        ("zero adaptive window", with_provider(Provider::new("p").adaptive(Adaptive::new(Duration::ZERO).tier(Tier::above(0)))),
         "provider `p`: adaptive.window = 0s: must be longer than zero"),
        ("no tiers", with_provider(Provider::new("p").adaptive(Adaptive::new(60 * S))),
         "provider `p`: adaptive.tiers = []: needs at least one tier"),
        ("hysteresis of 1", with_provider(Provider::new("p").adaptive(Adaptive::default().hysteresis(1.0))),
         "provider `p`: adaptive.hysteresis = 1: must be in [0, 1)"),
        ("duplicate tier", with_provider(Provider::new("p").adaptive(Adaptive::new(60 * S).tier(Tier::above(50)).tier(Tier::above(50)))),
         "provider `p`: adaptive.tiers.above = 50: two tiers share this boundary"),
        ("zero tier failures", with_provider(Provider::new("p").adaptive(Adaptive::new(60 * S).tier(Tier::above(10).failures(0)))),
         "provider `p`: adaptive.tiers.failures = 0: must be at least 1"),
        ("zero tier open", with_provider(Provider::new("p").adaptive(Adaptive::new(60 * S).tier(Tier::above(10).open_for(Duration::ZERO)))),
         "provider `p`: adaptive.tiers.open_for = 0s: must be longer than zero"),
        ("empty provider name", with_provider(Provider::new("  ")),
         "provider name must not be empty"),
        ("no providers", Config::default(), "no providers configured"),
        ("duplicate provider", Config { providers: vec![Provider::new("a"), Provider::new("a")], ..Config::default() },
         "provider `a` is defined twice"),
        ("zero event capacity", Config { event_capacity: 0, ..with_provider(Provider::new("p")) },
         "supervisor: event_capacity = 0: must be at least 1 and at most usize::MAX / 2"),
        ("huge event capacity", Config { event_capacity: usize::MAX, ..with_provider(Provider::new("p")) },
         &*Box::leak(format!("supervisor: event_capacity = {}: must be at least 1 and at most usize::MAX / 2", usize::MAX).into_boxed_str())),
        ("unhealthy ratio of 0", Config { unhealthy_ratio: 0.0, ..with_provider(Provider::new("p")) },
         "supervisor: unhealthy_ratio = 0: must be in (0, 1]"),
        ("empty route", with_route(Route::new("chat")), "route `chat` lists no providers"),
        ("empty route name", with_route(Route::new("").providers(["a"])), "route name must not be empty"),
        ("unknown provider in route", with_route(Route::new("chat").providers(["a", "c"])),
         "route `chat` names unknown provider `c`"),
        ("provider twice in route", with_route(Route::new("chat").providers(["a", "a"])),
         "route `chat` lists provider `a` twice"),
        ("zero route deadline", with_route(Route::new("chat").providers(["a"]).deadline(Duration::ZERO)),
         "route `chat`: deadline = 0s: must be longer than zero"),
        ("zero wait", with_route(Route::new("chat").providers(["a"]).when_all_open(AllOpen::Wait(Duration::ZERO))),
         "route `chat`: when_all_open = 0s: must be longer than zero"),
        ("duplicate route", Config {
            routes: vec![Route::new("r").providers(["a"]), Route::new("r").providers(["b"])],
            ..with_route(Route::new("x").providers(["a"]))
        }, "route `r` is defined twice"),
    ];
    for (what, config, expected) in cases {
        let err = config.validate().expect_err(what);
        assert_eq!(err.to_string(), expected, "{what}");
    }
}

#[test]
fn invalid_values_are_matchable_by_scope_and_field() {
    let err = with_breaker(Breaker::consecutive(0))
        .validate()
        .unwrap_err();
    match err {
        ConfigError::InvalidValue {
            scope,
            field,
            value,
            ..
        } => {
            assert_eq!(scope, Scope::Provider("p".into()));
            assert_eq!((field, value.as_str()), ("breaker.consecutive", "0"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn defaults_and_boundaries_are_accepted() {
    let ok = Config {
        providers: vec![
            Provider::new("defaults"),
            Provider::new("edges")
                .breaker(
                    Breaker::consecutive(1)
                        .failure_rate(1.0, Window::Calls(1_000_000))
                        .minimum_calls(1_000_000)
                        .slow_call(Duration::from_nanos(1), 1.0)
                        .open_for(Duration::from_nanos(1))
                        .max_open_for(Duration::from_nanos(1))
                        .jitter(0.0)
                        .half_open_max_calls(1)
                        .success_threshold(1),
                )
                .bulkhead(Bulkhead::new(1).queue_timeout(Duration::ZERO))
                .adaptive(Adaptive::default().hysteresis(0.0)),
            Provider::new("rates only").breaker(Breaker::rate_based()),
        ],
        routes: vec![Route::new("r").providers(["edges", "defaults"])],
        event_capacity: 1,
        unhealthy_ratio: 1.0,
    };
    ok.validate().unwrap();
}

#[tokio::test]
async fn build_reports_the_config_error() {
    let err = Supervisor::builder()
        .provider(Provider::new("anthropic").breaker(Breaker::consecutive(3).success_threshold(2)))
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("breaker.success_threshold"));
    assert_eq!(
        err.to_string(),
        "provider `anthropic`: breaker.success_threshold = 2: must not exceed breaker.half_open_max_calls"
    );
}
