//! Leader election against kube-fake-client: one holder at a time, and a leader whose renewals
//! fail stops writing before the lease could pass to anyone else.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kube_fake_client::ClientBuilder;
use l3::operator::leader::{self, Leadership, LeaseSettings};
use l3::operator::metrics::Metrics;

fn settings(holder: &str, ttl: Duration) -> LeaseSettings {
    LeaseSettings {
        namespace: "l3-system".into(),
        name: "l3-operator".into(),
        holder: holder.into(),
        ttl,
    }
}

async fn wait_for(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn only_one_replica_leads() {
    let client = ClientBuilder::new().build().await.unwrap();
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    let ttl = Duration::from_secs(3);
    let a = Leadership::follower();
    let b = Leadership::follower();
    let ta = tokio::spawn(leader::run(
        client.clone(),
        settings("a", ttl),
        a.clone(),
        metrics.clone(),
    ));
    wait_for("a leads", Duration::from_secs(3), || a.is_leader()).await;
    let tb = tokio::spawn(leader::run(
        client.clone(),
        settings("b", ttl),
        b.clone(),
        metrics.clone(),
    ));
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(a.is_leader() && !b.is_leader(), "exactly one leader");
    }
    ta.abort();
    tb.abort();
}

#[tokio::test]
async fn a_leader_that_cannot_renew_stops_writing_before_the_lease_expires() {
    let broken = Arc::new(AtomicBool::new(false));
    let flag = broken.clone();
    let client = ClientBuilder::new()
        .with_interceptor_funcs(kube_fake_client::interceptor::Funcs::new().patch(move |_| {
            if flag.load(Ordering::Relaxed) {
                return Err(kube_fake_client::Error::Internal(
                    "api server unreachable".into(),
                ));
            }
            Ok(None)
        }))
        .build()
        .await
        .unwrap();
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    let ttl = Duration::from_secs(3);
    let a = Leadership::follower();
    let task = tokio::spawn(leader::run(client, settings("a", ttl), a.clone(), metrics));
    wait_for("a leads", Duration::from_secs(3), || a.is_leader()).await;
    // Let it renew at least once, then cut it off.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(a.is_leader());
    broken.store(true, Ordering::Relaxed);
    let cut = Instant::now();
    // The last good renewal started before `cut`; others may take the lease 3 s after it at the
    // earliest. l3 gives up leadership 2 s after that renewal started.
    wait_for("leadership lapses", Duration::from_millis(2300), || {
        !a.is_leader()
    })
    .await;
    assert!(
        cut.elapsed() < ttl,
        "stopped {:?} after the cut",
        cut.elapsed()
    );
    task.abort();
}
