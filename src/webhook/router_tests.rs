//! The webhook in process: the axum router driven with `oneshot` and
//! AdmissionReview JSON, as the API server sends it (the pattern of
//! kubewarden/policy-server's integration tests), against the mock API server.
//! Malformed, oversized, exempt, uncovered, guarded and decided requests need no
//! control plane; the cluster tests prove the same wiring over real TLS.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::review::GateSettings;
use super::server::{MAX_BODY_BYTES, WebhookState, router};
use crate::approval::Identities;
use crate::crd::EscalationPolicy;
use crate::fixtures::MockApi;
use crate::metrics::Metrics;
use crate::policy::PolicySet;

const CONTROLLER: &str = "system:serviceaccount:signoff-system:signoff";

/// Holds ConfigMaps in production namespaces that carry `data.risky`.
const POLICY: &str = r#"
apiVersion: signoff.dev/v1alpha1
kind: EscalationPolicy
metadata: {name: configmaps}
spec:
  match: {rules: [{operations: ["*"], apiGroups: [""], apiVersions: ["*"], resources: ["configmaps"]}]}
  rules:
  - {name: risky, expression: "has(object.data) && 'risky' in object.data", risk: High, route: engineering,
     message: "a risky ConfigMap"}
"#;

fn state(api: &MockApi, refuse_uncovered: bool) -> WebhookState {
    let policy: EscalationPolicy = serde_yaml::from_str(POLICY).unwrap();
    let client = api.client();
    let (namespaces, _) = kube::runtime::reflector::store();
    WebhookState {
        client: client.clone(),
        policies: Arc::new(arc_swap::ArcSwap::from_pointee(PolicySet::new([&policy]))),
        namespaces,
        namespace_json: Default::default(),
        settings: GateSettings {
            controller_namespace: "signoff-system".into(),
            break_glass_groups: vec!["signoff:break-glass".into()],
            refuse_uncovered,
            max_pending_per_requester: 20,
            gitops: Default::default(),
        },
        identities: Identities { controller: CONTROLLER.into(), admin_groups: vec![] },
        recorder: crate::events::Events::new(
            client,
            kube::runtime::events::Reporter { controller: "signoff".into(), instance: None },
        ),
        metrics: Arc::new(Metrics::default()),
        requests: Default::default(),
        deadline: Duration::from_secs(5),
    }
}

/// An AdmissionReview as the API server sends it.
fn review(
    operation: &str,
    gvr: (&str, &str, &str),
    kind: &str,
    sub: &str,
    user: &str,
    object: Value,
    old: Value,
) -> Value {
    let (group, version, resource) = gvr;
    let meta = if object.is_null() { &old["metadata"] } else { &object["metadata"] };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "subResource": if sub.is_empty() { Value::Null } else { sub.into() },
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": meta["name"],
            "namespace": meta["namespace"],
            "operation": operation,
            "userInfo": {"username": user, "uid": format!("uid-{user}"), "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": old,
            "dryRun": false,
            "options": null,
        }
    })
}

fn configmap(namespace: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": namespace}, "data": data})
}

/// POST the body to /validate; the status and the JSON (or text) answer.
async fn send(state: WebhookState, body: Body, length: Option<usize>) -> (StatusCode, Value) {
    let mut request = Request::post("/validate").header("content-type", "application/json");
    if let Some(length) = length {
        request = request.header("content-length", length);
    }
    let response = router(state).oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn decide(state: WebhookState, review: Value) -> Value {
    let (status, answer) = send(state, Body::from(review.to_string()), None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["response"].clone()
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_refused_before_any_api_call() {
    let api = MockApi::default();
    let (status, answer) = send(state(&api, true), Body::from("{not json"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer.as_str().unwrap().contains("malformed AdmissionReview"), "{answer}");

    let (status, answer) = send(state(&api, true), Body::from("{}"), Some(MAX_BODY_BYTES + 1)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "refused on its Content-Length");
    assert!(answer.as_str().unwrap().contains("exceeds"), "{answer}");

    let mut no_uid =
        review("CREATE", ("", "v1", "configmaps"), "ConfigMap", "", "alice", configmap("prod", json!({})), Value::Null);
    no_uid["request"]["uid"] = "".into();
    let (status, _) = send(state(&api, true), Body::from(no_uid.to_string()), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a review without a uid");
    assert!(api.calls().is_empty(), "nothing reached the API: {:?}", api.calls());
}

#[tokio::test]
async fn exempt_resources_are_admitted_and_uncovered_ones_refused() {
    let api = MockApi::default();
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l", "namespace": "prod"}});
    let exempt = review("UPDATE", ("coordination.k8s.io", "v1", "leases"), "Lease", "", "alice", lease.clone(), lease);
    assert_eq!(decide(state(&api, true), exempt).await["allowed"], true);

    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "prod"}});
    let uncovered = review("CREATE", ("", "v1", "secrets"), "Secret", "", "alice", secret, Value::Null);
    let api_ns = api.clone();
    api_ns.on("GET", "/api/v1/namespaces/prod", |_| {
        (200, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}}))
    });
    let answer = decide(state(&api, true), uncovered.clone()).await;
    assert_eq!(answer["allowed"], false, "signoff writes the configuration: an uncovered kind is a stale one");
    assert!(
        answer["status"]["message"].as_str().unwrap().contains("no EscalationPolicy matches CREATE of v1/secrets"),
        "{answer}"
    );
    assert_eq!(decide(state(&api, false), uncovered).await["allowed"], true, "a chart-owned configuration: admitted");
}

#[tokio::test]
async fn a_risky_change_is_held_and_a_harmless_one_admitted() {
    let api = MockApi::default();
    api.on("GET", "/api/v1/namespaces/prod", |_| {
        (200, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod", "labels": {"signoff.dev/owner": "payments"}}}))
    })
    .on("POST", "/apis/signoff.dev/v1alpha1/namespaces/prod/approvalrequests", |call| {
        let mut created = call.body.clone();
        created["metadata"]["resourceVersion"] = "1".into();
        created["metadata"]["uid"] = "uid-ar".into();
        (201, created)
    })
    .on("POST", "/events", |call| (201, call.body.clone()));

    let harmless = review(
        "CREATE",
        ("", "v1", "configmaps"),
        "ConfigMap",
        "",
        "alice",
        configmap("prod", json!({"a": "b"})),
        Value::Null,
    );
    assert_eq!(decide(state(&api, true), harmless).await["allowed"], true);
    assert!(api.calls().iter().all(|c| !c.path.contains("approvalrequests")), "nothing held, nothing created");

    let risky = review(
        "CREATE",
        ("", "v1", "configmaps"),
        "ConfigMap",
        "",
        "alice",
        configmap("prod", json!({"risky": "yes"})),
        Value::Null,
    );
    let answer = decide(state(&api, true), risky).await;
    assert_eq!(answer["allowed"], false);
    let message = answer["status"]["message"].as_str().unwrap();
    assert!(message.contains("held for approval") && message.contains("a risky ConfigMap"), "{message}");
    let created = api
        .calls()
        .into_iter()
        .find(|c| c.method == "POST" && c.path.contains("approvalrequests"))
        .expect("the packet");
    assert_eq!(created.body["spec"]["requester"]["username"], "alice");
    assert_eq!(created.body["spec"]["action"]["kind"], "ConfigMap");
    assert_eq!(created.body["spec"]["reasons"][0]["rule"], "risky");
    assert!(
        message.contains(created.body["metadata"]["name"].as_str().unwrap()),
        "the denial names the request: {message}"
    );
}

/// The guard, in process: the requester adding her own approval is refused, as
/// is anyone naming someone else; the controller adding a decision too.
#[tokio::test]
async fn the_guard_refuses_self_approval_and_forged_decisions() {
    let api = MockApi::default();
    // A request at tier 1 of the payments team (alice, the requester, and bob).
    let mut ar = crate::fixtures::request(crate::crd::ActionClass::Routine, &[("engineering", "payments")]);
    let (policies, teams) = (crate::fixtures::policy_set(""), crate::fixtures::teams());
    let world = crate::escalation::World { policies: &policies, teams: &teams, approvers: &[] };
    ar.status = Some(crate::escalation::step(&ar, world, jiff::Timestamp::now()).status);
    let old = serde_json::to_value(&ar).unwrap();
    let with_decision = |by: &str, names: &str| {
        let mut new = old.clone();
        new["status"]["decisions"] = json!([{"approver": names, "uid": format!("uid-{by}"), "groups": ["system:authenticated"],
            "decision": "Approve", "at": jiff::Timestamp::now().to_string(), "attempt": 1}]);
        new
    };
    let gvr = ("signoff.dev", "v1alpha1", "approvalrequests");
    let cases = [
        ("alice", "alice", Some("you requested this change; someone else must approve it")),
        ("bob", "carol", Some("a decision must name its writer")),
        (CONTROLLER, CONTROLLER, Some("never add a decision")),
        ("bob", "bob", None),
    ];
    for (by, names, refused) in cases {
        let request = review("UPDATE", gvr, "ApprovalRequest", "status", by, with_decision(by, names), old.clone());
        let answer = decide(state(&api, true), request).await;
        match refused {
            Some(why) => {
                assert_eq!(answer["allowed"], false, "{by} naming {names}: {answer}");
                assert!(answer["status"]["message"].as_str().unwrap().contains(why), "{by}: {answer}");
            }
            None => assert_eq!(answer["allowed"], true, "bob, eligible, approves as himself: {answer}"),
        }
    }
    assert!(api.calls().is_empty(), "guards need no API call: {:?}", api.calls());
}

#[test]
fn a_namespace_is_converted_once_per_version() {
    let memo = super::server::NamespaceJson::default();
    let namespace = |version: Option<&str>, environment: &str| -> k8s_openapi::api::core::v1::Namespace {
        serde_json::from_value(json!({"metadata": {"name": "prod", "resourceVersion": version,
            "labels": {"signoff.dev/environment": environment}}}))
        .unwrap()
    };
    let first = memo.of(&namespace(Some("1"), "production")).unwrap();
    let again = memo.of(&namespace(Some("1"), "production")).unwrap();
    assert!(Arc::ptr_eq(&first, &again), "the same version is shared, not converted again");
    let relabelled = memo.of(&namespace(Some("2"), "development")).unwrap();
    assert_eq!(relabelled["metadata"]["labels"]["signoff.dev/environment"], "development");
    assert_eq!(first["metadata"]["labels"]["signoff.dev/environment"], "production");
    // Without a version a change cannot be seen: never served from the memo.
    let unversioned = memo.of(&namespace(None, "staging")).unwrap();
    assert_eq!(unversioned["metadata"]["labels"]["signoff.dev/environment"], "staging");
    let unversioned_again = memo.of(&namespace(None, "staging")).unwrap();
    assert!(!Arc::ptr_eq(&unversioned, &unversioned_again));
}
