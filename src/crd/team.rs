use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::Contact;

/// A team of people who can approve: its members, lead, on-call rotation,
/// secondary and contacts. Cluster-scoped; namespaces point at their owning team
/// with the `signoff.dev/owner` label.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "signoff.dev",
    version = "v1alpha1",
    kind = "Team",
    category = "signoff",
    status = "TeamStatus",
    printcolumn = r#"{"name":"Lead","type":"string","jsonPath":".spec.lead"}"#,
    printcolumn = r#"{"name":"On-Call","type":"string","jsonPath":".status.onCall"}"#,
    printcolumn = r#"{"name":"Until","type":"date","jsonPath":".status.onCallUntil"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TeamSpec {
    /// Human-readable name shown in messages, e.g. "Payments".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Who belongs to the team: tier 1 (Team) of a chain.
    #[serde(default)]
    pub members: Members,
    /// Username of the team lead: the Lead tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead: Option<String>,
    /// The on-call rotation: the OnCall tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_call: Option<OnCall>,
    /// Another team whose current on-call is this team's secondary: the Secondary tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_team: Option<String>,
    /// Where the team is notified (in addition to each person's own contacts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<Contact>,
}

/// Members of a team.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Members {
    /// Usernames.
    #[serde(default)]
    pub users: Vec<String>,
    /// Groups; every member of the group is a member of the team.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// An on-call rotation: `rotation[i]` is on call during the i-th shift after the
/// handoff anchor, cycling; overrides win over the rotation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnCall {
    /// Usernames in rotation order.
    #[schemars(length(min = 1))]
    pub rotation: Vec<String>,
    /// Length of one shift, e.g. `168h` for weekly.
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub shift_length: String,
    /// Local wall-clock time of a handoff to `rotation[0]`, e.g.
    /// `2026-01-05T09:00:00`, interpreted in `timeZone`.
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?$"))]
    pub handoff: String,
    /// IANA time zone of the handoff, e.g. Europe/Berlin (default UTC).
    #[serde(default = "utc")]
    pub time_zone: String,
    /// Temporary swaps: this user is on call from `from` until `until`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<OnCallOverride>,
}

pub(crate) fn utc() -> String {
    "UTC".into()
}

/// A temporary on-call swap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("timestamp(self.until) > timestamp(self.from)").message("until must be after from"))]
pub struct OnCallOverride {
    /// Username on call during the override.
    pub user: String,
    /// Start (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub from: String,
    /// End (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub until: String,
}

/// Who the team reaches now, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Who is on call now (an override or the rotation); empty without a rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_call: Option<String>,
    /// When the current on-call's shift or override ends (updated within
    /// seconds of the handover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_call_until: Option<Time>,
    /// `Ready`: True when the team can be reached as written; False says what
    /// to fix (`reason` NoMembers, InvalidRotation, MissingTeam).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
