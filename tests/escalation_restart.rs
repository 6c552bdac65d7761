//! Killing the controller (SIGKILL) mid-escalation and starting a new one loses
//! nothing and skips nothing: the new leader resumes from the status. Own test
//! binary, because it kills signoff.

mod common;

use std::collections::BTreeMap;

use common::esc::*;
use common::*;

#[test]
fn killing_the_controller_mid_escalation_loses_nothing_and_skips_nothing() {
    setup();
    let first = start_signoff(&["--lease-duration=3s"]);
    let ns = esc_namespace("esc-owners");
    let name = hold(&ns, "routine");
    eventually(20, "tiers 1 and 2 notified", || (notifications(&name).len() >= 2).then_some(()));
    first.process.lock().unwrap().kill();
    let killed_at = jiff::Timestamp::now();
    eprintln!("killed signoff with SIGKILL after tier 2 was notified");

    let _second = start_signoff(&["--lease-duration=3s"]);
    let ar = eventually(60, "the request to finish its chain", || {
        let ar = request(&ns, &name);
        (ar["status"]["phase"] == "Expired").then_some(ar)
    });
    let got = notifications(&name);
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for r in &got {
        *per_key.entry(r.key.clone()).or_default() += 1;
    }
    let duplicates: usize = per_key.values().map(|n| n - 1).sum();
    let tiers: Vec<u64> =
        got.iter().filter(|r| r.body["kind"] == "Escalation").map(|r| r.body["tier"].as_u64().unwrap()).collect();
    let mut first_seen: Vec<u64> = tiers.clone();
    first_seen.dedup();
    eprintln!(
        "after the failover: {} notifications, tiers in arrival order {tiers:?}, {duplicates} duplicate(s) by idempotency key; resumed {:.1}s after the kill",
        got.len(),
        secs(killed_at, got.iter().map(|r| r.at).filter(|t| *t > killed_at).min().unwrap_or(killed_at))
    );
    assert_eq!(first_seen, [0, 1, 2, 3, 4], "every tier notified, in order, none skipped");
    assert!(duplicates <= 1, "at most one duplicate per failover: {per_key:?}");
    assert_eq!(ar["status"]["lanes"][0]["tier"], 4, "the lane walked to its last tier");
    assert!(got.iter().any(|r| r.body["kind"] == "Expired"), "admins told when the chain ran out");
}
