//! The `make chaos` table: every figure the chaos tests recorded (tests/common/
//! report.rs), printed as one table and, with `SIGNOFF_UPDATE_DOCS=1`, written
//! between the chaos markers of docs/security.md. Fails when a figure misses its
//! target, and under `make chaos` when a section's figures are missing.

mod common;

use common::report::{self, Figure};

const BEGIN: &str = "<!-- chaos:begin -->";
const END: &str = "<!-- chaos:end -->";
/// The sections that `make chaos` measures, by number.
const SECTIONS: [&str; 6] = ["2", "4", "5", "6", "7", "8"];

/// One row: a figure and whether it came from a long chaos run.
struct Row {
    figure: Figure,
    chaos: bool,
}

fn rows(chaos_only: bool) -> (Vec<Row>, Vec<String>) {
    let dir = report::report_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no figures in {} ({e}); run `make chaos`", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let (mut rows, mut skipped) = (Vec::new(), Vec::new());
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let report: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not a report: {e}", path.display()));
        let chaos = report["chaos"].as_bool().unwrap_or(false);
        if chaos_only && !chaos {
            skipped.push(path.display().to_string());
            continue;
        }
        let figures: Vec<Figure> = serde_json::from_value(report["figures"].clone())
            .unwrap_or_else(|e| panic!("{}: figures: {e}", path.display()));
        rows.extend(figures.into_iter().map(|figure| Row { figure, chaos }));
    }
    // By section; within one, in the order the tests recorded them.
    rows.sort_by_key(|r| section_number(&r.figure.section));
    (rows, skipped)
}

fn section_number(section: &str) -> u32 {
    section.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(u32::MAX)
}

fn command(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn yes_no(ok: bool) -> &'static str {
    if ok { "yes" } else { "NO" }
}

/// The table as plain text, aligned, for the terminal.
fn text_table(rows: &[Row]) -> String {
    let header = ["section", "figure", "value", "target", "ok"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            let f = &r.figure;
            let name = if r.chaos { f.name.clone() } else { format!("{} (short run)", f.name) };
            [f.section.clone(), name, f.value.clone(), f.target.clone(), yes_no(f.ok).into()]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: &[String]| {
        row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join(" | ").trim_end().to_string()
    };
    let mut out = vec![line(&header.map(String::from)), widths.map(|w| "-".repeat(w)).join("-+-")];
    out.extend(cells.iter().map(|r| line(r)));
    out.join("\n")
}

/// The Markdown written between the markers of docs/security.md.
fn markdown(rows: &[Row]) -> String {
    let date = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    let machine = command("uname", &["-srm"]);
    let cores = command("nproc", &[]);
    let mut out = format!(
        "Measured {date} (UTC) on {machine}, {cores} cores, debug build, real kube-apiserver and etcd on loopback.\n\
         Run: *chaos* marks figures from the long `make chaos` runs, *short* those from the `make test` versions.\n\n\
         | Section | Figure | Value | Target | Met | Run |\n|---|---|---|---|---|---|\n"
    );
    for r in rows {
        let f = &r.figure;
        let cell = |s: &str| s.replace('|', "\\|");
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            cell(&f.section),
            cell(&f.name),
            cell(&f.value),
            cell(&f.target),
            yes_no(f.ok),
            if r.chaos { "chaos" } else { "short" }
        ));
    }
    out
}

fn update_docs(table: &str) {
    let path = signoff_testenv::checkout().unwrap_or_else(|e| panic!("{e}")).join("docs/security.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find(BEGIN).expect("docs/security.md has the chaos:begin marker") + BEGIN.len();
    let end = doc[start..].find(END).expect("docs/security.md has the chaos:end marker") + start;
    let updated = format!("{}\n{table}{}", &doc[..start], &doc[end..]);
    if updated != doc {
        std::fs::write(&path, updated).unwrap();
        eprintln!("chaos report: wrote the table into {}", path.display());
    }
}

#[test]
#[ignore = "run by `make chaos` after the chaos tests have recorded their figures"]
fn chaos_report() {
    let chaos_only = report::chaos();
    let (rows, skipped) = rows(chaos_only);
    for s in &skipped {
        eprintln!("chaos report: skipped {s}: recorded by a short run, not by make chaos");
    }
    assert!(!rows.is_empty(), "no figures in {}; run `make chaos`", report::report_dir().display());
    println!("{}", text_table(&rows));
    if std::env::var("SIGNOFF_UPDATE_DOCS").is_ok_and(|v| v == "1") {
        update_docs(&markdown(&rows));
    }
    let missed: Vec<String> = rows
        .iter()
        .filter(|r| !r.figure.ok)
        .map(|r| format!("[{}] {}: {} (target {})", r.figure.section, r.figure.name, r.figure.value, r.figure.target))
        .collect();
    assert!(missed.is_empty(), "figures that miss their target:\n{}", missed.join("\n"));
    if chaos_only {
        let missing: Vec<&str> = SECTIONS
            .iter()
            .copied()
            .filter(|n| !rows.iter().any(|r| r.figure.section.starts_with(&format!("{n} "))))
            .collect();
        assert!(missing.is_empty(), "make chaos recorded no figures for section(s) {missing:?}");
    }
}
