//! The fuzz targets' bodies. Each takes raw bytes from libFuzzer, drives signoff's
//! real code with them and asserts what must hold for any input; a failed assertion
//! or a panic is a crash. Kept in a library so the three targets share the example
//! policies and namespaces, which are compiled once per process.

use std::sync::LazyLock;

use kube::core::admission::AdmissionResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use signoff::crd::{EscalationPolicy, Operation};
use signoff::digest::{ChangeTarget, canonical_json, canonical_object, change_digest, is_noop_update, request_name};
use signoff::policy::{Assessment, Gvk, Gvr, PolicySet, ReviewInput, UserInfo, classify as policy_classify};
use signoff::webhook::packet::packet;
use signoff::webhook::review::{GateSettings, Preliminary, decide_existing, digest_of, preliminary};
use signoff::webhook::server::parse_review;

/// Every file of the policy library (`policies/`), built in so a fuzz binary
/// needs no files.
const POLICY_FILES: &[&str] = &[
    include_str!("../../policies/access.yaml"),
    include_str!("../../policies/change-management.yaml"),
    include_str!("../../policies/cost.yaml"),
    include_str!("../../policies/data.yaml"),
    include_str!("../../policies/network.yaml"),
    include_str!("../../policies/pod-security.yaml"),
    include_str!("../../policies/workloads.yaml"),
];

const NAMESPACES: &str = include_str!("../../examples/manifests/namespaces.yaml");

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("example YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The example policies, compiled once. Each must compile: a fuzz run against a
/// set with invalid policies would test the wrong thing.
pub static POLICIES: LazyLock<PolicySet> = LazyLock::new(|| {
    let policies: Vec<EscalationPolicy> = POLICY_FILES
        .iter()
        .flat_map(|text| yaml_documents(text))
        .map(|v| serde_json::from_value(v).expect("example policy is an EscalationPolicy"))
        .collect();
    assert!(policies.len() >= POLICY_FILES.len());
    let set = PolicySet::new(&policies);
    if let Some(e) = set.errors().next() {
        panic!("example policy does not compile: {e:?}");
    }
    set
});

/// The example Namespaces (with their environment and owner labels).
pub static NAMESPACE_OBJECTS: LazyLock<Vec<Value>> = LazyLock::new(|| yaml_documents(NAMESPACES));

fn settings() -> GateSettings {
    GateSettings {
        controller_namespace: "signoff-system".into(),
        break_glass_groups: vec!["signoff:break-glass".into()],
        // The server refuses uncovered resources before these pure steps.
        refuse_uncovered: false,
        max_pending_per_requester: 20,
        gitops: Default::default(),
    }
}

/// The cached Namespace object the webhook would pass for a namespace, if known.
fn namespace_object(namespace: &str) -> Option<Value> {
    NAMESPACE_OBJECTS.iter().find(|n| n.pointer("/metadata/name").and_then(Value::as_str) == Some(namespace)).cloned()
}

/// Whether a value holds a non-integer number. serde_json (without its
/// `float_roundtrip` feature, as signoff builds it) parses a float's shortest text
/// only to within an ulp, so printing and re-parsing a float may move it: a parse
/// of the same text is always the same, which is all a digest needs (the API server
/// sends one text), but re-encoding checks must skip such values.
fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

fn is_digest(d: &str) -> bool {
    d.len() == 64 && d.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What must hold for any classified input, whatever it is: the gate's decision
/// agrees with the assessment, the digest is well formed and stable, and a held
/// change yields a packet whose digest admits exactly this change.
fn check_gate(input: &ReviewInput, assessment: &Assessment) {
    assert_ne!(input.operation, Operation::All, "`*` is never a request's operation");
    assert_eq!(
        assessment.held(),
        !assessment.errors.is_empty() || assessment.fired.iter().any(|f| f.risk >= signoff::crd::Risk::Medium)
    );
    if assessment.held() {
        assert!(!assessment.routes.is_empty(), "a held change names who must approve it: {assessment:?}");
    }
    // Classification is pure: the same input is classified the same way again.
    assert_eq!(assessment, &policy_classify(input, &POLICIES), "classify is not deterministic for {input:?}");
    let digest = digest_of(input);
    assert!(is_digest(&digest), "digest {digest:?}");
    assert_eq!(digest, digest_of(input));
    match preliminary(input, assessment, &settings()) {
        Preliminary::Admit { .. } => assert!(!assessment.held()),
        Preliminary::BreakGlass { .. } | Preliminary::DryRun { .. } | Preliminary::NoOp => assert!(assessment.held()),
        Preliminary::Held { digest: held, namespace, name } => {
            assert!(assessment.held());
            assert_eq!(held, digest);
            assert_eq!(name, request_name(&digest));
            assert!(!namespace.is_empty(), "an ApprovalRequest needs a namespace");
            let mut ar = packet(input, assessment, &POLICIES, &held, &namespace, &name, &Default::default());
            assert_eq!(ar.spec.digest, digest);
            serde_json::to_vec(&ar).expect("an ApprovalRequest serializes");
            // A fresh request never admits; one for another digest never does either.
            let now = jiff::Timestamp::UNIX_EPOCH;
            for finalizing in [false, true] {
                let answer = decide_existing(&ar, &digest, now, finalizing);
                assert!(matches!(answer, signoff::webhook::review::Answer::Deny { .. }), "{answer:?}");
            }
            ar.spec.digest = "0".repeat(64);
            let answer = decide_existing(&ar, &digest, now, false);
            assert!(matches!(answer, signoff::webhook::review::Answer::Deny { .. }), "{answer:?}");
        }
    }
}

/// `admission_review`: the bytes are the body of a POST to the webhook. Decodes
/// them as the server does (`parse_review`, then ReviewInput),
/// classifies against the example policies and runs the gate's pure decisions.
/// Also: re-encoding the decoded request and decoding it again gives the same
/// digest, so a digest never depends on how the same request was spelled.
pub fn admission_review(data: &[u8]) {
    let Ok((req, objects)) = parse_review(data) else { return };
    // Every decoded request can be answered.
    serde_json::to_vec(&AdmissionResponse::from(&req).into_review()).expect("an AdmissionReview response serializes");
    let mut encoded = serde_json::to_value(&req).expect("an AdmissionRequest serializes");
    for (key, object) in [("object", &objects.object), ("oldObject", &objects.old_object)] {
        encoded[key] = object.clone().unwrap_or(Value::Null);
    }
    let ns = req.namespace.as_deref().and_then(namespace_object).map(std::sync::Arc::new);
    let input = ReviewInput::from_request(&req, objects.object, objects.old_object, ns.clone());
    let assessment = policy_classify(&input, &POLICIES);
    check_gate(&input, &assessment);

    let again = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": encoded});
    let (again, objects) =
        parse_review(&serde_json::to_vec(&again).unwrap()).expect("a re-encoded AdmissionReview decodes");
    let again = ReviewInput::from_request(&again, objects.object, objects.old_object, ns);
    if !signoff::webhook::review::subject(&input).is_some_and(has_float) {
        assert_eq!(digest_of(&again), digest_of(&input), "re-encoding changed the digest");
    }
}

const OPERATIONS: [&str; 4] = ["CREATE", "UPDATE", "DELETE", "CONNECT"];
const SUB_RESOURCES: [&str; 3] = ["", "status", "scale"];

/// `digest`: the first byte picks the operation and subresource; the rest is any
/// JSON value, the object. Checks what the canonical form promises: it is a fixed
/// point, its JSON text parses back to it, server-set fields and the ignored
/// annotations never change a digest, and an object is a no-op update of itself.
pub fn digest(data: &[u8]) {
    let Some((&selector, json)) = data.split_first() else { return };
    let Ok(object) = serde_json::from_slice::<Value>(json) else { return };
    let operation = OPERATIONS[usize::from(selector) % 4];
    let sub_resource = SUB_RESOURCES[usize::from(selector / 4) % 3];
    let canonical = canonical_object(&object, sub_resource);
    assert_eq!(canonical_object(&canonical, sub_resource), canonical, "canonical_object is not idempotent");
    let text = canonical_json(&canonical);
    let parsed: Value = serde_json::from_str(&text).expect("canonical JSON parses");
    if !has_float(&canonical) {
        assert_eq!(parsed, canonical, "canonical JSON does not round-trip: {text}");
        assert_eq!(canonical_json(&parsed), text);
    }
    assert!(is_noop_update(&object, &object, sub_resource));

    let target = ChangeTarget {
        operation,
        group: "apps",
        version: "v1",
        kind: "Deployment",
        resource: "deployments",
        sub_resource,
        namespace: "payments-prod",
        name: "web",
    };
    let digest = change_digest(&target, Some(&object));
    assert!(is_digest(&digest));
    if operation == "DELETE" {
        return; // bound to the uid, which the canonical form drops
    }
    assert_eq!(change_digest(&target, Some(&canonical)), digest, "digest of the canonical form differs");
    // The same object as the API server stores it: server-set fields, kubectl's
    // annotation, a status. None of it changes what the change does.
    let mut stored = object.clone();
    if let Some(meta) = stored.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!("4711"));
        meta.insert("uid".into(), json!("0b4e5e4c-2a47-4c4f-9f59-1f7c1ffde0a1"));
        meta.insert("generation".into(), json!(7));
        meta.insert("creationTimestamp".into(), json!("2026-11-22T10:00:00Z"));
        meta.insert("managedFields".into(), json!([{"manager": "kubectl", "operation": "Apply"}]));
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert("kubectl.kubernetes.io/last-applied-configuration".into(), json!("{}"));
        }
    }
    if sub_resource != "status"
        && let Some(root) = stored.as_object_mut()
    {
        root.insert("status".into(), json!({"observedGeneration": 7}));
    }
    assert_eq!(change_digest(&target, Some(&stored)), digest, "server-set fields changed the digest of {object}");
    assert!(is_noop_update(&stored, &object, sub_resource));
}

/// Kinds the example policies select, with the subresources they care about.
const RESOURCES: &[(&str, &str, &str, &str, &[&str])] = &[
    ("apps", "v1", "deployments", "Deployment", &["", "scale", "status"]),
    ("apps", "v1", "statefulsets", "StatefulSet", &["", "scale"]),
    ("apps", "v1", "daemonsets", "DaemonSet", &[""]),
    ("batch", "v1", "jobs", "Job", &[""]),
    ("batch", "v1", "cronjobs", "CronJob", &[""]),
    ("", "v1", "configmaps", "ConfigMap", &[""]),
    ("", "v1", "secrets", "Secret", &[""]),
    ("", "v1", "services", "Service", &["", "status"]),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", &[""]),
    ("", "v1", "namespaces", "Namespace", &[""]),
    ("", "v1", "pods", "Pod", &["exec", "attach", "ephemeralcontainers", ""]),
    ("", "v1", "serviceaccounts", "ServiceAccount", &["token", ""]),
    ("networking.k8s.io", "v1", "ingresses", "Ingress", &[""]),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", &[""]),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", &[""]),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", &[""]),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", &[""]),
];

const NAMESPACE_NAMES: [&str; 5] = ["payments-prod", "payments-staging", "payments-dev", "kube-system", ""];

const USERS: &[(&str, &[&str])] = &[
    ("alice", &["team:payments", "system:authenticated"]),
    ("system:serviceaccount:kube-system:deployment-controller", &["system:serviceaccounts:kube-system"]),
    ("mallory", &["signoff:break-glass"]),
    ("system:serviceaccount:argocd:argocd-application-controller", &["system:serviceaccounts"]),
];

/// Bytes the `classify` target reads before its JSON part.
pub const CLASSIFY_HEADER: usize = 5;

/// `classify`: header bytes pick the resource (and subresource), operation,
/// namespace, requester and dry run from tables of what the example policies
/// select; the rest is JSON `{"object": …, "oldObject": …, "namespaceObject": …}`
/// with any values (a given `namespaceObject` replaces the example Namespace).
/// Classifies against every example policy and checks the gate's invariants.
pub fn classify_input(data: &[u8]) -> Option<ReviewInput> {
    if data.len() < CLASSIFY_HEADER {
        return None;
    }
    let (header, json) = data.split_at(CLASSIFY_HEADER);
    let body: Value = serde_json::from_slice(json).ok()?;
    let (group, version, resource, kind, subs) = RESOURCES[usize::from(header[0]) % RESOURCES.len()];
    let sub_resource = subs[usize::from(header[0]) / RESOURCES.len() % subs.len()];
    let operation =
        [Operation::Create, Operation::Update, Operation::Delete, Operation::Connect][usize::from(header[1]) % 4];
    let mut namespace = NAMESPACE_NAMES[usize::from(header[2]) % NAMESPACE_NAMES.len()].to_string();
    let (username, groups) = USERS[usize::from(header[3]) % USERS.len()];
    let field = |key: &str| body.get(key).cloned().filter(|v| !v.is_null());
    let object = field("object");
    let old_object = field("oldObject");
    let name = object
        .as_ref()
        .or(old_object.as_ref())
        .and_then(|o| o.pointer("/metadata/name"))
        .and_then(Value::as_str)
        .unwrap_or("web")
        .to_string();
    if resource == "namespaces" {
        namespace = name.clone(); // a Namespace's request names itself as its namespace
    }
    let namespace_object = field("namespaceObject").or_else(|| namespace_object(&namespace)).map(std::sync::Arc::new);
    Some(ReviewInput {
        operation,
        user: UserInfo {
            username: username.into(),
            uid: "7c3e".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        },
        kind: Gvk { group: group.into(), version: version.into(), kind: kind.into() },
        resource: Gvr { group: group.into(), version: version.into(), resource: resource.into() },
        sub_resource: sub_resource.into(),
        namespace,
        name,
        dry_run: header[4] & 1 == 1,
        object,
        old_object,
        namespace_object,
    })
}

/// The `classify` target: see [`classify_input`].
pub fn classify(data: &[u8]) {
    let Some(input) = classify_input(data) else { return };
    let assessment = policy_classify(&input, &POLICIES);
    check_gate(&input, &assessment);
}
