//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz
//! targets' own checks (`fuzz/src/lib.rs`, compiled here as a module) on every
//! `make test`, without libFuzzer or nightly. Two reasons: the fuzz crate is its
//! own workspace, so without this a change to signoff's API could leave `make fuzz`
//! broken unnoticed; and an input that once crashed a target, copied into the
//! corpus, becomes a regression test. Pure: no control plane.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

#[path = "../fuzz/src/lib.rs"]
mod signoff_fuzz;

/// A fuzz target's body: panics when an input breaks what it checks.
type Target = fn(&[u8]);

/// The committed inputs of a target, by path, in order.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = signoff_testenv::checkout().unwrap_or_else(|e| panic!("{e}")).join("fuzz/corpus").join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (path, bytes)
        })
        .collect()
}

/// Every input of the target's corpus passes its checks; returns how many ran.
fn replay(target: &str, check: Target) -> usize {
    let inputs = corpus(target);
    let failed: Vec<String> = inputs
        .iter()
        .filter(|(_, bytes)| catch_unwind(AssertUnwindSafe(|| check(bytes))).is_err())
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} {target} inputs fail the target's checks (panics above); reproduce with \
         `cargo +nightly fuzz run --fuzz-dir fuzz {target} <file>`:\n{}",
        failed.len(),
        inputs.len(),
        failed.join("\n")
    );
    inputs.len()
}

#[test]
fn every_committed_fuzz_input_passes_its_targets_checks() {
    let targets: [(&str, Target); 3] = [
        ("admission_review", signoff_fuzz::admission_review),
        ("digest", signoff_fuzz::digest),
        ("classify", signoff_fuzz::classify),
    ];
    for (target, check) in targets {
        let inputs = replay(target, check);
        // The seeds alone (fuzz/seeds.py) are more than this: an emptied corpus fails.
        assert!(inputs >= 20, "fuzz/corpus/{target} holds only {inputs} inputs");
        println!("fuzz corpus: {target}: {inputs} inputs pass");
    }
}

/// The corpus really reaches the held path: a replay that only ever took the early
/// returns (undecodable input) would pass while checking nothing.
#[test]
fn the_classify_corpus_reaches_held_changes() {
    let held = corpus("classify")
        .iter()
        .filter_map(|(_, bytes)| signoff_fuzz::classify_input(bytes))
        .filter(|input| signoff::policy::classify(input, &signoff_fuzz::POLICIES).held())
        .count();
    assert!(held >= 10, "only {held} classify inputs are held by the example policies");
    println!("fuzz corpus: classify: {held} inputs held by the example policies");
}
