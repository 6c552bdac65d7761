//! Closing the loop (issue 18, part 1) on the real control plane: once a
//! request is decided or expires, the requester and everyone paged hear,
//! through real receivers on loopback that speak like the services they stand
//! for: a PagerDuty-compatible Events API (incidents open on trigger, close on
//! resolve), a Slack-compatible incoming webhook, and generic webhooks, one
//! signed in `X-Signature` as a Flux `generic-hmac` Receiver reads it. The
//! outcome goes out exactly once per decision, at most one duplicate when the
//! leader is SIGKILLed in the middle of sending it.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::approvals::{held_name, wait_for_phase};
use common::*;
use serde_json::{Value, json};

const SIGNING_KEY: &str = "flux-receiver-token";

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Got {
    path: String,
    headers: BTreeMap<String, String>,
    body: Value,
    raw: Vec<u8>,
}

/// A loopback HTTP server for every sink. `/pd/v2/enqueue` answers as
/// PagerDuty's Events API v2 does (202 with the dedup_key) and keeps each
/// incident's state; `/slack/…` answers `ok` as Slack does. When `stall` is
/// set, the first outcome message to arrive is answered only after it is
/// cleared: the sender dies waiting.
struct Sinks {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
    /// dedup_key -> "triggered" | "resolved"
    incidents: Arc<Mutex<BTreeMap<String, String>>>,
    stall: Arc<Mutex<bool>>,
    stalled: Arc<Mutex<bool>>,
}

impl Sinks {
    fn start() -> Sinks {
        let got = Arc::new(Mutex::new(Vec::<Got>::new()));
        let incidents = Arc::new(Mutex::new(BTreeMap::new()));
        let (stall, stalled) = (Arc::new(Mutex::new(false)), Arc::new(Mutex::new(false)));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (g, i, s, d) = (got.clone(), incidents.clone(), stall.clone(), stalled.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().fallback(
                    move |uri: axum::http::Uri, headers: axum::http::HeaderMap, raw: axum::body::Bytes| {
                        let (g, i, s, d) = (g.clone(), i.clone(), s.clone(), d.clone());
                        async move {
                            let body: Value = serde_json::from_slice(&raw).unwrap_or_default();
                            let headers: BTreeMap<String, String> = headers
                                .iter()
                                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                                .collect();
                            let path = uri.path().to_string();
                            g.lock().unwrap().push(Got {
                                path: path.clone(),
                                headers,
                                body: body.clone(),
                                raw: raw.to_vec(),
                            });
                            let outcome = body.get("outcome").is_some() || body["event_action"] == "resolve";
                            let first_stall =
                                outcome && *s.lock().unwrap() && !std::mem::replace(&mut *d.lock().unwrap(), true);
                            if first_stall {
                                while *s.lock().unwrap() {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                            }
                            if path.starts_with("/pd/") {
                                let key = body["dedup_key"].as_str().unwrap_or_default().to_string();
                                let state = match body["event_action"].as_str() {
                                    Some("trigger") => "triggered",
                                    Some("resolve") => "resolved",
                                    _ => return (axum::http::StatusCode::BAD_REQUEST, "bad event_action".to_string()),
                                };
                                i.lock().unwrap().insert(key.clone(), state.to_string());
                                let answer =
                                    json!({"status": "success", "message": "Event processed", "dedup_key": key});
                                return (axum::http::StatusCode::ACCEPTED, answer.to_string());
                            }
                            (axum::http::StatusCode::OK, "ok".to_string())
                        }
                    },
                );
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Sinks { url, got, incidents, stall, stalled }
    }

    fn got(&self, prefix: &str, request: &str) -> Vec<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.path.starts_with(prefix))
            // Slack's blocks name the request in their context line; PagerDuty's
            // resolve names only the page (callers match on dedup keys).
            .filter(|g| {
                g.body["request"]["name"] == request
                    || g.path.starts_with("/pd/")
                    || (g.path.starts_with("/slack/") && g.body["blocks"].to_string().contains(&format!("/{request} ")))
            })
            .cloned()
            .collect()
    }

    fn incident(&self, key: &str) -> Option<String> {
        self.incidents.lock().unwrap().get(key).cloned()
    }
}

fn setup(sinks: &Sinks) {
    let cp = cp();
    install_demo(cp);
    let webhook = |who: &str| format!("{{kind: Webhook, url: \"{}/user/{who}\"}}", sinks.url);
    let manifests = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: outcome-hooks, namespace: signoff-system}}
stringData: {{routing: R0UT1NGKEY, signing: {SIGNING_KEY}}}
---
apiVersion: signoff.dev/v1alpha1
kind: Approver
metadata: {{name: alice}}
spec:
  user: alice
  contacts:
  - {{kind: Webhook, url: "{url}/flux/receiver", signingSecretRef: {{name: outcome-hooks, key: signing}}, signatureHeader: X-Signature}}
---
apiVersion: signoff.dev/v1alpha1
kind: Approver
metadata: {{name: bob}}
spec: {{user: bob, contacts: [{bob}]}}
---
apiVersion: signoff.dev/v1alpha1
kind: Approver
metadata: {{name: heidi}}
spec: {{user: heidi, contacts: [{heidi}]}}
---
apiVersion: signoff.dev/v1alpha1
kind: Team
metadata: {{name: out-owners}}
spec:
  members: {{users: [bob]}}
  contacts: [{{kind: PagerDuty, url: "{url}/pd/v2/enqueue", routingKeySecretRef: {{name: outcome-hooks, key: routing}}}}]
---
apiVersion: signoff.dev/v1alpha1
kind: Team
metadata: {{name: out-admins}}
spec:
  members: {{users: [heidi]}}
---
apiVersion: signoff.dev/v1alpha1
kind: EscalationPolicy
metadata: {{name: outcomes}}
spec:
  match:
    rules: [{{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [configmaps]}}]
    namespaceSelector: {{matchLabels: {{signoff.dev/test-outcome: "true"}}}}
  adminTeam: out-admins
  routes:
  - name: engineering
    tiers: [{{kind: Team, timeout: 10m}}, {{kind: Admins, timeout: 2s}}]
    contacts: [{{kind: Slack, url: "{url}/slack/T000/B000/XXXX"}}]
  actionClasses:
    routine: {{tierTimeout: 10m, notify: Sequential}}
  rules:
  - name: held
    expression: "true"
    risk: High
    route: engineering
    message: a change in the outcome test
"#,
        url = sinks.url,
        bob = webhook("bob"),
        heidi = webhook("heidi"),
    );
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&manifests));
}

fn hold(ns: &str, name: &str) -> String {
    let manifest = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n");
    let err = kubectl_err(cp(), "alice", &["apply", "-f", "-"], Some(&manifest));
    assert!(err.contains("held for approval"), "{err}");
    held_name(&err)
}

/// The tier-1 page to team out-owners, as PagerDuty's trigger.
fn wait_for_page(sinks: &Sinks, name: &str) -> String {
    let key = eventually(30, "the tier-1 PagerDuty trigger", || {
        sinks
            .got("/pd/", name)
            .into_iter()
            .find(|g| {
                g.body["event_action"] == "trigger"
                    && g.body["payload"]["source"].as_str().unwrap_or_default().ends_with(name)
            })
            .map(|g| g.body["dedup_key"].as_str().unwrap().to_string())
    });
    assert_eq!(sinks.incident(&key).as_deref(), Some("triggered"));
    key
}

#[test]
fn decisions_and_expiry_reach_everyone_once_even_across_a_leader_kill() {
    let sinks = Sinks::start();
    setup(&sinks);
    let mut signoff = start_signoff(&["--lease-duration=3s"]);
    let ns = namespace(cp(), "outcome", &[("signoff.dev/test-outcome", "true"), ("signoff.dev/owner", "out-owners")]);

    // 1. Approved, with the leader killed while it tells.
    let approved = hold(&ns, "approved");
    let page = wait_for_page(&sinks, &approved);
    *sinks.stall.lock().unwrap() = true;
    plugin_ok("bob", &["approve", "-n", &ns, &approved, "--comment", "ship it"]);
    eventually(30, "the first outcome message to arrive (and stall)", || sinks.stalled.lock().unwrap().then_some(()));
    signoff.process.lock().unwrap().kill();
    *sinks.stall.lock().unwrap() = false;
    let before_restart = sinks.got.lock().unwrap().len();
    signoff = start_signoff(&["--lease-duration=3s"]);
    // `kubectl wait` reads the standard condition; `kubectl get` shows target and routes.
    let ar = format!("approvalrequest/{approved}");
    kubectl_ok(cp(), ADMIN, &["wait", "-n", &ns, "--for=condition=Approved", &ar, "--timeout=60s"], None);
    wait_for_phase(cp(), &ns, &approved, "Approved");
    let table = kubectl_ok(cp(), ADMIN, &["get", "approvalrequests", "-n", &ns, &approved], None);
    assert!(table.contains("TARGET") && table.contains(&format!("ConfigMap {ns}/approved")), "{table}");
    assert!(table.contains("engineering") && !table.contains("[\""), "routes as text: {table}");
    // Everyone hears: the requester (signed for a Flux Receiver), bob, the
    // route's Slack channel; the team's PagerDuty incident resolves.
    let alice = eventually(30, "alice told", || {
        let got = sinks.got("/flux/receiver", &approved);
        (!got.is_empty()).then_some(got)
    });
    let signed = &alice[alice.len() - 1];
    assert_eq!(signed.body["kind"], "Approved");
    assert_eq!(signed.body["outcome"]["decidedBy"], json!(["bob"]));
    assert_eq!(signed.body["outcome"]["comments"], json!(["bob: ship it"]));
    let signature = signed.headers.get("x-signature").expect("signed in X-Signature");
    assert!(
        signoff::notify::payload::verify_signature(SIGNING_KEY.as_bytes(), &signed.raw, signature),
        "a Flux generic-hmac Receiver verifies {signature}"
    );
    let bob = eventually(30, "bob told", || {
        sinks.got("/user/bob", &approved).into_iter().find(|g| g.body["kind"] == "Approved")
    });
    assert_eq!(bob.body["outcome"]["phase"], "Approved");
    let slack = eventually(30, "the Slack channel told", || {
        sinks
            .got("/slack/", &approved)
            .into_iter()
            .find(|g| g.body["text"].as_str().unwrap_or_default().contains("approved by bob"))
    });
    let blocks = slack.body["blocks"].to_string();
    assert!(blocks.contains("*Approved by* bob") && blocks.contains("ship it"), "{blocks}");
    eventually(30, "the PagerDuty incident resolved", || {
        (sinks.incident(&page).as_deref() == Some("resolved")).then_some(())
    });

    // Exactly once per decision, at most one duplicate across the kill: every
    // outcome key twice at most, and only keys the killed leader had sent.
    let outcomes: Vec<(String, usize)> = {
        let got = sinks.got.lock().unwrap();
        let mut count: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (i, g) in got.iter().enumerate() {
            let key = g.headers.get("idempotency-key").cloned().or_else(|| {
                (g.body["event_action"] == "resolve")
                    .then(|| format!("{}/resolve", g.body["dedup_key"].as_str().unwrap()))
            });
            let outcome = g.body.get("outcome").is_some()
                || g.body["event_action"] == "resolve"
                || g.body["text"].as_str().unwrap_or_default().contains(": approved by");
            let key = key.unwrap_or_else(|| format!("slack:{}", g.body["text"]));
            if outcome
                && (g.body["request"]["name"] == approved.as_str()
                    || g.path.starts_with("/pd/")
                    || g.path.starts_with("/slack/"))
            {
                let entry = count.entry(key).or_default();
                entry.0 += 1;
                if i < before_restart {
                    entry.1 += 1;
                }
            }
        }
        count
            .into_iter()
            .map(|(k, (n, before))| {
                assert!(n - before <= 1, "{k}: sent {} times by the new leader", n - before);
                (k, n)
            })
            .collect()
    };
    eprintln!("outcome deliveries across the kill: {outcomes:?}");
    assert!(outcomes.iter().all(|(_, n)| (1..=2).contains(n)), "{outcomes:?}");
    // The killed leader got one message out (it stalled there) and never wrote
    // the status: the new leader sends every outcome, that one a second time.
    assert_eq!(outcomes.iter().filter(|(_, n)| *n == 2).count(), 1, "exactly the stalled message twice: {outcomes:?}");
    // And recorded in status like the pages, each Delivered.
    let status = common::approvals::request(cp(), &ns, &approved)["status"].clone();
    let records: Vec<&Value> = status["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| {
            n["key"].as_str().unwrap().contains("/outcome/") || n["key"].as_str().unwrap().ends_with("/resolve")
        })
        .collect();
    for sink in ["Webhook", "Slack", "PagerDuty", "Event"] {
        assert!(
            records.iter().any(|n| n["sink"] == sink && n["result"] == "Delivered"),
            "{sink} outcome recorded: {records:#?}"
        );
    }

    // 2. Rejected: the requester and the paged hear who rejected and why.
    let rejected = hold(&ns, "rejected");
    let page = wait_for_page(&sinks, &rejected);
    plugin_ok("bob", &["reject", "-n", &ns, &rejected, "--comment", "not on a Friday"]);
    let told = eventually(30, "alice told of the rejection", || {
        sinks.got("/flux/receiver", &rejected).into_iter().find(|g| g.body["kind"] == "Rejected")
    });
    assert_eq!(told.body["outcome"]["comments"], json!(["bob: not on a Friday"]));
    eventually(30, "the rejected request's incident resolved", || {
        (sinks.incident(&page).as_deref() == Some("resolved")).then_some(())
    });
    eventually(30, "Slack told of the rejection", || {
        sinks
            .got("/slack/", &rejected)
            .into_iter()
            .find(|g| g.body["text"].as_str().unwrap_or_default().contains("rejected by bob"))
    });

    // 3. Expired: tier 1 of 2 s, then the admins for 2 s; the requester and
    // the paged are told it expired, the admins get their runbook page.
    let quick = r#"apiVersion: signoff.dev/v1alpha1
kind: EscalationPolicy
metadata: {name: outcomes}
spec:
  match:
    rules: [{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [configmaps]}]
    namespaceSelector: {matchLabels: {signoff.dev/test-outcome: "true"}}
  adminTeam: out-admins
  routes:
  - name: engineering
    tiers: [{kind: Team, timeout: 2s}, {kind: Admins, timeout: 2s}]
  actionClasses:
    routine: {tierTimeout: 10m, notify: Sequential}
  rules:
  - {name: held, expression: "true", risk: High, route: engineering, message: a change in the outcome test}
"#;
    kubectl_ok(cp(), ADMIN, &["apply", "-f", "-"], Some(quick));
    let expired = eventually(30, "the edited policy to hold", || {
        let manifest = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: expired\n  namespace: {ns}\n");
        let (_, _, err) = cp().kubectl_run("alice", &["apply", "-f", "-"], Some(&manifest)).unwrap();
        err.contains("held for approval").then(|| held_name(&err))
    });
    let page = wait_for_page(&sinks, &expired);
    wait_for_phase(cp(), &ns, &expired, "Expired");
    let told = eventually(30, "alice told of the expiry", || {
        sinks.got("/flux/receiver", &expired).into_iter().find(|g| g.body["kind"] == "Expired")
    });
    assert_eq!(told.body["outcome"]["phase"], "Expired");
    eventually(30, "the expired request's tier-1 incident resolved", || {
        (sinks.incident(&page).as_deref() == Some("resolved")).then_some(())
    });
    let heidi = eventually(30, "the admins' runbook page and heidi's outcome", || {
        let got = sinks.got("/user/heidi", &expired);
        (got.len() >= 2).then_some(got)
    });
    assert!(heidi.iter().any(|g| g.body["kind"] == "Expired" && g.body.get("outcome").is_none()), "the admins' page");
    assert!(heidi.iter().any(|g| g.body["outcome"]["phase"] == "Expired"), "heidi was paged at tier 2: told too");
    // The Event on the request names the requester, always.
    let events = kubectl_ok(cp(), ADMIN, &["get", "events", "-n", &ns, "-o", "json"], None);
    assert!(events.contains("Expired: told the requester alice"), "{events}");
    drop(signoff);
}
