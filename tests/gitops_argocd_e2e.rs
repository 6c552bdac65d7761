//! Argo CD, end to end (issue 18, part 4): its real application-controller and
//! repo-server (v3.2.11, built from Go modules by hack/peers/argocd, with Redis
//! from Debian's packages) run out of cluster against the local control plane
//! and read a Git repository served on loopback. signoff holds what Argo CD's
//! automated sync applies; the request names the Application and the commit;
//! an approval ends with Argo CD applying the change by itself (the hand-back:
//! a sync of only the approved resource). Measured against Argo CD's own retry
//! (`retry: {limit: -1, backoff: 60s}`) in the same run.
//!
//! Argo CD's controller serves its metrics on every interface (hard-coded
//! 0.0.0.0), so the whole test runs in a network namespace of its own with
//! only loopback in it (`unshare -n`); everything is built before entering it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::approvals::{decide, requests};
use common::gitops::*;
use common::report::{Figure, record};
use common::*;
use serde_json::Value;
use signoff_testenv::{GITOPS, Supervised, context_of, free_port};

/// Changes measured with the hand-back, and as many without it.
const CHANGES: usize = 10;
/// Argo CD's own retry of a failed sync, for the changes without the hand-back.
const RETRY: &str = "60s";
const TEST: &str = "argo_cd_applies_an_approved_change_by_itself";

fn argocd_version() -> String {
    let go_mod = std::fs::read_to_string(checkout().join("hack/peers/argocd/go.mod")).unwrap();
    go_mod
        .lines()
        .find_map(|l| l.trim().strip_prefix("github.com/argoproj/argo-cd/v3 "))
        .and_then(|rest| rest.split_whitespace().next().map(str::to_string))
        .expect("the Argo CD version in go.mod")
}

#[test]
fn argo_cd_applies_an_approved_change_by_itself() {
    if std::env::var_os("SIGNOFF_PRIVATE_NETNS").is_none() {
        // Outside: build and install what needs the network, then run the test
        // again in a network namespace with only loopback.
        script("hack/controlplane/build.sh", &[]);
        script("hack/peers/argocd/build.sh", &[]);
        script("hack/peers/argocd/crds.sh", &[("ARGOCD_VERSION", &argocd_version())]);
        if Command::new("sh")
            .args(["-c", "command -v redis-server"])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            eprintln!("redis-server not found: apt-get install -y redis-server");
            let ok = Command::new("apt-get").args(["install", "-y", "redis-server"]).status().unwrap().success();
            assert!(ok, "apt-get install -y redis-server failed");
        }
        // A network namespace as root, else in a user namespace (rootless).
        let permitted = |flags: &str| Command::new("unshare").args([flags, "true"]).status().is_ok_and(|s| s.success());
        let Some(flags) = ["-n", "-rn"].into_iter().find(|f| permitted(f)) else {
            eprintln!(
                "unshare -n and unshare -rn are not permitted here: running in the host network namespace \
                 (Argo CD's controller then serves its metrics on every interface for the test's duration)"
            );
            return inside();
        };
        let exe = std::env::current_exe().unwrap();
        let status = Command::new("unshare")
            .args([flags, "--", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh"])
            .arg(&exe)
            .args(["--exact", TEST, "--nocapture"])
            .env("SIGNOFF_PRIVATE_NETNS", "1")
            .status()
            .expect("unshare runs");
        assert!(status.success(), "the test in its own network namespace failed (see above)");
        return;
    }
    inside();
}

/// An Application with automated sync; `retry` sets Argo CD's retry of a failed sync.
fn application(name: &str, path: &str, url: &str, ns: &str, retry: Option<&str>) -> String {
    let retry = retry
        .map(|every| format!(", retry: {{limit: -1, backoff: {{duration: {every}, factor: 1, maxDuration: {every}}}}}"))
        .unwrap_or_default();
    format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {{name: {name}, namespace: argocd}}\nspec:\n  \
         project: default\n  source: {{repoURL: \"{url}\", targetRevision: main, path: {path}}}\n  \
         destination: {{server: \"https://kubernetes.default.svc\", namespace: {ns}}}\n  \
         syncPolicy: {{automated: {{prune: false, selfHeal: false}}{retry}}}\n---\n"
    )
}

fn app(name: &str) -> Value {
    serde_json::from_str(&kubectl_ok(cp(), ADMIN, &["get", "application", "-n", "argocd", name, "-o", "json"], None))
        .unwrap()
}

fn healthy(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port))
        .and_then(|mut s| {
            use std::io::{Read, Write};
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            Ok(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"))
        })
        .unwrap_or(false)
}

fn inside() {
    let cp = cp();
    install_demo(cp);
    let labels = |mode: &'static str| [("signoff.dev/test-argo-e2e", mode), ("signoff.dev/owner", "payments")];
    let (hb, rt) = (namespace(cp, "argo-hb", &labels("handback")), namespace(cp, "argo-rt", &labels("retry")));
    for (mode, hand_back) in [("handback", true), ("retry", false)] {
        let policy = format!(
            "apiVersion: signoff.dev/v1alpha1\nkind: EscalationPolicy\nmetadata: {{name: argo-{mode}}}\nspec:\n  match:\n    \
             rules: [{{operations: [CREATE, UPDATE], apiGroups: [apps], apiVersions: [v1], resources: [deployments]}}]\n    \
             namespaceSelector: {{matchLabels: {{signoff.dev/test-argo-e2e: {mode}}}}}\n  gitops: {{handBack: {hand_back}}}\n  \
             actionClasses:\n    routine: {{tierTimeout: 10m, notify: Sequential}}\n  rules:\n  \
             - {{name: production-deployment, expression: \"true\", risk: High, route: engineering, message: a production Deployment}}\n"
        );
        kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&policy));
    }
    let _signoff = signoff();

    // Argo CD's CRDs (of the version that runs), settings, project and RBAC.
    let crds = script("hack/peers/argocd/crds.sh", &[("ARGOCD_VERSION", &argocd_version())]);
    kubectl_ok(cp, ADMIN, &["apply", "--server-side", "-f", &crds.display().to_string()], None);
    cp.wait_established(&["applications.argoproj.io", "appprojects.argoproj.io"]).unwrap_or_else(|e| panic!("{e}"));
    let settings = "apiVersion: v1\nkind: Namespace\nmetadata: {name: argocd}\n---\n\
        apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\n  namespace: argocd\n  \
        labels: {app.kubernetes.io/name: argocd-cm, app.kubernetes.io/part-of: argocd}\ndata: {}\n---\n\
        apiVersion: argoproj.io/v1alpha1\nkind: AppProject\nmetadata: {name: default, namespace: argocd}\nspec:\n  \
        sourceRepos: [\"*\"]\n  destinations: [{server: \"*\", namespace: \"*\"}]\n  clusterResourceWhitelist: [{group: \"*\", kind: \"*\"}]\n---\n\
        apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: argocd-cluster-admin}\n\
        roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\n\
        subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: \"system:serviceaccounts:argocd\"}]\n";
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(settings));

    // The repository: one commit, one Deployment per Application.
    let work = cp.dir.join("argocd");
    let repo = work.join("git/deploy");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let mut apps: Vec<(String, String, String)> = Vec::new(); // (application, namespace, deployment)
    for i in 0..CHANGES {
        apps.push((format!("hb-{i}"), hb.clone(), format!("app-{i}")));
    }
    for i in 0..CHANGES {
        apps.push((format!("rt-{i}"), rt.clone(), format!("app-{i}")));
    }
    apps.push(("rejected".into(), hb.clone(), "rejected".into()));
    for (name, ns, deploy) in &apps {
        let dir = repo.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("deployment.yaml"), deployment(ns, deploy)).unwrap();
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "shop: production deployments"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);

    // Redis, the Git server, the repo server and the application controller.
    let bin = script("hack/peers/argocd/build.sh", &[]);
    let mut processes = Vec::new();
    let mut logs = Vec::new();
    let mut spawn = |name: &str, program: &Path, args: &[&str], env: &[(&str, &str)]| {
        let log = work.join(format!("{name}.log"));
        processes.push(Supervised::spawn(name, program, args, env, &log, None).unwrap());
        logs.push(log);
    };
    let redis = free_port().unwrap().to_string();
    let redis_dir = work.join("redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let redis_dir = redis_dir.display().to_string();
    spawn(
        "redis",
        Path::new("redis-server"),
        &["--bind", "127.0.0.1", "--port", &redis, "--save", "", "--appendonly", "no", "--dir", &redis_dir],
        &[],
    );
    let git_port = free_port().unwrap().to_string();
    let server = checkout().join("hack/peers/flux/git-http.py").display().to_string();
    let root = work.join("git").display().to_string();
    spawn("git-http", Path::new("python3"), &[&server, "--root", &root, "--port", &git_port], &[]);
    let url = format!("http://127.0.0.1:{git_port}/deploy");
    eventually(20, "the Git server to answer", || {
        Command::new("git").args(["ls-remote", &url]).output().ok().filter(|o| o.status.success()).map(|_| ())
    });
    let redis_addr = format!("127.0.0.1:{redis}");
    let (rs_port, rs_metrics, ctrl_metrics) = (free_port().unwrap(), free_port().unwrap(), free_port().unwrap());
    let (rs_port_s, rs_metrics_s, ctrl_metrics_s) =
        (rs_port.to_string(), rs_metrics.to_string(), ctrl_metrics.to_string());
    let rs_tmp = work.join("rs-tmp");
    std::fs::create_dir_all(&rs_tmp).unwrap();
    let askpass = work.join("askpass.sock").display().to_string();
    spawn(
        "repo-server",
        &bin.join("argocd-repo-server"),
        &[
            "--address",
            "127.0.0.1",
            "--port",
            &rs_port_s,
            "--disable-tls",
            "--metrics-address",
            "127.0.0.1",
            "--metrics-port",
            &rs_metrics_s,
            "--redis",
            &redis_addr,
            "--logformat",
            "text",
        ],
        &[("ARGOCD_GPG_ENABLED", "false"), ("ARGOCD_ASK_PASS_SOCK", &askpass), ("TMPDIR", rs_tmp.to_str().unwrap())],
    );
    let kubeconfig = work.join("controller.kubeconfig");
    cp.write_kubeconfig(&kubeconfig, context_of(GITOPS)).unwrap();
    let repo_server = format!("127.0.0.1:{rs_port}");
    spawn(
        "application-controller",
        &bin.join("argocd-application-controller"),
        &[
            "--namespace",
            "argocd",
            "--repo-server",
            &repo_server,
            "--repo-server-plaintext",
            "--redis",
            &redis_addr,
            "--metrics-port",
            &ctrl_metrics_s,
            "--logformat",
            "text",
        ],
        // The in-cluster destination from KUBECONFIG instead of a pod's mount.
        &[("KUBECONFIG", kubeconfig.to_str().unwrap()), ("ARGOCD_FAKE_IN_CLUSTER", "true")],
    );
    let tails = || log_tails(&logs);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    while !(healthy(rs_metrics) && healthy(ctrl_metrics)) {
        assert!(Instant::now() < deadline, "Argo CD not healthy after 60 s\n{}", tails());
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = watch_deployments(&[hb.clone(), rt.clone()]);
    let manifests: String =
        apps.iter().map(|(name, ns, _)| application(name, name, &url, ns, (*ns == rt).then_some(RETRY))).collect();
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&manifests));

    // Argo CD's automated sync applies; signoff holds each, naming the Application and the commit.
    let deadline = Instant::now() + Duration::from_secs(180);
    let held = loop {
        let all: Vec<Value> = requests(cp, &hb).into_iter().chain(requests(cp, &rt)).collect();
        let read = all.iter().filter(|ar| ar["status"]["gitopsSource"]["revision"].is_string()).count();
        if read == apps.len() {
            break all;
        }
        assert!(Instant::now() < deadline, "{read} of {} held with their source read\n{}", apps.len(), tails());
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("Argo CD started and all {} syncs held in {:.1}s", held.len(), started.elapsed().as_secs_f64());
    let request_of = |ns: &str, deploy: &str| -> Value {
        held.iter()
            .find(|ar| ar["spec"]["action"]["namespace"] == ns && ar["spec"]["action"]["name"] == deploy)
            .cloned()
            .unwrap_or_else(|| panic!("no request for {ns}/{deploy}"))
    };
    for (name, ns, deploy) in &apps {
        let ar = request_of(ns, deploy);
        assert_eq!(ar["spec"]["requester"]["username"], GITOPS, "held as Argo CD applied it");
        assert_eq!(ar["spec"]["gitops"]["tool"], "ArgoCD");
        assert_eq!(ar["spec"]["gitops"]["name"], name.as_str(), "the tracking id names the Application");
        assert_eq!(ar["status"]["gitopsSource"]["revision"], commit.as_str(), "the commit Argo CD was syncing");
        assert_eq!(ar["status"]["gitopsSource"]["url"], url.as_str());
    }
    let name_of = |ns: &str, deploy: &str| request_of(ns, deploy)["metadata"]["name"].as_str().unwrap().to_string();
    let rejected = name_of(&hb, "rejected");
    let shown = plugin_ok("bob", &["show", "-n", &hb, &rejected]);
    assert!(
        shown.contains(&format!(
            "GitOps:     commit {} of 127.0.0.1:{git_port}/deploy, applied by Argo CD Application argocd/rejected",
            &commit[..7]
        )),
        "{shown}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed = loop {
        // Failed, or Running while Argo CD retries: either way with signoff's message.
        let status = app("rejected")["status"].clone();
        let state = status["operationState"].clone();
        if state["message"].as_str().is_some_and(|m| m.contains("held for approval")) {
            break state;
        }
        assert!(Instant::now() < deadline, "Argo CD did not report the held sync: {status}\n{}", tails());
        std::thread::sleep(Duration::from_millis(500));
    };
    let message = failed.to_string();
    assert!(message.contains("held for approval") && message.contains(&rejected), "{message}");

    // Approve; reject one.
    let mut approved_at: BTreeMap<String, Instant> = BTreeMap::new();
    for (name, ns, deploy) in apps.iter().filter(|(name, _, _)| name != "rejected") {
        let (ok, err) = decide(cp, "bob", "bob", ns, &name_of(ns, deploy), "Approve");
        assert!(ok, "{name}: {err}");
        approved_at.insert(format!("{ns}/{deploy}"), Instant::now());
    }
    let (ok, err) = decide(cp, "bob", "bob", &hb, &rejected, "Reject");
    assert!(ok, "{err}");

    let present = eventually(150, "every approved change applied by Argo CD", || {
        let seen = seen.lock().unwrap();
        approved_at.keys().all(|k| seen.contains_key(k)).then(|| seen.clone())
    });
    let (with, without) = (delays(&approved_at, &present, &hb), delays(&approved_at, &present, &rt));
    let (p50, p99) = (percentile(&with, 50.0), percentile(&with, 99.0));
    let (b50, b99) = (percentile(&without, 50.0), percentile(&without, 99.0));
    eprintln!(
        "Argo CD approval -> applied, hand-back: {with:.2?}\nArgo CD approval -> applied, retry every {RETRY}: {without:.2?}"
    );
    let section = "GitOps (Argo CD)";
    record(
        "gitops_argocd_e2e",
        &[
            Figure::new(section, "approval -> applied p50, hand-back", format!("{p50:.2} s"), "-", true),
            Figure::new(section, "approval -> applied p99, hand-back", format!("{p99:.2} s"), "<= 5 s", p99 <= 5.0),
            Figure::new(
                section,
                &format!("approval -> applied p50, retry every {RETRY}"),
                format!("{b50:.2} s"),
                "-",
                true,
            ),
            Figure::new(
                section,
                &format!("approval -> applied p99, retry every {RETRY}"),
                format!("{b99:.2} s"),
                "-",
                true,
            ),
            Figure::count(section, "changes per mode", CHANGES),
        ],
    );
    assert!(p99 <= 5.0, "hand-back p99 {p99:.2}s > 5 s: {with:?}\n{}", tails());
    assert!(!seen.lock().unwrap().contains_key(&format!("{hb}/rejected")), "a rejected change is never applied");
    for i in 0..CHANGES {
        let ar = common::approvals::request(cp, &hb, &name_of(&hb, &format!("app-{i}")));
        assert_eq!(ar["status"]["handBack"]["result"], "Done", "{}", ar["status"]);
    }
    eventually(60, "a handed-back Application Synced", || {
        (app("hb-0")["status"]["sync"]["status"] == "Synced").then_some(())
    });
    let operation = app("hb-0")["status"]["operationState"]["operation"].clone();
    assert_eq!(operation["initiatedBy"]["username"], "signoff", "{operation}");
    drop(processes);
}
