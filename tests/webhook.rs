//! The gate, end to end: real users apply real changes through a real
//! kube-apiserver, which calls signoff's webhook over TLS.

mod common;

use common::approvals::*;
use common::report::Figure;
use common::*;
use serde_json::json;

fn configmap(ns: &str, name: &str, risk: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{risk: {risk}}}\ndata:\n  value: \"{data}\"\n"
    )
}

#[test]
fn low_risk_changes_are_admitted() {
    let cp = cp();
    signoff();
    let ns = gated_namespace(cp, "lowrisk");
    kubectl_ok(cp, "alice", &["apply", "-f", "-"], Some(&configmap(&ns, "settings", "low", "a")));
    kubectl_ok(cp, "alice", &["apply", "-f", "-"], Some(&configmap(&ns, "settings", "low", "b")));
    assert!(requests(cp, &ns).is_empty(), "no ApprovalRequest for a low-risk change");
    // Every decision is an audit line, admits included (written in batches,
    // at most runtime::log::BATCH_WINDOW after the answer).
    eventually(5, "the admit's audit line", || {
        let log = signoff().log_text();
        log.lines().any(|l| l.contains("\"decision\":\"admitted-low-risk\"") && l.contains(&ns)).then_some(())
    });
}

#[test]
fn held_change_is_approved_by_an_eligible_user_then_admitted_and_nothing_else_is() {
    let cp = cp();
    signoff();
    let ns = gated_namespace(cp, "held");
    let manifest = configmap(&ns, "payment-limits", "high", "100");

    let err = kubectl_err(cp, "alice", &["apply", "-f", "-"], Some(&manifest));
    eprintln!("{err}");
    let name = held_name(&err);
    let expected = format!(
        "held for approval: ApprovalRequest {ns}/{name} (high risk, routine; routed to engineering → tier 1: team payments). \
         Reason: a ConfigMap labelled risk=high. Follow it: kubectl signoff show -n {ns} {name}"
    );
    assert!(err.contains(&expected), "message:\n{err}\nexpected:\n{expected}");

    // Exactly one request, with a complete packet.
    let all = requests(cp, &ns);
    assert_eq!(all.len(), 1);
    let spec = &all[0]["spec"];
    assert_eq!(spec["requester"]["username"], "alice");
    assert_eq!(spec["action"]["operation"], "CREATE");
    assert_eq!(spec["action"]["kind"], "ConfigMap");
    assert_eq!(spec["action"]["name"], "payment-limits");
    assert_eq!(spec["digest"].as_str().unwrap().len(), 64);
    assert_eq!(spec["reasons"][0]["rule"], "high-risk-configmap");
    assert_eq!(spec["routing"][0], json!({"route": "engineering", "policy": "test-gate", "team": "payments"}));
    assert!(spec["manifest"].as_str().unwrap().contains("risk: high"));
    assert!(spec["diff"].as_str().unwrap().contains("+  value: '100'"), "{}", spec["diff"]);

    // A retry is denied with the same message and creates nothing new.
    let again = kubectl_err(cp, "alice", &["apply", "-f", "-"], Some(&manifest));
    assert!(again.contains(&expected), "{again}");
    assert_eq!(requests(cp, &ns).len(), 1);

    let ar = wait_for_lanes(cp, &ns, &name);
    assert_eq!(ar["status"]["lanes"][0]["eligible"], json!(["alice", "bob", "carol", "dave"]));

    // Forged and ineligible decisions are refused by the API server (through signoff's webhook).
    let refusals = [
        ("alice", "alice", "you requested this change; someone else must approve it"),
        ("mallory", "mallory", "mallory is not an eligible approver"),
        ("mallory", "bob", "a decision must name its writer: you are mallory, the decision names bob"),
        ("sa:signoff-system:signoff", "system:serviceaccount:signoff-system:signoff", "never add a decision"),
    ];
    for (user, approver, message) in refusals {
        let (ok, err) = decide(cp, user, approver, &ns, &name, "Approve");
        assert!(!ok && err.contains(message), "{user} naming {approver}: {err}");
    }
    let spec_edit = kubectl_err(
        cp,
        ADMIN,
        &["patch", "ar", &name, "-n", &ns, "--type=merge", "-p", r#"{"spec":{"risk":"Low"}}"#],
        None,
    );
    assert!(spec_edit.contains("spec is immutable"), "{spec_edit}");

    let (ok, err) = decide(cp, "bob", "bob", &ns, &name, "Approve");
    assert!(ok, "bob's approval: {err}");
    let ar = eventually(30, "the request to be Approved", || {
        let ar = request(cp, &ns, &name);
        (ar["status"]["phase"] == "Approved").then_some(ar)
    });
    assert!(ar["status"]["notAfter"].is_string());

    // An earlier decision cannot be edited.
    let mut decisions = ar["status"]["decisions"].clone();
    decisions[0]["decision"] = json!("Reject");
    let patch = json!({"status": {"decisions": decisions}}).to_string();
    let edit = kubectl_err(
        cp,
        "bob",
        &["patch", "ar", &name, "-n", &ns, "--subresource=status", "--type=merge", "-p", &patch],
        None,
    );
    assert!(edit.contains("append-only"), "{edit}");

    // The identical apply is admitted, and the admission is recorded.
    kubectl_ok(cp, "alice", &["apply", "-f", "-"], Some(&manifest));
    kubectl_ok(cp, ADMIN, &["get", "configmap", "payment-limits", "-n", &ns], None);
    let ar = request(cp, &ns, &name);
    assert_eq!(ar["status"]["admissions"][0]["user"], "alice");

    // A changed manifest is a new change: held again, as a new request.
    let err = kubectl_err(cp, "alice", &["apply", "-f", "-"], Some(&configmap(&ns, "payment-limits", "high", "999")));
    let second = held_name(&err);
    assert_ne!(second, name);
    assert_eq!(requests(cp, &ns).len(), 2);
    assert_eq!(request(cp, &ns, &second)["spec"]["action"]["operation"], "UPDATE");
}

#[test]
fn concurrent_identical_applies_create_one_request() {
    let cp = cp();
    signoff();
    let ns = gated_namespace(cp, "concurrent");
    let manifest = configmap(&ns, "burst", "high", "x");
    let results: Vec<(bool, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                s.spawn(|| {
                    let (ok, _, err) = cp.kubectl_run("alice", &["apply", "-f", "-"], Some(&manifest)).unwrap();
                    (ok, err)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let held = results.iter().filter(|(ok, err)| !ok && err.contains("held for approval")).count();
    assert_eq!(held, 50, "every apply is held: {:?}", results.iter().find(|(ok, e)| *ok || !e.contains("held")));
    assert_eq!(requests(cp, &ns).len(), 1, "exactly one ApprovalRequest");
}

#[test]
fn dry_run_is_admitted_with_a_warning_and_creates_nothing() {
    let cp = cp();
    signoff();
    let ns = gated_namespace(cp, "dryrun");
    let (ok, _, err) = cp
        .kubectl_run("alice", &["apply", "--dry-run=server", "-f", "-"], Some(&configmap(&ns, "dry", "high", "x")))
        .unwrap();
    assert!(ok, "{err}");
    assert!(
        err.contains(
            "Warning: signoff: the real write would be held for approval (high risk, routine; routes: engineering)"
        ),
        "{err}"
    );
    assert!(requests(cp, &ns).is_empty());
    let (ok, _, _) = cp.kubectl_run(ADMIN, &["get", "configmap", "dry", "-n", &ns], None).unwrap();
    assert!(!ok, "nothing was written");
}

#[test]
fn break_glass_is_admitted_and_recorded_and_scale_and_delete_are_held() {
    let cp = cp();
    let signoff = signoff();
    let ns = gated_namespace(cp, "subres");
    let deployment = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: {ns}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: api}}}}\n  template:\n    metadata: {{labels: {{app: api}}}}\n    spec:\n      containers: [{{name: api, image: registry.example/api:1}}]\n"
    );
    let held = kubectl_err(cp, "alice", &["apply", "-f", "-"], Some(&deployment));
    assert!(held.contains("held for approval"), "{held}");

    // Break-glass: admitted, loudly, and recorded as an Event and in the audit log.
    let (ok, _, err) = cp.kubectl_run("breakglass", &["apply", "-f", "-"], Some(&deployment)).unwrap();
    assert!(ok, "{err}");
    assert!(
        err.contains(
            "signoff BREAK-GLASS: admitted without approval because breakglass is in group signoff:break-glass"
        ),
        "{err}"
    );
    eventually(20, "the BreakGlass event", || {
        let out = kubectl_ok(cp, ADMIN, &["get", "events.events.k8s.io", "-n", &ns, "-o", "json"], None);
        out.contains("\"reason\": \"BreakGlass\"").then_some(())
    });
    eventually(5, "the break-glass audit line", || {
        let log = signoff.log_text();
        log.lines().any(|l| l.contains("\"decision\":\"break-glass\"") && l.contains("breakglass")).then_some(())
    });

    // `kubectl scale` (deployments/scale) and `kubectl delete` are held.
    let err = kubectl_err(cp, "alice", &["scale", "deployment", "api", "-n", &ns, "--replicas=5"], None);
    assert!(err.contains("held for approval") && err.contains("changing a Deployment in production"), "{err}");
    let scale = requests(cp, &ns).into_iter().find(|r| r["spec"]["action"]["subResource"] == "scale");
    assert!(scale.is_some(), "the scale request records its subresource");
    let err = kubectl_err(cp, "alice", &["delete", "deployment", "api", "-n", &ns], None);
    assert!(err.contains("held for approval"), "{err}");

    let pvc = format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: ledger-data\n  namespace: {ns}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 1Gi}}}}\n"
    );
    kubectl_ok(cp, "alice", &["apply", "-f", "-"], Some(&pvc));
    let err = kubectl_err(cp, "alice", &["delete", "pvc", "ledger-data", "-n", &ns], None);
    assert!(
        err.contains("(high risk, destructive;") && err.contains("deleting PersistentVolumeClaim ledger-data"),
        "{err}"
    );
    kubectl_ok(cp, ADMIN, &["get", "deployment", "api", "-n", &ns], None);
    kubectl_ok(cp, ADMIN, &["get", "pvc", "ledger-data", "-n", &ns], None);
}

#[test]
fn writes_in_kube_system_are_untouched() {
    let cp = cp();
    signoff();
    // test-everywhere matches ConfigMaps labelled risk=everywhere in every namespace...
    let ns = namespace(cp, "everywhere", &[]);
    let err = kubectl_err(cp, "alice", &["apply", "-f", "-"], Some(&configmap(&ns, "anything", "everywhere", "x")));
    assert!(err.contains("held for approval"), "{err}");
    // ...but kube-system is excluded before the API server ever calls the webhook.
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&configmap("kube-system", "anything", "everywhere", "x")));
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&configmap("kube-system", "anything", "everywhere", "y")));
}

#[test]
fn only_signoff_creates_requests_and_bad_policies_are_refused() {
    let cp = cp();
    signoff();
    let ns = gated_namespace(cp, "forged");
    let forged = format!(
        r#"apiVersion: signoff.dev/v1alpha1
kind: ApprovalRequest
metadata: {{name: ar-forged, namespace: {ns}}}
spec:
  requester: {{username: alice}}
  action: {{operation: CREATE, version: v1, kind: ConfigMap, resource: configmaps, name: x}}
  digest: {}
  risk: High
  actionClass: routine
  routes: [engineering]
  routing: [{{route: engineering, policy: test-gate}}]
  reasons: [{{policy: test-gate, rule: r, risk: High, route: engineering, actionClass: routine, message: m}}]
"#,
        "a".repeat(64)
    );
    let err = kubectl_err(cp, ADMIN, &["apply", "-f", "-"], Some(&forged));
    assert!(err.contains("only signoff creates ApprovalRequests"), "{err}");

    let bad = r#"apiVersion: signoff.dev/v1alpha1
kind: EscalationPolicy
metadata: {name: test-bad-route}
spec:
  match: {rules: [{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [secrets]}]}
  rules: [{name: r, expression: "true", risk: High, route: legal}]
"#;
    let err = kubectl_err(cp, ADMIN, &["apply", "-f", "-"], Some(bad));
    assert!(err.contains("names route \"legal\""), "{err}");
    let bad_cel = bad.replace("route: legal", "route: security").replace("\"true\"", "\"object.metadata.name ==\"");
    let err = kubectl_err(cp, ADMIN, &["apply", "-f", "-"], Some(&bad_cel));
    assert!(err.contains("test-bad-route"), "{err}");
}

#[test]
fn an_approver_is_written_only_by_that_person_or_an_admin() {
    let cp = cp();
    signoff();
    let approver = |note: &str| {
        format!(
            "apiVersion: signoff.dev/v1alpha1\nkind: Approver\nmetadata: {{name: carol}}\nspec:\n  user: carol\n  timeZone: Europe/Berlin\n  quietHours: [{{start: \"22:00\", end: \"07:00\"}}]\n  away: [{{from: \"2027-01-01T00:00:00Z\", until: \"2027-01-08T00:00:00Z\", reason: Vacation, note: \"{note}\"}}]\n"
        )
    };
    kubectl_ok(cp, "carol", &["apply", "-f", "-"], Some(&approver("skiing")));
    let err = kubectl_err(cp, "mallory", &["apply", "-f", "-"], Some(&approver("mallory was here")));
    assert!(err.contains("only carol or an admin may write the Approver for carol"), "{err}");
    kubectl_ok(cp, "ivan", &["apply", "-f", "-"], Some(&approver("covered by ivan")));
}

#[test]
fn health_readiness_and_metrics_are_served_on_the_plain_port() {
    let cp = cp();
    let signoff = signoff();
    // At least one review has been answered (the readiness canary).
    let get = |path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}", &format!("{}{path}", signoff.health)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(get("/healthz").ends_with("ok\n200"));
    assert!(get("/readyz").ends_with("ok\n200"));
    let ns = gated_namespace(cp, "metrics");
    kubectl_err(cp, "alice", &["apply", "-f", "-"], Some(&configmap(&ns, "m", "high", "1")));
    let metrics = get("/metrics");
    assert!(metrics.contains("signoff_admission_reviews_total{result=\"denied\"}"), "{metrics}");
    assert!(metrics.contains("# EOF"), "OpenMetrics ends with # EOF: {metrics}");
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{content_type}", &format!("{}/metrics", signoff.health)])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), signoff::metrics::CONTENT_TYPE, "served as what it is");
    assert!(metrics.contains("signoff_gate_decisions_total{decision=\"held\"}"), "{metrics}");
    assert!(metrics.contains("signoff_admission_review_seconds_bucket"), "{metrics}");
}

#[test]
fn deleting_a_namespace_is_held_and_the_request_lives_in_signoffs_namespace() {
    let cp = cp();
    signoff();
    let ns = gated_namespace(cp, "doomed");
    let err = kubectl_err(cp, ADMIN, &["delete", "namespace", &ns, "--wait=false"], None);
    assert!(err.contains("held for approval: ApprovalRequest signoff-system/"), "{err}");
    assert!(err.contains(&format!("deleting namespace {ns}")), "{err}");
    let name = held_name(&err);
    let ar = request(cp, "signoff-system", &name);
    assert_eq!(ar["spec"]["action"]["kind"], "Namespace");
    let phase = kubectl_ok(cp, ADMIN, &["get", "namespace", &ns, "-o", "jsonpath={.status.phase}"], None);
    assert_eq!(phase, "Active", "the namespace was not deleted");
}

/// Policy changes leave a trace (issue 23, item 8): every create, update and
/// delete of an EscalationPolicy is an audit line, an Event on the policy and a
/// metric; a writer who weakens the gate (Audit mode, a delete) is warned; a dry
/// run is warned and records nothing.
#[test]
fn policy_changes_are_recorded_and_weakening_ones_warn_the_writer() {
    let cp = cp();
    let signoff = signoff();
    let name = format!("trail-{}", std::process::id());
    // Matches nothing the other tests write: its changes cannot disturb them.
    let manifest = format!(
        "apiVersion: signoff.dev/v1alpha1\nkind: EscalationPolicy\nmetadata: {{name: {name}}}\nspec:\n  mode: Enforce\n  match:\n    rules: [{{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [podtemplates]}}]\n    namespaceSelector: {{matchLabels: {{signoff.dev/test-trail: \"{name}\"}}}}\n  rules:\n  - {{name: any, expression: \"true\", risk: High, route: engineering}}\n"
    );
    let warned = |args: &[&str], stdin: Option<&str>| {
        let (ok, _, err) = cp.kubectl_run(ADMIN, args, stdin).expect("kubectl runs");
        assert!(ok, "kubectl {args:?}: {err}");
        err.contains("signoff: this weakens the gate")
    };
    assert!(!warned(&["apply", "-f", "-"], Some(&manifest)), "creating an enforcing policy weakens nothing");
    let patch = |mode: &str| format!("{{\"spec\":{{\"mode\":\"{mode}\"}}}}");
    let policy = format!("escalationpolicy/{name}");
    assert!(warned(&["patch", &policy, "--type", "merge", "-p", &patch("Audit")], None), "Enforce → Audit warns");
    assert!(!warned(&["patch", &policy, "--type", "merge", "-p", &patch("Enforce")], None));
    assert!(warned(&["delete", &policy, "--dry-run=server"], None), "a dry-run delete is warned too");
    assert!(warned(&["delete", &policy], None), "deleting an enforcing policy warns");

    // The Events, on the policy: one per real change, none for the dry run.
    let notes = eventually(30, "the policy's Events", || {
        let out = kubectl_ok(
            cp,
            ADMIN,
            &["get", "events", "-A", "--field-selector", &format!("involvedObject.name={name}"), "-o", "json"],
            None,
        );
        let events: serde_json::Value = serde_json::from_str(&out).unwrap();
        let notes: Vec<(String, String)> = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["reason"] == "PolicyChanged")
            .map(|e| (e["type"].as_str().unwrap().to_string(), e["message"].as_str().unwrap().to_string()))
            .collect();
        (notes.len() >= 4).then_some(notes)
    });
    let with = |text: &str| notes.iter().filter(|(_, n)| n.contains(text)).collect::<Vec<_>>();
    assert_eq!(with("created (Enforce, 1 rules)").len(), 1, "{notes:?}");
    assert_eq!(with("mode Enforce → Audit")[0].0, "Warning", "{notes:?}");
    assert_eq!(with("mode Audit → Enforce")[0].0, "Normal", "{notes:?}");
    assert_eq!(with("deleted (was Enforce").len(), 1, "the dry run left no Event: {notes:?}");
    assert!(notes.iter().all(|(_, n)| n.contains("by admin")), "{notes:?}");

    // Audit lines are written in batches, at most runtime::log::BATCH_WINDOW late.
    let audit_lines = || -> Vec<String> {
        let log = signoff.log_text();
        log.lines().filter(|l| l.contains("policy-changed") && l.contains(&name)).map(String::from).collect()
    };
    let audit = eventually(5, "four audit lines", || Some(audit_lines()).filter(|a| a.len() >= 4));
    assert_eq!(audit.len(), 4, "one audit line per real change:\n{}", audit.join("\n"));
    let metrics = signoff.metrics_text();
    assert!(metrics.contains("signoff_policy_changes_total{action=\"updated\",weakened=\"true\"}"), "{metrics}");
    assert!(metrics.contains("signoff_policy_changes_total{action=\"deleted\",weakened=\"true\"}"), "{metrics}");
}

/// Exempt resources (leases, events, ...) are kept from the gate by a
/// matchCondition only while one of its rules could match one: the API server
/// evaluates any condition on every write it sends, at a cost (it converts the
/// object and its old version). The test policies name none, so the gate has no
/// condition; a policy that names Leases brings it in the same write of the
/// configuration as its rule, and takes it away when it goes.
#[test]
fn the_exemption_condition_follows_the_rules_that_need_it() {
    let cp = cp();
    let signoff = signoff();
    let name = format!("exempt-{}", std::process::id());
    let gate = || -> (Vec<String>, bool) {
        let out = kubectl_ok(cp, ADMIN, &["get", "validatingwebhookconfiguration", "signoff", "-o", "json"], None);
        let vwc: serde_json::Value = serde_json::from_str(&out).unwrap();
        let gate = &vwc["webhooks"][0];
        assert_eq!(gate["name"], "gate.signoff.dev");
        let conditions = gate["matchConditions"].as_array().into_iter().flatten();
        let leases = gate["rules"].as_array().unwrap().iter().any(|r| r["resources"] == json!(["leases"]));
        (conditions.map(|c| c["name"].as_str().unwrap().to_string()).collect(), leases)
    };
    eventually(30, "a gate without a condition (no test policy names an exempt resource)", || {
        (gate() == (vec![], false)).then_some(())
    });
    let ns = namespace(cp, "exempt", &[("signoff.dev/test-exempt", &name)]);
    let policy = format!(
        "apiVersion: signoff.dev/v1alpha1\nkind: EscalationPolicy\nmetadata: {{name: {name}}}\nspec:\n  match:\n    rules: [{{operations: [CREATE, UPDATE], apiGroups: [coordination.k8s.io], apiVersions: [v1], resources: [leases]}}]\n    namespaceSelector: {{matchLabels: {{signoff.dev/test-exempt: \"{name}\"}}}}\n  rules:\n  - {{name: any, expression: \"true\", risk: High, route: engineering}}\n"
    );
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&policy));
    eventually(30, "the Lease rule and the condition, together", || {
        (gate() == (vec!["not-exempt".to_string()], true)).then_some(())
    });
    // The rule matches the Lease, the condition keeps it from signoff: written,
    // and signoff never saw a review of a Lease.
    let lease =
        format!("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: {name}, namespace: {ns}}}\n");
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&lease));
    let metrics = signoff.metrics_text();
    assert!(metrics.contains("signoff_admission_review_seconds_count"), "{metrics}");
    assert!(!metrics.contains("kind=\"lease\""), "a Lease reached signoff:\n{metrics}");
    kubectl_ok(cp, ADMIN, &["delete", "escalationpolicy", &name], None);
    eventually(30, "the gate without the Lease rule and the condition", || (gate() == (vec![], false)).then_some(()));
}

/// signoff's namespace labels are its trust anchors (issue 23, item 3): they
/// decide which rules apply and who approves. They cannot be changed through
/// `namespaces/status` or `namespaces/finalize` (the API server keeps label
/// changes sent there, out of the policies' sight), and on the namespace itself
/// only a platform admin changes them when no policy holds the change.
#[test]
fn signoffs_namespace_labels_change_only_on_the_namespace_and_only_by_an_admin() {
    let cp = cp();
    signoff();
    let ns = gated_namespace(cp, "anchor");
    let relabel = r#"{"metadata":{"labels":{"signoff.dev/environment":"development"}}}"#;
    let environment = || {
        kubectl_ok(cp, ADMIN, &["get", "ns", &ns, "-o", "jsonpath={.metadata.labels.signoff\\.dev/environment}"], None)
    };

    // Through the status subresource: refused, even for an admin.
    let err =
        kubectl_err(cp, ADMIN, &["patch", "ns", &ns, "--subresource=status", "--type=merge", "-p", relabel], None);
    assert!(err.contains("signoff.dev/environment") && err.contains("namespaces/status"), "{err}");
    // Through finalize: the same.
    let mut object: serde_json::Value =
        serde_json::from_str(&kubectl_ok(cp, ADMIN, &["get", "ns", &ns, "-o", "json"], None)).unwrap();
    object["metadata"]["labels"]["signoff.dev/environment"] = "development".into();
    let path = format!("/api/v1/namespaces/{ns}/finalize");
    let err = kubectl_err(cp, ADMIN, &["replace", "--raw", &path, "-f", "-"], Some(&object.to_string()));
    assert!(err.contains("signoff.dev/environment") && err.contains("namespaces/finalize"), "{err}");
    // Other label changes through status are none of signoff's business.
    kubectl_ok(
        cp,
        ADMIN,
        &[
            "patch",
            "ns",
            &ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"team-note":"x"}}}"#,
        ],
        None,
    );
    assert_eq!(environment(), "production", "nothing relabelled the namespace");

    // On the namespace itself, no policy here holds a relabel: a non-admin who may
    // update namespaces is refused, an admin is not.
    let rbac = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: anchor-{ns}}}\nrules:\n- {{apiGroups: [\"\"], resources: [namespaces], verbs: [get, patch, update]}}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: anchor-{ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: anchor-{ns}}}\nsubjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: mallory}}]\n"
    );
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&rbac));
    let err = eventually(30, "mallory's namespace rights", || {
        let (ok, _, err) =
            cp.kubectl_run("mallory", &["patch", "ns", &ns, "--type=merge", "-p", relabel], None).unwrap();
        (!ok && !err.contains("forbidden: User")).then_some(err).or_else(|| ok.then(|| "admitted".to_string()))
    });
    assert!(err.contains("only a platform admin"), "{err}");
    kubectl_ok(cp, "mallory", &["label", "ns", &ns, "team-note=y", "--overwrite"], None);
    assert_eq!(environment(), "production");
    kubectl_ok(cp, ADMIN, &["patch", "ns", &ns, "--type=merge", "-p", relabel], None);
    assert_eq!(environment(), "development", "an admin relabels");
}

/// A hostile or careless policy (issue 23, item 6): one whose estimated cost is
/// over the budget is refused when written, with the estimate; one that runs
/// over the runtime budget holds the change, naming the rule, and never admits
/// it; writes it does not match are answered as usual meanwhile.
#[test]
fn an_expensive_policy_is_refused_or_holds_and_stalls_nothing_else() {
    let cp = cp();
    signoff();
    let ns = namespace(cp, "cost", &[("signoff.dev/test-cost", "true")]);
    let other = namespace(cp, "cost-other", &[]);
    let policy = |name: &str, expression: &str| {
        format!(
            "apiVersion: signoff.dev/v1alpha1\nkind: EscalationPolicy\nmetadata: {{name: {name}}}\nspec:\n  match:\n    \
             rules: [{{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [configmaps]}}]\n    \
             namespaceSelector: {{matchLabels: {{signoff.dev/test-cost: \"true\"}}}}\n  rules:\n  - name: loop\n    \
             expression: {expression:?}\n    risk: Low\n    route: engineering\n"
        )
    };
    let thousand = format!("[{}]", (0..1000).map(|i| i.to_string()).collect::<Vec<_>>().join(","));
    let hostile = policy("cost-hostile", &format!("{thousand}.all(x, {thousand}.all(y, x != y || x == y))"));
    let err = kubectl_err(cp, ADMIN, &["apply", "-f", "-"], Some(&hostile));
    assert!(err.contains("estimated cost") && err.contains("exceeds the limit") && err.contains("loop"), "{err}");

    let careless = policy("cost-careless", "object.data.all(x, object.data.all(y, x != y || x == y))");
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&careless));
    let map = |n: usize| (0..n).map(|i| format!("  k{i}: \"v\"\n")).collect::<String>();
    let small =
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: small, namespace: {ns}}}\ndata:\n{}", map(5));
    // 600 keys: 600 × 600 elements, over the runtime budget of 200,000.
    let big = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big, namespace: {ns}}}\ndata:\n{}", map(600));
    eventually(30, "the careless policy to be enforced", || {
        let (ok, _, err) = cp.kubectl_run(ADMIN, &["create", "--dry-run=server", "-f", "-"], Some(&big)).unwrap();
        (ok && err.contains("would be held")).then_some(())
    });
    let unrelated = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: unrelated, namespace: {other}}}\n");
    let timed = |f: &dyn Fn() -> String| {
        let started = std::time::Instant::now();
        (f(), started.elapsed())
    };
    let ((held, held_in), (admitted, admitted_in)) = std::thread::scope(|s| {
        let held = s.spawn(|| timed(&|| kubectl_err(cp, "alice", &["create", "-f", "-"], Some(&big))));
        let admitted = s.spawn(|| timed(&|| kubectl_ok(cp, "alice", &["create", "-f", "-"], Some(&unrelated))));
        (held.join().unwrap(), admitted.join().unwrap())
    });
    assert!(admitted.contains("configmap/unrelated created"), "{admitted}");
    assert!(held.contains("held for approval") && held.contains("rule \"loop\" of policy cost-careless"), "{held}");
    let (ar_ns, name) = held_ref(&held);
    let ar = kubectl_ok(cp, ADMIN, &["get", "ar", "-n", &ar_ns, &name, "-o", "json"], None);
    assert!(ar.contains("evaluation cost over the limit") && ar.contains("cost-careless"), "{ar}");
    kubectl_ok(cp, "alice", &["create", "-f", "-"], Some(&small));
    kubectl_ok(cp, ADMIN, &["delete", "escalationpolicy", "cost-careless"], None);
    const SECTION: &str = "8 hostile policies";
    common::report::record(
        "hostile_policies",
        &[
            Figure::new(SECTION, "a million-iteration rule, when written", "refused (estimate)", "refused", true),
            Figure::new(SECTION, "a 600 x 600 iteration at run time", "held, rule named", "held", true),
            Figure::count(SECTION, "that held write, kubectl round trip", format!("{:.2} s", held_in.as_secs_f64())),
            Figure::count(
                SECTION,
                "an unrelated write at the same time, kubectl round trip",
                format!("{:.2} s", admitted_in.as_secs_f64()),
            ),
        ],
    );
}
