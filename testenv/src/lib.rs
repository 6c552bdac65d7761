#![forbid(unsafe_code)]
//! signoff's test environment, a crate of its own (not part of the product): a
//! real local control plane, etcd and kube-apiserver (and optionally
//! kube-controller-manager) on loopback, with their own CA, RBAC authorization and
//! a set of users who authenticate by static token or client certificate, exactly
//! as `kubectl` would. Used by the integration tests, the benches and `make dev`
//! (`signoff-dev`), the way controller-rs uses envtest.
//!
//! The binaries come from `hack/controlplane/build.sh`, which honours
//! `KUBEBUILDER_ASSETS` and otherwise builds them once from Go modules into a cache.
//!
//! Every process is started under a tiny supervisor shell that holds a pipe from
//! this process on its stdin: when this process goes away for any reason (normal
//! exit, panic, SIGKILL), the pipe closes and the supervisor stops its child. So no
//! process is left behind, even for a control plane kept in a `static`.

mod users;

pub use users::{ADMIN, CONTROLLER, DemoUser, FLUX_KUSTOMIZE, FLUX_SOURCE, GITOPS, USERS, context_of};

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use signoff::tls::certs::Ca;

/// What went wrong starting or using the control plane, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("control plane: {0}")]
    ControlPlane(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("yaml: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Signoff(#[from] signoff::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds a human context to an I/O error: `io(context)(err)`.
fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Options for [`ControlPlane::start`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Also run kube-controller-manager (namespace deletion, garbage collection,
    /// aggregated ClusterRoles, ServiceAccount tokens).
    pub controller_manager: bool,
    /// Keep the working directory (certs, logs, etcd data) after stopping.
    pub keep_dir: bool,
    /// Working directory; a fresh temporary one when unset.
    pub dir: Option<PathBuf>,
    /// The checkout whose `hack/controlplane/build.sh` provides the binaries;
    /// [`checkout`] when unset.
    pub checkout: Option<PathBuf>,
    /// Serve pods on a real node (tests/cluster.rs, in a network namespace of its
    /// own): the API server listens on every interface of that namespace and
    /// advertises this address as the `kubernetes` Service's endpoint, its
    /// certificate also names the Service's ClusterIP, and the ServiceAccount
    /// admission plugin mounts tokens into pods.
    pub node_address: Option<Ipv4Addr>,
    /// An `AuthenticationConfiguration` file for the API server
    /// (`--authentication-config`): e.g. trust an OIDC provider's ID tokens, beside
    /// the static tokens of the demo users (tests/ui.rs, with Dex).
    pub authentication_config: Option<PathBuf>,
}

/// The `kubernetes` Service's ClusterIP: the first address of `--service-cluster-ip-range`.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A process started under the supervisor: it stops when this handle is dropped,
/// and also when the owning process exits for any reason (the lifeline closes).
pub struct Supervised {
    child: Child,
    lifeline: Option<ChildStdin>,
}

impl Supervised {
    /// Start `program` with `args` and extra environment, logging to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
        cleanup: Option<&Path>,
    ) -> Result<Supervised> {
        let out = fs::File::create(log).map_err(io(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(io("duplicating a log file handle"))?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("supervisor")
            .arg(cleanup.map(|p| p.display().to_string()).unwrap_or_default())
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io(format!("starting {name}")))?;
        let lifeline = child.stdin.take();
        Ok(Supervised { child, lifeline })
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stop the process (TERM, then KILL after 5 s) and wait for it.
    pub fn stop(&mut self) {
        self.lifeline.take();
        let _ = self.child.wait();
    }

    /// The pid of the supervised program (the supervisor's child), e.g. to read its
    /// memory from /proc; None once it has exited.
    pub fn program_pid(&self) -> Option<u32> {
        // The supervisor has two children: the program and its watcher subshell.
        let out = Command::new("pgrep").arg("-P").arg(self.child.id().to_string()).output().ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .find(|pid| fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() != "sh"))
    }

    /// Kill the process at once (SIGKILL), as a crash would: the supervisor's
    /// children (the process and its watcher) get KILL, then the supervisor exits.
    pub fn kill(&mut self) {
        let _ = Command::new("pkill").arg("-KILL").arg("-P").arg(self.child.id().to_string()).status();
        self.stop();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One component of the control plane.
struct Process {
    name: &'static str,
    process: Supervised,
}

/// A running local control plane. Dropping it stops every process it started.
pub struct ControlPlane {
    /// Directory with certs, the kubeconfig, logs and etcd data.
    pub dir: PathBuf,
    /// Directory with kube-apiserver, kubectl, etcd (and kube-controller-manager).
    pub bin_dir: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    /// The cluster CA (PEM): trust anchor for the apiserver, and client-cert CA.
    pub ca: Ca,
    /// Kubeconfig with one context per user, named after the user.
    pub kubeconfig: PathBuf,
    /// The admin's client certificate (system:masters).
    admin_cert: signoff::tls::certs::CertPair,
    /// Static token per user (admin authenticates by client certificate).
    tokens: Vec<(&'static str, String)>,
    /// Service-account signing key (PEM), for minting tokens if a test needs to.
    pub service_account_key: PathBuf,
    processes: Vec<Process>,
    keep_dir: bool,
    /// The apiserver's reported version, e.g. v1.35.4.
    pub version: String,
}

/// Whether `dir` is the root of a signoff checkout: its Cargo.toml names the
/// `signoff` package and it has the control-plane build script.
pub fn is_checkout(dir: &Path) -> bool {
    dir.join("hack/controlplane/build.sh").is_file()
        && fs::read_to_string(dir.join("Cargo.toml"))
            .is_ok_and(|toml| toml.lines().any(|l| l.trim().replace(' ', "") == "name=\"signoff\""))
}

/// The checkout at or above `start`, if any.
pub fn find_checkout(start: &Path) -> Option<PathBuf> {
    start.ancestors().find(|dir| is_checkout(dir)).map(Path::to_path_buf)
}

/// The signoff checkout this process works in, found at run time (never from a
/// path fixed when it was compiled: a binary built in one clone must not use
/// another clone's files): `SIGNOFF_ROOT` when set, otherwise the checkout at or
/// above the working directory (`make` and `cargo test` run in it).
pub fn checkout() -> Result<PathBuf> {
    if let Some(root) = std::env::var_os("SIGNOFF_ROOT").filter(|r| !r.is_empty()) {
        let root = PathBuf::from(root);
        if !is_checkout(&root) {
            return Err(Error::ControlPlane(format!(
                "SIGNOFF_ROOT={} is not a signoff checkout (no Cargo.toml naming signoff with \
                 hack/controlplane/build.sh); point it at the clone's top directory",
                root.display()
            )));
        }
        return Ok(root);
    }
    let cwd = std::env::current_dir().map_err(io("reading the working directory"))?;
    find_checkout(&cwd).ok_or_else(|| {
        Error::ControlPlane(format!(
            "{} is not inside a signoff checkout; run from the clone (as `make` does) or set SIGNOFF_ROOT",
            cwd.display()
        ))
    })
}

/// Locate (building on first use) the control-plane binaries with the build
/// script of `root` ([`checkout`] when None). The result is kept for the process.
pub fn binaries(root: Option<&Path>) -> Result<PathBuf> {
    static DIR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = match root {
            Some(root) => root.to_path_buf(),
            None => checkout().map_err(|e| e.to_string())?,
        };
        let script = root.join("hack/controlplane/build.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!("{} failed ({}); see the messages above", script.display(), out.status));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
    .clone()
    .map_err(Error::ControlPlane)
}

/// A free TCP port on loopback (bound, then released), below the kernel's
/// ephemeral range: a port the kernel hands out (bind to port 0) is also the
/// local port of outgoing connections, so between its release and the server's
/// bind another process's connection could take it ("address already in use").
pub fn free_port() -> Result<u16> {
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > 12_000 {
        let span = u32::from(ephemeral_low - 11_000);
        for _ in 0..64 {
            let port = 11_000 + (random_u32()? % span) as u16;
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io("binding a free loopback port"))?;
    Ok(listener.local_addr().map_err(io("reading a bound port"))?.port())
}

fn random_u32() -> Result<u32> {
    let mut bytes = [0u8; 4];
    let mut f = fs::File::open("/dev/urandom").map_err(io("opening /dev/urandom"))?;
    std::io::Read::read_exact(&mut f, &mut bytes).map_err(io("reading /dev/urandom"))?;
    Ok(u32::from_le_bytes(bytes))
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 24];
    let mut f = fs::File::open("/dev/urandom").map_err(io("opening /dev/urandom"))?;
    std::io::Read::read_exact(&mut f, &mut bytes).map_err(io("reading /dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).map_err(io(format!("writing {}", path.display())))
}

/// The supervisor: starts the command; a watcher stops it (TERM, then KILL after
/// 5 s) as soon as the supervisor's stdin (the lifeline pipe) closes. The supervisor
/// exits with its child, then optionally removes a directory. Background jobs get
/// /dev/null as stdin, hence the explicit fd 3. The child runs in its own session
/// (`setsid`), so a signal to the whole process group (Ctrl-C in a terminal, a
/// SIGTERM to `make dev`'s group) does not reach it directly: the owner stops its
/// processes in its own order through the lifelines (etcd stopped before
/// kube-apiserver left the API server retrying it for 30 s). The supervisor
/// survives such a signal (a trap) and keeps waiting for its child, so whoever
/// waits for the supervisor waits for the child.
const SUPERVISOR: &str = r#"
trap '' INT
trap ':' TERM
cleanup=$1; shift
exec 3<&0
setsid "$@" </dev/null &
child=$!
( trap '' TERM; while read -r _ <&3; do :; done; kill -TERM "$child" 2>/dev/null; sleep 5; kill -KILL "$child" 2>/dev/null ) &
watcher=$!
exec 3<&-
while :; do
  wait "$child"
  status=$?
  kill -0 "$child" 2>/dev/null || break
done
kill "$watcher" 2>/dev/null
if [ -n "$cleanup" ]; then rm -rf "$cleanup"; fi
exit $status
"#;

impl ControlPlane {
    /// Start etcd and kube-apiserver (and kube-controller-manager if asked) and
    /// wait until the apiserver is ready. Blocking; takes about two seconds.
    pub fn start(options: Options) -> Result<ControlPlane> {
        let started = Instant::now();
        let bin_dir = binaries(options.checkout.as_deref())?;
        let dir = match &options.dir {
            Some(d) => {
                fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
                d.clone()
            }
            None => tempfile::Builder::new()
                .prefix("signoff-cp-")
                .tempdir()
                .map_err(io("creating a temporary directory"))?
                .keep(),
        };

        let ca = Ca::new("signoff-local-ca", 365)?;
        let mut addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(KUBERNETES_SERVICE_IP)];
        addresses.extend(options.node_address.map(IpAddr::V4));
        let serving = ca.issue_server(
            "kube-apiserver",
            &["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
            &addresses,
            365,
        )?;
        let admin_cert = ca.issue_client(ADMIN, &["system:masters"], 365)?;
        let sa_key = rcgen::KeyPair::generate()?;
        let files = [
            ("ca.crt", ca.cert_pem().to_string()),
            ("apiserver.crt", serving.cert_pem.clone()),
            ("apiserver.key", serving.key_pem.clone()),
            ("admin.crt", admin_cert.cert_pem.clone()),
            ("admin.key", admin_cert.key_pem.clone()),
            ("sa.key", sa_key.serialize_pem()),
            ("sa.pub", sa_key.public_key_pem()),
        ];
        for (name, contents) in &files {
            write(&dir.join(name), contents)?;
        }

        let mut tokens = Vec::new();
        let mut token_file = String::new();
        for user in USERS.iter().filter(|u| u.name != ADMIN) {
            let token = random_token()?;
            token_file.push_str(&format!("{},{},{},\"{}\"\n", token, user.name, user.uid(), user.groups.join(",")));
            tokens.push((user.name, token));
        }
        write(&dir.join("tokens.csv"), &token_file)?;

        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let api_port = free_port()?;
        let server = format!("https://127.0.0.1:{api_port}");

        let mut cp = ControlPlane {
            dir: dir.clone(),
            bin_dir: bin_dir.clone(),
            server: server.clone(),
            ca,
            admin_cert,
            kubeconfig: dir.join("kubeconfig"),
            tokens,
            service_account_key: dir.join("sa.key"),
            processes: Vec::new(),
            keep_dir: options.keep_dir,
            version: String::new(),
        };
        cp.write_kubeconfig(&cp.kubeconfig, "admin")?;

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let d = |name: &str| dir.join(name).display().to_string();
        cp.spawn(
            "etcd",
            &[
                "--data-dir",
                &d("etcd"),
                "--listen-client-urls",
                &etcd_url,
                "--advertise-client-urls",
                &etcd_url,
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{peer_port}"),
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
            // The etcd supervisor removes the working directory when the owner goes away.
            if options.keep_dir || options.dir.is_some() { None } else { Some(&dir) },
        )?;
        cp.wait_for("etcd", Duration::from_secs(30), |_| {
            Ok(std::net::TcpStream::connect(("127.0.0.1", etcd_port)).is_ok())
        })?;

        // With a node, pods reach the API server through the node's address and get
        // ServiceAccount tokens mounted. In a network namespace of its own with only
        // loopback (tests/gitops_argocd_e2e.rs) it must be told its address, and
        // Endpoints cannot hold a loopback one.
        let private_netns = std::env::var_os("SIGNOFF_PRIVATE_NETNS").is_some();
        let (bind, admission, network_flags): (_, _, Vec<String>) = match options.node_address {
            Some(node) => {
                ("0.0.0.0", "--disable-admission-plugins=", vec!["--advertise-address".into(), node.to_string()])
            }
            None => (
                "127.0.0.1",
                "--disable-admission-plugins=ServiceAccount",
                if private_netns {
                    ["--advertise-address", "127.0.0.1", "--endpoint-reconciler-type", "none"].map(String::from).into()
                } else {
                    Vec::new()
                },
            ),
        };
        let authentication: Vec<String> = match &options.authentication_config {
            Some(path) => vec![format!("--authentication-config={}", path.display())],
            None => Vec::new(),
        };
        cp.spawn(
            "kube-apiserver",
            &[
                "--etcd-servers",
                &etcd_url,
                "--bind-address",
                bind,
                "--secure-port",
                &api_port.to_string(),
                "--tls-cert-file",
                &d("apiserver.crt"),
                "--tls-private-key-file",
                &d("apiserver.key"),
                "--client-ca-file",
                &d("ca.crt"),
                "--service-cluster-ip-range",
                "10.96.0.0/16",
                "--service-account-issuer",
                "https://kubernetes.default.svc",
                "--service-account-key-file",
                &d("sa.pub"),
                "--service-account-signing-key-file",
                &d("sa.key"),
                "--authorization-mode",
                "RBAC",
                "--token-auth-file",
                &d("tokens.csv"),
                admission,
                "--allow-privileged",
                "--v",
                "1",
            ]
            .iter()
            .copied()
            .chain(network_flags.iter().map(String::as_str))
            .chain(authentication.iter().map(String::as_str))
            .collect::<Vec<_>>(),
            None,
        )?;
        cp.wait_for("kube-apiserver", Duration::from_secs(60), |cp| {
            let out = cp.kubectl(ADMIN).args(["get", "--raw", "/readyz"]).output();
            Ok(matches!(out, Ok(o) if o.status.success() && o.stdout.starts_with(b"ok")))
        })?;

        if options.controller_manager {
            cp.spawn(
                "kube-controller-manager",
                &[
                    "--kubeconfig",
                    &d("kubeconfig"),
                    "--authentication-kubeconfig",
                    &d("kubeconfig"),
                    "--authorization-kubeconfig",
                    &d("kubeconfig"),
                    "--service-account-private-key-file",
                    &d("sa.key"),
                    "--root-ca-file",
                    &d("ca.crt"),
                    "--use-service-account-credentials=false",
                    "--leader-elect=false",
                    "--bind-address",
                    "127.0.0.1",
                    "--secure-port",
                    "0",
                    "--controllers",
                    "*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service-lb-controller,-route",
                ],
                None,
            )?;
        }

        let version = cp.kubectl(ADMIN).args(["get", "--raw", "/version"]).output().map_err(io("running kubectl"))?;
        let version: serde_json::Value = serde_json::from_slice(&version.stdout)?;
        cp.version = version["gitVersion"].as_str().unwrap_or("unknown").to_string();
        eprintln!(
            "control plane: real kube-apiserver {} + etcd at {} ready in {:.1}s (dir {})",
            cp.version,
            cp.server,
            started.elapsed().as_secs_f64(),
            cp.dir.display()
        );
        Ok(cp)
    }

    /// The control plane shared by every test in one test binary.
    pub fn shared() -> &'static ControlPlane {
        ControlPlane::shared_with(Options::default)
    }

    /// The shared control plane, started with `options()` if this is the first
    /// call in the test binary (a binary that needs options calls this before
    /// anything calls [`ControlPlane::shared`]).
    pub fn shared_with(options: impl FnOnce() -> Options) -> &'static ControlPlane {
        static SHARED: OnceLock<ControlPlane> = OnceLock::new();
        SHARED.get_or_init(|| ControlPlane::start(options()).unwrap_or_else(|e| panic!("{e}")))
    }

    fn spawn(&mut self, name: &'static str, args: &[&str], cleanup: Option<&Path>) -> Result<()> {
        let log = self.dir.join(format!("{name}.log"));
        let program = self.bin_dir.join(name);
        let process = Supervised::spawn(name, &program, args, &[], &log, cleanup)?;
        self.processes.push(Process { name, process });
        Ok(())
    }

    /// Poll `ready` until it says yes; fail early, with the log, if a process died.
    fn wait_for(&mut self, what: &str, timeout: Duration, mut ready: impl FnMut(&Self) -> Result<bool>) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready(self)? {
                return Ok(());
            }
            let exited = self.processes.iter_mut().find_map(|p| Some((p.name, p.process.exited()?)));
            if let Some((name, status)) = exited {
                return Err(Error::ControlPlane(format!(
                    "{name} exited ({status}) while waiting for {what}; last lines of its log:\n{}",
                    self.log_tail(name, 20)
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::ControlPlane(format!(
                    "{what} not ready after {}s; last lines of {}:\n{}",
                    timeout.as_secs(),
                    self.dir.join(format!("{what}.log")).display(),
                    self.log_tail(what, 20)
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The pid of a component ("etcd", "kube-apiserver"), e.g. to read its CPU time.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.processes.iter().find(|p| p.name == name)?.process.program_pid()
    }

    /// The last `lines` lines of a component's log.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        tail(&fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default(), lines)
    }

    /// Install signoff's CRDs (server-side apply) and wait until they are Established.
    pub fn install_crds(&self) -> Result<()> {
        let crds = signoff::crd::crds_yaml();
        let (ok, _, err) = self.kubectl_run(ADMIN, &["apply", "--server-side", "-f", "-"], Some(&crds))?;
        if !ok {
            return Err(Error::ControlPlane(format!("installing the CRDs failed:\n{err}")));
        }
        let names: Vec<String> = signoff::crd::all_crds().into_iter().filter_map(|c| c.metadata.name).collect();
        self.wait_established(&names.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Waits up to 60 s until the CustomResourceDefinitions named (every one when
    /// `names` is empty) are Established. It polls: `kubectl wait` fails at once
    /// ("<nil> is of the type <nil>") on a CRD the API server has not given a
    /// status yet.
    pub fn wait_established(&self, names: &[&str]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (ok, out, err) = self.kubectl_run(ADMIN, &["get", "crd", "-o", "json"], None)?;
            let waiting = if ok { not_established(&out, names) } else { vec![err] };
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::ControlPlane(format!("CRDs not Established after 60 s: {}", waiting.join(", "))));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Run `signoff run` (the binary at `program`) out of cluster as its
    /// ServiceAccount, its webhook registered at https://127.0.0.1:PORT over TLS,
    /// and wait until the API server calls it: a server dry run of `probe` (a
    /// change the installed policies hold) by alice comes back with signoff's
    /// "would be held" warning. Returns the process and the health base URL.
    pub fn start_signoff(
        &self,
        program: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
        probe: &str,
        timeout: Duration,
    ) -> Result<(Supervised, String)> {
        let (port, health) = (free_port()?, free_port()?);
        let (addr, url) = (format!("127.0.0.1:{port}"), format!("https://127.0.0.1:{port}/validate"));
        let health = format!("127.0.0.1:{health}");
        let context = context_of(CONTROLLER);
        let mut args = vec!["run", "--context", context, "--webhook-addr", &addr, "--webhook-url", &url];
        args.extend(["--health-addr", &health, "--tls-ip", "127.0.0.1"]);
        args.extend_from_slice(extra_args);
        let kubeconfig = self.kubeconfig.display().to_string();
        let env = [&[("KUBECONFIG", kubeconfig.as_str())][..], env].concat();
        let mut process = Supervised::spawn("signoff", program, &args, &env, log, None)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = process.exited() {
                let text = fs::read_to_string(log).unwrap_or_default();
                return Err(Error::ControlPlane(format!(
                    "signoff exited ({status}); last lines of {}:\n{}",
                    log.display(),
                    tail(&text, 15)
                )));
            }
            let (ok, _, err) = self.kubectl_run("alice", &["apply", "--dry-run=server", "-f", "-"], Some(probe))?;
            if ok && err.contains("would be held") {
                return Ok((process, format!("http://{health}")));
            }
            if Instant::now() > deadline {
                return Err(Error::ControlPlane(format!(
                    "signoff's webhook did not answer within {}s; see {}",
                    timeout.as_secs(),
                    log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The static token of a user (not the admin, who uses a client certificate).
    pub fn token(&self, user: &str) -> Option<&str> {
        self.tokens.iter().find(|(u, _)| *u == user).map(|(_, t)| t.as_str())
    }

    /// Write a kubeconfig with one context per user, named after the user.
    pub fn write_kubeconfig(&self, path: &Path, current: &str) -> Result<()> {
        let cluster = "signoff-local";
        let mut users = Vec::new();
        let mut contexts = Vec::new();
        for user in USERS {
            let auth = if user.name == ADMIN {
                serde_json::json!({
                    "client-certificate-data": b64(&self.admin_cert.cert_pem),
                    "client-key-data": b64(&self.admin_cert.key_pem),
                })
            } else {
                serde_json::json!({ "token": self.token(user.name).unwrap_or_default() })
            };
            users.push(serde_json::json!({ "name": user.name, "user": auth }));
            contexts.push(serde_json::json!({
                "name": user.context(),
                "context": { "cluster": cluster, "user": user.name, "namespace": "default" },
            }));
        }
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": cluster, "cluster": {
                "server": self.server,
                "certificate-authority-data": b64(self.ca.cert_pem()),
            }}],
            "users": users,
            "contexts": contexts,
            "current-context": current,
        });
        write(path, &serde_yaml::to_string(&config)?)
    }

    /// `kubectl` (the one built with the control plane) acting as `user`.
    pub fn kubectl(&self, user: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).arg("--context").arg(users::context_of(user));
        cmd
    }

    /// Run kubectl as `user` with stdin, returning (success, stdout, stderr).
    pub fn kubectl_run(&self, user: &str, args: &[&str], stdin: Option<&str>) -> Result<(bool, String, String)> {
        let mut cmd = self.kubectl(user);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(io("running kubectl"))?;
        let mut input = child.stdin.take().expect("stdin is piped");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).map_err(io("writing kubectl's stdin"))?;
        }
        drop(input);
        let out = child.wait_with_output().map_err(io("waiting for kubectl"))?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// A kube client acting as `user`. Create one per tokio runtime (per test).
    pub async fn client(&self, user: &str) -> Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let options = kube::config::KubeConfigOptions {
            context: Some(users::context_of(user).to_string()),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Stop every process (also done on drop).
    pub fn stop(&mut self) {
        // Close every lifeline first so the processes stop in parallel.
        for p in &mut self.processes {
            p.process.lifeline.take();
        }
        for mut p in self.processes.drain(..).rev() {
            p.process.stop();
        }
        if !self.keep_dir {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The CRDs of a `kubectl get crd -o json` list that are not Established, of
/// `names` (every one listed when empty); a name not listed counts as waiting.
fn not_established(list: &str, names: &[&str]) -> Vec<String> {
    let list: serde_json::Value = serde_json::from_str(list).unwrap_or_default();
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let established = |crd: &serde_json::Value| {
        crd["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Established" && c["status"] == "True"))
    };
    let name = |crd: &serde_json::Value| crd["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let mut waiting: Vec<String> = items
        .iter()
        .filter(|crd| names.is_empty() || names.contains(&name(crd).as_str()))
        .filter(|crd| !established(crd))
        .map(name)
        .collect();
    let listed: Vec<String> = items.iter().map(name).collect();
    waiting.extend(names.iter().filter(|n| !listed.iter().any(|l| l == *n)).map(|n| format!("{n} (not found)")));
    waiting
}

#[cfg(test)]
mod crd_wait_tests {
    use super::not_established;

    #[test]
    fn a_crd_without_a_status_or_not_listed_is_still_waited_for() {
        let list = serde_json::json!({"items": [
            {"metadata": {"name": "a.example.com"},
             "status": {"conditions": [{"type": "Established", "status": "True"}]}},
            {"metadata": {"name": "b.example.com"}},
            {"metadata": {"name": "c.example.com"},
             "status": {"conditions": [{"type": "Established", "status": "False"}]}},
        ]})
        .to_string();
        assert_eq!(not_established(&list, &[]), ["b.example.com", "c.example.com"]);
        assert!(not_established(&list, &["a.example.com"]).is_empty());
        assert_eq!(not_established(&list, &["a.example.com", "d.example.com"]), ["d.example.com (not found)"]);
    }
}
