//! Prometheus export of fusebox's [metrics](crate::metrics), through
//! [`metrics-exporter-prometheus`](https://docs.rs/metrics-exporter-prometheus), with histogram
//! buckets fitted to LLM latencies.
//!
//! Install the recorder **before** building the [`Supervisor`](crate::Supervisor): the call
//! duration histograms are registered when the providers start, so a recorder installed later
//! never sees them.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use fusebox::{Provider, Supervisor};
//!
//! let handle = fusebox::prometheus::install()?;
//! let fuse = Supervisor::builder().provider(Provider::new("openai")).build().await?;
//! // ... calls ...
//! fuse.publish_metrics();
//! handle.run_upkeep();
//! println!("{}", handle.render());
//! # Ok(())
//! # }
//! ```
//!
//! The recorder is process-global: [`install`] succeeds once per process. The ops server
//! (`fusebox::server`, feature `server`) serves the handle on `GET /metrics` and runs its
//! upkeep on every scrape; if you render it elsewhere, call
//! [`PrometheusHandle::run_upkeep`] every few seconds.

pub use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

use metrics_exporter_prometheus::Matcher;

/// Histogram buckets (seconds) for LLM call latencies: from 25 ms (a cached or rejected
/// answer) to 5 minutes (a long generation).
pub const LLM_LATENCY_BUCKETS: &[f64] = &[
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0,
];

/// A [`PrometheusBuilder`] with [`LLM_LATENCY_BUCKETS`] for
/// [`fusebox_call_duration_seconds`](crate::metrics::CALL_DURATION), so it is rendered as a
/// Prometheus histogram (`_bucket`, `_sum`, `_count`) rather than a summary. Add your own
/// settings, then install it.
pub fn builder() -> PrometheusBuilder {
    let builder = PrometheusBuilder::new();
    match builder.set_buckets_for_metric(
        Matcher::Full(crate::metrics::CALL_DURATION.to_owned()),
        LLM_LATENCY_BUCKETS,
    ) {
        Ok(builder) => builder,
        // Only empty bucket lists are refused, and ours is not empty.
        Err(_) => unreachable!("LLM_LATENCY_BUCKETS is not empty"),
    }
}

/// Installs [`builder()`] as the global `metrics` recorder and returns the handle that renders
/// the Prometheus text format. Call it before building the supervisor.
///
/// # Errors
///
/// [`BuildError`] if a global recorder is already installed.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    builder().install_recorder()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_increasing_and_span_llm_latencies() {
        assert!(LLM_LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert!(LLM_LATENCY_BUCKETS[0] <= 0.05);
        assert!(*LLM_LATENCY_BUCKETS.last().unwrap_or(&0.0) >= 120.0);
    }

    #[test]
    fn the_duration_histogram_renders_with_our_buckets() {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!(crate::metrics::CALL_DURATION, "provider" => "p").record(1.5);
        });
        let text = handle.render();
        assert!(
            text.contains("fusebox_call_duration_seconds_bucket{provider=\"p\",le=\"2\"} 1"),
            "{text}"
        );
        assert!(text.contains("le=\"300\""), "{text}");
    }
}
