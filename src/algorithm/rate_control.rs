//! Algorithm 2 of the paper: reshape the weights when the total request rate changes.

/// Exponent of the rate-control damping terms. The paper's Go code wrote `3/2`, which Go's
/// integer division turns into 1; Algorithm 2 and Eq. 5 say 1.5.
pub const RATE_CONTROL_EXPONENT: f64 = 1.5;

/// Upper bound of the relative change `c`. When the filtered rate is zero and traffic appears,
/// the change is unbounded; at `c = 10` the damping factor is `(1 + 100)^1.5 ≈ 1015`, so the
/// weights are already within 0.1 % of their mean, which is what an unbounded rise calls for.
pub const MAX_RELATIVE_CHANGE: f64 = 10.0;

/// Relative change `c = (RPS_last - RPS_ewma) / RPS_ewma` (Algorithm 2, line 1), in
/// `[-1, MAX_RELATIVE_CHANGE]`.
///
/// Both inputs are the totals over all backends. Without a usable filtered rate (0, negative or
/// non-finite) there is no baseline: `c = 0` when there is no traffic either, the maximum when
/// traffic has just appeared.
pub fn relative_change(rps_ewma: f64, rps_last: f64) -> f64 {
    let last = if rps_last.is_finite() && rps_last > 0.0 {
        rps_last
    } else {
        0.0
    };
    if !(rps_ewma.is_finite() && rps_ewma > 0.0) {
        return if last > 0.0 { MAX_RELATIVE_CHANGE } else { 0.0 };
    }
    ((last - rps_ewma) / rps_ewma).clamp(-1.0, MAX_RELATIVE_CHANGE)
}

/// Apply Algorithm 2 to one weight `w` given the mean weight `w_mu` and relative change `c`.
///
/// - `c > 0` (Eq. 5): `w_mu - w_mu/(1+c²)^1.5 + w/(1+c²)^1.5`, i.e. pull toward the mean.
/// - `c ≤ 0`, `w ≤ w_mu`: `w / (1+(2c)²)^1.5`, i.e. slow backends lose traffic.
/// - `c ≤ 0`, `w > w_mu`: `2w - w_mu - (w - w_mu)/(1+(3c)²)^1.5`, i.e. fast backends gain.
///
/// **Deviation from the printed pseudocode:** it reads like `1+2c²` and `1+3c²`. We compute
/// `(2c)²` and `(3c)²`, as the authors' Go code does and as the paper's own check requires
/// (§3.2, Fig. 4: `w=2000, w_mu=1000, c=-0.5` gives "over 2800": 2829 with `(3c)²`, 2568 with
/// `3c²`). The `w < 1 → 1` floor of lines 13-15 is applied by [`super::normalise`].
///
/// The map is monotone in `w` for fixed `w_mu` and `c`, so rate control never reverses the order
/// of two backends.
pub fn adjust(w: f64, w_mu: f64, c: f64) -> f64 {
    if c > 0.0 {
        let k = (1.0 + c * c).powf(RATE_CONTROL_EXPONENT);
        w_mu - w_mu / k + w / k
    } else if w <= w_mu {
        w / (1.0 + (2.0 * c).powi(2)).powf(RATE_CONTROL_EXPONENT)
    } else {
        2.0 * w - w_mu - (w - w_mu) / (1.0 + (3.0 * c).powi(2)).powf(RATE_CONTROL_EXPONENT)
    }
}

/// Apply Algorithm 2 to all weights in place, with `w_mu` their mean.
pub fn apply(weights: &mut [f64], c: f64) {
    if weights.is_empty() || !c.is_finite() {
        return;
    }
    let w_mu = weights.iter().sum::<f64>() / weights.len() as f64;
    for w in weights.iter_mut() {
        *w = adjust(*w, w_mu, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_4a_halved_rate_boosts_the_fast_backend_above_2800() {
        let w = adjust(2000.0, 1000.0, -0.5);
        assert!(w > 2800.0, "got {w}");
        assert!((w - 2829.33).abs() < 0.01, "got {w}");
    }

    #[test]
    fn figure_4b_slow_backend_shrinks_when_rate_falls() {
        let mut prev = 500.0;
        for c in [-0.1, -0.3, -0.5, -0.8, -1.0] {
            let w = adjust(500.0, 1000.0, c);
            assert!(w < prev, "c={c}: {w} should be below {prev}");
            prev = w;
        }
    }

    #[test]
    fn large_positive_change_tends_to_the_mean() {
        for w in [500.0, 2000.0] {
            let near = adjust(w, 1000.0, 50.0);
            assert!((near - 1000.0).abs() < 0.01, "w={w}: {near}");
            let mid = adjust(w, 1000.0, 1.0);
            assert!(
                (mid - 1000.0).abs() < (w - 1000.0_f64).abs(),
                "moves toward the mean"
            );
        }
    }

    #[test]
    fn unchanged_rate_leaves_weights_alone() {
        for w in [1.0, 500.0, 1000.0, 2000.0] {
            assert_eq!(adjust(w, 1000.0, 0.0), w);
        }
    }

    #[test]
    fn exponent_is_three_halves_not_one() {
        // With the Go integer-division bug the factor would be (1 + 1) = 2, giving 250.
        let w = adjust(500.0, 1000.0, -0.5);
        assert!((w - 500.0 / 2.0_f64.powf(1.5)).abs() < 1e-9, "got {w}");
    }

    #[test]
    fn relative_change_edges() {
        assert_eq!(relative_change(100.0, 50.0), -0.5);
        assert_eq!(relative_change(100.0, 150.0), 0.5);
        assert_eq!(relative_change(0.0, 0.0), 0.0);
        assert_eq!(relative_change(0.0, 10.0), MAX_RELATIVE_CHANGE);
        assert_eq!(relative_change(f64::NAN, 10.0), MAX_RELATIVE_CHANGE);
        assert_eq!(relative_change(1.0, 1e9), MAX_RELATIVE_CHANGE);
        assert_eq!(relative_change(10.0, f64::NAN), -1.0);
    }
}
