//! The status signoff writes on EscalationPolicies, Teams and Approvers, on the
//! real API server: `Ready` with what to fix (read by `kubectl wait`), who is on
//! call until when (followed across handovers of 2-second shifts), and whether
//! a person is paged now; the printer columns `kubectl get` shows.

mod common;

use std::sync::OnceLock;

use common::{ADMIN, cp, eventually, kubectl_ok, signoff};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

/// A policy whose CEL does not compile, applied before signoff runs (as a
/// GitOps sync that installs both at once would): the webhook that refuses such
/// a policy is not there yet, so the status is what tells.
fn setup() {
    static SETUP: OnceLock<()> = OnceLock::new();
    SETUP.get_or_init(|| {
        let cp = cp();
        common::install_demo(cp);
        let bad = r#"apiVersion: signoff.dev/v1alpha1
kind: EscalationPolicy
metadata: {name: status-bad-cel}
spec:
  match:
    rules: [{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [resourcequotas]}]
    namespaceSelector: {matchLabels: {signoff.dev/test-status-nothing: "true"}}
  rules:
  - {name: broken, expression: "object.spec.hard.cpu >", risk: High, route: engineering}
"#;
        kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(bad));
        signoff();
    });
}

fn get(kind: &str, name: &str) -> Value {
    serde_json::from_str(&kubectl_ok(cp(), ADMIN, &["get", kind, name, "-o", "json"], None)).unwrap()
}

fn ready(object: &Value) -> Option<Value> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready").cloned()
}

/// `kubectl get KIND NAME` as (column, value) pairs: each value is the row's
/// text under its header (an empty cell stays empty).
fn columns(kind: &str, name: &str) -> Vec<(String, String)> {
    let out = kubectl_ok(cp(), ADMIN, &["get", kind, name], None);
    let mut lines = out.lines();
    let (header, row) = (lines.next().unwrap(), lines.next().unwrap());
    let starts: Vec<usize> = header
        .char_indices()
        .filter(|(i, c)| *c != ' ' && (*i == 0 || header.as_bytes()[i - 1] == b' '))
        .map(|(i, _)| i)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts.get(n + 1).copied().unwrap_or(usize::MAX);
            let cell = |l: &str| l.get(start..end.min(l.len())).unwrap_or_default().trim().to_string();
            (cell(header), cell(row))
        })
        .collect()
}

fn column(kind: &str, name: &str, header: &str) -> String {
    columns(kind, name).into_iter().find(|(h, _)| h == header).map(|(_, v)| v).unwrap_or_default()
}

#[test]
fn a_policy_whose_cel_does_not_compile_is_not_ready_and_says_why() {
    setup();
    let cp = cp();
    let out = kubectl_ok(
        cp,
        ADMIN,
        &["wait", "--for=condition=Ready=false", "escalationpolicy/status-bad-cel", "--timeout=60s"],
        None,
    );
    assert!(out.contains("condition met"), "{out}");
    let policy = get("escalationpolicy", "status-bad-cel");
    let condition = ready(&policy).unwrap();
    assert_eq!(condition["reason"], "InvalidPolicy");
    let message = condition["message"].as_str().unwrap();
    assert!(message.contains("EscalationPolicy \"status-bad-cel\", rule \"broken\""), "{message}");
    assert!(message.contains("held until it is fixed"), "{message}");
    assert_eq!(condition["observedGeneration"], policy["metadata"]["generation"]);
    assert_eq!(policy["status"]["observedGeneration"], policy["metadata"]["generation"]);
    assert_eq!(column("escalationpolicy", "status-bad-cel", "READY"), "False");
    assert_eq!(column("escalationpolicy", "status-bad-cel", "MODE"), "Enforce");
}

#[test]
fn a_policy_naming_a_missing_team_becomes_ready_once_the_team_exists() {
    setup();
    let cp = cp();
    let policy = r#"apiVersion: signoff.dev/v1alpha1
kind: EscalationPolicy
metadata: {name: status-missing-team}
spec:
  match:
    rules: [{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [resourcequotas]}]
    namespaceSelector: {matchLabels: {signoff.dev/test-status-nothing: "true"}}
  adminTeam: platform-admins
  routes: [{name: data, team: status-data-team}]
  rules:
  - {name: quota, expression: "true", risk: High, route: data}
"#;
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(policy));
    kubectl_ok(
        cp,
        ADMIN,
        &["wait", "--for=condition=Ready=false", "escalationpolicy/status-missing-team", "--timeout=60s"],
        None,
    );
    let condition = ready(&get("escalationpolicy", "status-missing-team")).unwrap();
    assert_eq!(condition["reason"], "MissingTeam");
    assert!(
        condition["message"].as_str().unwrap().contains("route data names Team \"status-data-team\""),
        "{condition}"
    );
    let team = "apiVersion: signoff.dev/v1alpha1\nkind: Team\nmetadata: {name: status-data-team}\nspec: {members: {users: [dana]}}\n";
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(team));
    kubectl_ok(
        cp,
        ADMIN,
        &["wait", "--for=condition=Ready", "escalationpolicy/status-missing-team", "--timeout=60s"],
        None,
    );
    assert_eq!(column("escalationpolicy", "status-missing-team", "READY"), "True");
}

#[test]
fn a_team_shows_who_is_on_call_and_follows_each_handover() {
    setup();
    let cp = cp();
    // 2-second shifts: ana, ben, ana, ... from an anchor a minute ago (UTC).
    let anchor = Timestamp::now().checked_sub(SignedDuration::from_mins(1)).unwrap();
    let anchor = anchor.to_zoned(jiff::tz::TimeZone::UTC).strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let team = format!(
        "apiVersion: signoff.dev/v1alpha1\nkind: Team\nmetadata: {{name: status-rota}}\nspec:\n  members: {{users: [ana, ben]}}\n  onCall: {{rotation: [ana, ben], shiftLength: 2s, handoff: \"{anchor}\", timeZone: UTC}}\n  secondaryTeam: status-nobody\n"
    );
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&team));
    let (first, until) = eventually(30, "the team's status names who is on call", || {
        let t = get("team", "status-rota");
        let on_call = t["status"]["onCall"].as_str()?.to_string();
        let until: Timestamp = t["status"]["onCallUntil"].as_str()?.parse().ok()?;
        Some((on_call, until))
    });
    assert!(first == "ana" || first == "ben", "{first}");
    // The next handover: the other person, until a later time.
    let (next, next_until) = eventually(15, "the status follows the handover", || {
        let t = get("team", "status-rota");
        let on_call = t["status"]["onCall"].as_str()?.to_string();
        let until: Timestamp = t["status"]["onCallUntil"].as_str()?.parse().ok()?;
        (on_call != first).then_some((on_call, until))
    });
    // The other person's shift ends 2 s later (6 s, 10 s, ... if the poll missed some).
    let later = next_until.duration_since(until);
    assert!(later.as_secs() % 4 == 2 && later.subsec_nanos() == 0, "{first} until {until}, {next} until {next_until}");
    let t = get("team", "status-rota");
    let condition = ready(&t).unwrap();
    assert_eq!((condition["status"].as_str(), condition["reason"].as_str()), (Some("False"), Some("MissingTeam")));
    assert!(condition["message"].as_str().unwrap().contains("spec.secondaryTeam names Team \"status-nobody\""));
    let row = columns("team", "status-rota");
    assert!(row.iter().any(|(h, v)| h == "ON-CALL" && (v == "ana" || v == "ben")), "{row:?}");
    assert!(row.iter().any(|(h, v)| h == "READY" && v == "False"), "{row:?}");
}

#[test]
fn an_approver_shows_quiet_hours_and_away_until_when_and_back() {
    setup();
    let cp = cp();
    let now = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let hhmm = |z: &jiff::Zoned| format!("{:02}:{:02}", z.hour(), z.minute());
    let (start, end) = (
        now.checked_sub(SignedDuration::from_hours(1)).unwrap(),
        now.checked_add(SignedDuration::from_hours(1)).unwrap(),
    );
    let approver = format!(
        "apiVersion: signoff.dev/v1alpha1\nkind: Approver\nmetadata: {{name: status-zoe}}\nspec:\n  user: zoe\n  timeZone: UTC\n  quietHours: [{{start: \"{}\", end: \"{}\"}}]\n",
        hhmm(&start),
        hhmm(&end)
    );
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&approver));
    let quiet = eventually(30, "the approver's status says quiet hours", || {
        let a = get("approver", "status-zoe");
        (a["status"]["availability"] == "QuietHours").then_some(a)
    });
    let until: Timestamp = quiet["status"]["until"].as_str().unwrap().parse().unwrap();
    let expected = end.with().second(0).subsec_nanosecond(0).build().unwrap().timestamp();
    assert_eq!(until, expected, "quiet until the window's end");
    assert!(quiet["status"]["message"].as_str().unwrap().contains("Approver/status-zoe spec.quietHours[0]"));
    assert_eq!(column("approver", "status-zoe", "AVAILABILITY"), "QuietHours");

    let back = Timestamp::from_second(now.timestamp().as_second() + 7 * 86_400).unwrap();
    let away = format!(
        r#"{{"spec":{{"quietHours":[],"away":[{{"from":"{}","until":"{back}","reason":"Vacation"}}]}}}}"#,
        now.checked_sub(SignedDuration::from_hours(1)).unwrap().timestamp()
    );
    kubectl_ok(cp, ADMIN, &["patch", "approver", "status-zoe", "--type=merge", "-p", &away], None);
    eventually(30, "the approver's status says away until the period ends", || {
        let a = get("approver", "status-zoe");
        let until: Timestamp = a["status"]["until"].as_str()?.parse().ok()?;
        (a["status"]["availability"] == "Away" && until == back).then_some(())
    });

    kubectl_ok(cp, ADMIN, &["patch", "approver", "status-zoe", "--type=merge", "-p", r#"{"spec":{"away":[]}}"#], None);
    let available = eventually(30, "the approver is available again", || {
        let a = get("approver", "status-zoe");
        (a["status"]["availability"] == "Available").then_some(a)
    });
    assert!(available["status"].get("until").is_none(), "the end of a period that is over is removed: {available}");
    assert!(available["status"].get("message").is_none(), "{available}");
    assert_eq!(ready(&available).unwrap()["status"], "True");

    kubectl_ok(
        cp,
        ADMIN,
        &["patch", "approver", "status-zoe", "--type=merge", "-p", r#"{"spec":{"timeZone":"Europe/Berln"}}"#],
        None,
    );
    kubectl_ok(cp, ADMIN, &["wait", "--for=condition=Ready=false", "approver/status-zoe", "--timeout=60s"], None);
    let condition = ready(&get("approver", "status-zoe")).unwrap();
    assert_eq!(condition["reason"], "UnknownTimeZone");
    assert!(condition["message"].as_str().unwrap().contains("\"Europe/Berln\""), "{condition}");
}
