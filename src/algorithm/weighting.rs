//! Algorithm 1 of the paper: one raw weight per backend from its filtered signals.

use super::{Error, Result};

/// Default penalty factor `P` for a failed request: 0.6 s (paper §5.2.1).
pub const DEFAULT_PENALTY_SECS: f64 = 0.6;

/// Smallest success rate the weighting uses. The paper's `Rs = 0` branch sets `Lest = Ls`, which
/// removes the penalty exactly when every request fails, so a backend that fails fast would look
/// like the best one (Algorithm 1, §3.1). Clamping `Rs` to this floor keeps the penalty large
/// (`P * 999`) but finite, and the backend drops to the minimum share instead.
pub const MIN_SUCCESS_RATE: f64 = 1e-3;

/// Smallest latency the weighting uses (1 µs): a p99 of exactly 0 (an idle EWMA default of 0, a
/// bucket interpolation at the origin) would otherwise divide by zero.
pub const MIN_LATENCY_SECS: f64 = 1e-6;

/// Largest latency the weighting uses (one hour). A non-finite latency is treated as this.
pub const MAX_LATENCY_SECS: f64 = 3600.0;

/// Largest normalised in-flight value `Ri` the weighting uses; a non-finite one is treated as this.
pub const MAX_NORMALISED_INFLIGHT: f64 = 1e6;

/// The filtered signals of one backend, as Algorithm 1 reads them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signals {
    /// `Ls`: filtered quantile (p99 by default) latency of successful requests, in seconds.
    pub latency_secs: f64,
    /// `Rs`: filtered success rate in `[0, 1]`.
    pub success_rate: f64,
    /// `Rrps`: filtered requests per second.
    pub rps: f64,
    /// Filtered number of in-flight requests (before normalisation by RPS).
    pub inflight: f64,
}

impl Signals {
    /// `Ri`: in-flight requests divided by RPS, 0 when RPS is 0 (Algorithm 1, lines 6-8).
    pub fn normalised_inflight(&self) -> f64 {
        if self.rps.is_nan() || self.rps <= 0.0 || self.rps.is_infinite() {
            return 0.0;
        }
        let ri = self.inflight / self.rps;
        if ri.is_nan() || ri < 0.0 {
            // Negative or NaN in-flight is meaningless: no queue signal.
            0.0
        } else {
            ri.min(MAX_NORMALISED_INFLIGHT)
        }
    }

    /// `Rs` clamped to `[MIN_SUCCESS_RATE, 1]`; NaN counts as the floor (pessimistic).
    pub fn clamped_success_rate(&self) -> f64 {
        if self.success_rate.is_nan() {
            MIN_SUCCESS_RATE
        } else {
            self.success_rate.clamp(MIN_SUCCESS_RATE, 1.0)
        }
    }

    /// `Ls` clamped to `[MIN_LATENCY_SECS, MAX_LATENCY_SECS]`; NaN counts as the maximum.
    pub fn clamped_latency(&self) -> f64 {
        if self.latency_secs.is_nan() {
            MAX_LATENCY_SECS
        } else {
            self.latency_secs.clamp(MIN_LATENCY_SECS, MAX_LATENCY_SECS)
        }
    }
}

/// Parameters of Algorithm 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightingParams {
    /// `P`: latency penalty of a failed request, seconds (paper default 0.6 s).
    pub penalty_secs: f64,
}

impl Default for WeightingParams {
    fn default() -> Self {
        Self {
            penalty_secs: DEFAULT_PENALTY_SECS,
        }
    }
}

impl WeightingParams {
    /// Checks the parameters: the penalty must be finite and not negative.
    pub fn validate(&self) -> Result<()> {
        if !self.penalty_secs.is_finite() || self.penalty_secs < 0.0 {
            return Err(Error::InvalidParameter {
                name: "penalty_factor",
                value: self.penalty_secs,
                expected: "a finite number of seconds, 0 or more",
            });
        }
        Ok(())
    }
}

/// `Lest = Ls + P * (1/Rs - 1)` (paper Eq. 3), with `Rs` clamped away from zero (see
/// [`MIN_SUCCESS_RATE`]): the expected latency including retries of failed requests.
pub fn estimated_latency(signals: &Signals, params: &WeightingParams) -> f64 {
    let rs = signals.clamped_success_rate();
    signals.clamped_latency() + params.penalty_secs * (1.0 / rs - 1.0)
}

/// Raw weight `w = 1 / ((Ri + 1)^2 * Lest)` (paper Eq. 4, Algorithm 1).
///
/// Always finite and positive, whatever the input. The paper's floor (`w < 1 → 1`) is not applied
/// here: raw weights have no absolute scale (they are 1/seconds), so the floor lives in
/// [`super::normalise`] as a minimum share of the total.
pub fn raw_weight(signals: &Signals, params: &WeightingParams) -> f64 {
    let ri = signals.normalised_inflight();
    let lest = estimated_latency(signals, params);
    let w = 1.0 / ((ri + 1.0).powi(2) * lest);
    if w.is_finite() && w > 0.0 {
        w
    } else {
        // Only reachable with absurd penalties (e.g. 1e308 s); the smallest positive weight keeps
        // the backend at the minimum share.
        f64::MIN_POSITIVE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(latency_secs: f64, success_rate: f64, rps: f64, inflight: f64) -> Signals {
        Signals {
            latency_secs,
            success_rate,
            rps,
            inflight,
        }
    }

    #[test]
    fn matches_equations_3_and_4() {
        let p = WeightingParams::default();
        let s = sig(0.1, 0.5, 10.0, 5.0);
        // Lest = 0.1 + 0.6 * (2 - 1) = 0.7; Ri = 0.5; w = 1 / (2.25 * 0.7)
        assert!((estimated_latency(&s, &p) - 0.7).abs() < 1e-12);
        assert!((raw_weight(&s, &p) - 1.0 / (2.25 * 0.7)).abs() < 1e-12);
    }

    #[test]
    fn zero_rps_means_no_inflight_term() {
        let s = sig(0.2, 1.0, 0.0, 7.0);
        assert_eq!(s.normalised_inflight(), 0.0);
        assert!((raw_weight(&s, &WeightingParams::default()) - 5.0).abs() < 1e-12);
    }

    #[test]
    fn zero_success_rate_is_penalised_not_rewarded() {
        // The paper's literal `Rs = 0 → Lest = Ls` would make this fast-failing backend the best.
        let p = WeightingParams::default();
        let failing = sig(0.001, 0.0, 100.0, 0.0);
        let healthy = sig(0.5, 1.0, 100.0, 0.0);
        let wf = raw_weight(&failing, &p);
        let wh = raw_weight(&healthy, &p);
        assert!(wf.is_finite() && wf > 0.0);
        assert!(
            wf < wh / 100.0,
            "failing {wf} must be far below healthy {wh}"
        );
        assert!((estimated_latency(&failing, &p) - (0.001 + 0.6 * 999.0)).abs() < 1e-9);
    }

    #[test]
    fn garbage_inputs_give_finite_pessimistic_weights() {
        let p = WeightingParams::default();
        let good = raw_weight(&sig(0.1, 1.0, 1.0, 0.0), &p);
        for s in [
            sig(f64::NAN, 1.0, 1.0, 0.0),
            sig(f64::INFINITY, 1.0, 1.0, 0.0),
            sig(0.1, f64::NAN, 1.0, 0.0),
            sig(0.1, 1.0, 1.0, f64::INFINITY),
        ] {
            let w = raw_weight(&s, &p);
            assert!(w.is_finite() && w > 0.0 && w < good, "{s:?} gave {w}");
        }
        assert!(raw_weight(&sig(0.0, 1.0, 0.0, 0.0), &p).is_finite());
    }

    #[test]
    fn params_are_validated() {
        assert!(WeightingParams { penalty_secs: -1.0 }.validate().is_err());
        assert!(
            WeightingParams {
                penalty_secs: f64::NAN
            }
            .validate()
            .is_err()
        );
        assert!(WeightingParams::default().validate().is_ok());
    }
}
