//! The state machine with a fake clock: every scenario is a sequence of steps at
//! chosen instants, feeding each step's status into the next.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

use super::*;
use crate::crd::*;
use crate::fixtures::*;
use crate::policy::PolicySet;

/// Runs steps and keeps the request's status, like the reconciler.
struct Sim {
    ar: ApprovalRequest,
    policies: PolicySet,
    teams: Vec<Team>,
    approvers: Vec<Approver>,
    effects: Vec<(Timestamp, Effect)>,
}

impl Sim {
    fn new(ar: ApprovalRequest, policies: PolicySet) -> Sim {
        Sim { ar, policies, teams: teams(), approvers: vec![], effects: vec![] }
    }
    fn at(&mut self, now: Timestamp) -> Step {
        let world = World { policies: &self.policies, teams: &self.teams, approvers: &self.approvers };
        let step = step(&self.ar, world, now);
        self.ar.status = Some(step.status.clone());
        self.effects.extend(step.effects.iter().cloned().map(|e| (now, e)));
        step
    }
    fn status(&self) -> &ApprovalRequestStatus {
        self.ar.status.as_ref().unwrap()
    }
    fn decide(&mut self, by: &str, verdict: Verdict, at: Timestamp) {
        let attempt = self.ar.status.as_ref().map_or(1, |s| s.attempt);
        self.ar.status.get_or_insert_with(Default::default).decisions.push(Decision {
            approver: by.into(),
            uid: None,
            groups: vec![],
            decision: verdict,
            routes: vec![],
            comment: None,
            at: Time(at),
            attempt,
        });
    }
    /// (route, tier, users) of every escalation notification so far, in order.
    fn notified(&self) -> Vec<(String, u32, Vec<String>)> {
        self.effects
            .iter()
            .filter_map(|(_, e)| match e {
                Effect::Notify(n) if n.kind == NotifyKind::Escalation => {
                    Some((n.route.clone(), n.tier, n.users.clone()))
                }
                _ => None,
            })
            .collect()
    }
}

fn users(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn sequential_chain_walks_tier_by_tier_on_exact_deadlines() {
    let mut sim = Sim::new(request(ActionClass::Routine, &[("engineering", "payments")]), policy_set(""));
    let first = sim.at(t0());
    assert_eq!(first.wake_at, Some(t0() + mins(10)));
    assert_eq!(sim.notified(), vec![("engineering".into(), 0, users(&["alice", "bob"]))]);
    // Nothing happens before the deadline, however often we look.
    assert!(sim.at(t0() + mins(9)).effects.is_empty());
    assert_eq!(sim.status().lanes[0].tier, 0);
    // Tier 2 (on-call: dave, on shift since Monday 16th 09:00 Berlin) at exactly 10 minutes.
    let second = sim.at(t0() + mins(10));
    assert_eq!(sim.status().lanes[0].tier, 1);
    assert_eq!(sim.status().lanes[0].tier_started_at, Some(MicroTime(t0() + mins(10))));
    assert_eq!(second.wake_at, Some(t0() + mins(20)));
    sim.at(t0() + mins(20));
    assert_eq!(
        sim.notified(),
        vec![
            ("engineering".into(), 0, users(&["alice", "bob"])),
            ("engineering".into(), 1, users(&["dave"])),
            ("engineering".into(), 2, users(&["carol"])),
        ]
    );
    // Everyone reached so far stays eligible.
    assert_eq!(sim.status().lanes[0].eligible, users(&["alice", "bob", "dave", "carol"]));
    assert_eq!(sim.status().deadline, Some(Time(t0() + mins(50))), "five tiers of 10 minutes");
}

#[test]
fn a_late_controller_walks_every_tier_it_missed_without_skipping_one() {
    let mut sim = Sim::new(request(ActionClass::Routine, &[("engineering", "payments")]), policy_set(""));
    sim.at(t0());
    // Down for 25 minutes: tiers 2 and 3 were due at +10 and +20.
    sim.at(t0() + mins(25));
    let tiers: Vec<u32> = sim.notified().iter().map(|n| n.1).collect();
    assert_eq!(tiers, vec![0, 1, 2]);
    let lane = &sim.status().lanes[0];
    assert_eq!(lane.tier_started_at, Some(MicroTime(t0() + mins(20))), "the schedule does not drift with lateness");
    assert_eq!(lane.tier_deadline, Some(MicroTime(t0() + mins(30))));
}

#[test]
fn the_same_step_twice_gives_the_same_keys() {
    let ar = request(ActionClass::Routine, &[("engineering", "payments")]);
    let world_policies = policy_set("");
    let teams = teams();
    let world = World { policies: &world_policies, teams: &teams, approvers: &[] };
    let a = step(&ar, world, t0());
    let b = step(&ar, world, t0() + SignedDuration::from_secs(3));
    let keys = |s: &Step| {
        s.effects
            .iter()
            .filter_map(|e| if let Effect::Notify(n) = e { Some(n.key.clone()) } else { None })
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&a), vec!["uid-1/engineering/0"]);
    assert_eq!(keys(&a), keys(&b), "a crash before the status write repeats the same notifications, deduplicable");
}

/// The reconciler's startup pass (and its skipped reads) rely on this: a
/// request whose step was written, read back as the API server returns it, is
/// left alone by a step before its wake time.
#[test]
fn a_written_step_is_a_fixed_point_until_its_wake_time() {
    let mut sim = Sim::new(request(ActionClass::Routine, &[("engineering", "payments")]), policy_set(""));
    let first = sim.at(t0());
    assert!(!first.effects.is_empty());
    let wake = first.wake_at.unwrap();
    let read_back: ApprovalRequest = serde_json::from_value(serde_json::to_value(&sim.ar).unwrap()).unwrap();
    let world = World { policies: &sim.policies, teams: &sim.teams, approvers: &[] };
    for now in [t0() + SignedDuration::from_millis(1500), wake - SignedDuration::from_millis(1)] {
        let again = step(&read_back, world, now);
        assert!(again.effects.is_empty(), "at {now}: {:?}", again.effects);
        assert_eq!(Some(&again.status), read_back.status.as_ref(), "at {now}");
        assert_eq!(again.wake_at, Some(wake));
    }
    assert!(!step(&read_back, world, wake).effects.is_empty(), "due at its wake time");
}

#[test]
fn simultaneous_mode_notifies_every_tier_at_once() {
    let mut sim = Sim::new(request(ActionClass::Destructive, &[("engineering", "payments")]), policy_set(""));
    let first = sim.at(t0());
    let tiers: Vec<u32> = sim.notified().iter().map(|n| n.1).collect();
    assert_eq!(tiers, vec![0, 1, 2, 3, 4], "owner, on-call, lead, secondary and admins at once");
    assert_eq!(sim.status().lanes[0].eligible, users(&["alice", "bob", "dave", "carol", "ivan", "root"]));
    assert_eq!(first.wake_at, Some(t0() + mins(2)));
    // The first eligible responder wins: the platform admin answers first.
    sim.decide("root", Verdict::Approve, t0() + mins(1));
    sim.at(t0() + mins(1));
    assert_eq!(sim.status().phase, Phase::Approved);
    // Later tiers are not notified again as time passes.
    let before = sim.notified().len();
    sim.at(t0() + mins(9));
    assert_eq!(sim.notified().len(), before);
}

fn approver(user: &str, tz: &str, quiet: Vec<QuietHours>, away: Vec<AwayPeriod>) -> Approver {
    Approver::new(
        user,
        ApproverSpec { user: user.into(), time_zone: tz.into(), quiet_hours: quiet, away, contacts: vec![] },
    )
}

#[test]
fn quiet_hours_cross_midnight_in_the_approvers_time_zone() {
    // bob sleeps 22:00-07:00 New York time, every weekday night starting Mon-Fri.
    let quiet = vec![QuietHours {
        days: vec![Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri],
        start: "22:00".into(),
        end: "07:00".into(),
    }];
    let approvers = vec![approver("bob", "America/New_York", quiet, vec![])];
    let at = |s: &str| people::unavailable("bob", &approvers, t(s));
    // Monday 23:30 in New York = Tuesday 04:30 UTC: inside (evening part of Monday's window).
    assert!(at("2026-11-24T04:30:00Z").is_some());
    // Tuesday 06:59 New York = 11:59 UTC: inside (morning part of Monday's window).
    assert!(at("2026-11-24T11:59:00Z").is_some());
    // Tuesday 07:00 New York: outside.
    assert!(at("2026-11-24T12:00:00Z").is_none());
    // Saturday 23:00 New York (Sun 04:00 UTC): Saturday is not listed, so awake.
    assert!(at("2026-11-29T04:00:00Z").is_none());
    // Saturday 03:00 New York (08:00 UTC): the morning part of Friday's window.
    assert!(at("2026-11-28T08:00:00Z").is_some());
    let why = at("2026-11-24T04:30:00Z").unwrap();
    assert_eq!(why.reason, "quiet hours 22:00-07:00 America/New_York");
    assert_eq!(why.setting, "Approver/bob spec.quietHours[0]");
}

/// Away on leave all of November and December 2026 (t0 is in November).
fn on_leave() -> AwayPeriod {
    AwayPeriod {
        from: "2026-11-01T00:00:00Z".into(),
        until: "2026-12-31T00:00:00Z".into(),
        reason: AwayReason::Leave,
        note: None,
    }
}

#[test]
fn skipped_people_are_recorded_and_not_notified_but_may_still_approve() {
    let mut sim = Sim::new(request(ActionClass::Routine, &[("engineering", "payments")]), policy_set(""));
    let away = AwayPeriod {
        from: "2026-11-19T00:00:00Z".into(),
        until: "2026-11-30T00:00:00Z".into(),
        reason: AwayReason::Vacation,
        note: None,
    };
    sim.approvers = vec![approver("bob", "UTC", vec![], vec![away])];
    let step = sim.at(t0());
    assert_eq!(sim.notified(), vec![("engineering".into(), 0, users(&["alice"]))]);
    // Said in the tier's one Event (its note), not in an Event of its own: a
    // person away is how things go, not a warning.
    let [Effect::Notify(n)] = &step.effects[..] else { panic!("one notification, no other Event: {:?}", step.effects) };
    assert_eq!(n.skipped.len(), 1, "{:?}", n.skipped);
    assert!(n.skipped[0].contains("skipped bob: away (Vacation)"), "{:?}", n.skipped);
    assert!(!n.warning);
    assert!(
        effects::event_note(n).ends_with(&format!("notified alice and team payments; {}", n.skipped[0])),
        "{}",
        effects::event_note(n)
    );
    let skip = &sim.status().skips[0];
    assert_eq!(skip.user.as_deref(), Some("bob"));
    assert!(skip.reason.starts_with("away (Vacation) until 2026-11-30"), "{}", skip.reason);
    assert_eq!(skip.setting.as_deref(), Some("Approver/bob spec.away[0]"));
    // Away stops the page, not the right to answer.
    assert!(sim.status().lanes[0].eligible.contains(&"bob".to_string()));
}

#[test]
fn an_empty_tier_is_promoted_at_once_and_recorded() {
    let mut sim = Sim::new(request(ActionClass::Routine, &[("engineering", "payments")]), policy_set(""));
    // dave (on call) is away: tier 2 has nobody, so tier 3 (lead) starts at once.
    let away = on_leave();
    sim.approvers = vec![approver("dave", "UTC", vec![], vec![away])];
    sim.at(t0());
    let step = sim.at(t0() + mins(10));
    // One Event for the step (the lead's), a Warning that names the empty tier.
    let [Effect::Notify(n)] = &step.effects[..] else { panic!("one notification, no other Event: {:?}", step.effects) };
    assert!(n.warning, "an empty tier is something to fix");
    assert!(effects::event_note(n).contains("tier 2 (OnCall) has nobody available"), "{}", effects::event_note(n));
    let lane = &sim.status().lanes[0];
    assert_eq!(lane.tier, 2, "on-call skipped to the lead");
    assert_eq!(lane.tier_started_at, Some(MicroTime(t0() + mins(10))));
    assert_eq!(sim.notified().last().unwrap(), &("engineering".into(), 2, users(&["carol"])));
    let whole_tier = sim.status().skips.iter().find(|s| s.user.is_none()).unwrap();
    assert_eq!(whole_tier.tier, 1);
    assert!(whole_tier.reason.contains("tier 2 (OnCall) has nobody available"), "{}", whole_tier.reason);
}

#[test]
fn skips_no_notification_follows_are_events_of_their_own() {
    let mut sim = Sim::new(request(ActionClass::Routine, &[("engineering", "payments")]), policy_set(""));
    sim.approvers = ["alice", "bob", "carol", "dave", "ivan", "root"]
        .iter()
        .map(|u| approver(u, "UTC", vec![], vec![on_leave()]))
        .collect();
    let step = sim.at(t0());
    assert_eq!(sim.status().phase, Phase::Expired, "every tier empty: the chain runs out at once");
    assert!(sim.notified().is_empty());
    let tiers_skipped =
        step.effects.iter().filter(|e| matches!(e, Effect::Event { reason: "TierSkipped", warning: true, .. })).count();
    assert_eq!(tiers_skipped, 5, "no escalation to say them in: {:?}", step.effects);
    assert!(step.effects.iter().any(|e| matches!(e, Effect::Event { reason: "Skipped", .. })));
}

#[test]
fn rotation_hands_over_at_local_time_and_overrides_win() {
    let mut payments = team("payments", &[], None, &["dave", "bob"], None);
    // Shift 1 (dave) from Mon 2026-11-16 09:00 Berlin; shift 2 (bob) from Mon 11-23 09:00 Berlin (08:00 UTC).
    assert_eq!(people::on_call(&payments, t("2026-11-23T07:59:59Z")).as_deref(), Some("dave"));
    assert_eq!(people::on_call(&payments, t("2026-11-23T08:00:00Z")).as_deref(), Some("bob"));
    assert_eq!(people::on_call(&payments, t("2026-11-30T08:00:00Z")).as_deref(), Some("dave"));
    // Before the anchor, the rotation runs backwards consistently.
    assert_eq!(people::on_call(&payments, t("2026-11-10T12:00:00Z")).as_deref(), Some("bob"));
    // Across the DST change (Berlin leaves summer time on 2027-03-28... and enters it):
    // handoffs stay at 09:00 local, i.e. 07:00 UTC in summer.
    assert_eq!(
        people::on_call(&payments, t("2027-04-05T06:59:00Z")).as_deref(),
        people::on_call(&payments, t("2027-04-04T12:00:00Z")).as_deref()
    );
    assert_ne!(
        people::on_call(&payments, t("2027-04-05T07:00:00Z")),
        people::on_call(&payments, t("2027-04-05T06:59:00Z"))
    );
    payments.spec.on_call.as_mut().unwrap().overrides.push(OnCallOverride {
        user: "erin".into(),
        from: "2026-11-24T00:00:00Z".into(),
        until: "2026-11-25T00:00:00Z".into(),
    });
    assert_eq!(people::on_call(&payments, t("2026-11-24T12:00:00Z")).as_deref(), Some("erin"));
    assert_eq!(people::on_call(&payments, t("2026-11-25T00:00:00Z")).as_deref(), Some("bob"));
}

#[test]
fn dual_control_needs_two_distinct_eligible_approvers() {
    let mut sim = Sim::new(
        request(ActionClass::Routine, &[("engineering", "payments")]),
        policy_set("  approval: {high: 2, validFor: 30m}\n"),
    );
    sim.at(t0());
    sim.decide("bob", Verdict::Approve, t0());
    sim.decide("bob", Verdict::Approve, t0());
    sim.decide("alice", Verdict::Approve, t0()); // the requester never counts
    sim.decide("carol", Verdict::Approve, t0()); // not reached yet (lead is tier 3)
    sim.at(t0() + mins(1));
    assert_eq!(sim.status().phase, Phase::Pending);
    sim.at(t0() + mins(20)); // carol reached as lead: her earlier approval now counts
    assert_eq!(sim.status().phase, Phase::Approved);
    assert_eq!(sim.status().not_after, Some(Time(t0() + mins(50))));
}

#[test]
fn every_lane_must_approve_and_a_rejection_wins() {
    let mut sim = Sim::new(
        request(ActionClass::Routine, &[("engineering", "payments"), ("security", "security")]),
        policy_set(""),
    );
    sim.at(t0());
    sim.decide("bob", Verdict::Approve, t0());
    sim.at(t0() + mins(1));
    assert_eq!(sim.status().phase, Phase::Pending, "security has not approved");
    assert_eq!(sim.status().lanes[0].phase, Phase::Approved);
    sim.decide("erin", Verdict::Reject, t0() + mins(2));
    sim.at(t0() + mins(2));
    assert_eq!(sim.status().phase, Phase::Rejected);
    sim.decide("ivan", Verdict::Approve, t0() + mins(3));
    let later = sim.at(t0() + mins(3));
    assert_eq!(sim.status().phase, Phase::Rejected, "final");
    assert!(later.effects.is_empty());
}

#[test]
fn a_full_timeout_expires_with_a_runbook_and_tells_the_admins() {
    let mut sim = Sim::new(request(ActionClass::Routine, &[("engineering", "payments")]), policy_set(""));
    sim.at(t0());
    sim.at(t0() + mins(49));
    assert_eq!(sim.status().phase, Phase::Pending);
    let last = sim.at(t0() + mins(50));
    assert_eq!(sim.status().phase, Phase::Expired);
    assert_eq!(last.wake_at, None);
    let runbook = sim.status().runbook.clone().unwrap();
    assert!(runbook.contains("It was NOT applied"), "{runbook}");
    assert!(runbook.contains("kubectl delete persistentvolumeclaims -n prod ledger"), "{runbook}");
    assert!(runbook.contains("kubectl signoff reopen -n prod ar-1"), "{runbook}");
    let admins = last.effects.iter().find_map(|e| match e {
        Effect::Notify(n) if n.kind == NotifyKind::Expired => Some(n.clone()),
        _ => None,
    });
    let admins = admins.expect("admins notified");
    assert_eq!(admins.users, users(&["root"]));
    assert_eq!(admins.key, "uid-1/expired");
    // An approval after expiry changes nothing.
    sim.decide("bob", Verdict::Approve, t0() + mins(51));
    sim.at(t0() + mins(51));
    assert_eq!(sim.status().phase, Phase::Expired);
}

#[test]
fn a_huge_runbook_goes_to_a_config_map() {
    let mut ar = request(ActionClass::Routine, &[("engineering", "payments")]);
    ar.spec.action.operation = "CREATE".into();
    ar.spec.manifest = Some("data:\n".to_string() + &"  k: v\n".repeat(3000));
    let mut sim = Sim::new(ar, policy_set(""));
    sim.at(t0());
    let last = sim.at(t0() + mins(60));
    assert_eq!(sim.status().runbook_config_map.as_deref(), Some("ar-1-runbook"));
    assert!(last.effects.iter().any(|e| matches!(e, Effect::RunbookConfigMap { name, text } if name == "ar-1-runbook" && text.len() > RUNBOOK_STATUS_LIMIT)));
}

mod props {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Event {
        Wait(i64),
        Decide(usize, bool),
    }

    const PEOPLE: &[&str] =
        &["alice", "bob", "carol", "dave", "erin", "ivan", "root", "mallory", "system:serviceaccount:x:y"];

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (1i64..900).prop_map(Event::Wait),
            (0..PEOPLE.len(), any::<bool>()).prop_map(|(p, a)| Event::Decide(p, a))
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn invariants_hold(events in proptest::collection::vec(event(), 1..40), destructive in any::<bool>(), quorum in 1u32..3, two_lanes in any::<bool>()) {
            let class = if destructive { ActionClass::Destructive } else { ActionClass::Routine };
            let routes: &[(&str, &str)] = if two_lanes { &[("engineering", "payments"), ("security", "security")] } else { &[("engineering", "payments")] };
            let mut sim = Sim::new(request(class, routes), policy_set(&format!("  approval: {{high: {quorum}}}\n")));
            let mut now = t0();
            sim.at(now);
            for e in events {
                let before = sim.status().clone();
                match e {
                    Event::Wait(secs) => now += SignedDuration::from_secs(secs),
                    Event::Decide(p, approve) => sim.decide(PEOPLE[p], if approve { Verdict::Approve } else { Verdict::Reject }, now),
                }
                sim.at(now);
                let after = sim.status().clone();
                // Terminal phases are final.
                if before.phase != Phase::Pending {
                    prop_assert_eq!(before.phase, after.phase);
                }
                // Tiers only move forward.
                for (a, b) in before.lanes.iter().zip(&after.lanes) {
                    prop_assert!(b.tier >= a.tier, "tier went back: {} -> {}", a.tier, b.tier);
                }
                // Approved implies enough distinct, eligible, non-requester approvers in every lane.
                if after.phase == Phase::Approved && before.phase == Phase::Pending {
                    for lane in &after.lanes {
                        let mut approvers: Vec<&str> = after.decisions.iter()
                            .filter(|d| d.decision == Verdict::Approve && d.approver != "alice" && !d.approver.starts_with("system:serviceaccount:") && lane.eligible.contains(&d.approver))
                            .map(|d| d.approver.as_str()).collect();
                        approvers.sort();
                        approvers.dedup();
                        prop_assert!(approvers.len() as u32 >= quorum, "approved with {:?}", approvers);
                    }
                }
            }
            // A full timeout with no decisions left implies Expired.
            let end = now + SignedDuration::from_hours(6);
            sim.at(end);
            let final_phase = sim.status().phase;
            prop_assert!(final_phase != Phase::Pending, "still pending after every deadline passed");
            if !sim.status().decisions.iter().any(|d| d.approver != "alice" && !d.approver.starts_with("system:") && ["bob","carol","dave","erin","ivan","root"].contains(&d.approver.as_str())) {
                prop_assert_eq!(final_phase, Phase::Expired);
            }
        }
    }
}

fn reopen(sim: &mut Sim, attempt: u32) {
    sim.ar
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(REOPEN_ANNOTATION.into(), attempt.to_string());
}

#[test]
fn a_reopen_starts_a_new_attempt_and_old_decisions_no_longer_count() {
    let mut sim = Sim::new(request(ActionClass::Routine, &[("engineering", "payments")]), policy_set(""));
    sim.at(t0());
    sim.decide("bob", Verdict::Reject, t0() + mins(1));
    sim.at(t0() + mins(1));
    assert_eq!(sim.status().phase, Phase::Rejected);
    assert_eq!(sim.status().attempt, 1);
    // An annotation that is not ahead of the attempt changes nothing.
    reopen(&mut sim, 1);
    assert!(sim.at(t0() + mins(2)).effects.is_empty());
    assert_eq!(sim.status().phase, Phase::Rejected);

    reopen(&mut sim, 2);
    let step = sim.at(t0() + mins(5));
    let status = sim.status().clone();
    assert_eq!((status.phase, status.attempt), (Phase::Pending, 2));
    assert_eq!(status.lanes.len(), 1);
    assert_eq!(status.lanes[0].tier, 0, "escalation starts again at tier 1");
    assert_eq!(status.lanes[0].tier_started_at, Some(MicroTime(t0() + mins(5))));
    assert_eq!(status.decisions.len(), 1, "history is kept");
    assert!(status.not_after.is_none() && status.runbook.is_none());
    assert!(step.effects.iter().any(|e| matches!(e, Effect::Event { reason: "Reopened", .. })));
    let keys: Vec<String> = step
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Notify(n) => Some(n.key.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(keys, ["uid-1/attempt-2/engineering/0"], "new keys, not dropped as duplicates");
    // bob's rejection was in attempt 1: it does not count now; his approval in attempt 2 does.
    sim.at(t0() + mins(6));
    assert_eq!(sim.status().phase, Phase::Pending);
    sim.decide("bob", Verdict::Approve, t0() + mins(7));
    assert_eq!(sim.status().decisions[1].attempt, 2);
    sim.at(t0() + mins(7));
    assert_eq!(sim.status().phase, Phase::Approved);
    // Approved is not reopened, whatever the annotation says.
    reopen(&mut sim, 3);
    sim.at(t0() + mins(8));
    assert_eq!((sim.status().phase, sim.status().attempt), (Phase::Approved, 2));
}

#[test]
fn an_expired_request_reopens_without_its_runbook() {
    let mut sim = Sim::new(request(ActionClass::Routine, &[("engineering", "payments")]), policy_set(""));
    sim.at(t0());
    sim.at(t0() + mins(50));
    assert_eq!(sim.status().phase, Phase::Expired);
    assert!(sim.status().runbook.is_some());
    reopen(&mut sim, 2);
    let step = sim.at(t0() + mins(60));
    assert_eq!((sim.status().phase, sim.status().attempt), (Phase::Pending, 2));
    assert!(sim.status().runbook.is_none() && sim.status().runbook_config_map.is_none());
    assert_eq!(step.wake_at, sim.status().lanes[0].tier_deadline.as_ref().map(|t| t.0));
    // Expiring again tells the admins under a new key.
    let last = sim.at(t0() + mins(110));
    assert_eq!(sim.status().phase, Phase::Expired);
    assert!(last.effects.iter().any(|e| matches!(e, Effect::Notify(n) if n.key == "uid-1/attempt-2/expired")));
}

/// A request marked superseded (a newer change to the same object by the same
/// requester) stops escalating, and everyone it notified is told once.
#[test]
fn a_superseded_request_stops_and_tells_who_it_notified() {
    let mut sim = Sim::new(request(ActionClass::Routine, &[("engineering", "payments")]), policy_set(""));
    let first = sim.at(t0());
    let paged = first
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Notify(n) if n.kind == NotifyKind::Escalation => Some(n.clone()),
            _ => None,
        })
        .expect("tier 1 notified");
    // What the reconciler records for those deliveries.
    let status = sim.ar.status.as_mut().unwrap();
    for user in &paged.users {
        status.notifications.push(Notification {
            key: format!("{}/user/{user}", paged.key),
            route: paged.route.clone(),
            tier: paged.tier,
            recipient: format!("user/{user}"),
            sink: "Webhook".into(),
            attempts: 1,
            result: "Delivered".into(),
            message: None,
            at: Time(t0()),
        });
    }
    sim.ar.metadata.annotations = Some([(SUPERSEDED_ANNOTATION.to_string(), "ar-newer".to_string())].into());
    let step = sim.at(t0() + mins(1));
    assert_eq!(sim.status().phase, Phase::Superseded);
    assert_eq!(step.wake_at, None, "no more tiers");
    let told: Vec<&Notify> = step
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Notify(n) => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(told.len(), 1, "{:?}", step.effects);
    assert_eq!((told[0].kind, &told[0].users), (NotifyKind::Superseded, &paged.users));
    assert_eq!(told[0].key, "uid-1/superseded/engineering");
    assert!(step.effects.iter().any(|e| matches!(e, Effect::Event { reason: "Superseded", .. })));
    // Terminal: later steps do nothing, even at what was the next tier's deadline.
    assert!(sim.at(t0() + mins(30)).effects.is_empty());
    assert_eq!(sim.status().phase, Phase::Superseded);
}

/// What the reconciler records for a Notify's deliveries: one record per
/// recipient on `sink`.
fn record(sim: &mut Sim, n: &Notify, sink: &str, at: Timestamp) {
    let status = sim.ar.status.as_mut().unwrap();
    let recipients = n.users.iter().map(|u| format!("user/{u}")).chain(n.teams.iter().map(|t| format!("team/{t}")));
    for recipient in recipients {
        status.notifications.push(Notification {
            key: format!("{}/{recipient}", n.key),
            route: n.route.clone(),
            tier: n.tier,
            recipient,
            sink: sink.into(),
            attempts: 1,
            result: "Delivered".into(),
            message: None,
            at: Time(at),
        });
    }
}

fn notifies(step: &Step) -> Vec<Notify> {
    step.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Notify(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

/// Issue 18: once decided, the requester and everyone the pages reached are
/// told, exactly once per attempt; the PagerDuty pages are named for resolving.
#[test]
fn a_decision_tells_the_requester_and_everyone_paged_once_per_attempt() {
    let mut sim = Sim::new(request(ActionClass::Routine, &[("engineering", "payments")]), policy_set(""));
    let first = sim.at(t0());
    let page = notifies(&first).into_iter().find(|n| n.kind == NotifyKind::Escalation).expect("tier 1");
    record(&mut sim, &page, "PagerDuty", t0());
    sim.decide("bob", Verdict::Approve, t0() + mins(1));
    let decided = sim.at(t0() + mins(1));
    assert_eq!(sim.status().phase, Phase::Approved);
    let told = notifies(&decided);
    assert_eq!(told.len(), 2, "the requester, then the lane: {told:?}");
    assert_eq!(told[0].kind, NotifyKind::Outcome(Phase::Approved));
    assert_eq!(
        (told[0].key.as_str(), told[0].users.as_slice()),
        ("uid-1/outcome/requester", &["alice".to_string()][..])
    );
    assert!(told[0].route.is_empty(), "the requester's notice names no lane (no route contacts twice)");
    assert_eq!(told[1].key, "uid-1/outcome/engineering");
    let others: Vec<String> = page.users.iter().filter(|u| *u != "alice").cloned().collect();
    assert!(others.contains(&"bob".to_string()), "{page:?}");
    assert_eq!(told[1].users, others, "everyone tier 1 paged but the requester, who has her own notice");
    assert_eq!(told[1].teams, page.teams);
    let expected: Vec<(String, String)> = page
        .users
        .iter()
        .map(|u| format!("user/{u}"))
        .chain(page.teams.iter().map(|t| format!("team/{t}")))
        .map(|r| (r.clone(), format!("{}/{r}", page.key)))
        .collect();
    assert_eq!(told[1].pages, expected, "the PagerDuty pages to resolve");
    assert!(notifies(&sim.at(t0() + mins(2))).is_empty(), "told once: later steps send nothing");
}

#[test]
fn a_rejection_and_an_expiry_are_told_too_and_a_reopen_tells_afresh() {
    let mut sim = Sim::new(request(ActionClass::Routine, &[("engineering", "payments")]), policy_set(""));
    let first = sim.at(t0());
    let page = notifies(&first).into_iter().find(|n| n.kind == NotifyKind::Escalation).unwrap();
    record(&mut sim, &page, "Webhook", t0());
    sim.decide("bob", Verdict::Reject, t0() + mins(1));
    let rejected = notifies(&sim.at(t0() + mins(1)));
    assert!(rejected.iter().all(|n| n.kind == NotifyKind::Outcome(Phase::Rejected)) && rejected.len() == 2);
    assert!(rejected[1].pages.is_empty(), "no PagerDuty page was sent, none to resolve");

    reopen(&mut sim, 2);
    sim.at(t0() + mins(2));
    // Attempt 2 expires: its outcome is told under the attempt's keys; the
    // admins get their expiry page besides.
    let expired = notifies(&sim.at(t0() + mins(200)));
    assert_eq!(sim.status().phase, Phase::Expired);
    let outcome: Vec<&Notify> = expired.iter().filter(|n| n.kind == NotifyKind::Outcome(Phase::Expired)).collect();
    assert_eq!(outcome[0].key, "uid-1/attempt-2/outcome/requester");
    assert!(outcome.iter().all(|n| n.key.starts_with("uid-1/attempt-2/")), "{outcome:?}");
    assert!(expired.iter().any(|n| n.kind == NotifyKind::Expired), "the admins' page");
}

/// Issue 18: an approved change with a GitOps owner that asked for it is
/// handed back once; a plain one never.
#[test]
fn an_approved_gitops_change_is_handed_back_once() {
    let owner = GitOpsOwner {
        tool: GitOpsTool::Flux,
        kind: "Kustomization".into(),
        namespace: "flux-system".into(),
        name: "shop".into(),
        hand_back: true,
    };
    for (gitops, expected) in
        [(Some(owner.clone()), 1), (Some(GitOpsOwner { hand_back: false, ..owner.clone() }), 0), (None, 0)]
    {
        let mut ar = request(ActionClass::Routine, &[("engineering", "payments")]);
        ar.spec.gitops = gitops;
        let mut sim = Sim::new(ar, policy_set(""));
        let page = notifies(&sim.at(t0())).into_iter().find(|n| n.kind == NotifyKind::Escalation).unwrap();
        assert!(page.users.contains(&"bob".to_string()));
        sim.decide("bob", Verdict::Approve, t0() + mins(1));
        let decided = sim.at(t0() + mins(1));
        assert!(!decided.effects.iter().any(|e| matches!(e, Effect::HandBack { .. })), "not before Approved is stored");
        let at_once = (expected == 1).then_some(t0() + mins(1));
        assert_eq!(decided.wake_at, at_once, "the next step at once, when there is a hand-back to do");
        let step = sim.at(t0() + mins(1));
        let handed: Vec<&Effect> = step.effects.iter().filter(|e| matches!(e, Effect::HandBack { .. })).collect();
        assert_eq!(handed.len(), expected, "{:?}", sim.ar.spec.gitops);
        if expected == 1 {
            assert!(matches!(handed[0], Effect::HandBack { attempt: 1, .. }));
            // A failure is retried after its backoff; a success ends it.
            let status = sim.ar.status.as_mut().unwrap();
            status.hand_back = Some(crate::gitops::hand_back_record(1, 1, Err("refused".into()), t0() + mins(1)));
            let waiting = sim.at(t0() + mins(1));
            assert_eq!(waiting.wake_at, Some(t0() + mins(1) + SignedDuration::from_secs(1)));
            assert!(!waiting.effects.iter().any(|e| matches!(e, Effect::HandBack { .. })));
            let retry = sim.at(t0() + mins(1) + SignedDuration::from_secs(1));
            assert!(retry.effects.iter().any(|e| matches!(e, Effect::HandBack { attempt: 2, .. })));
            let status = sim.ar.status.as_mut().unwrap();
            status.hand_back = Some(crate::gitops::hand_back_record(2, 1, Ok("requested".into()), t0() + mins(2)));
            assert!(sim.at(t0() + mins(3)).effects.is_empty(), "done once");
        }
    }
}

/// Issue 21: standard conditions, as `kubectl wait --for=condition=Approved`
/// and kstatus read them; a condition that does not change keeps its time.
#[test]
fn conditions_follow_the_phase_and_keep_their_transition_time() {
    let mut sim = Sim::new(request(ActionClass::Routine, &[("engineering", "payments")]), policy_set(""));
    sim.at(t0());
    let get = |sim: &Sim, t: &str| sim.status().conditions.iter().find(|c| c.type_ == t).cloned();
    assert_eq!(get(&sim, "Approved").unwrap().status, "False");
    assert_eq!(get(&sim, "Ready").unwrap().reason, "Pending");
    assert_eq!(get(&sim, "Reconciling").unwrap().status, "True", "kstatus: in progress");
    assert!(get(&sim, "Stalled").is_none());
    let pending_since = get(&sim, "Approved").unwrap().last_transition_time;
    sim.at(t0() + mins(1));
    assert_eq!(get(&sim, "Approved").unwrap().last_transition_time, pending_since, "unchanged: same time");
    sim.decide("bob", Verdict::Approve, t0() + mins(2));
    sim.at(t0() + mins(2));
    let approved = get(&sim, "Approved").unwrap();
    assert_eq!((approved.status.as_str(), approved.reason.as_str()), ("True", "Approved"));
    assert_eq!(approved.last_transition_time, Time(t0() + mins(2)));
    assert!(approved.message.contains("admitted once until"), "{}", approved.message);
    assert_eq!(get(&sim, "Ready").unwrap().status, "True");
    assert!(get(&sim, "Reconciling").is_none(), "done");

    let mut sim = Sim::new(request(ActionClass::Routine, &[("engineering", "payments")]), policy_set(""));
    sim.at(t0());
    sim.decide("bob", Verdict::Reject, t0() + mins(1));
    sim.at(t0() + mins(1));
    let stalled = get(&sim, "Stalled").unwrap();
    assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", "Rejected"), "kstatus: failed");
    assert_eq!(get(&sim, "Ready").unwrap().status, "False");
}
