//! Property tests of the change digest (`src/digest.rs`), with the real functions:
//! objects that are the same change after normalization (key order, server-set
//! metadata, kubectl's last-applied annotation, empty annotations/labels, status
//! outside status writes) share a digest, and any change to a field that matters
//! (a spec/data leaf, labels, other annotations, name, namespace, operation, kind,
//! resource, subresource) changes it. Pure: no control plane.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value, json};
use signoff::digest::{ChangeTarget, canonical_object, change_digest, is_noop_update};

/// Cases per property: 1000 keeps the whole file near 10 s of CPU in a debug
/// build; `PROPTEST_CASES` asks for more.
const CASES: u32 = 1000;

/// A string strategy from a regex, parsed once: a `&str` strategy would parse its
/// regex again for every generated value, which dominates the run time.
fn re(pattern: &str) -> proptest::string::RegexGeneratorStrategy<String> {
    proptest::string::string_regex(pattern).expect("a valid regex")
}

fn config() -> ProptestConfig {
    ProptestConfig {
        // Cheaper than the default ChaCha; the cases need no cryptographic RNG.
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        failure_persistence: None,
        ..ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(CASES))
    }
}

/// Scalars as they appear in manifests. Floats stay in a range where `+ 1.0`
/// always changes the value.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1.0e6f64..1.0e6).prop_map(Value::from),
        re("[a-zA-Z0-9:/._ -]{0,12}").prop_map(Value::from),
    ]
}

/// Any JSON tree: what a spec or a CRD's data can be.
fn tree() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(re("[a-zA-Z][a-zA-Z0-9]{0,7}"), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn string_map(keys: proptest::string::RegexGeneratorStrategy<String>) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(keys, re("[a-z0-9.-]{0,10}"), 0..4)
        .prop_map(|m| m.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
}

/// A manifest as a user writes it: no server-set fields, no ignored annotations
/// (keys without dots cannot collide with `kubectl.kubernetes.io/…` or
/// `signoff.dev/…`), labels and annotations present only when non-empty.
fn manifest() -> impl Strategy<Value = Value> {
    (
        re("[a-z][a-z0-9-]{0,10}"),
        re("[a-z][a-z0-9-]{0,10}"),
        string_map(re("[a-z]{1,6}(/[a-z]{1,6})?")),
        string_map(re("[a-z]{1,6}(/[a-z]{1,6})?")),
        prop::collection::btree_map(re("[a-zA-Z][a-zA-Z0-9]{0,7}"), tree(), 1..5),
        prop::option::of(string_map(re("[a-z]{1,8}"))),
    )
        .prop_map(|(name, namespace, labels, annotations, spec, data)| {
            let mut metadata = json!({"name": name, "namespace": namespace});
            if !labels.is_empty() {
                metadata["labels"] = Value::Object(labels);
            }
            if !annotations.is_empty() {
                metadata["annotations"] = Value::Object(annotations);
            }
            let mut object = json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata,
                "spec": Value::Object(spec.into_iter().collect()),
            });
            if let Some(data) = data {
                object["data"] = Value::Object(data);
            }
            object
        })
}

fn target<'a>(operation: &'a str, sub_resource: &'a str) -> ChangeTarget<'a> {
    ChangeTarget {
        operation,
        group: "apps",
        version: "v1",
        kind: "Deployment",
        resource: "deployments",
        sub_resource,
        namespace: "payments-prod",
        name: "web",
    }
}

/// Operations whose digest covers the object (DELETE covers only its uid).
fn write_operation() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["CREATE", "UPDATE", "CONNECT"])
}

/// Subresources other than status, where status is not part of the change.
fn main_or_scale() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "scale"])
}

/// JSON text of `value` with every object's keys in the order `order` picks, so
/// the parsed value arrived with a different key order at every level.
fn shuffled_json(value: &Value, order: &mut impl Iterator<Item = usize>) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            // A seeded Fisher–Yates shuffle.
            for i in (1..keys.len()).rev() {
                keys.swap(i, order.next().unwrap_or(0) % (i + 1));
            }
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), shuffled_json(&map[k], order)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            format!("[{}]", items.iter().map(|i| shuffled_json(i, order)).collect::<Vec<_>>().join(","))
        }
        scalar => scalar.to_string(),
    }
}

/// JSON pointers of the places a change matters: every leaf and every object
/// under `spec` and `data`, each label and annotation, and the name.
fn places(object: &Value) -> Vec<String> {
    fn walk(value: &Value, path: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                out.push(path.clone());
                for (k, v) in map {
                    walk(v, format!("{path}/{}", k.replace('~', "~0").replace('/', "~1")), out);
                }
            }
            Value::Array(items) => {
                out.push(path.clone());
                for (i, v) in items.iter().enumerate() {
                    walk(v, format!("{path}/{i}"), out);
                }
            }
            _ => out.push(path),
        }
    }
    let mut out = vec!["/metadata/name".to_string(), "/metadata/namespace".to_string()];
    for top in ["/spec", "/data", "/metadata/labels", "/metadata/annotations"] {
        if let Some(v) = object.pointer(top) {
            walk(v, top.to_string(), &mut out);
        }
    }
    out
}

/// A value that differs from `old` the way an edit does: another scalar of the
/// same type, or for a container one more (or one fewer) entry.
fn edited(old: &Value, remove: bool) -> Value {
    match old {
        Value::Null => json!(0),
        Value::Bool(b) => json!(!b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => json!(i.wrapping_add(1)),
            (None, Some(u), _) => json!(u.wrapping_add(1)),
            (_, _, Some(f)) => json!(f + 1.0),
            _ => json!("edited"),
        },
        Value::String(s) => json!(format!("{s}x")),
        Value::Array(items) => {
            let mut items = items.clone();
            if remove && !items.is_empty() {
                items.pop();
            } else {
                items.push(json!("added"));
            }
            Value::Array(items)
        }
        Value::Object(map) => {
            let mut map = map.clone();
            // A null field is no field: removing one is no edit.
            if remove && let Some(first) = map.iter().find(|(_, v)| !v.is_null()).map(|(k, _)| k.clone()) {
                map.remove(&first);
            } else {
                map.insert("addedKey".into(), json!("added"));
            }
            Value::Object(map)
        }
    }
}

/// Server-set metadata with arbitrary values, as the stored object carries it.
fn server_fields() -> impl Strategy<Value = Vec<(&'static str, Value)>> {
    (
        re("[0-9]{1,9}"),
        re("[0-9a-f]{8}-[0-9a-f]{4}"),
        0u64..1_000_000,
        re("20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:00:00Z"),
        prop::collection::vec(tree(), 0..3),
    )
        .prop_map(|(rv, uid, generation, created, managed)| {
            vec![
                ("resourceVersion", json!(rv)),
                ("uid", json!(uid)),
                ("generation", json!(generation)),
                ("creationTimestamp", json!(created)),
                ("managedFields", Value::Array(managed)),
            ]
        })
}

proptest! {
    #![proptest_config(config())]

    /// The same manifest spelled with any key order at every level.
    #[test]
    fn key_order_never_changes_the_digest(
        object in manifest(), order in prop::collection::vec(any::<usize>(), 64), op in write_operation(),
    ) {
        // Both sides through the parser, as objects reach the webhook: serde_json
        // may parse a float's shortest text to a neighbouring f64 (it lacks the
        // `float_roundtrip` feature), but the same digits always to the same one.
        let original: Value = serde_json::from_str(&object.to_string()).unwrap();
        let text = shuffled_json(&object, &mut order.into_iter().cycle());
        let reordered: Value = serde_json::from_str(&text).unwrap();
        let t = target(op, "");
        prop_assert_eq!(change_digest(&t, Some(&original)), change_digest(&t, Some(&reordered)));
    }

    /// Any subset of server-set metadata, with any values, on either side.
    #[test]
    fn server_set_metadata_never_changes_the_digest(
        object in manifest(),
        fields_a in server_fields(),
        fields_b in server_fields(),
        keep_a in prop::collection::vec(any::<bool>(), 5),
        keep_b in prop::collection::vec(any::<bool>(), 5),
        op in write_operation(),
        sub in main_or_scale(),
    ) {
        let with = |fields: &[(&str, Value)], keep: &[bool]| {
            let mut o = object.clone();
            for ((name, value), keep) in fields.iter().zip(keep) {
                if *keep {
                    o["metadata"][*name] = value.clone();
                }
            }
            o
        };
        let (a, b) = (with(&fields_a, &keep_a), with(&fields_b, &keep_b));
        let t = target(op, sub);
        prop_assert_eq!(change_digest(&t, Some(&a)), change_digest(&t, Some(&object)));
        prop_assert_eq!(change_digest(&t, Some(&a)), change_digest(&t, Some(&b)));
        prop_assert!(is_noop_update(&a, &b, sub));
    }

    /// A field set to null anywhere in an object is the same as no field.
    #[test]
    fn a_null_field_is_an_absent_field(object in manifest(), path_seed in any::<u64>(), op in write_operation()) {
        // Walk down a random chain of objects and add a null field at the end.
        let mut with_null = object.clone();
        let mut at = &mut with_null;
        let mut seed = path_seed;
        loop {
            let keys: Vec<String> = at.as_object().map(|m| {
                m.iter().filter(|(_, v)| v.is_object()).map(|(k, _)| k.clone()).collect()
            }).unwrap_or_default();
            if keys.is_empty() || seed % 3 == 0 {
                break;
            }
            let key = keys[(seed as usize / 3) % keys.len()].clone();
            seed /= 7;
            at = at.get_mut(&key).unwrap();
        }
        at.as_object_mut().unwrap().insert("signoffNullField".into(), Value::Null);
        let t = target(op, "");
        prop_assert_eq!(change_digest(&t, Some(&object)), change_digest(&t, Some(&with_null)));
        prop_assert!(is_noop_update(&object, &with_null, ""));
    }

    /// kubectl's last-applied annotation added, changed or removed; `annotations`
    /// and `labels` empty, null or absent; any status outside status writes.
    #[test]
    fn last_applied_empty_maps_and_status_never_change_the_digest(
        object in manifest(),
        last_applied_a in prop::option::of(tree()),
        last_applied_b in prop::option::of(tree()),
        empty_annotations in prop::sample::select(vec![None, Some(json!({})), Some(Value::Null)]),
        empty_labels in prop::sample::select(vec![None, Some(json!({})), Some(Value::Null)]),
        status in prop::option::of(tree()),
        op in write_operation(),
        sub in main_or_scale(),
    ) {
        let annotate = |o: &Value, last_applied: &Option<Value>| {
            let mut o = o.clone();
            if let Some(applied) = last_applied {
                let annotations = o["metadata"].as_object_mut().unwrap().entry("annotations").or_insert(json!({}));
                annotations["kubectl.kubernetes.io/last-applied-configuration"] = json!(applied.to_string());
            }
            o
        };
        let mut bare = object.clone();
        let meta = bare["metadata"].as_object_mut().unwrap();
        if !meta.contains_key("annotations") && let Some(empty) = &empty_annotations {
            meta.insert("annotations".into(), empty.clone());
        }
        if !meta.contains_key("labels") && let Some(empty) = &empty_labels {
            meta.insert("labels".into(), empty.clone());
        }
        if let Some(status) = &status {
            bare["status"] = status.clone();
        }
        let t = target(op, sub);
        let d = change_digest(&t, Some(&object));
        prop_assert_eq!(&d, &change_digest(&t, Some(&bare)));
        prop_assert_eq!(&d, &change_digest(&t, Some(&annotate(&object, &last_applied_a))));
        prop_assert_eq!(&d, &change_digest(&t, Some(&annotate(&bare, &last_applied_b))));
        prop_assert!(is_noop_update(&annotate(&object, &last_applied_a), &annotate(&bare, &last_applied_b), sub));
    }

    /// What canonical_object promises: a fixed point, and the digest of an object
    /// is the digest of its canonical form.
    #[test]
    fn canonical_form_is_a_fixed_point(object in manifest(), status in tree(), sub in prop::sample::select(vec!["", "scale", "status"])) {
        let mut object = object;
        object["status"] = status;
        let canonical = canonical_object(&object, sub);
        prop_assert_eq!(&canonical_object(&canonical, sub), &canonical);
        let t = target("UPDATE", sub);
        prop_assert_eq!(change_digest(&t, Some(&object)), change_digest(&t, Some(&canonical)));
    }

    /// Any edit of a leaf or container under spec/data, of a label or another
    /// annotation, or of the object's name or namespace, changes the digest, and
    /// is no no-op update.
    #[test]
    fn any_edit_that_matters_changes_the_digest(
        object in manifest(), at in any::<Index>(), remove in any::<bool>(), op in write_operation(),
        sub in main_or_scale(),
    ) {
        let places = places(&object);
        let place = &places[at.index(places.len())];
        let mut changed = object.clone();
        let slot = changed.pointer_mut(place).unwrap();
        *slot = edited(slot, remove);
        prop_assert_ne!(&changed, &object);
        let t = target(op, sub);
        prop_assert_ne!(change_digest(&t, Some(&object)), change_digest(&t, Some(&changed)), "edit at {}", place);
        prop_assert!(!is_noop_update(&changed, &object, sub), "edit at {}", place);
    }

    /// A status edit matters exactly for status writes.
    #[test]
    fn status_edits_matter_only_for_status_writes(object in manifest(), a in tree(), b in tree()) {
        // Trees that differ only in null fields are the same status.
        prop_assume!(canonical_object(&json!({"status": a}), "status") != canonical_object(&json!({"status": b}), "status"));
        let (mut x, mut y) = (object.clone(), object);
        x["status"] = a;
        y["status"] = b;
        let status = target("UPDATE", "status");
        prop_assert_ne!(change_digest(&status, Some(&x)), change_digest(&status, Some(&y)));
        let main = target("UPDATE", "");
        prop_assert_eq!(change_digest(&main, Some(&x)), change_digest(&main, Some(&y)));
    }

    /// Each field of the request's header matters, for the same object.
    #[test]
    fn every_header_field_matters(
        object in manifest(), field in 0usize..8, other in re("[a-zA-Z0-9./-]{0,12}"), sub in main_or_scale(),
    ) {
        let base = target("UPDATE", sub);
        let mut changed = base.clone();
        let slot = match field {
            0 => &mut changed.operation,
            1 => &mut changed.group,
            2 => &mut changed.version,
            3 => &mut changed.kind,
            4 => &mut changed.resource,
            5 => &mut changed.sub_resource,
            6 => &mut changed.namespace,
            _ => &mut changed.name,
        };
        prop_assume!(*slot != other.as_str());
        // A DELETE digest covers less of the object; keep the comparison about
        // the header by leaving the operation a write.
        prop_assume!(other != "DELETE");
        *slot = &other;
        prop_assert_ne!(change_digest(&base, Some(&object)), change_digest(&changed, Some(&object)));
    }

    /// DELETE is bound to the object's uid and nothing else of it.
    #[test]
    fn delete_digest_follows_the_uid_only(object in manifest(), uid_a in re("[0-9a-f-]{1,12}"), uid_b in re("[0-9a-f-]{1,12}"), other in manifest()) {
        let t = target("DELETE", "");
        let (mut a, mut b) = (object, other);
        a["metadata"]["uid"] = json!(uid_a);
        b["metadata"]["uid"] = json!(uid_b);
        prop_assert_eq!(uid_a == uid_b, change_digest(&t, Some(&a)) == change_digest(&t, Some(&b)));
    }
}
