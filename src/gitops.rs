//! GitOps, pure: which Flux or Argo CD object applied a held change (from the
//! marks its tool leaves on what it applies), what the approver is told about
//! its source, and how the approved change is handed back so that the tool
//! applies it at once instead of at its next retry. The reads and patches
//! themselves are the reconciler's (`escalation::reconciler`).

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::crd::{ApprovalRequestStatus, GitOpsOwner, GitOpsSource, GitOpsTool, Phase};

/// Flux's labels on what a Kustomization applies.
pub const FLUX_KUSTOMIZE_NAME: &str = "kustomize.toolkit.fluxcd.io/name";
pub const FLUX_KUSTOMIZE_NAMESPACE: &str = "kustomize.toolkit.fluxcd.io/namespace";
/// Flux's labels on what a HelmRelease installs.
pub const FLUX_HELM_NAME: &str = "helm.toolkit.fluxcd.io/name";
pub const FLUX_HELM_NAMESPACE: &str = "helm.toolkit.fluxcd.io/namespace";
/// Argo CD's annotation tracking (its default): `<app>:<group>/<kind>:<namespace>/<name>`.
pub const ARGOCD_TRACKING_ID: &str = "argocd.argoproj.io/tracking-id";
/// Flux reconciles an object again when this annotation changes.
pub const FLUX_REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";

/// How signoff reads and hands back GitOps changes (`signoff run` flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Hand approved changes back unless a policy says otherwise.
    pub hand_back: bool,
    /// Argo CD label tracking: the label naming the Application (Argo CD's
    /// `application.instanceLabelKey`, usually `app.kubernetes.io/instance`).
    /// Off by default: Helm charts set that label too.
    pub argocd_instance_label: Option<String>,
    /// Where Argo CD's Applications live unless the tracking id names a namespace.
    pub argocd_namespace: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { hand_back: false, argocd_instance_label: None, argocd_namespace: "argocd".into() }
    }
}

fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.get("metadata")?.get("labels")?.get(key)?.as_str().filter(|v| !v.is_empty())
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.get("metadata")?.get("annotations")?.get(key)?.as_str().filter(|v| !v.is_empty())
}

/// The GitOps object that applied `object`, from its marks. A HelmRelease's
/// labels win over a Kustomization's (the HelmRelease is the closer owner);
/// Argo CD's tracking id over its instance label.
pub fn owner_of(object: &Value, settings: &Settings) -> Option<GitOpsOwner> {
    let owner = |tool, kind: &str, namespace: &str, name: &str| GitOpsOwner {
        tool,
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
        hand_back: false,
    };
    if let (Some(name), Some(namespace)) = (label(object, FLUX_HELM_NAME), label(object, FLUX_HELM_NAMESPACE)) {
        return Some(owner(GitOpsTool::Flux, "HelmRelease", namespace, name));
    }
    if let (Some(name), Some(namespace)) = (label(object, FLUX_KUSTOMIZE_NAME), label(object, FLUX_KUSTOMIZE_NAMESPACE))
    {
        return Some(owner(GitOpsTool::Flux, "Kustomization", namespace, name));
    }
    if let Some(id) = annotation(object, ARGOCD_TRACKING_ID) {
        // Apps in any namespace are tracked as `<namespace>_<name>`.
        let app = id.split(':').next().unwrap_or_default();
        let (namespace, name) = app.split_once('_').unwrap_or((&settings.argocd_namespace, app));
        if !name.is_empty() {
            return Some(owner(GitOpsTool::ArgoCD, "Application", namespace, name));
        }
    }
    let app = settings.argocd_instance_label.as_deref().and_then(|key| label(object, key))?;
    Some(owner(GitOpsTool::ArgoCD, "Application", &settings.argocd_namespace, app))
}

/// A Kubernetes resource: group, version, plural.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
}

/// The API resource of an owner kind or a Flux source kind.
pub fn resource_of(kind: &str) -> Option<Resource> {
    let r = |group, version, plural| Some(Resource { group, version, plural });
    match kind {
        "Kustomization" => r("kustomize.toolkit.fluxcd.io", "v1", "kustomizations"),
        "HelmRelease" => r("helm.toolkit.fluxcd.io", "v2", "helmreleases"),
        "Application" => r("argoproj.io", "v1alpha1", "applications"),
        "GitRepository" => r("source.toolkit.fluxcd.io", "v1", "gitrepositories"),
        "OCIRepository" => r("source.toolkit.fluxcd.io", "v1", "ocirepositories"),
        "Bucket" => r("source.toolkit.fluxcd.io", "v1", "buckets"),
        "HelmRepository" => r("source.toolkit.fluxcd.io", "v1", "helmrepositories"),
        "HelmChart" => r("source.toolkit.fluxcd.io", "v1", "helmcharts"),
        _ => None,
    }
}

/// The Flux source a Kustomization or HelmRelease reads: (kind, namespace, name).
pub fn flux_source_ref(owner: &GitOpsOwner, object: &Value) -> Option<(String, String, String)> {
    let spec = object.get("spec")?;
    let reference = match owner.kind.as_str() {
        "HelmRelease" => spec.get("chartRef").or_else(|| spec.pointer("/chart/spec/sourceRef")),
        _ => spec.get("sourceRef"),
    }?;
    let text = |key: &str| reference.get(key).and_then(Value::as_str).filter(|v| !v.is_empty());
    Some((
        text("kind")?.to_string(),
        text("namespace").unwrap_or(&owner.namespace).to_string(),
        text("name")?.to_string(),
    ))
}

/// The revision the owner was applying and, for Argo CD, the repository.
pub fn revision_and_url(owner: &GitOpsOwner, object: &Value) -> (Option<String>, Option<String>) {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).map(str::to_string);
    match owner.tool {
        GitOpsTool::Flux => (text("/status/lastAttemptedRevision"), None),
        GitOpsTool::ArgoCD => (
            text("/status/sync/revision").or_else(|| text("/status/sync/revisions/0")),
            text("/spec/source/repoURL").or_else(|| text("/spec/sources/0/repoURL")),
        ),
    }
}

/// The URL of a Flux source (`spec.url`).
pub fn source_url(source: &Value) -> Option<String> {
    source.pointer("/spec/url").and_then(Value::as_str).map(str::to_string)
}

/// `github.com/acme/deploy` from `https://github.com/acme/deploy.git` (or an
/// ssh URL): what an approver recognises.
pub fn short_url(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    rest.trim_end_matches('/').trim_end_matches(".git").to_string()
}

/// The commit a revision names, and the branch or tag when it says one:
/// Flux's `main@sha1:3f2a9c1e…` or Argo CD's full SHA. None for other
/// revisions (a chart version, an OCI tag).
fn commit_of(revision: &str) -> Option<(&str, Option<&str>)> {
    let (reference, digest) = match revision.rsplit_once('@') {
        Some((r, d)) => (Some(r), d),
        None => (None, revision),
    };
    let digest = digest.split_once(':').map(|(_, d)| d).unwrap_or(digest);
    (digest.len() >= 12 && digest.chars().all(|c| c.is_ascii_hexdigit())).then_some((digest, reference))
}

/// `commit 3f2a9c1 on main`, `commit 3f2a9c1`, or `revision 1.4.2`.
fn revision_text(revision: &str) -> String {
    match commit_of(revision) {
        Some((sha, Some(reference))) => format!("commit {} on {reference}", &sha[..7]),
        Some((sha, None)) => format!("commit {}", &sha[..7]),
        None => format!("revision {revision}"),
    }
}

/// What the packet says about the owner, e.g. `commit 3f2a9c1 on main of
/// github.com/acme/deploy, applied by Flux Kustomization flux-system/shop`.
pub fn describe(owner: &GitOpsOwner, source: Option<&GitOpsSource>) -> String {
    let applied = format!("{} {} {}/{}", owner.tool.as_str(), owner.kind, owner.namespace, owner.name);
    let Some(source) = source else { return format!("applied by {applied} (its source is being read)") };
    if let Some(why) = &source.unreadable {
        return format!("applied by {applied}; its source could not be read: {why}");
    }
    let what = match (&source.revision, &source.url) {
        (Some(rev), Some(url)) => format!("{} of {}", revision_text(rev), short_url(url)),
        (Some(rev), None) => revision_text(rev),
        (None, Some(url)) => format!("from {}", short_url(url)),
        (None, None) => return format!("applied by {applied}"),
    };
    format!("{what}, applied by {applied}")
}

/// The attempts a hand-back gets before it gives up (about a minute in all).
pub const HAND_BACK_ATTEMPTS: u32 = 6;

/// When the hand-back of an approved request is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Now, as this attempt number (from 1).
    Now(u32),
    /// After a failure: the next try is at this time.
    At(Timestamp),
    /// Done, given up, not approved, or the approval ran out.
    Never,
}

/// The wait after failed attempt `attempt`: 1, 2, 4, 8, 16 s, capped at 30 s.
pub fn backoff(attempt: u32) -> SignedDuration {
    SignedDuration::from_secs((1i64 << attempt.saturating_sub(1).min(5)).min(30))
}

/// Whether the hand-back of this attempt's approval is due at `now`.
pub fn hand_back_due(status: &ApprovalRequestStatus, now: Timestamp) -> Due {
    if status.phase != Phase::Approved || status.not_after.as_ref().is_some_and(|t| t.0 <= now) {
        return Due::Never;
    }
    match &status.hand_back {
        Some(h) if h.for_attempt == status.attempt => match h.result.as_str() {
            "Failed" if h.attempts < HAND_BACK_ATTEMPTS => {
                let next = h.at.0 + backoff(h.attempts);
                if next <= now { Due::Now(h.attempts + 1) } else { Due::At(next) }
            }
            _ => Due::Never,
        },
        _ => Due::Now(1),
    }
}

/// The status record of hand-back attempt `attempt`: Done, Failed (to be
/// retried) or GaveUp after the last attempt.
pub fn hand_back_record(
    attempt: u32,
    for_attempt: u32,
    result: Result<String, String>,
    now: Timestamp,
) -> crate::crd::HandBack {
    let (outcome, message) = match result {
        Ok(done) => ("Done", done),
        Err(why) if attempt >= HAND_BACK_ATTEMPTS => ("GaveUp", why),
        Err(why) => ("Failed", why),
    };
    crate::crd::HandBack {
        result: outcome.into(),
        attempts: attempt,
        message: Some(message),
        at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::from_second(now.as_second()).unwrap_or(now),
        ),
        for_attempt,
    }
}

/// The merge patch that makes Flux reconcile the owner now.
pub fn flux_patch(now: Timestamp) -> Value {
    json!({"metadata": {"annotations": {FLUX_REQUESTED_AT: now.to_string()}}})
}

/// The approved object, as Argo CD names a resource to sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResource {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

/// What the hand-back does to an Argo CD Application.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgoStep {
    /// Start a sync of the approved resource (this merge patch).
    Sync(Value),
    /// The running operation only waits to retry a sync that this request's hold
    /// failed: terminate it (as `argocd app terminate-op` does), then sync.
    Terminate(Value),
}

/// The merge patch that starts an Argo CD sync of only the approved resource,
/// as `kubectl patch app --type merge` does (Argo CD's "sync with kubectl");
/// an error when another operation is running (the hand-back retries). An
/// automated sync that failed on this very hold and waits for its next retry
/// (up to minutes of backoff) is terminated first.
pub fn argocd_patch(app: &Value, resource: &SyncResource, request: &str) -> Result<ArgoStep, String> {
    let state = app.pointer("/status/operationState");
    let phase = state.and_then(|s| s.get("phase")).and_then(Value::as_str);
    let message = state.and_then(|s| s.get("message")).and_then(Value::as_str).unwrap_or_default();
    let busy = app.get("operation").is_some_and(|o| !o.is_null()) || phase == Some("Running");
    let name = request.rsplit('/').next().unwrap_or(request);
    if busy && phase == Some("Running") && message.contains("held for approval") && message.contains(name) {
        return Ok(ArgoStep::Terminate(json!({"status": {"operationState": {"phase": "Terminating"}}})));
    }
    if phase == Some("Terminating") {
        return Err("Argo CD is terminating its retry of the held sync; syncing next".into());
    }
    if busy {
        return Err("the Application has an operation in progress; trying again".into());
    }
    let mut target = json!({"group": resource.group, "kind": resource.kind, "name": resource.name});
    if let Some(ns) = &resource.namespace {
        target["namespace"] = json!(ns);
    }
    Ok(ArgoStep::Sync(json!({"operation": {
        "initiatedBy": {"username": "signoff"},
        "info": [{"name": "Reason", "value": format!("approved in signoff: {request}")}],
        "sync": {"resources": [target]},
    }})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn object(labels: Value, annotations: Value) -> Value {
        json!({"metadata": {"name": "api", "labels": labels, "annotations": annotations}})
    }

    #[test]
    fn owners_are_read_from_each_tools_marks() {
        let s = Settings::default();
        let flux = object(json!({FLUX_KUSTOMIZE_NAME: "shop", FLUX_KUSTOMIZE_NAMESPACE: "flux-system"}), json!({}));
        let o = owner_of(&flux, &s).unwrap();
        assert_eq!(
            (o.tool, o.kind.as_str(), o.namespace.as_str(), o.name.as_str()),
            (GitOpsTool::Flux, "Kustomization", "flux-system", "shop")
        );
        let both = object(
            json!({FLUX_KUSTOMIZE_NAME: "shop", FLUX_KUSTOMIZE_NAMESPACE: "flux-system", FLUX_HELM_NAME: "redis", FLUX_HELM_NAMESPACE: "cache"}),
            json!({}),
        );
        assert_eq!(owner_of(&both, &s).unwrap().kind, "HelmRelease", "the closer owner wins");
        let half = object(json!({FLUX_KUSTOMIZE_NAME: "shop"}), json!({}));
        assert_eq!(owner_of(&half, &s), None, "a name without its namespace is no owner");

        let argo = object(json!({}), json!({ARGOCD_TRACKING_ID: "guestbook:apps/Deployment:prod/api"}));
        let o = owner_of(&argo, &s).unwrap();
        assert_eq!((o.tool, o.namespace.as_str(), o.name.as_str()), (GitOpsTool::ArgoCD, "argocd", "guestbook"));
        let anyns = object(json!({}), json!({ARGOCD_TRACKING_ID: "team-a_guestbook:apps/Deployment:prod/api"}));
        let o = owner_of(&anyns, &s).unwrap();
        assert_eq!((o.namespace.as_str(), o.name.as_str()), ("team-a", "guestbook"), "apps in any namespace");

        let instance = object(json!({"app.kubernetes.io/instance": "guestbook"}), json!({}));
        assert_eq!(owner_of(&instance, &s), None, "label tracking is off unless configured: Helm sets that label too");
        let labels =
            Settings { argocd_instance_label: Some("app.kubernetes.io/instance".into()), ..Settings::default() };
        assert_eq!(owner_of(&instance, &labels).unwrap().name, "guestbook");
        assert_eq!(owner_of(&json!({"metadata": {}}), &labels), None);
    }

    #[test]
    fn the_packet_names_the_commit_the_repository_and_the_owner() {
        let owner = GitOpsOwner {
            tool: GitOpsTool::Flux,
            kind: "Kustomization".into(),
            namespace: "flux-system".into(),
            name: "shop".into(),
            hand_back: true,
        };
        let source = GitOpsSource {
            url: Some("https://github.com/acme/deploy.git".into()),
            revision: Some("main@sha1:3f2a9c1e0b6d4a7f8c9e0d1b2a3c4d5e6f708192".into()),
            unreadable: None,
            at: Time(at(0)),
        };
        assert_eq!(
            describe(&owner, Some(&source)),
            "commit 3f2a9c1 on main of github.com/acme/deploy, applied by Flux Kustomization flux-system/shop"
        );
        let argo = GitOpsSource { revision: Some("3f2a9c1e0b6d4a7f8c9e0d1b2a3c4d5e6f708192".into()), ..source.clone() };
        assert!(describe(&owner, Some(&argo)).starts_with("commit 3f2a9c1 of github.com/acme/deploy"));
        let chart = GitOpsSource { revision: Some("1.4.2".into()), url: None, ..source.clone() };
        assert!(describe(&owner, Some(&chart)).starts_with("revision 1.4.2, applied by"));
        let denied = GitOpsSource { unreadable: Some("forbidden".into()), url: None, revision: None, ..source };
        assert_eq!(
            describe(&owner, Some(&denied)),
            "applied by Flux Kustomization flux-system/shop; its source could not be read: forbidden"
        );
        assert!(describe(&owner, None).ends_with("(its source is being read)"));
        assert_eq!(short_url("ssh://git@github.com/acme/deploy"), "github.com/acme/deploy");
    }

    #[test]
    fn source_references_and_revisions_come_from_each_owner_kind() {
        let owner = |kind: &str, tool| GitOpsOwner {
            tool,
            kind: kind.into(),
            namespace: "flux-system".into(),
            name: "x".into(),
            hand_back: false,
        };
        let ks = json!({"spec": {"sourceRef": {"kind": "GitRepository", "name": "deploy"}}, "status": {"lastAttemptedRevision": "main@sha1:abc"}});
        assert_eq!(
            flux_source_ref(&owner("Kustomization", GitOpsTool::Flux), &ks),
            Some(("GitRepository".into(), "flux-system".into(), "deploy".into()))
        );
        assert_eq!(
            revision_and_url(&owner("Kustomization", GitOpsTool::Flux), &ks).0.as_deref(),
            Some("main@sha1:abc")
        );
        let hr = json!({"spec": {"chart": {"spec": {"sourceRef": {"kind": "HelmRepository", "name": "bitnami", "namespace": "charts"}}}}});
        assert_eq!(
            flux_source_ref(&owner("HelmRelease", GitOpsTool::Flux), &hr),
            Some(("HelmRepository".into(), "charts".into(), "bitnami".into()))
        );
        let app = json!({"spec": {"source": {"repoURL": "https://github.com/acme/deploy"}}, "status": {"sync": {"revision": "3f2a"}}});
        assert_eq!(
            revision_and_url(&owner("Application", GitOpsTool::ArgoCD), &app),
            (Some("3f2a".into()), Some("https://github.com/acme/deploy".into()))
        );
        assert!(resource_of("Kustomization").is_some() && resource_of("Secret").is_none());
    }

    #[test]
    fn a_hand_back_is_due_once_per_approval_and_retried_with_backoff() {
        let mut status = ApprovalRequestStatus { phase: Phase::Pending, ..Default::default() };
        assert_eq!(hand_back_due(&status, at(0)), Due::Never, "not approved");
        status.phase = Phase::Approved;
        status.not_after = Some(Time(at(3600)));
        assert_eq!(hand_back_due(&status, at(0)), Due::Now(1));
        status.hand_back = Some(hand_back_record(1, 1, Err("connection refused".into()), at(0)));
        assert_eq!(hand_back_due(&status, at(0)), Due::At(at(1)), "1 s after the first failure");
        assert_eq!(hand_back_due(&status, at(1)), Due::Now(2));
        status.hand_back = Some(hand_back_record(3, 1, Err("x".into()), at(10)));
        assert_eq!(hand_back_due(&status, at(10)), Due::At(at(14)), "4 s after the third");
        status.hand_back = Some(hand_back_record(HAND_BACK_ATTEMPTS, 1, Err("x".into()), at(10)));
        assert_eq!(status.hand_back.as_ref().unwrap().result, "GaveUp");
        assert_eq!(hand_back_due(&status, at(99)), Due::Never, "gave up");
        status.hand_back = Some(hand_back_record(2, 1, Ok("requested".into()), at(10)));
        assert_eq!(hand_back_due(&status, at(11)), Due::Never, "done once");
        status.attempt = 2;
        assert_eq!(hand_back_due(&status, at(11)), Due::Now(1), "a reopened request's approval is handed back afresh");
        status.not_after = Some(Time(at(11)));
        assert_eq!(hand_back_due(&status, at(11)), Due::Never, "the approval ran out");
    }

    #[test]
    fn argo_cd_syncs_only_the_approved_resource_and_never_over_a_running_operation() {
        let resource = SyncResource {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: Some("prod".into()),
            name: "api".into(),
        };
        let Ok(ArgoStep::Sync(patch)) = argocd_patch(&json!({"spec": {}}), &resource, "prod/ar-1") else {
            panic!("a sync")
        };
        assert_eq!(patch["operation"]["initiatedBy"]["username"], "signoff");
        assert_eq!(
            patch["operation"]["sync"]["resources"],
            json!([{"group": "apps", "kind": "Deployment", "namespace": "prod", "name": "api"}])
        );
        assert!(argocd_patch(&json!({"operation": {"sync": {}}}), &resource, "x").is_err());
        assert!(argocd_patch(&json!({"status": {"operationState": {"phase": "Running"}}}), &resource, "x").is_err());
        assert!(argocd_patch(&json!({"status": {"operationState": {"phase": "Succeeded"}}}), &resource, "x").is_ok());
        // An automated sync waiting to retry what this very hold failed is terminated first.
        let retrying = json!({
            "operation": {"sync": {}, "retry": {"limit": 5}},
            "status": {"operationState": {"phase": "Running", "retryCount": 2,
                "message": "one or more objects failed to apply, reason: ... held for approval: ApprovalRequest prod/ar-1 ..."}}
        });
        assert_eq!(
            argocd_patch(&retrying, &resource, "prod/ar-1"),
            Ok(ArgoStep::Terminate(json!({"status": {"operationState": {"phase": "Terminating"}}})))
        );
        assert!(argocd_patch(&retrying, &resource, "prod/ar-2").is_err(), "another request's hold: wait");
        assert!(flux_patch(at(0))["metadata"]["annotations"][FLUX_REQUESTED_AT].is_string());
    }
}
