//! Leader election against kube-fake-client and a tower-test mock: one holder at a time, a
//! leader whose renewals fail stops writing before the lease could pass to anyone else, a renew
//! is believed only when a fresh read confirms it, a released lease passes on within about a
//! second, and the actuator writes only within the leadership deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::client::Body;
use kube_fake_client::ClientBuilder;
use l3::operator::Error;
use l3::operator::actuator::Actuator;
use l3::operator::crd::LatencyPolicyStatus;
use l3::operator::leader::{self, Leadership, LeaseSettings};
use l3::operator::metrics::Metrics;
use l3::operator::trafficsplit::SplitVersion;
use serde_json::{Value, json};

fn settings(holder: &str, ttl: Duration) -> LeaseSettings {
    LeaseSettings {
        namespace: "l3-system".into(),
        name: "l3-operator".into(),
        holder: holder.into(),
        ttl,
    }
}

/// Run the election for `holder` until the test aborts it.
fn elect(
    client: kube::Client,
    holder: &str,
    ttl: Duration,
    leadership: &Leadership,
    metrics: &Metrics,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(leader::run(
        client,
        settings(holder, ttl),
        leadership.clone(),
        metrics.clone(),
        std::future::pending(),
    ))
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
    let ta = elect(client.clone(), "a", ttl, &a, &metrics);
    wait_for("a leads", Duration::from_secs(3), || a.is_leader()).await;
    let tb = elect(client.clone(), "b", ttl, &b, &metrics);
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
    let task = elect(client, "a", ttl, &a, &metrics);
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

fn lease_held_by(holder: &str, ttl_secs: i32) -> Lease {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "l3-operator", "namespace": "l3-system", "resourceVersion": "1"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": ttl_secs,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0,
        },
    }))
    .unwrap()
}

fn holder_of(l: &Lease) -> String {
    l.spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

/// A Lease-only API server: GET answers the lease, PATCH merges `spec` into it and bumps the
/// resourceVersion. With `steal`, another replica's write lands right after each of our
/// patches, so only the confirming read can see it.
fn lease_api(lease: Lease, steal: bool) -> kube::Client {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        let mut lease = serde_json::to_value(&lease).unwrap();
        let mut rv = 1u64;
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().clone();
            let bytes = req.into_body().collect_bytes().await.unwrap().to_vec();
            let reply = if method == http::Method::PATCH {
                let patch: Value = serde_json::from_slice(&bytes).unwrap();
                for (k, v) in patch["spec"].as_object().unwrap() {
                    lease["spec"][k] = v.clone();
                }
                rv += 1;
                lease["metadata"]["resourceVersion"] = json!(rv.to_string());
                let answer = lease.clone();
                if steal {
                    rv += 1;
                    lease["spec"]["holderIdentity"] = json!("b");
                    lease["metadata"]["resourceVersion"] = json!(rv.to_string());
                }
                answer
            } else {
                lease.clone()
            };
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
    });
    kube::Client::new(svc, "l3-system")
}

#[tokio::test]
async fn a_renew_whose_confirming_read_shows_another_holder_does_not_lead() {
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    let ttl = Duration::from_secs(3);
    // Control: the same renew, confirmed, leads.
    let ok = Leadership::follower();
    let t = tokio::spawn(leader::run(
        lease_api(lease_held_by("a", 3), false),
        settings("a", ttl),
        ok.clone(),
        metrics.clone(),
        std::future::pending(),
    ));
    wait_for("a confirmed renew leads", Duration::from_secs(2), || {
        ok.is_leader()
    })
    .await;
    t.abort();

    let stolen = Leadership::follower();
    let t = tokio::spawn(leader::run(
        lease_api(lease_held_by("a", 3), true),
        settings("a", ttl),
        stolen.clone(),
        metrics,
        std::future::pending(),
    ));
    for _ in 0..20 {
        assert!(
            !stolen.is_leader(),
            "the renew reported success but the lease belongs to b"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.abort();
}

#[tokio::test]
async fn a_released_lease_passes_to_the_follower_within_about_a_second() {
    let client = ClientBuilder::new().build().await.unwrap();
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    let ttl = Duration::from_secs(15);
    let a = Leadership::follower();
    let b = Leadership::follower();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ta = tokio::spawn(leader::run(
        client.clone(),
        settings("a", ttl),
        a.clone(),
        metrics.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    wait_for("a leads", Duration::from_secs(3), || a.is_leader()).await;
    let tb = elect(client.clone(), "b", ttl, &b, &metrics);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(a.is_leader() && !b.is_leader());
    // SIGTERM: a stops writing at once and releases the lease.
    stop.send(()).unwrap();
    let released = Instant::now();
    wait_for("a stops", Duration::from_millis(200), || !a.is_leader()).await;
    ta.await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client, "l3-system");
    let l = leases.get("l3-operator").await.unwrap();
    assert!(holder_of(&l) == "b" || holder_of(&l).is_empty(), "{l:?}");
    wait_for("b takes over", Duration::from_millis(2500), || {
        b.is_leader()
    })
    .await;
    assert!(
        released.elapsed() < Duration::from_secs(2),
        "took {:?}, far less than the 15 s lease",
        released.elapsed()
    );
    tb.abort();
}

#[tokio::test]
async fn followers_of_a_dead_leader_take_over_one_at_a_time() {
    let client = ClientBuilder::new()
        .with_object(lease_held_by("dead", 1))
        .build()
        .await
        .unwrap();
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    let ttl = Duration::from_secs(3);
    let b = Leadership::follower();
    let c = Leadership::follower();
    let tb = elect(client.clone(), "b", ttl, &b, &metrics);
    let tc = elect(client.clone(), "c", ttl, &c, &metrics);
    // The dead holder's 1 s lease, seen unchanged for 1 s on the followers' own clocks.
    wait_for("someone takes over", Duration::from_secs(3), || {
        b.is_leader() || c.is_leader()
    })
    .await;
    for _ in 0..30 {
        assert!(!(b.is_leader() && c.is_leader()), "two leaders");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tb.abort();
    tc.abort();
}

#[tokio::test]
async fn the_actuator_refuses_writes_without_leadership_and_cuts_them_at_the_deadline() {
    // An API server that never answers: only the deadline can end the write.
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        let mut parked = Vec::new();
        while let Some((_, send)) = handle.next_request().await {
            seen.fetch_add(1, Ordering::Relaxed);
            parked.push(send);
        }
    });
    let client = kube::Client::new(svc, "default");
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    let status = LatencyPolicyStatus::default();
    let follower = Actuator::new(
        client.clone(),
        SplitVersion::V1alpha1,
        metrics.clone(),
        Duration::from_secs(4),
    )
    .with_leadership(Leadership::follower());
    let e = follower
        .write_status("shop", "web", &status)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotLeader("status")), "{e:?}");
    assert_eq!(requests.load(Ordering::Relaxed), 0, "no request was sent");

    // A leader with 300 ms left and a 4 s API timeout: the write ends at the deadline.
    let leader = Leadership::follower();
    leader.lead_until(Instant::now() + Duration::from_millis(300));
    let actuator = Actuator::new(
        client,
        SplitVersion::V1alpha1,
        metrics,
        Duration::from_secs(4),
    )
    .with_leadership(leader);
    let start = Instant::now();
    let e = actuator
        .write_status("shop", "web", &status)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::LeaseDeadline("status")), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_millis(600),
        "{:?}",
        start.elapsed()
    );
    assert!(e.to_string().contains("lease deadline"), "{e}");
}
