//! l3 next to other writers, against a real control plane (etcd, kube-apiserver with RBAC and
//! an audit log, kube-controller-manager), installed by the real helm and run as the real
//! `l3 run` binary: a foreign change of the weights is adopted and pauses tuning, a tug-of-war
//! makes the policy `Contested` until its spec changes, a linkerd-failover split is left
//! alone, a retarget restores the old split first, any quantity is a weight and is restored as
//! spelled, a backend added after adoption is restored on the originals' scale, a finalizer
//! never blocks a deletion, and `l3 restore --all` cleans up after `helm uninstall`.
//!
//! Every "l3 wrote / did not write" is read from the API server's audit log. One control plane
//! for this binary; each test has its own namespace and helm release.

mod support;

use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::cluster::{self, AuditEvent};
use support::eventually;
use support::fixture::{
    ADOPTED_TARGET, Backend, FINALIZER, FOREIGN, Fixture, INTERVAL, ORIGINALS, SPLIT, Setup,
    backend, secs_since,
};
use support::mesh;

/// A fast and a slow backend at 100/100: l3 moves most of the traffic to `web-a`.
fn fast_and_slow() -> Vec<Backend> {
    vec![
        backend("web-a", json!(100), 20.0),
        backend("web-b", json!(100), 80.0),
    ]
}

/// Set up `namespace` with `backends` (split and policies in it too); no replica yet.
async fn fixture(namespace: &str, backends: Vec<Backend>) -> Fixture {
    Fixture::new(Setup {
        namespace,
        backends,
        apps_namespace: None,
        lease: None,
        route: None,
        helm_args: Vec::new(),
    })
    .await
}

/// Set up `namespace` with `backends`, start one replica, create the Enforce policy "web" on
/// the test split and wait until it is adopted; returns the fixture and the initial weights.
async fn adopted(namespace: &str, backends: Vec<Backend>) -> (Fixture, Vec<(String, Value)>) {
    let mut f = fixture(namespace, backends).await;
    let initial = mesh::raw_weights(&f.split().await);
    f.start_replica(0).await;
    let created = Instant::now();
    f.create_policy("web", "Enforce", json!({})).await;
    f.wait_adopted("web", &initial).await;
    eprintln!("{namespace}: adopted after {:.1} s", secs_since(created));
    (f, initial)
}

/// A JSON annotation parsed (failing the test if it is not JSON).
fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("annotation {text:?} is not JSON: {e}"))
}

/// The foreign-changes record of a split: the times l3 saw a foreign change (0 if none).
async fn foreign_changes(f: &Fixture, split: &str) -> usize {
    f.split_named(split)
        .await
        .annotations()
        .get(FOREIGN)
        .map(|t| parsed(t)["times"].as_array().map_or(0, Vec::len))
        .unwrap_or(0)
}

fn describe(writes: &[AuditEvent]) -> Vec<String> {
    writes
        .iter()
        .map(|e| format!("{:.3} {} {} {:?}", e.at, e.verb, e.name, e.pod))
        .collect()
}

fn weights(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
    pairs
        .iter()
        .map(|(s, w)| ((*s).to_owned(), w.clone()))
        .collect()
}

/// Another writer (an admin, Argo CD) drains web-b after l3 tuned the split: l3 takes the new
/// weights as the originals, says so in a Warning Event `ForeignWeights`, reports
/// `Contested=False PausedAfterForeignChange`, and its only split write after the change is
/// that adoption (annotations only): the weights stay the admin's for the next 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_change_is_adopted_and_paused() {
    let (f, _initial) = adopted("l3-foreign", fast_and_slow()).await;
    let tuned = mesh::raw_weights(&f.split().await);
    let drained = [("web-a", json!(100)), ("web-b", json!(0))];
    let changed_at = cluster::now();
    f.set_weights(SPLIT, &drained).await;
    let foreign = json!({"web-a": 100, "web-b": 0});
    // Every weight was rewritten, so there is no common scale: the originals are the new
    // weights as spelled.
    eventually(mesh::SETTLE, Duration::from_millis(250), || async {
        match f.originals().await {
            Some(a) if parsed(&a) == foreign => Ok(()),
            a => Err(format!(
                "originals {a:?} (tuned were {tuned:?})\n{}",
                f.logs()
            )),
        }
    })
    .await;
    let ev = f.wait_event("web", "ForeignWeights").await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    let note = ev.note.unwrap_or_default();
    assert!(
        note.contains(r#""web-b":0"#) && note.contains("TrafficSplit web"),
        "the Event names the split and the weights: {note}"
    );
    f.wait_condition("web", "Contested", "False", "PausedAfterForeignChange")
        .await;
    assert_eq!(foreign_changes(&f, SPLIT).await, 1);

    tokio::time::sleep(Duration::from_secs(20)).await;
    let writes = f.split_writes(changed_at);
    assert_eq!(
        writes.len(),
        1,
        "after the foreign change l3 writes the split once (the adoption), then pauses: {:?}",
        describe(&writes)
    );
    assert_eq!(
        mesh::raw_weights(&f.split().await),
        weights(&drained),
        "the admin's weights stay while l3 pauses"
    );
    let c = f.condition("web", "Contested").await.expect("Contested");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "PausedAfterForeignChange")
    );
}

/// A writer that keeps setting its own weights (a GitOps tool reverting l3): the third change
/// within 10 minutes makes the policy `Contested=True RepeatedForeignChanges` and l3 writes
/// nothing more; a change of the policy's spec (new generation) lets l3 write again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tug_of_war_is_contested_until_the_spec_changes() {
    let (f, _initial) = adopted("l3-tug", fast_and_slow()).await;
    let sets = [
        [("web-a", json!(300)), ("web-b", json!(700))],
        [("web-a", json!(200)), ("web-b", json!(800))],
        [("web-a", json!(100)), ("web-b", json!(900))],
    ];
    let mut last_change = 0.0;
    for (i, set) in sets.iter().enumerate() {
        last_change = cluster::now();
        f.set_weights(SPLIT, set).await;
        // Each change is recorded before the next: l3 noticed it.
        eventually(mesh::SETTLE, Duration::from_millis(250), || async {
            let n = foreign_changes(&f, SPLIT).await;
            if n == i + 1 {
                Ok(())
            } else {
                Err(format!(
                    "{n} foreign changes recorded, want {}\n{}",
                    i + 1,
                    f.logs()
                ))
            }
        })
        .await;
        eprintln!("foreign change {} recorded", i + 1);
    }
    let c = f
        .wait_condition("web", "Contested", "True", "RepeatedForeignChanges")
        .await;
    eprintln!("Contested: {}", c.message);
    let record = parsed(&f.split().await.annotations()[FOREIGN]);
    assert_eq!(record["contested"], json!(true), "{record}");
    // Quiet: after the third adoption l3 writes nothing, for well over three intervals.
    tokio::time::sleep(Duration::from_secs_f64(5.0 * INTERVAL)).await;
    let writes = f.split_writes(last_change);
    assert_eq!(
        writes.len(),
        1,
        "only the adoption of the third change, nothing after: {:?}",
        describe(&writes)
    );
    assert_eq!(
        mesh::raw_weights(&f.split().await),
        weights(&sets[2]),
        "the writer's weights stay"
    );

    // A new spec: l3 acts again (the split is 10/90 towards the slow backend, far from what
    // the signals ask for, so the first cycle writes).
    let generation = f
        .policies()
        .get("web")
        .await
        .expect("policy")
        .metadata
        .generation;
    let bumped = cluster::now();
    f.policies()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hysteresis": 0.02}})),
        )
        .await
        .expect("bump hysteresis");
    let p = f.policies().get("web").await.expect("policy");
    assert_ne!(
        p.metadata.generation, generation,
        "the spec change is a new generation"
    );
    let took = eventually(mesh::SETTLE, Duration::from_millis(250), || async {
        if f.split_writes(bumped).is_empty() {
            Err(format!(
                "no split write since the spec changed\n{}",
                f.logs()
            ))
        } else {
            Ok(cluster::now() - bumped)
        }
    })
    .await;
    eprintln!("l3 wrote again {took:.1} s after the spec change");
    eventually(mesh::SETTLE, Duration::from_millis(250), || async {
        let a = f.share("web-a").await;
        if a > 0.5 {
            Ok(())
        } else {
            Err(format!("web-a share {a:.3} after the spec change"))
        }
    })
    .await;
    f.wait_condition("web", "Contested", "False", "NoForeignWriter")
        .await;
}

/// A split labelled `failover.linkerd.io/controlled-by` belongs to linkerd-failover: the
/// policy reports `Conflict=True ControlledByFailover` and l3 never writes or annotates the
/// split; once the label is gone, l3 adopts it (so it was the label that stopped it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_controlled_split_is_refused() {
    let mut f = fixture("l3-failover", fast_and_slow()).await;
    let initial = mesh::raw_weights(&f.split().await);
    f.patch_split(
        SPLIT,
        json!({"metadata": {"labels": {"failover.linkerd.io/controlled-by": "linkerd-failover"}}}),
    )
    .await;
    f.start_replica(0).await;
    f.create_policy("web", "Enforce", json!({})).await;
    let c = f
        .wait_condition("web", "Conflict", "True", "ControlledByFailover")
        .await;
    eprintln!("Conflict: {}", c.message);
    let ready = f.condition("web", "Ready").await.expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Conflict")
    );
    // Long enough for several cycles, each of which would have written (fast vs slow backend).
    tokio::time::sleep(Duration::from_secs_f64(4.0 * INTERVAL)).await;
    let writes = f.split_writes(0.0);
    assert!(
        writes.is_empty(),
        "l3 wrote a failover-controlled split: {:?}",
        describe(&writes)
    );
    assert_eq!(mesh::raw_weights(&f.split().await), initial);
    assert_eq!(f.l3_annotations(SPLIT).await, vec![], "no l3 annotation");

    let released = cluster::now();
    f.patch_split(
        SPLIT,
        json!({"metadata": {"labels": {"failover.linkerd.io/controlled-by": null}}}),
    )
    .await;
    f.wait_adopted("web", &initial).await;
    f.wait_condition("web", "Conflict", "False", "NoConflict")
        .await;
    assert!(!f.split_writes(released).is_empty());
}

/// Pointing a policy at another split restores the old one exactly (weights as they were, no
/// l3 annotation) before the new one is tuned: in the audit log, l3's last write to the old
/// split comes before its first write to the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retargeting_restores_the_old_split_first() {
    let (f, initial) = adopted("l3-retarget", fast_and_slow()).await;
    let second = "web-second";
    let second_initial = [("web-a", json!(100)), ("web-b", json!(100))];
    mesh::create_split(&f.admin, &f.ns, second, &second_initial).await;
    let retargeted = cluster::now();
    f.policies()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"targetRef": {"name": second}}})),
        )
        .await
        .expect("retarget");
    eventually(mesh::SETTLE, Duration::from_millis(250), || async {
        let old = mesh::raw_weights(&f.split().await);
        let old_ann = f.l3_annotations(SPLIT).await;
        let new = f.split_named(second).await;
        let new_orig = new.annotations().get(ORIGINALS).cloned();
        let policy = f.policies().get("web").await.map_err(|e| e.to_string())?;
        let recorded = policy.annotations().get(ADOPTED_TARGET).cloned();
        let done = old == initial
            && old_ann.is_empty()
            && new_orig.is_some()
            && mesh::raw_weights(&new) != weights(&second_initial)
            && recorded.as_deref() == Some(second);
        if done {
            Ok(())
        } else {
            Err(format!(
                "old split {old:?} {old_ann:?}; new split {:?} originals {new_orig:?}; \
                 policy records {recorded:?}\n{}",
                mesh::raw_weights(&new),
                f.logs()
            ))
        }
    })
    .await;
    let new_orig = f.split_named(second).await.annotations()[ORIGINALS].clone();
    assert_eq!(parsed(&new_orig), json!({"web-a": 100, "web-b": 100}));
    let old_writes = f.writes_to(SPLIT, retargeted);
    let new_writes = f.writes_to(second, 0.0);
    let restore = old_writes.last().expect("the restore of the old split");
    let first_new = new_writes.first().expect("a write to the new split");
    assert!(
        restore.at <= first_new.at,
        "the old split was restored at {:.3}, after the first write to the new one at {:.3}: \
         old {:?}, new {:?}",
        restore.at,
        first_new.at,
        describe(&old_writes),
        describe(&new_writes)
    );
    // The restore is final: the old split stays as it was.
    tokio::time::sleep(Duration::from_secs_f64(2.0 * INTERVAL)).await;
    assert_eq!(mesh::raw_weights(&f.split().await), initial);
    assert_eq!(f.writes_to(SPLIT, retargeted).len(), old_writes.len());
}

/// Weights spelled as any Kubernetes quantity (`"1k"`, `"1e3"`, `"+1"`) are read as numbers,
/// tuned in the split's form (plain strings) and restored exactly as spelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quantities_are_weights_and_restore_as_spelled() {
    let (f, initial) = adopted(
        "l3-quantity",
        vec![
            backend("web-a", json!("1k"), 20.0),
            backend("web-b", json!("1e3"), 80.0),
            backend("web-c", json!("+1"), 40.0),
        ],
    )
    .await;
    let ann = f.originals().await.expect("originals");
    assert_eq!(
        parsed(&ann),
        json!({"web-a": "1k", "web-b": "1e3", "web-c": "+1"}),
        "the originals as spelled"
    );
    let tuned = mesh::raw_weights(&f.split().await);
    assert!(
        tuned
            .iter()
            .all(|(_, w)| w.as_str().is_some_and(|s| s.parse::<u32>().is_ok())),
        "tuned weights are plain quantity strings: {tuned:?}"
    );
    f.delete_policy("web").await;
    f.wait_restored(SPLIT, &initial).await;
    f.wait_policy_gone("web", Duration::from_secs(10)).await;
}

/// A backend added by someone else after adoption (originals 1/1, l3's weights out of 1000,
/// the new backend at 300) joins the originals on their scale: 300 next to l3's weights summing
/// to 1000 is 0.6 next to originals summing to 2. The split is spelled in integers, so the
/// originals are scaled by the smallest power of ten that keeps them whole: 10/10/6. Deleting
/// the policy restores exactly that (web-c gets 6/26 of the traffic, not 300/302).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_added_after_adoption_is_restored_on_the_original_scale() {
    let (f, _initial) = adopted(
        "l3-added",
        vec![
            backend("web-a", json!(1), 20.0),
            backend("web-b", json!(1), 80.0),
        ],
    )
    .await;
    // The new backend has signals before the mesh sends it traffic.
    f.exporter.add(&f.ns, "web-c", 2, mesh::steady(40.0), 100.0);
    // Keep l3's weights exactly: guarded by the resourceVersion they were read at.
    let tuned = eventually(mesh::SETTLE, Duration::from_millis(100), || async {
        let split = f.split().await;
        let tuned = mesh::raw_weights(&split);
        let mut backends: Vec<Value> = tuned
            .iter()
            .map(|(s, w)| json!({"service": s, "weight": w}))
            .collect();
        backends.push(json!({"service": "web-c", "weight": 300}));
        let patch = json!({
            "metadata": {"resourceVersion": split.resource_version()},
            "spec": {"backends": backends},
        });
        mesh::splits(&f.admin, &f.ns)
            .patch(SPLIT, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| tuned)
            .map_err(|e| format!("add web-c: {e}"))
    })
    .await;
    let sum: i64 = tuned
        .iter()
        .map(|(_, w)| w.as_i64().expect("integer"))
        .sum();
    assert_eq!(sum, 1000, "l3's weights sum to 1000: {tuned:?}");
    let expected = json!({"web-a": 10, "web-b": 10, "web-c": 6});
    eventually(mesh::SETTLE, Duration::from_millis(250), || async {
        match f.originals().await {
            Some(a) if parsed(&a) == expected => Ok(()),
            a => Err(format!("originals {a:?}\n{}", f.logs())),
        }
    })
    .await;
    let ev = f.wait_event("web", "BackendsChanged").await;
    assert_eq!(ev.type_.as_deref(), Some("Normal"));
    // An added backend is not a fight over the weights: no pause.
    let c = f.condition("web", "Contested").await.expect("Contested");
    assert_eq!(c.reason, "NoForeignWriter", "{c:?}");

    f.delete_policy("web").await;
    let restored = weights(&[
        ("web-a", json!(10)),
        ("web-b", json!(10)),
        ("web-c", json!(6)),
    ]);
    f.wait_restored(SPLIT, &restored).await;
    let c = f.share("web-c").await;
    assert!((c - 6.0 / 26.0).abs() < 1e-9, "web-c share {c}");
    f.wait_policy_gone("web", Duration::from_secs(10)).await;
}

/// A finalizer never blocks a deletion. (a) The split is gone: nothing can be restored, the
/// finalizer is released (and, the weights being gone with the split, no Event). (b) The
/// original-weights record is broken: the finalizer is released, the split is left as it is,
/// and a Warning Event `OriginalsNotRestored` carries the record as found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalizer_never_blocks() {
    let mut f = fixture("l3-finalizer", fast_and_slow()).await;
    let initial = mesh::raw_weights(&f.split().await);
    let gone = "web-gone";
    mesh::create_split(
        &f.admin,
        &f.ns,
        gone,
        &[("web-a", json!(100)), ("web-b", json!(100))],
    )
    .await;
    f.start_replica(0).await;
    f.create_policy("web", "Enforce", json!({})).await;
    f.create_policy(
        "gone",
        "Enforce",
        json!({"targetRef": {"kind": "TrafficSplit", "name": gone}}),
    )
    .await;
    f.wait_adopted("web", &initial).await;
    eventually(mesh::SETTLE, Duration::from_millis(250), || async {
        let split = f.split_named(gone).await;
        let p = f.policies().get("gone").await.map_err(|e| e.to_string())?;
        let fin = p.finalizers().iter().any(|x| x == FINALIZER);
        match split.annotations().get(ORIGINALS) {
            Some(_) if fin => Ok(()),
            a => Err(format!(
                "{gone}: originals {a:?}, finalizer {fin}\n{}",
                f.logs()
            )),
        }
    })
    .await;

    // (a) The split is gone.
    mesh::splits(&f.admin, &f.ns)
        .delete(gone, &DeleteParams::default())
        .await
        .expect("delete split");
    f.delete_policy("gone").await;
    f.wait_policy_gone("gone", Duration::from_secs(20)).await;

    // (b) The record is broken.
    f.patch_split(
        SPLIT,
        json!({"metadata": {"annotations": {ORIGINALS: "not json"}}}),
    )
    .await;
    let deleted = Instant::now();
    f.delete_policy("web").await;
    f.wait_policy_gone("web", Duration::from_secs(20)).await;
    eprintln!(
        "policy with a broken record gone in {:.1} s",
        secs_since(deleted)
    );
    let ev = f.wait_event("web", "OriginalsNotRestored").await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    let note = ev.note.unwrap_or_default();
    assert!(
        note.contains("TrafficSplit web cannot be restored")
            && note.contains("Original weights: not json"),
        "the Event carries the record as found: {note}"
    );
    assert_eq!(
        f.originals().await.as_deref(),
        Some("not json"),
        "l3 leaves a split it cannot restore as it is"
    );
    // No Event for the gone split: there was nothing left to restore.
    let evs = f.events("gone").await;
    assert!(
        !evs.iter()
            .any(|e| e.reason.as_deref() == Some("OriginalsNotRestored")),
        "{evs:?}"
    );
}

/// Uninstalling with policies left, as the README says: l3 stops, `helm uninstall` completes,
/// `l3 restore --all -n NS` (admin kubeconfig) puts the split's original weights back exactly,
/// drops l3's annotations and releases the finalizer, so the policy can be deleted at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_uninstall_with_policies_left_and_l3_restore() {
    let (mut f, initial) = adopted("l3-uninstall", fast_and_slow()).await;
    for r in &mut f.replicas {
        r.kill();
    }
    let out = f.release.uninstall(f.cp).await;
    eprintln!("helm uninstall: {}", out.trim());
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(f.admin.clone(), &f.ns);
    assert!(
        deployments.get_opt(&f.ns).await.expect("get").is_none(),
        "the chart's Deployment is gone"
    );
    let p = f.policies().get("web").await.expect("policy left");
    assert!(p.finalizers().iter().any(|x| x == FINALIZER));
    assert_ne!(mesh::raw_weights(&f.split().await), initial, "still tuned");

    let ns = f.ns.clone();
    let kubeconfig = f.cp.admin_kubeconfig.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_l3"))
            .args(["restore", "--all", "-n", &ns])
            .env("KUBECONFIG", kubeconfig)
            .output()
    })
    .await
    .expect("task")
    .expect("run l3 restore");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("l3 restore: {stdout}{stderr}");
    assert!(
        out.status.success(),
        "l3 restore failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("{}/web: TrafficSplit web restored", f.ns))
            && stdout.contains(&format!("{}/web: finalizer released", f.ns)),
        "{stdout}"
    );
    assert_eq!(
        mesh::raw_weights(&f.split().await),
        initial,
        "restored exactly"
    );
    assert_eq!(
        f.l3_annotations(SPLIT).await,
        vec![],
        "l3's annotations are gone"
    );
    let p = f.policies().get("web").await.expect("policy");
    assert!(p.finalizers().is_empty(), "{:?}", p.finalizers());
    assert!(p.annotations().get(ADOPTED_TARGET).is_none());
    f.delete_policy("web").await;
    f.wait_policy_gone("web", Duration::from_secs(5)).await;
}
