//! `l3 run` and `l3 crdgen` as a user meets them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn l3(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_l3"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the l3 binary runs")
}

#[test]
fn run_help_documents_every_flag_and_its_env_var() {
    let out = l3(&["run", "--help"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for (flag, env) in [
        ("--prometheus-url", "L3_PROMETHEUS_URL"),
        ("--lease-namespace", "L3_LEASE_NAMESPACE"),
        ("--lease-name", "L3_LEASE_NAME"),
        ("--lease-duration", "L3_LEASE_DURATION"),
        ("--metrics-addr", "L3_METRICS_ADDR"),
        ("--probe-addr", "L3_PROBE_ADDR"),
        ("--log-format", "L3_LOG_FORMAT"),
        ("--watch-namespace", "L3_WATCH_NAMESPACES"),
        ("--api-timeout", "L3_API_TIMEOUT"),
        ("--status-interval", "L3_STATUS_INTERVAL"),
    ] {
        assert!(text.contains(flag), "{flag} missing:\n{text}");
        assert!(text.contains(env), "{env} missing:\n{text}");
    }
    assert!(text.contains("0.0.0.0:8080") && text.contains("0.0.0.0:8081"));
}

#[test]
fn restore_insists_on_all() {
    let out = l3(&["restore"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--all"));
    let help = l3(&["restore", "--help"], &[]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--namespace"));
}

#[test]
fn bad_flag_values_are_refused_with_the_flag_named() {
    let out = l3(&["run", "--log-format", "xml"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-format"));
    let out = l3(&["run"], &[("L3_METRICS_ADDR", "not-an-address")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--metrics-addr"));
    let out = l3(&["run", "--lease-duration", "soon"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--lease-duration") && err.contains("\"soon\""),
        "{err}"
    );
}

/// `l3 run` with `args`, expected to be refused before it talks to any cluster; its stderr.
fn refused(args: &[&str]) -> String {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    // No kubeconfig: a refusal must come from the flags, not from a missing cluster.
    let out = l3(&all, &[("KUBECONFIG", "/nonexistent")]);
    assert!(!out.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn lease_timing_flags_are_checked_against_each_other() {
    let err = refused(&["--lease-duration", "0s"]);
    assert!(
        err.contains("--lease-duration 0s is too short") && !err.contains("is not a duration"),
        "{err}"
    );
    let err = refused(&["--lease-duration", "500ms"]);
    assert!(err.contains("--lease-duration 500ms is too short"), "{err}");
    let err = refused(&["--lease-duration", "1500ms", "--api-timeout", "100ms"]);
    assert!(err.contains("not a whole number of seconds"), "{err}");
    let err = refused(&["--lease-duration", "15s", "--api-timeout", "5s"]);
    assert!(
        err.contains("--api-timeout 5s") && err.contains("--lease-duration 15s"),
        "{err}"
    );
    let err = refused(&["--prometheus-timeout", "0s"]);
    assert!(
        err.contains("--prometheus-timeout") && err.contains("from 1ms up to 1h"),
        "{err}"
    );
    let err = refused(&["--api-timeout", "0s"]);
    assert!(
        err.contains("--api-timeout") && err.contains("no time"),
        "{err}"
    );
}

#[test]
fn crdgen_prints_the_latencypolicy_crd() {
    let out = l3(&["crdgen"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("apiVersion: apiextensions.k8s.io/v1"),
        "{text}"
    );
    assert!(text.contains("name: latencypolicies.l3.dev"));
}

/// `l3 run` with `KUBECONFIG=kubeconfig`, expected to stop before the operator starts; the
/// `error:` line of its stderr, after checking that the log carries no colour codes (stderr is a
/// pipe here, not a terminal).
fn start_refused(kubeconfig: &Path) -> String {
    let out = l3(
        &[
            "run",
            "--metrics-addr=127.0.0.1:0",
            "--probe-addr=127.0.0.1:0",
            "--lease-namespace=default",
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "l3 run started:\n{stderr}");
    assert!(stderr.contains("l3 starting"), "the log line: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe:\n{stderr}"
    );
    stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"))
        .to_owned()
}

/// A kubeconfig for `server` with a token and no CA check (nothing is ever verified here: the
/// server never answers).
fn kubeconfig_for(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n\
             \x20   insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\n\
             contexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_missing_or_broken_kubeconfig_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-kubeconfig");
    let err = start_refused(&missing);
    assert!(
        err.contains("cannot load the Kubernetes client configuration")
            && err.contains("no-such-kubeconfig")
            && err.contains("No such file")
            && err.contains("set KUBECONFIG"),
        "{err}"
    );
    let broken = dir.path().join("broken");
    std::fs::write(&broken, "apiVersion: v1\nclusters: [\n").unwrap();
    let err = start_refused(&broken);
    assert!(
        err.contains("cannot load the Kubernetes client configuration")
            && err.contains("kubeconfig"),
        "{err}"
    );
    // Valid YAML, but no cluster for its context.
    let no_cluster = dir.path().join("no-cluster");
    std::fs::write(
        &no_cluster,
        "apiVersion: v1\nkind: Config\ncurrent-context: gone\ncontexts: []\nclusters: []\n",
    )
    .unwrap();
    let err = start_refused(&no_cluster);
    assert!(
        err.contains("cannot load the Kubernetes client configuration") && err.contains("gone"),
        "{err}"
    );
}

#[test]
fn an_api_server_that_refuses_connections_is_named() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let server = format!("https://127.0.0.1:{port}");
    let err = start_refused(&kubeconfig_for(dir.path(), &server));
    assert!(
        err.contains(&format!(
            "cannot connect to the Kubernetes API server at {server}: connection refused"
        )),
        "{err}"
    );
    assert!(!err.to_lowercase().contains("smi"), "{err}");
}

#[test]
fn a_zero_status_interval_is_refused() {
    let err = refused(&["--status-interval", "0s"]);
    assert!(
        err.contains("--status-interval") && err.contains("at least 1s"),
        "{err}"
    );
}

/// On a terminal (a pseudo-terminal from `script`, util-linux) the log is coloured; the other
/// tests show that it is not in a pipe.
#[test]
fn the_log_is_coloured_only_on_a_terminal() {
    let script = ["/usr/bin/script", "/bin/script"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("`script` (util-linux, Debian package bsdutils) gives the test a terminal");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none");
    let command = format!(
        "KUBECONFIG={} {} run --lease-namespace=default",
        missing.display(),
        env!("CARGO_BIN_EXE_l3")
    );
    let out = Command::new(script)
        .args(["-qec", &command, "/dev/null"])
        .env_remove("NO_COLOR")
        .output()
        .expect("script runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("l3 starting"), "{text}");
    assert!(text.contains('\u{1b}'), "no colour on a terminal: {text:?}");
    let plain = Command::new(script)
        .args(["-qec", &command, "/dev/null"])
        .env("NO_COLOR", "1")
        .output()
        .expect("script runs");
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(
        text.contains("l3 starting") && !text.contains('\u{1b}'),
        "NO_COLOR: {text:?}"
    );
}

/// One name for the Lease: the binary's default is the chart's.
#[test]
fn the_lease_has_one_default_name_in_binary_and_chart() {
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/l3/values.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        values["leaderElection"]["leaseName"].as_str(),
        Some(l3::operator::DEFAULT_LEASE_NAME)
    );
    let help = l3(&["run", "--help"], &[]);
    assert!(
        String::from_utf8_lossy(&help.stdout)
            .contains(&format!("[default: {}]", l3::operator::DEFAULT_LEASE_NAME)),
        "run --help shows the default Lease name"
    );
}

/// `l3 restore` runs the same start-up checks: an unreachable API server is named as such, not
/// blamed on the discovery of the TrafficSplit API group.
#[test]
fn restore_names_an_unreachable_api_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_for(dir.path(), &format!("https://127.0.0.1:{port}"));
    let out = l3(
        &["restore", "--all"],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("connection refused") && !err.contains("split.smi-spec.io"),
        "{err}"
    );
}
