//! State machine tests with a fake clock.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::crd::*;
use crate::policy::PolicySet;

fn now() -> Timestamp {
    "2026-11-22T12:00:00Z".parse().unwrap()
}

fn team(name: &str, users: &[&str], groups: &[&str]) -> Team {
    Team::new(
        name,
        TeamSpec {
            members: Members {
                users: users.iter().map(|s| s.to_string()).collect(),
                groups: groups.iter().map(|s| s.to_string()).collect(),
            },
            ..Default::default()
        },
    )
}

fn teams() -> Vec<Team> {
    vec![team("payments", &["alice", "bob", "carol"], &["team:payments"]), team("security", &["erin"], &[])]
}

fn policies(high_quorum: u32) -> PolicySet {
    let yaml = format!(
        r#"
apiVersion: signoff.dev/v1alpha1
kind: EscalationPolicy
metadata: {{name: production}}
spec:
  match: {{rules: [{{operations: [DELETE], apiGroups: [""], apiVersions: [v1], resources: [persistentvolumeclaims]}}]}}
  rules: [{{name: r, expression: "true", risk: High, route: engineering}}]
  approval: {{high: {high_quorum}, validFor: 30m}}
  actionClasses: {{destructive: {{tierTimeout: 2m, notify: Simultaneous}}}}
"#
    );
    let policy: EscalationPolicy = serde_yaml::from_str(&yaml).unwrap();
    PolicySet::new([&policy])
}

fn request(routes: &[(&str, &str)]) -> ApprovalRequest {
    let spec = ApprovalRequestSpec {
        requester: UserInfo { username: "alice".into(), uid: None, groups: vec!["team:payments".into()] },
        action: Action::default(),
        digest: "0".repeat(64),
        risk: Risk::High,
        action_class: ActionClass::Destructive,
        routes: routes.iter().map(|(r, _)| r.to_string()).collect(),
        routing: routes
            .iter()
            .map(|(route, team)| RouteTarget {
                route: route.to_string(),
                policy: "production".into(),
                team: Some(team.to_string()),
            })
            .collect(),
        reasons: vec![],
        owner_team: Some("payments".into()),
        cost: None,
        context: None,
        diff: None,
        manifest: None,
        fallback: None,
    };
    ApprovalRequest::new("ar-1", spec)
}

fn decide(ar: &mut ApprovalRequest, by: &str, groups: &[&str], verdict: Verdict) {
    ar.status.get_or_insert_with(Default::default).decisions.push(Decision {
        approver: by.into(),
        uid: None,
        groups: groups.iter().map(|s| s.to_string()).collect(),
        decision: verdict,
        routes: vec![],
        comment: None,
        at: Time(now()),
    });
}

#[test]
fn opens_one_lane_per_route_at_the_owning_team() {
    let ar = request(&[("engineering", "payments"), ("security", "security")]);
    let step = step(&ar, &policies(1), &teams(), now());
    let lanes = &step.status.lanes;
    assert_eq!(lanes.len(), 2);
    assert_eq!(lanes[0].eligible, ["alice", "bob", "carol"]);
    assert_eq!(lanes[0].eligible_groups, ["team:payments"]);
    assert_eq!((lanes[0].tier, lanes[0].tiers), (0, 5));
    assert_eq!(lanes[0].tier_deadline, Some(Time(now() + SignedDuration::from_mins(2))), "destructive: 2m per tier");
    assert_eq!(step.wake_at, Some(now() + SignedDuration::from_mins(2)));
    assert_eq!(step.status.phase, Phase::Pending);
    assert_eq!(step.status.tier.as_deref(), Some("engineering 1/5, security 1/5"));
}

#[test]
fn every_lane_must_approve_and_approval_sets_not_after() {
    let mut ar = request(&[("engineering", "payments"), ("security", "security")]);
    ar.status = Some(step(&ar, &policies(1), &teams(), now()).status);
    decide(&mut ar, "bob", &[], Verdict::Approve);
    let s = step(&ar, &policies(1), &teams(), now()).status;
    assert_eq!(s.phase, Phase::Pending, "security has not approved");
    assert_eq!(s.lanes[0].phase, Phase::Approved);
    decide(&mut ar, "erin", &[], Verdict::Approve);
    let s = step(&ar, &policies(1), &teams(), now()).status;
    assert_eq!(s.phase, Phase::Approved);
    assert_eq!(s.not_after, Some(Time(now() + SignedDuration::from_mins(30))));
}

#[test]
fn dual_control_needs_two_distinct_eligible_approvers() {
    let mut ar = request(&[("engineering", "payments")]);
    ar.status = Some(step(&ar, &policies(2), &teams(), now()).status);
    decide(&mut ar, "bob", &[], Verdict::Approve);
    decide(&mut ar, "alice", &["team:payments"], Verdict::Approve); // the requester never counts
    decide(&mut ar, "mallory", &[], Verdict::Approve); // not reached
    assert_eq!(step(&ar, &policies(2), &teams(), now()).status.phase, Phase::Pending);
    decide(&mut ar, "dan", &["team:payments"], Verdict::Approve); // reached through the team's group
    assert_eq!(step(&ar, &policies(2), &teams(), now()).status.phase, Phase::Approved);
}

#[test]
fn an_eligible_rejection_wins_and_final_phases_stay() {
    let mut ar = request(&[("engineering", "payments"), ("security", "security")]);
    ar.status = Some(step(&ar, &policies(1), &teams(), now()).status);
    decide(&mut ar, "bob", &[], Verdict::Approve);
    decide(&mut ar, "erin", &[], Verdict::Reject);
    let s = step(&ar, &policies(1), &teams(), now()).status;
    assert_eq!(s.phase, Phase::Rejected);
    ar.status = Some(s.clone());
    decide(&mut ar, "carol", &[], Verdict::Approve);
    let again = step(&ar, &policies(1), &teams(), now());
    assert_eq!(again.status.phase, Phase::Rejected);
    assert_eq!(again.wake_at, None);
}
