//! The replay proper: every interval's samples through the operator's own code, in the
//! operator's order: [`SplitState::step_l3`] (filters, Algorithm 1 and 2, normalisation),
//! [`safety::limit_step`], then [`safety::confirm_write`] (hysteresis and confirmation). A
//! failed query keeps the weights and lets the filters decay, as in the operator. No maths of
//! its own besides the first-order estimate, which is labelled as such.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Error;
use super::history::History;
use crate::algorithm::safety;
use crate::operator::crd::PolicySettings;
use crate::source::Outcome;
use crate::state::{BackendSample, SplitState};

/// What the replay is told about the split.
#[derive(Debug, Clone)]
pub struct ReplayInput {
    /// The policy's settings (filters, pipeline, hysteresis, step limit).
    pub settings: PolicySettings,
    /// Backend names, sorted (the order of every per-backend vector).
    pub backends: Vec<String>,
    /// The split's actual weights (same order), if known; otherwise the observed request
    /// shares stand for them.
    pub actual_weights: Option<Vec<f64>>,
    /// First evaluation time, seconds since the epoch.
    pub from: f64,
    /// Interval, seconds.
    pub step: f64,
}

/// One backend in one interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BackendRow {
    /// Weight in effect after this interval (out of the total, 1000 by default).
    pub weight: u32,
    /// Weight l3 computed this interval (after the step limit), written or not.
    pub computed_weight: u32,
    /// Filtered latency at the policy's quantile, seconds.
    pub latency_seconds: f64,
    /// Filtered success rate.
    pub success_rate: f64,
    /// Filtered requests per second.
    pub requests_per_second: f64,
    /// Filtered in-flight requests.
    pub inflight: f64,
    /// The latency Prometheus answered for this interval, if usable.
    pub observed_latency_seconds: Option<f64>,
    /// The request rate Prometheus answered for this interval, if usable.
    pub observed_requests_per_second: Option<f64>,
}

/// One interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interval {
    /// Evaluation time, seconds since the epoch.
    pub time: f64,
    /// Whether l3 would have written the split in this interval.
    pub write: bool,
    /// Whether a query failed for this interval (weights kept, filters decaying).
    pub query_failed: bool,
    /// Per backend, in [`Report::backends`] order.
    pub backends: Vec<BackendRow>,
}

/// The first-order estimate of the effect.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// What it is and what it assumes (kept in the JSON so that it travels with the numbers).
    pub label: &'static str,
    /// What the "actual" weights were: `split weights` or `observed request shares`.
    pub actual_from: &'static str,
    /// Mean over intervals of the traffic-weighted observed p99 under the actual weights, s.
    pub actual_p99_seconds: f64,
    /// The same under the weights l3 would have had in effect, seconds.
    pub l3_p99_seconds: f64,
    /// Relative change, percent (negative: lower latency under l3).
    pub change_percent: f64,
    /// Intervals that entered the mean (some latency observed).
    pub intervals: usize,
}

/// Label of [`Estimate`].
pub const ESTIMATE_LABEL: &str = "first-order estimate: the traffic-weighted p99 of the backends \
     as observed, under l3's weights versus the actual ones; it assumes a backend's latency does \
     not depend on the traffic it gets, so it ignores load feedback";

/// The outcome of a replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Backend names.
    pub backends: Vec<String>,
    /// Per interval.
    pub intervals: Vec<Interval>,
    /// Writes l3 would have made (after hysteresis and confirmation).
    pub writes: usize,
    /// Backends for which Prometheus had no usable latency and no request rate in the whole
    /// range (their filters sit at the defaults: they get the minimum share).
    pub backends_without_data: Vec<String>,
    /// The effect estimate, when some latency was observed.
    pub estimate: Option<Estimate>,
}

/// Feed `history` through the operator's state, algorithm and safety code.
pub fn run(input: &ReplayInput, history: &History) -> Result<Report, Error> {
    let s = &input.settings;
    let total = s.pipeline.total_weight;
    let n = input.backends.len();
    let mut state = SplitState::new(s.filters).map_err(|e| Error::Algorithm(e.to_string()))?;
    state.sync_backends(input.backends.iter().map(String::as_str));
    let start = input.actual_weights.clone().unwrap_or_else(|| vec![1.0; n]);
    let mut current = safety::shares(&start);
    let mut in_effect: Vec<u32> = to_weights(&current, total);
    let mut pending = 0u32;
    let mut writes = 0;
    let mut seen = vec![false; n];
    let mut intervals = Vec::with_capacity(history.grid.len());
    for (k, row) in history.grid.iter().enumerate() {
        let t = input.from + k as f64 * input.step;
        let failed = row.iter().any(|b| {
            [b.latency_secs, b.success_rate, b.rps, b.inflight].contains(&Outcome::QueryFailed)
        });
        let mut write = false;
        let computed = if failed {
            // As the operator: keep the weights, let the filters decay toward their defaults.
            let _refused = state.update(t, &BTreeMap::new());
            in_effect.clone()
        } else {
            let samples: BTreeMap<String, BackendSample> = input
                .backends
                .iter()
                .zip(row)
                .map(|(name, b)| (name.clone(), b.to_sample()))
                .collect();
            let (proposed, _refused) = state
                .step_l3(t, &samples, &s.pipeline)
                .map_err(|e| Error::Algorithm(e.to_string()))?;
            let limited = safety::limit_step(
                &current,
                &proposed,
                total,
                s.pipeline.min_share,
                s.max_share_step,
            );
            let limited_shares: Vec<f64> = limited
                .iter()
                .map(|&w| f64::from(w) / f64::from(total))
                .collect();
            if safety::confirm_write(&mut pending, &current, &limited_shares, s.hysteresis, true) {
                write = true;
                writes += 1;
                current = limited_shares;
                in_effect = limited.clone();
            }
            limited
        };
        let backends = state
            .backends()
            .zip(row)
            .enumerate()
            .map(|(i, ((_, b), raw))| {
                let f = b.signals();
                let observed_latency_seconds = raw.latency_secs.value();
                let observed_requests_per_second = raw.rps.value();
                seen[i] |= observed_latency_seconds.is_some()
                    || observed_requests_per_second.is_some_and(|r| r > 0.0);
                BackendRow {
                    weight: in_effect.get(i).copied().unwrap_or(0),
                    computed_weight: computed.get(i).copied().unwrap_or(0),
                    latency_seconds: f.latency_secs,
                    success_rate: f.success_rate,
                    requests_per_second: f.rps,
                    inflight: f.inflight,
                    observed_latency_seconds,
                    observed_requests_per_second,
                }
            })
            .collect();
        intervals.push(Interval {
            time: t,
            write,
            query_failed: failed,
            backends,
        });
    }
    let backends_without_data = input
        .backends
        .iter()
        .zip(&seen)
        .filter(|(_, s)| !**s)
        .map(|(b, _)| b.clone())
        .collect();
    let estimate = estimate(input, &intervals, total);
    Ok(Report {
        backends: input.backends.clone(),
        intervals,
        writes,
        backends_without_data,
        estimate,
    })
}

/// Integer weights for shares (largest remainder, summing to `total`).
fn to_weights(shares: &[f64], total: u32) -> Vec<u32> {
    let exact: Vec<f64> = shares.iter().map(|s| s * f64::from(total)).collect();
    let mut out: Vec<u32> = exact.iter().map(|x| x.floor() as u32).collect();
    let mut left = total.saturating_sub(out.iter().sum());
    let mut order: Vec<usize> = (0..exact.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    for i in order {
        if left == 0 {
            break;
        }
        out[i] += 1;
        left -= 1;
    }
    out
}

/// Traffic-weighted observed latency for `shares`, over the backends with an observed latency
/// and a positive share; `None` when there is none.
fn weighted(shares: &[f64], row: &[BackendRow]) -> Option<f64> {
    let (mut num, mut den) = (0.0, 0.0);
    for (s, b) in shares.iter().zip(row) {
        if let Some(l) = b.observed_latency_seconds
            && *s > 0.0
        {
            num += s * l;
            den += s;
        }
    }
    (den > 0.0).then(|| num / den)
}

fn estimate(input: &ReplayInput, intervals: &[Interval], total: u32) -> Option<Estimate> {
    let fixed = input.actual_weights.as_ref().map(|w| safety::shares(w));
    let (mut actual_sum, mut l3_sum, mut count) = (0.0, 0.0, 0usize);
    for iv in intervals {
        let actual = match &fixed {
            Some(s) => s.clone(),
            None => {
                let rps: Vec<f64> = iv
                    .backends
                    .iter()
                    .map(|b| b.observed_requests_per_second.unwrap_or(0.0))
                    .collect();
                if rps.iter().sum::<f64>() <= 0.0 {
                    continue;
                }
                safety::shares(&rps)
            }
        };
        let l3: Vec<f64> = iv
            .backends
            .iter()
            .map(|b| f64::from(b.weight) / f64::from(total))
            .collect();
        if let (Some(a), Some(l)) = (weighted(&actual, &iv.backends), weighted(&l3, &iv.backends)) {
            actual_sum += a;
            l3_sum += l;
            count += 1;
        }
    }
    (count > 0).then(|| {
        let (a, l) = (actual_sum / count as f64, l3_sum / count as f64);
        Estimate {
            label: ESTIMATE_LABEL,
            actual_from: if fixed.is_some() {
                "split weights"
            } else {
                "observed request shares"
            },
            actual_p99_seconds: a,
            l3_p99_seconds: l,
            change_percent: if a > 0.0 { (l - a) / a * 100.0 } else { 0.0 },
            intervals: count,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::LatencyPolicySpec;
    use crate::source::BackendSignals;

    fn sig(latency: f64, rps: f64) -> BackendSignals {
        BackendSignals {
            latency_secs: Outcome::Value(latency),
            success_rate: Outcome::Value(1.0),
            rps: Outcome::Value(rps),
            inflight: Outcome::Value(rps * latency),
        }
    }

    fn input(actual: Option<Vec<f64>>) -> ReplayInput {
        ReplayInput {
            settings: LatencyPolicySpec::for_split("web").settings().unwrap(),
            backends: vec!["fast".into(), "slow".into()],
            actual_weights: actual,
            from: 1000.0,
            step: 5.0,
        }
    }

    #[test]
    fn traffic_moves_to_the_fast_backend_with_few_writes() {
        let history = History {
            grid: vec![vec![sig(0.05, 50.0), sig(0.5, 50.0)]; 120],
            ..History::default()
        };
        let r = run(&input(Some(vec![500.0, 500.0])), &history).unwrap();
        let last = r.intervals.last().unwrap();
        assert!(last.backends[0].weight > 800, "{last:?}");
        assert!(r.writes >= 1 && r.writes < 30, "{} writes", r.writes);
        assert_eq!(
            r.writes,
            r.intervals.iter().filter(|i| i.write).count(),
            "every write is shown"
        );
        let e = r.estimate.unwrap();
        assert!(e.l3_p99_seconds < e.actual_p99_seconds, "{e:?}");
        assert!((e.actual_p99_seconds - 0.275).abs() < 1e-9, "{e:?}");
        assert_eq!(e.actual_from, "split weights");
        assert!(r.backends_without_data.is_empty());
    }

    #[test]
    fn failed_queries_keep_the_weights_and_missing_backends_are_named() {
        let mut grid = vec![vec![sig(0.05, 50.0), BackendSignals::all(Outcome::NoSeries)]; 40];
        for row in grid.iter_mut().skip(20) {
            row[0].rps = Outcome::QueryFailed;
        }
        let r = run(
            &input(None),
            &History {
                grid,
                ..History::default()
            },
        )
        .unwrap();
        assert_eq!(r.backends_without_data, vec!["slow".to_string()]);
        let frozen: Vec<u32> = r.intervals[20..]
            .iter()
            .map(|i| i.backends[0].weight)
            .collect();
        assert!(frozen.windows(2).all(|w| w[0] == w[1]), "{frozen:?}");
        assert!(r.intervals[20..].iter().all(|i| i.query_failed && !i.write));
        assert_eq!(r.estimate.unwrap().actual_from, "observed request shares");
    }
}
