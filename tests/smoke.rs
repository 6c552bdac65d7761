//! Smoke tests against a real kube-apiserver and etcd built from Go modules.

mod common;

use common::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;

const AR: &str = r#"apiVersion: signoff.dev/v1alpha1
kind: ApprovalRequest
metadata:
  name: ar-3f9c2a1b
spec:
  requester: {username: alice, uid: uid-alice, groups: [team:payments]}
  action: {operation: DELETE, group: "", version: v1, kind: PersistentVolumeClaim, resource: persistentvolumeclaims, namespace: NS, name: ledger-data}
  digest: 3f9c2a1b00000000000000000000000000000000000000000000000000000000
  risk: High
  actionClass: destructive
  routes: [engineering, security]
  routing:
  - {route: engineering, policy: production, team: payments}
  - {route: security, policy: production, team: security}
  reasons:
  - {policy: production, rule: delete-pvc, risk: High, route: engineering, actionClass: destructive, message: deleting a PersistentVolumeClaim in a production namespace}
"#;

#[test]
fn apiserver_is_real_and_reports_its_version() {
    let cp = cp();
    let version = kubectl_ok(cp, ADMIN, &["version", "-o", "json"], None);
    let v: serde_json::Value = serde_json::from_str(&version).unwrap();
    eprintln!(
        "server: {} ({}), client: {}",
        v["serverVersion"]["gitVersion"], v["serverVersion"]["platform"], v["clientVersion"]["gitVersion"]
    );
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.35.4");
    assert_eq!(v["clientVersion"]["gitVersion"], "v1.35.4");
    // Each demo user authenticates with their groups, as the webhook will see them.
    let who = kubectl_ok(cp, "alice", &["auth", "whoami", "-o", "json"], None);
    let who: serde_json::Value = serde_json::from_str(&who).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "alice");
    assert!(who["status"]["userInfo"]["groups"].as_array().unwrap().iter().any(|g| g == "team:payments"));
    let who = kubectl_ok(cp, ADMIN, &["auth", "whoami", "-o", "json"], None);
    assert!(who.contains("system:masters"), "admin authenticates by client certificate in system:masters: {who}");
}

#[tokio::test]
async fn crds_install_and_become_established() {
    let cp = cp();
    let client = cp.client(ADMIN).await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for crd in signoff::crd::all_crds() {
        let name = crd.metadata.name.unwrap();
        let live = crds.get(&name).await.unwrap();
        let established = live
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{name} is not Established");
        eprintln!("{name}: Established on {}", cp.server);
    }
}

#[test]
fn kubectl_explain_shows_field_docs() {
    let cp = cp();
    // The apiserver publishes CRD schemas to OpenAPI a moment after they are established.
    let out = eventually(60, "kubectl explain approvalrequest.spec", || {
        let (ok, out, _) = cp.kubectl_run(ADMIN, &["explain", "approvalrequest.spec"], None).unwrap();
        (ok && out.contains("The exact action that was held")).then_some(out)
    });
    assert!(out.contains("requester"), "{out}");
    assert!(out.contains("SHA-256 (hex) of the canonical change"), "{out}");
    let out = kubectl_ok(cp, ADMIN, &["explain", "escalationpolicy.spec.mode"], None);
    assert!(out.contains("Audit admits everything"), "{out}");
}

#[test]
fn approval_request_shows_printer_columns() {
    let cp = cp();
    let ns = namespace(cp, "smoke-columns", &[]);
    kubectl_ok(cp, ADMIN, &["apply", "-n", &ns, "-f", "-"], Some(&AR.replace("NS", &ns)));
    kubectl_ok(
        cp,
        ADMIN,
        &[
            "patch",
            "ar",
            "ar-3f9c2a1b",
            "-n",
            &ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Pending","tier":"engineering 1/5, security 1/5","target":"ConfigMap prod/limits","routes":"engineering, security","tierDeadline":"2099-01-01T00:00:00Z"}}"#,
        ],
        None,
    );
    let out = kubectl_ok(cp, ADMIN, &["get", "ar", "-n", &ns], None);
    eprintln!("{out}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "PHASE", "RISK", "TARGET", "ROUTES", "TIER", "TIER-DEADLINE", "REQUESTER", "AGE"]);
    let row = out.lines().nth(1).unwrap();
    // Routes as text (not a JSON array), the target, the tier deadline as an age.
    assert!(!row.contains("[\""), "{row}");
    for value in ["ar-3f9c2a1b", "Pending", "High", "ConfigMap prod/limits", "engineering, security", "1/5", "alice"] {
        assert!(row.contains(value), "row lacks {value}: {row}");
    }
}

#[test]
fn bad_policy_is_rejected_by_the_apiserver_with_a_clear_message() {
    let cp = cp();
    let policy = r#"apiVersion: signoff.dev/v1alpha1
kind: EscalationPolicy
metadata: {name: smoke-bad-risk}
spec:
  match:
    rules: [{operations: [DELETE], apiGroups: [""], apiVersions: [v1], resources: [persistentvolumeclaims]}]
  rules:
  - {name: delete-pvc, expression: "true", risk: Extreme, route: engineering}
"#;
    let err = kubectl_err(cp, ADMIN, &["apply", "-f", "-"], Some(policy));
    eprintln!("{err}");
    assert!(err.contains(r#"spec.rules[0].risk: Unsupported value: "Extreme""#), "{err}");
    assert!(err.contains(r#""Low", "Medium", "High""#), "{err}");

    let bad_duration = policy
        .replace("Extreme", "High")
        .replace("  rules:\n", "  actionClasses: {routine: {tierTimeout: soon, notify: Sequential}}\n  rules:\n");
    let err = kubectl_err(cp, ADMIN, &["apply", "-f", "-"], Some(&bad_duration));
    assert!(err.contains("spec.actionClasses.routine.tierTimeout"), "{err}");
}

#[test]
fn approval_request_spec_is_immutable_and_decisions_are_append_only() {
    let cp = cp();
    let ns = namespace(cp, "smoke-immutable", &[]);
    kubectl_ok(cp, ADMIN, &["apply", "-n", &ns, "-f", "-"], Some(&AR.replace("NS", &ns)));
    let err = kubectl_err(
        cp,
        ADMIN,
        &["patch", "ar", "ar-3f9c2a1b", "-n", &ns, "--type=merge", "-p", r#"{"spec":{"risk":"Low"}}"#],
        None,
    );
    assert!(err.contains("ApprovalRequest spec is immutable"), "{err}");

    let status = |decisions: &str| format!(r#"{{"status":{{"phase":"Pending","decisions":{decisions}}}}}"#);
    let bob = r#"{"approver":"bob","decision":"Approve","at":"2026-11-22T10:00:00Z"}"#;
    let patch = |body: &str| {
        cp.kubectl_run(
            ADMIN,
            &["patch", "ar", "ar-3f9c2a1b", "-n", &ns, "--subresource=status", "--type=merge", "-p", body],
            None,
        )
        .unwrap()
    };
    let (ok, _, err) = patch(&status(&format!("[{bob}]")));
    assert!(ok, "{err}");
    let edited = bob.replace("Approve", "Reject");
    let (ok, _, err) = patch(&status(&format!("[{edited}]")));
    assert!(!ok && err.contains("decisions are append-only: an earlier decision cannot be edited"), "{err}");
    let (ok, _, err) = patch(&status("[]"));
    assert!(!ok && err.contains("decisions are append-only"), "{err}");
}
