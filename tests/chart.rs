//! The Helm chart (charts/signoff): rendered with helm built from Go modules
//! (hack/helm/build.sh), applied to the real control plane with a server-side dry
//! run in both webhook ownership modes, and its RBAC rules pinned by a snapshot.

mod common;

use std::process::Command;
use std::sync::OnceLock;

use common::{ADMIN, cp, kubectl_ok};
use serde::Deserialize;
use serde_yaml::Value;

fn root() -> std::path::PathBuf {
    signoff_testenv::checkout().unwrap_or_else(|e| panic!("{e}"))
}

/// The helm binary (built once, cached outside the clone).
fn helm() -> &'static str {
    static HELM: OnceLock<String> = OnceLock::new();
    HELM.get_or_init(|| common::gitops::script("hack/helm/build.sh", &[]).display().to_string())
}

/// `helm template` of the chart into `namespace` with `--set` values.
fn render(namespace: &str, sets: &[&str]) -> String {
    let mut cmd = Command::new(helm());
    cmd.current_dir(root()).args(["template", "signoff", "charts/signoff", "--namespace", namespace]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("helm runs");
    assert!(out.status.success(), "helm template {sets:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("helm renders valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}

fn of_kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

const CHART_MODE_SECRET: &[&str] =
    &["webhook.managedBy=chart", "tls.source=secret", "tls.secretName=signoff-tls", "tls.caBundle=Cg=="];

fn container_args(docs: &[Value]) -> Vec<String> {
    let deployment = of_kind(docs, "Deployment");
    assert_eq!(deployment.len(), 1);
    deployment[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn rendered_chart_applies_server_side_in_both_modes() {
    let cp = cp();
    // The chart's namespace must exist; the CRDs are installed by cp().
    let ns = common::namespace(cp, "signoff-chart", &[]);
    for (mode, sets) in [("managedBy=signoff", &[][..]), ("managedBy=chart (Secret)", CHART_MODE_SECRET)] {
        let yaml = render(&ns, sets);
        let out = kubectl_ok(cp, ADMIN, &["apply", "--dry-run=server", "-f", "-"], Some(&yaml));
        eprintln!("{mode}: kubectl apply --dry-run=server:\n{out}");
        for expected in ["deployment.apps/signoff", "serviceaccount/signoff", "service/signoff-webhook"] {
            assert!(out.contains(expected), "{mode}: {expected} in\n{out}");
        }
        let has_vwc = out.contains("validatingwebhookconfiguration.admissionregistration.k8s.io/signoff");
        assert_eq!(
            has_vwc,
            !sets.is_empty(),
            "{mode}: the chart renders the webhook configuration only when it owns it"
        );
    }
}

#[test]
fn webhook_configuration_has_exactly_one_owner() {
    let signoff_mode = documents(&render("signoff-system", &[]));
    assert!(of_kind(&signoff_mode, "ValidatingWebhookConfiguration").is_empty());
    let args = container_args(&signoff_mode);
    assert!(!args.contains(&"--no-manage-webhook-config".to_string()), "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--tls-cert-file")), "{args:?}");

    for sets in [&["webhook.managedBy=chart"][..], CHART_MODE_SECRET] {
        let docs = documents(&render("signoff-system", sets));
        let vwc = of_kind(&docs, "ValidatingWebhookConfiguration");
        assert_eq!(vwc.len(), 1, "{sets:?}");
        let args = container_args(&docs);
        for flag in ["--no-manage-webhook-config", "--tls-cert-file=/tls/tls.crt", "--tls-key-file=/tls/tls.key"] {
            assert!(args.contains(&flag.to_string()), "{sets:?}: {flag} in {args:?}");
        }
        // signoff may not touch webhook configurations or Secrets when the chart owns
        // them, but for the pre-delete hook's delete of the chart's configuration.
        let rbac: Vec<String> = rbac_lines("x", &docs);
        let webhook_rules: Vec<&String> =
            rbac.iter().filter(|l| l.contains("validatingwebhookconfigurations")).collect();
        assert_eq!(
            webhook_rules,
            ["x ClusterRole/signoff-controller: groups=admissionregistration.k8s.io \
              resources=validatingwebhookconfigurations names=signoff verbs=delete"],
            "{sets:?}"
        );
        assert!(!rbac.iter().any(|l| l.contains("secrets")), "{sets:?}");
        let gate = &vwc[0]["webhooks"][0];
        assert_eq!(gate["failurePolicy"], "Fail");
        assert_eq!(gate["sideEffects"], "NoneOnDryRun");
        let excluded = serde_yaml::to_string(&gate["namespaceSelector"]).unwrap();
        for ns in ["kube-system", "kube-node-lease", "signoff-system"] {
            assert!(excluded.contains(ns), "{ns} excluded: {excluded}");
        }
    }
    let cert_manager = documents(&render("signoff-system", &["webhook.managedBy=chart"]));
    assert_eq!(of_kind(&cert_manager, "Certificate").len(), 2, "CA and serving certificate");
    let vwc = of_kind(&cert_manager, "ValidatingWebhookConfiguration");
    assert_eq!(vwc[0]["metadata"]["annotations"]["cert-manager.io/inject-ca-from"], "signoff-system/signoff-webhook");
}

#[test]
fn chart_webhook_matches_what_signoff_writes() {
    // The chart-owned configuration carries the same exemptions as src/webhook/config.rs.
    let sets = [CHART_MODE_SECRET, &["webhook.exemptNamespaces={argocd,flux-system}"]].concat();
    let docs = documents(&render("signoff-system", &sets));
    let vwc = of_kind(&docs, "ValidatingWebhookConfiguration");
    let condition = vwc[0]["webhooks"][0]["matchConditions"][0]["expression"].as_str().unwrap();
    for (group, resource) in signoff::webhook::review::EXEMPT_RESOURCES {
        let pair = format!("(request.resource.group == '{group}' && request.resource.resource == '{resource}')");
        assert!(condition.contains(&pair), "chart matchCondition lacks {pair}");
    }
    let generated = signoff::webhook::config::webhook_configuration(
        &signoff::webhook::config::WebhookSettings {
            name: "signoff".into(),
            owner: None,
            endpoint: signoff::webhook::config::Endpoint::Service {
                namespace: "signoff-system".into(),
                name: "signoff-webhook".into(),
                port: 443,
            },
            controller_namespace: "signoff-system".into(),
            timeout_seconds: 10,
            exempt_namespaces: vec!["argocd".into(), "flux-system".into()],
        },
        // The chart's default gate rules, so the /status webhook is generated too.
        serde_yaml::from_value(vwc[0]["webhooks"][0]["rules"].clone()).unwrap(),
        b"",
    );
    let generated = serde_yaml::to_value(&generated).unwrap();
    let generated = generated["webhooks"].as_sequence().unwrap();
    let chart = vwc[0]["webhooks"].as_sequence().unwrap();
    let names = |w: &[serde_yaml::Value]| w.iter().map(|w| w["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(names(chart), names(generated), "the same webhooks, in the same order");
    for (webhook, chart) in generated.iter().zip(chart) {
        let name = webhook["name"].as_str().unwrap();
        for field in ["failurePolicy", "matchPolicy", "sideEffects", "timeoutSeconds", "namespaceSelector"] {
            assert_eq!(chart[field], webhook[field], "{name}.{field}: chart vs src/webhook/config.rs");
        }
        if name != "gate.signoff.dev" {
            assert_eq!(chart["rules"], webhook["rules"], "{name} rules: chart vs src/webhook/config.rs");
        }
    }
    let status = &chart[1];
    let condition = status["matchConditions"][1]["expression"].as_str().unwrap();
    let squash = |s: &str| s.split_whitespace().collect::<String>();
    assert_eq!(squash(condition), squash(signoff::webhook::config::STATUS_METADATA_CONDITION));
}

#[test]
fn the_chart_offers_the_policy_library_unchanged() {
    let library = |dir: &str| -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = std::fs::read_dir(root().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
            .collect();
        files.sort();
        files
    };
    assert_eq!(
        library("charts/signoff/files/policies"),
        library("policies"),
        "charts/signoff/files/policies differs from policies/: run `make chart-policies`"
    );
    let policies = |sets: &[&str]| -> Vec<String> {
        of_kind(&documents(&render("signoff-system", sets)), "EscalationPolicy")
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(policies(&[]).is_empty(), "off by default");
    let all = policies(&["policies.enabled=true"]);
    assert_eq!(all.len(), library("policies").len(), "{all:?}");
    let some = policies(&["policies.enabled=true", "policies.exclude={cost,change-management}"]);
    assert!(!some.contains(&"cost".to_string()) && !some.contains(&"change-management".to_string()), "{some:?}");
    assert_eq!(some.len(), all.len() - 2);
    // What the chart renders is what the repository's files say.
    let rendered = of_kind(&documents(&render("signoff-system", &["policies.enabled=true"])), "EscalationPolicy")
        .iter()
        .find(|p| p["metadata"]["name"] == "production-workloads")
        .map(|p| p["spec"].clone())
        .unwrap();
    let file: Value =
        serde_yaml::from_str(&std::fs::read_to_string(root().join("policies/workloads.yaml")).unwrap()).unwrap();
    assert_eq!(numbers_as_floats(rendered), numbers_as_floats(file["spec"].clone()));
}

/// Whether `chart` (a webhook rule) covers one (operation, group, version,
/// resource) of the gate: wildcards as the API server reads them.
fn rule_covers(chart: &Value, (op, group, version, resource): (&str, &str, &str, &str)) -> bool {
    let has = |field: &str, value: &str| {
        chart[field].as_sequence().unwrap().iter().any(|v| {
            let v = v.as_str().unwrap();
            v == value || v == "*" || (field == "resources" && v == "*/*" && value.contains('/'))
        })
    };
    // Cluster-scoped resources of the library's rules.
    let cluster = ["namespaces", "clusterroles", "clusterrolebindings"].contains(&resource);
    let scope_ok = match chart["scope"].as_str() {
        Some("Namespaced") => !cluster,
        Some("Cluster") => cluster,
        _ => true,
    };
    let resource_ok = if resource.contains('/') {
        has("resources", resource)
    } else {
        chart["resources"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| v.as_str() == Some(resource) || v.as_str() == Some("*"))
    };
    has("operations", op) && has("apiGroups", group) && has("apiVersions", version) && resource_ok && scope_ok
}

#[test]
fn the_default_gate_rules_cover_the_policy_library() {
    let set = signoff::cli::check::load_policies(&root().join("policies")).unwrap();
    let specs: Vec<signoff::crd::EscalationPolicy> =
        set.policies().iter().map(|p| signoff::crd::EscalationPolicy::new(p.name(), p.spec().clone())).collect();
    let needed = signoff::webhook::config::gate_rules(&specs);
    let docs = documents(&render("signoff-system", CHART_MODE_SECRET));
    let vwc = of_kind(&docs, "ValidatingWebhookConfiguration");
    let chart = vwc[0]["webhooks"][0]["rules"].as_sequence().unwrap();
    let mut missing = Vec::new();
    for rule in &needed {
        for op in rule.operations.iter().flatten() {
            for group in rule.api_groups.iter().flatten() {
                for version in rule.api_versions.iter().flatten() {
                    for resource in rule.resources.iter().flatten() {
                        let one = (op.as_str(), group.as_str(), version.as_str(), resource.as_str());
                        if !chart.iter().any(|c| rule_covers(c, one)) {
                            missing.push(format!("{one:?}"));
                        }
                    }
                }
            }
        }
    }
    assert!(missing.is_empty(), "webhook.gateRules misses what the library holds: {missing:?}");
}

#[test]
fn deployment_is_hardened_and_highly_available() {
    let docs = documents(&render("signoff-system", &[]));
    let deployment = of_kind(&docs, "Deployment")[0];
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert!(spec["affinity"]["podAntiAffinity"].is_mapping());
    assert!(
        spec["priorityClassName"].is_null(),
        "none by default: managed clusters' quotas refuse system-cluster-critical"
    );
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let c = &spec["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert!(c["resources"]["requests"].is_mapping() && c["resources"]["limits"].is_mapping());
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let env = serde_yaml::to_string(&c["env"]).unwrap();
    assert!(env.contains("POD_NAME") && env.contains("POD_NAMESPACE"), "{env}");
    let args = container_args(&docs);
    assert!(args.contains(&"--controller-user=system:serviceaccount:signoff-system:signoff".to_string()), "{args:?}");
    assert_eq!(of_kind(&docs, "PodDisruptionBudget")[0]["spec"]["minAvailable"], 1);
    assert_eq!(of_kind(&docs, "NetworkPolicy").len(), 1);
    assert!(of_kind(&docs, "ServiceMonitor").is_empty(), "ServiceMonitor is opt-in");
    let with_monitor = documents(&render("signoff-system", &["serviceMonitor.enabled=true"]));
    assert_eq!(of_kind(&with_monitor, "ServiceMonitor").len(), 1);
}

/// Issue 21: the knobs managed clusters need, rendered as Kubernetes takes them.
#[test]
fn managed_cluster_knobs_render() {
    let docs = documents(&render(
        "signoff-system",
        &[
            "priorityClassName=platform-critical",
            "hostNetwork=true",
            "ports.webhook=10250",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
            "serviceMonitor.enabled=true",
            "serviceMonitor.namespace=monitoring",
            "serviceMonitor.scrapeTimeout=10s",
            "serviceMonitor.honorLabels=true",
            "serviceMonitor.relabelings[0].targetLabel=cluster",
            "serviceMonitor.relabelings[0].replacement=prod-eu",
            "serviceMonitor.metricRelabelings[0].action=drop",
            "serviceMonitor.metricRelabelings[0].regex=go_.*",
        ],
    ));
    let spec = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    assert_eq!(spec["priorityClassName"], "platform-critical");
    assert_eq!(
        (spec["hostNetwork"].as_bool(), spec["dnsPolicy"].as_str()),
        (Some(true), Some("ClusterFirstWithHostNet"))
    );
    assert!(spec["affinity"]["podAntiAffinity"].is_null(), "free affinity replaces the preset");
    assert_eq!(
        spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"]
            [0]["key"],
        "pool"
    );
    assert!(container_args(&docs).contains(&"--webhook-addr=0.0.0.0:10250".to_string()));
    let monitor = of_kind(&docs, "ServiceMonitor")[0];
    assert_eq!(monitor["metadata"]["namespace"], "monitoring");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!((endpoint["scrapeTimeout"].as_str(), endpoint["honorLabels"].as_bool()), (Some("10s"), Some(true)));
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "cluster");
    assert_eq!(endpoint["metricRelabelings"][0]["action"], "drop");
}

/// One line per rule: `mode Kind/name: groups resources [names] verbs`.
fn rbac_lines(mode: &str, docs: &[Value]) -> Vec<String> {
    let mut lines = Vec::new();
    for doc in docs.iter().filter(|d| matches!(kind(d), "ClusterRole" | "Role")) {
        let name = doc["metadata"]["name"].as_str().unwrap();
        for rule in doc["rules"].as_sequence().into_iter().flatten() {
            let list = |field: &str| -> String {
                let items: Vec<&str> =
                    rule[field].as_sequence().into_iter().flatten().map(|v| v.as_str().unwrap()).collect();
                items.join(",")
            };
            let groups: Vec<String> = rule["apiGroups"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|g| if g.as_str() == Some("") { "core".to_string() } else { g.as_str().unwrap().to_string() })
                .collect();
            let names = list("resourceNames");
            let names = if names.is_empty() { String::new() } else { format!(" names={names}") };
            lines.push(format!(
                "{mode} {}/{name}: groups={} resources={}{names} verbs={}",
                kind(doc),
                groups.join(","),
                list("resources"),
                list("verbs")
            ));
        }
    }
    lines
}

#[test]
fn rbac_rules_match_the_snapshot() {
    let mut lines = rbac_lines("signoff", &documents(&render("signoff-system", &[])));
    lines.extend(rbac_lines("chart", &documents(&render("signoff-system", CHART_MODE_SECRET))));
    // The hand-back adds patch on the GitOps owners, and nothing else.
    let hand_back = rbac_lines("handBack", &documents(&render("signoff-system", &["gitops.handBack=true"])));
    lines.extend(hand_back.into_iter().filter(|l| l.contains("fluxcd") || l.contains("argoproj")));
    for line in &lines {
        assert!(!line.contains('*'), "no wildcards in RBAC: {line}");
    }
    let actual = lines.join("\n") + "\n";
    let path = root().join("tests/snapshots/rbac.txt");
    if std::env::var_os("SIGNOFF_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let diff =
            similar::TextDiff::from_lines(&expected, &actual).unified_diff().header("snapshot", "rendered").to_string();
        panic!(
            "RBAC changed: review and update tests/snapshots/rbac.txt \
             (SIGNOFF_UPDATE_SNAPSHOTS=1 cargo test --test chart rbac)\n{diff}"
        );
    }
}

#[test]
fn controller_rbac_mirrors_the_demo() {
    // The chart grants its ServiceAccount exactly what examples/demo/03-signoff-rbac.yaml grants.
    let demo = std::fs::read_to_string(root().join("examples/demo/03-signoff-rbac.yaml")).unwrap();
    let demo = rbac_lines("x", &documents(&demo));
    // The demo hands approved changes back (make dev shows it).
    let chart = rbac_lines("x", &documents(&render("signoff-system", &["gitops.handBack=true"])));
    let chart: Vec<String> = chart.into_iter().filter(|l| l.contains("/signoff-controller:")).collect();
    assert_eq!(chart, demo);
}

/// Issue 21: values.schema.json makes helm refuse a mistyped or out-of-range
/// value with a message naming it, instead of ignoring it.
#[test]
fn the_schema_refuses_mistyped_values() {
    for (set, says) in [
        ("replicaCont=3", "additional properties 'replicaCont' not allowed"),
        ("webhook.timeoutSeconds=60", "/webhook/timeoutSeconds"),
        ("webhook.managedBy=helm", "/webhook/managedBy"),
        ("podAntiAffinity=maybe", "/podAntiAffinity"),
        ("leaseDuration=soon", "/leaseDuration"),
        ("gitops.handback=true", "additional properties 'handback' not allowed"),
    ] {
        let out = Command::new(helm())
            .current_dir(root())
            .args(["template", "signoff", "charts/signoff", "--namespace", "signoff-system", "--set", set])
            .output()
            .expect("helm runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} must be refused");
        assert!(err.contains("don't meet the specifications of the schema") && err.contains(says), "{set}: {err}");
    }
}

/// Issue 21: two releases side by side share no cluster-scoped name (the CRDs
/// aside, which are one per cluster by nature), in both webhook ownership modes.
#[test]
fn two_releases_render_without_collisions() {
    let cluster_scoped =
        ["ClusterRole", "ClusterRoleBinding", "ValidatingWebhookConfiguration", "CustomResourceDefinition"];
    for sets in [&[][..], CHART_MODE_SECRET] {
        let names = |release: &str, namespace: &str, sets: &[&str]| -> Vec<String> {
            let mut cmd = Command::new(helm());
            cmd.current_dir(root()).args(["template", release, "charts/signoff", "--namespace", namespace]);
            for s in sets {
                cmd.args(["--set", s]);
            }
            let out = cmd.output().expect("helm runs");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            documents(&String::from_utf8(out.stdout).unwrap())
                .iter()
                .filter(|d| cluster_scoped.contains(&kind(d)))
                .map(|d| format!("{}/{}", kind(d), d["metadata"]["name"].as_str().unwrap()))
                .collect()
        };
        // The CRDs are the cluster's, installed by one release; the canary leaves them out.
        let canary = [sets, &["crds.enabled=false"]].concat();
        let (a, b) = (names("signoff", "signoff-system", sets), names("signoff-canary", "signoff-canary", &canary));
        assert!(a.iter().any(|n| n.starts_with("CustomResourceDefinition/")), "{a:?}");
        assert!(!a.is_empty());
        let shared: Vec<&String> = a.iter().filter(|n| b.contains(n)).collect();
        assert!(shared.is_empty(), "cluster-scoped names both releases render ({sets:?}): {shared:?}");
    }
}

fn numbers_as_floats(v: Value) -> Value {
    match v {
        Value::Number(n) => Value::from(n.as_f64().unwrap()),
        Value::Sequence(s) => Value::Sequence(s.into_iter().map(numbers_as_floats).collect()),
        Value::Mapping(m) => Value::Mapping(m.into_iter().map(|(k, v)| (k, numbers_as_floats(v))).collect()),
        other => other,
    }
}

#[test]
fn the_chart_renders_the_generated_crds_kept_on_uninstall() {
    let docs = documents(&render("signoff-system", &[]));
    let crds = of_kind(&docs, "CustomResourceDefinition");
    let generated = signoff::crd::all_crds();
    assert_eq!(crds.len(), generated.len());
    for crd in generated {
        let name = crd.metadata.name.clone().unwrap();
        let rendered = crds.iter().find(|c| c["metadata"]["name"].as_str() == Some(&name)).expect("rendered");
        let expected: Value = serde_yaml::to_value(&crd).unwrap();
        // Helm's toYaml writes 0.0 as 0: the same number to the API server.
        assert_eq!(
            numbers_as_floats(rendered["spec"].clone()),
            numbers_as_floats(expected["spec"].clone()),
            "{name}: the chart renders the generated spec unchanged"
        );
        assert_eq!(rendered["metadata"]["annotations"]["helm.sh/resource-policy"], "keep", "{name}");
        assert_eq!(rendered["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm", "{name}");
    }
    let without_keep = documents(&render("signoff-system", &["crds.keep=false"]));
    let crd = of_kind(&without_keep, "CustomResourceDefinition")[0];
    assert!(crd["metadata"]["annotations"]["helm.sh/resource-policy"].is_null(), "{crd:?}");
    assert!(
        of_kind(&documents(&render("signoff-system", &["crds.enabled=false"])), "CustomResourceDefinition").is_empty()
    );
}

/// A real `helm install`, `upgrade` and `uninstall` on the API server: Helm
/// adopts the CRDs already there (the documented path from a chart that
/// installed them from `crds/`), upgrades them with the release, and leaves
/// them and their objects on uninstall.
#[test]
fn helm_upgrades_the_crds_and_keeps_them_on_uninstall() {
    let cp = cp();
    let ns = common::namespace(cp, "signoff-helm", &[]);
    let helm_run = |args: &[&str]| {
        let out = Command::new(helm())
            .current_dir(root())
            .args(args)
            .args(["--kubeconfig", &cp.kubeconfig.display().to_string(), "--kube-context", ADMIN, "--namespace", &ns])
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "helm {} failed:\n{text}", args.join(" "));
        text
    };
    let release = "crdtest";
    for crd in ["approvalrequests", "approvers", "escalationpolicies", "teams"] {
        let crd = format!("crd/{crd}.signoff.dev");
        kubectl_ok(cp, ADMIN, &["label", &crd, "app.kubernetes.io/managed-by=Helm", "--overwrite"], None);
        let (name, namespace) =
            (format!("meta.helm.sh/release-name={release}"), format!("meta.helm.sh/release-namespace={ns}"));
        kubectl_ok(cp, ADMIN, &["annotate", &crd, &name, &namespace, "--overwrite"], None);
    }
    // An object of signoff's kinds that must outlive the release.
    let team = "apiVersion: signoff.dev/v1alpha1\nkind: Team\nmetadata: {name: helm-survivor}\nspec: {members: {users: [sam]}}\n";
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(team));
    helm_run(&["install", release, "charts/signoff"]);
    let label = |crd: &str| {
        kubectl_ok(
            cp,
            ADMIN,
            &["get", "crd", crd, "-o", "jsonpath={.metadata.labels.app\\.kubernetes\\.io/instance}"],
            None,
        )
    };
    assert_eq!(label("teams.signoff.dev"), release, "the release owns the CRDs");
    let upgraded = helm_run(&["upgrade", release, "charts/signoff", "--set", "crds.keep=true"]);
    assert!(upgraded.contains("has been upgraded"), "{upgraded}");
    // No node runs pods here, so neither signoff nor the pre-delete hook's Job
    // (tests/cluster.rs runs both): skip the hook, as docs/operations.md says.
    let uninstalled = helm_run(&["uninstall", release, "--no-hooks"]);
    assert!(uninstalled.contains("kept due to the resource policy"), "helm says what it kept: {uninstalled}");
    for crd in ["approvalrequests", "approvers", "escalationpolicies", "teams"] {
        kubectl_ok(cp, ADMIN, &["get", "crd", &format!("{crd}.signoff.dev")], None);
    }
    kubectl_ok(cp, ADMIN, &["get", "team", "helm-survivor"], None);
}

/// One documented value: its dotted key, its default (as JSON) and its comment.
struct ValueDoc {
    key: String,
    default: String,
    text: String,
}

/// The `# -- ...` comments of values.yaml (helm-docs' convention), each with
/// the key it documents and that key's default.
fn value_docs(values: &str) -> Vec<ValueDoc> {
    let parsed: serde_json::Value = serde_yaml::from_str(values).unwrap();
    let mut out = Vec::new();
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut comment: Option<String> = None;
    for line in values.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        // `# -- text` starts a value's documentation (`# --flag` inside one does not).
        if let Some(text) = trimmed.strip_prefix("# -- ") {
            comment = Some(text.trim().to_string());
            continue;
        }
        if let Some(text) = trimmed.strip_prefix('#') {
            // A comment continues the documentation only right after `# --`;
            // commented-out examples (`#   name: x`) are not part of it.
            if let Some(c) = comment.as_mut().filter(|_| !text.starts_with("   ")) {
                c.push(' ');
                c.push_str(text.trim());
            }
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else { continue };
        if trimmed.starts_with('-') || key.contains(' ') {
            comment = None;
            continue;
        }
        path.retain(|(level, _)| *level < indent);
        path.push((indent, key.to_string()));
        if let Some(text) = comment.take() {
            let dotted: Vec<&str> = path.iter().map(|(_, k)| k.as_str()).collect();
            let pointer = format!("/{}", dotted.join("/"));
            let default = parsed.pointer(&pointer).map(|v| v.to_string()).unwrap_or_default();
            out.push(ValueDoc { key: dotted.join("."), default, text });
        }
    }
    out
}

/// charts/signoff/README.md from the values' comments.
fn chart_readme(values: &str) -> String {
    let mut text = String::from(
        "# signoff chart\n\n<!-- Generated from values.yaml by tests/chart.rs \
         (SIGNOFF_UPDATE_DOCS=1 cargo test --test chart readme). Do not edit by hand. -->\n\n\
         Installs signoff: the admission webhook that holds risky changes until the right people approve them,\n\
         and its escalation controller. See [docs/operations.md](../../docs/operations.md) for the choices\n\
         (high availability, certificates, who owns the webhook configuration) and\n\
         [docs/gitops.md](../../docs/gitops.md) for the GitOps hand-back.\n\n\
         ```sh\nhelm install signoff charts/signoff --namespace signoff-system --create-namespace\n```\n\n\
         `helm install` checks the values against `values.schema.json`: a mistyped or out-of-range value is refused.\n\n\
         ## Values\n\n| Key | Default | Description |\n|---|---|---|\n",
    );
    for v in value_docs(values) {
        let default = if v.default.len() > 60 { "see values.yaml".to_string() } else { format!("`{}`", v.default) };
        text.push_str(&format!("| `{}` | {} | {} |\n", v.key, default, v.text.replace('|', "\\|")));
    }
    text
}

/// Issue 21: the chart's README lists every value with its default and comment,
/// generated from values.yaml; stale, it fails.
#[test]
fn the_chart_readme_is_generated_from_the_values() {
    let values = std::fs::read_to_string(root().join("charts/signoff/values.yaml")).unwrap();
    let docs = value_docs(&values);
    for key in
        ["replicaCount", "webhook.managedBy", "gitops.handBack", "serviceMonitor.scrapeTimeout", "priorityClassName"]
    {
        assert!(docs.iter().any(|d| d.key == key), "{key} documented in values.yaml");
    }
    let expected = chart_readme(&values);
    let path = root().join("charts/signoff/README.md");
    if std::env::var_os("SIGNOFF_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "charts/signoff/README.md is stale: regenerate it with SIGNOFF_UPDATE_DOCS=1 cargo test --test chart readme"
    );
}

/// Issue 22: `helm uninstall` first deletes the webhook configuration (a pre-delete
/// hook Job in signoff's image, as signoff's ServiceAccount, which may delete that
/// one name); with managedBy=signoff the configuration is also owned by the
/// controller ClusterRole. tests/cluster.rs runs both on a real node.
#[test]
fn uninstall_removes_the_webhook_configuration_first() {
    for sets in [&[][..], CHART_MODE_SECRET] {
        let docs = documents(&render("signoff-system", sets));
        let jobs = of_kind(&docs, "Job");
        assert_eq!(jobs.len(), 1, "{sets:?}");
        let job = jobs[0];
        assert_eq!(job["metadata"]["annotations"]["helm.sh/hook"], "pre-delete");
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "signoff");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"], true);
        let args: Vec<&str> =
            pod["containers"][0]["args"].as_sequence().unwrap().iter().filter_map(|a| a.as_str()).collect();
        assert_eq!(args, ["remove-webhook-configuration", "--name=signoff"]);
        assert!(
            rbac_lines("x", &docs)
                .iter()
                .any(|l| l.contains("validatingwebhookconfigurations names=signoff verbs=delete")),
            "{sets:?}"
        );
    }
    let args = container_args(&documents(&render("signoff-system", &[])));
    assert!(args.contains(&"--webhook-config-owner=signoff-controller".to_string()), "{args:?}");
    assert!(args.contains(&"--shutdown-delay=5s".to_string()), "{args:?}");
    let off = documents(&render("signoff-system", &["webhook.removeOnUninstall=false"]));
    assert!(of_kind(&off, "Job").is_empty());
    assert!(!rbac_lines("x", &off).iter().any(|l| l.contains("verbs=delete")));
}

/// Issue 20: the web queue in the cluster, off by default; on, it is its own
/// Service (sessions on one replica), an optional Ingress at the host of ui.url,
/// the OIDC settings as flags (the client secret from a Secret, the CA from a
/// ConfigMap), and a NetworkPolicy rule for its port. signoff is given no
/// impersonation right either way: people's own ID tokens make the calls.
#[test]
fn the_web_queue_renders_only_when_enabled() {
    let off = documents(&render("signoff-system", &[]));
    assert!(!container_args(&off).iter().any(|a| a.starts_with("--ui-")), "off by default");
    assert!(!off.iter().any(|d| d["metadata"]["name"] == "signoff-ui"), "no ui Service by default");
    let on = documents(&render(
        "signoff-system",
        &[
            "ui.enabled=true",
            "ui.url=https://signoff.example.com",
            "ui.oidc.issuerURL=https://dex.example.com/dex",
            "ui.oidc.clientSecretName=signoff-oidc",
            "ui.oidc.caBundle=-----BEGIN CERTIFICATE-----",
            "ui.ingress.enabled=true",
            "ui.ingress.className=nginx",
            "ui.ingress.tlsSecretName=signoff-ui-tls",
        ],
    ));
    let args = container_args(&on);
    for flag in [
        "--ui-url=https://signoff.example.com",
        "--ui-addr=0.0.0.0:8090",
        "--ui-oidc-issuer=https://dex.example.com/dex",
        "--ui-oidc-client-id=signoff",
        "--ui-oidc-scope=groups",
        "--ui-oidc-ca-file=/ui-oidc-ca/ca.crt",
    ] {
        assert!(args.iter().any(|a| a == flag), "{flag} in {args:?}");
    }
    let pod = &of_kind(&on, "Deployment")[0]["spec"]["template"]["spec"];
    let env = serde_json::to_string(&pod["containers"][0]["env"]).unwrap();
    assert!(
        env.contains(r#""name":"SIGNOFF_UI_OIDC_CLIENT_SECRET""#) && env.contains(r#""name":"signoff-oidc""#),
        "{env}"
    );
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "signoff-ui-oidc-ca");
    let service =
        on.iter().find(|d| kind(d) == "Service" && d["metadata"]["name"] == "signoff-ui").expect("ui Service");
    assert_eq!(service["spec"]["sessionAffinity"], "ClientIP");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "ui");
    let ingress = &of_kind(&on, "Ingress")[0]["spec"];
    assert_eq!(ingress["rules"][0]["host"], "signoff.example.com");
    assert_eq!(ingress["tls"][0]["secretName"], "signoff-ui-tls");
    assert_eq!(ingress["ingressClassName"], "nginx");
    let policy = serde_json::to_string(&of_kind(&on, "NetworkPolicy")[0]["spec"]["ingress"]).unwrap();
    assert!(policy.contains(r#""port":"ui""#), "{policy}");
    for doc in of_kind(&on, "ClusterRole").into_iter().chain(of_kind(&on, "Role")) {
        let rules = serde_json::to_string(&doc["rules"]).unwrap();
        assert!(!rules.contains("impersonate"), "{}: {rules}", doc["metadata"]["name"].as_str().unwrap_or_default());
    }
    // Enabled without where it lives or whom to trust: refused by the schema.
    let out = Command::new(helm())
        .current_dir(root())
        .args(["template", "signoff", "charts/signoff", "--set", "ui.enabled=true"])
        .output()
        .expect("helm runs");
    assert!(!out.status.success(), "ui.enabled without ui.url is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/ui/url"), "{}", String::from_utf8_lossy(&out.stderr));
}
