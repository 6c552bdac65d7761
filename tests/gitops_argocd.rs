//! Argo CD (issue 18, parts 2 and 3) against the real API server, with Argo
//! CD's own Application CRD from its Go module (hack/peers/argocd/crds.sh):
//! a held change that carries Argo CD's tracking id names its Application,
//! the repository and the commit; when Argo CD is not installed the packet
//! says so; an approval starts a sync of only the approved resource, and
//! never over an operation that is already running (it waits, then retries).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::approvals::{held_name, request};
use common::*;
use serde_json::{Value, json};
use signoff_testenv::GITOPS;

const REVISION: &str = "3f2a9c1e0b6d4a7f8c9e0d1b2a3c4d5e6f708192";

fn crds() -> PathBuf {
    let script = signoff_testenv::checkout().unwrap_or_else(|e| panic!("{e}")).join("hack/peers/argocd/crds.sh");
    let out = Command::new(&script).stderr(std::process::Stdio::inherit()).output().expect("the script runs");
    assert!(out.status.success(), "{} failed (see above)", script.display());
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Argo CD's controller applies a Deployment it tracks (annotation tracking).
fn argo_applies(ns: &str, name: &str) -> String {
    let manifest = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
  annotations: {{argocd.argoproj.io/tracking-id: "guestbook:apps/Deployment:{ns}/{name}"}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: app, image: "registry.example/{name}:2.0"}}]
"#
    );
    let err = kubectl_err(cp(), GITOPS, &["apply", "-f", "-"], Some(&manifest));
    assert!(err.contains("held for approval"), "{err}");
    held_name(&err)
}

fn application() -> Value {
    serde_json::from_str(&kubectl_ok(
        cp(),
        ADMIN,
        &["get", "applications", "-n", "argocd", "guestbook", "-o", "json"],
        None,
    ))
    .unwrap()
}

fn patch_application(patch: Value) {
    kubectl_ok(
        cp(),
        ADMIN,
        &["patch", "applications", "-n", "argocd", "guestbook", "--type", "merge", "-p", &patch.to_string()],
        None,
    );
}

#[test]
fn argo_cd_applications_are_named_in_the_packet_and_synced_on_approval() {
    let cp = cp();
    install_demo(cp);
    let policy = r#"apiVersion: signoff.dev/v1alpha1
kind: EscalationPolicy
metadata: {name: argo}
spec:
  match:
    rules: [{operations: [CREATE, UPDATE], apiGroups: [apps], apiVersions: [v1], resources: [deployments]}]
    namespaceSelector: {matchLabels: {signoff.dev/test-argo: "true"}}
  gitops: {handBack: true}
  actionClasses:
    routine: {tierTimeout: 10m, notify: Sequential}
  rules:
  - {name: production-deployment, expression: "true", risk: High, route: engineering, message: a production Deployment}
"#;
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(policy));
    kubectl_ok(
        cp,
        ADMIN,
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: argocd}\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: argocd-cluster-admin}\n\
             roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\n\
             subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: \"system:serviceaccounts:argocd\"}]\n",
        ),
    );
    let ns = namespace(cp, "argo", &[("signoff.dev/test-argo", "true"), ("signoff.dev/owner", "payments")]);
    let _signoff = signoff();

    // Argo CD not installed: the hold stands, and the packet says why it
    // cannot name the commit.
    let early = argo_applies(&ns, "early");
    let source = eventually(30, "the owner read (and found missing)", || {
        let ar = request(cp, &ns, &early);
        ar["status"]["gitopsSource"].is_object().then(|| ar["status"]["gitopsSource"].clone())
    });
    let why = source["unreadable"].as_str().unwrap_or_default();
    assert!(why.contains("Application argocd/guestbook not found"), "{source}");

    // Argo CD's CRDs, from its module, and an Application that tracks the namespace.
    let dir = crds();
    kubectl_ok(cp, ADMIN, &["apply", "--server-side", "-f", &dir.display().to_string()], None);
    cp.wait_established(&["applications.argoproj.io"]).unwrap_or_else(|e| panic!("{e}"));
    let app = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {{name: guestbook, namespace: argocd}}
spec:
  project: default
  source: {{repoURL: "https://github.com/acme/deploy.git", path: guestbook, targetRevision: main}}
  destination: {{server: "https://kubernetes.default.svc", namespace: {ns}}}
  syncPolicy: {{automated: {{}}, retry: {{limit: 2}}}}
status:
  sync: {{status: OutOfSync, revision: "{REVISION}"}}
  operationState:
    phase: Running
    startedAt: "2026-12-05T00:00:00Z"
    operation: {{sync: {{revision: "{REVISION}"}}}}
operation: {{sync: {{revision: "{REVISION}"}}, initiatedBy: {{automated: true}}}}
"#
    );
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&app));

    let web = argo_applies(&ns, "web");
    let ar = eventually(30, "the Application and its commit read", || {
        let ar = request(cp, &ns, &web);
        ar["status"]["gitopsSource"]["revision"].is_string().then_some(ar)
    });
    assert_eq!(
        ar["spec"]["gitops"],
        json!({"tool": "ArgoCD", "kind": "Application", "namespace": "argocd", "name": "guestbook", "handBack": true})
    );
    assert_eq!(ar["status"]["gitopsSource"]["url"], "https://github.com/acme/deploy.git");
    let shown = plugin_ok("bob", &["show", "-n", &ns, &web]);
    assert!(
        shown.contains(
            "GitOps:     commit 3f2a9c1 of github.com/acme/deploy, applied by Argo CD Application argocd/guestbook"
        ),
        "{shown}"
    );

    // Approved while Argo CD's own sync is still running: the hand-back waits.
    let (ok, err) = common::approvals::decide(cp, "bob", "bob", &ns, &web, "Approve");
    assert!(ok, "{err}");
    let failed = eventually(30, "the hand-back to wait for the running operation", || {
        let ar = request(cp, &ns, &web);
        (ar["status"]["handBack"]["result"] == "Failed").then(|| ar["status"]["handBack"].clone())
    });
    assert!(failed["message"].as_str().unwrap().contains("operation in progress"), "{failed}");
    assert_eq!(application()["operation"]["initiatedBy"]["automated"], true, "Argo CD's operation untouched");

    // Argo CD finishes its operation (clears it); the retry starts the sync.
    patch_application(json!({"operation": null, "status": {"operationState": {"phase": "Failed"}}}));
    let done = eventually(40, "the hand-back to start a sync", || {
        let ar = request(cp, &ns, &web);
        (ar["status"]["handBack"]["result"] == "Done").then(|| ar["status"]["handBack"].clone())
    });
    assert!(done["attempts"].as_u64().unwrap() >= 2, "{done}");
    let operation = application()["operation"].clone();
    assert_eq!(operation["initiatedBy"]["username"], "signoff", "{operation}");
    assert_eq!(
        operation["sync"]["resources"],
        json!([{"group": "apps", "kind": "Deployment", "namespace": ns, "name": "web"}]),
        "only the approved resource"
    );
    assert!(operation["info"][0]["value"].as_str().unwrap().contains(&web), "{operation}");
    let events = kubectl_ok(cp, ADMIN, &["get", "events", "-n", &ns, "-o", "json"], None);
    assert!(events.contains("HandBackFailed") && events.contains("HandedBack"), "both recorded as Events");
}
