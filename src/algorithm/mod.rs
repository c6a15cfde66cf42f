//! The L3 algorithms (paper §3): filters, weighting, rate control, normalisation, and the C3
//! baseline.
//!
//! Pure code: no I/O, no async, no Kubernetes types. The operator and the simulator call these
//! same functions, so what `l3 simulate` shows is what the operator does.

pub mod c3;
pub mod filter;
pub mod normalise;
pub mod rate_control;
pub mod safety;
pub mod weighting;
pub mod window;

pub use c3::{C3Signals, c3_weight};
pub use filter::{Ewma, Filter, FilterKind, PeakEwma};
pub use normalise::{DEFAULT_MIN_SHARE, DEFAULT_TOTAL_WEIGHT, normalise};
pub use weighting::{Signals, WeightingParams, raw_weight};

/// Errors of the algorithm layer: invalid samples and invalid configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A sample or default that is NaN or infinite.
    #[error("{name} must be a finite number, got {value}")]
    NonFinite { name: &'static str, value: f64 },
    /// A sample or default below zero (latencies, rates and counts cannot be negative).
    #[error("{name} must not be negative, got {value}")]
    Negative { name: &'static str, value: f64 },
    /// A timestamp that is NaN or infinite.
    #[error("timestamp must be a finite number of seconds, got {timestamp}")]
    InvalidTimestamp { timestamp: f64 },
    /// A sample older than the last one the filter took.
    #[error("sample at {timestamp} s is older than the last update at {last} s")]
    OutOfOrder { last: f64, timestamp: f64 },
    /// A configuration value out of range.
    #[error("{name} is {value}, expected {expected}")]
    InvalidParameter {
        name: &'static str,
        value: f64,
        expected: &'static str,
    },
    /// More backends than the minimum share allows (`backends * min_share > 1`).
    #[error(
        "min_share {min_share} cannot be given to {backends} backends out of a total weight of {total}; lower min_share or the number of backends"
    )]
    Infeasible {
        backends: usize,
        min_share: f64,
        total: u32,
    },
}

/// Result of the algorithm layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Settings of one run of the weighting pipeline (Algorithm 1 → Algorithm 2 → normalisation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PipelineConfig {
    /// Algorithm 1 parameters.
    pub weighting: WeightingParams,
    /// Whether Algorithm 2 runs.
    pub rate_control: bool,
    /// Sum of the integer weights.
    pub total_weight: u32,
    /// Minimum share of every backend, a fraction.
    pub min_share: f64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            weighting: WeightingParams::default(),
            rate_control: true,
            total_weight: DEFAULT_TOTAL_WEIGHT,
            min_share: DEFAULT_MIN_SHARE,
        }
    }
}

impl PipelineConfig {
    /// Checks every parameter for `backends` backends.
    pub fn validate(&self, backends: usize) -> Result<()> {
        self.weighting.validate()?;
        normalise::validate(backends, self.total_weight, self.min_share)
    }
}

/// Total request rate across all backends, for Algorithm 2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TotalRate {
    /// `RPS_EWMA`: filtered total requests per second.
    pub filtered: f64,
    /// `RPS_last`: the latest total requests per second sample.
    pub last: f64,
}

/// The full L3 pipeline for one TrafficSplit: raw weights (Algorithm 1), rate control
/// (Algorithm 2, when enabled and a total rate is given), then integer weights summing to
/// `total_weight` with every backend at or above `min_share`.
pub fn l3_weights(
    backends: &[Signals],
    rate: Option<TotalRate>,
    cfg: &PipelineConfig,
) -> Result<Vec<u32>> {
    cfg.validate(backends.len())?;
    let mut raw: Vec<f64> = backends
        .iter()
        .map(|s| raw_weight(s, &cfg.weighting))
        .collect();
    if let (true, Some(rate)) = (cfg.rate_control, rate) {
        rate_control::apply(
            &mut raw,
            rate_control::relative_change(rate.filtered, rate.last),
        );
    }
    normalise(&raw, cfg.total_weight, cfg.min_share)
}

/// The adapted C3 baseline for one TrafficSplit, normalised like L3's weights.
pub fn c3_weights(backends: &[C3Signals], total_weight: u32, min_share: f64) -> Result<Vec<u32>> {
    c3_weights_with(
        backends,
        c3::C3Estimate::LogNormalMean,
        total_weight,
        min_share,
    )
}

/// The adapted C3 with a chosen latency estimate (`c3-p99` uses the p99), normalised like L3's
/// weights.
pub fn c3_weights_with(
    backends: &[C3Signals],
    estimate: c3::C3Estimate,
    total_weight: u32,
    min_share: f64,
) -> Result<Vec<u32>> {
    let raw: Vec<f64> = backends
        .iter()
        .map(|s| c3::c3_weight_with(s, estimate))
        .collect();
    normalise(&raw, total_weight, min_share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_prefers_the_fast_backend_and_keeps_the_floor() {
        let fast = Signals {
            latency_secs: 0.05,
            success_rate: 1.0,
            rps: 100.0,
            inflight: 5.0,
        };
        let slow = Signals {
            latency_secs: 5.0,
            ..fast
        };
        let w = l3_weights(&[fast, slow], None, &PipelineConfig::default()).unwrap();
        assert_eq!(w.iter().sum::<u32>(), 1000);
        assert!(w[0] > w[1] && w[1] >= 10, "{w:?}");
    }

    #[test]
    fn rate_rise_evens_out_and_rate_fall_sharpens() {
        let a = Signals {
            latency_secs: 0.1,
            success_rate: 1.0,
            rps: 0.0,
            inflight: 0.0,
        };
        let b = Signals {
            latency_secs: 0.3,
            ..a
        };
        let cfg = PipelineConfig::default();
        let steady = l3_weights(&[a, b], None, &cfg).unwrap();
        let rise = TotalRate {
            filtered: 100.0,
            last: 200.0,
        };
        let fall = TotalRate {
            filtered: 100.0,
            last: 50.0,
        };
        let up = l3_weights(&[a, b], Some(rise), &cfg).unwrap();
        let down = l3_weights(&[a, b], Some(fall), &cfg).unwrap();
        assert!(
            up[0] < steady[0] && down[0] > steady[0],
            "{up:?} {steady:?} {down:?}"
        );
        let off = PipelineConfig {
            rate_control: false,
            ..cfg
        };
        assert_eq!(l3_weights(&[a, b], Some(rise), &off).unwrap(), steady);
    }
}
