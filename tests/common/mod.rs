//! Shared helpers for the integration tests: one real control plane per test
//! binary, one namespace per test.
#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

pub use signoff::controlplane::{ADMIN, ControlPlane};

/// The control plane shared by this test binary, with signoff's CRDs installed.
pub fn cp() -> &'static ControlPlane {
    static CRDS: Once = Once::new();
    let cp = ControlPlane::shared();
    CRDS.call_once(|| {
        let crds = signoff::crd::crds_yaml();
        kubectl_ok(cp, ADMIN, &["apply", "--server-side", "-f", "-"], Some(&crds));
        let names: Vec<String> =
            signoff::crd::all_crds().into_iter().map(|c| format!("crd/{}", c.metadata.name.unwrap())).collect();
        let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        args.extend(names.iter().map(String::as_str));
        kubectl_ok(cp, ADMIN, &args, None);
    });
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
