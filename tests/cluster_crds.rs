//! l3 when CRDs are missing, on a real control plane whose CRDs this binary deletes (hence its
//! own binary): without the LatencyPolicy CRD `/readyz` fails naming it and the fix; without
//! the TrafficSplit CRD l3 keeps running, marks every policy `TargetFound=False`
//! (`TrafficSplitCRDMissing`), and finds the CRD once it is installed, without a restart.

mod support;

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use support::cluster::{self, install_crd};
use support::eventually;
use support::fixture::{Fixture, SPLIT, Setup, backend};
use support::mesh;

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
