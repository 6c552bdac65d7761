//! Prometheus metrics, served on the plain-HTTP health port at /metrics in the
//! OpenMetrics text format. Every label value is snake_case. The chart's
//! dashboard and alerts query only what is registered here (tests/metrics.rs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::{ApprovalRequestStatus, Phase};

/// The media type of the OpenMetrics text exposition format 1.0.0.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs.into_iter().map(|(k, v)| (k.to_string(), snake(v))).collect()
}

/// `OnCall` -> `on_call`, `PagerDuty` -> `pager_duty`, `break-glass` -> `break_glass`.
pub fn snake(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    let mut previous_lower = false;
    for c in value.chars() {
        if c.is_ascii_uppercase() {
            if previous_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            previous_lower = false;
        } else if c == '-' || c == ' ' || c == '/' || c == '.' {
            out.push('_');
            previous_lower = false;
        } else {
            out.push(c);
            previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        }
    }
    out
}

/// signoff's metrics.
pub struct Metrics {
    registry: Registry,
    reviews: Family<Labels, Counter>,
    decisions: Family<Labels, Counter>,
    policy_changes: Family<Labels, Counter>,
    review_seconds: Histograms,
    rule_seconds: Histogram,
    decision_seconds: Histograms,
    notifications: Family<Labels, Counter>,
    escalations: Family<Labels, Counter>,
    skips: Family<Labels, Counter>,
    expiries: Family<Labels, Counter>,
    leader: Gauge,
    lateness: Histogram,
    backlog: Arc<Backlog>,
    requests: Arc<Requests>,
    certificate: Arc<Certificate>,
}

fn review_histogram() -> Histogram {
    // 100 µs .. 3.3 s: a review answers in milliseconds; the API server gives up at 10 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

fn decision_histogram() -> Histogram {
    // 5 s .. about 7.6 days: a person answers in minutes to days.
    Histogram::new(exponential_buckets(5.0, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(Process));
        let requests = Arc::new(Requests::default());
        let certificate = Arc::new(Certificate::default());
        let backlog = Arc::new(Backlog::default());
        let metrics = Metrics {
            registry: Registry::default(),
            reviews: Family::default(),
            decisions: Family::default(),
            policy_changes: Family::default(),
            review_seconds: Family::new_with_constructor(review_histogram),
            rule_seconds: Histogram::new(exponential_buckets(0.00001, 2.0, 16)),
            decision_seconds: Family::new_with_constructor(decision_histogram),
            notifications: Family::default(),
            escalations: Family::default(),
            skips: Family::default(),
            expiries: Family::default(),
            leader: Gauge::default(),
            // 10 ms .. about 80 s.
            lateness: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            backlog: backlog.clone(),
            requests: requests.clone(),
            certificate: certificate.clone(),
        };
        let r = root.sub_registry_with_prefix("signoff");
        r.register("admission_reviews", "AdmissionReviews answered, by result", metrics.reviews.clone());
        r.register("gate_decisions", "Gate decisions on risky changes, by kind", metrics.decisions.clone());
        r.register(
            "admission_review_seconds",
            "Time to answer one AdmissionReview, by operation, kind (lowercase) and decision",
            metrics.review_seconds.clone(),
        );
        r.register(
            "rule_evaluation_seconds",
            "Time to evaluate the EscalationPolicies' rules for one change",
            metrics.rule_seconds.clone(),
        );
        r.register(
            "policy_changes",
            "EscalationPolicy creates, updates and deletes, by action and whether they weakened the gate",
            metrics.policy_changes.clone(),
        );
        r.register(
            "decision_seconds",
            "Time from hold to decision, by route and outcome (approved, rejected, expired, superseded)",
            metrics.decision_seconds.clone(),
        );
        r.register(
            "notifications",
            "Notification deliveries, by sink and result (delivered, retrying, failed, coalesced)",
            metrics.notifications.clone(),
        );
        r.register("escalations", "Tiers reached by escalation, by route and tier", metrics.escalations.clone());
        r.register(
            "escalation_skips",
            "People or whole tiers skipped, by route and reason (away, quiet_hours, empty_tier)",
            metrics.skips.clone(),
        );
        r.register("expiries", "Requests that expired with nobody approving, by route", metrics.expiries.clone());
        r.register("leader", "1 when this replica holds the Lease and escalates", metrics.leader.clone());
        r.register(
            "escalation_lateness_seconds",
            "How late an escalation step ran after it fell due (on the leader)",
            metrics.lateness.clone(),
        );
        r.register_collector(Box::new(backlog));
        r.register_collector(Box::new(requests));
        r.register_collector(Box::new(certificate));
        Metrics { registry: root, ..metrics }
    }
}

impl Metrics {
    /// Count a review: allowed, denied or malformed.
    pub fn review(&self, result: &str) {
        self.reviews.get_or_create(&labels([("result", result)])).inc();
    }
    /// Count a gate decision: held, admitted_approved, break_glass.
    pub fn decision(&self, kind: &str) {
        self.decisions.get_or_create(&labels([("decision", kind)])).inc();
    }
    /// Count an EscalationPolicy change: created, updated or deleted; weakened or not.
    pub fn policy_change(&self, action: &str, weakened: bool) {
        let weakened = weakened.to_string();
        self.policy_changes.get_or_create(&labels([("action", action), ("weakened", &weakened)])).inc();
    }
    /// One review's time, by operation (CREATE), kind (Deployment) and the
    /// decision its audit line gives (held, admitted_low_risk, ...).
    pub fn observe_review(&self, operation: &str, kind: &str, decision: &str, elapsed: Duration) {
        let (operation, kind) = (operation.to_ascii_lowercase(), kind.to_ascii_lowercase());
        let labels = labels([("operation", &operation), ("kind", &kind), ("decision", decision)]);
        self.review_seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }
    pub fn observe_rules(&self, elapsed: Duration) {
        self.rule_seconds.observe(elapsed.as_secs_f64());
    }
    /// One notification delivery's result (Webhook, Delivered).
    pub fn notification(&self, sink: &str, result: &str) {
        self.notifications.get_or_create(&labels([("sink", sink), ("result", result)])).inc();
    }
    /// What one status write of a request changed: tiers reached, skips,
    /// decisions and expiries. Counted by the leader after the write succeeded.
    pub fn request_progressed(
        &self,
        old: Option<&ApprovalRequestStatus>,
        new: &ApprovalRequestStatus,
        held_for: Duration,
    ) {
        for c in changes(old, new) {
            match c {
                Change::Escalated { route, tier } => {
                    self.escalations.get_or_create(&labels([("route", route), ("tier", tier)])).inc();
                }
                Change::Skipped { route, reason } => {
                    self.skips.get_or_create(&labels([("route", route), ("reason", reason)])).inc();
                }
                Change::Decided { route, outcome } => {
                    self.decision_seconds
                        .get_or_create(&labels([("route", route), ("outcome", outcome)]))
                        .observe(held_for.as_secs_f64());
                    if outcome == "Expired" {
                        self.expiries.get_or_create(&labels([("route", route)])).inc();
                    }
                }
            }
        }
    }
    /// How late one escalation step ran.
    pub fn observe_lateness(&self, late: Duration) {
        self.lateness.observe(late.as_secs_f64());
    }
    /// Where the backlog is counted at each scrape: steps overdue at `now`
    /// (reported only while this replica leads).
    pub fn watch_backlog(self: &Arc<Self>, overdue: impl Fn(jiff::Timestamp) -> usize + Send + Sync + 'static) {
        let leading = Arc::downgrade(self);
        let _ = self.backlog.0.set(Box::new(move |now| {
            let leads = leading.upgrade().is_some_and(|m| m.leader.get() == 1);
            leads.then(|| overdue(now))
        }));
    }
    /// This replica leads (1) until the returned guard is dropped; requests are
    /// counted only while it leads.
    pub fn leading(self: &Arc<Self>) -> Leading {
        self.leader.set(1);
        Leading(self.clone())
    }
    /// A request as its last status write left it (the leader's view).
    pub fn request_seen(&self, namespace: &str, name: &str, status: &ApprovalRequestStatus) {
        let deadline = status.deadline.as_ref().map(|t| t.0.as_second());
        let lanes = status
            .lanes
            .iter()
            .map(|l| RequestLane {
                phase: snake(&format!("{:?}", status.phase)),
                route: snake(&l.route),
                tier: snake(l.tier_name.as_deref().unwrap_or("none")),
                // Someone outside the cluster was told: a delivered page or message.
                notified: status
                    .notifications
                    .iter()
                    .any(|n| n.route == l.route && n.sink != "Event" && n.result == "Delivered"),
                deadline,
            })
            .collect();
        self.requests.lock().insert((namespace.to_string(), name.to_string()), lanes);
    }
    /// A request deleted.
    pub fn request_gone(&self, namespace: &str, name: &str) {
        self.requests.lock().remove(&(namespace.to_string(), name.to_string()));
    }
    /// When the serving certificate expires, read from `store` at each scrape.
    pub fn watch_certificate(&self, store: Arc<crate::tls::CertStore>) {
        let _ = self.certificate.0.set(store);
    }
    /// The OpenMetrics text exposition (served as [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Holds `signoff_leader` at 1; dropping it (the leader's work aborted) sets 0
/// and forgets the requests counted.
pub struct Leading(Arc<Metrics>);

impl Drop for Leading {
    fn drop(&mut self) {
        self.0.leader.set(0);
        self.0.requests.lock().clear();
    }
}

/// What a status write changed, for counting.
#[derive(Debug, PartialEq, Eq)]
pub enum Change<'a> {
    Escalated { route: &'a str, tier: &'a str },
    Skipped { route: &'a str, reason: &'static str },
    Decided { route: &'a str, outcome: &'static str },
}

/// The changes from `old` to `new`, pure: lanes that reached a new tier (or
/// started), skips added, lanes of a request that left Pending.
pub fn changes<'a>(old: Option<&'a ApprovalRequestStatus>, new: &'a ApprovalRequestStatus) -> Vec<Change<'a>> {
    let mut out = Vec::new();
    let old_lane = |route: &str| old.and_then(|o| o.lanes.iter().find(|l| l.route == route));
    for lane in &new.lanes {
        let moved = match old_lane(&lane.route) {
            Some(before) => before.tier != lane.tier || before.tier_name.is_none(),
            None => true,
        };
        if moved && let Some(tier) = lane.tier_name.as_deref() {
            out.push(Change::Escalated { route: &lane.route, tier });
        }
    }
    let known = old.map_or(0, |o| o.skips.len());
    for skip in new.skips.iter().skip(known) {
        let reason = match skip.setting.as_deref() {
            Some(s) if s.contains("spec.away") => "away",
            Some(s) if s.contains("spec.quietHours") => "quiet_hours",
            Some(_) => "other",
            None => "empty_tier",
        };
        out.push(Change::Skipped { route: &skip.route, reason });
    }
    let was_pending = old.is_none_or(|o| o.phase == Phase::Pending);
    let outcome = match new.phase {
        Phase::Pending => None,
        Phase::Approved => Some("Approved"),
        Phase::Rejected => Some("Rejected"),
        Phase::Expired => Some("Expired"),
        Phase::Superseded => Some("Superseded"),
    };
    if let Some(outcome) = outcome.filter(|_| was_pending) {
        out.extend(new.lanes.iter().map(|l| Change::Decided { route: &l.route, outcome }));
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct RequestLane {
    phase: String,
    route: String,
    tier: String,
    notified: bool,
    /// When the request expires if nobody answers (Unix seconds).
    deadline: Option<i64>,
}

/// A pending request is "expiring" in `signoff_approval_requests_unnotified`
/// when its deadline is this close.
pub const EXPIRING_WITHIN: Duration = Duration::from_secs(3600);

/// Every request's lanes as the leader last wrote them: `signoff_approval_requests`.
#[derive(Debug, Default)]
struct Requests(Mutex<HashMap<(String, String), Vec<RequestLane>>>);

impl Requests {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Vec<RequestLane>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Collector for Requests {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        use std::collections::BTreeMap;
        let now = jiff::Timestamp::now().as_second();
        let mut by_tier: BTreeMap<(&str, &str, &str), i64> = BTreeMap::new();
        let mut unnotified: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        let requests = self.lock();
        for lane in requests.values().flatten() {
            *by_tier.entry((&lane.phase, &lane.route, &lane.tier)).or_default() += 1;
            if lane.phase == "pending" && !lane.notified {
                let soon = lane.deadline.is_some_and(|d| d - now < EXPIRING_WITHIN.as_secs() as i64);
                *unnotified.entry((&lane.route, if soon { "true" } else { "false" })).or_default() += 1;
            }
        }
        let mut family = encoder.encode_descriptor(
            "approval_requests",
            "Approval requests by phase, route and tier, one per lane (on the leader)",
            None,
            MetricType::Gauge,
        )?;
        for ((phase, route, tier), n) in by_tier {
            ConstGauge::new(n).encode(family.encode_family(&[
                ("phase", phase),
                ("route", route),
                ("tier", tier),
            ])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "approval_requests_unnotified",
            "Pending requests (lanes) nobody outside the cluster was told of, by route; \
             expiring=\"true\" when the request expires within the hour (on the leader)",
            None,
            MetricType::Gauge,
        )?;
        for ((route, expiring), n) in unnotified {
            ConstGauge::new(n).encode(family.encode_family(&[("route", route), ("expiring", expiring)])?)?;
        }
        Ok(())
    }
}

type Overdue = Box<dyn Fn(jiff::Timestamp) -> Option<usize> + Send + Sync>;

/// Escalation steps overdue now: `signoff_escalation_backlog`.
#[derive(Default)]
struct Backlog(OnceLock<Overdue>);

impl std::fmt::Debug for Backlog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Backlog")
    }
}

impl Collector for Backlog {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let gauge = encoder.encode_descriptor(
            "escalation_backlog",
            "Escalation steps overdue by more than a second: the leader steps fewer requests than fall due",
            None,
            MetricType::Gauge,
        )?;
        let overdue = self.0.get().and_then(|f| f(jiff::Timestamp::now())).unwrap_or(0);
        ConstGauge::new(overdue as i64).encode(gauge)
    }
}

/// The serving certificate's expiry: `signoff_certificate_expiry_timestamp_seconds`.
#[derive(Debug, Default)]
struct Certificate(OnceLock<Arc<crate::tls::CertStore>>);

impl Collector for Certificate {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(store) = self.0.get() else { return Ok(()) };
        let key = store.current();
        let not_after = key
            .cert
            .first()
            .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
            .map(|(_, cert)| cert.validity().not_after.timestamp());
        if let Some(t) = not_after {
            let gauge = encoder.encode_descriptor(
                "certificate_expiry_timestamp_seconds",
                "When the webhook's serving certificate expires (Unix time)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(t).encode(gauge)?;
        }
        Ok(())
    }
}

/// Process metrics with the names Prometheus client libraries use, from /proc
/// (Linux; nothing elsewhere).
#[derive(Debug)]
struct Process;

/// Clock ticks per second for /proc/self/stat's CPU times: USER_HZ, 100 on
/// every Linux architecture Kubernetes runs on.
const USER_HZ: f64 = 100.0;

static START_TIME: AtomicI64 = AtomicI64::new(0);

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(p) = process_stats() else { return Ok(()) };
        let gauges: [(&str, &str, f64); 5] = [
            ("process_resident_memory_bytes", "Resident memory size in bytes", p.rss_bytes),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes", p.virtual_bytes),
            ("process_open_fds", "Number of open file descriptors", p.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors", p.max_fds),
            ("process_start_time_seconds", "Start time of the process since the Unix epoch in seconds", p.start_time),
        ];
        for (name, help, value) in gauges {
            ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        let cpu = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(p.cpu_seconds).encode(cpu)
    }
}

struct ProcessStats {
    rss_bytes: f64,
    virtual_bytes: f64,
    open_fds: f64,
    max_fds: f64,
    start_time: f64,
    cpu_seconds: f64,
}

fn process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    let (utime, stime) = (field(14)?, field(15)?);
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |key: &str| -> Option<f64> {
        let line = status.lines().find_map(|l| l.strip_prefix(key))?;
        Some(line.trim().trim_end_matches("kB").trim().parse::<f64>().ok()? * 1024.0)
    };
    let (rss, vsize) = (kib("VmRSS:")?, kib("VmSize:")?);
    let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as f64).unwrap_or(0.0);
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            let line = l.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<f64>().ok()
        })
        .unwrap_or(0.0);
    let mut start = START_TIME.load(Ordering::Relaxed);
    if start == 0 {
        // Boot time plus the process's start in ticks after boot.
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<i64>().ok()));
        start = boot.zip(field(22)).map(|(b, ticks)| b + (ticks / USER_HZ) as i64).unwrap_or(0);
        START_TIME.store(start, Ordering::Relaxed);
    }
    Some(ProcessStats {
        rss_bytes: rss,
        virtual_bytes: vsize,
        open_fds,
        max_fds,
        start_time: start as f64,
        cpu_seconds: (utime + stime) / USER_HZ,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Lane, Skip};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn label_values_are_snake_case() {
        for (from, to) in [
            ("OnCall", "on_call"),
            ("PagerDuty", "pager_duty"),
            ("break-glass", "break_glass"),
            ("Delivered", "delivered"),
            ("engineering", "engineering"),
            ("tier2", "tier2"),
        ] {
            assert_eq!(snake(from), to);
        }
    }

    fn lane(route: &str, tier: u32, name: &str) -> Lane {
        Lane {
            route: route.into(),
            policy: "p".into(),
            tier,
            tiers: 5,
            tier_name: Some(name.into()),
            tier_started_at: None,
            tier_deadline: None,
            phase: Phase::Pending,
            eligible: vec![],
            eligible_groups: vec![],
        }
    }

    #[test]
    fn a_status_write_counts_new_tiers_skips_and_the_decision() {
        let first = ApprovalRequestStatus { lanes: vec![lane("engineering", 0, "Team")], ..Default::default() };
        assert_eq!(changes(None, &first), [Change::Escalated { route: "engineering", tier: "Team" }]);
        assert_eq!(changes(Some(&first), &first), [], "an unchanged status counts nothing");
        let skip = |setting: Option<&str>| Skip {
            route: "engineering".into(),
            tier: 1,
            user: None,
            reason: String::new(),
            setting: setting.map(str::to_string),
            at: Time(jiff::Timestamp::UNIX_EPOCH),
        };
        let second = ApprovalRequestStatus {
            lanes: vec![lane("engineering", 2, "Lead")],
            skips: vec![skip(Some("Approver/dave spec.quietHours[0]")), skip(None)],
            ..Default::default()
        };
        assert_eq!(
            changes(Some(&first), &second),
            [
                Change::Escalated { route: "engineering", tier: "Lead" },
                Change::Skipped { route: "engineering", reason: "quiet_hours" },
                Change::Skipped { route: "engineering", reason: "empty_tier" },
            ]
        );
        let decided = ApprovalRequestStatus { phase: Phase::Expired, ..second.clone() };
        assert_eq!(changes(Some(&second), &decided), [Change::Decided { route: "engineering", outcome: "Expired" }]);
        assert_eq!(changes(Some(&decided), &decided), [], "counted once, when it left Pending");
    }

    #[test]
    fn the_exposition_has_every_family_with_snake_case_labels() {
        let metrics = Arc::new(Metrics::default());
        metrics.observe_review("CREATE", "Deployment", "admitted-low-risk", Duration::from_millis(3));
        metrics.notification("PagerDuty", "Delivered");
        let status = ApprovalRequestStatus { lanes: vec![lane("engineering", 1, "OnCall")], ..Default::default() };
        metrics.request_seen("prod", "ar-1", &status);
        let approved = ApprovalRequestStatus { phase: Phase::Approved, ..status.clone() };
        metrics.request_progressed(Some(&status), &approved, Duration::from_secs(100));
        metrics.watch_backlog(|_| 3);
        metrics.observe_lateness(Duration::from_millis(15));
        assert!(metrics.render().lines().any(|l| l == "signoff_escalation_backlog 0"), "not leading: none");
        let leading = metrics.leading();
        let text = metrics.render();
        for line in [
            r#"signoff_admission_review_seconds_count{operation="create",kind="deployment",decision="admitted_low_risk"} 1"#,
            r#"signoff_notifications_total{sink="pager_duty",result="delivered"} 1"#,
            r#"signoff_approval_requests{phase="pending",route="engineering",tier="on_call"} 1"#,
            r#"signoff_approval_requests_unnotified{route="engineering",expiring="false"} 1"#,
            "signoff_leader 1",
            "signoff_escalation_backlog 3",
            r#"signoff_escalation_lateness_seconds_bucket{le="0.02"} 1"#,
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_cpu_seconds counter",
            r#"signoff_decision_seconds_bucket{le="160.0",route="engineering",outcome="approved"} 1"#,
            r#"signoff_decision_seconds_bucket{le="80.0",route="engineering",outcome="approved"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        drop(leading);
        let text = metrics.render();
        assert!(text.contains("signoff_leader 0") && !text.contains("signoff_approval_requests{"), "{text}");
    }
}
