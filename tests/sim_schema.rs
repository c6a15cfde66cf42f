//! Scenario schema errors: unknown fields, malformed series, invalid values, and the binary's
//! exit status on a malformed file.

use std::process::Command;

use l3::sim::{Scenario, builtin};

const GOOD: &str = r#"
name: tiny
duration: 20
warmup: 0
clusters: [a, b]
rtt_ms: [[0.5, 10], [10, 0.5]]
clients:
  - {name: c, cluster: a, rps: 50}
backends:
  - {name: x, cluster: a, concurrency: 4, p50_ms: 5, p99_ms: 20}
  - {name: y, cluster: b, concurrency: 4, p50_ms: [[0, 5], [10, 50]], p99_ms: [[0, 20], [10, 200]]}
"#;

fn err(text: &str) -> String {
    match Scenario::from_yaml(text, "test.yaml") {
        Ok(_) => panic!("scenario was accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_reference_scenario_parses() {
    let sc = Scenario::from_yaml(GOOD, "test.yaml").unwrap();
    assert_eq!(sc.backends[1].p50_ms.at(5.0), 27.5);
    assert_eq!(
        sc.backends[0].replicas, 3,
        "replicas default to the paper's 3"
    );
}

#[test]
fn every_builtin_parses_and_has_a_note() {
    let all = builtin::all().unwrap();
    assert_eq!(all.len(), 8);
    for sc in all {
        assert!(
            sc.note.contains('§'),
            "{} has no note citing the paper",
            sc.name
        );
    }
}

#[test]
fn unknown_fields_are_named() {
    let e = err(&GOOD.replace("warmup: 0", "warmup: 0\nwarmpu: 3"));
    assert!(e.contains("warmpu"), "{e}");
    let e = err(&GOOD.replace("concurrency: 4, p50_ms: 5", "concurency: 4, p50_ms: 5"));
    assert!(e.contains("concurency"), "{e}");
    let e = err(&GOOD.replace("rps: 50", "rps: {points: [[0, 5]], shape: x}"));
    assert!(e.contains("shape"), "{e}");
}

#[test]
fn malformed_series_are_refused_with_the_field_path() {
    let e = err(&GOOD.replace("rps: 50", "rps: [[0, 5, 7]]"));
    assert!(e.contains("rps") && e.contains("pair"), "{e}");
    let e = err(&GOOD.replace("rps: 50", "rps: fast"));
    assert!(e.contains("rps"), "{e}");
    let e = err(&GOOD.replace("rps: 50", "rps: [[10, 5], [5, 7]]"));
    assert!(e.contains("clients[0].rps[1]"), "{e}");
    let e = err(&GOOD.replace("rps: 50", "rps: {interpolation: cubic, points: [[0, 1]]}"));
    assert!(e.contains("cubic"), "{e}");
}

#[test]
fn invalid_values_name_the_field_and_the_expectation() {
    let cases = [
        (
            "cluster: b, concurrency",
            "cluster: z, concurrency",
            "backends[1].cluster",
        ),
        ("p99_ms: 20}", "p99_ms: 2}", "backends[0].p99_ms"),
        ("duration: 20", "duration: -1", "duration"),
        (
            "rtt_ms: [[0.5, 10], [10, 0.5]]",
            "rtt_ms: [[0.5, 10]]",
            "rtt_ms",
        ),
        (
            "concurrency: 4, p50_ms: 5",
            "concurrency: 0, p50_ms: 5",
            "backends[0].concurrency",
        ),
    ];
    for (from, to, field) in cases {
        let e = err(&GOOD.replace(from, to));
        assert!(e.contains(field) && e.contains("expected"), "{field}: {e}");
    }
    let e = err(&GOOD.replace("p50_ms: [[0, 5]", "success: 1.5, p50_ms: [[0, 5]"));
    assert!(
        e.contains("backends[1].success") && e.contains("[0, 1]"),
        "{e}"
    );
}

#[test]
fn the_binary_exits_non_zero_on_a_malformed_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        GOOD.replace("warmup: 0", "warmup: 0\nbogus_field: 1"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_l3"))
        .args(["simulate", "--scenario"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bogus_field") && stderr.contains("bad.yaml"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout on error");

    let out = Command::new(env!("CARGO_BIN_EXE_l3"))
        .args(["simulate", "--scenario", "no-such-scenario"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--list"));

    let out = Command::new(env!("CARGO_BIN_EXE_l3"))
        .args(["simulate", "--policy", "rr,fastest"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fastest"));
}
