//! The escalation state machine, pure: `step(request, world, now)` returns the new
//! status, the effects to execute (notifications, events, a runbook ConfigMap)
//! and when to look again. The reconciler executes the effects and only then
//! writes the status, so a crash in between repeats the same step, with the same
//! idempotency keys: at most one duplicate notification per failover.
//!
//! Each route is a lane walking its chain of tiers. A tier starts exactly when the
//! previous one's deadline passes (not when the reconciler happens to run), so a
//! late or restarted controller recomputes the very same schedule and never
//! skips a tier. All progress lives in the status.

pub mod effects;
pub mod gate;
pub mod people;
pub mod reconciler;
mod runbook;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};

use crate::crd::{
    ApprovalRequest, ApprovalRequestStatus, Approver, Lane, NotifyMode, Phase, Risk, Skip, Team, TierSpec,
    default_chain,
};
use crate::policy::PolicySet;

/// What the state machine reads besides the request.
#[derive(Clone, Copy)]
pub struct World<'a> {
    pub policies: &'a PolicySet,
    pub teams: &'a [Team],
    pub approvers: &'a [Approver],
}

/// Why a notification is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyKind {
    /// A tier was reached: please decide.
    Escalation,
    /// Every tier of a lane timed out: the platform admins are told the chain failed.
    Expired,
    /// A newer change replaced the request: whoever it notified is told.
    Superseded,
    /// The request was decided or expired (the phase): the requester and
    /// everyone notified for it are told; PagerDuty incidents it opened resolve.
    Outcome(Phase),
}

/// One notification to send: to the users and the team of one tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    /// Idempotency key of this tier's notification; each delivery appends the
    /// recipient and the sink.
    pub key: String,
    pub kind: NotifyKind,
    /// The policy whose route this is (its route contacts are notified too).
    pub policy: String,
    pub route: String,
    pub tier: u32,
    pub tier_name: String,
    pub users: Vec<String>,
    pub teams: Vec<String>,
    /// When this tier times out.
    pub deadline: Option<Timestamp>,
    /// For outcomes and supersedes: the PagerDuty pages to resolve, as
    /// (recipient, idempotency key of the page), from the status records.
    pub pages: Vec<(String, String)>,
    /// What this step skipped on the way to this tier (a tier that resolved
    /// to nobody, a person in quiet hours), said in the tier's one Event
    /// rather than in an Event each: every Event is an API write, and a step
    /// is what escalation capacity is counted in.
    pub skipped: Vec<String>,
    /// The tier's Event is a Warning: a tier on the way resolved to nobody
    /// (the Team or policy needs fixing).
    pub warning: bool,
}

/// Something the reconciler does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Notify(Notify),
    /// A Kubernetes Event on the request.
    Event {
        reason: &'static str,
        note: String,
        warning: bool,
    },
    /// The runbook is too large for status: store it in this ConfigMap.
    RunbookConfigMap {
        name: String,
        text: String,
    },
    /// Ask the GitOps owner to apply the approved change now (attempt `attempt`
    /// of the hand-back, from 1).
    HandBack {
        owner: crate::crd::GitOpsOwner,
        attempt: u32,
    },
}

/// The result of one step.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub status: ApprovalRequestStatus,
    pub effects: Vec<Effect>,
    /// When to run the next step even if nothing changes (the next deadline).
    pub wake_at: Option<Timestamp>,
}

/// Whether a notification record's key is an expiry notice to the platform
/// admins (`<request>/expired/<recipient>`) rather than a tier's page
/// (`<request>/<route>/<tier>/<recipient>`, the tier a number).
pub fn is_expiry_notice(key: &str) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    (1..parts.len()).any(|i| parts[i] == "expired" && parts.get(i + 1).is_none_or(|p| p.parse::<u32>().is_err()))
}

/// What a notification record is when it is not a tier's page: `outcome`
/// (`<id>/outcome/<route|requester>/…`), `superseded` or `resolve` (a
/// PagerDuty page resolved, `<page key>/resolve`).
pub fn notice_label(key: &str) -> Option<&'static str> {
    if key.ends_with("/resolve") {
        return Some("resolve");
    }
    let parts: Vec<&str> = key.split('/').collect();
    (1..parts.len()).find_map(|i| {
        let named = parts.get(i + 1).is_some_and(|p| p.parse::<u32>().is_err());
        match parts[i] {
            "outcome" if named => Some("outcome"),
            "superseded" if named => Some("superseded"),
            _ => None,
        }
    })
}

/// Runbooks larger than this go to a ConfigMap (status stays small).
pub const RUNBOOK_STATUS_LIMIT: usize = 8 * 1024;

fn floor_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// Round up to a whole second (for `Time` fields, which keep whole seconds): a
/// deadline is never shown earlier than it is.
fn ceil_second(t: Timestamp) -> Timestamp {
    let floor = floor_second(t);
    if floor == t { t } else { floor + SignedDuration::from_secs(1) }
}

/// Round up to a microsecond (for `MicroTime` fields): never earlier than it is.
fn ceil_micro(t: Timestamp) -> Timestamp {
    let nanos = t.as_nanosecond();
    let rounded = nanos.div_euclid(1_000) * 1_000 + if nanos.rem_euclid(1_000) == 0 { 0 } else { 1_000 };
    Timestamp::from_nanosecond(rounded).unwrap_or(t)
}

fn floor_micro(t: Timestamp) -> Timestamp {
    Timestamp::from_nanosecond(t.as_nanosecond().div_euclid(1_000) * 1_000).unwrap_or(t)
}

/// The request's identity in keys: uid when the API server assigned one.
fn request_id(ar: &ApprovalRequest) -> String {
    ar.metadata.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            ar.metadata.namespace.as_deref().unwrap_or_default(),
            ar.metadata.name.as_deref().unwrap_or_default()
        )
    })
}

/// The prefix of an attempt's idempotency keys: the request's id, with the
/// attempt after a reopen, so receivers do not drop the new notifications.
fn attempt_id(ar: &ApprovalRequest, attempt: u32) -> String {
    match attempt {
        0 | 1 => request_id(ar),
        n => format!("{}/attempt-{n}", request_id(ar)),
    }
}

/// A lane's chain and its settings, from its policy.
struct Chain {
    tiers: Vec<TierSpec>,
    mode: NotifyMode,
    timeout: SignedDuration,
    admin_team: String,
    quorum: u32,
    valid_for: SignedDuration,
    any_tier: bool,
}

fn chain(world: World, policy: &str, route: &str, ar: &ApprovalRequest) -> Chain {
    // Borrowed: this runs several times per lane on every reconcile.
    static NO_POLICY: std::sync::OnceLock<crate::crd::EscalationPolicySpec> = std::sync::OnceLock::new();
    let spec = world.policies.get(policy).map(|p| p.spec()).unwrap_or_else(|| NO_POLICY.get_or_init(Default::default));
    let tiers = spec
        .routes
        .iter()
        .find(|r| r.name == route)
        .map(|r| r.tiers.clone())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(default_chain);
    let class = spec.action_classes.get(ar.spec.action_class);
    let parse = |text: &str, default: SignedDuration| {
        crate::duration::parse(text).ok().filter(|d| *d > SignedDuration::ZERO).unwrap_or(default)
    };
    Chain {
        tiers,
        mode: class.notify,
        timeout: parse(&class.tier_timeout, SignedDuration::from_mins(60)),
        admin_team: spec.admin_team_or_default(),
        quorum: match ar.spec.risk {
            Risk::High => spec.approval.high,
            _ => spec.approval.medium,
        }
        .max(1),
        valid_for: parse(&spec.approval.valid_for, SignedDuration::from_hours(1)),
        any_tier: spec.approval.eligibility == crate::crd::Eligibility::AnyTier,
    }
}

impl Chain {
    fn tier_timeout(&self, i: usize) -> SignedDuration {
        self.tiers[i]
            .timeout
            .as_deref()
            .and_then(|t| crate::duration::parse(t).ok())
            .filter(|d| *d > SignedDuration::ZERO)
            .unwrap_or(self.timeout)
    }
}

fn tier_name(tier: &TierSpec) -> String {
    format!("{:?}", tier.kind)
}

struct Walker<'a> {
    world: World<'a>,
    id: String,
    effects: Vec<Effect>,
    skips: Vec<Skip>,
    /// Skips not yet said: in the next notification of their route, or as
    /// Events of their own when the step notifies nobody after them.
    unsaid: Vec<UnsaidSkip>,
}

struct UnsaidSkip {
    route: String,
    reason: &'static str,
    note: String,
    warning: bool,
}

impl Walker<'_> {
    /// The route's unsaid skips, for its notification: (notes, any warning).
    fn take_unsaid(&mut self, route: &str) -> (Vec<String>, bool) {
        let (mine, rest) = std::mem::take(&mut self.unsaid).into_iter().partition::<Vec<_>, _>(|s| s.route == route);
        self.unsaid = rest;
        let warning = mine.iter().any(|s| s.warning);
        (mine.into_iter().map(|s| s.note).collect(), warning)
    }

    /// Skips no notification said: an Event each, as before they were folded.
    fn say_unsaid(&mut self) {
        for s in std::mem::take(&mut self.unsaid) {
            self.effects.push(Effect::Event { reason: s.reason, note: s.note, warning: s.warning });
        }
    }

    /// Resolve tier `i` at `start`: add its people to the lane's eligible set,
    /// record who is skipped (away, quiet hours) and notify the rest. Returns
    /// whether anybody can be reached.
    fn reach(
        &mut self,
        lane: &mut Lane,
        chain: &Chain,
        team: Option<&str>,
        i: usize,
        start: Timestamp,
        notify: bool,
    ) -> bool {
        let tier = &chain.tiers[i];
        let reached = people::resolve(tier, team, &chain.admin_team, self.world.teams, start);
        let mut available = Vec::new();
        for user in &reached.users {
            match people::unavailable(user, self.world.approvers, start) {
                Some(why) => {
                    self.skips.push(Skip {
                        route: lane.route.clone(),
                        tier: i as u32,
                        user: Some(user.clone()),
                        reason: why.reason.clone(),
                        setting: Some(why.setting.clone()),
                        at: Time(floor_second(start)),
                    });
                    self.unsaid.push(UnsaidSkip {
                        route: lane.route.clone(),
                        reason: "Skipped",
                        note: format!(
                            "{} tier {} ({}): skipped {user}: {}",
                            lane.route,
                            i + 1,
                            tier_name(tier),
                            why.reason
                        ),
                        warning: false,
                    });
                }
                None => available.push(user.clone()),
            }
        }
        // Quiet hours and away periods stop the page, not the right to answer:
        // everyone the tier reaches may approve, so a teammate who is off but
        // sees the request can still sign it off.
        add_new(&mut lane.eligible, reached.users.iter().cloned());
        if available.is_empty() && reached.groups.is_empty() {
            let why = if reached.users.is_empty() { "resolves to nobody" } else { "has nobody available" };
            self.skips.push(Skip {
                route: lane.route.clone(),
                tier: i as u32,
                user: None,
                reason: format!("tier {} ({}) {why}; promoted to the next tier at once", i + 1, tier_name(tier)),
                setting: None,
                at: Time(floor_second(start)),
            });
            self.unsaid.push(UnsaidSkip {
                route: lane.route.clone(),
                reason: "TierSkipped",
                note: format!("{} tier {} ({}) {why}", lane.route, i + 1, tier_name(tier)),
                warning: true,
            });
            return false;
        }
        add_new(&mut lane.eligible_groups, reached.groups.iter().cloned());
        if notify {
            let deadline = ceil_micro(start + chain.tier_timeout(i));
            let (skipped, warning) = self.take_unsaid(&lane.route);
            self.effects.push(Effect::Notify(Notify {
                key: format!("{}/{}/{}", self.id, lane.route, i),
                kind: NotifyKind::Escalation,
                policy: lane.policy.clone(),
                route: lane.route.clone(),
                tier: i as u32,
                tier_name: tier_name(tier),
                users: available,
                teams: reached.team.clone().into_iter().collect(),
                deadline: Some(deadline),
                pages: Vec::new(),
                skipped,
                warning,
            }));
            // Its one Event (reason Escalated) is the notification's: it says
            // the tier, the deadline, who was told and what was skipped on the
            // way (one write per step).
        }
        true
    }

    /// Make tier `i` (or the first reachable tier after it) current from `start`.
    /// Returns false when the chain ran out: the lane expires.
    fn enter(&mut self, lane: &mut Lane, chain: &Chain, team: Option<&str>, mut i: usize, start: Timestamp) -> bool {
        let sequential = chain.mode == NotifyMode::Sequential;
        while i < chain.tiers.len() {
            // In simultaneous mode everybody was reached when the lane opened.
            let reachable = if sequential { self.reach(lane, chain, team, i, start, true) } else { true };
            if reachable {
                lane.tier = i as u32;
                // The policy may have been edited since the lane opened.
                lane.tiers = chain.tiers.len() as u32;
                lane.tier_name = Some(tier_name(&chain.tiers[i]));
                lane.tier_started_at = Some(MicroTime(floor_micro(start)));
                lane.tier_deadline = Some(MicroTime(ceil_micro(start + chain.tier_timeout(i))));
                return true;
            }
            i += 1;
        }
        false
    }
}

/// Every lane must approve with its quorum; an eligible rejection wins.
fn apply_decisions(ar: &ApprovalRequest, status: &mut ApprovalRequestStatus, world: World) {
    let requester = &ar.spec.requester.username;
    let votes: Vec<Option<(usize, bool)>> = status
        .lanes
        .iter()
        .map(|lane| {
            (lane.phase == Phase::Pending).then(|| {
                let (approvers, rejected) = crate::approval::lane_votes(requester, status, lane);
                (approvers.len(), rejected)
            })
        })
        .collect();
    for (lane, votes) in status.lanes.iter_mut().zip(votes) {
        let Some((approvers, rejected)) = votes else { continue };
        if rejected {
            lane.phase = Phase::Rejected;
        } else if approvers as u32 >= chain(world, &lane.policy, &lane.route, ar).quorum {
            lane.phase = Phase::Approved;
        }
    }
}

/// Append the names `list` does not hold yet, in order (eligible people and
/// groups are sets kept in the order they were reached).
fn add_new(list: &mut Vec<String>, names: impl IntoIterator<Item = String>) {
    for name in names {
        if !list.contains(&name) {
            list.push(name);
        }
    }
}

/// One step of the state machine.
pub fn step(ar: &ApprovalRequest, world: World, now: Timestamp) -> Step {
    let mut status = ar.status.clone().unwrap_or_default();
    let mut effects = Vec::new();
    if let Some(next) = crate::approval::reopen_requested(ar, &status, now) {
        // A new attempt, re-opened from now; decisions, skips and notifications stay as history.
        effects.push(Effect::Event {
            reason: "Reopened",
            note: format!("attempt {next} started after {:?}; escalation starts again at tier 1", status.phase),
            warning: false,
        });
        status = ApprovalRequestStatus {
            phase: Phase::Pending,
            attempt: next,
            tier: None,
            lanes: Vec::new(),
            deadline: None,
            not_after: None,
            runbook: None,
            runbook_config_map: None,
            ..status
        };
    }
    if status.phase == Phase::Pending
        && let Some(newer) = crate::approval::superseded_by(&ar.metadata)
    {
        return supersede(ar, status, effects, newer);
    }
    if status.phase != Phase::Pending {
        // An approved change may still be handed back to its GitOps owner.
        let wake_at = hand_back(ar, &status, &mut effects, now);
        summarize(ar, &mut status, now);
        return Step { status, effects, wake_at };
    }
    let id = attempt_id(ar, status.attempt);
    let mut walker = Walker { world, id, effects, skips: Vec::new(), unsaid: Vec::new() };
    let team_of = |route: &str| ar.spec.routing.iter().find(|r| r.route == route).and_then(|r| r.team.clone());

    // Open lanes: one per route, at the first reachable tier.
    if status.lanes.is_empty() {
        for target in &ar.spec.routing {
            let chain = chain(world, &target.policy, &target.route, ar);
            let mut lane = Lane {
                route: target.route.clone(),
                policy: target.policy.clone(),
                tier: 0,
                tiers: chain.tiers.len() as u32,
                tier_name: None,
                tier_started_at: None,
                tier_deadline: None,
                phase: Phase::Pending,
                eligible: Vec::new(),
                eligible_groups: Vec::new(),
            };
            let team = target.team.as_deref();
            if chain.any_tier {
                // Anyone in the chain may approve at any time; they are notified as reached.
                for tier in &chain.tiers {
                    let reached = people::resolve(tier, team, &chain.admin_team, world.teams, now);
                    add_new(&mut lane.eligible, reached.users);
                    add_new(&mut lane.eligible_groups, reached.groups);
                }
            }
            if chain.mode == NotifyMode::Simultaneous {
                // Every tier at once: everybody reachable now is notified and eligible.
                let mut anybody = false;
                for i in 0..chain.tiers.len() {
                    anybody |= walker.reach(&mut lane, &chain, team, i, now, true);
                }
                if !anybody {
                    lane.phase = Phase::Expired;
                }
            }
            if lane.phase == Phase::Pending && !walker.enter(&mut lane, &chain, team, 0, now) {
                lane.phase = Phase::Expired;
            }
            status.lanes.push(lane);
        }
    }

    // An approval that arrived before a deadline stops the escalation.
    apply_decisions(ar, &mut status, world);
    // Timeouts: walk every pending lane forward to `now`, one tier at a time.
    for lane in status.lanes.iter_mut().filter(|l| l.phase == Phase::Pending) {
        let chain = chain(world, &lane.policy, &lane.route, ar);
        let team = team_of(&lane.route);
        while let Some(MicroTime(deadline)) = lane.tier_deadline {
            if now < deadline {
                break;
            }
            let next = lane.tier as usize + 1;
            if next >= chain.tiers.len() || !walker.enter(lane, &chain, team.as_deref(), next, deadline) {
                lane.phase = Phase::Expired;
                break;
            }
        }
    }

    walker.say_unsaid();
    // Someone reached by this step may already have decided (AnyTier policies).
    apply_decisions(ar, &mut status, world);
    status.skips.append(&mut walker.skips);
    let lanes = &status.lanes;
    let new_phase = if lanes.iter().any(|l| l.phase == Phase::Rejected) {
        Phase::Rejected
    } else if lanes.iter().any(|l| l.phase == Phase::Expired) {
        Phase::Expired
    } else if !lanes.is_empty() && lanes.iter().all(|l| l.phase == Phase::Approved) {
        Phase::Approved
    } else {
        Phase::Pending
    };
    match new_phase {
        Phase::Approved => {
            let validity =
                lanes.iter().map(|l| chain(world, &l.policy, &l.route, ar).valid_for).min().unwrap_or_default();
            status.not_after = Some(Time(floor_second(now + validity)));
            walker.effects.push(Effect::Event {
                reason: "Approved",
                note: format!("approved; the change is admitted until {}", floor_second(now + validity)),
                warning: false,
            });
            let outcome = outcome(ar, &status, &walker.id, Phase::Approved);
            walker.effects.extend(outcome);
        }
        Phase::Rejected => {
            walker.effects.push(Effect::Event {
                reason: "Rejected",
                note: "rejected by an eligible approver; the change will not be admitted".into(),
                warning: false,
            });
            let outcome = outcome(ar, &status, &walker.id, Phase::Rejected);
            walker.effects.extend(outcome);
        }
        Phase::Expired => {
            let outcome = outcome(ar, &status, &walker.id, Phase::Expired);
            expire(ar, &mut status, &mut walker, now);
            walker.effects.extend(outcome);
        }
        // Only a mark set by the webhook supersedes (see supersede): never computed here.
        Phase::Pending | Phase::Superseded => {}
    }
    status.phase = new_phase;

    // Where things stand, and when the last tier of the slowest lane runs out.
    status.tier = Some(
        status.lanes.iter().map(|l| format!("{} {}/{}", l.route, l.tier + 1, l.tiers)).collect::<Vec<_>>().join(", "),
    );
    let pending: Vec<&Lane> = status.lanes.iter().filter(|l| l.phase == Phase::Pending).collect();
    status.deadline = pending
        .iter()
        .filter_map(|l| {
            let chain = chain(world, &l.policy, &l.route, ar);
            let current = l.tier_deadline.as_ref()?.0;
            let rest: SignedDuration = (l.tier as usize + 1..chain.tiers.len()).map(|i| chain.tier_timeout(i)).sum();
            Some(ceil_second(current + rest))
        })
        .max()
        .map(Time)
        .or(status.deadline);
    let next_tier = pending.iter().filter_map(|l| l.tier_deadline.as_ref().map(|t| t.0)).min();
    summarize(ar, &mut status, now);
    let wake_at = if status.phase == Phase::Pending {
        next_tier
    } else if status.phase == Phase::Approved && ar.spec.gitops.as_ref().is_some_and(|o| o.hand_back) {
        // Handed back by the next step, at once: only after this one's status
        // write, so that the owner's apply finds the request Approved.
        Some(now)
    } else {
        None
    };
    Step { status, effects: walker.effects, wake_at }
}

fn expire(ar: &ApprovalRequest, status: &mut ApprovalRequestStatus, walker: &mut Walker, now: Timestamp) {
    let text = runbook::write(ar, status, now);
    if text.len() > RUNBOOK_STATUS_LIMIT {
        let name = format!("{}-runbook", ar.metadata.name.as_deref().unwrap_or("request"));
        status.runbook = Some(format!(
            "The runbook is too large for status; read it with: kubectl get configmap -n {} {name} -o jsonpath='{{.data.runbook}}'",
            ar.metadata.namespace.as_deref().unwrap_or_default()
        ));
        status.runbook_config_map = Some(name.clone());
        walker.effects.push(Effect::RunbookConfigMap { name, text });
    } else {
        status.runbook = Some(text);
    }
    let admin_team = status
        .lanes
        .first()
        .map(|l| chain(walker.world, &l.policy, &l.route, ar).admin_team)
        .unwrap_or_else(crate::crd::default_admin_team);
    let admins = people::resolve(
        &TierSpec { kind: crate::crd::TierKind::Admins, team: None, users: vec![], groups: vec![], timeout: None },
        None,
        &admin_team,
        walker.world.teams,
        now,
    );
    let expired: Vec<&str> =
        status.lanes.iter().filter(|l| l.phase == Phase::Expired).map(|l| l.route.as_str()).collect();
    walker.effects.push(Effect::Notify(Notify {
        key: format!("{}/expired", walker.id),
        kind: NotifyKind::Expired,
        policy: status.lanes.first().map(|l| l.policy.clone()).unwrap_or_default(),
        route: expired.join(","),
        tier: 0,
        tier_name: "Admins".into(),
        users: admins.users,
        teams: admins.team.into_iter().collect(),
        deadline: None,
        pages: Vec::new(),
        skipped: Vec::new(),
        warning: false,
    }));
    walker.effects.push(Effect::Event {
        reason: "Expired",
        note: format!(
            "nobody approved in time ({}); the change is never applied automatically; runbook written",
            expired.join(", ")
        ),
        warning: true,
    });
}

/// A Pending request marked superseded stops escalating; everyone it notified
/// (by name, team or route, per lane) is told once that no decision is needed.
fn supersede(ar: &ApprovalRequest, mut status: ApprovalRequestStatus, mut effects: Vec<Effect>, newer: &str) -> Step {
    let id = attempt_id(ar, status.attempt);
    let told = notified(&status, &id);
    for lane in &mut status.lanes {
        if let Some(lane_told) = told.iter().find(|t| t.route == lane.route) {
            effects.push(Effect::Notify(Notify {
                key: format!("{id}/superseded/{}", lane.route),
                kind: NotifyKind::Superseded,
                policy: lane.policy.clone(),
                route: lane.route.clone(),
                tier: lane.tier,
                tier_name: "Superseded".into(),
                users: lane_told.users.clone(),
                teams: lane_told.teams.clone(),
                deadline: None,
                pages: lane_told.pages.clone(),
                skipped: Vec::new(),
                warning: false,
            }));
        }
        if lane.phase == Phase::Pending {
            lane.phase = Phase::Superseded;
        }
    }
    effects.push(Effect::Event {
        reason: "Superseded",
        note: format!(
            "a newer change to the same object by the same requester is held in {newer}; this request stops \
             escalating and is never admitted"
        ),
        warning: false,
    });
    status.phase = Phase::Superseded;
    status.deadline = None;
    Step { status, effects, wake_at: None }
}

/// What `kubectl get` shows of a request (target, routes, the current tier
/// deadline) and its conditions.
fn summarize(ar: &ApprovalRequest, status: &mut ApprovalRequestStatus, now: Timestamp) {
    let a = &ar.spec.action;
    status.target = Some(crate::crd::target_text(&a.kind, a.namespace.as_deref(), &a.name));
    status.routes = Some(ar.spec.routes.join(", "));
    let current_tiers = status.lanes.iter().filter(|l| l.phase == Phase::Pending);
    let next = current_tiers.filter_map(|l| l.tier_deadline.as_ref().map(|t| t.0)).min();
    status.tier_deadline = next.filter(|_| status.phase == Phase::Pending).map(|t| Time(ceil_second(t)));
    status.conditions = conditions(ar, status, now);
}

/// The standard conditions of a request, from its phase (Kubernetes API
/// conventions; kstatus reads `Ready`, `Reconciling` and `Stalled`):
/// `Approved` and `Ready` are True once approved; `Reconciling` is present
/// while it escalates; `Stalled` once it ended without approval. A condition
/// whose status does not change keeps its lastTransitionTime.
pub fn conditions(ar: &ApprovalRequest, status: &ApprovalRequestStatus, now: Timestamp) -> Vec<Condition> {
    let ns = ar.metadata.namespace.as_deref().unwrap_or_default();
    let name = ar.metadata.name.as_deref().unwrap_or_default();
    let phase = format!("{:?}", status.phase);
    let message = match status.phase {
        Phase::Pending => {
            format!("waiting for a decision ({})", status.tier.as_deref().unwrap_or("escalation not started"))
        }
        Phase::Approved => match &status.not_after {
            Some(t) => format!("approved; the change is admitted once until {}", t.0),
            None => "approved".to_string(),
        },
        Phase::Rejected => "rejected; the change is not admitted".to_string(),
        Phase::Expired => {
            format!("nobody approved in time; never applied; runbook: kubectl signoff show -n {ns} {name}")
        }
        Phase::Superseded => "a newer change to the same object replaced this request".to_string(),
    };
    let approved = status.phase == Phase::Approved;
    let phase = phase.as_str();
    let want = |type_, status, reason| crate::readiness::Wanted { type_, status, reason, message: message.clone() };
    let mut wanted = vec![want("Approved", approved, phase), want("Ready", approved, phase)];
    if status.phase == Phase::Pending {
        wanted.push(want("Reconciling", true, "Escalating"));
    }
    if matches!(status.phase, Phase::Rejected | Phase::Expired | Phase::Superseded) {
        wanted.push(want("Stalled", true, phase));
    }
    crate::readiness::conditions(&status.conditions, wanted, ar.metadata.generation, now)
}

/// Who one lane's notifications reached in the current attempt (from the
/// status records): users and teams by name, and the PagerDuty pages sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Told {
    route: String,
    users: Vec<String>,
    teams: Vec<String>,
    pages: Vec<(String, String)>,
}

/// Every lane's [`Told`], in lane order; lanes that reached nobody are left out.
/// Only tier pages of this attempt count (keys under `id`, not a later
/// attempt's, not an outcome or superseded notice, not coalesced).
fn notified(status: &ApprovalRequestStatus, id: &str) -> Vec<Told> {
    let mut out: Vec<Told> = Vec::new();
    for n in &status.notifications {
        let Some(rest) = n.key.strip_prefix(id).and_then(|r| r.strip_prefix('/')) else { continue };
        // A page's key is `<id>/<route>/<tier>/<recipient>`: a number second. (A
        // later attempt's keys, outcomes and notices have a name there.)
        let page =
            rest.split('/').nth(1).is_some_and(|tier| tier.parse::<u32>().is_ok()) && notice_label(&n.key).is_none();
        if !page || n.sink == "Event" || n.result == crate::notify::DeliveryResult::Coalesced.as_str() {
            continue;
        }
        let told = match out.iter_mut().find(|t| t.route == n.route) {
            Some(t) => t,
            None => {
                out.push(Told { route: n.route.clone(), ..Default::default() });
                out.last_mut().expect("just pushed")
            }
        };
        if let Some(user) = n.recipient.strip_prefix("user/") {
            add_new(&mut told.users, [user.to_string()]);
        } else if let Some(team) = n.recipient.strip_prefix("team/") {
            add_new(&mut told.teams, [team.to_string()]);
        }
        let page = (n.recipient.clone(), n.key.clone());
        if n.sink == "PagerDuty" && !told.pages.contains(&page) {
            told.pages.push(page);
        }
    }
    out
}

/// The outcome notifications of a request that was just decided or expired:
/// the requester first (an Event always; their Approver's contacts), then per
/// lane everyone its pages reached (users, teams, the route's own contacts),
/// whose PagerDuty incidents resolve. Keys name the attempt (`id`), so a
/// reopened request's outcome is told afresh.
fn outcome(ar: &ApprovalRequest, status: &ApprovalRequestStatus, id: &str, phase: Phase) -> Vec<Effect> {
    let requester = ar.spec.requester.username.clone();
    let first = status.lanes.first();
    let mut effects = vec![Effect::Notify(Notify {
        key: format!("{id}/outcome/requester"),
        kind: NotifyKind::Outcome(phase),
        policy: first.map(|l| l.policy.clone()).unwrap_or_default(),
        // No lane: the route's own contacts hear in the lanes' notices below.
        route: String::new(),
        tier: 0,
        tier_name: "Requester".into(),
        users: vec![requester.clone()],
        teams: Vec::new(),
        deadline: None,
        pages: Vec::new(),
        skipped: Vec::new(),
        warning: false,
    })];
    for told in notified(status, id) {
        let Some(lane) = status.lanes.iter().find(|l| l.route == told.route) else { continue };
        effects.push(Effect::Notify(Notify {
            key: format!("{id}/outcome/{}", lane.route),
            kind: NotifyKind::Outcome(phase),
            policy: lane.policy.clone(),
            route: lane.route.clone(),
            tier: lane.tier,
            tier_name: "Outcome".into(),
            users: told.users.into_iter().filter(|u| *u != requester).collect(),
            teams: told.teams,
            deadline: None,
            pages: told.pages,
            skipped: Vec::new(),
            warning: false,
        }));
    }
    effects
}

/// The hand-back of an approved change to its GitOps owner, when asked for
/// (spec.gitops.handBack) and due: pushes the effect, or returns when the next
/// try is due after a failure.
fn hand_back(
    ar: &ApprovalRequest,
    status: &ApprovalRequestStatus,
    effects: &mut Vec<Effect>,
    now: Timestamp,
) -> Option<Timestamp> {
    let owner = ar.spec.gitops.as_ref().filter(|o| o.hand_back)?;
    match crate::gitops::hand_back_due(status, now) {
        crate::gitops::Due::Now(attempt) => {
            effects.push(Effect::HandBack { owner: owner.clone(), attempt });
            None
        }
        crate::gitops::Due::At(at) => Some(at),
        crate::gitops::Due::Never => None,
    }
}

#[cfg(test)]
mod tests;
