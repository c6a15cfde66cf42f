//! l3 when CRDs are missing, on a real control plane whose CRDs this binary deletes (hence its
//! own binary): without the LatencyPolicy CRD `/readyz` fails naming it and the fix; without
//! the TrafficSplit CRD l3 keeps running, marks every policy `TargetFound=False`
//! (`TrafficSplitCRDMissing`), and finds the CRD once it is installed, without a restart; the
//! same holds for an enabled route kind whose CRD is missing (`TargetKindUnavailable`), and a
//! kind that is not enabled is named as such. The tests run one at a time (they delete and
//! install CRDs of the one control plane).

mod support;

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use support::cluster::{self, install_crd};
use support::eventually;
use support::fixture::{Fixture, ORIGINALS, SPLIT, Setup, backend, create_object};
use support::mesh;

/// Held by each test: they change the CRDs every test of this binary sees.
static CRDS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn delete_crd(client: &kube::Client, name: &str) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete CRD {name}: {e}"));
    eventually(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            match api.get_opt(name).await {
                Ok(None) => Ok(()),
                other => Err(format!("CRD {name} still there: {other:?}")),
            }
        },
    )
    .await;
}

async fn readyz(url: &str) -> (u16, String) {
    match reqwest::get(format!("{url}/readyz")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_crds_are_named_and_a_late_trafficsplit_crd_is_found() {
    let _serial = CRDS.lock().await;
    let mut f = Fixture::new(Setup::new(
        "l3-crds",
        vec![
            backend("web-a", json!(100), 20.0),
            backend("web-b", json!(100), 60.0),
        ],
    ))
    .await;
    let initial = mesh::raw_weights(&f.split().await);
    delete_crd(&f.admin, "latencypolicies.l3.dev").await;
    delete_crd(&f.admin, "trafficsplits.split.smi-spec.io").await;
    f.start_replica(0).await;

    // No LatencyPolicy CRD: not ready, and the answer says what is missing and how to fix it.
    let probes = f.replicas[0].probes.clone();
    let body = eventually(
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            match readyz(&probes).await {
                (503, body) if body.contains("latencypolicies.l3.dev") => Ok(body),
                other => Err(format!("readyz {other:?}\n{}", f.logs())),
            }
        },
    )
    .await;
    eprintln!("/readyz without the LatencyPolicy CRD: {body}");
    assert!(body.contains("kubectl apply"), "the fix is named: {body}");
    assert!(
        f.replicas[0].log_text().contains("latencypolicies.l3.dev"),
        "the log names the missing CRD"
    );

    // The CRD arrives; the TrafficSplit CRD is still missing: a condition on the policy.
    install_crd(
        &f.admin,
        &cluster::repo().join("crds/latencypolicies.l3.dev.yaml"),
    )
    .await;
    f.create_policy("web", "Enforce", json!({})).await;
    eventually(
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            let p = f.policies().get("web").await.map_err(|e| e.to_string())?;
            let found = p
                .status
                .iter()
                .flat_map(|s| s.conditions.iter())
                .find(|c| c.type_ == "TargetFound")
                .map(|c| (c.status.clone(), c.reason.clone()));
            match found {
                Some((s, r)) if s == "False" && r == "TrafficSplitCRDMissing" => Ok(()),
                other => Err(format!("TargetFound {other:?}\n{}", f.logs())),
            }
        },
    )
    .await;
    assert!(
        f.replicas[0].running(),
        "l3 must keep running without the CRD"
    );

    // The TrafficSplit CRD and the split come back: l3 finds them without a restart.
    let pid = f.replicas[0].pid();
    install_crd(
        &f.admin,
        &cluster::repo().join("tests/fixtures/trafficsplit-crd.yaml"),
    )
    .await;
    let weights: Vec<(&str, serde_json::Value)> = initial
        .iter()
        .map(|(s, w)| (s.as_str(), w.clone()))
        .collect();
    mesh::create_split(&f.admin, &f.ns, SPLIT, &weights).await;
    f.wait_adopted("web", &initial).await;
    assert!(f.replicas[0].running());
    assert_eq!(f.replicas[0].pid(), pid, "found without a restart");
}

/// An enabled route kind whose CRD is missing gives its policies a condition naming the CRD (l3
/// keeps running); a kind that is not enabled is named as such; the CRD installed later is
/// found without a restart and the route is tuned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_route_crd_is_a_condition_and_a_late_one_is_found() {
    let _serial = CRDS.lock().await;
    let mut setup = Setup::new(
        "l3-crds-route",
        vec![
            backend("web-a", json!(1), 20.0),
            backend("web-b", json!(1), 60.0),
        ],
    );
    setup.helm_args = vec!["--set=targets.httpRoute=true".into()];
    let mut f = Fixture::new(setup).await;
    f.start_replica(0).await;
    f.create_policy(
        "web",
        "Enforce",
        json!({"targetRef": {"kind": "HTTPRoute", "name": "web"}}),
    )
    .await;
    f.create_policy(
        "api",
        "Enforce",
        json!({"targetRef": {"kind": "GRPCRoute", "name": "api"}}),
    )
    .await;
    let c = f
        .wait_condition("web", "TargetFound", "False", "TargetKindUnavailable")
        .await;
    eprintln!("HTTPRoute CRD missing: {}", c.message);
    assert!(
        c.message.contains("Gateway API standard CRDs"),
        "the missing CRD is named: {}",
        c.message
    );
    let c = f
        .wait_condition("api", "TargetFound", "False", "TargetKindUnavailable")
        .await;
    eprintln!("GRPCRoute not enabled: {}", c.message);
    assert!(c.message.contains("--target-kinds"), "{}", c.message);
    assert!(
        f.replicas[0].running(),
        "l3 must keep running without the CRD"
    );

    let pid = f.replicas[0].pid();
    let routes = kube::api::ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "HTTPRoute".into(),
        plural: "httproutes".into(),
    };
    install_crd(
        &f.admin,
        &cluster::gateway_crds().join("gateway.networking.k8s.io_httproutes.yaml"),
    )
    .await;
    create_object(
        &f.admin,
        &f.ns,
        &routes,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": f.ns},
            "spec": {"rules": [{"backendRefs": [
                {"name": "web-a", "port": 80, "weight": 1},
                {"name": "web-b", "port": 80, "weight": 1}
            ]}]}
        }),
    )
    .await;
    let api = f.api(&routes);
    // l3 looks for missing CRDs every 30 s.
    eventually(
        Duration::from_secs(120),
        Duration::from_millis(500),
        || async {
            let r = api.get("web").await.map_err(|e| e.to_string())?;
            match r
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ORIGINALS))
            {
                Some(o) => Ok(o.clone()),
                None => Err(format!("route not adopted yet\n{}", f.logs())),
            }
        },
    )
    .await;
    f.wait_condition("web", "TargetFound", "True", "Found")
        .await;
    assert_eq!(f.replicas[0].pid(), pid, "found without a restart");

    // Leave no finalizer behind: the other test deletes the LatencyPolicy CRD, which waits for
    // every policy to go. The GRPCRoute policy's target cannot be restored (the kind is not
    // enabled); its finalizer is released all the same.
    for p in ["web", "api"] {
        f.delete_policy(p).await;
    }
    for p in ["web", "api"] {
        f.wait_policy_gone(p, mesh::SETTLE).await;
    }
    f.wait_event("api", "OriginalsNotRestored").await;
}
