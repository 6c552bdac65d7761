//! What the reconciler sends, worked out without I/O: the messages one
//! [`Notify`] effect delivers (recipients, contacts, idempotency keys), the
//! Event that always goes with it and its status record, and the status patch
//! the controller writes. The reconciler only executes these.
//!
//! The status patch is security-relevant: the controller may move phase and
//! tiers, but never sends decisions or admissions (approvers and the gate write
//! those; invariant 2), and it is bound to the version it read (optimistic
//! concurrency: a decision that arrived meanwhile makes the write conflict and
//! the step run again, instead of being overwritten).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::{Notify, NotifyKind, World};
use crate::crd::{ApprovalRequest, ApprovalRequestStatus, Contact, ContactKind, Notification, Phase};
use crate::notify::{Message, MessageKind, Recipient};

/// Status keeps the most recent notifications (the CRD caps the list).
pub const MAX_NOTIFICATIONS: usize = 500;

/// One message to one contact.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub contact: Contact,
    pub message: Message,
}

/// Every delivery of one Notify effect: for each named user, their Approver's
/// contacts; for the team, the Team's contacts; for the route, the route's own
/// contacts in its policy. Each recipient's message carries the tier's key plus
/// the recipient, so a receiver can drop a repeat after a failover.
pub fn deliveries(n: &Notify, world: World, ar: &ApprovalRequest, now: Timestamp) -> Vec<Delivery> {
    let kind = match n.kind {
        NotifyKind::Escalation => MessageKind::Escalation,
        NotifyKind::Expired | NotifyKind::Outcome(Phase::Expired) => MessageKind::Expired,
        NotifyKind::Superseded | NotifyKind::Outcome(Phase::Superseded | Phase::Pending) => MessageKind::Superseded,
        NotifyKind::Outcome(Phase::Approved) => MessageKind::Approved,
        NotifyKind::Outcome(Phase::Rejected) => MessageKind::Rejected,
    };
    let outcome = match n.kind {
        NotifyKind::Outcome(phase) => Some(crate::notify::message::Outcome::of(ar, phase)),
        _ => None,
    };
    // A page asked for a decision; when none is needed any more, its incident resolves.
    let closes = matches!(n.kind, NotifyKind::Outcome(_) | NotifyKind::Superseded);
    let deadline = n.deadline.unwrap_or(now);
    let mut recipients: Vec<(Recipient, Vec<Contact>)> = n
        .users
        .iter()
        .map(|u| {
            let approver = world.approvers.iter().find(|a| a.spec.user == *u);
            (Recipient::User(u.clone()), approver.map(|a| a.spec.contacts.clone()).unwrap_or_default())
        })
        .collect();
    for team in &n.teams {
        let found = world.teams.iter().find(|t| t.name_any() == *team);
        recipients.push((Recipient::Team(team.clone()), found.map(|t| t.spec.contacts.clone()).unwrap_or_default()));
    }
    let route_contacts = world
        .policies
        .get(&n.policy)
        .and_then(|p| p.spec().routes.iter().find(|r| r.name == n.route).map(|r| r.contacts.clone()))
        .unwrap_or_default();
    if !route_contacts.is_empty() {
        recipients.push((Recipient::Route(format!("{}/{}", n.policy, n.route)), route_contacts));
    }
    let mut out = Vec::new();
    for (recipient, contacts) in recipients {
        let key = format!("{}/{recipient}", n.key);
        let name = recipient.to_string();
        let mut message = Message::from_request(ar, kind, &n.route, n.tier, &n.tier_name, recipient, &key, deadline);
        message.outcome = outcome.clone();
        for contact in contacts {
            if closes && contact.kind == ContactKind::PagerDuty {
                // PagerDuty is for pages: it hears only to resolve the ones it got.
                for (_, page) in n.pages.iter().filter(|(to, _)| *to == name) {
                    let mut resolve = message.clone();
                    resolve.key = format!("{page}/resolve");
                    resolve.resolves = Some(page.clone());
                    out.push(Delivery { contact: contact.clone(), message: resolve });
                }
            } else {
                out.push(Delivery { contact, message: message.clone() });
            }
        }
    }
    out
}

/// The summary of a window's held pages (notify::coalesce): one message per
/// contact the held pages had, about the newest held request, listing them all.
pub fn summary(recipient: &str, requester: &str, held: &[Vec<Delivery>]) -> Vec<(Contact, Message)> {
    let Some(newest) = held.last().and_then(|group| group.first()) else { return vec![] };
    let mut message = newest.message.clone();
    message.kind = MessageKind::Summary;
    message.key = format!("summary/{recipient}/{requester}/{}", newest.message.key);
    // A step retried after a conflict offers its pages again: each request once.
    let mut keys: Vec<&str> = Vec::new();
    message.reasons = held
        .iter()
        .filter_map(|group| group.first())
        .filter(|d| {
            let first = !keys.contains(&d.message.key.as_str());
            keys.push(&d.message.key);
            first
        })
        .map(|d| {
            format!(
                "{}: kubectl signoff show -n {} {}",
                d.message.summary(),
                d.message.request.namespace,
                d.message.request.name
            )
        })
        .collect();
    message.diff_excerpt = None;
    let mut contacts: Vec<Contact> = Vec::new();
    for d in held.iter().flatten() {
        if !contacts.contains(&d.contact) {
            contacts.push(d.contact.clone());
        }
    }
    contacts.into_iter().map(|contact| (contact, message.clone())).collect()
}

/// The note of the Kubernetes Event that goes with every Notify effect.
pub fn event_note(n: &Notify) -> String {
    match n.kind {
        NotifyKind::Escalation => {
            let deadline = n.deadline.map(|d| format!(" until {d}")).unwrap_or_default();
            let skipped: String = n.skipped.iter().map(|s| format!("; {s}")).collect();
            format!(
                "{} reached tier {} ({}){deadline}: notified {}{skipped}",
                n.route,
                n.tier + 1,
                n.tier_name,
                told(n)
            )
        }
        NotifyKind::Expired => {
            format!("chain exhausted ({}); platform admins notified: {}", n.route, n.users.join(", "))
        }
        NotifyKind::Superseded => format!("superseded ({}): told {}", n.route, told(n)),
        NotifyKind::Outcome(phase) if n.route.is_empty() => {
            format!("{phase:?}: told the requester {}", n.users.join(", "))
        }
        NotifyKind::Outcome(phase) => format!("{phase:?}: told {} ({})", told(n), n.route),
    }
}

/// `alice, bob and team payments`: who a notification names.
fn told(n: &Notify) -> String {
    let users = if n.users.is_empty() { "nobody by name".to_string() } else { n.users.join(", ") };
    let teams: String = n.teams.iter().map(|t| format!(" and team {t}")).collect();
    format!("{users}{teams}")
}

/// The reason of a notification's Event: an escalation's says the tier was reached.
pub fn event_reason(n: &Notify) -> &'static str {
    match n.kind {
        NotifyKind::Escalation => "Escalated",
        _ => "Notified",
    }
}

/// The status record of that Event: delivered, or failed with the API's error.
pub fn event_record(n: &Notify, published: Result<(), String>, now: Timestamp) -> Notification {
    Notification {
        key: format!("{}/event", n.key),
        route: n.route.clone(),
        tier: n.tier,
        recipient: n.users.join(","),
        sink: "Event".into(),
        attempts: 1,
        result: if published.is_ok() { "Delivered".into() } else { "Failed".into() },
        message: published.err(),
        at: Time(Timestamp::from_second(now.as_second()).unwrap_or(now)),
    }
}

/// Appends delivery records, keeping the most recent [`MAX_NOTIFICATIONS`].
pub fn record_notifications(status: &mut ApprovalRequestStatus, records: Vec<Notification>) {
    status.notifications.extend(records);
    let excess = status.notifications.len().saturating_sub(MAX_NOTIFICATIONS);
    status.notifications.drain(..excess);
}

/// The merge patch that moves `read` to `status`, or None when nothing changed.
/// It never carries decisions or admissions (echoing them back, with Time's
/// whole seconds, would read as an edit, and the controller must never add
/// one); it clears what a reopen clears (a merge patch removes a field only when
/// told to); and it names the resourceVersion that was read, so the API server
/// refuses it if anyone wrote in between.
pub fn status_patch(read: &ApprovalRequest, status: &ApprovalRequestStatus) -> Option<serde_json::Value> {
    if read.status.as_ref() == Some(status) {
        return None;
    }
    let mut fields = match serde_json::to_value(status) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => serde_json::Map::new(),
    };
    fields.remove("decisions");
    fields.remove("admissions");
    for cleared in ["notAfter", "runbook", "runbookConfigMap", "tierDeadline"] {
        fields.entry(cleared).or_insert(serde_json::Value::Null);
    }
    Some(serde_json::json!({
        "metadata": { "resourceVersion": read.metadata.resource_version },
        "status": fields,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ActionClass, Approver, ApproverSpec, ContactKind, Phase};
    use crate::fixtures::{mins, policy_set, request, t0, teams};

    fn webhook(url: &str) -> Contact {
        Contact {
            kind: ContactKind::Webhook,
            url: Some(url.into()),
            url_secret_ref: None,
            signing_secret_ref: None,
            routing_key_secret_ref: None,
            signature_header: None,
        }
    }

    fn notify(users: &[&str], team: Option<&str>) -> Notify {
        Notify {
            key: "uid-1/engineering/0".into(),
            kind: NotifyKind::Escalation,
            policy: "p".into(),
            route: "engineering".into(),
            tier: 0,
            tier_name: "team payments".into(),
            users: users.iter().map(|u| u.to_string()).collect(),
            teams: team.map(str::to_string).into_iter().collect(),
            deadline: Some(t0() + mins(10)),
            pages: vec![],
            skipped: Vec::new(),
            warning: false,
        }
    }

    #[test]
    fn each_recipient_gets_its_contacts_under_its_own_key() {
        let route = "  routes:\n  - name: engineering\n    tiers: [{kind: Team}]\n    contacts: [{kind: Webhook, url: 'http://127.0.0.1:9/route'}]\n";
        let policies = policy_set(route);
        let mut teams = teams();
        teams[0].spec.contacts = vec![webhook("http://127.0.0.1:9/payments")];
        let bob = Approver::new(
            "bob",
            ApproverSpec {
                user: "bob".into(),
                time_zone: "UTC".into(),
                quiet_hours: vec![],
                away: vec![],
                contacts: vec![webhook("http://127.0.0.1:9/bob-1"), webhook("http://127.0.0.1:9/bob-2")],
            },
        );
        let approvers = [bob];
        let world = World { policies: &policies, teams: &teams, approvers: &approvers };
        let ar = request(ActionClass::Routine, &[("engineering", "payments")]);
        let out = deliveries(&notify(&["alice", "bob"], Some("payments")), world, &ar, t0());
        let sent: Vec<(String, String)> =
            out.iter().map(|d| (d.contact.url.clone().unwrap(), d.message.key.clone())).collect();
        assert_eq!(
            sent,
            vec![
                ("http://127.0.0.1:9/bob-1".to_string(), "uid-1/engineering/0/user/bob".to_string()),
                ("http://127.0.0.1:9/bob-2".to_string(), "uid-1/engineering/0/user/bob".to_string()),
                ("http://127.0.0.1:9/payments".to_string(), "uid-1/engineering/0/team/payments".to_string()),
                ("http://127.0.0.1:9/route".to_string(), "uid-1/engineering/0/route/p/engineering".to_string()),
            ],
            "alice has no Approver, so no contact; bob twice, the team and the route once"
        );
        assert!(out.iter().all(|d| d.message.deadline == t0() + mins(10)), "the tier's deadline");
    }

    #[test]
    fn the_event_names_who_was_notified() {
        // One Event per tier reached: the tier, its deadline and who was told.
        let until = format!("until {}", t0() + mins(10));
        let n = notify(&["alice", "bob"], Some("payments"));
        assert_eq!(event_reason(&n), "Escalated");
        assert_eq!(
            event_note(&n),
            format!("engineering reached tier 1 (team payments) {until}: notified alice, bob and team payments")
        );
        assert_eq!(
            event_note(&notify(&[], None)),
            format!("engineering reached tier 1 (team payments) {until}: notified nobody by name")
        );
        let failed = event_record(&notify(&["dave"], None), Err("forbidden".into()), t0());
        assert_eq!((failed.key.as_str(), failed.result.as_str()), ("uid-1/engineering/0/event", "Failed"));
        assert_eq!(failed.message.as_deref(), Some("forbidden"));
    }

    #[test]
    fn the_status_patch_never_carries_decisions_and_is_bound_to_the_read() {
        let mut read = request(ActionClass::Routine, &[("engineering", "payments")]);
        read.metadata.resource_version = Some("41".into());
        let mut status = ApprovalRequestStatus { phase: Phase::Pending, ..Default::default() };
        read.status = Some(status.clone());
        assert_eq!(status_patch(&read, &status), None, "nothing changed, nothing written");

        status.phase = Phase::Expired;
        status.decisions.push(crate::crd::Decision {
            approver: "bob".into(),
            uid: None,
            groups: vec![],
            decision: crate::crd::Verdict::Reject,
            routes: vec![],
            comment: None,
            at: Time(t0()),
            attempt: 1,
        });
        let patch = status_patch(&read, &status).expect("a change");
        assert_eq!(patch["metadata"]["resourceVersion"], "41");
        let fields = patch["status"].as_object().unwrap();
        assert_eq!(fields["phase"], "Expired");
        assert!(!fields.contains_key("decisions") && !fields.contains_key("admissions"), "{patch}");
        for cleared in ["notAfter", "runbook", "runbookConfigMap", "tierDeadline"] {
            assert_eq!(fields[cleared], serde_json::Value::Null, "{cleared} is cleared explicitly");
        }
    }

    #[test]
    fn status_keeps_the_most_recent_notifications() {
        let mut status = ApprovalRequestStatus::default();
        let record = |i: usize| event_record(&notify(&[&format!("u{i}")], None), Ok(()), t0());
        record_notifications(&mut status, (0..MAX_NOTIFICATIONS).map(record).collect());
        record_notifications(&mut status, vec![record(MAX_NOTIFICATIONS)]);
        assert_eq!(status.notifications.len(), MAX_NOTIFICATIONS);
        assert_eq!(status.notifications[0].recipient, "u1", "the oldest went");
        assert_eq!(status.notifications.last().unwrap().recipient, format!("u{MAX_NOTIFICATIONS}"));
    }

    /// The summary of held pages: one message per contact they had, listing
    /// every held request, under a key of its own.
    #[test]
    fn a_summary_lists_the_held_requests_once_per_contact() {
        let held: Vec<Vec<Delivery>> = ["ar-1", "ar-2", "ar-3"]
            .iter()
            .map(|name| {
                let mut ar = request(ActionClass::Routine, &[("engineering", "payments")]);
                ar.metadata.name = Some(name.to_string());
                let message = Message::from_request(
                    &ar,
                    MessageKind::Escalation,
                    "engineering",
                    0,
                    "Team",
                    Recipient::User("bob".into()),
                    &format!("{name}/engineering/0/user/bob"),
                    t0(),
                );
                vec![
                    Delivery { contact: webhook("http://127.0.0.1:9/a"), message: message.clone() },
                    Delivery { contact: webhook("http://127.0.0.1:9/b"), message },
                ]
            })
            .collect();
        let mut held = held;
        held.push(held[2].clone()); // offered again by a retried step
        let out = summary("user/bob", "mallory", &held);
        assert_eq!(out.len(), 2, "one per contact");
        let message = &out[0].1;
        assert_eq!(message.kind, MessageKind::Summary);
        assert_eq!(message.key, "summary/user/bob/mallory/ar-3/engineering/0/user/bob");
        assert_eq!(message.reasons.len(), 3);
        assert!(message.reasons[0].ends_with("kubectl signoff show -n prod ar-1"), "{:?}", message.reasons);
        assert!(message.summary().starts_with("3 more requests from"), "{}", message.summary());
        assert!(summary("user/bob", "mallory", &[]).is_empty());
    }

    /// An outcome reaches every contact of those told; PagerDuty contacts only
    /// resolve the pages they got (each under a key of its own).
    #[test]
    fn an_outcome_resolves_pagerduty_pages_and_tells_every_other_contact() {
        let policies = policy_set("");
        let mut teams = teams();
        let pd = Contact { kind: ContactKind::PagerDuty, url: Some("http://127.0.0.1:9/pd".into()), ..webhook("") };
        teams[0].spec.contacts = vec![pd.clone(), webhook("http://127.0.0.1:9/payments")];
        let world = World { policies: &policies, teams: &teams, approvers: &[] };
        let mut ar = request(ActionClass::Routine, &[("engineering", "payments")]);
        let approve = |who: &str, comment: &str| crate::crd::Decision {
            approver: who.into(),
            uid: None,
            groups: vec![],
            decision: crate::crd::Verdict::Approve,
            routes: vec![],
            comment: Some(comment.into()),
            at: Time(t0()),
            attempt: 1,
        };
        ar.status = Some(ApprovalRequestStatus {
            phase: Phase::Approved,
            lanes: vec![crate::crd::Lane {
                route: "engineering".into(),
                policy: "p".into(),
                tier: 0,
                tiers: 5,
                tier_name: None,
                tier_started_at: None,
                tier_deadline: None,
                phase: Phase::Approved,
                eligible: vec!["bob".into()],
                eligible_groups: vec![],
            }],
            // Only decisions that count name who decided (mallory was never reached).
            decisions: vec![approve("bob", "ship it"), approve("mallory", "me too")],
            ..Default::default()
        });
        let mut n = notify(&[], Some("payments"));
        n.kind = NotifyKind::Outcome(Phase::Approved);
        n.key = "uid-1/outcome/engineering".into();
        n.pages = vec![
            ("team/payments".into(), "uid-1/engineering/0/team/payments".into()),
            ("team/payments".into(), "uid-1/engineering/2/team/payments".into()),
        ];
        let out = deliveries(&n, world, &ar, t0());
        let sent: Vec<(ContactKind, &str, Option<&str>)> =
            out.iter().map(|d| (d.contact.kind, d.message.key.as_str(), d.message.resolves.as_deref())).collect();
        assert_eq!(
            sent,
            vec![
                (
                    ContactKind::PagerDuty,
                    "uid-1/engineering/0/team/payments/resolve",
                    Some("uid-1/engineering/0/team/payments")
                ),
                (
                    ContactKind::PagerDuty,
                    "uid-1/engineering/2/team/payments/resolve",
                    Some("uid-1/engineering/2/team/payments")
                ),
                (ContactKind::Webhook, "uid-1/outcome/engineering/team/payments", None),
            ]
        );
        let told = &out[2].message;
        assert_eq!(told.kind, MessageKind::Approved);
        let outcome = told.outcome.as_ref().expect("the outcome");
        assert_eq!(
            (outcome.decided_by.as_slice(), outcome.comments.as_slice()),
            (&["bob".to_string()][..], &["bob: ship it".to_string()][..])
        );
        assert_eq!(told.summary(), format!("[High] {}: approved by bob", told.action.headline()));
        assert_eq!(event_note(&n), "Approved: told nobody by name and team payments (engineering)");
    }
}
