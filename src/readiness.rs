//! What signoff writes into the status of an EscalationPolicy, a Team and an
//! Approver: `Ready` with what to fix, and what a reader needs at a glance (who
//! is on call until when; whether a person is paged now). Pure: every function
//! takes `now`; `runtime::status` writes the results.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{
    Approver, ApproverStatus, Availability, EscalationPolicy, EscalationPolicyStatus, Team, TeamStatus, TierKind,
};
use crate::escalation::people;

/// One condition as wanted: type, true or false, reason (CamelCase), message.
pub struct Wanted<'a> {
    pub type_: &'a str,
    pub status: bool,
    pub reason: &'a str,
    pub message: String,
}

/// The conditions `wanted` describes, keeping the lastTransitionTime of every
/// condition whose status did not change (Kubernetes API conventions).
pub fn conditions(old: &[Condition], wanted: Vec<Wanted>, generation: Option<i64>, now: Timestamp) -> Vec<Condition> {
    let floor = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    wanted
        .into_iter()
        .map(|w| {
            let status = if w.status { "True" } else { "False" }.to_string();
            let since = old
                .iter()
                .find(|c| c.type_ == w.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| floor.clone());
            Condition {
                type_: w.type_.to_string(),
                status,
                reason: w.reason.to_string(),
                message: w.message,
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect()
}

fn ready(
    old: &[Condition],
    problem: Option<(&str, String)>,
    ok: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let wanted = match problem {
        Some((reason, message)) => Wanted { type_: "Ready", status: false, reason, message },
        None => Wanted { type_: "Ready", status: true, reason: "Ready", message: ok },
    };
    conditions(old, vec![wanted], generation, now)
}

/// A policy's status. `errors` are what the gate found wrong with it (CEL that
/// does not compile, a cost estimate over budget, a route a rule names that
/// does not exist), in the words of the webhook's refusal.
pub fn policy(policy: &EscalationPolicy, errors: &[String], teams: &[Team], now: Timestamp) -> EscalationPolicyStatus {
    let old = policy.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let generation = policy.metadata.generation;
    let spec = &policy.spec;
    let problem = if let Some(e) = errors.first() {
        let more = if errors.len() > 1 { format!(" (and {} more)", errors.len() - 1) } else { String::new() };
        Some((
            "InvalidPolicy",
            format!("{e}{more}; changes it matches are held until it is fixed (kubectl signoff check explains)"),
        ))
    } else {
        // Teams a route reaches by name. Engineering's is the namespace's owner,
        // known only per change; another built-in route defaults to the team
        // named after it.
        let admin = spec.admin_team_or_default();
        let mut named: Vec<(String, String)> = vec![(admin, "spec.adminTeam".into())];
        let routes = spec.rules.iter().map(|r| r.route.as_str()).chain(spec.routes.iter().map(|r| r.name.as_str()));
        let mut seen = Vec::new();
        for route in routes {
            if seen.contains(&route) {
                continue;
            }
            seen.push(route);
            let listed = spec.routes.iter().find(|r| r.name == route);
            let tiers =
                listed.map(|r| r.tiers.clone()).filter(|t| !t.is_empty()).unwrap_or_else(crate::crd::default_chain);
            let uses_route_team =
                tiers.iter().any(|t| t.team.is_none() && !matches!(t.kind, TierKind::Admins | TierKind::People));
            match spec.route_team(route) {
                Some(team) => named.push((team, format!("route {route}"))),
                None if route != "engineering" && uses_route_team => named.push((
                    route.to_string(),
                    format!("route {route} (without spec.routes[].team, the team named after it)"),
                )),
                None => {}
            }
            for (i, tier) in tiers.iter().enumerate() {
                if let Some(team) = &tier.team {
                    named.push((team.clone(), format!("route {route} tier {}", i + 1)));
                }
            }
        }
        named.into_iter().find(|(team, _)| people::find(teams, team).is_none()).map(|(team, at)| {
            (
                "MissingTeam",
                format!("{at} names Team {team:?}, which does not exist: its tier reaches nobody and is skipped"),
            )
        })
    };
    let ok = match spec.mode {
        crate::crd::PolicyMode::Enforce => "enforcing: matching risky changes are held".to_string(),
        crate::crd::PolicyMode::Audit => "auditing: matching risky changes are recorded, not held".to_string(),
    };
    EscalationPolicyStatus { observed_generation: generation, conditions: ready(old, problem, ok, generation, now) }
}

/// A team's status: who is on call until when, and whether it can be reached.
pub fn team(team: &Team, teams: &[Team], now: Timestamp) -> TeamStatus {
    let old = team.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let generation = team.metadata.generation;
    let spec = &team.spec;
    let shift = people::on_call_shift(team, now);
    let problem = if let Some(rotation) = spec.on_call.as_ref() {
        let bad_zone = TimeZone::get(&rotation.time_zone).is_err();
        if bad_zone {
            Some(("UnknownTimeZone", format!("spec.onCall.timeZone {:?} is not an IANA time zone", rotation.time_zone)))
        } else if shift.as_ref().is_none_or(|s| s.until.is_none()) && !rotation.rotation.is_empty() {
            Some((
                "InvalidRotation",
                format!(
                    "spec.onCall: shiftLength {:?} with handoff {:?} does not give a shift: the OnCall tier reaches nobody",
                    rotation.shift_length, rotation.handoff
                ),
            ))
        } else {
            None
        }
    } else {
        None
    }
    .or_else(|| {
        let nobody = spec.members.users.is_empty() && spec.members.groups.is_empty();
        nobody.then(|| ("NoMembers", "spec.members lists no users or groups: the Team tier reaches nobody".to_string()))
    })
    .or_else(|| {
        let secondary = spec.secondary_team.as_deref().filter(|s| people::find(teams, s).is_none())?;
        Some(("MissingTeam", format!("spec.secondaryTeam names Team {secondary:?}, which does not exist")))
    });
    let ok = match &shift {
        Some(s) => format!("{} is on call", s.user),
        None => "reachable (no on-call rotation)".to_string(),
    };
    TeamStatus {
        observed_generation: generation,
        on_call: shift.as_ref().map(|s| s.user.clone()),
        on_call_until: shift.and_then(|s| s.until).map(Time),
        conditions: ready(old, problem, ok, generation, now),
    }
}

/// An approver's status: paged now, or in quiet hours or away until when.
pub fn approver(approver: &Approver, now: Timestamp) -> ApproverStatus {
    let old = approver.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let generation = approver.metadata.generation;
    let away = people::unavailable(&approver.spec.user, std::slice::from_ref(approver), now);
    let zone = &approver.spec.time_zone;
    let problem = TimeZone::get(zone).is_err().then(|| {
        ("UnknownTimeZone", format!("spec.timeZone {zone:?} is not an IANA time zone: quiet hours are read in UTC"))
    });
    ApproverStatus {
        observed_generation: generation,
        availability: away.as_ref().map_or(Availability::Available, |a| a.availability),
        until: away.as_ref().and_then(|a| a.until).map(Time),
        message: away.as_ref().map(|a| format!("{} ({})", a.reason, a.setting)),
        conditions: ready(old, problem, "settings read".to_string(), generation, now),
    }
}

/// When any of these statuses changes by itself next (a shift hands over,
/// quiet hours end): the writer looks again then.
pub fn next_change<'a>(
    teams: impl IntoIterator<Item = &'a TeamStatus>,
    approvers: impl IntoIterator<Item = &'a ApproverStatus>,
) -> Option<Timestamp> {
    let t = teams.into_iter().filter_map(|s| s.on_call_until.as_ref().map(|t| t.0));
    let a = approvers.into_iter().filter_map(|s| s.until.as_ref().map(|t| t.0));
    t.chain(a).min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AwayPeriod, AwayReason, OnCallOverride, QuietHours};
    use crate::fixtures::{t, team as make_team, teams};

    fn ready(conditions: &[Condition]) -> (&str, &str, &str) {
        let c = conditions.iter().find(|c| c.type_ == "Ready").expect("a Ready condition");
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    fn policy_of(yaml: &str) -> EscalationPolicy {
        serde_yaml::from_str(&format!(
            "apiVersion: signoff.dev/v1alpha1\nkind: EscalationPolicy\nmetadata: {{name: p, generation: 3}}\nspec:\n  match: {{rules: []}}\n{yaml}"
        ))
        .unwrap()
    }

    #[test]
    fn a_policy_is_ready_when_it_compiles_and_its_teams_exist() {
        let p = policy_of(
            "  rules: [{name: r, expression: 'true', risk: High, route: security}]\n  adminTeam: platform-admins",
        );
        let status = policy(&p, &[], &teams(), t("2026-11-20T10:00:00Z"));
        assert_eq!(ready(&status.conditions), ("True", "Ready", "enforcing: matching risky changes are held"));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.conditions[0].observed_generation, Some(3));
    }

    #[test]
    fn a_policy_with_an_error_or_a_missing_team_says_what_to_fix() {
        let p = policy_of(
            "  rules: [{name: r, expression: 'true', risk: High, route: finance}]\n  adminTeam: platform-admins",
        );
        let now = t("2026-11-20T10:00:00Z");
        let status = policy(&p, &["EscalationPolicy \"p\", rule \"r\": undeclared reference".into()], &teams(), now);
        let (s, reason, message) = ready(&status.conditions);
        assert_eq!((s, reason), ("False", "InvalidPolicy"));
        assert!(
            message
                .starts_with("EscalationPolicy \"p\", rule \"r\": undeclared reference; changes it matches are held"),
            "{message}"
        );
        // Compiles, but the finance route's team (named after it) does not exist.
        let missing = policy(&p, &[], &teams(), now);
        let (s, reason, message) = ready(&missing.conditions);
        assert_eq!((s, reason), ("False", "MissingTeam"));
        assert!(message.contains("route finance") && message.contains("Team \"finance\""), "{message}");
        // A route whose tiers only name people needs no team.
        let people = policy_of(
            "  rules: [{name: r, expression: 'true', risk: High, route: finance}]\n  adminTeam: platform-admins\n  routes: [{name: finance, tiers: [{kind: People, users: [fay]}]}]",
        );
        assert_eq!(ready(&policy(&people, &[], &teams(), now).conditions).0, "True");
    }

    #[test]
    fn an_empty_route_team_is_unset_as_escalation_reads_it() {
        // `team: ""` on security: escalation routes to the team named security
        // (webhook::packet::tier_one_team), which exists; so the policy is ready.
        let p = policy_of(
            "  rules: [{name: r, expression: 'true', risk: High, route: security}]\n  adminTeam: platform-admins\n  routes: [{name: security, team: \"\"}]",
        );
        let status = policy(&p, &[], &teams(), t("2026-11-20T10:00:00Z"));
        assert_eq!(ready(&status.conditions).0, "True", "{:?}", status.conditions);
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let p = policy_of(
            "  rules: [{name: r, expression: 'true', risk: High, route: security}]\n  adminTeam: platform-admins",
        );
        let mut p = p;
        let first = policy(&p, &[], &teams(), t("2026-11-20T10:00:00.7Z"));
        assert_eq!(first.conditions[0].last_transition_time.0, t("2026-11-20T10:00:00Z"));
        p.status = Some(first.clone());
        let again = policy(&p, &[], &teams(), t("2026-11-20T11:00:00Z"));
        assert_eq!(again, first, "nothing changed: the same status, so nothing is written");
        let broken = policy(&p, &["bad".into()], &teams(), t("2026-11-20T12:00:00Z"));
        assert_eq!(broken.conditions[0].last_transition_time.0, t("2026-11-20T12:00:00Z"));
    }

    #[test]
    fn a_team_shows_who_is_on_call_until_the_handover_or_an_override() {
        // payments: weekly shifts from Mon 2026-11-16 09:00 Berlin, dave then bob.
        let mut payments = teams().remove(0);
        let status = team(&payments, &teams(), t("2026-11-20T10:00:00Z"));
        assert_eq!(status.on_call.as_deref(), Some("dave"));
        assert_eq!(status.on_call_until, Some(Time(t("2026-11-23T08:00:00Z"))));
        assert_eq!(ready(&status.conditions), ("True", "Ready", "dave is on call"));
        // An override that starts earlier ends dave's shift there, then runs to its own end.
        payments.spec.on_call.as_mut().unwrap().overrides.push(OnCallOverride {
            user: "erin".into(),
            from: "2026-11-21T00:00:00Z".into(),
            until: "2026-11-22T00:00:00Z".into(),
        });
        assert_eq!(
            team(&payments, &teams(), t("2026-11-20T10:00:00Z")).on_call_until,
            Some(Time(t("2026-11-21T00:00:00Z")))
        );
        let during = team(&payments, &teams(), t("2026-11-21T06:00:00Z"));
        assert_eq!(
            (during.on_call.as_deref(), during.on_call_until),
            (Some("erin"), Some(Time(t("2026-11-22T00:00:00Z"))))
        );
    }

    #[test]
    fn a_team_that_reaches_nobody_is_not_ready() {
        let now = t("2026-11-20T10:00:00Z");
        let empty = make_team("ghosts", &[], Some("gil"), &[], None);
        assert_eq!(ready(&team(&empty, &teams(), now).conditions).1, "NoMembers");
        let orphan = make_team("night", &["nina"], None, &[], Some("nowhere"));
        let status = team(&orphan, &teams(), now);
        assert_eq!(ready(&status.conditions).1, "MissingTeam");
        assert!(ready(&status.conditions).2.contains("\"nowhere\""));
        let mut bad = make_team("bad", &["bo"], None, &["bo"], None);
        bad.spec.on_call.as_mut().unwrap().time_zone = "Mars/Olympus".into();
        assert_eq!(ready(&team(&bad, &teams(), now).conditions).1, "UnknownTimeZone");
    }

    fn approver_of(tz: &str, quiet: Vec<QuietHours>, away: Vec<AwayPeriod>) -> Approver {
        Approver::new(
            "dave",
            crate::crd::ApproverSpec {
                user: "dave".into(),
                time_zone: tz.into(),
                quiet_hours: quiet,
                away,
                contacts: vec![],
            },
        )
    }

    #[test]
    fn an_approver_is_available_in_quiet_hours_or_away_until_when() {
        let night = QuietHours { days: vec![], start: "22:00".into(), end: "07:00".into() };
        let a = approver_of("Europe/Berlin", vec![night], vec![]);
        let day = approver(&a, t("2026-11-20T10:00:00Z"));
        assert_eq!((day.availability, day.until.clone()), (Availability::Available, None));
        assert_eq!(ready(&day.conditions).0, "True");
        // 23:30 Berlin on Friday: quiet until Saturday 07:00 Berlin (06:00 UTC).
        let late = approver(&a, t("2026-11-20T22:30:00Z"));
        assert_eq!(late.availability, Availability::QuietHours);
        assert_eq!(late.until, Some(Time(t("2026-11-21T06:00:00Z"))));
        assert!(late.message.as_deref().unwrap().contains("Approver/dave spec.quietHours[0]"));
        // 05:00 Berlin on Saturday: the same window, ending the same morning.
        assert_eq!(approver(&a, t("2026-11-21T04:00:00Z")).until, Some(Time(t("2026-11-21T06:00:00Z"))));
        let away = AwayPeriod {
            from: "2026-11-20T00:00:00Z".into(),
            until: "2026-11-27T00:00:00Z".into(),
            reason: AwayReason::Vacation,
            note: None,
        };
        let gone = approver(&approver_of("UTC", vec![], vec![away]), t("2026-11-20T10:00:00Z"));
        assert_eq!((gone.availability, gone.until), (Availability::Away, Some(Time(t("2026-11-27T00:00:00Z")))));
        let typo = approver(&approver_of("Europe/Berln", vec![], vec![]), t("2026-11-20T10:00:00Z"));
        assert_eq!(ready(&typo.conditions).1, "UnknownTimeZone");
    }

    #[test]
    fn the_writer_looks_again_at_the_next_handover() {
        let payments = teams().remove(0);
        let now = t("2026-11-20T10:00:00Z");
        let a =
            approver_of("UTC", vec![QuietHours { days: vec![], start: "09:00".into(), end: "12:00".into() }], vec![]);
        let (ts, ap) = (team(&payments, &teams(), now), approver(&a, now));
        assert_eq!(next_change([&ts], [&ap]), Some(t("2026-11-20T12:00:00Z")));
        assert_eq!(next_change([&ts], []), Some(t("2026-11-23T08:00:00Z")));
    }
}
