//! The operator's own Prometheus metrics (prefix `l3_`): per-backend weights, shares and filtered
//! signals, control-loop timing, weight writes, leadership and policies by condition. Series of
//! deleted policies and backends are removed, so `/metrics` never reports ghosts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Labels of every per-backend series.
const BACKEND_LABELS: [&str; 3] = ["namespace", "policy", "backend"];

/// The per-backend gauges: name and help, in the order of [`BackendValues`].
const BACKEND_GAUGES: [(&str, &str); 6] = [
    (
        "l3_backend_weight",
        "Weight l3 computed for a TrafficSplit backend, out of 1000.",
    ),
    (
        "l3_backend_share_ratio",
        "Share of the split's traffic l3 computed for a backend.",
    ),
    (
        "l3_backend_latency_seconds",
        "Filtered latency of a backend at the policy's percentile.",
    ),
    (
        "l3_backend_success_ratio",
        "Filtered success rate of a backend.",
    ),
    (
        "l3_backend_requests_per_second",
        "Filtered request rate of a backend.",
    ),
    (
        "l3_backend_inflight_requests",
        "Filtered in-flight requests of a backend.",
    ),
];

/// Weight, share, latency, success rate, RPS, in-flight of one backend.
pub type BackendValues = [f64; 6];

/// Per (namespace, policy): each backend's values.
type SeriesMap = HashMap<(String, String), Vec<(String, BackendValues)>>;

/// Per-backend gauges rendered at scrape time from one small map, instead of six labelled
/// gauge children per backend: at 10,000 policies that is the difference between kilobytes
/// and about a hundred bytes per backend. Replacing a policy's list drops removed backends.
#[derive(Clone)]
pub struct BackendSeries {
    descs: Arc<Vec<Desc>>,
    values: Arc<Mutex<SeriesMap>>,
}

impl BackendSeries {
    fn new() -> prometheus::Result<Self> {
        let descs = BACKEND_GAUGES
            .iter()
            .map(|(name, help)| {
                Desc::new(
                    (*name).to_owned(),
                    (*help).to_owned(),
                    BACKEND_LABELS.iter().map(|l| (*l).to_owned()).collect(),
                    HashMap::new(),
                )
            })
            .collect::<prometheus::Result<Vec<_>>>()?;
        Ok(Self {
            descs: Arc::new(descs),
            values: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Set every backend of a policy (backends not listed lose their series).
    pub fn set_policy(
        &self,
        namespace: &str,
        policy: &str,
        backends: Vec<(String, BackendValues)>,
    ) {
        if let Ok(mut m) = self.values.lock() {
            match m.get_mut(&(namespace.to_owned(), policy.to_owned())) {
                Some(v) => *v = backends,
                None => {
                    m.insert((namespace.to_owned(), policy.to_owned()), backends);
                }
            }
        }
    }

    /// Drop every series of a policy.
    pub fn remove_policy(&self, namespace: &str, policy: &str) {
        if let Ok(mut m) = self.values.lock() {
            m.remove(&(namespace.to_owned(), policy.to_owned()));
        }
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_owned());
    l.set_value(value.to_owned());
    l
}

impl Collector for BackendSeries {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(values) = self.values.lock() else {
            return Vec::new();
        };
        let mut keys: Vec<&(String, String)> = values.keys().collect();
        keys.sort();
        BACKEND_GAUGES
            .iter()
            .enumerate()
            .map(|(i, (name, help))| {
                let mut mf = MetricFamily::default();
                mf.set_name((*name).to_owned());
                mf.set_help((*help).to_owned());
                mf.set_field_type(MetricType::GAUGE);
                let mut metrics = Vec::new();
                for k in &keys {
                    for (backend, v) in &values[*k] {
                        let mut m = Metric::default();
                        m.set_label(vec![
                            label("backend", backend),
                            label("namespace", &k.0),
                            label("policy", &k.1),
                        ]);
                        let mut g = prometheus::proto::Gauge::default();
                        g.set_value(v[i]);
                        m.set_gauge(g);
                        metrics.push(m);
                    }
                }
                mf.set_metric(metrics);
                mf
            })
            .filter(|mf| !mf.get_metric().is_empty())
            .collect()
    }
}

/// Metric handles, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    /// Per-backend weight, share and filtered signals.
    pub backends: BackendSeries,
    /// Duration of one control cycle.
    pub cycle_duration: Histogram,
    /// API writes by kind (`weights`, `status`, `restore`, `finalizer`) and result.
    pub writes: IntCounterVec,
    /// Duration of API writes by kind.
    pub write_duration: HistogramVec,
    /// 1 while this replica holds the lease.
    pub leader: Gauge,
    /// Policies by condition type and status.
    pub policies: IntGaugeVec,
}

impl Metrics {
    /// Create the metrics and register them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            backends: BackendSeries::new()?,
            cycle_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "l3_control_loop_duration_seconds",
                    "Duration of one control cycle over all policies.",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )?,
            writes: IntCounterVec::new(
                Opts::new(
                    "l3_api_writes_total",
                    "Kubernetes API writes by kind (weights, status, restore, finalizer) and result.",
                ),
                &["kind", "result"],
            )?,
            write_duration: HistogramVec::new(
                HistogramOpts::new(
                    "l3_api_write_duration_seconds",
                    "Duration of Kubernetes API writes by kind.",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                &["kind"],
            )?,
            leader: Gauge::new("l3_leader", "1 while this replica holds the leader lease.")?,
            policies: IntGaugeVec::new(
                Opts::new(
                    "l3_policies",
                    "LatencyPolicies by condition type and status.",
                ),
                &["condition", "status"],
            )?,
        };
        registry.register(Box::new(m.backends.clone()))?;
        registry.register(Box::new(m.cycle_duration.clone()))?;
        registry.register(Box::new(m.writes.clone()))?;
        registry.register(Box::new(m.write_duration.clone()))?;
        registry.register(Box::new(m.leader.clone()))?;
        registry.register(Box::new(m.policies.clone()))?;
        Ok(m)
    }

    /// Count one API write.
    pub fn write(&self, kind: &str, ok: bool, secs: f64) {
        self.writes
            .with_label_values(&[kind, if ok { "success" } else { "error" }])
            .inc();
        self.write_duration.with_label_values(&[kind]).observe(secs);
    }
}
