//! `l3 simulate` robustness: bad flags get a message naming the flag, nothing measured is an
//! error rather than a NaN table, and `--plot` writes SVG or PNG by extension.

use std::process::{Command, Output};

fn l3(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_l3"))
        .args(args)
        .output()
        .expect("the l3 binary runs")
}

fn fails_with(args: &[&str], needles: &[&str]) {
    let out = l3(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(out.stdout.is_empty(), "{args:?} printed a report");
    for n in needles {
        assert!(err.contains(n), "{args:?}: stderr lacks {n:?}:\n{err}");
    }
}

#[test]
fn an_empty_policy_item_is_an_error() {
    fails_with(
        &["simulate", "--policy", "rr,,l3", "--duration", "5"],
        &["--policy", "item 2", "empty", "l3+p2c"],
    );
    fails_with(
        &["simulate", "--policy", "rr,", "--duration", "5"],
        &["--policy", "empty"],
    );
    fails_with(
        &["simulate", "--policy", "rr,l4", "--duration", "5"],
        &["unknown policy \"l4\"", "c3-p99"],
    );
}

#[test]
fn negative_values_in_the_space_form_get_a_message() {
    fails_with(
        &["simulate", "--duration", "-5m"],
        &["--duration", "\"-5m\"", "positive"],
    );
    fails_with(&["simulate", "--duration=-5"], &["--duration", "positive"]);
    fails_with(&["simulate", "--seed", "-3"], &["--seed", "-3"]);
}

#[test]
fn a_plot_needs_svg_or_png_and_says_where_it_went() {
    let dir = tempfile::tempdir().unwrap();
    let jpg = dir.path().join("p.jpg");
    fails_with(
        &[
            "simulate",
            "--duration",
            "5",
            "--plot",
            jpg.to_str().unwrap(),
        ],
        &["--plot", ".svg or .png"],
    );
    assert!(!jpg.exists());
    let png = dir.path().join("p.PNG");
    let out = l3(&[
        "simulate",
        "--scenario",
        "failure-1",
        "--duration",
        "30",
        "--policy",
        "rr,p2c,l3",
        "--plot",
        png.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");
    assert!(
        bytes.len() > 20_000,
        "a PNG with content: {} bytes",
        bytes.len()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("plot written to {}", png.display()))
    );
}

#[test]
fn nothing_measured_is_a_clear_error_not_a_nan_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idle.yaml");
    std::fs::write(
        &path,
        "name: idle\nduration: 30\nwarmup: 0\nclusters: [a]\nrtt_ms: [[1]]\n\
         clients: [{name: quiet, cluster: a, rps: 0}]\n\
         backends: [{name: x, cluster: a, concurrency: 2, p50_ms: 5, p99_ms: 20}]\n",
    )
    .unwrap();
    for format in ["table", "json", "markdown"] {
        let out = l3(&[
            "simulate",
            "--scenario",
            path.to_str().unwrap(),
            "--format",
            format,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            out.stdout.is_empty(),
            "no table: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            err.contains("nothing measured") && err.contains("0 RPS") && err.contains("quiet"),
            "{err}"
        );
        assert!(!err.contains("NaN"), "{err}");
    }
    // One idle client beside a busy one: a note, and the run goes on.
    let path2 = dir.path().join("half.yaml");
    std::fs::write(
        &path2,
        "name: half\nduration: 20\nwarmup: 0\nclusters: [a]\nrtt_ms: [[1]]\n\
         clients: [{name: quiet, cluster: a, rps: 0}, {name: busy, cluster: a, rps: 20}]\n\
         backends: [{name: x, cluster: a, concurrency: 2, p50_ms: 5, p99_ms: 20}]\n",
    )
    .unwrap();
    let out = l3(&[
        "simulate",
        "--scenario",
        path2.to_str().unwrap(),
        "--policy",
        "rr",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("client quiet offers 0 RPS"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("NaN"));
}
