//! Loading and rendering configurations as TOML, through the public API.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fusebox::{
    Adaptive, AllOpen, Breaker, Bulkhead, Config, ConfigError, Policy, Provider, Route, Scope,
    Tier, Window,
};

const FULL: &str = r#"
event_capacity = 1024        # optional
unhealthy_ratio = 0.5        # optional

[[providers]]
name = "anthropic"
call_timeout = "90s"         # optional

[providers.breaker]
consecutive = 3
open_for = "2m"
max_open_for = "10m"
jitter = 0.1
failure_rate = 0.5
window = "100 calls"
minimum_calls = 10
slow_call = "20s"
slow_call_ratio = 0.8
half_open_max_calls = 3
success_threshold = 2
trial_timeout = "30s"

[providers.bulkhead]
max_concurrent = 10
queue = 100
queue_timeout = "30s"

[providers.adaptive]
window = "60s"
hysteresis = 0.1
tiers = [ { above = 100, failures = 3, open_for = "30s" }, { above = 0, failures = 10 } ]

[[providers]]
name = "openai"

[[routes]]
name = "chat"
providers = ["anthropic", "openai"]
policy = "priority"
deadline = "2m"
when_all_open = "fail_fast"
"#;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn full() -> Config {
    Config {
        providers: vec![
            Provider::new("anthropic")
                .call_timeout(secs(90))
                .breaker(
                    Breaker::consecutive(3)
                        .open_for(secs(120))
                        .max_open_for(secs(600))
                        .jitter(0.1)
                        .failure_rate(0.5, Window::Calls(100))
                        .minimum_calls(10)
                        .slow_call(secs(20), 0.8)
                        .half_open_max_calls(3)
                        .success_threshold(2)
                        .trial_timeout(secs(30)),
                )
                .bulkhead(Bulkhead::new(10).queue(100).queue_timeout(secs(30)))
                .adaptive(
                    Adaptive::new(secs(60))
                        .hysteresis(0.1)
                        .tier(Tier::above(100).failures(3).open_for(secs(30)))
                        .tier(Tier::above(0).failures(10)),
                ),
            Provider::new("openai"),
        ],
        routes: vec![Route::new("chat")
            .providers(["anthropic", "openai"])
            .policy(Policy::Priority)
            .deadline(secs(120))
            .when_all_open(AllOpen::FailFast)],
        event_capacity: 1024,
        unhealthy_ratio: 0.5,
        ..Config::default()
    }
}

fn round_trip(config: &Config) {
    config.validate().expect("the test configuration is valid");
    let text = config.to_toml_string();
    let back = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(&back, config, "{text}");
}

fn err(text: &str) -> ConfigError {
    Config::from_toml_str(text).expect_err("the document should be rejected")
}

/// Asserts an `At` error on `line` naming `field` whose message contains each of `parts`.
fn assert_at(e: &ConfigError, line: usize, field: Option<&str>, parts: &[&str]) {
    assert!(
        matches!(e, ConfigError::At { line: l, .. } if *l == line),
        "{e:?}"
    );
    assert_eq!(e.field(), field, "{e:?}");
    let shown = e.to_string();
    for part in parts {
        assert!(shown.contains(part), "{shown:?} lacks {part:?}");
    }
}

#[test]
fn the_documented_example_parses_to_the_builders_configuration() {
    assert_eq!(Config::from_toml_str(FULL).expect("parses"), full());
}

#[test]
fn defaults_only() {
    let config = Config::from_toml_str("[[providers]]\nname = \"a\"\n").expect("parses");
    let expected = Config {
        providers: vec![Provider::new("a")],
        ..Config::default()
    };
    assert_eq!(config, expected);
    round_trip(&expected);
}

#[test]
fn round_trips() {
    round_trip(&full());
    round_trip(&Config {
        providers: vec![
            Provider::new("rate").breaker(
                Breaker::rate_based()
                    .failure_rate(0.35, Window::Time(Duration::from_millis(90_500)))
                    .slow_call(Duration::from_millis(2_250), 0.1)
                    .jitter(0.0),
            ),
            Provider::new("adaptive-default").adaptive(Adaptive::default()),
            Provider::new("adaptive-custom").adaptive(
                Adaptive::new(Duration::from_secs(5400))
                    .hysteresis(0.3)
                    .tier(Tier::above(7).open_for(Duration::from_nanos(1_000_000_001)))
                    .tier(Tier::above(0)),
            ),
            Provider::new("bulkhead").bulkhead(Bulkhead::new(1)),
        ],
        routes: vec![
            Route::new("p").providers(["rate"]),
            Route::new("l")
                .providers(["bulkhead", "rate"])
                .policy(Policy::LeastLoaded)
                .when_all_open(AllOpen::Wait(secs(30))),
            Route::new("t")
                .providers(["adaptive-default", "adaptive-custom"])
                .policy(Policy::LowestLatency)
                .deadline(Duration::from_millis(1_500))
                .when_all_open(AllOpen::Wait(Duration::from_millis(250))),
        ],
        event_capacity: 7,
        unhealthy_ratio: 0.1 + 0.2,
        ..Config::default()
    });
}

#[test]
fn optional_settings_are_written_only_when_set() {
    let text = Config {
        providers: vec![Provider::new("a").breaker(Breaker::rate_based())],
        ..Config::default()
    }
    .to_toml_string();
    assert!(text.contains("consecutive = false"), "{text}");
    for absent in [
        "minimum_calls",
        "max_open_for",
        "trial_timeout",
        "slow_call",
        "bulkhead",
    ] {
        assert!(!text.contains(absent), "{absent} in {text}");
    }
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let e = err("[[providers]]\nname = \"a\"\ncall_timeout = \"30s\n");
    assert!(matches!(e, ConfigError::Toml { line: 3, .. }), "{e:?}");
    assert_eq!(e.line(), Some(3));

    match &e {
        ConfigError::Toml {
            line,
            column,
            message,
        } => {
            assert_eq!(
                (*line, *column),
                (3, 20),
                "the end of the unterminated string"
            );
            assert!(!message.ends_with('\n'));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_keys_name_their_field_scope_and_line() {
    let e = err("[[providers]]\nname = \"a\"\n\n[providers.breaker]\nconsecutiv = 3\n");
    assert_at(&e, 5, Some("breaker.consecutiv"), &[]);
    assert_eq!(
        e.to_string(),
        "TOML line 5: provider `a`: unknown field `breaker.consecutiv`; expected one of \
         consecutive, open_for, max_open_for, jitter, failure_rate, window, minimum_calls, \
         slow_call, slow_call_ratio, half_open_max_calls, success_threshold, trial_timeout, \
         rate_limited_for"
    );
    let e = err("evnt_capacity = 3\n[[providers]]\nname = \"a\"\n");
    assert_at(
        &e,
        1,
        Some("evnt_capacity"),
        &["supervisor: unknown field `evnt_capacity`"],
    );
    let e = err("[[providers]]\nname = \"a\"\nbulkhead = { max_concurrent = 1, qeue = 2 }\n");
    assert_at(&e, 3, Some("bulkhead.qeue"), &["provider `a`"]);
    let e = err("[[routes]]\nname = \"r\"\nprovider = [\"a\"]\n");
    assert_at(
        &e,
        3,
        Some("provider"),
        &["route `r`: unknown field `provider`"],
    );
    let e = err("[defaults]\nname = \"x\"\n[[providers]]\nname = \"a\"\n");
    assert_at(&e, 2, Some("name"), &["[defaults]: unknown field `name`"]);
}

#[test]
fn values_of_the_wrong_type_say_what_was_expected_and_quote_the_value() {
    let provider = |extra: &str| err(&format!("[[providers]]\nname = \"a\"\n{extra}\n"));
    let cases: [(&str, &str, &str); 10] = [
        (
            "call_timeout = 30",
            "call_timeout",
            "provider `a`: call_timeout = 30: expected a duration such as \"250ms\", \"30s\", \"2m\" or \"1h 30m\"",
        ),
        (
            "bulkhead = { max_concurrent = \"ten\" }",
            "bulkhead.max_concurrent",
            "provider `a`: bulkhead.max_concurrent = \"ten\": expected an integer",
        ),
        (
            "bulkhead = { max_concurrent = 2.5 }",
            "bulkhead.max_concurrent",
            "provider `a`: bulkhead.max_concurrent = 2.5: expected an integer",
        ),
        (
            "breaker = { jitter = \"0.1\" }",
            "breaker.jitter",
            "provider `a`: breaker.jitter = \"0.1\": expected a number",
        ),
        (
            "breaker = { consecutive = \"3\" }",
            "breaker.consecutive",
            "provider `a`: breaker.consecutive = \"3\": expected an integer, or false to disable the condition",
        ),
        (
            "breaker = { open_for = \"soon\" }",
            "breaker.open_for",
            "provider `a`: breaker.open_for = \"soon\": expected a duration such as \"250ms\", \"30s\", \"2m\" or \"1h 30m\"",
        ),
        (
            "record_durations = \"yes\"",
            "record_durations",
            "provider `a`: record_durations = \"yes\": expected true or false",
        ),
        (
            "breaker = 3",
            "breaker",
            "provider `a`: breaker = 3: expected a table",
        ),
        (
            "meta = { model = [1] }",
            "meta",
            "provider `a`: meta = [1]: expected a string, a number or a boolean",
        ),
        (
            "breaker = { window = 100 }",
            "breaker.window",
            "provider `a`: breaker.window = 100: expected \"<n> calls\" or a duration such as \"60s\"",
        ),
    ];
    for (line, field, message) in cases {
        let e = provider(line);
        assert_at(&e, 3, Some(field), &[]);
        assert_eq!(e.to_string(), format!("TOML line 3: {message}"), "{line}");
    }
    let e = err("[[providers]]\nname = 5\n");
    assert_at(&e, 2, Some("providers.name"), &["expected a string"]);
    let e = err("[[providers]]\ncall_timeout = \"1s\"\n");
    assert_at(&e, 1, None, &["provider name must not be empty"]);
    let e = err("providers = 3\n");
    assert_at(&e, 1, Some("providers"), &["expected an array of tables"]);
    let e = err("[[providers]]\nname = \"a\"\n[[routes]]\nname = \"r\"\nproviders = [\"a\", 2]\n");
    assert_at(
        &e,
        5,
        Some("providers"),
        &["route `r`: providers = 2: expected a string"],
    );
    let e = err("[[providers]]\nname = \"a\"\n[[routes]]\nname = \"r\"\n");
    assert_at(&e, 4, None, &["route `r` lists no providers"]);
}

#[test]
fn each_integer_field_has_one_range_whatever_the_value() {
    let provider = |table: &str| err(&format!("[[providers]]\nname = \"a\"\n{table}\n"));
    for n in ["0", "-1", "4294967296", "99999999999999999999"] {
        let e = provider(&format!("bulkhead = {{ max_concurrent = {n} }}"));
        assert_eq!(
            e.to_string(),
            format!("TOML line 3: provider `a`: bulkhead.max_concurrent = {n}: must be from 1 to 4294967295"),
        );
        let e = provider(&format!("breaker = {{ consecutive = {n} }}"));
        assert_eq!(
            e.to_string(),
            format!("TOML line 3: provider `a`: breaker.consecutive = {n}: must be from 1 to 4294967295, or false to disable the condition"),
        );
        let e = err(&format!(
            "event_capacity = {n}\n[[providers]]\nname = \"a\"\n"
        ));
        assert_eq!(
            e.to_string(),
            format!("TOML line 1: supervisor: event_capacity = {n}: must be at least 1 and at most 1048576 (the bus allocates it up front)"),
        );
    }
    for n in ["-1", "4294967296"] {
        let e = provider(&format!("bulkhead = {{ max_concurrent = 1, queue = {n} }}"));
        assert_at(
            &e,
            3,
            Some("bulkhead.queue"),
            &["must be from 0 to 4294967295"],
        );
    }
    for calls in ["0 calls", "1000001 calls", "99999999999999999999999 calls"] {
        let e = provider(&format!(
            "breaker = {{ failure_rate = 0.5, window = \"{calls}\" }}"
        ));
        assert_eq!(
            e.to_string(),
            format!("TOML line 3: provider `a`: breaker.window = \"{calls}\": must be between 1 and 1000000 calls"),
        );
    }
    // A value validation rejects is quoted as written too.
    let e = provider("breaker = { open_for = \"0s\" }");
    assert_eq!(
        e.to_string(),
        "TOML line 3: provider `a`: breaker.open_for = \"0s\": must be longer than zero"
    );
    // Ratios accept integers.
    let config = Config::from_toml_str(
        "unhealthy_ratio = 1\n[[providers]]\nname = \"a\"\nbreaker = { jitter = 0 }\n",
    )
    .unwrap();
    assert_eq!(config.unhealthy_ratio, 1.0);
}

#[test]
fn providers_inherit_defaults_and_override_them_key_by_key() {
    let config = Config::from_toml_str(
        r#"
[defaults]
call_timeout = "60s"
meta = { region = "eu", tier = 2 }
breaker = { consecutive = 3, open_for = "2m" }
bulkhead = { max_concurrent = 10 }

[[providers]]
name = "anthropic"
meta = { base_url = "https://api.anthropic.com", model = "claude-sonnet-4-6" }
breaker = { open_for = "30s" }

[[providers]]
name = "openai"
call_timeout = "90s"
meta = { region = "us" }
bulkhead = { max_concurrent = 4, queue = 8 }
adaptive = {}
"#,
    )
    .unwrap();
    let expected = vec![
        Provider::new("anthropic")
            .call_timeout(secs(60))
            .meta("region", "eu")
            .meta("tier", "2")
            .meta("base_url", "https://api.anthropic.com")
            .meta("model", "claude-sonnet-4-6")
            .breaker(Breaker::consecutive(3).open_for(secs(30)))
            .bulkhead(Bulkhead::new(10)),
        Provider::new("openai")
            .call_timeout(secs(90))
            .meta("region", "us")
            .meta("tier", "2")
            .breaker(Breaker::consecutive(3).open_for(secs(120)))
            .bulkhead(Bulkhead::new(4).queue(8))
            .adaptive(Adaptive::default()),
    ];
    assert_eq!(config.providers, expected);
    round_trip(&config);
    assert!(config
        .to_toml_string()
        .contains("model = \"claude-sonnet-4-6\""));
}

#[test]
fn errors_in_defaults_point_at_defaults() {
    let e = err("[defaults]\nbreaker = { consecutive = \"x\" }\n[[providers]]\nname = \"a\"\n");
    assert_eq!(
        e.to_string(),
        "TOML line 2: [defaults]: breaker.consecutive = \"x\": expected an integer, or false to disable the condition"
    );
    assert_eq!(e.field(), Some("breaker.consecutive"));
    let e = err("[defaults]\n[defaults.breaker]\nconsecutiv = 1\n[[providers]]\nname = \"a\"\n");
    assert_at(
        &e,
        3,
        Some("breaker.consecutiv"),
        &["[defaults]: unknown field"],
    );
    // An invalid combination is the inheriting provider's, at the line it was written.
    let e = err("[defaults]\nbreaker = { success_threshold = 2 }\n[[providers]]\nname = \"a\"\n");
    assert_eq!(
        e.to_string(),
        "TOML line 2: provider `a`: breaker.success_threshold = 2: must not exceed breaker.half_open_max_calls"
    );
}

#[test]
fn config_is_serde_in_the_toml_format() {
    let config = full();
    // JSON out and back.
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["providers"][0]["breaker"]["consecutive"], 3);
    assert_eq!(json["routes"][0]["when_all_open"], "fail_fast");
    let back: Config = serde_json::from_value(json).unwrap();
    assert_eq!(back, config);

    // Embedded in an application's TOML.
    #[derive(serde::Deserialize)]
    struct App {
        name: String,
        fusebox: Config,
    }
    let app: App = toml::from_str(&format!(
        "name = \"agent\"\n{}",
        config
            .to_toml_string()
            .replace("[[providers", "[[fusebox.providers")
            .replace("[providers", "[fusebox.providers")
            .replace("[[routes", "[[fusebox.routes")
            .replace("event_capacity", "fusebox.event_capacity")
            .replace("unhealthy_ratio", "fusebox.unhealthy_ratio")
    ))
    .unwrap();
    assert_eq!(app.name, "agent");
    assert_eq!(app.fusebox, config);

    // Deserialising validates, with the same messages (no line: the outer format has its own).
    let bad =
        serde_json::json!({ "providers": [{ "name": "a", "bulkhead": { "max_concurrent": 0 } }] });
    let e = serde_json::from_value::<Config>(bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        "provider `a`: bulkhead.max_concurrent = 0: must be from 1 to 4294967295"
    );
    let e = serde_json::from_value::<Config>(serde_json::json!([1])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "a fusebox configuration must be a table, not an array"
    );
}

const BREAKER_AT_5: &str = "[[providers]]\nname = \"anthropic\"\n\n[providers.breaker]\n";

#[test]
fn rejected_values_carry_their_line_and_field() {
    let e = err(&format!(
        "{BREAKER_AT_5}consecutive = 3\nopen_for = \"2m\"\nfailure_rate = 1.5\n"
    ));
    assert_at(
        &e,
        7,
        Some("breaker.failure_rate"),
        &["provider `anthropic`", "breaker.failure_rate", "1.5"],
    );
    assert!(e.to_string().starts_with("TOML line 7: "), "{e}");
    match &e {
        ConfigError::At { error, .. } => assert!(matches!(
            **error,
            ConfigError::InvalidValue { scope: Scope::Provider(ref p), .. } if p == "anthropic"
        )),
        other => panic!("{other:?}"),
    }

    let e = err(&format!("{BREAKER_AT_5}open_for = \"30 parsecs\"\n"));
    assert_at(&e, 5, Some("breaker.open_for"), &["30 parsecs"]);
    let e = err(&format!("{BREAKER_AT_5}jitter = 0.2\nopen_for = \"0s\"\n"));
    assert_at(
        &e,
        6,
        Some("breaker.open_for"),
        &["must be longer than zero"],
    );
    let e = err(&format!("{BREAKER_AT_5}\nconsecutive = -1\n"));
    assert_at(&e, 6, Some("breaker.consecutive"), &["-1"]);
    let e = err(&format!("{BREAKER_AT_5}consecutive = true\n"));
    assert_at(&e, 5, Some("breaker.consecutive"), &["true"]);
    let e = err(&format!("{BREAKER_AT_5}consecutive = 4294967296\n"));
    assert_at(&e, 5, Some("breaker.consecutive"), &["4294967296"]);
    let e = err(&format!(
        "{BREAKER_AT_5}failure_rate = 0.5\nwindow = \"ten calls\"\n"
    ));
    assert_at(&e, 6, Some("breaker.window"), &["ten calls"]);
    let e = err(&format!(
        "{BREAKER_AT_5}failure_rate = 0.5\nwindow = \"5 calls\"\nminimum_calls = 6\n"
    ));
    assert_at(&e, 7, Some("breaker.minimum_calls"), &["6"]);
    let e = err(&format!(
        "{BREAKER_AT_5}half_open_max_calls = 2\nsuccess_threshold = 3\n"
    ));
    assert_at(&e, 6, Some("breaker.success_threshold"), &["3"]);
    let e = err(&format!(
        "{BREAKER_AT_5}open_for = \"1m\"\nmax_open_for = \"30s\"\n"
    ));
    assert_at(&e, 6, Some("breaker.max_open_for"), &["30s"]);
}

#[test]
fn slow_call_and_its_ratio_go_together() {
    let e = err(&format!("{BREAKER_AT_5}slow_call = \"20s\"\n"));
    assert_at(
        &e,
        5,
        Some("breaker.slow_call_ratio"),
        &["breaker.slow_call_ratio"],
    );
    let e = err(&format!("{BREAKER_AT_5}\nslow_call_ratio = 0.5\n"));
    assert_at(&e, 6, Some("breaker.slow_call"), &["breaker.slow_call"]);
}

#[test]
fn bulkhead_adaptive_and_supervisor_errors() {
    let e = err("[[providers]]\nname = \"a\"\nbulkhead = { max_concurrent = 0 }\n");
    assert_at(&e, 3, Some("bulkhead.max_concurrent"), &["0"]);
    let e = err("[[providers]]\nname = \"a\"\nbulkhead = { queue = 3 }\n");
    assert_at(
        &e,
        3,
        Some("bulkhead.max_concurrent"),
        &["bulkhead.max_concurrent = (not set): is required in a bulkhead table"],
    );
    let e = err("[[providers]]\nname = \"a\"\n[providers.adaptive]\ntiers = [\n  { above = 5 },\n  { above = 9 },\n  { above = 5 },\n]\n");
    assert_at(&e, 7, Some("adaptive.tiers.above"), &["5"]);
    let e = err("[[providers]]\nname = \"a\"\n[providers.adaptive]\ntiers = [\n  { above = 5 },\n  { above = 0, failures = 0 },\n]\n");
    assert_at(&e, 6, Some("adaptive.tiers.failures"), &["0"]);
    let e = err("[[providers]]\nname = \"a\"\n[providers.adaptive]\nwindow = \"1m\"\ntiers = []\n");
    assert_at(&e, 5, Some("adaptive.tiers"), &[]);
    let e = err("[[providers]]\nname = \"a\"\n[providers.adaptive]\nhysteresis = 1.0\n");
    assert_at(&e, 4, Some("adaptive.hysteresis"), &["1"]);
    let e = err("unhealthy_ratio = 0.5\nevent_capacity = 0\n[[providers]]\nname = \"a\"\n");
    assert_at(&e, 2, Some("event_capacity"), &["supervisor", "0"]);
    let e = err("event_capacity = -3\n[[providers]]\nname = \"a\"\n");
    assert_at(&e, 1, Some("event_capacity"), &["-3"]);
    let e = err("event_capacity = 99999999999999999999\n");
    assert_at(&e, 1, Some("event_capacity"), &["99999999999999999999"]);
}

#[test]
fn provider_and_route_errors_point_at_names() {
    let two = "[[providers]]\nname = \"a\"\n[[providers]]\nname = \"b\"\n";
    let e = err(&format!("{two}[[providers]]\nname = \"a\"\n"));
    assert_at(&e, 6, None, &["provider `a` is defined twice"]);
    assert!(
        matches!(&e, ConfigError::At { error, .. } if matches!(**error, ConfigError::DuplicateProvider(_)))
    );

    let e = err(&format!(
        "{two}\n[[routes]]\nname = \"chat\"\nproviders = [\"a\", \"c\"]\n"
    ));
    assert_at(&e, 8, None, &["route `chat` names unknown provider `c`"]);
    let e = err(&format!(
        "{two}[[routes]]\nname = \"chat\"\nproviders = [\n  \"a\",\n  \"b\",\n  \"a\",\n]\n"
    ));
    assert_at(&e, 10, None, &["lists provider `a` twice"]);
    let e = err(&format!(
        "{two}[[routes]]\nname = \"chat\"\nproviders = []\n"
    ));
    assert_at(&e, 7, None, &["lists no providers"]);
    let e = err(&format!("{two}[[routes]]\nname = \"r\"\nproviders = [\"a\"]\n[[routes]]\nname = \"r\"\nproviders = [\"b\"]\n"));
    assert_at(&e, 9, None, &["route `r` is defined twice"]);
    let e = err("[[providers]]\nname = \" \"\n");
    assert_at(&e, 2, None, &["provider name must not be empty"]);

    let route =
        |extra: &str| format!("{two}[[routes]]\nname = \"r\"\nproviders = [\"a\"]\n{extra}\n");
    let e = err(&route("policy = \"random\""));
    assert_at(&e, 8, Some("policy"), &["route `r`", "random"]);
    let e = err(&route("when_all_open = { wait = \"abc\" }"));
    assert_at(&e, 8, Some("when_all_open"), &["abc"]);
    let e = err(&route("when_all_open = { wait = \"0s\" }"));
    assert_at(&e, 8, Some("when_all_open"), &["must be longer than zero"]);
    let e = err(&route("when_all_open = { wait = 30 }"));
    assert_at(&e, 8, Some("when_all_open"), &["wait = 30"]);
    let e = err(&route("when_all_open = \"fail_slow\""));
    assert_at(&e, 8, Some("when_all_open"), &["fail_slow"]);
    let e = err(&route("deadline = \"0s\""));
    assert_at(&e, 8, Some("deadline"), &["route `r`", "deadline"]);
}

#[test]
fn an_empty_document_has_no_providers() {
    assert!(matches!(err(""), ConfigError::NoProviders));
    assert!(matches!(err("# nothing\n\n"), ConfigError::NoProviders));
}

#[test]
fn files() {
    let missing = std::env::temp_dir().join("fusebox-no-such-dir/none.toml");
    let e = Config::from_toml_file(&missing).expect_err("missing file");
    assert!(matches!(e, ConfigError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("none.toml"), "{e}");

    let path = std::env::temp_dir().join(format!(
        "fusebox-config-toml-{}-{:?}.toml",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    std::fs::write(&path, FULL).expect("write the temp file");
    let loaded = Config::from_toml_file(&path);
    let _ = std::fs::remove_file(&path);
    assert_eq!(loaded.expect("parses"), full());
}

#[test]
fn hostile_input_is_rejected_without_panicking() {
    let alphabet = b"[]{}=\"'#\n\\ax1.,";
    let garbage: String = (0..1_000_000u32)
        .map(|i| i.wrapping_mul(2_654_435_761) >> 7)
        .map(|r| char::from(alphabet[r as usize % alphabet.len()]))
        .collect();
    assert!(matches!(err(&garbage), ConfigError::Toml { .. }));

    let deep = format!("x = {}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(err(&deep), ConfigError::Toml { .. }));
    let deep_tables = format!("x = {}{}", "{ a = ".repeat(10_000), "}".repeat(10_000));
    assert!(matches!(err(&deep_tables), ConfigError::Toml { .. }));
    let dotted = format!("{} = 1", vec!["a"; 10_000].join("."));
    assert!(matches!(err(&dotted), ConfigError::Toml { .. }));

    let e = err("event_capacity = 99999999999999999999999999999999999999999999\n");
    assert!(e.line() == Some(1), "{e:?}");
    let e =
        err("[[providers]]\nname = \"a\"\nbreaker = { open_for = \"99999999999999999999999h\" }\n");
    assert_at(&e, 3, Some("breaker.open_for"), &[]);
    for odd in [
        "\u{0}",
        "\u{feff}",
        "é = 1",
        "[[providers]]\nname = \"é\"\ncall_timeout = \"1 é\"",
    ] {
        let _ = Config::from_toml_str(odd);
    }
}

mod generated {
    use std::time::Duration;

    use fusebox::{
        Adaptive, AllOpen, Breaker, Bulkhead, Config, Policy, Provider, Route, Tier, Window,
    };
    use proptest::option::of;
    use proptest::prelude::*;

    fn duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            (1u64..10_000_000).prop_map(Duration::from_secs),
            (1u64..10_000_000_000_000).prop_map(Duration::from_nanos),
        ]
    }

    /// In (0, 1].
    fn ratio() -> impl Strategy<Value = f64> {
        prop_oneof![Just(1.0), Just(0.1), f64::MIN_POSITIVE..1.0]
    }

    fn breaker() -> impl Strategy<Value = Breaker> {
        let window = prop_oneof![
            (1u32..1000).prop_flat_map(|n| (Just(Window::Calls(n)), of(1..=n))),
            (duration().prop_map(Window::Time), of(1u32..1000)),
        ];
        let trial = (1u32..10).prop_flat_map(|half| (Just(half), 1..=half));
        (
            (
                of(1u32..100),
                of(ratio()),
                window,
                of((duration(), ratio())),
            ),
            (
                duration(),
                of(duration()),
                0.0..1.0f64,
                trial,
                of(duration()),
            ),
        )
            .prop_map(
                |(
                    (consecutive, rate, (window, min), slow),
                    (open, extra, jitter, (half, success), trial),
                )| {
                    let mut b = consecutive.map_or_else(Breaker::rate_based, Breaker::consecutive);
                    b = b
                        .open_for(open)
                        .jitter(jitter)
                        .half_open_max_calls(half)
                        .success_threshold(success);
                    if let Some(rate) = rate {
                        b = b.failure_rate(rate, window);
                    }
                    if let Some(min) = min.filter(|_| rate.is_some()) {
                        b = b.minimum_calls(min);
                    }
                    if let Some((threshold, ratio)) = slow {
                        b = b.slow_call(threshold, ratio);
                    }
                    if let Some(extra) = extra {
                        b = b.max_open_for(open + extra);
                    }
                    if let Some(trial) = trial {
                        b = b.trial_timeout(trial);
                    }
                    b
                },
            )
    }

    fn adaptive() -> impl Strategy<Value = Adaptive> {
        let tiers = prop::collection::btree_map(0u32..10_000, (of(1u32..50), of(duration())), 1..5);
        prop_oneof![
            Just(Adaptive::default()),
            (duration(), 0.0..1.0f64, tiers).prop_map(|(window, hysteresis, tiers)| {
                tiers.into_iter().fold(
                    Adaptive::new(window).hysteresis(hysteresis),
                    |a, (above, (f, o))| {
                        let tier = Tier::above(above);
                        let tier = f.map_or(tier, |f| tier.failures(f));
                        a.tier(o.map_or(tier, |o| tier.open_for(o)))
                    },
                )
            }),
        ]
    }

    fn provider(name: String) -> impl Strategy<Value = Provider> {
        let bulkhead = (1u32..1000, 0u32..1000, duration()).prop_map(|(max, queue, timeout)| {
            Bulkhead::new(max).queue(queue).queue_timeout(timeout)
        });
        (breaker(), of(bulkhead), of(adaptive()), of(duration())).prop_map(move |(b, bh, a, t)| {
            let mut p = Provider::new(name.clone()).breaker(b);
            if let Some(bh) = bh {
                p = p.bulkhead(bh);
            }
            if let Some(a) = a {
                p = p.adaptive(a);
            }
            if let Some(t) = t {
                p = p.call_timeout(t);
            }
            p
        })
    }

    fn config() -> impl Strategy<Value = Config> {
        (1usize..5).prop_flat_map(|n| {
            let names: Vec<String> = (0..n).map(|i| format!("p \"{i}\"")).collect();
            let providers: Vec<_> = names.iter().cloned().map(provider).collect();
            let policy = prop_oneof![
                Just(Policy::Priority),
                Just(Policy::LeastLoaded),
                Just(Policy::LowestLatency)
            ];
            let all_open = prop_oneof![Just(AllOpen::FailFast), duration().prop_map(AllOpen::Wait)];
            let route = (
                prop::sample::subsequence(names, 1..=n).prop_shuffle(),
                policy,
                of(duration()),
                all_open,
            );
            let routes = prop::collection::vec(route, 0..4);
            (providers, routes, 1usize..1_000_000, ratio()).prop_map(
                |(providers, routes, event_capacity, unhealthy_ratio)| {
                    let routes = routes
                        .into_iter()
                        .enumerate()
                        .map(|(i, (members, policy, deadline, all_open))| {
                            let r = Route::new(format!("r{i}"))
                                .providers(members)
                                .policy(policy)
                                .when_all_open(all_open);
                            match deadline {
                                Some(d) => r.deadline(d),
                                None => r,
                            }
                        })
                        .collect();
                    Config {
                        providers,
                        routes,
                        event_capacity,
                        unhealthy_ratio,
                        ..Config::default()
                    }
                },
            )
        })
    }

    proptest! {
        #[test]
        fn any_valid_configuration_round_trips(config in config()) {
            prop_assert!(config.validate().is_ok(), "{:?}", config.validate());
            let text = config.to_toml_string();
            let back = Config::from_toml_str(&text);
            prop_assert!(back.is_ok(), "{:?}\n{}", back, text);
            prop_assert_eq!(back.ok(), Some(config), "{}", text);
        }
    }
}
