//! The drill's scenario: the providers, their fault scripts and the agents' load.

use std::time::Duration;

use fusebox::testing::{Fault, FaultKind, FaultScript, Quota, When};
use serde::Deserialize;

/// The API shape a mock provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Api {
    OpenAi,
    Anthropic,
}

/// One mock provider.
#[derive(Debug, Clone)]
pub(crate) struct ProviderScript {
    pub(crate) name: String,
    pub(crate) api: Api,
    /// How long a healthy answer takes.
    pub(crate) latency: Duration,
    pub(crate) faults: FaultScript,
    /// A rate-limit quota announced in the responses' headers and enforced with 429s.
    pub(crate) quota: Option<Quota>,
}

/// A whole drill.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    /// How long agents keep starting requests.
    pub(crate) duration: Duration,
    /// Concurrent agent tasks.
    pub(crate) agents: usize,
    /// Pause between an agent's requests.
    pub(crate) think: Duration,
    /// Providers, in fallback order.
    pub(crate) providers: Vec<ProviderScript>,
    /// Multiplies every duration of the fusebox configuration and of the naive backoff.
    pub(crate) time_scale: f64,
}

fn between(from: f64, until: f64) -> When {
    When::Between {
        from: Duration::from_secs_f64(from),
        until: Duration::from_secs_f64(until),
    }
}

impl Scenario {
    /// The built-in incident: the primary goes hard down, the secondary has a burst of 429s
    /// with Retry-After, the tertiary turns slow; everything recovers by 20 s. The secondary
    /// also has a quota of 250 requests per 8 s window: once it carries the primary's traffic
    /// (from 10 s, after its 429 burst) its headers show the quota running low, and it is
    /// spent before the window resets at 16 s unless traffic is steered away.
    pub(crate) fn default_drill() -> Scenario {
        let script = |faults: Vec<Fault>| FaultScript { faults };
        Scenario {
            duration: Duration::from_secs(30),
            agents: 24,
            think: Duration::from_millis(100),
            time_scale: 1.0,
            providers: vec![
                ProviderScript {
                    name: "primary".into(),
                    api: Api::Anthropic,
                    latency: Duration::from_millis(150),
                    faults: script(vec![Fault {
                        when: between(4.0, 16.0),
                        kind: FaultKind::Status(503),
                    }]),
                    quota: None,
                },
                ProviderScript {
                    name: "secondary".into(),
                    api: Api::OpenAi,
                    latency: Duration::from_millis(250),
                    faults: script(vec![Fault {
                        when: between(6.0, 10.0),
                        kind: FaultKind::RateLimited {
                            retry_after: Duration::from_secs(2),
                        },
                    }]),
                    quota: Some(Quota::requests(250).window(Duration::from_secs(8))),
                },
                ProviderScript {
                    name: "tertiary".into(),
                    api: Api::OpenAi,
                    latency: Duration::from_millis(300),
                    faults: script(vec![Fault {
                        when: between(8.0, 20.0),
                        kind: FaultKind::Slow(Duration::from_millis(1200)),
                    }]),
                    quota: None,
                },
            ],
        }
    }

    /// The same scenario with every duration multiplied by `factor` (for quick runs).
    pub(crate) fn scaled(&self, factor: f64) -> Scenario {
        let d = |d: Duration| d.mul_f64(factor);
        let when = |w: When| match w {
            When::Between { from, until } => When::Between {
                from: d(from),
                until: d(until),
            },
            other => other,
        };
        let kind = |k: FaultKind| match k {
            FaultKind::RateLimited { retry_after } => FaultKind::RateLimited {
                retry_after: d(retry_after),
            },
            FaultKind::Slow(s) => FaultKind::Slow(d(s)),
            other => other,
        };
        Scenario {
            duration: d(self.duration),
            agents: self.agents,
            think: d(self.think),
            time_scale: self.time_scale * factor,
            providers: self
                .providers
                .iter()
                .map(|p| ProviderScript {
                    latency: d(p.latency),
                    // The same requests per window: the load scales with time too.
                    quota: p.quota.map(|q| q.window(d(q.window))),
                    faults: FaultScript {
                        faults: p
                            .faults
                            .faults
                            .iter()
                            .map(|f| Fault {
                                when: when(f.when),
                                kind: kind(f.kind),
                            })
                            .collect(),
                    },
                    ..p.clone()
                })
                .collect(),
        }
    }

    /// Reads a scenario file (see `examples/outage_drill/README` in the main help).
    pub(crate) fn from_toml_str(text: &str) -> Result<Scenario, String> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            format!("scenario line {line}: {}", e.message().trim_end())
        })?;
        let duration = |field: &str, value: &str| {
            humantime::parse_duration(value)
                .map_err(|e| format!("scenario field `{field}` = {value:?}: {e}"))
        };
        if raw.providers.is_empty() {
            return Err("scenario field `providers`: at least one provider is needed".into());
        }
        if raw.agents == Some(0) {
            return Err("scenario field `agents` = 0: at least one agent is needed".into());
        }
        let mut providers = Vec::new();
        for (i, p) in raw.providers.into_iter().enumerate() {
            if p.name.trim().is_empty() {
                return Err(format!(
                    "scenario field `providers[{i}].name`: must not be empty"
                ));
            }
            let latency = match &p.latency {
                Some(l) => duration(&format!("providers[{i}].latency"), l)?,
                None => Duration::from_millis(200),
            };
            let quota = match &p.quota {
                Some(q) => {
                    let window = match &q.window {
                        Some(w) => duration(&format!("providers[{i}].quota.window"), w)?,
                        None => Duration::from_secs(60),
                    };
                    let quota = Quota::requests(q.requests).window(window);
                    Some(match q.tokens {
                        Some(tokens) => quota.tokens(tokens),
                        None => quota,
                    })
                }
                None => None,
            };
            providers.push(ProviderScript {
                name: p.name,
                api: p.api.unwrap_or(Api::OpenAi),
                latency,
                faults: FaultScript { faults: p.faults },
                quota,
            });
        }
        let default = Scenario::default_drill();
        Ok(Scenario {
            duration: match &raw.duration {
                Some(d) => duration("duration", d)?,
                None => default.duration,
            },
            agents: raw.agents.unwrap_or(default.agents),
            think: match &raw.think {
                Some(d) => duration("think", d)?,
                None => default.think,
            },
            time_scale: 1.0,
            providers,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    duration: Option<String>,
    agents: Option<usize>,
    think: Option<String>,
    #[serde(default)]
    providers: Vec<RawProvider>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    api: Option<Api>,
    latency: Option<String>,
    #[serde(default)]
    faults: Vec<Fault>,
    quota: Option<RawQuota>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuota {
    requests: u64,
    tokens: Option<u64>,
    window: Option<String>,
}
