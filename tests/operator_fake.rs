//! Reconcile and control-cycle behaviour against kube-fake-client (stateful, resourceVersion
//! conflicts, status subresource). The fake has no watch, so the tests fill the reflector
//! stores from the fake's contents and call the cycle and reconcile functions directly.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
use l3::operator::trafficsplit::{
    self, APPLIED_WEIGHTS_ANNOTATION, FAILOVER_LABEL, ORIGINAL_WEIGHTS_ANNOTATION, SplitVersion,
};
use l3::source::{FetchFuture, Outcome, SignalRequest, SignalSource};
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

/// Something to run inside the next fetch: between the cycle's plan and its writes.
type Hook = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The fixed source, plus a hook run inside the next fetch and optional noise.
struct Hooked {
    inner: Arc<FixedSource>,
    hook: Mutex<Option<Hook>>,
    /// Relative noise on latency and RPS (0: none).
    jitter: Mutex<f64>,
    calls: AtomicU64,
}

impl SignalSource for Hooked {
    fn fetch<'a>(&'a self, request: &'a SignalRequest) -> FetchFuture<'a> {
        let hook = self.hook.lock().unwrap().take();
        let jitter = *self.jitter.lock().unwrap();
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            if let Some(h) = hook {
                h.await;
            }
            let mut snap = self.inner.fetch(request).await;
            if jitter > 0.0 {
                let mut n = call;
                for g in &mut snap.groups {
                    for s in g.values_mut() {
                        for o in [&mut s.latency_secs, &mut s.rps] {
                            // A fixed pseudo-random sequence in [-1, 1].
                            n = n
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            let u = ((n >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0;
                            if let Outcome::Value(v) = o {
                                *v *= 1.0 + jitter * u;
                            }
                        }
                    }
                }
            }
            snap
        })
    }
}

struct Harness {
    client: kube::Client,
    op: Arc<Operator>,
    policies: Writer<LatencyPolicy>,
    splits: Writer<DynamicObject>,
    version: SplitVersion,
    source: Arc<FixedSource>,
    hooked: Arc<Hooked>,
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
        let hooked = Arc::new(Hooked {
            inner: source.clone(),
            hook: Mutex::new(None),
            jitter: Mutex::new(0.0),
            calls: AtomicU64::new(0),
        });
        let policies_w: Writer<LatencyPolicy> = Writer::default();
        let splits_w: Writer<DynamicObject> = Writer::new(version.api_resource());
        let op = Arc::new(Operator::new(
            Actuator::new(
                client.clone(),
                version,
                metrics.clone(),
                Duration::from_secs(5),
            ),
            hooked.clone(),
            metrics.clone(),
            leadership,
            vec![policies_w.as_reader()],
            Box::new(StoreLookup::splits(
                splits_w.as_reader(),
                version.api_resource(),
            )),
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
            hooked,
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

    /// Run `hook` inside the next cycle's fetch: after the plan, before any write.
    fn between_plan_and_write(&self, hook: impl Future<Output = ()> + Send + 'static) {
        *self.hooked.hook.lock().unwrap() = Some(Box::pin(hook));
    }

    /// A merge patch of the split, as another writer would send it.
    async fn patch_split(&self, name: &str, patch: Value) {
        self.split_api()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Successful API writes of `kind` so far.
    fn writes(&self, kind: &str) -> u64 {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap();
        let prefix = format!(r#"l3_api_writes_total{{kind="{kind}",result="success"}}"#);
        text.lines()
            .find(|l| l.starts_with(&prefix))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Events with `reason`.
    async fn events(&self, reason: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), NS);
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }

    /// The policy as the API server would hand it to reconcile once it is being deleted.
    async fn deleting(&self, name: &str) -> Arc<LatencyPolicy> {
        let mut p = self.get_policy(name).await;
        p.metadata.deletion_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_800_000_100).unwrap(),
        ));
        Arc::new(p)
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

/// Twenty cycles from T0 that never write the split "web".
async fn never_written(h: &mut Harness) {
    let rv = h.get_split("web").await.resource_version();
    for i in 0..20 {
        assert_eq!(h.cycle(T0 + 5.0 * f64::from(i)).await, 0);
    }
    assert_eq!(h.get_split("web").await.resource_version(), rv);
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
    never_written(&mut h).await;
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

/// One split "web" with `backends`, one enforcing policy "p" on it, reconciled; east fast and
/// west slow.
async fn one_split(version: SplitVersion, backends: &[(&str, Value)]) -> Harness {
    let mut h = Harness::new(
        version,
        vec![split(version, "web", backends)],
        vec![policy("p", "web", 0, |_| {})],
        Leadership::always(),
    )
    .await;
    fast_slow(&h);
    h.reconcile_all().await;
    h
}

fn deletion_restores(h: &Harness) -> impl Future<Output = ()> + Send + 'static {
    let op = h.op.clone();
    let api = h.policy_api();
    async move {
        let mut p = api.get("p").await.unwrap();
        p.metadata.deletion_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_800_000_100).unwrap(),
        ));
        controller::reconcile(Arc::new(p), op).await.unwrap();
    }
}

/// Converge a 1/3 v1alpha1 split, then make a write due (west gets slower).
async fn tuned_with_a_write_due() -> (Harness, f64) {
    let mut h = one_split(
        SplitVersion::V1alpha1,
        &[("web-east", json!("1")), ("web-west", json!("3"))],
    )
    .await;
    let t = h.until_first_write(T0).await;
    h.source.set("web-west", signals(2.0, 1.0, 100.0, 150.0));
    (h, t)
}

fn assert_restored(s: &DynamicObject) {
    assert_eq!(
        weights(s),
        vec![
            ("web-east".into(), json!("1")),
            ("web-west".into(), json!("3"))
        ],
        "the originals are back"
    );
    assert_eq!(annotation(s), None, "and l3's record is gone");
    assert!(!s.annotations().contains_key(APPLIED_WEIGHTS_ANNOTATION));
}

#[tokio::test]
async fn a_deletion_between_plan_and_write_is_final() {
    let (mut h, t) = tuned_with_a_write_due().await;
    h.between_plan_and_write(deletion_restores(&h));
    let out = h.op.cycle(t + 5.0).await;
    assert!(!out.iter().any(|(_, o)| o.weights_written), "{out:?}");
    assert_restored(&h.get_split("web").await);
    assert!(h.get_policy("p").await.finalizers().is_empty());
    // The stores catch up; nothing ever writes the split again.
    h.sync().await;
    for i in 2..6 {
        assert_eq!(h.cycle(t + 5.0 * f64::from(i)).await, 0);
    }
    assert_restored(&h.get_split("web").await);
}

#[tokio::test]
async fn a_switch_to_dry_run_between_plan_and_write_is_final() {
    let (mut h, t) = tuned_with_a_write_due().await;
    let op = h.op.clone();
    let api = h.policy_api();
    h.between_plan_and_write(async move {
        let p = api
            .patch(
                "p",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"mode": "DryRun"}})),
            )
            .await
            .unwrap();
        controller::reconcile(Arc::new(p), op).await.unwrap();
    });
    // The stores still show the policy enforcing: only the lock and the retired mark stop
    // the write planned before the switch.
    h.op.cycle(t + 5.0).await;
    assert_restored(&h.get_split("web").await);
    h.sync().await;
    assert_eq!(h.cycle(t + 10.0).await, 0);
    assert_restored(&h.get_split("web").await);
}

#[tokio::test]
async fn a_write_that_meets_someone_elses_restore_gives_up() {
    // Someone else (an operator running `l3 restore`, a human) restores the split between
    // plan and write: the write gets a 409, and the fresh read has no record of l3's, so it
    // must not be written again, let alone re-adopted.
    let (mut h, t) = tuned_with_a_write_due().await;
    let api = h.split_api();
    h.between_plan_and_write(async move {
        api.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {
                    ORIGINAL_WEIGHTS_ANNOTATION: null, APPLIED_WEIGHTS_ANNOTATION: null}},
                "spec": {"backends": [
                    {"service": "web-east", "weight": "1"},
                    {"service": "web-west", "weight": "3"}]}
            })),
        )
        .await
        .unwrap();
    });
    let out = h.op.cycle(t + 5.0).await;
    assert!(!out[0].1.weights_written && !out[0].1.failed, "{out:?}");
    assert_restored(&h.get_split("web").await);
    h.sync().await;
}

#[tokio::test]
async fn a_foreign_change_is_adopted_with_an_event_and_a_pause() {
    let mut h = one_split(
        SplitVersion::V1alpha2,
        &[("web-east", json!(500)), ("web-west", json!(500))],
    )
    .await;
    let t = h.until_first_write(T0).await;
    // A user drains web-east (the fast one: l3 would never do that).
    let west = weights(&h.get_split("web").await)[1].1.clone();
    h.patch_split(
        "web",
        json!({"spec": {"backends": [
            {"service": "web-east", "weight": 0}, {"service": "web-west", "weight": west}]}}),
    )
    .await;
    h.sync().await;
    let mut written = 0;
    for i in 1..20 {
        written += h.cycle(t + 5.0 * f64::from(i)).await;
    }
    assert_eq!(written, 0, "l3 pauses instead of undoing the drain");
    let after = h.get_split("web").await;
    assert_eq!(weights(&after)[0].1, json!(0), "the drain stands");
    assert_eq!(
        annotation(&after).as_deref(),
        Some(r#"{"web-east":0,"web-west":500}"#),
        "the drain is the new original of web-east, web-west keeps its own"
    );
    let ev = h.events("ForeignWeights").await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].type_.as_deref(), Some("Warning"));
    assert_eq!(
        condition(&h.get_policy("p").await, "Contested"),
        Some(("False".into(), "PausedAfterForeignChange".into()))
    );
    // After the pause l3 tunes again (web-east gets its minimum share back at least).
    let mut resumed = 0;
    for i in 30..50 {
        resumed += h.cycle(t + 5.0 * f64::from(i)).await;
    }
    assert!(resumed > 0, "tuning resumes after the pause");
    assert_eq!(
        condition(&h.get_policy("p").await, "Contested"),
        Some(("False".into(), "NoForeignWriter".into()))
    );
    // Deleting the policy restores what the user set, not what l3 first found.
    let p = h.deleting("p").await;
    controller::reconcile(p, h.op.clone()).await.unwrap();
    assert_eq!(
        weights(&h.get_split("web").await),
        vec![
            ("web-east".into(), json!(0)),
            ("web-west".into(), json!(500))
        ]
    );
}

#[tokio::test]
async fn a_tug_of_war_sets_contested_until_the_spec_changes() {
    let mut h = one_split(
        SplitVersion::V1alpha2,
        &[("web-east", json!(500)), ("web-west", json!(500))],
    )
    .await;
    // A GitOps tool with self-heal puts 500/500 back after every write of l3's.
    let git = json!({"spec": {"backends": [
        {"service": "web-east", "weight": 500}, {"service": "web-west", "weight": 500}]}});
    let mut reverts = 0;
    let mut t = T0;
    while t < T0 + 1200.0 {
        if h.cycle(t).await > 0 {
            h.patch_split("web", git.clone()).await;
            h.sync().await;
            reverts += 1;
        }
        t += 5.0;
    }
    assert_eq!(reverts, 3, "l3 wrote three times, then stopped");
    let p = h.get_policy("p").await;
    assert_eq!(
        condition(&p, "Contested"),
        Some(("True".into(), "RepeatedForeignChanges".into()))
    );
    assert_eq!(
        weights(&h.get_split("web").await),
        vec![
            ("web-east".into(), json!(500)),
            ("web-west".into(), json!(500))
        ]
    );
    assert_eq!(
        annotation(&h.get_split("web").await).as_deref(),
        Some(r#"{"web-east":500,"web-west":500}"#),
        "the other writer's weights are the originals"
    );
    // A new spec (new generation) lets l3 try again.
    let mut p = p;
    p.spec.hysteresis = 0.02;
    p.metadata.generation = Some(2);
    p.metadata.managed_fields = None;
    h.policy_api()
        .replace("p", &Default::default(), &p)
        .await
        .unwrap();
    h.sync().await;
    let mut written = 0;
    for i in 0..20 {
        written += h.cycle(t + 5.0 * f64::from(i)).await;
    }
    assert!(written > 0, "writes resume under the new generation");
    assert_eq!(
        condition(&h.get_policy("p").await, "Contested").unwrap().0,
        "False"
    );
}

#[tokio::test]
async fn a_split_controlled_by_linkerd_failover_is_refused() {
    let mut h = one_split(
        SplitVersion::V1alpha2,
        &[("web-east", json!(500)), ("web-west", json!(500))],
    )
    .await;
    h.patch_split(
        "web",
        json!({"metadata": {"labels": {FAILOVER_LABEL: "linkerd-failover"}}}),
    )
    .await;
    h.sync().await;
    never_written(&mut h).await;
    let p = h.get_policy("p").await;
    assert_eq!(
        condition(&p, "Conflict"),
        Some(("True".into(), "ControlledByFailover".into()))
    );
    assert_eq!(condition(&p, "Ready").unwrap().0, "False");
}

#[tokio::test]
async fn every_quantity_is_a_weight_and_is_restored_as_spelled() {
    let originals = [
        ("web-east", json!("1k")),
        ("web-west", json!("1e3")),
        ("web-central", json!("+1000")),
    ];
    let mut h = one_split(SplitVersion::V1alpha1, &originals).await;
    h.source.set("web-central", signals(0.40, 1.0, 100.0, 40.0));
    h.until_first_write(T0).await;
    let p = h.get_policy("p").await;
    assert_eq!(condition(&p, "TargetFound").unwrap().0, "True");
    let tuned = weights(&h.get_split("web").await);
    assert_ne!(tuned[0].1, json!("1k"));
    controller::reconcile(h.deleting("p").await, h.op.clone())
        .await
        .unwrap();
    let restored = weights(&h.get_split("web").await);
    let expected: Vec<(String, Value)> = originals
        .iter()
        .map(|(s, w)| ((*s).to_owned(), w.clone()))
        .collect();
    assert_eq!(restored, expected);
}

#[tokio::test]
async fn changing_the_target_restores_the_old_split_first() {
    let web = split(
        SplitVersion::V1alpha2,
        "web",
        &[("web-east", json!(1)), ("web-west", json!(3))],
    );
    let api = split(
        SplitVersion::V1alpha2,
        "api",
        &[("web-east", json!(2)), ("web-west", json!(2))],
    );
    let mut h = Harness::new(
        SplitVersion::V1alpha2,
        vec![web, api],
        vec![policy("p", "web", 0, |_| {})],
        Leadership::always(),
    )
    .await;
    fast_slow(&h);
    h.reconcile_all().await;
    let t = h.until_first_write(T0).await;
    assert!(annotation(&h.get_split("web").await).is_some());
    h.policy_api()
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"targetRef": {"kind": "TrafficSplit", "name": "api"}}})),
        )
        .await
        .unwrap();
    h.sync().await;
    // A cycle before reconcile must not write the new target: the finalizer covers the old.
    for i in 1..4 {
        assert_eq!(h.cycle(t + 5.0 * f64::from(i)).await, 0);
    }
    h.reconcile_all().await;
    let old = h.get_split("web").await;
    assert_eq!(
        weights(&old),
        vec![("web-east".into(), json!(1)), ("web-west".into(), json!(3))]
    );
    assert_eq!(annotation(&old), None);
    let p = h.get_policy("p").await;
    assert_eq!(p.adopted_target().as_deref(), Some("api"));
    h.until_first_write(t + 20.0).await;
    assert_eq!(
        annotation(&h.get_split("api").await).as_deref(),
        Some(r#"{"web-east":2,"web-west":2}"#)
    );
}

#[tokio::test]
async fn a_backend_added_after_adoption_is_restored_on_the_original_scale() {
    let mut h = one_split(
        SplitVersion::V1alpha1,
        &[("web-east", json!("1")), ("web-west", json!("1"))],
    )
    .await;
    h.source.set("web-central", signals(0.40, 1.0, 100.0, 40.0));
    let t = h.until_first_write(T0).await;
    // Someone adds web-central at 300 next to l3's weights (which sum to 1000).
    let mut backends = h.get_split("web").await.data["spec"]["backends"].clone();
    backends
        .as_array_mut()
        .unwrap()
        .push(json!({"service": "web-central", "weight": "300"}));
    h.patch_split("web", json!({"spec": {"backends": backends}}))
        .await;
    h.sync().await;
    for i in 1..10 {
        h.cycle(t + 5.0 * f64::from(i)).await;
    }
    assert_eq!(
        h.events("BackendsChanged").await.len(),
        1,
        "the new backend is noticed"
    );
    controller::reconcile(h.deleting("p").await, h.op.clone())
        .await
        .unwrap();
    let restored = weights(&h.get_split("web").await);
    assert_eq!(
        restored,
        vec![
            ("web-east".into(), json!("1")),
            ("web-west".into(), json!("1")),
            ("web-central".into(), json!("600m")),
        ],
        "web-central keeps the 300-in-1300 share its writer gave it, on the 1/1 scale"
    );
}

#[tokio::test]
async fn a_finalizer_never_blocks_on_a_split_that_cannot_be_restored() {
    let gone = split(
        SplitVersion::V1alpha2,
        "gone",
        &[("web-east", json!(1)), ("web-west", json!(3))],
    );
    let mut broken = split(
        SplitVersion::V1alpha2,
        "broken",
        &[("web-east", json!(1)), ("web-west", json!(3))],
    );
    broken.metadata.annotations = Some(
        [(
            ORIGINAL_WEIGHTS_ANNOTATION.to_owned(),
            "{web-east: 1, web-west: 3".to_owned(),
        )]
        .into(),
    );
    let refused = split(
        SplitVersion::V1alpha2,
        "refused",
        &[("web-east", json!(1)), ("web-west", json!(3))],
    );
    // The API server refuses the restore of "refused" (422) for good.
    let builder = ClientBuilder::new().with_interceptor_funcs(
        kube_fake_client::interceptor::Funcs::new().patch(|ctx| {
            if ctx.name == "refused"
                && ctx.patch["metadata"]["annotations"].is_object()
                && ctx.patch["metadata"]["annotations"][ORIGINAL_WEIGHTS_ANNOTATION].is_null()
                && ctx.patch["spec"].is_object()
            {
                return Err(kube_fake_client::Error::InvalidRequest(
                    "spec.backends[0].weight: Invalid value".into(),
                ));
            }
            Ok(None)
        }),
    );
    let mut h = Harness::new_with(
        SplitVersion::V1alpha2,
        vec![gone, broken, refused],
        vec![
            policy("p-gone", "gone", 0, |_| {}),
            policy("p-broken", "broken", 1, |_| {}),
            policy("p-refused", "refused", 2, |_| {}),
        ],
        Leadership::always(),
        builder,
    )
    .await;
    fast_slow(&h);
    h.reconcile_all().await;
    let mut t = T0;
    while annotation(&h.get_split("refused").await).is_none() {
        h.cycle(t).await;
        t += 5.0;
        assert!(t < T0 + 200.0, "refused was never adopted");
    }
    h.split_api()
        .delete("gone", &Default::default())
        .await
        .unwrap();
    for name in ["p-gone", "p-broken", "p-refused"] {
        assert!(
            h.get_policy(name)
                .await
                .finalizers()
                .contains(&FINALIZER.to_string()),
            "{name}"
        );
        controller::reconcile(h.deleting(name).await, h.op.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            h.get_policy(name).await.finalizers().is_empty(),
            "{name}: the finalizer is released"
        );
    }
    let ev = h.events("OriginalsNotRestored").await;
    assert_eq!(ev.len(), 2, "broken and refused: {ev:?}");
    let notes: Vec<String> = ev.iter().filter_map(|e| e.note.clone()).collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("TrafficSplit broken") && n.contains("{web-east: 1, web-west: 3")),
        "the Event carries the originals as found: {notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("TrafficSplit refused") && n.contains(r#""web-east":1"#)),
        "{notes:?}"
    );
}

#[tokio::test]
async fn noisy_signals_make_at_most_two_writes_per_policy_per_minute() {
    let backends = [("web-east", json!(500)), ("web-west", json!(500))];
    let mut h = one_split(SplitVersion::V1alpha2, &backends).await;
    h.source.set("web-east", signals(0.05, 1.0, 100.0, 5.0));
    h.source.set("web-west", signals(0.08, 1.0, 100.0, 8.0));
    *h.hooked.jitter.lock().unwrap() = 0.03;
    // Converge for five minutes.
    let mut t = T0;
    while t < T0 + 300.0 {
        h.cycle(t).await;
        t += 5.0;
    }
    let before = h.writes("weights") + h.writes("status");
    let rv = |p: &LatencyPolicy| p.resource_version().unwrap().parse::<u64>().unwrap();
    let status_before = rv(&h.get_policy("p").await);
    while t < T0 + 900.0 {
        h.cycle(t).await;
        t += 5.0;
    }
    let writes = h.writes("weights") + h.writes("status") - before;
    assert!(
        writes <= 20,
        "{writes} writes in 10 minutes of steady, noisy signals ({} weights in all)",
        h.writes("weights")
    );
    assert!(
        rv(&h.get_policy("p").await) > status_before,
        "the status is still refreshed"
    );
}
