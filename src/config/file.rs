//! Loading a [`Config`] from TOML, and rendering one back.
//!
//! Durations are [humantime](https://docs.rs/humantime) strings (`"250ms"`, `"30s"`, `"2m"`,
//! `"1h 30m"`). Every key outside `name`, `providers` (of a route) and
//! `bulkhead.max_concurrent` is optional and defaults as its builder does; unknown keys are
//! errors. Syntax and type errors are reported as [`ConfigError::Toml`] with their line and
//! column; values that parse but are rejected as [`ConfigError::At`] with their line.
//!
//! ```
//! let config = fusebox::Config::from_toml_str(r#"
//! event_capacity = 1024        # optional
//! unhealthy_ratio = 0.5        # optional
//!
//! [[providers]]
//! name = "anthropic"
//! call_timeout = "90s"         # optional
//! record_durations = true      # optional: the call duration histogram
//! first_chunk_timeout = "20s"  # optional, streamed calls
//! stall_timeout = "10s"        # optional, streamed calls
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
//!
//! [[routes]]
//! name = "chat"
//! providers = ["anthropic", "openai"]
//! policy = "priority"          # "priority" | "least_loaded" | "lowest_latency"
//! deadline = "2m"              # optional
//! when_all_open = "fail_fast"  # or { wait = "30s" }
//! "#)?;
//! assert_eq!(config.providers.len(), 2);
//! assert_eq!(config.routes[0].provider_names(), ["anthropic", "openai"]);
//! # Ok::<(), fusebox::ConfigError>(())
//! ```

use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::{Spanned, Value};

use super::{Adaptive, AllOpen, Breaker, Bulkhead, Config, Policy, Provider, Route, Tier, Window};
use crate::error::{ConfigError, Scope};

const DURATION: &str = "must be a duration such as \"250ms\", \"30s\", \"2m\" or \"1h 30m\"";
const COUNT: &str = "must be an integer from 0 to 4294967295";

impl Config {
    /// Parses a whole configuration from TOML and validates it.
    ///
    /// Durations are humantime strings (`"250ms"`, `"30s"`, `"2m"`, `"1h 30m"`); a breaker
    /// window is `"<n> calls"` or a duration; `consecutive = false` disables that condition;
    /// a route's `when_all_open` is `"fail_fast"` or `{ wait = "30s" }`. Tables and keys left
    /// out take the builders' defaults; unknown keys are errors.
    /// [`to_toml_string`](Self::to_toml_string) writes this format.
    ///
    /// ```
    /// let config = fusebox::Config::from_toml_str(r#"
    /// [[providers]]
    /// name = "anthropic"
    /// breaker = { consecutive = 3, open_for = "2m", failure_rate = 0.5, window = "50 calls" }
    /// bulkhead = { max_concurrent = 10, queue = 100 }
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
    /// [`ConfigError::Toml`] for a syntax error, a value of the wrong type or an unknown key;
    /// [`ConfigError::At`], with the line, for a well-formed value that is rejected;
    /// [`ConfigError::NoProviders`] for a document without providers.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
        let (scope, lines) = (Scope::Supervisor, Lines::default());
        let mut conv = Converter { text, scope, lines };
        let config = conv.config(raw)?;
        config.validate().map_err(|e| match conv.lines.locate(&e) {
            Some(line) => ConfigError::At {
                line,
                error: Box::new(e),
            },
            None => e,
        })?;
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
    /// back to an equal `Config`. Optional settings are written only when set.
    pub fn to_toml_string(&self) -> String {
        let raw = RawConfig {
            event_capacity: Some(sp(i64::try_from(self.event_capacity)
                .unwrap_or(i64::MAX)
                .into())),
            unhealthy_ratio: Some(sp(self.unhealthy_ratio)),
            providers: self.providers.iter().map(RawProvider::from).collect(),
            routes: self.routes.iter().map(RawRoute::from).collect(),
        };
        toml::to_string(&raw)
            .unwrap_or_else(|e| format!("# fusebox: cannot render this configuration: {e}\n"))
    }
}

/// A parse or type error, located by its byte span.
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

// The document as written (and as `to_toml_string` writes it: `None` fields are left out).
// Integers are read as i128 so that out-of-range values are reported against their field.

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    event_capacity: Option<Spanned<i128>>,
    unhealthy_ratio: Option<Spanned<f64>>,
    #[serde(default)]
    providers: Vec<RawProvider>,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: Spanned<String>,
    call_timeout: Option<Spanned<String>>,
    first_chunk_timeout: Option<Spanned<String>>,
    stall_timeout: Option<Spanned<String>>,
    record_durations: Option<bool>,
    breaker: Option<RawBreaker>,
    bulkhead: Option<RawBulkhead>,
    adaptive: Option<RawAdaptive>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    consecutive: Option<Spanned<Value>>,
    open_for: Option<Spanned<String>>,
    max_open_for: Option<Spanned<String>>,
    jitter: Option<Spanned<f64>>,
    failure_rate: Option<Spanned<f64>>,
    window: Option<Spanned<String>>,
    minimum_calls: Option<Spanned<i128>>,
    slow_call: Option<Spanned<String>>,
    slow_call_ratio: Option<Spanned<f64>>,
    half_open_max_calls: Option<Spanned<i128>>,
    success_threshold: Option<Spanned<i128>>,
    trial_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawBulkhead {
    max_concurrent: Spanned<i128>,
    queue: Option<Spanned<i128>>,
    queue_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawAdaptive {
    window: Option<Spanned<String>>,
    hysteresis: Option<Spanned<f64>>,
    tiers: Option<Spanned<Vec<RawTier>>>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    above: Spanned<i128>,
    failures: Option<Spanned<i128>>,
    open_for: Option<Spanned<String>>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Spanned<String>,
    providers: Spanned<Vec<Spanned<String>>>,
    policy: Option<Spanned<String>>,
    deadline: Option<Spanned<String>>,
    when_all_open: Option<Spanned<Value>>,
}

/// Where things sit in the document, so that validation errors can be given a line.
#[derive(Default)]
struct Lines {
    /// (scope, field, the value as validation prints it, line)
    fields: Vec<(Scope, &'static str, String, usize)>,
    providers: Vec<Named>,
    routes: Vec<Named>,
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
    /// The line an error from [`Config::validate`] points at, if it can be found.
    fn locate(&self, e: &ConfigError) -> Option<usize> {
        let (providers, routes) = (&self.providers[..], &self.routes[..]);
        let blank = |name: &str| name.trim().is_empty();
        let member = |route: &str, provider: &str, nth: usize| {
            let members = &find(routes, 0, |r| r == route)?.members;
            let mut found = members.iter().filter(|m| m.0 == provider);
            found.nth(nth).map(|m| m.1)
        };
        match e {
            ConfigError::InvalidValue {
                scope,
                field,
                value,
                ..
            } => {
                let same = || {
                    self.fields
                        .iter()
                        .filter(|f| &f.0 == scope && f.1 == *field)
                };
                let mut matching = same().filter(|f| &f.2 == value);
                // A duplicated tier boundary is reported at the second of the two.
                let found = match *field {
                    "adaptive.tiers.above" => matching.next_back(),
                    _ => matching.next(),
                };
                let line = found.or_else(|| same().next()).map(|f| f.3);
                line.or_else(|| match scope {
                    Scope::Provider(name) => find(providers, 0, |p| p == name).map(|p| p.line),
                    Scope::Route(name) => find(routes, 0, |r| r == name).map(|r| r.line),
                    _ => None,
                })
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
        }
    }
}

/// Turns the raw document into builders, noting where each value sits.
struct Converter<'t> {
    text: &'t str,
    /// The provider, route or supervisor being converted.
    scope: Scope,
    lines: Lines,
}

impl Converter<'_> {
    fn line<T>(&self, v: &Spanned<T>) -> usize {
        position(self.text, v.span().start).0
    }

    /// Notes where a field sits; `key` is its value as validation would print it.
    fn note<T>(&mut self, field: &'static str, key: String, v: &Spanned<T>) {
        let line = self.line(v);
        self.lines
            .fields
            .push((self.scope.clone(), field, key, line));
    }

    /// The error for a value that cannot be converted.
    fn reject<T>(
        &self,
        field: &'static str,
        value: impl Display,
        why: &'static str,
        at: &Spanned<T>,
    ) -> ConfigError {
        let error = Box::new(ConfigError::invalid(&self.scope, field, value, why));
        ConfigError::At {
            line: self.line(at),
            error,
        }
    }

    /// The value as written, for a value of the wrong shape.
    fn written<T>(&self, v: &Spanned<T>) -> String {
        self.text
            .get(v.span())
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    fn count(
        &mut self,
        field: &'static str,
        v: Option<Spanned<i128>>,
    ) -> Result<Option<u32>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        let n =
            u32::try_from(*v.get_ref()).map_err(|_| self.reject(field, v.get_ref(), COUNT, &v))?;
        self.note(field, n.to_string(), &v);
        Ok(Some(n))
    }

    fn ratio(&mut self, field: &'static str, v: Option<Spanned<f64>>) -> Option<f64> {
        let v = v?;
        self.note(field, v.get_ref().to_string(), &v);
        Some(v.into_inner())
    }

    fn duration(
        &mut self,
        field: &'static str,
        v: Option<Spanned<String>>,
    ) -> Result<Option<Duration>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        let d = humantime::parse_duration(v.get_ref().trim())
            .map_err(|_| self.reject(field, v.get_ref(), DURATION, &v))?;
        self.note(field, render(d), &v);
        Ok(Some(d))
    }

    fn config(&mut self, raw: RawConfig) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(v) = raw.event_capacity {
            let why = "must be at least 1 and at most usize::MAX / 2";
            config.event_capacity = usize::try_from(*v.get_ref())
                .map_err(|_| self.reject("event_capacity", v.get_ref(), why, &v))?;
            self.note("event_capacity", config.event_capacity.to_string(), &v);
        }
        if let Some(ratio) = self.ratio("unhealthy_ratio", raw.unhealthy_ratio) {
            config.unhealthy_ratio = ratio;
        }
        for p in raw.providers {
            let provider = self.provider(p)?;
            config.providers.push(provider);
        }
        for r in raw.routes {
            let route = self.route(r)?;
            config.routes.push(route);
        }
        Ok(config)
    }

    fn provider(&mut self, raw: RawProvider) -> Result<Provider, ConfigError> {
        let line = self.line(&raw.name);
        let mut p = Provider::new(raw.name.into_inner());
        let (name, list, members) = (p.name.clone(), 0, Vec::new());
        self.lines.providers.push(Named {
            name,
            line,
            list,
            members,
        });
        self.scope = Scope::Provider(p.name.clone());
        p.call_timeout = self.duration("call_timeout", raw.call_timeout)?;
        p.first_chunk_timeout = self.duration("first_chunk_timeout", raw.first_chunk_timeout)?;
        p.stall_timeout = self.duration("stall_timeout", raw.stall_timeout)?;
        p.record_durations = raw.record_durations.unwrap_or(p.record_durations);
        if let Some(b) = raw.breaker {
            p.breaker = self.breaker(b)?;
        }
        if let Some(raw) = raw.bulkhead {
            let max = self.count("bulkhead.max_concurrent", Some(raw.max_concurrent))?;
            let mut b = Bulkhead::new(max.unwrap_or_default());
            b.queue = self.count("bulkhead.queue", raw.queue)?.unwrap_or(b.queue);
            let timeout = self.duration("bulkhead.queue_timeout", raw.queue_timeout)?;
            b.queue_timeout = timeout.unwrap_or(b.queue_timeout);
            p.bulkhead = Some(b);
        }
        if let Some(a) = raw.adaptive {
            p.adaptive = Some(self.adaptive(a)?);
        }
        Ok(p)
    }

    fn breaker(&mut self, raw: RawBreaker) -> Result<Breaker, ConfigError> {
        let mut b = Breaker::default();
        if let Some(v) = raw.consecutive {
            const WHY: &str = "must be a positive integer, or false to disable the condition";
            let field = "breaker.consecutive";
            b.consecutive = match v.get_ref() {
                Value::Boolean(false) => None,
                Value::Integer(n) => {
                    Some(u32::try_from(*n).map_err(|_| self.reject(field, n, WHY, &v))?)
                }
                _ => return Err(self.reject(field, self.written(&v), WHY, &v)),
            };
            self.note(field, b.consecutive.unwrap_or_default().to_string(), &v);
        }
        if let Some(d) = self.duration("breaker.open_for", raw.open_for)? {
            b.open_for = d;
        }
        b.max_open_for = self.duration("breaker.max_open_for", raw.max_open_for)?;
        if let Some(ratio) = self.ratio("breaker.jitter", raw.jitter) {
            b.jitter = ratio;
        }
        b.failure_rate = self.ratio("breaker.failure_rate", raw.failure_rate);
        if let Some(v) = raw.window {
            let why = "must be \"<n> calls\" or a duration such as \"60s\"";
            b.window = parse_window(v.get_ref())
                .ok_or_else(|| self.reject("breaker.window", v.get_ref(), why, &v))?;
            self.note("breaker.window", String::new(), &v);
        }
        b.minimum_calls = self.count("breaker.minimum_calls", raw.minimum_calls)?;
        b.slow_call = match (raw.slow_call, raw.slow_call_ratio) {
            (None, None) => None,
            (Some(t), None) => {
                let why = "is required when breaker.slow_call is set";
                return Err(self.reject("breaker.slow_call_ratio", "(not set)", why, &t));
            }
            (None, Some(r)) => {
                let why = "is required when breaker.slow_call_ratio is set";
                return Err(self.reject("breaker.slow_call", "(not set)", why, &r));
            }
            (t, r) => {
                let threshold = self.duration("breaker.slow_call", t)?;
                threshold.zip(self.ratio("breaker.slow_call_ratio", r))
            }
        };
        if let Some(n) = self.count("breaker.half_open_max_calls", raw.half_open_max_calls)? {
            b.half_open_max_calls = n;
        }
        if let Some(n) = self.count("breaker.success_threshold", raw.success_threshold)? {
            b.success_threshold = n;
        }
        b.trial_timeout = self.duration("breaker.trial_timeout", raw.trial_timeout)?;
        Ok(b)
    }

    fn adaptive(&mut self, raw: RawAdaptive) -> Result<Adaptive, ConfigError> {
        let default = Adaptive::default();
        let mut a = Adaptive {
            window: self
                .duration("adaptive.window", raw.window)?
                .unwrap_or(default.window),
            hysteresis: self
                .ratio("adaptive.hysteresis", raw.hysteresis)
                .unwrap_or(default.hysteresis),
            ..default
        };
        if let Some(tiers) = raw.tiers {
            self.note("adaptive.tiers", String::new(), &tiers);
            a.tiers.clear();
            for t in tiers.into_inner() {
                let above = self.count("adaptive.tiers.above", Some(t.above))?;
                let mut tier = Tier::above(above.unwrap_or_default());
                tier.failures = self.count("adaptive.tiers.failures", t.failures)?;
                tier.open_for = self.duration("adaptive.tiers.open_for", t.open_for)?;
                a = a.tier(tier);
            }
        }
        Ok(a)
    }

    fn route(&mut self, raw: RawRoute) -> Result<Route, ConfigError> {
        let (line, list) = (self.line(&raw.name), self.line(&raw.providers));
        let members: Vec<_> = raw
            .providers
            .get_ref()
            .iter()
            .map(|p| (p.get_ref().clone(), self.line(p)))
            .collect();
        let mut r = Route::new(raw.name.into_inner()).providers(members.iter().map(|m| &m.0));
        let name = r.name.clone();
        self.lines.routes.push(Named {
            name,
            line,
            list,
            members,
        });
        self.scope = Scope::Route(r.name.clone());
        if let Some(v) = raw.policy {
            r.policy = match v.get_ref().as_str() {
                "priority" => Policy::Priority,
                "least_loaded" => Policy::LeastLoaded,
                "lowest_latency" => Policy::LowestLatency,
                other => {
                    let why = "must be \"priority\", \"least_loaded\" or \"lowest_latency\"";
                    return Err(self.reject("policy", other, why, &v));
                }
            };
        }
        r.deadline = self.duration("deadline", raw.deadline)?;
        if let Some(v) = raw.when_all_open {
            let wait = match v.get_ref() {
                Value::String(s) if s == "fail_fast" => None,
                Value::Table(t) if t.len() == 1 => {
                    t.get("wait").and_then(Value::as_str).or(Some(""))
                }
                _ => Some(""),
            };
            r.when_all_open = match wait {
                None => AllOpen::FailFast,
                Some("") => {
                    let why = "must be \"fail_fast\" or { wait = \"<duration>\" }";
                    return Err(self.reject("when_all_open", self.written(&v), why, &v));
                }
                Some(s) => {
                    let d =
                        self.duration("when_all_open", Some(Spanned::new(v.span(), s.to_owned())))?;
                    AllOpen::Wait(d.unwrap_or_default())
                }
            };
        }
        Ok(r)
    }
}

/// `"<n> calls"` (or `"1 call"`) or a duration.
fn parse_window(text: &str) -> Option<Window> {
    let text = text.trim();
    match text
        .strip_suffix("calls")
        .or_else(|| text.strip_suffix("call"))
    {
        Some(n) => n.trim().parse().ok().map(Window::Calls),
        None => humantime::parse_duration(text).ok().map(Window::Time),
    }
}

fn render(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A value to write (spans are only read).
fn sp<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

fn dur(d: Duration) -> Option<Spanned<String>> {
    Some(sp(render(d)))
}

impl From<&Provider> for RawProvider {
    fn from(p: &Provider) -> Self {
        let b = &p.breaker;
        let count = |n: u32| Some(sp(i128::from(n)));
        let breaker = RawBreaker {
            consecutive: Some(sp(b
                .consecutive
                .map_or(Value::Boolean(false), |n| n.into()))),
            open_for: dur(b.open_for),
            max_open_for: b.max_open_for.and_then(dur),
            jitter: Some(sp(b.jitter)),
            failure_rate: b.failure_rate.map(sp),
            window: Some(sp(match b.window {
                Window::Calls(n) => format!("{n} calls"),
                Window::Time(d) => render(d),
            })),
            minimum_calls: b.minimum_calls.and_then(count),
            slow_call: b.slow_call.and_then(|s| dur(s.0)),
            slow_call_ratio: b.slow_call.map(|s| sp(s.1)),
            half_open_max_calls: count(b.half_open_max_calls),
            success_threshold: count(b.success_threshold),
            trial_timeout: b.trial_timeout.and_then(dur),
        };
        let tier = |t: &Tier| RawTier {
            above: sp(t.above.into()),
            failures: t.failures.and_then(count),
            open_for: t.open_for.and_then(dur),
        };
        RawProvider {
            name: sp(p.name.clone()),
            call_timeout: p.call_timeout.and_then(dur),
            first_chunk_timeout: p.first_chunk_timeout.and_then(dur),
            stall_timeout: p.stall_timeout.and_then(dur),
            record_durations: (!p.record_durations).then_some(false),
            breaker: Some(breaker),
            bulkhead: p.bulkhead.map(|b| RawBulkhead {
                max_concurrent: sp(b.max_concurrent.into()),
                queue: count(b.queue),
                queue_timeout: dur(b.queue_timeout),
            }),
            adaptive: p.adaptive.as_ref().map(|a| RawAdaptive {
                window: dur(a.window),
                hysteresis: Some(sp(a.hysteresis)),
                tiers: Some(sp(a.tiers.iter().map(tier).collect())),
            }),
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
            name: sp(r.name.clone()),
            providers: sp(r.providers.iter().cloned().map(sp).collect()),
            policy: Some(sp(policy.to_owned())),
            deadline: r.deadline.and_then(dur),
            when_all_open: Some(sp(when_all_open)),
        }
    }
}
