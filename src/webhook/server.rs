//! The webhook's HTTP side: decode an AdmissionReview, dispatch it to the gate or
//! to a guard, do the I/O the decision needs, encode the answer. Every error on
//! the way denies (invariant 1); the pure decisions live in `review` and `guard`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use super::guard;
use super::review::{self, Answer, GateSettings, Preliminary};
use super::route::{self, Route};
use crate::approval::{self, Denial, Identities};
use crate::crd::{Admission, ApprovalRequest, Approver, EscalationPolicy, GROUP};
use crate::metrics::Metrics;
use crate::policy::{Gvk, Gvr, PolicySet, ReviewInput, UserInfo, budget, classify, side_doors};

/// The largest AdmissionReview accepted: an object and its old version can each be
/// up to etcd's 1.5 MiB limit (and 3 MiB through the API); more is refused.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Everything a review needs. The router shares one (an `Arc`): cloning it per
/// review copied the settings' strings every time (issue 25).
#[derive(Clone)]
pub struct WebhookState {
    pub client: kube::Client,
    pub policies: Arc<arc_swap::ArcSwap<PolicySet>>,
    pub namespaces: Store<Namespace>,
    /// The cached Namespaces as the JSON rules read, made once per version.
    pub namespace_json: NamespaceJson,
    pub settings: GateSettings,
    pub identities: Identities,
    pub recorder: crate::events::Events,
    pub metrics: Arc<Metrics>,
    /// Every request's requester, target and liveness, for flood control.
    pub requests: super::requests::Requests,
    /// Deadline for one review; shorter than the webhook's timeoutSeconds.
    pub deadline: Duration,
}

/// The router: POST /validate. The body limit is enforced in `validate` itself.
pub fn router(state: WebhookState) -> Router {
    Router::new().route("/validate", post(validate)).layer(DefaultBodyLimit::disable()).with_state(Arc::new(state))
}

/// The JSON of each cached Namespace (what `namespaceObject` and the selectors
/// read), converted once per resourceVersion and shared by the reviews: the
/// conversion on every review was about 2.5% of signoff's CPU per review
/// (issue 25). Bounded: emptied when it holds more entries than any cluster
/// this serves should have namespaces, which also drops deleted ones.
#[derive(Clone, Default)]
pub struct NamespaceJson(Arc<std::sync::Mutex<HashMap<String, Converted>>>);

/// A Namespace's resourceVersion and its JSON.
type Converted = (String, Arc<serde_json::Value>);

impl NamespaceJson {
    const MAX_ENTRIES: usize = 10_000;

    /// `namespace` as JSON; converted unless this version was converted before.
    pub fn of(&self, namespace: &Namespace) -> Option<Arc<serde_json::Value>> {
        let (Some(name), Some(version)) = (&namespace.metadata.name, &namespace.metadata.resource_version) else {
            // Without a version a change could not be told apart: convert every time.
            return serde_json::to_value(namespace).ok().map(Arc::new);
        };
        let mut memo = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((seen, json)) = memo.get(name)
            && seen == version
        {
            return Some(Arc::clone(json));
        }
        let json = Arc::new(serde_json::to_value(namespace).ok()?);
        if memo.len() >= Self::MAX_ENTRIES {
            memo.clear();
        }
        memo.insert(name.clone(), (version.clone(), Arc::clone(&json)));
        Some(json)
    }
}

fn too_large(size: &str) -> Response {
    let message = format!(
        "signoff: AdmissionReview body exceeds {MAX_BODY_BYTES} bytes (8 MiB){size}; refused without reading it. \
         The API server never sends reviews this large; check what is calling the webhook."
    );
    (StatusCode::PAYLOAD_TOO_LARGE, message).into_response()
}

fn deny(req: &AdmissionRequest<DynamicObject>, message: impl ToString) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(req).deny(message);
    response.result.code = 403;
    response.result.reason = "Forbidden".into();
    response
}

fn allow(req: &AdmissionRequest<DynamicObject>, warnings: Vec<String>) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(req);
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response
}

async fn validate(State(state): State<Arc<WebhookState>>, request: axum::extract::Request) -> Response {
    let started = std::time::Instant::now();
    // Refuse an oversized body on its header, before reading any of it.
    let declared = request.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    if let Some(length) = declared.and_then(|v| v.parse::<u64>().ok()).filter(|l| *l > MAX_BODY_BYTES as u64) {
        state.metrics.review("malformed");
        return too_large(&format!(" (Content-Length {length})"));
    }
    let body: Bytes = match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            state.metrics.review("malformed");
            return too_large("");
        }
    };
    let (mut req, objects) = match parse_review(&body) {
        Ok(parsed) => parsed,
        Err(Malformed::Json(e)) => {
            state.metrics.review("malformed");
            return (StatusCode::BAD_REQUEST, format!("signoff: malformed AdmissionReview: {e}")).into_response();
        }
        Err(Malformed::Review(e)) => {
            state.metrics.review("malformed");
            let response = AdmissionResponse::invalid(format!("signoff: malformed AdmissionReview: {e}"));
            return Json(response.into_review()).into_response();
        }
    };
    // Parsed: free the raw body now, not after the API calls a held change waits on
    // (a 3 MiB review would otherwise hold both copies for seconds under load).
    drop(body);
    if req.uid.is_empty() {
        state.metrics.review("malformed");
        return (StatusCode::BAD_REQUEST, "signoff: AdmissionReview request has no uid").into_response();
    }
    // The audit line's decision (held, admitted_low_risk, ...) labels the review's time.
    let (response, decision) = DECISION
        .scope(std::cell::Cell::new(None), async {
            let response = match tokio::time::timeout(state.deadline, review_request(&state, &mut req, objects)).await {
                Ok(response) => response,
                Err(_) => deny(
                    &req,
                    format!(
                        "signoff could not decide within {:?}; denied to be safe. Retry in a moment.",
                        state.deadline
                    ),
                ),
            };
            (response, DECISION.with(|d| d.get()))
        })
        .await;
    let result = if response.allowed { "allowed" } else { "denied" };
    state.metrics.review(result);
    let operation = format!("{:?}", req.operation);
    state.metrics.observe_review(&operation, &req.kind.kind, decision.unwrap_or(result), started.elapsed());
    Json(response.into_review()).into_response()
}

fn user_of(req: &AdmissionRequest<DynamicObject>) -> UserInfo {
    UserInfo {
        username: req.user_info.username.clone().unwrap_or_default(),
        uid: req.user_info.uid.clone().unwrap_or_default(),
        groups: req.user_info.groups.clone().unwrap_or_default(),
    }
}

fn typed<T: DeserializeOwned>(object: &Option<serde_json::Value>) -> Result<Option<T>, Denial> {
    object.as_ref().map(T::deserialize).transpose().map_err(|e| Denial::invalid("", format!("malformed object: {e}")))
}

/// A review that cannot be answered: not JSON (or not an AdmissionReview at
/// all), or an AdmissionReview without a request.
#[derive(Debug)]
pub enum Malformed {
    Json(serde_json::Error),
    Review(String),
}

/// The reviewed objects, kept as the JSON the API server sent.
#[derive(Debug, Default)]
pub struct Objects {
    pub object: Option<serde_json::Value>,
    pub old_object: Option<serde_json::Value>,
}

/// Parses an AdmissionReview, keeping its objects as JSON. Parsing them into
/// kube's DynamicObject buffers each whole (its fields are flattened) and
/// converts the metadata twice; classification reads JSON anyway.
pub fn parse_review(body: &[u8]) -> Result<(AdmissionRequest<DynamicObject>, Objects), Malformed> {
    let mut review: serde_json::Value = serde_json::from_slice(body).map_err(Malformed::Json)?;
    let mut objects = Objects::default();
    if let Some(request) = review.get_mut("request").and_then(serde_json::Value::as_object_mut) {
        let mut take = |key: &str| -> Result<Option<serde_json::Value>, Malformed> {
            match request.remove(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(object @ serde_json::Value::Object(_)) => Ok(Some(object)),
                Some(other) => Err(Malformed::Review(format!("{key} is not an object: {other}"))),
            }
        };
        objects = Objects { object: take("object")?, old_object: take("oldObject")? };
    }
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(review).map_err(Malformed::Json)?;
    let req = review
        .try_into()
        .map_err(|e: kube::core::admission::ConvertAdmissionReviewError| Malformed::Review(e.to_string()))?;
    Ok((req, objects))
}

async fn review_request(
    state: &WebhookState,
    req: &mut AdmissionRequest<DynamicObject>,
    objects: Objects,
) -> AdmissionResponse {
    match route::by_resource(&req.resource.group, &req.resource.resource) {
        Some(Route::OwnResource) => guard_own_resource(state, req, &objects),
        Some(_) => allow(req, vec![]),
        None => gate(state, req, objects).await,
    }
}

/// Guards for ApprovalRequests, EscalationPolicies and Approvers.
fn guard_own_resource(
    state: &WebhookState,
    req: &AdmissionRequest<DynamicObject>,
    objects: &Objects,
) -> AdmissionResponse {
    let user = user_of(req);
    let op = format!("{:?}", req.operation).to_uppercase();
    let mut policy_change = None;
    let verdict = match req.resource.resource.as_str() {
        "approvalrequests" => (|| {
            let old: Option<ApprovalRequest> = typed(&objects.old_object)?;
            let new: Option<ApprovalRequest> = typed(&objects.object)?;
            let sub = req.sub_resource.as_deref().unwrap_or_default();
            approval::approval_write(
                &op,
                sub,
                old.as_ref(),
                new.as_ref(),
                &user,
                &state.identities,
                jiff::Timestamp::now(),
            )
        })(),
        "escalationpolicies" => {
            match typed::<EscalationPolicy>(&objects.object)
                .and_then(|n| Ok((n, typed::<EscalationPolicy>(&objects.old_object)?)))
            {
                Ok((new, old)) => {
                    // DELETE: RBAC decides; every change is recorded below.
                    let valid = new.as_ref().map_or(Ok(()), guard::policy_write);
                    if valid.is_ok() {
                        policy_change = guard::policy_change(old.as_ref(), new.as_ref());
                    }
                    valid
                }
                Err(e) => Err(e),
            }
        }
        "approvers" => {
            match typed(&objects.object).and_then(|n: Option<Approver>| Ok((n, typed(&objects.old_object)?))) {
                Ok((new, old)) => {
                    [new, old].iter().flatten().try_for_each(|a| guard::approver_write(a, &user, &state.identities))
                }
                Err(e) => Err(e),
            }
        }
        _ => Ok(()),
    };
    match verdict {
        Ok(()) => {
            allow(req, policy_change.map(|c| record_policy_change(state, req, objects, &user, &c)).unwrap_or_default())
        }
        Err(denial) => {
            let _ = DECISION.try_with(|d| d.set(Some("refused")));
            info!(target: "audit", decision = "refused", user = %user.username, resource = %req.resource.resource,
                name = %req.name, namespace = ?req.namespace, field = denial.field(), message = %denial,
                "write to a signoff resource refused");
            deny(req, denial)
        }
    }
}

fn namespace_object(state: &WebhookState, req: &AdmissionRequest<DynamicObject>) -> Option<Arc<serde_json::Value>> {
    let ns = req.namespace.as_deref().filter(|n| !n.is_empty())?;
    let cached = state.namespaces.get(&ObjectRef::new(ns))?;
    state.namespace_json.of(&cached)
}

async fn gate(state: &WebhookState, req: &mut AdmissionRequest<DynamicObject>, objects: Objects) -> AdmissionResponse {
    let mut ns_object = namespace_object(state, req);
    if ns_object.is_none()
        && let Some(ns) = req.namespace.as_deref().filter(|n| !n.is_empty())
    {
        // Not cached yet (just created): read it, so its labels are not missed.
        match Api::<Namespace>::all(state.client.clone()).get_opt(ns).await {
            Ok(found) => ns_object = found.and_then(|n| serde_json::to_value(n).ok()).map(Arc::new),
            Err(e) => return deny(req, format!("signoff could not read namespace {ns}: {e}; denied to be safe")),
        }
    }
    // Shared, not copied, with the blocking thread expensive classifications run on.
    let received = Arc::new(ReviewInput::from_request(req, objects.object, objects.old_object, ns_object));
    if received.kind.kind.is_empty() || received.resource.resource.is_empty() || received.resource.version.is_empty() {
        return deny(req, "signoff: malformed admission request: kind or resource is empty; denied to be safe");
    }
    // A finalizer removal that completes a deletion is judged as that DELETE.
    let finalizing = review::finalizing_delete(&received).map(Arc::new);
    // A metadata change through /status is judged as the UPDATE of the object.
    let status_metadata = review::status_metadata_change(&received).map(Arc::new);
    let judged = finalizing.as_ref().or(status_metadata.as_ref());
    let input: &Arc<ReviewInput> = judged.unwrap_or(&received);
    // One policy set for the whole review (the blocking path below shares it).
    let policies = state.policies.load_full();
    // signoff's namespace labels are its trust anchors: never through a
    // subresource; on the namespace, held by a policy or changed by an admin.
    let anchors = route::anchor_labels_changed(&received);
    if !anchors.is_empty() && !received.sub_resource.is_empty() {
        let message = route::anchor_subresource_denial(&received, &anchors);
        audit(&received, "denied-anchor-subresource", &message);
        return deny(req, message);
    }
    if let Route::Uncovered(message) =
        route::route(&received, judged.map(|j| &**j), &policies, state.settings.refuse_uncovered)
        && anchors.is_empty()
    {
        audit(&received, "denied-unknown-resource", &message);
        return deny(req, message);
    }
    // A write that makes a controller perform a held change is judged as that change.
    let enabled = match enabled_changes(state, &policies, input).await {
        Ok(enabled) => enabled,
        Err(message) => {
            audit(input, "denied-error", &message);
            return deny(req, message);
        }
    };
    // Saturating: a large review's estimate is unbounded (u64::MAX).
    let estimate =
        enabled.iter().fold(policies.estimate_for(input), |sum, e| sum.saturating_add(policies.estimate_for(&e.input)));
    let evaluating = std::time::Instant::now();
    let assessment = if estimate <= budget::INLINE_LIMIT {
        side_doors::with_enabled(classify(input, &policies), &enabled, &policies)
    } else {
        // Expensive policies, or large objects, run on a blocking thread: the async
        // workers keep answering other reviews, and the review's deadline still
        // answers this one.
        let (judged, set) = (Arc::clone(input), Arc::clone(&policies));
        let classified =
            tokio::task::spawn_blocking(move || side_doors::with_enabled(classify(&judged, &set), &enabled, &set));
        match classified.await {
            Ok(assessment) => assessment,
            Err(e) => {
                let message = format!("signoff could not classify this change: {e}; denied to be safe, retry");
                audit(input, "denied-error", &message);
                return deny(req, message);
            }
        }
    };
    state.metrics.observe_rules(evaluating.elapsed());
    let break_glass = state.settings.break_glass_group(&received.user).is_some();
    if !anchors.is_empty() && !assessment.held() && !state.identities.is_admin(&received.user) && !break_glass {
        let message = route::anchor_denial(&received, &anchors);
        audit(&received, "denied-anchor", &message);
        return deny(req, message);
    }
    match review::preliminary(input, &assessment, &state.settings) {
        Preliminary::Admit { warnings } => {
            if warnings.is_empty() {
                let rules = assessment.fired.iter().map(|f| format!("{}/{}", f.policy, f.rule)).collect::<Vec<_>>();
                audit(input, "admitted-low-risk", &format!("low risk; rules fired: {rules:?}"));
            } else {
                audit(input, "audit-only", &warnings.join("; "));
            }
            allow(req, warnings)
        }
        Preliminary::NoOp => {
            audit(input, "admitted-no-op", "the update changes nothing that matters");
            allow(req, vec![])
        }
        Preliminary::DryRun { warning } => {
            audit(input, "dry-run", &warning);
            allow(req, vec![warning])
        }
        Preliminary::BreakGlass { warning } => {
            audit(input, "break-glass", &warning);
            state.metrics.decision("break-glass");
            // Recording in the request is best effort and bounded: break-glass exists
            // for emergencies, when the API may be slow; the audit line and Event stand.
            let budget = state.deadline / 2;
            let recorded = tokio::time::timeout(budget, record_break_glass(state, input, &assessment, &policies)).await;
            let reference = match recorded {
                Ok(Ok(ar)) => request_reference(&ar),
                Ok(Err(e)) => {
                    warn!(error = %e, "break-glass admission not recorded in an ApprovalRequest");
                    target_reference(state, input)
                }
                Err(_) => {
                    warn!(?budget, "break-glass admission not recorded in an ApprovalRequest in time");
                    target_reference(state, input)
                }
            };
            publish(state, EventType::Warning, "BreakGlass", "Admit", &warning, &reference);
            allow(req, vec![warning])
        }
        Preliminary::Held { digest, namespace, name } => {
            let finalizing = finalizing.is_some();
            held(state, req, input, &assessment, &policies, &digest, &namespace, &name, finalizing).await
        }
    }
}

/// The changes `input` makes a controller perform (policy::side_doors), with
/// what only the API server can tell: the kinds a namespace's deletion sweeps,
/// and the plural of an autoscaler's custom target.
async fn enabled_changes(
    state: &WebhookState,
    policies: &PolicySet,
    input: &ReviewInput,
) -> Result<Vec<side_doors::Enabled>, String> {
    let mut enabled = side_doors::enabled_changes(input);
    if side_doors::is_namespace_delete(input) {
        let kinds = swept_kinds(state, policies).await.map_err(|e| {
            format!(
                "signoff could not find out what deleting namespace {} deletes: {e}; denied to be safe, retry",
                input.name
            )
        })?;
        enabled.extend(side_doors::namespace_sweep(input, &kinds));
    }
    if let Some((group, version, kind)) = side_doors::scale_target(input)
        && side_doors::workload_resource(&group, &kind).is_none()
    {
        let gvk = kube::core::GroupVersionKind::gvk(&group, &version, &kind);
        match kube::discovery::pinned_kind(&state.client, &gvk).await {
            Ok((resource, _)) => enabled.extend(side_doors::autoscaled(input, &group, &resource.plural)),
            Err(e) => {
                warn!(error = %e, %kind, "the target of a HorizontalPodAutoscaler is not served; nothing to scale")
            }
        }
    }
    Ok(enabled)
}

/// The kinds of the resources whose deletes the policies name, as the API server
/// serves them (a resource it does not serve is skipped): what a namespace's
/// deletion is judged for. Discovery only, no list: signoff needs no read access
/// to what it protects.
async fn swept_kinds(state: &WebhookState, policies: &PolicySet) -> Result<Vec<(Gvr, Gvk)>, String> {
    let mut kinds = Vec::new();
    for gvr in side_doors::swept_resources(policies) {
        let gv = kube::core::GroupVersion::gv(&gvr.group, &gvr.version);
        let group = match kube::discovery::pinned_group(&state.client, &gv).await {
            Ok(group) => group,
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(format!("discovery of {}/{}: {e}", gvr.group, gvr.version)),
        };
        let served = group.versioned_resources(&gvr.version).into_iter().find(|(r, _)| r.plural == gvr.resource);
        if let Some((resource, _)) = served.filter(|(_, caps)| caps.scope == kube::discovery::Scope::Namespaced) {
            let kind = Gvk { group: gvr.group.clone(), version: gvr.version.clone(), kind: resource.kind };
            kinds.push((gvr, kind));
        }
    }
    Ok(kinds)
}

/// Events about a change with no ApprovalRequest go on its namespace (signoff's
/// own for cluster-scoped objects), and are stored in that namespace.
fn target_reference(state: &WebhookState, input: &ReviewInput) -> ObjectReference {
    let ns = if input.namespace.is_empty() { &state.settings.controller_namespace } else { &input.namespace };
    ObjectReference {
        kind: Some("Namespace".into()),
        name: Some(ns.clone()),
        namespace: Some(ns.clone()),
        api_version: Some("v1".into()),
        ..Default::default()
    }
}

tokio::task_local! {
    /// The decision of the review being answered, as its audit line says it.
    static DECISION: std::cell::Cell<Option<&'static str>>;
}

fn audit(input: &ReviewInput, decision: &'static str, message: &str) {
    let _ = DECISION.try_with(|d| d.set(Some(decision)));
    info!(target: "audit", decision, user = %input.user.username, groups = ?input.user.groups,
        operation = ?input.operation, resource = %input.resource.resource, sub_resource = %input.sub_resource,
        namespace = %input.namespace, name = %input.name, %message, "admission decision");
}

/// Every change of an EscalationPolicy is recorded loudly (an audit line, an
/// Event on the policy, a metric), and a writer who weakens the gate is warned.
/// A dry run records nothing (sideEffects: NoneOnDryRun) but is warned alike.
fn record_policy_change(
    state: &WebhookState,
    req: &AdmissionRequest<DynamicObject>,
    objects: &Objects,
    user: &UserInfo,
    change: &guard::PolicyChange,
) -> Vec<String> {
    let sentence = format!("EscalationPolicy {} {} by {}", change.policy, change.summary, user.username);
    if !req.dry_run {
        info!(target: "audit", decision = "policy-changed", user = %user.username, policy = %change.policy,
            action = change.action, weakened = change.weakened, summary = %change.summary, "{sentence}");
        state.metrics.policy_change(change.action, change.weakened);
        let reference = ObjectReference {
            api_version: Some(format!("{GROUP}/{}", crate::crd::VERSION)),
            kind: Some("EscalationPolicy".into()),
            name: Some(change.policy.clone()),
            uid: objects
                .object
                .as_ref()
                .or(objects.old_object.as_ref())
                .and_then(|o| o["metadata"]["uid"].as_str())
                .map(String::from),
            ..Default::default()
        };
        let type_ = if change.weakened { EventType::Warning } else { EventType::Normal };
        publish(state, type_, "PolicyChanged", "Change", &sentence, &reference);
    }
    if change.weakened {
        vec![format!("signoff: this weakens the gate: {sentence}. It is recorded (audit log, Event, metric).")]
    } else {
        vec![]
    }
}

/// Publish an Event after answering: it is best effort, and the API server is
/// waiting for our answer, not for the Event.
fn publish(
    state: &WebhookState,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
    reference: &ObjectReference,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    let (recorder, reference, reason) = (state.recorder.clone(), reference.clone(), reason.to_string());
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&event, &reference).await {
            warn!(error = %e, reason, "could not publish event");
        }
    });
}

fn request_reference(ar: &ApprovalRequest) -> ObjectReference {
    ObjectReference {
        api_version: Some(format!("{GROUP}/{}", crate::crd::VERSION)),
        kind: Some("ApprovalRequest".into()),
        name: ar.metadata.name.clone(),
        namespace: ar.metadata.namespace.clone(),
        uid: ar.metadata.uid.clone(),
        ..Default::default()
    }
}

#[allow(clippy::too_many_arguments)]
async fn held(
    state: &WebhookState,
    req: &AdmissionRequest<DynamicObject>,
    input: &ReviewInput,
    assessment: &crate::policy::Assessment,
    policies: &PolicySet,
    digest: &str,
    namespace: &str,
    name: &str,
    finalizing: bool,
) -> AdmissionResponse {
    let api: Api<ApprovalRequest> = Api::namespaced(state.client.clone(), namespace);
    // Denials on the way are audited like every other decision.
    let denied = |message: String| {
        audit(input, "denied-error", &message);
        deny(req, message)
    };
    let mut packet =
        super::packet::packet(input, assessment, policies, digest, namespace, name, &state.settings.gitops);
    let mut ar = match create_or_read(state, &api, input, &packet, "").await {
        Ok(existing) => existing,
        Err(answer) => return answer.into_response(req, &denied),
    };
    // An approval binds the assessment, not only the content: the same change
    // written by someone else, or after a freeze, may need more people. Then it
    // is held as its own request (one per digest and assessment). A finalizer
    // removal completes a deletion already admitted, whoever removes it.
    let mut name = name.to_string();
    let missing = crate::approval::not_covered(&ar.spec, &packet.spec);
    if !finalizing && !missing.is_empty() {
        let other = review::assessed_request_name(digest, &packet.spec);
        let why = format!(
            "ApprovalRequest {namespace}/{name} does not cover this write: it now needs {}",
            missing.join(", ")
        );
        audit(input, "not-covered", &format!("{why}; held as {namespace}/{other}"));
        packet.metadata.name = Some(other.clone());
        ar = match create_or_read(state, &api, input, &packet, &format!(" ({why}.)")).await {
            Ok(existing) => existing,
            Err(answer) => return answer.into_response(req, &denied),
        };
        let still = crate::approval::not_covered(&ar.spec, &packet.spec);
        if !still.is_empty() {
            return denied(format!(
                "signoff: {why}, and ApprovalRequest {namespace}/{other} does not cover it either ({}); denied to be safe",
                still.join(", ")
            ));
        }
        name = other;
    }
    let name = name.as_str();
    let now = jiff::Timestamp::now();
    // The controller writes the request's status too (tiers, notifications); a
    // write between our read and our admission record is a 409, not a verdict.
    // Re-read and decide again: if the other write used the approval, the new
    // decision says so.
    let mut conflicts = 0;
    loop {
        match review::decide_existing(&ar, digest, now, finalizing) {
            Answer::Deny { message } => {
                audit(input, "denied", &message);
                return deny(req, message);
            }
            Answer::Completes { warnings } => {
                audit(input, "admitted-finalizing", &warnings.join("; "));
                return allow(req, warnings);
            }
            Answer::Allow { warnings } => {
                // Record the admission before admitting (atomic: one approval admits
                // one write). If that fails, deny.
                match append_admission(&api, &ar, &input.user.username, now, false).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 && conflicts < ADMISSION_CONFLICT_RETRIES => {
                        conflicts += 1;
                        match api.get(name).await {
                            Ok(fresh) => {
                                ar = fresh;
                                continue;
                            }
                            Err(e) => {
                                return denied(format!(
                                    "signoff could not re-read ApprovalRequest {namespace}/{name}: {e}; retry"
                                ));
                            }
                        }
                    }
                    Err(e) => {
                        let message = match e {
                            kube::Error::Api(e) if e.code == 409 => format!(
                                "signoff: ApprovalRequest {namespace}/{name} kept changing while admitting \
                                 ({ADMISSION_CONFLICT_RETRIES} retries); retry to see its state"
                            ),
                            e => format!("signoff could not record the admission in {namespace}/{name}: {e}; retry"),
                        };
                        audit(input, "denied", &message);
                        return deny(req, message);
                    }
                }
                let message = format!("admitted by approved ApprovalRequest {namespace}/{name}");
                audit(input, "admitted", &message);
                state.metrics.decision("admitted-approved");
                publish(
                    state,
                    EventType::Normal,
                    "Admitted",
                    "Admit",
                    &format!("{message} for {}", input.user.username),
                    &request_reference(&ar),
                );
                return allow(req, warnings);
            }
        }
    }
}

/// What creating a held change's request ended in, when it does not go on to
/// the existing request's answer.
enum Created {
    /// A new request holds the change: the denial says where to follow it.
    Held(String),
    /// Neither created nor read: denied to be safe.
    Failed(String),
    /// Not held as another request: the requester has too many (flood control).
    Refused(String),
}

impl Created {
    fn into_response(
        self,
        req: &AdmissionRequest<DynamicObject>,
        denied: &impl Fn(String) -> AdmissionResponse,
    ) -> AdmissionResponse {
        match self {
            Created::Held(message) | Created::Refused(message) => deny(req, message),
            Created::Failed(message) => denied(message),
        }
    }
}

/// Create the request `packet`, or read the existing one from the API server,
/// never a cache, because an approval is only as good as its latest state.
/// Flood control first: the requester's requests are listed (a consistent read,
/// which also finds this request when it exists); past the cap nothing is
/// created; a new request supersedes the requester's older live one for the
/// same object. Any create error (e.g. a namespace being deleted) falls back to
/// a read, so an approved change there is still admitted. `note` follows the
/// held message.
async fn create_or_read(
    state: &WebhookState,
    api: &Api<ApprovalRequest>,
    input: &ReviewInput,
    packet: &ApprovalRequest,
    note: &str,
) -> Result<ApprovalRequest, Created> {
    let name = packet.metadata.name.as_deref().unwrap_or_default();
    let namespace = packet.metadata.namespace.as_deref().unwrap_or_default();
    let new = review::Other::of(packet);
    let live = match state.requests.live(&new) {
        Some((known, live)) => {
            // Known: read it (never the index's copy: an approval is only as good as its latest state).
            if known && let Ok(Some(existing)) = api.get_opt(name).await {
                return Ok(existing);
            }
            live
        }
        None => {
            let listed = requesters_requests(state, packet).await;
            if let Some(existing) = listed.iter().find(|o| {
                o.metadata.name.as_deref() == Some(name) && o.metadata.namespace.as_deref() == Some(namespace)
            }) {
                return Ok(existing.clone());
            }
            review::Live::among(&new, &listed.iter().map(review::Other::of).collect::<Vec<_>>())
        }
    };
    let flood = review::flood(&new.requester, live, state.settings.max_pending_per_requester);
    if let Some(message) = flood.over_cap {
        audit(input, "denied-flood", &message);
        state.metrics.decision("denied-flood");
        return Err(Created::Refused(message));
    }
    match api.create(&PostParams::default(), packet).await {
        Ok(created) => {
            state.requests.insert(review::Other::of(&created));
            supersede(state, input, name, flood.supersedes).await;
            let message = format!("{}{note}", review::held_message(&created));
            audit(input, "held", &message);
            state.metrics.decision("held");
            publish(state, EventType::Normal, "Held", "Hold", &message, &request_reference(&created));
            Err(Created::Held(message))
        }
        Err(create_error) => match api.get_opt(name).await {
            Ok(Some(ar)) => Ok(ar),
            Ok(None) => Err(Created::Failed(format!(
                "signoff could not create ApprovalRequest {namespace}/{name}: {create_error}; denied to be safe, retry"
            ))),
            Err(e) => Err(Created::Failed(format!(
                "signoff could not read ApprovalRequest {namespace}/{name}: {e}; denied to be safe, retry"
            ))),
        },
    }
}

/// Every request of the packet's requester (by its requester label), or none
/// when they cannot be read: flood control must not stop the gate. Only until
/// the index of requests (`state.requests`) has listed them all.
async fn requesters_requests(state: &WebhookState, packet: &ApprovalRequest) -> Vec<ApprovalRequest> {
    let label = packet.metadata.labels.as_ref().and_then(|l| l.get("signoff.dev/requester")).cloned();
    let Some(label) = label.filter(|l| !l.is_empty()) else { return vec![] };
    let all: Api<ApprovalRequest> = Api::all(state.client.clone());
    match all.list(&kube::api::ListParams::default().labels(&format!("signoff.dev/requester={label}"))).await {
        Ok(list) => list.items,
        Err(e) => {
            warn!(error = %e, "could not read the requester's requests; flood control skipped for this hold");
            vec![]
        }
    }
}

/// Mark the requester's older live requests for the same object superseded by
/// `newer` (the controller stops their escalation and tells who was notified).
async fn supersede(state: &WebhookState, input: &ReviewInput, newer: &str, older: Vec<(String, String)>) {
    for (namespace, name) in older {
        let patch = serde_json::json!({"metadata": {"annotations": {crate::crd::SUPERSEDED_ANNOTATION: newer}}});
        let api: Api<ApprovalRequest> = Api::namespaced(state.client.clone(), &namespace);
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => audit(input, "superseded", &format!("ApprovalRequest {namespace}/{name} superseded by {newer}")),
            Err(e) => warn!(error = %e, request = %name, "could not mark a request superseded"),
        }
    }
}

/// How often an admission is re-decided after a concurrent write to its request.
const ADMISSION_CONFLICT_RETRIES: u32 = 3;

/// Append an admission for the request's current attempt. The resourceVersion
/// makes it atomic: a concurrent write fails with 409 instead of being lost, so
/// one approval admits one write.
async fn append_admission(
    api: &Api<ApprovalRequest>,
    ar: &ApprovalRequest,
    user: &str,
    at: jiff::Timestamp,
    break_glass: bool,
) -> Result<ApprovalRequest, kube::Error> {
    let status = ar.status.clone().unwrap_or_default();
    let mut admissions = status.admissions;
    admissions.push(Admission {
        user: user.to_string(),
        at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at),
        attempt: status.attempt,
        break_glass,
    });
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": ar.metadata.resource_version },
        "status": { "admissions": admissions },
    });
    let name = ar.metadata.name.as_deref().unwrap_or_default();
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await
}

/// Record a break-glass admission in the change's ApprovalRequest (created if
/// there is none), so the request shows it and approvers review it afterwards.
async fn record_break_glass(
    state: &WebhookState,
    input: &ReviewInput,
    assessment: &crate::policy::Assessment,
    policies: &PolicySet,
) -> Result<ApprovalRequest, kube::Error> {
    let (digest, namespace, name) = review::location(input, &state.settings);
    let api: Api<ApprovalRequest> = Api::namespaced(state.client.clone(), &namespace);
    let mut last = None;
    for _ in 0..3 {
        let ar = match api.get_opt(&name).await? {
            Some(ar) => ar,
            None => {
                let packet = super::packet::packet(
                    input,
                    assessment,
                    policies,
                    &digest,
                    &namespace,
                    &name,
                    &state.settings.gitops,
                );
                match api.create(&PostParams::default(), &packet).await {
                    Ok(created) => created,
                    Err(kube::Error::Api(e)) if e.code == 409 => api.get(&name).await?,
                    Err(e) => return Err(e),
                }
            }
        };
        match append_admission(&api, &ar, &input.user.username, jiff::Timestamp::now(), true).await {
            Ok(updated) => return Ok(updated),
            Err(kube::Error::Api(e)) if e.code == 409 => last = Some(kube::Error::Api(e)),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("three conflicts"))
}
