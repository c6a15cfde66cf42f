//! `/metrics` and the probes over real HTTP on 127.0.0.1: metric names follow Prometheus
//! conventions, and the series of removed backends and deleted policies disappear.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DynamicObject;
use l3::operator::crd::{FINALIZER, LatencyPolicy, LatencyPolicySpec};
use l3::operator::engine::{Engine, Key};
use l3::operator::health::{self, Readiness};
use l3::operator::metrics::Metrics;
use l3::operator::server;
use l3::operator::testing::FixedSource;
use l3::operator::trafficsplit::{self, SplitVersion};
use l3::source::SignalSource;
use serde_json::json;

async fn start(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(listener, router));
    format!("http://{addr}")
}

async fn get(url: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    let r = client.get(url).send().await.expect("the server answers");
    (r.status().as_u16(), r.text().await.unwrap())
}

fn policy(name: &str, split: &str) -> Arc<LatencyPolicy> {
    let mut p = LatencyPolicy::new(name, LatencyPolicySpec::for_split(split));
    p.metadata.namespace = Some("shop".into());
    p.metadata.finalizers = Some(vec![FINALIZER.into()]);
    p.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    Arc::new(p)
}

fn split(backends: &[&str]) -> Arc<DynamicObject> {
    let b: Vec<(&str, serde_json::Value)> = backends.iter().map(|s| (*s, json!(1))).collect();
    Arc::new(trafficsplit::object(
        SplitVersion::V1alpha2,
        "shop",
        "web",
        &b,
    ))
}

async fn cycle(
    engine: &mut Engine,
    source: &FixedSource,
    t: f64,
    policies: &[Arc<LatencyPolicy>],
    splits: &HashMap<Key, Arc<DynamicObject>>,
) {
    let plan = engine.plan(t, policies, splits);
    let snap = source.fetch(&plan.request).await;
    engine.decide(t, plan, &snap);
}

#[tokio::test]
async fn metrics_are_named_by_convention_and_removed_with_their_backend() {
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).unwrap();
    metrics.leader.set(1.0);
    metrics.cycle_duration.observe(0.01);
    metrics.write("weights", true, 0.02);
    let base = start(server::metrics_router(registry)).await;
    let mut engine = Engine::new(metrics);
    let source = FixedSource::healthy();
    let key = ("shop".to_string(), "web".to_string());
    let mut splits = HashMap::new();
    splits.insert(key.clone(), split(&["web-a", "web-b", "web-c"]));
    let policies = vec![policy("p", "web")];
    cycle(&mut engine, &source, 1000.0, &policies, &splits).await;

    let (code, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(code, 200);
    for name in [
        "l3_backend_weight",
        "l3_backend_share_ratio",
        "l3_backend_latency_seconds",
        "l3_backend_success_ratio",
        "l3_backend_requests_per_second",
        "l3_backend_inflight_requests",
        "l3_control_loop_duration_seconds_bucket",
        "l3_api_writes_total",
        "l3_api_write_duration_seconds_bucket",
        "l3_leader",
    ] {
        assert!(
            text.contains(&format!("\n{name}")),
            "{name} missing:\n{text}"
        );
    }
    for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(name.starts_with("l3_"), "{line}");
        if line.ends_with(" counter") {
            assert!(name.ends_with("_total"), "{line}");
        }
    }
    assert!(
        text.contains(r#"l3_backend_weight{backend="web-c",namespace="shop",policy="p"}"#),
        "{text}"
    );

    // web-c leaves the split: its series go at the next cycle.
    splits.insert(key.clone(), split(&["web-a", "web-b"]));
    cycle(&mut engine, &source, 1005.0, &policies, &splits).await;
    let (_, text) = get(&format!("{base}/metrics")).await;
    assert!(!text.contains(r#"backend="web-c""#), "{text}");
    assert!(text.contains(r#"backend="web-b""#), "{text}");

    // The policy goes: every backend series goes with it.
    cycle(&mut engine, &source, 1010.0, &[], &splits).await;
    let (_, text) = get(&format!("{base}/metrics")).await;
    assert!(!text.contains("l3_backend_weight{"), "{text}");
}

#[tokio::test]
async fn probes_report_alive_and_ready_after_the_first_cycle() {
    let ready = Arc::new(Readiness::default());
    let base = start(server::probe_router(ready.clone())).await;
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    assert_eq!(get(&format!("{base}/readyz")).await.0, 503);
    ready.cycle_done();
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);
}

#[tokio::test]
async fn readyz_fails_with_the_reason_while_the_crd_is_missing() {
    let ready = Arc::new(Readiness::default());
    ready.cycle_done();
    let base = start(server::probe_router(ready.clone())).await;
    ready.report(
        "latencypolicies *",
        Some(format!(
            "the LatencyPolicy CRD (latencypolicies.l3.dev) is not installed: {}",
            health::INSTALL_CRD
        )),
    );
    let (code, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(code, 503);
    assert!(
        body.contains("not installed") && body.contains("kubectl apply -f crds/"),
        "{body}"
    );
    ready.report("latencypolicies *", None);
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);
}
