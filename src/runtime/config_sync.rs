//! The ValidatingWebhookConfiguration, kept equal to the union of the policies'
//! match rules and the current caBundle (when signoff owns it).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::crd::EscalationPolicy;
use crate::webhook::config::{WebhookSettings, gate_rules, webhook_configuration};

/// The owner reference to the ClusterRole `name` (its uid must be read: a
/// reference to the wrong uid is garbage at once).
pub(crate) async fn cluster_role_owner(client: &kube::Client, name: &str) -> crate::Result<OwnerReference> {
    let role = Api::<ClusterRole>::all(client.clone()).get(name).await.map_err(|e| {
        crate::Error::Config(format!(
            "--webhook-config-owner={name}: reading ClusterRole {name} failed ({e}); it must exist and \
             signoff's ServiceAccount needs get on it (the chart grants both)"
        ))
    })?;
    Ok(OwnerReference {
        api_version: "rbac.authorization.k8s.io/v1".into(),
        kind: "ClusterRole".into(),
        name: name.into(),
        uid: role.metadata.uid.unwrap_or_default(),
        ..Default::default()
    })
}

/// Apply the configuration, then again on every policy or caBundle change;
/// failures are retried every second. Stops at shutdown: during `helm uninstall`
/// a replica must not write back the configuration the pre-delete hook removed.
pub(crate) async fn sync_webhook_configuration(
    client: kube::Client,
    settings: WebhookSettings,
    policies: Store<EscalationPolicy>,
    changed: Arc<Notify>,
    mut ca_bundle: watch::Receiver<Vec<u8>>,
    mut stopping: watch::Receiver<bool>,
) {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let params = PatchParams::apply("signoff").force();
    let mut last = None;
    loop {
        if *stopping.borrow() {
            return;
        }
        let state = policies.state();
        let desired =
            webhook_configuration(&settings, gate_rules(state.iter().map(|p| &**p)), &ca_bundle.borrow_and_update());
        if last.as_ref() != Some(&desired) {
            let mut body = serde_json::to_value(&desired).unwrap_or_default();
            body["apiVersion"] = "admissionregistration.k8s.io/v1".into();
            body["kind"] = "ValidatingWebhookConfiguration".into();
            match api.patch(&settings.name, &params, &Patch::Apply(&body)).await {
                Ok(_) => {
                    info!(name = %settings.name, rules = desired.webhooks.as_ref().map(|w| w[0].rules.as_ref().map_or(0, Vec::len)), "webhook configuration applied");
                    last = Some(desired);
                }
                Err(e) => {
                    warn!(error = %e, "applying the webhook configuration failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        tokio::select! {
            _ = changed.notified() => {}
            r = ca_bundle.changed() => if r.is_err() { return },
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}
