use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::Contact;

/// One person's availability and contacts. Cluster-scoped, one per person; only
/// that person or an admin may write it (`kubectl signoff away`, `quiet-hours`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "signoff.dev",
    version = "v1alpha1",
    kind = "Approver",
    category = "signoff",
    status = "ApproverStatus",
    printcolumn = r#"{"name":"User","type":"string","jsonPath":".spec.user"}"#,
    printcolumn = r#"{"name":"Availability","type":"string","jsonPath":".status.availability"}"#,
    printcolumn = r#"{"name":"Until","type":"date","jsonPath":".status.until"}"#,
    printcolumn = r#"{"name":"TimeZone","type":"string","priority":1,"jsonPath":".spec.timeZone"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApproverSpec {
    /// The username this Approver describes, as the API server authenticates it.
    #[schemars(length(min = 1))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("user is immutable"))]
    pub user: String,
    /// IANA time zone for quiet hours, e.g. America/New_York (default UTC).
    #[serde(default = "super::team::utc")]
    pub time_zone: String,
    /// Weekly windows during which this person is not paged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quiet_hours: Vec<QuietHours>,
    /// Periods away: vacation, leave, conference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub away: Vec<AwayPeriod>,
    /// Where this person is notified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<Contact>,
}

/// A weekly quiet window in the approver's time zone. `start` after `end` crosses
/// midnight (22:00-07:00 starting on each listed day).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuietHours {
    /// Days on which the window starts; empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Weekday>,
    /// Start, local time HH:MM.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// End, local time HH:MM.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub end: String,
}

/// Day of the week.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// A period during which the person is away and is skipped.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("timestamp(self.until) > timestamp(self.from)").message("until must be after from"))]
pub struct AwayPeriod {
    /// Start (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub from: String,
    /// End (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub until: String,
    /// Vacation, Leave, Conference or Other.
    pub reason: AwayReason,
    /// Free text, e.g. who covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Why someone is away.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum AwayReason {
    Vacation,
    Leave,
    Conference,
    Other,
}

/// Whether the person is paged now, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApproverStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Available (paged), QuietHours or Away (skipped by escalation, still
    /// allowed to decide).
    #[serde(default)]
    pub availability: Availability,
    /// When the quiet hours or the away period end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Time>,
    /// Why, e.g. "quiet hours 22:00-07:00 Europe/Berlin", and the setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `Ready`: True when every setting can be read; False says what to fix
    /// (`reason` UnknownTimeZone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Whether escalation pages a person now.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum Availability {
    /// Paged when a tier reaches them.
    #[default]
    Available,
    /// In a quiet-hours window: skipped.
    QuietHours,
    /// In an away period: skipped.
    Away,
}
