//! Reading ApprovalRequests and writing decisions the way `kubectl signoff` does,
//! as real users through the API server.

use serde_json::{Value, json};

use super::*;

/// All ApprovalRequests in a namespace, as the admin sees them.
pub fn requests(cp: &ControlPlane, ns: &str) -> Vec<Value> {
    let out = kubectl_ok(cp, ADMIN, &["get", "approvalrequests", "-n", ns, "-o", "json"], None);
    serde_json::from_str::<Value>(&out).unwrap()["items"].as_array().unwrap().clone()
}

/// One ApprovalRequest, as the admin sees it.
pub fn request(cp: &ControlPlane, ns: &str, name: &str) -> Value {
    serde_json::from_str(&kubectl_ok(cp, ADMIN, &["get", "ar", "-n", ns, name, "-o", "json"], None)).unwrap()
}

/// The held request's name, from the denial message.
pub fn held_name(stderr: &str) -> String {
    held_ref(stderr).1
}

/// The held request's namespace and name, from the denial message.
pub fn held_ref(stderr: &str) -> (String, String) {
    let start = stderr.find("ApprovalRequest ").expect("message names the request") + "ApprovalRequest ".len();
    let qualified: String = stderr[start..].chars().take_while(|c| !c.is_whitespace()).collect();
    let (ns, name) = qualified.split_once('/').expect("namespace/name");
    (ns.to_string(), name.to_string())
}

/// Who `user` is, as the API server authenticates them.
pub fn whoami(cp: &ControlPlane, user: &str) -> Value {
    let out = kubectl_ok(cp, user, &["auth", "whoami", "-o", "json"], None);
    serde_json::from_str::<Value>(&out).unwrap()["status"]["userInfo"].clone()
}

/// Append a decision to a request's status as `user`, the way `kubectl signoff
/// approve` does: naming `approver` (normally the user themselves). Returns
/// whether the API server accepted it, and its stderr.
pub fn decide(cp: &ControlPlane, user: &str, approver: &str, ns: &str, name: &str, verdict: &str) -> (bool, String) {
    let me = whoami(cp, user);
    // Like `kubectl signoff approve`: a concurrent status write by the controller
    // is a 409 on the resourceVersion, so re-read and send again.
    for _ in 0..5 {
        let ar = request(cp, ns, name);
        let mut decisions = ar["status"]["decisions"].as_array().cloned().unwrap_or_default();
        decisions.push(json!({
            "approver": approver,
            "uid": me["uid"],
            "groups": me["groups"],
            "decision": verdict,
            "at": jiff::Timestamp::now().to_string(),
            "attempt": ar["status"]["attempt"].as_u64().unwrap_or(1),
        }));
        let patch = json!({"metadata": {"resourceVersion": ar["metadata"]["resourceVersion"]}, "status": {"decisions": decisions}});
        let (ok, _, err) = cp
            .kubectl_run(
                user,
                &["patch", "ar", name, "-n", ns, "--subresource=status", "--type=merge", "-p", &patch.to_string()],
                None,
            )
            .unwrap();
        if ok || !err.contains("the object has been modified") {
            return (ok, err);
        }
    }
    panic!("{ns}/{name} kept changing while {user} decided");
}

/// Wait until the reconciler has opened the request's lanes.
pub fn wait_for_lanes(cp: &ControlPlane, ns: &str, name: &str) -> Value {
    eventually(30, "the reconciler to open the lanes", || {
        let ar = request(cp, ns, name);
        ar["status"]["lanes"].as_array().is_some_and(|l| !l.is_empty()).then_some(ar)
    })
}

/// Wait until the request reaches `phase`.
pub fn wait_for_phase(cp: &ControlPlane, ns: &str, name: &str, phase: &str) -> Value {
    eventually(30, &format!("{ns}/{name} to be {phase}"), || {
        let ar = request(cp, ns, name);
        (ar["status"]["phase"] == phase).then_some(ar)
    })
}
