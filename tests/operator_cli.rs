//! `l3 run` and `l3 crdgen` as a user meets them.

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
