//! Notification delivery against real HTTP receivers on loopback (axum servers in
//! the test), and Secret resolution against the real local control plane.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::Value;
use sha2::Sha256;

use signoff::crd::*;
use signoff::notify::*;

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

#[derive(Clone)]
struct Script {
    /// Statuses to answer with, in order; after that, `then`.
    statuses: Arc<Mutex<Vec<u16>>>,
    then: u16,
    delay: Duration,
    received: Arc<Mutex<Vec<Received>>>,
}

/// A receiver on 127.0.0.1:<random> answering `statuses` then `then`, each after `delay`.
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(statuses: &[u16], then: u16, delay: Duration) -> Receiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let script =
            Script { statuses: Arc::new(Mutex::new(statuses.to_vec())), then, delay, received: received.clone() };
        async fn handle(
            State(s): State<Script>,
            headers: HeaderMap,
            body: Bytes,
        ) -> (StatusCode, HeaderMap, &'static str) {
            s.received.lock().unwrap().push(Received { headers, body, at: Instant::now() });
            let status = {
                let mut statuses = s.statuses.lock().unwrap();
                if statuses.is_empty() { s.then } else { statuses.remove(0) }
            };
            tokio::time::sleep(s.delay).await;
            let mut headers = HeaderMap::new();
            if status == 429 {
                headers.insert("retry-after", "1".parse().unwrap());
            }
            (StatusCode::from_u16(status).unwrap(), headers, if status < 300 { "ok" } else { "try again" })
        }
        let app = Router::new().route("/{*path}", post(handle)).with_state(script);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, received }
    }

    async fn ok() -> Receiver {
        Receiver::start(&[], 200, Duration::ZERO).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn request() -> ApprovalRequest {
    let diff: String = (0..40).map(|i| format!("line {i}\n")).collect();
    signoff::fixtures::Packet::new("payments-prod", "ar-77aa")
        .requester("dana", &[])
        .action("UPDATE", "apps", "Deployment", "deployments", Some("scale"), "api")
        .reason("cost", "scale-up", "finance", "scaling api from 3 to 30 replicas adds $4,200/month")
        .routes(&[("finance", "finance")])
        .digest(&"a".repeat(64))
        .diff(&diff)
        .build()
}

fn message(key: &str) -> Message {
    Message::from_request(
        &request(),
        MessageKind::Escalation,
        "finance",
        0,
        "Team",
        Recipient::Team("finance".into()),
        key,
        "2026-03-01T12:00:00Z".parse::<Timestamp>().unwrap(),
    )
}

fn fast_policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_delay: Duration::from_millis(50),
        factor: 2,
        max_delay: Duration::from_millis(400),
        attempt_timeout: Duration::from_secs(2),
    }
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn generic_webhook_gets_the_signed_packet_with_an_idempotency_key() {
    let rx = Receiver::ok().await;
    let target = Target::webhook(rx.url("hook"), Some(b"topsecret".to_vec()));
    let record = Notifier::new().deliver(&target, &message("ar-77aa/finance/0/team-finance"), &fast_policy(3)).await;
    assert_eq!((record.result, record.attempts, record.message.as_deref()), (DeliveryResult::Delivered, 1, None));

    let got = rx.received();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    let expected = format!("sha256={}", hmac_hex(b"topsecret", &req.body));
    assert_eq!(req.header("x-signoff-signature"), Some(expected.as_str()));
    assert_ne!(Some(format!("sha256={}", hmac_hex(b"wrong", &req.body)).as_str()), req.header("x-signoff-signature"));
    assert_eq!(req.header("idempotency-key"), Some("ar-77aa/finance/0/team-finance"));
    assert_eq!(req.header("x-signoff-idempotency-key"), Some("ar-77aa/finance/0/team-finance"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    let body = req.json();
    assert_eq!(body["key"], "ar-77aa/finance/0/team-finance");
    assert_eq!(body["packet"], serde_json::to_value(&request().spec).unwrap());
    assert_eq!(body["approveCommand"], "kubectl signoff approve -n payments-prod ar-77aa");
    assert_eq!(body["action"]["resource"], "deployments/scale");
    assert_eq!(body["diffExcerpt"].as_str().unwrap().lines().count(), 21, "20 lines and a marker");
}

#[tokio::test]
async fn slack_receiver_gets_readable_blocks() {
    let rx = Receiver::ok().await;
    let target = Target::Slack { url: rx.url("services/T000/B000/XXXX") };
    let record = Notifier::new().deliver(&target, &message("k-slack"), &fast_policy(3)).await;
    assert_eq!(record.result, DeliveryResult::Delivered);
    assert_eq!(record.sink, "Slack");

    let body = rx.received()[0].json();
    assert!(body["text"].as_str().unwrap().starts_with("[High] UPDATE Deployment (scale) payments-prod/api"));
    let blocks = body["blocks"].as_array().unwrap();
    assert!(blocks.len() <= 50, "Slack allows at most 50 blocks");
    for block in blocks {
        let kind = block["type"].as_str().unwrap();
        assert!(["header", "section", "context"].contains(&kind), "unexpected block {block}");
        if kind == "section" {
            assert!(block.get("text").is_some() || block.get("fields").is_some(), "empty section {block}");
        }
    }
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert_eq!(blocks[0]["text"]["text"], "Approval needed: UPDATE Deployment (scale) payments-prod/api");
    let all = body.to_string();
    for needle in [
        "scaling api from 3 to 30 replicas",
        "*Risk*\\nHigh",
        "*Class*\\nroutine",
        "```\\nline 0\\n",
        "2026-03-01T12:00:00Z",
        "`kubectl signoff approve -n payments-prod ar-77aa`",
    ] {
        assert!(all.contains(needle), "Slack payload lacks {needle:?}: {all}");
    }
}

#[tokio::test]
async fn pagerduty_receiver_gets_a_trigger_with_the_dedup_key() {
    let rx = Receiver::start(&[], 202, Duration::ZERO).await;
    let target = Target::PagerDuty { url: rx.url("v2/enqueue"), routing_key: "R0UT1NG".into() };
    let record = Notifier::new().deliver(&target, &message("ar-77aa/finance/0"), &fast_policy(3)).await;
    assert_eq!((record.result, record.attempts), (DeliveryResult::Delivered, 1));

    let body = rx.received()[0].json();
    assert_eq!(body["event_action"], "trigger");
    assert_eq!(body["routing_key"], "R0UT1NG");
    assert_eq!(body["dedup_key"], "ar-77aa/finance/0");
    assert_eq!(body["payload"]["severity"], "critical");
    assert_eq!(body["payload"]["source"], "approvalrequest/payments-prod/ar-77aa");
    assert!(body["payload"]["summary"].as_str().unwrap().contains("held for approval"));
    assert_eq!(body["payload"]["custom_details"]["approveCommand"], "kubectl signoff approve -n payments-prod ar-77aa");
}

#[tokio::test]
async fn two_503s_then_success_is_delivered_on_the_third_attempt() {
    let rx = Receiver::start(&[503, 503], 200, Duration::ZERO).await;
    let target = Target::webhook(rx.url("hook"), None);
    let mut seen = Vec::new();
    let record = Notifier::new()
        .deliver_with(&target, &message("k-retry"), &fast_policy(5), |r| seen.push((r.attempts, r.result)))
        .await;
    assert_eq!((record.result, record.attempts, record.message.as_deref()), (DeliveryResult::Delivered, 3, None));
    assert_eq!(
        seen,
        [(1, DeliveryResult::Retrying), (2, DeliveryResult::Retrying), (3, DeliveryResult::Delivered)],
        "every attempt is observed"
    );

    let got = rx.received();
    assert_eq!(got.len(), 3);
    // The same key every time, so the receiver can drop duplicates.
    assert!(got.iter().all(|r| r.header("idempotency-key") == Some("k-retry")));
    assert!(got.iter().all(|r| r.body == got[0].body));
    // Backoff: 50 ms, then 100 ms.
    assert!(got[1].at - got[0].at >= Duration::from_millis(50));
    assert!(got[2].at - got[1].at >= Duration::from_millis(100));

    let n = record.to_notification(&message("k-retry"));
    assert_eq!(
        (n.attempts, n.result.as_str(), n.recipient.as_str(), n.sink.as_str()),
        (3, "Delivered", "team/finance", "Webhook")
    );
}

#[tokio::test]
async fn a_429_honours_retry_after_up_to_the_cap() {
    let rx = Receiver::start(&[429], 200, Duration::ZERO).await;
    let target = Target::PagerDuty { url: rx.url("v2/enqueue"), routing_key: "R".into() };
    let record = Notifier::new().deliver(&target, &message("k-429"), &fast_policy(3)).await;
    assert_eq!((record.result, record.attempts), (DeliveryResult::Delivered, 2));
    let got = rx.received();
    // Retry-After: 1 s, capped by max_delay (400 ms), longer than the 50 ms backoff.
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(400) && gap < Duration::from_millis(1000), "{gap:?}");
}

#[tokio::test]
async fn a_400_fails_after_one_attempt() {
    let rx = Receiver::start(&[], 400, Duration::ZERO).await;
    let target = Target::Slack { url: rx.url("hook") };
    let record = Notifier::new().deliver(&target, &message("k-400"), &fast_policy(5)).await;
    assert_eq!((record.result, record.attempts), (DeliveryResult::Failed, 1));
    assert_eq!(record.message.as_deref(), Some("HTTP 400: try again"));
    assert_eq!(rx.received().len(), 1);
}

#[tokio::test]
async fn a_dead_port_fails_after_max_attempts_within_the_backoff_time() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target = Target::webhook(format!("http://127.0.0.1:{port}/hook"), None);
    let policy = fast_policy(4);
    let started = Instant::now();
    let record = Notifier::new().deliver(&target, &message("k-dead"), &policy).await;
    let took = started.elapsed();
    assert_eq!((record.result, record.attempts), (DeliveryResult::Failed, 4));
    let why = record.message.unwrap();
    assert!(why.starts_with("gave up after 4 attempts: http://127.0.0.1:"), "{why}");
    assert!(why.to_lowercase().contains("refused"), "{why}");
    // Waits of 50 + 100 + 200 ms; connection refusals are immediate.
    assert!(took >= Duration::from_millis(350), "{took:?}");
    assert!(took < Duration::from_millis(350 + 1500), "{took:?}");
}

#[tokio::test]
async fn an_attempt_that_hangs_times_out_and_is_retried() {
    let rx = Receiver::start(&[], 200, Duration::from_secs(30)).await;
    let target = Target::webhook(rx.url("hook"), None);
    let policy = RetryPolicy { attempt_timeout: Duration::from_millis(200), ..fast_policy(2) };
    let started = Instant::now();
    let record = Notifier::new().deliver(&target, &message("k-hang"), &policy).await;
    assert_eq!((record.result, record.attempts), (DeliveryResult::Failed, 2));
    assert!(record.message.unwrap().contains("no response within 200ms"));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(rx.received().len(), 2);
}

#[tokio::test]
async fn a_slow_sink_does_not_delay_a_fast_one() {
    let slow = Receiver::start(&[], 200, Duration::from_secs(3)).await;
    let fast = Receiver::ok().await;
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let policy = RetryPolicy { attempt_timeout: Duration::from_secs(5), ..fast_policy(3) };
    let jobs = vec![
        (Target::webhook(slow.url("slow"), None), message("k-slow")),
        (Target::webhook(format!("http://127.0.0.1:{dead_port}/"), None), message("k-dead")),
        (Target::Slack { url: fast.url("fast") }, message("k-fast")),
    ];
    let started = Instant::now();
    let records = Notifier::new().deliver_all(jobs, &policy, 4).await;
    let took = started.elapsed();

    let fast_at = fast.received()[0].at - started;
    assert!(fast_at < Duration::from_millis(1000), "the fast sink waited {fast_at:?}");
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert!(took < Duration::from_secs(6), "sinks ran one after another: {took:?}");
    let summary: Vec<_> = records.iter().map(|r| (r.sink.as_str(), r.result, r.attempts)).collect();
    assert_eq!(
        summary,
        [
            ("Webhook", DeliveryResult::Delivered, 1),
            ("Webhook", DeliveryResult::Failed, 3),
            ("Slack", DeliveryResult::Delivered, 1)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_resolve_secrets_from_the_control_plane() {
    let ns =
        tokio::task::spawn_blocking(|| common::namespace(common::ControlPlane::shared(), "notify", &[])).await.unwrap();
    let client = common::ControlPlane::shared().client(common::ADMIN).await.unwrap();
    let rx = Receiver::ok().await;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let data: BTreeMap<String, ByteString> = [
        ("url".to_string(), ByteString(rx.url("from-secret").into_bytes())),
        ("signing".to_string(), ByteString(b"k8s-secret-key".to_vec())),
    ]
    .into();
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some("hooks".into()), ..Default::default() },
        data: Some(data),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret).await.unwrap();

    let contact = Contact {
        kind: ContactKind::Webhook,
        url: None,
        url_secret_ref: Some(SecretKeyRef { name: "hooks".into(), key: "url".into() }),
        signing_secret_ref: Some(SecretKeyRef { name: "hooks".into(), key: "signing".into() }),
        routing_key_secret_ref: None,
        signature_header: None,
    };
    let target = Target::resolve(&client, &ns, &contact).await.unwrap();
    assert_eq!(target, Target::webhook(rx.url("from-secret"), Some(b"k8s-secret-key".to_vec())));

    let notifier = Notifier::new();
    let record = notifier.deliver_contact(&client, &ns, &contact, &message("k-secret"), &fast_policy(3)).await;
    assert_eq!((record.result, record.attempts), (DeliveryResult::Delivered, 1));
    let got = rx.received();
    let expected = format!("sha256={}", hmac_hex(b"k8s-secret-key", &got[0].body));
    assert_eq!(got[0].header("x-signoff-signature"), Some(expected.as_str()));

    // A missing Secret and a missing key are Failed deliveries with a clear reason.
    let missing_secret = Contact {
        kind: ContactKind::Slack,
        url_secret_ref: Some(SecretKeyRef { name: "nope".into(), key: "url".into() }),
        signing_secret_ref: None,
        ..contact.clone()
    };
    let record = notifier.deliver_contact(&client, &ns, &missing_secret, &message("k-missing"), &fast_policy(3)).await;
    assert_eq!((record.result, record.attempts, record.sink.as_str()), (DeliveryResult::Failed, 0, "Slack"));
    assert_eq!(record.message.unwrap(), format!("Secret {ns}/nope not found (referenced by a Slack contact)"));

    let missing_key = Contact {
        kind: ContactKind::PagerDuty,
        url: Some(rx.url("pd")),
        url_secret_ref: None,
        signing_secret_ref: None,
        routing_key_secret_ref: Some(SecretKeyRef { name: "hooks".into(), key: "routing".into() }),
        signature_header: None,
    };
    let record = notifier.deliver_contact(&client, &ns, &missing_key, &message("k-nokey"), &fast_policy(3)).await;
    assert_eq!((record.result, record.attempts), (DeliveryResult::Failed, 0));
    assert_eq!(
        record.message.unwrap(),
        format!("Secret {ns}/hooks has no key \"routing\" (referenced by a PagerDuty contact)")
    );
    assert_eq!(rx.received().len(), 1, "nothing was sent for unresolved contacts");
}

#[tokio::test]
async fn https_sinks_verify_the_receiver_certificate() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let provider = || Arc::new(rustls::crypto::ring::default_provider());
    let ca = signoff::tls::certs::Ca::new("notify-test-ca", 1).unwrap();
    let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let server = ca.issue_server("receiver", &["localhost"], &[ip], 1).unwrap();
    let chain = vec![CertificateDer::from_pem_slice(server.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap();
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));

    let received = Arc::new(Mutex::new(Vec::<Bytes>::new()));
    let sink = received.clone();
    let app = Router::new().route(
        "/{*path}",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    let url = format!("https://{addr}/services/T/B/X");

    // Trusting the test CA: delivered.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap()).unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let trusted = Notifier::with_tls_config(client_config);
    let record = trusted.deliver(&Target::Slack { url: url.clone() }, &message("k-tls"), &fast_policy(2)).await;
    assert_eq!((record.result, record.attempts, record.message.as_deref()), (DeliveryResult::Delivered, 1, None));
    assert_eq!(received.lock().unwrap().len(), 1);

    // The system roots do not know the test CA: refused before anything is sent.
    let record = Notifier::new().deliver(&Target::Slack { url }, &message("k-untrusted"), &fast_policy(2)).await;
    assert_eq!(record.result, DeliveryResult::Failed);
    let why = record.message.unwrap();
    assert!(why.to_lowercase().contains("certificate"), "{why}");
    assert!(!why.contains("/services/T/B/X"), "the secret URL path leaked into status: {why}");
    assert_eq!(received.lock().unwrap().len(), 1);
}
