//! l3's watches against a real control plane that loses its history and its API server: after
//! an etcd compaction and a kill -9 of kube-apiserver (restarted on the same port with the same
//! data), l3 carries on without a restart. It reacts to new signals, picks up a policy created
//! after the restart, and never adopts a split a second time.
//!
//! Its own binary (and so its own control plane), since it kills the API server.

mod support;

use std::time::Duration;

use kube::ResourceExt;
use serde_json::json;
use support::eventually;
use support::fixture::{Fixture, ORIGINALS, Setup, backend};
use support::mesh;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_survive_compaction_and_an_apiserver_kill() {
    let mut f = Fixture::new(Setup::new(
        "l3-watch",
        vec![
            backend("web-a", json!(100), 20.0),
            backend("web-b", json!(100), 40.0),
        ],
    ))
    .await;
    let initial = mesh::raw_weights(&f.split().await);
    f.start_replica(0).await;
    f.create_policy("web", "Enforce", json!({})).await;
    let ann = f.wait_adopted("web", &initial).await;
    let pid = f.replicas[0].pid();

    let rev = f.cp.compact_etcd().await;
    eprintln!("etcd compacted at revision {rev}");
    f.cp.restart_apiserver_hard().await;
    eprintln!("kube-apiserver killed (-9) and restarted");

    // Still the same process, and it still acts: web-a made slow loses the majority.
    f.set_latency("web-a", 400.0);
    eventually(mesh::SETTLE, Duration::from_millis(250), || async {
        let a = f.share("web-a").await;
        if a < 0.3 {
            Ok(())
        } else {
            Err(format!(
                "web-a share {a:.3} after the restart\n{}",
                f.logs()
            ))
        }
    })
    .await;
    assert!(
        f.replicas[0].running(),
        "l3 exited after the API server restart"
    );
    assert_eq!(f.replicas[0].pid(), pid);

    // The policy watch resumed: a policy created now is acted on (Conflict, since an older
    // policy owns the split).
    f.create_policy("web-late", "Enforce", json!({})).await;
    eventually(mesh::SETTLE, Duration::from_millis(250), || async {
        let p = f
            .policies()
            .get("web-late")
            .await
            .map_err(|e| e.to_string())?;
        let conflict = p
            .status
            .iter()
            .flat_map(|s| s.conditions.iter())
            .any(|c| c.type_ == "Conflict" && c.status == "True");
        if conflict {
            Ok(())
        } else {
            Err(format!("web-late status {:?}\n{}", p.status, f.logs()))
        }
    })
    .await;

    // No second adoption: the recorded originals are the very first ones.
    let split = f.split().await;
    assert_eq!(split.annotations().get(ORIGINALS), Some(&ann));
    let log = f.replicas[0].log_text();
    eprintln!(
        "l3 log lines mentioning watch errors after the restart: {}",
        log.lines().filter(|l| l.contains("watch")).count()
    );
}
