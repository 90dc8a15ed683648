//! Every rejected configuration value, with the exact error it gets.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fusebox::config::MAX_DURATION;
use fusebox::{
    Adaptive, AllOpen, Breaker, Bulkhead, Config, ConfigError, Provider, Route, Scope, Supervisor,
    Tier, Window,
};

const S: Duration = Duration::from_secs(1);
/// Just above the longest accepted duration.
const TOO_LONG: Duration = MAX_DURATION.saturating_add(Duration::from_nanos(1));
const DAY: Duration = Duration::from_secs(86_400);

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
         "supervisor: event_capacity = 0: must be at least 1 and at most 1048576 (the bus allocates it up front)"),
        ("huge event capacity", Config { event_capacity: usize::MAX, ..with_provider(Provider::new("p")) },
         &*Box::leak(format!("supervisor: event_capacity = {}: must be at least 1 and at most 1048576 (the bus allocates it up front)", usize::MAX).into_boxed_str())),
        ("event capacity one past the limit", Config { event_capacity: (1 << 20) + 1, ..with_provider(Provider::new("p")) },
         "supervisor: event_capacity = 1048577: must be at least 1 and at most 1048576 (the bus allocates it up front)"),
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
        // Every duration has an upper limit, MAX_DURATION (365 days).
        ("open duration of Duration::MAX", with_breaker(Breaker::default().open_for(Duration::MAX)),
         "provider `p`: breaker.open_for = 18446744073709551615.999999999s: must be at most 365 days (31536000s)"),
        ("open duration just too long", with_breaker(Breaker::default().open_for(TOO_LONG).max_open_for(TOO_LONG)),
         "provider `p`: breaker.open_for = 31536000.000000001s: must be at most 365 days (31536000s)"),
        ("cap too long", with_breaker(Breaker::default().max_open_for(366 * DAY)),
         "provider `p`: breaker.max_open_for = 31622400s: must be at most 365 days (31536000s)"),
        ("trial timeout of u64::MAX seconds", with_breaker(Breaker::default().trial_timeout(Duration::from_secs(u64::MAX))),
         "provider `p`: breaker.trial_timeout = 18446744073709551615s: must be at most 365 days (31536000s)"),
        ("slow threshold too long", with_breaker(Breaker::default().slow_call(TOO_LONG, 0.5)),
         "provider `p`: breaker.slow_call = 31536000.000000001s: must be at most 365 days (31536000s)"),
        ("time window too long", with_breaker(Breaker::default().failure_rate(0.5, Window::Time(1000 * DAY))),
         "provider `p`: breaker.window = 86400000s: must be at most 365 days (31536000s)"),
        ("failure rate below the precision", with_breaker(Breaker::default().failure_rate(1e-10, Window::Calls(10))),
         "provider `p`: breaker.failure_rate = 0.0000000001: must be at least 1e-9 (ratios are kept to the nearest billionth)"),
        ("slow ratio below the precision", with_breaker(Breaker::default().slow_call(S, 4e-10)),
         "provider `p`: breaker.slow_call_ratio = 0.0000000004: must be at least 1e-9 (ratios are kept to the nearest billionth)"),
        ("queue timeout too long", with_provider(Provider::new("p").bulkhead(Bulkhead::new(1).queue(5).queue_timeout(Duration::MAX))),
         "provider `p`: bulkhead.queue_timeout = 18446744073709551615.999999999s: must be at most 365 days (31536000s)"),
        ("queue timeout too long without a queue", with_provider(Provider::new("p").bulkhead(Bulkhead::new(1).queue_timeout(TOO_LONG))),
         "provider `p`: bulkhead.queue_timeout = 31536000.000000001s: must be at most 365 days (31536000s)"),
        ("call timeout too long", with_provider(Provider::new("p").call_timeout(Duration::MAX)),
         "provider `p`: call_timeout = 18446744073709551615.999999999s: must be at most 365 days (31536000s)"),
        ("first chunk timeout too long", with_provider(Provider::new("p").first_chunk_timeout(TOO_LONG)),
         "provider `p`: first_chunk_timeout = 31536000.000000001s: must be at most 365 days (31536000s)"),
        ("stall timeout too long", with_provider(Provider::new("p").stall_timeout(TOO_LONG)),
         "provider `p`: stall_timeout = 31536000.000000001s: must be at most 365 days (31536000s)"),
        ("adaptive window too long", with_provider(Provider::new("p").adaptive(Adaptive::new(Duration::MAX).tier(Tier::above(0)))),
         "provider `p`: adaptive.window = 18446744073709551615.999999999s: must be at most 365 days (31536000s)"),
        ("tier open too long", with_provider(Provider::new("p").adaptive(Adaptive::new(60 * S).tier(Tier::above(10).open_for(TOO_LONG)))),
         "provider `p`: adaptive.tiers.open_for = 31536000.000000001s: must be at most 365 days (31536000s)"),
        ("route deadline too long", with_route(Route::new("chat").providers(["a"]).deadline(Duration::MAX)),
         "route `chat`: deadline = 18446744073709551615.999999999s: must be at most 365 days (31536000s)"),
        ("wait too long", with_route(Route::new("chat").providers(["a"]).when_all_open(AllOpen::Wait(TOO_LONG))),
         "route `chat`: when_all_open = 31536000.000000001s: must be at most 365 days (31536000s)"),
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
            Provider::new("longest")
                .breaker(
                    Breaker::consecutive(1)
                        .failure_rate(1e-9, Window::Time(MAX_DURATION))
                        .slow_call(MAX_DURATION, 5e-10)
                        .open_for(MAX_DURATION)
                        .max_open_for(MAX_DURATION)
                        .trial_timeout(MAX_DURATION),
                )
                .bulkhead(Bulkhead::new(1).queue(1).queue_timeout(MAX_DURATION))
                .adaptive(Adaptive::new(MAX_DURATION).tier(Tier::above(0).open_for(MAX_DURATION)))
                .call_timeout(MAX_DURATION)
                .first_chunk_timeout(MAX_DURATION)
                .stall_timeout(MAX_DURATION),
        ],
        routes: vec![
            Route::new("r").providers(["edges", "defaults"]),
            Route::new("slowest")
                .providers(["longest"])
                .deadline(MAX_DURATION)
                .when_all_open(AllOpen::Wait(MAX_DURATION)),
        ],
        event_capacity: 1,
        unhealthy_ratio: 1.0,
        // Config grew a `fleet` field with the `redis` feature.
        ..Config::default()
    };
    ok.validate().unwrap();
}

#[test]
fn the_duration_limit_is_365_days() {
    assert_eq!(MAX_DURATION, 365 * DAY);
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
