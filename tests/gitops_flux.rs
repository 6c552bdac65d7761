//! Real GitOps, end to end (issue 18, part 4): Flux's source-controller and
//! kustomize-controller, built from Go modules (hack/peers/flux), run out of
//! cluster against the local control plane and read a Git repository served
//! over smart HTTP on loopback. signoff holds what Flux applies; the request
//! names the Kustomization and the commit; an approval ends with Flux applying
//! the change by itself (the hand-back), a rejection keeps it out.
//!
//! Approval -> object present is measured for 10 changes with the hand-back
//! and 10 without it (Flux's own retry, `retryInterval: 60s`), in the same run.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::approvals::{request, requests};
use common::gitops::*;
use common::report::{Figure, record};
use common::*;
use serde_json::Value;
use signoff_testenv::{FLUX_KUSTOMIZE, FLUX_SOURCE, Supervised, context_of, free_port};

/// Changes measured per mode.
const CHANGES: usize = 10;
/// Flux's retry of a failed apply; what the hand-back is measured against.
const RETRY_INTERVAL: &str = "60s";

/// Run a script of hack/peers/flux; its progress goes to our stderr, the path it prints is returned.
fn peer_script(name: &str) -> PathBuf {
    script(&format!("hack/peers/flux/{name}"), &[])
}

fn kustomization(name: &str, path: &str) -> String {
    format!(
        r#"apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: {name}, namespace: flux-system}}
spec:
  interval: 10m
  retryInterval: {RETRY_INTERVAL}
  timeout: 30s
  path: ./{path}
  prune: false
  sourceRef: {{kind: GitRepository, name: deploy}}
---
"#
    )
}

/// The Flux side: the Git server, the two controllers and their logs.
struct Flux {
    processes: Vec<Supervised>,
    logs: Vec<PathBuf>,
    commit: String,
}

impl Flux {
    fn log_tails(&self) -> String {
        log_tails(&self.logs)
    }
}

/// Everything Flux needs, started; the repository holds `files` in one commit.
fn start_flux(files: &[(String, String)]) -> Flux {
    let cp = cp();
    let bin = peer_script("build.sh");
    let crds = peer_script("crds.sh");
    kubectl_ok(cp, ADMIN, &["apply", "--server-side", "-f", &crds.display().to_string()], None);
    cp.wait_established(&[]).unwrap_or_else(|e| panic!("{e}"));
    // Flux runs with cluster-admin, as its install does.
    kubectl_ok(
        cp,
        ADMIN,
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: flux-system}\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: flux-cluster-admin}\n\
             roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\n\
             subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: \"system:serviceaccounts:flux-system\"}]\n",
        ),
    );

    let work = cp.dir.join("flux");
    let repo = work.join("git/deploy");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    for (path, text) in files {
        let file = repo.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "shop: production deployments"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);

    let mut processes = Vec::new();
    let mut logs = Vec::new();
    let git_port = free_port().unwrap().to_string();
    let git_log = work.join("git-http.log");
    let server = checkout().join("hack/peers/flux/git-http.py");
    let root = work.join("git").display().to_string();
    processes.push(
        Supervised::spawn(
            "git-http",
            Path::new("python3"),
            &[&server.display().to_string(), "--root", &root, "--port", &git_port],
            &[],
            &git_log,
            None,
        )
        .unwrap(),
    );
    logs.push(git_log);
    let url = format!("http://127.0.0.1:{git_port}/deploy");
    eventually(20, "the Git server to answer", || {
        Command::new("git").args(["ls-remote", &url]).output().ok().filter(|o| o.status.success()).map(|_| ())
    });

    let storage = free_port().unwrap();
    let port = || free_port().unwrap().to_string();
    let storage_addr = format!("127.0.0.1:{storage}");
    let (sc_health, kc_health) = (format!("127.0.0.1:{}", port()), format!("127.0.0.1:{}", port()));
    let (sc_metrics, kc_metrics) = (format!("127.0.0.1:{}", port()), format!("127.0.0.1:{}", port()));
    let storage_path = work.join("storage");
    std::fs::create_dir_all(&storage_path).unwrap();
    let storage_path = storage_path.display().to_string();
    let controllers: [(&str, &str, Vec<&str>); 2] = [
        (
            "source-controller",
            FLUX_SOURCE,
            vec![
                "--storage-path",
                &storage_path,
                "--storage-addr",
                &storage_addr,
                "--storage-adv-addr",
                &storage_addr,
                "--metrics-addr",
                &sc_metrics,
                "--health-addr",
                &sc_health,
            ],
        ),
        (
            "kustomize-controller",
            FLUX_KUSTOMIZE,
            vec!["--metrics-addr", &kc_metrics, "--health-addr", &kc_health, "--no-remote-bases=true"],
        ),
    ];
    for (name, user, args) in controllers {
        let kubeconfig = work.join(format!("{name}.kubeconfig"));
        cp.write_kubeconfig(&kubeconfig, context_of(user)).unwrap();
        let tmp = work.join(format!("{name}-tmp"));
        std::fs::create_dir_all(&tmp).unwrap();
        let mut all = args.clone();
        all.extend(["--enable-leader-election=false", "--watch-all-namespaces=true", "--log-encoding=console"]);
        let log = work.join(format!("{name}.log"));
        let env = [
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("RUNTIME_NAMESPACE", "flux-system"),
            ("TMPDIR", tmp.to_str().unwrap()),
        ];
        processes.push(Supervised::spawn(name, &bin.join(name), &all, &env, &log, None).unwrap());
        logs.push(log);
    }
    let source = format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {{name: deploy, namespace: flux-system}}\n\
         spec: {{interval: 10m, url: \"{url}\", ref: {{branch: main}}}}\n"
    );
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&source));
    Flux { processes, logs, commit }
}

/// Ready condition (status, message) of a Kustomization.
fn ready(name: &str) -> (String, String) {
    let out = kubectl_ok(cp(), ADMIN, &["get", "kustomization", "-n", "flux-system", name, "-o", "json"], None);
    let ks: Value = serde_json::from_str(&out).unwrap();
    let cond = ks["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned());
    let cond = cond.unwrap_or_default();
    (cond["status"].as_str().unwrap_or_default().to_string(), cond["message"].as_str().unwrap_or_default().to_string())
}

#[test]
fn flux_applies_an_approved_change_by_itself_and_keeps_a_rejected_one_out() {
    let cp = cp();
    install_demo(cp);
    // One policy per mode: the hand-back per policy, as a platform team would roll it out.
    let labels = |mode: &'static str| {
        [("signoff.dev/test-flux", mode), ("signoff.dev/owner", "payments"), ("signoff.dev/environment", "production")]
    };
    let (hb, rt) = (namespace(cp, "flux-hb", &labels("handback")), namespace(cp, "flux-rt", &labels("retry")));
    for (mode, hand_back) in [("handback", true), ("retry", false)] {
        let policy = format!(
            r#"apiVersion: signoff.dev/v1alpha1
kind: EscalationPolicy
metadata: {{name: flux-{mode}}}
spec:
  match:
    rules: [{{operations: [CREATE, UPDATE], apiGroups: [apps], apiVersions: [v1], resources: [deployments]}}]
    namespaceSelector: {{matchLabels: {{signoff.dev/test-flux: {mode}}}}}
  gitops: {{handBack: {hand_back}}}
  actionClasses:
    routine: {{tierTimeout: 10m, notify: Sequential}}
  rules:
  - {{name: production-deployment, expression: "true", risk: High, route: engineering, message: a production Deployment}}
"#
        );
        kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&policy));
    }
    let _signoff = signoff();

    let mut files = Vec::new();
    let mut kustomizations = String::new();
    for i in 0..CHANGES {
        for (mode, ns) in [("hb", &hb), ("rt", &rt)] {
            files.push((format!("{mode}/app-{i}/deployment.yaml"), deployment(ns, &format!("app-{i}"))));
            kustomizations.push_str(&kustomization(&format!("{mode}-{i}"), &format!("{mode}/app-{i}")));
        }
    }
    files.push(("rejected/deployment.yaml".into(), deployment(&hb, "rejected")));
    kustomizations.push_str(&kustomization("rejected", "rejected"));
    let started = Instant::now();
    let mut flux = start_flux(&files);
    let seen = watch_deployments(&[hb.clone(), rt.clone()]);
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&kustomizations));

    // Flux applies, signoff holds every one: 2 x CHANGES + 1 requests, each
    // naming its Kustomization and the commit.
    let short = &flux.commit[..7];
    let deadline = Instant::now() + std::time::Duration::from_secs(180);
    let held = loop {
        let all: Vec<Value> = requests(cp, &hb).into_iter().chain(requests(cp, &rt)).collect();
        let read = all.iter().filter(|ar| ar["status"]["gitopsSource"]["revision"].is_string()).count();
        if read == 2 * CHANGES + 1 {
            break all;
        }
        let exited = flux.processes.iter_mut().any(|p| p.exited().is_some());
        if Instant::now() > deadline || exited {
            let sources = kubectl_ok(cp, ADMIN, &["get", "gitrepositories,kustomizations", "-A"], None);
            panic!(
                "{} of {} changes held with their source read (a Flux process exited: {exited}): {}\n{sources}\n{}",
                read,
                2 * CHANGES + 1,
                all.first().map(|a| a["status"].to_string()).unwrap_or_default(),
                flux.log_tails()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    eprintln!("Flux started and all {} changes held in {:.1}s", held.len(), started.elapsed().as_secs_f64());
    for ar in &held {
        assert_eq!(ar["spec"]["requester"]["username"], FLUX_KUSTOMIZE, "held as Flux applied it");
        assert_eq!(ar["spec"]["gitops"]["tool"], "Flux");
        assert_eq!(ar["spec"]["gitops"]["kind"], "Kustomization");
        assert_eq!(ar["spec"]["gitops"]["namespace"], "flux-system");
        let revision = ar["status"]["gitopsSource"]["revision"].as_str().unwrap();
        assert_eq!(revision, format!("main@sha1:{}", flux.commit), "the commit Flux was applying");
        assert!(ar["status"]["gitopsSource"]["url"].as_str().unwrap().ends_with("/deploy"), "{ar}");
    }
    let name_of = |ns: &str, app: &str| -> String {
        held.iter()
            .find(|ar| ar["spec"]["action"]["namespace"] == ns && ar["spec"]["action"]["name"] == app)
            .map(|ar| ar["metadata"]["name"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no request for {ns}/{app}"))
    };
    // The approver reads where it came from.
    let rejected = name_of(&hb, "rejected");
    let shown = plugin_ok("bob", &["show", "-n", &hb, &rejected]);
    assert!(
        shown.contains(&format!("GitOps:     commit {short} on main of 127.0.0.1:"))
            && shown.contains("applied by Flux Kustomization flux-system/rejected"),
        "{shown}"
    );
    let (status, message) = ready("rejected");
    assert_eq!(status, "False", "Flux reports the held apply");
    assert!(
        message.contains(r#"admission webhook "gate.signoff.dev" denied the request"#)
            && message.contains("held for approval")
            && message.contains(&rejected),
        "the Kustomization shows signoff's message: {message}"
    );
    eprintln!("Kustomization while held: Ready=False, {message}");

    // Approve every change, one after the other, noting when each was approved.
    let mut approved_at: BTreeMap<String, Instant> = BTreeMap::new();
    for i in 0..CHANGES {
        for ns in [&hb, &rt] {
            let app = format!("app-{i}");
            let out = plugin_ok("bob", &["approve", "-n", ns, &name_of(ns, &app), "--comment", "reviewed"]);
            assert!(out.contains("approved"), "{out}");
            approved_at.insert(format!("{ns}/{app}"), Instant::now());
        }
    }
    let out = plugin_ok("bob", &["reject", "-n", &hb, &rejected, "--comment", "not this one"]);
    assert!(out.contains("rejected"), "{out}");

    // With the hand-back, Flux applies within seconds; without it, at its next retry.
    let all_present = eventually(150, "every approved change applied by Flux", || {
        let seen = seen.lock().unwrap();
        approved_at.keys().all(|k| seen.contains_key(k)).then(|| seen.clone())
    });
    let (with, without) = (delays(&approved_at, &all_present, &hb), delays(&approved_at, &all_present, &rt));
    let (p50, p99) = (percentile(&with, 50.0), percentile(&with, 99.0));
    let (b50, b99) = (percentile(&without, 50.0), percentile(&without, 99.0));
    eprintln!(
        "approval -> applied, hand-back: {with:.2?}\napproval -> applied, retryInterval {RETRY_INTERVAL}: {without:.2?}"
    );
    record(
        "gitops_flux",
        &[
            Figure::new("GitOps (Flux)", "approval -> applied p50, hand-back", format!("{p50:.2} s"), "-", true),
            Figure::new(
                "GitOps (Flux)",
                "approval -> applied p99, hand-back",
                format!("{p99:.2} s"),
                "<= 5 s",
                p99 <= 5.0,
            ),
            Figure::new(
                "GitOps (Flux)",
                &format!("approval -> applied p50, retryInterval {RETRY_INTERVAL}"),
                format!("{b50:.2} s"),
                "-",
                true,
            ),
            Figure::new(
                "GitOps (Flux)",
                &format!("approval -> applied p99, retryInterval {RETRY_INTERVAL}"),
                format!("{b99:.2} s"),
                "-",
                true,
            ),
            Figure::count("GitOps (Flux)", "changes per mode", CHANGES),
        ],
    );
    assert!(p99 <= 5.0, "hand-back p99 {p99:.2}s > 5 s: {with:?}\n{}", flux.log_tails());
    // Every hand-back is recorded; the retry mode's never handed back.
    for i in 0..CHANGES {
        let app = format!("app-{i}");
        let ar = request(cp, &hb, &name_of(&hb, &app));
        assert_eq!(ar["status"]["handBack"]["result"], "Done", "{}", ar["status"]);
        assert!(request(cp, &rt, &name_of(&rt, &app))["status"]["handBack"].is_null());
    }
    // And Flux reports success with no new commit and no manual step.
    eventually(60, "the handed-back Kustomizations Ready", || {
        (0..CHANGES).all(|i| ready(&format!("hb-{i}")).0 == "True").then_some(())
    });
    let (status, message) = ready("hb-0");
    assert!(message.contains(&flux.commit), "applied revision: {status} {message}");

    // The rejected change stays out; Flux still shows signoff's message.
    assert!(!seen.lock().unwrap().contains_key(&format!("{hb}/rejected")), "a rejected change is never applied");
    let (status, message) = ready("rejected");
    assert!(status == "False" && message.contains(&rejected), "{status}: {message}");
}
