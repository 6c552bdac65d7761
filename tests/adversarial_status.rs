//! Adversarial status writes (invariant 2 of DESIGN.md): thousands of random
//! writes to ApprovalRequests through the real API server, from every kind of
//! identity, each checked by an oracle that knows the invariants but not the
//! guard's code. No write that breaks an invariant may be accepted.
//!
//! The oracle works on the JSON the API server returns, with the rules written out
//! here from DESIGN.md:
//! - spec never changes; a write to the main resource never changes status;
//! - decisions are append-only (the old list is an exact prefix of the new one),
//!   at most one is added per write;
//! - a new decision names its writer exactly (username, uid, groups), is for the
//!   current attempt, is written while the request is Pending, by a person who is
//!   not the requester, not a service account (so never the controller), and is
//!   eligible (in the old object's lanes) for every route it names;
//! - everything in status but the decisions is the controller's: only it changes
//!   phase, lanes, tiers, attempt, notAfter, admissions, runbook, conditions ...,
//!   and only forward: a final phase stays final and the attempt stays the same
//!   (except a reopen: Rejected or Expired back to Pending, attempt + 1, as the
//!   request's reopen annotation says), a lane's tier never decreases, a lane is
//!   never dropped, and a lane's tier stays below its number of tiers;
//! - Approved needs approvals: a request becomes Approved only when every lane
//!   is, and a lane only when a decision of the current attempt approves it (by
//!   someone the lane reached, not the requester, not a service account) and no
//!   such decision rejects it. A reopened attempt starts with no lane Approved;
//! - the reopen annotation is set only by the requester or an admin, only on a
//!   Rejected or Expired request, only to the next attempt.

mod common;
#[path = "adversarial/oracle.rs"]
mod oracle;
#[path = "adversarial/writes.rs"]
mod writes;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::report::{self, Figure};
use common::*;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use oracle::*;
use serde_json::{Map, Value, json};
use signoff_testenv::{CONTROLLER, GITOPS};
use writes::*;

const SECTION: &str = "2 adversarial status writes";
const REOPEN: &str = "signoff.dev/reopen-attempt";
/// Writes in flight at once.
const WORKERS: usize = 12;
/// Pending requests the replenisher keeps in the pool.
const PENDING_TARGET: usize = 8;

// ---------------------------------------------------------------------------
// The run (the oracle is in adversarial/oracle.rs, the writes in
// adversarial/writes.rs).

/// How each write ended.
#[derive(Default)]
struct Tally {
    sent: AtomicUsize,
    accepted: AtomicUsize,
    accepted_changed: AtomicUsize,
    accepted_decisions: AtomicUsize,
    accepted_controller_moves: AtomicUsize,
    accepted_reopens: AtomicUsize,
    refused_signoff: AtomicUsize,
    refused_schema: AtomicUsize,
    refused_rbac: AtomicUsize,
    conflicts: AtomicUsize,
    other: AtomicUsize,
    honest_decisions_sent: AtomicUsize,
    targeted_final: AtomicUsize,
    violations: Mutex<Vec<String>>,
    others: Mutex<Vec<String>>,
}

fn add(counter: &AtomicUsize) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One ApprovalRequest writes go to; `pending` as last read.
#[derive(Clone)]
struct Held {
    ns: String,
    name: String,
    pending: bool,
    /// The request as last seen (read, or returned by an accepted write); None: read it.
    latest: Option<Value>,
}

fn approval_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("signoff.dev", "v1alpha1", "ApprovalRequest"),
        "approvalrequests",
    )
}

fn held_name(message: &str) -> Option<String> {
    let start = message.find("ApprovalRequest ")? + "ApprovalRequest ".len();
    let qualified: String = message[start..].chars().take_while(|c| !c.is_whitespace()).collect();
    qualified.split('/').nth(1).map(String::from)
}

/// Hold one more change (alice applies a high-risk ConfigMap) and wait for its lanes.
async fn hold_one(alice: &kube::Client, admin: &kube::Client, ns: &str, n: usize) -> Held {
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": format!("adv-{n}"), "namespace": ns, "labels": {"risk": "high"}},
        "data": {"value": n.to_string()},
    }))
    .unwrap();
    let err = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(alice.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .expect_err("a high-risk ConfigMap is held");
    let name = held_name(&err.to_string()).unwrap_or_else(|| panic!("not held: {err}"));
    let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), ns, &approval_resource());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ar = read(&api, &name).await;
        if !lanes(&ar["status"]).is_empty() {
            return Held { ns: ns.to_string(), name, pending: true, latest: None };
        }
        assert!(Instant::now() < deadline, "the reconciler did not open the lanes of {ns}/{name} within 60s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Read a request as admin; a dropped connection (the API server under load) is retried.
async fn read(api: &Api<DynamicObject>, name: &str) -> Value {
    let mut tries = 0;
    loop {
        match api.get(name).await {
            Ok(object) => return serde_json::to_value(object).unwrap(),
            Err(kube::Error::Api(status)) if status.code < 500 && status.code != 429 => {
                panic!("reading {name}: {status:?}")
            }
            Err(e) if tries < 5 => {
                tries += 1;
                eprintln!("reading {name} failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("reading {name}: {e}"),
        }
    }
}

fn whoami(cp: &ControlPlane, user: &str) -> Who {
    let out = kubectl_ok(cp, user, &["auth", "whoami", "-o", "json"], None);
    let info = serde_json::from_str::<Value>(&out).unwrap()["status"]["userInfo"].clone();
    Who {
        username: info["username"].as_str().unwrap().to_string(),
        uid: info["uid"].as_str().unwrap_or_default().to_string(),
        groups: strings(info.get("groups")),
    }
}

fn seed() -> u64 {
    match std::env::var("SIGNOFF_ADV_SEED") {
        Ok(s) => s.parse().expect("SIGNOFF_ADV_SEED is a number"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    }
}

fn classify(tally: &Tally, err: &kube::Error) {
    match err {
        kube::Error::Api(status) if status.code == 409 => add(&tally.conflicts),
        kube::Error::Api(status) if status.message.contains("admission webhook \"approvals.signoff.dev\" denied") => {
            add(&tally.refused_signoff)
        }
        kube::Error::Api(status) if status.code == 422 || status.code == 400 => add(&tally.refused_schema),
        kube::Error::Api(status) if status.code == 403 => add(&tally.refused_rbac),
        other => {
            add(&tally.other);
            let mut others = tally.others.lock().unwrap();
            if others.len() < 10 {
                others.push(other.to_string());
            }
        }
    }
}

async fn send(api: &Api<DynamicObject>, name: &str, write: &Write) -> kube::Result<DynamicObject> {
    let (pp, patch) = (PostParams::default(), PatchParams::default());
    match (write.target, write.merge_patch) {
        (Target::Status, false) => {
            let object: DynamicObject = serde_json::from_value(write.body.clone()).expect("a whole object");
            api.replace_status(name, &pp, &object).await
        }
        (Target::Status, true) => api.patch_status(name, &patch, &Patch::Merge(&write.body)).await,
        (Target::Main, false) => {
            let object: DynamicObject = serde_json::from_value(write.body.clone()).expect("a whole object");
            api.replace(name, &pp, &object).await
        }
        (Target::Main, true) => api.patch(name, &patch, &Patch::Merge(&write.body)).await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    index: usize,
    seed: u64,
    total: usize,
    writers: Arc<Vec<Writer>>,
    admin: kube::Client,
    pool: Arc<Mutex<Vec<Held>>>,
    tally: Arc<Tally>,
    next: Arc<AtomicUsize>,
) {
    let mut rng = Rng(seed ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let people: Vec<Who> = writers.iter().map(|w| w.who.clone()).collect();
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= total {
            break;
        }
        if n.is_multiple_of(1000) {
            eprintln!("adversarial status writes: {n} of {total} sent");
        }
        // Mostly Pending requests: that is where decisions and moves matter.
        let held = {
            let pool = pool.lock().unwrap();
            let pending: Vec<&Held> = pool.iter().filter(|h| h.pending).collect();
            if !pending.is_empty() && rng.chance(85) { (*rng.pick(&pending)).clone() } else { rng.pick(&pool).clone() }
        };
        let reader: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &held.ns, &approval_resource());
        // The object as last seen: a write that applies to an older version gets a 409
        // (every write carries its resourceVersion) and the next one reads afresh.
        let old = match held.latest {
            Some(latest) => latest,
            None => read(&reader, &held.name).await,
        };
        let is_pending = phase(&old["status"]) == "Pending";
        let remember = |latest: Option<Value>| {
            if let Some(h) = pool.lock().unwrap().iter_mut().find(|h| h.name == held.name) {
                h.pending = is_pending;
                h.latest = latest;
            }
        };
        remember(Some(old.clone()));
        if !is_pending {
            add(&tally.targeted_final);
        }
        let writer = &writers[rng.below(writers.len())];
        let write = random_write(&mut rng, &old, &writer.who, &people);
        if write.honest_decision {
            add(&tally.honest_decisions_sent);
        }
        let api: Api<DynamicObject> = Api::namespaced_with(writer.client.clone(), &held.ns, &approval_resource());
        add(&tally.sent);
        match send(&api, &held.name, &write).await {
            Ok(new) => {
                add(&tally.accepted);
                let new = serde_json::to_value(new).unwrap();
                remember(Some(new.clone()));
                let found = violations(&writer.who, &old, &new, write.target, jiff::Timestamp::now());
                if !found.is_empty() {
                    let text = format!(
                        "VIOLATION by {} ({:?}, merge patch {}): {found:?}\nwrite: {}\nold: {}\nnew: {}",
                        writer.who.username,
                        write.target,
                        write.merge_patch,
                        serde_json::to_string_pretty(&write.body).unwrap(),
                        serde_json::to_string_pretty(&old).unwrap(),
                        serde_json::to_string_pretty(&new).unwrap()
                    );
                    eprintln!("{text}");
                    tally.violations.lock().unwrap().push(text);
                }
                let changed = old["metadata"]["resourceVersion"] != new["metadata"]["resourceVersion"];
                if changed {
                    add(&tally.accepted_changed);
                    if decisions(&new["status"]).len() > decisions(&old["status"]).len() {
                        add(&tally.accepted_decisions);
                    } else if write.honest_reopen {
                        add(&tally.accepted_reopens);
                    } else if writer.who.username == CONTROLLER {
                        add(&tally.accepted_controller_moves);
                    }
                }
            }
            Err(e) => {
                // After a conflict or an unknown outcome, read the request afresh.
                if !matches!(&e, kube::Error::Api(s) if s.code != 409 && s.code < 500) {
                    remember(None);
                }
                classify(&tally, &e)
            }
        }
    }
}

/// Keep `PENDING_TARGET` Pending requests in the pool until `done`.
async fn replenish(
    alice: kube::Client,
    admin: kube::Client,
    ns: String,
    pool: Arc<Mutex<Vec<Held>>>,
    done: Arc<AtomicBool>,
    made: Arc<AtomicUsize>,
) {
    while !done.load(Ordering::Relaxed) {
        let pending = pool.lock().unwrap().iter().filter(|h| h.pending).count();
        if pending < PENDING_TARGET {
            let n = made.fetch_add(1, Ordering::Relaxed);
            let held = hold_one(&alice, &admin, &ns, n).await;
            pool.lock().unwrap().push(held);
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[test]
fn adversarial_status_writes_never_break_an_invariant() {
    let cp = cp();
    signoff();
    let total = match std::env::var("SIGNOFF_ADV_WRITES") {
        Ok(n) => n.parse().expect("SIGNOFF_ADV_WRITES is a number"),
        Err(_) if report::chaos() => 20_000,
        Err(_) => 10_000,
    };
    let seed = seed();
    eprintln!("adversarial status writes: {total} writes, seed {seed} (SIGNOFF_ADV_SEED={seed} to rerun)");

    let identities =
        ["alice", "bob", "carol", "dave", "mallory", "erin", "ivan", "breakglass", ADMIN, GITOPS, CONTROLLER];
    let whos: Vec<Who> = identities.iter().map(|u| whoami(cp, u)).collect();
    for who in &whos {
        eprintln!("writer {} uid {:?} groups {:?}", who.username, who.uid, who.groups);
    }
    assert_eq!(whos.last().unwrap().username, CONTROLLER);
    let ns = gated_namespace(cp, "adv");

    // One request for a cluster-scoped change too: it lives in signoff's own
    // namespace, which the gate exempts; the guard on requests must not.
    let doomed = gated_namespace(cp, "adv-doomed");
    let err = kubectl_err(cp, ADMIN, &["delete", "namespace", &doomed, "--wait=false"], None);
    let doomed_request = held_name(&err).unwrap_or_else(|| panic!("the namespace delete is held: {err}"));

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let (pool, made) = rt.block_on(async {
        let mut writers = Vec::new();
        for (user, who) in identities.iter().zip(&whos) {
            writers.push(Writer { who: who.clone(), client: cp.client(user).await.expect("a client") });
        }
        let writers = Arc::new(writers);
        let admin = cp.client(ADMIN).await.unwrap();
        let alice = cp.client("alice").await.unwrap();
        let pool = Arc::new(Mutex::new(Vec::new()));
        let made = Arc::new(AtomicUsize::new(0));
        for _ in 0..PENDING_TARGET {
            let n = made.fetch_add(1, Ordering::Relaxed);
            let held = hold_one(&alice, &admin, &ns, n).await;
            pool.lock().unwrap().push(held);
        }
        // The namespace delete's request: wait for its lanes like the others.
        let system: Api<DynamicObject> = Api::namespaced_with(admin.clone(), "signoff-system", &approval_resource());
        for _ in 0..300 {
            let ar = serde_json::to_value(system.get(&doomed_request).await.unwrap()).unwrap();
            if !lanes(&ar["status"]).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        pool.lock().unwrap().push(Held {
            ns: "signoff-system".into(),
            name: doomed_request.clone(),
            pending: true,
            latest: None,
        });

        let done = Arc::new(AtomicBool::new(false));
        let replenishers: Vec<_> = (0..2)
            .map(|_| {
                tokio::spawn(replenish(
                    alice.clone(),
                    admin.clone(),
                    ns.clone(),
                    pool.clone(),
                    done.clone(),
                    made.clone(),
                ))
            })
            .collect();
        let next = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..WORKERS)
            .map(|i| {
                tokio::spawn(worker(
                    i,
                    seed,
                    total,
                    writers.clone(),
                    admin.clone(),
                    pool.clone(),
                    tally.clone(),
                    next.clone(),
                ))
            })
            .collect();
        for w in workers {
            w.await.expect("a worker panicked");
        }
        done.store(true, Ordering::Relaxed);
        for r in replenishers {
            r.await.expect("a replenisher panicked");
        }
        (pool, made)
    });
    let elapsed = started.elapsed();

    // After the run, every request's decisions still name real, eligible-looking people.
    let requests = pool.lock().unwrap().clone();
    let mut phases = std::collections::BTreeMap::<String, usize>::new();
    for held in &requests {
        let ar: Value = serde_json::from_str(&kubectl_ok(
            cp,
            ADMIN,
            &["get", "ar", "-n", &held.ns, &held.name, "-o", "json"],
            None,
        ))
        .unwrap();
        *phases.entry(phase(&ar["status"]).to_string()).or_default() += 1;
        let requester = ar["spec"]["requester"]["username"].as_str().unwrap().to_string();
        for d in decisions(&ar["status"]) {
            let approver = d["approver"].as_str().unwrap_or_default();
            assert!(
                approver != requester && !is_service_account(approver),
                "{}/{}: decision by {approver}: {d}",
                held.ns,
                held.name
            );
        }
    }
    eprintln!(
        "requests written to: {} ({} held during the run), phases at the end: {phases:?}",
        requests.len(),
        made.load(Ordering::Relaxed)
    );
    let log = signoff().log_text();
    assert!(!log.contains("panicked"), "signoff panicked during the run; see {}", signoff().log.display());

    let t = &tally;
    let get = |c: &AtomicUsize| c.load(Ordering::Relaxed);
    let violations = t.violations.lock().unwrap().len();
    let rate = get(&t.sent) as f64 / elapsed.as_secs_f64();
    let mode = if report::chaos() { "chaos" } else { "test" };
    report::record(
        "adversarial_status",
        &[
            Figure::new(
                SECTION,
                &format!("writes sent ({mode})"),
                get(&t.sent),
                &format!(">= {total}"),
                get(&t.sent) >= total,
            ),
            Figure::count(SECTION, "accepted", get(&t.accepted)),
            Figure::count(SECTION, "accepted, changing the request", get(&t.accepted_changed)),
            Figure::new(
                SECTION,
                "accepted decisions (honest, eligible)",
                get(&t.accepted_decisions),
                ">= 20",
                get(&t.accepted_decisions) >= 20,
            ),
            Figure::count(SECTION, "honest decisions sent", get(&t.honest_decisions_sent)),
            Figure::count(SECTION, "accepted controller moves", get(&t.accepted_controller_moves)),
            Figure::count(SECTION, "accepted reopens", get(&t.accepted_reopens)),
            Figure::count(SECTION, "refused by signoff", get(&t.refused_signoff)),
            Figure::count(SECTION, "refused by the API server's schema and CEL rules", get(&t.refused_schema)),
            Figure::count(SECTION, "refused by conflict (409)", get(&t.conflicts)),
            Figure::count(SECTION, "refused otherwise (RBAC, errors)", get(&t.refused_rbac) + get(&t.other)),
            Figure::count(SECTION, "writes to a final request", get(&t.targeted_final)),
            Figure::new(SECTION, "accepted writes that broke an invariant", violations, "0", violations == 0),
            Figure::count(SECTION, "duration (s)", format!("{:.1}", elapsed.as_secs_f64())),
            Figure::count(SECTION, "writes/s", format!("{rate:.0}")),
        ],
    );
    assert_eq!(violations, 0, "accepted writes broke invariants:\n{}", t.violations.lock().unwrap().join("\n\n"));
    assert!(get(&t.sent) >= total, "only {} writes were sent", get(&t.sent));
    // A write whose answer was lost (the machine is shared and busy) cannot be judged;
    // a few are tolerated, and the next write to that request reads it afresh.
    assert!(
        get(&t.other) <= total / 100,
        "{} writes failed for other reasons: {:?}",
        get(&t.other),
        t.others.lock().unwrap()
    );
    assert!(
        get(&t.accepted_decisions) >= 20,
        "too few honest decisions accepted ({}): the run proves little",
        get(&t.accepted_decisions)
    );
    assert!(
        get(&t.accepted_changed) >= 50,
        "too few accepted changes ({}): the run proves little",
        get(&t.accepted_changed)
    );
    assert!(get(&t.refused_signoff) >= total / 4, "signoff refused only {} writes", get(&t.refused_signoff));
}

/// Targeted: an identity the API server gives no uid (a client-certificate user,
/// like the admin) must not write a decision that claims someone else's uid.
/// Found by the adversarial run: `approval::decision_allowed` skipped the uid check
/// when the writer had no uid (fixed; regression test).
#[test]
fn a_writer_without_a_uid_cannot_claim_one() {
    let cp = cp();
    signoff();
    let ns = gated_namespace(cp, "adv-uid");
    let manifest =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\n  namespace: NS\n  labels: {risk: high}\n"
            .replace("NS", &ns);
    let err = kubectl_err(cp, "alice", &["apply", "-f", "-"], Some(&manifest));
    let name = held_name(&err).expect("held");
    let get = || -> Value {
        serde_json::from_str(&kubectl_ok(cp, ADMIN, &["get", "ar", "-n", &ns, &name, "-o", "json"], None)).unwrap()
    };
    let mut ar = eventually(60, "lanes", || {
        let ar = get();
        (!lanes(&ar["status"]).is_empty()).then_some(ar)
    });
    // The controller may widen a lane (it decides who is eligible): the admin becomes eligible.
    array(&mut ar["status"]["lanes"][0], "eligible").push(json!("admin"));
    kubectl_ok(cp, CONTROLLER, &["replace", "--subresource=status", "-f", "-"], Some(&ar.to_string()));
    let admin = whoami(cp, ADMIN);
    assert!(admin.uid.is_empty(), "the admin authenticates by certificate, without a uid");
    let ar = get();
    let mut forged = ar.clone();
    array(&mut forged["status"], "decisions").push(json!({
        "approver": "admin", "uid": "uid-bob", "groups": admin.groups, "decision": "Approve",
        "at": time_string(jiff::Timestamp::now()), "attempt": attempt(&ar["status"]),
    }));
    let (ok, out, err) =
        cp.kubectl_run(ADMIN, &["replace", "--subresource=status", "-f", "-"], Some(&forged.to_string())).unwrap();
    assert!(!ok, "the admin's decision claiming bob's uid was accepted:\n{out}");
    eprintln!("refused: {err}");
}
