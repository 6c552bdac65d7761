//! Shared helpers for the integration tests: one real control plane per test
//! binary, one namespace per test.
#![allow(dead_code)] // each test binary uses a different subset

pub mod approvals;
pub mod esc;
pub mod gitops;
pub mod report;

use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

pub use signoff_testenv::{ADMIN, ControlPlane};

/// The control plane shared by this test binary, with signoff's CRDs installed.
pub fn cp() -> &'static ControlPlane {
    static CRDS: Once = Once::new();
    let cp = ControlPlane::shared();
    CRDS.call_once(|| cp.install_crds().unwrap_or_else(|e| panic!("{e}")));
    cp
}

/// Run kubectl as `user`; panic with its stderr unless it succeeds. Returns stdout.
pub fn kubectl_ok(cp: &ControlPlane, user: &str, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, out, err) = cp.kubectl_run(user, args, stdin).expect("kubectl runs");
    assert!(ok, "kubectl {} as {user} failed:\n{err}", args.join(" "));
    out
}

/// Run kubectl as `user`, expecting it to fail; returns stderr.
pub fn kubectl_err(cp: &ControlPlane, user: &str, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, out, err) = cp.kubectl_run(user, args, stdin).expect("kubectl runs");
    assert!(!ok, "kubectl {} as {user} unexpectedly succeeded:\n{out}", args.join(" "));
    err
}

/// A fresh namespace for one test (namespaces never finish deleting without
/// kube-controller-manager, so each test gets its own and leaves it).
pub fn namespace(cp: &ControlPlane, prefix: &str, labels: &[(&str, &str)]) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let labels: String = labels.iter().map(|(k, v)| format!("    {k}: \"{v}\"\n")).collect();
    let manifest = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n{labels}    signoff.dev/test: \"true\"\n"
    );
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&manifest));
    name
}

/// Poll `f` every 200 ms until it returns Some, or panic after `secs` seconds with `what`.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {secs}s waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Apply `examples/demo` (namespaces, RBAC, signoff's own RBAC) and `examples/teams`.
pub fn install_demo(cp: &ControlPlane) {
    static DEMO: Once = Once::new();
    DEMO.call_once(|| {
        let root = signoff_testenv::checkout().unwrap_or_else(|e| panic!("{e}"));
        for dir in ["examples/demo", "examples/teams"] {
            kubectl_ok(cp, ADMIN, &["apply", "-f", &root.join(dir).display().to_string()], None);
        }
    });
}

/// A running signoff operator, as its own process, acting as its ServiceAccount.
pub struct Signoff {
    pub process: std::sync::Mutex<signoff_testenv::Supervised>,
    pub log: std::path::PathBuf,
    pub health: String,
}

impl Signoff {
    /// signoff's log (JSON lines) so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// signoff's metrics now, as its plain port serves them.
    pub fn metrics_text(&self) -> String {
        let out = std::process::Command::new("curl")
            .args(["-sS", &format!("{}/metrics", self.health)])
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// signoff running against this binary's control plane, with the test policies,
/// started once per test binary; returns when the API server calls its webhook.
pub fn signoff() -> &'static Signoff {
    static SIGNOFF: std::sync::OnceLock<Signoff> = std::sync::OnceLock::new();
    SIGNOFF.get_or_init(|| start_signoff(&[]))
}

/// Start signoff with extra `run` arguments; returns when the API server calls it.
pub fn start_signoff(extra_args: &[&str]) -> Signoff {
    {
        let cp = cp();
        install_demo(cp);
        // Once: a later signoff (after a kill) finds them in place; writing them again
        // would need the webhook of the signoff that is gone (fail closed).
        static FIXTURES: Once = Once::new();
        FIXTURES.call_once(|| {
            let fixtures =
                signoff_testenv::checkout().unwrap_or_else(|e| panic!("{e}")).join("tests/fixtures/gate-policies.yaml");
            kubectl_ok(cp, ADMIN, &["apply", "-f", &fixtures.display().to_string()], None);
        });
        let log = cp.dir.join("signoff.log");
        // Ready when a dry run of a held change comes back with signoff's warning:
        // the API server has loaded the webhook configuration and reaches the server.
        let ns = namespace(cp, "canary", &[("signoff.dev/test-gate", "true"), ("signoff.dev/owner", "payments")]);
        let canary = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: canary\n  namespace: {ns}\n  labels: {{risk: high}}\n"
        );
        // Every page on its own and no cap on pending requests (tests count
        // deliveries per request, and load tests hold hundreds as one user),
        // unless the test sets flood control itself (tests/escalation.rs).
        let mut args: Vec<&str> = extra_args.to_vec();
        if !args.iter().any(|a| a.starts_with("--coalesce-")) {
            args.push("--coalesce-window=0s");
        }
        if !args.iter().any(|a| a.starts_with("--max-pending-per-requester")) {
            args.push("--max-pending-per-requester=0");
        }
        let (process, health) = cp
            .start_signoff(
                std::path::Path::new(env!("CARGO_BIN_EXE_signoff")),
                &args,
                &[("RUST_LOG", "info")],
                &log,
                &canary,
                std::time::Duration::from_secs(90),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let signoff = Signoff { process: std::sync::Mutex::new(process), log, health };
        eprintln!("signoff: webhook registered with {} and answering (log {})", cp.server, signoff.log.display());
        signoff
    }
}

/// A namespace the test policies treat as production, owned by team payments.
pub fn gated_namespace(cp: &ControlPlane, prefix: &str) -> String {
    namespace(
        cp,
        prefix,
        &[
            ("signoff.dev/test-gate", "true"),
            ("signoff.dev/owner", "payments"),
            ("signoff.dev/environment", "production"),
        ],
    )
}

/// One notification a loopback receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: jiff::Timestamp,
    /// Path the sender posted to (the test gives each person their own).
    pub path: String,
    pub key: String,
    pub body: serde_json::Value,
}

/// A real HTTP receiver on loopback, as a notification sink would be.
pub struct Receiver {
    pub url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Received>::new()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let sink = got.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().fallback(
                    move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                        let sink = sink.clone();
                        async move {
                            let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
                            sink.lock().unwrap().push(Received {
                                at: jiff::Timestamp::now(),
                                path: uri.path().to_string(),
                                key: key.to_string(),
                                body: serde_json::from_slice(&body).unwrap_or_default(),
                            });
                            "ok"
                        }
                    },
                );
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Receiver { url, got }
    }

    /// Everything received so far whose path starts with `prefix`.
    pub fn received(&self, prefix: &str) -> Vec<Received> {
        self.got.lock().unwrap().iter().filter(|r| r.path.starts_with(prefix)).cloned().collect()
    }
}

/// Run the built plugin as `user` (their kubeconfig context). Returns (exit code, stdout, stderr).
pub fn plugin(user: &str, args: &[&str]) -> (i32, String, String) {
    let cp = cp();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-signoff"))
        .args(args)
        .args(["--kubeconfig", &cp.kubeconfig.display().to_string(), "--context", user])
        .env_remove("KUBECONFIG")
        .output()
        .expect("the plugin runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// The plugin as `user`, which must succeed; its stdout.
pub fn plugin_ok(user: &str, args: &[&str]) -> String {
    let (code, out, err) = plugin(user, args);
    assert_eq!(code, 0, "kubectl signoff {} as {user}: exit {code}\nstdout:\n{out}\nstderr:\n{err}", args.join(" "));
    out
}
