//! The observation model: what Prometheus holds about each backend and what the operator's
//! PromQL returns from it.
//!
//! Each client group's proxies count, per backend, requests sent, responses by classification,
//! and the latency of successful responses in Linkerd's `response_latency_ms` buckets
//! (the linkerd2-proxy's outbound metrics). Every scrape interval those cumulative counters are recorded; at each
//! control tick the query evaluates, over the range window and exactly the samples inside it,
//! `rate()` with Prometheus' extrapolation per target summed over targets,
//! `histogram_quantile()` with its linear interpolation inside a bucket, the success ratio, and
//! in-flight by Little's law from the rate of `response_latency_ms_sum` (the operator's default
//! estimator). So scrape phases, bucket
//! quantisation and window lag reach the policy as they would in a cluster.

use crate::state::BackendSample;

/// Upper bounds (ms) of Linkerd's `response_latency_ms` buckets, without `+Inf`.
pub const LINKERD_BUCKETS_MS: [f64; 25] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];
/// Buckets including `+Inf`.
pub const NBUCKETS: usize = LINKERD_BUCKETS_MS.len() + 1;

/// Index of the (non-cumulative) bucket a latency in ms falls in: the first `le` bound it does
/// not exceed, or the `+Inf` bucket.
pub fn bucket_index(latency_ms: f64) -> usize {
    LINKERD_BUCKETS_MS.partition_point(|&le| le < latency_ms)
}

/// Prometheus' `histogram_quantile(q, ...)` over cumulative bucket counts `(le, count)` sorted by
/// `le`, the last being `+Inf`. NaN when there are no observations or no `+Inf` bucket, like
/// Prometheus. A rank in the `+Inf` bucket returns the highest finite bound.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let Some(&(last_le, total)) = buckets.last() else {
        return f64::NAN;
    };
    if last_le != f64::INFINITY || buckets.len() < 2 || total.is_nan() || total <= 0.0 {
        return f64::NAN;
    }
    // Counts computed from rates can dip by rounding; Prometheus forces monotonicity.
    let mut counts: Vec<f64> = buckets.iter().map(|b| b.1).collect();
    for i in 1..counts.len() {
        if counts[i] < counts[i - 1] {
            counts[i] = counts[i - 1];
        }
    }
    let total = counts[counts.len() - 1];
    let rank = q * total;
    let b = counts.partition_point(|&c| c < rank).min(counts.len() - 1);
    if b == buckets.len() - 1 {
        return buckets[buckets.len() - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (start, prev) = if b == 0 {
        (0.0, 0.0)
    } else {
        (buckets[b - 1].0, counts[b - 1])
    };
    let end = buckets[b].0;
    let count = counts[b] - prev;
    if count <= 0.0 {
        return end;
    }
    start + (end - start) * ((rank - prev) / count)
}

/// Prometheus' `extrapolatedRate` for a counter over samples `(t, value)` inside a range
/// `[range_start, range_end]`: the increase between the first and last sample, extrapolated
/// toward the range edges (at most half an average interval beyond the samples, and never below
/// zero for the counter), divided by the range. `None` with fewer than two samples.
pub fn extrapolated_rate(samples: &[(f64, f64)], range_start: f64, range_end: f64) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (t_first, first) = samples[0];
    let (t_last, last) = samples[samples.len() - 1];
    // Counters here never reset, so the increase is a difference.
    let increase = last - first;
    let sampled = t_last - t_first;
    if sampled <= 0.0 {
        return None;
    }
    let mut to_start = t_first - range_start;
    let to_end = range_end - t_last;
    let avg = sampled / (samples.len() - 1) as f64;
    if increase > 0.0 && first >= 0.0 {
        let to_zero = sampled * (first / increase);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg * 1.1;
    let mut extrapolate_to = sampled;
    extrapolate_to += if to_start < threshold {
        to_start
    } else {
        avg / 2.0
    };
    extrapolate_to += if to_end < threshold {
        to_end
    } else {
        avg / 2.0
    };
    Some(increase * (extrapolate_to / sampled) / (range_end - range_start))
}

/// One backend's cumulative counters as one client group's proxies export them.
#[derive(Debug, Clone, PartialEq)]
pub struct Counters {
    /// `request_total`.
    pub requests: f64,
    /// `response_total{classification="success"}`.
    pub successes: f64,
    /// `response_total{classification="failure"}`.
    pub failures: f64,
    /// `response_latency_ms_sum`: the latency of every response (any status), ms.
    pub latency_sum_ms: f64,
    /// Non-cumulative `response_latency_ms` bucket counts of successful responses.
    pub buckets: [f64; NBUCKETS],
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            requests: 0.0,
            successes: 0.0,
            failures: 0.0,
            latency_sum_ms: 0.0,
            buckets: [0.0; NBUCKETS],
        }
    }
}

impl Counters {
    /// Count a request sent.
    pub fn on_request(&mut self) {
        self.requests += 1.0;
    }

    /// Count a response with its latency.
    pub fn on_response(&mut self, success: bool, latency_ms: f64) {
        self.latency_sum_ms += latency_ms;
        if success {
            self.successes += 1.0;
            self.buckets[bucket_index(latency_ms)] += 1.0;
        } else {
            self.failures += 1.0;
        }
    }

    /// Cumulative (`le`) counts, as the `_bucket` series hold them.
    fn cumulative(&self) -> [f64; NBUCKETS] {
        let mut out = [0.0; NBUCKETS];
        let mut acc = 0.0;
        for (o, b) in out.iter_mut().zip(self.buckets) {
            acc += b;
            *o = acc;
        }
        out
    }
}

/// A scrape: the time and every backend's counters (cumulative buckets).
#[derive(Debug, Clone)]
pub struct Scrape {
    /// Scrape time, seconds.
    pub t: f64,
    requests: Vec<f64>,
    successes: Vec<f64>,
    failures: Vec<f64>,
    latency_sum_ms: Vec<f64>,
    le: Vec<[f64; NBUCKETS]>,
}

impl Scrape {
    /// Records the counters of every backend at `t`.
    pub fn take(t: f64, counters: &[Counters]) -> Self {
        Self {
            t,
            requests: counters.iter().map(|c| c.requests).collect(),
            successes: counters.iter().map(|c| c.successes).collect(),
            failures: counters.iter().map(|c| c.failures).collect(),
            latency_sum_ms: counters.iter().map(|c| c.latency_sum_ms).collect(),
            le: counters.iter().map(Counters::cumulative).collect(),
        }
    }
}

/// The per-backend samples the operator's queries return at `now` over the scrapes inside
/// `(now - window, now]` of one target; a signal Prometheus would have no value for is `None`.
pub fn query(scrapes: &[Scrape], now: f64, window: f64, backends: usize) -> Vec<BackendSample> {
    query_targets(&[scrapes], now, window, backends)
}

/// Like [`query`] over several targets (client proxies, each scraped at its own phase), as
/// `sum by (dst) (rate(...[window]))`: each target's series is rated over its own samples and
/// the rates of the targets that have one are summed (a target with fewer than two samples in
/// the window contributes nothing, as in PromQL). The latency quantiles come from the summed
/// bucket rates; in-flight is the summed rate of the latency sum in seconds (Little's law).
pub fn query_targets(
    targets: &[&[Scrape]],
    now: f64,
    window: f64,
    backends: usize,
) -> Vec<BackendSample> {
    let start = now - window;
    let inside: Vec<Vec<&Scrape>> = targets
        .iter()
        .map(|t| t.iter().filter(|s| s.t > start && s.t <= now).collect())
        .collect();
    let mut pts: Vec<(f64, f64)> = Vec::new();
    // sum over targets of rate(get) ; None when no target has a rate.
    let mut sum_rate = |get: &dyn Fn(&Scrape) -> f64| -> Option<f64> {
        let mut total: Option<f64> = None;
        for target in &inside {
            pts.clear();
            pts.extend(target.iter().map(|s| (s.t, get(s))));
            if let Some(r) = extrapolated_rate(&pts, start, now) {
                *total.get_or_insert(0.0) += r;
            }
        }
        total
    };
    (0..backends)
        .map(|b| {
            let rps = sum_rate(&|s| s.requests[b]);
            let ok = sum_rate(&|s| s.successes[b]);
            let failed = sum_rate(&|s| s.failures[b]);
            let success_rate = match (ok, failed) {
                (Some(o), Some(f)) if o + f > 0.0 => Some(o / (o + f)),
                _ => None,
            };
            let bucket_rates: Option<Vec<(f64, f64)>> = (0..NBUCKETS)
                .map(|i| {
                    let le = LINKERD_BUCKETS_MS.get(i).copied().unwrap_or(f64::INFINITY);
                    sum_rate(&|s| s.le[b][i]).map(|r| (le, r))
                })
                .collect();
            let quantile = |q: f64| {
                bucket_rates
                    .as_deref()
                    .map(|br| histogram_quantile(q, br) / 1000.0)
                    .filter(|v| v.is_finite())
            };
            // The operator's default in-flight estimator (src/source/query.rs): Little's law,
            // `sum(rate(response_latency_ms_sum[W])) * 0.001` = throughput × mean latency.
            let inflight = sum_rate(&|s| s.latency_sum_ms[b]).map(|r| r / 1000.0);
            BackendSample {
                latency_secs: quantile(0.99),
                p50_secs: quantile(0.5),
                success_rate,
                rps,
                inflight,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_inclusive() {
        assert_eq!(bucket_index(0.3), 0);
        assert_eq!(bucket_index(1.0), 0);
        assert_eq!(bucket_index(1.01), 1);
        assert_eq!(bucket_index(60.0), 10);
        assert_eq!(bucket_index(1e9), NBUCKETS - 1);
    }

    #[test]
    fn rate_over_two_aligned_scrapes_is_the_slope() {
        // Samples at 5 and 10 in the range [0, 10]: extrapolated by 5 s to the start.
        let r = extrapolated_rate(&[(5.0, 100.0), (10.0, 150.0)], 0.0, 10.0).unwrap();
        assert!((r - 10.0).abs() < 1e-12, "{r}");
        assert!(extrapolated_rate(&[(5.0, 1.0)], 0.0, 10.0).is_none());
    }
}
