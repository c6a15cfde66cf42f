//! Latency quantiles in bounded memory: an HdrHistogram (crate `hdrhistogram`) instead of every
//! sample, so a run's memory does not grow with its duration or rate.
//!
//! Precision: values are recorded in microseconds with [`SIGNIFICANT_DIGITS`] = 3 significant
//! digits, so a reported quantile is within 0.1 % of the nearest-rank quantile of the exact
//! values (HdrHistogram reports the highest value equivalent to the bucket holding the rank).
//! The range is 1 µs to [`MAX_LATENCY_MS`]; a longer latency is recorded as that maximum.

use hdrhistogram::Histogram;

/// Significant decimal digits kept (relative error at most 10^-3).
pub const SIGNIFICANT_DIGITS: u8 = 3;
/// Largest latency the histogram tells apart, ms (one day); longer ones are recorded as this.
pub const MAX_LATENCY_MS: f64 = 86_400_000.0;

/// A latency distribution, ms in and out.
#[derive(Debug, Clone)]
pub struct Latencies {
    h: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new(SIGNIFICANT_DIGITS)
    }
}

impl PartialEq for Latencies {
    fn eq(&self, o: &Self) -> bool {
        self.h == o.h
    }
}

impl Latencies {
    /// An empty distribution keeping `digits` significant digits (1 to 5).
    pub fn new(digits: u8) -> Self {
        let max_us = (MAX_LATENCY_MS * 1000.0) as u64;
        let h = match Histogram::new_with_bounds(1, max_us, digits.clamp(1, 5)) {
            Ok(h) => h,
            // Bounds and digits are constants within the crate's limits.
            Err(e) => unreachable!("hdrhistogram refused constant bounds: {e}"),
        };
        Self { h }
    }

    /// Records one latency (negative or NaN as 0, beyond the range as the maximum).
    pub fn record(&mut self, ms: f64) {
        let us = if ms.is_finite() && ms > 0.0 {
            (ms * 1000.0).round().max(1.0) as u64
        } else {
            1
        };
        self.h.saturating_record(us);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// The `q` quantile, ms; NaN when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.h.is_empty() {
            return f64::NAN;
        }
        self.h.value_at_quantile(q.clamp(0.0, 1.0)) as f64 / 1000.0
    }

    /// Mean, ms; NaN when empty.
    pub fn mean_ms(&self) -> f64 {
        if self.h.is_empty() {
            return f64::NAN;
        }
        self.h.mean() / 1000.0
    }

    /// Heap bytes held by the counts (for memory estimates).
    pub fn footprint_bytes(&self) -> usize {
        self.h.distinct_values() * std::mem::size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_stated_precision() {
        let mut l = Latencies::default();
        let values: Vec<f64> = (1..=10_000).map(|i| i as f64 * 0.37).collect();
        for &v in &values {
            l.record(v);
        }
        assert_eq!(l.count(), 10_000);
        for q in [0.5, 0.9, 0.99, 0.999] {
            let exact = values[(q * values.len() as f64).ceil() as usize - 1];
            let got = l.quantile_ms(q);
            assert!(
                (got - exact).abs() <= exact * 1e-3 + 1e-3,
                "q {q}: {got} vs {exact}"
            );
        }
        assert!(Latencies::default().quantile_ms(0.99).is_nan());
        let mut huge = Latencies::default();
        huge.record(1e12);
        assert!(huge.quantile_ms(1.0) <= MAX_LATENCY_MS * 1.001);
    }
}
