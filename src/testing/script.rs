//! The fault script: which requests fail, and how.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// What the mock does to the requests it receives: a list of faults, the first matching one
/// applying. A request no fault matches is answered normally.
///
/// Faults apply before the request is checked: a malformed request gets its fault (a 400
/// only when the fault lets it through: none, [`Slow`](FaultKind::Slow), or the passing
/// half of [`Flap`](FaultKind::Flap)).
///
/// Build one in code with [`fault`](Self::fault), or read it from TOML with
/// [`from_toml_str`](Self::from_toml_str):
///
/// ```toml
/// [[faults]]
/// when = { requests = [0, 3] }        # or { between = ["10s", "40s"] } or "always"
/// kind = { status = 503 }             # or "overloaded" | { rate_limited = "30s" }
///                                     #  | "unauthorized" | { slow = "5s" } | "hang"
///                                     #  | "reset" | { cut_stream = 2 } | "flap"
///                                     #  | { stream_error = { error = "overloaded",
///                                     #                     after_chunks = 2 } }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultScript {
    /// The faults, in order; the first one whose [`When`] matches a request applies to it.
    pub faults: Vec<Fault>,
}

/// One fault: when it applies, and what it does.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Which requests it applies to.
    pub when: When,
    /// What happens to them.
    pub kind: FaultKind,
}

/// Which requests a [`Fault`] applies to.
///
/// In TOML: `{ between = ["10s", "40s"] }`, `{ requests = [5, 20] }` or `"always"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawWhen")]
pub enum When {
    /// Requests arriving from `from` (inclusive) until `until` (exclusive) after the server
    /// started, measured on the tokio clock ([`tokio::time::Instant`]).
    Between {
        /// Start of the window, after the server started.
        from: Duration,
        /// End of the window (exclusive), after the server started.
        until: Duration,
    },
    /// Requests numbered `from..until` (0-based, in arrival order).
    Requests {
        /// First request number in the window.
        from: u64,
        /// First request number after the window.
        until: u64,
    },
    /// Every request.
    Always,
}

/// What a [`Fault`] does to a request. Error bodies take the shape of the API called
/// (OpenAI or Anthropic).
///
/// In TOML: `{ status = 503 }`, `"overloaded"`, `{ rate_limited = "30s" }`, `"unauthorized"`,
/// `{ slow = "5s" }`, `"hang"`, `"reset"`, `{ cut_stream = 2 }`, `"flap"` or
/// `{ stream_error = { error = "overloaded", after_chunks = 2 } }` (`error` one of
/// `"overloaded"`, `"api_error"`, `"rate_limit"`, `"invalid_request"`; `after_chunks`
/// defaults to 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawKind")]
pub enum FaultKind {
    /// Answer with this status and a provider-shaped error body (`server_error` /
    /// `api_error` for 5xx). It must be an error status, 400..=599 (others are sent as 500).
    Status(u16),
    /// 529 with an `overloaded_error` body (Anthropic) or a `server_error` body (OpenAI).
    Overloaded,
    /// 429 with `retry-after` (whole seconds, rounded up) and `retry-after-ms` headers and a
    /// rate limit body.
    RateLimited {
        /// When the client may come back.
        retry_after: Duration,
    },
    /// 401 with an authentication error body.
    Unauthorized,
    /// Wait this long, then answer normally.
    Slow(Duration),
    /// Accept the request and never answer, until the client gives up or the server shuts
    /// down (which closes the connection).
    Hang,
    /// Close the connection (with a TCP reset) without any response.
    Reset,
    /// Streaming requests: send the status, headers and this many content chunks, then close
    /// the connection mid-stream. Non-streaming requests: like [`Reset`](Self::Reset).
    CutStream {
        /// Content chunks sent before the cut.
        after_chunks: usize,
    },
    /// Every other request fails with 503: those with an even number (0, 2, 4...); the others
    /// are answered normally.
    Flap,
    /// Streaming requests: answer 200, send the stream's opening events and this many content
    /// chunks, then an error event in the API's format, and end the body cleanly (an
    /// Anthropic `event: error` with `{"type": "error", "error": {"type": "overloaded_error",
    /// ...}}`; an OpenAI `data: {"error": {...}}`). Non-streaming requests: the error's status
    /// with its error body (529, 500, 429 without `retry-after`, 400).
    StreamError {
        /// Content chunks sent before the error.
        after_chunks: usize,
        /// Which error.
        error: StreamFault,
    },
}

/// The in-band error of a [`FaultKind::StreamError`], and its status without streaming.
///
/// ```
/// use fusebox::testing::{FaultKind, FaultScript, StreamFault};
///
/// let script = FaultScript::from_toml_str(r#"
///     [[faults]]
///     when = "always"
///     kind = { stream_error = { error = "overloaded", after_chunks = 2 } }
/// "#)?;
/// assert_eq!(
///     script.faults[0].kind,
///     FaultKind::StreamError { after_chunks: 2, error: StreamFault::Overloaded },
/// );
/// assert_eq!(StreamFault::Overloaded.status(), 529);
/// # Ok::<(), fusebox::testing::ScriptError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamFault {
    /// Anthropic `overloaded_error` (OpenAI `server_error`); 529 without streaming.
    Overloaded,
    /// Anthropic `api_error` (OpenAI `server_error`); 500 without streaming.
    ApiError,
    /// Anthropic `rate_limit_error` (OpenAI `rate_limit_exceeded`); 429 without streaming.
    RateLimit,
    /// `invalid_request_error`, the caller's fault; 400 without streaming.
    InvalidRequest,
}

impl StreamFault {
    /// The HTTP status the same error has without streaming.
    pub const fn status(self) -> u16 {
        match self {
            StreamFault::Overloaded => 529,
            StreamFault::ApiError => 500,
            StreamFault::RateLimit => 429,
            StreamFault::InvalidRequest => 400,
        }
    }
}

impl FaultScript {
    /// A script without faults: every request is answered normally.
    pub fn new() -> FaultScript {
        FaultScript::default()
    }

    /// This script with one more fault, matched after the ones already in it.
    #[must_use]
    pub fn fault(mut self, when: When, kind: FaultKind) -> FaultScript {
        self.faults.push(Fault { when, kind });
        self
    }

    /// A script failing every request with `kind`.
    pub fn always(kind: FaultKind) -> FaultScript {
        FaultScript::new().fault(When::Always, kind)
    }

    /// The fault applying to request number `request` (0-based) arriving `elapsed` after the
    /// server started: the first whose [`When`] matches, if any.
    pub fn fault_for(&self, request: u64, elapsed: Duration) -> Option<&FaultKind> {
        self.faults
            .iter()
            .find(|f| f.when.matches(request, elapsed))
            .map(|f| &f.kind)
    }

    /// Reads a script from TOML (see [`FaultScript`] for the format).
    ///
    /// # Errors
    ///
    /// A [`ScriptError`] with the line, column and field of the first problem: bad TOML, an
    /// unknown field or kind, a malformed duration, an empty window, a status outside
    /// 400..=599.
    pub fn from_toml_str(text: &str) -> Result<FaultScript, ScriptError> {
        toml::from_str(text).map_err(|e| ScriptError::new(text, &e))
    }
}

impl When {
    /// Whether request number `request`, arriving `elapsed` after the server started, is in
    /// this window.
    pub fn matches(&self, request: u64, elapsed: Duration) -> bool {
        match *self {
            When::Between { from, until } => from <= elapsed && elapsed < until,
            When::Requests { from, until } => from <= request && request < until,
            When::Always => true,
        }
    }
}

/// A fault script that cannot be read, with where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column (in characters) of the problem.
    pub column: usize,
    /// The dotted path of the offending field (`faults.kind`), when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ScriptError {
    fn new(text: &str, e: &toml::de::Error) -> ScriptError {
        let (line, column) = e.span().map_or((1, 1), |span| position(text, span.start));
        // toml keeps the key path private but prints it as "in `a.b`" when it has no input.
        let mut bare = e.clone();
        bare.set_input(None);
        let field = bare.to_string().lines().rev().find_map(|l| {
            l.strip_prefix("in `")
                .and_then(|rest| rest.strip_suffix('`'))
                .map(str::to_owned)
        });
        ScriptError {
            line,
            column,
            field,
            message: e.message().trim_end().to_owned(),
        }
    }
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fault script, line {}, column {}",
            self.line, self.column
        )?;
        if let Some(field) = &self.field {
            write!(f, ", `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ScriptError {}

/// The 1-based line and column (in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

// The TOML shapes, converted (and checked) into the public types.

/// A duration written for humans: `"30s"`, `"1m 30s"`, `"250ms"`.
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration `{text}`: {e}")))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawWhen {
    Between(HumanDuration, HumanDuration),
    Requests(u64, u64),
    Always,
}

impl TryFrom<RawWhen> for When {
    type Error = String;

    fn try_from(raw: RawWhen) -> Result<When, String> {
        Ok(match raw {
            RawWhen::Between(HumanDuration(from), HumanDuration(until)) => {
                if from >= until {
                    return Err(format!(
                        "empty window: `between` starts at {} and ends at {}",
                        humantime::format_duration(from),
                        humantime::format_duration(until)
                    ));
                }
                When::Between { from, until }
            }
            RawWhen::Requests(from, until) => {
                if from >= until {
                    return Err(format!(
                        "empty window: `requests` = [{from}, {until}] (the end is exclusive)"
                    ));
                }
                When::Requests { from, until }
            }
            RawWhen::Always => When::Always,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawKind {
    Status(u16),
    Overloaded,
    RateLimited(HumanDuration),
    Unauthorized,
    Slow(HumanDuration),
    Hang,
    Reset,
    CutStream(usize),
    Flap,
    StreamError(RawStreamError),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStreamError {
    error: StreamFault,
    #[serde(default)]
    after_chunks: usize,
}

impl TryFrom<RawKind> for FaultKind {
    type Error = String;

    fn try_from(raw: RawKind) -> Result<FaultKind, String> {
        Ok(match raw {
            RawKind::Status(code @ 400..=599) => FaultKind::Status(code),
            RawKind::Status(code) => {
                return Err(format!(
                    "`status` = {code}: a fault's status must be an error (400..=599)"
                ))
            }
            RawKind::Overloaded => FaultKind::Overloaded,
            RawKind::RateLimited(HumanDuration(retry_after)) => {
                FaultKind::RateLimited { retry_after }
            }
            RawKind::Unauthorized => FaultKind::Unauthorized,
            RawKind::Slow(HumanDuration(d)) => FaultKind::Slow(d),
            RawKind::Hang => FaultKind::Hang,
            RawKind::Reset => FaultKind::Reset,
            RawKind::CutStream(after_chunks) => FaultKind::CutStream { after_chunks },
            RawKind::Flap => FaultKind::Flap,
            RawKind::StreamError(RawStreamError {
                error,
                after_chunks,
            }) => FaultKind::StreamError {
                after_chunks,
                error,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn first_matching_fault_wins() {
        let script = FaultScript::new()
            .fault(When::Requests { from: 2, until: 4 }, FaultKind::Reset)
            .fault(
                When::Between {
                    from: 10 * S,
                    until: 20 * S,
                },
                FaultKind::Hang,
            )
            .fault(When::Always, FaultKind::Status(500));
        assert_eq!(script.fault_for(2, 15 * S), Some(&FaultKind::Reset));
        assert_eq!(script.fault_for(3, S), Some(&FaultKind::Reset));
        assert_eq!(script.fault_for(4, 10 * S), Some(&FaultKind::Hang));
        assert_eq!(script.fault_for(4, 20 * S), Some(&FaultKind::Status(500)));
        assert_eq!(script.fault_for(0, 9 * S), Some(&FaultKind::Status(500)));
        assert_eq!(FaultScript::new().fault_for(0, S), None);
    }

    #[test]
    fn windows_are_half_open() {
        let w = When::Between {
            from: S,
            until: 2 * S,
        };
        assert!(!w.matches(0, S - Duration::from_nanos(1)));
        assert!(w.matches(0, S));
        assert!(!w.matches(0, 2 * S));
        let r = When::Requests { from: 5, until: 6 };
        assert!(!r.matches(4, S) && r.matches(5, S) && !r.matches(6, S));
    }

    #[test]
    fn positions_count_lines_and_characters() {
        assert_eq!(position("a\nbé = 1", 0), (1, 1));
        assert_eq!(position("a\nbé = 1", 2), (2, 1));
        assert_eq!(position("a\nbé = 1", 6), (2, 4));
    }
}
