use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{ActionClass, Operation, Risk};

/// Rules that decide which changes are risky, who must approve them, and how fast
/// the request escalates. Cluster-scoped: platform teams own it, reviewed in git.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "signoff.dev",
    version = "v1alpha1",
    kind = "EscalationPolicy",
    shortname = "escpol",
    category = "signoff",
    status = "EscalationPolicyStatus",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EscalationPolicySpec {
    /// Enforce holds risky changes. Audit admits everything and records what would
    /// have been held, which is how a new policy is rolled out safely.
    #[serde(default)]
    pub mode: PolicyMode,

    /// Which admission requests this policy looks at. Same semantics as a
    /// ValidatingWebhookConfiguration's rules and selectors.
    #[serde(rename = "match")]
    pub match_: MatchSpec,

    /// Named CEL expressions evaluated before the rules and available to them as
    /// `variables.<name>`. Later variables may use earlier ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub variables: Vec<Variable>,

    /// The risk rules. Every rule whose expression is true fires; the change is held
    /// when any enforcing rule with risk Medium or High fires.
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    #[schemars(length(min = 1))]
    pub rules: Vec<RiskRule>,

    /// The chain of approver tiers for each route a rule can name. A route not
    /// listed here gets the default chain: owning team, on-call, lead, secondary
    /// on-call, platform admins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub routes: Vec<RouteSpec>,

    /// Escalation timing and notify mode for each action class.
    #[serde(default)]
    pub action_classes: ActionClasses,

    /// How many approvals each risk needs and how long an approval stays valid.
    #[serde(default)]
    pub approval: ApprovalSettings,

    /// Unit prices used to estimate the monthly cost of a change (`cost` in CEL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,

    /// The Team whose members are the platform admins: the last tier of every
    /// default chain, and who is notified when a chain is exhausted.
    #[serde(default = "default_admin_team")]
    pub admin_team: String,

    /// What signoff does for changes a GitOps tool applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<PolicyGitOps>,
}

/// GitOps settings of a policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyGitOps {
    /// Once a change this policy held is approved, ask its GitOps owner to
    /// apply it at once (Flux: `reconcile.fluxcd.io/requestedAt` on the
    /// Kustomization or HelmRelease; Argo CD: a sync of the approved resource).
    /// Unset: the install's default (`signoff run --gitops-hand-back`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hand_back: Option<bool>,
}

pub(crate) fn default_admin_team() -> String {
    "platform-admins".into()
}

impl EscalationPolicySpec {
    /// The team of the Admins tier: `adminTeam`, or platform-admins when empty.
    pub fn admin_team_or_default(&self) -> String {
        if self.admin_team.is_empty() { default_admin_team() } else { self.admin_team.clone() }
    }

    /// The team `spec.routes` sets for `route`, if any (an empty one counts as
    /// unset). Without one, engineering's team is the namespace's owner and another
    /// route's is the team named after it.
    pub fn route_team(&self, route: &str) -> Option<String> {
        self.routes.iter().find(|r| r.name == route).and_then(|r| r.team.clone()).filter(|t| !t.is_empty())
    }
}

/// Whether a policy holds changes or only reports what it would hold.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum PolicyMode {
    /// Hold risky changes until approved.
    #[default]
    Enforce,
    /// Admit everything; record what would have been held.
    Audit,
}

/// Which admission requests a policy looks at.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchSpec {
    /// Resource rules, as in a ValidatingWebhookConfiguration: a request matches
    /// when any rule matches its operation, group, version and resource.
    #[schemars(length(min = 1))]
    pub rules: Vec<ResourceRule>,

    /// Equivalent (default) also matches the same resource served under another
    /// group or version (e.g. a rule for apps/v1 deployments matches a request made
    /// through another version); Exact matches only what is written.
    #[serde(default)]
    pub match_policy: MatchPolicy,

    /// Only changes in namespaces whose labels match, e.g.
    /// `signoff.dev/environment: production`. As in Kubernetes, a Namespace object is
    /// matched on its own labels and other cluster-scoped objects always match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Only objects whose labels match (old or new object, as in Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_selector: Option<LabelSelector>,

    /// Requests by these users are never matched (e.g. a trusted automation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_users: Vec<String>,

    /// Requests by members of these groups are never matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_groups: Vec<String>,
}

/// One admission rule: operations × groups × versions × resources.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRule {
    /// CREATE, UPDATE, DELETE, CONNECT or `*`.
    #[schemars(length(min = 1))]
    pub operations: Vec<Operation>,
    /// API groups; `""` is the core group, `*` is every group.
    #[schemars(length(min = 1))]
    pub api_groups: Vec<String>,
    /// API versions; `*` is every version.
    #[schemars(length(min = 1))]
    pub api_versions: Vec<String>,
    /// Resources, optionally with a subresource: `deployments`, `deployments/scale`,
    /// `pods/exec`, `*/scale`, `*`.
    #[schemars(length(min = 1))]
    pub resources: Vec<String>,
    /// Namespaced, Cluster or `*` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<RuleScope>,
}

/// Which scope of resources a rule matches.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum RuleScope {
    Namespaced,
    Cluster,
    #[serde(rename = "*")]
    All,
}

/// Kubernetes' matchPolicy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum MatchPolicy {
    /// Match the resource under any version or group it is served as.
    #[default]
    Equivalent,
    /// Match only the group, version and resource written in the rule.
    Exact,
}

/// A named CEL expression.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Variable {
    /// Name, used as `variables.<name>`.
    #[schemars(regex(pattern = r"^[a-zA-Z_][a-zA-Z0-9_]*$"))]
    pub name: String,
    /// CEL expression over `request`, `object`, `oldObject`, `namespaceObject`,
    /// `cost` and earlier `variables`.
    #[schemars(length(min = 1))]
    pub expression: String,
}

/// One risk rule. When its expression is true, the change gets this rule's risk,
/// action class and route, and the message explains why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.message) || !has(self.messageExpression)").message("set message or messageExpression, not both"))]
pub struct RiskRule {
    /// Rule name, unique within the policy; shown to requesters and approvers.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// CEL boolean expression. Available: `request` (operation, userInfo, kind,
    /// resource, subResource, namespace, name, dryRun), `object`, `oldObject` (null
    /// on CREATE and CONNECT), `namespaceObject`, `variables` and `cost`
    /// (monthlyBefore, monthlyAfter, monthlyDelta, currency).
    #[schemars(length(min = 1))]
    pub expression: String,
    /// Low (recorded, admitted), Medium or High (held).
    pub risk: Risk,
    /// Who owns this kind of risk: security, finance, engineering, customer,
    /// manager, or a route of your own listed in `routes`.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub route: String,
    /// routine, time-sensitive or destructive: sets the escalation timing.
    #[serde(default = "default_action_class")]
    pub action_class: ActionClass,
    /// Static explanation shown to the requester and approvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// CEL string expression for the explanation, e.g.
    /// `'deleting PVC ' + object.metadata.name`. Takes precedence over message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_expression: Option<String>,
}

fn default_action_class() -> ActionClass {
    ActionClass::Routine
}

/// The chain of tiers for one route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// Route name, as used by rules: security, finance, engineering, customer,
    /// manager, or your own.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// The Team that owns this route. Leave empty for engineering: the owner is the
    /// team named by the namespace's `signoff.dev/owner` label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Tiers in escalation order. Empty means the default chain: Team, OnCall,
    /// Lead, Secondary, Admins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<TierSpec>,
    /// Sinks notified at every tier of this route, besides each person's and each
    /// team's own contacts (e.g. the security channel).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<super::Contact>,
}

/// One rung of an escalation chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.kind != 'People' || size(self.users) + size(self.groups) > 0").message("a People tier needs users or groups"))]
pub struct TierSpec {
    /// Who this tier is: Team (the route's team members), OnCall (its current
    /// on-call), Lead (its lead), Secondary (the secondary team's on-call),
    /// Admins (the admin team), or People (the users and groups listed here).
    pub kind: TierKind,
    /// Use this team instead of the route's team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// For People tiers: usernames.
    #[serde(default)]
    pub users: Vec<String>,
    /// For People tiers: groups whose members may approve.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Overrides the action class's tier timeout for this tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub timeout: Option<String>,
}

/// The default chain: owning team, its on-call, its lead, the secondary on-call
/// from another team, the platform admins.
pub fn default_chain() -> Vec<TierSpec> {
    [TierKind::Team, TierKind::OnCall, TierKind::Lead, TierKind::Secondary, TierKind::Admins]
        .into_iter()
        .map(|kind| TierSpec { kind, team: None, users: Vec::new(), groups: Vec::new(), timeout: None })
        .collect()
}

/// Who a tier resolves to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum TierKind {
    Team,
    OnCall,
    Lead,
    Secondary,
    Admins,
    People,
}

/// Timing for each action class.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionClasses {
    /// Default: 60m per tier, tiers notified one after another.
    #[serde(default = "ActionClassSpec::routine")]
    pub routine: ActionClassSpec,
    /// Default: 10m per tier, all tiers notified at once.
    #[serde(default = "ActionClassSpec::time_sensitive")]
    pub time_sensitive: ActionClassSpec,
    /// Default: 2m per tier, all tiers notified at once, first eligible responder wins.
    #[serde(default = "ActionClassSpec::destructive")]
    pub destructive: ActionClassSpec,
}

impl Default for ActionClasses {
    fn default() -> Self {
        ActionClasses {
            routine: ActionClassSpec::routine(),
            time_sensitive: ActionClassSpec::time_sensitive(),
            destructive: ActionClassSpec::destructive(),
        }
    }
}

impl ActionClasses {
    pub fn get(&self, class: ActionClass) -> &ActionClassSpec {
        match class {
            ActionClass::Routine => &self.routine,
            ActionClass::TimeSensitive => &self.time_sensitive,
            ActionClass::Destructive => &self.destructive,
        }
    }
}

/// Escalation timing for one action class.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionClassSpec {
    /// How long each tier has to answer before the next is reached, e.g. `60m`.
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub tier_timeout: String,
    /// Sequential notifies one tier at a time; Simultaneous notifies every tier at once.
    pub notify: NotifyMode,
}

impl ActionClassSpec {
    fn routine() -> Self {
        ActionClassSpec { tier_timeout: "60m".into(), notify: NotifyMode::Sequential }
    }
    fn time_sensitive() -> Self {
        ActionClassSpec { tier_timeout: "10m".into(), notify: NotifyMode::Simultaneous }
    }
    fn destructive() -> Self {
        ActionClassSpec { tier_timeout: "2m".into(), notify: NotifyMode::Simultaneous }
    }
}

/// How the tiers of a chain are notified.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum NotifyMode {
    Sequential,
    Simultaneous,
}

/// Quorum and validity of approvals.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalSettings {
    /// Distinct approvals each lane needs for a Medium-risk change (default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10))]
    pub medium: u32,
    /// Distinct approvals each lane needs for a High-risk change (default 1; set 2
    /// for dual control).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10))]
    pub high: u32,
    /// How long an approval stays valid for applying the change, e.g. `1h`.
    #[serde(default = "default_valid_for")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub valid_for: String,
    /// ReachedTiers (default): only approvers of tiers the escalation has reached
    /// may approve. AnyTier: anyone in the chain may approve at any time.
    #[serde(default)]
    pub eligibility: Eligibility,
}

fn one() -> u32 {
    1
}
fn default_valid_for() -> String {
    "1h".into()
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        ApprovalSettings { medium: 1, high: 1, valid_for: default_valid_for(), eligibility: Eligibility::default() }
    }
}

/// Who may approve before the chain reaches them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum Eligibility {
    #[default]
    ReachedTiers,
    AnyTier,
}

/// Unit prices for the monthly cost estimate. A month is 730 hours.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pricing {
    /// ISO currency code shown with every figure, e.g. USD or EUR.
    #[serde(default = "default_currency")]
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: String,
    /// Price of one CPU core for one hour.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub cpu_core_hour: f64,
    /// Price of one GiB of memory for one hour.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub memory_gib_hour: f64,
    /// Price of one GPU (`nvidia.com/gpu`, `amd.com/gpu`) for one hour.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub gpu_hour: f64,
    /// Price of one GiB of persistent storage for one month.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub storage_gib_month: f64,
    /// Price of one Service of type LoadBalancer for one month.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub load_balancer_month: f64,
    /// How many nodes a DaemonSet is assumed to run on.
    #[serde(default = "default_daemonset_nodes")]
    #[schemars(range(min = 0))]
    pub daemon_set_nodes: u32,
}

fn default_currency() -> String {
    "USD".into()
}
fn default_daemonset_nodes() -> u32 {
    3
}

/// What signoff made of a policy, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EscalationPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: True when every expression compiles and every team a route or
    /// tier names exists; False says what to fix (`reason` InvalidExpression,
    /// MissingTeam).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
