//! Same scenario, policy and seed → byte-identical output, through the library and the binary.

use std::process::Command;

use l3::sim::{PolicyKind, Report, builtin, run};

fn l3(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_l3"))
        .args(args)
        .output()
        .expect("the l3 binary runs")
}

#[test]
fn same_seed_same_bytes_through_the_binary() {
    let args = [
        "simulate",
        "--scenario",
        "failure-2",
        "--duration",
        "60s",
        "--seed",
        "7",
        "--format",
        "json",
    ];
    let a = l3(&args);
    let b = l3(&args);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(!a.stdout.is_empty());
    assert_eq!(a.stdout, b.stdout);
    let mut other = args;
    other[6] = "8";
    assert_ne!(
        l3(&other).stdout,
        a.stdout,
        "a different seed changes the run"
    );
    let v: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let pols = v["policies"].as_array().unwrap();
    assert_eq!(pols.len(), 7, "every policy runs by default");
    for key in [
        "policy",
        "requests",
        "success_rate",
        "latency_ms",
        "p99_change_vs_rr_pct",
        "p99_change_vs_c3_pct",
        "p99_change_vs_p2c_pct",
        "backend_share",
    ] {
        assert!(pols[0].get(key).is_some(), "JSON lacks {key}");
    }
    for q in ["p50", "p90", "p99", "p999"] {
        assert!(pols[2]["latency_ms"][q].as_f64().is_some());
    }
}

#[test]
fn same_seed_same_results_through_the_library() {
    let sc = builtin::get("scenario-2").unwrap().unwrap();
    let go = |seed| {
        let runs: Vec<_> = [PolicyKind::C3, PolicyKind::L3Peak]
            .into_iter()
            .map(|p| run(&sc, p, seed, Some(60.0), &mut |_| {}).unwrap())
            .collect();
        (Report::new(&sc, seed, 60.0, &runs).to_json(), runs)
    };
    let (a, ra) = go(11);
    let (b, rb) = go(11);
    assert_eq!(a, b);
    assert_eq!(ra[1].latency, rb[1].latency);
}

#[test]
fn table_markdown_list_and_plot_work() {
    let out = l3(&["simulate", "--list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["hotel-reservation", "scenario-5", "failure-2"] {
        assert!(text.contains(name), "{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("p.svg");
    let out = l3(&[
        "simulate",
        "--scenario",
        "scenario-3",
        "--duration",
        "40",
        "--policy",
        "rr,l3",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("p99 vs rr") && table.lines().count() == 4,
        "{table}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        format!("plot written to {}", svg.display()),
        "a short run prints no progress when piped, only where the plot went"
    );
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("api-cluster-2") && svg.contains("<path"));
    let out = l3(&[
        "simulate",
        "--duration",
        "20",
        "--policy",
        "rr",
        "--format",
        "markdown",
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("| rr |"));
}
