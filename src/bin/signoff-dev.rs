#![forbid(unsafe_code)]
//! `make dev`: a local control plane with signoff's resources, the demo teams,
//! namespaces and people, and a kubeconfig with one context per person.
//!
//! Contract (DESIGN.md, "Conventions users rely on"): writes `.dev/kubeconfig`,
//! creates `.dev/ready` when everything is up, runs in the foreground, and on
//! Ctrl-C or SIGTERM stops every process it started and removes `.dev/ready`.
//! A second instance while one runs says so and exits.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use signoff::controlplane::{ADMIN, ControlPlane, Options, USERS};

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dev = root.join(".dev");
    match run(&root, &dev) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("make dev: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Refuses to start when another `make dev` holds `.dev/lock`; stale locks are taken over.
fn take_lock(dev: &Path) -> Result<PathBuf, String> {
    let lock = dev.join("lock");
    if let Ok(pid) = std::fs::read_to_string(&lock) {
        let pid = pid.trim();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("signoff-dev") {
            return Err(format!(
                "already running (pid {pid}); use it with `export KUBECONFIG={}`, or stop it with Ctrl-C in its terminal",
                dev.join("kubeconfig").display()
            ));
        }
    }
    std::fs::write(&lock, std::process::id().to_string()).map_err(|e| format!("writing {}: {e}", lock.display()))?;
    Ok(lock)
}

fn run(root: &Path, dev: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dev).map_err(|e| format!("creating {}: {e}", dev.display()))?;
    let lock = take_lock(dev)?;
    let ready = dev.join("ready");
    let _ = std::fs::remove_file(&ready);
    let started = Instant::now();

    eprintln!("make dev: starting etcd, kube-apiserver and kube-controller-manager on loopback...");
    let cluster_dir = dev.join("cluster");
    let _ = std::fs::remove_dir_all(&cluster_dir);
    let cp = ControlPlane::start(Options { controller_manager: true, dir: Some(cluster_dir), ..Default::default() })
        .map_err(|e| e.to_string())?;

    let kubeconfig = dev.join("kubeconfig");
    let result = setup(root, &cp, &kubeconfig).and_then(|()| {
        std::fs::write(&ready, format!("{}\n", cp.server)).map_err(|e| format!("writing {}: {e}", ready.display()))?;
        print_walkthrough(&cp, &kubeconfig, started);
        wait_for_signal()
    });

    eprintln!("\nmake dev: stopping...");
    let _ = std::fs::remove_file(&ready);
    drop(cp);
    let _ = std::fs::remove_file(&lock);
    eprintln!("make dev: stopped; every process it started has exited");
    result
}

fn apply(cp: &ControlPlane, what: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let (ok, _, err) = cp.kubectl_run(ADMIN, args, stdin).map_err(|e| e.to_string())?;
    if !ok {
        return Err(format!("installing {what} failed:\n{err}"));
    }
    eprintln!("make dev: installed {what}");
    Ok(())
}

fn setup(root: &Path, cp: &ControlPlane, kubeconfig: &Path) -> Result<(), String> {
    let crds = signoff::crd::crds_yaml();
    apply(cp, "signoff CRDs", &["apply", "--server-side", "-f", "-"], Some(&crds))?;
    let names: Vec<String> =
        signoff::crd::all_crds().into_iter().filter_map(|c| c.metadata.name).map(|n| format!("crd/{n}")).collect();
    let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    wait.extend(names.iter().map(String::as_str));
    apply(cp, "(CRDs established)", &wait, None)?;
    for dir in ["examples/demo", "examples/teams", "examples/policies"] {
        let path = root.join(dir);
        if path.is_dir() {
            apply(cp, dir, &["apply", "-f", &path.display().to_string()], None)?;
        }
    }
    cp.write_kubeconfig(kubeconfig, "alice").map_err(|e| e.to_string())
}

fn print_walkthrough(cp: &ControlPlane, kubeconfig: &Path, started: Instant) {
    let k = kubeconfig.display();
    println!();
    println!(
        "signoff dev environment ready in {:.0}s: kube-apiserver {} at {}",
        started.elapsed().as_secs_f64(),
        cp.version,
        cp.server
    );
    println!();
    println!("  export KUBECONFIG={k}");
    println!();
    println!("One context per person (kubectl --context NAME):");
    for u in USERS {
        println!("  {:<38} {}", u.context(), u.role);
    }
    println!();
    println!("Walkthrough:");
    println!("  kubectl get teams,escalationpolicies                 # the rules, as Kubernetes resources");
    println!("  kubectl get ns -L signoff.dev/owner,signoff.dev/environment");
    println!("  kubectl --context alice auth whoami                  # alice, in team:payments");
    println!("  kubectl --context alice -n payments-dev create configmap hello --from-literal=a=b");
    println!();
    println!("Not yet: signoff's admission webhook and escalation (issues #4 and #5) are not built,");
    println!("so changes are not held yet. This environment already runs the real control plane,");
    println!("the CRDs, the demo teams and the demo people.");
    println!();
    println!("Ctrl-C stops everything. .dev/ready exists while the environment is up.");
}

fn wait_for_signal() -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    })
}
