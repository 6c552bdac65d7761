//! The escalation state machine, pure: `step(request, policies, teams, now)` returns
//! the new status and when to look again. The reconciler (`reconciler.rs`) executes
//! it. All progress lives in the ApprovalRequest's status, so a restart or a new
//! leader resumes exactly where the last one stopped.
//!
//! This first version opens one lane per route at tier 1 (the owning team),
//! counts eligible, distinct approvals against the policy's quorum, lets any
//! eligible rejection win, and sets `notAfter` on approval. Tier timeouts, the
//! rest of the chain, quiet hours and notifications build on it (issue 5).

pub mod reconciler;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{ApprovalRequest, ApprovalRequestStatus, Lane, Phase, Risk, Team, TierKind, Verdict, default_chain};
use crate::policy::PolicySet;

/// People a tier resolves to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reached {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

/// Members of a team (users and groups).
pub fn team_members(teams: &[Team], name: &str) -> Reached {
    teams
        .iter()
        .find(|t| t.metadata.name.as_deref() == Some(name))
        .map(|t| Reached { users: t.spec.members.users.clone(), groups: t.spec.members.groups.clone() })
        .unwrap_or_default()
}

/// The result of one step.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub status: ApprovalRequestStatus,
    /// When to run the next step even if nothing changes (a deadline).
    pub wake_at: Option<Timestamp>,
}

/// Distinct approvals a lane needs for this risk.
fn quorum(policies: &PolicySet, policy: &str, risk: Risk) -> u32 {
    let approval = policies.get(policy).map(|p| p.spec().approval.clone()).unwrap_or_default();
    match risk {
        Risk::High => approval.high,
        _ => approval.medium,
    }
}

fn valid_for(policies: &PolicySet, policy: &str) -> jiff::SignedDuration {
    let text = policies.get(policy).map(|p| p.spec().approval.valid_for.clone()).unwrap_or_else(|| "1h".into());
    crate::duration::parse(&text).unwrap_or(jiff::SignedDuration::from_hours(1))
}

fn tier_timeout(policies: &PolicySet, policy: &str, ar: &ApprovalRequest) -> jiff::SignedDuration {
    let classes = policies.get(policy).map(|p| p.spec().action_classes.clone()).unwrap_or_default();
    crate::duration::parse(&classes.get(ar.spec.action_class).tier_timeout)
        .unwrap_or(jiff::SignedDuration::from_mins(60))
}

fn open_lanes(ar: &ApprovalRequest, policies: &PolicySet, teams: &[Team], now: Timestamp) -> Vec<Lane> {
    ar.spec
        .routing
        .iter()
        .map(|target| {
            let chain = policies
                .get(&target.policy)
                .and_then(|p| p.spec().routes.iter().find(|r| r.name == target.route).map(|r| r.tiers.clone()))
                .filter(|tiers| !tiers.is_empty())
                .unwrap_or_else(default_chain);
            let first = chain.first().map(|t| t.kind).unwrap_or(TierKind::Team);
            let reached = match (first, &target.team) {
                (TierKind::Team, Some(team)) => team_members(teams, team),
                _ => Reached::default(),
            };
            Lane {
                route: target.route.clone(),
                policy: target.policy.clone(),
                tier: 0,
                tiers: chain.len() as u32,
                tier_name: Some(format!("{first:?}")),
                tier_started_at: Some(Time(now)),
                tier_deadline: Some(Time(now + tier_timeout(policies, &target.policy, ar))),
                phase: Phase::Pending,
                eligible: reached.users,
                eligible_groups: reached.groups,
            }
        })
        .collect()
}

/// Whether a decision counts for `lane`: its approver (or one of the groups the
/// webhook verified on the decision) was reached in that lane, and the decision
/// names the lane or no lane (meaning all of theirs).
fn counts_for(lane: &Lane, decision: &crate::crd::Decision) -> bool {
    let reached =
        lane.eligible.contains(&decision.approver) || decision.groups.iter().any(|g| lane.eligible_groups.contains(g));
    reached && (decision.routes.is_empty() || decision.routes.contains(&lane.route))
}

/// One step of the state machine.
pub fn step(ar: &ApprovalRequest, policies: &PolicySet, teams: &[Team], now: Timestamp) -> Step {
    let mut status = ar.status.clone().unwrap_or_default();
    if status.phase != Phase::Pending {
        return Step { status, wake_at: None };
    }
    if status.lanes.is_empty() {
        status.lanes = open_lanes(ar, policies, teams, now);
    }
    // The webhook checked each decision as it was written; the requester and
    // service accounts are excluded again here, as defence in depth.
    let requester = ar.spec.requester.username.clone();
    for lane in &mut status.lanes {
        let deciders = status.decisions.iter().filter(|d| {
            d.approver != requester && !d.approver.starts_with("system:serviceaccount:") && counts_for(lane, d)
        });
        let mut approvers: Vec<&str> = Vec::new();
        let mut rejected = false;
        for d in deciders {
            match d.decision {
                Verdict::Reject => rejected = true,
                Verdict::Approve if !approvers.contains(&d.approver.as_str()) => approvers.push(&d.approver),
                Verdict::Approve => {}
            }
        }
        lane.phase = if rejected {
            Phase::Rejected
        } else if approvers.len() as u32 >= quorum(policies, &lane.policy, ar.spec.risk) {
            Phase::Approved
        } else {
            Phase::Pending
        };
    }
    if status.lanes.iter().any(|l| l.phase == Phase::Rejected) {
        status.phase = Phase::Rejected;
    } else if !status.lanes.is_empty() && status.lanes.iter().all(|l| l.phase == Phase::Approved) {
        status.phase = Phase::Approved;
        let validity = status.lanes.iter().map(|l| valid_for(policies, &l.policy)).min().unwrap_or_default();
        status.not_after = Some(Time(now + validity));
    }
    status.tier = Some(
        status.lanes.iter().map(|l| format!("{} {}/{}", l.route, l.tier + 1, l.tiers)).collect::<Vec<_>>().join(", "),
    );
    let wake_at = if status.phase == Phase::Pending {
        status.lanes.iter().filter_map(|l| l.tier_deadline.as_ref().map(|t| t.0)).min()
    } else {
        None
    };
    Step { status, wake_at }
}

#[cfg(test)]
mod tests;
