//! The operator's own Prometheus metrics (prefix `l3_`): per-backend weights, shares and filtered
//! signals, control-loop timing, weight writes, leadership and policies by condition. Series of
//! deleted policies and backends are removed, so `/metrics` never reports ghosts.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry,
};

/// Labels of every per-backend series.
const BACKEND_LABELS: [&str; 3] = ["namespace", "policy", "backend"];

/// Metric handles, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    /// Weight l3 computed for a backend, out of 1000.
    pub backend_weight: GaugeVec,
    /// Share of the traffic, a fraction.
    pub backend_share: GaugeVec,
    /// Filtered latency, seconds.
    pub backend_latency: GaugeVec,
    /// Filtered success rate, a fraction.
    pub backend_success: GaugeVec,
    /// Filtered requests per second.
    pub backend_rps: GaugeVec,
    /// Filtered in-flight requests.
    pub backend_inflight: GaugeVec,
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
        let gauge = |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &BACKEND_LABELS);
        let m = Self {
            backend_weight: gauge(
                "l3_backend_weight",
                "Weight l3 computed for a TrafficSplit backend, out of 1000.",
            )?,
            backend_share: gauge(
                "l3_backend_share_ratio",
                "Share of the split's traffic l3 computed for a backend.",
            )?,
            backend_latency: gauge(
                "l3_backend_latency_seconds",
                "Filtered latency of a backend at the policy's percentile.",
            )?,
            backend_success: gauge(
                "l3_backend_success_ratio",
                "Filtered success rate of a backend.",
            )?,
            backend_rps: gauge(
                "l3_backend_requests_per_second",
                "Filtered request rate of a backend.",
            )?,
            backend_inflight: gauge(
                "l3_backend_inflight_requests",
                "Filtered in-flight requests of a backend.",
            )?,
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
        for c in m.backend_vecs() {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(m.cycle_duration.clone()))?;
        registry.register(Box::new(m.writes.clone()))?;
        registry.register(Box::new(m.write_duration.clone()))?;
        registry.register(Box::new(m.leader.clone()))?;
        registry.register(Box::new(m.policies.clone()))?;
        Ok(m)
    }

    fn backend_vecs(&self) -> [&GaugeVec; 6] {
        [
            &self.backend_weight,
            &self.backend_share,
            &self.backend_latency,
            &self.backend_success,
            &self.backend_rps,
            &self.backend_inflight,
        ]
    }

    /// Remove every series of one backend of one policy.
    pub fn remove_backend(&self, namespace: &str, policy: &str, backend: &str) {
        for v in self.backend_vecs() {
            // Absent series are fine: the backend may never have had a cycle.
            let _ = v.remove_label_values(&[namespace, policy, backend]);
        }
    }

    /// Count one API write.
    pub fn write(&self, kind: &str, ok: bool, secs: f64) {
        self.writes
            .with_label_values(&[kind, if ok { "success" } else { "error" }])
            .inc();
        self.write_duration.with_label_values(&[kind]).observe(secs);
    }
}
