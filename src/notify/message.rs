//! What a notification says: pure data built from an ApprovalRequest. No I/O, no clock.

use jiff::Timestamp;
use serde::Serialize;

use crate::crd::{ActionClass, ApprovalRequest, Risk};

/// How many lines of the diff a notification quotes.
pub const DIFF_EXCERPT_LINES: usize = 20;

/// Why a notification is sent.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A tier of a lane was reached: its people are asked to decide.
    Escalation,
    /// Every tier of a lane timed out; the request is Expired and never admitted.
    /// Sent to the platform admins so the chain can be tuned.
    Expired,
    /// The request was approved (for the requester or a channel that follows it).
    Approved,
    /// The request was rejected.
    Rejected,
    /// A newer change to the same object by the same requester replaced the
    /// request: whoever was asked to decide it need not.
    Superseded,
    /// One message for the pages held back during a flood (notify::coalesce):
    /// `reasons` lists the held requests, one line each.
    Summary,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Escalation => "Escalation",
            MessageKind::Expired => "Expired",
            MessageKind::Approved => "Approved",
            MessageKind::Rejected => "Rejected",
            MessageKind::Superseded => "Superseded",
            MessageKind::Summary => "Summary",
        }
    }
}

/// Who a notification is for.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(tag = "kind", content = "name")]
pub enum Recipient {
    /// One person (an Approver / username).
    User(String),
    /// A Team (its channel, its pager).
    Team(String),
    /// A route's own sinks, configured in the EscalationPolicy (`policy/route`).
    Route(String),
}

impl Recipient {
    pub fn name(&self) -> &str {
        match self {
            Recipient::User(n) | Recipient::Team(n) | Recipient::Route(n) => n,
        }
    }
}

impl std::fmt::Display for Recipient {
    /// `user/alice` or `team/payments`: the form recorded in status.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recipient::User(n) => write!(f, "user/{n}"),
            Recipient::Team(n) => write!(f, "team/{n}"),
            Recipient::Route(n) => write!(f, "route/{n}"),
        }
    }
}

/// Reference to the ApprovalRequest a notification is about.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct RequestRef {
    pub namespace: String,
    pub name: String,
}

/// The exact action that was held, as an approver reads it.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ActionSummary {
    /// CREATE, UPDATE, DELETE or CONNECT.
    pub operation: String,
    /// Kind of the object, e.g. Deployment.
    pub kind: String,
    /// Resource (plural), with `/subresource` when there is one, e.g. `deployments/scale`.
    pub resource: String,
    /// Namespace of the object; None for cluster-scoped objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl ActionSummary {
    /// `DELETE Deployment payments-prod/api`, `DELETE Namespace payments-prod`, or
    /// for a deletecollection `DELETE every ConfigMap in payments-prod`.
    pub fn headline(&self) -> String {
        let sub = self.resource.split_once('/').map(|(_, s)| format!(" ({s})")).unwrap_or_default();
        let target = crate::crd::target_text(&format!("{}{sub}", self.kind), self.namespace.as_deref(), &self.name);
        format!("{} {target}", self.operation)
    }
}

/// How a request ended, in an outcome message: who decided and what they said.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// Approved, Rejected or Expired.
    pub phase: String,
    /// Who decided (for Approved: everyone whose approval counted; for
    /// Rejected: who rejected). Empty for Expired.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub decided_by: Vec<String>,
    /// Their comments, `name: comment` each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub comments: Vec<String>,
}

impl Outcome {
    /// The outcome of `ar` as its status records it: the decisions with the
    /// verdict that decided it, among those that count for a lane
    /// ([`crate::approval::counts`]).
    pub fn of(ar: &ApprovalRequest, phase: crate::crd::Phase) -> Outcome {
        let status = ar.status.clone().unwrap_or_default();
        let verdict = match phase {
            crate::crd::Phase::Approved => Some(crate::crd::Verdict::Approve),
            crate::crd::Phase::Rejected => Some(crate::crd::Verdict::Reject),
            _ => None,
        };
        let requester = &ar.spec.requester.username;
        let mut decided_by: Vec<String> = Vec::new();
        let mut comments = Vec::new();
        let decided = status.decisions.iter().filter(|d| {
            Some(d.decision) == verdict
                && status.lanes.iter().any(|l| crate::approval::counts(requester, &status, l, d))
        });
        for d in decided {
            if decided_by.contains(&d.approver) {
                continue;
            }
            decided_by.push(d.approver.clone());
            if let Some(comment) = d.comment.as_deref().filter(|c| !c.trim().is_empty()) {
                comments.push(format!("{}: {comment}", d.approver));
            }
        }
        Outcome { phase: format!("{phase:?}"), decided_by, comments }
    }
}

/// Everything a notification says. Pure data: each sink renders it its own way.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// Idempotency key, given by the caller; receivers drop a second delivery with
    /// the same key.
    pub key: String,
    pub kind: MessageKind,
    /// The ApprovalRequest.
    pub request: RequestRef,
    /// Lane (route), e.g. security.
    pub route: String,
    /// Tier index, from 0.
    pub tier: u32,
    /// Tier name, e.g. OnCall.
    pub tier_name: String,
    pub recipient: Recipient,
    /// Username of whoever made the change.
    pub requester: String,
    pub action: ActionSummary,
    pub risk: Risk,
    pub action_class: ActionClass,
    /// Every rule's explanation, in order.
    pub reasons: Vec<String>,
    /// Context the requester gave (`signoff.dev/reason`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_reason: Option<String>,
    /// Ticket the requester gave (`signoff.dev/ticket`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Monthly cost change, e.g. `+120.50 USD/month`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_delta: Option<String>,
    /// The first [`DIFF_EXCERPT_LINES`] lines of the diff, with a marker when cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_excerpt: Option<String>,
    /// When this tier (or, for Expired, the request) runs out.
    pub deadline: Timestamp,
    /// `kubectl signoff approve -n NS NAME`.
    pub approve_command: String,
    /// How to read the whole packet.
    pub show_command: String,
    /// The request's page in the web queue, when signoff serves one (`--ui-url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The ApprovalRequest spec, in full: the packet a generic webhook receives.
    pub packet: serde_json::Value,
    /// For Approved, Rejected and (to those asked to decide) Expired: how the
    /// request ended. None on pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Where the change came from when a GitOps tool applied it, e.g. `commit
    /// 3f2a9c1 on main of github.com/acme/deploy, applied by Flux Kustomization
    /// flux-system/shop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gitops: Option<String>,
    /// The idempotency key of the page this message answers: PagerDuty
    /// resolves that incident (its `dedup_key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolves: Option<String>,
}

/// The first `lines` lines of `diff`; says how many lines were left out.
pub fn diff_excerpt(diff: &str, lines: usize) -> String {
    let all: Vec<&str> = diff.lines().collect();
    if all.len() <= lines {
        return all.join("\n");
    }
    let mut out = all[..lines].join("\n");
    out.push_str(&format!("\n… ({} more lines)", all.len() - lines));
    out
}

impl Message {
    /// Builds the message for one notification about `ar`. `key` is the idempotency
    /// key chosen by the caller (stable across retries and failovers).
    #[allow(clippy::too_many_arguments)]
    pub fn from_request(
        ar: &ApprovalRequest,
        kind: MessageKind,
        route: &str,
        tier: u32,
        tier_name: &str,
        recipient: Recipient,
        key: &str,
        deadline: Timestamp,
    ) -> Message {
        let spec = &ar.spec;
        let namespace = ar.metadata.namespace.clone().unwrap_or_default();
        let name = ar.metadata.name.clone().unwrap_or_default();
        let resource = match &spec.action.sub_resource {
            Some(sub) if !sub.is_empty() => format!("{}/{sub}", spec.action.resource),
            _ => spec.action.resource.clone(),
        };
        let cost_delta = spec.cost.as_ref().map(|c| {
            let sign = if c.monthly_delta.starts_with(['-', '+']) { "" } else { "+" };
            format!("{sign}{} {}/month", c.monthly_delta, c.currency)
        });
        let diff_excerpt =
            spec.diff.as_deref().filter(|d| !d.trim().is_empty()).map(|d| diff_excerpt(d, DIFF_EXCERPT_LINES));
        let context = spec.context.clone().unwrap_or_default();
        Message {
            key: key.to_string(),
            kind,
            request: RequestRef { namespace: namespace.clone(), name: name.clone() },
            route: route.to_string(),
            tier,
            tier_name: tier_name.to_string(),
            recipient,
            requester: spec.requester.username.clone(),
            action: ActionSummary {
                operation: spec.action.operation.clone(),
                kind: spec.action.kind.clone(),
                resource,
                namespace: spec.action.namespace.clone().filter(|n| !n.is_empty()),
                name: spec.action.name.clone(),
            },
            risk: spec.risk,
            action_class: spec.action_class,
            reasons: spec.reasons.iter().map(|r| r.message.clone()).collect(),
            context_reason: context.reason,
            ticket: context.ticket,
            cost_delta,
            diff_excerpt,
            deadline,
            approve_command: format!("kubectl signoff approve -n {namespace} {name}"),
            show_command: format!("kubectl get approvalrequest -n {namespace} {name} -o yaml"),
            url: None,
            packet: serde_json::to_value(spec).unwrap_or(serde_json::Value::Null),
            outcome: None,
            gitops: spec
                .gitops
                .as_ref()
                .map(|o| crate::gitops::describe(o, ar.status.as_ref().and_then(|s| s.gitops_source.as_ref()))),
            resolves: None,
        }
    }

    /// One line: `[High] DELETE Deployment prod/api: held for approval (security, tier 1 Team)`.
    pub fn summary(&self) -> String {
        let what = match self.kind {
            MessageKind::Escalation => {
                format!("held for approval ({}, tier {} {})", self.route, self.tier + 1, self.tier_name)
            }
            MessageKind::Expired if self.outcome.is_some() => {
                "expired: nobody approved in time; never applied".to_string()
            }
            MessageKind::Expired => format!("expired: nobody approved ({} chain exhausted)", self.route),
            MessageKind::Approved | MessageKind::Rejected => {
                let by = self.outcome.as_ref().map(|o| o.decided_by.join(", ")).filter(|b| !b.is_empty());
                let what = if self.kind == MessageKind::Approved { "approved" } else { "rejected" };
                by.map(|b| format!("{what} by {b}")).unwrap_or_else(|| what.to_string())
            }
            MessageKind::Superseded => {
                "superseded by a newer change to the same object; no decision needed".to_string()
            }
            MessageKind::Summary => {
                return format!(
                    "{} more requests from {} wait for a decision (held back during a flood): kubectl signoff list -A",
                    self.reasons.len(),
                    self.requester
                );
            }
        };
        format!("[{}] {}: {what}", self.risk.as_str(), self.action.headline())
    }
}
