//! The policy engine: pure classification of admission requests against
//! EscalationPolicies. No I/O and no clock.
//!
//! ```text
//! PolicySet::new(&policies)        compile every CEL expression once
//! classify(&ReviewInput, &set)     -> Assessment { fired, risk, class, routes, cost, errors }
//! ```
//!
//! Fail closed: a runtime CEL error in an enforcing policy holds the change (risk
//! High, naming the rule), and so does an enforcing policy that failed to compile
//! when its `match` selects the request.

pub mod budget;
pub mod celenv;
pub mod cost;
pub mod fast;
pub mod helpers;
pub mod lazyjson;
pub mod matching;
pub mod quantity;
pub mod side_doors;

use std::cell::OnceCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, LazyLock};

use cel::{Context, Env, Program, Value};
use serde::Serialize;

use crate::crd::{ActionClass, EscalationPolicy, EscalationPolicySpec, MatchPolicy, Operation, PolicyMode, Risk};
use celenv::{cel_map, cel_str};
pub use cost::Cost;
pub use quantity::Quantity;

/// The CEL environment shared by every policy: built once per process.
static ENV: LazyLock<Arc<Env>> =
    LazyLock::new(|| Arc::new(celenv::build_env().expect("the signoff CEL environment declares no conflicts")));

/// Who made the request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct UserInfo {
    pub username: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

impl UserInfo {
    /// Nobody in particular: an offline check that was not told who applies
    /// (the API server always names a user, `system:anonymous` at least).
    pub fn is_unknown(&self) -> bool {
        self.username.is_empty() && self.groups.is_empty()
    }
}

/// group/version/kind of the object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Gvk {
    pub group: String,
    pub version: String,
    pub kind: String,
}

/// group/version/resource the request was made to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Gvr {
    pub group: String,
    pub version: String,
    pub resource: String,
}

/// What an AdmissionReview request carries, plus the namespace object.
#[derive(Clone, Debug, PartialEq)]
pub struct ReviewInput {
    /// CREATE, UPDATE, DELETE or CONNECT (never `*`).
    pub operation: Operation,
    pub user: UserInfo,
    pub kind: Gvk,
    pub resource: Gvr,
    /// Empty when the request is for the main resource.
    pub sub_resource: String,
    /// Empty for cluster-scoped objects; the Namespace's own name for a Namespace.
    pub namespace: String,
    pub name: String,
    pub dry_run: bool,
    /// The new object; None (null) on DELETE and for most CONNECTs.
    pub object: Option<serde_json::Value>,
    /// The old object; None (null) on CREATE and CONNECT.
    pub old_object: Option<serde_json::Value>,
    /// The Namespace the object lives in (for its labels); None when unknown or
    /// cluster-scoped. Shared: the webhook converts each cached Namespace to JSON
    /// once per version, not once per review.
    pub namespace_object: Option<Arc<serde_json::Value>>,
}

pub fn operation_str(op: Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
        Operation::All => "*",
    }
}

impl ReviewInput {
    /// Builds the input from a Kubernetes AdmissionRequest, its objects as the
    /// JSON the API server sent (`webhook::server::parse_review` keeps them so:
    /// converting typed objects was a large part of a review's cost), and the
    /// Namespace object of its namespace (from a cache; None if unknown).
    pub fn from_request(
        req: &kube::core::admission::AdmissionRequest<kube::core::DynamicObject>,
        object: Option<serde_json::Value>,
        old_object: Option<serde_json::Value>,
        namespace_object: Option<Arc<serde_json::Value>>,
    ) -> ReviewInput {
        use kube::core::admission::Operation as K;
        let operation = match req.operation {
            K::Create => Operation::Create,
            K::Update => Operation::Update,
            K::Delete => Operation::Delete,
            K::Connect => Operation::Connect,
        };
        ReviewInput {
            operation,
            user: UserInfo {
                username: req.user_info.username.clone().unwrap_or_default(),
                uid: req.user_info.uid.clone().unwrap_or_default(),
                groups: req.user_info.groups.clone().unwrap_or_default(),
            },
            kind: Gvk { group: req.kind.group.clone(), version: req.kind.version.clone(), kind: req.kind.kind.clone() },
            resource: Gvr {
                group: req.resource.group.clone(),
                version: req.resource.version.clone(),
                resource: req.resource.resource.clone(),
            },
            sub_resource: req.sub_resource.clone().unwrap_or_default(),
            namespace: req.namespace.clone().unwrap_or_default(),
            name: req.name.clone(),
            dry_run: req.dry_run,
            object,
            old_object,
            namespace_object,
        }
    }

    /// The `request` variable rules see.
    /// `request` as CEL sees it, borrowing this input's strings.
    fn request_value(&self) -> Box<dyn cel::common::value::Val + '_> {
        use cel::common::types::{CelBool, CelList, CelMap, CelMapKey, CelString};
        use cel::common::value::Val;
        type Entries<'a> = Vec<(&'static str, Box<dyn Val + 'a>)>;
        fn map(entries: Entries<'_>) -> Box<dyn Val + '_> {
            Box::new(CelMap::from(entries.into_iter().map(|(k, v)| (CelMapKey::from(k), v)).collect::<HashMap<_, _>>()))
        }
        fn text(s: &str) -> Box<dyn Val + '_> {
            Box::new(CelString::from(s))
        }
        let groups: Vec<Box<dyn Val + '_>> = self.user.groups.iter().map(|g| text(g)).collect();
        map(vec![
            ("operation", text(operation_str(self.operation))),
            (
                "userInfo",
                map(vec![
                    ("username", text(&self.user.username)),
                    ("uid", text(&self.user.uid)),
                    ("groups", Box::new(CelList::from(groups))),
                ]),
            ),
            (
                "kind",
                map(vec![
                    ("group", text(&self.kind.group)),
                    ("version", text(&self.kind.version)),
                    ("kind", text(&self.kind.kind)),
                ]),
            ),
            (
                "resource",
                map(vec![
                    ("group", text(&self.resource.group)),
                    ("version", text(&self.resource.version)),
                    ("resource", text(&self.resource.resource)),
                ]),
            ),
            ("subResource", text(&self.sub_resource)),
            ("namespace", text(&self.namespace)),
            ("name", text(&self.name)),
            ("dryRun", Box::new(CelBool::from(self.dry_run))),
        ])
    }
}

/// Which part of a policy an error is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Location {
    Variable(String),
    Rule(String),
    MessageExpression(String),
    /// The policy as a whole (e.g. duplicate rule names).
    Policy,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Variable(n) => write!(f, "variable {n:?}"),
            Location::Rule(n) => write!(f, "rule {n:?}"),
            Location::MessageExpression(n) => write!(f, "messageExpression of rule {n:?}"),
            Location::Policy => write!(f, "spec"),
        }
    }
}

/// A policy that cannot be used as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("EscalationPolicy {policy:?}, {location}{}: {message}", position.map(|(l, c)| format!(" at line {l} column {c}")).unwrap_or_default())]
#[serde(rename_all = "camelCase")]
pub struct PolicyError {
    pub policy: String,
    pub location: Location,
    /// (line, column), both from 1, within the expression.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

enum Message {
    Static(String),
    Expression(CompiledExpr),
}

struct CompiledRule {
    name: String,
    expression: CompiledExpr,
    message: Message,
    risk: Risk,
    route: String,
    action_class: ActionClass,
    /// Its expression reads `request.userInfo`, itself or through a variable:
    /// it cannot be evaluated without knowing who applies the change.
    reads_requester: bool,
}

/// Whether an expression reads `request.userInfo`, or one of `variables` that do.
/// Textual: a mention in a string literal counts too (the safe side: the rule is
/// reported as depending on the requester).
fn reads_requester(expression: &str, variables: &[&str]) -> bool {
    expression.contains("userInfo") || variables.iter().any(|v| expression.contains(&format!("variables.{v}")))
}

/// What a policy's expressions read, so a request converts only that.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Needs {
    request: bool,
    object: bool,
    old_object: bool,
    namespace_object: bool,
    cost: bool,
    /// Some expression has a map literal: evaluate on fully converted objects,
    /// because a built-in map on the left of `==` does not recognize a lazy one.
    map_literal: bool,
}

impl Needs {
    fn add(&mut self, p: &Program, source: &str) {
        // Conservative: any `{` (even inside a string literal) takes the safe path.
        self.map_literal |= source.contains('{');
        let r = p.references();
        self.request |= r.has_variable("request");
        self.object |= r.has_variable("object");
        self.old_object |= r.has_variable("oldObject");
        self.namespace_object |= r.has_variable("namespaceObject");
        self.cost |= r.has_variable("cost");
    }
    fn union(self, o: Needs) -> Needs {
        Needs {
            request: self.request | o.request,
            object: self.object | o.object,
            old_object: self.old_object | o.old_object,
            namespace_object: self.namespace_object | o.namespace_object,
            cost: self.cost | o.cost,
            map_literal: self.map_literal | o.map_literal,
        }
    }
}

/// An EscalationPolicy with every CEL expression compiled.
pub struct CompiledPolicy {
    name: String,
    spec: EscalationPolicySpec,
    variables: Vec<(String, CompiledExpr)>,
    rules: Vec<CompiledRule>,
    needs: Needs,
    /// The estimated steps of all its expressions, by the size of the review's
    /// collections (budget::Estimates).
    estimates: budget::Estimates,
}

impl fmt::Debug for CompiledPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledPolicy").field("name", &self.name).field("rules", &self.rules.len()).finish()
    }
}

fn policy_name(policy: &EscalationPolicy) -> String {
    policy.metadata.name.clone().unwrap_or_default()
}

/// A compiled expression: the form that runs, whose comprehensions charge the
/// evaluation's budget (budget::instrument). What it reads is added to the
/// policy's `Needs` when it is compiled; the parsed program is not kept (a
/// second copy of every expression, with 1,000 policies megabytes).
struct CompiledExpr {
    run: cel::common::ast::IdedExpr,
    estimates: budget::Estimates,
}

impl CompiledExpr {
    fn execute(&self, scope: &Context) -> cel::ResolveResult {
        Value::resolve(&self.run, scope)
    }
}

fn compile_expr(
    policy: &str,
    location: Location,
    source: &str,
    needs: &mut Needs,
) -> Result<CompiledExpr, PolicyError> {
    let program = ENV.compile(source).map_err(|errors| {
        let first = errors.errors.first();
        PolicyError {
            policy: policy.to_string(),
            location: location.clone(),
            position: first.map(|e| (e.pos.0.max(1) as usize, e.pos.1.max(0) as usize + 1)),
            message: first.map(|e| e.msg.clone()).unwrap_or_else(|| errors.to_string()),
        }
    })?;
    let estimate = budget::estimate(program.expression());
    if estimate > budget::ESTIMATE_LIMIT {
        return Err(PolicyError {
            policy: policy.to_string(),
            location,
            position: None,
            message: format!(
                "estimated cost {estimate} exceeds the limit of {} steps (a comprehension costs its body once per \
                 element; a list that is not a literal counts as {} elements): iterate over less, or nest less",
                budget::ESTIMATE_LIMIT,
                budget::UNKNOWN_SIZE
            ),
        });
    }
    let run = budget::instrument(program.expression());
    needs.add(&program, source);
    Ok(CompiledExpr { run, estimates: budget::Estimates::of(&program) })
}

impl CompiledPolicy {
    /// Compiles every expression of the policy once. The error names the policy,
    /// the rule or variable and the position in the expression.
    pub fn compile(policy: &EscalationPolicy) -> Result<CompiledPolicy, PolicyError> {
        let name = policy_name(policy);
        let spec = &policy.spec;
        let err = |location, message: String| PolicyError { policy: name.clone(), location, position: None, message };
        if spec.rules.is_empty() {
            return Err(err(Location::Policy, "spec.rules must list at least one rule".into()));
        }
        if spec.match_.rules.is_empty() {
            return Err(err(Location::Policy, "spec.match.rules must list at least one rule".into()));
        }
        let mut needs = Needs::default();
        let mut variables = Vec::with_capacity(spec.variables.len());
        for v in &spec.variables {
            if variables.iter().any(|(n, _)| n == &v.name) {
                return Err(err(Location::Variable(v.name.clone()), "duplicate variable name".into()));
            }
            let p = compile_expr(&name, Location::Variable(v.name.clone()), &v.expression, &mut needs)?;
            variables.push((v.name.clone(), p));
        }
        // Variables that read the requester, directly or through earlier ones.
        let mut requester_vars: Vec<&str> = Vec::new();
        for v in &spec.variables {
            if reads_requester(&v.expression, &requester_vars) {
                requester_vars.push(&v.name);
            }
        }
        let mut rules: Vec<CompiledRule> = Vec::with_capacity(spec.rules.len());
        for r in &spec.rules {
            if rules.iter().any(|c| c.name == r.name) {
                return Err(err(Location::Rule(r.name.clone()), "duplicate rule name".into()));
            }
            let expression = compile_expr(&name, Location::Rule(r.name.clone()), &r.expression, &mut needs)?;
            let message = match (&r.message_expression, &r.message) {
                (Some(src), _) => {
                    let p = compile_expr(&name, Location::MessageExpression(r.name.clone()), src, &mut needs)?;
                    Message::Expression(p)
                }
                (None, Some(m)) => Message::Static(m.clone()),
                (None, None) => Message::Static(format!("rule {} fired", r.name)),
            };
            rules.push(CompiledRule {
                name: r.name.clone(),
                expression,
                message,
                risk: r.risk,
                route: r.route.clone(),
                action_class: r.action_class,
                reads_requester: reads_requester(&r.expression, &requester_vars),
            });
        }
        let messages = rules.iter().filter_map(|r| match &r.message {
            Message::Expression(e) => Some(e.estimates),
            Message::Static(_) => None,
        });
        let estimates = variables
            .iter()
            .map(|(_, e)| e.estimates)
            .chain(rules.iter().map(|r| r.expression.estimates))
            .chain(messages)
            .fold(budget::Estimates::default(), |sum, e| sum + e);
        Ok(CompiledPolicy { name, spec: spec.clone(), variables, rules, needs, estimates })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn spec(&self) -> &EscalationPolicySpec {
        &self.spec
    }
}

struct InvalidPolicy {
    spec: EscalationPolicySpec,
    error: PolicyError,
}

/// Every policy, compiled once; the unit `classify` runs against.
pub struct PolicySet {
    policies: Vec<CompiledPolicy>,
    invalid: Vec<InvalidPolicy>,
}

impl fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicySet")
            .field("policies", &self.policies)
            .field("invalid", &self.invalid.iter().map(|i| &i.error).collect::<Vec<_>>())
            .finish()
    }
}

impl PolicySet {
    /// Compiles every policy. An invalid policy is kept, with its error: see
    /// [`PolicySet::errors`]. Policies are evaluated in name order.
    pub fn new<'a>(policies: impl IntoIterator<Item = &'a EscalationPolicy>) -> PolicySet {
        let mut set = PolicySet { policies: Vec::new(), invalid: Vec::new() };
        for p in policies {
            match CompiledPolicy::compile(p) {
                Ok(c) => set.policies.push(c),
                Err(error) => set.invalid.push(InvalidPolicy { spec: p.spec.clone(), error }),
            }
        }
        set.policies.sort_by(|a, b| a.name.cmp(&b.name));
        set.invalid.sort_by(|a, b| a.error.policy.cmp(&b.error.policy));
        set
    }

    /// An empty set: admits everything.
    pub fn empty() -> PolicySet {
        PolicySet { policies: Vec::new(), invalid: Vec::new() }
    }

    /// Why each invalid policy could not be compiled.
    pub fn errors(&self) -> impl Iterator<Item = &PolicyError> {
        self.invalid.iter().map(|i| &i.error)
    }

    pub fn policies(&self) -> &[CompiledPolicy] {
        &self.policies
    }

    pub fn get(&self, name: &str) -> Option<&CompiledPolicy> {
        self.policies.iter().find(|p| p.name == name)
    }

    /// The estimated steps of classifying `input`: the policies that match it
    /// (budget::Estimates), at the size of the largest collection in the review.
    /// Above budget::INLINE_LIMIT the webhook classifies off its async workers,
    /// so an expensive policy, or a huge object, delays nothing else.
    pub fn estimate_for(&self, input: &ReviewInput) -> u64 {
        let data = [input.object.as_ref(), input.old_object.as_ref(), input.namespace_object.as_deref()];
        let largest = budget::largest_collection(data.into_iter().flatten()).max(input.user.groups.len() as u64);
        let largest = largest.saturating_mul(budget::COMBINED);
        let all = self.policies.iter().map(|p| p.estimates.at(largest)).fold(0, u64::saturating_add);
        // The common case: every policy together is cheap, so no matching here
        // (a review's cost is what issue 25 measures).
        if all <= budget::INLINE_LIMIT {
            return all;
        }
        self.policies
            .iter()
            .filter(|p| matching::matches(&p.spec.match_, input))
            .map(|p| p.estimates.at(largest))
            .fold(0, u64::saturating_add)
    }

    /// Whether any policy's match rules (of valid and invalid policies alike) name
    /// this request's resource and operation: what the webhook configuration sends
    /// to the gate. Anything else should never reach it.
    pub fn covers(&self, input: &ReviewInput) -> bool {
        let specs = self.policies.iter().map(|p| &p.spec.match_).chain(self.invalid.iter().map(|i| &i.spec.match_));
        specs.into_iter().any(|m| m.rules.iter().any(|r| matching::rule_matches(r, MatchPolicy::Equivalent, input)))
    }
}

/// A rule that fired: the same record the ApprovalRequest keeps as a reason.
pub use crate::crd::HoldReason as FiredRule;

/// A rule that could not be evaluated (or a matching policy that is invalid).
/// In an enforcing policy it holds the change with risk High.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvalError {
    pub policy: String,
    /// The rule or variable, e.g. `rule "prod-deploy"`.
    pub location: String,
    /// The route of the failing rule (the policy's first rule's route for a
    /// variable or an invalid policy), so somebody is asked.
    pub route: String,
    pub action_class: ActionClass,
    pub message: String,
}

/// The outcome of classifying one request.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Assessment {
    /// Policies whose `match` selected the request, in evaluation order.
    pub matched_policies: Vec<String>,
    /// Every rule of an enforcing policy that fired, Low ones included.
    pub fired: Vec<FiredRule>,
    /// Highest risk among fired rules and errors (Low when nothing fired).
    pub risk: Risk,
    /// Most urgent action class among the rules and errors that hold the change.
    pub action_class: ActionClass,
    /// Routes that must approve: those of every holding rule and error.
    pub routes: BTreeSet<String>,
    /// The estimate of the first matching policy with a pricing table.
    pub cost: Option<Cost>,
    /// Rules and errors that would have held the change, from Audit policies.
    pub audit: Vec<FiredRule>,
    pub audit_errors: Vec<EvalError>,
    /// Runtime errors in enforcing policies: each holds the change.
    pub errors: Vec<EvalError>,
    /// (policy, rule) of enforcing rules not evaluated because they read the
    /// requester and the input names none (`kubectl signoff check` without --as).
    pub unknown_requester: Vec<(String, String)>,
}

impl Default for Assessment {
    fn default() -> Self {
        Assessment {
            matched_policies: Vec::new(),
            fired: Vec::new(),
            risk: Risk::Low,
            action_class: ActionClass::Routine,
            routes: BTreeSet::new(),
            cost: None,
            audit: Vec::new(),
            audit_errors: Vec::new(),
            unknown_requester: Vec::new(),
            errors: Vec::new(),
        }
    }
}

impl Assessment {
    /// Whether the change must wait for approval.
    pub fn held(&self) -> bool {
        !self.errors.is_empty() || self.fired.iter().any(|f| f.risk >= Risk::Medium)
    }

    /// One line per reason: the fired rules' messages, then the errors.
    pub fn reasons(&self) -> Vec<String> {
        self.fired
            .iter()
            .filter(|f| f.risk >= Risk::Medium)
            .map(|f| format!("{}/{}: {}", f.policy, f.rule, f.message))
            .chain(self.errors.iter().map(|e| format!("{}/{}: evaluation error: {}", e.policy, e.location, e.message)))
            .collect()
    }

    fn add_holding(&mut self, risk: Risk, class: ActionClass, route: &str) {
        self.risk = self.risk.max(risk);
        self.action_class = self.action_class.max(class);
        if !self.routes.contains(route) {
            self.routes.insert(route.to_string());
        }
    }
}

fn matching_invalid<'s>(set: &'s PolicySet, input: &ReviewInput) -> impl Iterator<Item = &'s InvalidPolicy> {
    set.invalid.iter().filter(move |p| !p.spec.match_.rules.is_empty() && matching::matches(&p.spec.match_, input))
}

/// Classifies one request against every policy. Never panics; never lets a
/// change through when a matching enforcing rule could not be evaluated.
pub fn classify(input: &ReviewInput, set: &PolicySet) -> Assessment {
    let mut out = Assessment::default();
    let matched: Vec<&CompiledPolicy> =
        set.policies.iter().filter(|p| matching::matches(&p.spec.match_, input)).collect();
    for bad in matching_invalid(set, input) {
        let route = bad.spec.rules.first().map(|r| r.route.clone()).unwrap_or_else(|| "engineering".into());
        let error = EvalError {
            policy: bad.error.policy.clone(),
            location: "policy".into(),
            route,
            action_class: ActionClass::Routine,
            message: format!("policy is invalid and cannot be evaluated: {}", bad.error),
        };
        out.matched_policies.push(bad.error.policy.clone());
        if bad.spec.mode == PolicyMode::Audit {
            out.audit_errors.push(error);
        } else {
            out.add_holding(Risk::High, error.action_class, &error.route);
            out.errors.push(error);
        }
    }
    if matched.is_empty() {
        return out;
    }
    let needs = matched.iter().fold(Needs::default(), |n, p| n.union(p.needs));
    // The interpreter's scopes, made only if some expression needs one (the
    // fast path answers most rules without). Policies with a map literal read
    // fully converted objects (see lazyjson).
    let lazy = OnceCell::new();
    let eager = OnceCell::new();
    // Map literals the fast path builds, for the whole classification.
    let arena = typed_arena::Arena::new();
    for policy in matched {
        out.matched_policies.push(policy.name.clone());
        let cost = policy
            .spec
            .pricing
            .as_ref()
            .map(|p| cost::estimate(input.old_object.as_ref(), input.object.as_ref(), &input.sub_resource, p));
        if out.cost.is_none() {
            out.cost = cost.clone();
        }
        let parent = || match policy.needs.map_literal {
            true => eager.get_or_init(|| request_scope(input, needs, true)),
            false => lazy.get_or_init(|| request_scope(input, needs, false)),
        };
        evaluate_policy(policy, cost, input, &arena, &parent, &mut out);
    }
    out
}

/// The variables every policy's expressions see: `request`, `object`,
/// `oldObject`, `namespaceObject`, each bound only when some expression reads it.
/// Lazy views (lazyjson) unless `eager`, which converts the objects whole.
fn request_scope<'v>(input: &'v ReviewInput, needs: Needs, eager: bool) -> Context<'v, 'v> {
    let mut scope = Context::with_env(Arc::clone(&ENV));
    let json_or_null = |v: Option<&'v serde_json::Value>| -> Box<dyn cel::common::value::Val + 'v> {
        match v {
            Some(v) if eager => celenv::json_to_val(v),
            Some(v) => lazyjson::json_val(v),
            None => Box::new(cel::common::types::CelNull),
        }
    };
    if needs.request {
        scope.add_variable_as_val("request", input.request_value());
    }
    if needs.object {
        scope.add_variable_as_val("object", json_or_null(input.object.as_ref()));
    }
    if needs.old_object {
        scope.add_variable_as_val("oldObject", json_or_null(input.old_object.as_ref()));
    }
    if needs.namespace_object {
        scope.add_variable_as_val("namespaceObject", json_or_null(input.namespace_object.as_deref()));
    }
    scope
}

/// The interpreter's scope for one policy: its parent plus `cost` (given when
/// the policy reads it) and `variables` when the policy has them. Err names
/// the variable that failed.
fn interpreter_scope<'p, 'v>(
    policy: &CompiledPolicy,
    parent: &'p Context<'v, 'v>,
    cost: Option<&Cost>,
) -> Result<Option<Context<'p, 'v>>, (String, String)> {
    // A scope of its own only for `cost` and `variables`: every scope is one more
    // level each variable lookup walks through.
    if cost.is_none() && policy.variables.is_empty() {
        return Ok(None);
    }
    let mut scope = parent.new_inner_scope();
    if let Some(c) = cost {
        scope.add_variable_from_value(
            "cost",
            cel_map([
                ("monthlyBefore", Value::Float(c.monthly_before)),
                ("monthlyAfter", Value::Float(c.monthly_after)),
                ("monthlyDelta", Value::Float(c.monthly_delta)),
                ("currency", cel_str(&c.currency)),
            ]),
        );
    }
    if !policy.variables.is_empty() {
        use cel::common::types::{CelMap, CelMapKey};
        // Values stay interpreter values (no round trip through `Value`): a
        // variable such as `namespaceObject.metadata` stays a lazy view.
        let mut vars: HashMap<CelMapKey<'_>, Box<dyn cel::common::value::Val + '_>> =
            HashMap::with_capacity(policy.variables.len());
        for (name, program) in &policy.variables {
            scope.add_variable_as_val("variables", Box::new(CelMap::from(vars.clone())));
            match Value::resolve_val(&program.run, &scope).map(|v| v.into_owned()) {
                Ok(v) => {
                    vars.insert(CelMapKey::from(name.clone()), v);
                }
                Err(e) => return Err((format!("variable {name:?}"), e.to_string())),
            }
        }
        scope.add_variable_as_val("variables", Box::new(CelMap::from(vars)));
    }
    Ok(Some(scope))
}

/// A rule's or message's value: from the fast path when it can tell, else from
/// the interpreter.
enum Evaluated<T> {
    Fast(T),
    Interpreted(cel::ResolveResult),
}

fn evaluate_policy<'v>(
    policy: &CompiledPolicy,
    cost: Option<Cost>,
    input: &'v ReviewInput,
    arena: &typed_arena::Arena<serde_json::Value>,
    parent: &dyn Fn() -> &'v Context<'v, 'v>,
    out: &mut Assessment,
) {
    let audit = policy.spec.mode == PolicyMode::Audit;
    let requester_unknown = input.user.is_unknown();
    // One budget for the whole policy: its comprehensions together iterate at
    // most budget::RUNTIME_LIMIT elements; past it each rule fails, and holds.
    budget::reset();
    let cost = policy.needs.cost.then(|| cost.unwrap_or_else(|| Cost::zero("USD")));
    let record_error = |out: &mut Assessment, location: String, route: &str, class: ActionClass, message: String| {
        let e =
            EvalError { policy: policy.name.clone(), location, route: route.to_string(), action_class: class, message };
        if audit {
            out.audit_errors.push(e);
        } else {
            out.add_holding(Risk::High, class, route);
            out.errors.push(e);
        }
    };
    let first_route = policy.rules.first().map(|r| r.route.as_str()).unwrap_or("engineering");

    // The variables, by the fast path if it can evaluate every one.
    let mut variables: Vec<(&str, fast::V)> = Vec::with_capacity(policy.variables.len());
    let start = budget::remaining();
    let mut fast_ok = true;
    for (name, program) in &policy.variables {
        let roots = fast::Roots { input, cost: cost.as_ref(), variables: &variables, arena };
        match fast::eval(&program.run, &roots) {
            Some(v) => variables.push((name, v)),
            None => {
                fast_ok = false;
                budget::set_remaining(start);
                break;
            }
        }
    }
    let roots = fast::Roots { input, cost: cost.as_ref(), variables: &variables, arena };
    // The interpreter's scope, made the first time something needs it.
    let interpreter: OnceCell<Result<Option<Context>, (String, String)>> = OnceCell::new();
    let interpreter_ready = || {
        interpreter.get_or_init(|| {
            let before = budget::remaining();
            let scope = interpreter_scope(policy, parent(), cost.as_ref());
            if fast_ok {
                // The fast path's variables were charged already.
                budget::set_remaining(before);
            }
            scope
        })
    };
    let interpret = |program: &CompiledExpr| -> Result<cel::ResolveResult, (String, String)> {
        match interpreter_ready() {
            Ok(own) => Ok(program.execute(own.as_ref().unwrap_or_else(|| parent()))),
            Err(e) => Err(e.clone()),
        }
    };
    // Debug builds check every fast answer against the interpreter.
    let check = |program: &CompiledExpr, fast: &Value| {
        if cfg!(debug_assertions) {
            let before = budget::remaining();
            let slow = interpret(program);
            budget::set_remaining(before);
            if let Ok(slow) = slow {
                assert_eq!(
                    slow.as_ref(),
                    Ok(fast),
                    "fast CEL differs from the interpreter on {:?} in policy {}",
                    program.run,
                    policy.name
                );
            }
        }
    };
    let evaluate_rule = |program: &CompiledExpr| -> Result<Evaluated<bool>, (String, String)> {
        if fast_ok && let Some(fast::V::Bool(b)) = fast::eval(&program.run, &roots) {
            check(program, &Value::Bool(b));
            return Ok(Evaluated::Fast(b));
        }
        interpret(program).map(Evaluated::Interpreted)
    };
    let evaluate_message = |program: &CompiledExpr| -> Result<Evaluated<String>, (String, String)> {
        if fast_ok && let Some(fast::V::Str(s)) = fast::eval(&program.run, &roots) {
            check(program, &Value::String(Arc::new(s.to_string())));
            return Ok(Evaluated::Fast(s.into_owned()));
        }
        interpret(program).map(Evaluated::Interpreted)
    };

    if !fast_ok && let Err((location, message)) = interpreter_ready() {
        // A variable that cannot be evaluated makes the whole policy
        // unevaluable: hold (fail closed) and name the variable.
        return record_error(out, location.clone(), first_route, ActionClass::Routine, message.clone());
    }
    for rule in &policy.rules {
        if requester_unknown && rule.reads_requester {
            if !audit {
                out.unknown_requester.push((policy.name.clone(), rule.name.clone()));
            }
            continue;
        }
        let fired = match evaluate_rule(&rule.expression) {
            Ok(Evaluated::Fast(b) | Evaluated::Interpreted(Ok(Value::Bool(b)))) => b,
            Ok(Evaluated::Interpreted(Ok(other))) => {
                let message = format!("expression returned {other:?}, not a bool");
                record_error(out, format!("rule {:?}", rule.name), &rule.route, rule.action_class, message);
                continue;
            }
            Ok(Evaluated::Interpreted(Err(e))) => {
                record_error(out, format!("rule {:?}", rule.name), &rule.route, rule.action_class, e.to_string());
                continue;
            }
            Err((location, message)) => return record_error(out, location, first_route, ActionClass::Routine, message),
        };
        if !fired {
            continue;
        }
        let message = match &rule.message {
            Message::Static(m) => m.clone(),
            Message::Expression(p) => match evaluate_message(p) {
                Ok(Evaluated::Fast(s)) => s,
                Ok(Evaluated::Interpreted(Ok(Value::String(s)))) => s.to_string(),
                Ok(Evaluated::Interpreted(Ok(other))) => {
                    format!("rule {} fired (messageExpression returned {other:?})", rule.name)
                }
                Ok(Evaluated::Interpreted(Err(e))) => {
                    format!("rule {} fired (messageExpression failed: {e})", rule.name)
                }
                Err((_, e)) => format!("rule {} fired (messageExpression failed: {e})", rule.name),
            },
        };
        let fired = FiredRule {
            policy: policy.name.clone(),
            rule: rule.name.clone(),
            risk: rule.risk,
            route: rule.route.clone(),
            action_class: rule.action_class,
            message,
        };
        if audit {
            if rule.risk >= Risk::Medium {
                out.audit.push(fired);
            }
        } else {
            if rule.risk >= Risk::Medium {
                out.add_holding(rule.risk, rule.action_class, &rule.route);
            }
            out.fired.push(fired);
        }
    }
}

#[cfg(test)]
mod tests;
