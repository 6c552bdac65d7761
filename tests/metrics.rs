//! signoff's metrics, its alerts and its dashboard: a real run (3-second tiers,
//! loopback receivers) exports every metric the dashboard and the alerts query,
//! with the labels they select on; the alert rules pass `promtool check rules`
//! and their unit tests (`promtool test rules`), promtool built from Go modules
//! (hack/peers/prometheus); the chart's PrometheusRule and dashboard ConfigMap
//! carry exactly the files checked here.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::OnceLock;

use common::approvals::{decide, wait_for_phase};
use common::esc::*;
use common::*;

fn root() -> std::path::PathBuf {
    signoff_testenv::checkout().unwrap_or_else(|e| panic!("{e}"))
}

/// The directory with promtool (built once, cached outside the clone).
fn prometheus_dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::gitops::script("hack/peers/prometheus/build.sh", &[]))
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new(prometheus_dir().join("promtool")).args(args).current_dir(root()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {} failed:\n{text}", args.join(" "));
    text
}

const RULES: &str = "charts/signoff/files/prometheus/rules.yaml";
const DASHBOARD: &str = "charts/signoff/files/dashboards/signoff.json";

/// Every PromQL expression of the alert rules and the dashboard.
fn queries() -> Vec<(String, String)> {
    let rules: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(root().join(RULES)).unwrap()).unwrap();
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            out.push((
                format!("alert {}", rule["alert"].as_str().unwrap()),
                rule["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(DASHBOARD)).unwrap()).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            out.push((format!("panel {:?}", panel["title"]), target["expr"].as_str().unwrap().to_string()));
        }
    }
    assert!(out.len() > 20, "{out:?}");
    out
}

/// The metric names an expression reads, each with the label names its
/// selector matches on (besides `job`, which Prometheus adds).
fn selectors(expr: &str) -> Vec<(String, BTreeSet<String>)> {
    let metric = regex::Regex::new(r"\b((?:signoff|process)_[a-z_]+)(\{[^}]*\})?").unwrap();
    let label = regex::Regex::new(r#"([a-z_]+)\s*(?:=~|!=|!~|=)\s*""#).unwrap();
    metric
        .captures_iter(expr)
        .map(|c| {
            let labels = c.get(2).map_or("", |m| m.as_str());
            let names = label.captures_iter(labels).map(|l| l[1].to_string()).filter(|l| l != "job").collect();
            (c[1].to_string(), names)
        })
        .collect()
}

/// Scraped sample names, each with the label names its samples carry.
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let label = regex::Regex::new(r#"([a-z_]+)=""#).unwrap();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            // A family declared without samples yet (a collector's gauge).
            let name = rest.split_whitespace().next().unwrap();
            out.entry(name.to_string()).or_default();
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            let labels = line.find('{').map_or("", |i| &line[i..]);
            out.entry(name.to_string()).or_default().extend(label.captures_iter(labels).map(|c| c[1].to_string()));
        }
    }
    out
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", RULES]);
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "tests/prometheus/rules_test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has a unit test that expects it to fire.
    let tests = std::fs::read_to_string(root().join("tests/prometheus/rules_test.yaml")).unwrap();
    for (what, _) in queries().iter().filter(|(w, _)| w.starts_with("alert ")) {
        let name = what.trim_start_matches("alert ");
        assert!(tests.contains(&format!("alertname: {name}")), "{name} has no promtool unit test");
        let anchor = format!("### {name}");
        let ops = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
        assert!(ops.contains(&anchor), "docs/operations.md explains {name} (its runbook_url)");
    }
}

#[test]
fn the_chart_carries_the_checked_rules_and_dashboard() {
    let helm = common::gitops::script("hack/helm/build.sh", &[]);
    let out = Command::new(helm)
        .current_dir(root())
        .args(["template", "signoff", "charts/signoff", "--namespace", "monitoring"])
        .args(["--set", "prometheusRule.enabled=true", "--set", "grafanaDashboard.enabled=true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&String::from_utf8(out.stdout).unwrap())
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let rule = docs.iter().find(|d| d["kind"] == "PrometheusRule").expect("a PrometheusRule");
    let file: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(root().join(RULES)).unwrap()).unwrap();
    assert_eq!(rule["spec"]["groups"], file["groups"], "the PrometheusRule holds the rule file's groups");
    // The rendered groups are a valid rule file too.
    let dir = tempfile::tempdir().unwrap();
    let rendered = dir.path().join("rendered.yaml");
    std::fs::write(&rendered, serde_yaml::to_string(&rule["spec"]).unwrap()).unwrap();
    promtool(&["check", "rules", rendered.to_str().unwrap()]);
    let dashboard = docs.iter().find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "signoff-dashboard");
    let dashboard = dashboard.expect("a dashboard ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1", "the sidecar's default label");
    let json: serde_json::Value = serde_json::from_str(dashboard["data"]["signoff.json"].as_str().unwrap()).unwrap();
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(DASHBOARD)).unwrap()).unwrap();
    assert_eq!(json, file);
}

/// A real run: one request approved, one expired after every tier (a person in
/// quiet hours skipped on the way), notifications delivered to loopback receivers.
#[test]
fn every_metric_the_dashboard_and_alerts_query_is_exported() {
    setup();
    let signoff = start_signoff(&["--coalesce-window=0s"]);
    let cp = cp();
    let approved_ns = esc_namespace("esc-owners");
    let approved = hold(&approved_ns, "routine");
    // esc-quiet: grace is in quiet hours (skipped), frank is told; nobody answers.
    let expired_ns = esc_namespace("esc-quiet");
    let expired = hold(&expired_ns, "routine");
    common::approvals::wait_for_lanes(cp, &approved_ns, &approved);
    let (ok, err) = decide(cp, "bob", "bob", &approved_ns, &approved, "Approve");
    assert!(ok, "{err}");
    wait_for_phase(cp, &approved_ns, &approved, "Approved");
    eventually(60, "the unanswered request to expire", || {
        (request(&expired_ns, &expired)["status"]["phase"] == "Expired").then_some(())
    });
    let text = eventually(30, "the expiry and the approval counted", || {
        let text = signoff.metrics_text();
        let both = text.contains(r#"outcome="expired""#) && text.contains(r#"outcome="approved""#);
        both.then_some(text)
    });
    let exported = exported(&text);
    let mut missing = Vec::new();
    let mut no_samples = BTreeSet::new();
    for (what, expr) in queries() {
        for (name, labels) in selectors(&expr) {
            match exported.get(&name) {
                None => missing.push(format!("{what}: {name} is not exported")),
                // Declared, but nothing to count in this run: its labels are
                // checked by the unit test of the exposition (src/metrics.rs).
                Some(have) if have.is_empty() && !labels.is_empty() => {
                    no_samples.insert(name);
                }
                Some(have) => {
                    for l in labels.iter().filter(|l| !have.contains(*l)) {
                        missing.push(format!("{what}: {name} has no label {l} ({have:?})"));
                    }
                }
            }
        }
    }
    assert!(missing.is_empty(), "{}\n\nexported:\n{text}", missing.join("\n"));
    // Everyone was told of both requests (the route's channel at once).
    assert_eq!(no_samples, BTreeSet::from(["signoff_approval_requests_unnotified".to_string()]));
    // What the run did, in the metrics' words.
    for line in [
        r#"signoff_escalation_skips_total{route="engineering",reason="quiet_hours"}"#,
        r#"signoff_expiries_total{route="engineering"} 1"#,
        r#"signoff_notifications_total{sink="webhook",result="delivered"}"#,
        r#"signoff_admission_review_seconds_count{operation="create",kind="configmap",decision="held"}"#,
        r#"signoff_escalations_total{route="engineering",tier="admins"}"#,
        "signoff_leader 1",
    ] {
        assert!(text.lines().any(|l| l.starts_with(line)), "{line} in\n{text}");
    }
    let cert = text.lines().find_map(|l| l.strip_prefix("signoff_certificate_expiry_timestamp_seconds ")).unwrap();
    let days = (cert.parse::<f64>().unwrap() - jiff::Timestamp::now().as_second() as f64) / 86_400.0;
    assert!(days > 1.0, "the serving certificate is valid for days: {days}");
}
