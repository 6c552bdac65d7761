//! Guards for writes to signoff's own resources, pure. These enforce invariant 2 of
//! DESIGN.md: an approval is written by the approver, as themselves; decisions are
//! append-only; nobody approves their own request; service accounts never count;
//! the controller may move phase and tiers but never add a decision.

use jiff::{SignedDuration, Timestamp};

use crate::crd::{
    ApprovalRequest, ApprovalRequestStatus, Approver, Decision, EscalationPolicy, Phase, REOPEN_ANNOTATION,
};
use crate::policy::{CompiledPolicy, UserInfo};

/// Who is who, for the guards.
#[derive(Clone, Debug)]
pub struct Identities {
    /// signoff's own username (its ServiceAccount).
    pub controller: String,
    /// Groups whose members are admins (may write anyone's Approver, delete requests).
    pub admin_groups: Vec<String>,
}

impl Identities {
    fn is_admin(&self, user: &UserInfo) -> bool {
        user.groups.iter().any(|g| g == "system:masters" || self.admin_groups.contains(g))
    }
}

/// How far a decision's `at` may be from the time it is written.
pub const DECISION_CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(120);

/// Routes a user may decide for: lanes whose reached tiers include the user or
/// one of the user's groups.
pub fn eligible_routes(status: &ApprovalRequestStatus, user: &UserInfo) -> Vec<String> {
    status
        .lanes
        .iter()
        .filter(|lane| {
            lane.eligible.contains(&user.username) || lane.eligible_groups.iter().any(|g| user.groups.contains(g))
        })
        .map(|lane| lane.route.clone())
        .collect()
}

fn status_without_decisions(status: &ApprovalRequestStatus) -> ApprovalRequestStatus {
    ApprovalRequestStatus { decisions: Vec::new(), ..status.clone() }
}

/// Validate a write to an ApprovalRequest. `sub_resource` is "" or "status".
pub fn approval_write(
    operation: &str,
    sub_resource: &str,
    old: Option<&ApprovalRequest>,
    new: Option<&ApprovalRequest>,
    user: &UserInfo,
    ids: &Identities,
    now: Timestamp,
) -> Result<(), String> {
    let is_controller = user.username == ids.controller;
    match (operation, old, new) {
        ("CREATE", _, _) if !is_controller => Err(format!(
            "only signoff creates ApprovalRequests (as {}); apply your change and signoff holds it",
            ids.controller
        )),
        ("CREATE", _, _) => Ok(()),
        ("DELETE", _, _) if is_controller || ids.is_admin(user) => Ok(()),
        ("DELETE", _, _) => {
            Err("only signoff or an admin may delete an ApprovalRequest: it is the audit record".into())
        }
        ("UPDATE", Some(old), Some(new)) => {
            if old.spec != new.spec {
                return Err("ApprovalRequest spec is immutable; reopen or create a new request instead".into());
            }
            if sub_resource != "status" {
                // Metadata only: status writes through the main resource are dropped by
                // the API server, and the spec cannot change. A reopen is the one
                // metadata change with a meaning.
                return reopen_write(old, new, user, ids, now);
            }
            status_write(old, new, user, ids, now)
        }
        _ => Err(format!("unexpected {operation} of an ApprovalRequest without its objects; refusing")),
    }
}

fn reopen_annotation(ar: &ApprovalRequest) -> Option<&str> {
    ar.metadata.annotations.as_ref()?.get(REOPEN_ANNOTATION).map(String::as_str)
}

/// Adding or changing the reopen annotation starts a new attempt: only the
/// requester or an admin, only after Rejected or Expired or once the approval is
/// spent (used, or past notAfter), only the next attempt.
fn reopen_write(
    old: &ApprovalRequest,
    new: &ApprovalRequest,
    user: &UserInfo,
    ids: &Identities,
    now: Timestamp,
) -> Result<(), String> {
    let Some(value) = reopen_annotation(new) else { return Ok(()) };
    if reopen_annotation(old) == Some(value) {
        return Ok(());
    }
    let requester = &old.spec.requester.username;
    if user.username != *requester && !ids.is_admin(user) {
        return Err(format!("only the requester ({requester}) or an admin may reopen this request"));
    }
    let status = old.status.clone().unwrap_or_default();
    if !status.reopenable(now) {
        return Err(format!(
            "only a Rejected or Expired request, or an Approved one whose approval was used or has passed notAfter, \
             can be reopened; this one is {:?}",
            status.phase
        ));
    }
    let next = status.attempt + 1;
    if value.parse::<u32>().ok() != Some(next) {
        return Err(format!(
            "{REOPEN_ANNOTATION} must be {next} (the current attempt {} plus one), got {value:?}",
            status.attempt
        ));
    }
    Ok(())
}

fn status_write(
    old: &ApprovalRequest,
    new: &ApprovalRequest,
    user: &UserInfo,
    ids: &Identities,
    now: Timestamp,
) -> Result<(), String> {
    let empty = ApprovalRequestStatus::default();
    let old_status = old.status.as_ref().unwrap_or(&empty);
    let new_status = new.status.as_ref().unwrap_or(&empty);

    // Append-only: every earlier decision stays, unchanged, in its place.
    if new_status.decisions.len() < old_status.decisions.len()
        || old_status.decisions.iter().zip(&new_status.decisions).any(|(a, b)| a != b)
    {
        return Err("decisions are append-only: an earlier decision cannot be edited or removed".into());
    }
    let added: &[Decision] = &new_status.decisions[old_status.decisions.len()..];

    if user.username == ids.controller {
        if !added.is_empty() {
            return Err("signoff's controller may move phase and tiers but never add a decision".into());
        }
        return controller_progress(&new.spec.requester.username, old_status, new_status, reopen_annotation(new), now);
    }

    if status_without_decisions(old_status) != status_without_decisions(new_status) {
        return Err(format!(
            "only signoff's controller ({}) may change phase, tiers or notifications; approvers only add a decision \
             (kubectl signoff approve|reject)",
            ids.controller
        ));
    }
    match added {
        [] => Ok(()),
        [decision] => decision_allowed(old, old_status, decision, user, now),
        _ => Err("add one decision at a time".into()),
    }
}

fn decision_allowed(
    ar: &ApprovalRequest,
    status: &ApprovalRequestStatus,
    decision: &Decision,
    user: &UserInfo,
    now: Timestamp,
) -> Result<(), String> {
    if decision.approver != user.username {
        return Err(format!(
            "a decision must name its writer: you are {}, the decision names {}",
            user.username, decision.approver
        ));
    }
    // The decision's uid must be exactly the writer's: none when the API server
    // gives the writer none (e.g. client-certificate users).
    let claimed_uid = decision.uid.as_deref().unwrap_or_default();
    if claimed_uid != user.uid {
        return Err(match (claimed_uid.is_empty(), user.uid.is_empty()) {
            (true, false) => format!("the decision must carry your uid ({})", user.uid),
            (false, true) => format!("the decision's uid {claimed_uid} is not yours (you have none)"),
            _ => format!("the decision's uid {claimed_uid} is not yours ({})", user.uid),
        });
    }
    let mut claimed = decision.groups.clone();
    let mut actual = user.groups.clone();
    claimed.sort();
    actual.sort();
    if claimed != actual {
        return Err(format!("the decision's groups must be exactly yours ({})", user.groups.join(", ")));
    }
    if user.username.starts_with("system:serviceaccount:") {
        return Err("service accounts never count as approvers; a person must approve".into());
    }
    if user.username == ar.spec.requester.username {
        return Err("you requested this change; someone else must approve it".into());
    }
    if status.phase != Phase::Pending {
        return Err(format!("this request is already {:?}; nothing left to decide", status.phase));
    }
    if decision.attempt != status.attempt {
        return Err(format!(
            "the decision is for attempt {}, but the request is in attempt {}",
            decision.attempt, status.attempt
        ));
    }
    if decision.at.0.duration_since(now).abs() > DECISION_CLOCK_SKEW {
        return Err(format!("the decision's time {} is more than 2 minutes from now ({now})", decision.at.0));
    }
    let eligible = eligible_routes(status, user);
    if eligible.is_empty() {
        let reached: Vec<String> =
            status.lanes.iter().map(|l| format!("{} tier {}/{}", l.route, l.tier + 1, l.tiers)).collect();
        return Err(format!(
            "{} is not an eligible approver for the tiers reached so far ({}); wait for escalation or ask one of them",
            user.username,
            if reached.is_empty() { "none yet".to_string() } else { reached.join(", ") }
        ));
    }
    if let Some(route) = decision.routes.iter().find(|r| !eligible.contains(r)) {
        return Err(format!("you are not eligible to decide for route {route} (eligible: {})", eligible.join(", ")));
    }
    Ok(())
}

/// The controller may only move forward: tiers never go back, lanes are never
/// dropped, a final phase stays. A final phase becomes Pending again only for a
/// reopen: the next attempt, as annotated. Approved needs approvals that count:
/// without them, even signoff's own token cannot approve a change.
/// Admissions are an audit record: append-only, like decisions.
fn controller_progress(
    requester: &str,
    old: &ApprovalRequestStatus,
    new: &ApprovalRequestStatus,
    reopen: Option<&str>,
    now: Timestamp,
) -> Result<(), String> {
    if new.admissions.len() < old.admissions.len() || old.admissions.iter().zip(&new.admissions).any(|(a, b)| a != b) {
        return Err("admissions are append-only: an earlier admission cannot be edited or removed".into());
    }
    if let Some(lane) = new.lanes.iter().find(|l| l.tiers == 0 || l.tier >= l.tiers) {
        return Err(format!("lane {} is at tier {} of {}: out of range", lane.route, lane.tier, lane.tiers));
    }
    let reopened = old.reopenable(now)
        && new.phase == Phase::Pending
        && new.attempt == old.attempt + 1
        && reopen.and_then(|v| v.parse::<u32>().ok()) == Some(new.attempt);
    if reopened {
        // A new attempt starts with fresh lanes; none can be decided yet.
        if let Some(lane) = new.lanes.iter().find(|l| l.phase == Phase::Approved) {
            return Err(format!("a reopened request starts undecided; lane {} says Approved", lane.route));
        }
        return Ok(());
    }
    if new.attempt != old.attempt {
        return Err(format!(
            "attempt {} may only become {} by a reopen of a Rejected or Expired request (annotation {REOPEN_ANNOTATION})",
            old.attempt,
            old.attempt + 1
        ));
    }
    if matches!(old.phase, Phase::Rejected | Phase::Expired | Phase::Approved) && new.phase != old.phase {
        return Err(format!("phase {:?} is final; it cannot become {:?}", old.phase, new.phase));
    }
    for lane in &old.lanes {
        match new.lanes.iter().find(|l| l.route == lane.route) {
            None => return Err(format!("lane {} cannot be removed", lane.route)),
            Some(next) if next.tier < lane.tier => {
                return Err(format!("lane {} cannot move back from tier {} to {}", lane.route, lane.tier, next.tier));
            }
            Some(_) => {}
        }
    }
    for lane in new.lanes.iter().filter(|l| l.phase == Phase::Approved) {
        let was_approved = old.lanes.iter().any(|l| l.route == lane.route && l.phase == Phase::Approved);
        let (approvers, rejected) = crate::escalation::lane_votes(requester, new, lane);
        if !was_approved && (approvers.is_empty() || rejected) {
            return Err(format!(
                "lane {} cannot be Approved: {}",
                lane.route,
                if rejected {
                    "a decision that counts rejects it"
                } else {
                    "no approval of this attempt counts for it"
                }
            ));
        }
    }
    if new.phase == Phase::Approved
        && old.phase != Phase::Approved
        && (new.lanes.is_empty() || new.lanes.iter().any(|l| l.phase != Phase::Approved))
    {
        return Err("a request is Approved only when every lane is".into());
    }
    Ok(())
}

/// Names of routes that need no entry in `routes`: they default to the Team named
/// after them (engineering: the namespace's owner).
pub const BUILT_IN_ROUTES: &[&str] = &["engineering", "security", "finance", "customer", "manager"];

/// Validate an EscalationPolicy: CEL compiles, every route a rule names exists,
/// timeouts are positive.
pub fn policy_write(policy: &EscalationPolicy) -> Result<(), String> {
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    CompiledPolicy::compile(policy).map_err(|e| format!("EscalationPolicy {name}: {e}"))?;
    let spec = &policy.spec;
    for rule in &spec.rules {
        if !BUILT_IN_ROUTES.contains(&rule.route.as_str()) && !spec.routes.iter().any(|r| r.name == rule.route) {
            return Err(format!(
                "EscalationPolicy {name}: rule {} names route {:?}, which is neither built in ({}) nor listed in spec.routes",
                rule.name,
                rule.route,
                BUILT_IN_ROUTES.join(", ")
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
                Ok(_) => return Err(format!("EscalationPolicy {name}: {field} must be positive, got {value:?}")),
                Err(e) => return Err(format!("EscalationPolicy {name}: {field}: {e}")),
            }
        }
    }
    Ok(())
}

/// Validate a write to an Approver: only that person or an admin.
pub fn approver_write(approver: &Approver, user: &UserInfo, ids: &Identities) -> Result<(), String> {
    if approver.spec.user == user.username || ids.is_admin(user) {
        Ok(())
    } else {
        Err(format!(
            "only {} or an admin may write the Approver for {}; edit your own with kubectl signoff away|quiet-hours",
            approver.spec.user, approver.spec.user
        ))
    }
}
