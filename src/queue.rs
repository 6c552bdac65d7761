//! Pure: the approval queue as a person reads it, shared by `kubectl signoff list`
//! and the web queue. What waits for me comes first, then the nearest tier
//! deadline; each row says what the change is, how risky, who holds it now and
//! how long is left.

use jiff::{SignedDuration, Timestamp};

use crate::approval::waiting_for;
use crate::crd::{ApprovalRequest, ApprovalRequestStatus, Phase, Risk, target_text};
use crate::policy::UserInfo;

/// Which phases a queue shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PhaseFilter {
    #[default]
    Pending,
    Approved,
    Rejected,
    Expired,
    Superseded,
    All,
}

impl PhaseFilter {
    pub fn matches(self, phase: Phase) -> bool {
        match self {
            PhaseFilter::Pending => phase == Phase::Pending,
            PhaseFilter::Approved => phase == Phase::Approved,
            PhaseFilter::Rejected => phase == Phase::Rejected,
            PhaseFilter::Expired => phase == Phase::Expired,
            PhaseFilter::Superseded => phase == Phase::Superseded,
            PhaseFilter::All => true,
        }
    }

    /// Every filter, in the order a menu offers them.
    pub const ALL: [PhaseFilter; 6] = [
        PhaseFilter::Pending,
        PhaseFilter::Approved,
        PhaseFilter::Rejected,
        PhaseFilter::Expired,
        PhaseFilter::Superseded,
        PhaseFilter::All,
    ];

    /// The lower-case name (`pending`), as on the command line and in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseFilter::Pending => "pending",
            PhaseFilter::Approved => "approved",
            PhaseFilter::Rejected => "rejected",
            PhaseFilter::Expired => "expired",
            PhaseFilter::Superseded => "superseded",
            PhaseFilter::All => "all",
        }
    }

    /// The filter named `text` (as [`PhaseFilter::as_str`] writes it).
    pub fn parse(text: &str) -> Option<PhaseFilter> {
        PhaseFilter::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

/// One request in the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub namespace: String,
    pub name: String,
    /// `me` may decide it now and has not yet (marked `*` by the CLI).
    pub mine: bool,
    pub phase: Phase,
    pub risk: Risk,
    /// `UPDATE Deployment payments-prod/api`.
    pub action: String,
    /// `Deployment payments-prod/api`.
    pub target: String,
    pub routes: Vec<String>,
    /// Where each lane is, e.g. `engineering 2/5`; `-` before the lanes open.
    pub tier: String,
    pub requester: String,
    /// Since the change was held: `5m`.
    pub age: String,
    /// Time left in the current tier (`12m`), how long an approval stays valid
    /// (`valid 55m`), or `-`.
    pub left: String,
    /// The earliest tier deadline among pending lanes: the queue's order.
    pub deadline: Option<Timestamp>,
    /// Who may decide now: users, and groups as `group:NAME`, never the requester.
    pub deciders: Vec<String>,
}

/// The earliest tier deadline among pending lanes.
pub fn next_deadline(status: &ApprovalRequestStatus) -> Option<Timestamp> {
    status
        .lanes
        .iter()
        .filter(|l| l.phase == Phase::Pending)
        .filter_map(|l| l.tier_deadline.as_ref().map(|t| t.0))
        .min()
}

/// A short human duration: 45s, 3m, 2h5m, 4d.
pub fn short(d: SignedDuration) -> String {
    let s = d.as_secs();
    let sign = if s < 0 { "-" } else { "" };
    let s = s.abs();
    let text = match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 if s % 3600 >= 60 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    };
    format!("{sign}{text}")
}

/// Who may decide a request now: the pending lanes' reached users (never the
/// requester) and groups.
pub fn deciders(ar: &ApprovalRequest) -> Vec<String> {
    let status = ar.status.clone().unwrap_or_default();
    let requester = &ar.spec.requester.username;
    let mut out: Vec<String> = Vec::new();
    for lane in status.lanes.iter().filter(|l| l.phase == Phase::Pending) {
        let names = lane.eligible.iter().filter(|u| *u != requester).cloned();
        let groups = lane.eligible_groups.iter().map(|g| format!("group:{g}"));
        for who in names.chain(groups) {
            if !out.contains(&who) {
                out.push(who);
            }
        }
    }
    out
}

/// The row of one request at `now`.
pub fn row(ar: &ApprovalRequest, me: &UserInfo, now: Timestamp) -> Row {
    let status = ar.status.clone().unwrap_or_default();
    let deadline = next_deadline(&status);
    let left = match (status.phase, deadline) {
        (Phase::Pending, Some(d)) => short(d.duration_since(now)),
        (Phase::Approved, _) => status
            .not_after
            .as_ref()
            .map(|t| format!("valid {}", short(t.0.duration_since(now))))
            .unwrap_or_else(|| "-".into()),
        _ => "-".into(),
    };
    let a = &ar.spec.action;
    let target = target_text(&a.kind, a.namespace.as_deref(), &a.name);
    Row {
        namespace: ar.metadata.namespace.clone().unwrap_or_default(),
        name: ar.metadata.name.clone().unwrap_or_default(),
        mine: waiting_for(ar, me),
        phase: status.phase,
        risk: ar.spec.risk,
        action: format!("{} {target}", a.operation),
        target,
        routes: ar.spec.routes.clone(),
        tier: status.tier.clone().unwrap_or_else(|| "-".into()),
        requester: ar.spec.requester.username.clone(),
        age: ar.metadata.creation_timestamp.as_ref().map(|t| short(now.duration_since(t.0))).unwrap_or_default(),
        left,
        deadline,
        deciders: deciders(ar),
    }
}

/// What a queue shows: a phase, and optionally one route and one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub phase: PhaseFilter,
    pub route: Option<String>,
    pub namespace: Option<String>,
    /// Only requests `me` made.
    pub mine: bool,
}

impl Filter {
    pub fn matches(&self, ar: &ApprovalRequest, me: &UserInfo) -> bool {
        let phase = ar.status.as_ref().map(|s| s.phase).unwrap_or(Phase::Pending);
        self.phase.matches(phase)
            && self.route.as_ref().is_none_or(|r| ar.spec.routes.contains(r))
            && self.namespace.as_ref().is_none_or(|n| ar.metadata.namespace.as_ref() == Some(n))
            && (!self.mine || ar.spec.requester.username == me.username)
    }
}

/// The queue: the requests `filter` keeps, waiting for `me` first, then by the
/// nearest tier deadline (none last), then by namespace/name.
pub fn rows(items: &[ApprovalRequest], me: &UserInfo, filter: &Filter, now: Timestamp) -> Vec<Row> {
    let mut rows: Vec<Row> = items.iter().filter(|ar| filter.matches(ar, me)).map(|ar| row(ar, me, now)).collect();
    rows.sort_by(|a, b| {
        b.mine
            .cmp(&a.mine)
            .then_with(|| match (a.deadline, b.deadline) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            })
            .then_with(|| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Lane;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

    fn now() -> Timestamp {
        "2026-11-22T12:00:00Z".parse().unwrap()
    }

    fn ar(ns: &str, name: &str, eligible: &[&str], deadline_mins: Option<i64>, phase: Phase) -> ApprovalRequest {
        let mut ar = crate::fixtures::Packet::new(ns, name).build();
        ar.metadata.creation_timestamp = Some(Time(now() - SignedDuration::from_mins(5)));
        ar.status = Some(ApprovalRequestStatus {
            phase,
            lanes: vec![Lane {
                route: "engineering".into(),
                policy: "p".into(),
                tier: 0,
                tiers: 2,
                tier_name: Some("Owner".into()),
                tier_started_at: None,
                tier_deadline: deadline_mins.map(|m| MicroTime(now() + SignedDuration::from_mins(m))),
                phase,
                eligible: eligible.iter().map(|s| s.to_string()).collect(),
                eligible_groups: vec!["team:payments".into()],
            }],
            ..Default::default()
        });
        ar
    }

    fn me(name: &str) -> UserInfo {
        UserInfo { username: name.into(), uid: String::new(), groups: Vec::new() }
    }

    #[test]
    fn mine_first_then_the_nearest_deadline_then_none() {
        let items = [
            ar("prod", "ar-late", &["carol"], Some(30), Phase::Pending),
            ar("prod", "ar-none", &["carol"], None, Phase::Pending),
            ar("prod", "ar-soon", &["carol"], Some(2), Phase::Pending),
            ar("prod", "ar-mine", &["bob"], Some(50), Phase::Pending),
        ];
        let names: Vec<String> =
            rows(&items, &me("bob"), &Filter::default(), now()).into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["ar-mine", "ar-soon", "ar-late", "ar-none"]);
        let soon = row(&items[2], &me("bob"), now());
        assert_eq!((soon.left.as_str(), soon.age.as_str(), soon.mine), ("2m", "5m", false));
        assert_eq!(soon.deciders, ["carol", "group:team:payments"]);
    }

    #[test]
    fn filters_by_phase_route_namespace_and_requester() {
        let items = [
            ar("prod", "ar-a", &["bob"], Some(3), Phase::Pending),
            ar("stage", "ar-b", &["bob"], Some(3), Phase::Pending),
            ar("prod", "ar-c", &["bob"], None, Phase::Rejected),
        ];
        let names =
            |f: Filter| -> Vec<String> { rows(&items, &me("bob"), &f, now()).into_iter().map(|r| r.name).collect() };
        assert_eq!(names(Filter::default()), ["ar-a", "ar-b"]);
        assert_eq!(names(Filter { namespace: Some("stage".into()), ..Default::default() }), ["ar-b"]);
        assert_eq!(names(Filter { phase: PhaseFilter::Rejected, ..Default::default() }), ["ar-c"]);
        assert!(
            names(Filter { phase: PhaseFilter::All, route: Some("finance".into()), ..Default::default() }).is_empty()
        );
        assert!(names(Filter { mine: true, ..Default::default() }).is_empty(), "bob made none of them");
        let alice_made = rows(&items, &me("alice"), &Filter { mine: true, ..Default::default() }, now());
        assert_eq!(alice_made.len(), 2);
        assert_eq!(PhaseFilter::parse("expired"), Some(PhaseFilter::Expired));
        assert_eq!(PhaseFilter::parse("nope"), None);
    }

    #[test]
    fn short_durations() {
        assert_eq!(short(SignedDuration::from_secs(45)), "45s");
        assert_eq!(short(SignedDuration::from_secs(3 * 60 + 5)), "3m");
        assert_eq!(short(SignedDuration::from_secs(2 * 3600 + 5 * 60)), "2h5m");
        assert_eq!(short(SignedDuration::from_secs(3 * 86400)), "3d");
        assert_eq!(short(SignedDuration::from_secs(-90)), "-1m");
    }
}
