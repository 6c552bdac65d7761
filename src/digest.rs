//! The canonical change digest: SHA-256 over what a change does, so that an
//! approval admits exactly the approved change and nothing else.
//!
//! The canonical form is: operation, group/version/kind, resource and subresource,
//! namespace, name, and the object with server-set and volatile fields removed.
//! `kubectl apply`, `kubectl apply --server-side`, `kubectl replace` and a GitOps
//! tool's apply of the same content reach admission as the same defaulted object,
//! differing only in fields removed here, so they share a digest. A field set to
//! null is the same as an absent one (the API server prunes nulls from built-in
//! and structural objects alike). Pure: no I/O.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Annotations that never change what a change does.
const IGNORED_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    // Written by the Deployment controller: `kubectl apply` carries it over from the
    // stored object, `kubectl replace` of the same manifest does not.
    "deployment.kubernetes.io/revision",
    // Requesters add context without voiding an approval (DESIGN.md).
    "signoff.dev/reason",
    "signoff.dev/ticket",
];

/// Metadata the API server sets or that changes on every write.
const VOLATILE_METADATA: &[&str] =
    &["resourceVersion", "uid", "generation", "creationTimestamp", "managedFields", "selfLink"];

/// What a change is applied to, as the admission request names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeTarget<'a> {
    pub operation: &'a str,
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    pub resource: &'a str,
    pub sub_resource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// The object with server-set and volatile fields removed. `status` is kept only
/// for writes to the status subresource, where it is the change itself.
pub fn canonical_object(object: &Value, sub_resource: &str) -> Value {
    let mut object = object.clone();
    drop_nulls(&mut object);
    if let Some(root) = object.as_object_mut() {
        if sub_resource != "status" {
            root.remove("status");
        }
        if let Some(meta) = root.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in VOLATILE_METADATA {
                meta.remove(*field);
            }
            if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
                for key in IGNORED_ANNOTATIONS {
                    annotations.remove(*key);
                }
            }
            // `annotations: {}` and no annotations at all are the same object.
            for field in ["annotations", "labels"] {
                if meta.get(field).is_some_and(|v| v.as_object().is_some_and(Map::is_empty) || v.is_null()) {
                    meta.remove(field);
                }
            }
        }
    }
    object
}

/// Remove every object field whose value is null, at every level (array items
/// keep their places: there, null is a value).
fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Serialize with object keys sorted at every level, so key order never matters.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The canonical JSON text of a value.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

/// SHA-256 (lowercase hex) of a change. For DELETE, `object` is the old object and
/// only its uid counts: deleting this very object, not another one with its name.
pub fn change_digest(target: &ChangeTarget, object: Option<&Value>) -> String {
    let body = match (target.operation, object) {
        ("DELETE", Some(old)) => {
            Value::String(old.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string())
        }
        (_, Some(obj)) => canonical_object(obj, target.sub_resource),
        (_, None) => Value::Null,
    };
    let header = [
        target.operation,
        target.group,
        target.version,
        target.kind,
        target.resource,
        target.sub_resource,
        target.namespace,
        target.name,
    ];
    let mut hasher = Sha256::new();
    // Length-prefixed fields: no two different headers serialize the same way.
    for field in header {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hasher.update(canonical_json(&body).as_bytes());
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// True when an UPDATE changes nothing that matters: its canonical object equals
/// the stored one's (e.g. a re-apply of an unchanged manifest).
pub fn is_noop_update(object: &Value, old_object: &Value, sub_resource: &str) -> bool {
    canonical_object(object, sub_resource) == canonical_object(old_object, sub_resource)
}

/// Name of the ApprovalRequest for a digest: `ar-` and the first 12 hex digits
/// (48 bits). The full digest is in the spec and is always compared too.
pub fn request_name(digest: &str) -> String {
    format!("ar-{}", &digest[..12.min(digest.len())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target<'a>(op: &'a str, ns: &'a str) -> ChangeTarget<'a> {
        ChangeTarget {
            operation: op,
            group: "apps",
            version: "v1",
            kind: "Deployment",
            resource: "deployments",
            sub_resource: "",
            namespace: ns,
            name: "api",
        }
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "prod", "labels": {"app": "api"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "api", "image": "api:1.2"}]}}}
        })
    }

    #[test]
    fn server_set_fields_and_ignored_annotations_do_not_change_the_digest() {
        let plain = deployment();
        let mut stored = deployment();
        let meta = stored["metadata"].as_object_mut().unwrap();
        meta.insert("resourceVersion".into(), json!("12345"));
        meta.insert("uid".into(), json!("6a1f"));
        meta.insert("generation".into(), json!(4));
        meta.insert("creationTimestamp".into(), json!("2026-11-22T10:00:00Z"));
        meta.insert("managedFields".into(), json!([{"manager": "kubectl", "operation": "Apply"}]));
        meta.insert(
            "annotations".into(),
            json!({
                "kubectl.kubernetes.io/last-applied-configuration": "{...}",
                "signoff.dev/reason": "hotfix",
                "signoff.dev/ticket": "OPS-1",
                "deployment.kubernetes.io/revision": "7"
            }),
        );
        stored["status"] = json!({"readyReplicas": 3});
        // Null is absent, at any depth.
        stored["spec"]["paused"] = Value::Null;
        stored["spec"]["template"]["spec"]["containers"][0]["command"] = Value::Null;
        let t = target("UPDATE", "prod");
        assert_eq!(change_digest(&t, Some(&plain)), change_digest(&t, Some(&stored)));
    }

    #[test]
    fn key_order_does_not_matter() {
        let a: Value = serde_json::from_str(r#"{"kind":"Deployment","apiVersion":"apps/v1","metadata":{"namespace":"prod","name":"api"},"spec":{"replicas":3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"spec":{"replicas":3},"metadata":{"name":"api","namespace":"prod"},"apiVersion":"apps/v1","kind":"Deployment"}"#).unwrap();
        let t = target("CREATE", "prod");
        assert_eq!(change_digest(&t, Some(&a)), change_digest(&t, Some(&b)));
    }

    #[test]
    fn anything_that_matters_changes_the_digest() {
        let base = deployment();
        let t = target("UPDATE", "prod");
        let d = change_digest(&t, Some(&base));
        let mut replicas = base.clone();
        replicas["spec"]["replicas"] = json!(4);
        let mut image = base.clone();
        image["spec"]["template"]["spec"]["containers"][0]["image"] = json!("api:1.3");
        let mut label = base.clone();
        label["metadata"]["labels"]["tier"] = json!("web");
        let mut other_annotation = base.clone();
        other_annotation["metadata"]["annotations"] = json!({"team": "x"});
        for changed in [replicas, image, label, other_annotation] {
            assert_ne!(d, change_digest(&t, Some(&changed)));
        }
        assert_ne!(d, change_digest(&target("UPDATE", "staging"), Some(&base)), "namespace matters");
        assert_ne!(d, change_digest(&target("CREATE", "prod"), Some(&base)), "operation matters");
        let scale = ChangeTarget { sub_resource: "scale", ..target("UPDATE", "prod") };
        assert_ne!(d, change_digest(&scale, Some(&base)), "subresource matters");
    }

    #[test]
    fn status_counts_only_for_status_writes() {
        let mut a = deployment();
        let mut b = deployment();
        a["status"] = json!({"replicas": 1});
        b["status"] = json!({"replicas": 2});
        let t = target("UPDATE", "prod");
        assert_eq!(change_digest(&t, Some(&a)), change_digest(&t, Some(&b)));
        let status = ChangeTarget { sub_resource: "status", ..t };
        assert_ne!(change_digest(&status, Some(&a)), change_digest(&status, Some(&b)));
    }

    #[test]
    fn delete_is_bound_to_the_object_uid() {
        let mut old = deployment();
        old["metadata"]["uid"] = json!("uid-1");
        let mut recreated = deployment();
        recreated["metadata"]["uid"] = json!("uid-2");
        let t = target("DELETE", "prod");
        assert_ne!(change_digest(&t, Some(&old)), change_digest(&t, Some(&recreated)));
        let mut same_uid_other_spec = old.clone();
        same_uid_other_spec["spec"]["replicas"] = json!(9);
        assert_eq!(change_digest(&t, Some(&old)), change_digest(&t, Some(&same_uid_other_spec)));
    }

    #[test]
    fn noop_update_is_detected() {
        let mut stored = deployment();
        stored["metadata"]["resourceVersion"] = json!("7");
        stored["status"] = json!({"readyReplicas": 3});
        assert!(is_noop_update(&deployment(), &stored, ""));
        let mut changed = deployment();
        changed["spec"]["replicas"] = json!(5);
        assert!(!is_noop_update(&changed, &stored, ""));
    }

    #[test]
    fn header_fields_cannot_be_shifted_into_each_other() {
        let obj = deployment();
        let a = ChangeTarget { namespace: "ab", name: "c", ..target("CREATE", "") };
        let b = ChangeTarget { namespace: "a", name: "bc", ..target("CREATE", "") };
        assert_ne!(change_digest(&a, Some(&obj)), change_digest(&b, Some(&obj)));
    }

    #[test]
    fn request_name_is_short_and_stable() {
        let d = change_digest(&target("CREATE", "prod"), Some(&deployment()));
        assert_eq!(d.len(), 64);
        assert_eq!(request_name(&d), format!("ar-{}", &d[..12]));
    }
}
