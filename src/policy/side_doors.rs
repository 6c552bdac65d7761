//! Side doors: writes that make a controller perform a change the policies hold
//! (issue 23, item 2). The garbage collector, the StatefulSet controller and the
//! namespace controller act as system identities, which policies exclude as they
//! must; so the write that sets one of them in motion is judged as the change it
//! will make, and held for the people that change needs.
//!
//! - Adding an ownerReference: deleting that owner lets the garbage collector
//!   delete the object (judged as the object's DELETE).
//! - Switching a StatefulSet's `persistentVolumeClaimRetentionPolicy` to Delete:
//!   the StatefulSet controller deletes its PersistentVolumeClaims when it is
//!   deleted or scaled down (judged as their DELETEs).
//! - Deleting a namespace: the namespace controller deletes everything in it
//!   (judged as the DELETE of any object of each kind a policy protects).
//! - Creating a HorizontalPodAutoscaler, or raising its bounds: the HPA
//!   controller scales its target within them (judged as the target's `/scale`
//!   UPDATE to the new bound, item 4).
//!
//! Finalizers: removing the last finalizers of an object being deleted completes
//! that DELETE and is judged as it (`webhook::review::finalizing_delete`);
//! removing one from an object not being deleted deletes nothing, and a later
//! DELETE is judged as usual. Pure: the webhook resolves the kinds (discovery)
//! and passes them in.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Assessment, Gvk, Gvr, PolicySet, ReviewInput, classify};
use crate::crd::{Operation, Risk};

/// A change a write makes some controller perform, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct Enabled {
    /// The change, as the controller would send it (a DELETE).
    pub input: ReviewInput,
    /// How the write leads to it, for the reasons of the hold.
    pub how: String,
}

/// The changes `input` makes a controller perform, found in the write alone.
pub fn enabled_changes(input: &ReviewInput) -> Vec<Enabled> {
    let mut out: Vec<Enabled> = owner_added(input).into_iter().collect();
    out.extend(claims_released(input));
    if let Some((group, _, kind)) = scale_target(input)
        && let Some(resource) = workload_resource(&group, &kind)
    {
        out.extend(autoscaled(input, &group, resource));
    }
    out
}

/// Whether `input` may enable a change the policies would hold, so the gate must
/// judge it even when no policy matches it directly.
pub fn may_enable(input: &ReviewInput, policies: &PolicySet) -> bool {
    enabled_changes(input).iter().any(|e| policies.covers(&e.input))
        || is_namespace_delete(input)
        || scale_target(input).is_some()
}

fn uids(object: &Option<Value>) -> Vec<String> {
    object
        .as_ref()
        .and_then(|o| o.pointer("/metadata/ownerReferences"))
        .and_then(Value::as_array)
        .map(|refs| refs.iter().filter_map(|r| r["uid"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// An update that gives the object an owner it did not have.
fn owner_added(input: &ReviewInput) -> Option<Enabled> {
    if input.operation != Operation::Update {
        return None;
    }
    let before = uids(&input.old_object);
    let refs = input.object.as_ref()?.pointer("/metadata/ownerReferences")?.as_array()?;
    let added: Vec<String> = refs
        .iter()
        .filter(|r| r["uid"].as_str().is_some_and(|uid| !before.iter().any(|b| b == uid)))
        .map(|r| format!("{} {}", r["kind"].as_str().unwrap_or("object"), r["name"].as_str().unwrap_or("?")))
        .collect();
    if added.is_empty() {
        return None;
    }
    Some(Enabled {
        input: ReviewInput {
            operation: Operation::Delete,
            sub_resource: String::new(),
            object: None,
            old_object: input.object.clone(),
            ..input.clone()
        },
        how: format!(
            "the owner it adds ({}) can be deleted, and the garbage collector then deletes {} {}",
            added.join(", "),
            input.kind.kind,
            input.name
        ),
    })
}

fn retention(object: &Option<Value>, field: &str) -> String {
    object
        .as_ref()
        .and_then(|o| o.pointer(&format!("/spec/persistentVolumeClaimRetentionPolicy/{field}")))
        .and_then(Value::as_str)
        .unwrap_or("Retain")
        .to_string()
}

/// At most this many claims per template are judged (ordinals 0..n).
const MAX_CLAIMS: u64 = 100;

/// An update of a StatefulSet that switches its claims' retention to Delete.
fn claims_released(input: &ReviewInput) -> Vec<Enabled> {
    let is_statefulset = input.resource.group == "apps" && input.resource.resource == "statefulsets";
    if input.operation != Operation::Update || !is_statefulset || !input.sub_resource.is_empty() {
        return vec![];
    }
    let switched: Vec<&str> = ["whenDeleted", "whenScaled"]
        .into_iter()
        .filter(|f| retention(&input.object, f) == "Delete" && retention(&input.old_object, f) != "Delete")
        .collect();
    let Some(object) = input.object.as_ref().filter(|_| !switched.is_empty()) else { return vec![] };
    let replicas = object.pointer("/spec/replicas").and_then(Value::as_u64).unwrap_or(1).min(MAX_CLAIMS);
    let selector = object.pointer("/spec/selector/matchLabels").cloned().unwrap_or_else(|| json!({}));
    let templates = object.pointer("/spec/volumeClaimTemplates").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out = Vec::new();
    for template in &templates {
        let Some(claim) = template.pointer("/metadata/name").and_then(Value::as_str) else { continue };
        // The controller labels each claim with the StatefulSet's selector.
        let mut labels = template.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({}));
        if let (Some(labels), Some(selector)) = (labels.as_object_mut(), selector.as_object()) {
            labels.extend(selector.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        for ordinal in 0..replicas {
            let name = format!("{claim}-{}-{ordinal}", input.name);
            let pvc = json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": input.namespace, "labels": labels},
                "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
            });
            out.push(Enabled {
                input: claim_delete(input, &name, pvc),
                how: format!(
                    "persistentVolumeClaimRetentionPolicy.{} becomes Delete: the StatefulSet controller deletes \
                     the PersistentVolumeClaims of StatefulSet {}",
                    switched.join(" and "),
                    input.name
                ),
            });
        }
    }
    out
}

fn claim_delete(input: &ReviewInput, name: &str, pvc: Value) -> ReviewInput {
    ReviewInput {
        operation: Operation::Delete,
        kind: Gvk { group: String::new(), version: "v1".into(), kind: "PersistentVolumeClaim".into() },
        resource: Gvr { group: String::new(), version: "v1".into(), resource: "persistentvolumeclaims".into() },
        sub_resource: String::new(),
        name: name.into(),
        object: None,
        old_object: Some(pvc),
        ..input.clone()
    }
}

/// The workloads whose `/scale` an autoscaler drives, by API group and kind.
/// Another kind (a custom resource with a scale subresource) is resolved by the
/// webhook through discovery.
pub fn workload_resource(group: &str, kind: &str) -> Option<&'static str> {
    match (group, kind) {
        ("apps", "Deployment") => Some("deployments"),
        ("apps", "StatefulSet") => Some("statefulsets"),
        ("apps", "ReplicaSet") => Some("replicasets"),
        ("", "ReplicationController") => Some("replicationcontrollers"),
        _ => None,
    }
}

fn is_autoscaler(input: &ReviewInput) -> bool {
    input.resource.group == "autoscaling" && input.resource.resource == "horizontalpodautoscalers"
}

/// The target of a HorizontalPodAutoscaler being created or updated: API
/// group, version and kind (from `spec.scaleTargetRef`, in every version).
pub fn scale_target(input: &ReviewInput) -> Option<(String, String, String)> {
    if !matches!(input.operation, Operation::Create | Operation::Update)
        || !is_autoscaler(input)
        || !input.sub_resource.is_empty()
    {
        return None;
    }
    let target = input.object.as_ref()?.pointer("/spec/scaleTargetRef")?;
    let api_version = target["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    Some((group.to_string(), version.to_string(), target["kind"].as_str()?.to_string()))
}

fn bound(object: &Option<Value>, field: &str, default: u64) -> Option<u64> {
    object.as_ref().map(|o| o.pointer(&format!("/spec/{field}")).and_then(Value::as_u64).unwrap_or(default))
}

/// The scales an autoscaler write lets the HPA controller make: to the new
/// `minReplicas` when it rises (it keeps at least that many) and to the new
/// `maxReplicas` when it rises (it may scale up to it), each judged as the
/// target's `/scale` UPDATE from the old bound (on create: from `minReplicas`,
/// and for `minReplicas` itself from 1). `resource` is the target's plural.
pub fn autoscaled(input: &ReviewInput, group: &str, resource: &str) -> Vec<Enabled> {
    let Some((_, version, kind)) = scale_target(input) else { return vec![] };
    let Some(target) =
        input.object.as_ref().and_then(|o| o.pointer("/spec/scaleTargetRef/name")).and_then(Value::as_str)
    else {
        return vec![];
    };
    let (min, max) = (bound(&input.object, "minReplicas", 1), bound(&input.object, "maxReplicas", 1));
    let (Some(min), Some(max)) = (min, max) else { return vec![] };
    let old_min = bound(&input.old_object, "minReplicas", 1).unwrap_or(1);
    let old_max = bound(&input.old_object, "maxReplicas", 1).unwrap_or(min);
    let scale = |replicas: u64| {
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": target, "namespace": input.namespace},
            "spec": {"replicas": replicas}, "status": {"replicas": replicas}})
    };
    let mut out = Vec::new();
    for (field, from, to) in [("minReplicas", old_min, min), ("maxReplicas", old_max, max)] {
        if to <= from || out.iter().any(|e: &Enabled| e.input.object == Some(scale(to))) {
            continue;
        }
        out.push(Enabled {
            input: ReviewInput {
                operation: Operation::Update,
                kind: Gvk { group: "autoscaling".into(), version: "v1".into(), kind: "Scale".into() },
                resource: Gvr { group: group.into(), version: version.clone(), resource: resource.into() },
                sub_resource: "scale".into(),
                name: target.into(),
                object: Some(scale(to)),
                old_object: Some(scale(from)),
                ..input.clone()
            },
            how: format!(
                "HorizontalPodAutoscaler {} {field} {to}: the HPA controller scales {kind} {target} from {from} to {to}",
                input.name
            ),
        });
    }
    out
}

/// A DELETE of a Namespace: the webhook lists what it sweeps ([`swept_resources`]).
pub fn is_namespace_delete(input: &ReviewInput) -> bool {
    input.operation == Operation::Delete && input.resource.group.is_empty() && input.resource.resource == "namespaces"
}

/// The namespaced resources whose DELETE some policy names exactly (no
/// wildcards, no subresources): what a namespace's deletion is checked for.
pub fn swept_resources(policies: &PolicySet) -> Vec<Gvr> {
    let mut out: Vec<Gvr> = Vec::new();
    for policy in policies.policies() {
        for rule in &policy.spec.match_.rules {
            let deletes = rule.operations.iter().any(|o| matches!(o, Operation::Delete | Operation::All));
            if !deletes || rule.scope == Some(crate::crd::RuleScope::Cluster) {
                continue;
            }
            for group in &rule.api_groups {
                for version in &rule.api_versions {
                    for resource in &rule.resources {
                        let exact = ![group, version, resource].iter().any(|s| s.contains('*'));
                        let gvr = Gvr { group: group.clone(), version: version.clone(), resource: resource.clone() };
                        if exact && !resource.contains('/') && resource != "namespaces" && !out.contains(&gvr) {
                            out.push(gvr);
                        }
                    }
                }
            }
        }
    }
    out
}

/// The DELETEs a namespace's deletion makes the namespace controller perform:
/// one per kind in `kinds` (those of [`swept_resources`] the API server
/// serves), judged on a representative object: any object of that kind in the
/// namespace, with the namespace's labels. Rules that read the object's own
/// fields cannot be evaluated on it, and an enforcing rule that cannot be
/// evaluated holds; a policy that selects objects by their labels
/// (`objectSelector`) does not match it (docs/security.md says so).
pub fn namespace_sweep(delete: &ReviewInput, kinds: &[(Gvr, Gvk)]) -> Vec<Enabled> {
    if !is_namespace_delete(delete) {
        return vec![];
    }
    kinds
        .iter()
        .map(|(resource, kind)| {
            let api_version =
                if kind.group.is_empty() { kind.version.clone() } else { format!("{}/{}", kind.group, kind.version) };
            let any = json!({"apiVersion": api_version, "kind": kind.kind,
                "metadata": {"name": "", "namespace": delete.name}});
            Enabled {
                input: ReviewInput {
                    operation: Operation::Delete,
                    kind: kind.clone(),
                    resource: resource.clone(),
                    sub_resource: String::new(),
                    namespace: delete.name.clone(),
                    name: String::new(),
                    object: None,
                    old_object: Some(any),
                    namespace_object: delete.old_object.clone().map(Arc::new),
                    ..delete.clone()
                },
                how: format!("deleting namespace {} deletes every {} in it", delete.name, kind.kind),
            }
        })
        .collect()
}

/// At most this many reasons from enabled changes are listed; the rest are
/// counted (their routes and risk still count in full).
const MAX_ENABLED_REASONS: usize = 10;

/// The write's assessment, with the changes it enables: each enabled change
/// that the policies hold adds its reasons (prefixed by how the write leads to
/// it), risk, class and routes. A change that holds nothing adds nothing.
pub fn with_enabled(mut assessment: Assessment, enabled: &[Enabled], policies: &PolicySet) -> Assessment {
    let mut listed = 0;
    let mut unlisted = 0;
    for change in enabled {
        let found = classify(&change.input, policies);
        if !found.held() {
            continue;
        }
        for mut fired in found.fired.into_iter().filter(|f| f.risk >= Risk::Medium) {
            fired.message = format!("{}: {}", change.how, fired.message);
            if assessment.fired.contains(&fired) {
                continue;
            }
            assessment.add_holding(fired.risk, fired.action_class, &fired.route);
            if listed < MAX_ENABLED_REASONS {
                listed += 1;
                assessment.fired.push(fired);
            } else {
                unlisted += 1;
            }
        }
        for mut error in found.errors {
            error.message = format!("{}: {}", change.how, error.message);
            assessment.add_holding(Risk::High, error.action_class, &error.route);
            if !assessment.errors.contains(&error) {
                assessment.errors.push(error);
            }
        }
    }
    if unlisted > 0
        && let Some(last) = assessment.fired.last().cloned()
    {
        assessment.fired.push(crate::crd::HoldReason {
            message: format!("and {unlisted} more changes it enables that the policies hold"),
            ..last
        });
    }
    assessment
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ActionClass, EscalationPolicy};
    use crate::policy::UserInfo;

    /// Deletes of PersistentVolumeClaims in production namespaces are held.
    fn policies() -> PolicySet {
        let policy: EscalationPolicy = serde_yaml::from_str(
            r#"
apiVersion: signoff.dev/v1alpha1
kind: EscalationPolicy
metadata: {name: data}
spec:
  match:
    rules:
    - {operations: [DELETE], apiGroups: [""], apiVersions: [v1], resources: [persistentvolumeclaims]}
    - {operations: [DELETE], apiGroups: ["*"], apiVersions: ["*"], resources: ["*"]}
    namespaceSelector: {matchLabels: {signoff.dev/environment: production}}
  rules:
  - name: claim-delete
    expression: "request.resource.resource == 'persistentvolumeclaims'"
    risk: High
    route: engineering
    actionClass: destructive
    message: "deleting a production volume claim"
"#,
        )
        .unwrap();
        PolicySet::new([&policy])
    }

    fn input(
        op: Operation,
        resource: (&str, &str, &str),
        name: &str,
        old: Option<Value>,
        new: Option<Value>,
    ) -> ReviewInput {
        ReviewInput {
            operation: op,
            user: UserInfo { username: "mallory".into(), uid: "u".into(), groups: vec![] },
            kind: Gvk { group: resource.0.into(), version: "v1".into(), kind: resource.2.into() },
            resource: Gvr { group: resource.0.into(), version: "v1".into(), resource: resource.1.into() },
            sub_resource: String::new(),
            namespace: "prod".into(),
            name: name.into(),
            dry_run: false,
            object: new,
            old_object: old,
            namespace_object: Some(Arc::new(
                json!({"metadata": {"name": "prod", "labels": {"signoff.dev/environment": "production"}}}),
            )),
        }
    }

    fn claim(owners: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "ledger", "namespace": "prod", "ownerReferences": owners}})
    }

    fn judged(write: &ReviewInput) -> Assessment {
        let set = policies();
        with_enabled(classify(write, &set), &enabled_changes(write), &set)
    }

    #[test]
    fn giving_a_protected_object_an_owner_is_judged_as_its_delete() {
        let pvc = ("", "persistentvolumeclaims", "PersistentVolumeClaim");
        let owner = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "doomed", "uid": "cm-1"}]);
        let adopt = input(Operation::Update, pvc, "ledger", Some(claim(json!([]))), Some(claim(owner.clone())));
        let a = judged(&adopt);
        assert!(a.held(), "{a:?}");
        assert_eq!(a.action_class, ActionClass::Destructive);
        assert!(a.reasons()[0].contains("ConfigMap doomed") && a.reasons()[0].contains("garbage collector"), "{a:?}");
        // Relabelling it, or keeping its owner, enables nothing.
        let same = input(Operation::Update, pvc, "ledger", Some(claim(owner.clone())), Some(claim(owner)));
        assert!(enabled_changes(&same).is_empty() && !judged(&same).held());
        // Outside production the claim's delete is not held, so neither is its adoption.
        let mut dev = adopt.clone();
        dev.namespace_object = Some(Arc::new(json!({"metadata": {"name": "dev", "labels": {}}})));
        assert!(!judged(&dev).held());
    }

    #[test]
    fn switching_claim_retention_to_delete_is_judged_as_deleting_the_claims() {
        let sts = ("apps", "statefulsets", "StatefulSet");
        let statefulset = |retention: &str, replicas: u64| {
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "prod"},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "db"}},
                    "persistentVolumeClaimRetentionPolicy": {"whenDeleted": retention, "whenScaled": "Retain"},
                    "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"resources": {}}}]}})
        };
        let switch =
            input(Operation::Update, sts, "db", Some(statefulset("Retain", 1)), Some(statefulset("Delete", 15)));
        let enabled = enabled_changes(&switch);
        let names: Vec<&str> = enabled.iter().map(|e| e.input.name.as_str()).collect();
        assert_eq!(names.len(), 15);
        assert_eq!(&names[..2], ["data-db-0", "data-db-1"]);
        assert_eq!(enabled[0].input.old_object.as_ref().unwrap()["metadata"]["labels"], json!({"app": "db"}));
        let a = judged(&switch);
        assert!(a.held() && a.action_class == ActionClass::Destructive, "{a:?}");
        assert_eq!(a.reasons().len(), 1, "the same reason for every claim is listed once: {:?}", a.reasons());
        assert!(a.reasons()[0].contains("whenDeleted becomes Delete"), "{:?}", a.reasons());
        // Already Delete, or only replicas changed: nothing new is enabled.
        let again = input(Operation::Update, sts, "db", Some(statefulset("Delete", 1)), Some(statefulset("Delete", 2)));
        assert!(enabled_changes(&again).is_empty());
    }

    #[test]
    fn deleting_a_namespace_is_judged_as_deleting_what_the_policies_protect_in_it() {
        let set = policies();
        let swept = swept_resources(&set);
        assert_eq!(
            swept,
            vec![Gvr { group: "".into(), version: "v1".into(), resource: "persistentvolumeclaims".into() }],
            "exact resources only: a wildcard names nothing to look up"
        );
        let kinds =
            [(swept[0].clone(), Gvk { group: "".into(), version: "v1".into(), kind: "PersistentVolumeClaim".into() })];
        let namespace = json!({"metadata": {"name": "prod", "labels": {"signoff.dev/environment": "production"}}});
        let mut delete =
            input(Operation::Delete, ("", "namespaces", "Namespace"), "prod", Some(namespace.clone()), None);
        delete.namespace_object = None;
        let sweep = namespace_sweep(&delete, &kinds);
        let a = with_enabled(classify(&delete, &set), &sweep, &set);
        assert!(a.held(), "{a:?}");
        assert!(a.reasons()[0].contains("deleting namespace prod deletes every PersistentVolumeClaim in it"), "{a:?}");
        let mut development = delete.clone();
        development.old_object = Some(json!({"metadata": {"name": "prod", "labels": {}}}));
        let sweep = namespace_sweep(&development, &kinds);
        assert!(!with_enabled(classify(&development, &set), &sweep, &set).held(), "nothing protected there");
        assert!(
            namespace_sweep(&input(Operation::Delete, ("", "configmaps", "ConfigMap"), "x", None, None), &kinds)
                .is_empty()
        );
    }

    #[test]
    fn an_autoscaler_is_judged_as_the_scales_it_lets_its_controller_make() {
        let scale: EscalationPolicy = serde_yaml::from_str(
            r#"
apiVersion: signoff.dev/v1alpha1
kind: EscalationPolicy
metadata: {name: scale}
spec:
  match: {rules: [{operations: [UPDATE], apiGroups: [apps], apiVersions: [v1], resources: [deployments/scale]}]}
  rules:
  - name: scale
    expression: "object.spec.replicas > oldObject.spec.replicas"
    risk: Medium
    route: engineering
    messageExpression: "'scaling ' + request.name + ' to ' + string(object.spec.replicas)"
"#,
        )
        .unwrap();
        let set = PolicySet::new([&scale]);
        let hpa = |min: u64, max: u64| {
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "web", "namespace": "prod"},
                "spec": {"minReplicas": min, "maxReplicas": max,
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}})
        };
        let resource = ("autoscaling", "horizontalpodautoscalers", "HorizontalPodAutoscaler");
        let judge = |write: &ReviewInput| with_enabled(classify(write, &set), &enabled_changes(write), &set);

        let create = input(Operation::Create, resource, "web", None, Some(hpa(2, 10)));
        let a = judge(&create);
        assert!(a.held(), "{a:?}");
        let reasons = a.reasons().join("; ");
        assert!(reasons.contains("minReplicas 2: the HPA controller scales Deployment web from 1 to 2"), "{reasons}");
        assert!(reasons.contains("maxReplicas 10") && reasons.contains("scaling web to 10"), "{reasons}");
        let enabled = enabled_changes(&create);
        assert_eq!(enabled[0].input.resource.resource, "deployments");
        assert_eq!(enabled[0].input.sub_resource, "scale");

        let raise_min = input(Operation::Update, resource, "web", Some(hpa(2, 10)), Some(hpa(4, 10)));
        assert_eq!(enabled_changes(&raise_min).len(), 1);
        assert!(judge(&raise_min).held());
        let lower = input(Operation::Update, resource, "web", Some(hpa(2, 10)), Some(hpa(1, 5)));
        assert!(enabled_changes(&lower).is_empty() && !judge(&lower).held(), "lowering bounds scales nothing up");
        let mut custom = create.clone();
        custom.object.as_mut().unwrap()["spec"]["scaleTargetRef"] =
            json!({"apiVersion": "example.com/v1", "kind": "Worker", "name": "w"});
        assert!(enabled_changes(&custom).is_empty(), "a custom kind is resolved by the webhook");
        assert_eq!(scale_target(&custom), Some(("example.com".into(), "v1".into(), "Worker".into())));
        assert!(may_enable(&custom, &PolicySet::empty()));
    }
}
