//! The C3 baseline, as the L3 paper adapted it to aggregated service-mesh metrics (§5.1).
//!
//! Original C3 (Suresh et al., NSDI 2015) ranks replicas per request by
//! `Psi = R - 1/mu + q^3/mu` with `q = 1 + outstanding * n + queue`. The L3 authors adapted it to
//! aggregated metrics and dropped any success-rate term; their Go code's weight was
//! `1 / (E * (1 + Ri^3))`, where `E` is the mean of a log-normal fitted to the filtered p50 and
//! p99 latency and `Ri` the normalised in-flight count. This is that C3: it is driven by the
//! *mean* of the fitted distribution, so it reacts less to tail spikes than L3, and it ignores
//! failures. Used by the simulator and benchmarks only, never by the operator.
//!
//! [`C3Estimate::P99`] drives the same formula with the filtered p99 instead of the mean: the
//! `c3-p99` baseline, which reacts to tail spikes as L3 does.

use super::weighting::{MAX_LATENCY_SECS, MIN_LATENCY_SECS};

/// `z` of the 99th percentile of the standard normal distribution.
pub const Z_P99: f64 = 2.326;

/// The signals the adapted C3 reads for one backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct C3Signals {
    /// Filtered median latency, seconds.
    pub p50_secs: f64,
    /// Filtered 99th-percentile latency, seconds.
    pub p99_secs: f64,
    /// Filtered requests per second.
    pub rps: f64,
    /// Filtered in-flight requests.
    pub inflight: f64,
}

/// Mean of the log-normal fitted to a p50 and a p99: `mu = ln p50`,
/// `sigma = (ln p99 - ln p50) / 2.326`, `E = exp(mu + sigma^2 / 2)`.
///
/// Latencies are clamped to the same range as in L3; a p99 below the p50 (possible with noisy
/// filtered values) is read as `sigma = 0`.
pub fn lognormal_mean(p50_secs: f64, p99_secs: f64) -> f64 {
    let clamp = |x: f64| {
        if x.is_nan() {
            MAX_LATENCY_SECS
        } else {
            x.clamp(MIN_LATENCY_SECS, MAX_LATENCY_SECS)
        }
    };
    let (p50, p99) = (clamp(p50_secs), clamp(p99_secs));
    let mu = p50.ln();
    let sigma = ((p99.ln() - mu) / Z_P99).max(0.0);
    (mu + sigma * sigma / 2.0).exp()
}

/// Which latency figure is C3's `E`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum C3Estimate {
    /// The mean of the log-normal fitted to p50 and p99 (the L3 authors' C3).
    LogNormalMean,
    /// The filtered p99 itself (`c3-p99`): reacts to tail spikes as strongly as L3's signal.
    P99,
}

/// The adapted C3 weight `1 / (E * (1 + Ri^3))` with the log-normal mean as `E`; always finite
/// and positive.
pub fn c3_weight(s: &C3Signals) -> f64 {
    c3_weight_with(s, C3Estimate::LogNormalMean)
}

/// The adapted C3 weight `1 / (E * (1 + Ri^3))` with `E` chosen by `estimate`; always finite and
/// positive.
pub fn c3_weight_with(s: &C3Signals, estimate: C3Estimate) -> f64 {
    let ri = if s.rps.is_finite() && s.rps > 0.0 && s.inflight.is_finite() && s.inflight > 0.0 {
        (s.inflight / s.rps).min(1e6)
    } else {
        0.0
    };
    let e = match estimate {
        C3Estimate::LogNormalMean => lognormal_mean(s.p50_secs, s.p99_secs),
        C3Estimate::P99 if s.p99_secs.is_nan() => MAX_LATENCY_SECS,
        C3Estimate::P99 => s.p99_secs.clamp(MIN_LATENCY_SECS, MAX_LATENCY_SECS),
    };
    let w = 1.0 / (e * (1.0 + ri.powi(3)));
    if w.is_finite() && w > 0.0 {
        w
    } else {
        f64::MIN_POSITIVE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lognormal_mean_matches_closed_form() {
        // p50 = 1, p99 = e^2.326 → sigma = 1 → mean = e^0.5
        let m = lognormal_mean(1.0, Z_P99.exp());
        assert!((m - 0.5_f64.exp()).abs() < 1e-9, "got {m}");
        assert!(
            (lognormal_mean(0.1, 0.05) - 0.1).abs() < 1e-12,
            "p99 below p50 means sigma 0"
        );
    }

    #[test]
    fn weight_prefers_lower_mean_and_fewer_inflight() {
        let base = C3Signals {
            p50_secs: 0.05,
            p99_secs: 0.2,
            rps: 100.0,
            inflight: 10.0,
        };
        let slower = C3Signals {
            p50_secs: 0.1,
            ..base
        };
        let busier = C3Signals {
            inflight: 50.0,
            ..base
        };
        assert!(c3_weight(&base) > c3_weight(&slower));
        assert!(c3_weight(&base) > c3_weight(&busier));
        let nan = C3Signals {
            p50_secs: f64::NAN,
            ..base
        };
        assert!(c3_weight(&nan).is_finite());
    }

    #[test]
    fn the_p99_estimate_divides_by_the_p99() {
        let s = C3Signals {
            p50_secs: 0.01,
            p99_secs: 0.5,
            rps: 0.0,
            inflight: 0.0,
        };
        assert!((c3_weight_with(&s, C3Estimate::P99) - 2.0).abs() < 1e-12);
        // The log-normal mean of (10 ms, 500 ms) is far below the p99: a larger weight.
        assert!(c3_weight(&s) > 2.0 * c3_weight_with(&s, C3Estimate::P99));
        let nan = C3Signals {
            p99_secs: f64::NAN,
            ..s
        };
        assert!(c3_weight_with(&nan, C3Estimate::P99) > 0.0);
    }
}
