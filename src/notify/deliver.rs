//! Sending rendered notifications over HTTP(S) with retries and exponential
//! backoff, one attempt timeout each, many targets at once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::message::Message;
use super::payload::{HttpRequest, render};
use super::target::{Target, redact_url};
use crate::crd::{Contact, Notification};

/// How hard to try one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, including the first; at least 1.
    pub max_attempts: u32,
    /// Wait before the second attempt.
    pub initial_delay: Duration,
    /// Each wait is the previous one times this factor.
    pub factor: u32,
    /// No wait is longer than this (a 429's `Retry-After` is capped by it too).
    pub max_delay: Duration,
    /// Time limit of one attempt: connect, send and read the response.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, waits of 1, 2, 4, 8 s (cap 30 s), 10 s per attempt: a sink that
    /// is down costs at most about 65 s, spent off the escalation path.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_delay: Duration::from_secs(1),
            factor: 2,
            max_delay: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based) before the next one:
    /// `initial * factor^(attempt-1)`, capped at `max_delay`.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let mult = u64::from(self.factor.max(1)).saturating_pow(exp);
        let nanos = self.initial_delay.as_nanos().saturating_mul(u128::from(mult));
        Duration::from_nanos(nanos.min(self.max_delay.as_nanos()).min(u128::from(u64::MAX)) as u64)
    }

    /// The longest a delivery can take when every attempt times out.
    pub fn worst_case(&self) -> Duration {
        let attempts = self.max_attempts.max(1);
        let waits: Duration = (1..attempts).map(|a| self.delay_after(a)).sum();
        waits + self.attempt_timeout * attempts
    }

    /// This policy, cut so that a delivery ends within `budget` whatever the
    /// sink does (every attempt timing out, every wait a capped `Retry-After`):
    /// fewer attempts first, then a shorter attempt (at least 100 ms). What is
    /// due at the end of the budget (the next tier) never waits for a dead sink.
    pub fn within(&self, budget: Duration) -> RetryPolicy {
        let longest = |p: &RetryPolicy| {
            let attempts = p.max_attempts.max(1);
            p.max_delay * (attempts - 1) + p.attempt_timeout * attempts
        };
        let mut cut = self.clone();
        while cut.max_attempts > 1 && longest(&cut) > budget {
            cut.max_attempts -= 1;
        }
        if longest(&cut) > budget {
            cut.max_attempts = 1;
            cut.attempt_timeout = budget.max(Duration::from_millis(100));
        }
        cut
    }
}

/// How a delivery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryResult {
    Delivered,
    /// An attempt failed and another will follow (only seen by an observer of
    /// [`Notifier::deliver_with`]).
    Retrying,
    Failed,
    /// Not sent on its own: held for a summary during a flood (notify::coalesce).
    Coalesced,
}

impl DeliveryResult {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryResult::Delivered => "Delivered",
            DeliveryResult::Retrying => "Retrying",
            DeliveryResult::Failed => "Failed",
            DeliveryResult::Coalesced => "Coalesced",
        }
    }
}

/// The outcome of delivering one message to one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// Webhook, Slack or PagerDuty.
    pub sink: String,
    /// Attempts made; 0 when the target could not even be resolved.
    pub attempts: u32,
    pub result: DeliveryResult,
    /// Why the last attempt failed (None when delivered).
    pub message: Option<String>,
    /// When the last attempt ended.
    pub at: Timestamp,
}

impl DeliveryRecord {
    /// A delivery that failed before any attempt (e.g. a missing Secret).
    pub fn failed_before_sending(sink: &str, why: impl Into<String>, at: Timestamp) -> DeliveryRecord {
        DeliveryRecord { sink: sink.into(), attempts: 0, result: DeliveryResult::Failed, message: Some(why.into()), at }
    }

    /// A delivery held for a flood's summary instead of being sent on its own.
    pub fn coalesced(contact: &Contact, why: impl Into<String>, at: Timestamp) -> DeliveryRecord {
        DeliveryRecord {
            sink: sink_name(contact).into(),
            attempts: 0,
            result: DeliveryResult::Coalesced,
            message: Some(why.into()),
            at,
        }
    }

    /// The status entry (`status.notifications[]`) for this delivery of `msg`.
    pub fn to_notification(&self, msg: &Message) -> Notification {
        Notification {
            key: msg.key.clone(),
            route: msg.route.clone(),
            tier: msg.tier,
            recipient: msg.recipient.to_string(),
            sink: self.sink.clone(),
            attempts: self.attempts,
            result: self.result.as_str().to_string(),
            message: self.message.clone(),
            at: Time(self.at),
        }
    }
}

/// What one attempt's HTTP status means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// 408, 429, 5xx: the receiver may accept it later.
    Retry,
    /// Any other status: retrying will not help.
    Fail,
}

/// 2xx delivers; 408, 429 and 5xx are retried; anything else fails at once.
pub fn outcome_of(status: u16) -> AttemptOutcome {
    match status {
        200..=299 => AttemptOutcome::Delivered,
        408 | 429 | 500..=599 => AttemptOutcome::Retry,
        _ => AttemptOutcome::Fail,
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Sends notifications. Cheap to clone; shares one connection pool.
#[derive(Clone)]
pub struct Notifier {
    client: HttpClient,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new()
    }
}

/// One attempt's outcome.
struct Attempt {
    outcome: AttemptOutcome,
    detail: String,
    retry_after: Option<Duration>,
}

impl Notifier {
    /// HTTPS with the system's root certificates (and plain HTTP). Without any
    /// system roots, HTTPS sinks fail with a certificate error (logged here).
    pub fn new() -> Notifier {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone())
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "notify: no system root certificates; HTTPS sinks will fail");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        Notifier::from_connector(builder.https_or_http().enable_http1().enable_http2().build())
    }

    /// HTTPS with a custom rustls configuration (private CAs, tests).
    pub fn with_tls_config(config: rustls::ClientConfig) -> Notifier {
        Notifier::from_connector(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .build(),
        )
    }

    fn from_connector(connector: HttpsConnector<HttpConnector>) -> Notifier {
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Notifier { client }
    }

    async fn attempt(&self, req: &HttpRequest, timeout: Duration) -> Attempt {
        let mut builder = hyper::Request::post(&req.url);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        let request = match builder.body(Full::new(Bytes::from(req.body.clone()))) {
            Ok(r) => r,
            Err(e) => {
                return Attempt {
                    outcome: AttemptOutcome::Fail,
                    detail: format!("invalid request to {}: {e}", redact_url(&req.url)),
                    retry_after: None,
                };
            }
        };
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            // Read (a little of) the body so the connection can be reused and the
            // receiver's complaint lands in status.
            let body =
                Limited::new(response.into_body(), 4096).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Attempt {
                outcome: AttemptOutcome::Retry,
                detail: format!("{}: no response within {timeout:?}", redact_url(&req.url)),
                retry_after: None,
            },
            Ok(Err(e)) => Attempt {
                outcome: AttemptOutcome::Retry,
                detail: format!("{}: {}", redact_url(&req.url), error_chain(&e)),
                retry_after: None,
            },
            Ok(Ok((status, retry_after, body))) => {
                let text = String::from_utf8_lossy(&body);
                let text = super::payload::truncate(text.trim(), 200);
                let detail = if text.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {text}") };
                Attempt { outcome: outcome_of(status), detail, retry_after }
            }
        }
    }

    /// Renders `msg` for `target` and sends it, retrying 408/429/5xx and
    /// connection errors with exponential backoff; other 4xx fail at once.
    pub async fn deliver(&self, target: &Target, msg: &Message, policy: &RetryPolicy) -> DeliveryRecord {
        self.deliver_with(target, msg, policy, |_| {}).await
    }

    /// [`Notifier::deliver`], calling `on_attempt` after every attempt with the
    /// record so far (result Retrying while another attempt will follow), so a
    /// caller can record each attempt as it happens.
    pub async fn deliver_with(
        &self,
        target: &Target,
        msg: &Message,
        policy: &RetryPolicy,
        mut on_attempt: impl FnMut(&DeliveryRecord) + Send,
    ) -> DeliveryRecord {
        let req = render(target, msg);
        let max = policy.max_attempts.max(1);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let outcome = self.attempt(&req, policy.attempt_timeout).await;
            let at = Timestamp::now();
            let record =
                |result, message| DeliveryRecord { sink: target.sink().to_string(), attempts, result, message, at };
            let done = match outcome.outcome {
                AttemptOutcome::Delivered => record(DeliveryResult::Delivered, None),
                AttemptOutcome::Fail => {
                    tracing::warn!(key = %msg.key, sink = target.sink(), attempts, error = %outcome.detail, "notification rejected");
                    record(DeliveryResult::Failed, Some(outcome.detail))
                }
                AttemptOutcome::Retry if attempts >= max => {
                    tracing::warn!(key = %msg.key, sink = target.sink(), attempts, error = %outcome.detail, "notification failed; giving up");
                    let why = format!("gave up after {attempts} attempts: {}", outcome.detail);
                    record(DeliveryResult::Failed, Some(why))
                }
                AttemptOutcome::Retry => {
                    on_attempt(&record(DeliveryResult::Retrying, Some(outcome.detail.clone())));
                    let backoff = policy.delay_after(attempts);
                    let wait = outcome.retry_after.map_or(backoff, |ra| ra.max(backoff)).min(policy.max_delay);
                    tracing::debug!(key = %msg.key, sink = target.sink(), attempts, ?wait, error = %outcome.detail, "notification failed; retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            on_attempt(&done);
            return done;
        }
    }

    /// Delivers every (target, message) pair, at most `concurrency` at a time, so
    /// one slow or dead sink never holds up the others. Records come back in the
    /// order of `jobs`.
    pub async fn deliver_all(
        &self,
        jobs: Vec<(Target, Message)>,
        policy: &RetryPolicy,
        concurrency: usize,
    ) -> Vec<DeliveryRecord> {
        futures::stream::iter(jobs)
            .map(|(target, msg)| async move { self.deliver(&target, &msg, policy).await })
            .buffered(concurrency.max(1))
            .collect()
            .await
    }

    /// Resolves `contact` (reading its Secrets from `namespace`, signoff's own) and
    /// delivers. A contact that cannot be resolved is a Failed record with 0 attempts.
    pub async fn deliver_contact(
        &self,
        client: &kube::Client,
        namespace: &str,
        contact: &Contact,
        msg: &Message,
        policy: &RetryPolicy,
    ) -> DeliveryRecord {
        match Target::resolve(client, namespace, contact).await {
            Ok(target) => self.deliver(&target, msg, policy).await,
            Err(e) => {
                tracing::warn!(key = %msg.key, error = %e, "notification not sent: contact unresolved");
                DeliveryRecord::failed_before_sending(sink_name(contact), e.to_string(), Timestamp::now())
            }
        }
    }
}

/// The sink a contact delivers to, as status records name it.
fn sink_name(contact: &Contact) -> &'static str {
    match contact.kind {
        crate::crd::ContactKind::Webhook => "Webhook",
        crate::crd::ContactKind::Slack => "Slack",
        crate::crd::ContactKind::PagerDuty => "PagerDuty",
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
