//! The bench's world: a control plane with signoff (release build, example
//! policies and teams), the do-nothing webhook, and one namespace per group.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use signoff_testenv::{ControlPlane, Options, Supervised, free_port};

/// Namespaces of the groups. Only signoff's is seen by signoff; only noop's by
/// the do-nothing webhook; none by no webhook at all.
pub const NS_NONE: &str = "bench-none";
pub const NS_NOOP: &str = "bench-noop";
pub const NS_SIGNOFF: &str = "bench-signoff";
pub const NS_KYVERNO: &str = "bench-kyverno";

/// A webhook the bench can call directly.
pub struct Endpoint {
    pub url: String,
    pub ca_pem: Vec<u8>,
}

pub struct Env {
    pub cp: ControlPlane,
    pub signoff: Supervised,
    pub signoff_hook: Endpoint,
    pub signoff_health: String,
    pub noop: Supervised,
    pub noop_hook: Endpoint,
    pub kyverno: Option<super::apiserver::Kyverno>,
}

pub fn kubectl(cp: &ControlPlane, user: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let (ok, out, err) = cp.kubectl_run(user, args, stdin).map_err(|e| e.to_string())?;
    if ok { Ok(out) } else { Err(format!("kubectl {}: {err}", args.join(" "))) }
}

fn namespace(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("    {k}: \"{v}\"\n")).collect();
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    bench: \"true\"\n{}---\n",
        labels.concat()
    )
}

/// The program next to this bench binary's target directory (cargo builds the
/// package's binaries for benches and tells us where).
pub fn program(name: &str) -> PathBuf {
    match name {
        "signoff" => PathBuf::from(env!("CARGO_BIN_EXE_signoff")),
        "signoff-noop-webhook" => PathBuf::from(env!("CARGO_BIN_EXE_signoff-noop-webhook")),
        other => panic!("unknown program {other}"),
    }
}

/// signoff stays out of the other groups' namespaces, and out of Kyverno's
/// own: Kyverno creates its TLS Secrets there at startup, and signoff's
/// example policies hold Secret writes (as they would in a real cluster; a
/// platform team exempts its controllers' namespaces the same way).
/// signoff's arguments: the peers' namespaces exempt, and flood control off
/// (every page on its own, no cap), so capacity is measured per request.
fn exempt_args() -> Vec<String> {
    [NS_NONE, NS_NOOP, NS_KYVERNO, "kyverno"]
        .iter()
        .map(|ns| format!("--exempt-namespace={ns}"))
        .chain(["--coalesce-window=0s".to_string(), "--max-pending-per-requester=0".to_string()])
        .collect()
}

impl Env {
    pub fn start(kyverno: Option<&str>) -> Result<Env, String> {
        let t = Instant::now();
        let root = signoff_testenv::checkout().map_err(|e| e.to_string())?;
        let cp = ControlPlane::start(Options::default()).map_err(|e| e.to_string())?;
        eprintln!("bench: control plane {} at {} ({:.1}s)", cp.version, cp.server, t.elapsed().as_secs_f64());
        cp.install_crds().map_err(|e| e.to_string())?;
        for dir in ["examples/demo", "examples/teams", "policies"] {
            kubectl(&cp, "admin", &["apply", "-f", &root.join(dir).display().to_string()], None)?;
        }
        let mut namespaces = namespace(NS_NONE, &[]);
        namespaces += &namespace(NS_NOOP, &[("bench.signoff.dev/group", "noop")]);
        namespaces +=
            &namespace(NS_SIGNOFF, &[("signoff.dev/environment", "development"), ("signoff.dev/owner", "payments")]);
        namespaces += &namespace(NS_KYVERNO, &[("bench.signoff.dev/group", "kyverno")]);
        kubectl(&cp, "admin", &["apply", "-f", "-"], Some(&namespaces))?;

        let noop_hook = start_noop(&cp)?;
        let noop = noop_hook.0;
        let log = cp.dir.join("signoff.log");
        let probe =
            "apiVersion: v1\nkind: Secret\nmetadata: {name: probe, namespace: payments-prod}\nstringData: {a: b}\n";
        let exempt = exempt_args();
        let exempt: Vec<&str> = exempt.iter().map(String::as_str).collect();
        let (signoff, signoff_health) = cp
            .start_signoff(&program("signoff"), &exempt, &[], &log, probe, Duration::from_secs(60))
            .map_err(|e| e.to_string())?;
        let signoff_hook = registered(&cp, "signoff", 0)?;
        let kyverno = match kyverno {
            Some(binary) => Some(super::apiserver::Kyverno::start(&cp, &root, Path::new(binary))?),
            None => None,
        };
        eprintln!("bench: ready in {:.1}s", t.elapsed().as_secs_f64());
        Ok(Env { cp, signoff, signoff_hook, signoff_health, noop, noop_hook: noop_hook.1, kyverno })
    }

    /// signoff's pid (to read its memory from /proc).
    pub fn signoff_pid(&self) -> Option<u32> {
        self.signoff.program_pid()
    }

    /// Restart signoff (same flags) and wait until its webhook answers again.
    /// Returns how long it took to answer again.
    pub fn restart_signoff(&mut self, env: &[(&str, &str)]) -> Result<Duration, String> {
        self.signoff.stop();
        let started = Instant::now();
        let log = self.cp.dir.join("signoff-restarted.log");
        let probe =
            "apiVersion: v1\nkind: Secret\nmetadata: {name: probe, namespace: payments-prod}\nstringData: {a: b}\n";
        let exempt = exempt_args();
        let exempt: Vec<&str> = exempt.iter().map(String::as_str).collect();
        let (signoff, health) = self
            .cp
            .start_signoff(&program("signoff"), &exempt, env, &log, probe, Duration::from_secs(120))
            .map_err(|e| e.to_string())?;
        self.signoff = signoff;
        self.signoff_health = health;
        let ready = started.elapsed();
        self.signoff_hook = registered(&self.cp, "signoff", 0)?;
        Ok(ready)
    }
}

/// The URL and CA bundle of a registered webhook.
fn registered(cp: &ControlPlane, config: &str, index: usize) -> Result<Endpoint, String> {
    let out = kubectl(cp, "admin", &["get", "validatingwebhookconfiguration", config, "-o", "json"], None)?;
    let vwc: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    let client = &vwc["webhooks"][index]["clientConfig"];
    let url = client["url"].as_str().ok_or(format!("{config} has no url"))?.to_string();
    use base64::Engine;
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(client["caBundle"].as_str().unwrap_or_default())
        .map_err(|e| e.to_string())?;
    Ok(Endpoint { url, ca_pem })
}

/// Start the do-nothing webhook and register it for the noop group's namespace.
fn start_noop(cp: &ControlPlane) -> Result<(Supervised, Endpoint), String> {
    let pair = cp
        .ca
        .issue_server("signoff-noop-webhook", &[], &["127.0.0.1".parse().unwrap()], 2)
        .map_err(|e| e.to_string())?;
    let (cert, key) = (cp.dir.join("noop.crt"), cp.dir.join("noop.key"));
    std::fs::write(&cert, &pair.cert_pem).map_err(|e| e.to_string())?;
    std::fs::write(&key, &pair.key_pem).map_err(|e| e.to_string())?;
    let port = free_port().map_err(|e| e.to_string())?;
    let addr = format!("127.0.0.1:{port}");
    let args =
        ["--addr", addr.as_str(), "--cert-file", &cert.display().to_string(), "--key-file", &key.display().to_string()];
    let process = Supervised::spawn(
        "signoff-noop-webhook",
        &program("signoff-noop-webhook"),
        &args,
        &[],
        &cp.dir.join("noop.log"),
        None,
    )
    .map_err(|e| e.to_string())?;
    use base64::Engine;
    let ca = cp.ca.cert_pem().to_string();
    let url = format!("https://{addr}/validate");
    let vwc = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "bench-noop"},
        "webhooks": [{
            "name": "noop.bench.signoff.dev",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": url, "caBundle": base64::engine::general_purpose::STANDARD.encode(&ca)},
            "rules": [{"operations": ["CREATE", "UPDATE", "DELETE"], "apiGroups": ["", "apps"], "apiVersions": ["v1"],
                       "resources": ["configmaps", "deployments"]}],
            "namespaceSelector": {"matchLabels": {"bench.signoff.dev/group": "noop"}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "timeoutSeconds": 10
        }]
    });
    kubectl(cp, "admin", &["apply", "-f", "-"], Some(&vwc.to_string()))?;
    // Ready when the API server calls it: a dry run gets its warning.
    let probe = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: probe, namespace: {NS_NOOP}}}\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, _, err) = cp
            .kubectl_run("alice", &["apply", "--dry-run=server", "-f", "-"], Some(&probe))
            .map_err(|e| e.to_string())?;
        if ok && err.contains("signoff-noop-webhook") {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the do-nothing webhook was not called within 30 s: {err}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok((process, Endpoint { url, ca_pem: ca.into_bytes() }))
}
