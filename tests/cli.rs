//! The `l3` binary's command line as a user meets it.

use std::process::Command;

fn l3(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_l3"))
        .args(args)
        .output()
        .expect("the l3 binary runs")
}

#[test]
fn help_lists_every_subcommand() {
    let out = l3(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["run", "crdgen", "simulate"] {
        assert!(text.contains(sub), "--help does not mention {sub}:\n{text}");
    }
}

#[test]
fn unknown_subcommand_fails() {
    let out = l3(&["frobnicate"]);
    assert!(!out.status.success());
}
