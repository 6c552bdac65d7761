//! Rotating the webhook's certificates (serving certificate and CA) while real
//! writes flow through the API server fails no write and no TLS handshake (part 6
//! of the hardening issue). 40 s under `make test`; 180 s under `make chaos`, which
//! records the figures. Own test binary: its own control plane and a signoff with
//! rotation timings of seconds.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::report::{self, Figure};
use common::*;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};

const SECTION: &str = "6 certificate rotation under load";
/// signoff logs this for every new serving certificate it serves (tls/managed.rs).
const NEW_SERVING_CERT: &str = "serving a new webhook certificate";
/// signoff logs "TLS handshake failed" and "TLS handshake timed out" (tls/serve.rs).
const FAILED_HANDSHAKE: &str = "TLS handshake";

/// Why a write failed, from the API server's message.
#[derive(Debug, PartialEq)]
enum Failure {
    /// The API server could not complete TLS with the webhook (x509, handshake).
    Tls,
    /// Another failure calling the webhook (connection refused or reset, timeout).
    Call,
    /// Anything else (a denial would be a bug here: the writes are low risk).
    Other,
}

fn failure(message: &str) -> Failure {
    let lower = message.to_lowercase();
    let tls = ["x509", "tls", "handshake", "certificate"].iter().any(|w| lower.contains(w));
    match (lower.contains("failed calling webhook"), tls) {
        (_, true) => Failure::Tls,
        (true, false) => Failure::Call,
        _ => Failure::Other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_certificates_while_writes_flow_fails_no_write() {
    let cp = cp();
    // A CA lives 12 s and is handed over 8 s before it expires (3 s overlap);
    // serving certificates live 4 s and are renewed 2 s before they expire.
    let signoff = start_signoff(&[
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

    let (duration, writers) =
        if report::chaos() { (Duration::from_secs(180), 4) } else { (Duration::from_secs(40), 3) };
    let serving_before = log_count(&signoff, NEW_SERVING_CERT);
    let sent = Mutex::new(0u64);
    let failures: Mutex<Vec<(Failure, String)>> = Mutex::new(Vec::new());
    let mut bundles: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + duration;
    let writer = |id: usize| {
        let (configmaps, sent, failures) = (&configmaps, &sent, &failures);
        async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                // Low risk, but matched by the test policy: every write goes through signoff.
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("w{id}-{n}"), "labels": {"risk": "low"}},
                    "data": {"n": n.to_string()},
                }))
                .unwrap();
                *sent.lock().unwrap() += 1;
                if let Err(e) = configmaps.create(&PostParams::default(), &cm).await {
                    let message = e.to_string();
                    eprintln!("write failed: {message}");
                    failures.lock().unwrap().push((failure(&message), message));
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
    let all_writers = futures::future::join_all((0..writers).map(writer));
    tokio::join!(all_writers, watch_bundles);

    let sent = sent.into_inner().unwrap();
    let failures = failures.into_inner().unwrap();
    let count = |kind: Failure| failures.iter().filter(|(f, _)| *f == kind).count();
    let (tls_failures, call_failures, other_failures) =
        (count(Failure::Tls), count(Failure::Call), count(Failure::Other));
    let handshake_failures = log_count(&signoff, FAILED_HANDSHAKE);
    let serving_rotated = log_count(&signoff, NEW_SERVING_CERT) - serving_before;
    eprintln!(
        "rotation under load: {sent} writes through the API server in {duration:?}, {} failed ({tls_failures} TLS, {call_failures} other webhook call errors, {other_failures} other); {} caBundle versions seen; {serving_rotated} serving certificates rotated; {handshake_failures} failed handshakes logged",
        failures.len(),
        bundles.len()
    );
    report::record(
        "rotation",
        &[
            Figure::count(SECTION, "duration (writers)", format!("{} s ({writers})", duration.as_secs())),
            Figure::count(SECTION, "writes through the API server", sent),
            Figure::new(SECTION, "failed writes", failures.len(), "0", failures.is_empty()),
            Figure::new(
                SECTION,
                "writes failed on TLS to the webhook (API server side)",
                tls_failures,
                "0",
                tls_failures == 0,
            ),
            Figure::new(
                SECTION,
                "failed TLS handshakes (signoff's log, whole run)",
                handshake_failures,
                "0",
                handshake_failures == 0,
            ),
            Figure::count(SECTION, "caBundle versions seen", bundles.len()),
            Figure::count(SECTION, "serving certificates rotated", serving_rotated),
        ],
    );
    assert!(sent > 200, "enough writes to mean something: {sent}");
    assert!(failures.is_empty(), "no write failed while certificates rotated: {failures:?}");
    assert!(bundles.len() >= 4, "the CA was handed over several times: {} bundles", bundles.len());
    assert!(serving_rotated as u64 >= duration.as_secs() / 4, "serving certificates rotated: {serving_rotated}");
    assert_eq!(handshake_failures, 0, "no TLS handshake failed");
}

fn log_count(signoff: &Signoff, needle: &str) -> usize {
    signoff.log_text().lines().filter(|l| l.contains(needle)).count()
}
