//! l3 installed for real into the test control plane: `charts/l3` by the real helm (every
//! rendered object validated server-side), two Pod objects standing for the Deployment's
//! replicas (there is no kubelet, so they never run), and the real `l3 run` binary started as
//! child processes with the Deployment's own arguments, each authenticated by a TokenRequest
//! token of the chart's ServiceAccount bound to its Pod, so the audit log tells the replicas
//! apart (`user.extra["authentication.kubernetes.io/pod-name"]`) and RBAC is exactly the
//! chart's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::json;

use super::cluster::{self, ControlPlane};
use super::prometheus::free_port;

/// The helm binary `make tools-helm` installs.
pub fn helm() -> PathBuf {
    let p = cluster::repo().join(".tools/bin/helm");
    assert!(
        p.is_file(),
        "{} is missing: install it with `make tools-helm` (part of `make test`)",
        p.display()
    );
    p
}

/// Create a namespace (admin).
pub async fn create_namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create namespace {name}: {e}"),
    }
}

/// helm keeps a cache and config per user; keep them inside the run directory, one per
/// release.
fn helm_env(cmd: &mut Command, cp: &ControlPlane, ns: &str) {
    let home = cp.dir.join(format!("helm-{ns}"));
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
}

/// A helm release of `charts/l3` and the identities of its replicas.
pub struct Release {
    /// The release (and lease) namespace.
    pub namespace: String,
    /// The ServiceAccount's user name in the audit log.
    pub user: String,
    /// The chart's ServiceAccount.
    pub service_account: String,
    /// The container arguments of the chart's Deployment.
    pub args: Vec<String>,
    /// `RUST_LOG` of the chart's Deployment.
    pub rust_log: String,
    dir: PathBuf,
}

/// How to install the chart.
pub struct Install<'a> {
    /// Release and lease namespace (created); also the release name, so that the chart's
    /// cluster-scoped objects (ClusterRole, ClusterRoleBinding) of parallel tests differ. It
    /// must contain `l3` so that the chart's full name is the release name.
    pub namespace: &'a str,
    /// Extra helm arguments, e.g. `--set=prometheus.url=...`.
    pub helm_args: Vec<String>,
}

impl Release {
    /// `helm install l3 charts/l3` into `namespace`, then read back the Deployment it made.
    pub async fn install(cp: &ControlPlane, install: Install<'_>) -> Release {
        let client = cp.client().await;
        let ns = install.namespace;
        create_namespace(&client, ns).await;
        let mut cmd = Command::new(helm());
        assert!(
            ns.contains("l3"),
            "release namespace {ns:?} must contain `l3`"
        );
        cmd.arg("install")
            .arg(ns)
            .arg(cluster::repo().join("charts/l3"))
            .arg(format!("--namespace={ns}"))
            .arg(format!("--kubeconfig={}", cp.admin_kubeconfig.display()))
            .arg("--timeout=60s");
        cmd.args(&install.helm_args);
        helm_env(&mut cmd, cp, ns);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("helm task")
            .expect("run helm");
        assert!(
            out.status.success(),
            "helm install failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deploy: Deployment = Api::namespaced(client.clone(), ns)
            .get(ns)
            .await
            .expect("the chart's Deployment");
        let spec = deploy.spec.and_then(|s| s.template.spec).expect("pod spec");
        let container = spec.containers.first().expect("a container").clone();
        let service_account = spec.service_account_name.expect("serviceAccountName");
        let rust_log = container
            .env
            .unwrap_or_default()
            .into_iter()
            .find(|e| e.name == "RUST_LOG")
            .and_then(|e| e.value)
            .unwrap_or_else(|| "info".into());
        let dir = cp.dir.join(format!("release-{ns}"));
        std::fs::create_dir_all(&dir).expect("release dir");
        Release {
            namespace: ns.to_owned(),
            user: format!("system:serviceaccount:{ns}:{service_account}"),
            service_account,
            args: container.args.unwrap_or_default(),
            rust_log,
            dir,
        }
    }

    /// `helm uninstall` the release (waiting for its objects to be deleted); returns helm's
    /// output, failing the test if helm fails.
    pub async fn uninstall(&self, cp: &ControlPlane) -> String {
        let ns = &self.namespace;
        let mut cmd = Command::new(helm());
        cmd.arg("uninstall")
            .arg(ns)
            .arg(format!("--namespace={ns}"))
            .arg(format!("--kubeconfig={}", cp.admin_kubeconfig.display()))
            .arg("--wait")
            .arg("--timeout=60s");
        helm_env(&mut cmd, cp, ns);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("helm task")
            .expect("run helm");
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "helm uninstall failed:\n{text}");
        text
    }

    /// A Pod object for replica `pod` (never scheduled) and a kubeconfig with a token of the
    /// chart's ServiceAccount bound to it.
    pub async fn identity(&self, cp: &ControlPlane, pod: &str) -> PathBuf {
        let client = cp.client().await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &self.namespace);
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": pod, "labels": {"app.kubernetes.io/name": "l3"}},
            "spec": {
                "serviceAccountName": self.service_account,
                "containers": [{"name": "l3", "image": "l3:test"}],
            },
        }))
        .expect("pod");
        let created = match pods.create(&PostParams::default(), &p).await {
            Ok(p) => p,
            Err(kube::Error::Api(s)) if s.code == 409 => pods.get(pod).await.expect("get pod"),
            Err(e) => panic!("create pod {pod}: {e}"),
        };
        let uid = created.metadata.uid.expect("pod uid");
        let tr: TokenRequest = serde_json::from_value(json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [],
                "expirationSeconds": 3600,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": uid},
            }
        }))
        .expect("token request");
        let sas: Api<ServiceAccount> = Api::namespaced(client, &self.namespace);
        let answer: TokenRequest = sas
            .create_subresource("token", &self.service_account, &PostParams::default(), &tr)
            .await
            .expect("TokenRequest for the chart's ServiceAccount");
        let token = answer.status.expect("token status").token;
        let path = self.dir.join(format!("{pod}.kubeconfig"));
        cluster::write_kubeconfig(&path, &cp.url, &cp.dir.join("ca.crt"), &token);
        path
    }

    /// Start `l3 run` as replica `pod` with the Deployment's arguments; only the listen
    /// addresses are changed (to free loopback ports). An `extra` argument `--flag=value`
    /// replaces the chart's `--flag=...`, or is appended.
    pub async fn start(&self, cp: &ControlPlane, pod: &str, extra: &[&str]) -> Replica {
        let kubeconfig = self.identity(cp, pod).await;
        let log = self.dir.join(format!("{pod}.log"));
        // A free port can be taken by another process between `free_port` and l3's bind: then
        // l3 exits at once saying so, and is started again on other ports.
        for _attempt in 0..3 {
            let metrics = free_port();
            let probes = free_port();
            let before = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
            let mut replica = Replica {
                child: self.spawn(pod, &kubeconfig, extra, metrics, probes),
                pod: pod.to_owned(),
                log: log.clone(),
                metrics: format!("http://127.0.0.1:{metrics}"),
                probes: format!("http://127.0.0.1:{probes}"),
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            loop {
                let text = replica.log_text();
                let new = text.get(before..).unwrap_or("");
                if new.contains("l3 operator started") || std::time::Instant::now() > deadline {
                    return replica;
                }
                if !replica.running() {
                    if new.contains("Address already in use") {
                        break;
                    }
                    // Exited for another reason: the test looks at that.
                    return replica;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("l3 run as {pod} found no free listen ports in 3 attempts");
    }

    fn spawn(
        &self,
        pod: &str,
        kubeconfig: &Path,
        extra: &[&str],
        metrics: u16,
        probes: u16,
    ) -> Child {
        let flag = |a: &str| {
            a.split_once('=')
                .map_or(a.to_owned(), |(f, _)| f.to_owned())
        };
        let overridden: Vec<String> = extra.iter().map(|a| flag(a)).collect();
        let args: Vec<String> = self
            .args
            .iter()
            .filter(|a| !overridden.contains(&flag(a)))
            .map(|a| {
                if a.starts_with("--metrics-addr=") {
                    format!("--metrics-addr=127.0.0.1:{metrics}")
                } else if a.starts_with("--probe-addr=") {
                    format!("--probe-addr=127.0.0.1:{probes}")
                } else {
                    a.clone()
                }
            })
            .chain(extra.iter().map(|s| (*s).to_owned()))
            .collect();
        // L3_BIN runs another build (a before/after comparison); by default the one under test.
        let bin = std::env::var("L3_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_l3").to_owned());
        let mut cmd = cluster::logged(&self.dir, &format!("{pod}.log"), bin);
        cmd.args(&args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", &self.rust_log)
            .env("POD_NAME", pod)
            .env("POD_NAMESPACE", &self.namespace)
            .env_remove("HOSTNAME");
        cluster::spawn(cmd).expect("start l3 run")
    }
}

/// A running `l3 run` process, killed on drop.
pub struct Replica {
    child: Child,
    /// Its pod name (Lease holder identity).
    pub pod: String,
    /// Its log file.
    pub log: PathBuf,
    /// Base URL of `/metrics`.
    pub metrics: String,
    /// Base URL of `/healthz` and `/readyz`.
    pub probes: String,
}

impl Replica {
    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (bounded) for it to exit; returns whether it exited by itself.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        cluster::signal(&self.child, libc::SIGTERM);
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- log of {} ---\n{}",
                self.pod,
                cluster::tail(&self.log, 80)
            );
        }
    }
}
