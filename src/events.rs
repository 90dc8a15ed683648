//! Circuit events and the bus they are published on.
//!
//! Every state change of every provider is published as an [`Event`] on a
//! [`tokio::sync::broadcast`] channel; `Supervisor::subscribe` hands out receivers. Alerting
//! rules match on the stable names from [`Event::name`]: `llm.circuit_opened`,
//! `llm.circuit_half_opened`, `llm.circuit_closed`, `llm.circuit_isolated`,
//! `llm.thresholds_adapted`.
//!
//! # For alerts
//!
//! Every event carries the wall-clock [`timestamp`](Event::timestamp) of its publication, and
//! every close says how long the provider was out ([`Event::out_for`]). An event's
//! [`Display`](std::fmt::Display) is one line for a pager or a chat channel, durations
//! rounded to the millisecond:
//!
//! ```text
//! anthropic: circuit opened after 3 consecutive failures; retry after 2m
//! anthropic: circuit half-open, admitting trial calls
//! anthropic: circuit closed, trial calls succeeded; out for 2m 4s 250ms
//! ```
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use fusebox::{Breaker, Provider, Supervisor};
//!
//! let fuse = Supervisor::builder()
//!     .provider(Provider::new("anthropic").breaker(Breaker::consecutive(1).open_for(Duration::from_secs(120))))
//!     .build()
//!     .await?;
//! let mut events = fuse.subscribe();
//! let _ = fuse.call("anthropic", || async { Err::<(), _>(fusebox::Verdict::Failure) }).await;
//! let event = events.recv().await?;
//! assert_eq!(event.to_string(), "anthropic: circuit opened after 1 consecutive failure; retry after 2m");
//! # Ok(())
//! # }
//! ```
//!
//! # JSON
//!
//! [`Event`] implements [`serde::Serialize`] as one flat object, the shape the ops endpoint's
//! `/events` stream sends (`fusebox::server`, feature `server`):
//!
//! ```json
//! {"provider": "anthropic", "name": "llm.circuit_opened", "timestamp": "2026-03-01T09:30:12.345Z",
//!  "generation": 1, "state": "open", "cause": "consecutive_failures", "failures": 3,
//!  "retry_after_seconds": 120.0, "message": "anthropic: circuit opened after 3 consecutive failures; retry after 2m"}
//! ```
//!
//! `timestamp` is RFC 3339 in UTC with milliseconds; `state` (`closed`, `half_open`, `open`,
//! `isolated`) is present for state changes; `cause` ([`Cause::as_str`]) whenever the event
//! has one; an opened circuit adds `failures` and `retry_after_seconds`; a close adds
//! `out_for_seconds`; adapted thresholds add `tier`, `request_rate`, `failure_threshold` and
//! `open_for_seconds`. Durations are fractional seconds. `message` is the event's `Display`.
//! A change another replica of a fleet decided (`fusebox::fleet`, feature `redis`) adds
//! `"origin": "remote"` (see [`Origin`]), and its `message` ends with `(from the fleet)`.
//!
//! # Lag
//!
//! Publishing never waits for subscribers: a call is never slowed by a slow or absent
//! subscriber. The bus keeps the last `event_capacity` events (1024 by default; tokio rounds
//! the capacity up to the next power of two, so 1000 keeps 1024); a receiver that falls
//! further behind gets [`RecvError::Lagged(n)`](tokio::sync::broadcast::error::RecvError::Lagged)
//! telling it how many events it missed, then continues from the oldest one still held.
//! Nothing is dropped silently: after a lag, call `Supervisor::status` to resynchronise
//! with the current state of every circuit. Each event's `generation` is the provider's
//! transition count, so a gap in generations also shows what a receiver missed.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::ser::{Serialize, SerializeMap, Serializer};
use tokio::time::Instant;

use crate::breaker::{Cause, CircuitState};
use crate::error::human;
use crate::ProviderId;

/// One state change of one provider.
///
/// Its [`Display`](fmt::Display) is a line for humans (see [the module docs](self)); its
/// [`Serialize`] is the JSON the ops endpoint streams.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Event {
    /// The provider.
    pub provider: ProviderId,
    /// What happened.
    pub kind: EventKind,
    /// When (the supervisor's tokio clock: use it to measure, and
    /// [`timestamp`](Self::timestamp) to tell the time).
    pub at: Instant,
    /// When, by the wall clock: the system time at which the event was published.
    pub timestamp: SystemTime,
    /// The provider's circuit generation after the change (threshold changes carry the
    /// current generation without bumping it).
    pub generation: u64,
    /// Why the circuit changed state: for a close, [`Cause::TrialsSucceeded`] or
    /// [`Cause::Operator`]; for an isolation, [`Cause::IsolatingVerdict`] or
    /// [`Cause::Operator`]. `None` for threshold changes.
    pub cause: Option<Cause>,
    /// For [`EventKind::CircuitClosed`]: how long the provider was out of service, from the
    /// moment its circuit left closed (its first open, or an isolation) to this close, the
    /// half-open trials and re-opens in between included. `None` for every other kind.
    pub out_for: Option<Duration>,
    /// Whether this replica decided the change ([`Origin::Local`]) or applied one another
    /// replica of its fleet decided ([`Origin::Remote`], `fusebox::fleet`, feature `redis`).
    pub origin: Origin,
}

/// Where a change was decided.
///
/// Without a fleet every change is [`Local`](Origin::Local). With one, a replica applies the
/// changes other replicas publish through its own provider actor, and the events it emits
/// for them are [`Remote`](Origin::Remote): their `Display` ends with `(from the fleet)`,
/// and their JSON carries `"origin": "remote"` (local events carry no `origin` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Origin {
    /// Decided by this replica.
    #[default]
    Local,
    /// Decided by another replica of the fleet and applied here.
    Remote,
}

impl Origin {
    /// `local` or `remote`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Local => "local",
            Origin::Remote => "remote",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Event {
    /// An event published now (the wall clock is read here).
    pub(crate) fn new(
        provider: ProviderId,
        kind: EventKind,
        at: Instant,
        generation: u64,
        cause: Option<Cause>,
    ) -> Self {
        Event {
            provider,
            kind,
            at,
            timestamp: SystemTime::now(),
            generation,
            cause,
            out_for: None,
            origin: Origin::Local,
        }
    }

    /// Whether another replica of the fleet decided this change.
    pub fn is_remote(&self) -> bool {
        self.origin == Origin::Remote
    }

    /// The stable name alerting rules match on, such as `llm.circuit_opened`.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }
}

/// One line: the provider, what happened, why, and for how long.
///
/// ```text
/// anthropic: circuit opened after 3 consecutive failures; retry after 2m
/// openai: circuit opened, rate limited by the provider; retry after 20s
/// anthropic: circuit re-opened, a trial call failed; retry after 4m
/// anthropic: circuit half-open, admitting trial calls
/// anthropic: circuit closed, trial calls succeeded; out for 6m 12s 40ms
/// anthropic: circuit closed by an operator; out for 1h 2m
/// anthropic: circuit isolated after a credentials or billing error, until an operator resets it
/// ```
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_local(f)?;
        if self.origin == Origin::Remote {
            f.write_str(" (from the fleet)")?;
        }
        Ok(())
    }
}

impl Event {
    fn fmt_local(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.provider)?;
        match (&self.kind, self.cause) {
            (EventKind::CircuitClosed, cause) => {
                f.write_str("circuit closed")?;
                match cause {
                    Some(Cause::TrialsSucceeded) => f.write_str(", trial calls succeeded")?,
                    Some(Cause::Operator) => f.write_str(" by an operator")?,
                    Some(other) => write!(f, " ({other})")?,
                    None => {}
                }
                match self.out_for {
                    Some(d) => write!(f, "; out for {}", human(d)),
                    None => Ok(()),
                }
            }
            (EventKind::CircuitHalfOpened, Some(Cause::ProbeSucceeded)) => {
                f.write_str("circuit half-open, a recovery probe succeeded; admitting trial calls")
            }
            (EventKind::CircuitIsolated, Some(Cause::Operator)) => {
                f.write_str("circuit isolated by an operator, until reset")
            }
            (EventKind::CircuitIsolated, Some(Cause::IsolatingVerdict) | None) => f.write_str(
                "circuit isolated after a credentials or billing error, until an operator resets it",
            ),
            (EventKind::CircuitIsolated, Some(other)) => {
                write!(f, "circuit isolated ({other}), until an operator resets it")
            }
            (kind, _) => fmt::Display::fmt(kind, f),
        }
    }
}

/// What happened to a provider.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// The circuit opened (`llm.circuit_opened`).
    CircuitOpened {
        /// The condition that tripped it.
        cause: Cause,
        /// The counted failures behind it.
        failures: u32,
        /// How long it stays open.
        retry_after: Duration,
    },
    /// The open deadline passed; trial calls may go through (`llm.circuit_half_opened`).
    CircuitHalfOpened,
    /// The circuit closed (`llm.circuit_closed`), after successful trials or an operator
    /// reset ([`Event::cause`] says which, [`Event::out_for`] for how long the provider was
    /// out).
    CircuitClosed,
    /// The provider was isolated (`llm.circuit_isolated`) by a verdict or an operator
    /// ([`Event::cause`] says which).
    CircuitIsolated,
    /// Adaptive thresholds moved to another tier (`llm.thresholds_adapted`).
    ThresholdsAdapted {
        /// The tier's boundary in requests a minute; `None` when no tier applies.
        tier: Option<u32>,
        /// The measured request rate, per minute.
        request_rate: f64,
        /// The consecutive-failure threshold now in force.
        failure_threshold: Option<u32>,
        /// The base open duration now in force.
        open_for: Duration,
    },
}

impl EventKind {
    /// The stable name of this kind of event.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::CircuitOpened { .. } => "llm.circuit_opened",
            EventKind::CircuitHalfOpened => "llm.circuit_half_opened",
            EventKind::CircuitClosed => "llm.circuit_closed",
            EventKind::CircuitIsolated => "llm.circuit_isolated",
            EventKind::ThresholdsAdapted { .. } => "llm.thresholds_adapted",
        }
    }

    /// The circuit state this event leaves the provider in, for state changes.
    pub fn state(&self) -> Option<CircuitState> {
        match self {
            EventKind::CircuitOpened { .. } => Some(CircuitState::Open),
            EventKind::CircuitHalfOpened => Some(CircuitState::HalfOpen),
            EventKind::CircuitClosed => Some(CircuitState::Closed),
            EventKind::CircuitIsolated => Some(CircuitState::Isolated),
            EventKind::ThresholdsAdapted { .. } => None,
        }
    }
}

/// What happened, without the provider (and without what only the [`Event`] knows: why a
/// circuit closed or was isolated, and how long the provider was out).
///
/// ```text
/// circuit opened after 3 consecutive failures; retry after 2m
/// circuit opened on its failure rate (12 failures in the window); retry after 30s
/// circuit half-open, admitting trial calls
/// circuit closed
/// thresholds adapted at 150.0 requests a minute (tier above 100): trips after 3 consecutive failures, opens for 30s
/// ```
impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventKind::CircuitOpened {
                cause,
                failures,
                retry_after,
            } => {
                match cause {
                    Cause::ConsecutiveFailures => {
                        let s = if *failures == 1 { "" } else { "s" };
                        write!(f, "circuit opened after {failures} consecutive failure{s}")?;
                    }
                    Cause::FailureRate => {
                        let s = if *failures == 1 { "" } else { "s" };
                        write!(
                            f,
                            "circuit opened on its failure rate ({failures} failure{s} in the window)"
                        )?;
                    }
                    Cause::SlowCallRate => f.write_str("circuit opened on its slow-call rate")?,
                    Cause::RateLimited => {
                        f.write_str("circuit opened, rate limited by the provider")?;
                    }
                    Cause::TrialFailed | Cause::TrialTimedOut => {
                        write!(f, "circuit re-opened, {cause}")?;
                    }
                    other => write!(f, "circuit opened ({other})")?,
                }
                write!(f, "; retry after {}", human(*retry_after))
            }
            EventKind::CircuitHalfOpened => f.write_str("circuit half-open, admitting trial calls"),
            EventKind::CircuitClosed => f.write_str("circuit closed"),
            EventKind::CircuitIsolated => f.write_str("circuit isolated"),
            EventKind::ThresholdsAdapted {
                tier,
                request_rate,
                failure_threshold,
                open_for,
            } => {
                write!(
                    f,
                    "thresholds adapted at {request_rate:.1} requests a minute ("
                )?;
                match tier {
                    Some(above) => write!(f, "tier above {above}")?,
                    None => f.write_str("no tier")?,
                }
                f.write_str("): ")?;
                match failure_threshold {
                    Some(1) => f.write_str("trips after 1 consecutive failure")?,
                    Some(n) => write!(f, "trips after {n} consecutive failures")?,
                    None => f.write_str("no consecutive-failure trip")?,
                }
                write!(f, ", opens for {}", human(*open_for))
            }
        }
    }
}

/// A phrase for humans: `consecutive failures`, `failure rate over the window`,
/// `slow-call rate over the window`, `rate limited by the provider`, `a trial call failed`,
/// `a trial call timed out`, `a credentials or billing error`, `an operator`,
/// `the open period elapsed`, `trial calls succeeded`, `a recovery probe succeeded`.
/// [`Cause::as_str`] is the stable name
/// for machines.
impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cause::ConsecutiveFailures => "consecutive failures",
            Cause::FailureRate => "failure rate over the window",
            Cause::SlowCallRate => "slow-call rate over the window",
            Cause::RateLimited => "rate limited by the provider",
            Cause::TrialFailed => "a trial call failed",
            Cause::TrialTimedOut => "a trial call timed out",
            Cause::IsolatingVerdict => "a credentials or billing error",
            Cause::Operator => "an operator",
            Cause::OpenElapsed => "the open period elapsed",
            Cause::TrialsSucceeded => "trial calls succeeded",
            Cause::ProbeSucceeded => "a recovery probe succeeded",
        })
    }
}

/// As its stable name, [`Cause::as_str`] (`"consecutive_failures"`).
impl Serialize for Cause {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// As its name, [`CircuitState::as_str`] (`"half_open"`).
impl Serialize for CircuitState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One flat object: see [the module docs](self#json).
impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("provider", self.provider.as_str())?;
        map.serialize_entry("name", self.name())?;
        map.serialize_entry("timestamp", &ser::Rfc3339(self.timestamp))?;
        map.serialize_entry("generation", &self.generation)?;
        if let Some(state) = self.kind.state() {
            map.serialize_entry("state", &state)?;
        }
        let cause = match &self.kind {
            EventKind::CircuitOpened { cause, .. } => Some(*cause),
            _ => self.cause,
        };
        if let Some(cause) = cause {
            map.serialize_entry("cause", &cause)?;
        }
        match &self.kind {
            EventKind::CircuitOpened {
                failures,
                retry_after,
                ..
            } => {
                map.serialize_entry("failures", failures)?;
                map.serialize_entry("retry_after_seconds", &retry_after.as_secs_f64())?;
            }
            EventKind::ThresholdsAdapted {
                tier,
                request_rate,
                failure_threshold,
                open_for,
            } => {
                map.serialize_entry("tier", tier)?;
                map.serialize_entry(
                    "request_rate",
                    &Some(*request_rate).filter(|r| r.is_finite()),
                )?;
                map.serialize_entry("failure_threshold", failure_threshold)?;
                map.serialize_entry("open_for_seconds", &open_for.as_secs_f64())?;
            }
            EventKind::CircuitHalfOpened
            | EventKind::CircuitClosed
            | EventKind::CircuitIsolated => {}
        }
        if let Some(out_for) = self.out_for {
            map.serialize_entry("out_for_seconds", &out_for.as_secs_f64())?;
        }
        if self.origin != Origin::Local {
            map.serialize_entry("origin", self.origin.as_str())?;
        }
        map.serialize_entry("message", &self.to_string())?;
        map.end()
    }
}

/// The event for a breaker transition, published now.
pub(crate) fn from_transition(provider: &ProviderId, t: &crate::breaker::Transition) -> Event {
    let kind = match t.to {
        CircuitState::Open => EventKind::CircuitOpened {
            cause: t.cause,
            failures: t.failures,
            retry_after: t.open_for.unwrap_or_default(),
        },
        CircuitState::HalfOpen => EventKind::CircuitHalfOpened,
        CircuitState::Closed => EventKind::CircuitClosed,
        CircuitState::Isolated => EventKind::CircuitIsolated,
    };
    Event {
        out_for: t.out_for,
        ..Event::new(provider.clone(), kind, t.at, t.generation, Some(t.cause))
    }
}

/// Serialisation helpers shared by the types that derive `Serialize` (`serialize_with`):
/// durations as fractional seconds, instants as seconds ago, ids as their name.
pub(crate) mod ser {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::ser::{Serialize, SerializeMap, Serializer};
    use tokio::time::Instant;

    use crate::ProviderId;

    /// A wall-clock time as RFC 3339 in UTC with milliseconds (`2026-03-01T09:30:12.345Z`),
    /// clamped to the years 1970 to 9999.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Rfc3339(pub(crate) SystemTime);

    impl Serialize for Rfc3339 {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(&rfc3339(self.0))
        }
    }

    /// [`Rfc3339`] as a string.
    pub(crate) fn rfc3339(t: SystemTime) -> String {
        // humantime panics outside 1970..=9999.
        const LAST: Duration = Duration::from_secs(253_402_300_799);
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default().min(LAST);
        humantime::format_rfc3339_millis(UNIX_EPOCH + since).to_string()
    }

    pub(crate) fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(crate) fn opt_secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    /// An instant as the seconds elapsed since, by the tokio clock.
    pub(crate) fn ago<S: Serializer>(at: &Option<Instant>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_some(&at.elapsed().as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    /// A provider as its name.
    pub(crate) fn name<S: Serializer>(id: &ProviderId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(id.as_str())
    }

    /// A provider flattened into its parent object: `"provider": name, "meta": {..}`.
    pub(crate) fn name_and_meta<S: Serializer>(id: &ProviderId, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("provider", id.as_str())?;
        map.serialize_entry("meta", &id.metadata().collect::<BTreeMap<_, _>>())?;
        map.end()
    }

    /// A [`Verdict`](crate::Verdict) flattened into its parent object: `"verdict": name`,
    /// and `"retry_after_seconds"` for a rate limit with a hint.
    pub(crate) fn verdict<S: Serializer>(v: &crate::Verdict, s: S) -> Result<S::Ok, S::Error> {
        use crate::Verdict;
        let mut map = s.serialize_map(None)?;
        let name = match v {
            Verdict::Success => "success",
            Verdict::Failure => "failure",
            Verdict::RateLimited { .. } => "rate_limited",
            Verdict::Ignored => "ignored",
            Verdict::Isolate => "isolate",
        };
        map.serialize_entry("verdict", name)?;
        if let Some(d) = v.retry_after() {
            map.serialize_entry("retry_after_seconds", &d.as_secs_f64())?;
        }
        map.end()
    }

    /// A sequence (such as a `SmallVec`) as an array.
    pub(crate) fn seq<S, T, V>(v: &V, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        T: Serialize,
        V: std::ops::Deref<Target = [T]>,
    {
        s.collect_seq(v.iter())
    }

    /// A duration flattened into its parent object as `"after_seconds"`.
    pub(crate) fn after<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("after_seconds", &d.as_secs_f64())?;
        map.end()
    }
}
