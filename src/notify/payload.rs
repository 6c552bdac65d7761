//! Rendering a [`Message`] for each sink: pure functions from data to an HTTP
//! request (URL, headers, body). No I/O; the bodies are unit-tested byte for byte.

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use serde_json::{Value, json};
use sha2::Sha256;

use super::message::{Message, MessageKind};
use super::target::Target;
use crate::crd::Risk;

/// Header carrying `sha256=<hex HMAC-SHA256(body, signing key)>` on generic webhooks.
pub const SIGNATURE_HEADER: &str = "X-Signoff-Signature";
/// The standard idempotency header (IETF draft `Idempotency-Key`).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// The same key under signoff's own name, for receivers that strip the standard one.
pub const SIGNOFF_IDEMPOTENCY_HEADER: &str = "X-Signoff-Idempotency-Key";
/// The PagerDuty Events API v2 endpoint used when a contact sets no URL.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// `User-Agent` of every request signoff sends.
pub const USER_AGENT: &str = concat!("signoff/", env!("CARGO_PKG_VERSION"));

/// One HTTP POST, fully rendered.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for HttpRequest {
    // The URL of a Slack or generic webhook is itself a credential: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("url", &super::target::redact_url(&self.url))
            .field("headers", &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl HttpRequest {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256=<hex HMAC-SHA256(body, key)>`, the value of [`SIGNATURE_HEADER`].
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// Checks a [`SIGNATURE_HEADER`] value in constant time (for receivers and tests).
pub fn verify_signature(key: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else { return false };
    let Some(sig) = unhex(hex_sig) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The body a generic webhook receives: the message, with the full packet.
pub fn webhook_body(msg: &Message) -> Value {
    serde_json::to_value(msg).expect("a Message always serializes")
}

/// PagerDuty severity for a risk.
pub fn pagerduty_severity(risk: Risk) -> &'static str {
    match risk {
        Risk::High => "critical",
        Risk::Medium => "warning",
        Risk::Low => "info",
    }
}

/// A PagerDuty Events API v2 event: `resolve` of the page a message answers
/// (its `resolves` key is the page's `dedup_key`), else a `trigger`.
pub fn pagerduty_body(msg: &Message, routing_key: &str) -> Value {
    if let Some(page) = &msg.resolves {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": truncate(page, 255),
        });
    }
    let mut details = json!({
        "request": format!("{}/{}", msg.request.namespace, msg.request.name),
        "kind": msg.kind,
        "route": msg.route,
        "tier": msg.tier,
        "tierName": msg.tier_name,
        "recipient": msg.recipient.to_string(),
        "requester": msg.requester,
        "action": msg.action.headline(),
        "risk": msg.risk,
        "actionClass": msg.action_class,
        "reasons": msg.reasons,
        "deadline": msg.deadline.to_string(),
        "approveCommand": msg.approve_command,
        "showCommand": msg.show_command,
    });
    let extra = details.as_object_mut().expect("an object");
    if let Some(cost) = &msg.cost_delta {
        extra.insert("costDelta".into(), json!(cost));
    }
    if let Some(ticket) = &msg.ticket {
        extra.insert("ticket".into(), json!(ticket));
    }
    if let Some(reason) = &msg.context_reason {
        extra.insert("context".into(), json!(reason));
    }
    if let Some(gitops) = &msg.gitops {
        extra.insert("gitops".into(), json!(gitops));
    }
    if let Some(diff) = &msg.diff_excerpt {
        extra.insert("diff".into(), json!(diff));
    }
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": truncate(&msg.key, 255),
        "client": "signoff",
        "payload": {
            "summary": truncate(&msg.summary(), 1024),
            "source": format!("approvalrequest/{}/{}", msg.request.namespace, msg.request.name),
            "severity": pagerduty_severity(msg.risk),
            "component": msg.action.kind,
            "group": msg.route,
            "class": msg.action_class,
            "custom_details": details,
        }
    });
    if let Some(url) = &msg.url {
        body["links"] = json!([{"href": url, "text": "Open the request"}]);
    }
    body
}

/// Escapes the three characters Slack mrkdwn treats as control characters.
pub fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Cuts `text` to at most `max` characters, ending in `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn mrkdwn(text: String) -> Value {
    json!({"type": "mrkdwn", "text": text})
}

fn section(text: String) -> Value {
    // Slack limits a section's text to 3000 characters.
    json!({"type": "section", "text": mrkdwn(truncate(&text, 3000))})
}

/// Slack's date formatting with a plain fallback, e.g.
/// `<!date^1767225600^{date_short_pretty} {time}|2026-01-01T00:00:00Z>`.
fn slack_date(ts: Timestamp) -> String {
    format!("<!date^{}^{{date_short_pretty}} {{time}}|{ts}>", ts.as_second())
}

/// A Slack incoming-webhook payload: readable Block Kit blocks with the action,
/// the reasons, risk and class, a diff excerpt, the deadline and the approve command.
pub fn slack_body(msg: &Message) -> Value {
    let headline = msg.action.headline();
    let title = match msg.kind {
        MessageKind::Escalation => format!("Approval needed: {headline}"),
        MessageKind::Expired => format!("Expired, nobody approved: {headline}"),
        MessageKind::Approved => format!("Approved: {headline}"),
        MessageKind::Rejected => format!("Rejected: {headline}"),
        MessageKind::Superseded => format!("Superseded, no decision needed: {headline}"),
        MessageKind::Summary => {
            format!("{} more requests from {} wait for a decision", msg.reasons.len(), msg.requester)
        }
    };
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": truncate(&title, 150), "emoji": false}
    })];
    if let Some(outcome) = &msg.outcome {
        let mut text = match outcome.decided_by.as_slice() {
            [] => format!("*{}*: nobody approved in time; the change was never applied", outcome.phase),
            by => format!("*{} by* {}", outcome.phase, slack_escape(&by.join(", "))),
        };
        for comment in &outcome.comments {
            text.push_str(&format!("\n> {}", slack_escape(comment)));
        }
        blocks.push(section(text));
    }

    let mut why = String::from("*Why*");
    for reason in &msg.reasons {
        why.push_str(&format!("\n• {}", slack_escape(reason)));
    }
    if let Some(context) = &msg.context_reason {
        why.push_str(&format!("\n*Requester says:* {}", slack_escape(context)));
    }
    if let Some(ticket) = &msg.ticket {
        why.push_str(&format!("\n*Ticket:* {}", slack_escape(ticket)));
    }
    if let Some(gitops) = &msg.gitops {
        why.push_str(&format!("\n*From:* {}", slack_escape(gitops)));
    }
    blocks.push(section(why));

    let mut fields = vec![
        mrkdwn(format!("*Risk*\n{}", msg.risk.as_str())),
        mrkdwn(format!("*Class*\n{}", msg.action_class.as_str())),
        mrkdwn(format!("*Requester*\n{}", slack_escape(&msg.requester))),
        mrkdwn(format!(
            "*Route*\n{} · tier {} ({})",
            slack_escape(&msg.route),
            msg.tier + 1,
            slack_escape(&msg.tier_name)
        )),
    ];
    if let Some(cost) = &msg.cost_delta {
        fields.push(mrkdwn(format!("*Cost*\n{}", slack_escape(cost))));
    }
    blocks.push(json!({"type": "section", "fields": fields}));

    if let Some(diff) = &msg.diff_excerpt {
        // Leave room for the fences inside Slack's 3000-character limit.
        blocks.push(section(format!("```\n{}\n```", truncate(&slack_escape(diff), 2900))));
    }

    let deadline = match msg.kind {
        MessageKind::Escalation => format!("*Deadline:* {} (then it escalates)", slack_date(msg.deadline)),
        _ => format!("*Deadline:* {}", slack_date(msg.deadline)),
    };
    blocks.push(section(deadline));
    if let Some(url) = &msg.url {
        // A link Slack opens: the request's page, where the approver decides.
        blocks.push(section(format!("<{url}|Open the request in signoff>")));
    }
    if msg.kind == MessageKind::Escalation {
        blocks.push(section(format!(
            "*Approve:* `{}`\n*Details:* `{}`",
            slack_escape(&msg.approve_command),
            slack_escape(&msg.show_command)
        )));
    } else {
        blocks.push(section(format!("*Details:* `{}`", slack_escape(&msg.show_command))));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [mrkdwn(format!(
            "signoff · {}/{} · for {}",
            slack_escape(&msg.request.namespace),
            slack_escape(&msg.request.name),
            slack_escape(&msg.recipient.to_string())
        ))]
    }));
    json!({"text": truncate(&msg.summary(), 3000), "blocks": blocks})
}

/// Renders the HTTP request that delivers `msg` to `target`.
pub fn render(target: &Target, msg: &Message) -> HttpRequest {
    let mut headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("User-Agent".to_string(), USER_AGENT.to_string()),
    ];
    let (url, body) = match target {
        Target::Webhook { url, signing_key, signature_header } => {
            let body = serde_json::to_vec(&webhook_body(msg)).expect("JSON serializes");
            headers.push((IDEMPOTENCY_HEADER.to_string(), msg.key.clone()));
            headers.push((SIGNOFF_IDEMPOTENCY_HEADER.to_string(), msg.key.clone()));
            if let Some(key) = signing_key {
                headers.push((signature_header.clone(), signature(key, &body)));
            }
            (url.clone(), body)
        }
        Target::Slack { url } => (url.clone(), serde_json::to_vec(&slack_body(msg)).expect("JSON serializes")),
        Target::PagerDuty { url, routing_key } => {
            (url.clone(), serde_json::to_vec(&pagerduty_body(msg, routing_key)).expect("JSON serializes"))
        }
    };
    HttpRequest { url, headers, body }
}
