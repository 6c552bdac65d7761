//! The gate's decisions, pure: what to do with a classified change and the answer
//! for a change that already has an ApprovalRequest (the packet of a new one is
//! built in `packet.rs`). The
//! handler in `server.rs` does the I/O between these steps.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{ApprovalRequest, Phase, Risk};
use crate::digest::{ChangeTarget, change_digest, is_noop_update, request_name};
use crate::policy::{Assessment, ReviewInput, operation_str};

/// Resources the gate never holds, whatever a policy says: holding them could lock
/// the cluster (DESIGN.md invariant 5). Also excluded in the webhook configuration.
pub const EXEMPT_RESOURCES: &[(&str, &str)] = &[
    ("", "nodes"),
    ("", "events"),
    ("events.k8s.io", "events"),
    ("coordination.k8s.io", "leases"),
    ("certificates.k8s.io", "certificatesigningrequests"),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
    ("authentication.k8s.io", "tokenreviews"),
    ("authorization.k8s.io", "subjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
];

/// Settings the gate needs beyond the policies.
#[derive(Clone, Debug)]
pub struct GateSettings {
    /// Namespace for ApprovalRequests of cluster-scoped objects (signoff's own).
    pub controller_namespace: String,
    /// Members of these groups are admitted with a loud, recorded warning.
    pub break_glass_groups: Vec<String>,
    /// Deny reviews for resources no EscalationPolicy matches. True when signoff
    /// writes the webhook configuration from the policies (then such a review means
    /// a stale configuration or a foreign caller); false when a chart owns broader rules.
    pub refuse_uncovered: bool,
    /// The most Pending requests one requester may have (0: no limit): a flood
    /// of holds is denied past it instead of paging people without end.
    pub max_pending_per_requester: u32,
    /// How GitOps owners are found and whether approved changes go back to them.
    pub gitops: crate::gitops::Settings,
}

impl GateSettings {
    /// The break-glass group `user` is in, if any.
    pub fn break_glass_group<'u>(&self, user: &'u crate::policy::UserInfo) -> Option<&'u String> {
        user.groups.iter().find(|g| self.break_glass_groups.contains(g))
    }
}

/// What to do with a change before looking up any ApprovalRequest.
#[derive(Clone, Debug, PartialEq)]
pub enum Preliminary {
    /// Not held by any enforcing rule. Carries warnings for Audit findings.
    Admit { warnings: Vec<String> },
    /// Held, but the requester is in a break-glass group.
    BreakGlass { warning: String },
    /// Held, but this is a dry run: admitted with a warning, nothing created.
    DryRun { warning: String },
    /// Held, but the UPDATE changes nothing that matters.
    NoOp,
    /// Held: look up (or create) the ApprovalRequest with this name.
    Held { digest: String, namespace: String, name: String },
}

/// The gate's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Admit, using the approval: the admission must be recorded first.
    Allow {
        warnings: Vec<String>,
    },
    /// Admit a finalizer removal that completes a deletion signoff already
    /// admitted: nothing new is used, nothing to record.
    Completes {
        warnings: Vec<String>,
    },
    Deny {
        message: String,
    },
}

fn target<'a>(input: &'a ReviewInput) -> ChangeTarget<'a> {
    ChangeTarget {
        operation: operation_str(input.operation),
        group: &input.kind.group,
        version: &input.kind.version,
        kind: &input.kind.kind,
        resource: &input.resource.resource,
        sub_resource: &input.sub_resource,
        namespace: &input.namespace,
        name: &input.name,
    }
}

/// The object a change is about: the new object, or for DELETE the old one.
pub fn subject(input: &ReviewInput) -> Option<&serde_json::Value> {
    match input.operation {
        crate::crd::Operation::Delete => input.old_object.as_ref(),
        _ => input.object.as_ref(),
    }
}

/// The change digest of a request.
pub fn digest_of(input: &ReviewInput) -> String {
    change_digest(&target(input), subject(input))
}

/// Decide everything that needs no API call.
pub fn preliminary(input: &ReviewInput, assessment: &Assessment, settings: &GateSettings) -> Preliminary {
    if !assessment.held() {
        let warnings = assessment
            .audit
            .iter()
            .filter(|f| f.risk >= Risk::Medium)
            .map(|f| format!("signoff audit: policy {} would hold this change: {}", f.policy, f.message))
            .collect();
        return Preliminary::Admit { warnings };
    }
    let reasons = assessment.reasons().join("; ");
    if let Some(group) = settings.break_glass_group(&input.user) {
        return Preliminary::BreakGlass {
            warning: format!(
                "signoff BREAK-GLASS: admitted without approval because {} is in group {group}; recorded in the audit log. Held for: {reasons}",
                input.user.username
            ),
        };
    }
    if input.dry_run {
        return Preliminary::DryRun {
            warning: format!(
                "signoff: the real write would be held for approval ({}): {reasons}",
                risk_and_class(assessment)
            ),
        };
    }
    if let (crate::crd::Operation::Update, Some(new), Some(old)) = (input.operation, &input.object, &input.old_object)
        && is_noop_update(new, old, &input.sub_resource)
    {
        return Preliminary::NoOp;
    }
    let (digest, namespace, name) = location(input, settings);
    Preliminary::Held { digest, namespace, name }
}

/// Where a held change's ApprovalRequest lives: its digest, namespace and name.
pub fn location(input: &ReviewInput, settings: &GateSettings) -> (String, String, String) {
    let digest = digest_of(input);
    // Cluster-scoped targets (a Namespace object carries its own name as
    // request.namespace) are held in signoff's namespace: a request must not live
    // in a namespace that does not exist yet or that the change deletes.
    let is_namespace = input.resource.group.is_empty() && input.resource.resource == "namespaces";
    let namespace = if input.namespace.is_empty() || is_namespace {
        settings.controller_namespace.clone()
    } else {
        input.namespace.clone()
    };
    let name = request_name(&digest);
    (digest, namespace, name)
}

/// The name of the request for a change whose request at [`location`] does not
/// cover what the write needs now (see [`crate::approval::not_covered`]): the
/// digest and the assessment, so the same write assessed the same way finds the
/// same request again.
pub fn assessed_request_name(digest: &str, needed: &crate::crd::ApprovalRequestSpec) -> String {
    use sha2::{Digest, Sha256};
    let mut routing: Vec<String> = needed
        .routing
        .iter()
        .map(|t| format!("{}={}", t.route, t.team.as_deref().unwrap_or_default()))
        .chain(needed.routes.iter().cloned())
        .collect();
    routing.sort();
    routing.dedup();
    let key = format!("{digest}\n{}\n{}\n{}", routing.join(","), needed.risk.as_str(), needed.action_class.as_str());
    let hash: String = Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    crate::digest::request_name(&hash)
}

/// What a new hold does to its requester's other requests (issue 23, item 5).
#[derive(Debug, Default, PartialEq)]
pub struct Flood {
    /// Live requests for the same object, now replaced: (namespace, name).
    pub supersedes: Vec<(String, String)>,
    /// Set when the requester would have more live requests than allowed.
    pub over_cap: Option<String>,
}

/// Whether a request still escalates: Pending (or no status yet: `phase`
/// None), and not marked superseded.
pub fn live(phase: Option<Phase>, meta: &ObjectMeta) -> bool {
    phase.is_none_or(|p| p == Phase::Pending) && crate::approval::superseded_by(meta).is_none()
}

/// The held object as one key: group, resource, subresource, namespace and
/// name (two requests are for the same object when their keys are equal).
pub fn object_key(a: &crate::crd::Action) -> String {
    let (sub, namespace) = (a.sub_resource.as_deref().unwrap_or_default(), a.namespace.as_deref().unwrap_or_default());
    [a.group.as_str(), &a.resource, sub, namespace, &a.name].join("\n")
}

/// What flood control reads of a request: which it is, whose, for what
/// object, and whether it is live.
#[derive(Clone, Debug, PartialEq)]
pub struct Other {
    pub namespace: String,
    pub name: String,
    pub requester: String,
    /// The held object (`object_key`).
    pub target: String,
    pub live: bool,
}

impl Other {
    pub fn of(ar: &ApprovalRequest) -> Other {
        Other::new(&ar.metadata, &ar.spec.requester.username, &ar.spec.action, ar.status.as_ref().map(|s| s.phase))
    }

    /// From a request's parts; `phase` None: no status yet.
    pub fn new(meta: &ObjectMeta, requester: &str, action: &crate::crd::Action, phase: Option<Phase>) -> Other {
        Other {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            requester: requester.to_string(),
            target: object_key(action),
            live: live(phase, meta),
        }
    }
}

/// The requester's other live requests, as flood control counts them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Live {
    /// How many (the new request itself not counted).
    pub count: usize,
    /// Those for the same object: (namespace, name).
    pub same_object: Vec<(String, String)>,
}

impl Live {
    /// From a list of requests (any requester's, live or not).
    pub fn among(new: &Other, others: &[Other]) -> Live {
        let live: Vec<&Other> = others
            .iter()
            .filter(|o| {
                o.requester == new.requester && (&o.namespace, &o.name) != (&new.namespace, &new.name) && o.live
            })
            .collect();
        let same_object =
            live.iter().filter(|o| o.target == new.target).map(|o| (o.namespace.clone(), o.name.clone())).collect();
        Live { count: live.len(), same_object }
    }
}

/// Keep at most one live request per object and requester (a newer hold
/// supersedes the older), and at most `cap` live requests per requester (0: no
/// limit). `live` are the requester's other live requests.
pub fn flood(requester: &str, live: Live, cap: u32) -> Flood {
    let pending = live.count - live.same_object.len() + 1;
    let over_cap = (cap > 0 && pending > cap as usize).then(|| {
        format!(
            "signoff: {requester} already has {} pending approval requests, the most one requester may have ({cap}), \
             so this change is not held as another one. Wait for decisions on them or ask for them to be rejected \
             (kubectl signoff list -A --mine), then apply again; a platform admin can raise \
             --max-pending-per-requester",
            pending - 1
        )
    });
    Flood { supersedes: live.same_object, over_cap }
}

/// A `/status` write that changes the object's metadata (labels, annotations,
/// owners, finalizers), judged as the UPDATE of the object it is: most built-in
/// kinds keep such a change (tests/status_metadata.rs), where policies that
/// match the object would not see it. None for anything else.
pub fn status_metadata_change(input: &ReviewInput) -> Option<ReviewInput> {
    if input.operation != crate::crd::Operation::Update || input.sub_resource != "status" {
        return None;
    }
    let field = |o: &Option<serde_json::Value>, f: &str| {
        o.as_ref().and_then(|o| o.pointer(&format!("/metadata/{f}"))).cloned().unwrap_or(serde_json::Value::Null)
    };
    let changed = ["labels", "annotations", "ownerReferences", "finalizers"].iter().any(|f| {
        let (new, old) = (field(&input.object, f), field(&input.old_object, f));
        let empty = |v: &serde_json::Value| {
            v.is_null() || v.as_object().is_some_and(|m| m.is_empty()) || v.as_array().is_some_and(|a| a.is_empty())
        };
        new != old && !(empty(&new) && empty(&old))
    });
    changed.then(|| ReviewInput { sub_resource: String::new(), ..input.clone() })
}

/// An UPDATE that removes finalizers from an object that is being deleted
/// finishes that deletion, so it is judged as the DELETE it completes: held unless
/// the deletion was admitted by signoff (approved, or break-glass). Returns that
/// DELETE, or None for any other request.
pub fn finalizing_delete(input: &ReviewInput) -> Option<ReviewInput> {
    if input.operation != crate::crd::Operation::Update || !input.sub_resource.is_empty() {
        return None;
    }
    let old = input.old_object.as_ref()?;
    old.pointer("/metadata/deletionTimestamp").filter(|t| !t.is_null())?;
    let finalizers = |o: Option<&serde_json::Value>| -> Vec<String> {
        o.and_then(|o| o.pointer("/metadata/finalizers"))
            .and_then(|f| f.as_array())
            .map(|f| f.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let after = finalizers(input.object.as_ref());
    let removes_one = finalizers(Some(old)).iter().any(|f| !after.contains(f));
    removes_one.then(|| ReviewInput { operation: crate::crd::Operation::Delete, object: None, ..input.clone() })
}

fn risk_and_class(a: &Assessment) -> String {
    let routes: Vec<&str> = a.routes.iter().map(String::as_str).collect();
    format!("{} risk, {}; routes: {}", a.risk.as_str().to_lowercase(), a.action_class.as_str(), routes.join(", "))
}

/// The denial for a held change, identical every time it is asked for.
pub fn held_message(ar: &ApprovalRequest) -> String {
    let ns = ar.metadata.namespace.as_deref().unwrap_or_default();
    let name = ar.metadata.name.as_deref().unwrap_or_default();
    let spec = &ar.spec;
    let routed: Vec<String> = spec
        .routing
        .iter()
        .map(|r| match &r.team {
            Some(team) => format!("{} → tier 1: team {team}", r.route),
            None => format!("{} → tier 1: no owning team (label the namespace signoff.dev/owner)", r.route),
        })
        .collect();
    let reasons: Vec<&str> = spec.reasons.iter().map(|r| r.message.as_str()).collect();
    format!(
        "held for approval: ApprovalRequest {ns}/{name} ({} risk, {}; routed to {}). Reason: {}. Follow it: kubectl signoff show -n {ns} {name}",
        spec.risk.as_str().to_lowercase(),
        spec.action_class.as_str(),
        routed.join(", "),
        reasons.join("; "),
    )
}

/// The answer for a held change whose ApprovalRequest exists. An approval admits
/// its change once; `finalizing` is true for a finalizer removal that completes a
/// deletion (see [`finalizing_delete`]), which an admitted deletion allows.
pub fn decide_existing(ar: &ApprovalRequest, digest: &str, now: Timestamp, finalizing: bool) -> Answer {
    let ns = ar.metadata.namespace.as_deref().unwrap_or_default();
    let name = ar.metadata.name.as_deref().unwrap_or_default();
    if ar.spec.digest != digest {
        return Answer::Deny {
            message: format!(
                "signoff: ApprovalRequest {ns}/{name} belongs to a different change (digest mismatch); refusing to admit. \
                 Ask a platform admin to inspect it."
            ),
        };
    }
    let status = ar.status.clone().unwrap_or_default();
    let reopen = format!("kubectl signoff reopen -n {ns} {name}");
    if finalizing
        && let Some(admitted) = status.admissions.iter().rev().find(|a| a.break_glass || a.attempt == status.attempt)
    {
        return Answer::Completes {
            warnings: vec![format!(
                "signoff: completes the deletion admitted by ApprovalRequest {ns}/{name} ({}, {}{})",
                admitted.user,
                admitted.at.0,
                if admitted.break_glass { ", break-glass" } else { "" }
            )],
        };
    }
    match status.phase {
        Phase::Pending => Answer::Deny { message: held_message(ar) },
        Phase::Approved if status.approved_admission().is_some() => {
            let used = status.approved_admission().expect("checked");
            Answer::Deny {
                message: format!(
                    "signoff: the approval in ApprovalRequest {ns}/{name} was already used: {} applied this change at {}. \
                     An approval admits its change once; to apply it again, ask again: {reopen}",
                    used.user, used.at.0
                ),
            }
        }
        Phase::Approved => match status.not_after {
            Some(Time(not_after)) if now < not_after => Answer::Allow {
                warnings: vec![format!(
                    "signoff: admitted by approved ApprovalRequest {ns}/{name} (valid until {not_after})"
                )],
            },
            Some(Time(not_after)) => Answer::Deny {
                message: format!(
                    "signoff: the approval in ApprovalRequest {ns}/{name} expired at {not_after}; to ask again: {reopen}"
                ),
            },
            None => Answer::Deny {
                message: format!(
                    "signoff: ApprovalRequest {ns}/{name} is Approved without notAfter; refusing to admit"
                ),
            },
        },
        Phase::Rejected => {
            let by: Vec<String> = status
                .decisions
                .iter()
                .filter(|d| d.decision == crate::crd::Verdict::Reject)
                .map(|d| match &d.comment {
                    Some(c) => format!("{} ({c})", d.approver),
                    None => d.approver.clone(),
                })
                .collect();
            Answer::Deny {
                message: format!(
                    "signoff: this change was rejected by {} in ApprovalRequest {ns}/{name}. Address it, then change \
                     the manifest (a new request) or ask again: {reopen}",
                    if by.is_empty() { "an approver".to_string() } else { by.join(", ") }
                ),
            }
        }
        Phase::Expired => Answer::Deny {
            message: format!(
                "signoff: nobody approved ApprovalRequest {ns}/{name} before its last tier timed out, so it expired and \
                 is never applied automatically. Runbook: kubectl signoff show -n {ns} {name}. To ask again: {reopen}"
            ),
        },
        Phase::Superseded => Answer::Deny {
            message: format!(
                "signoff: ApprovalRequest {ns}/{name} was superseded by a newer change to the same object (request {}); \
                 that one is the change being decided. To ask for this one, ask a platform admin to delete {ns}/{name}, \
                 then apply it again",
                crate::approval::superseded_by(&ar.metadata).unwrap_or("unknown")
            ),
        },
    }
}
