//! Fixtures shared by the escalation test binaries: teams and approvers whose
//! contacts are a real loopback receiver, and a policy with 3-second tiers.

use std::sync::OnceLock;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::*;

pub const TTL: f64 = 3.0;

pub struct Setup {
    pub receiver: Receiver,
}

/// Teams, approvers (each with a webhook contact on the receiver) and the policy.
pub fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let cp = cp();
        install_demo(cp);
        let receiver = Receiver::start();
        let contact = |who: &str| format!("[{{kind: Webhook, url: \"{}/user/{who}\"}}]", receiver.url);
        let now = Timestamp::now();
        // grace is in quiet hours right now: a window from an hour ago to an hour from now, every day, UTC.
        let local = now.to_zoned(jiff::tz::TimeZone::UTC);
        let (start, end) = (local.checked_sub(SignedDuration::from_hours(1)).unwrap(), local.checked_add(SignedDuration::from_hours(1)).unwrap());
        let hhmm = |z: &jiff::Zoned| format!("{:02}:{:02}", z.hour(), z.minute());
        let mut manifests = String::new();
        for who in ["bob", "dave", "carol", "ivan", "heidi", "frank"] {
            manifests.push_str(&format!(
                "apiVersion: signoff.dev/v1alpha1\nkind: Approver\nmetadata: {{name: {who}}}\nspec: {{user: {who}, contacts: {}}}\n---\n",
                contact(who)
            ));
        }
        manifests.push_str(&format!(
            "apiVersion: signoff.dev/v1alpha1\nkind: Approver\nmetadata: {{name: grace}}\nspec:\n  user: grace\n  timeZone: UTC\n  quietHours: [{{start: \"{}\", end: \"{}\"}}]\n  contacts: {}\n---\n",
            hhmm(&start),
            hhmm(&end),
            contact("grace")
        ));
        manifests.push_str(
            r#"apiVersion: signoff.dev/v1alpha1
kind: Team
metadata: {name: esc-owners}
spec:
  members: {users: [bob]}
  lead: carol
  onCall: {rotation: [dave], shiftLength: 24h, handoff: "2026-01-01T00:00:00", timeZone: UTC}
  secondaryTeam: esc-platform
---
apiVersion: signoff.dev/v1alpha1
kind: Team
metadata: {name: esc-platform}
spec:
  members: {users: [ivan]}
  lead: ivan
  onCall: {rotation: [ivan], shiftLength: 24h, handoff: "2026-01-01T00:00:00", timeZone: UTC}
---
apiVersion: signoff.dev/v1alpha1
kind: Team
metadata: {name: esc-admins}
spec:
  members: {users: [heidi]}
---
apiVersion: signoff.dev/v1alpha1
kind: Team
metadata: {name: esc-quiet}
spec:
  members: {users: [grace, frank]}
  lead: frank
---
apiVersion: signoff.dev/v1alpha1
kind: EscalationPolicy
metadata: {name: esc}
spec:
  match:
    rules: [{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [configmaps]}]
    namespaceSelector: {matchLabels: {signoff.dev/test-esc: "true"}}
  adminTeam: esc-admins
  routes:
  - name: engineering
    contacts: [{kind: Webhook, url: "RECEIVER/route/engineering"}]
  actionClasses:
    routine: {tierTimeout: 3s, notify: Sequential}
    destructive: {tierTimeout: 3s, notify: Simultaneous}
  rules:
  - name: routine-change
    expression: "has(object.metadata.labels) && 'class' in object.metadata.labels && object.metadata.labels['class'] == 'routine'"
    risk: High
    route: engineering
    message: a routine change in an escalation test
  - name: destructive-change
    expression: "has(object.metadata.labels) && 'class' in object.metadata.labels && object.metadata.labels['class'] == 'destructive'"
    risk: High
    route: engineering
    actionClass: destructive
    message: a destructive change in an escalation test
"#,
        );
        let manifests = manifests.replace("RECEIVER", &receiver.url);
        kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&manifests));
        Setup { receiver }
    })
}

pub fn esc_namespace(owner: &str) -> String {
    namespace(cp(), "esc", &[("signoff.dev/test-esc", "true"), ("signoff.dev/owner", owner)])
}

/// Create a held ConfigMap as alice; returns the request's name.
pub fn hold(ns: &str, class: &str) -> String {
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: change\n  namespace: {ns}\n  labels: {{class: {class}}}\n"
    );
    let err = kubectl_err(cp(), "alice", &["apply", "-f", "-"], Some(&manifest));
    assert!(err.contains("held for approval"), "{err}");
    let start = err.find("ApprovalRequest ").unwrap() + "ApprovalRequest ".len();
    err[start..].split_whitespace().next().unwrap().split('/').nth(1).unwrap().to_string()
}

/// Notifications received for one request, in arrival order.
pub fn notifications(name: &str) -> Vec<Received> {
    let mut got: Vec<Received> =
        setup().receiver.received("/user/").into_iter().filter(|r| r.body["request"]["name"] == name).collect();
    got.sort_by_key(|r| r.at);
    got
}

pub fn request(ns: &str, name: &str) -> Value {
    serde_json::from_str(&kubectl_ok(cp(), ADMIN, &["get", "ar", "-n", ns, name, "-o", "json"], None)).unwrap()
}

pub fn secs(a: Timestamp, b: Timestamp) -> f64 {
    b.duration_since(a).as_secs_f64()
}
