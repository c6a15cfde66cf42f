//! The query-window rule as the operator reports it: the scrape interval and the window used
//! appear in the status, and an explicit window shorter than two scrape intervals gives
//! `MetricsAvailable=False`, reason `WindowTooShort`, with both numbers, and no write.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DynamicObject;
use l3::operator::crd::{FINALIZER, LatencyPolicy, LatencyPolicySpec};
use l3::operator::engine::{Decision, Engine, Key};
use l3::operator::metrics::Metrics;
use l3::operator::testing::FixedSource;
use l3::operator::trafficsplit::{self, SplitVersion};
use l3::source::{QueryWindow, SignalSource, WindowInfo};
use serde_json::json;

fn policy(window: &str) -> Arc<LatencyPolicy> {
    let mut spec = LatencyPolicySpec::for_split("web");
    spec.query_window = window.into();
    let mut p = LatencyPolicy::new("p", spec);
    p.metadata.namespace = Some("shop".into());
    p.metadata.generation = Some(1);
    p.metadata.finalizers = Some(vec![FINALIZER.into()]);
    p.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    Arc::new(p)
}

/// One cycle at `t` whose source reports `window` for the (single) group.
async fn cycle(engine: &mut Engine, t: f64, p: Arc<LatencyPolicy>, window: WindowInfo) -> Decision {
    let mut splits: HashMap<Key, Arc<DynamicObject>> = HashMap::new();
    splits.insert(
        ("shop".into(), "web".into()),
        Arc::new(trafficsplit::object(
            SplitVersion::V1alpha2,
            "shop",
            "web",
            &[("web-a", json!(1)), ("web-b", json!(1))],
        )),
    );
    let plan = engine.plan(t, &[p], &splits);
    let mut snap = FixedSource::healthy().fetch(&plan.request).await;
    snap.windows = vec![window];
    engine.decide(t, plan, &snap).pop().expect("one decision")
}

fn condition(d: &Decision, type_: &str) -> (String, String, String) {
    let c = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("{type_} missing: {:?}", d.status.conditions));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[tokio::test]
async fn a_window_shorter_than_two_scrapes_is_refused_with_both_numbers() {
    let mut engine = Engine::new(Metrics::new(&prometheus::Registry::new()).unwrap());
    let p = policy("10s");
    assert_eq!(p.spec.settings().unwrap().window, QueryWindow::Secs(10));
    let d = cycle(
        &mut engine,
        1000.0,
        p,
        WindowInfo {
            scrape_interval_secs: Some(10.0),
            window_secs: 10,
            too_short: true,
        },
    )
    .await;
    let (status, reason, message) = condition(&d, "MetricsAvailable");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "WindowTooShort")
    );
    assert!(
        message.contains("queryWindow 10s") && message.contains("scrape interval is 10s"),
        "{message}"
    );
    assert!(message.contains("at least 20s"), "{message}");
    assert_eq!(condition(&d, "Ready").0, "False");
    assert!(d.write.is_none(), "nothing is written on untrusted windows");
    assert_eq!(d.status.scrape_interval.as_deref(), Some("10s"));
    assert_eq!(d.status.query_window.as_deref(), Some("10s"));
}

#[tokio::test]
async fn auto_reports_the_learned_scrape_interval_and_the_window() {
    let mut engine = Engine::new(Metrics::new(&prometheus::Registry::new()).unwrap());
    let p = policy("auto");
    assert_eq!(p.spec.settings().unwrap().window, QueryWindow::Auto);
    let d = cycle(
        &mut engine,
        1000.0,
        p,
        WindowInfo {
            scrape_interval_secs: Some(10.0),
            window_secs: 40,
            too_short: false,
        },
    )
    .await;
    assert_eq!(condition(&d, "MetricsAvailable").0, "True");
    assert_eq!(d.status.scrape_interval.as_deref(), Some("10s"));
    assert_eq!(d.status.query_window.as_deref(), Some("40s"));
    // The default spec is `auto`.
    assert_eq!(
        LatencyPolicySpec::for_split("x").settings().unwrap().window,
        QueryWindow::Auto
    );
}
