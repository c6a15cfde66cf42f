//! A stand-in for Linkerd proxies' `/metrics`: the client-side (`direction="outbound"`) families
//! `request_total`, `response_total` (`classification`, `status_code`) and the
//! `response_latency_ms` histogram (with `status_code`, Linkerd's exact bucket bounds), with
//! counters that advance in real time at programmable rates so that PromQL answers are known.
//! [`Exporter::start_istio`] renders the same model in Istio's standard metrics instead:
//! `istio_requests_total` and `istio_request_duration_milliseconds` (Istio's default buckets),
//! `reporter="source"` for outbound and `"destination"` for inbound, `response_code`,
//! `destination_service_name`/`destination_service_namespace`; failures answer 503.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::routing::get;

/// Linkerd proxy latency buckets, ms (the `+Inf` bucket follows).
pub const BUCKETS_MS: [f64; 25] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];

/// Istio's default request duration buckets, ms (the `+Inf` bucket follows).
pub const ISTIO_BUCKETS_MS: [f64; 18] = [
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Which mesh's metrics the exporter renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Linkerd proxy metrics.
    Linkerd,
    /// Istio standard metrics.
    Istio,
}

impl Format {
    fn bounds(self) -> &'static [f64] {
        match self {
            Self::Linkerd => &BUCKETS_MS,
            Self::Istio => &ISTIO_BUCKETS_MS,
        }
    }
}

/// What one backend's clients see, per second.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Requests (= responses) per second, over all pods.
    pub rps: f64,
    /// Fraction of responses that are 200 (`classification="success"`); the rest are 500.
    pub success_ratio: f64,
    /// Latency distribution of the 200 responses: cumulative fraction at each bucket bound of
    /// [`BUCKETS_MS`] given as `(le, fraction)` points; bounds not listed take the next listed
    /// fraction's predecessor (step function); the `+Inf` bucket is always 1.
    pub ok_cdf: Vec<(f64, f64)>,
    /// Mean latency of the 200 responses, ms (drives `response_latency_ms_sum`).
    pub ok_mean_ms: f64,
    /// Latency of every 500 response, ms (slow failures: must not reach the p99 of successes).
    pub fail_ms: f64,
    /// `request_total - response_total`, constant.
    pub inflight: f64,
}

impl Profile {
    /// The fraction at `le` with the CDF interpolated linearly between its points (and from 0 at
    /// 0 ms): a stretched distribution then moves smoothly instead of jumping whole buckets.
    fn smooth_fraction_at(&self, le: f64) -> f64 {
        let mut prev = (0.0, 0.0);
        for &(b, frac) in &self.ok_cdf {
            if le < b {
                let span = b - prev.0;
                return if span > 0.0 {
                    prev.1 + (frac - prev.1) * (le - prev.0) / span
                } else {
                    frac
                };
            }
            prev = (b, frac);
        }
        prev.1
    }

    fn fraction_at(&self, le: f64) -> f64 {
        let mut f = 0.0;
        for &(b, frac) in &self.ok_cdf {
            if b <= le {
                f = frac;
            }
        }
        f
    }
}

#[derive(Debug, Clone)]
struct Counters {
    requests: f64,
    ok: f64,
    fail: f64,
    ok_buckets: Vec<f64>,
    fail_buckets: Vec<f64>,
    ok_sum: f64,
    fail_sum: f64,
}

#[derive(Debug, Clone)]
struct Backend {
    namespace: String,
    service: String,
    direction: &'static str,
    pods: u32,
    profile: Profile,
    counters: Counters,
    /// Relative noise of rate and latency per scrape interval (0: none).
    jitter: f64,
}

#[derive(Debug)]
struct Model {
    format: Format,
    backends: Vec<Backend>,
    last: Instant,
    rng: Rng,
}

/// A small deterministic generator (xorshift64*) for the exporter's noise.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    /// Uniform in [-1, 1].
    fn symmetric(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (x as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

impl Model {
    fn outbound(&mut self, namespace: &str, service: &str) -> &mut Backend {
        self.backends
            .iter_mut()
            .find(|b| b.namespace == namespace && b.service == service && b.direction == "outbound")
            .expect("known backend")
    }

    fn advance(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        for b in &mut self.backends {
            // Noise: this stretch of time has its own rate and its own latency scale.
            let (rate_scale, latency_scale) = if b.jitter > 0.0 {
                (
                    1.0 + b.jitter * self.rng.symmetric(),
                    1.0 + b.jitter * self.rng.symmetric(),
                )
            } else {
                (1.0, 1.0)
            };
            let p = &b.profile;
            let c = &mut b.counters;
            let n = p.rps * dt * rate_scale;
            let ok = n * p.success_ratio;
            let fail = n - ok;
            c.requests += n;
            c.ok += ok;
            c.fail += fail;
            c.ok_sum += ok * p.ok_mean_ms * latency_scale;
            c.fail_sum += fail * p.fail_ms;
            for (i, &le) in self.format.bounds().iter().enumerate() {
                let fraction = if b.jitter > 0.0 {
                    p.smooth_fraction_at(le / latency_scale)
                } else {
                    p.fraction_at(le)
                };
                c.ok_buckets[i] += ok * fraction;
                if p.fail_ms <= le {
                    c.fail_buckets[i] += fail;
                }
            }
        }
    }

    fn render_istio(&self) -> String {
        let mut out = String::new();
        out.push_str("# TYPE istio_requests_total counter\n");
        fn series(b: &Backend) -> Vec<(&'static str, &Vec<f64>, f64, f64)> {
            let c = &b.counters;
            let mut v = vec![("200", &c.ok_buckets, c.ok, c.ok_sum)];
            if c.fail > 0.0 {
                v.push(("503", &c.fail_buckets, c.fail, c.fail_sum));
            }
            v
        }
        for b in &self.backends {
            for pod in 0..b.pods {
                let share = 1.0 / f64::from(b.pods);
                for (code, _, count, _) in series(b) {
                    let l = istio_labels(b, pod, code);
                    let _ = writeln!(out, "istio_requests_total{{{l}}} {}", count * share);
                }
            }
        }
        out.push_str("# TYPE istio_request_duration_milliseconds histogram\n");
        for b in &self.backends {
            for pod in 0..b.pods {
                let share = 1.0 / f64::from(b.pods);
                for (code, buckets, count, sum) in series(b) {
                    let l = istio_labels(b, pod, code);
                    for (i, le) in ISTIO_BUCKETS_MS.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "istio_request_duration_milliseconds_bucket{{{l},le=\"{le}\"}} {}",
                            buckets[i] * share
                        );
                    }
                    let _ = writeln!(
                        out,
                        "istio_request_duration_milliseconds_bucket{{{l},le=\"+Inf\"}} {}",
                        count * share
                    );
                    let _ = writeln!(
                        out,
                        "istio_request_duration_milliseconds_sum{{{l}}} {}",
                        sum * share
                    );
                    let _ = writeln!(
                        out,
                        "istio_request_duration_milliseconds_count{{{l}}} {}",
                        count * share
                    );
                }
            }
        }
        out
    }

    fn render(&self) -> String {
        if self.format == Format::Istio {
            return self.render_istio();
        }
        let mut out = String::new();
        out.push_str(
            "# HELP request_total Total count of HTTP requests.\n# TYPE request_total counter\n",
        );
        for b in &self.backends {
            for pod in 0..b.pods {
                let share = 1.0 / f64::from(b.pods);
                let l = labels(b, pod);
                let _ = writeln!(
                    out,
                    "request_total{{{l}}} {}",
                    (b.counters.requests + b.profile.inflight) * share
                );
            }
        }
        out.push_str(
            "# HELP response_total Total count of HTTP responses.\n# TYPE response_total counter\n",
        );
        for b in &self.backends {
            for pod in 0..b.pods {
                let share = 1.0 / f64::from(b.pods);
                let l = labels(b, pod);
                let _ = writeln!(
                    out,
                    "response_total{{{l},classification=\"success\",status_code=\"200\"}} {}",
                    b.counters.ok * share
                );
                if b.counters.fail > 0.0 {
                    let _ = writeln!(
                        out,
                        "response_total{{{l},classification=\"failure\",status_code=\"500\"}} {}",
                        b.counters.fail * share
                    );
                }
            }
        }
        out.push_str("# HELP response_latency_ms Elapsed times between a request's headers being received and its response stream completing\n# TYPE response_latency_ms histogram\n");
        for b in &self.backends {
            for pod in 0..b.pods {
                let share = 1.0 / f64::from(b.pods);
                let l = labels(b, pod);
                let c = &b.counters;
                let mut series = vec![("200", &c.ok_buckets, c.ok, c.ok_sum)];
                if c.fail > 0.0 {
                    series.push(("500", &c.fail_buckets, c.fail, c.fail_sum));
                }
                for (code, buckets, count, sum) in series {
                    for (i, le) in BUCKETS_MS.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "response_latency_ms_bucket{{{l},status_code=\"{code}\",le=\"{le}\"}} {}",
                            buckets[i] * share
                        );
                    }
                    let _ = writeln!(
                        out,
                        "response_latency_ms_bucket{{{l},status_code=\"{code}\",le=\"+Inf\"}} {}",
                        count * share
                    );
                    let _ = writeln!(
                        out,
                        "response_latency_ms_sum{{{l},status_code=\"{code}\"}} {}",
                        sum * share
                    );
                    let _ = writeln!(
                        out,
                        "response_latency_ms_count{{{l},status_code=\"{code}\"}} {}",
                        count * share
                    );
                }
            }
        }
        out
    }
}

fn labels(b: &Backend, pod: u32) -> String {
    let (ns, svc) = (&b.namespace, &b.service);
    format!(
        "direction=\"{}\",authority=\"{svc}.{ns}.svc.cluster.local:8080\",\
         target_addr=\"10.0.{pod}.1:8080\",target_ip=\"10.0.{pod}.1\",target_port=\"8080\",\
         tls=\"true\",server_id=\"{svc}.{ns}.serviceaccount.identity.linkerd.cluster.local\",\
         dst_control_plane_ns=\"linkerd\",dst_deployment=\"{svc}\",dst_namespace=\"{ns}\",\
         dst_pod=\"{svc}-7d9f8-{pod}\",dst_pod_template_hash=\"7d9f8\",dst_service=\"{svc}\",\
         dst_serviceaccount=\"{svc}\"",
        b.direction
    )
}

fn istio_labels(b: &Backend, pod: u32, code: &str) -> String {
    let (ns, svc) = (&b.namespace, &b.service);
    let reporter = if b.direction == "outbound" {
        "source"
    } else {
        "destination"
    };
    format!(
        "reporter=\"{reporter}\",source_workload=\"client-{pod}\",source_workload_namespace=\"clients\",\
         source_canonical_service=\"client\",destination_workload=\"{svc}\",\
         destination_workload_namespace=\"{ns}\",destination_service=\"{svc}.{ns}.svc.cluster.local\",\
         destination_service_name=\"{svc}\",destination_service_namespace=\"{ns}\",\
         destination_canonical_service=\"{svc}\",request_protocol=\"http\",response_code=\"{code}\",\
         response_flags=\"-\",connection_security_policy=\"unknown\""
    )
}

/// Handle to a running exporter.
#[derive(Clone)]
pub struct Exporter {
    model: Arc<Mutex<Model>>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Exporter {
    /// Start an exporter of Linkerd metrics without backends on a free loopback port.
    pub async fn start() -> Self {
        Self::start_with(Format::Linkerd).await
    }

    /// Start an exporter of Istio metrics without backends on a free loopback port.
    pub async fn start_istio() -> Self {
        Self::start_with(Format::Istio).await
    }

    async fn start_with(format: Format) -> Self {
        let model = Arc::new(Mutex::new(Model {
            format,
            backends: Vec::new(),
            last: Instant::now(),
            rng: Rng(0x9E37_79B9_7F4A_7C15),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind exporter");
        let addr = listener.local_addr().expect("exporter addr");
        let app = Router::new()
            .route("/metrics", get(metrics))
            .with_state(Arc::clone(&model));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { model, addr }
    }

    fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Add an outbound backend served by `pods` endpoints; `initial` requests already counted
    /// (so that an idle backend has series).
    pub fn add(&self, namespace: &str, service: &str, pods: u32, profile: Profile, initial: f64) {
        self.add_with_direction(namespace, service, pods, profile, initial, "outbound");
    }

    /// Same, with another `direction` (inbound series must be ignored).
    pub fn add_with_direction(
        &self,
        namespace: &str,
        service: &str,
        pods: u32,
        profile: Profile,
        initial: f64,
        direction: &'static str,
    ) {
        let mut m = self.model();
        m.advance();
        let fail = initial * (1.0 - profile.success_ratio);
        let ok = initial - fail;
        let bounds = m.format.bounds();
        let ok_buckets = bounds
            .iter()
            .map(|&le| ok * profile.fraction_at(le))
            .collect();
        let fail_buckets = bounds
            .iter()
            .map(|&le| if profile.fail_ms <= le { fail } else { 0.0 })
            .collect();
        m.backends.push(Backend {
            namespace: namespace.into(),
            service: service.into(),
            direction,
            pods: pods.max(1),
            counters: Counters {
                requests: initial,
                ok,
                fail,
                ok_buckets,
                fail_buckets,
                ok_sum: ok * profile.ok_mean_ms,
                fail_sum: fail * profile.fail_ms,
            },
            profile,
            jitter: 0.0,
        });
    }

    /// Change a backend's profile from now on (counters stay monotonic).
    pub fn update(&self, namespace: &str, service: &str, f: impl FnOnce(&mut Profile)) {
        let mut m = self.model();
        m.advance();
        f(&mut m.outbound(namespace, service).profile);
    }

    /// From now on, vary a backend's rate and latency by up to `jitter` (e.g. 0.05 for ±5 %)
    /// between scrapes.
    pub fn set_jitter(&self, namespace: &str, service: &str, jitter: f64) {
        let mut m = self.model();
        m.advance();
        m.outbound(namespace, service).jitter = jitter;
    }
}

async fn metrics(State(model): State<Arc<Mutex<Model>>>) -> String {
    let mut m = model
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    m.advance();
    m.render()
}
