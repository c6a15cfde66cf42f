//! No write storms: many policies on noisy but steady signals, measured from the API server's
//! audit log. Goal: at most 2 writes per policy per minute, splits and status together.
//!
//! `make test` runs 20 policies for 60 s; `L3_STORM_POLICIES` and `L3_STORM_SECS` scale it
//! (the figures in the README come from 100 policies over 5 minutes), and `L3_BIN` runs another
//! l3 binary (e.g. an older build, for a before/after comparison).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use kube::ResourceExt;
use serde_json::json;
use support::cluster;
use support::eventually;
use support::fixture::{Fixture, ORIGINALS, Setup, backend};
use support::mesh::{self, Mesh};

/// Relative noise of every backend's rate and latency between scrapes.
const JITTER: f64 = 0.03;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number"))
        })
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noisy_steady_signals_stay_under_two_writes_per_policy_per_minute() {
    let policies = env_or("L3_STORM_POLICIES", 20);
    let secs = env_or("L3_STORM_SECS", 60) as f64;
    let mut f = Fixture::new(Setup::new(
        "l3-storm",
        vec![backend("unused", json!(1), 10.0)],
    ))
    .await;
    // One split of three backends per policy, each following its own weights.
    let mut meshes: Vec<Mesh> = Vec::new();
    for i in 0..policies {
        let name = format!("s{i}");
        let backends: Vec<(String, f64)> = [("a", 20.0), ("b", 40.0), ("c", 80.0)]
            .iter()
            .map(|(b, ms)| (format!("s{i}-{b}"), *ms))
            .collect();
        let weights: Vec<(&str, serde_json::Value)> = backends
            .iter()
            .map(|(s, _)| (s.as_str(), json!(100)))
            .collect();
        mesh::create_split(&f.admin, &f.ns, &name, &weights).await;
        let profiles = backends
            .iter()
            .map(|(s, ms)| (s.clone(), mesh::steady(*ms)))
            .collect();
        meshes.push(Mesh::follow(
            &f.admin,
            &f.exporter,
            &f.ns,
            &name,
            100.0,
            profiles,
        ));
        for (s, _) in &backends {
            f.exporter.set_jitter(&f.ns, s, JITTER);
        }
    }
    f.start_replica(0).await;
    f.start_replica(1).await;
    for i in 0..policies {
        f.create_policy(
            &format!("p{i}"),
            "Enforce",
            json!({"targetRef": {"kind": "TrafficSplit", "name": format!("s{i}")}, "interval": "5s"}),
        )
        .await;
    }
    // Every split adopted, then 90 s for the filters to leave their start values (latency 5 s,
    // RPS 0) and the mesh to follow the weights.
    eventually(Duration::from_secs(180), Duration::from_secs(1), || async {
        let list = mesh::splits(&f.admin, &f.ns)
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let adopted = list
            .items
            .iter()
            .filter(|s| s.annotations().contains_key(ORIGINALS))
            .count();
        if adopted >= policies {
            Ok(())
        } else {
            Err(format!(
                "{adopted} of {policies} splits adopted\n{}",
                f.logs()
            ))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(90)).await;

    let from = cluster::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let to = cluster::now();
    let minutes = (to - from) / 60.0;
    let window: Vec<_> = f
        .l3_audit()
        .into_iter()
        .filter(|e| e.at >= from && e.at < to && e.is_write())
        .collect();
    let mut per_policy: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for e in &window {
        match (e.resource.as_str(), e.subresource.as_str()) {
            ("trafficsplits", "") => {
                let p = format!("p{}", e.name.trim_start_matches('s'));
                per_policy.entry(p).or_default().0 += 1;
            }
            ("latencypolicies", "status") => per_policy.entry(e.name.clone()).or_default().1 += 1,
            _ => {}
        }
    }
    let splits: usize = per_policy.values().map(|v| v.0).sum();
    let statuses: usize = per_policy.values().map(|v| v.1).sum();
    let n = policies as f64;
    let mean = (splits + statuses) as f64 / n / minutes;
    let max = per_policy
        .values()
        .map(|(a, b)| (a + b) as f64 / minutes)
        .fold(0.0, f64::max);
    eprintln!(
        "{policies} policies, ±{:.0} % noise, {:.1} min: per policy per minute: splits {:.2}, status {:.2}, together {mean:.2} (max {max:.2})",
        JITTER * 100.0,
        minutes,
        splits as f64 / n / minutes,
        statuses as f64 / n / minutes,
    );
    eprintln!("all requests per minute (audit log):");
    for (k, c) in
        cluster::count_by_verb_resource(f.l3_audit().iter().filter(|e| e.at >= from && e.at < to))
    {
        eprintln!("  {k:<40} {:.1}", c as f64 / minutes);
    }
    assert!(
        mean <= 2.0,
        "{mean:.2} writes per policy per minute (splits and status together), more than 2"
    );
}
