//! Section 1: writes through the real API server, the groups interleaved in one
//! run, at a steady 100 writes/s (open loop: latency from the scheduled time) and
//! at the highest rate the machine sustains (closed loop, a few writers).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::env::{Env, NS_KYVERNO, NS_NONE, NS_NOOP, NS_SIGNOFF};
use super::stats::{Samples, Table};

const SECTION: &str = "1 through the API server";

/// One group of writes: its namespace and its own sequence of operations.
struct Group {
    name: &'static str,
    ns: &'static str,
    next: AtomicU64,
}

/// Writes in the same group refer to earlier ones: an update targets the object
/// created this many operations before (long finished, even with many writers).
const UPDATE_LAG: u64 = 101;

fn configmap(ns: &str, name: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "bench", "app.kubernetes.io/part-of": "checkout"}},
        "data": {"LOG_LEVEL": "info", "REGION": "eu-west-1", "FEATURE_FLAGS": "a,b,c", "TIMEOUT": "30s", "v": "0"}
    }))
    .unwrap()
}

fn deployment(ns: &str, name: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "bench", "app.kubernetes.io/part-of": "checkout"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {"name": "web", "image": "registry.example.com/payments/web:1.4.2",
                     "ports": [{"containerPort": 8080, "name": "http"}],
                     "env": [{"name": "LOG_LEVEL", "value": "info"}],
                     "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "200m", "memory": "256Mi"}}},
                    {"name": "envoy", "image": "envoyproxy/envoy:v1.31.0",
                     "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}}
                ]}
            }
        }
    }))
    .unwrap()
}

/// The `j`-th write of a group: creates of ConfigMaps and Deployments, and
/// updates (merge patches) of ones created earlier, alternating.
async fn write(client: &kube::Client, ns: &str, prefix: &str, j: u64) -> Result<(), String> {
    let (create, index, deployment_kind) = operation(j);
    let name = format!("{prefix}-{index}");
    let pp = PostParams::default();
    let result = match (deployment_kind, create) {
        (false, true) => {
            Api::<ConfigMap>::namespaced(client.clone(), ns).create(&pp, &configmap(ns, &name)).await.map(drop)
        }
        (true, true) => {
            Api::<Deployment>::namespaced(client.clone(), ns).create(&pp, &deployment(ns, &name)).await.map(drop)
        }
        (false, false) => Api::<ConfigMap>::namespaced(client.clone(), ns)
            .patch(&name, &PatchParams::default(), &Patch::Merge(json!({"data": {"v": j.to_string()}})))
            .await
            .map(drop),
        (true, false) => Api::<Deployment>::namespaced(client.clone(), ns)
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"template": {"metadata": {"annotations": {"bench/rev": j.to_string()}}}}}),
                ),
            )
            .await
            .map(drop),
    };
    result.map_err(|e| format!("{} {ns}/{name}: {e}", if create { "create" } else { "update" }))
}

/// The `j`-th write of a group: whether it creates, the index of the object it
/// writes, whether that is a Deployment (else a ConfigMap).
fn operation(j: u64) -> (bool, u64, bool) {
    let (create, index) = if j < UPDATE_LAG || j.is_multiple_of(2) { (true, j) } else { (false, j - UPDATE_LAG) };
    (create, index, (index / 2) % 2 == 1)
}

/// What the `j`-th write of a group is, for the dump.
fn what(j: u64) -> &'static str {
    let (create, _, deployment) = operation(j);
    match (deployment, create) {
        (false, true) => "configmap-create",
        (true, true) => "deployment-create",
        (false, false) => "configmap-update",
        (true, false) => "deployment-update",
    }
}

struct Run {
    samples: Vec<Samples>,
    /// Every write past the warm-up, in order: index, group, what it wrote,
    /// latency in ms (tab-separated lines, for a closer look at the tail).
    dump: String,
    errors: Vec<String>,
    writes: usize,
    took: Duration,
}

fn groups(env: &Env) -> Vec<Arc<Group>> {
    let mut groups = vec![("no webhook", NS_NONE), ("do-nothing webhook", NS_NOOP), ("signoff", NS_SIGNOFF)];
    if env.kyverno.is_some() {
        groups.push(("Kyverno", NS_KYVERNO));
    }
    groups.into_iter().map(|(name, ns)| Arc::new(Group { name, ns, next: AtomicU64::new(0) })).collect()
}

/// Open loop: write `i` is due at start + i/rate, to group i mod n, and its
/// latency counts from then, so a slow answer delays nothing and hides nothing.
async fn open_loop(
    client: &kube::Client,
    groups: &[Arc<Group>],
    prefix: &str,
    rate: f64,
    writes: usize,
    warmup: usize,
) -> Run {
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..writes {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let g = groups[i % groups.len()].clone();
        let (client, prefix) = (client.clone(), prefix.to_string());
        let due = due.into_std();
        tasks.spawn(async move {
            let j = g.next.fetch_add(1, Ordering::Relaxed);
            let result = write(&client, g.ns, &prefix, j).await;
            (i, j, due.elapsed(), result)
        });
    }
    collect(tasks, groups.len(), warmup, start.into_std()).await
}

async fn collect(mut tasks: tokio::task::JoinSet<Done>, n: usize, warmup: usize, start: Instant) -> Run {
    let mut done = Vec::new();
    while let Some(d) = tasks.join_next().await {
        done.push(d.expect("write task"));
    }
    tally(done, n, warmup, start)
}

/// One write: its index, its index in its group, latency and outcome.
type Done = (usize, u64, Duration, Result<(), String>);

/// Latencies per group (write `i` belongs to group i mod n), past the warm-up.
fn tally(mut done: Vec<Done>, n: usize, warmup: usize, start: Instant) -> Run {
    let mut samples = vec![Samples::default(); n];
    let mut errors = Vec::new();
    let writes = done.len();
    let mut dump = String::new();
    done.sort_by_key(|d| d.0);
    for (i, j, latency, result) in done {
        match result {
            Ok(()) if i >= warmup => {
                samples[i % n].push(latency);
                dump += &format!("{i}\t{}\t{}\t{:.3}\n", i % n, what(j), latency.as_secs_f64() * 1000.0);
            }
            Ok(()) => {}
            Err(e) => errors.push(e),
        }
    }
    Run { samples, dump, errors, writes, took: start.elapsed() }
}

/// Closed loop: `writers` each write as soon as the last one is answered, groups
/// interleaved by a shared counter, for `seconds`.
async fn closed_loop(
    client: &kube::Client,
    groups: &[Arc<Group>],
    prefix: &str,
    writers: usize,
    seconds: u64,
    warmup: usize,
) -> Run {
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..writers {
        let (client, prefix, counter, groups) = (client.clone(), prefix.to_string(), counter.clone(), groups.to_vec());
        tasks.spawn(async move {
            let mut out = Vec::new();
            while Instant::now() < end {
                let i = counter.fetch_add(1, Ordering::Relaxed) as usize;
                let g = &groups[i % groups.len()];
                let j = g.next.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let result = write(&client, g.ns, &prefix, j).await;
                out.push((i, j, t.elapsed(), result));
            }
            out
        });
    }
    let mut done = Vec::new();
    while let Some(d) = tasks.join_next().await {
        done.extend(d.expect("writer task"));
    }
    tally(done, groups.len(), warmup, start)
}

fn report(table: &mut Table, groups: &[Arc<Group>], run: &Run, label: &str) -> Result<(), String> {
    if !run.errors.is_empty() {
        return Err(format!(
            "{} of {} writes failed ({label}); first: {}",
            run.errors.len(),
            run.writes,
            run.errors[0]
        ));
    }
    let rate = run.writes as f64 / run.took.as_secs_f64();
    table.info(SECTION, &format!("{label}: writes, achieved rate"), format!("{} writes, {rate:.0}/s", run.writes));
    let none = &run.samples[0];
    let noop = &run.samples[1];
    // Means move far less between runs than p99s (which sit on a few
    // machine-wide stalls): what each webhook adds on average, beside them.
    let names: Vec<&str> = groups.iter().map(|g| g.name).collect();
    let means: Vec<String> = run.samples.iter().map(|s| format!("{:.2}", s.mean_ms())).collect();
    table.info(SECTION, &format!("{label}: mean ms, {}", names.join(" / ")), means.join(" / "));
    for (g, s) in groups.iter().zip(&run.samples) {
        let cells: Vec<String> = [0.5, 0.99, 0.999].iter().map(|p| format!("{:.2}", s.ms(*p))).collect();
        let ratios: Vec<String> =
            [0.5, 0.99, 0.999].iter().map(|p| format!("{:.2}x", s.ms(*p) / none.ms(*p))).collect();
        if g.name == "no webhook" {
            table.info(SECTION, &format!("{label}: {} p50/p99/p99.9 ms (n={})", g.name, s.len()), cells.join(" / "));
            continue;
        }
        let figure = format!("{label}: {} p50/p99/p99.9 ms (n={})", g.name, s.len());
        let baseline = format!("no webhook {:.2}/{:.2}/{:.2}", none.ms(0.5), none.ms(0.99), none.ms(0.999));
        match g.name {
            "signoff" => {
                let ours = s.ms(0.99) / none.ms(0.99);
                let theirs = noop.ms(0.99) / none.ms(0.99);
                table.row(
                    SECTION,
                    &figure,
                    cells.join(" / "),
                    baseline,
                    format!("{}; p99 ratio / do-nothing's {:.3}", ratios.join(" / "), ours / theirs),
                    "p99 ratio <= 1.05x the do-nothing webhook's",
                    Some(ours <= 1.05 * theirs),
                );
            }
            "Kyverno" => {
                let signoff = &run.samples[2];
                let (ours, theirs) = (signoff.ms(0.99) - none.ms(0.99), s.ms(0.99) - none.ms(0.99));
                table.row(
                    SECTION,
                    &figure,
                    cells.join(" / "),
                    baseline,
                    format!("{}; signoff's added p99 {ours:.2} ms vs Kyverno's {theirs:.2} ms", ratios.join(" / ")),
                    "signoff's added p99 <= half of Kyverno's",
                    Some(ours <= theirs / 2.0),
                );
            }
            _ => table.row(SECTION, &figure, cells.join(" / "), baseline, ratios.join(" / "), "-", None),
        }
    }
    Ok(())
}

pub async fn run(env: &Env, table: &mut Table) -> Result<(), String> {
    let client = env.cp.client("alice").await.map_err(|e| e.to_string())?;
    let groups = groups(env);
    let steady: usize = std::env::var("SIGNOFF_BENCH_WRITES").ok().and_then(|v| v.parse().ok()).unwrap_or(9000);
    let n = groups.len();
    eprintln!("bench: [1] {steady} writes at 100/s, {n} groups interleaved ({:.0} s)...", steady as f64 / 100.0);
    let before = webhook_calls(env);
    let run = open_loop(&client, &groups, "steady", 100.0, steady, 30 * n).await;
    report(table, &groups, &run, "100 writes/s")?;
    report_calls(table, &before, &webhook_calls(env), "100 writes/s");
    dump(&run, "steady");
    eprintln!("bench: [1] closed loop, 8 writers, 45 s...");
    // Fresh sequences: an update refers to an object of the same phase.
    let groups = self::groups(env);
    let before = webhook_calls(env);
    let run = closed_loop(&client, &groups, "max", 8, 45, 100 * n).await;
    report(table, &groups, &run, "highest rate")?;
    report_calls(table, &before, &webhook_calls(env), "highest rate");
    dump(&run, "max");
    Ok(())
}

/// Count and total seconds of webhook calls, by what timed them: the API
/// server, each of its calls by webhook (its metric
/// `apiserver_admission_webhook_admission_duration_seconds`), and signoff, its
/// own answers (`signoff_admission_review_seconds`: from the request reaching
/// its handler, body still to read, to the answer; without TLS and HTTP).
fn webhook_calls(env: &Env) -> std::collections::BTreeMap<String, (f64, f64)> {
    let apiserver = super::env::kubectl(&env.cp, "admin", &["get", "--raw", "/metrics"], None).unwrap_or_default();
    let mut by_webhook = std::collections::BTreeMap::new();
    let metric = "apiserver_admission_webhook_admission_duration_seconds";
    sum_histogram(&apiserver, metric, "type=\"validating\"", "name", &mut by_webhook);
    let mut calls: std::collections::BTreeMap<String, (f64, f64)> = by_webhook
        .into_iter()
        .map(|(name, total)| (format!("the API server's calls to webhook {name}"), total))
        .collect();
    let signoff = std::process::Command::new("curl")
        .args(["-sf", &format!("{}/metrics", env.signoff_health)])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut own = std::collections::BTreeMap::new();
    sum_histogram(&signoff, "signoff_admission_review_seconds", "", "", &mut own);
    if let Some(total) = own.remove("") {
        calls.insert("signoff's own time per review".to_string(), total);
    }
    calls
}

/// Adds up `metric`'s `_count` and `_sum` series in Prometheus text whose
/// labels contain `only`, by the value of `label` (all under "" when `label` is
/// empty).
fn sum_histogram(
    text: &str,
    metric: &str,
    only: &str,
    label: &str,
    into: &mut std::collections::BTreeMap<String, (f64, f64)>,
) {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric).and_then(|r| r.strip_prefix('_')) else { continue };
        let (count, rest) = match (rest.strip_prefix("count"), rest.strip_prefix("sum")) {
            (Some(rest), _) => (true, rest),
            (_, Some(rest)) => (false, rest),
            _ => continue,
        };
        let Some((labels, value)) = rest.rsplit_once(' ') else { continue };
        if !labels.contains(only) {
            continue;
        }
        let key = match label {
            "" => String::new(),
            label => {
                let prefix = format!("{label}=\"");
                let found =
                    labels.trim_matches(|c| c == '{' || c == '}').split(',').find_map(|l| l.strip_prefix(&prefix));
                match found {
                    Some(v) => v.trim_end_matches('"').to_string(),
                    None => continue,
                }
            }
        };
        let value: f64 = value.trim().parse().unwrap_or(0.0);
        let entry = into.entry(key).or_insert((0.0, 0.0));
        if count { entry.0 += value } else { entry.1 += value }
    }
}

/// The mean time of each webhook's calls during a phase: as the API server saw
/// it (encoding the review, TLS, the answer; not the rest of the write), and
/// signoff's own time per review.
fn report_calls(
    table: &mut Table,
    before: &std::collections::BTreeMap<String, (f64, f64)>,
    after: &std::collections::BTreeMap<String, (f64, f64)>,
    label: &str,
) {
    for (name, (count, sum)) in after {
        let (count0, sum0) = before.get(name).copied().unwrap_or_default();
        let calls = count - count0;
        if calls >= 1.0 {
            table.info(
                SECTION,
                &format!("{label}: {name}, mean ms per call (n={calls:.0})"),
                format!("{:.2}", (sum - sum0) * 1000.0 / calls),
            );
        }
    }
}

/// Every write's latency, to `$TMPDIR/signoff-bench-writes-<phase>.tsv`.
fn dump(run: &Run, phase: &str) {
    let path = std::env::temp_dir().join(format!("signoff-bench-writes-{phase}.tsv"));
    if std::fs::write(&path, format!("index\tgroup\twrite\tms\n{}", run.dump)).is_ok() {
        eprintln!("bench: [1] every write's latency: {}", path.display());
    }
}

/// Kyverno 1.19 run out of cluster against the bench's API server, with one
/// validate policy for the Kyverno group's namespace (`make bench-peers`).
pub struct Kyverno {
    _process: signoff_testenv::Supervised,
    pub rss_mib: f64,
}

impl Kyverno {
    /// Install Kyverno's CRDs and ConfigMaps from its module source
    /// (SIGNOFF_BENCH_KYVERNO_SRC), start `binary` out of cluster with its
    /// webhooks limited to the Kyverno group's namespace, apply one validate
    /// policy, and wait until a write there is validated by it.
    pub fn start(
        cp: &signoff_testenv::ControlPlane,
        root: &std::path::Path,
        binary: &std::path::Path,
    ) -> Result<Kyverno, String> {
        use super::env::kubectl;
        let src = std::env::var("SIGNOFF_BENCH_KYVERNO_SRC")
            .map_err(|_| "SIGNOFF_BENCH_KYVERNO_SRC is not set (make bench-peers sets it)".to_string())?;
        let src = std::path::Path::new(&src);
        let t = Instant::now();
        let mut args = vec!["apply".to_string(), "--server-side".into()];
        for dir in ["kyverno", "policies.kyverno.io", "reports", "policyreport"] {
            args.extend(["-f".into(), src.join("config/crds").join(dir).display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kubectl(cp, "admin", &args, None)?;
        cp.wait_established(&[]).map_err(|e| e.to_string())?;
        // Its Namespace and ConfigMaps from the install manifest; its webhooks see
        // only the Kyverno group's namespace.
        let install =
            std::fs::read_to_string(src.join("config/install-latest-testing.yaml")).map_err(|e| e.to_string())?;
        let mut docs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&install) {
            let mut v = <serde_json::Value as serde::Deserialize>::deserialize(doc).map_err(|e| e.to_string())?;
            match v["kind"].as_str() {
                Some("Namespace") => docs.push(v),
                Some("ConfigMap") => {
                    // Kyverno 1.19 reads `webhooks` as one JSON object (a list,
                    // the pre-1.10 form, fails to parse and is ignored).
                    if v["metadata"]["name"] == "kyverno" {
                        v["data"]["webhooks"] = json!(
                            json!({"namespaceSelector": {"matchLabels": {"bench.signoff.dev/group": "kyverno"}}})
                                .to_string()
                        );
                    }
                    docs.push(v);
                }
                _ => {}
            }
        }
        let list = json!({"apiVersion": "v1", "kind": "List", "items": docs}).to_string();
        kubectl(cp, "admin", &["apply", "-f", "-"], Some(&list))?;
        let port = signoff_testenv::free_port().map_err(|e| e.to_string())?;
        let metrics = signoff_testenv::free_port().map_err(|e| e.to_string())?;
        let server_ip = format!("127.0.0.1:{port}");
        let (port, metrics) = (port.to_string(), metrics.to_string());
        let kubeconfig = cp.dir.join("kyverno.kubeconfig");
        cp.write_kubeconfig(&kubeconfig, "admin").map_err(|e| e.to_string())?;
        let kubeconfig = kubeconfig.display().to_string();
        let args = [
            "--kubeconfig",
            kubeconfig.as_str(),
            "--serverIP",
            server_ip.as_str(),
            "--webhookServerHost",
            "127.0.0.1",
            "--webhookServerPort",
            port.as_str(),
            "--caSecretName",
            "kyverno-svc.kyverno.svc.kyverno-tls-ca",
            "--tlsSecretName",
            "kyverno-svc.kyverno.svc.kyverno-tls-pair",
            "--disableMetrics",
            "--metricsHost",
            "127.0.0.1",
            "--metricsPort",
            metrics.as_str(),
            "--controllerRuntimeMetricsAddress",
            "0",
            "--admissionReports=false",
            "--generateValidatingAdmissionPolicy=false",
            "--generateMutatingAdmissionPolicy=false",
            "--omitEvents=PolicyApplied,PolicySkipped",
            "--loggingFormat=text",
            "--disableLogColor",
            "--v=1",
        ];
        let env = [
            ("KYVERNO_NAMESPACE", "kyverno"),
            ("KYVERNO_SERVICEACCOUNT_NAME", "kyverno-admission-controller"),
            ("KYVERNO_ROLE_NAME", "kyverno:admission-controller"),
            ("KYVERNO_DEPLOYMENT", "kyverno-admission-controller"),
            ("KYVERNO_POD_NAME", "kyverno-local"),
            ("KYVERNO_SVC", "kyverno-svc"),
            ("INIT_CONFIG", "kyverno"),
            ("METRICS_CONFIG", "kyverno-metrics"),
        ];
        let process =
            signoff_testenv::Supervised::spawn("kyverno", binary, &args, &env, &cp.dir.join("kyverno.log"), None)
                .map_err(|e| e.to_string())?;
        kubectl(
            cp,
            "admin",
            &["apply", "-f", &root.join("hack/peers/kyverno/bench-policy.yaml").display().to_string()],
            None,
        )?;
        kubectl(
            cp,
            "admin",
            &["wait", "--for=condition=Ready", "--timeout=180s", "clusterpolicy/bench-part-of"],
            None,
        )?;
        // Ready when a write that breaks the policy is denied by it.
        let bad = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: probe, namespace: {NS_KYVERNO}}}\n");
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let (ok, _, err) = cp
                .kubectl_run("alice", &["apply", "--dry-run=server", "-f", "-"], Some(&bad))
                .map_err(|e| e.to_string())?;
            if !ok && err.contains("bench-part-of") {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Kyverno did not enforce its policy within 180 s (log {}): {err}",
                    cp.dir.join("kyverno.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let rss_mib = process
            .program_pid()
            .and_then(|pid| super::scale::rss_kib(pid).map(|(rss, _)| rss as f64 / 1024.0))
            .unwrap_or(f64::NAN);
        eprintln!("bench: Kyverno enforcing after {:.1}s, RSS {rss_mib:.0} MiB", t.elapsed().as_secs_f64());
        Ok(Kyverno { _process: process, rss_mib })
    }
}
