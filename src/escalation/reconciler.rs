//! The reconciler: runs `step` for each ApprovalRequest, executes its effects
//! (notifications, Events, a runbook ConfigMap), then writes the status, as
//! signoff's own identity. Effects come first: a crash before the status write
//! repeats the step with the same idempotency keys (at most one duplicate per
//! failover); a crash after it loses nothing. The webhook checks the status write
//! like any other (the controller never adds a decision), and optimistic
//! concurrency makes a write based on a stale read retry instead of dropping a
//! decision that arrived meanwhile.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::{Effect, NotifyKind};
use crate::crd::{ApprovalRequest, Approver, Notification, Team};
use crate::notify::{Message, MessageKind, Notifier, Recipient, RetryPolicy};
use crate::policy::PolicySet;

/// What the reconciler reads and uses: caches shared with the webhook.
pub struct Context {
    pub client: kube::Client,
    pub policies: Arc<arc_swap::ArcSwap<PolicySet>>,
    pub teams: Store<Team>,
    pub approvers: Store<Approver>,
    pub recorder: crate::events::Events,
    /// signoff's namespace: where contact Secrets live.
    pub namespace: String,
    /// Bounded so that a dead sink delays a status write by seconds, not minutes.
    pub retry: RetryPolicy,
    /// Written over: per request, the resourceVersion our last status write replaced.
    pub written_over: WrittenOver,
}

/// The resourceVersions this reconciler's own status writes have replaced, per
/// request. The watch cache can hand a reconcile a copy from before our last write
/// (a step that outlasted its tier is requeued at once, often before the write's
/// watch event arrives); running the step on it would repeat its notifications.
/// Knowing the exact version we replaced is enough: resourceVersions are opaque,
/// but equal means the same object state.
#[derive(Default)]
pub struct WrittenOver(std::sync::Mutex<std::collections::HashMap<(String, String), String>>);

impl WrittenOver {
    /// Whether `ar` is a copy our own write already replaced. A newer copy forgets
    /// the entry, so the map holds only requests whose watch event is in flight.
    pub fn is_stale(&self, meta: &ObjectMeta) -> bool {
        let key = (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default());
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&key) {
            Some(replaced) if Some(replaced) == meta.resource_version.as_ref() => true,
            Some(_) => {
                map.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Remember that a status write replaced this version.
    pub fn record(&self, meta: &ObjectMeta) {
        if let Some(version) = meta.resource_version.clone() {
            let key = (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default());
            self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(key, version);
        }
    }
}

/// How soon to look again at a copy our own write replaced, in case its watch
/// event (which triggers a reconcile by itself) is lost.
const STALE_COPY_RECHECK: Duration = Duration::from_secs(2);

/// Delivery tries for escalation: 3 attempts within about 7 s.
pub fn escalation_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_delay: Duration::from_millis(250),
        factor: 2,
        max_delay: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(2),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("writing status of {0}: {1}")]
    Write(String, kube::Error),
}

/// Status keeps the most recent notifications (the CRD caps the list).
const MAX_NOTIFICATIONS: usize = 500;

fn reference(ar: &ApprovalRequest) -> ObjectReference {
    ar.object_ref(&())
}

async fn notify(ctx: &Context, ar: &ApprovalRequest, n: &super::Notify, world: &super::World<'_>) -> Vec<Notification> {
    let (teams, approvers) = (world.teams, world.approvers);
    let kind = match n.kind {
        NotifyKind::Escalation => MessageKind::Escalation,
        NotifyKind::Expired => MessageKind::Expired,
    };
    let deadline = n.deadline.unwrap_or_else(jiff::Timestamp::now);
    let mut jobs = Vec::new();
    let mut recipients: Vec<(Recipient, Vec<crate::crd::Contact>)> = n
        .users
        .iter()
        .map(|u| {
            let contacts =
                approvers.iter().find(|a| a.spec.user == *u).map(|a| a.spec.contacts.clone()).unwrap_or_default();
            (Recipient::User(u.clone()), contacts)
        })
        .collect();
    if let Some(team) = &n.team {
        let contacts =
            teams.iter().find(|t| t.name_any() == *team).map(|t| t.spec.contacts.clone()).unwrap_or_default();
        recipients.push((Recipient::Team(team.clone()), contacts));
    }
    let route_contacts = world
        .policies
        .get(&n.policy)
        .and_then(|p| p.spec().routes.iter().find(|r| r.name == n.route).map(|r| r.contacts.clone()))
        .unwrap_or_default();
    if !route_contacts.is_empty() {
        recipients.push((Recipient::Route(format!("{}/{}", n.policy, n.route)), route_contacts));
    }
    for (recipient, contacts) in recipients {
        let key = format!("{}/{recipient}", n.key);
        let msg = Message::from_request(ar, kind, &n.route, n.tier, &n.tier_name, recipient, &key, deadline);
        for contact in contacts {
            jobs.push((contact, msg.clone()));
        }
    }
    let notifier = Notifier::shared();
    let deliveries = futures::stream::iter(jobs)
        .map(|(contact, msg)| async move {
            let record = notifier.deliver_contact(&ctx.client, &ctx.namespace, &contact, &msg, &ctx.retry).await;
            record.to_notification(&msg)
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    // Kubernetes Events, always: one per tier reached.
    let note = match n.kind {
        NotifyKind::Escalation => format!(
            "{} tier {} ({}): notified {}{}",
            n.route,
            n.tier + 1,
            n.tier_name,
            if n.users.is_empty() { "nobody by name".to_string() } else { n.users.join(", ") },
            n.team.as_ref().map(|t| format!(" and team {t}")).unwrap_or_default()
        ),
        NotifyKind::Expired => {
            format!("chain exhausted ({}); platform admins notified: {}", n.route, n.users.join(", "))
        }
    };
    let event = Event {
        type_: EventType::Normal,
        reason: "Notified".into(),
        note: Some(note),
        action: "Notify".into(),
        secondary: None,
    };
    let event_result = ctx.recorder.publish(&event, &reference(ar)).await;
    let mut records = vec![Notification {
        key: format!("{}/event", n.key),
        route: n.route.clone(),
        tier: n.tier,
        recipient: n.users.join(","),
        sink: "Event".into(),
        attempts: 1,
        result: if event_result.is_ok() { "Delivered".into() } else { "Failed".into() },
        message: event_result.err().map(|e| e.to_string()),
        at: Time(
            jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap_or_else(|_| jiff::Timestamp::now()),
        ),
    }];
    records.extend(deliveries);
    records
}

async fn write_runbook(ctx: &Context, ar: &ApprovalRequest, name: &str, text: &str) {
    let namespace = ar.namespace().unwrap_or_default();
    let owner = OwnerReference {
        api_version: ApprovalRequest::api_version(&()).into_owned(),
        kind: ApprovalRequest::kind(&()).into_owned(),
        name: ar.name_any(),
        uid: ar.uid().unwrap_or_default(),
        ..Default::default()
    };
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: Some([("runbook".to_string(), text.to_string())].into()),
        ..Default::default()
    };
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Err(e) = api.patch(name, &PatchParams::apply("signoff").force(), &Patch::Apply(&cm)).await {
        warn!(error = %e, configmap = name, "could not write the runbook ConfigMap");
    }
}

async fn reconcile(ar: Arc<ApprovalRequest>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    if ctx.written_over.is_stale(&ar.metadata) {
        return Ok(Action::requeue(STALE_COPY_RECHECK));
    }
    let now = jiff::Timestamp::now();
    let teams: Vec<Team> = ctx.teams.state().iter().map(|t| (**t).clone()).collect();
    let approvers: Vec<Approver> = ctx.approvers.state().iter().map(|a| (**a).clone()).collect();
    let policies = ctx.policies.load();
    let world = super::World { policies: &policies, teams: &teams, approvers: &approvers };
    let mut step = super::step(&ar, world, now);
    let name = ar.name_any();
    let namespace = ar.namespace().unwrap_or_default();

    for effect in &step.effects {
        match effect {
            Effect::Notify(n) => {
                let records = notify(&ctx, &ar, n, &world).await;
                step.status.notifications.extend(records);
            }
            Effect::Event { reason, note, warning } => {
                let event = Event {
                    type_: if *warning { EventType::Warning } else { EventType::Normal },
                    reason: (*reason).into(),
                    note: Some(note.clone()),
                    action: "Escalate".into(),
                    secondary: None,
                };
                if let Err(e) = ctx.recorder.publish(&event, &reference(&ar)).await {
                    warn!(error = %e, reason, "could not publish event");
                }
            }
            Effect::RunbookConfigMap { name, text } => write_runbook(&ctx, &ar, name, text).await,
        }
    }
    let excess = step.status.notifications.len().saturating_sub(MAX_NOTIFICATIONS);
    step.status.notifications.drain(..excess);

    if ar.status.as_ref() != Some(&step.status) {
        let api: Api<ApprovalRequest> = Api::namespaced(ctx.client.clone(), &namespace);
        // Never send decisions or admissions: approvers and the gate write those,
        // and echoing them back (Time keeps whole seconds) would read as an edit.
        let mut status = serde_json::to_value(&step.status).unwrap_or_default();
        if let Some(fields) = status.as_object_mut() {
            fields.remove("decisions");
            fields.remove("admissions");
            // A reopen clears these; a merge patch removes a field only when told to.
            for cleared in ["notAfter", "runbook", "runbookConfigMap"] {
                fields.entry(cleared).or_insert(serde_json::Value::Null);
            }
        }
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": ar.metadata.resource_version },
            "status": status,
        });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| ReconcileError::Write(format!("{namespace}/{name}"), e))?;
        ctx.written_over.record(&ar.metadata);
        info!(target: "audit", request = %format!("{namespace}/{name}"), phase = ?step.status.phase,
            tier = ?step.status.tier, effects = step.effects.len(), "approval request progressed");
    }
    Ok(match step.wake_at {
        Some(at) => {
            let wait = at.duration_since(jiff::Timestamp::now()).as_millis().clamp(0, 3_600_000) as u64;
            Action::requeue(Duration::from_millis(wait))
        }
        None => Action::await_change(),
    })
}

fn error_policy(_ar: Arc<ApprovalRequest>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    // Conflicts are normal (a decision arrived between read and write): retry soon.
    warn!(%error, "reconcile failed; retrying");
    Action::requeue(Duration::from_millis(300))
}

/// Requests reconciled at once.
const RECONCILE_CONCURRENCY: u16 = 32;

/// Run the reconciler until the stream ends (or the task is aborted on losing
/// leadership).
pub async fn run(ctx: Arc<Context>) {
    let api: Api<ApprovalRequest> = Api::all(ctx.client.clone());
    // The cache holds every pending request, so it drops managedFields too.
    let (reader, writer) = kube::runtime::reflector::store();
    let requests = crate::operator::watch_pruned(api).reflect(writer).applied_objects();
    // Bounded: after a restart with thousands of overdue requests, unbounded
    // reconciles each open their own connections (a TLS handshake storm) and
    // all finish late instead of most finishing early.
    let config = kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY);
    Controller::for_stream(requests, reader)
        .with_config(config)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(name: &str, version: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team-a".into()),
            resource_version: Some(version.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_copy_our_write_replaced_is_stale_until_a_newer_copy_arrives() {
        let written = WrittenOver::default();
        assert!(!written.is_stale(&copy("a", "10")), "nothing written yet");
        written.record(&copy("a", "10"));
        assert!(written.is_stale(&copy("a", "10")), "the cache still holds the version we replaced");
        assert!(written.is_stale(&copy("a", "10")), "stale as often as it is handed back");
        assert!(!written.is_stale(&copy("b", "10")), "another request is not affected");
        assert!(!written.is_stale(&copy("a", "11")), "the copy after our write");
        assert!(!written.is_stale(&copy("a", "10")), "forgotten once the cache caught up");
        assert!(written.0.lock().unwrap().is_empty(), "no entry is kept once the cache caught up");
    }
}
