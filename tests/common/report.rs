//! Figures that `make chaos` gathers into one table (docs/security.md). Each test
//! that measures something writes its figures here; `tests/chaos_report.rs`
//! prints them and, with `SIGNOFF_UPDATE_DOCS=1`, writes them into the doc.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One measured figure and the target it is held to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Figure {
    /// The section: "2 adversarial status writes", "4 crashes", ...
    pub section: String,
    /// What was measured, e.g. "requests lost".
    pub name: String,
    /// The measured value, as printed.
    pub value: String,
    /// The target, as printed ("0", "<= 1", "< 256 MiB"); "-" for plain counts.
    pub target: String,
    /// Whether the value meets the target.
    pub ok: bool,
}

impl Figure {
    pub fn new(section: &str, name: &str, value: impl ToString, target: &str, ok: bool) -> Figure {
        Figure { section: section.into(), name: name.into(), value: value.to_string(), target: target.into(), ok }
    }

    /// A count with no target.
    pub fn count(section: &str, name: &str, value: impl ToString) -> Figure {
        Figure::new(section, name, value, "-", true)
    }
}

/// Where figures are written: inside Cargo's target directory, outside the clone.
pub fn report_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("signoff-report")
}

/// True under `make chaos` (`SIGNOFF_CHAOS=1`): run the long versions.
pub fn chaos() -> bool {
    std::env::var("SIGNOFF_CHAOS").is_ok_and(|v| v == "1")
}

/// Record `figures` under `test` (one file per test; a rerun replaces it) and print them.
pub fn record(test: &str, figures: &[Figure]) {
    for f in figures {
        eprintln!(
            "figure [{}] {}: {} (target {}){}",
            f.section,
            f.name,
            f.value,
            f.target,
            if f.ok { "" } else { "  MISSED" }
        );
    }
    let dir = report_dir();
    std::fs::create_dir_all(&dir).expect("create the report directory");
    let report = serde_json::json!({ "test": test, "chaos": chaos(), "at": jiff::Timestamp::now().to_string(), "figures": figures });
    let tmp = dir.join(format!("{test}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&report).unwrap()).expect("write the report");
    std::fs::rename(&tmp, dir.join(format!("{test}.json"))).expect("publish the report");
}
