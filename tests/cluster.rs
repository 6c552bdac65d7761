//! Issue 22: signoff installed by its chart onto a real single-node cluster and
//! served from its pods (`make test-cluster`, part of `make test`).
//!
//! The node is real: kubelet, kube-scheduler and kube-proxy built from Go modules
//! (hack/node), Debian's containerd, runc and CNI bridge; the image is
//! `make image`'s OCI archive, imported into containerd (nothing is pulled). The
//! API server reaches the webhook through the chart's Service (ClusterIP, routed by
//! kube-proxy's iptables rules), and the pods reach the API server through the
//! `kubernetes` Service.
//!
//! Everything runs in namespaces of its own (`unshare -n -m -p`): a network
//! namespace with loopback, a bridge without ports for the node's address (10.200.0.1)
//! and the pods' bridge, nothing that leads out; a mount namespace for the
//! kubelet's and containerd's mounts; a PID namespace whose end stops every
//! container. Builds and package installs happen before entering them.

mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::approvals::held_ref;
use common::gitops::{checkout as root, script};
use serde_json::Value;
use signoff_testenv::{ADMIN, ControlPlane, Options, Supervised, tail};

const TEST: &str = "the_chart_installs_and_serves_from_pods_on_a_real_node";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const RELEASE_NS: &str = "signoff-system";
/// The chart's default image repository; the tag is the crate version (appVersion).
const IMAGE: &str = "ghcr.io/signoff-dev/signoff";

#[test]
fn the_chart_installs_and_serves_from_pods_on_a_real_node() {
    if std::env::var_os("SIGNOFF_NODE_NETNS").is_some() {
        return inside();
    }
    // Outside: everything that needs the network or a compiler, then the test again
    // in its own namespaces.
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "a kubelet and containerd need root: run make test-cluster as root"
    );
    script("hack/node/deps.sh", &[]);
    script("hack/node/build.sh", &[]);
    script("hack/controlplane/build.sh", &[]);
    let helm = script("hack/helm/build.sh", &[]);
    let image = script("hack/image/build.sh", &[]);
    let dir = tempfile::Builder::new().prefix("signoff-cluster-").tempdir().unwrap();
    let setup = format!(
        "ip link set lo up && ip link add signoff-node type bridge && ip addr add {NODE_IP}/24 dev signoff-node \
         && ip link set signoff-node up && ip route add default dev signoff-node && exec \"$@\""
    );
    let status = Command::new("unshare")
        .args(["--net", "--mount", "--pid", "--fork", "--mount-proc", "--", "sh", "-c", &setup, "sh"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture"])
        .env("SIGNOFF_NODE_NETNS", "1")
        .env("SIGNOFF_CLUSTER_DIR", dir.path())
        .env("SIGNOFF_HELM", &helm)
        .env("SIGNOFF_IMAGE", &image)
        .status()
        .expect("unshare runs");
    assert!(status.success(), "the cluster test in its own namespaces failed (see above; work dir {:?})", dir.keep());
}

struct Cluster {
    cp: ControlPlane,
    dir: PathBuf,
    helm: String,
    _node: Supervised,
}

impl Cluster {
    fn kubectl(&self, user: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        self.cp.kubectl_run(user, args, stdin).expect("kubectl runs")
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out, err) = self.kubectl(ADMIN, args, stdin);
        assert!(ok, "kubectl {} failed:\n{err}\n{}", args.join(" "), self.pod_logs());
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all, None)).unwrap()
    }

    fn helm(&self, args: &[&str]) -> String {
        let out = Command::new(&self.helm)
            .args(args)
            .args(["--kubeconfig", &self.cp.kubeconfig.display().to_string(), "--kube-context", ADMIN])
            .current_dir(root())
            .output()
            .expect("helm runs");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert!(
            out.status.success(),
            "helm {} failed:\n{}{}\n{}",
            args.join(" "),
            text(&out.stdout),
            text(&out.stderr),
            self.pod_logs()
        );
        text(&out.stdout)
    }

    /// The last lines of every signoff container's log (the kubelet writes them
    /// under the node directory), for failure messages.
    fn pod_logs(&self) -> String {
        let mut text = String::new();
        let logs = self.dir.join("node/pod-logs");
        for pod in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
            let name = pod.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&format!("{RELEASE_NS}_")) {
                continue;
            }
            for file in std::fs::read_dir(pod.path().join("signoff")).into_iter().flatten().flatten() {
                let log = std::fs::read_to_string(file.path()).unwrap_or_default();
                text.push_str(&format!("--- {name}/{}\n{}\n", file.file_name().to_string_lossy(), tail(&log, 15)));
            }
        }
        text
    }

    fn eventually<T>(&self, secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out after {secs}s waiting for {what}\n{}", self.pod_logs());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The signoff pods that are Ready, by name.
    fn ready_pods(&self) -> Vec<String> {
        let pods = self.json(&["get", "pods", "-n", RELEASE_NS, "-l", "app.kubernetes.io/name=signoff"]);
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            })
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// The leader Lease's holder.
    fn leader(&self) -> Option<String> {
        let (ok, out, _) = self.kubectl(
            ADMIN,
            &["get", "lease", "-n", RELEASE_NS, "signoff-leader", "-o", "jsonpath={.spec.holderIdentity}"],
            None,
        );
        (ok && !out.trim().is_empty()).then(|| out.trim().to_string())
    }

    /// After an install: three Ready replicas, exactly one of them leading.
    fn three_ready_one_leader(&self) -> (Vec<String>, String) {
        let pods = self.eventually(180, "three Ready signoff pods", || {
            let pods = self.ready_pods();
            (pods.len() == 3).then_some(pods)
        });
        let leader = self.eventually(60, "a leader among the pods", || self.leader().filter(|l| pods.contains(l)));
        (pods, leader)
    }

    /// The webhook configuration sends to the chart's Service, port 443, with a caBundle.
    fn webhook_points_at_the_service(&self, name: &str) -> Value {
        let vwc = self.eventually(60, "the webhook configuration with a caBundle", || {
            let (ok, out, _) =
                self.kubectl(ADMIN, &["get", "validatingwebhookconfiguration", name, "-o", "json"], None);
            let vwc: Value = if ok { serde_json::from_str(&out).ok()? } else { return None };
            let bundle = vwc["webhooks"][0]["clientConfig"]["caBundle"].as_str().unwrap_or_default();
            (!bundle.is_empty()).then_some(vwc)
        });
        for webhook in vwc["webhooks"].as_array().unwrap() {
            let service = &webhook["clientConfig"]["service"];
            assert_eq!(service["namespace"], RELEASE_NS, "{webhook}");
            assert_eq!(service["name"], "signoff-webhook", "{webhook}");
            assert_eq!(service["port"], 443, "{webhook}");
            assert!(webhook["clientConfig"]["url"].is_null(), "{webhook}");
        }
        vwc
    }

    /// Apply `manifest` as `user` until the webhook answers (the API server has
    /// loaded the configuration and reaches a pod through the Service); returns
    /// the refusal's message.
    fn held(&self, user: &str, manifest: &str) -> String {
        self.eventually(60, "the webhook to hold a change", || {
            let (ok, out, err) = self.kubectl(user, &["create", "-f", "-"], Some(manifest));
            assert!(!ok, "a change the policy holds was admitted: {out}");
            err.contains("held for approval").then_some(err)
        })
    }

    /// Writes the webhook sees and admits, one after another, until `stop`:
    /// (admitted, refused with the refusals).
    fn write_until(&self, ns: &str, prefix: &str, stop: &std::sync::atomic::AtomicBool) -> (u32, Vec<String>) {
        let (mut n, mut refused) = (0, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let name = format!("{prefix}-{n}");
            let (ok, _, err) = self.kubectl("alice", &["create", "configmap", &name, "-n", ns], None);
            if !ok {
                refused.push(err.trim().to_string());
            }
            n += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        (n - refused.len() as u32, refused)
    }
}

/// The walk's policy and people: ConfigMaps labelled `hold: "yes"` in namespaces
/// labelled `signoff.dev/cluster-walk` are held for team walk (owner dave, on-call
/// bob, lead carol), escalating every 10 seconds.
const WALK: &str = r#"apiVersion: signoff.dev/v1alpha1
kind: Team
metadata: {name: walk}
spec:
  members: {users: [alice, dave]}
  lead: carol
  onCall: {rotation: [bob], shiftLength: 24h, handoff: "2026-01-01T00:00:00", timeZone: UTC}
  secondaryTeam: walk-platform
---
apiVersion: signoff.dev/v1alpha1
kind: Team
metadata: {name: walk-platform}
spec:
  members: {users: [ivan]}
  lead: ivan
---
apiVersion: signoff.dev/v1alpha1
kind: EscalationPolicy
metadata: {name: cluster-walk}
spec:
  match:
    rules: [{operations: [CREATE, UPDATE], apiGroups: [""], apiVersions: [v1], resources: [configmaps]}]
    namespaceSelector: {matchLabels: {signoff.dev/cluster-walk: "true"}}
  adminTeam: walk-platform
  routes:
  - {name: engineering}
  actionClasses:
    routine: {tierTimeout: 10s, notify: Sequential}
  rules:
  - name: held-configmap
    expression: "has(object.metadata.labels) && 'hold' in object.metadata.labels"
    risk: High
    route: engineering
    message: a ConfigMap labelled hold
---
apiVersion: v1
kind: Namespace
metadata:
  name: walk
  labels: {signoff.dev/cluster-walk: "true", signoff.dev/owner: walk}
"#;

fn inside() {
    let dir = PathBuf::from(std::env::var("SIGNOFF_CLUSTER_DIR").unwrap());
    let started = Instant::now();
    let cp = ControlPlane::start(Options {
        controller_manager: true,
        node_address: Some(NODE_IP),
        dir: Some(dir.join("controlplane")),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let image = std::env::var("SIGNOFF_IMAGE").unwrap();
    let node_dir = dir.join("node");
    let node = Supervised::spawn(
        "node",
        &root().join("hack/node/start.sh"),
        &[&cp.kubeconfig.display().to_string(), &node_dir.display().to_string(), &image, IMAGE],
        &[("NODE_IP", &NODE_IP.to_string())],
        &dir.join("node.log"),
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let c = Cluster { cp, dir: dir.clone(), helm: std::env::var("SIGNOFF_HELM").unwrap(), _node: node };
    c.eventually(120, "node signoff-node Ready without the not-ready taint", || {
        let node = c.kubectl(ADMIN, &["get", "node", "signoff-node", "-o", "json"], None);
        let node: Value = serde_json::from_str(&node.1).ok()?;
        let ready =
            node["status"]["conditions"].as_array()?.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
        let tainted = node["spec"]["taints"].as_array().is_some_and(|t| !t.is_empty());
        (ready && !tainted).then_some(())
    });
    eprintln!("cluster: node Ready {:.0}s after start", started.elapsed().as_secs_f64());

    default_values_walk(&c);
    chart_owned_webhook_with_a_secret(&c);
}

/// `helm install` with default values (signoff writes its webhook configuration and
/// manages its TLS), then the user walk, a leader kill, an upgrade and an uninstall.
fn default_values_walk(c: &Cluster) {
    let demo = root().join("examples/demo/02-people-rbac.yaml");
    c.ok(&["apply", "-f", &demo.display().to_string()], None);
    let t = Instant::now();
    c.helm(&["install", "signoff", "charts/signoff", "--namespace", RELEASE_NS, "--create-namespace"]);
    let (pods, leader) = c.three_ready_one_leader();
    eprintln!("cluster: helm install -> 3 Ready replicas in {:.0}s; leader {leader}", t.elapsed().as_secs_f64());
    let lease = c.json(&["get", "lease", "-n", RELEASE_NS, "signoff-leader"]);
    assert!(pods.contains(&lease["spec"]["holderIdentity"].as_str().unwrap().to_string()));

    // The walk's policy: EscalationPolicies are guarded by the webhook, which the
    // API server reaches once kube-proxy has the Service's endpoints.
    let t = Instant::now();
    c.eventually(60, "the webhook to admit the walk's policy", || {
        let (ok, _, err) = c.kubectl(ADMIN, &["apply", "-f", "-"], Some(WALK));
        assert!(ok || err.contains("failed calling webhook"), "{err}");
        ok.then_some(())
    });
    eprintln!(
        "cluster: the API server reached the webhook through the Service {:.1}s after Ready",
        t.elapsed().as_secs_f64()
    );
    let vwc = c.webhook_points_at_the_service("signoff");
    let owners = &vwc["metadata"]["ownerReferences"];
    assert_eq!(owners[0]["kind"], "ClusterRole", "{owners}");
    assert_eq!(owners[0]["name"], "signoff-controller", "{owners}");

    // A held change, an approval, the identical apply admitted.
    let change = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: walk-change\n  namespace: walk\n  labels: {hold: \"yes\"}\ndata: {replicas: \"5\"}\n";
    let (ns, name) = held_ref(&c.held("alice", change));
    let (ns, name) = (ns.as_str(), name.as_str());
    c.eventually(30, "the leader to open the request's lanes", || {
        let ar = c.json(&["get", "ar", "-n", ns, name]);
        ar["status"]["lanes"].as_array().is_some_and(|l| !l.is_empty()).then_some(())
    });
    let approve = Command::new(env!("CARGO_BIN_EXE_kubectl-signoff"))
        .args(["approve", name, "-n", ns, "--comment", "cluster walk"])
        .args(["--kubeconfig", &c.cp.kubeconfig.display().to_string(), "--context", "dave"])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert!(approve.status.success(), "kubectl signoff approve: {}", String::from_utf8_lossy(&approve.stderr));
    c.eventually(30, "the request to be Approved", || {
        (c.json(&["get", "ar", "-n", ns, name])["status"]["phase"] == "Approved").then_some(())
    });
    let (ok, _, err) = c.kubectl("alice", &["create", "-f", "-"], Some(change));
    assert!(ok, "the approved change was refused: {err}\n{}", c.pod_logs());

    // Kill the leader pod: SIGKILL its container (no chance to release the Lease),
    // then delete the pod so it does not come back under the same identity. Another
    // replica takes the Lease once it expires and escalation goes on there: a
    // second request climbs a tier after the takeover.
    let second = change.replace("walk-change", "walk-second");
    let name2 = held_ref(&c.held("alice", &second)).1;
    let tier = |c: &Cluster| c.json(&["get", "ar", "-n", "walk", &name2])["status"]["lanes"][0]["tier"].as_u64();
    c.eventually(30, "the second request's lanes", || tier(c));
    let leader = c.leader().unwrap();
    let pod = c.json(&["get", "pod", "-n", RELEASE_NS, &leader]);
    let container = pod["status"]["containerStatuses"][0]["containerID"].as_str().unwrap().replace("containerd://", "");
    let killed = Instant::now();
    let kill = Command::new("ctr")
        .args(["-a", &c.dir.join("node/containerd.sock").display().to_string(), "-n", "k8s.io"])
        .args(["tasks", "kill", "--signal", "SIGKILL", &container])
        .output()
        .unwrap();
    assert!(kill.status.success(), "ctr tasks kill: {}", String::from_utf8_lossy(&kill.stderr));
    c.ok(&["delete", "pod", "-n", RELEASE_NS, &leader, "--grace-period=0", "--force", "--wait=false"], None);
    let next = c.eventually(60, "another replica to take the Lease", || c.leader().filter(|l| *l != leader));
    let took_over = killed.elapsed();
    let at_takeover = tier(c).unwrap();
    assert!(at_takeover < 5, "the request reached its last tier before the takeover");
    c.eventually(30, "the second request to climb a tier under the new leader", || {
        (tier(c)? > at_takeover).then_some(())
    });
    eprintln!(
        "cluster: leader {leader} killed (SIGKILL, pod deleted); {next} leads after {:.1}s, escalation stepped after {:.1}s",
        took_over.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    c.three_ready_one_leader();

    // helm upgrade with a changed value rolls every pod while writes go on: none refused.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let t = Instant::now();
    let ((admitted, refused), ()) = std::thread::scope(|s| {
        let writer = s.spawn(|| c.write_until("walk", "during-upgrade", &stop));
        c.helm(&["upgrade", "signoff", "charts/signoff", "--namespace", RELEASE_NS, "--set", "logLevel=debug"]);
        c.ok(&["rollout", "status", "deployment/signoff", "-n", RELEASE_NS, "--timeout=180s"], None);
        // A few more writes once the old pods are gone.
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (writer.join().unwrap(), ())
    });
    let (after, leader) = c.three_ready_one_leader();
    assert!(after.iter().all(|p| !pods.contains(p)), "every pod replaced: {pods:?} -> {after:?}");
    assert!(refused.is_empty(), "writes refused during the upgrade: {refused:#?}\n{}", c.pod_logs());
    assert!(admitted >= 20, "only {admitted} writes during the upgrade");
    eprintln!(
        "cluster: helm upgrade rolled 3 pods in {:.0}s; {admitted} writes through the webhook meanwhile, none refused; leader {leader}",
        t.elapsed().as_secs_f64()
    );

    // helm uninstall: the garbage collector deletes the webhook configuration with
    // its owner, and writes go through again.
    let t = Instant::now();
    c.helm(&["uninstall", "signoff", "--namespace", RELEASE_NS, "--wait"]);
    c.eventually(60, "the webhook configuration to be deleted", || {
        let (ok, _, err) = c.kubectl(ADMIN, &["get", "validatingwebhookconfiguration", "signoff"], None);
        (!ok && err.contains("NotFound")).then_some(())
    });
    let (ok, _, err) =
        c.kubectl("alice", &["create", "-f", "-"], Some(&change.replace("walk-change", "after-uninstall")));
    assert!(ok, "a write after helm uninstall was refused: {err}");
    eprintln!(
        "cluster: helm uninstall -> webhook configuration gone, writes admitted, in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    // The CRDs stay (crds.keep), and with them the walk's objects.
    c.ok(&["get", "crd", "approvalrequests.signoff.dev"], None);
}

/// `webhook.managedBy: chart` with the serving certificate in a Secret: the chart
/// renders the webhook configuration; the API server reaches the pods through the
/// Service with that certificate.
fn chart_owned_webhook_with_a_secret(c: &Cluster) {
    let ca = signoff::tls::certs::Ca::new("cluster-walk-ca", 30).unwrap();
    let serving = ca.issue_server("signoff-webhook", &["signoff-webhook.signoff-system.svc"], &[], 30).unwrap();
    let (crt, key) = (c.dir.join("tls.crt"), c.dir.join("tls.key"));
    std::fs::write(&crt, &serving.cert_pem).unwrap();
    std::fs::write(&key, &serving.key_pem).unwrap();
    c.ok(
        &["create", "secret", "tls", "signoff-walk-tls", "-n", RELEASE_NS]
            .iter()
            .copied()
            .chain(["--cert", crt.to_str().unwrap(), "--key", key.to_str().unwrap()])
            .collect::<Vec<_>>(),
        None,
    );
    use base64::Engine as _;
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca.cert_pem());
    let t = Instant::now();
    c.helm(&[
        "install",
        "signoff",
        "charts/signoff",
        "--namespace",
        RELEASE_NS,
        "--set",
        "webhook.managedBy=chart",
        "--set",
        "tls.source=secret",
        "--set",
        "tls.secretName=signoff-walk-tls",
        "--set",
        &format!("tls.caBundle={bundle}"),
    ]);
    let (_, leader) = c.three_ready_one_leader();
    eprintln!(
        "cluster: managedBy=chart, TLS from a Secret: 3 Ready in {:.0}s; leader {leader}",
        t.elapsed().as_secs_f64()
    );
    let vwc = c.webhook_points_at_the_service("signoff");
    assert_eq!(vwc["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm", "the chart owns it");
    let change = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: chart-mode\n  namespace: walk\n  labels: {hold: \"yes\"}\n";
    let err = c.held("alice", change);
    assert!(err.contains("walk"), "{err}");
    c.helm(&["uninstall", "signoff", "--namespace", RELEASE_NS, "--wait"]);
    c.eventually(30, "writes to go through after uninstall", || {
        let (ok, _, _) = c.kubectl("alice", &["create", "configmap", "after-chart-mode", "-n", "walk"], None);
        ok.then_some(())
    });
}
