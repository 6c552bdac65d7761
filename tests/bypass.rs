//! The bypass matrix: every way we know to get a held change past the gate, each a
//! real write through the real API server by a real user, against signoff's real
//! webhook. Each case names the attack, the outcome it must have and what is
//! recorded. The table in docs/security.md is written from these rows
//! (`SIGNOFF_UPDATE_DOCS=1 cargo test --test bypass`); the test fails when it is stale.
//! Own test binary: the last cases kill signoff.

mod common;

use common::approvals::*;
use common::*;
use serde_json::{Value, json};

/// How a write ended, as the user saw it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    /// Denied with "held for approval": an ApprovalRequest holds it.
    Held,
    /// Denied by one of signoff's webhooks (gate or guard), with a reason.
    Denied,
    /// Refused by the API server's authorization (RBAC) before any webhook.
    Forbidden,
    /// Refused by the API server's validation of the CRD (its CEL rules), before any webhook.
    Invalid,
    /// The write succeeded but changed nothing (status through the main resource).
    Ignored,
    /// Denied by the API server because the webhook could not be called.
    Unreachable,
    Admitted,
    Other,
}

impl Outcome {
    fn text(self) -> &'static str {
        match self {
            Outcome::Held => "held",
            Outcome::Denied => "denied by signoff",
            Outcome::Forbidden => "forbidden (RBAC)",
            Outcome::Invalid => "invalid (CRD validation)",
            Outcome::Ignored => "ignored (no effect)",
            Outcome::Unreachable => "denied (webhook unreachable, failurePolicy Fail)",
            Outcome::Admitted => "admitted",
            Outcome::Other => "unexpected error",
        }
    }
}

fn outcome_of(ok: bool, err: &str) -> Outcome {
    if ok {
        Outcome::Admitted
    } else if err.contains("held for approval") {
        Outcome::Held
    } else if err.contains("failed calling webhook") {
        Outcome::Unreachable
    } else if err.contains("signoff.dev\" denied the request") {
        Outcome::Denied
    } else if err.contains("forbidden") || err.contains("Forbidden") {
        Outcome::Forbidden
    } else if err.contains("is invalid") {
        Outcome::Invalid
    } else {
        Outcome::Other
    }
}

struct Row {
    group: &'static str,
    attack: String,
    how: String,
    expected: Outcome,
    observed: Outcome,
    recorded: Result<String, String>,
    detail: String,
}

struct Matrix {
    rows: Vec<Row>,
}

/// The result of one kubectl run: success, stdout, stderr.
type Run = (bool, String, String);

impl Matrix {
    /// Record one case: `run` is the attack's result; `recorded` checks (and
    /// describes) what signoff recorded about it, given the stderr.
    fn case(
        &mut self,
        group: &'static str,
        attack: &str,
        how: &str,
        expected: Outcome,
        run: Run,
        recorded: impl FnOnce(&str) -> Result<String, String>,
    ) {
        let (ok, out, err) = run;
        let observed = if ok && expected == Outcome::Ignored { Outcome::Ignored } else { outcome_of(ok, &err) };
        let recorded = if observed == expected { recorded(&err) } else { Err("(outcome differs)".into()) };
        let detail = format!("{}{}", out.trim(), err.trim()).lines().take(3).collect::<Vec<_>>().join(" | ");
        eprintln!(
            "[{}] {attack}: expected {}, observed {} — {}",
            if observed == expected && recorded.is_ok() { "ok" } else { "FAIL" },
            expected.text(),
            observed.text(),
            match &recorded {
                Ok(r) => r.clone(),
                Err(e) => format!("record check failed: {e}; output: {detail}"),
            }
        );
        self.rows.push(Row { group, attack: attack.into(), how: how.into(), expected, observed, recorded, detail });
    }

    fn table(&self) -> String {
        let mut t = String::from(
            "| # | Group | Attack | Real write | Expected | Observed | Recorded |\n|---|---|---|---|---|---|---|\n",
        );
        for (i, r) in self.rows.iter().enumerate() {
            let cell = |s: &str| s.replace('|', "\\|");
            let observed = if r.observed == r.expected && r.recorded.is_ok() {
                format!("{} ✔", r.observed.text())
            } else {
                format!("**{}** ✘", r.observed.text())
            };
            t.push_str(&format!(
                "| {} | {} | {} | `{}` | {} | {} | {} |\n",
                i + 1,
                r.group,
                cell(&r.attack),
                cell(&r.how),
                r.expected.text(),
                observed,
                cell(r.recorded.as_deref().unwrap_or("—")),
            ));
        }
        t
    }
}

fn run(user: &str, args: &[&str], stdin: Option<&str>) -> Run {
    cp().kubectl_run(user, args, stdin).expect("kubectl runs")
}

/// signoff's audit log has a line with this decision that mentions both `a` and `b`
/// (e.g. the request's name, which is in the message, and the object's name).
fn audit_line(decision: &str, a: &str, b: &str) -> Result<(), String> {
    let needle = format!("\"decision\":\"{decision}\"");
    let found = (0..50).any(|_| {
        let hit = signoff().log_text().lines().any(|l| l.contains(&needle) && l.contains(a) && l.contains(b));
        if !hit {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        hit
    });
    found.then_some(()).ok_or_else(|| format!("no audit line {needle} mentioning {a} and {b}"))
}

/// A held change: its ApprovalRequest exists, is about one of `objects` and is not
/// Approved, and the hold (or the denial by an existing request) is in the audit log.
fn held_record(err: &str, objects: &[&str]) -> Result<String, String> {
    let (ns, name) = held_ref(err);
    let ar = request(cp(), &ns, &name);
    if ar["status"]["phase"] == "Approved" {
        return Err(format!("{ns}/{name} is Approved"));
    }
    let object = ar["spec"]["action"]["name"].as_str().unwrap_or_default().to_string();
    if !objects.contains(&object.as_str()) {
        return Err(format!("the request is about {object}, not {objects:?}"));
    }
    audit_line("held", &name, &object).or_else(|_| audit_line("denied", &name, &object))?;
    Ok(format!(
        "ApprovalRequest for {} {} (not approved); audit line",
        ar["spec"]["action"]["operation"].as_str().unwrap_or_default(),
        ar["spec"]["action"]["kind"].as_str().unwrap_or_default()
    ))
}

/// A write to a signoff resource refused by the guard, with this reason, and logged.
fn refused(err: &str, reason: &str) -> Result<String, String> {
    if !err.contains(reason) {
        return Err(format!("message lacks {reason:?}"));
    }
    let logged = (0..50).any(|_| {
        let hit = signoff().log_text().lines().any(|l| l.contains("\"decision\":\"refused\"") && l.contains(reason));
        if !hit {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        hit
    });
    logged.then(|| format!("refused: \"{reason}\"; audit line")).ok_or_else(|| "no audit line".into())
}

fn crd_append_only(err: &str) -> Result<String, String> {
    err.contains("append-only")
        .then(|| "refused by the CRD's CEL rule (decisions are append-only), before signoff's guard".into())
        .ok_or(err.into())
}

fn rbac(err: &str) -> Result<String, String> {
    err.contains("cannot").then(|| "refused by the API server's RBAC, before signoff".to_string()).ok_or(err.into())
}

fn configmap(ns: &str, name: &str, data: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}}}\ndata: {{v: \"{data}\"}}\n")
}

/// Hold a change by alice, approve it as bob, wait until Approved. Returns the request's name.
fn hold_and_approve(manifest: &str) -> String {
    let err = kubectl_err(cp(), "alice", &["create", "-f", "-"], Some(manifest));
    let (ar_ns, name) = held_ref(&err);
    approve(&ar_ns, &name);
    name
}

fn approve(ns: &str, name: &str) {
    wait_for_lanes(cp(), ns, name);
    let (ok, err) = decide(cp(), "bob", "bob", ns, name, "Approve");
    assert!(ok, "bob approves {ns}/{name}: {err}");
    wait_for_phase(cp(), ns, name, "Approved");
}

fn status_patch(ar: &Value, decisions: Value) -> String {
    json!({"metadata": {"resourceVersion": ar["metadata"]["resourceVersion"]}, "status": {"decisions": decisions}})
        .to_string()
}

fn decision_by(cp: &ControlPlane, user: &str, approver: &str, ar: &Value) -> Value {
    let me = whoami(cp, user);
    let mut decisions = ar["status"]["decisions"].as_array().cloned().unwrap_or_default();
    decisions.push(json!({"approver": approver, "uid": me["uid"], "groups": me["groups"], "decision": "Approve",
        "at": jiff::Timestamp::now().to_string(), "attempt": 1}));
    Value::Array(decisions)
}

#[test]
fn nothing_gets_past_the_gate() {
    let cp = cp();
    signoff();
    let labels = [
        ("signoff.dev/test-bypass", "true"),
        ("signoff.dev/environment", "production"),
        ("signoff.dev/owner", "payments"),
    ];
    let ns = namespace(cp, "bypass", &labels);
    let ns2 = namespace(cp, "bypass-other", &labels);

    // Objects that exist before the policy: the targets of updates and deletes.
    let base = format!(
        r#"{}---
apiVersion: v1
kind: ConfigMap
metadata: {{name: fin, namespace: {ns}, finalizers: [example.com/keep]}}
data: {{v: "1"}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: app, image: "registry.k8s.io/pause:3.10"}}]}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: {ns}}}
spec:
  replicas: 1
  serviceName: db
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec: {{containers: [{{name: db, image: "registry.k8s.io/pause:3.10"}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: svc, namespace: {ns}}}
spec: {{ports: [{{port: 80}}], selector: {{app: web}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: p, namespace: {ns}}}
spec: {{containers: [{{name: app, image: "registry.k8s.io/pause:3.10"}}]}}
"#,
        configmap(&ns, "base", "1")
    );
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&base));
    // `fin` is being deleted (its finalizer keeps it): the deletion started before any policy held it.
    kubectl_ok(cp, ADMIN, &["delete", "configmap", "fin", "-n", &ns, "--wait=false"], None);

    let fixture =
        signoff_testenv::checkout().unwrap_or_else(|e| panic!("{e}")).join("tests/fixtures/bypass-policies.yaml");
    kubectl_ok(cp, ADMIN, &["apply", "-f", &fixture.display().to_string()], None);
    eventually(60, "the bypass policy to be enforced", || {
        let (ok, _, err) = cp
            .kubectl_run("alice", &["apply", "--dry-run=server", "-f", "-"], Some(&configmap(&ns, "probe", "x")))
            .unwrap();
        (ok && err.contains("would be held")).then_some(())
    });

    let mut m = Matrix { rows: Vec::new() };
    let n = ns.as_str();
    let held = |object: &'static str| move |err: &str| held_record(err, &[object]);

    // ---- Subresources
    m.case(
        "subresource",
        "`kubectl scale` a Deployment",
        "kubectl scale deployment web --replicas=3",
        Outcome::Held,
        run("alice", &["scale", "deployment", "web", "-n", n, "--replicas=3"], None),
        held("web"),
    );
    m.case(
        "subresource",
        "`kubectl scale` a StatefulSet",
        "kubectl scale statefulset db --replicas=2",
        Outcome::Held,
        run("alice", &["scale", "statefulset", "db", "-n", n, "--replicas=2"], None),
        held("db"),
    );
    m.case(
        "subresource",
        "add an ephemeral debug container",
        "kubectl debug p --image=busybox (pods/ephemeralcontainers)",
        Outcome::Held,
        run("alice", &["debug", "p", "-n", n, "--image=busybox:1.36", "--profile=general"], None),
        held("p"),
    );
    m.case(
        "subresource",
        "exec into a pod (CONNECT)",
        "kubectl exec p -- true",
        Outcome::Held,
        run("alice", &["exec", "p", "-n", n, "--", "true"], None),
        held("p"),
    );
    m.case(
        "subresource",
        "write a status the policy matches",
        "kubectl patch service svc --subresource=status",
        Outcome::Held,
        run(
            ADMIN,
            &[
                "patch",
                "service",
                "svc",
                "-n",
                n,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"conditions":[{"type":"Exposed","status":"True","reason":"Forged","message":"x","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#,
            ],
            None,
        ),
        held("svc"),
    );

    // ---- Every way to write
    m.case(
        "write",
        "create",
        "kubectl create -f (new ConfigMap)",
        Outcome::Held,
        run("alice", &["create", "-f", "-"], Some(&configmap(n, "new", "1"))),
        held("new"),
    );
    m.case(
        "write",
        "replace (PUT)",
        "kubectl replace -f",
        Outcome::Held,
        run("alice", &["replace", "-f", "-"], Some(&configmap(n, "base", "2"))),
        held("base"),
    );
    m.case(
        "write",
        "JSON patch",
        "kubectl patch --type=json",
        Outcome::Held,
        run(
            "alice",
            &[
                "patch",
                "configmap",
                "base",
                "-n",
                n,
                "--type=json",
                "-p",
                r#"[{"op":"replace","path":"/data/v","value":"3"}]"#,
            ],
            None,
        ),
        held("base"),
    );
    m.case(
        "write",
        "merge patch",
        "kubectl patch --type=merge",
        Outcome::Held,
        run("alice", &["patch", "configmap", "base", "-n", n, "--type=merge", "-p", r#"{"data":{"v":"4"}}"#], None),
        held("base"),
    );
    m.case(
        "write",
        "strategic merge patch",
        "kubectl patch deployment --type=strategic",
        Outcome::Held,
        run(
            "alice",
            &[
                "patch",
                "deployment",
                "web",
                "-n",
                n,
                "--type=strategic",
                "-p",
                r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"registry.k8s.io/pause:3.9"}]}}}}"#,
            ],
            None,
        ),
        held("web"),
    );
    m.case(
        "write",
        "client-side apply",
        "kubectl apply -f",
        Outcome::Held,
        run("alice", &["apply", "-f", "-"], Some(&configmap(n, "base", "5"))),
        held("base"),
    );
    m.case(
        "write",
        "server-side apply, forcing conflicts",
        "kubectl apply --server-side --force-conflicts",
        Outcome::Held,
        run("alice", &["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(&configmap(n, "base", "6"))),
        held("base"),
    );
    let hpa = format!(
        "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {{name: web, namespace: {n}}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}\n  maxReplicas: 50\n"
    );
    m.case(
        "write",
        "the same resource under another API version (policy names autoscaling/v2)",
        "kubectl create -f (autoscaling/v1 HorizontalPodAutoscaler)",
        Outcome::Held,
        run(ADMIN, &["create", "-f", "-"], Some(&hpa)),
        held("web"),
    );

    // ---- Every way to delete
    m.case(
        "delete",
        "delete",
        "kubectl delete configmap base",
        Outcome::Held,
        run("alice", &["delete", "configmap", "base", "-n", n], None),
        held("base"),
    );
    m.case(
        "delete",
        "delete every object of a kind",
        "kubectl delete configmaps --all",
        Outcome::Held,
        run("alice", &["delete", "configmaps", "--all", "-n", n], None),
        |err| held_record(err, &["base", "fin"]),
    );
    let collection = format!("/api/v1/namespaces/{n}/configmaps");
    m.case(
        "delete",
        "deletecollection through the API",
        "kubectl delete --raw /api/v1/namespaces/NS/configmaps",
        Outcome::Held,
        run("alice", &["delete", "--raw", &collection], None),
        |err| held_record(err, &["", "base", "fin"]),
    );
    m.case(
        "delete",
        "forced delete",
        "kubectl delete --grace-period=0 --force",
        Outcome::Held,
        run("alice", &["delete", "configmap", "base", "-n", n, "--grace-period=0", "--force"], None),
        held("base"),
    );
    assert!(
        cp.kubectl_run(ADMIN, &["get", "configmap", "base", "-n", n], None).unwrap().0,
        "base survived every delete"
    );
    let unfinalize =
        ["patch", "configmap", "fin", "-n", n, "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#];
    let fin = run("alice", &unfinalize, None);
    let fin_err = fin.2.clone();
    m.case(
        "delete",
        "remove the finalizers of an object being deleted (deletion never approved)",
        "kubectl patch configmap fin (finalizers: null)",
        Outcome::Held,
        fin,
        |err| {
            let (ar_ns, name) = held_ref(err);
            let ar = request(cp, &ar_ns, &name);
            (ar["spec"]["action"]["operation"] == "DELETE")
                .then(|| "ApprovalRequest for the DELETE it completes; audit line".to_string())
                .ok_or_else(|| format!("request is for {}", ar["spec"]["action"]["operation"]))
                .and_then(|r| {
                    audit_line("held", &name, "fin").or_else(|_| audit_line("denied", &name, "fin")).map(|_| r)
                })
        },
    );
    let (fin_ns, fin_ar) = held_ref(&fin_err);
    approve(&fin_ns, &fin_ar);
    m.case(
        "delete",
        "the same finalizer removal once that deletion is approved",
        "kubectl patch configmap fin",
        Outcome::Admitted,
        run("alice", &unfinalize, None),
        |_| {
            let gone = !cp.kubectl_run(ADMIN, &["get", "configmap", "fin", "-n", n], None).unwrap().0;
            let ar = request(cp, &fin_ns, &fin_ar);
            (gone && ar["status"]["admissions"][0]["user"] == "alice")
                .then(|| "deletion completed; admission recorded in the request".to_string())
                .ok_or_else(|| format!("gone={gone}, admissions={}", ar["status"]["admissions"]))
        },
    );

    // ---- Approval replay
    let twin = configmap(n, "twin", "1");
    let twin_ar = hold_and_approve(&twin);
    m.case(
        "replay",
        "the approved change with one field different",
        "kubectl create -f (twin, v: 2)",
        Outcome::Held,
        run("alice", &["create", "-f", "-"], Some(&configmap(n, "twin", "2"))),
        |err| {
            (held_name(err) != twin_ar).then_some(()).ok_or("same request".to_string())?;
            held_record(err, &["twin"])
        },
    );
    m.case(
        "replay",
        "the approved change in another namespace",
        "kubectl create -f (twin in another namespace)",
        Outcome::Held,
        run("alice", &["create", "-f", "-"], Some(&configmap(&ns2, "twin", "1"))),
        held("twin"),
    );
    m.case(
        "replay",
        "the approved change itself",
        "kubectl create -f (twin, v: 1)",
        Outcome::Admitted,
        run("alice", &["create", "-f", "-"], Some(&twin)),
        |_| {
            let ar = request(cp, n, &twin_ar);
            (ar["status"]["admissions"].as_array().map(Vec::len) == Some(1))
                .then(|| "one admission recorded in the request; audit line".to_string())
                .ok_or_else(|| format!("admissions: {}", ar["status"]["admissions"]))
                .and_then(|r| audit_line("admitted", &twin_ar, "twin").map(|_| r))
        },
    );
    m.case(
        "break-glass",
        "break-glass identity deletes a held object",
        "kubectl delete configmap twin (as breakglass)",
        Outcome::Admitted,
        run("breakglass", &["delete", "configmap", "twin", "-n", n], None),
        |err| {
            if !err.contains("BREAK-GLASS") {
                return Err("no break-glass warning".into());
            }
            let glass = requests(cp, n).into_iter().find(|r| {
                r["spec"]["action"]["operation"] == "DELETE"
                    && r["spec"]["action"]["name"] == "twin"
                    && r["status"]["admissions"][0]["breakGlass"] == true
            });
            glass.ok_or("no request records the break-glass admission")?;
            let events = kubectl_ok(cp, ADMIN, &["get", "events.events.k8s.io", "-n", n, "-o", "json"], None);
            if !events.contains("\"reason\": \"BreakGlass\"") {
                return Err("no BreakGlass Event".into());
            }
            audit_line("break-glass", n, "\"twin\"")?;
            Ok("admission (breakGlass) in the request, which escalates for review; Event BreakGlass; audit line".into())
        },
    );
    m.case(
        "replay",
        "the approved change a second time after it was admitted",
        "kubectl create -f (twin, v: 1) again",
        Outcome::Denied,
        run("alice", &["create", "-f", "-"], Some(&twin)),
        |err| {
            err.contains("was already used").then_some(()).ok_or("message does not say the approval was used")?;
            audit_line("denied", &twin_ar, "already used")?;
            Ok("\"approval was already used … reopen\"; audit line".into())
        },
    );
    let late = configmap(n, "late", "1");
    let late_ar = hold_and_approve(&late);
    let not_after: jiff::Timestamp =
        request(cp, n, &late_ar)["status"]["notAfter"].as_str().expect("notAfter").parse().unwrap();
    eventually(60, "notAfter to pass", || (jiff::Timestamp::now() > not_after).then_some(()));
    m.case(
        "replay",
        "the approved change after notAfter",
        "kubectl create -f (late) after notAfter",
        Outcome::Denied,
        run("alice", &["create", "-f", "-"], Some(&late)),
        |err| {
            err.contains("expired at").then_some(()).ok_or("message does not say the approval expired")?;
            audit_line("denied", &late_ar, "expired at")?;
            Ok("\"the approval … expired\"; audit line".into())
        },
    );
    // An approval binds the assessment, not only the content (issue 23, item 1).
    let assessed = |ns: &str, name: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}, labels: {{bypass-assessment: \"true\"}}}}\ndata: {{v: \"1\"}}\n"
        )
    };
    // Held as its own request that needs the manager; the approval is not used.
    let own_request = |first: String| {
        move |err: &str| -> Result<String, String> {
            let (ar_ns, name) = held_ref(err);
            (name != first).then_some(()).ok_or("held by the approved request itself")?;
            err.contains("does not cover this write").then_some(()).ok_or("message does not say why")?;
            let ar = request(cp, &ar_ns, &name);
            let routes = ar["spec"]["routes"].as_array().cloned().unwrap_or_default();
            routes.contains(&json!("manager")).then_some(()).ok_or(format!("routes {routes:?}"))?;
            let used = request(cp, &ar_ns, &first)["status"]["admissions"].as_array().is_some_and(|a| !a.is_empty());
            (!used).then_some(()).ok_or("the approval was used")?;
            audit_line("not-covered", &first, &name)?;
            Ok("own ApprovalRequest routed to manager too; the approval unused; audit line".into())
        }
    };
    let shared = assessed(n, "shared");
    let shared_ar = hold_and_approve(&shared);
    m.case(
        "replay",
        "alice's approved change applied by someone whose own write needs more approvers",
        "kubectl create -f (shared, approved for alice) as mallory (cross-team: manager)",
        Outcome::Held,
        run("mallory", &["create", "-f", "-"], Some(&shared)),
        own_request(shared_ar.clone()),
    );
    let frozen = assessed(&ns2, "frozen");
    let frozen_ar = hold_and_approve(&frozen);
    kubectl_ok(cp, ADMIN, &["label", "ns", &ns2, "signoff.dev/freeze=true"], None);
    // signoff reads namespace labels from its cache: wait until it sees the freeze.
    eventually(30, "signoff to see the freeze", || {
        let probe = assessed(&ns2, "freeze-probe");
        let (_, _, err) = cp.kubectl_run("alice", &["create", "--dry-run=server", "-f", "-"], Some(&probe)).unwrap();
        err.contains("change freeze").then_some(())
    });
    m.case(
        "replay",
        "an approved change after a change freeze was declared",
        "kubectl label ns signoff.dev/freeze=true; kubectl create -f (frozen, approved before)",
        Outcome::Held,
        run("alice", &["create", "-f", "-"], Some(&frozen)),
        own_request(frozen_ar),
    );
    kubectl_ok(cp, ADMIN, &["label", "ns", &ns2, "signoff.dev/freeze-"], None);

    // ---- Forged approvals, against a Pending request
    let forge = configmap(n, "forge", "1");
    let err = kubectl_err(cp, "alice", &["create", "-f", "-"], Some(&forge));
    let forge_ar = held_name(&err);
    let ar = wait_for_lanes(cp, n, &forge_ar);
    let mut fake = json!({"apiVersion": "signoff.dev/v1alpha1", "kind": "ApprovalRequest",
        "metadata": {"name": "ar-forged", "namespace": n}, "spec": ar["spec"].clone(),
        "status": {"phase": "Approved", "notAfter": "2099-01-01T00:00:00Z"}});
    fake["spec"]["action"]["name"] = json!("forge");
    m.case(
        "forgery",
        "create an ApprovalRequest that says Approved (requester)",
        "kubectl create -f (ApprovalRequest, status Approved) as alice",
        Outcome::Forbidden,
        run("alice", &["create", "-f", "-"], Some(&fake.to_string())),
        rbac,
    );
    m.case(
        "forgery",
        "create an ApprovalRequest that says Approved (cluster admin)",
        "kubectl create -f (ApprovalRequest, status Approved) as admin",
        Outcome::Denied,
        run(ADMIN, &["create", "-f", "-"], Some(&fake.to_string())),
        |err| refused(err, "only signoff creates ApprovalRequests"),
    );
    m.case(
        "forgery",
        "delete the pending request (to start over)",
        "kubectl delete approvalrequest (as requester)",
        Outcome::Forbidden,
        run("alice", &["delete", "ar", &forge_ar, "-n", n], None),
        rbac,
    );
    let main_resource = status_patch(&ar, decision_by(cp, "bob", "bob", &ar));
    m.case(
        "forgery",
        "write a decision through the main resource, not /status",
        "kubectl patch approvalrequest (no --subresource)",
        Outcome::Ignored,
        run("bob", &["patch", "ar", &forge_ar, "-n", n, "--type=merge", "-p", &main_resource], None),
        |_| {
            let now = request(cp, n, &forge_ar);
            (now["status"]["decisions"].as_array().is_none_or(Vec::is_empty) && now["status"]["phase"] == "Pending")
                .then(|| "status unchanged (the API server drops it); still Pending".to_string())
                .ok_or_else(|| format!("status changed: {}", now["status"]))
        },
    );
    let as_status = |user: &str, approver: &str| {
        let ar = request(cp, n, &forge_ar);
        let patch = status_patch(&ar, decision_by(cp, user, approver, &ar));
        run(user, &["patch", "ar", &forge_ar, "-n", n, "--subresource=status", "--type=merge", "-p", &patch], None)
    };
    m.case(
        "forgery",
        "a decision by a service account (GitOps)",
        "kubectl patch ar --subresource=status (as argocd SA)",
        Outcome::Denied,
        as_status(signoff_testenv::GITOPS, signoff_testenv::GITOPS),
        |err| refused(err, "service accounts never count as approvers"),
    );
    m.case(
        "forgery",
        "a decision by signoff's own identity",
        "kubectl patch ar --subresource=status (as signoff's SA)",
        Outcome::Denied,
        as_status(signoff_testenv::CONTROLLER, signoff_testenv::CONTROLLER),
        |err| refused(err, "never add a decision"),
    );
    m.case(
        "forgery",
        "a decision naming someone else",
        "mallory writes a decision naming bob",
        Outcome::Denied,
        as_status("mallory", "bob"),
        |err| refused(err, "a decision must name its writer"),
    );
    m.case(
        "forgery",
        "the requester approves their own request",
        "alice approves alice's request",
        Outcome::Denied,
        as_status("alice", "alice"),
        |err| refused(err, "you requested this change"),
    );
    let ar = request(cp, n, &forge_ar);
    let patch = status_patch(&ar, decision_by(cp, "bob", "bob", &ar));
    m.case(
        "forgery",
        "approve one's own request by impersonating an approver",
        "kubectl --as=bob patch ar --subresource=status (as alice)",
        Outcome::Forbidden,
        run(
            "alice",
            &["--as=bob", "patch", "ar", &forge_ar, "-n", n, "--subresource=status", "--type=merge", "-p", &patch],
            None,
        ),
        rbac,
    );
    approve(n, &forge_ar);
    let ar = request(cp, n, &forge_ar);
    let mut edited = ar["status"]["decisions"].clone();
    edited[0]["decision"] = json!("Reject");
    m.case(
        "forgery",
        "edit an earlier decision",
        "bob rewrites his Approve as Reject",
        Outcome::Invalid,
        run(
            "bob",
            &[
                "patch",
                "ar",
                &forge_ar,
                "-n",
                n,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status_patch(&ar, edited),
            ],
            None,
        ),
        crd_append_only,
    );
    m.case(
        "forgery",
        "remove an earlier decision",
        "an admin empties the decisions",
        Outcome::Invalid,
        run(
            ADMIN,
            &[
                "patch",
                "ar",
                &forge_ar,
                "-n",
                n,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status_patch(&ar, json!([])),
            ],
            None,
        ),
        crd_append_only,
    );
    // An admin may delete a request (it is the audit record); the change is then held afresh.
    let pending = configmap(n, "again", "1");
    let first = held_name(&kubectl_err(cp, "alice", &["create", "-f", "-"], Some(&pending)));
    wait_for_lanes(cp, n, &first);
    let (ok, err) = decide(cp, "mallory", "mallory", n, &first, "Approve");
    assert!(!ok, "mallory is not eligible: {err}");
    kubectl_ok(cp, ADMIN, &["delete", "ar", &first, "-n", n], None);
    m.case(
        "forgery",
        "an admin deletes a pending request and the change is applied again",
        "kubectl delete ar (admin), then kubectl create -f",
        Outcome::Held,
        run("alice", &["create", "-f", "-"], Some(&pending)),
        |err| {
            let ar = request(cp, n, &held_name(err));
            (ar["status"]["decisions"].as_array().is_none_or(Vec::is_empty))
                .then_some(())
                .ok_or("decisions carried over")?;
            held_record(err, &["again"]).map(|r| format!("a fresh {r}"))
        },
    );

    // ---- Side doors: a write that makes a controller delete a protected object
    // (issue 23, item 2). Here only deleting a claim is held (policy bypass-data).
    let data = namespace(cp, "bypass-data", &[("signoff.dev/test-data", "true"), ("signoff.dev/owner", "payments")]);
    let d = data.as_str();
    let objects = format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: ledger, namespace: {d}}}
spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: disposable, namespace: {d}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: ledger-api, namespace: {d}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: ledger-api}}}}
  template:
    metadata: {{labels: {{app: ledger-api}}}}
    spec: {{containers: [{{name: api, image: "registry.k8s.io/pause:3.10"}}]}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: ledger-db, namespace: {d}}}
spec:
  replicas: 1
  serviceName: ledger-db
  selector: {{matchLabels: {{app: ledger-db}}}}
  template:
    metadata: {{labels: {{app: ledger-db}}}}
    spec: {{containers: [{{name: db, image: "registry.k8s.io/pause:3.10"}}]}}
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}
"#
    );
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&objects));
    let delete_held = |object: &'static str| {
        move |err: &str| -> Result<String, String> {
            let (ar_ns, name) = held_ref(err);
            let ar = request(cp, &ar_ns, &name);
            let reasons = ar["spec"]["reasons"].to_string();
            (ar["spec"]["actionClass"] == "destructive" && reasons.contains(object))
                .then_some(())
                .ok_or(format!("class {}, reasons {reasons}", ar["spec"]["actionClass"]))?;
            Ok(format!("held as the destructive delete it enables (\"{object}\")"))
        }
    };
    let uid = run(ADMIN, &["get", "serviceaccount", "disposable", "-n", d, "-o", "jsonpath={.metadata.uid}"], None).1;
    let adopt = json!({"metadata": {"ownerReferences": [
        {"apiVersion": "v1", "kind": "ServiceAccount", "name": "disposable", "uid": uid}]}})
    .to_string();
    m.case(
        "side door",
        "give a protected claim a deletable owner (the garbage collector deletes it with the owner)",
        "kubectl patch pvc ledger ownerReferences=[ServiceAccount disposable]",
        Outcome::Held,
        run("alice", &["patch", "pvc", "ledger", "-n", d, "--type=merge", "-p", &adopt], None),
        delete_held("garbage collector"),
    );
    let retention = r#"{"spec":{"persistentVolumeClaimRetentionPolicy":{"whenDeleted":"Delete"}}}"#;
    m.case(
        "side door",
        "switch a StatefulSet's claim retention to Delete",
        "kubectl patch statefulset ledger-db persistentVolumeClaimRetentionPolicy.whenDeleted=Delete",
        Outcome::Held,
        run("alice", &["patch", "statefulset", "ledger-db", "-n", d, "--type=merge", "-p", retention], None),
        delete_held("the StatefulSet controller deletes"),
    );
    let hpa = format!(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: ledger-api, namespace: {d}}}\n\
         spec: {{minReplicas: 3, maxReplicas: 3, scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: ledger-api}}}}\n"
    );
    m.case(
        "side door",
        "scale a workload whose scale is held through an autoscaler (the HPA controller scales it)",
        "kubectl create -f (HorizontalPodAutoscaler, minReplicas 3)",
        Outcome::Held,
        run(ADMIN, &["create", "-f", "-"], Some(&hpa)),
        |err| {
            let (ar_ns, name) = held_ref(err);
            let reasons = request(cp, &ar_ns, &name)["spec"]["reasons"].to_string();
            reasons
                .contains("the HPA controller scales Deployment ledger-api from 1 to 3")
                .then_some(())
                .ok_or(reasons)?;
            Ok("held as the scale it enables (\"the HPA controller scales Deployment ledger-api from 1 to 3\")".into())
        },
    );
    m.case(
        "side door",
        "delete the namespace that holds a protected claim",
        "kubectl delete namespace (with a PersistentVolumeClaim in it)",
        Outcome::Held,
        run(ADMIN, &["delete", "namespace", d, "--wait=false"], None),
        delete_held("deletes every PersistentVolumeClaim in it"),
    );
    let owners = run(ADMIN, &["get", "pvc", "ledger", "-n", d, "-o", "jsonpath={.metadata.ownerReferences}"], None).1;
    assert!(owners.is_empty(), "the claim has no owner: {owners}");

    // ---- Tampering with the context
    m.case(
        "context",
        "relabel the namespace's environment",
        "kubectl label ns signoff.dev/environment=development",
        Outcome::Held,
        run(ADMIN, &["label", "ns", n, "signoff.dev/environment=development", "--overwrite"], None),
        held_in_controller_ns(n),
    );
    m.case(
        "context",
        "relabel the namespace's owner",
        "kubectl label ns signoff.dev/owner=mallory",
        Outcome::Held,
        run(ADMIN, &["label", "ns", n, "signoff.dev/owner=mallory", "--overwrite"], None),
        held_in_controller_ns(n),
    );
    // Most kinds keep a label change sent through /status (tests/status_metadata.rs):
    // the gate judges it as an update of the object (issue 23, item 3).
    m.case(
        "context",
        "relabel a StatefulSet through its status (out of sight of policies on statefulsets)",
        "kubectl patch statefulset db --subresource=status (labels)",
        Outcome::Held,
        run(
            ADMIN,
            &[
                "patch",
                "statefulset",
                "db",
                "-n",
                n,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"metadata":{"labels":{"tier":"none"}}}"#,
            ],
            None,
        ),
        |err| {
            let label =
                run(ADMIN, &["get", "statefulset", "db", "-n", n, "-o", "jsonpath={.metadata.labels.tier}"], None).1;
            label.is_empty().then_some(()).ok_or("the label changed")?;
            held_record(err, &["db"]).map(|r| format!("{r}; label unchanged"))
        },
    );
    // The API server keeps label changes sent through these subresources, where
    // no policy sees them (issue 23, item 3): signoff's labels never change there.
    let relabel = r#"{"metadata":{"labels":{"signoff.dev/environment":"development"}}}"#;
    m.case(
        "context",
        "relabel the namespace's environment through its status",
        "kubectl patch ns --subresource=status signoff.dev/environment=development",
        Outcome::Denied,
        run(ADMIN, &["patch", "ns", n, "--subresource=status", "--type=merge", "-p", relabel], None),
        |err| {
            err.contains("namespaces/status").then_some(()).ok_or("message does not name the subresource")?;
            audit_line("denied-anchor-subresource", n, "signoff.dev/environment")?;
            Ok("\"can change only on the namespace itself\"; audit line".into())
        },
    );
    let mut namespace: Value = serde_json::from_str(&run(ADMIN, &["get", "ns", n, "-o", "json"], None).1).unwrap();
    namespace["metadata"]["labels"]["signoff.dev/owner"] = "mallory".into();
    m.case(
        "context",
        "relabel the namespace's owner through finalize",
        "kubectl replace --raw /api/v1/namespaces/NS/finalize (signoff.dev/owner=mallory)",
        Outcome::Denied,
        run(
            ADMIN,
            &["replace", "--raw", &format!("/api/v1/namespaces/{n}/finalize"), "-f", "-"],
            Some(&namespace.to_string()),
        ),
        |err| {
            err.contains("namespaces/finalize").then_some(()).ok_or("message does not name the subresource")?;
            audit_line("denied-anchor-subresource", n, "signoff.dev/owner")?;
            let owner = run(ADMIN, &["get", "ns", n, "-o", "jsonpath={.metadata.labels.signoff\\.dev/owner}"], None).1;
            (owner != "mallory").then_some(()).ok_or("the owner label changed")?;
            Ok("\"can change only on the namespace itself\"; audit line; label unchanged".into())
        },
    );
    m.case(
        "context",
        "edit an EscalationPolicy without the rights",
        "kubectl patch escalationpolicy bypass (mallory)",
        Outcome::Forbidden,
        run(
            "mallory",
            &["patch", "escalationpolicy", "bypass", "--type=merge", "-p", r#"{"spec":{"rules":[]}}"#],
            None,
        ),
        rbac,
    );
    m.case(
        "context",
        "delete an EscalationPolicy without the rights",
        "kubectl delete escalationpolicy bypass (mallory)",
        Outcome::Forbidden,
        run("mallory", &["delete", "escalationpolicy", "bypass"], None),
        rbac,
    );
    m.case(
        "context",
        "edit the webhook configuration without the rights",
        "kubectl patch validatingwebhookconfiguration signoff (mallory)",
        Outcome::Forbidden,
        run(
            "mallory",
            &[
                "patch",
                "validatingwebhookconfiguration",
                "signoff",
                "--type=json",
                "-p",
                r#"[{"op":"replace","path":"/webhooks/0/failurePolicy","value":"Ignore"}]"#,
            ],
            None,
        ),
        rbac,
    );
    m.case(
        "context",
        "delete the webhook configuration without the rights",
        "kubectl delete validatingwebhookconfiguration signoff (alice)",
        Outcome::Forbidden,
        run("alice", &["delete", "validatingwebhookconfiguration", "signoff"], None),
        rbac,
    );

    // ---- The webhook unreachable (last: signoff, its only replica, is killed)
    signoff().process.lock().unwrap().kill();
    let started = std::time::Instant::now();
    let outage = run("alice", &["create", "-f", "-"], Some(&configmap(n, "outage", "1")));
    let failed_after = started.elapsed();
    eprintln!("signoff down: a write of a matched kind failed after {failed_after:?} (webhook timeoutSeconds 10)");
    assert!(failed_after < std::time::Duration::from_secs(11), "failed within the webhook timeout: {failed_after:?}");
    m.case(
        "outage",
        "write while signoff is down",
        "kubectl create -f (held kind) with signoff killed",
        Outcome::Unreachable,
        outage,
        |_| {
            let absent = !cp.kubectl_run(ADMIN, &["get", "configmap", "outage", "-n", n], None).unwrap().0;
            absent.then(|| "nothing written (the API server fails closed)".to_string()).ok_or("object exists".into())
        },
    );
    let system = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bypass-{}, namespace: kube-system}}\n",
        std::process::id()
    );
    m.case(
        "outage",
        "write in kube-system while signoff is down",
        "kubectl apply -f (ConfigMap in kube-system)",
        Outcome::Admitted,
        run(ADMIN, &["apply", "-f", "-"], Some(&system)),
        |_| Ok("never sent to signoff (namespaceSelector)".into()),
    );
    let lease =
        format!("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: outage, namespace: {n}}}\n");
    m.case(
        "outage",
        "write of an exempt resource while signoff is down",
        "kubectl apply -f (Lease in a gated namespace)",
        Outcome::Admitted,
        run(ADMIN, &["apply", "-f", "-"], Some(&lease)),
        |_| Ok("never sent to signoff (matchConditions exempt it)".into()),
    );
    m.case(
        "outage",
        "write of a kind no policy matches while signoff is down",
        "kubectl create serviceaccount (in a gated namespace)",
        Outcome::Admitted,
        run(ADMIN, &["create", "serviceaccount", "outage", "-n", n], None),
        |_| Ok("never sent to signoff (the gate's rules are the policies' match rules)".into()),
    );

    let failed: Vec<&Row> = m.rows.iter().filter(|r| r.observed != r.expected || r.recorded.is_err()).collect();
    for r in &failed {
        eprintln!(
            "FAILED: {} — expected {}, observed {}: {:?}; output: {}",
            r.attack,
            r.expected.text(),
            r.observed.text(),
            r.recorded,
            r.detail
        );
    }
    assert!(m.rows.len() >= 30, "at least 30 cases, got {}", m.rows.len());
    assert!(failed.is_empty(), "{} of {} cases failed", failed.len(), m.rows.len());
    check_doc(&m.table());
}

/// A namespace relabel is held in signoff's namespace (a Namespace is cluster-scoped).
fn held_in_controller_ns(ns: &str) -> impl FnOnce(&str) -> Result<String, String> + '_ {
    move |err: &str| {
        let (ar_ns, name) = held_ref(err);
        let ar = request(cp(), &ar_ns, &name);
        if ar["spec"]["routes"] != json!(["security"]) {
            return Err(format!("routes {}", ar["spec"]["routes"]));
        }
        audit_line("held", &name, ns).map(|_| "ApprovalRequest routed to security; audit line".into())
    }
}

const BEGIN: &str = "<!-- bypass-matrix:begin -->\n";
const END: &str = "<!-- bypass-matrix:end -->";

/// The doc's table must be the one this run produced.
fn check_doc(table: &str) {
    let path = signoff_testenv::checkout().unwrap_or_else(|e| panic!("{e}")).join("docs/security.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (start, end) = (doc.find(BEGIN).expect("begin marker") + BEGIN.len(), doc.find(END).expect("end marker"));
    if doc[start..end] == *table {
        return;
    }
    if std::env::var("SIGNOFF_UPDATE_DOCS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, format!("{}{table}{}", &doc[..start], &doc[end..])).unwrap();
        eprintln!("updated the bypass matrix in {}", path.display());
    } else {
        panic!(
            "docs/security.md's bypass matrix is stale; run SIGNOFF_UPDATE_DOCS=1 cargo test --test bypass. This run:\n{table}"
        );
    }
}
