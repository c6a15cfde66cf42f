//! `l3 run` refuses to start, naming the cause and exiting non-zero, when the real API server
//! (tests/support/cluster.rs) cannot be used: a certificate authority that did not sign its
//! certificate (TLS), a token it does not know (401), a valid ServiceAccount token without RBAC
//! (403); and when Prometheus cannot be reached, or refuses l3's credentials, although the API
//! server can be used. The log on a pipe carries no colour codes.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::cluster::{ControlPlane, write_kubeconfig};
use support::prometheus::free_port;
use support::release::create_namespace;

/// How long `l3 run` may take to give up; it must not be still running then.
const LIMIT: Duration = Duration::from_secs(60);

/// `l3 run` with `kubeconfig` and `args`; fails the test if it is still running after [`LIMIT`].
fn l3_run(kubeconfig: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_l3"))
        .arg("run")
        .args([
            "--metrics-addr=127.0.0.1:0",
            "--probe-addr=127.0.0.1:0",
            "--lease-namespace=default",
        ])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start l3 run");
    let started = Instant::now();
    while child.try_wait().expect("wait for l3").is_none() {
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let out = child.wait_with_output().expect("l3 output");
            panic!(
                "l3 run {args:?} was still running after {LIMIT:?}; it must stop and say why:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("l3 output")
}

/// `l3 run` failed with an error line containing every one of `needles`; the error line.
fn refused_with(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "l3 run exited 0:\n{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a log that is not a terminal:\n{stderr}"
    );
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error:` line:\n{stderr}"));
    for n in needles {
        assert!(error.contains(n), "{n:?} missing from:\n{error}");
    }
    eprintln!("{error}");
    error.to_owned()
}

#[test]
fn a_certificate_authority_that_did_not_sign_the_server_is_a_tls_failure() {
    let cp = ControlPlane::shared();
    let dir = tempfile::tempdir().unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("a CA");
    let ca = dir.path().join("other-ca.crt");
    std::fs::write(&ca, other.cert.pem()).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(&kubeconfig, &cp.url, &ca, "any-token");
    let out = l3_run(&kubeconfig, &[]);
    refused_with(
        &out,
        &[
            "TLS handshake with the Kubernetes API server",
            &cp.url,
            "certificate",
            "certificate-authority",
        ],
    );
}

#[test]
fn a_token_the_api_server_does_not_know_is_named_401() {
    let cp = ControlPlane::shared();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(
        &kubeconfig,
        &cp.url,
        &cp.dir.join("ca.crt"),
        "not-a-valid-token",
    );
    let out = l3_run(&kubeconfig, &[]);
    refused_with(
        &out,
        &["401 Unauthorized", &cp.url, "rejected l3's credentials"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_without_rbac_is_named_403() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = "l3-startup";
    create_namespace(&client, ns).await;
    let sas: Api<ServiceAccount> = Api::namespaced(client, ns);
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "no-rbac"}})).unwrap();
    match sas.create(&PostParams::default(), &sa).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create ServiceAccount: {e}"),
    }
    let tr: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"audiences": [], "expirationSeconds": 3600},
    }))
    .unwrap();
    let answer: TokenRequest = sas
        .create_subresource("token", "no-rbac", &PostParams::default(), &tr)
        .await
        .expect("TokenRequest");
    let token = answer.status.expect("token").token;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(&kubeconfig, &cp.url, &cp.dir.join("ca.crt"), &token);
    let out = tokio::task::spawn_blocking(move || {
        let out = l3_run(&kubeconfig, &[]);
        drop(dir);
        out
    })
    .await
    .unwrap();
    refused_with(
        &out,
        &[
            "403 Forbidden",
            "forbids l3 to list LatencyPolicies",
            "system:serviceaccount:l3-startup:no-rbac",
            "RBAC the chart installs",
        ],
    );
    // Scoped to a namespace (--watch-namespace): the namespace is named.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(&kubeconfig, &cp.url, &cp.dir.join("ca.crt"), &token);
    let out =
        tokio::task::spawn_blocking(move || l3_run(&kubeconfig, &["--watch-namespace=l3-startup"]))
            .await
            .unwrap();
    refused_with(&out, &["403 Forbidden", "in namespace l3-startup"]);
}

#[test]
fn prometheus_unreachable_at_start_is_named() {
    let cp = ControlPlane::shared();
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = l3_run(
        &cp.admin_kubeconfig,
        &[
            &format!("--prometheus-url={url}"),
            "--prometheus-timeout=2s",
        ],
    );
    let error = refused_with(&out, &["Prometheus at", &url, "--prometheus-url"]);
    assert!(
        error.to_lowercase().contains("connection refused")
            || error.contains("cannot connect to prometheus"),
        "{error}"
    );
}

/// A Prometheus that refuses l3's credentials (401) is named at start with the flags to check.
/// (A loopback fake: only the status code matters, and a real Prometheus has no authentication.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_refusing_the_credentials_is_named() {
    let cp = ControlPlane::shared();
    let server = support::fake::FakeServer::start(std::sync::Arc::new(|_| {
        Box::pin(async {
            support::fake::Reply {
                status: 401,
                body: "Unauthorized".into(),
                delay: Duration::ZERO,
            }
        })
    }))
    .await;
    let url = server.url();
    let kubeconfig = cp.admin_kubeconfig.clone();
    let flag = format!("--prometheus-url={url}");
    let out = tokio::task::spawn_blocking(move || l3_run(&kubeconfig, &[&flag]))
        .await
        .unwrap();
    refused_with(
        &out,
        &[
            "Prometheus at",
            &url,
            "refused l3's credentials (HTTP 401",
            "--prometheus-bearer-token-file",
        ],
    );
    assert_eq!(server.requests().len(), 1, "one start-up query");
}
