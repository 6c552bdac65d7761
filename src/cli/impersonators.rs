//! `kubectl signoff impersonators`: who can act as an approver by impersonation.
//!
//! The API server tells admission only whom a request impersonates, not who
//! sent it (Kubernetes 1.35; docs/security.md), so a requester who may
//! impersonate an eligible approver can approve her own request as him. This
//! lists the subjects whose ClusterRoles grant `impersonate` on the users or
//! groups that can approve (members, leads, on-call people and groups of every
//! Team, and every Approver). Only ClusterRoleBindings count: users and groups
//! are cluster-scoped, so a RoleBinding cannot grant impersonating them.

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use kube::Api;
use kube::api::ListParams;

use crate::crd::{Approver, Team};

#[derive(clap::Args)]
pub struct ImpersonatorsArgs {}

/// The users and groups that can approve something.
#[derive(Debug, Default, PartialEq)]
pub struct Approvers {
    pub users: BTreeSet<String>,
    pub groups: BTreeSet<String>,
}

impl Approvers {
    pub fn from(teams: &[Team], approvers: &[Approver]) -> Approvers {
        let mut out = Approvers::default();
        for team in teams {
            let spec = &team.spec;
            out.users.extend(spec.members.users.iter().cloned());
            out.groups.extend(spec.members.groups.iter().cloned());
            out.users.extend(spec.lead.iter().cloned());
            if let Some(on_call) = &spec.on_call {
                out.users.extend(on_call.rotation.iter().cloned());
                out.users.extend(on_call.overrides.iter().map(|o| o.user.clone()));
            }
        }
        out.users.extend(approvers.iter().map(|a| a.spec.user.clone()));
        out
    }
}

/// One subject that can impersonate approvers, and through what.
#[derive(Debug, PartialEq)]
pub struct Finding {
    /// `User alice`, `Group ops`, `ServiceAccount ns/name`.
    pub subject: String,
    /// `any user`, `user bob`, `any group`, `group team:payments`, sorted.
    pub can_act_as: Vec<String>,
    /// `ClusterRoleBinding b → ClusterRole r`.
    pub via: String,
}

/// What one rule lets its holder impersonate among `approvers`.
fn impersonable(rule: &PolicyRule, approvers: &Approvers) -> Vec<String> {
    let has = |list: &Option<Vec<String>>, value: &str| {
        list.as_ref().is_some_and(|l| l.iter().any(|v| v == value || v == "*"))
    };
    if !rule.verbs.iter().any(|v| v == "impersonate" || v == "*") || !has(&rule.api_groups, "") {
        return vec![];
    }
    let names = rule.resource_names.as_ref().filter(|n| !n.is_empty());
    let mut out = Vec::new();
    for (resource, which, known) in [("users", "user", &approvers.users), ("groups", "group", &approvers.groups)] {
        if !has(&rule.resources, resource) {
            continue;
        }
        match names {
            None if !known.is_empty() => out.push(format!("any {which}")),
            None => {}
            Some(names) => out.extend(names.iter().filter(|n| known.contains(*n)).map(|n| format!("{which} {n}"))),
        }
    }
    out
}

/// Every subject bound to a ClusterRole that lets it impersonate an approver.
pub fn impersonators(roles: &[ClusterRole], bindings: &[ClusterRoleBinding], approvers: &Approvers) -> Vec<Finding> {
    let mut findings = Vec::new();
    for binding in bindings.iter().filter(|b| b.role_ref.kind == "ClusterRole") {
        let Some(role) = roles.iter().find(|r| r.metadata.name.as_deref() == Some(binding.role_ref.name.as_str()))
        else {
            continue;
        };
        let mut can: Vec<String> = role.rules.iter().flatten().flat_map(|rule| impersonable(rule, approvers)).collect();
        can.sort();
        can.dedup();
        if can.is_empty() {
            continue;
        }
        for subject in binding.subjects.iter().flatten() {
            let subject = match (subject.kind.as_str(), &subject.namespace) {
                ("ServiceAccount", Some(ns)) => format!("ServiceAccount {ns}/{}", subject.name),
                (kind, _) => format!("{kind} {}", subject.name),
            };
            findings.push(Finding {
                subject,
                can_act_as: can.clone(),
                via: format!(
                    "ClusterRoleBinding {} → ClusterRole {}",
                    binding.metadata.name.as_deref().unwrap_or_default(),
                    binding.role_ref.name
                ),
            });
        }
    }
    findings.sort_by(|a, b| (&a.subject, &a.via).cmp(&(&b.subject, &b.via)));
    findings
}

/// The report: one line per finding, or a sentence that there is none.
pub fn render(findings: &[Finding], approvers: &Approvers) -> String {
    if findings.is_empty() {
        return format!(
            "nobody can impersonate the {} users and {} groups that can approve\n",
            approvers.users.len(),
            approvers.groups.len()
        );
    }
    let mut out = String::from(
        "These subjects can approve as someone else by impersonating them (the API server tells signoff only \
         whom a request impersonates). Remove what is not needed:\n",
    );
    for f in findings {
        out.push_str(&format!("  {}: can act as {} (via {})\n", f.subject, f.can_act_as.join(", "), f.via));
    }
    out
}

pub async fn run(client: &kube::Client) -> Result<String, String> {
    let list = ListParams::default();
    let read = |what: &str, e: kube::Error| format!("reading {what}: {e}");
    let teams = Api::<Team>::all(client.clone()).list(&list).await.map_err(|e| read("Teams", e))?.items;
    let people = Api::<Approver>::all(client.clone()).list(&list).await.map_err(|e| read("Approvers", e))?.items;
    let roles = Api::<ClusterRole>::all(client.clone()).list(&list).await.map_err(|e| read("ClusterRoles", e))?.items;
    let bindings = Api::<ClusterRoleBinding>::all(client.clone())
        .list(&list)
        .await
        .map_err(|e| read("ClusterRoleBindings", e))?
        .items;
    let approvers = Approvers::from(&teams, &people);
    Ok(render(&impersonators(&roles, &bindings, &approvers), &approvers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::{RoleRef, Subject};

    fn role(name: &str, resources: &[&str], names: &[&str], verbs: &[&str]) -> ClusterRole {
        let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ClusterRole {
            metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec!["".into()]),
                resources: Some(strings(resources)),
                resource_names: (!names.is_empty()).then(|| strings(names)),
                verbs: strings(verbs),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn binding(name: &str, role: &str, kind: &str, subject: &str) -> ClusterRoleBinding {
        ClusterRoleBinding {
            metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: role.into(),
            },
            subjects: Some(vec![Subject {
                kind: kind.into(),
                name: subject.into(),
                namespace: (kind == "ServiceAccount").then(|| "ci".to_string()),
                ..Default::default()
            }]),
        }
    }

    #[test]
    fn subjects_that_can_impersonate_an_approver_are_found_and_nobody_else() {
        let approvers = Approvers {
            users: ["bob".to_string(), "carol".into()].into(),
            groups: ["team:payments".to_string()].into(),
        };
        let roles = [
            role("as-bob", &["users"], &["bob", "zed"], &["impersonate"]),
            role("as-anyone", &["users", "groups"], &[], &["impersonate"]),
            role("as-zed", &["users"], &["zed"], &["impersonate"]),
            role("reader", &["users"], &[], &["get"]),
        ];
        let bindings = [
            binding("alice-as-bob", "as-bob", "User", "alice"),
            binding("ci-as-anyone", "as-anyone", "ServiceAccount", "deployer"),
            binding("mallory-as-zed", "as-zed", "User", "mallory"),
            binding("reader", "reader", "Group", "everyone"),
        ];
        let found = impersonators(&roles, &bindings, &approvers);
        assert_eq!(
            found,
            vec![
                Finding {
                    subject: "ServiceAccount ci/deployer".into(),
                    can_act_as: vec!["any group".into(), "any user".into()],
                    via: "ClusterRoleBinding ci-as-anyone → ClusterRole as-anyone".into(),
                },
                Finding {
                    subject: "User alice".into(),
                    can_act_as: vec!["user bob".into()],
                    via: "ClusterRoleBinding alice-as-bob → ClusterRole as-bob".into(),
                },
            ],
            "zed approves nothing, and get is not impersonate"
        );
        let text = render(&found, &approvers);
        assert!(text.contains("User alice: can act as user bob (via ClusterRoleBinding alice-as-bob"), "{text}");
        assert!(render(&[], &approvers).starts_with("nobody can impersonate the 2 users and 1 groups"));
    }
}
