//! The history a replay feeds through the algorithm: the operator's four PromQL queries (the
//! very strings [`crate::source::query`] builds) sent as range queries, in bounded chunks of
//! time and of backends, decoded per interval into the same typed outcomes the operator gets
//! ([`crate::source::decode::outcomes`]).

use std::collections::BTreeMap;

use futures::StreamExt as _;

use super::Error;
use crate::source::decode::{Series, decode_matrix, outcomes};
use crate::source::prometheus::PrometheusSource;
use crate::source::query::{PlannedQuery, SignalKind, plan_with};
use crate::source::{BackendKey, BackendSignals, Outcome, RequestGroup, SignalRequest, WindowInfo};

/// Intervals per range query: a bound on one answer (Prometheus refuses more than 11,000
/// points per series), and the granularity of the progress report.
pub const STEPS_PER_CHUNK: usize = 1000;

/// What to fetch.
#[derive(Debug, Clone)]
pub struct HistoryRequest {
    /// The backends (one split).
    pub backends: Vec<BackendKey>,
    /// Latency quantile.
    pub quantile: f64,
    /// The window, resolved for the scrape interval.
    pub window: WindowInfo,
    /// First evaluation time, whole seconds since the epoch.
    pub from: i64,
    /// Interval between evaluations, seconds (at least 1).
    pub step: f64,
    /// Number of evaluations.
    pub steps: usize,
}

/// One failed range query.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryError {
    /// The signal.
    pub signal: &'static str,
    /// First and last interval index the query covered.
    pub steps: (usize, usize),
    /// Bounded reason (see [`crate::source::Error::reason`]).
    pub reason: &'static str,
    /// Detail.
    pub message: String,
}

/// Per interval, per backend, the four signals; plus the queries that failed.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// `grid[k][b]`: interval `k`, backend `b` (in [`HistoryRequest::backends`] order).
    pub grid: Vec<Vec<BackendSignals>>,
    /// Failed queries (their intervals show [`Outcome::QueryFailed`]).
    pub errors: Vec<HistoryError>,
    /// Range queries sent.
    pub queries: usize,
}

fn slot(s: &mut BackendSignals, signal: SignalKind) -> &mut Outcome {
    match signal {
        SignalKind::Latency => &mut s.latency_secs,
        SignalKind::SuccessRate => &mut s.success_rate,
        SignalKind::Rps => &mut s.rps,
        SignalKind::Inflight => &mut s.inflight,
    }
}

/// Fetch the history, calling `progress(done, total)` after each time chunk.
pub async fn fetch(
    source: &PrometheusSource,
    req: &HistoryRequest,
    mut progress: impl FnMut(usize, usize),
) -> Result<History, Error> {
    let auth = source.auth().map_err(Error::Source)?;
    let config = source.config();
    let index: BTreeMap<&BackendKey, usize> = req
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| (b, i))
        .collect();
    let mut grid =
        vec![vec![BackendSignals::all(Outcome::NoSeries); req.backends.len()]; req.steps];
    let mut errors = Vec::new();
    let mut queries = 0;
    let request = SignalRequest {
        groups: vec![RequestGroup {
            quantile: req.quantile,
            window: crate::source::QueryWindow::Secs(req.window.window_secs),
            backends: req.backends.clone(),
        }],
    };
    // Chunked by size over backends exactly as the operator's instant queries are.
    let plan = plan_with(config, &request, &[req.window]);
    if let Some((_, e)) = plan.invalid_groups.first() {
        return Err(Error::Source(crate::source::Error::InvalidGroup(
            e.to_string(),
        )));
    }
    let chunks = req.steps.div_ceil(STEPS_PER_CHUNK);
    for c in 0..chunks {
        let first = c * STEPS_PER_CHUNK;
        let last = ((c + 1) * STEPS_PER_CHUNK).min(req.steps) - 1;
        // STEPS_PER_CHUNK × a millisecond-precision step is whole seconds: every chunk starts
        // on a whole second, as the crate's range builder takes them.
        let start = req.from + (first as f64 * req.step).round() as i64;
        let end = req.from + (last as f64 * req.step).ceil() as i64;
        let answers: Vec<(PlannedQuery, _)> = futures::stream::iter(plan.queries.iter().cloned())
            .map(|q| {
                let auth = &auth;
                async move {
                    let r = source
                        .post_range(&q.promql, start, end, req.step, auth)
                        .await
                        .and_then(|(status, body)| {
                            decode_matrix(status, &body, config.accept_warnings)
                        });
                    (q, r)
                }
            })
            .buffer_unordered(config.max_concurrent_queries)
            .collect()
            .await;
        queries += answers.len();
        for (q, r) in answers {
            match r {
                Ok(matrix) => {
                    // Regroup the matrix per interval, then read it as the operator reads one
                    // instant answer.
                    let mut at: BTreeMap<usize, Vec<Series>> = BTreeMap::new();
                    for s in matrix {
                        for (t, value) in &s.samples {
                            let k = ((t - req.from as f64) / req.step).round();
                            if k < first as f64 || k > last as f64 {
                                continue;
                            }
                            at.entry(k as usize).or_default().push(Series {
                                labels: s.labels.clone(),
                                value: *value,
                            });
                        }
                    }
                    for (k, row) in grid.iter_mut().enumerate().take(last + 1).skip(first) {
                        let series = at.get(&k).map_or(&[][..], Vec::as_slice);
                        for (b, o) in outcomes(config, q.signal, series, &q.backends) {
                            if let Some(&i) = index.get(&b) {
                                *slot(&mut row[i], q.signal) = o;
                            }
                        }
                    }
                }
                Err(e) => {
                    for row in &mut grid[first..=last] {
                        for b in q.backends.iter() {
                            if let Some(&i) = index.get(b) {
                                *slot(&mut row[i], q.signal) = Outcome::QueryFailed;
                            }
                        }
                    }
                    errors.push(HistoryError {
                        signal: q.signal.as_str(),
                        steps: (first, last),
                        reason: e.reason(),
                        message: e.to_string(),
                    });
                }
            }
        }
        progress(last + 1, req.steps);
    }
    Ok(History {
        grid,
        errors,
        queries,
    })
}
