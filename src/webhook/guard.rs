//! Guards for writes to signoff's own resources, pure. ApprovalRequest writes are
//! judged by the approval rules ([`crate::approval`], invariant 2); here are the
//! checks of EscalationPolicy and Approver writes.

use jiff::SignedDuration;

use crate::approval::{Denial, Identities};
use crate::crd::{Approver, EscalationPolicy, PolicyMode};
use crate::policy::{CompiledPolicy, UserInfo};

/// Names of routes that need no entry in `routes`: they default to the Team named
/// after them (engineering: the namespace's owner).
pub const BUILT_IN_ROUTES: &[&str] = &["engineering", "security", "finance", "customer", "manager"];

/// Validate an EscalationPolicy: CEL compiles, every route a rule names exists,
/// timeouts are positive.
pub fn policy_write(policy: &EscalationPolicy) -> Result<(), Denial> {
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    CompiledPolicy::compile(policy)
        .map_err(|e| Denial::invalid("spec.rules", format!("EscalationPolicy {name}: {e}")))?;
    policy_spec(policy)
}

/// [`policy_write`] but for the CEL, for a policy whose rules are already compiled
/// (the status writer reads compile errors from the compiled set).
pub fn policy_spec(policy: &EscalationPolicy) -> Result<(), Denial> {
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    let spec = &policy.spec;
    for rule in &spec.rules {
        if !BUILT_IN_ROUTES.contains(&rule.route.as_str()) && !spec.routes.iter().any(|r| r.name == rule.route) {
            return Err(Denial::invalid(
                "spec.rules[].route",
                format!(
                    "EscalationPolicy {name}: rule {} names route {:?}, which is neither built in ({}) nor listed in spec.routes",
                    rule.name,
                    rule.route,
                    BUILT_IN_ROUTES.join(", ")
                ),
            ));
        }
    }
    let classes = &spec.action_classes;
    let timeouts = [
        ("actionClasses.routine.tierTimeout", Some(&classes.routine.tier_timeout)),
        ("actionClasses.timeSensitive.tierTimeout", Some(&classes.time_sensitive.tier_timeout)),
        ("actionClasses.destructive.tierTimeout", Some(&classes.destructive.tier_timeout)),
        ("approval.validFor", Some(&spec.approval.valid_for)),
    ];
    let tier_timeouts =
        spec.routes.iter().flat_map(|r| r.tiers.iter().map(|t| ("routes[].tiers[].timeout", t.timeout.as_ref())));
    for (field, value) in timeouts.into_iter().chain(tier_timeouts) {
        if let Some(value) = value {
            match crate::duration::parse(value) {
                Ok(d) if d > SignedDuration::ZERO => {}
                Ok(_) => {
                    return Err(Denial::invalid(
                        format!("spec.{field}"),
                        format!("EscalationPolicy {name}: {field} must be positive, got {value:?}"),
                    ));
                }
                Err(e) => {
                    return Err(Denial::invalid(
                        format!("spec.{field}"),
                        format!("EscalationPolicy {name}: {field}: {e}"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Validate a write to an Approver: only that person or an admin.
pub fn approver_write(approver: &Approver, user: &UserInfo, ids: &Identities) -> Result<(), Denial> {
    if approver.spec.user == user.username || ids.is_admin(user) {
        Ok(())
    } else {
        Err(Denial::forbidden(
            "spec.user",
            format!(
                "only {} or an admin may write the Approver for {}; edit your own with kubectl signoff away|quiet-hours",
                approver.spec.user, approver.spec.user
            ),
        ))
    }
}

/// What a write to an EscalationPolicy changes about enforcement, for the
/// record: every create, update and delete is logged, evented and counted, and
/// the writer is warned when it weakens the gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyChange {
    pub policy: String,
    /// created, updated or deleted.
    pub action: &'static str,
    /// One sentence: what changed.
    pub summary: String,
    /// The gate now holds less: an enforcing policy deleted, switched to Audit,
    /// or with rules removed.
    pub weakened: bool,
}

/// Compare the policy before and after a write (None when it does not exist).
pub fn policy_change(old: Option<&EscalationPolicy>, new: Option<&EscalationPolicy>) -> Option<PolicyChange> {
    let describe = |p: &EscalationPolicy| format!("{:?}, {} rules", p.spec.mode, p.spec.rules.len());
    let enforcing = |p: &EscalationPolicy| p.spec.mode == PolicyMode::Enforce;
    let (policy, action, summary, weakened) = match (old, new) {
        (None, None) => return None,
        (None, Some(new)) => (new, "created", format!("created ({})", describe(new)), false),
        (Some(old), None) => (
            old,
            "deleted",
            if enforcing(old) {
                format!("deleted (was {}): the changes it held are no longer held", describe(old))
            } else {
                format!("deleted (was {})", describe(old))
            },
            enforcing(old),
        ),
        (Some(old), Some(new)) => {
            let removed: Vec<&str> = old
                .spec
                .rules
                .iter()
                .filter(|r| !new.spec.rules.iter().any(|n| n.name == r.name))
                .map(|r| r.name.as_str())
                .collect();
            let mut changes = Vec::new();
            if old.spec.mode != new.spec.mode {
                changes.push(format!("mode {:?} → {:?}", old.spec.mode, new.spec.mode));
            }
            if !removed.is_empty() {
                changes.push(format!("rules removed: {}", removed.join(", ")));
            }
            let to_audit = enforcing(old) && !enforcing(new);
            let weakened = to_audit || (enforcing(new) && !removed.is_empty());
            let mut summary = if changes.is_empty() {
                format!("updated ({})", describe(new))
            } else {
                format!("updated: {}", changes.join("; "))
            };
            if to_audit {
                summary.push_str(": the changes it matches are now admitted and only recorded");
            }
            (new, "updated", summary, weakened)
        }
    };
    Some(PolicyChange { policy: policy.metadata.name.clone().unwrap_or_default(), action, summary, weakened })
}
