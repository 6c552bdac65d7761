//! Which admission requests a policy looks at: the semantics of a
//! ValidatingWebhookConfiguration's rules, selectors and matchPolicy.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::ReviewInput;
use crate::crd::{MatchPolicy, MatchSpec, Operation, ResourceRule, RuleScope};

/// Group/resource pairs served under more than one API group. With
/// `matchPolicy: Equivalent`, a rule naming any member of a set also matches the
/// others (and, as always with Equivalent, any version of them).
const EQUIVALENT: &[&[(&str, &str)]] = &[
    &[("apps", "deployments"), ("extensions", "deployments")],
    &[("apps", "daemonsets"), ("extensions", "daemonsets")],
    &[("apps", "replicasets"), ("extensions", "replicasets")],
    &[("networking.k8s.io", "ingresses"), ("extensions", "ingresses")],
    &[("networking.k8s.io", "networkpolicies"), ("extensions", "networkpolicies")],
    &[("policy", "podsecuritypolicies"), ("extensions", "podsecuritypolicies")],
    &[("", "events"), ("events.k8s.io", "events")],
];

fn equivalent_group_resource(a_group: &str, a_res: &str, b_group: &str, b_res: &str) -> bool {
    if a_group == b_group && a_res == b_res {
        return true;
    }
    EQUIVALENT.iter().any(|set| set.contains(&(a_group, a_res)) && set.contains(&(b_group, b_res)))
}

/// Whether the request is for a cluster-scoped resource. A request carries no
/// scope, so this follows the namespace: empty for cluster-scoped objects, and a
/// Namespace is cluster-scoped although its requests name it as their namespace.
pub fn is_cluster_scoped(input: &ReviewInput) -> bool {
    input.namespace.is_empty() || is_namespace(input)
}

fn is_namespace(input: &ReviewInput) -> bool {
    input.resource.group.is_empty() && input.resource.resource == "namespaces"
}

fn operation_matches(rule: &ResourceRule, op: Operation) -> bool {
    rule.operations.iter().any(|o| *o == Operation::All || *o == op)
}

fn one_of(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

/// Kubernetes resource patterns: `pods` (main resource only), `pods/exec`,
/// `pods/*` (every subresource of pods), `*` (every main resource), `*/scale`,
/// `*/*` (everything).
fn resource_pattern_matches(pattern: &str, resource: &str, sub: &str) -> bool {
    let (p_res, p_sub) = pattern.split_once('/').unwrap_or((pattern, ""));
    let res_ok = p_res == "*" || p_res == resource;
    let sub_ok = if p_sub.is_empty() { sub.is_empty() } else { p_sub == "*" || p_sub == sub };
    res_ok && sub_ok
}

fn scope_matches(rule: &ResourceRule, input: &ReviewInput) -> bool {
    match rule.scope {
        None | Some(RuleScope::All) => true,
        Some(RuleScope::Namespaced) => !is_cluster_scoped(input),
        Some(RuleScope::Cluster) => is_cluster_scoped(input),
    }
}

/// Whether one resource rule matches the request.
pub fn rule_matches(rule: &ResourceRule, policy: MatchPolicy, input: &ReviewInput) -> bool {
    if !operation_matches(rule, input.operation) || !scope_matches(rule, input) {
        return false;
    }
    let (group, version, resource, sub) =
        (&input.resource.group, &input.resource.version, &input.resource.resource, &input.sub_resource);
    let exact = one_of(&rule.api_groups, group)
        && one_of(&rule.api_versions, version)
        && rule.resources.iter().any(|p| resource_pattern_matches(p, resource, sub));
    if exact || policy == MatchPolicy::Exact {
        return exact;
    }
    // Equivalent: the same resource under another version, or an equivalent
    // group/resource pair under any version.
    rule.api_groups.iter().any(|rg| {
        rule.resources.iter().any(|p| {
            let (p_res, p_sub) = p.split_once('/').unwrap_or((p, ""));
            let sub_ok = if p_sub.is_empty() { sub.is_empty() } else { p_sub == "*" || p_sub == sub };
            let gr_ok = ((rg == "*" || rg == group) && (p_res == "*" || p_res == resource))
                || equivalent_group_resource(rg, p_res, group, resource);
            sub_ok && gr_ok
        })
    })
}

fn labels_of(object: Option<&serde_json::Value>) -> BTreeMap<&str, &str> {
    object
        .and_then(|o| o.pointer("/metadata/labels"))
        .and_then(|l| l.as_object())
        .map(|l| l.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v))).collect())
        .unwrap_or_default()
}

/// Label selector semantics: every matchLabels entry and every expression must
/// hold; an empty selector matches everything. An unknown operator matches
/// nothing (fail closed: Kubernetes rejects such a selector outright).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<&str, &str>) -> bool {
    if let Some(ml) = &selector.match_labels
        && !ml.iter().all(|(k, v)| labels.get(k.as_str()) == Some(&v.as_str()))
    {
        return false;
    }
    selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(e.key.as_str());
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
            "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    })
}

fn namespace_selector_matches(spec: &MatchSpec, input: &ReviewInput) -> bool {
    let Some(selector) = &spec.namespace_selector else { return true };
    if is_namespace(input) {
        // A Namespace is matched on its own labels, old or new: relabelling a
        // namespace out of a policy's selector is itself a change the policy sees.
        let (new, old) = (input.object.as_ref().filter(|o| !o.is_null()), input.old_object.as_ref());
        return [new, old].into_iter().flatten().any(|o| selector_matches(selector, &labels_of(Some(o))));
    }
    if is_cluster_scoped(input) {
        return true;
    }
    selector_matches(selector, &labels_of(input.namespace_object.as_deref()))
}

fn object_selector_matches(spec: &MatchSpec, input: &ReviewInput) -> bool {
    let Some(selector) = &spec.object_selector else { return true };
    selector_matches(selector, &labels_of(input.object.as_ref()))
        || selector_matches(selector, &labels_of(input.old_object.as_ref()))
}

fn excluded(spec: &MatchSpec, input: &ReviewInput) -> bool {
    spec.exclude_users.contains(&input.user.username)
        || spec.exclude_groups.iter().any(|g| input.user.groups.contains(g))
}

/// Whether a policy's `match` selects this request.
pub fn matches(spec: &MatchSpec, input: &ReviewInput) -> bool {
    spec.rules.iter().any(|r| rule_matches(r, spec.match_policy, input))
        && !excluded(spec, input)
        && namespace_selector_matches(spec, input)
        && object_selector_matches(spec, input)
}
