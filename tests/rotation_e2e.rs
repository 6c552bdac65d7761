//! Rotating the webhook's certificates (serving certificate and CA) while real
//! writes flow through the API server fails no write. Own test binary: its own
//! control plane and a signoff with rotation timings of seconds.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_certificates_while_writes_flow_fails_no_write() {
    let cp = cp();
    // A CA lives 12 s and is handed over 8 s before it expires (3 s overlap);
    // serving certificates live 4 s and are renewed 2 s before they expire.
    let _signoff = start_signoff(&[
        "--tls-ca-validity=12s",
        "--tls-ca-renew-before=8s",
        "--tls-cert-validity=4s",
        "--tls-cert-renew-before=2s",
        "--tls-handover=3s",
    ]);
    let ns = gated_namespace(cp, "rotation");
    let alice = cp.client("alice").await.unwrap();
    let admin = cp.client(ADMIN).await.unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(alice, &ns);
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(admin);

    let (sent, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut bundles: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    let writer = |id: usize| {
        let (configmaps, sent, failed) = (&configmaps, &sent, &failed);
        async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                // Low risk, but matched by the test policy: every write goes through signoff.
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("w{id}-{n}"), "labels": {"risk": "low"}},
                    "data": {"n": n.to_string()},
                }))
                .unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = configmaps.create(&PostParams::default(), &cm).await {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("write failed: {e}");
                }
                n += 1;
            }
        }
    };
    let watch_bundles = async {
        while Instant::now() < deadline {
            if let Ok(vwc) = webhooks.get("signoff").await {
                let bundle = vwc.webhooks.unwrap_or_default()[0].client_config.ca_bundle.clone().unwrap_or_default().0;
                if bundles.last() != Some(&bundle) {
                    bundles.push(bundle);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::join!(writer(0), writer(1), writer(2), watch_bundles);

    let (sent, failed) = (sent.into_inner(), failed.into_inner());
    let handshake_failures = signoff_log_count(&_signoff, "TLS handshake");
    eprintln!(
        "rotation under load: {sent} writes through the API server, {failed} failed; {} caBundle versions seen; {handshake_failures} failed handshakes logged",
        bundles.len()
    );
    assert!(sent > 200, "enough writes to mean something: {sent}");
    assert_eq!(failed, 0, "no write failed while certificates rotated");
    assert!(bundles.len() >= 4, "the CA was handed over several times: {} bundles", bundles.len());
    assert_eq!(handshake_failures, 0);
}

fn signoff_log_count(signoff: &Signoff, needle: &str) -> usize {
    signoff.log_text().lines().filter(|l| l.contains(needle)).count()
}
