//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz
//! targets' own checks (`fuzz/src/lib.rs`, compiled here as a module) on every
//! `make test`, without libFuzzer or nightly. Two reasons: the fuzz crate is its
//! own workspace, so without this a change to signoff's API could leave `make fuzz`
//! broken unnoticed; and an input that once crashed a target, copied into the
//! corpus, becomes a regression test. Pure: no control plane.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

#[path = "../fuzz/src/lib.rs"]
mod signoff_fuzz;

/// A fuzz target's body: panics when an input breaks what it checks.
type Target = fn(&[u8]);

/// Every input of the target's corpus passes its checks; returns how many ran.
fn replay(target: &str, check: Target) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    paths.sort();
    let failed: Vec<String> = paths
        .iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            catch_unwind(AssertUnwindSafe(|| check(&bytes))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} {target} inputs fail the target's checks (panics above); reproduce with \
         `cargo +nightly fuzz run --fuzz-dir fuzz {target} <file>`:\n{}",
        failed.len(),
        paths.len(),
        failed.join("\n")
    );
    paths.len()
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
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/classify");
    let held = std::fs::read_dir(&dir)
        .expect("the classify corpus")
        .filter_map(|entry| signoff_fuzz::classify_input(&std::fs::read(entry.expect("an entry").path()).ok()?))
        .filter(|input| signoff::policy::classify(input, &signoff_fuzz::POLICIES).held())
        .count();
    assert!(held >= 10, "only {held} classify inputs are held by the example policies");
    println!("fuzz corpus: classify: {held} inputs held by the example policies");
}
