//! The reconciler, the I/O shell of the escalation core: runs `step` for each
//! ApprovalRequest, executes its effects (the deliveries and Events that
//! [`effects`] works out, a runbook ConfigMap), then writes the status patch that
//! [`effects::status_patch`] shapes, as signoff's own identity. Effects come first: a crash before the status write
//! repeats the step with the same idempotency keys (at most one duplicate per
//! failover); a crash after it loses nothing. The webhook checks the status write
//! like any other (the controller never adds a decision), and optimistic
//! concurrency makes a write based on a stale read retry instead of dropping a
//! decision that arrived meanwhile.
//!
//! Only metadata is cached (10,000 pending requests in a few MiB); each step
//! reads its request from the API server first, which also means a step never
//! runs on a copy older than our own last write (see `Known` for the reads
//! that are skipped).

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, GetParams, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::effects::Delivery;
use super::{Effect, World, effects};
use crate::crd::{ApprovalRequest, Approver, Notification, Team};
use crate::notify::coalesce::{Coalescer, Offer};
use crate::notify::{DeliveryRecord, Notifier, RetryPolicy};
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
    /// Delivers notifications (one connection pool for the process).
    pub notifier: Notifier,
    /// Bounded so that a dead sink delays a status write by seconds, not minutes.
    pub retry: RetryPolicy,
    /// Per request, the version our last reconcile left and its next step.
    pub known: Known,
    /// Escalation pages held back during a flood, for one summary per window.
    pub coalescer: std::sync::Mutex<Coalescer<Vec<Delivery>>>,
    /// Requests by phase, escalations, decisions, notifications.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The web queue's address (`--ui-url`): messages link to the request's page.
    pub ui_url: Option<String>,
    /// Steps calling the API server, a few at once, earliest due first.
    pub gate: super::gate::Gate,
}

/// How long one recipient's pages about one requester's requests are counted
/// together, and how many go out individually in that time (the rest: one
/// summary when it ends).
pub fn coalescer(window: Duration, burst: u32) -> std::sync::Mutex<Coalescer<Vec<Delivery>>> {
    let window = jiff::SignedDuration::try_from(window).unwrap_or(jiff::SignedDuration::ZERO);
    std::sync::Mutex::new(Coalescer::new(window, burst))
}

/// What this reconciler knows of each request without reading it: the
/// resourceVersion its last reconcile left (the one its status write produced,
/// or the one it read when nothing changed) and when that version needs a step
/// next. The cache holds only metadata, so a reconcile normally reads the
/// request from the API server (a consistent read: never older than our own
/// last write). Every status write comes back as a watch event; when the cached
/// version is one this map knows and its next step is not due, nothing can have
/// changed, and the read is skipped.
#[derive(Default)]
pub struct Known(std::sync::Mutex<std::collections::HashMap<(String, String), Left>>);

/// The resourceVersion a reconcile left, and when that version needs a step next.
type Left = (String, Option<jiff::Timestamp>);

fn key(meta: &ObjectMeta) -> (String, String) {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

impl Known {
    /// What to do with this version without reading it: `Some` when it is the
    /// version we last left and its next step is not due at `now`.
    pub fn skip(&self, meta: &ObjectMeta, now: jiff::Timestamp) -> Option<Action> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (version, wake_at) = map.get(&key(meta))?;
        if meta.resource_version.as_ref() != Some(version) {
            return None;
        }
        match wake_at {
            None => Some(Action::await_change()),
            Some(at) if *at > now => Some(next_action(Some(*at), now)),
            Some(_) => None,
        }
    }

    /// Remember the version a reconcile left and when it needs a step next.
    pub fn record(&self, meta: &ObjectMeta, wake_at: Option<jiff::Timestamp>) {
        if let Some(version) = meta.resource_version.clone() {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(key(meta), (version, wake_at));
        }
    }

    /// Whether this request is known at all (any version).
    pub fn knows(&self, meta: &ObjectMeta) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&key(meta))
    }

    /// The cached version, when it is the one our last reconcile left.
    pub fn left(&self, meta: &ObjectMeta) -> Option<String> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (version, _) = map.get(&key(meta))?;
        (meta.resource_version.as_ref() == Some(version)).then(|| version.clone())
    }

    /// When this request's next step was due, as our last reconcile left it.
    pub fn due(&self, meta: &ObjectMeta) -> Option<jiff::Timestamp> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&key(meta)).and_then(|(_, at)| *at)
    }

    /// How many steps are overdue at `now` by more than `grace`: the backlog
    /// (the leader steps fewer requests a second than fall due).
    pub fn overdue(&self, now: jiff::Timestamp, grace: Duration) -> usize {
        let grace = jiff::SignedDuration::try_from(grace).unwrap_or(jiff::SignedDuration::ZERO);
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.values().filter(|(_, at)| at.is_some_and(|at| now.duration_since(at) > grace)).count()
    }

    /// Forget a deleted request.
    pub fn forget(&self, meta: &ObjectMeta) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&key(meta));
    }
}

/// Requeue at `wake_at` (capped at an hour), or wait for a change.
fn next_action(wake_at: Option<jiff::Timestamp>, now: jiff::Timestamp) -> Action {
    match wake_at {
        Some(at) => {
            let wait = at.duration_since(now).as_millis().clamp(0, 3_600_000) as u64;
            Action::requeue(Duration::from_millis(wait))
        }
        None => Action::await_change(),
    }
}

/// What a step's deliveries leave before its next wake: the status write, and
/// several tiers' sends in one step when they are due together.
const DELIVERY_MARGIN: Duration = Duration::from_millis(750);

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
    #[error("reading {0}: {1}")]
    Read(String, kube::Error),
    #[error("writing status of {0}: {1}")]
    Write(String, kube::Error),
}

fn reference(ar: &ApprovalRequest) -> ObjectReference {
    ar.object_ref(&())
}

/// Executes one Notify effect: its deliveries (worked out by
/// [`effects::deliveries`]) and its Event, at the same time (under load each is
/// an API round trip). Returns their status records.
async fn notify(
    ctx: &Context,
    ar: &ApprovalRequest,
    n: &super::Notify,
    world: World<'_>,
    now: jiff::Timestamp,
    retry: &RetryPolicy,
) -> Vec<Notification> {
    // During a flood, a person's escalation pages about one requester beyond the
    // burst are held for the window's summary (recorded as Coalesced).
    let mut send = Vec::new();
    let mut coalesced = Vec::new();
    let mut by_recipient: Vec<Vec<Delivery>> = Vec::new();
    for mut d in effects::deliveries(n, world, ar, now) {
        d.message.url = ctx.ui_url.as_ref().map(|u| crate::ui::page::request_url(u, &d.message.request));
        match by_recipient.iter_mut().find(|g| g[0].message.key == d.message.key) {
            Some(group) => group.push(d),
            None => by_recipient.push(vec![d]),
        }
    }
    for group in by_recipient {
        let message = group[0].message.clone();
        // People are paged; team and route channels are where volume belongs.
        let person = matches!(message.recipient, crate::notify::Recipient::User(_));
        if n.kind != super::NotifyKind::Escalation || !person {
            send.extend(group);
            continue;
        }
        let recipient = message.recipient.to_string();
        let offer = ctx.coalescer.lock().unwrap_or_else(|e| e.into_inner()).offer(
            &recipient,
            &message.requester,
            group.clone(),
            now,
        );
        match offer {
            Offer::Send => send.extend(group),
            Offer::Held(until) => coalesced.extend(group.iter().map(|d| {
                let why = format!("many requests from {}: held for one summary at {until}", message.requester);
                DeliveryRecord::coalesced(&d.contact, why, now).to_notification(&d.message)
            })),
        }
    }
    let deliveries = futures::stream::iter(send)
        .map(|d| async move {
            let record = ctx.notifier.deliver_contact(&ctx.client, &ctx.namespace, &d.contact, &d.message, retry).await;
            record.to_notification(&d.message)
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>();
    let event = Event {
        type_: if n.warning { EventType::Warning } else { EventType::Normal },
        reason: effects::event_reason(n).into(),
        note: Some(effects::event_note(n)),
        action: "Notify".into(),
        secondary: None,
    };
    let about = reference(ar);
    let (deliveries, published) = futures::join!(deliveries, ctx.recorder.publish(&event, &about));
    let mut records = vec![effects::event_record(n, published.map_err(|e| e.to_string()), jiff::Timestamp::now())];
    records.extend(deliveries);
    records.extend(coalesced);
    records
}

/// Every second, the summaries of ended windows: one message per recipient and
/// requester, to each contact the held pages had, listing the held requests.
async fn send_summaries(ctx: &Context) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let due = ctx.coalescer.lock().unwrap_or_else(|e| e.into_inner()).due(jiff::Timestamp::now());
        for (recipient, requester, held) in due {
            for (contact, message) in effects::summary(&recipient, &requester, &held) {
                let record =
                    ctx.notifier.deliver_contact(&ctx.client, &ctx.namespace, &contact, &message, &ctx.retry).await;
                info!(target: "audit", %recipient, %requester, requests = held.len(), result = record.result.as_str(),
                    "summary of coalesced pages sent");
            }
        }
    }
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

async fn reconcile(
    cached: Arc<PartialObjectMeta<ApprovalRequest>>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    if let Some(action) = ctx.known.skip(&cached.metadata, jiff::Timestamp::now()) {
        return Ok(action);
    }
    // A deadline step waits its turn by its deadline; anything else (a
    // decision, a new request) by when it arrived.
    let due = ctx.known.due(&cached.metadata);
    let _permit = ctx.gate.enter(due.unwrap_or_else(jiff::Timestamp::now)).await;
    // Boxed: thousands of reconciles may wait at the gate (after a restart, all
    // of them), each as small as this; the step's own state (its reads,
    // deliveries, writes: kilobytes) exists only for those that go through.
    Box::pin(read_and_step(cached, &ctx, due)).await
}

/// A reconcile's read and step, once through the gate.
async fn read_and_step(
    cached: Arc<PartialObjectMeta<ApprovalRequest>>,
    ctx: &Context,
    due: Option<jiff::Timestamp>,
) -> Result<Action, ReconcileError> {
    let now = jiff::Timestamp::now();
    // How late this step runs (its wake time passed): capacity, on the dashboard.
    if let Some(due) = due.filter(|due| *due <= now) {
        ctx.metrics.observe_lateness(Duration::try_from(now.duration_since(due)).unwrap_or_default());
    }
    let name = cached.name_any();
    let namespace = cached.namespace().unwrap_or_default();
    let api: Api<ApprovalRequest> = Api::namespaced(ctx.client.clone(), &namespace);
    // The version our last step left, as the cache shows it: nobody wrote since,
    // so the API server's watch cache holds it and answers without a quorum
    // read of etcd. Anything else (a decision, a cache behind our own write) is
    // read consistently.
    let read = match ctx.known.left(&cached.metadata) {
        Some(version) => match api.get_with(&name, &GetParams::at(&version)).await {
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            read => read.map(Some),
        },
        None => api.get_opt(&name).await,
    };
    let Some(ar) = read.map_err(|e| ReconcileError::Read(format!("{namespace}/{name}"), e))? else {
        ctx.known.forget(&cached.metadata);
        return Ok(Action::await_change());
    };
    step_and_write(ctx, ar, now).await
}

/// One step of a request just read: its effects, then its status write (bound
/// to the version read). Returns when to come back.
async fn step_and_write(ctx: &Context, ar: ApprovalRequest, now: jiff::Timestamp) -> Result<Action, ReconcileError> {
    let name = ar.name_any();
    let namespace = ar.namespace().unwrap_or_default();
    let api: Api<ApprovalRequest> = Api::namespaced(ctx.client.clone(), &namespace);
    let (teams, approvers) = people(ctx);
    let policies = ctx.policies.load();
    let world = World { policies: &policies, teams: &teams, approvers: &approvers };
    let mut step = super::step(&ar, world, now);
    // Where a GitOps-applied change came from, read once (before the first
    // pages, which say it); the hold never depends on it.
    let mut shown = std::borrow::Cow::Borrowed(&ar);
    if let Some(owner) = ar.spec.gitops.as_ref().filter(|_| step.status.gitops_source.is_none()) {
        let source = read_gitops_source(&ctx.client, owner, now).await;
        shown.to_mut().status.get_or_insert_with(Default::default).gitops_source = Some(source.clone());
        step.status.gitops_source = Some(source);
    }

    // Notifications go out tier by tier, in order (a receiver sees the ladder
    // as it is climbed); the Events and the runbook at the same time as them
    // (under load each is an API round trip; one after the other made a step
    // several round trips long). All are done before the status write.
    // Tier timing must not depend on a sink's health: delivery tries end before
    // the next wake (the next tier), less a margin for the status write.
    let retry = match step.wake_at {
        Some(at) => {
            let until = Duration::from_millis(at.duration_since(now).as_millis().max(0) as u64);
            // At least one whole attempt: a late step (its next wake already
            // near) still gives a slow but healthy sink its full try.
            ctx.retry.within(until.saturating_sub(DELIVERY_MARGIN).max(ctx.retry.attempt_timeout))
        }
        None => ctx.retry.clone(),
    };
    let notifications = async {
        let mut records = Vec::new();
        for effect in &step.effects {
            if let Effect::Notify(n) = effect {
                records.extend(notify(ctx, &shown, n, world, now, &retry).await);
            }
        }
        records
    };
    let others = futures::future::join_all(step.effects.iter().map(|effect| {
        let ar = &ar;
        async move {
            match effect {
                Effect::Notify(_) => {}
                Effect::Event { reason, note, warning } => {
                    let event = Event {
                        type_: if *warning { EventType::Warning } else { EventType::Normal },
                        reason: (*reason).into(),
                        note: Some(note.clone()),
                        action: "Escalate".into(),
                        secondary: None,
                    };
                    if let Err(e) = ctx.recorder.publish(&event, &reference(ar)).await {
                        warn!(error = %e, reason, "could not publish event");
                    }
                }
                Effect::RunbookConfigMap { name, text } => write_runbook(ctx, ar, name, text).await,
                // After the outcome's notifications (below): the change lands after they are told.
                Effect::HandBack { .. } => {}
            }
        }
    }));
    let (records, _) = futures::join!(notifications, others);
    effects::record_notifications(&mut step.status, records);
    for effect in &step.effects {
        if let Effect::HandBack { owner, attempt } = effect {
            let result = hand_back(&ctx.client, &ar, owner).await;
            let record = crate::gitops::hand_back_record(*attempt, step.status.attempt, result, jiff::Timestamp::now());
            let event = Event {
                type_: if record.result == "Done" { EventType::Normal } else { EventType::Warning },
                reason: if record.result == "Done" { "HandedBack".into() } else { "HandBackFailed".into() },
                note: Some(format!(
                    "{} (attempt {} of {})",
                    record.message.clone().unwrap_or_default(),
                    record.attempts,
                    crate::gitops::HAND_BACK_ATTEMPTS
                )),
                action: "HandBack".into(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&event, &reference(&ar)).await {
                warn!(error = %e, "could not publish the hand-back event");
            }
            info!(target: "audit", request = %format!("{namespace}/{name}"), result = %record.result,
                attempts = record.attempts, "approved change handed back to its GitOps owner");
            step.status.hand_back = Some(record);
            if let crate::gitops::Due::At(at) = crate::gitops::hand_back_due(&step.status, now) {
                step.wake_at = Some(step.wake_at.map_or(at, |w| w.min(at)));
            }
        }
    }

    let mut written = None;
    if let Some(patch) = effects::status_patch(&ar, &step.status) {
        written = Some(
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| ReconcileError::Write(format!("{namespace}/{name}"), e))?,
        );
        for n in step.status.notifications.iter().skip(ar.status.as_ref().map_or(0, |s| s.notifications.len())) {
            ctx.metrics.notification(&n.sink, &n.result);
        }
        let created = ar.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
        let held_for = Duration::try_from(now.duration_since(created)).unwrap_or_default();
        ctx.metrics.request_progressed(ar.status.as_ref(), &step.status, held_for);
        info!(target: "audit", request = %format!("{namespace}/{name}"), phase = ?step.status.phase,
            tier = ?step.status.tier, effects = step.effects.len(), "approval request progressed");
    }
    ctx.metrics.request_seen(&namespace, &name, &step.status);
    // The version we leave: the one our write produced, or the one we read.
    ctx.known.record(&written.as_ref().unwrap_or(&ar).metadata, step.wake_at);
    Ok(next_action(step.wake_at, jiff::Timestamp::now()))
}

/// How long a GitOps read or hand-back may take: it never holds up a step for long.
const GITOPS_TIMEOUT: Duration = Duration::from_secs(3);

fn dynamic_api(client: &kube::Client, kind: &str, namespace: &str) -> Option<Api<kube::api::DynamicObject>> {
    let r = crate::gitops::resource_of(kind)?;
    let gvk = kube::api::GroupVersionKind::gvk(r.group, r.version, kind);
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, r.plural);
    Some(Api::namespaced_with(client.clone(), namespace, &resource))
}

/// Why a GitOps object could not be read (`verb` "read") or patched, saying what to do.
fn api_error(verb: &str, kind: &str, namespace: &str, name: &str, e: &kube::Error) -> String {
    let grant = if verb == "read" { "get (the chart's gitops.read)" } else { "patch (the chart's gitops.handBack)" };
    match e {
        kube::Error::Api(s) if s.code == 404 => {
            format!("{kind} {namespace}/{name} not found (is its tool installed, its CRD served?)")
        }
        kube::Error::Api(s) if s.code == 403 => {
            format!("signoff may not {verb} {kind} {namespace}/{name}: grant it {grant}")
        }
        e => format!("could not {verb} {kind} {namespace}/{name}: {e}"),
    }
}

async fn get_dynamic(
    client: &kube::Client,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<serde_json::Value, String> {
    let api = dynamic_api(client, kind, namespace).ok_or_else(|| format!("{kind} is not a kind signoff reads"))?;
    match tokio::time::timeout(GITOPS_TIMEOUT, api.get(name)).await {
        Err(_) => Err(format!("reading {kind} {namespace}/{name} took longer than {GITOPS_TIMEOUT:?}")),
        Ok(Err(e)) => Err(api_error("read", kind, namespace, name, &e)),
        Ok(Ok(object)) => serde_json::to_value(object).map_err(|e| e.to_string()),
    }
}

/// The owner's revision and its source's URL; what could not be read is said.
async fn read_gitops_source(
    client: &kube::Client,
    owner: &crate::crd::GitOpsOwner,
    now: jiff::Timestamp,
) -> crate::crd::GitOpsSource {
    let mut source = crate::crd::GitOpsSource {
        url: None,
        revision: None,
        unreadable: None,
        at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::from_second(now.as_second()).unwrap_or(now),
        ),
    };
    let object = match get_dynamic(client, &owner.kind, &owner.namespace, &owner.name).await {
        Ok(object) => object,
        Err(why) => {
            source.unreadable = Some(why);
            return source;
        }
    };
    (source.revision, source.url) = crate::gitops::revision_and_url(owner, &object);
    if owner.tool == crate::crd::GitOpsTool::Flux {
        match crate::gitops::flux_source_ref(owner, &object) {
            Some((kind, namespace, name)) => match get_dynamic(client, &kind, &namespace, &name).await {
                Ok(found) => source.url = crate::gitops::source_url(&found),
                Err(why) => source.unreadable = Some(why),
            },
            None => {
                source.unreadable = Some(format!("{} {}/{} names no source", owner.kind, owner.namespace, owner.name))
            }
        }
    }
    source
}

/// Ask the owner to apply the approved change now: what was done, or why not.
async fn hand_back(
    client: &kube::Client,
    ar: &ApprovalRequest,
    owner: &crate::crd::GitOpsOwner,
) -> Result<String, String> {
    let what = format!("{} {} {}/{}", owner.tool.as_str(), owner.kind, owner.namespace, owner.name);
    let api = dynamic_api(client, &owner.kind, &owner.namespace).ok_or_else(|| format!("{what}: unknown kind"))?;
    let patch = match owner.tool {
        crate::crd::GitOpsTool::Flux => crate::gitops::flux_patch(jiff::Timestamp::now()),
        crate::crd::GitOpsTool::ArgoCD => {
            let app = get_dynamic(client, &owner.kind, &owner.namespace, &owner.name).await?;
            let action = &ar.spec.action;
            let resource = crate::gitops::SyncResource {
                group: action.group.clone(),
                kind: action.kind.clone(),
                namespace: action.namespace.clone(),
                name: action.name.clone(),
            };
            let request = format!("{}/{}", ar.namespace().unwrap_or_default(), ar.name_any());
            match crate::gitops::argocd_patch(&app, &resource, &request)? {
                crate::gitops::ArgoStep::Sync(patch) => patch,
                crate::gitops::ArgoStep::Terminate(patch) => {
                    patch_owner(&api, owner, &what, &patch).await?;
                    return Err(format!(
                        "terminated {what}'s retry of the sync this hold failed; syncing the approved resource next"
                    ));
                }
            }
        }
    };
    patch_owner(&api, owner, &what, &patch).await?;
    Ok(match owner.tool {
        crate::crd::GitOpsTool::Flux => {
            format!("asked {what} to apply the approved change ({})", crate::gitops::FLUX_REQUESTED_AT)
        }
        crate::crd::GitOpsTool::ArgoCD => format!("started a sync of the approved resource on {what}"),
    })
}

/// Merge-patch the GitOps owner (`what` names it), within the GitOps time limit.
async fn patch_owner(
    api: &Api<kube::api::DynamicObject>,
    owner: &crate::crd::GitOpsOwner,
    what: &str,
    patch: &serde_json::Value,
) -> Result<(), String> {
    let (params, merge) = (PatchParams::default(), Patch::Merge(patch));
    match tokio::time::timeout(GITOPS_TIMEOUT, api.patch(&owner.name, &params, &merge)).await {
        Err(_) => Err(format!("patching {what} took longer than {GITOPS_TIMEOUT:?}")),
        Ok(Err(e)) => Err(api_error("patch", &owner.kind, &owner.namespace, &owner.name, &e)),
        Ok(Ok(_)) => Ok(()),
    }
}

fn error_policy(_ar: Arc<PartialObjectMeta<ApprovalRequest>>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    // Conflicts are normal (a decision arrived between read and write): retry soon.
    warn!(%error, "reconcile failed; retrying");
    Action::requeue(Duration::from_millis(300))
}

/// Teams and Approvers as the step reads them, from the caches.
fn people(ctx: &Context) -> (Vec<Team>, Vec<Approver>) {
    let teams = ctx.teams.state().iter().map(|t| (**t).clone()).collect();
    let approvers = ctx.approvers.state().iter().map(|a| (**a).clone()).collect();
    (teams, approvers)
}

/// Requests per page of the startup read.
const STARTUP_PAGE: u32 = 500;

/// Steps that call the API server at once (the gate's places): after a
/// restart with thousands of overdue requests, unbounded steps each open their
/// own connections (a TLS handshake storm) and all finish late instead of most
/// finishing early.
pub const RECONCILE_CONCURRENCY: usize = 32;

/// When a request needed its step: the earliest passed deadline of a pending
/// lane, else its creation (a new request, a decision that arrived while no
/// leader ran, an outcome not yet told).
fn needed_since(ar: &ApprovalRequest, now: jiff::Timestamp) -> jiff::Timestamp {
    let lanes = ar.status.iter().flat_map(|s| &s.lanes);
    let passed = lanes
        .filter(|l| l.phase == crate::crd::Phase::Pending)
        .filter_map(|l| l.tier_deadline.as_ref().map(|d| d.0))
        .filter(|d| *d <= now)
        .min();
    passed.or(ar.metadata.creation_timestamp.as_ref().map(|t| t.0)).unwrap_or(now)
}

/// The startup read: every request once, a page at a time. A settled request
/// is remembered with when it is next due, so the first pass skips its read.
/// The others (deadlines passed while no leader ran, new requests, decisions
/// to apply) are stepped here from the copy just read, earliest first, once
/// the whole list is known: after an outage the escalation that has waited
/// longest goes out first, instead of in the order of names. `listed` tells the
/// first pass that every request read here is accounted for; a request that
/// fails here goes back to the controller through `retry`.
async fn startup(
    ctx: &Context,
    listed: tokio::sync::watch::Sender<bool>,
    retry: futures::channel::mpsc::UnboundedSender<ObjectRef<PartialObjectMeta<ApprovalRequest>>>,
) {
    let started = std::time::Instant::now();
    let api: Api<ApprovalRequest> = Api::all(ctx.client.clone());
    // Only which and since when: thousands of whole requests held here for the
    // catch-up doubled the process's memory after a restart.
    let mut overdue: Vec<(jiff::Timestamp, ObjectMeta)> = Vec::new();
    let mut params = ListParams::default().limit(STARTUP_PAGE);
    let mut read = 0;
    {
        let (teams, approvers) = people(ctx);
        let policies = ctx.policies.load();
        let world = World { policies: &policies, teams: &teams, approvers: &approvers };
        let now = jiff::Timestamp::now();
        loop {
            let page = match api.list(&params).await {
                Ok(page) => page,
                Err(e) => {
                    warn!(error = %e, "listing ApprovalRequests at startup failed; each is read on its first reconcile");
                    break;
                }
            };
            read += page.items.len();
            for ar in &page.items {
                let step = super::step(ar, world, now);
                if step.effects.is_empty() && ar.status.as_ref() == Some(&step.status) {
                    ctx.known.record(&ar.metadata, step.wake_at);
                } else {
                    // In hand: the first pass leaves it to the catch-up below.
                    ctx.known.record(&ar.metadata, None);
                    let meta = ObjectMeta {
                        name: ar.metadata.name.clone(),
                        namespace: ar.metadata.namespace.clone(),
                        resource_version: ar.metadata.resource_version.clone(),
                        ..Default::default()
                    };
                    overdue.push((needed_since(ar, now), meta));
                }
            }
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
    }
    let _ = listed.send(true);
    overdue.sort_by_key(|(since, _)| *since);
    info!(
        requests = read,
        overdue = overdue.len(),
        seconds = started.elapsed().as_secs_f64(),
        "startup read done; stepping the overdue requests, earliest first"
    );
    futures::stream::iter(overdue)
        .map(|(since, meta)| {
            let retry = retry.clone();
            async move {
                let _permit = ctx.gate.enter(since).await;
                // Known as in hand at the listed version: read from the watch
                // cache at that version (or newer), as any step of ours is.
                let cached = Arc::new(PartialObjectMeta { types: None, metadata: meta, _phantom: Default::default() });
                // Boxed, as in `reconcile`: thousands wait at the gate.
                if let Err(error) = Box::pin(read_and_step(cached.clone(), ctx, Some(since))).await {
                    warn!(%error, "catch-up step failed; the controller reads the request again");
                    ctx.known.forget(&cached.metadata);
                    let _ = retry.unbounded_send(ObjectRef::from_obj(&*cached));
                }
            }
        })
        // All at once: the gate lets them through earliest first.
        .buffer_unordered(usize::MAX)
        .for_each(|_| async {})
        .await;
}

/// Run the reconciler until the stream ends (or the task is aborted on losing
/// leadership).
/// `requests` is the watch of every request's metadata (the runtime's, without
/// managedFields): the cache holds every request, so it holds their metadata
/// only; a reconcile reads the request itself (see `Known`).
pub async fn run<S>(ctx: Arc<Context>, requests: S)
where
    S: futures::Stream<Item = Result<watcher::Event<PartialObjectMeta<ApprovalRequest>>, watcher::Error>>
        + Send
        + 'static,
{
    let (reader, writer) = kube::runtime::reflector::store();
    let known = ctx.clone();
    let requests = requests
        .inspect_ok(move |event| {
            if let watcher::Event::Delete(gone) = event {
                known.known.forget(&gone.metadata);
                let (ns, name) = (gone.metadata.namespace.as_deref(), gone.metadata.name.as_deref());
                known.metrics.request_gone(ns.unwrap_or_default(), name.unwrap_or_default());
            }
        })
        .reflect(writer)
        .applied_objects();
    // Unbounded here: a reconcile that calls the API server waits at the gate
    // (`Context::gate`, RECONCILE_CONCURRENCY places, earliest due first).
    // kube's own bound would hold the rest in no order.
    let config = kube::runtime::controller::Config::default().concurrency(0);
    let (listed_tx, listed) = tokio::sync::watch::channel(false);
    let (retry_tx, retry) = futures::channel::mpsc::unbounded();
    // The first pass waits for the startup read for the requests it does not
    // know yet: the read remembers the settled ones (no read each) and steps
    // the overdue ones in deadline order (not twice).
    let reconcile_after_startup = move |cached: Arc<PartialObjectMeta<ApprovalRequest>>, ctx: Arc<Context>| {
        let mut listed = listed.clone();
        async move {
            if !ctx.known.knows(&cached.metadata) {
                let _ = listed.wait_for(|done| *done).await;
            }
            reconcile(cached, ctx).await
        }
    };
    let controller = Controller::for_stream(requests, reader)
        .with_config(config)
        .reconcile_on(retry)
        .run(reconcile_after_startup, error_policy, ctx.clone())
        .for_each(|_| async {});
    futures::join!(startup(&ctx, listed_tx, retry_tx), controller, send_summaries(&ctx));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ActionClass, Decision, Verdict};
    use crate::fixtures::{Call, MockApi, conflict, policy_set, request, teams};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::runtime::events::Reporter;

    const REQUEST: &str = "/apis/signoff.dev/v1alpha1/namespaces/prod/approvalrequests/ar-1";
    const STATUS: &str = "/apis/signoff.dev/v1alpha1/namespaces/prod/approvalrequests/ar-1/status";
    const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/prod/events";

    /// The reconciler's context on a mock API server, with the test teams.
    fn context(api: &MockApi) -> Arc<Context> {
        let client = api.client();
        let (team_store, mut team_writer) = kube::runtime::reflector::store();
        for team in teams() {
            team_writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(team));
        }
        let (approvers, _) = kube::runtime::reflector::store();
        Arc::new(Context {
            client: client.clone(),
            policies: Arc::new(arc_swap::ArcSwap::from_pointee(policy_set(""))),
            teams: team_store,
            approvers,
            recorder: crate::events::Events::new(client, Reporter { controller: "signoff".into(), instance: None }),
            namespace: "signoff-system".into(),
            notifier: Notifier::new(),
            retry: escalation_retry(),
            known: Known::default(),
            coalescer: coalescer(Duration::ZERO, 1),
            metrics: Default::default(),
            ui_url: None,
            gate: crate::escalation::gate::Gate::new(RECONCILE_CONCURRENCY),
        })
    }

    #[test]
    fn the_backlog_counts_steps_overdue_beyond_the_grace() {
        let known = Known::default();
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let meta = |name: &str| ObjectMeta {
            name: Some(name.into()),
            namespace: Some("prod".into()),
            resource_version: Some("1".into()),
            ..Default::default()
        };
        let secs = |s: i64| now.checked_add(jiff::SignedDuration::from_secs(s)).unwrap();
        known.record(&meta("late"), Some(secs(-5)));
        known.record(&meta("just-due"), Some(secs(0)));
        known.record(&meta("later"), Some(secs(30)));
        known.record(&meta("settled"), None);
        assert_eq!(known.overdue(now, Duration::from_secs(1)), 1);
        assert_eq!(known.due(&meta("late")), Some(secs(-5)));
        known.forget(&meta("late"));
        assert_eq!(known.overdue(now, Duration::from_secs(1)), 0);
    }

    /// A fresh request as the API server returns it, with a decision by
    /// someone the step does not count (it stays Pending and escalates).
    fn stored_request() -> ApprovalRequest {
        let mut ar = request(ActionClass::Routine, &[("engineering", "payments")]);
        ar.metadata.resource_version = Some("7".into());
        ar.status = Some(crate::crd::ApprovalRequestStatus {
            decisions: vec![Decision {
                approver: "mallory".into(),
                uid: None,
                groups: vec![],
                decision: Verdict::Approve,
                routes: vec![],
                comment: Some("not eligible".into()),
                at: Time(jiff::Timestamp::now()),
                attempt: 1,
            }],
            ..Default::default()
        });
        ar
    }

    /// The API server: the request on GET, events echoed, status writes
    /// answered by `status` (the stored request with a new version on 200).
    fn serve(api: &MockApi, ar: &ApprovalRequest, mut status: impl FnMut(usize) -> u16 + Send + 'static) {
        let read = serde_json::to_value(ar).unwrap();
        let mut written = read.clone();
        written["metadata"]["resourceVersion"] = "8".into();
        let mut writes = 0;
        api.on("GET", REQUEST, move |_| (200, read.clone())).on("POST", EVENTS, |call| (201, call.body.clone())).on(
            "PATCH",
            STATUS,
            move |_| {
                writes += 1;
                match status(writes) {
                    409 => (409, conflict()),
                    code => (code, written.clone()),
                }
            },
        );
    }

    fn cached(ar: &ApprovalRequest) -> Arc<PartialObjectMeta<ApprovalRequest>> {
        Arc::new(PartialObjectMeta { types: None, metadata: ar.metadata.clone(), _phantom: Default::default() })
    }

    /// One step's calls: the read, then its Events (at least the tier's; in any
    /// order, they go out together), and the status write last.
    fn assert_step(calls: &[Call], what: &str) {
        let lines: Vec<String> = calls.iter().map(Call::line).collect();
        let (read, rest) = lines.split_first().unwrap_or_else(|| panic!("{what}: no calls"));
        let (write, effects) = rest.split_last().unwrap_or_else(|| panic!("{what}: no write: {lines:?}"));
        assert_eq!(*read, format!("GET {REQUEST}"), "{what}: {lines:?}");
        assert_eq!(*write, format!("PATCH {STATUS}"), "{what}: {lines:?}");
        assert!(!effects.is_empty(), "{what}: effects before the write: {lines:?}");
        assert!(effects.iter().all(|l| *l == format!("POST {EVENTS}")), "{what}: {lines:?}");
    }

    #[tokio::test]
    async fn effects_go_out_before_the_status_write_which_never_carries_decisions() {
        let api = MockApi::default();
        let ar = stored_request();
        serve(&api, &ar, |_| 200);
        let ctx = context(&api);

        let action = reconcile(cached(&ar), ctx.clone()).await.expect("the step is written");
        assert_ne!(action, Action::await_change(), "a pending request wakes at its tier deadline");

        let calls = api.calls();
        assert_step(&calls, "read, then the tier's Events, then the status: a crash in between repeats the step");
        let patch = &calls[calls.len() - 1].body;
        assert_eq!(patch["metadata"]["resourceVersion"], "7", "bound to the version read");
        let status = patch["status"].as_object().expect("a status");
        assert!(!status.contains_key("decisions"), "the controller never sends decisions: {patch}");
        assert!(!status.contains_key("admissions"), "nor admissions: {patch}");
        assert_eq!(status["phase"], "Pending");
        assert_eq!(status["lanes"][0]["tier"], 0);
        let events: Vec<_> = calls.iter().filter(|c| c.method == "POST").collect();
        assert_eq!(events.len(), 1, "one Event per tier reached: {events:?}");
        let note = events[0].body["note"].as_str().unwrap();
        assert_eq!(events[0].body["reason"], "Escalated");
        assert!(note.starts_with("engineering reached tier 1 (") && note.contains(" until 20"), "{note}");

        // Our own write comes back as a watch event: nothing is due, nothing is read.
        let mut echoed = ar.clone();
        echoed.metadata.resource_version = Some("8".into());
        reconcile(cached(&echoed), ctx).await.expect("skipped");
        assert_eq!(api.calls().len(), calls.len(), "our own write is not read back before it is due");
    }

    #[tokio::test]
    async fn a_conflicting_status_write_is_retried_from_a_fresh_read() {
        let api = MockApi::default();
        let ar = stored_request();
        serve(&api, &ar, |write| if write == 1 { 409 } else { 200 });
        let ctx = context(&api);

        let error = reconcile(cached(&ar), ctx.clone()).await.expect_err("409 fails the reconcile");
        assert!(matches!(error, ReconcileError::Write(..)), "{error}");
        assert_eq!(
            error_policy(cached(&ar), &error, ctx.clone()),
            Action::requeue(Duration::from_millis(300)),
            "retried soon"
        );
        let first = api.calls();
        assert_step(&first, "the failed attempt");
        reconcile(cached(&ar), ctx).await.expect("the retry is written");
        let calls = api.calls();
        let retry = &calls[first.len()..];
        assert_step(retry, "the retry reads the request again (a decision may have arrived) and repeats the step");
        let (first, retry) = (&first[first.len() - 1], &retry[retry.len() - 1]);
        let keys = |patch: &serde_json::Value| -> Vec<String> {
            let records = patch["status"]["notifications"].as_array().cloned().unwrap_or_default();
            records.iter().map(|n| n["key"].as_str().unwrap_or_default().to_string()).collect()
        };
        assert!(!keys(&first.body).is_empty());
        assert_eq!(keys(&first.body), keys(&retry.body), "the same step, the same idempotency keys");
    }

    fn copy(name: &str, version: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team-a".into()),
            resource_version: Some(version.into()),
            ..Default::default()
        }
    }

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    #[test]
    fn a_known_version_is_read_again_only_when_its_step_is_due() {
        let known = Known::default();
        assert!(known.skip(&copy("a", "10"), at(0)).is_none(), "never seen: read it");
        known.record(&copy("a", "10"), Some(at(75)));
        assert_eq!(known.skip(&copy("a", "10"), at(0)), Some(Action::requeue(Duration::from_secs(75))));
        assert!(known.skip(&copy("a", "10"), at(75)).is_none(), "due: read it and step");
        assert!(known.skip(&copy("a", "11"), at(0)).is_none(), "someone else wrote (a decision): read it");
        assert!(known.skip(&copy("b", "10"), at(0)).is_none(), "another request is not affected");
        known.record(&copy("a", "12"), None);
        assert_eq!(known.skip(&copy("a", "12"), at(9_999)), Some(Action::await_change()), "settled: wait for a change");
        known.forget(&copy("a", "12"));
        assert!(known.skip(&copy("a", "12"), at(0)).is_none(), "forgotten once deleted");
        assert!(known.0.lock().unwrap().is_empty());
    }
}
