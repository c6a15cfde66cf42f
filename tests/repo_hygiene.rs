//! Rules about the repository itself: `make help` lists every Makefile target, each target is
//! defined once, and no file cites a document that is not in the repository (the paper is cited
//! by section and figure instead).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every rule `name:` of the Makefile, in order (special targets like `.PHONY` excluded).
fn makefile_targets() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("Makefile")).expect("Makefile");
    text.lines()
        .filter(|l| !l.starts_with(['\t', ' ', '#', '.']))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            // `VAR := value` and `VAR ::= value` are assignments, not rules.
            if rest.starts_with('=') || rest.starts_with(":=") || name.contains(['=', '$', ' ']) {
                return None;
            }
            Some(name.to_owned())
        })
        .collect()
}

#[test]
fn make_help_lists_every_target_and_each_is_defined_once() {
    let targets = makefile_targets();
    assert!(targets.iter().any(|t| t == "test"), "{targets:?}");
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &targets {
        *counts.entry(t).or_default() += 1;
    }
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "targets defined more than once (give each one definition, prerequisites included): \
         {repeated:?}"
    );
    let out = Command::new("make")
        .args(["--no-print-directory", "help"])
        .current_dir(root())
        .output()
        .expect("make runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let listed: Vec<&str> = help
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for t in &targets {
        assert!(
            listed.contains(&t.as_str()),
            "`make help` does not list `{t}` (give it a `## description`):\n{help}"
        );
    }
}

#[test]
fn no_file_cites_a_document_outside_the_repository() {
    // Spelt in two halves so that this file does not contain the word it looks for.
    let needle = ["field", "notes"].join("-");
    let out = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root())
        .output()
        .expect("git runs (the check reads the files git knows)");
    assert!(
        out.status.success(),
        "git ls-files failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut offenders = Vec::new();
    for path in out.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let path = String::from_utf8_lossy(path);
        let Ok(text) = std::fs::read_to_string(root().join(path.as_ref())) else {
            continue; // binary, or deleted in the worktree
        };
        for (i, line) in text.lines().enumerate() {
            if line.to_lowercase().contains(&needle) {
                offenders.push(format!("{path}:{}: {line}", i + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "cite the paper by section and figure, not a document outside the repository:\n{}",
        offenders.join("\n")
    );
}

/// `make test` installs cargo-nextest before anything slow (apt, npm, Go and release builds), so
/// that a fresh machine fails fast if it cannot, and it builds the image its test unpacks.
#[test]
fn make_test_installs_nextest_first_and_builds_the_image() {
    let text = std::fs::read_to_string(root().join("Makefile")).expect("Makefile");
    let line = text
        .lines()
        .find(|l| l.starts_with("test:"))
        .expect("a `test:` rule");
    let prerequisites: Vec<&str> = line["test:".len()..]
        .split("##")
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(prerequisites.first(), Some(&"tools-nextest"), "{line}");
    assert!(prerequisites.contains(&"image"), "{line}");
}
