//! A programmable [`SignalSource`] for operator tests and benchmarks: fixed answers per backend,
//! per-signal failures, and a count of fetches. No I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::query::SignalKind;
use super::{
    BackendKey, BackendSignals, FetchFuture, Outcome, QueryError, SignalRequest, SignalSource,
    Snapshot,
};

#[derive(Debug, Default)]
struct Answers {
    backends: HashMap<BackendKey, BackendSignals>,
    failing: BTreeMap<SignalKind, &'static str>,
    timestamp: Option<f64>,
}

/// Answers every request from a table; unknown backends answer [`Outcome::NoSeries`]. Answers
/// can be changed between fetches through `&self` (the control loop holds the source shared).
#[derive(Debug, Default)]
pub struct CannedSource {
    answers: Mutex<Answers>,
    fetches: AtomicU64,
}

impl CannedSource {
    /// An empty source: every backend answers [`Outcome::NoSeries`].
    pub fn new() -> Self {
        Self::default()
    }

    fn answers(&self) -> std::sync::MutexGuard<'_, Answers> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Answer `signals` for `backend` from now on.
    pub fn set(&self, backend: BackendKey, signals: BackendSignals) {
        self.answers().backends.insert(backend, signals);
    }

    /// Answer values for `backend`: latency (s), success rate, RPS, in-flight.
    pub fn set_values(
        &self,
        backend: BackendKey,
        latency_secs: f64,
        success_rate: f64,
        rps: f64,
        inflight: f64,
    ) {
        self.set(
            backend,
            BackendSignals {
                latency_secs: Outcome::from_value(latency_secs),
                success_rate: Outcome::from_value(success_rate),
                rps: Outcome::from_value(rps),
                inflight: Outcome::from_value(inflight),
            },
        );
    }

    /// Forget `backend` (it answers [`Outcome::NoSeries`] again).
    pub fn remove(&self, backend: &BackendKey) {
        self.answers().backends.remove(backend);
    }

    /// Make every query of `signal` fail with `reason` (`None` heals it).
    pub fn fail(&self, signal: SignalKind, reason: Option<&'static str>) {
        let mut a = self.answers();
        match reason {
            Some(r) => a.failing.insert(signal, r),
            None => a.failing.remove(&signal),
        };
    }

    /// Use this evaluation timestamp instead of the wall clock.
    pub fn set_timestamp(&self, t: Option<f64>) {
        self.answers().timestamp = t;
    }

    /// Number of fetches so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn answer(&self, request: &SignalRequest) -> Snapshot {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let a = self.answers();
        let timestamp = a.timestamp.unwrap_or_else(super::prometheus::now_secs);
        let mut errors = Vec::new();
        let groups = request
            .groups
            .iter()
            .enumerate()
            .map(|(gi, g)| {
                for (&signal, &reason) in &a.failing {
                    errors.push(QueryError {
                        group: gi,
                        signal: signal.as_str(),
                        reason,
                        message: format!("canned failure of {}", signal.as_str()),
                    });
                }
                g.backends
                    .iter()
                    .map(|b| {
                        let mut s = a
                            .backends
                            .get(b)
                            .copied()
                            .unwrap_or(BackendSignals::all(Outcome::NoSeries));
                        for signal in a.failing.keys() {
                            *slot(&mut s, *signal) = Outcome::QueryFailed;
                        }
                        (b.clone(), s)
                    })
                    .collect()
            })
            .collect();
        Snapshot {
            timestamp,
            groups,
            errors,
            windows: Vec::new(),
        }
    }
}

/// The field of `signals` that holds `signal`.
pub(crate) fn slot(signals: &mut BackendSignals, signal: SignalKind) -> &mut Outcome {
    match signal {
        SignalKind::Latency => &mut signals.latency_secs,
        SignalKind::SuccessRate => &mut signals.success_rate,
        SignalKind::Rps => &mut signals.rps,
        SignalKind::Inflight => &mut signals.inflight,
    }
}

impl SignalSource for CannedSource {
    fn fetch<'a>(&'a self, request: &'a SignalRequest) -> FetchFuture<'a> {
        let snapshot = self.answer(request);
        Box::pin(async move { snapshot })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{QueryWindow, RequestGroup};

    fn key(s: &str) -> BackendKey {
        BackendKey {
            namespace: "prod".into(),
            service: s.into(),
        }
    }

    #[tokio::test]
    async fn answers_from_the_table_and_fails_on_demand() {
        let src = CannedSource::new();
        src.set_values(key("a"), 0.1, 0.99, 50.0, 2.0);
        src.set_timestamp(Some(100.0));
        let req = SignalRequest {
            groups: vec![RequestGroup {
                quantile: 0.99,
                window: QueryWindow::Secs(10),
                backends: vec![key("a"), key("b")],
            }],
        };
        let snap = src.fetch(&req).await;
        assert_eq!(snap.timestamp, 100.0);
        assert_eq!(snap.groups[0][&key("a")].rps, Outcome::Value(50.0));
        assert_eq!(
            snap.groups[0][&key("b")],
            BackendSignals::all(Outcome::NoSeries)
        );
        src.fail(SignalKind::Latency, Some("timeout"));
        let snap = src.fetch(&req).await;
        assert_eq!(snap.groups[0][&key("a")].latency_secs, Outcome::QueryFailed);
        assert_eq!(snap.groups[0][&key("a")].rps, Outcome::Value(50.0));
        assert_eq!(snap.errors.len(), 1);
        assert_eq!(snap.errors[0].reason, "timeout");
        assert_eq!(src.fetches(), 2);
    }
}
