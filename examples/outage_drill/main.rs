//! The outage drill: a scripted provider incident, end to end, over real HTTP on loopback.
//!
//! ```sh
//! cargo run --release --example outage_drill                       # the built-in incident
//! cargo run --release --example outage_drill -- --scenario my.toml # your own script
//! cargo run --release --example outage_drill -- --scale 0.5        # faster, same shape
//! cargo run --release --example outage_drill -- --no-probes        # without recovery probes
//! cargo run --release --example outage_drill --features server -- --ops 127.0.0.1:9464
//! ```
//!
//! `--ops ADDR` (feature `server`) serves the ops endpoint during the drill: the status page
//! at `/`, Prometheus metrics at `/metrics`, events at `/events`.
//!
//! Three mock LLM providers start on 127.0.0.1. Tens of agent tasks send chat requests through
//! a fusebox route (primary → secondary → tertiary); the same script is replayed at the same
//! time against a second set of mocks through a naive retry loop (2 s, 4 s, 8 s backoff, no
//! breaker). The primary goes hard down, the secondary has a burst of 429s with Retry-After,
//! the tertiary turns slow, then everything recovers. The secondary also has a quota (250
//! requests per 8 s window) announced in OpenAI's `x-ratelimit-*` headers: while it carries
//! the primary's traffic its headroom runs low, then out (429s until the window resets).
//! fusebox records every response's headroom (`fusebox::http::record_headroom`). A live line
//! shows each provider's circuit and headroom, events print as they happen, and a table
//! compares the strategies at the end, with the 429s each received (all of them, and those
//! for a spent quota). While a circuit is open, fusebox probes its provider (`GET /v1/models`
//! on the mock, every second at scale 1), so the primary serves again within one probe
//! interval of its recovery; the table shows the probe requests (counted apart from the
//! calls that reached a failing provider) and how long after the primary's recovery it
//! served again, and served every request first again. An SVG timeline of every attempt and circuit state is written to
//! `target/outage_drill.svg`.
//!
//! A scenario file:
//!
//! ```toml
//! duration = "30s"      # how long agents keep starting requests
//! agents = 24
//! think = "100ms"       # pause between an agent's requests
//!
//! [[providers]]
//! name = "primary"
//! api = "anthropic"     # or "openai"
//! latency = "150ms"
//! faults = [ { when = { between = ["4s", "16s"] }, kind = { status = 503 } } ]
//! quota = { requests = 250, window = "8s" }   # optional; `tokens = 50000` too
//! ```

mod engine;
mod scenario;
mod timeline;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use fusebox::{Event, EventKind};
use tokio::time::Instant;

use engine::{Progress, Report};
use scenario::Scenario;

struct Args {
    scenario: Option<PathBuf>,
    scale: f64,
    out: PathBuf,
    ops: Option<std::net::SocketAddr>,
    probes: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        scenario: None,
        scale: 1.0,
        out: PathBuf::from("target/outage_drill.svg"),
        ops: None,
        probes: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--scenario" => args.scenario = Some(value("--scenario")?.into()),
            "--scale" => {
                let v = value("--scale")?;
                args.scale = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0 && s.is_finite())
                    .ok_or(format!("--scale {v:?}: a positive number is needed"))?;
            }
            "--out" => args.out = value("--out")?.into(),
            "--no-probes" => args.probes = false,
            "--ops" => {
                let v = value("--ops")?;
                args.ops = Some(v.parse().map_err(|_| {
                    format!("--ops {v:?}: an address such as 127.0.0.1:9464 is needed")
                })?);
            }
            "-h" | "--help" => {
                println!(
                    "usage: outage_drill [--scenario FILE.toml] [--scale FACTOR] [--out FILE.svg] [--ops ADDR] [--no-probes]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

fn describe(event: &Event) -> String {
    match &event.kind {
        EventKind::CircuitOpened {
            cause,
            failures,
            retry_after,
        } => format!(
            "{:<24} {:<10} {} after {failures} failures, retry in {:.1}s",
            event.name(),
            event.provider,
            cause.as_str(),
            retry_after.as_secs_f64()
        ),
        EventKind::CircuitClosed | EventKind::CircuitIsolated | EventKind::CircuitHalfOpened => {
            format!(
                "{:<24} {:<10} {}",
                event.name(),
                event.provider,
                event.cause.map_or("", |c| c.as_str())
            )
        }
        EventKind::ThresholdsAdapted {
            tier,
            failure_threshold,
            ..
        } => format!(
            "{:<24} {:<10} tier {tier:?}, threshold {failure_threshold:?}",
            event.name(),
            event.provider
        ),
        _ => format!("{:<24} {:<10}", event.name(), event.provider),
    }
}

fn state_label(state: fusebox::CircuitState) -> &'static str {
    match state {
        fusebox::CircuitState::Closed => "closed",
        fusebox::CircuitState::HalfOpen => "HALF",
        fusebox::CircuitState::Open => "OPEN",
        fusebox::CircuitState::Isolated => "ISOL",
    }
}

fn table(reports: &[&Report], providers: &[String], recovered: Option<f64>) {
    println!();
    println!(
        "{:<12} {:>7} {:>7} {:>22} {:>15} {:>6} {:>11} {:>9} {:>9} {:>16} {:>16}   served by ({})",
        "strategy",
        "served",
        "failed",
        "reached failing prov.",
        "probe requests",
        "429s",
        "quota 429s",
        "p50",
        "p99",
        "primary back",
        "full share back",
        providers.join(" / ")
    );
    let after = |d: Option<f64>| d.map_or_else(|| "not in run".to_owned(), |d| format!("+{d:.2}s"));
    for r in reports {
        let by: Vec<String> = r.served_by.iter().map(u64::to_string).collect();
        let (back, full) = recovered.map_or((None, None), |t| r.back_after(t));
        println!(
            "{:<12} {:>7} {:>7} {:>22} {:>15} {:>6} {:>11} {:>8.0}ms {:>8.0}ms {:>16} {:>16}   {}",
            r.strategy,
            r.served,
            r.failed,
            r.reached_failing,
            r.probes,
            r.rate_limited,
            r.quota_rejections,
            r.percentile(50.0).as_secs_f64() * 1000.0,
            r.percentile(99.0).as_secs_f64() * 1000.0,
            after(back),
            after(full),
            by.join(" / ")
        );
    }
    if let Some(t) = recovered {
        println!(
            "\n(primary back / full share back: from the primary's recovery at {t:.1}s to the first \
             request it served at the first attempt / to the first request after which it \
             served every request first)"
        );
    }
}

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("outage_drill: {error}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let base = match &args.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Scenario::from_toml_str(&text)?
        }
        None => Scenario::default_drill(),
    };
    let scenario = base.scaled(args.scale);
    let providers: Vec<String> = scenario.providers.iter().map(|p| p.name.clone()).collect();
    let ops = ops::Ops::install(args.ops)?; // the recorder goes in before the supervisor
    let fuse_mocks = engine::start_mocks(&scenario).await?;
    let naive_mocks = engine::start_mocks(&scenario).await?;
    // Each provider is probed (`GET /v1/models` on its mock) while its circuit is open.
    let builder = if args.probes {
        engine::probed_supervisor_builder(&scenario, &fuse_mocks)
    } else {
        engine::supervisor_builder(&scenario)
    };
    let fuse = builder.build().await?;
    let _ops = ops.start(&fuse).await?;
    println!(
        "outage drill: {} agents for {:.0}s over {} mock providers on 127.0.0.1 ({})",
        scenario.agents,
        scenario.duration.as_secs_f64(),
        providers.len(),
        fuse_mocks
            .iter()
            .map(|m| m.addr().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("events:");

    let start = Instant::now();
    let (fuse_progress, naive_progress) = (
        std::sync::Arc::new(std::sync::Mutex::new(None::<Progress>)),
        std::sync::Arc::new(std::sync::Mutex::new(None::<Progress>)),
    );
    let set = |slot: &std::sync::Arc<std::sync::Mutex<Option<Progress>>>| {
        let slot = slot.clone();
        move |p: Progress| {
            *slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(p)
        }
    };

    // Live output: events as they happen, and a progress line.
    let live = {
        let fuse = fuse.clone();
        let mut events = fuse.subscribe();
        let (fp, np) = (fuse_progress.clone(), naive_progress.clone());
        let tty = std::io::stdout().is_terminal();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_millis(if tty { 250 } else { 2000 }));
            loop {
                tokio::select! {
                    event = events.recv() => if let Ok(event) = event {
                        if tty { print!("\r\x1b[2K"); }
                        println!("  [{:>5.1}s] {}", start.elapsed().as_secs_f64(), describe(&event));
                    },
                    _ = tick.tick() => {
                        let tally = |p: &std::sync::Arc<std::sync::Mutex<Option<Progress>>>| {
                            p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
                                .as_ref().map(Progress::tally).unwrap_or_default()
                        };
                        let (f, n) = (tally(&fp), tally(&np));
                        let states: Vec<String> = fuse.status().iter()
                            .map(|s| {
                                let headroom = s.headroom.and_then(|h| h.ratio())
                                    .map(|r| format!(" {:.0}%", r * 100.0)).unwrap_or_default();
                                format!("{} {}{headroom}", s.provider, state_label(s.state))
                            }).collect();
                        let line = format!(
                            "t={:>5.1}s | {} | fusebox {} served {} failed | naive {} served {} failed",
                            start.elapsed().as_secs_f64(), states.join("  "), f.served, f.failed, n.served, n.failed
                        );
                        if tty { print!("\r\x1b[2K{line}"); let _ = std::io::stdout().flush(); } else { println!("{line}"); }
                    }
                }
            }
        })
    };

    let (fuse_report, naive_report) = tokio::join!(
        engine::run_fusebox(&scenario, fuse.clone(), fuse_mocks, set(&fuse_progress)),
        engine::run_naive(&scenario, naive_mocks, set(&naive_progress)),
    );
    live.abort();
    if std::io::stdout().is_terminal() {
        print!("\r\x1b[2K");
    }
    let reports = [&fuse_report, &naive_report];
    let recovered = engine::primary_recovery(&scenario).map(|d| d.as_secs_f64());
    table(&reports, &providers, recovered);
    if let Some(t) = recovered {
        let interval = engine::PROBE_INTERVAL * scenario.time_scale;
        if let (Some(back), _) = fuse_report.back_after(t) {
            println!(
                "fusebox: the primary served again {back:.2}s after its recovery (probe interval {interval:.2}s)"
            );
        }
    }

    let seconds = start.elapsed().as_secs_f64();
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    timeline::write(&args.out, &reports, &providers, seconds)?;
    println!("\ntimeline: {}", args.out.display());
    fuse.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

/// `--ops ADDR`: the ops endpoint (status page, metrics, events) for the drill's supervisor.
mod ops {
    use std::net::SocketAddr;

    type Error = Box<dyn std::error::Error>;

    pub(crate) struct Ops {
        addr: Option<SocketAddr>,
        #[cfg(feature = "server")]
        metrics: Option<fusebox::prometheus::PrometheusHandle>,
    }

    impl Ops {
        #[cfg(feature = "server")]
        pub(crate) fn install(addr: Option<SocketAddr>) -> Result<Ops, Error> {
            let metrics = addr.map(|_| fusebox::prometheus::install()).transpose()?;
            Ok(Ops { addr, metrics })
        }

        #[cfg(not(feature = "server"))]
        pub(crate) fn install(addr: Option<SocketAddr>) -> Result<Ops, Error> {
            match addr {
                Some(_) => Err("--ops needs the `server` feature: \
                    cargo run --example outage_drill --features server -- --ops ADDR"
                    .into()),
                None => Ok(Ops { addr }),
            }
        }

        #[cfg(feature = "server")]
        pub(crate) async fn start(
            self,
            fuse: &fusebox::Supervisor,
        ) -> Result<Option<fusebox::server::OpsHandle>, Error> {
            let (Some(addr), Some(metrics)) = (self.addr, self.metrics) else {
                return Ok(None);
            };
            let server = fusebox::server::OpsServer::new(fuse.clone()).prometheus(metrics);
            let handle = server.bind(addr).start().await?;
            println!(
                "ops endpoint: http://{}/ (status page; /metrics, /events)",
                handle.addr()
            );
            Ok(Some(handle))
        }

        #[cfg(not(feature = "server"))]
        pub(crate) async fn start(self, _: &fusebox::Supervisor) -> Result<Option<()>, Error> {
            Ok(self.addr.map(|_| ()))
        }
    }
}
