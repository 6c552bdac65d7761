//! Percentiles and the one table `make bench` prints.

use std::time::Duration;

/// Latencies in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1e6);
    }

    /// The `p` quantile (0..1) by nearest rank, in milliseconds.
    pub fn ms(&self, p: f64) -> f64 {
        let mut v = self.0.clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1] / 1000.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The mean, in milliseconds.
    pub fn mean_ms(&self) -> f64 {
        self.0.iter().sum::<f64>() / self.0.len() as f64 / 1000.0
    }
}

/// One line of the table.
pub struct Row {
    pub section: String,
    pub figure: String,
    pub value: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    /// None: no target.
    pub met: Option<bool>,
}

#[derive(Default)]
pub struct Table {
    pub rows: Vec<Row>,
}

impl Table {
    #[allow(clippy::too_many_arguments)]
    pub fn row(
        &mut self,
        section: &str,
        figure: &str,
        value: String,
        baseline: String,
        ratio: String,
        target: &str,
        met: Option<bool>,
    ) {
        let row =
            Row { section: section.into(), figure: figure.into(), value, baseline, ratio, target: target.into(), met };
        eprintln!(
            "bench: [{}] {}: {} (baseline {}; ratio {}; target {}{})",
            row.section,
            row.figure,
            row.value,
            row.baseline,
            row.ratio,
            row.target,
            match row.met {
                Some(true) => ", met",
                Some(false) => ", MISSED",
                None => "",
            }
        );
        self.rows.push(row);
    }

    /// A figure without baseline or target.
    pub fn info(&mut self, section: &str, figure: &str, value: String) {
        self.row(section, figure, value, "-".into(), "-".into(), "-", None);
    }

    pub fn print(&self, took: Duration) {
        let now = jiff::Timestamp::now();
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        println!();
        println!(
            "signoff bench, {} UTC, {} cores, took {:.0} s",
            now.strftime("%Y-%m-%d %H:%M"),
            cores,
            took.as_secs_f64()
        );
        println!();
        println!("| Section | Figure | Value | Baseline | Ratio | Target | Met |");
        println!("|---|---|---|---|---|---|---|");
        for r in &self.rows {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {met} |",
                r.section, r.figure, r.value, r.baseline, r.ratio, r.target
            );
        }
        let missed = self.rows.iter().filter(|r| r.met == Some(false)).count();
        let with_target = self.rows.iter().filter(|r| r.met.is_some()).count();
        println!();
        println!("{} of {with_target} targets met", with_target - missed);
    }
}

/// The classification figures from `cargo bench --bench classify` (criterion's
/// medians), when it ran before this bench.
pub fn classification_rows(table: &mut Table) {
    let dir = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| signoff_testenv::checkout().unwrap_or_default().join("target"))
        .join("criterion/classify deployment update");
    let median_us = |id: &str| -> Option<f64> {
        let text = std::fs::read_to_string(dir.join(id).join("new/estimates.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["median"]["point_estimate"].as_f64().map(|ns| ns / 1000.0)
    };
    let (Some(naive), Some(twenty)) = (median_us("20 rules, naive cel (baseline)"), median_us("20 rules")) else {
        table.info(
            "3 classification",
            "criterion results",
            "not found: run `cargo bench --bench classify` first".into(),
        );
        return;
    };
    table.row(
        "3 classification",
        "Deployment update, 20 rules (median)",
        format!("{twenty:.1} us"),
        format!("naive cel {naive:.1} us"),
        format!("{:.2}x", twenty / naive),
        "<= 20 us",
        Some(twenty <= 20.0),
    );
    for id in ["example policies", "100 rules", "example policies, largest inline review"] {
        if let Some(us) = median_us(id) {
            table.row(
                "3 classification",
                id,
                format!("{us:.1} us"),
                format!("naive cel {naive:.1} us"),
                format!("{:.2}x", us / naive),
                "-",
                None,
            );
        }
    }
}
