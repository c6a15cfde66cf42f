//! The operator against a real control plane (etcd, kube-apiserver, kube-controller-manager from
//! `make testenv`), installed by the real helm, run as the real `l3 run` binary under the chart's
//! RBAC, reading a real Prometheus that scrapes a Linkerd-format exporter whose request mix
//! follows the TrafficSplit's weights. Write counts come from the API server's audit log.
//!
//! One control plane for this binary; each test has its own namespace and helm release.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use support::cluster::{self, count_by_verb_resource};
use support::eventually;
use support::fake::FakeServer;
use support::fixture::{
    Backend, FINALIZER, Fixture, INTERVAL, ORIGINALS, SPLIT, Setup, backend, secs_since,
};
use support::mesh;

fn three_backends() -> Vec<Backend> {
    vec![
        backend("web-a", json!(100), 20.0),
        backend("web-b", json!(100), 40.0),
        backend("web-c", json!(100), 80.0),
    ]
}

/// Adoption (annotation, finalizer, tuned weights), then reaction: the fastest backend made
/// 10x slower loses at least half its share within two intervals of the change being visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_then_reaction_to_a_slow_backend() {
    let mut f = Fixture::new(Setup::new("l3-adopt", three_backends())).await;
    let initial = mesh::raw_weights(&f.split().await);
    f.start_replica(0).await;
    f.start_replica(1).await;
    let created = Instant::now();
    f.create_policy("web", "Enforce", json!({})).await;
    let ann = f.wait_adopted("web", &initial).await;
    eprintln!("adopted after {:.1} s", secs_since(created));
    let recorded: Value = serde_json::from_str(&ann).expect("annotation is JSON");
    assert_eq!(
        recorded,
        json!({"web-a": 100, "web-b": 100, "web-c": 100}),
        "the annotation must hold the split's original weights exactly"
    );
    // Tuned and settled: the filters start from the paper's defaults (latency 5 s) and decay
    // towards the signals, so wait until the fastest backend has most of the traffic (about
    // 57 % with latencies of 1:2:4) and the weights stopped moving.
    eventually(mesh::SETTLE, Duration::from_millis(500), || async {
        let (a, c) = (f.share("web-a").await, f.share("web-c").await);
        let last = f.split_writes(0.0).iter().map(|e| e.at).fold(0.0, f64::max);
        let quiet = cluster::now() - last;
        if a > 0.5 && a > c && quiet > 3.0 * INTERVAL {
            Ok(())
        } else {
            Err(format!(
                "shares a={a:.3} c={c:.3}, last split write {quiet:.1} s ago"
            ))
        }
    })
    .await;

    let before = f.share("web-a").await;
    f.set_latency("web-a", 200.0);
    let slowed = Instant::now();
    // Two intervals, plus what stands between the exporter and a cycle that can see the change:
    // one 1 s scrape and one 1 s loop tick.
    let limit = 2.0 * INTERVAL + 2.0;
    let took = eventually(
        Duration::from_secs_f64(limit + 10.0),
        Duration::from_millis(100),
        || async {
            let a = f.share("web-a").await;
            if a <= before / 2.0 {
                Ok(secs_since(slowed))
            } else {
                Err(format!("web-a share {a:.3}, was {before:.3}"))
            }
        },
    )
    .await;
    eprintln!("web-a share {before:.3} -> at most half within {took:.1} s");
    assert!(
        took <= limit,
        "web-a lost half its share only after {took:.1} s, more than two intervals ({INTERVAL} s each) + 2 s of observation delay"
    );
}

/// Steady signals: after the weights settle, 60 s pass without a single TrafficSplit write
/// (audit log); every request l3 made in that minute is reported by verb and resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_signals_write_no_split_for_a_minute() {
    let mut f = Fixture::new(Setup::new("l3-steady", three_backends())).await;
    let initial = mesh::raw_weights(&f.split().await);
    f.start_replica(0).await;
    f.start_replica(1).await;
    f.create_policy("web", "Enforce", json!({})).await;
    f.wait_adopted("web", &initial).await;
    // Settled: no split write for 30 s. The filters start from the paper's defaults (latency
    // 5 s, RPS 0) and the mesh moves each backend's RPS with its weight, so the first minute or
    // two still carries real moves.
    let settled = eventually(Duration::from_secs(180), Duration::from_secs(1), || async {
        let now = cluster::now();
        let last = f.split_writes(0.0).iter().map(|e| e.at).fold(0.0, f64::max);
        if now - last >= 30.0 {
            Ok(now)
        } else {
            Err(format!("last split write {:.1} s ago", now - last))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let end = cluster::now();
    let minute: Vec<_> = f
        .l3_audit()
        .into_iter()
        .filter(|e| e.at >= settled && e.at < end)
        .collect();
    let per_minute = 60.0 / (end - settled);
    eprintln!("requests l3 made per minute with steady signals (audit log, both replicas):");
    for (k, n) in count_by_verb_resource(&minute) {
        eprintln!("  {k:<40} {:.1}", n as f64 * per_minute);
    }
    let status_writes = minute
        .iter()
        .filter(|e| e.is_write() && e.what() == "latencypolicies/status")
        .count();
    eprintln!("status writes in {:.0} s: {status_writes}", end - settled);
    let split_writes: Vec<_> = minute
        .iter()
        .filter(|e| e.is_write() && e.resource == "trafficsplits")
        .collect();
    assert!(
        split_writes.is_empty(),
        "steady signals must not write the split; audit log shows {} writes: {split_writes:?}",
        split_writes.len()
    );
}

/// DryRun computes but never writes the split; Enforce adopts; switching back to DryRun, and
/// deleting the policy, each restore the original weights exactly in the split's own form
/// (`"500m"` stays `"500m"`), and the restore stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_never_writes_and_restore_is_exact() {
    let mut f = Fixture::new(Setup::new(
        "l3-restore",
        vec![
            backend("web-a", json!("500m"), 20.0),
            backend("web-b", json!("500m"), 80.0),
        ],
    ))
    .await;
    let initial = mesh::raw_weights(&f.split().await);
    f.start_replica(0).await;
    f.create_policy("web", "DryRun", json!({})).await;
    // DryRun: the status shows computed weights after a few cycles...
    eventually(mesh::SETTLE, Duration::from_millis(250), || async {
        let p = f.policies().get("web").await.map_err(|e| e.to_string())?;
        let backends = p.status.map(|s| s.backends).unwrap_or_default();
        let a = backends.iter().find(|b| b.service == "web-a");
        match a {
            Some(a) if a.share > 0.6 => Ok(()),
            _ => Err(format!("status backends {backends:?}\n{}", f.logs())),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs_f64(3.0 * INTERVAL)).await;
    // ... and nothing was written to the split.
    let writes = f.split_writes(0.0);
    assert!(writes.is_empty(), "DryRun wrote the split: {writes:?}");
    assert_eq!(mesh::raw_weights(&f.split().await), initial);
    assert!(f.originals().await.is_none(), "DryRun must not adopt");

    for (round, undo) in [(1, "DryRun"), (2, "delete")] {
        f.set_mode("web", "Enforce").await;
        let ann = f.wait_adopted("web", &initial).await;
        assert_eq!(
            serde_json::from_str::<Value>(&ann).expect("JSON"),
            json!({"web-a": "500m", "web-b": "500m"}),
            "round {round}: the originals keep the split's own form"
        );
        let tuned = mesh::raw_weights(&f.split().await);
        assert!(
            tuned
                .iter()
                .all(|(_, w)| w.as_str().is_some_and(|s| s.ends_with('m'))),
            "round {round}: tuned weights keep the milli form: {tuned:?}"
        );
        if undo == "DryRun" {
            f.set_mode("web", "DryRun").await;
        } else {
            f.delete_policy("web").await;
        }
        eprintln!("round {round}: {undo}");
        f.wait_restored(SPLIT, &initial).await;
        // Restore is final: it is still there after three more intervals.
        tokio::time::sleep(Duration::from_secs_f64(3.0 * INTERVAL)).await;
        let split = f.split().await;
        assert_eq!(
            mesh::raw_weights(&split),
            initial,
            "round {round}: restore undone"
        );
        assert!(split.annotations().get(ORIGINALS).is_none());
        let policy = f.policies().get_opt("web").await.expect("get policy");
        match undo {
            "DryRun" => assert!(
                !policy
                    .expect("policy")
                    .finalizers()
                    .iter()
                    .any(|x| x == FINALIZER),
                "DryRun releases the finalizer"
            ),
            _ => assert!(
                policy.is_none(),
                "the deleted policy is gone (finalizer released)"
            ),
        }
    }
}

/// l3 runs with exactly the chart's RBAC; with `patch` on trafficsplits removed from the
/// ClusterRole it says which permission is missing instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_is_named() {
    let mut f = Fixture::new(Setup::new("l3-rbac", three_backends())).await;
    let roles: Api<ClusterRole> = Api::all(f.admin.clone());
    let mut role = roles.get("l3-rbac").await.expect("the chart's ClusterRole");
    for rule in role.rules.iter_mut().flatten() {
        if rule
            .resources
            .iter()
            .flatten()
            .any(|r| r == "trafficsplits")
        {
            rule.verbs.retain(|v| v != "patch");
        }
    }
    roles
        .replace("l3-rbac", &PostParams::default(), &role)
        .await
        .expect("replace ClusterRole");
    f.start_replica(0).await;
    f.create_policy("web", "Enforce", json!({})).await;
    eventually(mesh::SETTLE, Duration::from_millis(250), || async {
        let log = f.replicas[0].log_text();
        let named = log
            .lines()
            .any(|l| l.contains("cannot patch resource") && l.contains("trafficsplits"));
        if named {
            Ok(())
        } else {
            Err(format!(
                "no log line names the missing permission\n{}",
                f.logs()
            ))
        }
    })
    .await;
    assert!(f.replicas[0].running(), "l3 must keep running");
    let denied = f
        .l3_audit()
        .into_iter()
        .filter(|e| e.resource == "trafficsplits" && e.verb == "patch" && e.code == 403)
        .count();
    assert!(denied > 0, "the audit log shows no denied patch");
}

/// Deleting a namespace that holds active policies completes: l3 restores and releases its
/// finalizers while the namespace terminates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_completes() {
    let mut f = Fixture::new(Setup {
        namespace: "l3-nsdel",
        backends: three_backends(),
        apps_namespace: Some("nsdel-apps"),
        lease: None,
        route: None,
        helm_args: Vec::new(),
    })
    .await;
    let initial = mesh::raw_weights(&f.split().await);
    f.start_replica(0).await;
    f.create_policy("web", "Enforce", json!({})).await;
    f.create_policy("web-second", "Enforce", json!({})).await;
    f.wait_adopted("web", &initial).await;
    let namespaces: Api<Namespace> = Api::all(f.admin.clone());
    let deleted = Instant::now();
    namespaces
        .delete("nsdel-apps", &DeleteParams::default())
        .await
        .expect("delete namespace");
    // The bound is generous: kube-controller-manager's namespace controller backs off between
    // its passes, and on a loaded 2-core machine a pass alone has taken over a minute.
    eventually(
        Duration::from_secs(240),
        Duration::from_millis(250),
        || async {
            match namespaces.get_opt("nsdel-apps").await {
                Ok(None) => Ok(()),
                Ok(Some(ns)) => Err(format!(
                    "namespace still there: {:?}\n{}\nkube-controller-manager log:\n{}",
                    ns.status,
                    f.logs(),
                    f.cp.log_tail("kube-controller-manager.log")
                )),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    eprintln!("namespace deleted in {:.1} s", secs_since(deleted));
    let released = f
        .l3_audit()
        .into_iter()
        .filter(|e| {
            e.is_write()
                && e.resource == "latencypolicies"
                && e.name == "web"
                && e.subresource.is_empty()
        })
        .count();
    assert!(
        released >= 2,
        "l3 added and released its finalizer ({released} policy writes)"
    );
}

/// Restore is final while l3 is busy writing: the signals swing every second, so a weight write
/// is planned almost every cycle, and the policy is switched to DryRun (ten times) or deleted at
/// arbitrary moments. Each time the split gets its originals back and keeps them: no write planned
/// before the switch lands after the restore, and the annotation never comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_is_final_while_weights_are_moving() {
    let mut f = Fixture::new(Setup::new(
        "l3-final",
        vec![
            backend("web-a", json!("500m"), 20.0),
            backend("web-b", json!("500m"), 60.0),
        ],
    ))
    .await;
    let initial = mesh::raw_weights(&f.split().await);
    f.start_replica(0).await;
    f.create_policy("web", "Enforce", json!({"interval": "1s"}))
        .await;
    f.wait_adopted("web", &initial).await;
    // Swing web-a between fast and slow every second, for the whole test.
    let exporter = f.exporter.clone();
    let ns = f.ns.clone();
    let swing = tokio::spawn(async move {
        let mut slow = false;
        loop {
            slow = !slow;
            let p = mesh::steady(if slow { 300.0 } else { 20.0 });
            exporter.update(&ns, "web-a", |q| {
                q.ok_cdf = p.ok_cdf.clone();
                q.ok_mean_ms = p.ok_mean_ms;
            });
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    for round in 0..10 {
        if round > 0 {
            f.set_mode("web", "Enforce").await;
            f.wait_adopted("web", &initial).await;
            // Let a few weight writes happen.
            tokio::time::sleep(Duration::from_millis(1500 + 300 * round)).await;
        }
        let last = round == 9;
        if last {
            f.delete_policy("web").await;
        } else {
            f.set_mode("web", "DryRun").await;
        }
        eventually(mesh::SETTLE, Duration::from_millis(100), || async {
            let split = f.split().await;
            let w = mesh::raw_weights(&split);
            let ann = split.annotations().get(ORIGINALS).cloned();
            if w == initial && ann.is_none() {
                Ok(())
            } else {
                Err(format!(
                    "round {round}: weights {w:?}, annotation {ann:?}\n{}",
                    f.logs()
                ))
            }
        })
        .await;
        let restored = cluster::now();
        // Three cycles later the restore still stands, and l3 wrote nothing after it.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let split = f.split().await;
        assert_eq!(
            mesh::raw_weights(&split),
            initial,
            "round {round}: restore undone"
        );
        assert!(
            split.annotations().get(ORIGINALS).is_none(),
            "round {round}: the annotation came back"
        );
        let late: Vec<_> = f
            .split_writes(restored)
            .into_iter()
            .filter(|e| e.verb == "patch")
            .collect();
        assert!(
            late.is_empty(),
            "round {round}: writes after the restore: {late:?}"
        );
    }
    swing.abort();
}

/// The restore race, made to happen every time: l3 reads Prometheus through a proxy that holds
/// one cycle's queries, so that cycle has planned its weight write but not made it; meanwhile
/// the policy is switched to DryRun and l3 restores the split. When the held queries are
/// released the planned write must not land: the split keeps its originals and the annotation
/// stays gone. Three rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_planned_before_a_restore_never_lands_after_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    let mut f = Fixture::new(Setup::new(
        "l3-race",
        vec![
            backend("web-a", json!("500m"), 20.0),
            backend("web-b", json!("500m"), 60.0),
        ],
    ))
    .await;
    let initial = mesh::raw_weights(&f.split().await);
    // Held: every forwarded query waits while `hold` is set (at most 1.5 s, under the chart's
    // 2 s query timeout, so the held cycle still gets its answers and goes on to write).
    let hold = Arc::new(AtomicBool::new(false));
    let held = Arc::new(AtomicU32::new(0));
    let (h, n) = (hold.clone(), held.clone());
    let proxy = FakeServer::proxy_with(
        f.prometheus.url.clone(),
        |_| None,
        move || {
            let (h, n) = (h.clone(), n.clone());
            Box::pin(async move {
                if h.load(Ordering::SeqCst) {
                    n.fetch_add(1, Ordering::SeqCst);
                    let until = Instant::now() + Duration::from_millis(1500);
                    while h.load(Ordering::SeqCst) && Instant::now() < until {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            })
        },
    )
    .await;
    let url = format!("--prometheus-url={}", proxy.url());
    let r = f.start_pod_with("l3-0", &[url.as_str()]).await;
    f.replicas.push(r);
    f.create_policy("web", "Enforce", json!({"interval": "1s"}))
        .await;
    for round in 0..3 {
        if round > 0 {
            f.set_mode("web", "Enforce").await;
        }
        f.wait_adopted("web", &initial).await;
        // Every cycle wants to move the weights by more than the urgent threshold.
        f.set_latency("web-a", if round % 2 == 0 { 400.0 } else { 20.0 });
        tokio::time::sleep(Duration::from_secs(3)).await;
        f.set_latency("web-a", if round % 2 == 0 { 20.0 } else { 400.0 });
        held.store(0, Ordering::SeqCst);
        hold.store(true, Ordering::SeqCst);
        eventually(
            Duration::from_secs(10),
            Duration::from_millis(5),
            || async {
                if held.load(Ordering::SeqCst) > 0 {
                    Ok(())
                } else {
                    Err("no query reached the proxy".to_owned())
                }
            },
        )
        .await;
        // The cycle is between its plan and its write: restore now.
        f.set_mode("web", "DryRun").await;
        let restored = eventually(
            Duration::from_secs(5),
            Duration::from_millis(20),
            || async {
                let split = f.split().await;
                let w = mesh::raw_weights(&split);
                if w == initial && split.annotations().get(ORIGINALS).is_none() {
                    Ok(cluster::now())
                } else {
                    Err(format!("round {round}: not restored yet: {w:?}"))
                }
            },
        )
        .await;
        hold.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(4)).await;
        let split = f.split().await;
        assert_eq!(
            mesh::raw_weights(&split),
            initial,
            "round {round}: a write planned before the restore landed after it\n{}",
            f.logs()
        );
        assert!(
            split.annotations().get(ORIGINALS).is_none(),
            "round {round}: the split was adopted again after the restore"
        );
        let late = f.split_writes(restored);
        assert!(
            late.is_empty(),
            "round {round}: writes after the restore: {late:?}"
        );
    }
}
