//! The oracle of the adversarial status writes: the invariants, written out from
//! DESIGN.md on the JSON the API server returns (see adversarial_status.rs), and
//! its own test against writes known to be good or bad.

use super::*;

/// A writer as the API server authenticates it (from `kubectl auth whoami`).
#[derive(Clone, Debug)]
pub struct Who {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// Where a write went.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    Status,
    Main,
}

pub fn is_service_account(username: &str) -> bool {
    username.starts_with("system:serviceaccount:")
}

/// Admins as signoff is configured in the tests: system:masters, or the
/// platform-admins group (`--admin-group` default).
pub fn is_admin(who: &Who) -> bool {
    who.groups.iter().any(|g| g == "system:masters" || g == "signoff:platform-admins")
}

pub const FINAL: [&str; 3] = ["Approved", "Rejected", "Expired"];

pub fn phase(status: &Value) -> &str {
    status.get("phase").and_then(Value::as_str).unwrap_or("Pending")
}

pub fn attempt(status: &Value) -> u64 {
    status.get("attempt").and_then(Value::as_u64).unwrap_or(1)
}

pub fn array_of(status: &Value, key: &str) -> Vec<Value> {
    status.get(key).and_then(Value::as_array).cloned().unwrap_or_default()
}

pub fn decisions(status: &Value) -> Vec<Value> {
    array_of(status, "decisions")
}

pub fn lanes(status: &Value) -> Vec<Value> {
    status.get("lanes").and_then(Value::as_array).cloned().unwrap_or_default()
}

pub fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

pub fn reopen_annotation(object: &Value) -> Option<String> {
    object["metadata"]["annotations"][REOPEN].as_str().map(String::from)
}

/// Drop nulls, empty lists and empty maps: the server treats them as absent.
pub fn normalized(v: &Value) -> Value {
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
pub fn controller_part(status: &Value) -> Value {
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
pub fn reopenable(status: &Value, now: jiff::Timestamp) -> bool {
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
pub fn violations(who: &Who, old: &Value, new: &Value, target: Target, now: jiff::Timestamp) -> Vec<String> {
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
pub fn votes(status: &Value, lane: &Value, requester: &str) -> (usize, usize) {
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

pub fn sample_request() -> Value {
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

pub fn person(name: &str) -> Who {
    Who {
        username: name.into(),
        uid: format!("uid-{name}"),
        groups: vec!["team:payments".into(), "signoff:requesters".into(), "system:authenticated".into()],
    }
}

pub fn own_decision(who: &Who, verdict: &str) -> Value {
    json!({"approver": who.username, "uid": who.uid, "groups": who.groups, "decision": verdict,
           "at": "2026-11-22T12:00:00Z", "attempt": 1})
}

pub fn with_status(object: &Value, edit: impl FnOnce(&mut Value)) -> Value {
    let mut next = object.clone();
    edit(&mut next["status"]);
    next
}

#[test]
pub fn the_oracle_flags_bad_writes_and_passes_good_ones() {
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
