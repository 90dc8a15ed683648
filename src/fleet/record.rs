//! The record a replica writes for one provider, and its strict validation on read.
//!
//! One JSON object, the same in the provider's Redis hash (field `record`) and on the
//! change channel:
//!
//! ```json
//! {"v":1,"gen":7,"provider":"primary","change":"open","cause":"consecutive_failures",
//!  "failures":3,"remaining_ms":59998,"replica":"api-1"}
//! ```
//!
//! `change` is `open` (with `failures` and `remaining_ms`, the time the circuit stays open
//! counted when the record was written: a duration, not an instant, so replicas need no
//! shared clock), `isolate`, `reset` or `close` (with neither). `cause` is a
//! [`Cause::as_str`] name. Anything else (an unknown key or version, a wrong type, a
//! generation of 0 or from 10^12 on, a remaining time over 365 days, a record over
//! [`MAX_RECORD_LEN`] bytes, a record filed under another provider) is refused with a
//! [`RecordProblem`].

use std::fmt::Write as _;
use std::time::Duration;

use serde::Deserialize;

use super::FleetError;
use crate::breaker::Cause;
use crate::config::{MAX_DURATION, MAX_REPLICA_LEN};

/// The record format's version.
pub const VERSION: u32 = 1;

/// The longest record accepted, in bytes.
pub const MAX_RECORD_LEN: usize = 4096;

/// Generations from this one on are refused (so that none can overflow, and the Lua
/// script's arithmetic stays exact).
pub const MAX_GENERATION: u64 = 1_000_000_000_000;

/// Every cause a record may carry, by its stable name.
const CAUSES: [Cause; 10] = [
    Cause::ConsecutiveFailures,
    Cause::FailureRate,
    Cause::SlowCallRate,
    Cause::RateLimited,
    Cause::TrialFailed,
    Cause::TrialTimedOut,
    Cause::IsolatingVerdict,
    Cause::Operator,
    Cause::OpenElapsed,
    Cause::TrialsSucceeded,
];

/// Why a record in Redis, or a message on the change channel, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordProblem {
    /// Longer than [`MAX_RECORD_LEN`].
    #[error("{0} bytes, over the limit of 4096")]
    TooLong(usize),
    /// Not valid UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// Not a record: malformed JSON, a missing or unknown key, a value of the wrong type.
    #[error("not a record: {0}")]
    Malformed(String),
    /// A version this build does not read.
    #[error("version {0}, this build reads version 1")]
    Version(u32),
    /// Filed under one provider, naming another.
    #[error("filed under `{expected}`, names `{found}`")]
    Provider {
        /// The provider of the key it was read from.
        expected: String,
        /// The provider it names.
        found: String,
    },
    /// A generation of 0, from [`MAX_GENERATION`] on, or not the one stored beside it.
    #[error("generation {0} out of range or not the stored one")]
    Generation(u64),
    /// An unknown `change`.
    #[error("unknown change `{0}`")]
    Change(String),
    /// An unknown `cause`.
    #[error("unknown cause `{0}`")]
    Cause(String),
    /// `open` without its remaining time or failures, over 365 days, or another change
    /// with them.
    #[error("`{0}`: missing, out of range, or not allowed for this change")]
    Field(&'static str),
    /// An empty, too long or control-character replica name.
    #[error("bad replica name")]
    Replica,
    /// The key holds a Redis type other than a hash.
    #[error("the key holds a {0}, not a hash")]
    WrongType(String),
}

/// What a record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Open {
        remaining: Duration,
        cause: Cause,
        failures: u32,
    },
    Isolate {
        cause: Cause,
    },
    Reset,
    Close {
        cause: Cause,
    },
}

/// A validated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) generation: u64,
    pub(crate) provider: String,
    pub(crate) kind: Kind,
    pub(crate) replica: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: u32,
    #[serde(rename = "gen")]
    generation: u64,
    provider: String,
    change: String,
    cause: String,
    #[serde(default)]
    failures: Option<u32>,
    #[serde(default)]
    remaining_ms: Option<u64>,
    replica: String,
}

fn cause_named(name: &str) -> Option<Cause> {
    CAUSES.into_iter().find(|c| c.as_str() == name)
}

/// Reads and validates a record. `provider` is the provider of the key it was read from
/// (`None` for a message on the channel, which names its own).
pub(crate) fn decode(provider: Option<&str>, bytes: &[u8]) -> Result<Record, FleetError> {
    let invalid = |problem: RecordProblem| FleetError::InvalidRecord {
        provider: provider.map(str::to_owned),
        problem,
    };
    if bytes.len() > MAX_RECORD_LEN {
        return Err(invalid(RecordProblem::TooLong(bytes.len())));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| invalid(RecordProblem::NotUtf8))?;
    let wire: Wire =
        serde_json::from_str(text).map_err(|e| invalid(RecordProblem::Malformed(e.to_string())))?;
    let invalid = |problem: RecordProblem| FleetError::InvalidRecord {
        provider: Some(provider.unwrap_or(&wire.provider).to_owned()),
        problem,
    };
    if wire.v != VERSION {
        return Err(invalid(RecordProblem::Version(wire.v)));
    }
    if let Some(expected) = provider {
        if wire.provider != expected {
            return Err(invalid(RecordProblem::Provider {
                expected: expected.to_owned(),
                found: wire.provider.clone(),
            }));
        }
    }
    if wire.generation == 0 || wire.generation >= MAX_GENERATION {
        return Err(invalid(RecordProblem::Generation(wire.generation)));
    }
    if wire.replica.is_empty()
        || wire.replica.len() > MAX_REPLICA_LEN
        || wire.replica.chars().any(char::is_control)
    {
        return Err(invalid(RecordProblem::Replica));
    }
    let cause = cause_named(&wire.cause)
        .ok_or_else(|| invalid(RecordProblem::Cause(wire.cause.clone())))?;
    let kind = match wire.change.as_str() {
        "open" => {
            let failures = wire
                .failures
                .ok_or_else(|| invalid(RecordProblem::Field("failures")))?;
            let remaining = wire
                .remaining_ms
                .map(Duration::from_millis)
                .filter(|d| *d <= MAX_DURATION)
                .ok_or_else(|| invalid(RecordProblem::Field("remaining_ms")))?;
            Kind::Open {
                remaining,
                cause,
                failures,
            }
        }
        other => {
            if wire.failures.is_some() {
                return Err(invalid(RecordProblem::Field("failures")));
            }
            if wire.remaining_ms.is_some() {
                return Err(invalid(RecordProblem::Field("remaining_ms")));
            }
            match other {
                "isolate" => Kind::Isolate { cause },
                "reset" => Kind::Reset,
                "close" => Kind::Close { cause },
                _ => return Err(invalid(RecordProblem::Change(other.to_owned()))),
            }
        }
    };
    Ok(Record {
        generation: wire.generation,
        provider: wire.provider,
        kind,
        replica: wire.replica,
    })
}

/// A record without its generation, cut where the generation goes: the write script puts
/// the generation it assigns between the two halves.
pub(crate) fn encode_parts(provider: &str, kind: &Kind, replica: &str) -> (String, String) {
    let head = format!("{{\"v\":{VERSION},\"gen\":");
    let json = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
    let (change, cause) = match kind {
        Kind::Open { cause, .. } => ("open", cause.as_str()),
        Kind::Isolate { cause } => ("isolate", cause.as_str()),
        Kind::Reset => ("reset", Cause::Operator.as_str()),
        Kind::Close { cause } => ("close", cause.as_str()),
    };
    let mut tail = format!(
        ",\"provider\":{},\"change\":\"{change}\",\"cause\":\"{cause}\"",
        json(provider)
    );
    if let Kind::Open {
        remaining,
        failures,
        ..
    } = kind
    {
        let ms = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX);
        let _ = write!(tail, ",\"failures\":{failures},\"remaining_ms\":{ms}");
    }
    let _ = write!(tail, ",\"replica\":{}}}", json(replica));
    (head, tail)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn encoded(kind: Kind, generation: u64) -> String {
        let (head, tail) = encode_parts("p\"q", &kind, "r-1");
        format!("{head}{generation}{tail}")
    }

    #[test]
    fn every_kind_round_trips() {
        for kind in [
            Kind::Open {
                remaining: Duration::from_millis(1500),
                cause: Cause::ConsecutiveFailures,
                failures: 3,
            },
            Kind::Isolate {
                cause: Cause::IsolatingVerdict,
            },
            Kind::Reset,
            Kind::Close {
                cause: Cause::TrialsSucceeded,
            },
        ] {
            let text = encoded(kind, 7);
            let record = decode(Some("p\"q"), text.as_bytes()).unwrap();
            assert_eq!(record.kind, kind, "{text}");
            assert_eq!(record.generation, 7);
            assert_eq!(record.replica, "r-1");
        }
    }

    #[test]
    fn every_cause_has_a_name_records_read_back() {
        for cause in CAUSES {
            assert_eq!(cause_named(cause.as_str()), Some(cause));
        }
    }

    #[test]
    fn hostile_records_are_refused_by_problem() {
        let problem = |text: &str| match decode(Some("p"), text.as_bytes()) {
            Err(FleetError::InvalidRecord { problem, .. }) => problem,
            other => panic!("{text}: {other:?}"),
        };
        let base = r#""provider":"p","cause":"operator","replica":"r""#;
        assert!(matches!(problem("not json"), RecordProblem::Malformed(_)));
        assert!(matches!(
            problem(&format!(r#"{{"v":2,"gen":1,"change":"reset",{base}}}"#)),
            RecordProblem::Version(2)
        ));
        assert!(matches!(
            problem(&format!(r#"{{"v":1,"gen":0,"change":"reset",{base}}}"#)),
            RecordProblem::Generation(0)
        ));
        assert!(matches!(
            problem(&format!(r#"{{"v":1,"gen":-1,"change":"reset",{base}}}"#)),
            RecordProblem::Malformed(_)
        ));
        assert!(matches!(
            problem(&format!(r#"{{"v":1,"gen":1,"change":"explode",{base}}}"#)),
            RecordProblem::Change(_)
        ));
        assert!(matches!(
            problem(&format!(
                r#"{{"v":1,"gen":1,"change":"reset",{base},"extra":1}}"#
            )),
            RecordProblem::Malformed(_)
        ));
        assert!(matches!(
            problem(&format!(r#"{{"v":1,"gen":1,"change":"open",{base}}}"#)),
            RecordProblem::Field("failures")
        ));
        assert!(matches!(
            problem(&format!(
                r#"{{"v":1,"gen":1,"change":"open","failures":1,"remaining_ms":18446744073709551615,{base}}}"#
            )),
            RecordProblem::Field("remaining_ms")
        ));
        assert!(matches!(
            problem(&format!(
                r#"{{"v":1,"gen":1,"change":"reset","remaining_ms":5,{base}}}"#
            )),
            RecordProblem::Field("remaining_ms")
        ));
        assert!(matches!(
            problem(
                r#"{"v":1,"gen":1,"change":"reset","provider":"other","cause":"operator","replica":"r"}"#
            ),
            RecordProblem::Provider { .. }
        ));
        assert!(matches!(
            problem(
                r#"{"v":1,"gen":1,"change":"reset","provider":"p","cause":"boredom","replica":"r"}"#
            ),
            RecordProblem::Cause(_)
        ));
        assert!(matches!(
            problem(
                r#"{"v":1,"gen":1,"change":"reset","provider":"p","cause":"operator","replica":""}"#
            ),
            RecordProblem::Replica
        ));
        assert!(matches!(
            problem(&"x".repeat(MAX_RECORD_LEN + 1)),
            RecordProblem::TooLong(_)
        ));
        assert!(matches!(
            decode(Some("p"), &[0xff, 0xfe]),
            Err(FleetError::InvalidRecord {
                problem: RecordProblem::NotUtf8,
                ..
            })
        ));
    }
}
