//! Request-exact tests with a tower-test mock API server (the controller-rs pattern): the exact
//! method, path and body of every write l3 makes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use l3::operator::actuator::Actuator;
use l3::operator::controller::{self, Operator};
use l3::operator::crd::{FINALIZER, LatencyPolicy, LatencyPolicySpec};
use l3::operator::engine::StoreLookup;
use l3::operator::leader::Leadership;
use l3::operator::metrics::Metrics;
use l3::operator::testing::{FixedSource, signals};
use l3::operator::trafficsplit::{self, SplitVersion};
use serde_json::{Value, json};

/// One request the mock API server saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    body: Value,
}

/// Read a request and log it.
async fn record(req: Request<Body>, log: &Mutex<Vec<Seen>>) -> Seen {
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let bytes = req
        .into_body()
        .collect_bytes()
        .await
        .unwrap_or_default()
        .to_vec();
    let seen = Seen {
        method,
        uri,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    };
    log.lock().unwrap().push(seen.clone());
    seen
}

/// A scripted API server: records every request and answers it like the API server would.
fn mock_api(
    split: DynamicObject,
    policy: LatencyPolicy,
    conflicts: usize,
) -> (kube::Client, Arc<Mutex<Vec<Seen>>>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut conflicts_left = conflicts;
        let mut split = split;
        while let Some((req, send)) = handle.next_request().await {
            let Seen { method, uri, .. } = record(req, &log).await;
            let (code, reply) = if uri.contains("/trafficsplits/") && method == "PATCH" {
                if conflicts_left > 0 {
                    conflicts_left -= 1;
                    // Someone else wrote the split meanwhile.
                    split.metadata.resource_version = Some("101".into());
                    split.labels_mut().insert("team".into(), "shop".into());
                    (
                        StatusCode::CONFLICT,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": "Conflict", "code": 409,
                               "message": "the object has been modified"}),
                    )
                } else {
                    (StatusCode::OK, serde_json::to_value(&split).unwrap())
                }
            } else if uri.contains("/trafficsplits/") && method == "GET" {
                (StatusCode::OK, serde_json::to_value(&split).unwrap())
            } else {
                (StatusCode::OK, serde_json::to_value(&policy).unwrap())
            };
            let resp = Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            send.send_response(resp);
        }
    });
    (kube::Client::new(svc, "default"), seen)
}

struct Setup {
    op: Arc<Operator>,
    seen: Arc<Mutex<Vec<Seen>>>,
    _writers: (Writer<LatencyPolicy>, Writer<DynamicObject>),
}

fn setup(
    version: SplitVersion,
    weights: [Value; 2],
    leadership: Leadership,
    conflicts: usize,
) -> Setup {
    setup_with(version, weights, leadership, conflicts, &[])
}

/// [`setup`] with annotations on the split.
fn setup_with(
    version: SplitVersion,
    weights: [Value; 2],
    leadership: Leadership,
    conflicts: usize,
    annotations: &[(&str, &str)],
) -> Setup {
    let mut split = trafficsplit::object(
        version,
        "shop",
        "web",
        &[
            ("web-east", weights[0].clone()),
            ("web-west", weights[1].clone()),
        ],
    );
    split.metadata.resource_version = Some("100".into());
    for (k, v) in annotations {
        split
            .annotations_mut()
            .insert((*k).to_owned(), (*v).to_owned());
    }
    let mut policy = LatencyPolicy::new("p", LatencyPolicySpec::for_split("web"));
    policy.metadata.namespace = Some("shop".into());
    policy.metadata.generation = Some(3);
    policy.metadata.finalizers = Some(vec![FINALIZER.into()]);
    let (client, seen) = mock_api(split.clone(), policy.clone(), conflicts);
    let mut pw: Writer<LatencyPolicy> = Writer::default();
    pw.apply_watcher_event(&watcher::Event::Apply(policy));
    let mut sw: Writer<DynamicObject> = Writer::new(version.api_resource());
    sw.apply_watcher_event(&watcher::Event::Apply(split));
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).unwrap();
    let source = Arc::new(FixedSource::healthy());
    source.set("web-east", signals(0.02, 1.0, 100.0, 2.0));
    source.set("web-west", signals(0.40, 1.0, 100.0, 40.0));
    let op = Arc::new(Operator::new(
        Actuator::new(client, version, metrics.clone(), Duration::from_secs(5)),
        source,
        metrics,
        leadership,
        vec![pw.as_reader()],
        Box::new(StoreLookup::splits(sw.as_reader(), version.api_resource())),
        None,
    ));
    Setup {
        op,
        seen,
        _writers: (pw, sw),
    }
}

const T0: f64 = 1_800_000_000.0;

/// Run cycles until the first TrafficSplit write; return every request seen.
async fn until_split_write(s: &Setup) -> Vec<Seen> {
    for i in 0..40 {
        s.op.cycle(T0 + 5.0 * f64::from(i)).await;
        let seen = s.seen.lock().unwrap().clone();
        if seen.iter().any(|r| r.uri.contains("/trafficsplits/")) {
            return seen;
        }
    }
    panic!("no TrafficSplit write within 40 cycles");
}

/// The weights l3 reported in the status patch that followed the split write.
fn status_weights(seen: &[Seen]) -> Vec<u32> {
    let status = seen
        .iter()
        .rev()
        .find(|r| r.uri.ends_with("/status?&fieldManager=l3-operator"))
        .unwrap_or_else(|| {
            panic!(
                "a status patch follows the split write: {:?}",
                seen.iter().map(|r| &r.uri).collect::<Vec<_>>()
            )
        });
    status.body["status"]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["weight"].as_u64().unwrap() as u32)
        .collect()
}

#[tokio::test]
async fn v1alpha1_patch_body_is_exact_and_keeps_the_quantity_form() {
    let s = setup(
        SplitVersion::V1alpha1,
        [json!("500m"), json!("500m")],
        Leadership::always(),
        0,
    );
    let seen = until_split_write(&s).await;
    let writes: Vec<&Seen> = seen
        .iter()
        .filter(|r| r.uri.contains("/trafficsplits/"))
        .collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    let w = status_weights(&seen);
    assert_eq!(w.iter().sum::<u32>(), 1000);
    assert!(w[0] > w[1], "{w:?}");
    assert_eq!(writes[0].method, "PATCH");
    assert_eq!(
        writes[0].uri,
        "/apis/split.smi-spec.io/v1alpha1/namespaces/shop/trafficsplits/web?&fieldManager=l3-operator"
    );
    assert_eq!(
        writes[0].body,
        json!({
            "metadata": {
                "resourceVersion": "100",
                "annotations": {
                    "l3.dev/original-weights": r#"{"web-east":"500m","web-west":"500m"}"#,
                    "l3.dev/applied-weights": format!(r#"{{"web-east":"{}m","web-west":"{}m"}}"#, w[0], w[1]),
                }
            },
            "spec": {"backends": [
                {"service": "web-east", "weight": format!("{}m", w[0])},
                {"service": "web-west", "weight": format!("{}m", w[1])}
            ]}
        })
    );
    // Every other request was a status patch of the policy, with observedGeneration.
    for r in seen.iter().filter(|r| !r.uri.contains("/trafficsplits/")) {
        assert_eq!(r.method, "PATCH");
        assert_eq!(
            r.uri,
            "/apis/l3.dev/v1alpha1/namespaces/shop/latencypolicies/p/status?&fieldManager=l3-operator"
        );
        assert_eq!(r.body["status"]["observedGeneration"], 3);
    }
}

#[tokio::test]
async fn v1alpha2_patch_body_is_exact_with_integer_weights() {
    let s = setup(
        SplitVersion::V1alpha2,
        [json!(1), json!(1)],
        Leadership::always(),
        0,
    );
    let seen = until_split_write(&s).await;
    let write = seen
        .iter()
        .find(|r| r.uri.contains("/trafficsplits/"))
        .unwrap();
    let w = status_weights(&seen);
    assert_eq!(
        write.uri,
        "/apis/split.smi-spec.io/v1alpha2/namespaces/shop/trafficsplits/web?&fieldManager=l3-operator"
    );
    assert_eq!(
        write.body,
        json!({
            "metadata": {
                "resourceVersion": "100",
                "annotations": {
                    "l3.dev/original-weights": r#"{"web-east":1,"web-west":1}"#,
                    "l3.dev/applied-weights": format!(r#"{{"web-east":{},"web-west":{}}}"#, w[0], w[1]),
                }
            },
            "spec": {"backends": [
                {"service": "web-east", "weight": w[0]},
                {"service": "web-west", "weight": w[1]}
            ]}
        })
    );
}

#[tokio::test]
async fn a_409_is_retried_on_a_fresh_read() {
    // A split l3 adopted earlier (a 409 on the very first, adopting write is not retried: the
    // fresh read carries no record, and a retry must never adopt).
    let s = setup_with(
        SplitVersion::V1alpha2,
        [json!(500), json!(500)],
        Leadership::always(),
        1,
        &[
            ("l3.dev/original-weights", r#"{"web-east":1,"web-west":1}"#),
            (
                "l3.dev/applied-weights",
                r#"{"web-east":500,"web-west":500}"#,
            ),
        ],
    );
    let seen = until_split_write(&s).await;
    let split_reqs: Vec<(String, Value)> = seen
        .iter()
        .filter(|r| r.uri.contains("/trafficsplits/"))
        .map(|r| {
            (
                r.method.clone(),
                r.body["metadata"]["resourceVersion"].clone(),
            )
        })
        .collect();
    assert_eq!(
        split_reqs,
        vec![
            ("PATCH".into(), json!("100")),
            ("GET".into(), Value::Null),
            ("PATCH".into(), json!("101")),
        ]
    );
}

#[tokio::test]
async fn a_409_on_the_adopting_write_is_not_retried() {
    let s = setup(
        SplitVersion::V1alpha2,
        [json!(500), json!(500)],
        Leadership::always(),
        1,
    );
    let seen = until_split_write(&s).await;
    let split_reqs: Vec<String> = seen
        .iter()
        .filter(|r| r.uri.contains("/trafficsplits/"))
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(split_reqs, ["PATCH", "GET"], "no second, adopting PATCH");
}

/// An API server that forbids every TrafficSplit request (l3's RoleBinding went with a
/// terminating namespace) and accepts policy patches and Events.
fn forbidding_api(policy: LatencyPolicy) -> (kube::Client, Arc<Mutex<Vec<Seen>>>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let Seen { uri, body, .. } = record(req, &log).await;
            let (code, reply) = if uri.contains("/trafficsplits/") {
                (
                    StatusCode::FORBIDDEN,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "Forbidden", "code": 403,
                           "message": "trafficsplits is forbidden"}),
                )
            } else if uri.contains("/events") {
                (StatusCode::CREATED, body)
            } else {
                (StatusCode::OK, serde_json::to_value(&policy).unwrap())
            };
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
    });
    (kube::Client::new(svc, "default"), seen)
}

#[tokio::test]
async fn a_forbidden_split_releases_the_finalizer_with_the_originals_in_an_event() {
    let mut policy = LatencyPolicy::new("p", LatencyPolicySpec::for_split("web"));
    policy.metadata.namespace = Some("shop".into());
    policy.metadata.finalizers = Some(vec![FINALIZER.into()]);
    policy.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        ));
    let (client, seen) = forbidding_api(policy.clone());
    // The store still has the split as last watched, with its originals.
    let mut split = trafficsplit::object(
        SplitVersion::V1alpha2,
        "shop",
        "web",
        &[("web-east", json!(700)), ("web-west", json!(300))],
    );
    split.annotations_mut().insert(
        "l3.dev/original-weights".into(),
        r#"{"web-east":1,"web-west":3}"#.into(),
    );
    let mut sw: Writer<DynamicObject> = Writer::new(SplitVersion::V1alpha2.api_resource());
    sw.apply_watcher_event(&watcher::Event::Apply(split));
    let mut pw: Writer<LatencyPolicy> = Writer::default();
    pw.apply_watcher_event(&watcher::Event::Apply(policy.clone()));
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    let op = Arc::new(Operator::new(
        Actuator::new(
            client.clone(),
            SplitVersion::V1alpha2,
            metrics.clone(),
            Duration::from_secs(5),
        ),
        Arc::new(FixedSource::healthy()),
        metrics,
        Leadership::always(),
        vec![pw.as_reader()],
        Box::new(StoreLookup::splits(
            sw.as_reader(),
            SplitVersion::V1alpha2.api_resource(),
        )),
        Some(Recorder::new(
            client,
            Reporter {
                controller: "l3-test".into(),
                instance: None,
            },
        )),
    ));
    controller::reconcile(Arc::new(policy), op)
        .await
        .expect("a 403 does not block the deletion");
    let seen = seen.lock().unwrap().clone();
    let release = seen
        .iter()
        .find(|r| r.uri.contains("/latencypolicies/p?"))
        .unwrap_or_else(|| panic!("the finalizer is released: {seen:?}"));
    assert_eq!(release.body["metadata"]["finalizers"], json!([]));
    let event = seen
        .iter()
        .find(|r| r.uri.contains("/events"))
        .unwrap_or_else(|| panic!("an Event is recorded: {seen:?}"));
    assert_eq!(event.body["reason"], "OriginalsNotRestored");
    let note = event.body["note"].as_str().unwrap();
    assert!(note.contains(r#"{"web-east":1,"web-west":3}"#), "{note}");
    assert!(note.contains("403"), "{note}");
}

#[tokio::test]
async fn a_follower_sends_no_request_at_all() {
    let s = setup(
        SplitVersion::V1alpha1,
        [json!(1), json!(1)],
        Leadership::follower(),
        0,
    );
    for i in 0..30 {
        s.op.cycle(T0 + 5.0 * f64::from(i)).await;
    }
    assert!(
        s.seen.lock().unwrap().is_empty(),
        "{:?}",
        s.seen.lock().unwrap()
    );
}

#[tokio::test]
async fn a_lagging_store_does_not_cause_repeated_writes() {
    // The mock never feeds the store, so it shows the split as it was before l3's first write
    // for the whole test: l3 must trust its own write, not rewrite on every cycle.
    let s = setup(
        SplitVersion::V1alpha2,
        [json!(500), json!(500)],
        Leadership::always(),
        0,
    );
    until_split_write(&s).await;
    let count = |s: &Setup| {
        s.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.uri.contains("/trafficsplits/"))
            .count()
    };
    for i in 40..60 {
        s.op.cycle(T0 + 5.0 * f64::from(i)).await;
    }
    let settled = count(&s);
    for i in 60..80 {
        s.op.cycle(T0 + 5.0 * f64::from(i)).await;
    }
    assert_eq!(
        count(&s),
        settled,
        "no writes once converged, even with a stale store"
    );
}

/// An API server that serves only discovery for `versions` of split.smi-spec.io.
fn discovery_api(versions: &'static [&'static str]) -> kube::Client {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let path = req.uri().path().to_owned();
            let body = if path == "/apis" {
                let vs: Vec<Value> = versions
                    .iter()
                    .map(
                        |v| json!({"groupVersion": format!("split.smi-spec.io/{v}"), "version": v}),
                    )
                    .collect();
                let groups = if versions.is_empty() {
                    json!([])
                } else {
                    json!([{"name": "split.smi-spec.io", "versions": vs, "preferredVersion": vs[0]}])
                };
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
            } else {
                let gv = path.trim_start_matches("/apis/").to_owned();
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
                    {"name": "trafficsplits", "singularName": "trafficsplit", "namespaced": true,
                     "kind": "TrafficSplit", "verbs": ["get", "list", "watch", "patch"]}
                ]})
            };
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }
    });
    kube::Client::new(svc, "default")
}

#[tokio::test]
async fn discovery_prefers_v1alpha1_and_falls_back_to_v1alpha2() {
    let both = discovery_api(&["v1alpha2", "v1alpha1"]);
    assert_eq!(
        trafficsplit::discover_version(&both).await.unwrap(),
        Some(SplitVersion::V1alpha1)
    );
    let only2 = discovery_api(&["v1alpha2"]);
    assert_eq!(
        trafficsplit::discover_version(&only2).await.unwrap(),
        Some(SplitVersion::V1alpha2)
    );
    // No TrafficSplit CRD is not an error: l3 keeps running and looks again.
    let none = discovery_api(&[]);
    assert_eq!(trafficsplit::discover_version(&none).await.unwrap(), None);
    assert!(trafficsplit::CRD_MISSING.contains("linkerd-smi"));
}

#[tokio::test]
async fn an_unreachable_api_server_is_named_and_linkerd_smi_is_not_blamed() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((_, send)) = handle.next_request().await {
            send.send_error(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused",
            ));
        }
    });
    let client = kube::Client::new(svc, "default");
    let e = trafficsplit::discover_version(&client).await.unwrap_err();
    assert!(matches!(e, l3::operator::Error::Unreachable(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("cannot reach the Kubernetes API server") && !text.contains("linkerd-smi"),
        "{text}"
    );
}
