//! `kubectl signoff check` run as a process on the example manifests, against
//! the policy library (`policies/`).

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn root() -> std::path::PathBuf {
    signoff_testenv::checkout().unwrap_or_else(|e| panic!("{e}"))
}

fn check(args: &[&str]) -> (i32, String, String) {
    check_stdin(args, None)
}

fn check_stdin(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-signoff"));
    cmd.current_dir(root())
        .arg("check")
        .args(["--policies", "policies", "--namespaces", "examples/manifests/namespaces.yaml"])
        .args(args)
        .env_remove("SIGNOFF_POLICIES")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl-signoff runs");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    drop(pipe);
    let Output { status, stdout, stderr } = child.wait_with_output().unwrap();
    (status.code().expect("exited"), String::from_utf8(stdout).unwrap(), String::from_utf8(stderr).unwrap())
}

const ALICE: &[&str] = &["--as", "alice", "--as-group", "team:payments"];

/// The table row for an object, as its whitespace-separated cells.
fn row(out: &str, object: &str) -> Vec<String> {
    let line = out.lines().find(|l| l.contains(object)).unwrap_or_else(|| panic!("{object} in {out}"));
    line.split_whitespace().map(String::from).collect()
}

fn with<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
    a.iter().chain(b).copied().collect()
}

#[test]
fn low_risk_dev_changes_are_admitted() {
    let (code, out, err) = check(&with(&["-f", "examples/manifests/admitted/"], ALICE));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(row(&out, "payments-dev/web")[..5], ["admitted", "CREATE", "Deployment", "payments-dev/web", "Low"]);
    assert!(out.contains("recorded (low risk): pod-security/restricted-elsewhere: Deployment web misses the restricted profile (held in production)"), "{out}");
    assert!(out.contains("4 object(s): 4 admitted, 0 held for approval"), "{out}");
}

#[test]
fn production_image_change_goes_to_engineering() {
    let (code, out, err) = check(&with(
        &["-f", "examples/manifests/engineering/web-v2.yaml", "--from", "examples/manifests/engineering/web-v1.yaml"],
        ALICE,
    ));
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(
        row(&out, "payments-prod/web"),
        ["HELD", "UPDATE", "Deployment", "payments-prod/web", "Medium", "routine", "engineering", "+0.00", "USD"]
    );
    assert!(
        out.contains(
            "production-workloads/pod-template-changed: Deployment web: the pods it runs change in production"
        ),
        "{out}"
    );
    // The same object unchanged is admitted.
    let (code, out, _) = check(&with(
        &["-f", "examples/manifests/engineering/web-v1.yaml", "--from", "examples/manifests/engineering/web-v1.yaml"],
        ALICE,
    ));
    assert_eq!(code, 0, "{out}");
}

#[test]
fn cross_team_change_also_goes_to_a_manager() {
    let (code, out, _) = check(&["-f", "examples/manifests/engineering/web-v2.yaml", "--as", "mallory"]);
    assert_eq!(code, 2);
    assert!(out.contains("engineering,manager"), "{out}");
    assert!(out.contains("mallory is not in team payments, which owns payments-prod"), "{out}");
}

#[test]
fn without_as_rules_that_depend_on_the_requester_are_reported_not_guessed() {
    let (code, out, _) = check(&["-f", "examples/manifests/engineering/web-v2.yaml"]);
    assert_eq!(code, 2, "held for the new production workload whoever applies it: {out}");
    assert!(out.contains("engineering"), "{out}");
    assert!(!out.contains("manager"), "no invented outsider: {out}");
    assert!(
        out.contains(
            "? depends on who applies (not evaluated; pass --as and --as-group): change-management/cross-team-change"
        ),
        "{out}"
    );
}

#[test]
fn audit_findings_are_reported_not_enforced() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("latest.yaml"),
        "apiVersion: signoff.dev/v1alpha1\nkind: EscalationPolicy\nmetadata: {name: latest-tag-audit}\nspec:\n  mode: Audit\n  match:\n    rules:\n    - {operations: [CREATE, UPDATE], apiGroups: [apps], apiVersions: [v1], resources: [deployments]}\n  rules:\n  - {name: latest-tag, expression: \"allContainers(object).exists(c, c.image.endsWith(':latest'))\", risk: Medium, route: engineering, message: an image tagged latest}\n",
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-signoff"));
    let out = cmd
        .current_dir(root())
        .args(["check", "--policies", dir.path().to_str().unwrap()])
        .args([
            "--namespaces",
            "examples/manifests/namespaces.yaml",
            "-f",
            "examples/manifests/engineering/worker-latest.yaml",
        ])
        .args(ALICE)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "an Audit policy admits: {text}");
    assert!(text.contains("audit (not enforced): latest-tag-audit/latest-tag: an image tagged latest"), "{text}");
}

#[test]
fn security_changes_go_to_security() {
    let (code, out, err) = check(&with(&["-f", "examples/manifests/security/", "-o", "json"], ALICE));
    assert_eq!(code, 2, "{err}");
    let results: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let by_name = |kind: &str| results.iter().find(|r| r["kind"] == kind).unwrap_or_else(|| panic!("{kind} in {out}"));
    for kind in ["PodExecOptions", "Role", "RoleBinding", "ClusterRoleBinding", "Secret", "TokenRequest"] {
        let r = by_name(kind);
        assert_eq!(r["admitted"], false, "{kind}");
        assert_eq!(r["routes"], serde_json::json!(["security"]), "{kind}");
    }
    assert_eq!(by_name("PodExecOptions")["operation"], "CONNECT");
    assert_eq!(by_name("PodExecOptions")["risk"], "High");
    assert_eq!(by_name("PodExecOptions")["actionClass"], "time-sensitive");
    assert_eq!(by_name("ClusterRoleBinding")["risk"], "High");
    assert_eq!(by_name("Secret")["risk"], "Medium");
}

#[test]
fn cost_increase_goes_to_finance() {
    let (code, out, _) = check(&with(&["-f", "examples/manifests/finance/", "-o", "yaml"], ALICE));
    assert_eq!(code, 2);
    let results: Vec<serde_json::Value> = serde_yaml::from_str(&out).unwrap();
    let ledger = results.iter().find(|r| r["name"] == "ledger").unwrap();
    // 20 × (2 × 0.04 + 8 × 0.005) × 730 = 1752.
    assert_eq!(ledger["costDelta"], "+1752.00 USD");
    assert_eq!(ledger["routes"], serde_json::json!(["finance"]));
    assert_eq!(ledger["risk"], "Medium");
    let trainer = results.iter().find(|r| r["name"] == "fraud-model-trainer").unwrap();
    // 4 × (8 × 0.04 + 32 × 0.005 + 1 × 2.5) × 730 = 8701.60.
    assert_eq!(trainer["costDelta"], "+8701.60 USD");
    assert_eq!(trainer["risk"], "High");
}

#[test]
fn public_exposure_goes_to_customer() {
    let (code, out, _) = check(&with(&["-f", "examples/manifests/customer/"], ALICE));
    assert_eq!(code, 2);
    assert!(out.contains("network-exposure/ingress-or-route-changed: Ingress checkout created in production"), "{out}");
    // Exposure outside production is not held; its load balancer is priced.
    assert_eq!(row(&out, "payments-staging/checkout-public")[0], "admitted", "{out}");
    assert!(out.contains("+18.00 USD"), "{out}");
}

#[test]
fn deleting_production_data_is_destructive() {
    let (code, out, _) = check(&with(&["-f", "examples/manifests/destructive/", "--delete"], ALICE));
    assert_eq!(code, 2);
    for obj in [
        "Namespace payments-prod",
        "PersistentVolumeClaim payments-prod/ledger-data",
        "StatefulSet payments-prod/postgres",
    ] {
        let cells = row(&out, obj);
        assert_eq!(cells[0], "HELD", "{obj}");
        assert!(cells.ends_with(&["High".into(), "destructive".into(), "engineering".into(), "-".into()]), "{cells:?}");
    }
}

#[test]
fn freeze_goes_to_a_manager() {
    let (code, out, _) = check(&with(&["-f", "examples/manifests/manager/"], ALICE));
    assert_eq!(code, 2);
    assert_eq!(
        row(&out, "feature-flags"),
        ["HELD", "CREATE", "ConfigMap", "payments-prod/feature-flags", "High", "routine", "manager", "-"]
    );
}

#[test]
fn stdin_and_namespace_labels() {
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: elsewhere}\n";
    let (code, out, _) = check_stdin(&["-f", "-"], Some(cm));
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = check_stdin(
        &["-f", "-", "--namespace-labels", "signoff.dev/environment=production,signoff.dev/freeze=true"],
        Some(cm),
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("change freeze in effect for namespace elsewhere"), "{out}");
}

#[test]
fn invalid_input_names_the_file_and_document() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: Secret\nmetadata: {name: b}\n",
    )
    .unwrap();
    let (code, out, err) = check(&["-f", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("bad.yaml: document 1: missing apiVersion"), "{err}");

    std::fs::write(&bad, "apiVersion: v1\nkind: [\n").unwrap();
    let (code, _, err) = check(&["-f", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("bad.yaml: document 0:"), "{err}");

    let (code, _, err) = check(&["-f", "does-not-exist.yaml"]);
    assert_eq!(code, 1);
    assert!(err.contains("does-not-exist.yaml"), "{err}");
}

#[test]
fn invalid_policy_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "apiVersion: signoff.dev/v1alpha1\nkind: EscalationPolicy\nmetadata: {name: broken}\nspec:\n  match:\n    rules:\n    - {operations: [\"*\"], apiGroups: [\"*\"], apiVersions: [\"*\"], resources: [\"*\"]}\n  rules:\n  - {name: oops, expression: \"object.(\", risk: High, route: security}\n",
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-signoff"));
    let out = cmd
        .current_dir(root())
        .args(["check", "--policies", dir.path().to_str().unwrap(), "-f", "examples/manifests/admitted/"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("p.yaml") && err.contains("\"broken\"") && err.contains("rule \"oops\"") && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn help_documents_examples_and_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-signoff")).args(["check", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Exit status: 0") && help.contains("Examples:") && help.contains("--from"), "{help}");
}

/// `check` routes as the webhook does before classifying: signoff's own
/// resources and exempt ones are never held, even by a policy matching everything.
#[test]
fn own_and_exempt_resources_are_never_held_as_in_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "apiVersion: signoff.dev/v1alpha1\nkind: EscalationPolicy\nmetadata: {name: everything}\nspec:\n  match:\n    rules:\n    - {operations: [\"*\"], apiGroups: [\"*\"], apiVersions: [\"*\"], resources: [\"*\"]}\n  rules:\n  - {name: all, expression: \"true\", risk: High, route: security}\n",
    )
    .unwrap();
    let manifests = "apiVersion: signoff.dev/v1alpha1\nkind: Team\nmetadata: {name: payments}\nspec: {members: {users: [alice]}}\n---\napiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: l, namespace: default}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: default}\n";
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-signoff"))
        .args(["check", "--policies", dir.path().to_str().unwrap(), "-f", "-", "-o", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), manifests.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(2), "the ConfigMap is held: {out}{err}");
    let results: serde_json::Value = serde_json::from_str(&out).unwrap();
    let by_kind = |kind: &str| results.as_array().unwrap().iter().find(|r| r["kind"] == kind).cloned().unwrap();
    assert_eq!(by_kind("Team")["admitted"], true, "{out}");
    assert!(by_kind("Team")["note"].as_str().unwrap().contains("own resource"), "{out}");
    assert_eq!(by_kind("Lease")["admitted"], true, "{out}");
    assert!(by_kind("Lease")["note"].as_str().unwrap().contains("exempt"), "{out}");
    assert_eq!(by_kind("ConfigMap")["admitted"], false, "{out}");
}
