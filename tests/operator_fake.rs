//! Reconcile and control-cycle behaviour against kube-fake-client (stateful, resourceVersion
//! conflicts, status subresource). The fake has no watch, so the tests fill the reflector
//! stores from the fake's contents and call the cycle and reconcile functions directly.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use kube::{CustomResource, ResourceExt};
use kube_fake_client::ClientBuilder;
use l3::operator::actuator::Actuator;
use l3::operator::controller::{self, Operator};
use l3::operator::crd::{FINALIZER, LatencyPolicy, LatencyPolicySpec, Mode};
use l3::operator::engine::StoreLookup;
use l3::operator::leader::Leadership;
use l3::operator::metrics::Metrics;
use l3::operator::testing::{FixedSource, signals};
use l3::operator::trafficsplit::{self, ORIGINAL_WEIGHTS_ANNOTATION, SplitVersion};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Typed stand-ins so that the fake client knows the TrafficSplit kinds; l3 itself uses
/// `DynamicObject`.
mod v1alpha1 {
    use super::*;
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default)]
    #[kube(
        group = "split.smi-spec.io",
        version = "v1alpha1",
        kind = "TrafficSplit",
        namespaced,
        schema = "disabled"
    )]
    pub struct TrafficSplitSpec {
        pub service: String,
    }
}
mod v1alpha2 {
    use super::*;
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default)]
    #[kube(
        group = "split.smi-spec.io",
        version = "v1alpha2",
        kind = "TrafficSplit",
        namespaced,
        schema = "disabled"
    )]
    pub struct TrafficSplitSpec {
        pub service: String,
    }
}

const NS: &str = "shop";

struct Harness {
    client: kube::Client,
    op: Arc<Operator>,
    policies: Writer<LatencyPolicy>,
    splits: Writer<DynamicObject>,
    version: SplitVersion,
    source: Arc<FixedSource>,
    registry: prometheus::Registry,
}

fn policy(
    name: &str,
    split: &str,
    created: i64,
    f: impl FnOnce(&mut LatencyPolicySpec),
) -> LatencyPolicy {
    let mut spec = LatencyPolicySpec::for_split(split);
    f(&mut spec);
    let mut p = LatencyPolicy::new(name, spec);
    p.metadata.namespace = Some(NS.into());
    p.metadata.generation = Some(1);
    p.metadata.creation_timestamp = Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + created).unwrap(),
    ));
    p
}

fn split(version: SplitVersion, name: &str, backends: &[(&str, Value)]) -> DynamicObject {
    trafficsplit::object(version, NS, name, backends)
}

impl Harness {
    async fn new(
        version: SplitVersion,
        splits: Vec<DynamicObject>,
        policies: Vec<LatencyPolicy>,
        leadership: Leadership,
    ) -> Self {
        Self::new_with(version, splits, policies, leadership, ClientBuilder::new()).await
    }

    async fn new_with(
        version: SplitVersion,
        splits: Vec<DynamicObject>,
        policies: Vec<LatencyPolicy>,
        leadership: Leadership,
        builder: ClientBuilder,
    ) -> Self {
        let client = builder
            .with_resource::<v1alpha1::TrafficSplit>()
            .with_resource::<v1alpha2::TrafficSplit>()
            .with_resource::<LatencyPolicy>()
            .with_status_subresource::<LatencyPolicy>()
            .with_runtime_objects(
                splits
                    .iter()
                    .map(|s| serde_json::to_value(s).unwrap())
                    .collect(),
            )
            .with_objects(policies)
            .build()
            .await
            .expect("fake client builds");
        let registry = prometheus::Registry::new();
        let metrics = Metrics::new(&registry).unwrap();
        let source = Arc::new(FixedSource::healthy());
        let policies_w: Writer<LatencyPolicy> = Writer::default();
        let splits_w: Writer<DynamicObject> = Writer::new(version.api_resource());
        let op = Arc::new(Operator::new(
            Actuator::new(
                client.clone(),
                version,
                metrics.clone(),
                Duration::from_secs(5),
            ),
            source.clone(),
            metrics.clone(),
            leadership,
            vec![policies_w.as_reader()],
            Box::new(StoreLookup {
                store: splits_w.as_reader(),
                resource: version.api_resource(),
            }),
            Some(Recorder::new(
                client.clone(),
                Reporter {
                    controller: "l3-test".into(),
                    instance: None,
                },
            )),
        ));
        let mut h = Self {
            client,
            op,
            policies: policies_w,
            splits: splits_w,
            version,
            source,
            registry,
        };
        h.sync().await;
        h
    }

    fn split_api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), NS, &self.version.api_resource())
    }

    fn policy_api(&self) -> Api<LatencyPolicy> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Make the stores equal the fake's contents, as a watch would.
    async fn sync(&mut self) {
        let ps = self
            .policy_api()
            .list(&ListParams::default())
            .await
            .unwrap();
        self.policies.apply_watcher_event(&watcher::Event::Init);
        for p in ps.items {
            self.policies
                .apply_watcher_event(&watcher::Event::InitApply(p));
        }
        self.policies.apply_watcher_event(&watcher::Event::InitDone);
        let ss = self.split_api().list(&ListParams::default()).await.unwrap();
        self.splits.apply_watcher_event(&watcher::Event::Init);
        for s in ss.items {
            self.splits
                .apply_watcher_event(&watcher::Event::InitApply(s));
        }
        self.splits.apply_watcher_event(&watcher::Event::InitDone);
    }

    async fn reconcile_all(&mut self) {
        for p in self
            .policy_api()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
        {
            controller::reconcile(Arc::new(p), self.op.clone())
                .await
                .expect("reconcile");
        }
        self.sync().await;
    }

    /// One cycle at `t`, then the stores catch up.
    async fn cycle(&mut self, t: f64) -> usize {
        let out = self.op.cycle(t).await;
        self.sync().await;
        out.iter().filter(|(_, o)| o.weights_written).count()
    }

    /// Cycles every 5 s from `t` until the first weights write (rate control keeps the split
    /// even while the filtered total rate ramps up from its default of 0); returns the time of
    /// the cycle that wrote.
    async fn until_first_write(&mut self, t: f64) -> f64 {
        for i in 0..40 {
            let now = t + 5.0 * f64::from(i);
            if self.cycle(now).await > 0 {
                return now;
            }
        }
        panic!("no weights write within 40 cycles");
    }

    async fn get_split(&self, name: &str) -> DynamicObject {
        self.split_api().get(name).await.unwrap()
    }

    async fn get_policy(&self, name: &str) -> LatencyPolicy {
        self.policy_api().get(name).await.unwrap()
    }
}

fn weights(s: &DynamicObject) -> Vec<(String, Value)> {
    s.data["spec"]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["service"].as_str().unwrap().to_owned(),
                b["weight"].clone(),
            )
        })
        .collect()
}

fn condition(p: &LatencyPolicy, type_: &str) -> Option<(String, String)> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn annotation(s: &DynamicObject) -> Option<String> {
    s.annotations().get(ORIGINAL_WEIGHTS_ANNOTATION).cloned()
}

fn fast_slow(h: &Harness) {
    h.source.set("web-east", signals(0.02, 1.0, 100.0, 2.0));
    h.source.set("web-west", signals(0.40, 1.0, 100.0, 40.0));
}

const T0: f64 = 1_800_000_000.0;

#[tokio::test]
async fn adoption_records_original_weights_once_and_keeps_their_form() {
    let s = split(
        SplitVersion::V1alpha1,
        "web",
        &[("web-east", json!("500m")), ("web-west", json!("500m"))],
    );
    let mut h = Harness::new(
        SplitVersion::V1alpha1,
        vec![s],
        vec![policy("p", "web", 0, |_| {})],
        Leadership::always(),
    )
    .await;
    fast_slow(&h);
    h.reconcile_all().await;
    assert!(
        h.get_policy("p")
            .await
            .finalizers()
            .contains(&FINALIZER.to_string())
    );
    let t = h.until_first_write(T0).await;
    let after = h.get_split("web").await;
    assert_eq!(
        annotation(&after).as_deref(),
        Some(r#"{"web-east":"500m","web-west":"500m"}"#)
    );
    let w = weights(&after);
    let east: u32 = w[0]
        .1
        .as_str()
        .unwrap()
        .trim_end_matches('m')
        .parse()
        .unwrap();
    let west: u32 = w[1]
        .1
        .as_str()
        .unwrap()
        .trim_end_matches('m')
        .parse()
        .unwrap();
    assert_eq!(east + west, 1000, "{w:?}");
    assert!(east > west, "traffic moves to the fast backend: {w:?}");
    assert!(
        w[0].1.as_str().unwrap().ends_with('m'),
        "the Quantity form is kept: {w:?}"
    );
    // Later writes never touch the record.
    let mut writes = 0;
    for i in 1..10 {
        writes += h.cycle(t + 5.0 * f64::from(i)).await;
    }
    assert!(
        writes >= 1,
        "weights keep moving while the filters converge"
    );
    assert_eq!(
        annotation(&h.get_split("web").await).as_deref(),
        Some(r#"{"web-east":"500m","web-west":"500m"}"#)
    );
    let p = h.get_policy("p").await;
    assert_eq!(
        condition(&p, "Ready"),
        Some(("True".into(), "WeightsComputed".into()))
    );
    assert_eq!(condition(&p, "TargetFound").unwrap().0, "True");
    assert_eq!(condition(&p, "MetricsAvailable").unwrap().0, "True");
    let st = p.status.clone().unwrap();
    assert_eq!(st.observed_generation, p.metadata.generation);
    assert!(st.last_weight_update.is_some());
    assert_eq!(st.backends.len(), 2);
    assert!(st.backends[0].latency_seconds < st.backends[1].latency_seconds);
}

#[tokio::test]
async fn steady_state_makes_no_writes() {
    let s = split(
        SplitVersion::V1alpha2,
        "web",
        &[("web-east", json!(500)), ("web-west", json!(500))],
    );
    let mut h = Harness::new(
        SplitVersion::V1alpha2,
        vec![s],
        vec![policy("p", "web", 0, |_| {})],
        Leadership::always(),
    )
    .await;
    h.reconcile_all().await;
    // Identical backends: 50/50 is already right.
    let rv = h.get_split("web").await.resource_version();
    for i in 0..10 {
        assert_eq!(h.cycle(T0 + 5.0 * f64::from(i)).await, 0);
    }
    assert_eq!(
        h.get_split("web").await.resource_version(),
        rv,
        "the split was never written"
    );
    // Different backends: writes while converging, then none.
    fast_slow(&h);
    let mut last = Vec::new();
    for i in 10..60 {
        last.push(h.cycle(T0 + 5.0 * f64::from(i)).await);
    }
    assert!(last[..10].iter().sum::<usize>() > 0);
    assert_eq!(
        last[40..].iter().sum::<usize>(),
        0,
        "no writes once converged: {last:?}"
    );
    // Status too stops changing once the filters have converged (until lastSampleTime is a
    // minute stale).
    let rv = |p: &LatencyPolicy| p.resource_version().unwrap().parse::<u64>().unwrap();
    let before = rv(&h.get_policy("p").await);
    for i in 60..70 {
        h.cycle(T0 + 5.0 * f64::from(i)).await;
    }
    let after = rv(&h.get_policy("p").await);
    assert!(
        after <= before + 1,
        "at most one lastSampleTime refresh in 50 s, got {} writes",
        after - before
    );
}

#[tokio::test]
async fn dry_run_never_writes_the_split() {
    let s = split(
        SplitVersion::V1alpha1,
        "web",
        &[("web-east", json!(1)), ("web-west", json!(1))],
    );
    let p = policy("p", "web", 0, |s| s.mode = Mode::DryRun);
    let mut h = Harness::new(
        SplitVersion::V1alpha1,
        vec![s],
        vec![p],
        Leadership::always(),
    )
    .await;
    fast_slow(&h);
    h.reconcile_all().await;
    let rv = h.get_split("web").await.resource_version();
    for i in 0..20 {
        assert_eq!(h.cycle(T0 + 5.0 * f64::from(i)).await, 0);
    }
    assert_eq!(h.get_split("web").await.resource_version(), rv);
    let p = h.get_policy("p").await;
    assert!(p.finalizers().is_empty());
    assert_eq!(
        condition(&p, "Ready"),
        Some(("True".into(), "DryRun".into()))
    );
    let st = p.status.unwrap();
    assert!(
        st.backends[0].weight > st.backends[1].weight,
        "DryRun still reports the weights"
    );
}

#[tokio::test]
async fn a_follower_never_writes() {
    let s = split(
        SplitVersion::V1alpha1,
        "web",
        &[("web-east", json!(1)), ("web-west", json!(1))],
    );
    let mut h = Harness::new(
        SplitVersion::V1alpha1,
        vec![s],
        vec![policy("p", "web", 0, |_| {})],
        Leadership::follower(),
    )
    .await;
    fast_slow(&h);
    h.reconcile_all().await;
    let srv = h.get_split("web").await.resource_version();
    let prv = h.get_policy("p").await.resource_version();
    for i in 0..5 {
        assert_eq!(h.cycle(T0 + 5.0 * f64::from(i)).await, 0);
    }
    assert_eq!(h.get_split("web").await.resource_version(), srv);
    assert_eq!(h.get_policy("p").await.resource_version(), prv);
    assert!(h.get_policy("p").await.status.is_none());
    // ...but its filters are warm: the backend series exist.
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&h.registry.gather())
        .unwrap();
    assert!(
        text.contains(
            r#"l3_backend_latency_seconds{backend="web-east",namespace="shop",policy="p"}"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn deleting_the_policy_restores_the_original_weights() {
    let s = split(
        SplitVersion::V1alpha1,
        "web",
        &[("web-east", json!("1")), ("web-west", json!("3"))],
    );
    let mut h = Harness::new(
        SplitVersion::V1alpha1,
        vec![s],
        vec![policy("p", "web", 0, |_| {})],
        Leadership::always(),
    )
    .await;
    fast_slow(&h);
    h.reconcile_all().await;
    h.until_first_write(T0).await;
    assert_ne!(weights(&h.get_split("web").await)[0].1, json!("1"));
    // The API server sets deletionTimestamp and keeps the object while the finalizer is on.
    let mut p = h.get_policy("p").await;
    p.metadata.deletion_timestamp = Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(1_800_000_100).unwrap(),
    ));
    controller::reconcile(Arc::new(p), h.op.clone())
        .await
        .unwrap();
    let after = h.get_split("web").await;
    assert_eq!(
        weights(&after),
        vec![
            ("web-east".into(), json!("1")),
            ("web-west".into(), json!("3"))
        ]
    );
    assert_eq!(annotation(&after), None, "the record goes with the policy");
    assert!(
        h.get_policy("p").await.finalizers().is_empty(),
        "the finalizer is released"
    );
}

#[tokio::test]
async fn switching_to_dry_run_restores_the_original_weights() {
    let s = split(
        SplitVersion::V1alpha2,
        "web",
        &[("web-east", json!(50)), ("web-west", json!(50))],
    );
    let mut h = Harness::new(
        SplitVersion::V1alpha2,
        vec![s],
        vec![policy("p", "web", 0, |_| {})],
        Leadership::always(),
    )
    .await;
    fast_slow(&h);
    h.reconcile_all().await;
    let t = h.until_first_write(T0).await;
    h.policy_api()
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": "DryRun"}})),
        )
        .await
        .unwrap();
    h.reconcile_all().await;
    let after = h.get_split("web").await;
    assert_eq!(
        weights(&after),
        vec![
            ("web-east".into(), json!(50)),
            ("web-west".into(), json!(50))
        ]
    );
    assert_eq!(h.cycle(t + 5.0).await, 0);
}

#[tokio::test]
async fn a_conflict_is_retried_on_a_fresh_read() {
    let s = split(
        SplitVersion::V1alpha1,
        "web",
        &[("web-east", json!(1)), ("web-west", json!(1))],
    );
    let mut h = Harness::new(
        SplitVersion::V1alpha1,
        vec![s],
        vec![policy("p", "web", 0, |_| {})],
        Leadership::always(),
    )
    .await;
    fast_slow(&h);
    h.reconcile_all().await;
    let t = h.until_first_write(T0).await;
    // Someone else changes the split after the store saw it: the store is now stale.
    h.split_api()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "shop"}}})),
        )
        .await
        .unwrap();
    h.source.set("web-west", signals(2.0, 1.0, 100.0, 150.0));
    let out = h.op.cycle(t + 5.0).await;
    assert!(out[0].1.weights_written && !out[0].1.failed, "{out:?}");
    let after = h.get_split("web").await;
    assert_eq!(
        after.labels().get("team").map(String::as_str),
        Some("shop"),
        "the other writer's change survives"
    );
    assert_ne!(weights(&after)[0].1, json!(1));
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&h.registry.gather())
        .unwrap();
    assert!(
        text.contains(r#"l3_api_writes_total{kind="weights",result="error"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"l3_api_writes_total{kind="weights",result="success"} 2"#),
        "{text}"
    );
}

#[tokio::test]
async fn two_policies_on_one_split_refuse_the_newer() {
    let s = split(
        SplitVersion::V1alpha1,
        "web",
        &[("web-east", json!(1)), ("web-west", json!(1))],
    );
    let old = policy("old", "web", 0, |_| {});
    let new = policy("new", "web", 60, |_| {});
    let mut h = Harness::new(
        SplitVersion::V1alpha1,
        vec![s],
        vec![old, new],
        Leadership::always(),
    )
    .await;
    fast_slow(&h);
    h.reconcile_all().await;
    h.until_first_write(T0).await;
    let newer = h.get_policy("new").await;
    assert_eq!(
        condition(&newer, "Conflict"),
        Some(("True".into(), "SplitClaimed".into()))
    );
    assert_eq!(condition(&newer, "Ready").unwrap().0, "False");
    assert!(
        newer.finalizers().is_empty(),
        "a refused policy does not adopt the split"
    );
    let older = h.get_policy("old").await;
    assert_eq!(condition(&older, "Conflict").unwrap().0, "False");
    assert_eq!(condition(&older, "Ready").unwrap().0, "True");
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&h.registry.gather())
        .unwrap();
    assert!(
        text.contains(r#"l3_policies{condition="Conflict",status="True"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"l3_policies{condition="Ready",status="True"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn an_invalid_spec_gives_a_condition_and_no_action() {
    let s = split(
        SplitVersion::V1alpha1,
        "web",
        &[("web-east", json!(1)), ("web-west", json!(1))],
    );
    let p = policy("p", "web", 0, |s| s.query_window = "1500ms".into());
    let mut h = Harness::new(
        SplitVersion::V1alpha1,
        vec![s],
        vec![p],
        Leadership::always(),
    )
    .await;
    fast_slow(&h);
    h.reconcile_all().await;
    let rv = h.get_split("web").await.resource_version();
    assert_eq!(h.cycle(T0).await, 0);
    assert_eq!(h.get_split("web").await.resource_version(), rv);
    let p = h.get_policy("p").await;
    let c = p
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .clone();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(c.message.contains("spec.queryWindow"), "{}", c.message);
    assert!(p.finalizers().is_empty());
}

#[tokio::test]
async fn a_missing_split_is_reported_and_other_policies_go_on() {
    let s = split(
        SplitVersion::V1alpha1,
        "web",
        &[("web-east", json!(1)), ("web-west", json!(1))],
    );
    let good = policy("good", "web", 0, |_| {});
    let lost = policy("lost", "nope", 0, |_| {});
    let mut h = Harness::new(
        SplitVersion::V1alpha1,
        vec![s],
        vec![good, lost],
        Leadership::always(),
    )
    .await;
    fast_slow(&h);
    h.reconcile_all().await;
    h.until_first_write(T0).await;
    assert_eq!(
        condition(&h.get_policy("lost").await, "TargetFound"),
        Some(("False".into(), "NotFound".into()))
    );
}

#[tokio::test]
async fn prometheus_down_keeps_the_weights_and_says_why() {
    let s = split(
        SplitVersion::V1alpha2,
        "web",
        &[("web-east", json!(500)), ("web-west", json!(500))],
    );
    let mut h = Harness::new(
        SplitVersion::V1alpha2,
        vec![s],
        vec![policy("p", "web", 0, |_| {})],
        Leadership::always(),
    )
    .await;
    fast_slow(&h);
    h.reconcile_all().await;
    let t = h.until_first_write(T0).await;
    let before = weights(&h.get_split("web").await);
    h.source.set_down(true);
    for i in 1..20 {
        assert_eq!(
            h.cycle(t + 5.0 * f64::from(i)).await,
            0,
            "no write while blind"
        );
    }
    assert_eq!(
        weights(&h.get_split("web").await),
        before,
        "weights neither zeroed nor reset to equal"
    );
    let p = h.get_policy("p").await;
    assert_eq!(
        condition(&p, "MetricsAvailable"),
        Some(("False".into(), "QueryFailed".into()))
    );
    assert_eq!(
        condition(&p, "Ready"),
        Some(("False".into(), "MetricsUnavailable".into()))
    );
    // One Warning Event per transition, not one per blind cycle.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(h.client.clone(), NS);
    let events = events.list(&ListParams::default()).await.unwrap().items;
    let blind: Vec<_> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("QueryFailed"))
        .collect();
    assert_eq!(blind.len(), 1, "{events:?}");
    assert_eq!(blind[0].type_.as_deref(), Some("Warning"));
    assert!(
        blind[0]
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("MetricsAvailable is False")
    );
    // Back up: one more transition, one more Event.
    h.source.set_down(false);
    h.cycle(t + 100.0).await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(h.client.clone(), NS);
    let events = events.list(&ListParams::default()).await.unwrap().items;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("QueriesSucceeded")),
        "{events:?}"
    );
    // The filters decayed toward the defaults meanwhile (latency default 5 s).
    let east = p.status.unwrap().backends[0].latency_seconds;
    // (read before recovery: the status above was fetched while blind)
    assert!(east > 0.5, "{east}");
}

#[tokio::test]
async fn a_broken_policy_backs_off_and_never_stops_the_others() {
    let good = split(
        SplitVersion::V1alpha2,
        "web",
        &[("web-east", json!(500)), ("web-west", json!(500))],
    );
    let bad = split(
        SplitVersion::V1alpha2,
        "broken",
        &[("web-east", json!(500)), ("web-west", json!(500))],
    );
    let builder = ClientBuilder::new().with_interceptor_funcs(
        kube_fake_client::interceptor::Funcs::new().patch(|ctx| {
            if ctx.name == "broken" {
                return Err(kube_fake_client::Error::Internal("injected failure".into()));
            }
            Ok(None)
        }),
    );
    let mut h = Harness::new_with(
        SplitVersion::V1alpha2,
        vec![good, bad],
        vec![
            policy("p-web", "web", 0, |_| {}),
            policy("p-broken", "broken", 1, |_| {}),
        ],
        Leadership::always(),
        builder,
    )
    .await;
    fast_slow(&h);
    h.reconcile_all().await;
    let mut good_writes = 0;
    for i in 0..40 {
        good_writes += h.cycle(T0 + 5.0 * f64::from(i)).await;
    }
    assert!(good_writes >= 1, "the healthy policy kept working");
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&h.registry.gather())
        .unwrap();
    let errors: u64 = text
        .lines()
        .find(|l| l.starts_with(r#"l3_api_writes_total{kind="weights",result="error"}"#))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .expect("failed weights writes are counted");
    // Without backoff the broken split would be retried on nearly every one of the 40 cycles;
    // with 10 s, 20 s, 40 s, 80 s pauses it is tried a handful of times.
    assert!((1..=6).contains(&errors), "{errors} failed attempts");
    assert_eq!(
        condition(&h.get_policy("p-web").await, "Ready").unwrap().0,
        "True"
    );
}
