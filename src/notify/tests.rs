use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;

use super::deliver::{AttemptOutcome, outcome_of};
use super::message::diff_excerpt;
use super::payload::*;
use super::target::redact_url;
use super::*;
use crate::crd::*;

fn request() -> ApprovalRequest {
    crate::fixtures::Packet::new("payments-prod", "ar-3f9c")
        .requester("dana", &["payments"])
        .action("DELETE", "apps", "Deployment", "deployments", None, "api")
        .reason("production", "delete-workload", "engineering", "deleting a production workload <api> & its pods")
        .class(ActionClass::Destructive)
        .routes(&[("engineering", "payments")])
        .owner_team("payments")
        .cost("USD", "120.00", "0.00", "-120.00")
        .context("decommission", "OPS-42")
        .diff("-replicas: 3\n+replicas: 0")
        .build()
}

fn deadline() -> Timestamp {
    "2026-01-01T00:02:00Z".parse().unwrap()
}

fn message() -> Message {
    Message::from_request(
        &request(),
        MessageKind::Escalation,
        "engineering",
        1,
        "OnCall",
        Recipient::User("erin".into()),
        "ar-3f9c/engineering/1/erin",
        deadline(),
    )
}

#[test]
fn message_from_request() {
    let m = message();
    assert_eq!(m.request, RequestRef { namespace: "payments-prod".into(), name: "ar-3f9c".into() });
    assert_eq!(m.action.headline(), "DELETE Deployment payments-prod/api");
    assert_eq!(m.cost_delta.as_deref(), Some("-120.00 USD/month"));
    assert_eq!(m.approve_command, "kubectl signoff approve -n payments-prod ar-3f9c");
    assert_eq!(m.show_command, "kubectl get approvalrequest -n payments-prod ar-3f9c -o yaml");
    assert_eq!(m.recipient.to_string(), "user/erin");
    assert_eq!(m.packet, serde_json::to_value(&request().spec).unwrap());
    assert_eq!(
        m.summary(),
        "[High] DELETE Deployment payments-prod/api: held for approval (engineering, tier 2 OnCall)"
    );
}

#[test]
fn headline_with_subresource_and_cluster_scope() {
    let a = ActionSummary {
        operation: "UPDATE".into(),
        kind: "Deployment".into(),
        resource: "deployments/scale".into(),
        namespace: Some("prod".into()),
        name: "web".into(),
    };
    assert_eq!(a.headline(), "UPDATE Deployment (scale) prod/web");
    let a = ActionSummary {
        operation: "DELETE".into(),
        kind: "Namespace".into(),
        resource: "namespaces".into(),
        namespace: None,
        name: "prod".into(),
    };
    assert_eq!(a.headline(), "DELETE Namespace prod");
    // A deletecollection is reviewed once, without a name.
    let a = ActionSummary {
        operation: "DELETE".into(),
        kind: "ConfigMap".into(),
        resource: "configmaps".into(),
        namespace: Some("prod".into()),
        name: String::new(),
    };
    assert_eq!(a.headline(), "DELETE every ConfigMap in prod");
    let a = ActionSummary { namespace: None, kind: "ClusterRole".into(), ..a };
    assert_eq!(a.headline(), "DELETE every ClusterRole, cluster-wide");
}

#[test]
fn positive_cost_gets_a_plus_sign() {
    let mut ar = request();
    ar.spec.cost.as_mut().unwrap().monthly_delta = "35.50".into();
    let m = Message::from_request(
        &ar,
        MessageKind::Escalation,
        "finance",
        0,
        "Team",
        Recipient::Team("fin".into()),
        "k",
        deadline(),
    );
    assert_eq!(m.cost_delta.as_deref(), Some("+35.50 USD/month"));
    assert_eq!(m.recipient.to_string(), "team/fin");
}

#[test]
fn diff_excerpt_keeps_the_first_lines() {
    let diff: String = (1..=25).map(|i| format!("line {i}\n")).collect();
    let e = diff_excerpt(&diff, 20);
    assert_eq!(e.lines().count(), 21);
    assert!(e.starts_with("line 1\n"));
    assert!(e.contains("line 20\n"));
    assert!(!e.contains("line 21"));
    assert!(e.ends_with("… (5 more lines)"));
    assert_eq!(diff_excerpt("a\nb", 20), "a\nb");
}

#[test]
fn webhook_body_is_the_exact_packet() {
    let body = webhook_body(&message());
    let expected = json!({
        "key": "ar-3f9c/engineering/1/erin",
        "kind": "Escalation",
        "request": {"namespace": "payments-prod", "name": "ar-3f9c"},
        "route": "engineering",
        "tier": 1,
        "tierName": "OnCall",
        "recipient": {"kind": "User", "name": "erin"},
        "requester": "dana",
        "action": {
            "operation": "DELETE",
            "kind": "Deployment",
            "resource": "deployments",
            "namespace": "payments-prod",
            "name": "api"
        },
        "risk": "High",
        "actionClass": "destructive",
        "reasons": ["deleting a production workload <api> & its pods"],
        "contextReason": "decommission",
        "ticket": "OPS-42",
        "costDelta": "-120.00 USD/month",
        "diffExcerpt": "-replicas: 3\n+replicas: 0",
        "deadline": "2026-01-01T00:02:00Z",
        "approveCommand": "kubectl signoff approve -n payments-prod ar-3f9c",
        "showCommand": "kubectl get approvalrequest -n payments-prod ar-3f9c -o yaml",
        "packet": {
            "requester": {"username": "dana", "groups": ["payments"]},
            "action": {
                "operation": "DELETE",
                "group": "apps",
                "version": "v1",
                "kind": "Deployment",
                "resource": "deployments",
                "namespace": "payments-prod",
                "name": "api"
            },
            "digest": "0".repeat(64),
            "risk": "High",
            "actionClass": "destructive",
            "routes": ["engineering"],
            "reasons": [{
                "policy": "production",
                "rule": "delete-workload",
                "risk": "High",
                "route": "engineering",
                "actionClass": "destructive",
                "message": "deleting a production workload <api> & its pods"
            }],
            "routing": [{"route": "engineering", "policy": "production", "team": "payments"}],
            "ownerTeam": "payments",
            "cost": {"currency": "USD", "monthlyBefore": "120.00", "monthlyAfter": "0.00", "monthlyDelta": "-120.00"},
            "context": {"reason": "decommission", "ticket": "OPS-42"},
            "diff": "-replicas: 3\n+replicas: 0"
        }
    });
    assert_eq!(body, expected);
}

#[test]
fn webhook_request_is_signed_with_the_idempotency_key() {
    let target = Target::webhook("https://hooks.example/x", Some(b"s3cret".to_vec()));
    let req = render(&target, &message());
    assert_eq!(req.url, "https://hooks.example/x");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("Idempotency-Key"), Some("ar-3f9c/engineering/1/erin"));
    assert_eq!(req.header("X-Signoff-Idempotency-Key"), Some("ar-3f9c/engineering/1/erin"));
    let sig = req.header(SIGNATURE_HEADER).unwrap();
    assert_eq!(sig, signature(b"s3cret", &req.body));
    assert!(verify_signature(b"s3cret", &req.body, sig));
    assert!(!verify_signature(b"other", &req.body, sig));
    assert!(!verify_signature(b"s3cret", b"tampered", sig));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&req.body).unwrap(), webhook_body(&message()));

    let unsigned = render(&Target::webhook("http://h/", None), &message());
    assert_eq!(unsigned.header(SIGNATURE_HEADER), None);
}

#[test]
fn hmac_sha256_matches_rfc_4231() {
    // RFC 4231 test case 2.
    assert_eq!(
        signature(b"Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert!(!verify_signature(b"Jefe", b"x", "sha256=zz"));
    assert!(!verify_signature(b"Jefe", b"x", "md5=00"));
}

#[test]
fn slack_payload_exact_blocks() {
    let body = slack_body(&message());
    let expected = json!({
        "text": "[High] DELETE Deployment payments-prod/api: held for approval (engineering, tier 2 OnCall)",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Approval needed: DELETE Deployment payments-prod/api", "emoji": false}},
            {"type": "section", "text": {"type": "mrkdwn", "text":
                "*Why*\n• deleting a production workload &lt;api&gt; &amp; its pods\n*Requester says:* decommission\n*Ticket:* OPS-42"}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": "*Risk*\nHigh"},
                {"type": "mrkdwn", "text": "*Class*\ndestructive"},
                {"type": "mrkdwn", "text": "*Requester*\ndana"},
                {"type": "mrkdwn", "text": "*Route*\nengineering · tier 2 (OnCall)"},
                {"type": "mrkdwn", "text": "*Cost*\n-120.00 USD/month"}
            ]},
            {"type": "section", "text": {"type": "mrkdwn", "text": "```\n-replicas: 3\n+replicas: 0\n```"}},
            {"type": "section", "text": {"type": "mrkdwn", "text":
                "*Deadline:* <!date^1767225720^{date_short_pretty} {time}|2026-01-01T00:02:00Z> (then it escalates)"}},
            {"type": "section", "text": {"type": "mrkdwn", "text":
                "*Approve:* `kubectl signoff approve -n payments-prod ar-3f9c`\n*Details:* `kubectl get approvalrequest -n payments-prod ar-3f9c -o yaml`"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "signoff · payments-prod/ar-3f9c · for user/erin"}]}
        ]
    });
    assert_eq!(body, expected);
}

#[test]
fn slack_expired_has_no_approve_command_and_respects_limits() {
    let mut ar = request();
    ar.spec.diff = Some("x".repeat(5000));
    let m = Message::from_request(
        &ar,
        MessageKind::Expired,
        "engineering",
        4,
        "Admin",
        Recipient::Team("platform".into()),
        "k",
        deadline(),
    );
    let body = slack_body(&m);
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["text"]["text"], "Expired, nobody approved: DELETE Deployment payments-prod/api");
    assert!(!body.to_string().contains("signoff approve"));
    for b in blocks {
        if let Some(t) = b["text"]["text"].as_str() {
            assert!(t.chars().count() <= 3000, "block text over Slack's limit: {}", t.len());
        }
    }
}

#[test]
fn pagerduty_trigger_exact() {
    let body = pagerduty_body(&message(), "R0UTING");
    let expected = json!({
        "routing_key": "R0UTING",
        "event_action": "trigger",
        "dedup_key": "ar-3f9c/engineering/1/erin",
        "client": "signoff",
        "payload": {
            "summary": "[High] DELETE Deployment payments-prod/api: held for approval (engineering, tier 2 OnCall)",
            "source": "approvalrequest/payments-prod/ar-3f9c",
            "severity": "critical",
            "component": "Deployment",
            "group": "engineering",
            "class": "destructive",
            "custom_details": {
                "request": "payments-prod/ar-3f9c",
                "kind": "Escalation",
                "route": "engineering",
                "tier": 1,
                "tierName": "OnCall",
                "recipient": "user/erin",
                "requester": "dana",
                "action": "DELETE Deployment payments-prod/api",
                "risk": "High",
                "actionClass": "destructive",
                "reasons": ["deleting a production workload <api> & its pods"],
                "deadline": "2026-01-01T00:02:00Z",
                "approveCommand": "kubectl signoff approve -n payments-prod ar-3f9c",
                "showCommand": "kubectl get approvalrequest -n payments-prod ar-3f9c -o yaml",
                "costDelta": "-120.00 USD/month",
                "ticket": "OPS-42",
                "context": "decommission",
                "diff": "-replicas: 3\n+replicas: 0"
            }
        }
    });
    assert_eq!(body, expected);
    assert_eq!(pagerduty_severity(Risk::Medium), "warning");
    assert_eq!(pagerduty_severity(Risk::Low), "info");
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let p = RetryPolicy {
        max_attempts: 6,
        initial_delay: Duration::from_millis(100),
        factor: 2,
        max_delay: Duration::from_millis(500),
        attempt_timeout: Duration::from_secs(1),
    };
    let delays: Vec<u128> = (1..=6).map(|a| p.delay_after(a).as_millis()).collect();
    assert_eq!(delays, [100, 200, 400, 500, 500, 500]);
    assert_eq!(p.worst_case(), Duration::from_millis(100 + 200 + 400 + 500 + 500) + Duration::from_secs(6));
    let huge = RetryPolicy { max_delay: Duration::from_secs(3600), ..p };
    assert_eq!(huge.delay_after(u32::MAX), Duration::from_secs(3600));
}

#[test]
fn status_classification() {
    assert_eq!(outcome_of(200), AttemptOutcome::Delivered);
    assert_eq!(outcome_of(202), AttemptOutcome::Delivered);
    assert_eq!(outcome_of(429), AttemptOutcome::Retry);
    assert_eq!(outcome_of(408), AttemptOutcome::Retry);
    assert_eq!(outcome_of(503), AttemptOutcome::Retry);
    assert_eq!(outcome_of(400), AttemptOutcome::Fail);
    assert_eq!(outcome_of(404), AttemptOutcome::Fail);
    assert_eq!(outcome_of(301), AttemptOutcome::Fail);
}

fn secrets(entries: &[(&str, &str, &str)]) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    for (name, key, value) in entries {
        out.entry(name.to_string()).or_default().insert(key.to_string(), value.as_bytes().to_vec());
    }
    out
}

fn key_ref(name: &str, key: &str) -> Option<SecretKeyRef> {
    Some(SecretKeyRef { name: name.into(), key: key.into() })
}

#[test]
fn contacts_resolve_to_targets() {
    let s = secrets(&[
        ("hooks", "url", "https://hooks.slack.com/services/T/B/X\n"),
        ("hooks", "hmac", "k"),
        ("pd", "key", "R"),
    ]);
    let webhook = Contact {
        kind: ContactKind::Webhook,
        url: Some("https://example.com/hook".into()),
        url_secret_ref: None,
        signing_secret_ref: key_ref("hooks", "hmac"),
        routing_key_secret_ref: None,
        signature_header: None,
    };
    assert_eq!(
        Target::from_contact(&webhook, "signoff", &s).unwrap(),
        Target::webhook("https://example.com/hook", Some(b"k".to_vec()))
    );
    let slack = Contact {
        kind: ContactKind::Slack,
        url: None,
        url_secret_ref: key_ref("hooks", "url"),
        signing_secret_ref: None,
        routing_key_secret_ref: None,
        signature_header: None,
    };
    let t = Target::from_contact(&slack, "signoff", &s).unwrap();
    assert_eq!(t, Target::Slack { url: "https://hooks.slack.com/services/T/B/X".into() });
    assert_eq!(format!("{t:?}"), "Slack { url: \"https://hooks.slack.com/…\" }");
    let pd = Contact {
        kind: ContactKind::PagerDuty,
        url: None,
        url_secret_ref: None,
        signing_secret_ref: None,
        routing_key_secret_ref: key_ref("pd", "key"),
        signature_header: None,
    };
    assert_eq!(
        Target::from_contact(&pd, "signoff", &s).unwrap(),
        Target::PagerDuty { url: PAGERDUTY_EVENTS_URL.into(), routing_key: "R".into() }
    );
}

#[test]
fn unresolvable_contacts_are_clear_errors() {
    let s = secrets(&[("hooks", "url", "https://x/y"), ("hooks", "empty", " ")]);
    let contact = |kind, url: Option<&str>, url_ref, routing| Contact {
        kind,
        url: url.map(String::from),
        url_secret_ref: url_ref,
        signing_secret_ref: None,
        routing_key_secret_ref: routing,
        signature_header: None,
    };
    let err = |c: Contact| Target::from_contact(&c, "signoff", &s).unwrap_err().to_string();
    assert_eq!(
        err(contact(ContactKind::Slack, None, key_ref("missing", "url"), None)),
        "Secret signoff/missing not found (referenced by a Slack contact)"
    );
    assert_eq!(
        err(contact(ContactKind::Slack, None, key_ref("hooks", "nope"), None)),
        "Secret signoff/hooks has no key \"nope\" (referenced by a Slack contact)"
    );
    assert_eq!(
        err(contact(ContactKind::PagerDuty, None, None, key_ref("hooks", "empty"))),
        "Secret signoff/hooks key \"empty\" is empty or not UTF-8 (referenced by a PagerDuty contact)"
    );
    assert_eq!(
        err(contact(ContactKind::Webhook, None, None, None)),
        "Webhook contact has neither url nor urlSecretRef"
    );
    assert_eq!(err(contact(ContactKind::PagerDuty, None, None, None)), "PagerDuty contact has no routingKeySecretRef");
    assert_eq!(
        err(contact(ContactKind::Webhook, Some("ftp://h/secret"), None, None)),
        "Webhook contact URL is not http(s): ftp://h/…"
    );
}

#[test]
fn urls_are_redacted() {
    assert_eq!(redact_url("https://user:pw@hooks.slack.com/services/T/B/X?q=1"), "https://hooks.slack.com/…");
    assert_eq!(redact_url("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    assert_eq!(redact_url("nonsense"), "<invalid url>");
}

#[test]
fn record_maps_to_the_status_entry() {
    let at: Timestamp = "2026-01-01T00:00:05Z".parse().unwrap();
    let record =
        DeliveryRecord { sink: "Slack".into(), attempts: 3, result: DeliveryResult::Delivered, message: None, at };
    let n = record.to_notification(&message());
    assert_eq!(
        n,
        Notification {
            key: "ar-3f9c/engineering/1/erin".into(),
            route: "engineering".into(),
            tier: 1,
            recipient: "user/erin".into(),
            sink: "Slack".into(),
            attempts: 3,
            result: "Delivered".into(),
            message: None,
            at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at),
        }
    );
    let failed =
        DeliveryRecord::failed_before_sending("Webhook", "Secret signoff/x not found", at).to_notification(&message());
    assert_eq!(
        (failed.attempts, failed.result.as_str(), failed.message.as_deref()),
        (0, "Failed", Some("Secret signoff/x not found"))
    );
}

/// Deliveries cut to a budget end within it whatever the sink does (issue 23,
/// item 9): fewer attempts first, then a shorter one.
#[test]
fn a_retry_policy_cut_to_a_budget_ends_within_it() {
    let escalation = RetryPolicy {
        max_attempts: 3,
        initial_delay: Duration::from_millis(250),
        factor: 2,
        max_delay: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(2),
    };
    assert_eq!(escalation.within(Duration::from_secs(60)), escalation, "a long tier keeps every try");
    let two = escalation.within(Duration::from_secs(6));
    assert_eq!((two.max_attempts, two.attempt_timeout), (2, Duration::from_secs(2)));
    let one = escalation.within(Duration::from_millis(2250));
    assert_eq!((one.max_attempts, one.attempt_timeout), (1, Duration::from_secs(2)));
    let short = escalation.within(Duration::from_millis(800));
    assert_eq!((short.max_attempts, short.attempt_timeout), (1, Duration::from_millis(800)));
    assert_eq!(escalation.within(Duration::ZERO).attempt_timeout, Duration::from_millis(100), "one short try");
    for budget in [60_000, 6_000, 2_250, 800] {
        let cut = escalation.within(Duration::from_millis(budget));
        assert!(cut.worst_case() <= Duration::from_millis(budget), "{budget} ms: {cut:?}");
    }
}

/// Issue 18: a message that answers a page resolves its PagerDuty incident
/// (same dedup_key); Slack names the outcome, who decided and the comment.
#[test]
fn outcomes_resolve_pagerduty_and_name_the_decision_on_slack() {
    let mut msg = message();
    msg.kind = MessageKind::Approved;
    msg.resolves = Some("uid-1/security/0/user/bob".into());
    msg.key = "uid-1/security/0/user/bob/resolve".into();
    msg.outcome = Some(crate::notify::message::Outcome {
        phase: "Approved".into(),
        decided_by: vec!["carol".into()],
        comments: vec!["carol: <ok> & go".into()],
    });
    let pd = pagerduty_body(&msg, "R");
    assert_eq!(
        pd,
        serde_json::json!({"routing_key": "R", "event_action": "resolve", "dedup_key": "uid-1/security/0/user/bob"})
    );
    let slack = slack_body(&msg).to_string();
    assert!(slack.contains("Approved: "), "{slack}");
    assert!(slack.contains("*Approved by* carol") && slack.contains("> carol: &lt;ok&gt; &amp; go"), "{slack}");
    let body = webhook_body(&msg);
    assert_eq!((body["kind"].as_str(), body["outcome"]["decidedBy"][0].as_str()), (Some("Approved"), Some("carol")));
}

/// A contact may name the signature header: a Flux Receiver (generic-hmac)
/// reads `X-Signature: sha256=<hex>`.
#[test]
fn a_webhook_signs_in_the_header_its_contact_names() {
    let target = Target::Webhook {
        url: "http://127.0.0.1:9/hook".into(),
        signing_key: Some(b"k".to_vec()),
        signature_header: "X-Signature".into(),
    };
    let req = render(&target, &message());
    let value = req.header("X-Signature").expect("signed in X-Signature");
    assert!(verify_signature(b"k", &req.body, value));
    assert_eq!(req.header(SIGNATURE_HEADER), None, "only in the header asked for");
}

#[test]
fn messages_link_to_the_request_page_when_a_web_queue_is_configured() {
    let mut m = message();
    assert!(webhook_body(&m).get("url").is_none(), "no link without --ui-url");
    assert!(pagerduty_body(&m, "k").get("links").is_none(), "no links without --ui-url");
    m.url = Some(crate::ui::page::request_url("https://signoff.example/", &m.request));
    assert_eq!(m.url.as_deref(), Some("https://signoff.example/r/payments-prod/ar-3f9c"));
    assert_eq!(webhook_body(&m)["url"], "https://signoff.example/r/payments-prod/ar-3f9c");
    assert_eq!(pagerduty_body(&m, "k")["links"][0]["href"], "https://signoff.example/r/payments-prod/ar-3f9c");
    let slack = slack_body(&m).to_string();
    assert!(slack.contains("<https://signoff.example/r/payments-prod/ar-3f9c|Open the request in signoff>"), "{slack}");
}
