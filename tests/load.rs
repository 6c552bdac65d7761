//! Load and bad input (part 5 of the hardening issue): fifty concurrent writers of
//! 3 MiB Deployments that a policy holds, signoff's memory while they flow, and reviews
//! posted straight to the webhook over TLS: oversized, malformed, without a uid, for
//! a kind no policy covers. Own test binary: its own control plane and signoff.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::report::{self, Figure};
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use signoff::webhook::server::MAX_BODY_BYTES;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECTION: &str = "5 load and bad input";
const MIB: usize = 1024 * 1024;
/// The API server refuses request bodies over 3 MiB (3,145,728 bytes): the payload
/// leaves 4 KiB for the rest of the object. Deployments, not ConfigMaps: the API
/// server refuses ConfigMaps over 1 MiB before admission; a container's args have
/// no such limit.
const DATA_BYTES: usize = 3 * MIB - 4096;
/// The existing object the UPDATEs replace: below etcd's 1.5 MiB, so it can be stored.
const BASE_BYTES: usize = MIB;
const WRITERS: usize = 50;
const RSS_TARGET_MIB: f64 = 256.0;
/// The issue's bound for refusing an oversized body; `make test` asserts a generous
/// one (noisy shared machine) and reports the measured value against this.
const REFUSAL_TARGET: Duration = Duration::from_millis(50);

/// One test at a time in this binary, so the bad-input timings are not taken while
/// fifty writers load the webhook (`make test` runs a binary's tests in parallel).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A field of /proc/<pid>/status in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// How the API server answered one write.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Admitted: the write succeeded, or got past admission and failed in storage.
    Admitted,
    /// signoff denied it, holding it for approval.
    Held,
    /// signoff denied it for another reason (its message says why).
    DeniedOther,
    /// The API server could not get an answer from the webhook (fails closed).
    CallError,
    /// The test's own connection to the API server failed (connect or send): no
    /// answer, so the verdict is unknown; nothing is stored either way (etcd refuses
    /// a 3 MiB object), and the count is reported.
    Transport,
    /// An answer from the API server that none of the above explains: must not happen.
    Unknown,
}

fn classify<T>(result: &Result<T, kube::Error>) -> (Outcome, String) {
    let message = match result {
        Ok(_) => return (Outcome::Admitted, String::new()),
        Err(kube::Error::Api(e)) => e.message.clone(),
        Err(e) => return (Outcome::Transport, e.to_string()),
    };
    let outcome = if message.contains("denied the request") && message.contains("held for approval") {
        Outcome::Held
    } else if message.contains("denied the request") {
        Outcome::DeniedOther
    } else if message.contains("failed calling webhook") {
        Outcome::CallError
    } else if message.contains("etcdserver") || message.contains("too large") {
        // Past admission: only storage refused it.
        Outcome::Admitted
    } else {
        Outcome::Unknown
    };
    (outcome, message)
}

/// A Deployment whose one container has `bytes` of args. Every change to a
/// Deployment in a gated namespace is held (test policy `deployment-change`).
fn big_deployment(name: &str, bytes: usize, resource_version: Option<String>) -> Deployment {
    let mut deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox", "args": ["x".repeat(bytes)]}]},
            },
        },
    }))
    .unwrap();
    deployment.metadata.resource_version = resource_version;
    deployment
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_writers_of_big_held_objects_admit_nothing_and_memory_stays_bounded() {
    let _serial = SERIAL.lock().await;
    let cp = cp();
    let signoff = signoff();
    let pid = signoff.process.lock().unwrap().program_pid().expect("signoff is running");
    let ns = gated_namespace(cp, "load");
    let alice = cp.client("alice").await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(alice, &ns);
    let baseline_kib = status_kib(pid, "VmRSS").expect("signoff's VmRSS");

    // The object the UPDATEs target (1 MiB), stored by break-glass: admitted, loudly.
    let breakglass: Api<Deployment> = Api::namespaced(cp.client("breakglass").await.unwrap(), &ns);
    let base = breakglass.create(&PostParams::default(), &big_deployment("base", BASE_BYTES, None)).await.unwrap();
    let base_version = base.metadata.resource_version.clone();

    // One 3 MiB held write alone: what signoff answers, and how long it takes.
    let alone_started = Instant::now();
    let alone = deployments.create(&PostParams::default(), &big_deployment("alone", DATA_BYTES, None)).await;
    let (alone, alone_took) = (classify(&alone), alone_started.elapsed());
    eprintln!("one 3 MiB held write alone, after {alone_took:?}: {alone:?}");

    // Sample VmRSS while the writers run; VmHWM gives the kernel's own peak too.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampled_peak = Arc::new(AtomicU64::new(baseline_kib));
    let sampler = {
        let (sampling, sampled_peak) = (sampling.clone(), sampled_peak.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Some(kib) = status_kib(pid, "VmRSS") {
                    sampled_peak.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // Each writer alternates: CREATE a new 3 MiB Deployment, then UPDATE the stored
    // base to 3 MiB (old 1 MiB + new 3 MiB in one review). All are held.
    let rounds = if report::chaos() { 4 } else { 2 };
    let outcomes: Mutex<Vec<(Outcome, String)>> = Mutex::new(Vec::new());
    let started = Instant::now();
    let writer = |id: usize| {
        let (deployments, outcomes, base_version) = (&deployments, &outcomes, &base_version);
        async move {
            for n in 0..rounds {
                let result = if n % 2 == 0 {
                    let deployment = big_deployment(&format!("big-{id}-{n}"), DATA_BYTES, None);
                    deployments.create(&PostParams::default(), &deployment).await
                } else {
                    let deployment = big_deployment("base", DATA_BYTES, base_version.clone());
                    deployments.replace("base", &PostParams::default(), &deployment).await
                };
                outcomes.lock().unwrap().push(classify(&result));
            }
        }
    };
    futures::future::join_all((0..WRITERS).map(writer)).await;
    let elapsed = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let hwm_kib = status_kib(pid, "VmHWM").expect("signoff's VmHWM");
    let peak_kib = hwm_kib.max(sampled_peak.load(Ordering::Relaxed));

    let outcomes = outcomes.into_inner().unwrap();
    let count = |o: Outcome| outcomes.iter().filter(|(x, _)| *x == o).count();
    let (admitted, held, denied_other, call_errors) =
        (count(Outcome::Admitted), count(Outcome::Held), count(Outcome::DeniedOther), count(Outcome::CallError));
    let (transport, unknown) = (count(Outcome::Transport), count(Outcome::Unknown));
    for (outcome, message) in outcomes.iter().filter(|(o, _)| *o != Outcome::Held).take(8) {
        eprintln!("example {outcome:?}: {}", message.chars().take(400).collect::<String>());
    }
    let stored = deployments.get("base").await.unwrap();
    let base_unchanged = stored.metadata.resource_version == base_version;
    eprintln!(
        "load: {WRITERS} writers, {} writes of {DATA_BYTES} bytes in {:.1}s: {held} held, {denied_other} denied otherwise, {call_errors} webhook call errors, {transport} transport errors, {unknown} unknown, {admitted} admitted; signoff RSS {:.1} MiB idle, peak {:.1} MiB",
        outcomes.len(),
        elapsed.as_secs_f64(),
        mib(baseline_kib),
        mib(peak_kib)
    );
    report::record(
        "load",
        &[
            Figure::count(SECTION, "concurrent writers (kube client as alice)", WRITERS),
            Figure::count(
                SECTION,
                "object size (Deployment container args; API server body limit 3 MiB)",
                format!("{DATA_BYTES} bytes (3 MiB - 4 KiB)"),
            ),
            Figure::count(
                SECTION,
                "one held write alone: signoff's answer, latency",
                format!("{:?}, {:.1} s", alone.0, alone_took.as_secs_f64()),
            ),
            Figure::count(
                SECTION,
                "held writes sent (half CREATE, half UPDATE of a stored 1 MiB object)",
                outcomes.len(),
            ),
            Figure::count(
                SECTION,
                "writes denied by signoff (held / other reason)",
                format!("{held} / {denied_other}"),
            ),
            Figure::count(SECTION, "writes refused by a webhook call error (fail closed)", call_errors),
            Figure::count(SECTION, "writes lost by the test's own client (connect or send error)", transport),
            Figure::new(SECTION, "writes with an unexplained outcome", unknown, "0", unknown == 0),
            Figure::new(
                SECTION,
                "held writes admitted by mistake",
                admitted + usize::from(alone.0 == Outcome::Admitted),
                "0",
                admitted == 0 && alone.0 != Outcome::Admitted && base_unchanged,
            ),
            Figure::count(SECTION, "signoff idle RSS before the run", format!("{:.1} MiB", mib(baseline_kib))),
            Figure::new(
                SECTION,
                "signoff peak RSS under load (VmHWM, VmRSS sampled every 50 ms)",
                format!("{:.1} MiB", mib(peak_kib)),
                "< 256 MiB",
                mib(peak_kib) < RSS_TARGET_MIB,
            ),
        ],
    );
    assert_eq!(outcomes.len(), WRITERS * rounds);
    assert_eq!(admitted, 0, "no held write is admitted");
    assert!(base_unchanged, "the stored object was never replaced");
    assert_ne!(alone.0, Outcome::Admitted, "the write alone is not admitted: {alone:?}");
    assert_eq!(unknown, 0, "every write's outcome is explained");
    assert!(transport <= WRITERS * rounds / 4, "most writes got an answer: {transport} transport errors");
    assert!(mib(peak_kib) < RSS_TARGET_MIB, "signoff's peak RSS {:.1} MiB is under 256 MiB", mib(peak_kib));
}

/// The webhook's address and a TLS client that trusts its caBundle, as the API
/// server has them in the ValidatingWebhookConfiguration.
struct Webhook {
    addr: String,
    host: String,
    path: String,
    tls: tokio_rustls::TlsConnector,
}

fn webhook() -> Webhook {
    let cp = cp();
    signoff();
    let vwc: Value = serde_json::from_str(&kubectl_ok(
        cp,
        ADMIN,
        &["get", "validatingwebhookconfiguration", "signoff", "-o", "json"],
        None,
    ))
    .unwrap();
    let config = &vwc["webhooks"][0]["clientConfig"];
    let url = config["url"].as_str().expect("signoff registers a URL");
    let (addr, path) = url.strip_prefix("https://").unwrap().split_once('/').unwrap();
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.decode(config["caBundle"].as_str().unwrap()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in signoff::tls::pem_certs(&ca).unwrap() {
        roots.add(cert).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let host = addr.rsplit_once(':').unwrap().0.to_string();
    Webhook {
        addr: addr.to_string(),
        host,
        path: format!("/{path}"),
        tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
    }
}

/// What goes after the request head.
enum Body {
    /// The whole body, with its Content-Length.
    Full(Vec<u8>),
    /// A Content-Length of this many bytes, and no body at all: the server has to
    /// refuse on the header.
    Declared(usize),
    /// Chunked 1 MiB chunks, on and on (up to this many bytes) until the server answers.
    Chunked(usize),
}

struct Reply {
    status: u16,
    body: String,
    /// From the moment the server could know the body is too big (head sent; or,
    /// chunked, the byte past the cap sent) to the first byte of the answer.
    refused_after: Option<Duration>,
    /// Body bytes the client managed to hand to the connection before the server
    /// stopped reading (chunked bodies only).
    body_sent: usize,
}

/// One HTTP/1.1 request over a fresh TLS connection, written by hand so the test
/// controls exactly what is sent and when.
async fn exchange(webhook: &Webhook, body: Body) -> Reply {
    let tcp = tokio::net::TcpStream::connect(&webhook.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(webhook.host.clone()).unwrap();
    let stream = webhook.tls.connect(name, tcp).await.expect("TLS handshake with the webhook");
    let (mut rd, mut wr) = tokio::io::split(stream);
    let framing = match &body {
        Body::Full(b) => format!("Content-Length: {}", b.len()),
        Body::Declared(n) => format!("Content-Length: {n}"),
        Body::Chunked(_) => "Transfer-Encoding: chunked".to_string(),
    };
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nConnection: close\r\n{framing}\r\n\r\n",
        webhook.path, webhook.addr
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    wr.flush().await.unwrap();
    let head_sent = Instant::now();
    // When the server could first know the body is over the cap.
    // Declared: the head alone says so. Set here, not in the sender task, which a
    // loaded machine may not run before the answer is back.
    let declared_over = matches!(body, Body::Declared(_)).then_some(head_sent);
    let over_cap: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(declared_over));
    let body_sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let over_cap = over_cap.clone();
        let body_sent = body_sent.clone();
        tokio::spawn(async move {
            match body {
                Body::Full(b) => {
                    let _ = wr.write_all(&b).await;
                    let _ = wr.flush().await;
                }
                Body::Declared(_) => {}
                Body::Chunked(limit) => {
                    // 1 MiB chunks up to exactly the cap, then a 1 KiB chunk crosses it.
                    let chunk = |size: usize| format!("{size:x}\r\n{}\r\n", "x".repeat(size));
                    let (full, crossing) = (chunk(MIB), chunk(1024));
                    let mut sent = 0;
                    while sent < limit {
                        let next = if sent + MIB > MAX_BODY_BYTES && sent <= MAX_BODY_BYTES {
                            // Let the server take in the first 8 MiB, so the figure is the
                            // refusal itself, not how fast it reads a backlog.
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            over_cap.lock().unwrap().get_or_insert_with(Instant::now);
                            (&crossing, 1024)
                        } else {
                            (&full, MIB)
                        };
                        if wr.write_all(next.0.as_bytes()).await.is_err() || wr.flush().await.is_err() {
                            break; // the server stopped reading: it answered
                        }
                        sent += next.1;
                        body_sent.store(sent as u64, Ordering::SeqCst);
                    }
                }
            }
            wr // keep the connection half open until the answer is read
        })
    };
    let mut raw = Vec::new();
    let mut first_byte = None;
    let mut buf = vec![0u8; 64 * 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    first_byte.get_or_insert_with(Instant::now);
                    raw.extend_from_slice(&buf[..n]);
                }
                // No close_notify, or a reset after the answer: the answer is complete.
                Err(_) => break,
            }
        }
    })
    .await;
    sender.abort();
    assert!(read.is_ok(), "the webhook answered within 10 s (got {} bytes)", raw.len());
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("an HTTP answer: {text:?}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.into() };
    let refused_after = over_cap.lock().unwrap().zip(first_byte).map(|(sent, got)| got.saturating_duration_since(sent));
    Reply { status, body, refused_after, body_sent: body_sent.load(Ordering::SeqCst) as usize }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}

fn review(uid: &str, group: &str, resource: &str, kind: &str, ns: &str) -> Vec<u8> {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": resource},
        "operation": "CREATE", "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "name": "x", "namespace": ns,
        "object": {"apiVersion": if group.is_empty() { "v1".to_string() } else { format!("{group}/v1") },
            "kind": kind, "metadata": {"name": "x", "namespace": ns, "labels": {"risk": "high"}}}}})
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_reviews_are_refused_quickly_and_never_admitted() {
    let _serial = SERIAL.lock().await;
    let webhook = webhook();
    let ns = gated_namespace(cp(), "bad-input");

    // Over the cap: refused on the Content-Length alone, and while a chunked body
    // streams past it. Five of each; the slowest counts.
    let mut slowest = [Duration::ZERO; 2];
    let mut most_streamed = 0;
    for _ in 0..5 {
        for (i, body) in [Body::Declared(9 * MIB), Body::Chunked(64 * MIB)].into_iter().enumerate() {
            let reply = exchange(&webhook, body).await;
            assert_eq!(reply.status, 413, "{}", reply.body);
            assert!(reply.body.contains("signoff: AdmissionReview body exceeds"), "{}", reply.body);
            assert!(reply.body.contains(&MAX_BODY_BYTES.to_string()), "names the limit: {}", reply.body);
            let after = reply.refused_after.expect("refused only once past the cap");
            slowest[i] = slowest[i].max(after);
            most_streamed = most_streamed.max(reply.body_sent);
        }
    }
    eprintln!(
        "oversized bodies refused after {:?} (Content-Length) and {:?} (chunked); at most {} MiB of a 64 MiB chunked body sent",
        slowest[0],
        slowest[1],
        most_streamed / MIB
    );
    // The server stops reading at the cap instead of taking in the whole stream.
    // Counted in bytes, not time, so a loaded machine cannot fail it: what gets past
    // the cap is at most what the kernel's socket buffers hold.
    assert!(most_streamed < 32 * MIB, "the server kept reading a chunked body to {most_streamed} bytes");

    // Bad reviews: each gets a clear message, none is admitted.
    let bad: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed JSON", b"{not json".to_vec(), 400, "signoff: malformed AdmissionReview"),
        ("empty body", Vec::new(), 400, "signoff: malformed AdmissionReview"),
        ("missing uid", review("", "", "configmaps", "ConfigMap", &ns), 400, "has no uid"),
        (
            "no request",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            200,
            "signoff: malformed AdmissionReview",
        ),
        (
            "unknown kind (example.com/frobnicators)",
            review("7c1d2b4e-0000-4000-8000-000000000001", "example.com", "frobnicators", "Frobnicator", &ns),
            200,
            "no EscalationPolicy",
        ),
    ];
    let mut admitted = 0;
    for (what, body, status, message) in &bad {
        let reply = exchange(&webhook, Body::Full(body.clone())).await;
        eprintln!("{what}: HTTP {} {}", reply.status, reply.body);
        let answer: Option<Value> = serde_json::from_str(&reply.body).ok();
        let allowed = answer.as_ref().and_then(|a| a.pointer("/response/allowed")).and_then(Value::as_bool);
        if allowed == Some(true) || reply.body.contains("\"allowed\":true") {
            admitted += 1;
        }
        assert_eq!(reply.status, *status, "{what}: {}", reply.body);
        assert!(reply.body.contains(message), "{what}: a clear message ({message}): {}", reply.body);
        if reply.status == 200 {
            assert_eq!(allowed, Some(false), "{what}: an answer that denies: {}", reply.body);
        }
    }
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    report::record(
        "bad_input",
        &[
            Figure::new(
                SECTION,
                "oversized body (Content-Length 9 MiB, cap 8 MiB) refused after, slowest of 5",
                ms(slowest[0]),
                "< 50 ms",
                slowest[0] < REFUSAL_TARGET,
            ),
            Figure::new(
                SECTION,
                "chunked body streaming past the cap refused after, slowest of 5",
                ms(slowest[1]),
                "< 50 ms",
                slowest[1] < REFUSAL_TARGET,
            ),
            Figure::count(SECTION, "bad reviews sent (malformed, empty, no uid, no request, unknown kind)", bad.len()),
            Figure::new(SECTION, "bad reviews admitted", admitted, "0", admitted == 0),
        ],
    );
    // The times are figures (make chaos fails when they miss 50 ms), not asserted
    // here: a wall-clock bound in make test fails on a loaded machine, not on a bug.
    assert_eq!(admitted, 0, "no bad review is admitted");
}
