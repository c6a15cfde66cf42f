//! A canned [`SignalSource`] for tests, benchmarks and examples: fixed signals per backend
//! Service, or every query failing (Prometheus down).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::source::{
    BackendSignals, FetchFuture, Outcome, QueryError, SignalRequest, SignalSource, Snapshot,
};

/// Answers every request from fixed values.
pub struct FixedSource {
    default: BackendSignals,
    by_service: Mutex<HashMap<String, BackendSignals>>,
    down: AtomicBool,
}

impl FixedSource {
    /// Every backend answers with `default`.
    pub fn new(default: BackendSignals) -> Self {
        Self {
            default,
            by_service: Mutex::new(HashMap::new()),
            down: AtomicBool::new(false),
        }
    }

    /// Every backend healthy: 50 ms, 100 % success, 100 RPS, 5 in flight.
    pub fn healthy() -> Self {
        Self::new(signals(0.05, 1.0, 100.0, 5.0))
    }

    /// Answer `service` (in any namespace) with `s`.
    pub fn set(&self, service: &str, s: BackendSignals) {
        if let Ok(mut m) = self.by_service.lock() {
            m.insert(service.to_owned(), s);
        }
    }

    /// Make every query fail (`true`) or answer again (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    fn answer(&self, request: &SignalRequest) -> Snapshot {
        let down = self.down.load(Ordering::Relaxed);
        let overrides = self
            .by_service
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let mut snap = Snapshot::default();
        for (i, g) in request.groups.iter().enumerate() {
            let mut m = BTreeMap::new();
            for b in &g.backends {
                let s = if down {
                    BackendSignals::all(Outcome::QueryFailed)
                } else {
                    overrides.get(&b.service).copied().unwrap_or(self.default)
                };
                m.insert(b.clone(), s);
            }
            snap.groups.push(m);
            if down {
                snap.errors.push(QueryError {
                    group: i,
                    signal: "latency",
                    reason: "http",
                    message: "connection refused".into(),
                });
            }
        }
        snap
    }
}

impl SignalSource for FixedSource {
    fn fetch<'a>(&'a self, request: &'a SignalRequest) -> FetchFuture<'a> {
        let snap = self.answer(request);
        Box::pin(async move { snap })
    }
}

/// Signals from plain values: latency (s), success rate, RPS, in-flight.
pub fn signals(latency: f64, success: f64, rps: f64, inflight: f64) -> BackendSignals {
    BackendSignals {
        latency_secs: Outcome::Value(latency),
        success_rate: Outcome::Value(success),
        rps: Outcome::Value(rps),
        inflight: Outcome::Value(inflight),
    }
}
