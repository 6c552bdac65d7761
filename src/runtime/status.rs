//! The status of EscalationPolicies, Teams and Approvers, kept current by the
//! leader: [`crate::readiness`] works it out from the caches, this writes what
//! changed. It looks again when any of them changes, when a shift hands over or
//! quiet hours end, and every [`RESYNC`] (quiet hours that start, a policy's
//! team created later).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::warn;

use crate::crd::{Approver, EscalationPolicy, Team};
use crate::policy::PolicySet;

/// The longest the writer waits without a change.
pub const RESYNC: Duration = Duration::from_secs(30);

/// What the status writer reads.
pub(crate) struct Context {
    pub client: kube::Client,
    pub policy_store: Store<EscalationPolicy>,
    pub policies: Arc<arc_swap::ArcSwap<PolicySet>>,
    pub teams: Store<Team>,
    pub approvers: Store<Approver>,
    /// Poked on any change of the three kinds.
    pub changed: Arc<Notify>,
}

/// Keep the statuses current until aborted (losing the lease).
pub(crate) async fn run(ctx: Arc<Context>) {
    loop {
        let now = Timestamp::now();
        let next = write_all(&ctx, now).await;
        let wait = next
            .and_then(|t| Duration::try_from(t.duration_since(now)).ok())
            .map_or(RESYNC, |d| (d + Duration::from_millis(100)).min(RESYNC));
        tokio::select! {
            _ = ctx.changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Write every status that differs from the cached one; returns when one
/// changes by itself next.
async fn write_all(ctx: &Context, now: Timestamp) -> Option<Timestamp> {
    let teams: Vec<Team> = ctx.teams.state().iter().map(|t| (**t).clone()).collect();
    let set = ctx.policies.load();
    for policy in ctx.policy_store.state() {
        let name = policy.metadata.name.clone().unwrap_or_default();
        let mut errors: Vec<String> = set.errors().filter(|e| e.policy == name).map(|e| e.to_string()).collect();
        // The set holds the CEL's compile errors; compiling again every pass is waste.
        if errors.is_empty()
            && let Err(e) = crate::webhook::guard::policy_spec(&policy)
        {
            errors.push(e.to_string());
        }
        let status = crate::readiness::policy(&policy, &errors, &teams, now);
        write(&ctx.client, &*policy, policy.status.as_ref(), status).await;
    }
    let mut team_statuses = Vec::new();
    for team in &teams {
        let status = crate::readiness::team(team, &teams, now);
        write(&ctx.client, team, team.status.as_ref(), status.clone()).await;
        team_statuses.push(status);
    }
    let mut approver_statuses = Vec::new();
    for approver in ctx.approvers.state() {
        let status = crate::readiness::approver(&approver, now);
        write(&ctx.client, &*approver, approver.status.as_ref(), status.clone()).await;
        approver_statuses.push(status);
    }
    crate::readiness::next_change(&team_statuses, &approver_statuses).filter(|t| *t > now)
}

/// Patch `object`'s status to `wanted` when it differs from `current`.
async fn write<K, S>(client: &kube::Client, object: &K, current: Option<&S>, wanted: S)
where
    K: kube::Resource<Scope = kube::core::ClusterResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
    S: Serialize + PartialEq,
{
    if current == Some(&wanted) {
        return;
    }
    let name = object.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::all(client.clone());
    // Server-side apply of the whole status: a field left out (the end of
    // quiet hours once they are over) is removed, which a merge patch would keep.
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&Default::default()),
        "kind": K::kind(&Default::default()),
        "status": wanted,
    });
    if let Err(e) = api.patch_status(&name, &PatchParams::apply("signoff-status").force(), &Patch::Apply(&patch)).await
    {
        warn!(error = %e, kind = %K::kind(&Default::default()), %name, "could not write the status");
    }
}
