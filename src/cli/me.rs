//! `kubectl signoff away|quiet-hours`: edit the caller's own Approver. It is named
//! after the user (sanitized to a DNS name) and created when missing; the webhook
//! lets only that person or an admin write it.

use jiff::Timestamp;
use kube::api::{Api, PostParams};

use super::decide::{one_line, whoami};
use crate::crd::{Approver, ApproverSpec, AwayPeriod, AwayReason, QuietHours, Weekday};

/// A command with no arguments of its own (kubectl's flags are global).
#[derive(clap::Args)]
pub struct KubeOnly {}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Reason {
    Vacation,
    Leave,
    Conference,
    Other,
}

#[derive(clap::Args)]
pub struct AwayArgs {
    /// Start (default: now).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// End.
    #[arg(long, value_name = "TIME", required_unless_present = "clear")]
    pub until: Option<String>,
    /// Why you are away.
    #[arg(long, value_enum, default_value = "other")]
    pub reason: Reason,
    /// Free text, e.g. who covers for you.
    #[arg(long)]
    pub note: Option<String>,
    /// Remove every away period instead.
    #[arg(long, conflicts_with_all = ["from", "until", "note"])]
    pub clear: bool,
}

#[derive(clap::Args)]
pub struct QuietSetArgs {
    /// Start, local time HH:MM.
    #[arg(long)]
    pub start: String,
    /// End, local time HH:MM.
    #[arg(long)]
    pub end: String,
    /// Days the window starts on, comma-separated (default: every day).
    #[arg(long, value_delimiter = ',')]
    pub days: Vec<String>,
    /// IANA time zone of the window, e.g. Europe/Berlin (default: keep yours; UTC when new).
    #[arg(long)]
    pub time_zone: Option<String>,
}

/// The Approver's name for a username: lowercase, `[a-z0-9.-]`, starting and
/// ending alphanumeric, at most 253 characters (`system:serviceaccount:x:y` →
/// `system-serviceaccount-x-y`).
pub fn approver_name(username: &str) -> String {
    let mapped: String = username
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' })
        .collect();
    let trimmed: String = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric()).chars().take(253).collect();
    let trimmed = trimmed.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
    if trimmed.is_empty() { "user".into() } else { trimmed }
}

/// A point in time: RFC 3339, `now`, a date (YYYY-MM-DD, start of day UTC), or a
/// duration from now (`2h`, `3d`).
pub fn parse_time(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    if text == "now" {
        return Ok(now);
    }
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    if let Ok(date) = text.parse::<jiff::civil::Date>() {
        return date.to_zoned(jiff::tz::TimeZone::UTC).map(|z| z.timestamp()).map_err(|e| e.to_string());
    }
    if let Ok(d) = crate::duration::parse(text) {
        return Ok(now + d);
    }
    Err(format!(
        "{text:?} is not a time: use RFC 3339 (2026-12-24T00:00:00Z), a date (2026-12-24), now, or a duration from now (2h, 3d)"
    ))
}

/// Read the caller's Approver (a fresh one when missing), let `edit` change its
/// spec, and write it back. Returns the edit's summary.
async fn edit_mine(
    client: &kube::Client,
    edit: impl Fn(&mut ApproverSpec) -> Result<String, String>,
) -> Result<String, String> {
    let me = whoami(client).await?;
    let name = approver_name(&me.username);
    let api: Api<Approver> = Api::all(client.clone());
    for _ in 0..5 {
        let existing = api.get_opt(&name).await.map_err(|e| one_line(&e))?;
        let mut approver = match existing.clone() {
            Some(a) if a.spec.user != me.username => {
                return Err(format!(
                    "Approver {name} describes {}, not you ({}); ask an admin to sort it out",
                    a.spec.user, me.username
                ));
            }
            Some(a) => a,
            None => Approver::new(
                &name,
                ApproverSpec { user: me.username.clone(), time_zone: "UTC".into(), ..Default::default() },
            ),
        };
        let summary = edit(&mut approver.spec)?;
        let result = match existing {
            Some(_) => api.replace(&name, &PostParams::default(), &approver).await,
            None => api.create(&PostParams::default(), &approver).await,
        };
        match result {
            Ok(_) => return Ok(format!("{summary} (Approver {name})")),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(one_line(&e)),
        }
    }
    Err(format!("Approver {name} kept changing; try again"))
}

/// `away`: add an away period (or clear them all).
pub async fn away(
    client: &kube::Client,
    from: Option<&str>,
    until: Option<&str>,
    reason: AwayReason,
    note: Option<String>,
    clear: bool,
) -> Result<String, String> {
    let now = Timestamp::now();
    if clear {
        return edit_mine(client, |spec| {
            let n = spec.away.len();
            spec.away.clear();
            Ok(format!("removed {n} away period(s)"))
        })
        .await;
    }
    let from = parse_time(from.unwrap_or("now"), now)?;
    let until = parse_time(until.ok_or("--until is required (or --clear)")?, now)?;
    if until <= from {
        return Err(format!("--until ({until}) must be after --from ({from})"));
    }
    let period = AwayPeriod {
        from: Timestamp::from_second(from.as_second()).unwrap_or(from).to_string(),
        until: Timestamp::from_second(until.as_second()).unwrap_or(until).to_string(),
        reason,
        note,
    };
    edit_mine(client, move |spec| {
        // Periods that ended are dropped: they no longer mean anything.
        spec.away.retain(|p| p.until.parse::<Timestamp>().is_ok_and(|u| u > now));
        spec.away.push(period.clone());
        Ok(format!("away from {} until {} ({:?}); escalation skips you meanwhile", period.from, period.until, reason))
    })
    .await
}

/// A weekday as in the Approver's spec: Mon, Tue, … (any case).
pub fn parse_day(text: &str) -> Result<Weekday, String> {
    let mut chars = text.trim().to_lowercase();
    if let Some(first) = chars.get(0..1) {
        chars = first.to_uppercase() + &chars[1..];
    }
    serde_json::from_value(serde_json::Value::String(chars.chars().take(3).collect()))
        .map_err(|_| format!("{text:?} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
}

fn hhmm(text: &str) -> Result<String, String> {
    let ok = text.len() == 5
        && text.as_bytes()[2] == b':'
        && text[..2].parse::<u8>().is_ok_and(|h| h < 24)
        && text[3..].parse::<u8>().is_ok_and(|m| m < 60);
    if ok { Ok(text.to_string()) } else { Err(format!("{text:?} is not a time of day HH:MM (e.g. 22:00)")) }
}

/// `quiet-hours set`: replace the quiet windows with one (and set the time zone).
pub async fn quiet_hours_set(
    client: &kube::Client,
    start: &str,
    end: &str,
    days: Vec<Weekday>,
    time_zone: Option<String>,
) -> Result<String, String> {
    let (start, end) = (hhmm(start)?, hhmm(end)?);
    if start == end {
        return Err("--start and --end are the same time; a quiet window needs a length".into());
    }
    if let Some(tz) = &time_zone {
        jiff::tz::TimeZone::get(tz)
            .map_err(|_| format!("unknown time zone {tz:?} (use an IANA name, e.g. Europe/Berlin)"))?;
    }
    edit_mine(client, move |spec| {
        if let Some(tz) = &time_zone {
            spec.time_zone = tz.clone();
        }
        spec.quiet_hours = vec![QuietHours { days: days.clone(), start: start.clone(), end: end.clone() }];
        let on = if days.is_empty() {
            "every day".to_string()
        } else {
            days.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>().join(",")
        };
        Ok(format!("quiet hours {start}-{end} {}, {on}", spec.time_zone))
    })
    .await
}

/// `quiet-hours clear`.
pub async fn quiet_hours_clear(client: &kube::Client) -> Result<String, String> {
    edit_mine(client, |spec| {
        spec.quiet_hours.clear();
        Ok("no quiet hours".to_string())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approver_names_are_dns_names() {
        assert_eq!(approver_name("bob"), "bob");
        assert_eq!(approver_name("Alice.Smith@Example.com"), "alice.smith-example.com");
        assert_eq!(approver_name("system:serviceaccount:ci:deployer"), "system-serviceaccount-ci-deployer");
        assert_eq!(approver_name("-:x:-"), "x");
        assert_eq!(approver_name(":::"), "user");
        assert!(approver_name(&"a".repeat(300)).len() <= 253);
    }

    #[test]
    fn times_days_and_clock_times_parse_or_say_why_not() {
        let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("2h", now), Ok("2026-11-22T14:00:00Z".parse().unwrap()));
        assert_eq!(parse_time("2026-12-24", now), Ok("2026-12-24T00:00:00Z".parse().unwrap()));
        assert_eq!(parse_time("2026-12-24T08:00:00+01:00", now), Ok("2026-12-24T07:00:00Z".parse().unwrap()));
        assert!(parse_time("someday", now).unwrap_err().contains("is not a time"));
        assert_eq!(parse_day("mon"), Ok(Weekday::Mon));
        assert_eq!(parse_day("Friday"), Ok(Weekday::Fri));
        assert!(parse_day("Funday").is_err());
        assert_eq!(hhmm("07:30"), Ok("07:30".into()));
        for bad in ["24:00", "7:30", "07:60", "0730"] {
            assert!(hhmm(bad).is_err(), "{bad}");
        }
    }
}
