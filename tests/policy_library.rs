//! The policy library (`policies/`) on its labelled corpus (`policies/tests/`):
//! `kubectl signoff test` as a process, with its exit codes; and every corpus
//! case through the live webhook on the real API server, whose verdict must be
//! the offline one. Live, each case is a server-side dry run as its requester
//! (impersonated by the admin, with the groups the case gives): the webhook
//! answers a held dry run with "would be held for approval (risk, class;
//! routes: ...)" and creates nothing. The old object of an update or delete is
//! created first by an identity every library policy excludes.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use signoff::cli::check::{CheckResult, judge, load_policies};
use signoff::cli::policytest::{self, Prepared};

fn root() -> std::path::PathBuf {
    signoff_testenv::checkout().unwrap_or_else(|e| panic!("{e}"))
}

fn run_test_command(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-signoff"))
        .arg("test")
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_library_passes_its_corpus() {
    let (code, out, err) = run_test_command(&["policies/tests"]);
    assert_eq!(code, 0, "kubectl signoff test policies/tests: exit {code}\n{out}\n{err}");
    assert!(out.contains(" do not") && out.contains("0 do not"), "{out}");
    assert!(out.contains("risky changes admitted: 0 of"), "{out}");
    assert!(out.contains("benign changes held: 0 of"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("holds naming their rule: ") && l.ends_with("(100.0%)")), "{out}");
    eprintln!("{out}");
}

/// docs/writing-policies.md shows the report of the corpus run; stale is a failure.
#[test]
fn the_documented_corpus_table_is_current() {
    let (code, out, err) = run_test_command(&["policies/tests"]);
    assert_eq!(code, 0, "{out}{err}");
    let start = out.lines().position(|l| l.contains(" cases: ") && l.ends_with(" do not")).expect("a summary");
    let table = out.lines().skip(start).collect::<Vec<_>>().join("\n");
    let path = root().join("docs/writing-policies.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let marker = "<!-- corpus table: kubectl signoff test policies/tests -->\n```text\n";
    let at = doc.find(marker).expect("the corpus table's marker") + marker.len();
    let end = at + doc[at..].find("\n```").expect("the end of the table");
    if std::env::var_os("SIGNOFF_UPDATE_DOCS").is_some() {
        std::fs::write(&path, format!("{}{table}{}", &doc[..at], &doc[end..])).unwrap();
        return;
    }
    assert!(
        doc[at..end] == table,
        "docs/writing-policies.md's corpus table is stale: SIGNOFF_UPDATE_DOCS=1 cargo test --test policy_library"
    );
}

#[test]
fn a_mismatch_exits_2_and_bad_input_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    std::fs::write(
        objects.join("deployment.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: web:1}]}\n",
    )
    .unwrap();
    // Wrong on purpose: a production create is held for engineering, not admitted.
    std::fs::write(
        dir.path().join("cases.yaml"),
        "cases:\n- {object: objects/deployment.yaml, environment: production, expect: admitted, why: wrong on purpose}\n- {object: objects/deployment.yaml, environment: development, expect: admitted}\n",
    )
    .unwrap();
    let policies = root().join("policies").display().to_string();
    let d = dir.path().display().to_string();
    let (code, out, _) = run_test_command(&[&d, "--policies", &policies]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(
            "FAIL cases.yaml#0 CREATE production objects/deployment.yaml: expected admitted, got held [engineering"
        ),
        "{out}"
    );
    assert!(out.contains("label: wrong on purpose"), "{out}");
    assert!(out.contains("2 cases: 1 match, 1 do not"), "{out}");
    for (case, error) in [
        (
            "{object: objects/missing.yaml, environment: production, expect: admitted}",
            "error: cases.yaml#0: object objects/missing.yaml:",
        ),
        (
            "{object: objects/deployment.yaml, environment: production, expect: held}",
            "a held case names its routes and class",
        ),
        (
            "{object: objects/deployment.yaml, expect: admitted}",
            "Deployment is namespaced: give the case an environment",
        ),
    ] {
        std::fs::write(dir.path().join("cases.yaml"), format!("cases:\n- {case}\n")).unwrap();
        let (code, _, err) = run_test_command(&[&d, "--policies", &policies]);
        assert_eq!(code, 1, "{case}");
        assert!(err.contains(error), "{case}: {err}");
    }
}

/// The identity that creates the old objects: in system:masters (any object,
/// RBAC included) and a kube-system ServiceAccount, which every library policy excludes.
const SETUP: [&str; 4] = [
    "--as=system:serviceaccount:kube-system:corpus-setup",
    "--as-group=system:masters",
    "--as-group=system:serviceaccounts",
    "--as-group=system:serviceaccounts:kube-system",
];

fn library() {
    static LIBRARY: OnceLock<()> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let cp = cp();
        install_demo(cp);
        let crds = root().join("policies/tests/crds").display().to_string();
        kubectl_ok(cp, ADMIN, &["apply", "--server-side", "-f", &crds], None);
        cp.wait_established(&[]).unwrap_or_else(|e| panic!("{e}"));
        let policies = root().join("policies").display().to_string();
        kubectl_ok(cp, ADMIN, &["apply", "-f", &policies], None);
        // The requesters may do anything RBAC-wise: the webhook alone decides.
        let rbac = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: corpus-requesters}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\nsubjects:\n- {kind: Group, name: team:shop, apiGroup: rbac.authorization.k8s.io}\n- {kind: Group, name: team:ads, apiGroup: rbac.authorization.k8s.io}\n";
        kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(rbac));
        signoff();
    });
}

/// The webhook's verdict on a case, from a server-side dry run.
#[derive(Debug, PartialEq, Eq)]
enum Live {
    Admitted,
    Held { class: String, routes: Vec<String> },
    Refused(String),
}

fn live_of(ok: bool, err: &str) -> Live {
    if !ok {
        return Live::Refused(err.trim().to_string());
    }
    let marker = "would be held for approval (";
    let Some(at) = err.find(marker) else { return Live::Admitted };
    let inside = &err[at + marker.len()..];
    let inside = &inside[..inside.find(')').unwrap_or(inside.len())];
    // "high risk, routine; routes: engineering, security"
    let (risk_class, routes) = inside.split_once("; routes: ").unwrap_or((inside, ""));
    let class = risk_class.split(", ").nth(1).unwrap_or_default().to_string();
    Live::Held { class, routes: routes.split(", ").filter(|r| !r.is_empty()).map(str::to_string).collect() }
}

fn offline_of(r: &CheckResult) -> Live {
    if r.admitted { Live::Admitted } else { Live::Held { class: r.action_class.clone(), routes: r.routes.clone() } }
}

/// Runs one case against the live webhook; returns its verdict.
fn run_live(p: &Prepared, namespaces: &std::sync::Mutex<std::collections::BTreeSet<String>>) -> Live {
    let cp = cp();
    if let Some((name, ns)) = policytest::namespace_of(&p.case) {
        let mut made = namespaces.lock().unwrap();
        if !made.contains(&name) {
            let manifest = serde_json::to_string(&ns).unwrap();
            let (ok, _, err) =
                cp.kubectl_run(ADMIN, &[&SETUP[..], &["apply", "-f", "-"]].concat(), Some(&manifest)).unwrap();
            assert!(ok, "creating namespace {name}: {err}");
            made.insert(name);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, v: &serde_json::Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_string(v).unwrap()).unwrap();
        path.display().to_string()
    };
    // A Namespace never finishes deleting without kube-controller-manager: each
    // case gets its own (the name decides nothing).
    let renamed = |o: &serde_json::Value| {
        let mut o = o.clone();
        if p.input.kind.kind == "Namespace" {
            o["metadata"]["name"] = serde_json::json!(format!("{}-{}", p.input.name, p.at.rsplit('#').next().unwrap()));
        }
        o
    };
    let mut as_user = vec![format!("--as={}", p.input.user.username)];
    as_user
        .extend(p.input.user.groups.iter().filter(|g| *g != "system:authenticated").map(|g| format!("--as-group={g}")));
    let as_user: Vec<&str> = as_user.iter().map(String::as_str).collect();
    let old = p.input.old_object.as_ref().map(|o| write("old.json", &renamed(o)));
    if let Some(old) = &old {
        let (ok, _, err) = cp.kubectl_run(ADMIN, &[&SETUP[..], &["create", "-f", old]].concat(), None).unwrap();
        if !ok {
            return Live::Refused(format!("creating the old object: {}", err.trim()));
        }
    }
    let verb: Vec<String> = match (&p.input.object, &old) {
        // The case's merge patch on the object as the API server stored it
        // (with the defaults it filled in, such as a Job's selector).
        (Some(_), Some(old)) => {
            let patch = serde_json::to_string(p.case.patch.as_ref().expect("an UPDATE has a patch")).unwrap();
            ["patch", "--dry-run=server", "--type=merge", "-f", old, "-p", &patch].map(String::from).to_vec()
        }
        (Some(new), None) => {
            vec!["create".into(), "--dry-run=server".into(), "-f".into(), write("new.json", &renamed(new))]
        }
        (None, Some(old)) => vec!["delete".into(), "--dry-run=server".into(), "-f".into(), old.clone()],
        (None, None) => unreachable!("a case has an object"),
    };
    let verb: Vec<&str> = verb.iter().map(String::as_str).collect();
    let (ok, _, err) = cp.kubectl_run(ADMIN, &[&as_user[..], &verb[..]].concat(), None).unwrap();
    let verdict = live_of(ok, &err);
    if let Some(old) = &old {
        // Finalizers nobody removes here (no kube-controller-manager), such as a
        // PVC's pvc-protection, would keep the object in the next case's way.
        let none = r#"{"metadata":{"finalizers":null}}"#;
        cp.kubectl_run(ADMIN, &[&SETUP[..], &["patch", "--type=merge", "-p", none, "-f", old]].concat(), None).unwrap();
        cp.kubectl_run(ADMIN, &[&SETUP[..], &["delete", "--wait=false", "-f", old]].concat(), None).unwrap();
    }
    verdict
}

#[test]
fn the_live_webhook_agrees_with_the_offline_verdict_on_every_case() {
    library();
    let dir = root().join("policies/tests");
    let cases = policytest::prepare(&dir).unwrap_or_else(|e| panic!("{e}"));
    let set = load_policies(&root().join("policies")).unwrap_or_else(|e| panic!("{e}"));
    // One object's cases in order on one thread (they create and delete it;
    // two files may hold objects of the same kind and name); objects spread
    // over four threads.
    let mut by_object: BTreeMap<(String, String), Vec<&Prepared>> = BTreeMap::new();
    for p in &cases {
        by_object.entry((p.input.kind.kind.clone(), p.input.name.clone())).or_default().push(p);
    }
    let groups: Vec<Vec<&Prepared>> = by_object.into_values().collect();
    let namespaces = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let results: Vec<(String, Live, Live)> = std::thread::scope(|s| {
        let chunks: Vec<Vec<&Vec<&Prepared>>> = (0..4).map(|i| groups.iter().skip(i).step_by(4).collect()).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let (set, namespaces) = (&set, &namespaces);
                s.spawn(move || {
                    let mut out = Vec::new();
                    for group in chunk {
                        for p in group {
                            let offline = offline_of(&judge(&p.input, set, &p.document));
                            out.push((format!("{} ({})", p.at, p.case.object), offline, run_live(p, namespaces)));
                        }
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.len(), cases.len());
    let disagree: Vec<String> = results
        .iter()
        .filter(|(_, offline, live)| offline != live)
        .map(|(at, offline, live)| format!("{at}: offline {offline:?}, live {live:?}"))
        .collect();
    let held = results.iter().filter(|(_, _, live)| matches!(live, Live::Held { .. })).count();
    eprintln!("{} cases through the live webhook: {held} held, {} disagree", results.len(), disagree.len());
    assert!(disagree.is_empty(), "{} of {} cases disagree:\n{}", disagree.len(), results.len(), disagree.join("\n"));
}
