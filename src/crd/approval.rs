use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{ActionClass, Risk};

/// A held change and its approval. The spec is the packet an approver reads; it is
/// written once by the webhook and never changes. The status records everything
/// that happened since: escalation, notifications, skips and decisions.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "signoff.dev",
    version = "v1alpha1",
    kind = "ApprovalRequest",
    namespaced,
    shortname = "ar",
    category = "signoff",
    status = "ApprovalRequestStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Risk","type":"string","jsonPath":".spec.risk"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".status.target"}"#,
    printcolumn = r#"{"name":"Routes","type":"string","jsonPath":".status.routes"}"#,
    printcolumn = r#"{"name":"Tier","type":"string","jsonPath":".status.tier"}"#,
    printcolumn = r#"{"name":"Tier-Deadline","type":"date","jsonPath":".status.tierDeadline"}"#,
    printcolumn = r#"{"name":"Requester","type":"string","jsonPath":".spec.requester.username"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("ApprovalRequest spec is immutable; reopen or create a new request instead"))]
pub struct ApprovalRequestSpec {
    /// Who made the change, exactly as the API server authenticated them.
    pub requester: Requester,
    /// The exact action that was held.
    pub action: Action,
    /// SHA-256 (hex) of the canonical change. Only a write with this digest is
    /// admitted by this request's approval.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub digest: String,
    /// The highest risk among the rules that fired.
    pub risk: Risk,
    /// The most urgent action class among the rules that fired.
    pub action_class: ActionClass,
    /// Every route that must approve (one lane each), e.g. [engineering, security].
    #[schemars(length(min = 1))]
    pub routes: Vec<String>,
    /// Why the change was held: every rule that fired.
    #[schemars(length(min = 1))]
    pub reasons: Vec<HoldReason>,
    /// For each route: the policy whose chain it walks and the team at tier 1, as
    /// resolved when the change was held.
    #[schemars(length(min = 1))]
    pub routing: Vec<RouteTarget>,
    /// Team that owns the namespace (its `signoff.dev/owner` label) when the change
    /// was held; tier 1 of the engineering route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_team: Option<String>,
    /// Estimated monthly cost before and after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostEstimate>,
    /// Context the requester gave with the `signoff.dev/reason` and
    /// `signoff.dev/ticket` annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ChangeContext>,
    /// Unified diff of the object, old to new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// The object as it would be applied (YAML, server-set fields removed), or for a
    /// delete the object being deleted. Used to write the runbook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// What happens if nobody answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// The GitOps object that applied the change (Flux Kustomization or
    /// HelmRelease, Argo CD Application), read from the marks its tool leaves
    /// on the object, when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<GitOpsOwner>,
}

/// The GitOps object that applied a held change, found by the labels or the
/// annotation its tool sets on what it applies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitOpsOwner {
    /// Flux or ArgoCD.
    pub tool: GitOpsTool,
    /// Kind of the owning object: Kustomization or HelmRelease (Flux), Application (Argo CD).
    pub kind: String,
    /// Namespace of the owning object.
    pub namespace: String,
    /// Name of the owning object.
    pub name: String,
    /// True when signoff asks the owner to apply again once the change is
    /// approved (the hand-back; the policy's `gitops.handBack`, else the
    /// install's default, when the change was held).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hand_back: bool,
}

/// A GitOps tool whose marks signoff reads.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum GitOpsTool {
    /// Flux (kustomize-controller, helm-controller).
    Flux,
    /// Argo CD (application-controller).
    ArgoCD,
}

impl GitOpsTool {
    pub fn as_str(self) -> &'static str {
        match self {
            GitOpsTool::Flux => "Flux",
            GitOpsTool::ArgoCD => "Argo CD",
        }
    }
}

/// Where one route of a request goes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteTarget {
    /// Route name, e.g. security.
    pub route: String,
    /// EscalationPolicy whose chain and timing this route follows.
    pub policy: String,
    /// Team at tier 1; empty when it could not be resolved (e.g. the namespace has no
    /// `signoff.dev/owner` label), in which case the chain starts at the next tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

/// Who requested a held change, as the API server authenticated them (an
/// AdmissionReview's userInfo, recorded in the packet).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Requester {
    /// Username.
    #[schemars(length(min = 1))]
    pub username: String,
    /// UID of the user, when the authenticator provides one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Groups the user belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// The operation that was held.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    /// CREATE, UPDATE, DELETE or CONNECT.
    #[schemars(regex(pattern = r"^(CREATE|UPDATE|DELETE|CONNECT)$"))]
    pub operation: String,
    /// API group of the object's kind ("" for the core group).
    #[serde(default)]
    pub group: String,
    /// API version of the object's kind.
    pub version: String,
    /// Kind of the object.
    pub kind: String,
    /// Resource (plural) the request was made to.
    pub resource: String,
    /// Subresource, such as scale, status, exec or ephemeralcontainers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_resource: Option<String>,
    /// Namespace of the object; empty for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the object.
    #[serde(default)]
    pub name: String,
}

/// One rule that fired.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HoldReason {
    /// EscalationPolicy that holds the rule.
    pub policy: String,
    /// Rule name.
    pub rule: String,
    /// The rule's risk.
    pub risk: Risk,
    /// The rule's route.
    pub route: String,
    /// The rule's action class.
    pub action_class: ActionClass,
    /// The rule's explanation.
    pub message: String,
}

/// Monthly cost estimate; figures are in `currency`, as decimal strings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostEstimate {
    /// ISO currency code.
    pub currency: String,
    /// Monthly cost of the object before the change.
    pub monthly_before: String,
    /// Monthly cost after the change.
    pub monthly_after: String,
    /// After minus before.
    pub monthly_delta: String,
}

/// Context supplied by the requester.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeContext {
    /// From the `signoff.dev/reason` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// From the `signoff.dev/ticket` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

/// Where a request stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, schemars::JsonSchema)]
pub enum Phase {
    /// Waiting for approvals; escalating.
    #[default]
    Pending,
    /// Every lane approved; the change is admitted once, until `notAfter`.
    Approved,
    /// Someone eligible rejected it.
    Rejected,
    /// Every tier of a lane timed out; never admitted. See the runbook.
    Expired,
    /// A newer change to the same object by the same requester is held now
    /// (annotation `signoff.dev/superseded-by` names its request); escalation
    /// stopped and whoever was notified was told. Never admitted.
    Superseded,
}

impl Phase {
    /// Rejected, Expired and Superseded end an attempt; Approved ends it once
    /// `notAfter` passes.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Approved | Phase::Rejected | Phase::Expired | Phase::Superseded)
    }
}

/// What has happened to a request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRequestStatus {
    /// Pending, Approved, Rejected, Expired or Superseded.
    #[serde(default)]
    pub phase: Phase,
    /// Attempt number: 1 for the first, one more after each reopen (the
    /// `signoff.dev/reopen-attempt` annotation). Only decisions made in the current
    /// attempt count.
    #[serde(default = "first_attempt")]
    #[schemars(range(min = 1))]
    pub attempt: u32,
    /// Summary of where each lane is, e.g. `engineering 2/5, security 1/5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The held object, e.g. `Deployment payments-prod/api` (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The routes that must approve, as text, e.g. `engineering, security`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<String>,
    /// When the current tier of the first lane to time out runs out (Pending only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_deadline: Option<Time>,
    /// One lane per route; every lane must approve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["route".into()]))]
    pub lanes: Vec<Lane>,
    /// Approvals and rejections, one per approver. Append-only: the API server
    /// refuses any edit or removal of an earlier decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(
        merge_strategy = kube::core::ListMerge::Map(vec!["approver".into(), "attempt".into()]),
        validation = kube::core::Rule::new("oldSelf.all(o, self.exists(n, n.approver == o.approver && n.attempt == o.attempt))").message("decisions are append-only: an earlier decision cannot be removed")
    )]
    #[schemars(length(max = 64))]
    pub decisions: Vec<Decision>,
    /// People a tier would have reached but skipped, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub skips: Vec<Skip>,
    /// Every notification sent and its delivery result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 512))]
    pub notifications: Vec<Notification>,
    /// When the last lane runs out of tiers if nobody answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Time>,
    /// For Approved: the change is admitted until this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// When the change was admitted, and as whom: the one admission its approval
    /// allows, and any break-glass admissions. Append-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub admissions: Vec<Admission>,
    /// For Expired: what a human should do, step by step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    /// ConfigMap holding the runbook when it is too large for status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook_config_map: Option<String>,
    /// Where the GitOps owner (spec.gitops) took the change from, read once by
    /// the controller; says why when it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops_source: Option<GitOpsSource>,
    /// The hand-back of the approved change to its GitOps owner, when asked for
    /// (spec.gitops.handBack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hand_back: Option<HandBack>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// The repository and revision a GitOps owner was applying when the change was held.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitOpsSource {
    /// Repository URL: the Flux source's `spec.url`, or the Application's
    /// `spec.source.repoURL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Revision being applied: the Flux owner's `status.lastAttemptedRevision`
    /// (e.g. `main@sha1:3f2a9c1...`), or the Application's `status.sync.revision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Why the owner or its source could not be read (not installed, no RBAC);
    /// the hold never depends on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
    /// When it was read.
    pub at: Time,
}

/// Asking the GitOps owner to apply the approved change now, instead of at its
/// next retry: Flux's `reconcile.fluxcd.io/requestedAt` annotation, or an Argo
/// CD sync operation of the approved resource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandBack {
    /// Done, Failed (retried with backoff), or GaveUp after the last attempt.
    pub result: String,
    /// Attempts so far.
    pub attempts: u32,
    /// What was done, or the error of the last failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the last attempt was made.
    pub at: Time,
    /// The request's attempt whose approval was handed back.
    #[serde(default = "first_attempt")]
    pub for_attempt: u32,
}

impl Default for ApprovalRequestStatus {
    fn default() -> Self {
        ApprovalRequestStatus {
            phase: Phase::Pending,
            attempt: first_attempt(),
            tier: None,
            target: None,
            routes: None,
            tier_deadline: None,
            lanes: Vec::new(),
            decisions: Vec::new(),
            skips: Vec::new(),
            notifications: Vec::new(),
            deadline: None,
            not_after: None,
            admissions: Vec::new(),
            runbook: None,
            runbook_config_map: None,
            gitops_source: None,
            hand_back: None,
            conditions: Vec::new(),
        }
    }
}

/// One route's progress through its chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lane {
    /// Route name.
    pub route: String,
    /// Policy whose chain this lane walks.
    pub policy: String,
    /// Index of the current tier, from 0. Only ever moves forward.
    #[schemars(range(min = 0))]
    pub tier: u32,
    /// Number of tiers in the chain.
    pub tiers: u32,
    /// Name of the current tier, e.g. OnCall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_name: Option<String>,
    /// When the current tier started (microseconds: tiers can be seconds long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_started_at: Option<MicroTime>,
    /// When the current tier times out; never earlier than its start plus its timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_deadline: Option<MicroTime>,
    /// Pending, Approved, Rejected, Expired or Superseded.
    #[serde(default)]
    pub phase: Phase,
    /// Users reached so far, who may approve for this lane.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eligible: Vec<String>,
    /// Groups reached so far, whose members may approve for this lane.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eligible_groups: Vec<String>,
}

/// An approval or rejection, written by the approver as themselves.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("decisions are append-only: an earlier decision cannot be edited"))]
pub struct Decision {
    /// Username of the approver; must be the user who writes it.
    #[schemars(length(min = 1, max = 253))]
    pub approver: String,
    /// UID of the approver, when the authenticator provides one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub uid: Option<String>,
    /// Groups of the approver when deciding, exactly as authenticated; the webhook
    /// checks them, and they decide which lanes a group-based approval counts for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    pub groups: Vec<String>,
    /// Approve or Reject.
    pub decision: Verdict,
    /// Lanes this decision counts for; empty means every lane the approver is
    /// eligible for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 63)))]
    pub routes: Vec<String>,
    /// Free-text comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub comment: Option<String>,
    /// When the decision was made.
    pub at: Time,
    /// The attempt it was made in; it counts only while that attempt is current.
    #[serde(default = "first_attempt")]
    #[schemars(range(min = 1))]
    pub attempt: u32,
}

/// Attempts count from 1; an absent attempt is the first.
/// What a change is applied to, for people: `Deployment ns/name`, `Namespace name`
/// when cluster-scoped, and for a collection (a `deletecollection` reaches
/// admission once, without a name) `every ConfigMap in ns` or `every ClusterRole,
/// cluster-wide`.
pub fn target_text(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match (namespace.filter(|n| !n.is_empty()), name) {
        (Some(ns), "") => format!("every {kind} in {ns}"),
        (None, "") => format!("every {kind}, cluster-wide"),
        (Some(ns), name) => format!("{kind} {ns}/{name}"),
        (None, name) => format!("{kind} {name}"),
    }
}

pub fn first_attempt() -> u32 {
    1
}

/// Annotation by which the requester (or an admin) reopens a Rejected or Expired
/// request: its value is the new attempt, the current one plus one.
pub const REOPEN_ANNOTATION: &str = "signoff.dev/reopen-attempt";

/// Set by signoff on a Pending request when a newer change to the same object
/// by the same requester is held: the newer request's name. The controller then
/// moves the request to Superseded.
pub const SUPERSEDED_ANNOTATION: &str = "signoff.dev/superseded-by";

/// An approver's answer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Verdict {
    Approve,
    Reject,
}

/// Someone a tier skipped.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Skip {
    /// Lane (route).
    pub route: String,
    /// Tier index.
    pub tier: u32,
    /// Who was skipped; empty when the whole tier was empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Why, e.g. "quiet hours 22:00-07:00 Europe/Berlin" or "away: vacation".
    pub reason: String,
    /// The setting that caused it, e.g. `Approver/alice spec.quietHours[0]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setting: Option<String>,
    /// When.
    pub at: Time,
}

/// One notification and its delivery.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Idempotency key; receivers drop a second delivery with the same key.
    pub key: String,
    /// Lane (route).
    pub route: String,
    /// Tier index.
    pub tier: u32,
    /// Who was notified.
    pub recipient: String,
    /// Event, Webhook, Slack or PagerDuty.
    pub sink: String,
    /// Delivery attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Delivered, Retrying or Failed.
    pub result: String,
    /// Error of the last failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the last attempt was made.
    pub at: Time,
}

/// One admission of the change: by its approval (which admits it once), or by a
/// break-glass identity without one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Admission {
    /// Who applied the change.
    pub user: String,
    /// When.
    pub at: Time,
    /// The attempt whose approval admitted it (see `status.attempt`).
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// True when a break-glass identity applied the change without an approval;
    /// such an admission does not use up an approval.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
}

impl ApprovalRequestStatus {
    /// The admission that used this attempt's approval, if the change was admitted.
    pub fn approved_admission(&self) -> Option<&Admission> {
        self.admissions.iter().find(|a| a.attempt == self.attempt && !a.break_glass)
    }
}
