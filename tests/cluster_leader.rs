//! Leader election against a real control plane: two `l3 run` replicas with the chart's Lease
//! and RBAC, each authenticated as its own Pod. kill -9 of the leader: the follower writes within
//! the lease duration plus one interval. SIGTERM of the leader: the follower holds the lease
//! within 2 s. Throughout, the audit log shows no write by a replica that did not hold the
//! lease at that moment.

mod support;

use std::time::Duration;

use serde_json::json;
use support::cluster::{self, AuditEvent};
use support::eventually;
use support::fixture::{Fixture, INTERVAL, LEASE, Setup, backend};

/// The loop's tick: a due policy waits for it at most this long, seconds.
const TICK: f64 = 1.0;

/// What only the leader may write (SelfSubjectAccessReviews are creates, but change nothing).
const LEADER_ONLY: [&str; 3] = ["trafficsplits", "latencypolicies", "events"];

/// Writes by a replica that was not the last to write the Lease before it: each is a moment at
/// which two replicas believed they led.
fn overlapping_writes(events: &[AuditEvent], lease_ns: &str) -> Vec<String> {
    let mut events: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| {
            e.is_write() && (e.resource == "leases" || LEADER_ONLY.contains(&e.resource.as_str()))
        })
        .collect();
    events.sort_by(|a, b| a.at.total_cmp(&b.at));
    let mut holder: Option<&str> = None;
    let mut bad = Vec::new();
    for e in events {
        if e.resource == "leases" && e.namespace == lease_ns {
            holder = e.pod.as_deref();
        } else if e.pod.as_deref() != holder {
            bad.push(format!(
                "{:.3} {} {} {}/{} by {:?} while the lease was last written by {holder:?}",
                e.at,
                e.verb,
                e.what(),
                e.namespace,
                e.name,
                e.pod
            ));
        }
    }
    bad
}

/// The first successful write of `pod` after `from` that is not a Lease write.
fn first_write(f: &Fixture, pod: &str, from: f64) -> Option<f64> {
    f.l3_audit()
        .into_iter()
        .filter(|e| {
            e.at >= from
                && e.is_write()
                && LEADER_ONLY.contains(&e.resource.as_str())
                && e.pod.as_deref() == Some(pod)
        })
        .map(|e| e.at)
        .reduce(f64::min)
}

/// The first successful Lease write of `pod` after `from`.
fn first_lease_write(f: &Fixture, pod: &str, from: f64) -> Option<f64> {
    f.l3_audit()
        .into_iter()
        .filter(|e| {
            e.at >= from && e.is_write() && e.resource == "leases" && e.pod.as_deref() == Some(pod)
        })
        .map(|e| e.at)
        .reduce(f64::min)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_after_kill_and_sigterm_without_two_writers() {
    let mut f = Fixture::new(Setup::new(
        "l3-leader",
        vec![
            backend("web-a", json!(100), 20.0),
            backend("web-b", json!(100), 60.0),
        ],
    ))
    .await;
    let initial = support::mesh::raw_weights(&f.split().await);
    f.start_replica(0).await;
    f.start_replica(1).await;
    f.create_policy("web", "Enforce", json!({})).await;
    f.wait_adopted("web", &initial).await;

    // kill -9 the leader; the signals change at the same moment, so the new leader must write.
    let leader = f.wait_leader().await;
    let other = 1 - leader;
    let other_pod = f.replicas[other].pod.clone();
    let killed_at = cluster::now();
    f.replicas[leader].kill();
    f.set_latency("web-a", 300.0);
    let limit = LEASE + INTERVAL + TICK;
    let wrote = eventually(
        Duration::from_secs_f64(limit + 20.0),
        Duration::from_millis(100),
        || async {
            first_write(&f, &other_pod, killed_at)
                .ok_or_else(|| format!("no write by {other_pod} yet\n{}", f.logs()))
        },
    )
    .await;
    let after_kill = wrote - killed_at;
    eprintln!("kill -9: {other_pod} wrote {after_kill:.2} s after the leader died");
    assert!(
        after_kill <= limit,
        "the follower wrote {after_kill:.2} s after kill -9, more than lease {LEASE} s + interval {INTERVAL} s + tick {TICK} s"
    );

    // The killed replica comes back as a follower; then SIGTERM the leader.
    let old_pod = f.replicas[leader].pod.clone();
    let back = f.start_pod(&old_pod).await;
    f.replicas[leader] = back;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let current = f.wait_leader().await;
    let successor = f.replicas[1 - current].pod.clone();
    let termed_at = cluster::now();
    let exited = f.replicas[current].terminate(Duration::from_secs(10));
    f.set_latency("web-a", 20.0);
    let took = eventually(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            first_lease_write(&f, &successor, termed_at)
                .ok_or_else(|| format!("{successor} has not taken the lease\n{}", f.logs()))
        },
    )
    .await
        - termed_at;
    eprintln!(
        "SIGTERM: {successor} took the lease {took:.2} s later (leader exited by itself: {exited})"
    );
    assert!(exited, "the leader did not exit within 10 s of SIGTERM");
    assert!(
        took <= 2.0,
        "the follower took the lease {took:.2} s after SIGTERM of the leader, more than 2 s"
    );
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            first_write(&f, &successor, termed_at)
                .ok_or_else(|| format!("no write by {successor} after the takeover"))
        },
    )
    .await;

    let bad = overlapping_writes(&f.l3_audit(), &f.release.namespace);
    assert!(
        bad.is_empty(),
        "writes by a replica that did not hold the lease:\n{}",
        bad.join("\n")
    );
}

/// Twenty rounds with three replicas on a 2 s lease: all start at once (concurrent acquire), then
/// each round the leader is killed (-9, even rounds) or terminated (SIGTERM, odd rounds) while
/// the signals change, one of the other two takes over, and the stopped one comes back to
/// compete again. No write by a replica that did
/// not hold the lease, in any round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_rounds_of_kill_and_sigterm_never_have_two_writers() {
    const ROUNDS: usize = 20;
    const SHORT_LEASE: f64 = 2.0;
    let mut f = Fixture::new(Setup {
        namespace: "l3-rounds",
        backends: vec![
            backend("web-a", json!(100), 20.0),
            backend("web-b", json!(100), 60.0),
        ],
        apps_namespace: None,
        lease: Some((SHORT_LEASE, "--api-timeout=500ms")),
        route: None,
        helm_args: Vec::new(),
    })
    .await;
    let initial = support::mesh::raw_weights(&f.split().await);
    for i in 0..3 {
        f.start_replica(i).await;
    }
    f.create_policy("web", "Enforce", json!({"interval": "1s"}))
        .await;
    f.wait_adopted("web", &initial).await;
    let mut kills = Vec::new();
    let mut terms = Vec::new();
    for round in 0..ROUNDS {
        let leader = f.wait_leader().await;
        let pod = f.replicas[leader].pod.clone();
        f.set_latency("web-a", if round % 2 == 0 { 300.0 } else { 20.0 });
        let at = cluster::now();
        if round % 2 == 0 {
            f.replicas[leader].kill();
        } else {
            assert!(
                f.replicas[leader].terminate(Duration::from_secs(10)),
                "round {round}: {pod} did not exit within 10 s of SIGTERM"
            );
        }
        // One of the two others takes the lease.
        let took = eventually(
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async {
                f.l3_audit()
                    .into_iter()
                    // The first Lease write after the event: a takeover (or, after SIGTERM, the
                    // release itself, then the takeover right after it).
                    .filter(|e| e.at > at && e.is_write() && e.resource == "leases")
                    .filter(|e| e.pod.as_deref() != Some(pod.as_str()))
                    .map(|e| e.at)
                    .reduce(f64::min)
                    .ok_or_else(|| format!("round {round}: nobody wrote the lease\n{}", f.logs()))
            },
        )
        .await
            - at;
        if round % 2 == 0 {
            kills.push(took);
        } else {
            terms.push(took);
        }
        // The stopped replica comes back (a container restart: same pod name) and competes.
        f.replicas[leader] = f.start_pod(&pod).await;
        // Let the new leader write.
        tokio::time::sleep(Duration::from_secs_f64(SHORT_LEASE)).await;
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        format!(
            "median {:.2} s, max {:.2} s",
            v[v.len() / 2],
            v[v.len() - 1]
        )
    };
    eprintln!(
        "lease written again after kill -9: {}; after SIGTERM: {}",
        stats(&mut kills),
        stats(&mut terms)
    );
    let writers: std::collections::BTreeSet<String> = f
        .l3_audit()
        .iter()
        .filter(|e| e.is_write() && LEADER_ONLY.contains(&e.resource.as_str()))
        .filter_map(|e| e.pod.clone())
        .collect();
    eprintln!("replicas that wrote as leaders: {writers:?}");
    assert!(writers.len() >= 2, "leadership never moved: {writers:?}");
    let bad = overlapping_writes(&f.l3_audit(), &f.release.namespace);
    assert!(
        bad.is_empty(),
        "writes by a replica that did not hold the lease:\n{}",
        bad.join("\n")
    );
}
