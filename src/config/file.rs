//! Loading a [`Config`] from TOML, rendering one back, and [`serde`] for embedding it in
//! an application's own configuration.
//!
//! Durations are [humantime](https://docs.rs/humantime) strings (`"250ms"`, `"30s"`, `"2m"`,
//! `"1h 30m"`). Every key outside `name`, `providers` (of a route) and
//! `bulkhead.max_concurrent` is optional and defaults as its builder does; unknown keys are
//! errors. A `[defaults]` table holds provider settings every provider inherits: a provider
//! overrides any of them, key by key (inside `breaker`, `bulkhead`, `adaptive`, `budget`,
//! `retry` and `meta`
//! too; a provider's `adaptive.tiers` replaces the inherited list).
//!
//! ```
//! let config = fusebox::Config::from_toml_str(r#"
//! event_capacity = 1024        # optional
//! unhealthy_ratio = 0.5        # optional
//!
//! [defaults]                   # optional: every key a provider takes but `name`
//! call_timeout = "60s"
//! meta = { region = "eu" }
//! breaker = { consecutive = 5, open_for = "1m" }
//!
//! [[providers]]
//! name = "anthropic"
//! call_timeout = "90s"         # optional; overrides [defaults]
//! record_durations = true      # optional: the call duration histogram
//! first_chunk_timeout = "20s"  # optional, streamed calls
//! stall_timeout = "10s"        # optional, streamed calls
//! slow_start = "10s"           # optional: ramp routed traffic up after a close
//! meta = { base_url = "https://api.anthropic.com", model = "claude-sonnet-4-6" }
//!
//! [providers.breaker]          # optional; every key optional, defaults from Breaker::default()
//! consecutive = 3              # an integer, or `false` to disable the condition
//! open_for = "2m"
//! max_open_for = "10m"
//! jitter = 0.1
//! failure_rate = 0.5
//! window = "100 calls"         # "<n> calls", or a duration
//! minimum_calls = 10
//! slow_call = "20s"            # slow_call and slow_call_ratio go together
//! slow_call_ratio = 0.8
//! half_open_max_calls = 3
//! success_threshold = 2
//! trial_timeout = "30s"
//! rate_limited_for = "5s"      # a 429 without Retry-After; "0s": an ordinary failure
//!
//! [providers.bulkhead]         # optional
//! max_concurrent = 10          # required inside the table
//! queue = 100
//! queue_timeout = "30s"
//!
//! [providers.adaptive]         # optional; an empty table means Adaptive::default()
//! window = "60s"
//! hysteresis = 0.1
//! tiers = [ { above = 100, failures = 3, open_for = "30s" }, { above = 0, failures = 10 } ]
//!
//! [[providers]]
//! name = "openai"
//! max_context = 128_000        # optional: the context window, in tokens
//!
//! [providers.budget]           # optional: a request or token limit, or from_headers
//! requests = 500               # per period
//! tokens = 200_000             # per period
//! period = "1m"                # optional, defaults to a minute
//! default_estimate = 1_000     # optional: what a call that declares none reserves
//! from_headers = false         # optional: follow the provider's rate-limit headers
//!
//! [providers.retry]            # optional; every key optional, defaults from Retry::new()
//! attempts = 3
//! backoff = "100ms"
//! max_backoff = "2s"
//! jitter = 0.5
//! budget = 0.2                 # the retry budget's ratio, or `false` for none
//! min_per_second = 10
//! budget_window = "10s"
//!
//! [[routes]]
//! name = "chat"
//! providers = ["anthropic", "openai"]
//! policy = "priority"          # "priority" | "least_loaded" | "lowest_latency"
//! deadline = "2m"              # optional
//! when_all_open = "fail_fast"  # or { wait = "30s" }
//! retry = { attempts = 2 }     # optional: replaces the members' own retry
//! on_content_policy = "moderated"  # optional: a route for content-policy refusals
//!
//! [[routes]]
//! name = "moderated"
//! providers = ["openai"]
//! "#)?;
//! assert_eq!(config.providers.len(), 2);
//! assert_eq!(config.providers[1].call_timeout_config(), Some(std::time::Duration::from_secs(60)));
//! assert_eq!(config.providers[0].metadata()["region"], "eu");
//! assert_eq!(config.routes[0].provider_names(), ["anthropic", "openai"]);
//! # Ok::<(), fusebox::ConfigError>(())
//! ```
//!
//! With the `redis` feature, a `[fleet]` table makes the supervisor share its circuits'
//! state changes with the other replicas of its fleet (`fusebox::fleet`); without it, a
//! `[fleet]` table is an error naming the feature:
//!
//! ```toml
//! [fleet]
//! url = "redis://127.0.0.1:6379/"   # required; redis:// or redis+unix://, no TLS
//! namespace = "prod"                # optional, "default"
//! resync_every = "1s"               # optional: every record re-read this often
//! trial_lease = "10s"               # optional: the longest a fleet-wide trial lease is held
//! lease_wait = "100ms"              # optional: a trial waits this long for the lease
//! connect_timeout = "1s"            # optional
//! replica = "api-1"                 # optional; a random name by default
//! ```
//!
//! # Errors
//!
//! Syntax errors are [`ConfigError::Toml`] with their line and column. Everything else is a
//! [`ConfigError::At`] with the line of the value (or key) at fault, wrapping an error that
//! names the provider or route and the field ([`ConfigError::field`]), and quotes the value
//! as written:
//!
//! ```text
//! TOML line 7: provider `anthropic`: bulkhead.max_concurrent = "ten": expected an integer
//! TOML line 9: provider `anthropic`: breaker.consecutive = 0: must be from 1 to 4294967295, or false to disable the condition
//! TOML line 4: [defaults]: unknown field `breaker.consecutiv`; expected one of consecutive, open_for, ...
//! ```
//!
//! Each integer field has one range, and every value outside it (negative, zero, too large)
//! gets the same message. A value written in `[defaults]` is reported against `[defaults]`
//! when it is malformed, and against the provider inheriting it when the combination is
//! invalid (such as an inherited `success_threshold` above the provider's own
//! `half_open_max_calls`), at the line where it was written either way.
//!
//! # Serde
//!
//! [`Config`] implements [`Serialize`] and [`Deserialize`] in this format, so an application
//! can embed it in its own configuration, in TOML or any other self-describing format:
//!
//! ```
//! #[derive(serde::Deserialize)]
//! struct App {
//!     listen: String,
//!     fusebox: fusebox::Config,
//! }
//!
//! let app: App = toml::from_str(r#"
//! listen = "127.0.0.1:8080"
//! [[fusebox.providers]]
//! name = "openai"
//! breaker = { consecutive = 3 }
//! "#).unwrap();
//! assert_eq!(app.fusebox.providers[0].breaker_config().consecutive_threshold(), Some(3));
//! ```
//!
//! Deserialising validates, as [`Config::from_toml_str`] does, and reports the same messages,
//! without line numbers (the surrounding format's error locates them, if it can).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Display;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::de::{DeArray, DeTable, DeValue};
use toml::{Spanned, Value};

use super::{
    Adaptive, AllOpen, Breaker, Bulkhead, Config, Policy, Provider, Route, Tier, Window,
    MAX_EVENT_CAPACITY, MAX_WINDOW_CALLS,
};
use crate::error::{ConfigError, Scope};

// What a value of the wrong type gets.
const INTEGER: &str = "expected an integer";
const NUMBER: &str = "expected a number";
const STRING: &str = "expected a string";
const BOOLEAN: &str = "expected true or false";
const TABLE: &str = "expected a table";
const TABLES: &str = "expected an array of tables";
const STRINGS: &str = "expected an array of strings";
const DURATION: &str = "expected a duration such as \"250ms\", \"30s\", \"2m\" or \"1h 30m\"";
const META: &str = "expected a string, a number or a boolean";

// Each integer field's one range.
const FROM_0: &str = "must be from 0 to 4294967295";
const FROM_1: &str = "must be from 1 to 4294967295";
const CONSECUTIVE: &str = "must be from 1 to 4294967295, or false to disable the condition";
const CONSECUTIVE_TYPE: &str = "expected an integer, or false to disable the condition";
/// As [`Config::validate`] words it.
const EVENT_CAPACITY: &str =
    "must be at least 1 and at most 1048576 (the bus allocates it up front)";
/// As [`Breaker`]'s validation words it.
const WINDOW_CALLS: &str = "must be between 1 and 1000000 calls";
const WINDOW: &str = "expected \"<n> calls\" or a duration such as \"60s\"";

/// The longest value quoted in an error.
const MAX_QUOTED: usize = 80;

const TOP_KEYS: &[&str] = &[
    "event_capacity",
    "unhealthy_ratio",
    "defaults",
    "providers",
    "routes",
    "fleet",
];
/// The keys of `[fleet]` (feature `redis`).
#[cfg(feature = "redis")]
const FLEET_KEYS: &[&str] = &[
    "url",
    "namespace",
    "resync_every",
    "trial_lease",
    "lease_wait",
    "connect_timeout",
    "replica",
];
const PROVIDER_KEYS: &[&str] = &[
    "name",
    "call_timeout",
    "first_chunk_timeout",
    "stall_timeout",
    "record_durations",
    "slow_start",
    "meta",
    "breaker",
    "bulkhead",
    "adaptive",
    "budget",
    "retry",
    "max_context",
];
const DEFAULTS_KEYS: &[&str] = &[
    "call_timeout",
    "first_chunk_timeout",
    "stall_timeout",
    "record_durations",
    "slow_start",
    "meta",
    "breaker",
    "bulkhead",
    "adaptive",
    "budget",
    "retry",
    "max_context",
];
const BREAKER_KEYS: &[&str] = &[
    "consecutive",
    "open_for",
    "max_open_for",
    "jitter",
    "failure_rate",
    "window",
    "minimum_calls",
    "slow_call",
    "slow_call_ratio",
    "half_open_max_calls",
    "success_threshold",
    "trial_timeout",
    "rate_limited_for",
];
const BULKHEAD_KEYS: &[&str] = &["max_concurrent", "queue", "queue_timeout"];
const ADAPTIVE_KEYS: &[&str] = &["window", "hysteresis", "tiers"];
const TIER_KEYS: &[&str] = &["above", "failures", "open_for"];
const ROUTE_KEYS: &[&str] = &[
    "name",
    "providers",
    "policy",
    "deadline",
    "when_all_open",
    "retry",
    "on_content_policy",
];
const BUDGET_KEYS: &[&str] = &[
    "requests",
    "tokens",
    "period",
    "default_estimate",
    "from_headers",
];
const RETRY_KEYS: &[&str] = &[
    "attempts",
    "backoff",
    "max_backoff",
    "jitter",
    "budget",
    "min_per_second",
    "budget_window",
];
/// The tables `[defaults]` merges into a provider key by key.
const MERGED_TABLES: &[&str] = &["breaker", "bulkhead", "adaptive", "meta", "budget", "retry"];

impl Config {
    /// Parses a whole configuration from TOML and validates it.
    ///
    /// Durations are humantime strings (`"250ms"`, `"30s"`, `"2m"`, `"1h 30m"`); a breaker
    /// window is `"<n> calls"` or a duration; `consecutive = false` disables that condition;
    /// a route's `when_all_open` is `"fail_fast"` or `{ wait = "30s" }`; a `[defaults]` table
    /// holds settings every provider inherits. Tables and keys left out take the builders'
    /// defaults; unknown keys are errors. [`to_toml_string`](Self::to_toml_string) writes
    /// this format; [the module docs](self) show all of it.
    ///
    /// ```
    /// let config = fusebox::Config::from_toml_str(r#"
    /// [[providers]]
    /// name = "anthropic"
    /// breaker = { consecutive = 3, open_for = "2m", failure_rate = 0.5, window = "50 calls" }
    /// bulkhead = { max_concurrent = 10, queue = 100 }
    /// meta = { base_url = "https://api.anthropic.com" }
    ///
    /// [[routes]]
    /// name = "chat"
    /// providers = ["anthropic"]
    /// when_all_open = { wait = "30s" }
    /// "#)?;
    /// assert_eq!(config.providers[0].name(), "anthropic");
    /// # Ok::<(), fusebox::ConfigError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigError::Toml`] for a syntax error; [`ConfigError::At`], with the line, for a
    /// value of the wrong type, an unknown key or a well-formed value that is rejected;
    /// [`ConfigError::NoProviders`] for a document without providers.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let root = DeTable::parse(text).map_err(|e| syntax_error(text, &e))?;
        let mut conv = Converter {
            text,
            scope: Scope::Supervisor,
            lines: Lines::default(),
            inherited: HashSet::new(),
        };
        let config = conv.config(root.get_ref())?;
        config.validate().map_err(|e| conv.lines.locate(e))?;
        Ok(config)
    }

    /// Reads a file and parses it with [`from_toml_str`](Self::from_toml_str).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Io`] naming the path when the file cannot be read (or is not UTF-8);
    /// otherwise as [`from_toml_str`](Self::from_toml_str).
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_str(&text)
    }

    /// Renders this configuration as TOML that [`from_toml_str`](Self::from_toml_str) reads
    /// back to an equal `Config`. Every provider is written whole (no `[defaults]`);
    /// optional settings are written only when set.
    pub fn to_toml_string(&self) -> String {
        toml::to_string(&RawConfig::from(self))
            .unwrap_or_else(|e| format!("# fusebox: cannot render this configuration: {e}\n"))
    }
}

/// In the TOML format, as [`Config::to_toml_string`] writes it.
impl Serialize for Config {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RawConfig::from(self).serialize(serializer)
    }
}

/// In the TOML format, validated as [`Config::from_toml_str`] validates it.
impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = Value::deserialize(deserializer)?;
        if !value.is_table() {
            let kind = value.type_str();
            let a = if kind.starts_with(['a', 'i']) {
                "an"
            } else {
                "a"
            };
            return Err(D::Error::custom(format!(
                "a fusebox configuration must be a table, not {a} {kind}"
            )));
        }
        let text = toml::to_string(&value).map_err(D::Error::custom)?;
        Config::from_toml_str(&text).map_err(|e| match e {
            // The line is of the re-rendered document: meaningless to the caller.
            ConfigError::At { error, .. } => D::Error::custom(error),
            other => D::Error::custom(other),
        })
    }
}

/// A syntax error, located by its byte span.
fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e.span().map_or((1, 1), |span| position(text, span.start));
    let message = e.message().trim_end().to_owned();
    ConfigError::Toml {
        line,
        column,
        message,
    }
}

/// The 1-based line and column (in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let bytes = text.as_bytes();
    let before = bytes.get(..offset).unwrap_or(bytes);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let rest = before.get(start..).unwrap_or_default();
    (line, rest.iter().filter(|&&b| b & 0xC0 != 0x80).count() + 1)
}

type Item<'i> = Spanned<DeValue<'i>>;

/// Where validated fields sit in the document, so that errors from [`Config::validate`] can
/// be given a line and the value as written.
#[derive(Default)]
struct Lines {
    fields: Vec<Noted>,
    providers: Vec<Named>,
    routes: Vec<Named>,
}

/// One field as converted.
struct Noted {
    scope: Scope,
    field: &'static str,
    /// The value as validation prints it.
    key: String,
    line: usize,
    /// The value as written.
    written: String,
}

/// A provider or route: its name and line and, for a route, the lines of its providers.
struct Named {
    name: String,
    line: usize,
    /// The line of a route's `providers` array.
    list: usize,
    /// Each provider a route lists, and its line.
    members: Vec<(String, usize)>,
}

/// The `nth` item whose name satisfies `f`.
fn find(items: &[Named], nth: usize, f: impl Fn(&str) -> bool) -> Option<&Named> {
    items.iter().filter(|item| f(&item.name)).nth(nth)
}

impl Lines {
    /// An error from [`Config::validate`], located: its line and, for a bad value, the value
    /// as written. A value inherited from `[defaults]` is reported against the provider
    /// inheriting it, at the line in `[defaults]`.
    fn locate(&self, e: ConfigError) -> ConfigError {
        let (providers, routes) = (&self.providers[..], &self.routes[..]);
        let blank = |name: &str| name.trim().is_empty();
        let member = |route: &str, provider: &str, nth: usize| {
            let members = &find(routes, 0, |r| r == route)?.members;
            let mut found = members.iter().filter(|m| m.0 == provider);
            found.nth(nth).map(|m| m.1)
        };
        let line = match &e {
            ConfigError::InvalidValue {
                scope,
                field,
                value,
                reason,
            } => {
                let same = || {
                    self.fields
                        .iter()
                        .filter(|f| &f.scope == scope && f.field == *field)
                };
                let mut matching = same().filter(|f| &f.key == value);
                // A duplicated tier boundary is reported at the second of the two.
                let found = match *field {
                    "adaptive.tiers.above" => matching.next_back(),
                    _ => matching.next(),
                };
                match found.or_else(|| same().next()) {
                    Some(noted) => {
                        let error = ConfigError::InvalidValue {
                            scope: scope.clone(),
                            field,
                            value: noted.written.clone(),
                            reason,
                        };
                        return ConfigError::At {
                            line: noted.line,
                            error: Box::new(error),
                        };
                    }
                    None => match scope {
                        Scope::Provider(name) => find(providers, 0, |p| p == name).map(|p| p.line),
                        Scope::Route(name) => find(routes, 0, |r| r == name).map(|r| r.line),
                        _ => None,
                    },
                }
            }
            ConfigError::EmptyName { kind: "provider" } => {
                find(providers, 0, blank).map(|p| p.line)
            }
            ConfigError::EmptyName { .. } => find(routes, 0, blank).map(|r| r.line),
            ConfigError::DuplicateProvider(name) => {
                find(providers, 1, |p| p == name).map(|p| p.line)
            }
            ConfigError::DuplicateRoute(name) => find(routes, 1, |r| r == name).map(|r| r.line),
            ConfigError::EmptyRoute(name) => find(routes, 0, |r| r == name).map(|r| r.list),
            ConfigError::UnknownProvider { route, provider } => member(route, provider, 0),
            ConfigError::DuplicateRouteProvider { route, provider } => member(route, provider, 1),
            _ => None,
        };
        match line {
            Some(line) => ConfigError::At {
                line,
                error: Box::new(e),
            },
            None => e,
        }
    }
}

/// Turns the parsed document into builders, checking each value's type and range and noting
/// where it sits.
struct Converter<'t> {
    text: &'t str,
    /// The provider, route or supervisor being converted.
    scope: Scope,
    lines: Lines,
    /// Where the keys and values written in `[defaults]` start.
    inherited: HashSet<usize>,
}

impl Converter<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        position(self.text, span.start).0
    }

    /// The value as written (strings with their quotes), shortened past [`MAX_QUOTED`].
    fn written(&self, span: Range<usize>) -> String {
        let text = self.text.get(span).unwrap_or_default().trim();
        match text.char_indices().nth(MAX_QUOTED) {
            Some((end, _)) => format!("{}…", &text[..end]),
            None => text.to_owned(),
        }
    }

    /// The scope an error about what starts at `span` belongs to: `[defaults]` for what was
    /// written there.
    fn scope_at(&self, span: &Range<usize>) -> Scope {
        if self.inherited.contains(&span.start) {
            Scope::Defaults
        } else {
            self.scope.clone()
        }
    }

    /// Notes where a converted field sits; `key` is its value as validation would print it.
    fn note(&mut self, field: &'static str, key: String, v: &Item<'_>) {
        let noted = Noted {
            scope: self.scope.clone(),
            field,
            key,
            line: self.line(v.span()),
            written: self.written(v.span()),
        };
        self.lines.fields.push(noted);
    }

    /// The error for a value of the wrong type or outside its range.
    fn reject(&self, field: &'static str, v: &Item<'_>, why: &'static str) -> ConfigError {
        self.reject_as(field, self.written(v.span()), v.span(), why)
    }

    fn reject_as(
        &self,
        field: &'static str,
        value: impl Display,
        span: Range<usize>,
        why: &'static str,
    ) -> ConfigError {
        let error = ConfigError::invalid(&self.scope_at(&span), field, value, why);
        ConfigError::At {
            line: self.line(span),
            error: Box::new(error),
        }
    }

    /// Rejects the first key (in document order) of `table` that is not in `known`.
    fn keys(
        &self,
        table: &DeTable<'_>,
        prefix: &str,
        known: &'static [&'static str],
    ) -> Result<(), ConfigError> {
        let unknown = table
            .keys()
            .filter(|k| !known.contains(&k.get_ref().as_ref()))
            .min_by_key(|k| k.span().start);
        match unknown {
            None => Ok(()),
            Some(key) => Err(ConfigError::At {
                line: self.line(key.span()),
                error: Box::new(ConfigError::UnknownField {
                    scope: self.scope_at(&key.span()),
                    field: format!("{prefix}{}", key.get_ref()),
                    expected: known,
                }),
            }),
        }
    }

    fn table<'a, 'i>(
        &self,
        field: &'static str,
        v: &'a Item<'i>,
    ) -> Result<&'a DeTable<'i>, ConfigError> {
        v.get_ref()
            .as_table()
            .ok_or_else(|| self.reject(field, v, TABLE))
    }

    fn array<'a, 'i>(
        &self,
        field: &'static str,
        v: &'a Item<'i>,
        why: &'static str,
    ) -> Result<&'a DeArray<'i>, ConfigError> {
        v.get_ref()
            .as_array()
            .ok_or_else(|| self.reject(field, v, why))
    }

    fn string<'a>(&self, field: &'static str, v: &'a Item<'_>) -> Result<&'a str, ConfigError> {
        v.get_ref()
            .as_str()
            .ok_or_else(|| self.reject(field, v, STRING))
    }

    fn boolean(
        &self,
        field: &'static str,
        v: Option<&Item<'_>>,
    ) -> Result<Option<bool>, ConfigError> {
        v.map(|v| {
            v.get_ref()
                .as_bool()
                .ok_or_else(|| self.reject(field, v, BOOLEAN))
        })
        .transpose()
    }

    /// An integer, saturated to `i128` (TOML integers are 64-bit; a longer one is kept as
    /// out of range).
    fn integer(
        &self,
        field: &'static str,
        v: &Item<'_>,
        why: &'static str,
    ) -> Result<i128, ConfigError> {
        let Some(n) = v.get_ref().as_integer() else {
            return Err(self.reject(field, v, why));
        };
        let digits = n.as_str();
        Ok(
            i128::from_str_radix(digits, n.radix()).unwrap_or(if digits.starts_with('-') {
                i128::MIN
            } else {
                i128::MAX
            }),
        )
    }

    /// An integer in `min..=u32::MAX`, else `range`.
    fn count(
        &mut self,
        field: &'static str,
        v: Option<&Item<'_>>,
        min: u32,
        range: &'static str,
    ) -> Result<Option<u32>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        let n = self.integer(field, v, INTEGER)?;
        let n = u32::try_from(n)
            .ok()
            .filter(|n| *n >= min)
            .ok_or_else(|| self.reject(field, v, range))?;
        self.note(field, n.to_string(), v);
        Ok(Some(n))
    }

    /// A number: a float, or an integer taken as one.
    fn number(
        &mut self,
        field: &'static str,
        v: Option<&Item<'_>>,
    ) -> Result<Option<f64>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        let x = match v.get_ref() {
            // `nan`, `+inf` and the like parse as floats; anything else is not a TOML float.
            DeValue::Float(f) => f.as_str().parse().unwrap_or(f64::NAN),
            DeValue::Integer(_) => self.integer(field, v, NUMBER)? as f64,
            _ => return Err(self.reject(field, v, NUMBER)),
        };
        self.note(field, x.to_string(), v);
        Ok(Some(x))
    }

    fn duration(
        &mut self,
        field: &'static str,
        v: Option<&Item<'_>>,
    ) -> Result<Option<Duration>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        let d = v
            .get_ref()
            .as_str()
            .and_then(|s| humantime::parse_duration(s.trim()).ok())
            .ok_or_else(|| self.reject(field, v, DURATION))?;
        self.note(field, render(d), v);
        Ok(Some(d))
    }

    fn config(&mut self, root: &DeTable<'_>) -> Result<Config, ConfigError> {
        self.keys(root, "", TOP_KEYS)?;
        let mut config = Config::default();
        if let Some(v) = root.get("event_capacity") {
            let n = self.integer("event_capacity", v, INTEGER)?;
            config.event_capacity = usize::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_EVENT_CAPACITY).contains(n))
                .ok_or_else(|| self.reject("event_capacity", v, EVENT_CAPACITY))?;
            self.note("event_capacity", config.event_capacity.to_string(), v);
        }
        if let Some(ratio) = self.number("unhealthy_ratio", root.get("unhealthy_ratio"))? {
            config.unhealthy_ratio = ratio;
        }
        let defaults = match root.get("defaults") {
            Some(v) => {
                self.scope = Scope::Defaults;
                let table = self.table("defaults", v)?;
                self.keys(table, "", DEFAULTS_KEYS)?;
                self.scope = Scope::Supervisor;
                mark(table, &mut self.inherited, 0);
                Some(table)
            }
            None => None,
        };
        if let Some(v) = root.get("providers") {
            for item in self.array("providers", v, TABLES)?.iter() {
                let provider = self.provider(item, defaults)?;
                config.providers.push(provider);
            }
        }
        if let Some(v) = root.get("routes") {
            for item in self.array("routes", v, TABLES)?.iter() {
                self.scope = Scope::Supervisor;
                let route = self.route(item)?;
                config.routes.push(route);
            }
        }
        if let Some(v) = root.get("fleet") {
            self.scope = Scope::Supervisor;
            self.fleet(v, &mut config)?;
        }
        Ok(config)
    }

    /// The `[fleet]` table: `url` required, every other key optional.
    #[cfg(feature = "redis")]
    fn fleet(&mut self, v: &Item<'_>, config: &mut Config) -> Result<(), ConfigError> {
        let table = self.table("fleet", v)?;
        self.keys(table, "fleet.", FLEET_KEYS)?;
        let Some(url) = table.get("url") else {
            return Err(self.reject("fleet.url", v, "[fleet] needs a url (redis://host:port/)"));
        };
        let url = self.string("fleet.url", url)?.to_owned();
        let mut fleet = super::Fleet::redis(url);
        if let Some(url) = table.get("url") {
            self.note("fleet.url", fleet.url(), url);
            // Quoted in errors without its password.
            if let Some(noted) = self.lines.fields.last_mut() {
                noted.written = format!("\"{}\"", fleet.url());
            }
        }
        if let Some(ns) = table.get("namespace") {
            let name = self.string("fleet.namespace", ns)?.to_owned();
            self.note("fleet.namespace", format!("{name:?}"), ns);
            fleet = fleet.namespace(name);
        }
        if let Some(replica) = table.get("replica") {
            let name = self.string("fleet.replica", replica)?.to_owned();
            self.note("fleet.replica", format!("{name:?}"), replica);
            fleet = fleet.replica(name);
        }
        if let Some(d) = self.duration("fleet.resync_every", table.get("resync_every"))? {
            fleet = fleet.resync_every(d);
        }
        if let Some(d) = self.duration("fleet.trial_lease", table.get("trial_lease"))? {
            fleet = fleet.trial_lease(d);
        }
        if let Some(d) = self.duration("fleet.lease_wait", table.get("lease_wait"))? {
            fleet = fleet.lease_wait(d);
        }
        if let Some(d) = self.duration("fleet.connect_timeout", table.get("connect_timeout"))? {
            fleet = fleet.connect_timeout(d);
        }
        config.fleet = Some(fleet);
        Ok(())
    }

    /// Without the `redis` feature a `[fleet]` table cannot be honoured: refused, by name.
    #[cfg(not(feature = "redis"))]
    fn fleet(&mut self, v: &Item<'_>, _: &mut Config) -> Result<(), ConfigError> {
        Err(self.reject(
            "fleet",
            v,
            "[fleet] needs fusebox built with its `redis` feature",
        ))
    }

    /// The name of a provider or route table: required, a string.
    fn name(
        &self,
        field: &'static str,
        kind: &'static str,
        item: &Item<'_>,
        table: &DeTable<'_>,
    ) -> Result<String, ConfigError> {
        match table.get("name") {
            Some(v) => Ok(self.string(field, v)?.to_owned()),
            None => Err(ConfigError::At {
                line: self.line(item.span()),
                error: Box::new(ConfigError::EmptyName { kind }),
            }),
        }
    }

    fn provider(
        &mut self,
        item: &Item<'_>,
        defaults: Option<&DeTable<'_>>,
    ) -> Result<Provider, ConfigError> {
        self.scope = Scope::Supervisor;
        let own = item
            .get_ref()
            .as_table()
            .ok_or_else(|| self.reject("providers", item, TABLES))?;
        let name = self.name("providers.name", "provider", item, own)?;
        let line = own
            .get("name")
            .map_or_else(|| self.line(item.span()), |v| self.line(v.span()));
        self.lines.providers.push(Named {
            name: name.clone(),
            line,
            list: 0,
            members: Vec::new(),
        });
        self.scope = Scope::Provider(name.clone());
        let merged;
        let table = match defaults {
            Some(defaults) => {
                merged = merge(defaults, own);
                &merged
            }
            None => own,
        };
        self.keys(table, "", PROVIDER_KEYS)?;

        let mut p = Provider::new(name);
        p.call_timeout = self.duration("call_timeout", table.get("call_timeout"))?;
        p.first_chunk_timeout =
            self.duration("first_chunk_timeout", table.get("first_chunk_timeout"))?;
        p.stall_timeout = self.duration("stall_timeout", table.get("stall_timeout"))?;
        p.slow_start = self.duration("slow_start", table.get("slow_start"))?;
        if let Some(record) = self.boolean("record_durations", table.get("record_durations"))? {
            p.record_durations = record;
        }
        if let Some(v) = table.get("meta") {
            let meta = self.table("meta", v)?;
            for (key, value) in meta.iter() {
                let text = match value.get_ref() {
                    DeValue::String(s) => s.to_string(),
                    DeValue::Integer(_) => self.integer("meta", value, META)?.to_string(),
                    DeValue::Float(f) => f.as_str().to_owned(),
                    DeValue::Boolean(b) => b.to_string(),
                    _ => return Err(self.reject("meta", value, META)),
                };
                p.meta.insert(key.get_ref().to_string(), text);
            }
        }
        if let Some(v) = table.get("breaker") {
            let t = self.table("breaker", v)?;
            p.breaker = self.breaker(t)?;
        }
        if let Some(v) = table.get("bulkhead") {
            let t = self.table("bulkhead", v)?;
            p.bulkhead = Some(self.bulkhead(v, t)?);
        }
        if let Some(v) = table.get("adaptive") {
            let t = self.table("adaptive", v)?;
            p.adaptive = Some(self.adaptive(t)?);
        }
        if let Some(v) = table.get("budget") {
            let t = self.table("budget", v)?;
            p.budget = Some(self.budget(t)?);
        }
        if let Some(v) = table.get("retry") {
            let t = self.table("retry", v)?;
            p.retry = Some(self.retry(t)?);
        }
        if let Some(v) = table.get("max_context") {
            p.max_context = Some(self.tokens("max_context", v)?);
        }
        Ok(p)
    }

    /// A token count: an integer from 0 to 2^64 - 1.
    fn tokens(&mut self, field: &'static str, v: &Item<'_>) -> Result<u64, ConfigError> {
        let n = self.integer(field, v, INTEGER)?;
        let n = u64::try_from(n)
            .map_err(|_| self.reject(field, v, "must be a number of tokens (0 or more)"))?;
        self.note(field, n.to_string(), v);
        Ok(n)
    }

    fn budget(&mut self, t: &DeTable<'_>) -> Result<crate::Budget, ConfigError> {
        self.keys(t, "budget.", BUDGET_KEYS)?;
        let mut b = crate::Budget::per_minute();
        if let Some(d) = self.duration("budget.period", t.get("period"))? {
            b.period = d;
        }
        b.requests = self.count("budget.requests", t.get("requests"), 0, FROM_0)?;
        if let Some(v) = t.get("tokens") {
            b.tokens = Some(self.tokens("budget.tokens", v)?);
        }
        if let Some(v) = t.get("default_estimate") {
            b.default_estimate = self.tokens("budget.default_estimate", v)?;
        }
        if let Some(on) = self.boolean("budget.from_headers", t.get("from_headers"))? {
            b.from_headers = on;
        }
        Ok(b)
    }

    fn retry(&mut self, t: &DeTable<'_>) -> Result<crate::Retry, ConfigError> {
        self.keys(t, "retry.", RETRY_KEYS)?;
        let mut r = crate::Retry::new();
        if let Some(n) = self.count("retry.attempts", t.get("attempts"), 0, FROM_0)? {
            r.attempts = n;
        }
        if let Some(d) = self.duration("retry.backoff", t.get("backoff"))? {
            r.base = d;
        }
        if let Some(d) = self.duration("retry.max_backoff", t.get("max_backoff"))? {
            r.cap = d;
        }
        if let Some(x) = self.number("retry.jitter", t.get("jitter"))? {
            r.jitter = x;
        }
        if let Some(v) = t.get("budget") {
            match v.get_ref() {
                DeValue::Boolean(false) => {
                    r.ratio = None;
                    self.note("retry.budget", "false".to_owned(), v);
                }
                _ => r.ratio = self.number("retry.budget", Some(v))?,
            }
        }
        if let Some(n) = self.count("retry.min_per_second", t.get("min_per_second"), 0, FROM_0)? {
            r.min_per_second = n;
        }
        if let Some(d) = self.duration("retry.budget_window", t.get("budget_window"))? {
            r.window = d;
        }
        Ok(r)
    }

    fn breaker(&mut self, t: &DeTable<'_>) -> Result<Breaker, ConfigError> {
        self.keys(t, "breaker.", BREAKER_KEYS)?;
        let mut b = Breaker::default();
        if let Some(v) = t.get("consecutive") {
            let field = "breaker.consecutive";
            b.consecutive = match v.get_ref() {
                DeValue::Boolean(false) => None,
                DeValue::Integer(_) => {
                    let n = self.integer(field, v, CONSECUTIVE_TYPE)?;
                    let n = u32::try_from(n)
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| self.reject(field, v, CONSECUTIVE))?;
                    Some(n)
                }
                _ => return Err(self.reject(field, v, CONSECUTIVE_TYPE)),
            };
            self.note(field, b.consecutive.unwrap_or_default().to_string(), v);
        }
        if let Some(d) = self.duration("breaker.open_for", t.get("open_for"))? {
            b.open_for = d;
        }
        b.max_open_for = self.duration("breaker.max_open_for", t.get("max_open_for"))?;
        if let Some(ratio) = self.number("breaker.jitter", t.get("jitter"))? {
            b.jitter = ratio;
        }
        b.failure_rate = self.number("breaker.failure_rate", t.get("failure_rate"))?;
        if let Some(v) = t.get("window") {
            let field = "breaker.window";
            let window = self
                .string(field, v)
                .ok()
                .and_then(parse_window)
                .ok_or_else(|| self.reject(field, v, WINDOW))?;
            b.window = match window {
                Parsed::Calls(n) => match u32::try_from(n) {
                    Ok(n) if (1..=MAX_WINDOW_CALLS).contains(&n) => Window::Calls(n),
                    _ => return Err(self.reject(field, v, WINDOW_CALLS)),
                },
                Parsed::Time(d) => Window::Time(d),
            };
            let key = match b.window {
                Window::Calls(n) => format!("{n} calls"),
                Window::Time(d) => render(d),
            };
            self.note(field, key, v);
        }
        b.minimum_calls = self.count("breaker.minimum_calls", t.get("minimum_calls"), 1, FROM_1)?;
        b.slow_call = match (t.get("slow_call"), t.get("slow_call_ratio")) {
            (None, None) => None,
            (Some(threshold), None) => {
                let why = "is required when breaker.slow_call is set";
                return Err(self.reject_as(
                    "breaker.slow_call_ratio",
                    "(not set)",
                    threshold.span(),
                    why,
                ));
            }
            (None, Some(ratio)) => {
                let why = "is required when breaker.slow_call_ratio is set";
                return Err(self.reject_as("breaker.slow_call", "(not set)", ratio.span(), why));
            }
            (threshold, ratio) => {
                let threshold = self.duration("breaker.slow_call", threshold)?;
                threshold.zip(self.number("breaker.slow_call_ratio", ratio)?)
            }
        };
        let half_open = t.get("half_open_max_calls");
        if let Some(n) = self.count("breaker.half_open_max_calls", half_open, 1, FROM_1)? {
            b.half_open_max_calls = n;
        }
        let success = t.get("success_threshold");
        if let Some(n) = self.count("breaker.success_threshold", success, 1, FROM_1)? {
            b.success_threshold = n;
        }
        b.trial_timeout = self.duration("breaker.trial_timeout", t.get("trial_timeout"))?;
        if let Some(d) = self.duration("breaker.rate_limited_for", t.get("rate_limited_for"))? {
            b.rate_limited_for = d;
        }
        Ok(b)
    }

    fn bulkhead(&mut self, v: &Item<'_>, t: &DeTable<'_>) -> Result<Bulkhead, ConfigError> {
        self.keys(t, "bulkhead.", BULKHEAD_KEYS)?;
        let field = "bulkhead.max_concurrent";
        let Some(max) = self.count(field, t.get("max_concurrent"), 1, FROM_1)? else {
            let why = "is required in a bulkhead table";
            return Err(self.reject_as(field, "(not set)", v.span(), why));
        };
        let mut b = Bulkhead::new(max);
        if let Some(n) = self.count("bulkhead.queue", t.get("queue"), 0, FROM_0)? {
            b.queue = n;
        }
        if let Some(d) = self.duration("bulkhead.queue_timeout", t.get("queue_timeout"))? {
            b.queue_timeout = d;
        }
        Ok(b)
    }

    fn adaptive(&mut self, t: &DeTable<'_>) -> Result<Adaptive, ConfigError> {
        self.keys(t, "adaptive.", ADAPTIVE_KEYS)?;
        let default = Adaptive::default();
        let mut a = Adaptive {
            window: self
                .duration("adaptive.window", t.get("window"))?
                .unwrap_or(default.window),
            hysteresis: self
                .number("adaptive.hysteresis", t.get("hysteresis"))?
                .unwrap_or(default.hysteresis),
            ..default
        };
        if let Some(v) = t.get("tiers") {
            let field = "adaptive.tiers";
            let tiers = self.array(field, v, TABLES)?;
            self.note(field, String::new(), v);
            a.tiers.clear();
            for item in tiers.iter() {
                let tier = item
                    .get_ref()
                    .as_table()
                    .ok_or_else(|| self.reject(field, item, TABLES))?;
                self.keys(tier, "adaptive.tiers.", TIER_KEYS)?;
                let field = "adaptive.tiers.above";
                let above = match tier.get("above") {
                    Some(v) => self.count(field, Some(v), 0, FROM_0)?.unwrap_or_default(),
                    None => {
                        let why = "is required in a tier";
                        return Err(self.reject_as(field, "(not set)", item.span(), why));
                    }
                };
                let mut t = Tier::above(above);
                t.failures =
                    self.count("adaptive.tiers.failures", tier.get("failures"), 1, FROM_1)?;
                t.open_for = self.duration("adaptive.tiers.open_for", tier.get("open_for"))?;
                a = a.tier(t);
            }
        }
        Ok(a)
    }

    fn route(&mut self, item: &Item<'_>) -> Result<Route, ConfigError> {
        let table = item
            .get_ref()
            .as_table()
            .ok_or_else(|| self.reject("routes", item, TABLES))?;
        let name = self.name("routes.name", "route", item, table)?;
        self.scope = Scope::Route(name.clone());
        self.keys(table, "", ROUTE_KEYS)?;
        let line = table
            .get("name")
            .map_or_else(|| self.line(item.span()), |v| self.line(v.span()));
        let mut members = Vec::new();
        let list = match table.get("providers") {
            Some(v) => {
                for p in self.array("providers", v, STRINGS)?.iter() {
                    let name = p
                        .get_ref()
                        .as_str()
                        .ok_or_else(|| self.reject("providers", p, STRING))?;
                    members.push((name.to_owned(), self.line(p.span())));
                }
                self.line(v.span())
            }
            None => line,
        };
        let mut r = Route::new(name.clone()).providers(members.iter().map(|m| &m.0));
        self.lines.routes.push(Named {
            name,
            line,
            list,
            members,
        });
        if let Some(v) = table.get("policy") {
            const WHY: &str = "must be \"priority\", \"least_loaded\" or \"lowest_latency\"";
            r.policy = match v.get_ref().as_str() {
                Some("priority") => Policy::Priority,
                Some("least_loaded") => Policy::LeastLoaded,
                Some("lowest_latency") => Policy::LowestLatency,
                _ => return Err(self.reject("policy", v, WHY)),
            };
        }
        r.deadline = self.duration("deadline", table.get("deadline"))?;
        if let Some(v) = table.get("when_all_open") {
            const WHY: &str = "must be \"fail_fast\" or { wait = \"<duration>\" }";
            r.when_all_open = match v.get_ref() {
                DeValue::String(s) if s == "fail_fast" => AllOpen::FailFast,
                DeValue::Table(t) if t.len() == 1 => match t.get("wait") {
                    Some(wait) => {
                        let d = wait
                            .get_ref()
                            .as_str()
                            .and_then(|s| humantime::parse_duration(s.trim()).ok())
                            .ok_or_else(|| self.reject("when_all_open", v, WHY))?;
                        self.note("when_all_open", render(d), v);
                        AllOpen::Wait(d)
                    }
                    None => return Err(self.reject("when_all_open", v, WHY)),
                },
                _ => return Err(self.reject("when_all_open", v, WHY)),
            };
        }
        if let Some(v) = table.get("retry") {
            let t = self.table("retry", v)?;
            r.retry = Some(self.retry(t)?);
        }
        if let Some(v) = table.get("on_content_policy") {
            let name = self.string("on_content_policy", v)?.to_owned();
            self.note("on_content_policy", name.clone(), v);
            r.on_content_policy = Some(name);
        }
        Ok(r)
    }
}

/// Notes where every key and value of a `[defaults]` table starts (to three levels, the
/// deepest the format goes: `adaptive.tiers[n].above`).
fn mark(table: &DeTable<'_>, starts: &mut HashSet<usize>, depth: usize) {
    for (key, value) in table.iter() {
        starts.insert(key.span().start);
        starts.insert(value.span().start);
        if depth < 3 {
            match value.get_ref() {
                DeValue::Table(t) => mark(t, starts, depth + 1),
                DeValue::Array(items) => {
                    for item in items.iter() {
                        starts.insert(item.span().start);
                        if let DeValue::Table(t) = item.get_ref() {
                            mark(t, starts, depth + 1);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// A provider's table with `[defaults]` under it: the provider's keys win, and the
/// [`MERGED_TABLES`] merge key by key.
fn merge<'i>(defaults: &DeTable<'i>, own: &DeTable<'i>) -> DeTable<'i> {
    let mut merged = defaults.clone();
    for (key, value) in own.iter() {
        let inherited = merged.remove(key.get_ref().as_ref());
        let value = match (inherited, value.get_ref()) {
            (Some(base), DeValue::Table(over))
                if MERGED_TABLES.contains(&key.get_ref().as_ref()) =>
            {
                match base.get_ref() {
                    DeValue::Table(base) => {
                        let mut table = base.clone();
                        for (k, v) in over.iter() {
                            table.remove(k.get_ref().as_ref());
                            table.insert(k.clone(), v.clone());
                        }
                        Spanned::new(value.span(), DeValue::Table(table))
                    }
                    _ => value.clone(),
                }
            }
            _ => value.clone(),
        };
        merged.insert(key.clone(), value);
    }
    merged
}

/// A breaker window as written.
enum Parsed {
    Calls(u64),
    Time(Duration),
}

/// `"<n> calls"` (or `"1 call"`) or a duration.
fn parse_window(text: &str) -> Option<Parsed> {
    let text = text.trim();
    match text
        .strip_suffix("calls")
        .or_else(|| text.strip_suffix("call"))
    {
        Some(n) => {
            let n = n.trim();
            let digits = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
            // Any number of digits: a huge count is out of range, not malformed.
            digits
                .then(|| n.parse().unwrap_or(u64::MAX))
                .map(Parsed::Calls)
        }
        None => humantime::parse_duration(text).ok().map(Parsed::Time),
    }
}

fn render(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

// The document as `to_toml_string` (and `Serialize`) writes it: `None` fields are left out.

#[derive(Serialize)]
struct RawConfig {
    event_capacity: u64,
    unhealthy_ratio: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    providers: Vec<RawProvider>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<RawRoute>,
    #[cfg(feature = "redis")]
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet: Option<RawFleet>,
}

#[cfg(feature = "redis")]
#[derive(Serialize)]
struct RawFleet {
    url: String,
    namespace: String,
    resync_every: String,
    trial_lease: String,
    lease_wait: String,
    connect_timeout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<String>,
}

#[derive(Serialize)]
struct RawProvider {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    call_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_chunk_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stall_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    record_durations: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slow_start: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    meta: BTreeMap<String, String>,
    breaker: RawBreaker,
    #[serde(skip_serializing_if = "Option::is_none")]
    bulkhead: Option<RawBulkhead>,
    #[serde(skip_serializing_if = "Option::is_none")]
    adaptive: Option<RawAdaptive>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<RawBudget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<RawRetry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_context: Option<u64>,
}

#[derive(Serialize)]
struct RawBudget {
    period: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    requests: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens: Option<u64>,
    default_estimate: u64,
    from_headers: bool,
}

#[derive(Serialize)]
struct RawRetry {
    attempts: u32,
    backoff: String,
    max_backoff: String,
    jitter: f64,
    /// A ratio, or `false` (unbudgeted).
    budget: Value,
    min_per_second: u32,
    budget_window: String,
}

impl From<&crate::Retry> for RawRetry {
    fn from(r: &crate::Retry) -> Self {
        RawRetry {
            attempts: r.attempts,
            backoff: render(r.base),
            max_backoff: render(r.cap),
            jitter: r.jitter,
            budget: r.ratio.map_or(Value::Boolean(false), Value::Float),
            min_per_second: r.min_per_second,
            budget_window: render(r.window),
        }
    }
}

#[derive(Serialize)]
struct RawBreaker {
    /// An integer, or `false`.
    consecutive: Value,
    open_for: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_open_for: Option<String>,
    jitter: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_rate: Option<f64>,
    window: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    minimum_calls: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slow_call: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slow_call_ratio: Option<f64>,
    half_open_max_calls: u32,
    success_threshold: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    trial_timeout: Option<String>,
    rate_limited_for: String,
}

#[derive(Serialize)]
struct RawBulkhead {
    max_concurrent: u32,
    queue: u32,
    queue_timeout: String,
}

#[derive(Serialize)]
struct RawAdaptive {
    window: String,
    hysteresis: f64,
    tiers: Vec<RawTier>,
}

#[derive(Serialize)]
struct RawTier {
    above: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    failures: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    open_for: Option<String>,
}

#[derive(Serialize)]
struct RawRoute {
    name: String,
    providers: Vec<String>,
    policy: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline: Option<String>,
    /// `"fail_fast"`, or `{ wait = "<duration>" }`.
    when_all_open: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<RawRetry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_content_policy: Option<String>,
}

impl From<&Config> for RawConfig {
    fn from(c: &Config) -> Self {
        RawConfig {
            event_capacity: u64::try_from(c.event_capacity).unwrap_or(u64::MAX),
            unhealthy_ratio: c.unhealthy_ratio,
            providers: c.providers.iter().map(RawProvider::from).collect(),
            routes: c.routes.iter().map(RawRoute::from).collect(),
            #[cfg(feature = "redis")]
            fleet: c.fleet.as_ref().map(|f| RawFleet {
                // Written whole: the rendered document must read back to an equal config.
                url: f.url.clone(),
                namespace: f.namespace.clone(),
                resync_every: render(f.resync_every),
                trial_lease: render(f.trial_lease),
                lease_wait: render(f.lease_wait),
                connect_timeout: render(f.connect_timeout),
                replica: f.replica.clone(),
            }),
        }
    }
}

impl From<&Provider> for RawProvider {
    fn from(p: &Provider) -> Self {
        let b = &p.breaker;
        let breaker = RawBreaker {
            consecutive: b.consecutive.map_or(Value::Boolean(false), |n| n.into()),
            open_for: render(b.open_for),
            max_open_for: b.max_open_for.map(render),
            jitter: b.jitter,
            failure_rate: b.failure_rate,
            window: match b.window {
                Window::Calls(n) => format!("{n} calls"),
                Window::Time(d) => render(d),
            },
            minimum_calls: b.minimum_calls,
            slow_call: b.slow_call.map(|s| render(s.0)),
            slow_call_ratio: b.slow_call.map(|s| s.1),
            half_open_max_calls: b.half_open_max_calls,
            success_threshold: b.success_threshold,
            trial_timeout: b.trial_timeout.map(render),
            rate_limited_for: render(b.rate_limited_for),
        };
        let tier = |t: &Tier| RawTier {
            above: t.above,
            failures: t.failures,
            open_for: t.open_for.map(render),
        };
        RawProvider {
            name: p.name.clone(),
            call_timeout: p.call_timeout.map(render),
            first_chunk_timeout: p.first_chunk_timeout.map(render),
            stall_timeout: p.stall_timeout.map(render),
            record_durations: (!p.record_durations).then_some(false),
            slow_start: p.slow_start.map(render),
            meta: p.meta.clone(),
            breaker,
            bulkhead: p.bulkhead.map(|b| RawBulkhead {
                max_concurrent: b.max_concurrent,
                queue: b.queue,
                queue_timeout: render(b.queue_timeout),
            }),
            adaptive: p.adaptive.as_ref().map(|a| RawAdaptive {
                window: render(a.window),
                hysteresis: a.hysteresis,
                tiers: a.tiers.iter().map(tier).collect(),
            }),
            budget: p.budget.map(|b| RawBudget {
                period: render(b.period),
                requests: b.requests,
                tokens: b.tokens,
                default_estimate: b.default_estimate,
                from_headers: b.from_headers,
            }),
            retry: p.retry.as_ref().map(RawRetry::from),
            max_context: p.max_context,
        }
    }
}

impl From<&Route> for RawRoute {
    fn from(r: &Route) -> Self {
        let policy = match r.policy {
            Policy::Priority => "priority",
            Policy::LeastLoaded => "least_loaded",
            Policy::LowestLatency => "lowest_latency",
        };
        let when_all_open = match r.when_all_open {
            AllOpen::FailFast => Value::from("fail_fast"),
            AllOpen::Wait(d) => Value::Table(
                [("wait".to_owned(), render(d).into())]
                    .into_iter()
                    .collect(),
            ),
        };
        RawRoute {
            name: r.name.clone(),
            providers: r.providers.clone(),
            policy,
            deadline: r.deadline.map(render),
            when_all_open,
            retry: r.retry.as_ref().map(RawRetry::from),
            on_content_policy: r.on_content_policy.clone(),
        }
    }
}
