//! Who a tier reaches, and who of them is available right now. Pure: every
//! function takes `now`.

use jiff::civil::{DateTime, Time as CivilTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

use crate::crd::{Approver, Team, TierKind, TierSpec, Weekday};

/// The people a tier reaches: named users (who can be skipped) and groups (who
/// cannot be enumerated, so they are eligible but notified through team contacts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reached {
    pub users: Vec<String>,
    pub groups: Vec<String>,
    /// Team whose contacts are notified for this tier, if any.
    pub team: Option<String>,
}

/// The Team named `name`.
pub(crate) fn find<'a>(teams: &'a [Team], name: &str) -> Option<&'a Team> {
    teams.iter().find(|t| t.metadata.name.as_deref() == Some(name))
}

fn time_zone(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap_or(TimeZone::UTC)
}

/// The user on call for `team` at `now`: an override covering `now`, else the
/// rotation member whose shift contains `now`. Shifts that are whole days hand
/// over at the same local wall-clock time, across DST changes.
pub fn on_call(team: &Team, now: Timestamp) -> Option<String> {
    on_call_shift(team, now).map(|shift| shift.user)
}

/// Who is on call and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shift {
    pub user: String,
    /// The end of the override or shift, or the start of an override that
    /// interrupts it; None when it cannot be computed (a rotation that does not
    /// parse).
    pub until: Option<Timestamp>,
}

/// [`on_call`] with the end of the current shift (see [`Shift::until`]).
pub fn on_call_shift(team: &Team, now: Timestamp) -> Option<Shift> {
    let rotation = team.spec.on_call.as_ref()?;
    let overrides: Vec<(Timestamp, Timestamp, &str)> = rotation
        .overrides
        .iter()
        .filter_map(|o| Some((o.from.parse().ok()?, o.until.parse().ok()?, o.user.as_str())))
        .collect();
    if let Some((_, until, user)) = overrides.iter().find(|(from, until, _)| *from <= now && now < *until) {
        return Some(Shift { user: user.to_string(), until: Some(*until) });
    }
    if rotation.rotation.is_empty() {
        return None;
    }
    let tz = time_zone(&rotation.time_zone);
    let shift = crate::duration::parse(&rotation.shift_length).ok().filter(|d| *d > SignedDuration::ZERO)?;
    let anchor: DateTime = rotation.handoff.parse().ok()?;
    let anchor = anchor.to_zoned(tz).ok()?;
    let whole_days = shift.as_secs() % 86_400 == 0 && shift.subsec_nanos() == 0;
    let start_of = |k: i64| -> Option<Timestamp> {
        if whole_days {
            let days = k.checked_mul(shift.as_secs() / 86_400)?;
            Some(anchor.checked_add(days.days()).ok()?.timestamp())
        } else {
            anchor.timestamp().checked_add(shift.checked_mul(i32::try_from(k).ok()?)?).ok()
        }
    };
    // Estimate the shift from elapsed time, then correct for DST by stepping.
    let elapsed = now.duration_since(anchor.timestamp());
    let mut k = elapsed.as_secs().div_euclid(shift.as_secs().max(1));
    while start_of(k + 1).is_some_and(|t| t <= now) {
        k += 1;
    }
    while start_of(k).is_some_and(|t| t > now) {
        k -= 1;
    }
    let n = rotation.rotation.len() as i64;
    let next_override = overrides.iter().map(|(from, _, _)| *from).filter(|from| *from > now).min();
    let until = match (start_of(k + 1), next_override) {
        (Some(end), Some(o)) => Some(end.min(o)),
        (end, o) => end.or(o),
    };
    Some(Shift { user: rotation.rotation[k.rem_euclid(n) as usize].clone(), until })
}

/// Resolve one tier of a chain whose team is `team` (tier-1 team of the route).
pub fn resolve(tier: &TierSpec, team: Option<&str>, admin_team: &str, teams: &[Team], now: Timestamp) -> Reached {
    let team_name = tier.team.as_deref().or(team);
    let team = team_name.and_then(|n| find(teams, n));
    match tier.kind {
        TierKind::Team => team
            .map(|t| Reached {
                users: t.spec.members.users.clone(),
                groups: t.spec.members.groups.clone(),
                team: t.metadata.name.clone(),
            })
            .unwrap_or_default(),
        TierKind::OnCall => team
            .and_then(|t| {
                on_call(t, now).map(|u| Reached { users: vec![u], groups: vec![], team: t.metadata.name.clone() })
            })
            .unwrap_or_default(),
        TierKind::Lead => team
            .and_then(|t| t.spec.lead.clone().map(|u| Reached { users: vec![u], groups: vec![], team: None }))
            .unwrap_or_default(),
        TierKind::Secondary => {
            let secondary = team.and_then(|t| t.spec.secondary_team.as_deref()).and_then(|n| find(teams, n));
            secondary
                .and_then(|s| {
                    let user = on_call(s, now).or_else(|| s.spec.lead.clone())?;
                    Some(Reached { users: vec![user], groups: vec![], team: s.metadata.name.clone() })
                })
                .unwrap_or_default()
        }
        TierKind::Admins => find(teams, admin_team)
            .map(|t| Reached {
                users: t.spec.members.users.clone(),
                groups: t.spec.members.groups.clone(),
                team: t.metadata.name.clone(),
            })
            .unwrap_or_default(),
        TierKind::People => Reached { users: tier.users.clone(), groups: tier.groups.clone(), team: None },
    }
}

/// Why someone cannot be reached now, and the setting that says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable {
    pub reason: String,
    pub setting: String,
    /// Away or in quiet hours.
    pub availability: crate::crd::Availability,
    /// When the away period or the quiet-hours window ends.
    pub until: Option<Timestamp>,
}

fn weekday(d: jiff::civil::Weekday) -> Weekday {
    use jiff::civil::Weekday as W;
    match d {
        W::Monday => Weekday::Mon,
        W::Tuesday => Weekday::Tue,
        W::Wednesday => Weekday::Wed,
        W::Thursday => Weekday::Thu,
        W::Friday => Weekday::Fri,
        W::Saturday => Weekday::Sat,
        W::Sunday => Weekday::Sun,
    }
}

/// Whether `user` is away or in quiet hours at `now`, per their Approver.
pub fn unavailable(user: &str, approvers: &[Approver], now: Timestamp) -> Option<Unavailable> {
    let approver = approvers.iter().find(|a| a.spec.user == user)?;
    let object = approver.metadata.name.as_deref().unwrap_or(user);
    for (i, away) in approver.spec.away.iter().enumerate() {
        if let (Ok(from), Ok(until)) = (away.from.parse::<Timestamp>(), away.until.parse::<Timestamp>())
            && from <= now
            && now < until
        {
            return Some(Unavailable {
                reason: format!("away ({:?}) until {until}", away.reason),
                setting: format!("Approver/{object} spec.away[{i}]"),
                availability: crate::crd::Availability::Away,
                until: Some(until),
            });
        }
    }
    let tz = time_zone(&approver.spec.time_zone);
    let local = now.to_zoned(tz.clone());
    let (today, yesterday) = (weekday(local.weekday()), weekday(local.weekday().previous()));
    let time = local.time();
    for (i, window) in approver.spec.quiet_hours.iter().enumerate() {
        let (Ok(start), Ok(end)) = (window.start.parse::<CivilTime>(), window.end.parse::<CivilTime>()) else {
            continue;
        };
        let on = |d: Weekday| window.days.is_empty() || window.days.contains(&d);
        let inside = if start <= end {
            on(today) && start <= time && time < end
        } else {
            // Crosses midnight: the evening part belongs to today, the morning part to yesterday's window.
            (on(today) && time >= start) || (on(yesterday) && time < end)
        };
        if inside {
            // The window ends today at `end`, or tomorrow when it crosses
            // midnight and started this evening.
            let end_day = if start > end && time >= start { local.date().tomorrow().ok() } else { Some(local.date()) };
            let until = end_day.and_then(|d| d.to_datetime(end).to_zoned(tz.clone()).ok()).map(|z| z.timestamp());
            return Some(Unavailable {
                reason: format!("quiet hours {}-{} {}", window.start, window.end, approver.spec.time_zone),
                setting: format!("Approver/{object} spec.quietHours[{i}]"),
                availability: crate::crd::Availability::QuietHours,
                until,
            });
        }
    }
    None
}
