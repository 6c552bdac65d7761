//! The reconciler: runs `step` for each ApprovalRequest and writes the status it
//! returns, as signoff's own identity. The webhook checks that write like any
//! other (the controller never adds a decision); optimistic concurrency
//! (resourceVersion) makes a write based on a stale read fail and retry instead of
//! dropping a decision that arrived meanwhile.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tracing::{info, warn};

use crate::crd::{ApprovalRequest, Approver, Team};
use crate::policy::PolicySet;

/// What the reconciler reads: caches shared with the webhook.
pub struct Context {
    pub client: kube::Client,
    pub policies: Arc<arc_swap::ArcSwap<PolicySet>>,
    pub teams: Store<Team>,
    pub approvers: Store<Approver>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("writing status of {0}: {1}")]
    Write(String, kube::Error),
}

async fn reconcile(ar: Arc<ApprovalRequest>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let now = jiff::Timestamp::now();
    let teams: Vec<Team> = ctx.teams.state().iter().map(|t| (**t).clone()).collect();
    let policies = ctx.policies.load();
    let approvers: Vec<Approver> = ctx.approvers.state().iter().map(|a| (**a).clone()).collect();
    let world = super::World { policies: &policies, teams: &teams, approvers: &approvers };
    let step = super::step(&ar, world, now);
    let name = ar.metadata.name.clone().unwrap_or_default();
    let namespace = ar.metadata.namespace.clone().unwrap_or_default();
    if ar.status.as_ref() != Some(&step.status) {
        let api: Api<ApprovalRequest> = Api::namespaced(ctx.client.clone(), &namespace);
        // Never send decisions or admissions: they are written by approvers and the
        // gate, and echoing them back (Time keeps whole seconds) would read as an edit.
        let mut status = serde_json::to_value(&step.status).unwrap_or_default();
        if let Some(fields) = status.as_object_mut() {
            fields.remove("decisions");
            fields.remove("admissions");
        }
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": ar.metadata.resource_version },
            "status": status,
        });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| ReconcileError::Write(format!("{namespace}/{name}"), e))?;
        info!(target: "audit", request = %format!("{namespace}/{name}"), phase = ?step.status.phase, tier = ?step.status.tier, "approval request progressed");
    }
    Ok(match step.wake_at {
        Some(at) => {
            Action::requeue(Duration::from_millis(at.duration_since(now).as_millis().clamp(0, 3_600_000) as u64))
        }
        None => Action::await_change(),
    })
}

fn error_policy(_ar: Arc<ApprovalRequest>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    // Conflicts are normal (a decision arrived between read and write): retry soon.
    warn!(%error, "reconcile failed; retrying");
    Action::requeue(Duration::from_millis(500))
}

/// Run the reconciler until the stream ends.
pub async fn run(ctx: Arc<Context>) {
    let api: Api<ApprovalRequest> = Api::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default()).run(reconcile, error_policy, ctx).for_each(|_| async {}).await;
}
