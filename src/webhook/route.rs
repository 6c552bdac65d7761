//! Where a request goes before any policy classifies it, pure, shared by the
//! webhook and `kubectl signoff check` (so that "check says what the webhook
//! would do" holds for every kind): signoff's own resources go to the guards,
//! exempt resources are admitted, a kind no policy covers is refused when the
//! webhook configuration should never have sent it, and the rest is gated.

use super::review::EXEMPT_RESOURCES;
use crate::crd::{GROUP, Operation};
use crate::policy::{PolicySet, ReviewInput, operation_str};

/// The path of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// signoff.dev: the guards decide; never classified, never held.
    OwnResource,
    /// Never held, whatever a policy says (DESIGN.md invariant 5).
    Exempt,
    /// No policy matches: the configuration should not have sent it (stale, or
    /// a caller other than the API server). Refused, with this message.
    Uncovered(String),
    /// Classified by the policies.
    Gate,
}

impl Route {
    /// What `kubectl signoff check` says of a change that is not gated.
    pub fn note(&self) -> Option<&'static str> {
        match self {
            Route::OwnResource => Some("signoff's own resource: checked by its guards, never held"),
            Route::Exempt => Some("exempt: never held (holding it could lock the cluster)"),
            Route::Uncovered(_) | Route::Gate => None,
        }
    }
}

/// The routes decided by the resource alone, before anything is decoded.
pub fn by_resource(group: &str, resource: &str) -> Option<Route> {
    if group == GROUP {
        Some(Route::OwnResource)
    } else if EXEMPT_RESOURCES.contains(&(group, resource)) {
        Some(Route::Exempt)
    } else {
        None
    }
}

/// The whole decision for `received`, judged as `judged_as` when it stands for
/// another change (a finalizer removal that completes a deletion: that DELETE; a
/// metadata change through /status: the object's UPDATE). `refuse_uncovered` is set
/// when signoff writes its own webhook configuration, so an uncovered kind can
/// only come from a stale configuration or a foreign caller.
pub fn route(
    received: &ReviewInput,
    judged_as: Option<&ReviewInput>,
    policies: &PolicySet,
    refuse_uncovered: bool,
) -> Route {
    if let Some(route) = by_resource(&received.resource.group, &received.resource.resource) {
        return route;
    }
    let judged = judged_as.unwrap_or(received);
    // The configuration registers UPDATE wherever a policy covers DELETE (a
    // finalizer removal can complete a deletion), so such an update is expected.
    // (Also for a /status write judged as the object's update.)
    let deletes_covered = || {
        judged.operation == Operation::Update
            && policies.covers(&ReviewInput { operation: Operation::Delete, ..judged.clone() })
    };
    // A write that makes a controller perform a held change (side doors).
    let enables = || crate::policy::side_doors::may_enable(judged, policies);
    if refuse_uncovered && !policies.covers(judged) && !policies.covers(received) && !deletes_covered() && !enables() {
        let r = &received.resource;
        return Route::Uncovered(format!(
            "signoff: no EscalationPolicy matches {} of {}{}/{}{}; the webhook configuration should not send it here \
             (stale configuration, or a caller other than the API server). Denied to be safe.",
            operation_str(received.operation),
            if r.group.is_empty() { String::new() } else { format!("{}/", r.group) },
            r.version,
            r.resource,
            if received.sub_resource.is_empty() { String::new() } else { format!("/{}", received.sub_resource) },
        ));
    }
    Route::Gate
}

/// signoff's own namespace labels (`signoff.dev/environment`, `signoff.dev/owner`,
/// any `signoff.dev/…`): its trust anchors, since they decide which rules apply
/// and who approves. Protected on every path, whatever the policies say.
pub const ANCHOR_PREFIX: &str = "signoff.dev/";

/// The signoff labels an update of a Namespace (through any subresource) adds,
/// changes or removes, sorted; empty for anything else.
pub fn anchor_labels_changed(input: &ReviewInput) -> Vec<String> {
    if !input.resource.group.is_empty() || input.resource.resource != "namespaces" {
        return vec![];
    }
    let labels = |object: &Option<serde_json::Value>| -> Vec<(String, String)> {
        let Some(map) = object.as_ref().and_then(|o| o.pointer("/metadata/labels")).and_then(|l| l.as_object()) else {
            return vec![];
        };
        map.iter()
            .filter(|(k, _)| k.starts_with(ANCHOR_PREFIX))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect()
    };
    let (new, old) = (labels(&input.object), labels(&input.old_object));
    let mut changed: Vec<String> = new
        .iter()
        .filter(|label| !old.contains(label))
        .chain(old.iter().filter(|(k, _)| !new.iter().any(|(n, _)| n == k)))
        .map(|(k, _)| k.clone())
        .collect();
    changed.sort();
    changed.dedup();
    changed
}

/// Why a change of `labels` through a subresource of the namespace is refused.
pub fn anchor_subresource_denial(input: &ReviewInput, labels: &[String]) -> String {
    format!(
        "signoff: {} of namespace {} can change only on the namespace itself, where signoff's policies see the change, \
         not through namespaces/{}: they decide which rules apply and who approves",
        labels.join(", "),
        input.name,
        input.sub_resource
    )
}

/// Why a change of `labels` on the namespace that no policy holds is refused to
/// someone who is not a platform admin.
pub fn anchor_denial(input: &ReviewInput, labels: &[String]) -> String {
    format!(
        "signoff: {} of namespace {} decide which rules apply and who approves; only a platform admin changes them \
         (or an approved change, where a policy holds it). Ask a platform admin",
        labels.join(", "),
        input.name
    )
}
