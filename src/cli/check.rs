//! `kubectl signoff check`: the offline GitOps pre-flight. Evaluates manifests
//! against EscalationPolicies exactly as the webhook would, without a cluster.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::{Value, json};

use crate::crd::{EscalationPolicy, Operation};
use crate::policy::{Gvk, Gvr, PolicySet, ReviewInput, UserInfo, classify};
use crate::webhook::review::finalizing_delete;
use crate::webhook::route;

/// Exit code when every object would be admitted.
pub const EXIT_ADMITTED: i32 = 0;
/// Exit code on invalid input (manifests, policies or flags).
pub const EXIT_INVALID: i32 = 1;
/// Exit code when at least one object would be held for approval.
pub const EXIT_HELD: i32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

/// Evaluate manifests against EscalationPolicies, offline: would they be admitted
/// or held for approval, by whom, and why?
///
/// Every object is evaluated as a CREATE; with --from, objects found in the old
/// manifests (same kind, namespace and name) are evaluated as UPDATEs against them;
/// with --delete, as DELETEs. Namespace labels come from Namespace objects found
/// in any input (-f, --from, --namespaces), else from --namespace-labels.
/// Policies are read from --policies (default `./policies`, or $SIGNOFF_POLICIES). A TokenRequest manifest is
/// evaluated as `serviceaccounts/token`, a PodExecOptions one as a CONNECT to
/// `pods/exec` on the pod it names.
///
/// Exit status: 0 every object would be admitted, 2 something would be held,
/// 1 invalid input (the message names the file and the document, from 0).
///
/// Examples:
///   kubectl signoff check -f deploy/ --policies policies/
///   kubectl signoff check -f new.yaml --from old.yaml --as alice --as-group team:payments \
///       --namespaces cluster/namespaces.yaml
///   helm template . | kubectl signoff check -f - --namespace-labels signoff.dev/environment=production
///   kubectl signoff check -f pvc.yaml --delete -o json
#[derive(Args, Debug, Clone)]
#[command(verbatim_doc_comment)]
pub struct CheckArgs {
    /// Manifest file, directory (read recursively: *.yaml, *.yml, *.json) or `-`
    /// for stdin. Multi-document YAML, JSON and v1 Lists. Repeatable.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE|DIR|-")]
    pub files: Vec<String>,

    /// Directory (its own *.yaml files, not subdirectories) or file of
    /// EscalationPolicy manifests.
    #[arg(long, env = "SIGNOFF_POLICIES", default_value = "policies", value_name = "DIR")]
    pub policies: PathBuf,

    /// Old manifests: matching objects are evaluated as UPDATEs.
    #[arg(long, value_name = "FILE|DIR")]
    pub from: Vec<String>,

    /// Namespace manifests used only for their labels (not evaluated). Namespaces
    /// found in -f or --from inputs count too, and take precedence.
    #[arg(long, value_name = "FILE|DIR")]
    pub namespaces: Vec<String>,

    /// Evaluate the objects as DELETEs (what `kubectl delete -f` would do).
    #[arg(long, conflicts_with = "from")]
    pub delete: bool,

    /// Username of the requester: the global `--as`. Without it, rules that
    /// depend on who applies are reported as such, not evaluated.
    #[arg(skip)]
    pub as_user: String,

    /// Groups of the requester: the global `--as-group`, repeatable.
    #[arg(skip)]
    pub as_group: Vec<String>,

    /// Labels of namespaces not defined by a Namespace manifest, e.g.
    /// `signoff.dev/environment=production,signoff.dev/owner=payments`.
    #[arg(long, value_name = "K=V,...", value_delimiter = ',')]
    pub namespace_labels: Vec<String>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Invalid input: the message names the file and document.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckError(pub String);

/// One manifest document.
#[derive(Clone, Debug)]
pub struct Document {
    pub source: String,
    pub index: usize,
    pub object: Value,
}

/// The verdict for one object.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub source: String,
    pub document: usize,
    pub operation: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub admitted: bool,
    pub risk: String,
    pub action_class: String,
    pub routes: Vec<String>,
    pub reasons: Vec<String>,
    /// Monthly cost delta, e.g. `+292.00 USD`, when a matching policy has pricing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_delta: Option<String>,
    /// Low-risk rules that fired (recorded, not held).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recorded: Vec<String>,
    /// What Audit-mode policies would have held.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<String>,
    /// Rules not evaluated because they depend on who applies the change and no
    /// requester was given (`--as`): each may still hold it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on_requester: Vec<String>,
    /// Why the change is not classified at all (signoff's own or an exempt resource).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Runs the command; returns the exit code. Output goes to `out`, diagnostics to `err`.
pub fn run(args: &CheckArgs, kube: &super::kube::KubeArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    // The requester is kubectl's --as / --as-group: here not impersonated, evaluated as.
    let mut args = args.clone();
    if let Some(user) = &kube.as_user {
        args.as_user = user.clone();
    }
    args.as_group = kube.as_group.clone();
    let args = &args;
    match evaluate(args) {
        Ok(results) => {
            let held = results.iter().any(|r| !r.admitted);
            let written = match args.output {
                Output::Table => write_table(&results, out),
                Output::Json => serde_json::to_writer_pretty(&mut *out, &results)
                    .map_err(std::io::Error::other)
                    .and_then(|_| writeln!(out)),
                Output::Yaml => serde_yaml::to_string(&results)
                    .map_err(std::io::Error::other)
                    .and_then(|s| out.write_all(s.as_bytes())),
            };
            if let Err(e) = written {
                let _ = writeln!(err, "error: writing output: {e}");
                return EXIT_INVALID;
            }
            if held { EXIT_HELD } else { EXIT_ADMITTED }
        }
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            EXIT_INVALID
        }
    }
}

/// Loads everything and classifies every object.
pub fn evaluate(args: &CheckArgs) -> Result<Vec<CheckResult>, CheckError> {
    let set = load_policies(&args.policies)?;
    let mut docs = Vec::new();
    for f in &args.files {
        docs.extend(load_documents(f)?);
    }
    let mut old_docs = Vec::new();
    for f in &args.from {
        old_docs.extend(load_documents(f)?);
    }
    let mut context_docs = Vec::new();
    for f in &args.namespaces {
        context_docs.extend(load_documents(f)?);
    }
    let default_labels = parse_labels(&args.namespace_labels)?;
    let mut namespaces: HashMap<String, Value> = HashMap::new();
    for d in context_docs.iter().chain(&old_docs).chain(&docs) {
        if d.object.get("kind").and_then(Value::as_str) == Some("Namespace")
            && let Some(name) = d.object.pointer("/metadata/name").and_then(Value::as_str)
        {
            namespaces.insert(name.to_string(), d.object.clone());
        }
    }
    let mut old_by_key: HashMap<(String, String, String), Value> = HashMap::new();
    for d in &old_docs {
        let t = target(d)?;
        old_by_key.insert((t.kind.kind.clone(), t.namespace.clone(), t.name.clone()), d.object.clone());
    }
    let user = UserInfo {
        username: args.as_user.clone(),
        uid: String::new(),
        // As the API server: every authenticated user is in system:authenticated.
        groups: if args.as_user.is_empty() && args.as_group.is_empty() {
            vec![]
        } else {
            [args.as_group.clone(), vec!["system:authenticated".into()]].concat()
        },
    };
    let mut results = Vec::with_capacity(docs.len());
    for d in &docs {
        let t = target(d)?;
        let (operation, object, old_object) = if args.delete {
            (Operation::Delete, None, Some(d.object.clone()))
        } else if t.connect {
            (Operation::Connect, Some(d.object.clone()), None)
        } else if let Some(old) = old_by_key.get(&(t.kind.kind.clone(), t.namespace.clone(), t.name.clone())) {
            (Operation::Update, Some(d.object.clone()), Some(old.clone()))
        } else {
            (Operation::Create, Some(d.object.clone()), None)
        };
        let namespace_object = if t.namespace.is_empty() || t.resource.resource == "namespaces" {
            None
        } else {
            Some(std::sync::Arc::new(namespaces.get(&t.namespace).cloned().unwrap_or_else(|| {
                json!({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": t.namespace, "labels": default_labels}})
            })))
        };
        let input = ReviewInput {
            operation,
            user: user.clone(),
            kind: t.kind.clone(),
            resource: t.resource.clone(),
            sub_resource: t.sub_resource.clone(),
            namespace: t.namespace.clone(),
            name: t.name.clone(),
            dry_run: false,
            object,
            old_object,
            namespace_object,
        };
        results.push(judge(&input, &set, d));
    }
    Ok(results)
}

/// The webhook's verdict on one input, offline: its own and exempt resources
/// are never classified, a finalizer removal that completes a deletion is judged
/// as that DELETE, and a write that makes a controller delete or scale is judged
/// as that change too (minus a namespace deletion's sweep, which needs discovery).
pub fn judge(input: &ReviewInput, set: &PolicySet, d: &Document) -> CheckResult {
    let finalizing = finalizing_delete(input);
    let route = route::route(input, finalizing.as_ref(), set, false);
    let checked = CheckResult {
        source: d.source.clone(),
        document: d.index,
        operation: format!("{:?}", input.operation).to_uppercase(),
        kind: input.kind.kind.clone(),
        namespace: input.namespace.clone(),
        name: input.name.clone(),
        admitted: true,
        risk: crate::crd::Risk::Low.as_str().to_string(),
        action_class: String::new(),
        routes: vec![],
        reasons: vec![],
        cost_delta: None,
        recorded: vec![],
        audit: vec![],
        depends_on_requester: vec![],
        note: None,
    };
    if let Some(note) = route.note() {
        return CheckResult { note: Some(note.to_string()), ..checked };
    }
    let judged = finalizing.as_ref().unwrap_or(input);
    let enabled = crate::policy::side_doors::enabled_changes(judged);
    let a = crate::policy::side_doors::with_enabled(classify(judged, set), &enabled, set);
    CheckResult {
        admitted: !a.held(),
        risk: a.risk.as_str().to_string(),
        action_class: a.action_class.as_str().to_string(),
        routes: a.routes.iter().cloned().collect(),
        reasons: a.reasons(),
        cost_delta: a.cost.as_ref().map(|c| format!("{:+.2} {}", c.monthly_delta, c.currency)),
        recorded: a
            .fired
            .iter()
            .filter(|f| f.risk < crate::crd::Risk::Medium)
            .map(|f| format!("{}/{}: {}", f.policy, f.rule, f.message))
            .collect(),
        audit: a
            .audit
            .iter()
            .map(|f| format!("{}/{}: {}", f.policy, f.rule, f.message))
            .chain(
                a.audit_errors.iter().map(|e| format!("{}/{}: evaluation error: {}", e.policy, e.location, e.message)),
            )
            .collect(),
        depends_on_requester: a.unknown_requester.iter().map(|r| format!("{}/{}", r.0, r.1)).collect(),
        ..checked
    }
}

fn parse_labels(pairs: &[String]) -> Result<BTreeMap<String, String>, CheckError> {
    pairs
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CheckError(format!("--namespace-labels: {p:?} is not key=value"))),
        })
        .collect()
}

/// Loads and compiles the policies; any invalid one is an error naming it.
pub fn load_policies(path: &Path) -> Result<PolicySet, CheckError> {
    if !path.exists() {
        return Err(CheckError(format!(
            "policies: {} does not exist (pass --policies DIR or set SIGNOFF_POLICIES)",
            path.display()
        )));
    }
    let mut policies = Vec::new();
    // A directory's own files only: its subdirectories hold other things (the
    // library keeps its test cases in policies/tests).
    let mut documents = Vec::new();
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| CheckError(format!("{}: {e}", path.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json"))
            .collect();
        files.sort();
        for f in files {
            documents.extend(load_documents(&f.to_string_lossy())?);
        }
    } else {
        documents = load_documents(&path.to_string_lossy())?;
    }
    for d in documents {
        let p: EscalationPolicy = serde_json::from_value(d.object).map_err(|e| {
            CheckError(format!("{}: document {}: not a valid EscalationPolicy: {e}", d.source, d.index))
        })?;
        if p.metadata.name.as_deref().unwrap_or_default().is_empty() {
            return Err(CheckError(format!(
                "{}: document {}: EscalationPolicy without metadata.name",
                d.source, d.index
            )));
        }
        policies.push((d.source, p));
    }
    let set = PolicySet::new(policies.iter().map(|(_, p)| p));
    if let Some(e) = set.errors().next() {
        let file = policies
            .iter()
            .find(|(_, p)| p.metadata.name.as_deref() == Some(e.policy.as_str()))
            .map(|(f, _)| f.as_str())
            .unwrap_or("?");
        return Err(CheckError(format!("{file}: {e}")));
    }
    Ok(set)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CheckError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CheckError(format!("{}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            files_under(&p, out)?;
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            out.push(p);
        }
    }
    Ok(())
}

/// Reads a file, a directory (recursively) or `-` (stdin) into documents. Empty
/// documents are skipped; v1 Lists are expanded (their items keep the index of
/// the List document).
pub fn load_documents(path: &str) -> Result<Vec<Document>, CheckError> {
    let mut sources: Vec<(String, String)> = Vec::new();
    if path == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| CheckError(format!("stdin: {e}")))?;
        sources.push(("<stdin>".into(), text));
    } else {
        let p = Path::new(path);
        let files = if p.is_dir() {
            let mut v = Vec::new();
            files_under(p, &mut v)?;
            v
        } else {
            vec![p.to_path_buf()]
        };
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| CheckError(format!("{}: {e}", f.display())))?;
            sources.push((f.display().to_string(), text));
        }
    }
    let mut docs = Vec::new();
    for (source, text) in sources {
        docs.extend(parse_documents(&source, &text)?);
    }
    Ok(docs)
}

/// Parses multi-document YAML (JSON is YAML) into objects.
pub fn parse_documents(source: &str, text: &str) -> Result<Vec<Document>, CheckError> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(de).map_err(|e| CheckError(format!("{source}: document {index}: {e}")))?;
        match value {
            Value::Null => continue,
            Value::Object(_) => {}
            _ => return Err(CheckError(format!("{source}: document {index}: not a Kubernetes object"))),
        }
        if value.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List"))
            && let Some(items) = value.get("items").and_then(Value::as_array)
        {
            for item in items {
                check_object(source, index, item)?;
                docs.push(Document { source: source.to_string(), index, object: item.clone() });
            }
            continue;
        }
        check_object(source, index, &value)?;
        docs.push(Document { source: source.to_string(), index, object: value });
    }
    Ok(docs)
}

fn check_object(source: &str, index: usize, v: &Value) -> Result<(), CheckError> {
    let missing = |what: &str| CheckError(format!("{source}: document {index}: missing {what}"));
    let s = |ptr: &str| v.pointer(ptr).and_then(Value::as_str).filter(|s| !s.is_empty());
    s("/apiVersion").ok_or_else(|| missing("apiVersion"))?;
    s("/kind").ok_or_else(|| missing("kind"))?;
    s("/metadata/name").ok_or_else(|| missing("metadata.name"))?;
    if !v.is_object() || !v.get("metadata").is_some_and(Value::is_object) {
        return Err(missing("metadata"));
    }
    Ok(())
}

/// What a manifest is, as an admission request would name it.
/// What an object is to the API server: kind, resource, where, and whether
/// a write to it is a CONNECT (pods/exec).
pub struct Target {
    pub kind: Gvk,
    pub resource: Gvr,
    pub sub_resource: String,
    pub namespace: String,
    pub name: String,
    pub connect: bool,
    pub namespaced: bool,
}

/// Kinds served by the API server: (kind, resource, namespaced).
const KINDS: &[(&str, &str, bool)] = &[
    ("Pod", "pods", true),
    ("Service", "services", true),
    ("ConfigMap", "configmaps", true),
    ("Secret", "secrets", true),
    ("ServiceAccount", "serviceaccounts", true),
    ("PersistentVolumeClaim", "persistentvolumeclaims", true),
    ("PersistentVolume", "persistentvolumes", false),
    ("Namespace", "namespaces", false),
    ("Node", "nodes", false),
    ("Endpoints", "endpoints", true),
    ("LimitRange", "limitranges", true),
    ("ResourceQuota", "resourcequotas", true),
    ("Deployment", "deployments", true),
    ("StatefulSet", "statefulsets", true),
    ("DaemonSet", "daemonsets", true),
    ("ReplicaSet", "replicasets", true),
    ("Job", "jobs", true),
    ("CronJob", "cronjobs", true),
    ("Ingress", "ingresses", true),
    ("IngressClass", "ingressclasses", false),
    ("NetworkPolicy", "networkpolicies", true),
    ("Role", "roles", true),
    ("RoleBinding", "rolebindings", true),
    ("ClusterRole", "clusterroles", false),
    ("ClusterRoleBinding", "clusterrolebindings", false),
    ("HorizontalPodAutoscaler", "horizontalpodautoscalers", true),
    ("PodDisruptionBudget", "poddisruptionbudgets", true),
    ("StorageClass", "storageclasses", false),
    ("PriorityClass", "priorityclasses", false),
    ("CustomResourceDefinition", "customresourcedefinitions", false),
    ("APIService", "apiservices", false),
    ("GatewayClass", "gatewayclasses", false),
    ("RuntimeClass", "runtimeclasses", false),
    ("CSIDriver", "csidrivers", false),
    ("ClusterIssuer", "clusterissuers", false),
    ("ValidatingWebhookConfiguration", "validatingwebhookconfigurations", false),
    ("MutatingWebhookConfiguration", "mutatingwebhookconfigurations", false),
    ("ValidatingAdmissionPolicy", "validatingadmissionpolicies", false),
    ("EscalationPolicy", "escalationpolicies", false),
    ("Team", "teams", false),
    ("Approver", "approvers", false),
    ("ApprovalRequest", "approvalrequests", true),
];

/// The resource for a kind: the table, else the lowercase plural (`y` → `ies`,
/// `s`/`x`/`ch`/`sh` → `es`, else `s`), assumed namespaced.
pub fn resource_for_kind(kind: &str) -> (String, bool) {
    if let Some((_, r, namespaced)) = KINDS.iter().find(|(k, _, _)| *k == kind) {
        return (r.to_string(), *namespaced);
    }
    let lower = kind.to_lowercase();
    let plural = if let Some(stem) = lower.strip_suffix('y').filter(|s| !s.ends_with(['a', 'e', 'i', 'o', 'u'])) {
        format!("{stem}ies")
    } else if lower.ends_with('s') || lower.ends_with('x') || lower.ends_with("ch") || lower.ends_with("sh") {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    };
    (plural, true)
}

fn target(d: &Document) -> Result<Target, CheckError> {
    let o = &d.object;
    let s = |ptr: &str| o.pointer(ptr).and_then(Value::as_str).unwrap_or_default().to_string();
    let api_version = s("/apiVersion");
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.clone()),
    };
    let kind = s("/kind");
    let name = s("/metadata/name");
    let ns = s("/metadata/namespace");
    let gvk = Gvk { group: group.clone(), version: version.clone(), kind: kind.clone() };
    let core = |resource: &str| Gvr { group: String::new(), version: "v1".into(), resource: resource.into() };
    let namespace = if ns.is_empty() { "default".to_string() } else { ns };
    match kind.as_str() {
        "TokenRequest" => {
            return Ok(Target {
                kind: gvk,
                resource: core("serviceaccounts"),
                sub_resource: "token".into(),
                namespace,
                name,
                connect: false,
                namespaced: true,
            });
        }
        "PodExecOptions" => {
            return Ok(Target {
                kind: gvk,
                resource: core("pods"),
                sub_resource: "exec".into(),
                namespace,
                name,
                connect: true,
                namespaced: true,
            });
        }
        _ => {}
    }
    let (resource, namespaced) = resource_for_kind(&kind);
    let namespace = if namespaced {
        namespace
    } else if resource == "namespaces" {
        name.clone()
    } else {
        String::new()
    };
    Ok(Target {
        kind: gvk,
        resource: Gvr { group, version, resource },
        sub_resource: String::new(),
        namespace,
        name,
        connect: false,
        namespaced,
    })
}

/// The [`Target`] of a manifest document.
pub fn target_of(d: &Document) -> Result<Target, CheckError> {
    target(d)
}

fn write_table(results: &[CheckResult], out: &mut dyn Write) -> std::io::Result<()> {
    let rows: Vec<[String; 7]> = results
        .iter()
        .map(|r| {
            let obj = if r.namespace.is_empty() || r.kind == "Namespace" {
                format!("{} {}", r.kind, r.name)
            } else {
                format!("{} {}/{}", r.kind, r.namespace, r.name)
            };
            [
                if r.admitted { "admitted".into() } else { "HELD".into() },
                r.operation.clone(),
                obj,
                r.risk.clone(),
                if r.admitted { "-".into() } else { r.action_class.clone() },
                if r.routes.is_empty() { "-".into() } else { r.routes.join(",") },
                r.cost_delta.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["RESULT", "OPERATION", "OBJECT", "RISK", "CLASS", "ROUTES", "COST/MONTH"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 7], out: &mut dyn Write| -> std::io::Result<()> {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(header, out)?;
    for (row, r) in rows.iter().zip(results) {
        line(row.each_ref().map(String::as_str), out)?;
        for reason in &r.reasons {
            writeln!(out, "    - {reason}")?;
        }
        for rec in &r.recorded {
            writeln!(out, "    . recorded (low risk): {rec}")?;
        }
        for a in &r.audit {
            writeln!(out, "    . audit (not enforced): {a}")?;
        }
        for rule in &r.depends_on_requester {
            writeln!(out, "    ? depends on who applies (not evaluated; pass --as and --as-group): {rule}")?;
        }
        if let Some(note) = &r.note {
            writeln!(out, "    . {note}")?;
        }
    }
    let held = results.iter().filter(|r| !r.admitted).count();
    writeln!(out, "{} object(s): {} admitted, {} held for approval", results.len(), results.len() - held, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_to_resource() {
        assert_eq!(resource_for_kind("Deployment"), ("deployments".into(), true));
        assert_eq!(resource_for_kind("ClusterRole"), ("clusterroles".into(), false));
        assert_eq!(resource_for_kind("Ingress"), ("ingresses".into(), true));
        assert_eq!(resource_for_kind("NetworkPolicy"), ("networkpolicies".into(), true));
        assert_eq!(resource_for_kind("Gateway"), ("gateways".into(), true));
        assert_eq!(resource_for_kind("HTTPRouteCopy"), ("httproutecopies".into(), true));
        assert_eq!(resource_for_kind("Gateway"), ("gateways".into(), true));
        assert_eq!(resource_for_kind("Box"), ("boxes".into(), true));
        assert_eq!(resource_for_kind("Key"), ("keys".into(), true));
    }

    #[test]
    fn documents_and_lists() {
        let text = "---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n---\n---\n{\"apiVersion\": \"v1\", \"kind\": \"Secret\", \"metadata\": {\"name\": \"s\"}}\n";
        let docs = parse_documents("x.yaml", text).unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[2].index, 2);
        let err =
            parse_documents("x.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: Secret\n")
                .unwrap_err();
        assert_eq!(err.to_string(), "x.yaml: document 1: missing apiVersion");
        let err = parse_documents("x.yaml", "a: [\n").unwrap_err();
        assert!(err.to_string().starts_with("x.yaml: document 0: "), "{err}");
        assert!(parse_labels(&["a=b".into(), "c".into()]).is_err());
    }
}
