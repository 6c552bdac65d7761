//! CEL functions for policy authors, so a rule is written once for every kind
//! and says what changed instead of spelling out each field:
//!
//! - `podSpec(object)`: the pod spec of a Pod, Deployment, ReplicaSet,
//!   StatefulSet, DaemonSet, Job, CronJob, ReplicationController or PodTemplate
//!   (`{}` for any other object, and for `null`).
//! - `allContainers(object)`: its containers, init containers and ephemeral
//!   containers, in one list.
//! - `podMetadata(object)`: the metadata its pods get (a Pod's own, else its
//!   pod template's: labels a Service selects, AppArmor annotations); `{}` else.
//! - `changedOutside(object, oldObject, ['metadata.labels', ...])`: whether
//!   anything changed besides the listed dotted paths (and the fields the API
//!   server sets: `metadata.resourceVersion`, `generation`, `managedFields`,
//!   `uid`, `creationTimestamp`, `status`); true on a create or a delete.
//! - `changedAt(object, oldObject, 'spec.replicas')`: whether the value at a
//!   dotted path differs (present on one side only counts).
//! - `changedLabels(object, oldObject)`, `changedAnnotations(object, oldObject)`:
//!   the keys added, removed or changed, sorted.
//! - `gpus(object)`: GPUs the object asks for in all: per pod (the larger of
//!   requests and limits of every `*/gpu` resource, e.g. `nvidia.com/gpu`,
//!   summed over its containers) × `spec.replicas` (a Job's `spec.parallelism`;
//!   1 when unset; 0 for null).
//!
//! Pure functions over values; the unit tests below are their specification.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use cel::common::value::{CowVal, Val};
use cel::objects::{Key, Map};
use cel::{ExecutionError, Value};
use serde_json::Value as J;

use super::celenv::json_to_cel;

type Args<'b, 'v> = Vec<CowVal<'b, 'v>>;
type Ret<'b, 'v> = Result<CowVal<'b, 'v>, ExecutionError>;

// The helpers are pure functions over the request's JSON: the fast path
// (super::fast) calls them on it directly; the interpreter's adapters below
// convert their arguments to JSON first. One implementation for both.

/// Any interpreter value as a [`Value`]: built-in ones directly; signoff's lazy
/// JSON maps (and lists holding them), which are no built-in type, by walking
/// their keys and elements.
fn value(v: &dyn Val) -> Result<Value, ExecutionError> {
    if let Ok(value) = Value::try_from(v) {
        return Ok(value);
    }
    let walk = || ExecutionError::function_error("signoff helper", format!("cannot read a {}", v.get_type().name()));
    let iterable = v.as_iterable().ok_or_else(walk)?;
    let mut items = iterable.iter();
    match v.get_type().name() {
        "map" => {
            let indexer = v.as_indexer().ok_or_else(walk)?;
            let mut map = std::collections::HashMap::new();
            while let Some(key) = items.next() {
                let k = match Value::try_from(key)? {
                    Value::String(s) => Key::String(s),
                    Value::Int(i) => Key::Int(i),
                    Value::UInt(u) => Key::Uint(u),
                    Value::Bool(b) => Key::Bool(b),
                    _ => return Err(walk()),
                };
                map.insert(k, value(indexer.get(key)?.as_ref())?);
            }
            Ok(Value::Map(Map { map: Arc::new(map) }))
        }
        "list" => {
            let mut list = Vec::new();
            while let Some(item) = items.next() {
                list.push(value(item)?);
            }
            Ok(Value::List(Arc::new(list)))
        }
        _ => Err(walk()),
    }
}

/// An interpreter value as the JSON the helpers read.
fn json(function: &str, v: &dyn Val) -> Result<J, ExecutionError> {
    value(v)?.json().map_err(|e| ExecutionError::function_error(function, format!("cannot read it as JSON: {e:?}")))
}

fn ret<'b, 'v>(v: Value) -> Ret<'b, 'v> {
    let boxed: Box<dyn Val> = v.try_into()?;
    Ok(CowVal::Owned(boxed))
}

fn arity(function: &str, args: &[CowVal], n: usize) -> Result<(), ExecutionError> {
    if args.len() == n {
        Ok(())
    } else {
        Err(ExecutionError::function_error(function, format!("takes {n} arguments, got {}", args.len())))
    }
}

/// `v[name]` of an object, if present.
pub fn field<'a>(v: &'a J, name: &str) -> Option<&'a J> {
    v.as_object()?.get(name)
}

fn path<'a>(v: &'a J, dotted: &str) -> Option<&'a J> {
    dotted.split('.').filter(|p| !p.is_empty()).try_fold(v, |v, p| field(v, p))
}

/// `{}`: what podSpec and podMetadata give for an object that runs no pods.
pub static EMPTY_OBJECT: LazyLock<J> = LazyLock::new(|| J::Object(Default::default()));

/// Where the pods an object runs are described: a Pod is its own template
/// (`spec`, `metadata`); others nest one (`spec.template`, a CronJob's
/// `spec.jobTemplate.spec.template`, a PodTemplate's `template`). Segments, not
/// a dotted string: these run for every review, and formatting a path
/// allocated each time (issue 25).
fn pod_template(object: &J) -> Option<&J> {
    let segments: &[&str] = match field(object, "kind").and_then(J::as_str).unwrap_or("") {
        "Pod" => &[],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicationController" => {
            &["spec", "template"]
        }
        "PodTemplate" => &["template"],
        _ => return None,
    };
    segments.iter().try_fold(object, |v, s| field(v, s))
}

/// The pod spec of an object that runs pods.
pub fn pod_spec(object: &J) -> Option<&J> {
    field(pod_template(object)?, "spec")
}

/// The metadata of the pods an object runs.
pub fn pod_metadata(object: &J) -> Option<&J> {
    field(pod_template(object)?, "metadata")
}

/// `podSpec(object)`: the pod spec, `{}` when there is none (a rendered
/// manifest may say `spec:`, null: no spec, not an error).
pub fn pod_spec_or_empty(object: &J) -> &J {
    pod_spec(object).filter(|m| m.is_object()).unwrap_or(&EMPTY_OBJECT)
}

/// `podMetadata(object)`, `{}` when there is none.
pub fn pod_metadata_or_empty(object: &J) -> &J {
    pod_metadata(object).filter(|m| m.is_object()).unwrap_or(&EMPTY_OBJECT)
}

fn f_pod_metadata<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    arity("podMetadata", &args, 1)?;
    ret(json_to_cel(pod_metadata_or_empty(&json("podMetadata", args[0].as_ref())?)))
}

fn f_pod_spec<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    arity("podSpec", &args, 1)?;
    ret(json_to_cel(pod_spec_or_empty(&json("podSpec", args[0].as_ref())?)))
}

/// Containers, init containers and ephemeral containers of a pod spec.
pub fn all_containers(object: &J) -> Vec<&J> {
    let Some(spec) = pod_spec(object) else { return Vec::new() };
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| field(spec, k).and_then(J::as_array))
        .flatten()
        .collect()
}

fn f_all_containers<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    arity("allContainers", &args, 1)?;
    let object = json("allContainers", args[0].as_ref())?;
    ret(Value::List(Arc::new(all_containers(&object).into_iter().map(json_to_cel).collect())))
}

/// Fields the API server sets; never a change a person made.
const SERVER_SET: &[&str] = &[
    "metadata.resourceVersion",
    "metadata.generation",
    "metadata.managedFields",
    "metadata.uid",
    "metadata.creationTimestamp",
    "metadata.selfLink",
    "status",
];

/// Whether `new` and `old` differ anywhere outside `ignored` (dotted paths) and
/// the fields the API server sets. A create or a delete (one side null) is a change.
pub fn changed_outside(new: &J, old: &J, ignored: &[&str]) -> bool {
    if new.is_null() || old.is_null() {
        return true;
    }
    let ignored: Vec<&str> = ignored.iter().copied().chain(SERVER_SET.iter().copied()).collect();
    differs(new, old, "", &ignored)
}

fn differs(new: &J, old: &J, at: &str, ignored: &[&str]) -> bool {
    if ignored.contains(&at) {
        return false;
    }
    match (new, old) {
        (J::Object(a), J::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter().any(|name| {
                let here = if at.is_empty() { name.clone() } else { format!("{at}.{name}") };
                match (a.get(name), b.get(name)) {
                    (Some(x), Some(y)) => differs(x, y, &here, ignored),
                    // Present on one side only: a change unless it is ignored
                    // (or an ignored path lies below it and it is empty).
                    (Some(x), None) | (None, Some(x)) => !ignored.contains(&here.as_str()) && !is_empty(x),
                    (None, None) => false,
                }
            })
        }
        (a, b) => a != b,
    }
}

fn is_empty(v: &J) -> bool {
    match v {
        J::Object(m) => m.is_empty(),
        J::Array(l) => l.is_empty(),
        J::Null => true,
        _ => false,
    }
}

fn string_list(function: &str, v: &J) -> Result<Vec<String>, ExecutionError> {
    match v {
        J::Array(items) => items
            .iter()
            .map(|i| match i {
                J::String(s) => Ok(s.clone()),
                other => Err(ExecutionError::function_error(function, format!("expected strings, got {other}"))),
            })
            .collect(),
        other => Err(ExecutionError::function_error(function, format!("expected a list of paths, got {other}"))),
    }
}

fn f_changed_outside<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    arity("changedOutside", &args, 3)?;
    let f = "changedOutside";
    let (new, old) = (json(f, args[0].as_ref())?, json(f, args[1].as_ref())?);
    let ignored = string_list(f, &json(f, args[2].as_ref())?)?;
    let ignored: Vec<&str> = ignored.iter().map(String::as_str).collect();
    ret(Value::Bool(changed_outside(&new, &old, &ignored)))
}

/// Whether the value at a dotted path differs between `new` and `old`.
pub fn changed_at(new: &J, old: &J, dotted: &str) -> bool {
    let empty = |v: Option<&J>| v.is_none_or(is_empty);
    match (path(new, dotted), path(old, dotted)) {
        (a, b) if empty(a) && empty(b) => false,
        (a, b) => a != b,
    }
}

fn f_changed_at<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    arity("changedAt", &args, 3)?;
    let (new, old) = (json("changedAt", args[0].as_ref())?, json("changedAt", args[1].as_ref())?);
    let dotted = match value(args[2].as_ref())? {
        Value::String(s) => s,
        other => return Err(ExecutionError::function_error("changedAt", format!("expected a path, got {other:?}"))),
    };
    ret(Value::Bool(changed_at(&new, &old, &dotted)))
}

/// Keys of `metadata.<which>` added, removed or changed between `new` and `old`, sorted.
pub fn changed_keys<'a>(new: &'a J, old: &'a J, which: &str) -> Vec<&'a str> {
    let at = format!("metadata.{which}");
    let (a, b) = (path(new, &at).and_then(J::as_object), path(old, &at).and_then(J::as_object));
    let mut out: BTreeSet<&str> = BTreeSet::new();
    for (k, v) in a.into_iter().flatten() {
        if b.and_then(|b| b.get(k)) != Some(v) {
            out.insert(k);
        }
    }
    out.extend(
        b.into_iter().flat_map(|b| b.keys()).filter(|k| !a.is_some_and(|a| a.contains_key(*k))).map(String::as_str),
    );
    out.into_iter().collect()
}

fn changed_keys_fn<'b, 'v>(function: &str, which: &str, args: Args<'b, 'v>) -> Ret<'b, 'v> {
    arity(function, &args, 2)?;
    let (new, old) = (json(function, args[0].as_ref())?, json(function, args[1].as_ref())?);
    let keys = changed_keys(&new, &old, which).into_iter().map(|k| Value::String(Arc::new(k.to_string()))).collect();
    ret(Value::List(Arc::new(keys)))
}

fn f_changed_labels<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    changed_keys_fn("changedLabels", "labels", args)
}

fn f_changed_annotations<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    changed_keys_fn("changedAnnotations", "annotations", args)
}

/// A quantity of whole devices as an integer ("2", 2), else 0.
fn devices(v: &J) -> i64 {
    match v {
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i,
            (None, Some(_)) => i64::MAX,
            _ => n.as_f64().unwrap_or(0.0) as i64,
        },
        J::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// GPUs one pod of `object` asks for × its replicas.
pub fn gpus(object: &J) -> i64 {
    let per_container = |c: &J| -> i64 {
        let of = |which: &str| -> i64 {
            match field(c, "resources").and_then(|r| field(r, which)).and_then(J::as_object) {
                Some(m) => m.iter().filter(|(k, _)| k.ends_with("/gpu")).map(|(_, v)| devices(v)).sum(),
                None => 0,
            }
        };
        of("requests").max(of("limits"))
    };
    let per_pod: i64 = all_containers(object).into_iter().map(per_container).sum();
    // Pods at once: a Job's parallelism, anything else's replicas (1 when unset).
    let count = match field(object, "kind").and_then(J::as_str) {
        Some("Job") => "spec.parallelism",
        _ => "spec.replicas",
    };
    let replicas = match path(object, count) {
        Some(v) => devices(v),
        None => 1,
    };
    per_pod.saturating_mul(replicas)
}

fn f_gpus<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    arity("gpus", &args, 1)?;
    ret(Value::Int(gpus(&json("gpus", args[0].as_ref())?)))
}

/// Adds the helpers to the environment.
pub fn register(env: &mut cel::Env) -> Result<(), cel::DeclarationError> {
    use cel::common::types::{DYN_TYPE, STRING_TYPE};
    env.add_overload("podSpec", "signoff_podSpec_dyn", vec![DYN_TYPE], f_pod_spec)?;
    env.add_overload("podMetadata", "signoff_podMetadata_dyn", vec![DYN_TYPE], f_pod_metadata)?;
    env.add_overload("allContainers", "signoff_allContainers_dyn", vec![DYN_TYPE], f_all_containers)?;
    env.add_overload(
        "changedOutside",
        "signoff_changedOutside_dyn_dyn_dyn",
        vec![DYN_TYPE, DYN_TYPE, DYN_TYPE],
        f_changed_outside,
    )?;
    env.add_overload(
        "changedAt",
        "signoff_changedAt_dyn_dyn_string",
        vec![DYN_TYPE, DYN_TYPE, STRING_TYPE],
        f_changed_at,
    )?;
    env.add_overload("gpus", "signoff_gpus_dyn", vec![DYN_TYPE], f_gpus)?;
    env.add_overload("changedLabels", "signoff_changedLabels_dyn_dyn", vec![DYN_TYPE, DYN_TYPE], f_changed_labels)?;
    env.add_overload(
        "changedAnnotations",
        "signoff_changedAnnotations_dyn_dyn",
        vec![DYN_TYPE, DYN_TYPE],
        f_changed_annotations,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(j: J) -> J {
        j
    }

    fn deployment(image: &str, replicas: i64) -> serde_json::Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "labels": {"app": "web"}, "resourceVersion": "1", "generation": 1},
               "spec": {"replicas": replicas, "template": {"metadata": {"labels": {"app": "web"}},
                 "spec": {"initContainers": [{"name": "init", "image": "busybox"}],
                          "containers": [{"name": "app", "image": image}]}}}})
    }

    #[test]
    fn pod_spec_finds_the_pod_of_every_workload_kind() {
        let spec = json!({"containers": [{"name": "c", "image": "x"}]});
        let cases = [
            json!({"kind": "Pod", "spec": spec}),
            json!({"kind": "Deployment", "spec": {"template": {"spec": spec}}}),
            json!({"kind": "StatefulSet", "spec": {"template": {"spec": spec}}}),
            json!({"kind": "DaemonSet", "spec": {"template": {"spec": spec}}}),
            json!({"kind": "ReplicaSet", "spec": {"template": {"spec": spec}}}),
            json!({"kind": "Job", "spec": {"template": {"spec": spec}}}),
            json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}}),
        ];
        for case in cases {
            assert_eq!(pod_spec(&v(case.clone())), Some(&v(spec.clone())), "{case}");
        }
        assert_eq!(pod_spec(&v(json!({"kind": "ConfigMap", "data": {}}))), None);
        let meta = json!({"labels": {"app": "web"}, "annotations": {"container.apparmor.security.beta.kubernetes.io/web": "unconfined"}});
        let cron = json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"metadata": meta, "spec": spec}}}}});
        assert_eq!(pod_metadata(&v(cron)), Some(&v(meta.clone())));
        assert_eq!(pod_metadata(&v(json!({"kind": "Pod", "metadata": meta, "spec": spec}))), Some(&v(meta)));
        assert_eq!(pod_metadata(&v(json!({"kind": "Service"}))), None);
        assert_eq!(pod_spec(&J::Null), None);
    }

    #[test]
    fn all_containers_includes_init_and_ephemeral_ones() {
        let mut pod = json!({"kind": "Pod", "spec": {"containers": [{"name": "a"}], "initContainers": [{"name": "b"}],
                             "ephemeralContainers": [{"name": "c"}]}});
        let names = |p: &serde_json::Value| -> Vec<String> {
            all_containers(&v(p.clone()))
                .iter()
                .map(|c| field(c, "name").and_then(J::as_str).unwrap_or_default().to_string())
                .collect()
        };
        assert_eq!(names(&pod), ["a", "b", "c"]);
        pod["spec"].as_object_mut().unwrap().remove("ephemeralContainers");
        assert_eq!(names(&pod), ["a", "b"]);
        assert!(names(&json!({"kind": "Service"})).is_empty());
    }

    #[test]
    fn changed_outside_ignores_the_listed_paths_and_server_fields() {
        let old = deployment("web:1", 3);
        let mut relabelled = old.clone();
        relabelled["metadata"]["labels"]["team"] = json!("shop");
        relabelled["metadata"]["resourceVersion"] = json!("2");
        relabelled["status"] = json!({"readyReplicas": 3});
        let metadata = ["metadata.labels", "metadata.annotations"];
        assert!(!changed_outside(&v(relabelled.clone()), &v(old.clone()), &metadata), "only labels changed");
        assert!(changed_outside(&v(relabelled), &v(old.clone()), &[]), "labels count unless ignored");
        // An annotation map that appears empty is no change; one with a key is.
        let mut annotated = old.clone();
        annotated["metadata"]["annotations"] = json!({});
        assert!(!changed_outside(&v(annotated.clone()), &v(old.clone()), &[]));
        annotated["metadata"]["annotations"] = json!({"a": "b"});
        assert!(!changed_outside(&v(annotated.clone()), &v(old.clone()), &metadata));
        assert!(changed_outside(&v(deployment("web:2", 3)), &v(old.clone()), &metadata), "the image changed");
        assert!(changed_outside(&v(old.clone()), &J::Null, &metadata), "a create is a change");
        let replicas = ["spec.replicas"];
        assert!(!changed_outside(&v(deployment("web:1", 5)), &v(old), &replicas), "only replicas changed");
    }

    #[test]
    fn changed_at_compares_one_path() {
        let old = v(deployment("web:1", 3));
        assert!(changed_at(&v(deployment("web:1", 4)), &old, "spec.replicas"));
        assert!(!changed_at(&v(deployment("web:2", 3)), &old, "spec.replicas"));
        assert!(changed_at(&v(deployment("web:2", 3)), &old, "spec.template"));
        assert!(!changed_at(&old, &old, "spec.missing"));
        assert!(changed_at(&old, &J::Null, "spec.replicas"), "present on one side only");
    }

    #[test]
    fn gpus_counts_devices_per_pod_times_replicas() {
        let gpu = |n: serde_json::Value, replicas: Option<i64>| {
            let mut d = json!({"kind": "Deployment", "spec": {"template": {"spec": {"containers": [
                {"name": "train", "resources": {"limits": {"nvidia.com/gpu": n, "cpu": "4"}}},
                {"name": "side", "resources": {"requests": {"cpu": "1"}}}]}}}});
            if let Some(r) = replicas {
                d["spec"]["replicas"] = json!(r);
            }
            gpus(&v(d))
        };
        assert_eq!(gpu(json!(2), None), 2);
        assert_eq!(gpu(json!("2"), Some(3)), 6);
        assert_eq!(gpu(json!(0), Some(3)), 0);
        assert_eq!(gpus(&J::Null), 0);
        let job = json!({"kind": "Job", "spec": {"template": {"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"amd.com/gpu": 1}, "limits": {"amd.com/gpu": 1}}}]}}}});
        assert_eq!(gpus(&v(job)), 1, "requests and limits of one resource are not added up");
    }

    #[test]
    fn changed_labels_lists_added_removed_and_changed_keys() {
        let old = json!({"metadata": {"labels": {"a": "1", "b": "2", "c": "3"}, "annotations": {"x": "1"}}});
        let new = json!({"metadata": {"labels": {"a": "1", "b": "9", "d": "4"}}});
        assert_eq!(changed_keys(&v(new.clone()), &v(old.clone()), "labels"), ["b", "c", "d"]);
        assert_eq!(changed_keys(&v(new), &v(old.clone()), "annotations"), ["x"]);
        assert_eq!(changed_keys(&v(old.clone()), &v(old), "labels"), Vec::<String>::new());
        assert_eq!(changed_keys(&v(json!({"metadata": {"labels": {"a": "1"}}})), &J::Null, "labels"), ["a"]);
    }
}
