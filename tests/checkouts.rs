//! `make dev` uses the checkout it is run from (issue 24): two clones of the same
//! commit on one machine, each `make dev` installs its own clone's files and writes
//! its own `.dev/`, the other clone is untouched, and the second clone still works
//! after the first is deleted. Each clone gets its own Cargo target directory
//! (`hack/target-dir.sh`), seeded from another checkout's.
//!
//! The clones hold this checkout's HEAD plus its uncommitted changes to tracked
//! files (`git stash create`); untracked files are not in them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use signoff_testenv::checkout;

/// The marker each clone adds to `examples/demo`, so the cluster says whose files
/// were installed.
const MARKER: &str = "zz-checkout-marker.yaml";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A clone of this checkout's current state at `dest`, with a marker naming it.
fn clone(source: &Path, dest: &Path) {
    let head = git(source, &["stash", "create"]);
    let commit = if head.is_empty() { git(source, &["rev-parse", "HEAD"]) } else { head };
    let status = Command::new("git")
        .args(["clone", "--quiet", "--shared", "--no-checkout"])
        .arg(source)
        .arg(dest)
        .status()
        .expect("git clone runs");
    assert!(status.success(), "git clone into {}", dest.display());
    git(dest, &["checkout", "--quiet", &commit]);
    let marker = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: checkout-marker, namespace: default}}\ndata: {{path: \"{}\"}}\n",
        dest.display()
    );
    std::fs::write(dest.join("examples/demo").join(MARKER), marker).expect("writing the marker");
}

/// `make` as a user runs it: none of this test run's Cargo or make settings leak in.
fn make(dir: &Path, target: &str) -> Command {
    let mut cmd = Command::new("make");
    cmd.arg("--no-print-directory").arg(target).current_dir(dir);
    for var in ["CARGO_TARGET_DIR", "SIGNOFF_ROOT", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CARGO_MAKEFLAGS"] {
        cmd.env_remove(var);
    }
    cmd
}

/// The clone's Cargo target directory, as its Makefile picks it.
fn target_dir(dir: &Path) -> PathBuf {
    let out = make(dir, "print-target-dir").arg("-s").output().expect("make runs");
    assert!(out.status.success(), "make print-target-dir: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Every file under `dir` with its length and modification time.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("readable").flatten() {
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                todo.push(entry.path());
            } else {
                files.push((entry.path(), meta.len(), meta.modified().expect("mtime")));
            }
        }
    }
    files.sort();
    files
}

/// A running `make dev`, in its own process group so it can be stopped as a
/// terminal's Ctrl-C would.
struct Dev {
    child: Child,
    dir: PathBuf,
}

impl Dev {
    fn start(dir: &Path) -> Dev {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(dir.join("make-dev.log")).expect("log file");
        let child = make(dir, "dev")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("make dev starts");
        let mut dev = Dev { child, dir: dir.to_path_buf() };
        // First time: the target directory is seeded and signoff built (minutes).
        let deadline = Instant::now() + Duration::from_secs(1200);
        let ready = dir.join(".dev/ready");
        while !ready.exists() {
            if let Some(status) = dev.child.try_wait().expect("wait") {
                panic!("make dev in {} exited ({status}) before .dev/ready:\n{}", dir.display(), dev.log());
            }
            assert!(Instant::now() < deadline, "no .dev/ready in {} after 20 min:\n{}", dir.display(), dev.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        dev
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("make-dev.log")).unwrap_or_default();
        signoff_testenv::tail(&text, 40)
    }

    /// Which clone's files the running environment installed.
    fn installed_marker(&self, kubectl: &Path) -> String {
        let out = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(self.dir.join(".dev/kubeconfig"))
            .args(["--context", "admin", "get", "configmap", "checkout-marker", "-n", "default"])
            .args(["-o", "jsonpath={.data.path}"])
            .output()
            .expect("kubectl runs");
        assert!(out.status.success(), "reading the marker: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGTERM to the process group, then wait: everything stops and `.dev/ready` goes.
    fn stop(mut self) {
        let started = Instant::now();
        let pgid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", "--", &format!("-{pgid}")]).status().expect("kill runs");
        assert!(status.success(), "signalling make dev");
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "make dev did not stop within 60 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("make dev in {} stopped after {:.1}s", self.dir.display(), started.elapsed().as_secs_f64());
        assert!(!self.dir.join(".dev/ready").exists(), ".dev/ready removed on stop");
        assert!(self.log().contains("every process it started has exited"), "clean stop:\n{}", self.log());
    }
}

#[test]
fn make_dev_uses_the_checkout_it_runs_in() {
    let source = checkout().unwrap_or_else(|e| panic!("{e}"));
    let kubectl = signoff_testenv::binaries(Some(&source)).expect("control plane binaries").join("kubectl");
    let tmp = tempfile::Builder::new().prefix("signoff-clones-").tempdir().expect("tempdir");
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    clone(&source, &one);
    clone(&source, &two);

    let (target_one, target_two) = (target_dir(&one), target_dir(&two));
    eprintln!("clone one: {} (target {})", one.display(), target_one.display());
    eprintln!("clone two: {} (target {})", two.display(), target_two.display());
    assert_ne!(target_one, target_two, "each clone has its own target directory");
    assert!(
        !target_one.starts_with(&one) && !target_two.starts_with(&two),
        "target directories live outside the clones"
    );

    let started = Instant::now();
    let dev = Dev::start(&one);
    eprintln!("make dev in clone one ready after {:.0}s", started.elapsed().as_secs_f64());
    assert_eq!(dev.installed_marker(&kubectl), one.display().to_string(), "clone one installs its own examples");
    dev.stop();
    let before = snapshot(&one);

    let started = Instant::now();
    let dev = Dev::start(&two);
    eprintln!("make dev in clone two ready after {:.0}s", started.elapsed().as_secs_f64());
    assert_eq!(dev.installed_marker(&kubectl), two.display().to_string(), "clone two installs its own examples");
    assert!(two.join(".dev/kubeconfig").is_file(), "clone two writes its own .dev/");
    dev.stop();
    let after = snapshot(&one);
    let changed: Vec<_> =
        after.iter().filter(|f| !before.contains(f)).chain(before.iter().filter(|f| !after.contains(f))).collect();
    assert!(changed.is_empty(), "clone one is untouched by make dev in clone two; changed: {changed:?}");

    std::fs::remove_dir_all(&one).expect("deleting clone one");
    let started = Instant::now();
    let dev = Dev::start(&two);
    eprintln!("make dev in clone two, clone one deleted, ready after {:.0}s", started.elapsed().as_secs_f64());
    assert_eq!(dev.installed_marker(&kubectl), two.display().to_string(), "still clone two's files");
    dev.stop();
    assert_eq!(target_dir(&two), target_two, "the target directory stays with its checkout");
}
