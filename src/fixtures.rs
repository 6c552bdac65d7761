//! Test fixtures: builders of teams, policies and requests on a fixed clock,
//! and a mock API server for the reconciler's and the webhook router's tests
//! (the pattern of kube-rs controller-rs's `fixtures.rs`): a [`kube::Client`]
//! whose requests are answered by a scenario and recorded in order, so a test
//! can pin what the reconciler sends and in which order, without a cluster.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use jiff::{SignedDuration, Timestamp};

use crate::crd::*;
use crate::policy::PolicySet;

pub fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Friday 2026-11-20 10:00 UTC (dave is on call for payments).
pub fn t0() -> Timestamp {
    t("2026-11-20T10:00:00Z")
}

pub fn mins(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

pub fn team(name: &str, users: &[&str], lead: Option<&str>, rotation: &[&str], secondary: Option<&str>) -> Team {
    Team::new(
        name,
        TeamSpec {
            members: Members { users: users.iter().map(|s| s.to_string()).collect(), groups: vec![] },
            lead: lead.map(str::to_string),
            on_call: (!rotation.is_empty()).then(|| OnCall {
                rotation: rotation.iter().map(|s| s.to_string()).collect(),
                shift_length: "168h".into(),
                handoff: "2026-11-16T09:00:00".into(), // a Monday
                time_zone: "Europe/Berlin".into(),
                overrides: vec![],
            }),
            secondary_team: secondary.map(str::to_string),
            ..Default::default()
        },
    )
}

pub fn teams() -> Vec<Team> {
    vec![
        team("payments", &["alice", "bob"], Some("carol"), &["dave", "bob"], Some("platform")),
        team("platform", &["ivan"], Some("ivan"), &["ivan"], None),
        team("platform-admins", &["root"], Some("root"), &[], None),
        team("security", &["erin"], Some("erin"), &[], Some("platform")),
    ]
}

pub fn policy_set(extra: &str) -> PolicySet {
    let yaml = format!(
        r#"
apiVersion: signoff.dev/v1alpha1
kind: EscalationPolicy
metadata: {{name: p}}
spec:
  match: {{rules: [{{operations: ["*"], apiGroups: ["*"], apiVersions: ["*"], resources: ["*"]}}]}}
  rules: [{{name: r, expression: "true", risk: High, route: engineering}}]
  actionClasses:
    routine: {{tierTimeout: 10m, notify: Sequential}}
    destructive: {{tierTimeout: 2m, notify: Simultaneous}}
{extra}"#
    );
    let policy: EscalationPolicy = serde_yaml::from_str(&yaml).unwrap();
    PolicySet::new([&policy])
}

pub fn request(class: ActionClass, routes: &[(&str, &str)]) -> ApprovalRequest {
    let spec = ApprovalRequestSpec {
        requester: UserInfo { username: "alice".into(), uid: None, groups: vec![] },
        action: Action {
            operation: "DELETE".into(),
            version: "v1".into(),
            kind: "PersistentVolumeClaim".into(),
            resource: "persistentvolumeclaims".into(),
            namespace: Some("prod".into()),
            name: "ledger".into(),
            ..Default::default()
        },
        digest: "0".repeat(64),
        risk: Risk::High,
        action_class: class,
        routes: routes.iter().map(|(r, _)| r.to_string()).collect(),
        routing: routes
            .iter()
            .map(|(route, team)| RouteTarget {
                route: route.to_string(),
                policy: "p".into(),
                team: Some(team.to_string()),
            })
            .collect(),
        reasons: vec![HoldReason {
            policy: "p".into(),
            rule: "r".into(),
            risk: Risk::High,
            route: "engineering".into(),
            action_class: class,
            message: "deleting a PVC in production".into(),
        }],
        owner_team: Some("payments".into()),
        cost: None,
        context: None,
        diff: None,
        manifest: None,
        fallback: None,
    };
    let mut ar = ApprovalRequest::new("ar-1", spec);
    ar.metadata.namespace = Some("prod".into());
    ar.metadata.uid = Some("uid-1".into());
    ar
}

/// One request the reconciler made.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    /// Path and query, e.g. `/apis/signoff.dev/v1alpha1/namespaces/prod/approvalrequests/ar-1/status`.
    pub path: String,
    pub body: serde_json::Value,
}

impl Call {
    /// `METHOD path` without the query, for readable assertions.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path.split('?').next().unwrap_or_default())
    }
}

/// What the mock answers: a status code and a JSON body.
pub type Answer = (u16, serde_json::Value);

/// Answers each call with the first rule whose method and path suffix match;
/// a call no rule matches gets 404 and is still recorded.
type Rule = (String, String, Box<dyn FnMut(&Call) -> Answer + Send>);

/// The scenario: rules to answer with, and every call in arrival order.
#[derive(Clone, Default)]
pub struct MockApi {
    rules: Arc<Mutex<Vec<Rule>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl MockApi {
    /// Answer `method` requests whose path (without query) ends with `suffix`.
    pub fn on(&self, method: &str, suffix: &str, answer: impl FnMut(&Call) -> Answer + Send + 'static) -> &Self {
        self.rules.lock().unwrap().push((method.into(), suffix.into(), Box::new(answer)));
        self
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// A client whose every request goes to this scenario.
    pub fn client(&self) -> kube::Client {
        let mock = self.clone();
        let service = tower::service_fn(move |req: hyper::Request<kube::client::Body>| {
            let mock = mock.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let call = Call {
                    method: parts.method.to_string(),
                    path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                    body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
                };
                let (status, json) = mock.answer(&call);
                mock.calls.lock().unwrap().push(call);
                let response = hyper::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(json.to_string())))
                    .expect("a valid response");
                Ok::<_, Infallible>(response)
            }
        });
        kube::Client::new(service, "default")
    }

    fn answer(&self, call: &Call) -> Answer {
        let path = call.path.split('?').next().unwrap_or_default().to_string();
        let mut rules = self.rules.lock().unwrap();
        match rules.iter_mut().find(|(m, suffix, _)| *m == call.method && path.ends_with(suffix.as_str())) {
            Some((_, _, answer)) => answer(call),
            None => (404, not_found(&path)),
        }
    }
}

/// The API server's 404 Status.
pub fn not_found(path: &str) -> serde_json::Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "NotFound", "code": 404, "message": format!("{path} not found")})
}

/// The API server's 409 Status for a write based on a stale read.
pub fn conflict() -> serde_json::Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
        "message": "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again"})
}
