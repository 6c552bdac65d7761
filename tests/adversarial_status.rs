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

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::report::{self, Figure};
use common::*;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use serde_json::{Map, Value, json};
use signoff_testenv::{CONTROLLER, GITOPS};

const SECTION: &str = "2 adversarial status writes";
const REOPEN: &str = "signoff.dev/reopen-attempt";
/// Writes in flight at once.
const WORKERS: usize = 12;
/// Pending requests the replenisher keeps in the pool.
const PENDING_TARGET: usize = 8;

// ---------------------------------------------------------------------------
// The oracle: plain checks over (writer, old object, new object).

/// A writer as the API server authenticates it (from `kubectl auth whoami`).
#[derive(Clone, Debug)]
struct Who {
    username: String,
    uid: String,
    groups: Vec<String>,
}

/// Where a write went.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    Status,
    Main,
}

fn is_service_account(username: &str) -> bool {
    username.starts_with("system:serviceaccount:")
}

/// Admins as signoff is configured in the tests: system:masters, or the
/// platform-admins group (`--admin-group` default).
fn is_admin(who: &Who) -> bool {
    who.groups.iter().any(|g| g == "system:masters" || g == "signoff:platform-admins")
}

const FINAL: [&str; 3] = ["Approved", "Rejected", "Expired"];

fn phase(status: &Value) -> &str {
    status.get("phase").and_then(Value::as_str).unwrap_or("Pending")
}

fn attempt(status: &Value) -> u64 {
    status.get("attempt").and_then(Value::as_u64).unwrap_or(1)
}

fn array_of(status: &Value, key: &str) -> Vec<Value> {
    status.get(key).and_then(Value::as_array).cloned().unwrap_or_default()
}

fn decisions(status: &Value) -> Vec<Value> {
    array_of(status, "decisions")
}

fn lanes(status: &Value) -> Vec<Value> {
    status.get("lanes").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn reopen_annotation(object: &Value) -> Option<String> {
    object["metadata"]["annotations"][REOPEN].as_str().map(String::from)
}

/// Drop nulls, empty lists and empty maps: the server treats them as absent.
fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .filter(|(_, v)| !matches!(v, Value::Null) && v != &json!([]) && v != &json!({}))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// Status without the decisions, with defaults filled in, for comparison.
fn controller_part(status: &Value) -> Value {
    let mut s = normalized(status);
    if let Value::Object(map) = &mut s {
        map.remove("decisions");
        map.entry("phase").or_insert(json!("Pending"));
        map.entry("attempt").or_insert(json!(1));
        if let Some(Value::Array(lanes)) = map.get_mut("lanes") {
            for lane in lanes {
                if let Value::Object(lane) = lane {
                    lane.entry("phase").or_insert(json!("Pending"));
                }
            }
        }
    }
    s
}

/// Every invariant an accepted write from `who` turning `old` into `new` breaks.
/// A request that may start a new attempt: Rejected, Expired, or Approved with its
/// approval spent (used by an admission of this attempt, or past `notAfter`).
fn reopenable(status: &Value, now: jiff::Timestamp) -> bool {
    let used =
        status["admissions"].as_array().into_iter().flatten().any(|a| {
            a["attempt"].as_u64().unwrap_or(1) == attempt(status) && !a["breakGlass"].as_bool().unwrap_or(false)
        });
    let lapsed = match status["notAfter"].as_str() {
        None => true,
        Some(t) => t.parse::<jiff::Timestamp>().is_ok_and(|t| t <= now),
    };
    matches!(phase(status), "Rejected" | "Expired") || (phase(status) == "Approved" && (used || lapsed))
}

/// Every invariant an accepted write from `who` turning `old` into `new` breaks;
/// `now` is a time after the server answered (so a deadline the server saw pass has passed).
fn violations(who: &Who, old: &Value, new: &Value, target: Target, now: jiff::Timestamp) -> Vec<String> {
    let mut broken = Vec::new();
    if normalized(&old["spec"]) != normalized(&new["spec"]) {
        broken.push("spec changed".to_string());
    }
    let empty = json!({});
    let os = old.get("status").filter(|s| !s.is_null()).unwrap_or(&empty);
    let ns = new.get("status").filter(|s| !s.is_null()).unwrap_or(&empty);
    let requester = old["spec"]["requester"]["username"].as_str().unwrap_or_default();

    // The reopen annotation.
    let (old_reopen, new_reopen) = (reopen_annotation(old), reopen_annotation(new));
    if new_reopen.is_some() && new_reopen != old_reopen {
        if who.username != requester && !is_admin(who) {
            broken.push(format!(
                "{} (not the requester {requester}, not an admin) set the reopen annotation",
                who.username
            ));
        }
        if !reopenable(os, now) {
            broken.push(format!("reopen annotation set on a {} request that cannot be reopened", phase(os)));
        }
        if new_reopen.as_deref() != Some((attempt(os) + 1).to_string().as_str()) {
            broken.push(format!("reopen annotation {new_reopen:?} is not attempt {} + 1", attempt(os)));
        }
    }

    if target == Target::Main {
        if normalized(os) != normalized(ns) {
            broken.push("a write to the main resource changed status".to_string());
        }
        return broken;
    }

    // Decisions: append-only, one at a time, as the writer.
    let (od, nd) = (decisions(os), decisions(ns));
    if nd.len() < od.len() || od.iter().zip(&nd).any(|(a, b)| normalized(a) != normalized(b)) {
        broken.push("an earlier decision was edited, removed or moved".to_string());
    }
    let added = if nd.len() > od.len() { &nd[od.len()..] } else { &[][..] };
    if added.len() > 1 {
        broken.push(format!("{} decisions added in one write", added.len()));
    }
    for d in added {
        let approver = d["approver"].as_str().unwrap_or_default();
        if approver != who.username {
            broken.push(format!("decision names {approver:?}, written by {}", who.username));
        }
        let uid = d["uid"].as_str().unwrap_or_default();
        if uid != who.uid {
            broken.push(format!("decision uid {uid:?} is not the writer's {:?}", who.uid));
        }
        let claimed: BTreeSet<String> = strings(d.get("groups")).into_iter().collect();
        let actual: BTreeSet<String> = who.groups.iter().cloned().collect();
        if claimed != actual {
            broken.push(format!("decision groups {claimed:?} are not the writer's {actual:?}"));
        }
        if who.username == requester {
            broken.push(format!("the requester {requester} decided on their own request"));
        }
        if is_service_account(&who.username) {
            broken.push(format!("service account {} added a decision", who.username));
        }
        if phase(os) != "Pending" {
            broken.push(format!("a decision was added to a {} request", phase(os)));
        }
        if d["attempt"].as_u64().unwrap_or(1) != attempt(os) {
            broken.push(format!(
                "decision for attempt {} while the request is in attempt {}",
                d["attempt"],
                attempt(os)
            ));
        }
        let eligible: Vec<String> = lanes(os)
            .iter()
            .filter(|lane| {
                strings(lane.get("eligible")).contains(&who.username)
                    || strings(lane.get("eligibleGroups")).iter().any(|g| who.groups.contains(g))
            })
            .filter_map(|lane| lane["route"].as_str().map(String::from))
            .collect();
        if eligible.is_empty() {
            broken.push(format!("{} decided without being eligible in any lane", who.username));
        }
        for route in strings(d.get("routes")) {
            if !eligible.contains(&route) {
                broken.push(format!("{} decided for route {route}, eligible only for {eligible:?}", who.username));
            }
        }
    }

    // Everything else in status: the controller's, forward only.
    let (oc, nc) = (controller_part(os), controller_part(ns));
    if oc != nc {
        if who.username != CONTROLLER {
            broken.push(format!("{} changed status beyond decisions (phase, lanes, ...)", who.username));
        }
        // Admissions are an audit record: append-only, like decisions.
        let (oa, na) = (array_of(os, "admissions"), array_of(ns, "admissions"));
        if na.len() < oa.len() || oa.iter().zip(&na).any(|(a, b)| normalized(a) != normalized(b)) {
            broken.push("an earlier admission was edited or removed".to_string());
        }
        let reopened = reopenable(os, now)
            && phase(ns) == "Pending"
            && attempt(ns) == attempt(os) + 1
            && reopen_annotation(old) == Some(attempt(ns).to_string());
        if !reopened {
            if FINAL.contains(&phase(os)) && phase(ns) != phase(os) {
                broken.push(format!("final phase {} became {}", phase(os), phase(ns)));
            }
            if attempt(ns) != attempt(os) {
                broken.push(format!("attempt {} became {} without a reopen", attempt(os), attempt(ns)));
            }
            for lane in lanes(os) {
                let next = lanes(ns).into_iter().find(|l| l["route"] == lane["route"]);
                if let Some(next) = next {
                    let (from, to) = (lane["tier"].as_u64().unwrap_or(0), next["tier"].as_u64().unwrap_or(0));
                    if to < from {
                        broken.push(format!("lane {} moved back from tier {from} to {to}", lane["route"]));
                    }
                } else {
                    broken.push(format!("lane {} was dropped", lane["route"]));
                }
            }
            let was_approved = |route: &Value| {
                lanes(os).iter().any(|l| &l["route"] == route && l["phase"].as_str() == Some("Approved"))
            };
            for lane in lanes(ns) {
                if lane["phase"].as_str() == Some("Approved") && !was_approved(&lane["route"]) {
                    let (approves, rejects) = votes(ns, &lane, requester);
                    if approves == 0 || rejects > 0 {
                        broken.push(format!(
                            "lane {} became Approved with {approves} approvals and {rejects} rejections that count",
                            lane["route"]
                        ));
                    }
                }
            }
            if phase(ns) == "Approved"
                && phase(os) != "Approved"
                && (lanes(ns).is_empty() || lanes(ns).iter().any(|l| l["phase"].as_str() != Some("Approved")))
            {
                broken.push("the request became Approved while a lane is not".to_string());
            }
        } else if lanes(ns).iter().any(|l| l["phase"].as_str() == Some("Approved")) {
            broken.push("a reopened attempt starts with an Approved lane".to_string());
        }
        for lane in lanes(ns) {
            let (tier, tiers) = (lane["tier"].as_u64().unwrap_or(0), lane["tiers"].as_u64().unwrap_or(0));
            if tier >= tiers && lanes(os).iter().all(|l| normalized(l) != normalized(&lane)) {
                broken.push(format!("lane {} at tier {tier} of {tiers}", lane["route"]));
            }
        }
    }
    broken
}

/// Decisions of the current attempt that count for `lane`: (approvals, rejections),
/// from people the lane reached, never the requester or a service account.
fn votes(status: &Value, lane: &Value, requester: &str) -> (usize, usize) {
    let reached = |d: &Value| {
        let by = d["approver"].as_str().unwrap_or_default();
        strings(lane.get("eligible")).iter().any(|e| e == by)
            || strings(d.get("groups")).iter().any(|g| strings(lane.get("eligibleGroups")).contains(g))
    };
    let for_route = |d: &Value| {
        let routes = strings(d.get("routes"));
        routes.is_empty() || lane["route"].as_str().is_some_and(|r| routes.iter().any(|x| x == r))
    };
    let counted: Vec<Value> = decisions(status)
        .into_iter()
        .filter(|d| {
            let by = d["approver"].as_str().unwrap_or_default();
            d["attempt"].as_u64().unwrap_or(1) == attempt(status)
                && by != requester
                && !is_service_account(by)
                && reached(d)
                && for_route(d)
        })
        .collect();
    let mut approvers: Vec<&str> =
        counted.iter().filter(|d| d["decision"] == "Approve").filter_map(|d| d["approver"].as_str()).collect();
    approvers.sort();
    approvers.dedup();
    (approvers.len(), counted.iter().filter(|d| d["decision"] == "Reject").count())
}

// ---------------------------------------------------------------------------
// The oracle can fail: hand-made bad writes it must flag, and good ones it must not.

fn sample_request() -> Value {
    json!({
        "metadata": {"name": "ar-x", "namespace": "ns", "resourceVersion": "1"},
        "spec": {"requester": {"username": "alice"}, "risk": "High"},
        "status": {
            "phase": "Pending", "attempt": 1,
            "lanes": [{"route": "engineering", "policy": "p", "tier": 0, "tiers": 3,
                       "eligible": ["alice", "bob", "carol", "dave"]}],
        },
    })
}

fn person(name: &str) -> Who {
    Who {
        username: name.into(),
        uid: format!("uid-{name}"),
        groups: vec!["team:payments".into(), "signoff:requesters".into(), "system:authenticated".into()],
    }
}

fn own_decision(who: &Who, verdict: &str) -> Value {
    json!({"approver": who.username, "uid": who.uid, "groups": who.groups, "decision": verdict,
           "at": "2026-11-22T12:00:00Z", "attempt": 1})
}

fn with_status(object: &Value, edit: impl FnOnce(&mut Value)) -> Value {
    let mut next = object.clone();
    edit(&mut next["status"]);
    next
}

#[test]
fn the_oracle_flags_bad_writes_and_passes_good_ones() {
    let old = sample_request();
    let (bob, alice, mallory, carol) = (person("bob"), person("alice"), person("mallory"), person("carol"));
    let controller = Who { username: CONTROLLER.into(), uid: "uid-c".into(), groups: vec![] };
    let admin = Who { username: "admin".into(), uid: String::new(), groups: vec!["system:masters".into()] };

    let now: jiff::Timestamp = "2026-11-22T12:00:30Z".parse().unwrap();
    let none = Vec::<String>::new();
    let good = with_status(&old, |s| s["decisions"] = json!([own_decision(&bob, "Approve")]));
    assert_eq!(violations(&bob, &old, &good, Target::Status, now), none);
    let forward = with_status(&old, |s| s["lanes"][0]["tier"] = json!(1));
    assert_eq!(violations(&controller, &old, &forward, Target::Status, now), none);
    let approved = with_status(&good, |s| {
        s["phase"] = json!("Approved");
        s["lanes"][0]["phase"] = json!("Approved");
        s["notAfter"] = json!("2026-11-22T13:00:00Z");
    });
    assert_eq!(violations(&controller, &good, &approved, Target::Status, now), none);
    let annotated = |object: &Value, value: &str| {
        let mut next = object.clone();
        next["metadata"]["annotations"] = json!({REOPEN: value});
        next
    };
    // An approval that was used (admitted once) can be reopened, by the requester; then
    // the controller starts attempt 2.
    let used = with_status(&approved, |s| s["admissions"] = json!([{"user": "alice", "at": "2026-11-22T12:00:10Z"}]));
    assert_eq!(violations(&alice, &used, &annotated(&used, "2"), Target::Main, now), none);
    let attempt2 = with_status(&annotated(&used, "2"), |s| {
        s["phase"] = json!("Pending");
        s["attempt"] = json!(2);
        s["lanes"][0]["tier"] = json!(0);
        s["lanes"][0]["phase"] = json!("Pending");
    });
    assert_eq!(violations(&controller, &annotated(&used, "2"), &attempt2, Target::Status, now), none);

    let bad: Vec<(&str, &Who, Value, Value, Target)> = vec![
        (
            "self-approval",
            &alice,
            old.clone(),
            with_status(&old, |s| s["decisions"] = json!([own_decision(&alice, "Approve")])),
            Target::Status,
        ),
        (
            "ineligible",
            &mallory,
            old.clone(),
            with_status(&old, |s| s["decisions"] = json!([own_decision(&mallory, "Approve")])),
            Target::Status,
        ),
        (
            "forged approver",
            &mallory,
            old.clone(),
            with_status(&old, |s| s["decisions"] = json!([own_decision(&bob, "Approve")])),
            Target::Status,
        ),
        (
            "forged uid",
            &bob,
            old.clone(),
            with_status(&old, |s| {
                let mut d = own_decision(&bob, "Approve");
                d["uid"] = json!("uid-carol");
                s["decisions"] = json!([d])
            }),
            Target::Status,
        ),
        (
            "uid of an identity without one",
            &admin,
            with_status(&old, |s| s["lanes"][0]["eligible"] = json!(["admin"])),
            with_status(&old, |s| {
                s["lanes"][0]["eligible"] = json!(["admin"]);
                let mut d = own_decision(&admin, "Approve");
                d["uid"] = json!("uid-bob");
                s["decisions"] = json!([d])
            }),
            Target::Status,
        ),
        (
            "extra group",
            &bob,
            old.clone(),
            with_status(&old, |s| {
                let mut d = own_decision(&bob, "Approve");
                d["groups"] = json!(["system:masters"]);
                s["decisions"] = json!([d])
            }),
            Target::Status,
        ),
        (
            "controller decides",
            &controller,
            old.clone(),
            with_status(&old, |s| s["decisions"] = json!([own_decision(&controller, "Approve")])),
            Target::Status,
        ),
        (
            "decision after final",
            &bob,
            with_status(&old, |s| s["phase"] = json!("Rejected")),
            with_status(&old, |s| {
                s["phase"] = json!("Rejected");
                s["decisions"] = json!([own_decision(&bob, "Approve")])
            }),
            Target::Status,
        ),
        (
            "edit earlier",
            &carol,
            good.clone(),
            with_status(&good, |s| s["decisions"][0]["decision"] = json!("Reject")),
            Target::Status,
        ),
        ("remove earlier", &carol, good.clone(), with_status(&good, |s| s["decisions"] = json!([])), Target::Status),
        (
            "two at once",
            &bob,
            old.clone(),
            with_status(&old, |s| {
                s["decisions"] = json!([own_decision(&bob, "Approve"), own_decision(&bob, "Reject")])
            }),
            Target::Status,
        ),
        (
            "future attempt",
            &bob,
            old.clone(),
            with_status(&old, |s| {
                let mut d = own_decision(&bob, "Approve");
                d["attempt"] = json!(2);
                s["decisions"] = json!([d])
            }),
            Target::Status,
        ),
        (
            "route not eligible",
            &bob,
            old.clone(),
            with_status(&old, |s| {
                let mut d = own_decision(&bob, "Approve");
                d["routes"] = json!(["security"]);
                s["decisions"] = json!([d])
            }),
            Target::Status,
        ),
        ("approver moves phase", &bob, good.clone(), approved.clone(), Target::Status),
        (
            "approved without approvals",
            &controller,
            old.clone(),
            with_status(&approved, |s| s["decisions"] = json!([])),
            Target::Status,
        ),
        (
            "approved by the requester's decision",
            &controller,
            with_status(&old, |s| s["decisions"] = json!([own_decision(&alice, "Approve")])),
            with_status(&approved, |s| s["decisions"] = json!([own_decision(&alice, "Approve")])),
            Target::Status,
        ),
        (
            "approved while a lane is pending",
            &controller,
            good.clone(),
            with_status(&good, |s| s["phase"] = json!("Approved")),
            Target::Status,
        ),
        ("lane dropped", &controller, old.clone(), with_status(&old, |s| s["lanes"] = json!([])), Target::Status),
        (
            "tier out of range",
            &controller,
            old.clone(),
            with_status(&old, |s| s["lanes"][0]["tier"] = json!(3)),
            Target::Status,
        ),
        (
            "final phase reopened without annotation",
            &controller,
            with_status(&old, |s| s["phase"] = json!("Approved")),
            old.clone(),
            Target::Status,
        ),
        ("tier back", &controller, forward.clone(), old.clone(), Target::Status),
        ("attempt bump", &controller, old.clone(), with_status(&old, |s| s["attempt"] = json!(2)), Target::Status),
        ("status through main", &admin, old.clone(), approved.clone(), Target::Main),
        ("reopen of an unused, valid approval", &alice, approved.clone(), annotated(&approved, "2"), Target::Main),
        (
            "admission removed",
            &controller,
            used.clone(),
            with_status(&used, |s| s["admissions"] = json!([])),
            Target::Status,
        ),
        (
            "reopen by outsider",
            &mallory,
            with_status(&old, |s| s["phase"] = json!("Rejected")),
            {
                let mut n = with_status(&old, |s| s["phase"] = json!("Rejected"));
                n["metadata"]["annotations"] = json!({REOPEN: "2"});
                n
            },
            Target::Main,
        ),
    ];
    for (what, who, old, new, target) in bad {
        let found = violations(who, &old, &new, target, now);
        assert!(!found.is_empty(), "the oracle missed: {what}");
        eprintln!("oracle flags {what}: {found:?}");
    }
}

// ---------------------------------------------------------------------------
// A small seeded generator (splitmix64): the run prints its seed.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    /// An index by weight.
    fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut r = self.next() % weights.iter().sum::<u64>();
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        unreachable!()
    }
}

// ---------------------------------------------------------------------------
// Random writes.

/// One identity that writes: who the server says it is, and a client acting as it.
struct Writer {
    who: Who,
    client: kube::Client,
}

/// What a write was, for the report of a violation.
#[derive(Debug)]
struct Write {
    target: Target,
    merge_patch: bool,
    body: Value,
    /// A decision by the writer, for the current attempt, as the CLI writes it.
    honest_decision: bool,
    /// A reopen annotation set the way the CLI does.
    honest_reopen: bool,
}

fn time_string(t: jiff::Timestamp) -> String {
    t.round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_else(|_| t.to_string())
}

fn random_time(rng: &mut Rng) -> String {
    let now = jiff::Timestamp::now();
    let offset = match rng.weighted(&[60, 5, 5, 10, 10]) {
        0 => 0,
        1 => -90,
        2 => 90,
        3 => -3600,
        _ => 3600,
    };
    match rng.weighted(&[90, 5, 5]) {
        0 => time_string(now + jiff::SignedDuration::from_secs(offset)),
        1 => "2000-01-01T00:00:00Z".into(),
        _ => "2100-01-01T00:00:00Z".into(),
    }
}

/// A decision with random, often forged, fields.
fn random_decision(rng: &mut Rng, me: &Who, people: &[Who], current_attempt: u64) -> Value {
    let other = rng.pick(people);
    let approver = match rng.weighted(&[40, 25, 8, 8, 5, 5, 4]) {
        0 => me.username.clone(),
        1 => other.username.clone(),
        2 => CONTROLLER.to_string(),
        3 => GITOPS.to_string(),
        4 => "admin".to_string(),
        5 => "alice".to_string(),
        _ => format!("eve-{}", rng.below(100)),
    };
    let mut d = Map::new();
    d.insert("approver".into(), json!(approver));
    match rng.weighted(&[50, 20, 15, 5, 10]) {
        0 if !me.uid.is_empty() => {
            d.insert("uid".into(), json!(me.uid));
        }
        0 | 1 => {
            d.insert("uid".into(), json!(other.uid));
        }
        2 => {}
        3 => {
            d.insert("uid".into(), json!(""));
        }
        _ => {
            d.insert("uid".into(), json!(format!("uid-{}", rng.below(1000))));
        }
    }
    let groups: Vec<String> = match rng.weighted(&[50, 20, 10, 10, 10]) {
        0 => me.groups.clone(),
        1 => other.groups.clone(),
        2 => vec![],
        3 => me.groups.iter().cloned().chain(["system:masters".to_string()]).collect(),
        _ => me.groups.iter().skip(1).cloned().collect(),
    };
    if !groups.is_empty() {
        d.insert("groups".into(), json!(groups));
    }
    d.insert("decision".into(), json!(*rng.pick(&["Approve", "Approve", "Reject", "Reject", "Abstain"])));
    let routes: Vec<&str> = match rng.weighted(&[50, 25, 10, 10, 5]) {
        0 => vec![],
        1 => vec!["engineering"],
        2 => vec!["security"],
        3 => vec!["no-such-route"],
        _ => vec!["engineering", "security"],
    };
    if !routes.is_empty() {
        d.insert("routes".into(), json!(routes));
    }
    if rng.chance(10) {
        d.insert("comment".into(), json!("looks fine to me"));
    }
    d.insert("at".into(), json!(random_time(rng)));
    match rng.weighted(&[70, 15, 10, 5]) {
        0 => {
            d.insert("attempt".into(), json!(current_attempt));
        }
        1 => {
            d.insert("attempt".into(), json!(current_attempt + 1));
        }
        2 => {
            d.insert("attempt".into(), json!(current_attempt.saturating_sub(1)));
        }
        _ => {}
    }
    Value::Object(d)
}

/// The decision `kubectl signoff approve|reject` writes for `me`.
fn honest_decision(rng: &mut Rng, me: &Who, current_attempt: u64) -> Value {
    let mut d = json!({
        "approver": me.username, "groups": me.groups,
        "decision": if rng.chance(50) { "Approve" } else { "Reject" },
        "at": time_string(jiff::Timestamp::now()), "attempt": current_attempt,
    });
    if !me.uid.is_empty() {
        d["uid"] = json!(me.uid);
    }
    if rng.chance(30) {
        d["routes"] = json!(["engineering"]);
    }
    d
}

fn array<'a>(status: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    if !status[key].is_array() {
        status[key] = json!([]);
    }
    status[key].as_array_mut().unwrap()
}

/// One random change to `status` (an object).
fn mutate(rng: &mut Rng, status: &mut Value, me: &Who, people: &[Who]) {
    let current_attempt = attempt(status);
    let names: Vec<String> = people.iter().map(|p| p.username.clone()).collect();
    match rng.weighted(&[30, 8, 5, 4, 8, 8, 5, 3, 4, 4, 4, 5, 5, 3, 2]) {
        0 => {
            let d = random_decision(rng, me, people, current_attempt);
            array(status, "decisions").push(d);
        }
        1 => {
            let ds = array(status, "decisions");
            if !ds.is_empty() {
                let i = rng.below(ds.len());
                match rng.below(4) {
                    0 => {
                        let flipped = if ds[i]["decision"] == "Approve" { "Reject" } else { "Approve" };
                        ds[i]["decision"] = json!(flipped);
                    }
                    1 => ds[i]["approver"] = json!(me.username),
                    2 => ds[i]["at"] = json!(random_time(rng)),
                    _ => ds[i]["comment"] = json!("edited later"),
                }
            }
        }
        2 => {
            let ds = array(status, "decisions");
            if !ds.is_empty() {
                let i = rng.below(ds.len());
                ds.remove(i);
            }
        }
        3 => {
            let ds = array(status, "decisions");
            if ds.len() >= 2 {
                ds.reverse();
            } else {
                let d = random_decision(rng, me, people, current_attempt);
                ds.insert(0, d);
            }
        }
        4 => status["phase"] = json!(*rng.pick(&["Pending", "Approved", "Rejected", "Expired", "Pending", "Bogus"])),
        5 => {
            let ls = array(status, "lanes");
            if let Some(lane) = ls.first_mut() {
                let tier = lane["tier"].as_u64().unwrap_or(0);
                let tiers = lane["tiers"].as_u64().unwrap_or(1);
                lane["tier"] = json!(match rng.below(5) {
                    0 => tier + 1,
                    1 => tier.saturating_sub(1),
                    2 => 99,
                    3 => tiers,
                    _ => 0,
                });
            }
        }
        6 => {
            let ls = array(status, "lanes");
            if let Some(lane) = ls.first_mut() {
                match rng.below(4) {
                    0 => array(lane, "eligible").push(json!(me.username)),
                    1 => array(lane, "eligible").push(json!(rng.pick(&names))),
                    2 => lane["eligible"] = json!([]),
                    _ => array(lane, "eligibleGroups").push(json!(*rng.pick(&[
                        "system:authenticated",
                        "signoff:requesters",
                        "team:security",
                        "system:serviceaccounts",
                    ]))),
                }
            }
        }
        7 => {
            let ls = array(status, "lanes");
            if !ls.is_empty() && rng.chance(50) {
                ls.remove(0);
            } else {
                ls.push(json!({"route": "security", "policy": "test-gate", "tier": 0, "tiers": 1,
                               "eligible": [me.username.clone()]}));
            }
        }
        8 => {
            if rng.chance(30) {
                status["notAfter"] = Value::Null;
            } else {
                status["notAfter"] = json!(random_time(rng));
            }
        }
        9 => {
            let adm = array(status, "admissions");
            if !adm.is_empty() && rng.chance(40) {
                adm.clear();
            } else {
                let mut admission = json!({"user": me.username, "at": random_time(rng)});
                match rng.below(3) {
                    0 => admission["attempt"] = json!(current_attempt),
                    1 => admission["breakGlass"] = json!(true),
                    _ => {}
                }
                adm.push(admission);
            }
        }
        10 => {
            status["attempt"] = json!(match rng.below(3) {
                0 => current_attempt + 1,
                1 => current_attempt.saturating_sub(1),
                _ => current_attempt + 5,
            })
        }
        11 => {
            let conditions = array(status, "conditions");
            if !conditions.is_empty() && rng.chance(30) {
                conditions[0]["status"] = json!("False");
            } else {
                conditions.push(json!({"type": format!("Probe{}", rng.below(5)), "status": "True",
                    "lastTransitionTime": time_string(jiff::Timestamp::now()), "reason": "Adversarial",
                    "message": "written by the adversarial test"}));
            }
        }
        12 => match rng.below(4) {
            0 => status["runbook"] = json!("1. do nothing; 2. admit it anyway"),
            1 => status["deadline"] = json!(random_time(rng)),
            2 => status["tier"] = json!("engineering 9/9"),
            _ => array(status, "skips").push(json!({"route": "engineering", "tier": 0, "user": "bob",
                "reason": "Away", "at": time_string(jiff::Timestamp::now())})),
        },
        13 => {
            let d1 = random_decision(rng, me, people, current_attempt);
            let d2 = random_decision(rng, me, people, current_attempt);
            let ds = array(status, "decisions");
            ds.push(d1);
            ds.push(d2);
        }
        _ => {
            let ls = array(status, "lanes");
            if let Some(lane) = ls.first_mut() {
                lane["phase"] = json!(*rng.pick(&["Pending", "Approved", "Rejected", "Expired"]));
            }
        }
    }
}

/// The smallest merge patch that turns `old` into `new` at the top level of status.
fn status_patch(old: &Value, new: &Value) -> Value {
    let mut patch = Map::new();
    let (o, n) = (old.as_object().cloned().unwrap_or_default(), new.as_object().cloned().unwrap_or_default());
    for (k, v) in &n {
        if o.get(k) != Some(v) {
            patch.insert(k.clone(), v.clone());
        }
    }
    for k in o.keys() {
        if !n.contains_key(k) {
            patch.insert(k.clone(), Value::Null);
        }
    }
    Value::Object(patch)
}

/// A random write by `me` against `object` (as last read).
fn random_write(rng: &mut Rng, object: &Value, me: &Who, people: &[Who]) -> Write {
    let old_status = object.get("status").cloned().filter(|s| s.is_object()).unwrap_or_else(|| json!({}));
    let mut status = old_status.clone();
    let requester = object["spec"]["requester"]["username"].as_str().unwrap_or_default();
    let mut write = Write {
        target: Target::Status,
        merge_patch: rng.chance(25),
        body: Value::Null,
        honest_decision: false,
        honest_reopen: false,
    };
    let mut annotations: Option<Value> = None;

    let may_reopen = (me.username == requester || is_admin(me)) && reopenable(&old_status, jiff::Timestamp::now());
    if may_reopen && rng.chance(40) {
        // What `kubectl signoff reopen` does: annotate the main resource.
        write.target = Target::Main;
        write.honest_reopen = true;
        annotations = Some(json!({REOPEN: (attempt(&old_status) + 1).to_string()}));
    } else if !is_service_account(&me.username) && rng.chance(6) {
        write.honest_decision = true;
        let d = honest_decision(rng, me, attempt(&old_status));
        array(&mut status, "decisions").push(d);
    } else {
        if rng.chance(12) {
            write.target = Target::Main;
            if rng.chance(40) {
                let value = match rng.below(4) {
                    0 => attempt(&old_status) + 1,
                    1 => attempt(&old_status),
                    2 => attempt(&old_status) + 2,
                    _ => 0,
                };
                annotations = Some(json!({REOPEN: value.to_string()}));
            }
        }
        let n = match rng.weighted(&[60, 30, 10]) {
            0 => 1,
            1 => 2,
            _ => 3,
        };
        for _ in 0..n {
            mutate(rng, &mut status, me, people);
        }
    }

    let mut spec_edit = None;
    if rng.chance(3) {
        spec_edit = Some(json!({"risk": "Low"}));
    }
    let rv = object["metadata"]["resourceVersion"].clone();
    write.body = if write.merge_patch {
        let mut patch = json!({"metadata": {"resourceVersion": rv}, "status": status_patch(&old_status, &status)});
        if let Some(a) = annotations {
            patch["metadata"]["annotations"] = a;
        }
        if let Some(s) = spec_edit {
            patch["spec"] = s;
        }
        patch
    } else {
        let mut full = object.clone();
        full["status"] = status;
        if let Some(Value::Object(a)) = annotations {
            let existing = full["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
            full["metadata"]["annotations"] = Value::Object(existing.into_iter().chain(a).collect());
        }
        if spec_edit.is_some() {
            full["spec"]["risk"] = json!("Low");
        }
        full
    };
    write
}

// ---------------------------------------------------------------------------
// The run.

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
