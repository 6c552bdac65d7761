//! The run behind docs/img/dashboard.png (`make dashboard-picture`, which runs
//! this ignored test): signoff on the real control plane with 3-second tiers, a
//! real Prometheus (hack/peers/prometheus) scraping it every 2 s, and a load of
//! changes that are approved, rejected, left to expire (skipping a person in
//! quiet hours) or whose approver's sink is down; then hack/dashboard/render.py
//! draws every panel of the dashboard from that Prometheus.
//!
//! DASHBOARD_SECONDS sets the load's length (default 150).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::approvals::decide;
use common::esc::*;
use common::*;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root() -> std::path::PathBuf {
    signoff_testenv::checkout().unwrap_or_else(|e| panic!("{e}"))
}

/// Hold a ConfigMap `name` in `ns` as alice; the request's name.
fn hold_named(ns: &str, name: &str) -> String {
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{class: routine}}\n"
    );
    let err = kubectl_err(cp(), "alice", &["apply", "-f", "-"], Some(&manifest));
    assert!(err.contains("held for approval"), "{err}");
    common::approvals::held_name(&err)
}

#[test]
#[ignore = "renders docs/img/dashboard.png: make dashboard-picture"]
fn render_the_dashboard_from_a_real_run() {
    let prometheus_dir = std::env::var("PROMETHEUS_DIR").expect("PROMETHEUS_DIR: run make dashboard-picture");
    let out = std::env::var("SIGNOFF_DASHBOARD_OUT").unwrap_or_else(|_| "docs/img/dashboard.png".into());
    let seconds: u64 = std::env::var("DASHBOARD_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(150);
    setup();
    let cp = cp();
    // fred's only sink is a closed loopback port: his pages fail.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let flaky = format!(
        "apiVersion: signoff.dev/v1alpha1\nkind: Approver\nmetadata: {{name: fred}}\nspec: {{user: fred, contacts: [{{kind: Webhook, url: \"http://127.0.0.1:{closed}/down\"}}]}}\n---\napiVersion: signoff.dev/v1alpha1\nkind: Team\nmetadata: {{name: esc-flaky}}\nspec: {{members: {{users: [fred]}}, lead: fred}}\n"
    );
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&flaky));
    let signoff = start_signoff(&["--coalesce-window=0s"]);

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let target = signoff.health.trim_start_matches("http://");
    let config = format!(
        "global: {{scrape_interval: 2s, evaluation_interval: 2s}}\nscrape_configs:\n- job_name: signoff\n  static_configs:\n  - targets: ['{target}']\n    labels: {{pod: signoff-0}}\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Killed(
        Command::new(format!("{prometheus_dir}/prometheus"))
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts"),
    );
    let prometheus = format!("http://127.0.0.1:{port}");
    eventually(60, "Prometheus to scrape signoff", || {
        let out = Command::new("curl")
            .args(["-sS", &format!("{prometheus}/api/v1/query?query=up%7Bjob%3D%22signoff%22%7D%3D%3D1")])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).contains(r#""result":[{"#).then_some(())
    });

    let start = jiff::Timestamp::now();
    let (owners, quiet, down) = (esc_namespace("esc-owners"), esc_namespace("esc-quiet"), esc_namespace("esc-flaky"));
    let mut decisions: Vec<(Instant, String, &str)> = Vec::new();
    let began = Instant::now();
    let mut i = 0u32;
    while began.elapsed() < Duration::from_secs(seconds) {
        let name = format!("change-{i}");
        match i % 6 {
            // Approved by the owner after 1 to 7 s; rejected after 2 s.
            0..=2 => decisions.push((
                Instant::now() + Duration::from_secs(1 + u64::from(i % 7)),
                hold_named(&owners, &name),
                "Approve",
            )),
            3 => decisions.push((Instant::now() + Duration::from_secs(2), hold_named(&owners, &name), "Reject")),
            // Nobody answers: expires after every tier, grace skipped (quiet hours).
            4 => drop(hold_named(&quiet, &name)),
            // fred's sink is down: his pages fail, then the ladder goes on.
            _ => drop(hold_named(&down, &name)),
        }
        i += 1;
        let now = Instant::now();
        for (_, request, verdict) in decisions.iter().filter(|(due, _, _)| *due <= now) {
            let (ok, err) = decide(cp, "bob", "bob", &owners, request, verdict);
            assert!(ok, "{err}");
        }
        decisions.retain(|(due, _, _)| *due > now);
        std::thread::sleep(Duration::from_millis(1500));
    }
    for (_, request, verdict) in &decisions {
        let _ = decide(cp, "bob", "bob", &owners, request, verdict);
    }
    // The last requests escalate to the end (5 tiers of 3 s) and expire.
    std::thread::sleep(Duration::from_secs(25));
    let end = jiff::Timestamp::now();
    eprintln!("{i} changes held in {seconds} s; rendering {start} .. {end}");
    let status = Command::new("/usr/bin/python3")
        .arg(root().join("hack/dashboard/render.py"))
        .args(["--dashboard", &root().join("charts/signoff/files/dashboards/signoff.json").display().to_string()])
        .args(["--prometheus", &prometheus])
        .args(["--start", &start.as_second().to_string(), "--end", &end.as_second().to_string()])
        .args(["--out", &root().join(out).display().to_string()])
        .status()
        .expect("render.py runs");
    assert!(status.success(), "render.py failed");
}
