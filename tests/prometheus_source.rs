//! The Prometheus source against a real Prometheus (Debian package `prometheus`, 1 s scrapes)
//! scraping a Linkerd-proxy-like exporter with known rates, plus fake servers for the failure
//! modes (refused, slow, failing query) and for what goes over the wire. The same signal
//! tests run against a real VictoriaMetrics (Debian package `victoria-metrics`, scraping the
//! same exporter), with the differences found asserted as such; the chart's defaults are tested
//! with 10 s scrapes (linkerd-viz's interval); the Istio profile against an exporter in Istio's
//! format.
//!
//! Without a `prometheus` (or `victoria-metrics`) binary these tests FAIL saying how to install
//! it (`make tools`); `L3_SKIP_PROMETHEUS_TESTS=1` (`L3_SKIP_VICTORIA_METRICS_TESTS=1`) skips
//! them deliberately.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use l3::source::query::{self, SignalKind};
use l3::source::{
    BackendKey, BackendSignals, InflightEstimator, MetricsProfile, Outcome, PrometheusConfig,
    PrometheusSource, QueryWindow, RequestGroup, SignalRequest, SignalSource, Snapshot,
    SourceConfig, WindowInfo,
};
use support::exporter::{Exporter, Profile};
use support::fake::{FakeServer, Recorded, Reply};

/// Window of the test queries: 5 s holds five 1 s scrapes and converges fast.
const WINDOW: u64 = 5;
/// Bound of every "wait until Prometheus has the data" loop.
const CONVERGE: Duration = Duration::from_secs(40);
const POLL: Duration = Duration::from_millis(500);

fn key(ns: &str, svc: &str) -> BackendKey {
    BackendKey {
        namespace: ns.into(),
        service: svc.into(),
    }
}

fn group(quantile: f64, backends: &[BackendKey]) -> RequestGroup {
    RequestGroup {
        quantile,
        window: QueryWindow::Secs(WINDOW),
        backends: backends.to_vec(),
    }
}

fn source(url: &str, config: SourceConfig) -> PrometheusSource {
    let mut c = PrometheusConfig::new(url);
    c.source = config;
    PrometheusSource::new(c, &prometheus::Registry::new()).expect("valid source config")
}

/// `Ok` if `o` is a value within `rel` (relative) of `want`.
fn near(what: &str, o: Outcome, want: f64, rel: f64) -> Result<(), String> {
    match o {
        Outcome::Value(v) if (v - want).abs() <= rel * want.abs().max(1e-6) => Ok(()),
        _ => Err(format!(
            "{what}: got {o:?}, want {want} ± {:.1} %",
            rel * 100.0
        )),
    }
}

fn is(what: &str, o: Outcome, want: Outcome) -> Result<(), String> {
    if o == want {
        Ok(())
    } else {
        Err(format!("{what}: got {o:?}, want {want:?}"))
    }
}

fn signals<'a>(s: &'a Snapshot, g: usize, k: &BackendKey) -> Result<&'a BackendSignals, String> {
    s.groups
        .get(g)
        .and_then(|m| m.get(k))
        .ok_or_else(|| format!("group {g} lacks {k:?}: {s:?}"))
}

fn collect(checks: Vec<Result<(), String>>, snapshot: &Snapshot) -> Result<(), String> {
    let failed: Vec<String> = checks.into_iter().filter_map(Result::err).collect();
    if failed.is_empty() && snapshot.errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\nerrors: {:?}",
            failed.join("\n"),
            snapshot.errors
        ))
    }
}

// The exporter's backends. Latency CDFs are step functions over Linkerd's buckets; the
// expected quantiles below are Prometheus's linear interpolation inside the bucket that holds
// the rank, computed by hand.

/// web-east: p99 in (100, 200] → 100 + 100·(0.99−0.98)/0.02 = 150 ms; p75 in (40, 50] →
/// 40 + 10·(0.75−0.5)/0.4 = 46.25 ms. 10 % of responses are 500s at 30 s: if they reached the
/// latency query, p99 would be ~29.9 s.
fn east() -> Profile {
    Profile {
        rps: 100.0,
        success_ratio: 0.9,
        ok_cdf: vec![(10.0, 0.5), (50.0, 0.9), (100.0, 0.98), (200.0, 1.0)],
        ok_mean_ms: 40.0,
        fail_ms: 30_000.0,
        inflight: 7.0,
    }
}

/// web-west: p99 = 400 + 100·(0.005/0.015) = 433.3 ms; p75 = 300 + 100·(0.15/0.385) = 338.96 ms.
fn west() -> Profile {
    Profile {
        rps: 50.0,
        success_ratio: 1.0,
        ok_cdf: vec![(100.0, 0.6), (400.0, 0.985), (500.0, 1.0)],
        ok_mean_ms: 200.0,
        fail_ms: 1.0,
        inflight: 3.0,
    }
}

/// web-central: p99 = 30 ms (rank on a bucket bound); p75 = 10 + 10·0.75/0.95 = 17.89 ms.
fn central() -> Profile {
    Profile {
        rps: 20.0,
        success_ratio: 0.75,
        ok_cdf: vec![(20.0, 0.95), (30.0, 0.99), (40.0, 1.0)],
        ok_mean_ms: 15.0,
        fail_ms: 5.0,
        inflight: 0.0,
    }
}

/// web-slow: 2 % beyond 50 s: p99 lies in the +Inf bucket.
fn slow() -> Profile {
    Profile {
        rps: 10.0,
        success_ratio: 1.0,
        ok_cdf: vec![(100.0, 0.5), (50_000.0, 0.98)],
        ok_mean_ms: 2_000.0,
        fail_ms: 1.0,
        inflight: 1.0,
    }
}

/// web-idle: series exist (100 old requests) but nothing moves: rates are 0.
fn idle() -> Profile {
    Profile {
        rps: 0.0,
        success_ratio: 1.0,
        ok_cdf: vec![(10.0, 1.0)],
        ok_mean_ms: 5.0,
        fail_ms: 1.0,
        inflight: 2.0,
    }
}

/// Decoys that must not leak into answers: terrible numbers everywhere.
fn decoy() -> Profile {
    Profile {
        rps: 999.0,
        success_ratio: 0.1,
        ok_cdf: vec![(40_000.0, 1.0)],
        ok_mean_ms: 40_000.0,
        fail_ms: 40_000.0,
        inflight: 500.0,
    }
}

/// Which real store a test queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    Prometheus,
    VictoriaMetrics,
}

/// A running store scraping the exporter.
enum Store {
    Prometheus(support::prometheus::Prometheus),
    Victoria(support::victoria::Victoria),
}

impl Store {
    /// Start `kind` scraping `targets` every `interval_secs`; `None` when deliberately skipped.
    async fn start(
        kind: StoreKind,
        targets: &[std::net::SocketAddr],
        interval_secs: u32,
    ) -> Option<Self> {
        Some(match kind {
            StoreKind::Prometheus => Self::Prometheus(
                support::prometheus::Prometheus::start_scraping(
                    &support::prometheus::binary()?,
                    targets,
                    interval_secs,
                )
                .await,
            ),
            StoreKind::VictoriaMetrics => Self::Victoria(
                support::victoria::Victoria::start(
                    &support::victoria::binary()?,
                    targets,
                    interval_secs,
                )
                .await,
            ),
        })
    }

    fn url(&self) -> String {
        match self {
            Self::Prometheus(p) => p.url.clone(),
            Self::Victoria(v) => v.url.clone(),
        }
    }

    fn stop(&mut self) {
        match self {
            Self::Prometheus(p) => p.stop(),
            Self::Victoria(v) => v.stop(),
        }
    }
}

/// VictoriaMetrics hides the newest samples from queries for `-search.latencyOffset` (30 s by
/// default): every "wait for the data" bound is that much longer there.
const VICTORIA_LATENCY_OFFSET: Duration = Duration::from_secs(30);

fn converge(kind: StoreKind) -> Duration {
    match kind {
        StoreKind::Prometheus => CONVERGE,
        StoreKind::VictoriaMetrics => CONVERGE + VICTORIA_LATENCY_OFFSET,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linkerd_signals_from_a_real_prometheus() {
    linkerd_signals(StoreKind::Prometheus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linkerd_signals_from_victoria_metrics() {
    linkerd_signals(StoreKind::VictoriaMetrics).await;
}

async fn linkerd_signals(kind: StoreKind) {
    let exporter = Exporter::start().await;
    exporter.add("prod", "web-east", 2, east(), 0.0);
    exporter.add("prod", "web-west", 2, west(), 0.0);
    exporter.add("prod", "web-central", 1, central(), 0.0);
    exporter.add("prod", "web-slow", 1, slow(), 0.0);
    exporter.add("prod", "web-idle", 1, idle(), 100.0);
    exporter.add(
        "other",
        "api",
        1,
        Profile {
            rps: 5.0,
            success_ratio: 1.0,
            ok_cdf: vec![(10.0, 1.0)],
            ok_mean_ms: 5.0,
            fail_ms: 1.0,
            inflight: 0.0,
        },
        0.0,
    );
    // Selected by the namespace × service cross product but not requested.
    exporter.add("other", "web-east", 1, decoy(), 0.0);
    // Same destination labels, server side: excluded by direction="outbound".
    exporter.add_with_direction("prod", "web-east", 1, decoy(), 0.0, "inbound");
    let Some(mut prom) = Store::start(kind, &[exporter.addr], 1).await else {
        return;
    };
    let prom_url = prom.url();

    let (e, w, c) = (
        key("prod", "web-east"),
        key("prod", "web-west"),
        key("prod", "web-central"),
    );
    let (slow_k, idle_k, missing, api) = (
        key("prod", "web-slow"),
        key("prod", "web-idle"),
        key("prod", "web-missing"),
        key("other", "api"),
    );
    let split = [e.clone(), w.clone(), c.clone()];
    let request = SignalRequest {
        groups: vec![
            group(0.99, &split),
            group(
                0.75,
                &[e.clone(), w.clone(), c.clone(), slow_k.clone(), api.clone()],
            ),
            group(0.99, &[slow_k.clone(), idle_k.clone(), missing.clone()]),
        ],
    };
    for q in query::plan(
        &SourceConfig::default(),
        &SignalRequest {
            groups: vec![group(0.99, &split)],
        },
    )
    .queries
    {
        eprintln!("3-backend split, {}: {}", q.signal.as_str(), q.promql);
    }
    let little = source(&prom_url, SourceConfig::default());
    let instant = source(
        &prom_url,
        SourceConfig {
            inflight: InflightEstimator::Instant,
            ..SourceConfig::default()
        },
    );

    let started = Instant::now();
    let snap = support::eventually(converge(kind), POLL, || async {
        let s = little.fetch(&request).await;
        let i = instant.fetch(&request).await;
        let mut checks = Vec::new();
        // Group 0: the split at p99.
        for (k, p99, sr, rps, l) in [
            (&e, 0.150, 0.9, 100.0, 100.0 * (0.9 * 0.040 + 0.1 * 30.0)),
            (&w, 0.4333, 1.0, 50.0, 50.0 * 0.200),
            (&c, 0.030, 0.75, 20.0, 20.0 * (0.75 * 0.015 + 0.25 * 0.005)),
        ] {
            let x = signals(&s, 0, k)?;
            checks.push(near(
                &format!("{} p99", k.service),
                x.latency_secs,
                p99,
                0.03,
            ));
            checks.push(near(
                &format!("{} success", k.service),
                x.success_rate,
                sr,
                0.01,
            ));
            checks.push(near(&format!("{} rps", k.service), x.rps, rps, 0.05));
            checks.push(near(&format!("{} little", k.service), x.inflight, l, 0.05));
        }
        for (k, want) in [(&e, 7.0), (&w, 3.0)] {
            let x = signals(&i, 0, k)?;
            checks.push(near(
                &format!("{} instant in-flight", k.service),
                x.inflight,
                want,
                0.01,
            ));
        }
        // The exporter's float counters leave ~1e-13 residue; real proxies count integers.
        checks.push(near(
            "central instant in-flight",
            signals(&i, 0, &c)?.inflight,
            0.0,
            0.01,
        ));
        // Group 1: p75 of the same backends, plus a slow one and one in another namespace.
        for (k, p75) in [
            (&e, 0.04625),
            (&w, 0.33896),
            (&c, 0.017895),
            (&slow_k, 45.2083),
            (&api, 0.00875),
        ] {
            checks.push(near(
                &format!("{} p75", k.service),
                signals(&s, 1, k)?.latency_secs,
                p75,
                0.03,
            ));
        }
        checks.push(near("api rps", signals(&s, 1, &api)?.rps, 5.0, 0.05));
        // Group 2: the outcomes that must never reach a filter as numbers.
        let sl = signals(&s, 2, &slow_k)?;
        checks.push(is(
            "slow p99 beyond the last bucket",
            sl.latency_secs,
            Outcome::Infinite,
        ));
        checks.push(near("slow rps", sl.rps, 10.0, 0.05));
        let id = signals(&s, 2, &idle_k)?;
        // A documented difference: VictoriaMetrics drops NaN results from its answers, so a
        // quantile over a window without observations is no series there, not NaN. Neither
        // reaches a filter; l3 acts the same on both.
        let idle_latency = match kind {
            StoreKind::Prometheus => Outcome::NotANumber,
            StoreKind::VictoriaMetrics => Outcome::NoSeries,
        };
        checks.push(is("idle latency", id.latency_secs, idle_latency));
        checks.push(is(
            "idle success rate",
            id.success_rate,
            Outcome::NotANumber,
        ));
        checks.push(is("idle rps", id.rps, Outcome::Value(0.0)));
        checks.push(is("idle little", id.inflight, Outcome::Value(0.0)));
        checks.push(is(
            "idle instant",
            signals(&i, 2, &idle_k)?.inflight,
            Outcome::Value(2.0),
        ));
        if *signals(&s, 2, &missing)? != BackendSignals::all(Outcome::NoSeries) {
            checks.push(Err(format!(
                "missing backend: {:?}",
                signals(&s, 2, &missing)?
            )));
        }
        // Only requested backends come back.
        if s.groups[1].len() != 5 {
            checks.push(Err(format!("group 1 has {} backends", s.groups[1].len())));
        }
        collect(checks, &i)?;
        collect(Vec::new(), &s)?;
        Ok(s)
    })
    .await;
    eprintln!("converged after {:?}", started.elapsed());
    assert_eq!(
        little.telemetry().queries(SignalKind::Latency) as usize,
        little.telemetry().queries(SignalKind::Rps) as usize,
    );
    // Each `to_sample` only carries usable values.
    assert_eq!(
        signals(&snap, 2, &idle_k).unwrap().to_sample().latency_secs,
        None
    );
    assert_eq!(
        signals(&snap, 2, &slow_k).unwrap().to_sample().latency_secs,
        None
    );

    // Values change over time: web-east halves its success rate and slows to 40 rps.
    exporter.update("prod", "web-east", |p| {
        p.rps = 40.0;
        p.success_ratio = 0.5;
    });
    support::eventually(converge(kind), POLL, || async {
        let s = little.fetch(&request).await;
        let x = signals(&s, 0, &e)?;
        collect(
            vec![
                near("east rps after change", x.rps, 40.0, 0.05),
                near("east success after change", x.success_rate, 0.5, 0.01),
                near("east p99 after change", x.latency_secs, 0.150, 0.03),
                near("west rps unchanged", signals(&s, 0, &w)?.rps, 50.0, 0.05),
            ],
            &s,
        )
    })
    .await;

    // Prometheus goes away: every query fails typed (connection refused), nothing panics.
    prom.stop();
    let s = little.fetch(&request).await;
    assert_eq!(s.errors.len(), 12, "{:?}", s.errors);
    assert!(
        s.errors.iter().all(|e| e.reason == "connect"),
        "{:?}",
        s.errors
    );
    for g in &s.groups {
        for x in g.values() {
            assert_eq!(*x, BackendSignals::all(Outcome::QueryFailed));
        }
    }
    assert_eq!(little.telemetry().errors(SignalKind::Rps, "connect"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_backends_one_query_per_signal() {
    let Some(bin) = support::prometheus::binary() else {
        return;
    };
    let exporter = Exporter::start().await;
    let mut backends = Vec::new();
    for i in 0..300u32 {
        let (ns, svc) = (format!("team-{}", i % 3), format!("svc-{i:03}.v1"));
        let profile = Profile {
            rps: f64::from(1 + i % 50),
            success_ratio: 1.0,
            ok_cdf: vec![(50.0, 1.0)],
            ok_mean_ms: 20.0,
            fail_ms: 1.0,
            inflight: 0.0,
        };
        exporter.add(&ns, &svc, 1, profile, 0.0);
        backends.push((key(&ns, &svc), f64::from(1 + i % 50)));
    }
    let prom = support::prometheus::Prometheus::start(&bin, &[exporter.addr]).await;
    let fail_latency = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&fail_latency);
    let proxy = FakeServer::proxy(prom.url.clone(), move |r: &Recorded| {
        let q = r.form("query").unwrap_or_default();
        (flag.load(Ordering::Relaxed) && q.starts_with("histogram_quantile")).then(|| Reply {
            status: 503,
            body: r#"{"status":"error","errorType":"unavailable","error":"too many queries"}"#
                .into(),
            delay: Duration::ZERO,
        })
    })
    .await;
    let src = source(&proxy.url(), SourceConfig::default());
    let request = SignalRequest {
        groups: vec![group(
            0.99,
            &backends.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        )],
    };
    support::eventually(CONVERGE, POLL, || async {
        let s = src.fetch(&request).await;
        let mut checks = Vec::new();
        for (k, rps) in &backends {
            let x = signals(&s, 0, k)?;
            checks.push(near(&format!("{} rps", k.service), x.rps, *rps, 0.05));
            // Every observation ≤ 50 ms, all in (40, 50]: p99 = 40 + 10·0.99 = 49.9 ms.
            checks.push(near(
                &format!("{} p99", k.service),
                x.latency_secs,
                0.0499,
                0.03,
            ));
            checks.push(near(
                &format!("{} little", k.service),
                x.inflight,
                rps * 0.020,
                0.05,
            ));
            checks.push(near(
                &format!("{} success", k.service),
                x.success_rate,
                1.0,
                0.01,
            ));
        }
        collect(checks, &s)
    })
    .await;

    // One cycle, 300 backends: exactly one request per signal reached Prometheus.
    proxy.clear();
    let before = src.telemetry().queries(SignalKind::Rps);
    let s = src.fetch(&request).await;
    let sent = proxy.requests();
    assert_eq!(sent.len(), 4, "queries for 300 backends: {}", sent.len());
    assert_eq!(src.telemetry().queries(SignalKind::Rps), before + 1);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert!(sent.iter().all(|r| r.method == "POST"));
    eprintln!(
        "300 backends: {} queries, longest {} bytes of PromQL",
        sent.len(),
        sent.iter()
            .map(|r| r.form("query").unwrap_or_default().len())
            .max()
            .unwrap_or(0)
    );

    // One failing query (the latency one) fails only its signal.
    fail_latency.store(true, Ordering::Relaxed);
    let s = src.fetch(&request).await;
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    assert_eq!(
        (s.errors[0].signal, s.errors[0].reason),
        ("latency", "prometheus")
    );
    assert!(
        s.errors[0].message.contains("unavailable"),
        "{}",
        s.errors[0].message
    );
    for (k, rps) in &backends {
        let x = s.groups[0][k];
        assert_eq!(x.latency_secs, Outcome::QueryFailed);
        near("rps while latency fails", x.rps, *rps, 0.05).unwrap();
        assert!(x.success_rate.value().is_some() && x.inflight.value().is_some());
    }
    assert_eq!(src.telemetry().errors(SignalKind::Latency, "prometheus"), 1);
}

#[test]
fn a_thousand_backends_cost_four_queries() {
    let backends: Vec<BackendKey> = (0..1000)
        .map(|i| key(&format!("ns-{}", i % 10), &format!("service-{i:04}-east")))
        .collect();
    let plan = query::plan(
        &SourceConfig::default(),
        &SignalRequest {
            groups: vec![group(0.99, &backends)],
        },
    );
    let longest = plan
        .queries
        .iter()
        .map(|q| q.promql.len())
        .max()
        .unwrap_or(0);
    eprintln!(
        "1000 backends: {} queries, longest {longest} bytes",
        plan.queries.len()
    );
    assert_eq!(plan.queries.len(), 4);
    let per_signal: BTreeMap<SignalKind, usize> =
        plan.queries.iter().fold(BTreeMap::new(), |mut m, q| {
            *m.entry(q.signal).or_default() += 1;
            m
        });
    assert!(per_signal.values().all(|&n| n == 1), "{per_signal:?}");
}

/// Answers every query with one series for prod/a, except latency queries when `slow_latency`.
fn canned_server(slow_latency: bool, slow_all: bool) -> support::fake::Handler {
    Arc::new(move |r: Recorded| {
        let q = r.form("query").unwrap_or_default();
        let slow = slow_all || (slow_latency && q.starts_with("histogram_quantile"));
        Box::pin(async move {
            Reply {
                status: 200,
                body: r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"dst_namespace":"prod","dst_service":"a","classification":"success"},"value":[1,"0.5"]}]}}"#.into(),
                delay: if slow { Duration::from_secs(30) } else { Duration::ZERO },
            }
        })
    })
}

#[tokio::test]
async fn slow_prometheus_times_out_within_the_timeout() {
    let timeout = Duration::from_millis(300);
    let request = SignalRequest {
        groups: vec![group(0.99, &[key("prod", "a")])],
    };
    for (slow_latency, slow_all) in [(true, false), (false, true)] {
        let server = FakeServer::start(canned_server(slow_latency, slow_all)).await;
        let mut c = PrometheusConfig::new(server.url());
        c.timeout = timeout;
        let src = PrometheusSource::new(c, &prometheus::Registry::new()).unwrap();
        let started = Instant::now();
        let s = src.fetch(&request).await;
        let elapsed = started.elapsed();
        // Queries run concurrently, each bounded by the timeout: far below the server's 30 s.
        assert!(elapsed < timeout * 5, "fetch took {elapsed:?}");
        let x = s.groups[0][&key("prod", "a")];
        assert_eq!(x.latency_secs, Outcome::QueryFailed);
        let timeouts = s.errors.iter().filter(|e| e.reason == "timeout").count();
        if slow_all {
            assert_eq!(timeouts, 4, "{:?}", s.errors);
            assert_eq!(x, BackendSignals::all(Outcome::QueryFailed));
        } else {
            assert_eq!(timeouts, 1, "{:?}", s.errors);
            assert_eq!(s.errors[0].signal, "latency");
            assert_eq!(x.rps, Outcome::Value(0.5));
            assert_eq!(x.success_rate, Outcome::Value(1.0));
        }
        assert!(
            s.errors.iter().all(|e| e.message.contains("timed out")),
            "{:?}",
            s.errors
        );
    }
}

#[tokio::test]
async fn connection_refused_is_a_typed_error() {
    let port = support::prometheus::free_port();
    let src = source(&format!("http://127.0.0.1:{port}"), SourceConfig::default());
    let request = SignalRequest {
        groups: vec![
            group(0.99, &[key("prod", "a"), key("prod", "b")]),
            group(0.5, &[key("prod", "c")]),
        ],
    };
    let s = src.fetch(&request).await;
    assert_eq!(s.errors.len(), 8, "{:?}", s.errors);
    assert!(
        s.errors.iter().all(|e| e.reason == "connect"),
        "{:?}",
        s.errors
    );
    assert!(
        s.groups
            .iter()
            .flat_map(|g| g.values())
            .all(|x| *x == BackendSignals::all(Outcome::QueryFailed))
    );
    assert_eq!(src.telemetry().errors(SignalKind::Latency, "connect"), 2);
}

#[tokio::test]
async fn credentials_headers_and_evaluation_time_reach_the_server() {
    let server = FakeServer::start(canned_server(false, false)).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t1\n").unwrap();
    let mut c = PrometheusConfig::new(format!("{}/prometheus/", server.url()));
    c.bearer_token_file = Some(token.clone());
    c.headers = vec![("X-Scope-OrgID".into(), "tenant-1".into())];
    // A stated scrape interval: no probe for it, so only the signal queries go over the wire.
    c.source.scrape_interval_secs = Some(1.0);
    let src = PrometheusSource::new(c, &prometheus::Registry::new()).unwrap();
    let request = SignalRequest {
        groups: vec![
            group(0.99, &[key("prod", "a")]),
            group(0.5, &[key("prod", "a")]),
        ],
    };
    let s = src.fetch(&request).await;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let sent = server.requests();
    assert_eq!(sent.len(), 8);
    let time = format!("{:.3}", s.timestamp);
    for r in &sent {
        assert_eq!(r.method, "POST");
        assert_eq!(r.uri.path(), "/prometheus/api/v1/query");
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(r.header("authorization").as_deref(), Some("Bearer t1"));
        assert_eq!(r.header("x-scope-orgid").as_deref(), Some("tenant-1"));
        // Every query of the cycle is evaluated at the same instant.
        assert_eq!(r.form("time"), Some(time.clone()));
        assert_eq!(r.form("timeout").as_deref(), Some("2000ms"));
    }
    // The token rotates (a new file renamed over the old one, like a projected volume).
    let fresh = dir.path().join("token.new");
    std::fs::write(&fresh, "t2").unwrap();
    std::fs::rename(&fresh, &token).unwrap();
    server.clear();
    src.fetch(&request).await;
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.header("authorization").as_deref() == Some("Bearer t2"))
    );
    // The token file disappears: typed failure, nothing sent.
    std::fs::remove_file(&token).unwrap();
    server.clear();
    let s = src.fetch(&request).await;
    assert_eq!(s.errors.len(), 8);
    assert!(
        s.errors.iter().all(|e| e.reason == "credentials"),
        "{:?}",
        s.errors
    );
    assert!(server.requests().is_empty());

    // The scrape-interval probe carries the same credentials, headers and time.
    let dir2 = tempfile::tempdir().unwrap();
    let token2 = dir2.path().join("token");
    std::fs::write(&token2, "t3").unwrap();
    let mut c = PrometheusConfig::new(server.url());
    c.bearer_token_file = Some(token2);
    c.headers = vec![("X-Scope-OrgID".into(), "tenant-1".into())];
    let src = PrometheusSource::new(c, &prometheus::Registry::new()).unwrap();
    server.clear();
    let s = src.fetch(&request).await;
    let sent = server.requests();
    let probe: Vec<_> = sent
        .iter()
        .filter(|r| r.form("query").is_some_and(|q| q.ends_with("[150s]")))
        .collect();
    assert_eq!(probe.len(), 1, "one probe for the one backend set");
    assert_eq!(sent.len(), 9);
    assert_eq!(
        probe[0].header("authorization").as_deref(),
        Some("Bearer t3")
    );
    assert_eq!(
        probe[0].header("x-scope-orgid").as_deref(),
        Some("tenant-1")
    );
    assert_eq!(probe[0].form("time"), Some(format!("{:.3}", s.timestamp)));
    // The canned answer is a vector, not raw samples: the interval stays unknown, typed.
    assert_eq!(s.windows[0].scrape_interval_secs, None);
    assert!(
        s.errors.is_empty(),
        "a failed probe never fails the signals"
    );

    // Basic auth with a password file.
    let pw = dir.path().join("password");
    std::fs::write(&pw, "secret\n").unwrap();
    let mut c = PrometheusConfig::new(server.url());
    c.basic_auth = Some(("l3".into(), pw));
    c.source.scrape_interval_secs = Some(1.0);
    let src = PrometheusSource::new(c, &prometheus::Registry::new()).unwrap();
    server.clear();
    src.fetch(&request).await;
    let sent = server.requests();
    assert_eq!(sent.len(), 8);
    assert!(
        sent.iter()
            .all(|r| r.header("authorization").as_deref() == Some("Basic bDM6c2VjcmV0"))
    );
}

/// p99 (s), success rate, RPS and Little's-law in-flight of web-east, web-west and web-central
/// at p99 (see their profiles).
const SPLIT_P99: [[f64; 4]; 3] = [
    [0.150, 0.9, 100.0, 100.0 * (0.9 * 0.040 + 0.1 * 30.0)],
    [0.4333, 1.0, 50.0, 50.0 * 0.200],
    [0.030, 0.75, 20.0, 20.0 * (0.75 * 0.015 + 0.25 * 0.005)],
];

/// Check the four signals of `k` against `[p99, success, rps, in-flight]` with the tolerances
/// of the Linkerd test (3 %, 1 %, 5 %, 5 %).
fn four_signals(
    checks: &mut Vec<Result<(), String>>,
    k: &BackendKey,
    x: &BackendSignals,
    [p99, sr, rps, l]: [f64; 4],
) {
    let n = &k.service;
    checks.push(near(&format!("{n} p99"), x.latency_secs, p99, 0.03));
    checks.push(near(&format!("{n} success"), x.success_rate, sr, 0.01));
    checks.push(near(&format!("{n} rps"), x.rps, rps, 0.05));
    checks.push(near(&format!("{n} little"), x.inflight, l, 0.05));
}

/// The chart's defaults (`queryWindow: auto`, scrape interval learned from Prometheus) against a
/// store that scrapes every 10 s, as linkerd-viz's Prometheus does: every signal arrives, the
/// window is four scrapes (40 s), and an explicit 10 s window is reported too short.
async fn ten_second_scrapes_with_the_defaults(kind: StoreKind) {
    let exporter = Exporter::start().await;
    exporter.add("prod", "web-east", 2, east(), 0.0);
    exporter.add("prod", "web-west", 2, west(), 0.0);
    exporter.add("prod", "web-central", 1, central(), 0.0);
    let Some(store) = Store::start(kind, &[exporter.addr], 10).await else {
        return;
    };
    let src = source(&store.url(), SourceConfig::default());
    let (e, w, c) = (
        key("prod", "web-east"),
        key("prod", "web-west"),
        key("prod", "web-central"),
    );
    let split = vec![e.clone(), w.clone(), c.clone()];
    let request = SignalRequest {
        groups: vec![
            RequestGroup {
                quantile: 0.99,
                window: QueryWindow::default(),
                backends: split.clone(),
            },
            RequestGroup {
                quantile: 0.5,
                window: QueryWindow::Secs(10),
                backends: split.clone(),
            },
        ],
    };
    let started = Instant::now();
    let snap = support::eventually(
        Duration::from_secs(120) + converge(kind) - CONVERGE,
        Duration::from_secs(1),
        || async {
            let s = src.fetch(&request).await;
            let mut checks = Vec::new();
            for (k, want) in [&e, &w, &c].into_iter().zip(SPLIT_P99) {
                four_signals(&mut checks, k, signals(&s, 0, k)?, want);
            }
            let want = [
                WindowInfo {
                    scrape_interval_secs: Some(10.0),
                    window_secs: 40,
                    too_short: false,
                },
                WindowInfo {
                    scrape_interval_secs: Some(10.0),
                    window_secs: 10,
                    too_short: true,
                },
            ];
            if s.windows != want {
                checks.push(Err(format!("windows {:?}, want {want:?}", s.windows)));
            }
            collect(checks, &s)?;
            Ok(s)
        },
    )
    .await;
    eprintln!(
        "{kind:?}, 10 s scrapes: every signal after {:?}, windows {:?}",
        started.elapsed(),
        snap.windows
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_second_scrapes_with_the_defaults_prometheus() {
    ten_second_scrapes_with_the_defaults(StoreKind::Prometheus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_second_scrapes_with_the_defaults_victoria_metrics() {
    ten_second_scrapes_with_the_defaults(StoreKind::VictoriaMetrics).await;
}

/// The Istio profile against a real Prometheus scraping an exporter in Istio's format: the
/// same model as the Linkerd test, on Istio's bucket bounds, with 503s as failures and the
/// server side's `reporter="destination"` series as decoys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_signals_from_a_real_prometheus() {
    let exporter = Exporter::start_istio().await;
    // p99 in (100, 250]: 100 + 150·(0.99−0.98)/0.02 = 175 ms.
    let cart = Profile {
        ok_cdf: vec![(10.0, 0.5), (50.0, 0.9), (100.0, 0.98), (250.0, 1.0)],
        ..east()
    };
    // p99 in (250, 500]: 250 + 250·(0.99−0.6)/0.4 = 493.75 ms.
    let cart_west = Profile {
        ok_cdf: vec![(100.0, 0.6), (500.0, 1.0)],
        ..west()
    };
    exporter.add("shop", "cart", 2, cart, 0.0);
    exporter.add("shop", "cart-west", 1, cart_west, 0.0);
    exporter.add_with_direction("shop", "cart", 1, decoy(), 0.0, "inbound");
    exporter.add("other", "cart", 1, decoy(), 0.0);
    let Some(prom) = Store::start(StoreKind::Prometheus, &[exporter.addr], 1).await else {
        return;
    };
    let config = SourceConfig::for_profile(MetricsProfile::Istio);
    let (k1, k2) = (key("shop", "cart"), key("shop", "cart-west"));
    let request = SignalRequest {
        groups: vec![group(0.99, &[k1.clone(), k2.clone()])],
    };
    for q in query::plan(&config, &request).queries {
        eprintln!("istio, {}: {}", q.signal.as_str(), q.promql);
    }
    let src = source(&prom.url(), config);
    support::eventually(CONVERGE, POLL, || async {
        let s = src.fetch(&request).await;
        let mut checks = Vec::new();
        for (k, want) in [
            (&k1, [0.175, 0.9, 100.0, 100.0 * (0.9 * 0.040 + 0.1 * 30.0)]),
            (&k2, [0.49375, 1.0, 50.0, 50.0 * 0.200]),
        ] {
            four_signals(&mut checks, k, signals(&s, 0, k)?, want);
        }
        collect(checks, &s)
    })
    .await;
}
