//! The committed seed corpus of every fuzz target (`fuzz/corpus/<target>/`), replayed through
//! the same bodies `cargo fuzz` runs (`l3::fuzzing`), so that a crash found once stays fixed.
//! A target without a corpus, a corpus without a target and a fuzz target file that is not
//! listed in `l3::fuzzing::TARGETS` all fail: nothing is skipped silently.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Names of the files in `dir` (sorted), without the extension when `strip` is given.
fn names(dir: &Path, strip: Option<&str>) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter_map(|n| match strip {
            Some(ext) => n.strip_suffix(ext).map(str::to_owned),
            None => Some(n),
        })
        .collect()
}

#[test]
fn every_fuzz_target_is_listed_and_has_a_seed_corpus() {
    let listed: BTreeSet<String> = l3::fuzzing::TARGETS
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    let files = names(&fuzz_dir().join("fuzz_targets"), Some(".rs"));
    assert_eq!(
        files, listed,
        "fuzz/fuzz_targets/*.rs and l3::fuzzing::TARGETS differ"
    );
    let corpora = names(&fuzz_dir().join("corpus"), None);
    assert_eq!(
        corpora, listed,
        "fuzz/corpus/<target>/ and l3::fuzzing::TARGETS differ"
    );
}

#[test]
fn seed_corpus_replays_without_a_panic() {
    // The bodies' own panics are what this test reports, with the file they came from.
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (target, body) in l3::fuzzing::TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        let files = names(&dir, None);
        assert!(
            !files.is_empty(),
            "the seed corpus {} is empty",
            dir.display()
        );
        for f in files {
            let path = dir.join(&f);
            let data =
                std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| body(&data))) {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!("{}: {message}", path.display()));
            }
            replayed += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {replayed} corpus files panic:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
