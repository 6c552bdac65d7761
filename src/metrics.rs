//! Prometheus metrics, served on the plain-HTTP health port at /metrics.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The media type of the OpenMetrics text exposition format 1.0.0.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

/// signoff's metrics.
pub struct Metrics {
    registry: Registry,
    reviews: Family<Labels, Counter>,
    decisions: Family<Labels, Counter>,
    policy_changes: Family<Labels, Counter>,
    latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("signoff");
        let reviews = Family::<Labels, Counter>::default();
        let decisions = Family::<Labels, Counter>::default();
        let policy_changes = Family::<Labels, Counter>::default();
        let latency = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register("admission_reviews", "AdmissionReviews answered, by result", reviews.clone());
        registry.register("gate_decisions", "Gate decisions on risky changes, by kind", decisions.clone());
        registry.register("admission_review_seconds", "Time to answer one AdmissionReview", latency.clone());
        registry.register(
            "policy_changes",
            "EscalationPolicy creates, updates and deletes, by action and whether they weakened the gate",
            policy_changes.clone(),
        );
        Metrics { registry, reviews, decisions, policy_changes, latency }
    }
}

impl Metrics {
    /// Count a review: allowed, denied or malformed.
    pub fn review(&self, result: &str) {
        self.reviews.get_or_create(&vec![("result".into(), result.into())]).inc();
    }
    /// Count a gate decision: held, admitted-approved, break-glass.
    pub fn decision(&self, kind: &str) {
        self.decisions.get_or_create(&vec![("decision".into(), kind.into())]).inc();
    }
    /// Count an EscalationPolicy change: created, updated or deleted; weakened or not.
    pub fn policy_change(&self, action: &str, weakened: bool) {
        let labels = vec![("action".into(), action.into()), ("weakened".into(), weakened.to_string())];
        self.policy_changes.get_or_create(&labels).inc();
    }
    pub fn observe_latency(&self, elapsed: Duration) {
        self.latency.observe(elapsed.as_secs_f64());
    }
    /// The OpenMetrics text exposition (served as [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
