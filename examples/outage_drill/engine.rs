//! Runs a scenario against fresh mock providers, once through fusebox and once through a
//! naive retry loop, and records what happened.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fusebox::http::{check, record_headroom, HttpError};
use fusebox::testing::MockLlm;
use fusebox::{
    AllOpen, AttemptOutcome, Breaker, CircuitState, Event, Provider, ProviderHandle, ProviderId,
    Route, Supervisor, Window,
};
use tokio::time::Instant;

use crate::scenario::{Api, Scenario};

/// One attempt at one provider, for the timeline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    pub(crate) provider: usize,
    pub(crate) at: f64,
    pub(crate) ok: bool,
}

/// What one strategy did.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) strategy: &'static str,
    pub(crate) served: u64,
    pub(crate) failed: u64,
    /// Requests that reached a provider while it was failing (answered with an error, reset,
    /// left hanging, or abandoned).
    pub(crate) reached_failing: u64,
    /// 429s the providers answered this strategy with (scripted rate limits and spent
    /// quotas).
    pub(crate) rate_limited: u64,
    /// Of `rate_limited`: those answered because a provider's quota was spent.
    pub(crate) quota_rejections: u64,
    /// Requests served by each provider.
    pub(crate) served_by: Vec<u64>,
    pub(crate) latencies: Vec<Duration>,
    pub(crate) marks: Vec<Mark>,
    /// Circuit states sampled over time (fusebox only).
    pub(crate) states: Vec<(f64, Vec<CircuitState>)>,
    /// Events, with their time (fusebox only).
    pub(crate) events: Vec<(f64, Event)>,
    /// Requests finished after the outage's recovery, by provider (for the drill's checks).
    pub(crate) served_last: Vec<usize>,
    /// Recovery probe requests the providers received (`GET /v1/models`; fusebox only).
    pub(crate) probes: u64,
    /// Every request: when it started (seconds since the start) and whether the first
    /// provider served it at the first attempt.
    pub(crate) firsts: Vec<(f64, bool)>,
}

impl Report {
    /// After `recovered` (seconds since the start): how long until the first provider served
    /// a request at the first attempt, and until it served every request started after that
    /// (its full share again: the last request it did not serve first, plus one); `None` when
    /// it never did within the run.
    pub(crate) fn back_after(&self, recovered: f64) -> (Option<f64>, Option<f64>) {
        let after = || self.firsts.iter().filter(|(at, _)| *at >= recovered);
        let first = after()
            .filter(|(_, primary)| *primary)
            .map(|(at, _)| at - recovered)
            .reduce(f64::min);
        let last_off = after()
            .filter(|(_, primary)| !*primary)
            .map(|(at, _)| *at)
            .reduce(f64::max);
        let latest = after().map(|(at, _)| *at).reduce(f64::max);
        let full = match (last_off, latest) {
            (None, Some(_)) => first,
            (Some(off), Some(latest)) if off < latest => {
                // The first request after the last one it did not serve first.
                after()
                    .map(|(at, _)| *at)
                    .filter(|at| *at > off)
                    .reduce(f64::min)
                    .map(|at| at - recovered)
            }
            _ => None,
        };
        (first, full)
    }

    pub(crate) fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[rank.min(sorted.len() - 1)]
    }
}

/// The fusebox configuration the drill runs: what a user would write.
pub(crate) fn supervisor_builder(scenario: &Scenario) -> fusebox::SupervisorBuilder {
    builder_with(scenario, None)
}

/// How often the drill's recovery probes run, before scaling.
pub(crate) const PROBE_INTERVAL: f64 = 1.0;

/// The drill's configuration with a recovery probe of each provider: `GET /v1/models` on its
/// mock every [`PROBE_INTERVAL`] while its circuit is open.
pub(crate) fn probed_supervisor_builder(
    scenario: &Scenario,
    mocks: &[MockLlm],
) -> fusebox::SupervisorBuilder {
    builder_with(scenario, Some(mocks))
}

/// When the first provider's last fault window ends (its recovery), from the start.
pub(crate) fn primary_recovery(scenario: &Scenario) -> Option<Duration> {
    scenario
        .providers
        .first()?
        .faults
        .faults
        .iter()
        .filter_map(|f| match f.when {
            fusebox::testing::When::Between { until, .. } => Some(until),
            _ => None,
        })
        .max()
}

fn probe_of(mock: &MockLlm, every: Duration) -> fusebox::Probe {
    let client = reqwest::Client::builder()
        .timeout(every)
        .build()
        .unwrap_or_default();
    let url = format!("{}/v1/models", mock.base_url());
    fusebox::Probe::new(every, move || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .get(url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map(|_| ())
        }
    })
}

fn builder_with(scenario: &Scenario, probes: Option<&[MockLlm]>) -> fusebox::SupervisorBuilder {
    let s = |secs: f64| Duration::from_secs_f64(secs * scenario.time_scale);
    let mut builder = Supervisor::builder().event_capacity(4096);
    for (i, p) in scenario.providers.iter().enumerate() {
        let mut provider = Provider::new(p.name.as_str());
        if let Some(mock) = probes.and_then(|m| m.get(i)) {
            provider = provider.probe_with(probe_of(mock, s(PROBE_INTERVAL)));
        }
        builder = builder.provider(
            provider
                .breaker(
                    Breaker::consecutive(5)
                        .failure_rate(0.5, Window::Time(s(10.0)))
                        .minimum_calls(10)
                        .open_for(s(3.0))
                        .max_open_for(s(12.0)),
                )
                .call_timeout(s(2.0)),
        );
    }
    let names: Vec<&str> = scenario.providers.iter().map(|p| p.name.as_str()).collect();
    builder.route(
        Route::new("chat")
            .providers(names)
            .deadline(s(15.0))
            .when_all_open(AllOpen::Wait(s(4.0))),
    )
}

/// Starts one mock per provider, each with its fault script (windows count from now).
pub(crate) async fn start_mocks(scenario: &Scenario) -> std::io::Result<Vec<MockLlm>> {
    let mut mocks = Vec::new();
    for p in &scenario.providers {
        let mut builder = MockLlm::builder()
            .latency(p.latency)
            .script(p.faults.clone());
        if let Some(quota) = p.quota {
            builder = builder.quota(quota);
        }
        mocks.push(builder.start().await?);
    }
    Ok(mocks)
}

/// One chat request to a mock, over real HTTP. With a provider handle, the response's
/// rate-limit headers are recorded as its headroom (success or error).
async fn ask(
    client: &reqwest::Client,
    mock: &MockLlm,
    api: Api,
    n: u64,
    provider: Option<&ProviderHandle>,
) -> Result<String, HttpError> {
    let (url, body) = match api {
        Api::OpenAi => (
            mock.openai_url(),
            serde_json::json!({"model": "drill", "messages": [{"role": "user", "content": format!("task {n}")}]}),
        ),
        Api::Anthropic => (
            mock.anthropic_url(),
            serde_json::json!({"model": "drill", "max_tokens": 64, "messages": [{"role": "user", "content": format!("task {n}")}]}),
        ),
    };
    let response = client.post(url).json(&body).send().await?;
    if let Some(provider) = provider {
        record_headroom(provider, response.headers());
    }
    let response = check(response).await?;
    Ok(response.text().await?)
}

fn failing(mocks: &[MockLlm]) -> u64 {
    mocks
        .iter()
        .map(|m| {
            let s = m.stats();
            s.requests.saturating_sub(s.ok)
        })
        .sum()
}

/// The 429s a strategy's mocks answered, and how many of them for a spent quota.
fn rate_limited(mocks: &[MockLlm]) -> (u64, u64) {
    mocks.iter().fold((0, 0), |(all, quota), m| {
        let s = m.stats();
        (all + s.errors_with(429), quota + s.quota_rejections)
    })
}

/// Shared bookkeeping of a running strategy.
#[derive(Default)]
struct Log {
    report: Report,
}

type Shared = Arc<Mutex<Log>>;

fn lock(log: &Shared) -> std::sync::MutexGuard<'_, Log> {
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Live counters a progress line can show.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tally {
    pub(crate) served: u64,
    pub(crate) failed: u64,
}

/// A strategy in progress: its tally so far.
#[derive(Clone)]
pub(crate) struct Progress(Shared);

impl Progress {
    pub(crate) fn tally(&self) -> Tally {
        let log = lock(&self.0);
        Tally {
            served: log.report.served,
            failed: log.report.failed,
        }
    }
}

/// A strategy's empty log, handed to `progress_out` so a progress line can read it live.
fn new_log(scenario: &Scenario, progress_out: impl FnOnce(Progress)) -> Shared {
    let log: Shared = Arc::default();
    lock(&log).report.served_by = vec![0; scenario.providers.len()];
    progress_out(Progress(log.clone()));
    log
}

/// Runs the agents through fusebox, recording every attempt, the circuit states and the
/// events.
pub(crate) async fn run_fusebox(
    scenario: &Scenario,
    fuse: Supervisor,
    mocks: Vec<MockLlm>,
    progress_out: impl FnOnce(Progress),
) -> Report {
    let log = new_log(scenario, progress_out);
    let start = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default();
    let mocks = Arc::new(mocks);
    let names: Arc<Vec<String>> =
        Arc::new(scenario.providers.iter().map(|p| p.name.clone()).collect());
    let apis: Arc<Vec<Api>> = Arc::new(scenario.providers.iter().map(|p| p.api).collect());
    let handles: Arc<Vec<Option<ProviderHandle>>> =
        Arc::new(names.iter().map(|name| fuse.provider(name)).collect());

    // Circuit states and events, sampled while the agents run.
    let sampler = {
        let (fuse, log) = (fuse.clone(), log.clone());
        let mut events = fuse.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let states = fuse.status().iter().map(|s| s.state).collect();
                        lock(&log).report.states.push((start.elapsed().as_secs_f64(), states));
                    }
                    event = events.recv() => match event {
                        Ok(event) => lock(&log).report.events.push((start.elapsed().as_secs_f64(), event)),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return,
                    },
                }
            }
        })
    };

    let until = start + scenario.duration;
    let mut agents = Vec::new();
    for agent in 0..scenario.agents {
        let (fuse, log, client) = (fuse.clone(), log.clone(), client.clone());
        let (mocks, names, apis) = (mocks.clone(), names.clone(), apis.clone());
        let handles = handles.clone();
        let think = scenario.think;
        agents.push(tokio::spawn(async move {
            let mut n = agent as u64 * 1_000_000;
            while Instant::now() < until {
                n += 1;
                let t0 = Instant::now();
                let result = fuse
                    .route("chat", |p: ProviderId| {
                        let i = names
                            .iter()
                            .position(|name| p == name.as_str())
                            .unwrap_or(0);
                        let (client, mocks, api) = (client.clone(), mocks.clone(), apis[i]);
                        let handles = handles.clone();
                        async move { ask(&client, &mocks[i], api, n, handles[i].as_ref()).await }
                    })
                    .await;
                let latency = t0.elapsed();
                record_fusebox(&log, &names, start, t0, until, latency, result);
                tokio::time::sleep(think).await;
            }
        }));
    }
    for agent in agents {
        let _ = agent.await;
    }
    sampler.abort();
    let mut report = std::mem::take(&mut lock(&log).report);
    report.strategy = "fusebox";
    report.probes = mocks.iter().map(|m| m.stats().models_requests).sum();
    report.reached_failing = failing(&mocks);
    (report.rate_limited, report.quota_rejections) = rate_limited(&mocks);
    report
}

/// Records one routed request: its attempts for the timeline, and its result.
fn record_fusebox(
    log: &Shared,
    names: &[String],
    start: Instant,
    t0: Instant,
    until: Instant,
    latency: Duration,
    result: Result<fusebox::Routed<String>, fusebox::RouteError<HttpError>>,
) {
    let mut log = lock(log);
    let attempts = match &result {
        Ok(routed) => &routed.attempts,
        Err(e) => e.attempts(),
    };
    let mut at = (t0 - start).as_secs_f64();
    for a in attempts {
        if a.outcome.was_called() {
            let provider = names
                .iter()
                .position(|name| a.provider == name.as_str())
                .unwrap_or(0);
            log.report.marks.push(Mark {
                provider,
                at,
                ok: a.outcome == AttemptOutcome::Succeeded,
            });
        }
        at += a.elapsed.as_secs_f64();
    }
    let first_served = matches!(&result, Ok(routed)
        if routed.attempts.len() == 1 && names.first().is_some_and(|n| routed.provider == n.as_str()));
    log.report
        .firsts
        .push(((t0 - start).as_secs_f64(), first_served));
    match result {
        Ok(routed) => {
            let i = names
                .iter()
                .position(|name| routed.provider == name.as_str())
                .unwrap_or(0);
            log.report.served += 1;
            log.report.served_by[i] += 1;
            log.report.latencies.push(latency);
            // The last fifth of the run: long after every fault has ended.
            if Instant::now() + (until - start) / 5 >= until {
                log.report.served_last.push(i);
            }
        }
        Err(_) => log.report.failed += 1,
    }
}

/// Runs the agents through a naive retry loop: each provider in turn, each attempted up to
/// four times with 2 s, 4 s and 8 s of backoff, no breaker; bounded by the same deadline as
/// the route.
pub(crate) async fn run_naive(
    scenario: &Scenario,
    mocks: Vec<MockLlm>,
    progress_out: impl FnOnce(Progress),
) -> Report {
    let log = new_log(scenario, progress_out);
    let scale = scenario.time_scale;
    let start = Instant::now();
    let attempt_timeout = Duration::from_secs_f64(2.0 * scale);
    let deadline = Duration::from_secs_f64(15.0 * scale);
    let backoff = [2.0, 4.0, 8.0].map(|s| Duration::from_secs_f64(s * scale));
    let client = reqwest::Client::builder()
        .timeout(attempt_timeout)
        .build()
        .unwrap_or_default();
    let mocks = Arc::new(mocks);
    let apis: Arc<Vec<Api>> = Arc::new(scenario.providers.iter().map(|p| p.api).collect());
    let until = start + scenario.duration;
    let mut agents = Vec::new();
    for agent in 0..scenario.agents {
        let (log, client, mocks, apis) = (log.clone(), client.clone(), mocks.clone(), apis.clone());
        let think = scenario.think;
        agents.push(tokio::spawn(async move {
            let mut n = agent as u64 * 1_000_000;
            while Instant::now() < until {
                n += 1;
                let t0 = Instant::now();
                let request = async {
                    for (i, mock) in mocks.iter().enumerate() {
                        for retry in 0..=backoff.len() {
                            let a0 = (Instant::now() - start).as_secs_f64();
                            let ok = matches!(
                                tokio::time::timeout(
                                    attempt_timeout,
                                    ask(&client, mock, apis[i], n, None)
                                )
                                .await,
                                Ok(Ok(_))
                            );
                            lock(&log).report.marks.push(Mark {
                                provider: i,
                                at: a0,
                                ok,
                            });
                            if ok {
                                return Some(i);
                            }
                            if let Some(pause) = backoff.get(retry) {
                                tokio::time::sleep(*pause).await;
                            }
                        }
                    }
                    None
                };
                let served = tokio::time::timeout(deadline, request).await.ok().flatten();
                let latency = t0.elapsed();
                {
                    let mut log = lock(&log);
                    // Served by the first provider at its first attempt: any retry would
                    // have added at least the first backoff.
                    let first = served == Some(0) && latency < attempt_timeout + backoff[0];
                    log.report.firsts.push(((t0 - start).as_secs_f64(), first));
                    match served {
                        Some(i) => {
                            log.report.served += 1;
                            log.report.served_by[i] += 1;
                            log.report.latencies.push(latency);
                        }
                        None => log.report.failed += 1,
                    }
                }
                tokio::time::sleep(think).await;
            }
        }));
    }
    for agent in agents {
        let _ = agent.await;
    }
    let mut report = std::mem::take(&mut lock(&log).report);
    report.strategy = "naive retry";
    report.reached_failing = failing(&mocks);
    (report.rate_limited, report.quota_rejections) = rate_limited(&mocks);
    report
}
