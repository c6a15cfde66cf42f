//! The source's own metrics, registered into the operator's registry: query duration and query
//! errors per signal (and bounded reason). Labels are fixed sets, never built from error text.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::query::SignalKind;
use super::{Error, Result};

/// Name of the query duration histogram.
pub const QUERY_DURATION_METRIC: &str = "l3_prometheus_query_duration_seconds";
/// Name of the query error counter.
pub const QUERY_ERRORS_METRIC: &str = "l3_prometheus_query_errors_total";

/// Buckets of the duration histogram, seconds: from a fast local Prometheus to the timeout.
const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Handles to the source's metrics.
#[derive(Debug, Clone)]
pub struct Telemetry {
    duration: HistogramVec,
    errors: IntCounterVec,
}

impl Telemetry {
    /// Create the metrics and register them into `registry`. Every `(signal, reason)` error
    /// series starts at 0 so that `rate()` and alerts see it before the first failure.
    pub fn register(registry: &Registry) -> Result<Self> {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                QUERY_DURATION_METRIC,
                "Duration of the source's PromQL queries (failed ones included), by signal.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["signal"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                QUERY_ERRORS_METRIC,
                "Failed PromQL queries of the source, by signal and bounded reason.",
            ),
            &["signal", "reason"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        for s in SignalKind::ALL {
            duration.with_label_values(&[s.as_str()]);
            for r in Error::QUERY_REASONS {
                errors.with_label_values(&[s.as_str(), r]);
            }
        }
        Ok(Self { duration, errors })
    }

    /// Record one query's duration.
    pub fn observe(&self, signal: SignalKind, secs: f64) {
        self.duration
            .with_label_values(&[signal.as_str()])
            .observe(secs);
    }

    /// Count one failed query.
    pub fn error(&self, signal: SignalKind, reason: &'static str) {
        self.errors
            .with_label_values(&[signal.as_str(), reason])
            .inc();
    }

    /// Queries sent for `signal` so far (the histogram's count).
    pub fn queries(&self, signal: SignalKind) -> u64 {
        self.duration
            .with_label_values(&[signal.as_str()])
            .get_sample_count()
    }

    /// Failed queries for `signal` with `reason` so far.
    pub fn errors(&self, signal: SignalKind, reason: &str) -> u64 {
        self.errors
            .with_label_values(&[signal.as_str(), reason])
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_named_metrics_with_zeroed_errors() {
        let registry = Registry::new();
        let t = Telemetry::register(&registry).unwrap();
        t.observe(SignalKind::Rps, 0.01);
        t.error(SignalKind::Latency, "timeout");
        let families = registry.gather();
        let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
        assert!(names.contains(&QUERY_DURATION_METRIC), "{names:?}");
        assert!(names.contains(&QUERY_ERRORS_METRIC), "{names:?}");
        let errors = families
            .iter()
            .find(|f| f.name() == QUERY_ERRORS_METRIC)
            .unwrap();
        assert_eq!(errors.get_metric().len(), 4 * Error::QUERY_REASONS.len());
        assert_eq!(t.queries(SignalKind::Rps), 1);
        assert_eq!(t.errors(SignalKind::Latency, "timeout"), 1);
        // A second registration into the same registry is an error, not a panic.
        assert!(Telemetry::register(&registry).is_err());
    }
}
