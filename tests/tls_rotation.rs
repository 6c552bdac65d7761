//! Webhook TLS against the real local control plane: self-managed certificates in a
//! Secret, rotated (serving certificate and CA) every second or so while clients keep
//! sending requests, over new connections and keep-alive, HTTP/1.1 and HTTP/2.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ObjectMeta, PostParams};
use rustls_pki_types::ServerName;
use signoff::tls::{
    BUNDLE_KEY, ManagedOptions, ManagedTls, RotationPolicy, TlsStats, pem_certs, serve_with_stats, server_config,
    start_managed,
};
use signoff_testenv::{ADMIN, ControlPlane};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn setup(prefix: &str) -> (kube::Client, String) {
    let cp = tokio::task::spawn_blocking(ControlPlane::shared).await.unwrap();
    let client = cp.client(ADMIN).await.unwrap();
    let name = format!("{prefix}-{}-{}", std::process::id(), rand_suffix());
    let ns =
        Namespace { metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() }, ..Default::default() };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    (client, name)
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

fn fast_options(ns: &str) -> ManagedOptions {
    ManagedOptions {
        ip_addresses: vec![LOCALHOST],
        dns_names: vec!["signoff-webhook.test.svc".into()],
        policy: RotationPolicy {
            // Margins of a second or more: the test must survive a loaded 2-core machine.
            ca_validity: Duration::from_secs(4),
            ca_renew_before: Duration::from_millis(2500),
            cert_validity: Duration::from_millis(2500),
            cert_renew_before: Duration::from_millis(1500),
            handover: Duration::from_secs(1),
        },
        resync: Duration::from_millis(100),
        ..ManagedOptions::new(ns, "signoff-webhook-tls")
    }
}

/// A TLS connection to the server, trusting exactly `bundle`.
async fn connect(
    addr: SocketAddr,
    bundle: &[u8],
    alpn: &[u8],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem_certs(bundle).map_err(|e| e.to_string())? {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(LOCALHOST.into()), tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

async fn open(addr: SocketAddr, bundle: &[u8], h2: bool) -> Result<Sender, String> {
    let tls = connect(addr, bundle, if h2 { b"h2" } else { b"http/1.1" }).await?;
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(tls);
    if h2 {
        assert_eq!(negotiated.as_deref(), Some(&b"h2"[..]), "ALPN h2 offered by the server");
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("h1 handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Sender::H1(sender))
    }
}

async fn request(sender: &mut Sender, addr: SocketAddr) -> Result<(), String> {
    let response = match sender {
        Sender::H1(s) => {
            s.ready().await.map_err(|e| format!("h1 ready: {e}"))?;
            let req = hyper::Request::get("/").header("host", addr.to_string()).body(Empty::new()).unwrap();
            s.send_request(req).await
        }
        Sender::H2(s) => {
            s.ready().await.map_err(|e| format!("h2 ready: {e}"))?;
            let req = hyper::Request::get(format!("https://{addr}/")).body(Empty::new()).unwrap();
            s.send_request(req).await
        }
    }
    .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    if status != 200 || &body[..] != b"ok" {
        return Err(format!("unexpected response {status}: {body:?}"));
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    new_connections: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, what: &str, r: Result<(), String>) {
        match r {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.errors.lock().unwrap().push(format!("{what}: {e}"));
            }
        }
    }
}

/// One client until `deadline`: a new connection per request, or keep-alive
/// connections reused for `keep` before reconnecting. Trusts the bundle as
/// published at the time it connects.
async fn client(
    addrs: Vec<SocketAddr>,
    bundle: tokio::sync::watch::Receiver<Vec<u8>>,
    h2: bool,
    keep: Option<Duration>,
    deadline: Instant,
    tally: Arc<Tally>,
) {
    let mut n = 0usize;
    while Instant::now() < deadline {
        let addr = addrs[n % addrs.len()];
        n += 1;
        let trusted = bundle.borrow().clone();
        tally.new_connections.fetch_add(1, Ordering::Relaxed);
        let mut sender = match open(addr, &trusted, h2).await {
            Ok(s) => s,
            Err(e) => {
                tally.record("connect", Err(e));
                continue;
            }
        };
        match keep {
            None => tally.record("request on a new connection", request(&mut sender, addr).await),
            Some(keep) => {
                let until = (Instant::now() + keep).min(deadline);
                while Instant::now() < until {
                    tally.record("request on a kept-alive connection", request(&mut sender, addr).await);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

fn cas(bundle: &[u8]) -> Vec<Vec<u8>> {
    pem_certs(bundle).unwrap().into_iter().map(|c| c.to_vec()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_certificate_and_ca_under_load_fails_no_request() {
    let (client_k, ns) = setup("tls-rotation").await;
    let options = fast_options(&ns);

    // Two replicas share the Secret; each serves its own port.
    let (a, b) =
        tokio::join!(start_managed(client_k.clone(), options.clone()), start_managed(client_k.clone(), options));
    let replicas: Vec<ManagedTls> = vec![a.unwrap(), b.unwrap()];
    assert_eq!(
        *replicas[0].ca_bundle.borrow(),
        *replicas[1].ca_bundle.borrow(),
        "replicas starting together share one CA"
    );

    let stats = Arc::new(TlsStats::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for replica in &replicas {
        let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        servers.push(tokio::spawn(serve_with_stats(
            router,
            listener,
            server_config(replica.store.clone()),
            shutdown,
            stats.clone(),
        )));
    }

    // The published bundle: replica 0's, as the replica writing the caBundle would.
    let published = replicas[0].ca_bundle.clone();
    let seen_cas = Arc::new(Mutex::new(HashSet::new()));
    let watcher = {
        let (mut rx, seen) = (published.clone(), seen_cas.clone());
        tokio::spawn(async move {
            loop {
                seen.lock().unwrap().extend(cas(&rx.borrow_and_update()));
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
    };

    let started = Instant::now();
    let deadline = started + Duration::from_secs(10);
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for (h2, keep) in [
        (false, None),
        (false, None),
        (true, None),
        (true, None),
        (false, Some(Duration::from_secs(2))),
        (false, Some(Duration::from_secs(3))),
        (true, Some(Duration::from_secs(2))),
        (true, Some(Duration::from_secs(3))),
    ] {
        clients.push(tokio::spawn(client(addrs.clone(), published.clone(), h2, keep, deadline, tally.clone())));
    }
    for c in clients {
        c.await.unwrap();
    }
    let elapsed = started.elapsed();

    stop_tx.send(true).unwrap();
    for s in servers {
        tokio::time::timeout(Duration::from_secs(30), s).await.expect("graceful shutdown").unwrap();
    }
    watcher.abort();

    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let ca_rotations = seen_cas.lock().unwrap().len().saturating_sub(1);
    let cert_rotations: Vec<u64> = replicas.iter().map(|r| r.store.swaps()).collect();
    eprintln!(
        "{elapsed:?}: {ok} requests ok, {failed} failed, {} connections, {} handshakes ({} failed); \
         {ca_rotations} CA rotations, serving-cert swaps per replica {cert_rotations:?}",
        tally.new_connections.load(Ordering::Relaxed),
        stats.handshakes(),
        stats.failed_handshakes(),
    );
    let errors = tally.errors.lock().unwrap().clone();
    assert_eq!(failed, 0, "failed requests: {:#?}", &errors[..errors.len().min(20)]);
    assert_eq!(stats.failed_handshakes(), 0, "failed TLS handshakes");
    assert!(ok >= 500, "too few requests to mean anything: {ok}");
    assert!(ca_rotations >= 3, "CA rotations: {ca_rotations}");
    for swaps in &cert_rotations {
        assert!(*swaps >= 4, "serving certificate rotations per replica: {cert_rotations:?}");
    }

    // The Secret publishes the same bundle as the channel, and is a kubernetes.io/tls Secret.
    let secret = Api::<Secret>::namespaced(client_k, &ns).get("signoff-webhook-tls").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = secret.data.unwrap();
    assert!(data.contains_key("tls.crt") && data.contains_key("tls.key"));
    let in_secret = cas(&data[BUNDLE_KEY].0);
    let deadline = Instant::now() + Duration::from_secs(2);
    while cas(&replicas[0].ca_bundle.borrow()) != in_secret {
        assert!(Instant::now() < deadline, "the published bundle never matched the Secret's ca.crt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_ca_and_restarts_reuse_it() {
    let (client_k, ns) = setup("tls-shared").await;
    let options = ManagedOptions {
        ip_addresses: vec![LOCALHOST],
        resync: Duration::from_secs(5),
        ..ManagedOptions::new(&ns, "webhook-tls")
    };
    // Five replicas race to create the Secret.
    let started = futures_join(client_k.clone(), options.clone(), 5).await;
    let bundle = started[0].ca_bundle.borrow().clone();
    let cert = started[0].store.current().cert.clone();
    assert_eq!(cas(&bundle).len(), 1, "one CA");
    for r in &started {
        assert_eq!(*r.ca_bundle.borrow(), bundle, "every replica publishes the same CA");
        assert_eq!(r.store.current().cert, cert, "every replica serves the same certificate");
    }
    drop(started);

    // A restart reads the Secret back and reuses the CA and the certificate.
    let again = start_managed(client_k.clone(), options.clone()).await.unwrap();
    assert_eq!(*again.ca_bundle.borrow(), bundle);
    assert_eq!(again.store.current().cert, cert);
    let secret = Api::<Secret>::namespaced(client_k.clone(), &ns).get("webhook-tls").await.unwrap();
    let version = secret.metadata.resource_version.clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let secret = Api::<Secret>::namespaced(client_k.clone(), &ns).get("webhook-tls").await.unwrap();
    assert_eq!(secret.metadata.resource_version, version, "nothing rewrites a valid Secret");

    // A new name to serve: the certificate is reissued from the same CA.
    let renamed = ManagedOptions { dns_names: vec!["signoff.example.svc".into()], ..options };
    let reissued = start_managed(client_k, renamed).await.unwrap();
    assert_eq!(*reissued.ca_bundle.borrow(), bundle, "same CA");
    assert_ne!(reissued.store.current().cert, cert, "new certificate");
}

async fn futures_join(client: kube::Client, options: ManagedOptions, n: usize) -> Vec<ManagedTls> {
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(start_managed(client.clone(), options.clone()))).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap().unwrap());
    }
    out
}
