//! Where a request goes before any policy classifies it, pure, shared by the
//! webhook and `kubectl signoff check` (so that "check says what the webhook
//! would do" holds for every kind): signoff's own resources go to the guards,
//! exempt resources are admitted, a kind no policy covers is refused when the
//! webhook configuration should never have sent it, and the rest is gated.

use super::review::EXEMPT_RESOURCES;
use crate::crd::GROUP;
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

/// The whole decision for `received` (and, for a finalizer removal that
/// completes a deletion, the DELETE it is judged as). `refuse_uncovered` is set
/// when signoff writes its own webhook configuration, so an uncovered kind can
/// only come from a stale configuration or a foreign caller.
pub fn route(
    received: &ReviewInput,
    finalizing: Option<&ReviewInput>,
    policies: &PolicySet,
    refuse_uncovered: bool,
) -> Route {
    if let Some(route) = by_resource(&received.resource.group, &received.resource.resource) {
        return route;
    }
    let judged = finalizing.unwrap_or(received);
    if refuse_uncovered && !policies.covers(judged) && !policies.covers(received) {
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
