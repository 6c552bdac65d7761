//! The write generator of the adversarial status writes: random, honest and
//! hostile status and metadata writes from every kind of identity, seeded.

use super::*;

// A small seeded generator (splitmix64): the run prints its seed.

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
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
pub struct Writer {
    pub who: Who,
    pub client: kube::Client,
}

/// What a write was, for the report of a violation.
#[derive(Debug)]
pub struct Write {
    pub target: Target,
    pub merge_patch: bool,
    pub body: Value,
    /// A decision by the writer, for the current attempt, as the CLI writes it.
    pub honest_decision: bool,
    /// A reopen annotation set the way the CLI does.
    pub honest_reopen: bool,
}

pub fn time_string(t: jiff::Timestamp) -> String {
    t.round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_else(|_| t.to_string())
}

pub fn random_time(rng: &mut Rng) -> String {
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
pub fn random_decision(rng: &mut Rng, me: &Who, people: &[Who], current_attempt: u64) -> Value {
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
pub fn honest_decision(rng: &mut Rng, me: &Who, current_attempt: u64) -> Value {
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

pub fn array<'a>(status: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    if !status[key].is_array() {
        status[key] = json!([]);
    }
    status[key].as_array_mut().unwrap()
}

/// One random change to `status` (an object).
pub fn mutate(rng: &mut Rng, status: &mut Value, me: &Who, people: &[Who]) {
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
pub fn status_patch(old: &Value, new: &Value) -> Value {
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
pub fn random_write(rng: &mut Rng, object: &Value, me: &Who, people: &[Who]) -> Write {
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
