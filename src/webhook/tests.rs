//! Unit tests of the gate's and the guard's pure decisions.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::guard::{approver_write, policy_change, policy_write};
use super::packet::*;
use super::review::*;
use crate::approval::{Identities, approval_write};
use crate::crd::*;
use crate::policy::{Assessment, FiredRule, Gvk, Gvr, PolicySet, ReviewInput, UserInfo as User};

const CONTROLLER: &str = "system:serviceaccount:signoff-system:signoff";

fn now() -> Timestamp {
    "2026-11-22T12:00:00Z".parse().unwrap()
}

fn user(name: &str, groups: &[&str]) -> User {
    User { username: name.into(), uid: format!("uid-{name}"), groups: groups.iter().map(|g| g.to_string()).collect() }
}

fn settings() -> GateSettings {
    GateSettings {
        controller_namespace: "signoff-system".into(),
        break_glass_groups: vec!["signoff:break-glass".into()],
        refuse_uncovered: true,
        max_pending_per_requester: 20,
        gitops: Default::default(),
    }
}

fn ids() -> Identities {
    Identities { controller: CONTROLLER.into(), admin_groups: vec!["signoff:platform-admins".into()] }
}

fn pvc_delete(by: &User) -> ReviewInput {
    ReviewInput {
        operation: Operation::Delete,
        user: by.clone(),
        kind: Gvk { group: "".into(), version: "v1".into(), kind: "PersistentVolumeClaim".into() },
        resource: Gvr { group: "".into(), version: "v1".into(), resource: "persistentvolumeclaims".into() },
        sub_resource: String::new(),
        namespace: "prod".into(),
        name: "ledger-data".into(),
        dry_run: false,
        object: None,
        old_object: Some(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "ledger-data", "namespace": "prod", "uid": "u-1"}})),
        namespace_object: Some(std::sync::Arc::new(
            json!({"metadata": {"name": "prod", "labels": {"signoff.dev/owner": "payments"}}}),
        )),
    }
}

fn held_assessment() -> Assessment {
    Assessment {
        fired: vec![FiredRule {
            policy: "production".into(),
            rule: "delete-pvc".into(),
            risk: Risk::High,
            route: "engineering".into(),
            action_class: ActionClass::Destructive,
            message: "deleting a PersistentVolumeClaim in a production namespace".into(),
        }],
        risk: Risk::High,
        action_class: ActionClass::Destructive,
        routes: ["engineering".to_string()].into(),
        ..Default::default()
    }
}

fn held_request() -> ApprovalRequest {
    let input = pvc_delete(&user("alice", &["team:payments"]));
    let a = held_assessment();
    let Preliminary::Held { digest, namespace, name } = preliminary(&input, &a, &settings()) else { panic!("held") };
    packet(&input, &a, &PolicySet::empty(), &digest, &namespace, &name, &Default::default())
}

#[test]
fn low_risk_is_admitted_and_audit_findings_warn() {
    let input = pvc_delete(&user("alice", &[]));
    let mut a = Assessment::default();
    assert_eq!(preliminary(&input, &a, &settings()), Preliminary::Admit { warnings: vec![] });
    a.audit = held_assessment().fired;
    let Preliminary::Admit { warnings } = preliminary(&input, &a, &settings()) else { panic!() };
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("would hold"), "{warnings:?}");
}

#[test]
fn break_glass_dry_run_and_noop_are_decided_before_any_lookup() {
    let a = held_assessment();
    let glass = pvc_delete(&user("root", &["signoff:break-glass"]));
    assert!(
        matches!(preliminary(&glass, &a, &settings()), Preliminary::BreakGlass { warning } if warning.contains("BREAK-GLASS"))
    );
    let mut dry = pvc_delete(&user("alice", &[]));
    dry.dry_run = true;
    assert!(
        matches!(preliminary(&dry, &a, &settings()), Preliminary::DryRun { warning } if warning.contains("would be held"))
    );
    let mut noop = pvc_delete(&user("alice", &[]));
    noop.operation = Operation::Update;
    noop.object = Some(json!({"metadata": {"name": "x", "resourceVersion": "2"}, "spec": {"a": 1}}));
    noop.old_object = Some(json!({"metadata": {"name": "x", "resourceVersion": "1"}, "spec": {"a": 1}}));
    assert_eq!(preliminary(&noop, &a, &settings()), Preliminary::NoOp);
}

#[test]
fn cluster_scoped_changes_are_held_in_the_controller_namespace() {
    let mut input = pvc_delete(&user("alice", &[]));
    input.namespace = String::new();
    let Preliminary::Held { namespace, name, digest } = preliminary(&input, &held_assessment(), &settings()) else {
        panic!()
    };
    assert_eq!(namespace, "signoff-system");
    assert_eq!(name, format!("ar-{}", &digest[..12]));
}

#[test]
fn a_namespace_change_is_held_in_the_controller_namespace_not_in_itself() {
    let mut input = pvc_delete(&user("alice", &[]));
    input.resource = Gvr { group: "".into(), version: "v1".into(), resource: "namespaces".into() };
    input.kind = Gvk { group: "".into(), version: "v1".into(), kind: "Namespace".into() };
    input.namespace = "prod".into(); // what the API server sends for a Namespace object
    let Preliminary::Held { namespace, .. } = preliminary(&input, &held_assessment(), &settings()) else { panic!() };
    assert_eq!(namespace, "signoff-system");
}

#[test]
fn packet_and_held_message() {
    let ar = held_request();
    assert_eq!(ar.spec.requester.username, "alice");
    assert_eq!(ar.spec.action.operation, "DELETE");
    assert_eq!(ar.spec.owner_team.as_deref(), Some("payments"));
    assert_eq!(
        ar.spec.routing,
        vec![RouteTarget { route: "engineering".into(), policy: "production".into(), team: Some("payments".into()) }]
    );
    let name = ar.metadata.name.clone().unwrap();
    assert_eq!(
        held_message(&ar),
        format!(
            "held for approval: ApprovalRequest prod/{name} (high risk, destructive; routed to engineering → tier 1: team payments). \
             Reason: deleting a PersistentVolumeClaim in a production namespace. Follow it: kubectl signoff show -n prod {name}"
        )
    );
}

#[test]
fn existing_requests_decide_by_phase_and_digest() {
    let mut ar = held_request();
    let digest = ar.spec.digest.clone();
    assert_eq!(decide_existing(&ar, &digest, now(), false), Answer::Deny { message: held_message(&ar) });
    assert!(
        matches!(decide_existing(&ar, &"0".repeat(64), now(), false), Answer::Deny { message } if message.contains("digest mismatch"))
    );

    ar.status = Some(ApprovalRequestStatus {
        phase: Phase::Approved,
        not_after: Some(Time(now() + SignedDuration::from_secs(60))),
        ..Default::default()
    });
    assert!(matches!(decide_existing(&ar, &digest, now(), false), Answer::Allow { .. }));
    let later = now() + SignedDuration::from_secs(61);
    assert!(
        matches!(decide_existing(&ar, &digest, later, false), Answer::Deny { message } if message.contains("expired"))
    );

    ar.status = Some(ApprovalRequestStatus { phase: Phase::Rejected, ..Default::default() });
    assert!(
        matches!(decide_existing(&ar, &digest, now(), false), Answer::Deny { message } if message.contains("rejected") && message.contains("reopen"))
    );
    ar.status = Some(ApprovalRequestStatus { phase: Phase::Expired, ..Default::default() });
    assert!(
        matches!(decide_existing(&ar, &digest, now(), false), Answer::Deny { message } if message.contains("expired") && message.contains("Runbook"))
    );
}

fn pending(eligible: &[&str], groups: &[&str]) -> ApprovalRequest {
    let mut ar = held_request();
    ar.status = Some(ApprovalRequestStatus {
        phase: Phase::Pending,
        lanes: vec![Lane {
            route: "engineering".into(),
            policy: "production".into(),
            tier: 0,
            tiers: 5,
            tier_name: Some("Team".into()),
            tier_started_at: None,
            tier_deadline: None,
            phase: Phase::Pending,
            eligible: eligible.iter().map(|s| s.to_string()).collect(),
            eligible_groups: groups.iter().map(|s| s.to_string()).collect(),
        }],
        ..Default::default()
    });
    ar
}

fn decision(by: &str, verdict: Verdict) -> Decision {
    Decision {
        approver: by.into(),
        uid: Some(format!("uid-{by}")),
        groups: vec![],
        decision: verdict,
        routes: vec![],
        comment: None,
        at: Time(now()),
        attempt: 1,
    }
}

fn with_decision(ar: &ApprovalRequest, d: Decision) -> ApprovalRequest {
    let mut next = ar.clone();
    next.status.as_mut().unwrap().decisions.push(d);
    next
}

/// The guard's answer, rendered as the user reads it.
fn status_write(old: &ApprovalRequest, new: &ApprovalRequest, by: &User) -> Result<(), String> {
    approval_write("UPDATE", "status", Some(old), Some(new), by, &ids(), now()).map_err(|d| d.to_string())
}

/// A denial is typed: what is refused, on which field; the message is rendered
/// from it only at the edge.
#[test]
fn a_denial_names_the_field_it_refuses() {
    let old = pending(&["alice", "bob"], &[]);
    let alice = user("alice", &[]);
    let own = approval_write(
        "UPDATE",
        "status",
        Some(&old),
        Some(&with_decision(&old, decision("alice", Verdict::Approve))),
        &alice,
        &ids(),
        now(),
    );
    assert_eq!(
        own,
        Err(crate::approval::Denial::forbidden(
            "status.decisions[].approver",
            "you requested this change; someone else must approve it"
        ))
    );
    let late = approval_write(
        "UPDATE",
        "status",
        Some(&old),
        Some(&with_decision(
            &old,
            Decision { at: Time(now() - SignedDuration::from_mins(5)), ..decision("bob", Verdict::Approve) },
        )),
        &user("bob", &[]),
        &ids(),
        now(),
    );
    assert!(
        matches!(late, Err(crate::approval::Denial::Invalid { ref field, .. }) if field == "status.decisions[].at"),
        "{late:?}"
    );
}

#[test]
fn an_eligible_approver_may_add_their_own_decision() {
    let old = pending(&["bob"], &[]);
    let bob = user("bob", &[]);
    assert_eq!(status_write(&old, &with_decision(&old, decision("bob", Verdict::Approve)), &bob), Ok(()));
    // Eligible through a group, too.
    let old = pending(&[], &["team:payments"]);
    let carol = user("carol", &["team:payments"]);
    let by_carol = Decision { groups: vec!["team:payments".into()], ..decision("carol", Verdict::Reject) };
    assert_eq!(status_write(&old, &with_decision(&old, by_carol), &carol), Ok(()));
    // Claiming a group one does not have is refused.
    let mallory = user("mallory", &[]);
    let claimed = Decision { groups: vec!["team:payments".into()], ..decision("mallory", Verdict::Approve) };
    assert!(
        status_write(&old, &with_decision(&old, claimed), &mallory)
            .unwrap_err()
            .contains("groups must be exactly yours")
    );
}

#[test]
fn forged_and_ineligible_decisions_are_refused() {
    let old = pending(&["bob", "alice", "system:serviceaccount:argocd:argocd-application-controller"], &[]);
    let cases: Vec<(&str, User, Decision, &str)> = vec![
        ("self-approval", user("alice", &[]), decision("alice", Verdict::Approve), "you requested this change"),
        ("naming someone else", user("mallory", &[]), decision("bob", Verdict::Approve), "must name its writer"),
        ("not eligible", user("mallory", &[]), decision("mallory", Verdict::Approve), "not an eligible approver"),
        (
            "service account",
            user("system:serviceaccount:argocd:argocd-application-controller", &[]),
            decision("system:serviceaccount:argocd:argocd-application-controller", Verdict::Approve),
            "service accounts never count",
        ),
        ("controller", user(CONTROLLER, &[]), decision(CONTROLLER, Verdict::Approve), "never add a decision"),
        (
            "wrong uid",
            User { uid: "uid-other".into(), ..user("bob", &[]) },
            decision("bob", Verdict::Approve),
            "is not yours",
        ),
        (
            "a writer without a uid claiming one",
            User { uid: String::new(), ..user("bob", &[]) },
            decision("bob", Verdict::Approve),
            "is not yours (you have none)",
        ),
        (
            "no uid where the writer has one",
            user("bob", &[]),
            Decision { uid: None, ..decision("bob", Verdict::Approve) },
            "must carry your uid",
        ),
        (
            "time far off",
            user("bob", &[]),
            Decision { at: Time(now() - SignedDuration::from_secs(600)), ..decision("bob", Verdict::Approve) },
            "more than 2 minutes",
        ),
        (
            "route not eligible",
            user("bob", &[]),
            Decision { routes: vec!["security".into()], ..decision("bob", Verdict::Approve) },
            "not eligible to decide for route security",
        ),
    ];
    for (what, by, d, expected) in cases {
        let err = status_write(&old, &with_decision(&old, d), &by).expect_err(what);
        assert!(err.contains(expected), "{what}: {err}");
    }
}

#[test]
fn decisions_are_append_only_and_one_at_a_time() {
    let old = with_decision(&pending(&["bob", "carol"], &[]), decision("bob", Verdict::Approve));
    let carol = user("carol", &[]);
    let mut edited = old.clone();
    edited.status.as_mut().unwrap().decisions[0].decision = Verdict::Reject;
    assert!(status_write(&old, &edited, &carol).unwrap_err().to_string().contains("append-only"));
    let mut removed = old.clone();
    removed.status.as_mut().unwrap().decisions.clear();
    assert!(status_write(&old, &removed, &carol).unwrap_err().to_string().contains("append-only"));
    let two =
        with_decision(&with_decision(&old, decision("carol", Verdict::Approve)), decision("carol", Verdict::Approve));
    assert!(status_write(&old, &two, &carol).unwrap_err().to_string().contains("one decision at a time"));
}

/// What the controller writes when every lane is approved.
fn approved_by_controller(ar: &ApprovalRequest) -> ApprovalRequest {
    let mut next = with_phase(ar, Phase::Approved);
    for lane in &mut next.status.as_mut().unwrap().lanes {
        lane.phase = Phase::Approved;
    }
    next
}

#[test]
fn not_even_the_controller_approves_without_approvals_that_count() {
    let controller = user(CONTROLLER, &[]);
    let bare = pending(&["bob"], &[]);
    let refuse = |old: &ApprovalRequest, new: &ApprovalRequest, why: &str| {
        let err = status_write(old, new, &controller).expect_err(why);
        assert!(err.contains(why), "{why}: {err}");
    };
    refuse(&bare, &approved_by_controller(&bare), "no approval of this attempt counts");
    // Decisions that do not count: the requester's, an earlier attempt's, someone
    // the lane never reached.
    for (who, attempt) in [("alice", 1), ("bob", 0), ("mallory", 1)] {
        let old = with_decision(&bare, Decision { attempt, ..decision(who, Verdict::Approve) });
        refuse(&old, &approved_by_controller(&old), "no approval of this attempt counts");
    }
    let rejected =
        with_decision(&with_decision(&bare, decision("bob", Verdict::Approve)), decision("carol", Verdict::Reject));
    let mut reached = rejected.clone();
    reached.status.as_mut().unwrap().lanes[0].eligible.push("carol".into());
    refuse(&reached, &approved_by_controller(&reached), "rejects it");
    // The request says Approved while a lane does not.
    let approved = with_decision(&bare, decision("bob", Verdict::Approve));
    refuse(&approved, &with_phase(&approved, Phase::Approved), "only when every lane is");
    let mut no_lanes = with_phase(&approved, Phase::Approved);
    no_lanes.status.as_mut().unwrap().lanes.clear();
    refuse(&approved, &no_lanes, "cannot be removed");
    let mut empty = approved.clone();
    empty.status.as_mut().unwrap().lanes.clear();
    refuse(&empty, &with_phase(&empty, Phase::Approved), "only when every lane is");
    // Tiers stay in range; lanes are never dropped.
    let mut beyond = bare.clone();
    beyond.status.as_mut().unwrap().lanes[0].tier = 5;
    refuse(&bare, &beyond, "out of range");
    let mut dropped = bare.clone();
    dropped.status.as_mut().unwrap().lanes.clear();
    refuse(&bare, &dropped, "cannot be removed");
    // A reopened attempt starts undecided.
    let rejected_final = annotated(&with_phase(&bare, Phase::Rejected), "2");
    let mut reopened = approved_by_controller(&rejected_final);
    reopened.status.as_mut().unwrap().phase = Phase::Pending;
    reopened.status.as_mut().unwrap().attempt = 2;
    refuse(&rejected_final, &reopened, "starts undecided");
    // With bob's approval, the same write passes.
    assert_eq!(status_write(&approved, &approved_by_controller(&approved), &controller), Ok(()));
}

#[test]
fn only_the_controller_moves_phase_and_tiers_and_only_forward() {
    let old = with_decision(&pending(&["bob"], &[]), decision("bob", Verdict::Approve));
    let approved = approved_by_controller(&old);
    assert!(
        status_write(&old, &approved, &user("bob", &[])).unwrap_err().to_string().contains("only signoff's controller")
    );
    let controller = user(CONTROLLER, &[]);
    assert_eq!(status_write(&old, &approved, &controller), Ok(()));
    let mut back = approved.clone();
    back.status.as_mut().unwrap().phase = Phase::Pending;
    assert!(status_write(&approved, &back, &controller).unwrap_err().to_string().contains("final"));
    let mut forward = old.clone();
    forward.status.as_mut().unwrap().lanes[0].tier = 2;
    assert_eq!(status_write(&old, &forward, &controller), Ok(()));
    assert!(status_write(&forward, &old, &controller).unwrap_err().to_string().contains("cannot move back"));
    // A decision on a request that is no longer pending.
    let late = with_decision(&approved, decision("bob", Verdict::Approve));
    assert!(status_write(&approved, &late, &user("bob", &[])).unwrap_err().to_string().contains("already Approved"));
}

#[test]
fn only_signoff_creates_and_the_spec_never_changes() {
    let ar = held_request();
    let err = approval_write("CREATE", "", None, Some(&ar), &user("admin", &["system:masters"]), &ids(), now());
    assert!(err.unwrap_err().to_string().contains("only signoff creates"));
    assert_eq!(approval_write("CREATE", "", None, Some(&ar), &user(CONTROLLER, &[]), &ids(), now()), Ok(()));
    let mut edited = ar.clone();
    edited.spec.risk = Risk::Low;
    let err = approval_write("UPDATE", "", Some(&ar), Some(&edited), &user(CONTROLLER, &[]), &ids(), now());
    assert!(err.unwrap_err().to_string().contains("immutable"));
    let err = approval_write("DELETE", "", Some(&ar), None, &user("alice", &[]), &ids(), now());
    assert!(err.unwrap_err().to_string().contains("audit record"));
    assert_eq!(
        approval_write("DELETE", "", Some(&ar), None, &user("ivan", &["signoff:platform-admins"]), &ids(), now()),
        Ok(())
    );
}

fn policy(yaml: &str) -> EscalationPolicy {
    serde_yaml::from_str(yaml).unwrap()
}

/// Every policy change is described for the record; those that make the gate
/// hold less are marked weakened (the writer is warned).
#[test]
fn policy_changes_say_what_they_do_to_enforcement() {
    let with = |mode: &str, rules: &[&str]| {
        let rules: Vec<String> = rules
            .iter()
            .map(|r| format!("  - {{name: {r}, expression: \"true\", risk: High, route: engineering}}\n"))
            .collect();
        policy(&format!(
            "apiVersion: signoff.dev/v1alpha1\nkind: EscalationPolicy\nmetadata: {{name: prod}}\nspec:\n  mode: {mode}\n  match: {{rules: [{{operations: [\"*\"], apiGroups: [\"*\"], apiVersions: [\"*\"], resources: [\"*\"]}}]}}\n  rules:\n{}",
            rules.concat()
        ))
    };
    let enforcing = with("Enforce", &["a", "b"]);
    let created = policy_change(None, Some(&enforcing)).unwrap();
    assert_eq!(
        (created.action, created.weakened, created.summary.as_str()),
        ("created", false, "created (Enforce, 2 rules)")
    );
    let audit = policy_change(Some(&enforcing), Some(&with("Audit", &["a", "b"]))).unwrap();
    assert!(audit.weakened, "{audit:?}");
    assert_eq!(
        audit.summary,
        "updated: mode Enforce → Audit: the changes it matches are now admitted and only recorded"
    );
    let fewer = policy_change(Some(&enforcing), Some(&with("Enforce", &["a"]))).unwrap();
    assert!(fewer.weakened && fewer.summary.contains("rules removed: b"), "{fewer:?}");
    let back = policy_change(Some(&with("Audit", &["a"])), Some(&with("Enforce", &["a"]))).unwrap();
    assert!(!back.weakened && back.summary.contains("mode Audit → Enforce"), "{back:?}");
    let deleted = policy_change(Some(&enforcing), None).unwrap();
    assert!(deleted.weakened && deleted.summary.contains("no longer held"), "{deleted:?}");
    assert!(!policy_change(Some(&with("Audit", &["a"])), None).unwrap().weakened, "an Audit policy held nothing");
}

#[test]
fn policies_are_validated() {
    let base = r#"
apiVersion: signoff.dev/v1alpha1
kind: EscalationPolicy
metadata: {name: p}
spec:
  match: {rules: [{operations: [DELETE], apiGroups: [""], apiVersions: [v1], resources: [persistentvolumeclaims]}]}
  rules:
  - {name: r, expression: "true", risk: High, route: ROUTE}
"#;
    assert_eq!(policy_write(&policy(&base.replace("ROUTE", "engineering"))), Ok(()));
    let err = policy_write(&policy(&base.replace("ROUTE", "legal"))).unwrap_err().to_string();
    assert!(err.contains("route \"legal\"") && err.contains("spec.routes"), "{err}");
    let with_route = base.replace("ROUTE", "legal") + "  routes: [{name: legal, team: legal}]\n";
    assert_eq!(policy_write(&policy(&with_route)), Ok(()));
    let bad_cel = base.replace("ROUTE", "engineering").replace("\"true\"", "\"object.metadata.name ==\"");
    assert!(policy_write(&policy(&bad_cel)).is_err());
    let zero =
        base.replace("ROUTE", "engineering") + "  actionClasses: {routine: {tierTimeout: 0s, notify: Sequential}}\n";
    assert!(policy_write(&policy(&zero)).unwrap_err().to_string().contains("must be positive"));
}

#[test]
fn approvers_are_written_by_themselves_or_an_admin() {
    let approver = Approver::new("bob", ApproverSpec { user: "bob".into(), ..Default::default() });
    assert_eq!(approver_write(&approver, &user("bob", &[]), &ids()), Ok(()));
    assert!(approver_write(&approver, &user("mallory", &[]), &ids()).is_err());
    assert_eq!(approver_write(&approver, &user("ivan", &["signoff:platform-admins"]), &ids()), Ok(()));
}

fn with_phase(ar: &ApprovalRequest, phase: Phase) -> ApprovalRequest {
    let mut next = ar.clone();
    next.status.get_or_insert_with(Default::default).phase = phase;
    next
}

fn annotated(ar: &ApprovalRequest, value: &str) -> ApprovalRequest {
    let mut next = ar.clone();
    next.metadata.annotations.get_or_insert_with(Default::default).insert(REOPEN_ANNOTATION.into(), value.into());
    next
}

fn reopen_by(old: &ApprovalRequest, new: &ApprovalRequest, by: &User) -> Result<(), String> {
    approval_write("UPDATE", "", Some(old), Some(new), by, &ids(), now()).map_err(|d| d.to_string())
}

#[test]
fn only_the_requester_or_an_admin_reopens_a_rejected_or_expired_request_for_the_next_attempt() {
    let requester = held_request().spec.requester.username.clone();
    let rejected = with_phase(&pending(&["bob"], &[]), Phase::Rejected);
    let next = annotated(&rejected, "2");
    assert_eq!(reopen_by(&rejected, &next, &user(&requester, &[])), Ok(()));
    assert_eq!(reopen_by(&rejected, &next, &user("ivan", &["signoff:platform-admins"])), Ok(()));
    assert_eq!(reopen_by(&rejected, &next, &user("root", &["system:masters"])), Ok(()));
    let err = reopen_by(&rejected, &next, &user("bob", &[])).unwrap_err();
    assert_eq!(err, format!("only the requester ({requester}) or an admin may reopen this request"));
    let err = reopen_by(&rejected, &annotated(&rejected, "3"), &user(&requester, &[])).unwrap_err();
    assert!(err.contains("must be 2"), "{err}");
    let err = reopen_by(&rejected, &annotated(&rejected, "two"), &user(&requester, &[])).unwrap_err();
    assert!(err.contains("must be 2"), "{err}");
    let expired = with_phase(&rejected, Phase::Expired);
    assert_eq!(reopen_by(&expired, &annotated(&expired, "2"), &user(&requester, &[])), Ok(()));
    for phase in [Phase::Pending, Phase::Approved] {
        let ar = with_phase(&rejected, phase);
        let ar = with_not_after(&ar, now() + SignedDuration::from_secs(60));
        let err = reopen_by(&ar, &annotated(&ar, "2"), &user(&requester, &[])).unwrap_err();
        assert!(err.contains("only a Rejected or Expired request, or an Approved one"), "{err}");
    }
    // An Approved request whose approval was used, or has passed notAfter, can be asked again.
    let approved = with_not_after(&with_phase(&rejected, Phase::Approved), now() + SignedDuration::from_secs(60));
    let used = with_admission(&approved, admission("alice", 1, false));
    assert_eq!(reopen_by(&used, &annotated(&used, "2"), &user(&requester, &[])), Ok(()));
    let stale = with_not_after(&approved, now() - SignedDuration::from_secs(1));
    assert_eq!(reopen_by(&stale, &annotated(&stale, "2"), &user(&requester, &[])), Ok(()));
    // A break-glass admission does not use the approval up.
    let glass = with_admission(&approved, admission("root", 1, true));
    assert!(reopen_by(&glass, &annotated(&glass, "2"), &user(&requester, &[])).is_err());
    // Other metadata edits, and keeping the annotation as it is, stay allowed.
    let mut labelled = next.clone();
    labelled.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
    assert_eq!(reopen_by(&next, &labelled, &user("bob", &[])), Ok(()));
}

fn with_not_after(ar: &ApprovalRequest, at: Timestamp) -> ApprovalRequest {
    let mut next = ar.clone();
    next.status.get_or_insert_with(Default::default).not_after = Some(Time(at));
    next
}

fn admission(user: &str, attempt: u32, break_glass: bool) -> Admission {
    Admission { user: user.into(), at: Time(now()), attempt, break_glass }
}

fn with_admission(ar: &ApprovalRequest, admission: Admission) -> ApprovalRequest {
    let mut next = ar.clone();
    next.status.get_or_insert_with(Default::default).admissions.push(admission);
    next
}

#[test]
fn an_approval_admits_its_change_once() {
    let ar = with_not_after(&with_phase(&held_request(), Phase::Approved), now() + SignedDuration::from_secs(60));
    let digest = ar.spec.digest.clone();
    assert!(matches!(decide_existing(&ar, &digest, now(), false), Answer::Allow { .. }));
    // A break-glass admission does not use the approval.
    let glass = with_admission(&ar, admission("root", 1, true));
    assert!(matches!(decide_existing(&glass, &digest, now(), false), Answer::Allow { .. }));
    let used = with_admission(&ar, admission("alice", 1, false));
    let Answer::Deny { message } = decide_existing(&used, &digest, now(), false) else { panic!("admitted twice") };
    assert!(message.contains("already used: alice applied this change") && message.contains("kubectl signoff reopen"));
    // An admission of an earlier attempt does not use this attempt's approval.
    let mut second = with_admission(&ar, admission("alice", 1, false));
    second.status.as_mut().unwrap().attempt = 2;
    assert!(matches!(decide_existing(&second, &digest, now(), false), Answer::Allow { .. }));
}

fn being_deleted(finalizers_before: &[&str], finalizers_after: &[&str]) -> ReviewInput {
    let object = |f: &[&str]| {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "ledger-data",
            "namespace": "prod", "uid": "u-1", "deletionTimestamp": "2026-11-22T11:00:00Z", "finalizers": f}})
    };
    let mut input = pvc_delete(&user("kcm", &[]));
    input.operation = Operation::Update;
    input.old_object = Some(object(finalizers_before));
    input.object = Some(object(finalizers_after));
    input
}

#[test]
fn removing_finalizers_of_an_object_being_deleted_is_judged_as_its_delete() {
    let removal = being_deleted(&["a", "b"], &["b"]);
    let judged = finalizing_delete(&removal).expect("a finalizer removal completes a deletion");
    assert_eq!(judged.operation, Operation::Delete);
    assert_eq!(judged.object, None);
    // Same request, same digest as the DELETE it completes.
    assert_eq!(digest_of(&judged), digest_of(&pvc_delete(&user("alice", &[]))));
    // Adding a finalizer, keeping them, or an object not being deleted: an ordinary UPDATE.
    assert_eq!(finalizing_delete(&being_deleted(&["a"], &["a", "b"])), None);
    assert_eq!(finalizing_delete(&being_deleted(&["a"], &["a"])), None);
    let mut alive = being_deleted(&["a"], &[]);
    alive.old_object.as_mut().unwrap()["metadata"].as_object_mut().unwrap().remove("deletionTimestamp");
    assert_eq!(finalizing_delete(&alive), None);

    // An admitted deletion (approved, or break-glass) lets its finalizers go, even
    // after notAfter; a deletion signoff never admitted is held.
    let ar = with_not_after(&with_phase(&held_request(), Phase::Approved), now() - SignedDuration::from_secs(600));
    let digest = ar.spec.digest.clone();
    let admitted = with_admission(&ar, admission("alice", 1, false));
    assert!(matches!(decide_existing(&admitted, &digest, now(), true), Answer::Completes { .. }));
    let glass = with_admission(&with_phase(&held_request(), Phase::Pending), admission("root", 1, true));
    assert!(matches!(decide_existing(&glass, &digest, now(), true), Answer::Completes { .. }));
    let pending = with_phase(&held_request(), Phase::Pending);
    assert!(matches!(decide_existing(&pending, &digest, now(), true), Answer::Deny { .. }));
}

#[test]
fn admissions_are_append_only() {
    let controller = user(CONTROLLER, &[]);
    let ar = with_admission(&with_phase(&held_request(), Phase::Approved), admission("alice", 1, false));
    let mut edited = ar.clone();
    edited.status.as_mut().unwrap().admissions[0].user = "mallory".into();
    assert!(status_write(&ar, &edited, &controller).unwrap_err().to_string().contains("admissions are append-only"));
    let mut removed = ar.clone();
    removed.status.as_mut().unwrap().admissions.clear();
    assert!(status_write(&ar, &removed, &controller).unwrap_err().to_string().contains("admissions are append-only"));
    let appended = with_admission(&ar, admission("alice", 1, true));
    assert_eq!(status_write(&ar, &appended, &controller), Ok(()));
}

#[test]
fn the_controller_reopens_only_the_annotated_next_attempt_and_decisions_name_the_current_one() {
    let controller = user(CONTROLLER, &[]);
    let rejected = annotated(&with_phase(&pending(&["bob"], &[]), Phase::Rejected), "2");
    let mut reopened = with_phase(&rejected, Phase::Pending);
    reopened.status.as_mut().unwrap().attempt = 2;
    assert_eq!(status_write(&rejected, &reopened, &controller), Ok(()));
    // Without the annotation, or skipping an attempt, a final phase stays final.
    let mut bare = rejected.clone();
    bare.metadata.annotations = None;
    let mut bare_reopened = reopened.clone();
    bare_reopened.metadata.annotations = None;
    assert!(status_write(&bare, &bare_reopened, &controller).is_err());
    let mut skipped = annotated(&reopened, "3");
    skipped.status.as_mut().unwrap().attempt = 3;
    assert!(status_write(&annotated(&rejected, "3"), &skipped, &controller).is_err());
    // The attempt never moves on its own.
    let pending_one = pending(&["bob"], &[]);
    let mut bumped = pending_one.clone();
    bumped.status.as_mut().unwrap().attempt = 2;
    assert!(status_write(&pending_one, &bumped, &controller).unwrap_err().to_string().contains("by a reopen"));
    // A decision names the current attempt.
    let stale = with_decision(&reopened, decision("bob", Verdict::Approve));
    let err = status_write(&reopened, &stale, &user("bob", &[])).unwrap_err();
    assert!(err.contains("attempt 1, but the request is in attempt 2"), "{err}");
    let fresh = with_decision(&reopened, Decision { attempt: 2, ..decision("bob", Verdict::Approve) });
    assert_eq!(status_write(&reopened, &fresh, &user("bob", &[])), Ok(()));
}

#[test]
fn a_huge_object_gets_a_bounded_packet_that_still_fits_in_etcd() {
    let big = "x".repeat(100) + "\n";
    let data: serde_json::Map<String, serde_json::Value> =
        (0..30_000).map(|i| (format!("k{i}"), json!(big.clone()))).collect();
    let mut input = pvc_delete(&user("alice", &[]));
    input.operation = Operation::Update;
    input.old_object = Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {}}));
    input.object = Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": data}));
    let a = held_assessment();
    let Preliminary::Held { digest, namespace, name } = preliminary(&input, &a, &settings()) else { panic!("held") };
    let ar = packet(&input, &a, &PolicySet::empty(), &digest, &namespace, &name, &Default::default());
    let manifest = ar.spec.manifest.unwrap();
    assert!(manifest.len() <= MAX_PACKET_TEXT + 200, "{}", manifest.len());
    assert!(manifest.contains("# … manifest truncated"), "{}", &manifest[manifest.len() - 200..]);
    assert!(manifest.contains("k0: "), "the first entries are shown: {}", &manifest[..200]);
    let diff = ar.spec.diff.unwrap();
    assert!(diff.contains("too large to diff") && diff.len() < 1000, "{diff}");
}

#[test]
fn a_multi_megabyte_string_is_shown_cut_with_the_rest_of_the_object() {
    let mut input = pvc_delete(&user("alice", &[]));
    input.operation = Operation::Create;
    input.old_object = None;
    input.object = Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
        "data": {"blob": "é".repeat(1_500_000), "small": "kept"}}));
    let a = held_assessment();
    let Preliminary::Held { digest, namespace, name } = preliminary(&input, &a, &settings()) else { panic!("held") };
    let manifest =
        packet(&input, &a, &PolicySet::empty(), &digest, &namespace, &name, &Default::default()).spec.manifest.unwrap();
    assert!(manifest.len() <= MAX_PACKET_TEXT + 200, "{}", manifest.len());
    assert!(manifest.contains("éé…"), "the long value is cut, visibly");
    assert!(manifest.contains("small: kept") && manifest.contains("name: big"), "the rest is shown: {manifest}");
    assert!(manifest.ends_with("the digest covers the whole object.\n"), "{}", &manifest[manifest.len() - 200..]);
    // A small object is shown whole, with no note.
    input.object =
        Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "small"}, "data": {"a": "b"}}));
    let manifest =
        packet(&input, &a, &PolicySet::empty(), &digest, &namespace, &name, &Default::default()).spec.manifest.unwrap();
    assert!(!manifest.contains("truncated") && manifest.contains("a: b"), "{manifest}");
}

fn namespace_update(sub_resource: &str, old: serde_json::Value, new: serde_json::Value) -> ReviewInput {
    ReviewInput {
        operation: Operation::Update,
        user: user("mallory", &[]),
        kind: Gvk { group: "".into(), version: "v1".into(), kind: "Namespace".into() },
        resource: Gvr { group: "".into(), version: "v1".into(), resource: "namespaces".into() },
        sub_resource: sub_resource.into(),
        namespace: "prod".into(),
        name: "prod".into(),
        dry_run: false,
        object: Some(json!({"metadata": {"name": "prod", "labels": new}})),
        old_object: Some(json!({"metadata": {"name": "prod", "labels": old}})),
        namespace_object: None,
    }
}

/// signoff's namespace labels are found whether added, changed or removed, on
/// any subresource; other labels and other kinds are not its business.
#[test]
fn trust_anchor_label_changes_are_found() {
    use super::route::anchor_labels_changed;
    let prod = json!({"signoff.dev/environment": "production", "signoff.dev/owner": "payments", "team": "a"});
    let changed = |sub: &str, new: serde_json::Value| anchor_labels_changed(&namespace_update(sub, prod.clone(), new));
    assert_eq!(
        changed("", json!({"signoff.dev/environment": "development", "signoff.dev/owner": "payments", "team": "a"})),
        vec!["signoff.dev/environment"]
    );
    assert_eq!(changed("status", json!({"team": "a"})), vec!["signoff.dev/environment", "signoff.dev/owner"]);
    assert_eq!(
        changed(
            "finalize",
            json!({"signoff.dev/environment": "production", "signoff.dev/owner": "payments",
            "signoff.dev/tier": "gold", "team": "a"})
        ),
        vec!["signoff.dev/tier"]
    );
    assert!(changed("", json!({"signoff.dev/environment": "production", "signoff.dev/owner": "payments"})).is_empty());
    let mut deployment = namespace_update("", prod.clone(), json!({}));
    deployment.resource = Gvr { group: "apps".into(), version: "v1".into(), resource: "deployments".into() };
    assert!(anchor_labels_changed(&deployment).is_empty(), "only namespaces carry signoff's anchors");
}

/// Where a policy covers a DELETE, the configuration also registers UPDATE (a
/// finalizer removal completes a delete): such an update is gated, not refused
/// as "no policy matches" (before, every label change of a namespace was refused
/// once a policy held namespace deletes).
#[test]
fn updates_of_kinds_whose_deletes_are_covered_are_gated_not_refused() {
    use super::route::{Route, route};
    let deletes = PolicySet::new([&policy(
        r#"
apiVersion: signoff.dev/v1alpha1
kind: EscalationPolicy
metadata: {name: p}
spec:
  match: {rules: [{operations: [DELETE], apiGroups: [""], apiVersions: [v1], resources: [namespaces]}]}
  rules:
  - {name: r, expression: "true", risk: High, route: engineering}
"#,
    )]);
    let update = namespace_update("", json!({"team": "a"}), json!({"team": "b"}));
    assert!(matches!(route(&update, None, &deletes, true), Route::Gate));
    let mut create = update.clone();
    create.operation = Operation::Create;
    create.old_object = None;
    assert!(matches!(route(&create, None, &deletes, true), Route::Uncovered(_)), "a create is still uncovered");
}

/// An approval binds the assessment, not only the content (issue 23, item 1):
/// a write that needs a route, a team, a risk or a class the request was not
/// asked for is not covered by it; one that needs less is.
#[test]
fn an_approval_covers_only_what_was_asked() {
    use crate::approval::not_covered;
    use crate::fixtures::Packet;
    let asked = Packet::new("prod", "ar-1").routes(&[("engineering", "payments")]).build().spec;
    let needs = |routes: &[(&str, &str)]| Packet::new("prod", "ar-1").routes(routes).build().spec;
    assert!(not_covered(&asked, &needs(&[("engineering", "payments")])).is_empty());
    assert_eq!(
        not_covered(&asked, &needs(&[("engineering", "payments"), ("manager", "payments")])),
        vec!["route manager"],
        "mallory's cross-team write of alice's approved change needs the manager too"
    );
    assert_eq!(
        not_covered(&asked, &needs(&[("engineering", "platform")])),
        vec!["route engineering for team platform (asked of payments)"]
    );
    let wider = Packet::new("prod", "ar-1").routes(&[("engineering", "payments"), ("manager", "payments")]).build();
    assert!(not_covered(&wider.spec, &asked).is_empty(), "a write that needs fewer people is covered");
    let mut riskier = asked.clone();
    riskier.risk = Risk::High;
    let mut lower = asked.clone();
    lower.risk = Risk::Medium;
    assert_eq!(not_covered(&lower, &riskier), vec!["high risk (asked at medium)"]);
    let destructive =
        Packet::new("prod", "ar-1").class(ActionClass::Destructive).routes(&[("engineering", "payments")]);
    assert_eq!(not_covered(&asked, &destructive.build().spec), vec!["a destructive change (asked as routine)"]);
}

/// A write the first request does not cover is held as its own request, named by
/// the digest and the assessment: the same write assessed the same way finds it
/// again, another assessment does not.
#[test]
fn uncovered_writes_have_a_request_of_their_own() {
    use crate::fixtures::Packet;
    let needs = |routes: &[(&str, &str)]| Packet::new("prod", "x").routes(routes).build().spec;
    let cross_team = needs(&[("engineering", "payments"), ("manager", "payments")]);
    let name = assessed_request_name("a".repeat(64).as_str(), &cross_team);
    assert_eq!(name, assessed_request_name("a".repeat(64).as_str(), &cross_team.clone()));
    assert_ne!(name, assessed_request_name("b".repeat(64).as_str(), &cross_team), "another change");
    assert_ne!(name, assessed_request_name("a".repeat(64).as_str(), &needs(&[("engineering", "payments")])));
    assert_ne!(name, crate::digest::request_name(&"a".repeat(64)), "not the first request's name");
    assert!(name.starts_with("ar-") && name.len() == 15, "{name}");
}

/// Flood control (issue 23, item 5): a newer hold for the same object by the
/// same requester supersedes the older live one; past the cap a requester's
/// next hold is refused with what to do; others' requests do not count.
#[test]
fn a_flood_supersedes_per_object_and_is_capped_per_requester() {
    use crate::fixtures::Packet;
    let by = |who: &str, name: &str, object: &str| {
        Packet::new("prod", name)
            .requester(who, &[])
            .action("CREATE", "", "ConfigMap", "configmaps", None, object)
            .build()
    };
    let new = by("mallory", "ar-new", "limits");
    let older_same = by("mallory", "ar-old", "limits");
    let mut already_superseded = by("mallory", "ar-older", "limits");
    already_superseded.metadata.annotations =
        Some([(crate::crd::SUPERSEDED_ANNOTATION.to_string(), "ar-old".to_string())].into());
    let other_object = by("mallory", "ar-other", "quotas");
    let someone_else = by("alice", "ar-alice", "limits");
    let others: Vec<Other> =
        [older_same, already_superseded, other_object.clone(), someone_else].iter().map(Other::of).collect();

    let flood = |new: &ApprovalRequest, others: &[Other], cap| {
        flood(&new.spec.requester.username, Live::among(&Other::of(new), others), cap)
    };
    let f = flood(&new, &others, 0);
    assert_eq!(f.supersedes, vec![("prod".to_string(), "ar-old".to_string())]);
    assert_eq!(f.over_cap, None, "0 is no limit");
    // mallory has 2 live requests (ar-old is replaced, so 1 besides the new one: 2 in all).
    assert_eq!(flood(&new, &others, 2).over_cap, None);
    let refused = flood(&new, &others, 1).over_cap.expect("over the cap");
    assert!(refused.contains("mallory already has 1 pending") && refused.contains("--max-pending-per-requester"));
    // A decided request is not live.
    let mut decided = other_object;
    decided.status.get_or_insert_with(Default::default).phase = Phase::Rejected;
    assert_eq!(flood(&new, &[Other::of(&decided)], 1).over_cap, None);
}

/// Only signoff marks a request superseded: an approver who may update
/// requests cannot stop someone else's escalation that way.
#[test]
fn only_signoff_marks_a_request_superseded() {
    let old = held_request();
    let mut marked = old.clone();
    marked.metadata.annotations = Some([(SUPERSEDED_ANNOTATION.to_string(), "ar-newer".to_string())].into());
    let write = |by: &User| approval_write("UPDATE", "", Some(&old), Some(&marked), by, &ids(), now());
    assert_eq!(write(&user(CONTROLLER, &[])), Ok(()));
    let err = write(&user("bob", &["team:payments"])).unwrap_err();
    assert!(err.to_string().contains("only signoff marks a request superseded"), "{err}");
}

/// A metadata change sent through /status (most kinds keep it) is judged as the
/// UPDATE of the object; a plain status write is not (issue 23, item 3).
#[test]
fn metadata_changes_through_status_are_judged_as_updates_of_the_object() {
    let write = |old: serde_json::Value, new: serde_json::Value| ReviewInput {
        operation: Operation::Update,
        user: user("mallory", &[]),
        kind: Gvk { group: "".into(), version: "v1".into(), kind: "PersistentVolumeClaim".into() },
        resource: Gvr { group: "".into(), version: "v1".into(), resource: "persistentvolumeclaims".into() },
        sub_resource: "status".into(),
        namespace: "prod".into(),
        name: "ledger".into(),
        dry_run: false,
        object: Some(new),
        old_object: Some(old),
        namespace_object: None,
    };
    let pvc = |labels: serde_json::Value, phase: &str| json!({"metadata": {"name": "ledger", "labels": labels}, "status": {"phase": phase}});
    let relabel = write(pvc(json!({"tier": "critical"}), "Bound"), pvc(json!({}), "Bound"));
    let judged = status_metadata_change(&relabel).expect("judged as an update");
    assert_eq!((judged.operation, judged.sub_resource.as_str()), (Operation::Update, ""));
    let plain = write(pvc(json!({"tier": "critical"}), "Pending"), pvc(json!({"tier": "critical"}), "Bound"));
    assert_eq!(status_metadata_change(&plain), None);
    let empty_vs_none = write(json!({"metadata": {"name": "ledger"}}), pvc(json!({}), "Bound"));
    assert_eq!(status_metadata_change(&empty_vs_none), None, "no labels and empty labels are the same");
    let mut owned = relabel.clone();
    owned.object = Some(json!({"metadata": {"labels": {"tier": "critical"}, "ownerReferences": [{"uid": "u"}]}}));
    assert!(status_metadata_change(&owned).is_some(), "owners too");
    let mut main = relabel;
    main.sub_resource = String::new();
    assert_eq!(status_metadata_change(&main), None, "the main resource is judged as it is");
}
