//! The packet: the ApprovalRequest a held change creates — requester, exact
//! action, digest, reasons, routing, cost, change context — with the manifest
//! and the diff rendered within bounds, so that a request fits in etcd whatever
//! the size of the object it holds (the digest always covers all of it). Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::review::subject;
use crate::crd::{
    Action, ApprovalRequest, ApprovalRequestSpec, ChangeContext, HoldReason, Requester, Risk, RouteTarget,
};
use crate::policy::{Assessment, PolicySet, ReviewInput, operation_str};

/// The tier-1 team of a route: the policy's `routes[].team`, else for engineering
/// the namespace owner, else the Team named after the route.
pub fn tier_one_team(policies: &PolicySet, policy: &str, route: &str, owner_team: Option<&str>) -> Option<String> {
    let configured = policies.get(policy).and_then(|p| p.spec().route_team(route));
    configured.or_else(|| if route == "engineering" { owner_team.map(str::to_string) } else { Some(route.to_string()) })
}

/// The packet: a new ApprovalRequest for a held change.
pub fn packet(
    input: &ReviewInput,
    assessment: &Assessment,
    policies: &PolicySet,
    digest: &str,
    namespace: &str,
    name: &str,
    gitops: &crate::gitops::Settings,
) -> ApprovalRequest {
    let owner_team = input
        .namespace_object
        .as_ref()
        .and_then(|ns| ns.pointer("/metadata/labels/signoff.dev~1owner"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let mut reasons: Vec<HoldReason> = assessment.fired.iter().filter(|f| f.risk >= Risk::Medium).cloned().collect();
    reasons.extend(assessment.errors.iter().map(|e| HoldReason {
        policy: e.policy.clone(),
        rule: e.location.clone(),
        risk: Risk::High,
        route: e.route.clone(),
        action_class: e.action_class,
        message: format!(
            "{} of policy {} could not be evaluated (held to be safe): {}",
            e.location, e.policy, e.message
        ),
    }));
    // Each route follows the first policy (in evaluation order) that routed to it.
    let routing: Vec<RouteTarget> = assessment
        .routes
        .iter()
        .map(|route| {
            let policy = reasons.iter().find(|r| &r.route == route).map(|r| r.policy.clone()).unwrap_or_default();
            let team = tier_one_team(policies, &policy, route, owner_team.as_deref());
            RouteTarget { route: route.clone(), policy, team }
        })
        .collect();
    let gitops = subject(input).and_then(|o| crate::gitops::owner_of(o, gitops)).map(|mut owner| {
        owner.hand_back = hand_back(policies, &routing, gitops.hand_back);
        owner
    });
    let annotation = |key: &str| {
        subject(input)
            .and_then(|o| o.pointer(&format!("/metadata/annotations/{}", key.replace('/', "~1"))))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let (reason, ticket) = (annotation("signoff.dev/reason"), annotation("signoff.dev/ticket"));
    let context = (reason.is_some() || ticket.is_some()).then_some(ChangeContext { reason, ticket });
    // Canonical forms once: for a big object each is a deep copy.
    let canonical =
        |o: &Option<serde_json::Value>| o.as_ref().map(|o| crate::digest::canonical_object(o, &input.sub_resource));
    let (old, new) = (canonical(&input.old_object), canonical(&input.object));
    let diff = render_diff(old.as_ref(), new.as_ref());
    let subject = if input.operation == crate::crd::Operation::Delete { &old } else { &new };
    let manifest = subject.as_ref().map(bounded_yaml);
    let spec = ApprovalRequestSpec {
        requester: Requester {
            username: input.user.username.clone(),
            uid: Some(input.user.uid.clone()).filter(|u| !u.is_empty()),
            groups: input.user.groups.clone(),
        },
        action: Action {
            operation: operation_str(input.operation).to_string(),
            group: input.kind.group.clone(),
            version: input.kind.version.clone(),
            kind: input.kind.kind.clone(),
            resource: input.resource.resource.clone(),
            sub_resource: Some(input.sub_resource.clone()).filter(|s| !s.is_empty()),
            namespace: Some(input.namespace.clone()).filter(|s| !s.is_empty()),
            name: input.name.clone(),
        },
        digest: digest.to_string(),
        risk: assessment.risk,
        action_class: assessment.action_class,
        routes: assessment.routes.iter().cloned().collect(),
        routing,
        reasons,
        owner_team,
        cost: assessment.cost.as_ref().map(|c| c.to_crd()),
        context,
        diff,
        manifest,
        gitops,
        fallback: Some(
            "If nobody approves before the last tier times out, the request expires and the change is never \
             applied automatically: a runbook is written to status and the platform admins are notified."
                .into(),
        ),
    };
    let mut ar = ApprovalRequest::new(name, spec);
    ar.metadata = ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(
            [
                ("app.kubernetes.io/managed-by".to_string(), "signoff".to_string()),
                ("signoff.dev/requester".to_string(), label_value(&input.user.username)),
            ]
            .into(),
        ),
        ..Default::default()
    };
    ar
}

/// Whether an approved change is handed back to its GitOps owner: what the
/// routing policies say (any that says yes), else the install's default.
fn hand_back(policies: &PolicySet, routing: &[RouteTarget], default: bool) -> bool {
    let said: Vec<bool> =
        routing.iter().filter_map(|t| policies.get(&t.policy)?.spec().gitops.as_ref()?.hand_back).collect();
    if said.is_empty() { default } else { said.contains(&true) }
}

/// A label value from arbitrary text (usernames may contain ':' and '@').
fn label_value(text: &str) -> String {
    let cleaned: String =
        text.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).take(63).collect();
    cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

/// The most text a packet keeps for the manifest or the diff: an ApprovalRequest
/// must fit in etcd (1.5 MiB) whatever the size of the object it holds.
pub const MAX_PACKET_TEXT: usize = 256 * 1024;

/// Takes bytes up to a cap, then refuses more: serializing into it stops a big
/// object's rendering at the cap instead of rendering all of it and cutting after.
/// (YAML rendering was most of the time a 3 MiB object took to hold.)
struct Capped {
    text: Vec<u8>,
    cap: usize,
    /// Bytes offered in all, kept or not.
    offered: usize,
}

impl Capped {
    fn new(cap: usize) -> Capped {
        Capped { text: Vec::new(), cap, offered: 0 }
    }

    /// Whether everything offered was kept.
    fn complete(&self) -> bool {
        self.offered <= self.cap
    }
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.offered += data.len();
        let room = self.cap.saturating_sub(self.text.len());
        if data.len() > room {
            self.text.extend_from_slice(&data[..room]);
            return Err(std::io::Error::other("packet text cap reached"));
        }
        self.text.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// YAML of `value`, at most MAX_PACKET_TEXT, with a note when something was left
/// out. Renders a bounded preview, not the object: libyaml scans a whole scalar
/// before writing any of it, so a multi-MiB string cost a hold a second even with
/// the output capped.
fn bounded_yaml(value: &serde_json::Value) -> String {
    // Half the cap: YAML adds indentation, quotes and escapes to what is shown.
    let mut budget = MAX_PACKET_TEXT / 2;
    let mut cut = false;
    let shown = preview(value, &mut budget, &mut cut);
    let mut out = Capped::new(MAX_PACKET_TEXT);
    let written = serde_yaml::to_writer(&mut out, &shown).is_ok();
    let text = String::from_utf8_lossy(&out.text).into_owned();
    if written && out.complete() {
        if !cut {
            return text;
        }
        return format!(
            "{text}# … manifest truncated: long values end in …, later entries are left out; the digest covers the \
             whole object.\n"
        );
    }
    let cut = text.rfind('\n').map_or(0, |i| i + 1);
    format!("{}# … manifest truncated at {cut} bytes; the digest covers the whole object.\n", &text[..cut])
}

/// The most of one string a manifest shows: one huge value must not crowd out the
/// rest of the object (its name, its other fields).
const MAX_PREVIEW_STRING: usize = 16 * 1024;

/// A copy of `value` with at most about `budget` bytes of keys and strings: a
/// string over MAX_PREVIEW_STRING (or the budget left) is cut and ends in "…", and
/// once the budget is spent the remaining entries of arrays and maps are left out
/// (`cut` says whether anything was). Its cost is bounded by the budget, not by
/// the size of `value`.
fn preview(value: &serde_json::Value, budget: &mut usize, cut: &mut bool) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(text) if text.len() > MAX_PREVIEW_STRING.min(*budget) => {
            let mut end = MAX_PREVIEW_STRING.min(*budget);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            *budget -= end;
            *cut = true;
            Value::String(format!("{}…", &text[..end]))
        }
        Value::String(text) => {
            *budget -= text.len();
            value.clone()
        }
        Value::Array(items) => {
            let mut shown = Vec::new();
            for item in items {
                if *budget == 0 {
                    *cut = true;
                    break;
                }
                shown.push(preview(item, budget, cut));
            }
            Value::Array(shown)
        }
        Value::Object(map) => {
            let mut shown = serde_json::Map::new();
            for (key, item) in map {
                if *budget == 0 {
                    *cut = true;
                    break;
                }
                *budget = budget.saturating_sub(key.len());
                shown.insert(key.clone(), preview(item, budget, cut));
            }
            Value::Object(shown)
        }
        scalar => {
            *budget = budget.saturating_sub(8);
            scalar.clone()
        }
    }
}

/// Whether `value`'s JSON fits in `cap` bytes; stops serializing once it does not.
fn json_fits(value: &serde_json::Value, cap: usize) -> Option<usize> {
    let mut out = Capped::new(cap);
    (serde_json::to_writer(&mut out, value).is_ok() && out.complete()).then_some(out.text.len())
}

/// Unified diff (YAML) of the old and new object, given in canonical form, when
/// they differ.
pub fn render_diff(old: Option<&serde_json::Value>, new: Option<&serde_json::Value>) -> Option<String> {
    if old == new {
        return None;
    }
    // Size first, as JSON, stopping at the cap: a line diff of megabytes is slow and
    // would not fit in etcd with the request, and rendering it is the slow part.
    let fits = |v: Option<&serde_json::Value>, cap: usize| v.map_or(Some(0), |v| json_fits(v, cap));
    let small = fits(old, MAX_PACKET_TEXT).and_then(|used| fits(new, MAX_PACKET_TEXT - used)).is_some();
    if !small {
        return Some(format!(
            "# the object is too large to diff here (over {} KiB before and after together); the digest covers all \
             of it.\n# Compare with: kubectl diff -f <manifest>\n",
            MAX_PACKET_TEXT / 1024
        ));
    }
    let yaml =
        |v: Option<&serde_json::Value>| v.map(|v| serde_yaml::to_string(v).unwrap_or_default()).unwrap_or_default();
    let (old, new) = (yaml(old), yaml(new));
    let diff = similar::TextDiff::from_lines(&old, &new);
    Some(diff.unified_diff().context_radius(3).header("before", "after").to_string())
}
