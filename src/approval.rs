//! The approval rules, in one place (invariant 2 of DESIGN.md): who may decide,
//! whose decisions count, who may reopen, and what each writer of an
//! ApprovalRequest may change. An approval is written by the approver, as
//! themselves; decisions are append-only; nobody approves their own request;
//! service accounts never count; the controller may move phase and tiers but
//! never add a decision. Pure: the webhook's guard, the escalation state machine
//! and `kubectl signoff` all import these.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::{
    ApprovalRequest, ApprovalRequestSpec, ApprovalRequestStatus, Decision, Lane, Phase, REOPEN_ANNOTATION,
    SUPERSEDED_ANNOTATION, Verdict,
};
use crate::policy::UserInfo;

/// Why a write is refused: the field it is about (a path in the object, as
/// Kubernetes' `field.Forbidden` and `field.Invalid` name it) and the reason.
/// Rendered only at the edge: the webhook's answer is the reason, one sentence
/// the user reads as is (the CLI prints it unchanged); the audit log adds the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// This writer may not make this change at all.
    Forbidden { field: String, reason: String },
    /// The change is not acceptable from anyone.
    Invalid { field: String, reason: String },
}

impl Denial {
    pub fn forbidden(field: impl Into<String>, reason: impl Into<String>) -> Denial {
        Denial::Forbidden { field: field.into(), reason: reason.into() }
    }

    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Denial {
        Denial::Invalid { field: field.into(), reason: reason.into() }
    }

    /// The path of the field the denial is about ("" for the whole object).
    pub fn field(&self) -> &str {
        match self {
            Denial::Forbidden { field, .. } | Denial::Invalid { field, .. } => field,
        }
    }
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denial::Forbidden { reason, .. } | Denial::Invalid { reason, .. } => f.write_str(reason),
        }
    }
}

/// Usernames with this prefix are Kubernetes ServiceAccounts: never approvers.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// Whether `username` is a ServiceAccount (the controller's, a GitOps tool's).
pub fn is_service_account(username: &str) -> bool {
    username.starts_with(SERVICE_ACCOUNT_PREFIX)
}

/// Who is who, for the guards.
#[derive(Clone, Debug)]
pub struct Identities {
    /// signoff's own username (its ServiceAccount).
    pub controller: String,
    /// Groups whose members are admins (may write anyone's Approver, delete requests).
    pub admin_groups: Vec<String>,
}

impl Identities {
    pub fn is_admin(&self, user: &UserInfo) -> bool {
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
) -> Result<(), Denial> {
    let is_controller = user.username == ids.controller;
    match (operation, old, new) {
        ("CREATE", _, _) if !is_controller => Err(Denial::forbidden(
            "",
            format!(
                "only signoff creates ApprovalRequests (as {}); apply your change and signoff holds it",
                ids.controller
            ),
        )),
        ("CREATE", _, _) => Ok(()),
        ("DELETE", _, _) if is_controller || ids.is_admin(user) => Ok(()),
        ("DELETE", _, _) => {
            Err(Denial::forbidden("", "only signoff or an admin may delete an ApprovalRequest: it is the audit record"))
        }
        ("UPDATE", Some(old), Some(new)) => {
            if old.spec != new.spec {
                return Err(Denial::forbidden(
                    "spec",
                    "ApprovalRequest spec is immutable; reopen or create a new request instead",
                ));
            }
            if sub_resource != "status" {
                // Metadata only: status writes through the main resource are dropped by
                // the API server, and the spec cannot change. A reopen and a
                // supersession are the metadata changes with a meaning.
                if superseded_by(&old.metadata) != superseded_by(&new.metadata) && !is_controller {
                    return Err(Denial::forbidden(
                        "metadata.annotations[signoff.dev/superseded-by]",
                        "only signoff marks a request superseded (when the same requester's newer change is held)",
                    ));
                }
                return reopen_write(old, new, user, ids, now);
            }
            status_write(old, new, user, ids, now)
        }
        _ => Err(Denial::invalid(
            "",
            format!("unexpected {operation} of an ApprovalRequest without its objects; refusing"),
        )),
    }
}

/// The newer request that replaces the request of `meta`, when signoff marked it superseded
/// (only signoff may: see [`approval_write`]).
pub fn superseded_by(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations.as_ref()?.get(SUPERSEDED_ANNOTATION).map(String::as_str)
}

/// The reopen annotation as written (the guard compares it as text).
pub fn reopen_annotation(ar: &ApprovalRequest) -> Option<&str> {
    ar.metadata.annotations.as_ref()?.get(REOPEN_ANNOTATION).map(String::as_str)
}

/// Adding or changing the reopen annotation starts a new attempt: only the
/// requester or an admin, only after Rejected or Expired or once the approval is
/// spent (used, or past notAfter), only the next attempt.
pub fn reopen_write(
    old: &ApprovalRequest,
    new: &ApprovalRequest,
    user: &UserInfo,
    ids: &Identities,
    now: Timestamp,
) -> Result<(), Denial> {
    let Some(value) = reopen_annotation(new) else { return Ok(()) };
    if reopen_annotation(old) == Some(value) {
        return Ok(());
    }
    let requester = &old.spec.requester.username;
    if user.username != *requester && !ids.is_admin(user) {
        return Err(Denial::forbidden(
            "metadata.annotations[signoff.dev/reopen-attempt]",
            format!("only the requester ({requester}) or an admin may reopen this request"),
        ));
    }
    let status = old.status.clone().unwrap_or_default();
    if !status.reopenable(now) {
        return Err(Denial::forbidden(
            "metadata.annotations[signoff.dev/reopen-attempt]",
            format!(
                "only a Rejected or Expired request, or an Approved one whose approval was used or has passed notAfter, \
             can be reopened; this one is {:?}",
                status.phase
            ),
        ));
    }
    let next = status.attempt + 1;
    if value.parse::<u32>().ok() != Some(next) {
        return Err(Denial::invalid(
            "metadata.annotations[signoff.dev/reopen-attempt]",
            format!(
                "{REOPEN_ANNOTATION} must be {next} (the current attempt {} plus one), got {value:?}",
                status.attempt
            ),
        ));
    }
    Ok(())
}

pub fn status_write(
    old: &ApprovalRequest,
    new: &ApprovalRequest,
    user: &UserInfo,
    ids: &Identities,
    now: Timestamp,
) -> Result<(), Denial> {
    let empty = ApprovalRequestStatus::default();
    let old_status = old.status.as_ref().unwrap_or(&empty);
    let new_status = new.status.as_ref().unwrap_or(&empty);

    // Append-only: every earlier decision stays, unchanged, in its place.
    if new_status.decisions.len() < old_status.decisions.len()
        || old_status.decisions.iter().zip(&new_status.decisions).any(|(a, b)| a != b)
    {
        return Err(Denial::forbidden(
            "status.decisions",
            "decisions are append-only: an earlier decision cannot be edited or removed",
        ));
    }
    let added: &[Decision] = &new_status.decisions[old_status.decisions.len()..];

    if user.username == ids.controller {
        if !added.is_empty() {
            return Err(Denial::forbidden(
                "status.decisions",
                "signoff's controller may move phase and tiers but never add a decision",
            ));
        }
        return controller_progress(&new.spec.requester.username, old_status, new_status, reopen_annotation(new), now);
    }

    if status_without_decisions(old_status) != status_without_decisions(new_status) {
        return Err(Denial::forbidden(
            "status",
            format!(
                "only signoff's controller ({}) may change phase, tiers or notifications; approvers only add a decision \
             (kubectl signoff approve|reject)",
                ids.controller
            ),
        ));
    }
    match added {
        [] => Ok(()),
        [decision] => decision_allowed(old, old_status, decision, user, now),
        _ => Err(Denial::forbidden("status.decisions", "add one decision at a time")),
    }
}

pub fn decision_allowed(
    ar: &ApprovalRequest,
    status: &ApprovalRequestStatus,
    decision: &Decision,
    user: &UserInfo,
    now: Timestamp,
) -> Result<(), Denial> {
    if decision.approver != user.username {
        return Err(Denial::forbidden(
            "status.decisions[].approver",
            format!(
                "a decision must name its writer: you are {}, the decision names {}",
                user.username, decision.approver
            ),
        ));
    }
    // The decision's uid must be exactly the writer's: none when the API server
    // gives the writer none (e.g. client-certificate users).
    let claimed_uid = decision.uid.as_deref().unwrap_or_default();
    if claimed_uid != user.uid {
        return Err(Denial::forbidden(
            "status.decisions[].uid",
            match (claimed_uid.is_empty(), user.uid.is_empty()) {
                (true, false) => format!("the decision must carry your uid ({})", user.uid),
                (false, true) => format!("the decision's uid {claimed_uid} is not yours (you have none)"),
                _ => format!("the decision's uid {claimed_uid} is not yours ({})", user.uid),
            },
        ));
    }
    let mut claimed = decision.groups.clone();
    let mut actual = user.groups.clone();
    claimed.sort();
    actual.sort();
    if claimed != actual {
        return Err(Denial::forbidden(
            "status.decisions[].groups",
            format!("the decision's groups must be exactly yours ({})", user.groups.join(", ")),
        ));
    }
    if is_service_account(&user.username) {
        return Err(Denial::forbidden(
            "status.decisions[].approver",
            "service accounts never count as approvers; a person must approve",
        ));
    }
    if user.username == ar.spec.requester.username {
        return Err(Denial::forbidden(
            "status.decisions[].approver",
            "you requested this change; someone else must approve it",
        ));
    }
    if status.phase != Phase::Pending {
        return Err(Denial::forbidden(
            "status.decisions",
            format!("this request is already {:?}; nothing left to decide", status.phase),
        ));
    }
    if decision.attempt != status.attempt {
        return Err(Denial::invalid(
            "status.decisions[].attempt",
            format!(
                "the decision is for attempt {}, but the request is in attempt {}",
                decision.attempt, status.attempt
            ),
        ));
    }
    if decision.at.0.duration_since(now).abs() > DECISION_CLOCK_SKEW {
        return Err(Denial::invalid(
            "status.decisions[].at",
            format!("the decision's time {} is more than 2 minutes from now ({now})", decision.at.0),
        ));
    }
    let eligible = eligible_routes(status, user);
    if eligible.is_empty() {
        let reached: Vec<String> =
            status.lanes.iter().map(|l| format!("{} tier {}/{}", l.route, l.tier + 1, l.tiers)).collect();
        return Err(Denial::forbidden(
            "status.decisions[].approver",
            format!(
                "{} is not an eligible approver for the tiers reached so far ({}); wait for escalation or ask one of them",
                user.username,
                if reached.is_empty() { "none yet".to_string() } else { reached.join(", ") }
            ),
        ));
    }
    if let Some(route) = decision.routes.iter().find(|r| !eligible.contains(r)) {
        return Err(Denial::forbidden(
            "status.decisions[].routes",
            format!("you are not eligible to decide for route {route} (eligible: {})", eligible.join(", ")),
        ));
    }
    Ok(())
}

/// The controller may only move forward: tiers never go back, lanes are never
/// dropped, a final phase stays. A final phase becomes Pending again only for a
/// reopen: the next attempt, as annotated. Approved needs approvals that count:
/// without them, even signoff's own token cannot approve a change.
/// Admissions are an audit record: append-only, like decisions.
pub fn controller_progress(
    requester: &str,
    old: &ApprovalRequestStatus,
    new: &ApprovalRequestStatus,
    reopen: Option<&str>,
    now: Timestamp,
) -> Result<(), Denial> {
    if new.admissions.len() < old.admissions.len() || old.admissions.iter().zip(&new.admissions).any(|(a, b)| a != b) {
        return Err(Denial::forbidden(
            "status.admissions",
            "admissions are append-only: an earlier admission cannot be edited or removed",
        ));
    }
    if let Some(lane) = new.lanes.iter().find(|l| l.tiers == 0 || l.tier >= l.tiers) {
        return Err(Denial::invalid(
            "status.lanes[].tier",
            format!("lane {} is at tier {} of {}: out of range", lane.route, lane.tier, lane.tiers),
        ));
    }
    let reopened = old.reopenable(now)
        && new.phase == Phase::Pending
        && new.attempt == old.attempt + 1
        && reopen.and_then(|v| v.parse::<u32>().ok()) == Some(new.attempt);
    if reopened {
        // A new attempt starts with fresh lanes; none can be decided yet.
        if let Some(lane) = new.lanes.iter().find(|l| l.phase == Phase::Approved) {
            return Err(Denial::invalid(
                "status.lanes[].phase",
                format!("a reopened request starts undecided; lane {} says Approved", lane.route),
            ));
        }
        return Ok(());
    }
    if new.attempt != old.attempt {
        return Err(Denial::forbidden(
            "status.attempt",
            format!(
                "attempt {} may only become {} by a reopen of a Rejected or Expired request (annotation {REOPEN_ANNOTATION})",
                old.attempt,
                old.attempt + 1
            ),
        ));
    }
    if old.phase.is_terminal() && new.phase != old.phase {
        return Err(Denial::forbidden(
            "status.phase",
            format!("phase {:?} is final; it cannot become {:?}", old.phase, new.phase),
        ));
    }
    for lane in &old.lanes {
        match new.lanes.iter().find(|l| l.route == lane.route) {
            None => return Err(Denial::forbidden("status.lanes", format!("lane {} cannot be removed", lane.route))),
            Some(next) if next.tier < lane.tier => {
                return Err(Denial::forbidden(
                    "status.lanes[].tier",
                    format!("lane {} cannot move back from tier {} to {}", lane.route, lane.tier, next.tier),
                ));
            }
            Some(_) => {}
        }
    }
    for lane in new.lanes.iter().filter(|l| l.phase == Phase::Approved) {
        let was_approved = old.lanes.iter().any(|l| l.route == lane.route && l.phase == Phase::Approved);
        let (approvers, rejected) = lane_votes(requester, new, lane);
        if !was_approved && (approvers.is_empty() || rejected) {
            return Err(Denial::forbidden(
                "status.lanes[].phase",
                format!(
                    "lane {} cannot be Approved: {}",
                    lane.route,
                    if rejected {
                        "a decision that counts rejects it"
                    } else {
                        "no approval of this attempt counts for it"
                    }
                ),
            ));
        }
    }
    if new.phase == Phase::Approved
        && old.phase != Phase::Approved
        && (new.lanes.is_empty() || new.lanes.iter().any(|l| l.phase != Phase::Approved))
    {
        return Err(Denial::forbidden("status.phase", "a request is Approved only when every lane is"));
    }
    Ok(())
}

/// The attempt the requester asked for with the reopen annotation, if any.
pub fn reopen_attempt(ar: &ApprovalRequest) -> Option<u32> {
    ar.metadata.annotations.as_ref()?.get(REOPEN_ANNOTATION)?.parse().ok()
}

/// The decisions that count for `lane`: the distinct people whose approvals count,
/// and whether a counted decision rejects. Only the current attempt's decisions
/// count, never the requester's or a service account's, and only from someone the
/// lane has reached. The webhook's guard uses it too: the controller may mark a
/// lane Approved only when it has approvals that count.
pub fn lane_votes<'a>(requester: &str, status: &'a ApprovalRequestStatus, lane: &Lane) -> (Vec<&'a str>, bool) {
    let mut approvers: Vec<&str> = Vec::new();
    let mut rejected = false;
    for d in status.decisions.iter().filter(|d| counts(requester, status, lane, d)) {
        match d.decision {
            Verdict::Reject => rejected = true,
            Verdict::Approve if !approvers.contains(&d.approver.as_str()) => approvers.push(&d.approver),
            Verdict::Approve => {}
        }
    }
    (approvers, rejected)
}

/// Whether `decision` counts for `lane` (see [`lane_votes`]): made in the
/// current attempt, not by the requester or a service account, by someone the
/// lane has reached.
pub fn counts(requester: &str, status: &ApprovalRequestStatus, lane: &Lane, decision: &Decision) -> bool {
    decision.attempt == status.attempt
        && decision.approver != requester
        && !is_service_account(&decision.approver)
        && counts_for(lane, decision)
}

/// Whether `decision` was made by someone `lane` has reached, for this lane.
pub fn counts_for(lane: &Lane, decision: &Decision) -> bool {
    let reached =
        lane.eligible.contains(&decision.approver) || decision.groups.iter().any(|g| lane.eligible_groups.contains(g));
    reached && (decision.routes.is_empty() || decision.routes.contains(&lane.route))
}

/// True when `me` may decide this request now and has not yet decided in this
/// attempt (what `kubectl signoff list` marks as waiting for you).
pub fn waiting_for(ar: &ApprovalRequest, me: &UserInfo) -> bool {
    let status = ar.status.clone().unwrap_or_default();
    status.phase == Phase::Pending
        && ar.spec.requester.username != me.username
        && !is_service_account(&me.username)
        && !eligible_routes(&status, me).is_empty()
        && !status.decisions.iter().any(|d| d.approver == me.username && d.attempt == status.attempt)
}

/// What a write needs now that the request `asked` does not cover, as phrases
/// for a message (empty when covered). An approval binds the assessment, not only
/// the content: the same change written by someone else, or after a freeze was
/// declared, may need more people. Covered when every route the write needs now
/// was asked for (by the same team, where one is named), at a risk and an action
/// class at least as high. Not bound to the requester: GitOps tools apply on a
/// person's behalf, and the routes already say whose write needs whom.
pub fn not_covered(asked: &ApprovalRequestSpec, needed: &ApprovalRequestSpec) -> Vec<String> {
    let mut missing = Vec::new();
    for target in &needed.routing {
        match asked.routing.iter().find(|a| a.route == target.route) {
            None => missing.push(format!("route {}", target.route)),
            Some(a) if a.team != target.team => missing.push(format!(
                "route {} for team {} (asked of {})",
                target.route,
                target.team.as_deref().unwrap_or("none"),
                a.team.as_deref().unwrap_or("no team")
            )),
            Some(_) => {}
        }
    }
    for route in needed.routes.iter().filter(|r| !asked.routes.contains(r)) {
        if !needed.routing.iter().any(|t| &t.route == route) {
            missing.push(format!("route {route}"));
        }
    }
    if needed.risk > asked.risk {
        missing.push(format!(
            "{} risk (asked at {})",
            needed.risk.as_str().to_lowercase(),
            asked.risk.as_str().to_lowercase()
        ));
    }
    if needed.action_class > asked.action_class {
        missing.push(format!("a {} change (asked as {})", needed.action_class.as_str(), asked.action_class.as_str()));
    }
    missing
}

/// The attempt a reopen asked for that has not started yet: the annotation names
/// a later attempt and the request may be reopened at `now`.
pub fn reopen_requested(ar: &ApprovalRequest, status: &ApprovalRequestStatus, now: Timestamp) -> Option<u32> {
    reopen_attempt(ar).filter(|next| *next > status.attempt && status.reopenable(now))
}

impl ApprovalRequestStatus {
    /// An Approved request whose approval can no longer admit anything: it was
    /// used (an approval admits its change once) or `notAfter` has passed. Like
    /// Rejected and Expired, it can be reopened.
    pub fn approval_spent(&self, now: jiff::Timestamp) -> bool {
        self.phase == Phase::Approved
            && (self.approved_admission().is_some() || self.not_after.as_ref().is_none_or(|t| t.0 <= now))
    }

    /// Whether the requester (or an admin) may start a new attempt now.
    pub fn reopenable(&self, now: jiff::Timestamp) -> bool {
        matches!(self.phase, Phase::Rejected | Phase::Expired) || self.approval_spent(now)
    }
}
