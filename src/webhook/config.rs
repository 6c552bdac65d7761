//! The ValidatingWebhookConfiguration signoff keeps in sync at runtime: the gate's
//! rules are the union of the policies' match rules (so kinds no policy matches
//! never reach signoff), system namespaces and exempt resources are excluded
//! before the API server calls the webhook, and signoff's own resources are
//! always guarded. Pure: builds the object; `runtime::config_sync` applies it.

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, RuleWithOperations, ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};

use super::review::EXEMPT_RESOURCES;
use crate::crd::{EscalationPolicy, GROUP, RuleScope, VERSION};
use crate::policy::operation_str;

/// How the API server reaches the webhook.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// `https://host:port/validate` (out-of-cluster: tests and `make dev`).
    Url(String),
    /// A Service in the cluster.
    Service { namespace: String, name: String, port: i32 },
}

/// Settings of the generated configuration.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    pub name: String,
    /// Set as the configuration's owner, so deleting the owner deletes it.
    pub owner: Option<OwnerReference>,
    pub endpoint: Endpoint,
    pub controller_namespace: String,
    pub timeout_seconds: i32,
    /// Namespaces left out of the gate besides kube-system, kube-node-lease and
    /// signoff's own.
    pub exempt_namespaces: Vec<String>,
}

/// The gate's rules: every policy's match rules, deduplicated, in a stable order.
pub fn gate_rules<'a>(policies: impl IntoIterator<Item = &'a EscalationPolicy>) -> Vec<RuleWithOperations> {
    let mut rules: Vec<RuleWithOperations> = Vec::new();
    for policy in policies {
        for rule in &policy.spec.match_.rules {
            let mut operations: Vec<String> = rule.operations.iter().map(|o| operation_str(*o).to_string()).collect();
            // Removing the last finalizers of an object being deleted is an UPDATE
            // that completes a DELETE: the gate must see it (review::finalizing_delete).
            if operations.iter().any(|o| o == "DELETE") && !operations.iter().any(|o| o == "UPDATE" || o == "*") {
                operations.push("UPDATE".into());
            }
            let converted = RuleWithOperations {
                operations: Some(operations),
                api_groups: Some(rule.api_groups.clone()),
                api_versions: Some(rule.api_versions.clone()),
                resources: Some(rule.resources.clone()),
                scope: rule.scope.map(|s| match s {
                    RuleScope::Namespaced => "Namespaced".to_string(),
                    RuleScope::Cluster => "Cluster".to_string(),
                    RuleScope::All => "*".to_string(),
                }),
            };
            if !rules.contains(&converted) {
                rules.push(converted);
            }
        }
    }
    // Side doors (policy::side_doors): where any DELETE is held, a StatefulSet
    // whose claims' retention becomes Delete and a namespace's deletion delete
    // objects through a controller; the gate judges the write that causes it.
    if rules.iter().any(|r| r.operations.as_ref().is_some_and(|o| o.iter().any(|o| o == "DELETE" || o == "*"))) {
        for (group, resource, operation) in [("apps", "statefulsets", "UPDATE"), ("", "namespaces", "DELETE")] {
            let side_door = RuleWithOperations {
                operations: Some(vec![operation.into()]),
                api_groups: Some(vec![group.into()]),
                api_versions: Some(vec!["v1".into()]),
                resources: Some(vec![resource.into()]),
                scope: None,
            };
            if !rules.contains(&side_door) {
                rules.push(side_door);
            }
        }
    }
    // An autoscaler scales its target: where a scale is held, its writes are judged.
    let scales = |r: &RuleWithOperations| {
        r.operations.as_ref().is_some_and(|o| o.iter().any(|o| o == "UPDATE" || o == "*"))
            && r.resources.as_ref().is_some_and(|res| res.iter().any(|x| x == "*" || x.ends_with("/scale")))
    };
    if rules.iter().any(scales) {
        let autoscalers = RuleWithOperations {
            operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
            api_groups: Some(vec!["autoscaling".into()]),
            api_versions: Some(vec!["*".into()]),
            resources: Some(vec!["horizontalpodautoscalers".into()]),
            scope: None,
        };
        if !rules.contains(&autoscalers) {
            rules.push(autoscalers);
        }
    }
    rules.sort_by_key(|r| serde_json::to_string(r).unwrap_or_default());
    rules
}

/// The `/status` of every resource whose UPDATE the gate sees: most built-in
/// kinds keep a metadata change sent there (tests/status_metadata.rs), out of
/// sight of policies that match the resource. Only writes that change metadata
/// are sent ([`STATUS_METADATA_CONDITION`]); the gate judges them as an UPDATE of
/// the resource (review::status_metadata_change). Those a policy names itself
/// stay with the gate.
pub fn status_rules(gate: &[RuleWithOperations]) -> Vec<RuleWithOperations> {
    let named: Vec<&String> = gate.iter().flat_map(|r| r.resources.iter().flatten()).collect();
    let mut rules: Vec<RuleWithOperations> = Vec::new();
    for rule in gate {
        let updates = rule.operations.as_ref().is_some_and(|o| o.iter().any(|o| o == "UPDATE" || o == "*"));
        let resources: Vec<String> = rule
            .resources
            .iter()
            .flatten()
            .filter(|r| !r.contains('/'))
            .map(|r| format!("{r}/status"))
            .filter(|status| !named.contains(&status))
            .collect();
        if !updates || resources.is_empty() {
            continue;
        }
        let status =
            RuleWithOperations { operations: Some(vec!["UPDATE".into()]), resources: Some(resources), ..rule.clone() };
        if !rules.contains(&status) {
            rules.push(status);
        }
    }
    rules
}

/// A CEL condition (evaluated by the API server): a `/status` write that changes
/// the object's labels, annotations, owners or finalizers.
pub const STATUS_METADATA_CONDITION: &str = "request.subResource == 'status' && oldObject != null && object != null && (\
(has(object.metadata.labels) ? object.metadata.labels : {}) != (has(oldObject.metadata.labels) ? oldObject.metadata.labels : {}) || \
(has(object.metadata.annotations) ? object.metadata.annotations : {}) != (has(oldObject.metadata.annotations) ? oldObject.metadata.annotations : {}) || \
(has(object.metadata.ownerReferences) ? object.metadata.ownerReferences : []) != (has(oldObject.metadata.ownerReferences) ? oldObject.metadata.ownerReferences : []) || \
(has(object.metadata.finalizers) ? object.metadata.finalizers : []) != (has(oldObject.metadata.finalizers) ? oldObject.metadata.finalizers : []))";

/// A CEL condition (evaluated by the API server) that lets through everything
/// but namespace updates that leave signoff's `signoff.dev/` labels alone, so that
/// only a change of signoff's trust anchors depends on signoff being up.
pub const ANCHOR_CONDITION: &str = "request.resource.group != '' || request.resource.resource != 'namespaces' || \
(has(object.metadata.labels) ? object.metadata.labels : {}).exists(k, k.startsWith('signoff.dev/') && \
!(has(oldObject.metadata.labels) && k in oldObject.metadata.labels && oldObject.metadata.labels[k] == object.metadata.labels[k])) || \
(has(oldObject.metadata.labels) ? oldObject.metadata.labels : {}).exists(k, k.startsWith('signoff.dev/') && \
!(has(object.metadata.labels) && k in object.metadata.labels))";

fn anchor_labels_change() -> MatchCondition {
    MatchCondition { name: "signoff-labels-change".into(), expression: ANCHOR_CONDITION.into() }
}

/// Whether `rules` can match an exempt resource (EXEMPT_RESOURCES): a wildcard
/// group or resource, or one named. Only then does a webhook carry
/// [`not_exempt`]: any matchCondition costs the API server a conversion of the
/// object and its old version on every call, conditions that never read them
/// included (about a quarter of a millisecond per Deployment write on the bench
/// machine, as much as signoff's own time per review). Versions and scope are
/// not compared: a rule that might match keeps the condition.
pub fn reaches_exempt(rules: &[RuleWithOperations]) -> bool {
    rules.iter().any(|rule| {
        EXEMPT_RESOURCES.iter().any(|(group, resource)| {
            let group_matches = rule.api_groups.iter().flatten().any(|g| g == "*" || g == group);
            let resource_matches = rule.resources.iter().flatten().any(|r| {
                let main = r.split_once('/').map_or(r.as_str(), |(main, _)| main);
                main == "*" || main == *resource
            });
            group_matches && resource_matches
        })
    })
}

/// A CEL condition (evaluated by the API server) that is false for exempt
/// resources, so they never reach the webhook and cannot be blocked by it.
fn not_exempt() -> MatchCondition {
    let pairs: Vec<String> = EXEMPT_RESOURCES
        .iter()
        .map(|(group, resource)| {
            format!("(request.resource.group == '{group}' && request.resource.resource == '{resource}')")
        })
        .collect();
    MatchCondition { name: "not-exempt".into(), expression: format!("!({})", pairs.join(" || ")) }
}

fn client_config(endpoint: &Endpoint, ca_bundle: &[u8]) -> WebhookClientConfig {
    let ca_bundle = Some(ByteString(ca_bundle.to_vec()));
    match endpoint {
        Endpoint::Url(url) => WebhookClientConfig { url: Some(url.clone()), ca_bundle, service: None },
        Endpoint::Service { namespace, name, port } => WebhookClientConfig {
            url: None,
            ca_bundle,
            service: Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some("/validate".into()),
                port: Some(*port),
            }),
        },
    }
}

/// The whole configuration.
pub fn webhook_configuration(
    settings: &WebhookSettings,
    gate: Vec<RuleWithOperations>,
    ca_bundle: &[u8],
) -> ValidatingWebhookConfiguration {
    let system_namespaces = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".into(),
            operator: "NotIn".into(),
            values: Some(
                ["kube-system", "kube-node-lease", settings.controller_namespace.as_str()]
                    .into_iter()
                    .map(String::from)
                    .chain(settings.exempt_namespaces.iter().cloned())
                    .collect(),
            ),
        }]),
        match_labels: None,
    };
    let common = ValidatingWebhook {
        admission_review_versions: vec!["v1".into()],
        client_config: client_config(&settings.endpoint, ca_bundle),
        failure_policy: Some("Fail".into()),
        match_policy: Some("Equivalent".into()),
        side_effects: "NoneOnDryRun".into(),
        timeout_seconds: Some(settings.timeout_seconds),
        ..Default::default()
    };
    let own = |resources: &[&str], operations: &[&str]| RuleWithOperations {
        api_groups: Some(vec![GROUP.into()]),
        api_versions: Some(vec![VERSION.into()]),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        operations: Some(operations.iter().map(|s| s.to_string()).collect()),
        scope: None,
    };
    let status = status_rules(&gate);
    let gate_conditions = reaches_exempt(&gate).then(|| vec![not_exempt()]);
    let status_conditions = {
        let metadata = MatchCondition { name: "metadata-changes".into(), expression: STATUS_METADATA_CONDITION.into() };
        if reaches_exempt(&status) { vec![not_exempt(), metadata] } else { vec![metadata] }
    };
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(settings.name.clone()),
            labels: Some([("app.kubernetes.io/managed-by".to_string(), "signoff".to_string())].into()),
            owner_references: settings.owner.clone().map(|o| vec![o]),
            ..Default::default()
        },
        webhooks: Some(
            [ValidatingWebhook {
                name: "gate.signoff.dev".into(),
                rules: Some(gate),
                namespace_selector: Some(system_namespaces.clone()),
                match_conditions: gate_conditions,
                ..common.clone()
            }]
            .into_iter()
            .chain((!status.is_empty()).then(|| ValidatingWebhook {
                name: "status.signoff.dev".into(),
                rules: Some(status),
                namespace_selector: Some(system_namespaces),
                match_conditions: Some(status_conditions),
                ..common.clone()
            }))
            .chain([ValidatingWebhook {
                name: "approvals.signoff.dev".into(),
                rules: Some(vec![
                    own(&["approvalrequests", "approvalrequests/status"], &["CREATE", "UPDATE", "DELETE"]),
                    // DELETE of a policy too: it is recorded loudly (it may weaken the gate).
                    own(&["escalationpolicies"], &["CREATE", "UPDATE", "DELETE"]),
                    own(&["approvers"], &["CREATE", "UPDATE"]),
                    // signoff's namespace labels, on every path that can write them
                    // (route::anchor_labels_changed); only updates that change them.
                    RuleWithOperations {
                        api_groups: Some(vec!["".into()]),
                        api_versions: Some(vec!["v1".into()]),
                        resources: Some(vec![
                            "namespaces".into(),
                            "namespaces/status".into(),
                            "namespaces/finalize".into(),
                        ]),
                        operations: Some(vec!["UPDATE".into()]),
                        scope: None,
                    },
                ]),
                match_conditions: Some(vec![anchor_labels_change()]),
                ..common
            }])
            .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{EscalationPolicySpec, MatchSpec, Operation, ResourceRule};

    #[test]
    fn the_owner_is_set_so_deleting_it_deletes_the_configuration() {
        let owner = OwnerReference {
            api_version: "rbac.authorization.k8s.io/v1".into(),
            kind: "ClusterRole".into(),
            name: "signoff-controller".into(),
            uid: "1234".into(),
            ..Default::default()
        };
        let mut settings = WebhookSettings {
            name: "signoff".into(),
            owner: Some(owner.clone()),
            endpoint: Endpoint::Url("https://127.0.0.1:9443/validate".into()),
            controller_namespace: "signoff-system".into(),
            timeout_seconds: 10,
            exempt_namespaces: vec![],
        };
        let config = webhook_configuration(&settings, vec![], b"");
        assert_eq!(config.metadata.owner_references, Some(vec![owner]));
        settings.owner = None;
        assert_eq!(webhook_configuration(&settings, vec![], b"").metadata.owner_references, None);
    }

    #[test]
    fn delete_rules_also_send_updates_so_finalizer_removals_reach_the_gate() {
        let rule = |ops: Vec<Operation>, resource: &str| ResourceRule {
            operations: ops,
            api_groups: vec!["".into()],
            api_versions: vec!["v1".into()],
            resources: vec![resource.into()],
            scope: None,
        };
        let spec = EscalationPolicySpec {
            match_: MatchSpec {
                rules: vec![
                    rule(vec![Operation::Delete], "persistentvolumeclaims"),
                    rule(vec![Operation::Create], "secrets"),
                ],
                ..Default::default()
            },
            ..Default::default()
        };
        let rules = gate_rules([&EscalationPolicy::new("p", spec)]);
        let ops = |resource: &str| {
            rules
                .iter()
                .find(|r| r.resources.as_deref() == Some(&[resource.to_string()][..]))
                .unwrap()
                .operations
                .clone()
        };
        assert_eq!(ops("persistentvolumeclaims"), Some(vec!["DELETE".to_string(), "UPDATE".to_string()]));
        assert_eq!(ops("secrets"), Some(vec!["CREATE".to_string()]));
        // Side doors to a held DELETE reach the gate too (policy::side_doors).
        assert_eq!(ops("statefulsets"), Some(vec!["UPDATE".to_string()]));
        assert_eq!(ops("namespaces"), Some(vec!["DELETE".to_string()]));
        let creates = EscalationPolicySpec {
            match_: MatchSpec { rules: vec![rule(vec![Operation::Create], "secrets")], ..Default::default() },
            ..Default::default()
        };
        assert_eq!(gate_rules([&EscalationPolicy::new("p", creates)]).len(), 1, "no DELETE held, no side door");
        // The /status of every resource the gate sees updated; none for CREATE-only.
        let status: Vec<String> = status_rules(&rules).iter().flat_map(|r| r.resources.clone().unwrap()).collect();
        assert_eq!(status, ["persistentvolumeclaims/status", "statefulsets/status"]);
        assert!(status_rules(&rules).iter().all(|r| r.operations == Some(vec!["UPDATE".to_string()])));
    }

    #[test]
    fn the_exemption_condition_is_written_only_where_a_rule_could_reach_an_exempt_resource() {
        let rule = |groups: &[&str], resources: &[&str]| RuleWithOperations {
            operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
            api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
            api_versions: Some(vec!["*".into()]),
            resources: Some(resources.iter().map(|s| s.to_string()).collect()),
            scope: None,
        };
        let settings = WebhookSettings {
            name: "signoff".into(),
            owner: None,
            endpoint: Endpoint::Url("https://127.0.0.1:9443/validate".into()),
            controller_namespace: "signoff-system".into(),
            timeout_seconds: 10,
            exempt_namespaces: vec![],
        };
        let conditions = |gate: Vec<RuleWithOperations>| -> Vec<Vec<String>> {
            let webhooks = webhook_configuration(&settings, gate, b"").webhooks.unwrap();
            webhooks
                .iter()
                .filter(|w| w.name != "approvals.signoff.dev")
                .map(|w| w.match_conditions.iter().flatten().map(|c| c.name.clone()).collect())
                .collect()
        };
        // Named kinds, none exempt: the rules keep exempt resources out; the
        // /status webhook still sends only metadata changes.
        let named = vec![rule(&["apps"], &["deployments", "deployments/scale"]), rule(&[""], &["configmaps"])];
        assert!(!reaches_exempt(&named));
        assert_eq!(conditions(named.clone()), [vec![], vec!["metadata-changes".to_string()]]);
        // Anything that could match one of them keeps the condition.
        for reaching in [
            rule(&["*"], &["*"]),
            rule(&[""], &["*"]),
            rule(&["*"], &["leases"]),
            rule(&["coordination.k8s.io"], &["leases"]),
            rule(&[""], &["events"]),
            rule(&["events.k8s.io"], &["events/*"]),
            rule(&["", "apps"], &["nodes/status"]),
            rule(&["*"], &["*/scale"]),
        ] {
            assert!(reaches_exempt(std::slice::from_ref(&reaching)), "{reaching:?}");
            let gate = [named.clone(), vec![reaching.clone()]].concat();
            assert_eq!(conditions(gate)[0], ["not-exempt"], "{reaching:?}");
        }
        // A wildcard group alone does not: no exempt resource is called deployments.
        assert!(!reaches_exempt(&[rule(&["*"], &["deployments"])]));
        // The /status webhook of a wildcard gate could see nodes/status: both conditions.
        assert_eq!(conditions(vec![rule(&["*"], &["*"])])[1], ["not-exempt", "metadata-changes"]);
    }
}
