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

use signoff_testenv::{ADMIN, ControlPlane, Options, Supervised, USERS};

/// `make dev`: a local control plane with signoff, demo policies, teams and people.
#[derive(clap::Parser)]
#[command(name = "signoff-dev")]
struct Args {
    /// The signoff checkout whose examples are installed and where `.dev/` is
    /// written (`make dev` passes its own). Default: SIGNOFF_ROOT, else the
    /// checkout at or above the working directory.
    #[arg(long)]
    root: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    let root = match args.root {
        Some(root) if signoff_testenv::is_checkout(&root) => root,
        Some(root) => {
            eprintln!("make dev: --root {} is not a signoff checkout (no Cargo.toml naming signoff)", root.display());
            return ExitCode::FAILURE;
        }
        None => match signoff_testenv::checkout() {
            Ok(root) => root,
            Err(e) => {
                eprintln!("make dev: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
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
    let cp = ControlPlane::start(Options {
        controller_manager: true,
        dir: Some(cluster_dir),
        checkout: Some(root.to_path_buf()),
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;

    let kubeconfig = dev.join("kubeconfig");
    let mut operator = None;
    let result = setup(root, &cp, &kubeconfig)
        .and_then(|()| start_signoff(&cp, dev).map(|s| operator = Some(s)))
        .and_then(|()| {
            std::fs::write(&ready, format!("{}\n", cp.server))
                .map_err(|e| format!("writing {}: {e}", ready.display()))?;
            print_walkthrough(&cp, &kubeconfig, started);
            wait_for_signal()
        });

    eprintln!("\nmake dev: stopping...");
    let _ = std::fs::remove_file(&ready);
    drop(operator);
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
    cp.install_crds().map_err(|e| e.to_string())?;
    eprintln!("make dev: installed signoff's CRDs (Established)");
    for dir in ["examples/demo", "examples/teams", "policies"] {
        let path = root.join(dir);
        if path.is_dir() {
            apply(cp, dir, &["apply", "-f", &path.display().to_string()], None)?;
        }
    }
    cp.write_kubeconfig(kubeconfig, "alice").map_err(|e| e.to_string())
}

/// Run signoff as its own ServiceAccount, its webhook registered over TLS, and
/// wait until the API server calls it (a dry run of a held change warns).
fn start_signoff(cp: &ControlPlane, dev: &Path) -> Result<Supervised, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let program = exe.with_file_name("signoff");
    if !program.exists() {
        return Err(format!("{} not found: run `make dev` (it builds signoff first)", program.display()));
    }
    let log = dev.join("signoff.log");
    eprintln!("make dev: starting signoff (log {}), waiting for its webhook...", log.display());
    let probe = "apiVersion: v1\nkind: Secret\nmetadata: {name: probe, namespace: payments-prod}\nstringData: {a: b}\n";
    let (process, _health) = cp
        .start_signoff(&program, &[], &[], &log, probe, std::time::Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    eprintln!("make dev: signoff's webhook is registered and answering");
    Ok(process)
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
    let bin =
        std::env::current_exe().ok().and_then(|e| e.parent().map(|p| p.display().to_string())).unwrap_or_default();
    println!("  export PATH={bin}:$PATH      # kubectl signoff (the plugin)");
    println!();
    println!("Walkthrough: a production deploy is held, approved by a teammate, then admitted.");
    println!("  1. alice deploys to production; signoff holds it and says who it is routed to:");
    println!("       kubectl --context alice apply -f examples/manifests/engineering/web-v1.yaml");
    println!("  2. what waits for bob, the packet and its escalation:");
    println!("       kubectl signoff list --context bob -A");
    println!("       kubectl signoff show --context bob -n payments-prod ar-...");
    println!("  3. alice cannot approve her own change; bob, her teammate, can:");
    println!("       kubectl signoff approve --context alice -n payments-prod ar-...");
    println!("       kubectl signoff approve --context bob -n payments-prod ar-...");
    println!("  4. the same apply is now admitted (and recorded in the request's status):");
    println!("       kubectl --context alice apply -f examples/manifests/engineering/web-v1.yaml");
    println!("  Or decide in the browser: the queue and each request's page, live, as bob:");
    println!("       kubectl signoff ui --context bob");
    println!("  Unanswered, a request climbs its ladder (owner, on-call, lead, secondary, admins);");
    println!("  CI waits for the decision (exit 0 approved, 3 rejected, 4 expired, 5 timeout):");
    println!("       kubectl signoff wait --context alice -f examples/manifests/engineering/web-v1.yaml --timeout 30m");
    println!("  Low-risk changes go straight in:");
    println!("       kubectl --context alice apply -f examples/manifests/admitted/dev-deployment.yaml");
    println!("  Check manifests offline, as CI would:");
    println!("       kubectl signoff check -f examples/manifests/ --policies policies");
    println!("  Who is on call until when, who is in quiet hours or away, which policies are Ready:");
    println!("       kubectl get teams,approvers,escalationpolicies");
    println!();
    println!("signoff's log: .dev/signoff.log (JSON lines; audit entries have target \"audit\").");
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
