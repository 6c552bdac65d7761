//! Classifying a realistic Deployment update (image change in production):
//! against 20 rules (issue 11's target: <= 20 us), the same 20 rules run the
//! naive way with the `cel` crate (baseline), the example policies, 100 rules,
//! and no policy at all.
//!
//! cargo bench --bench classify -- --warm-up-time 1 --measurement-time 3

#[path = "fixtures/deployment.rs"]
mod fixture;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use fixture::deployment;
use serde_json::json;
use signoff::crd::{
    ActionClass, EscalationPolicy, EscalationPolicySpec, MatchSpec, Operation, ResourceRule, Risk, RiskRule,
};
use signoff::policy::{Gvk, Gvr, PolicySet, ReviewInput, UserInfo, classify};

fn input() -> ReviewInput {
    ReviewInput {
        operation: Operation::Update,
        user: UserInfo {
            username: "alice".into(),
            uid: "u-1".into(),
            groups: vec!["team:payments".into(), "system:authenticated".into()],
        },
        kind: Gvk { group: "apps".into(), version: "v1".into(), kind: "Deployment".into() },
        resource: Gvr { group: "apps".into(), version: "v1".into(), resource: "deployments".into() },
        sub_resource: String::new(),
        namespace: "payments-prod".into(),
        name: "web".into(),
        dry_run: false,
        object: Some(deployment("payments-prod", "registry.example.com/payments/web:1.5.0", 3)),
        old_object: Some(deployment("payments-prod", "registry.example.com/payments/web:1.4.2", 3)),
        namespace_object: Some(std::sync::Arc::new(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "payments-prod", "labels": {"signoff.dev/environment": "production",
                                                             "signoff.dev/owner": "payments"}}}))),
    }
}

fn example_policies() -> PolicySet {
    let dir = signoff_testenv::checkout().unwrap_or_else(|e| panic!("{e}")).join("policies");
    signoff::cli::check::load_policies(&dir).expect("example policies compile")
}

/// Ten rules over Deployments, none of which fires on the input.
const RULES: [&str; 10] = [
    "object.spec.replicas > 50",
    "object.spec.template.spec.containers.exists(c, c.image.endsWith(':latest'))",
    "object.spec.template.spec.containers.exists(c, has(c.resources.limits) && quantity(c.resources.limits.cpu).isGreaterThan(quantity('16')))",
    "has(object.metadata.labels) && 'forbidden' in object.metadata.labels",
    "request.userInfo.username.startsWith('system:anonymous')",
    "namespaceObject.metadata.labels['signoff.dev/environment'] == 'restricted'",
    "object.spec.template.spec.containers.filter(c, c.name.matches('^debug-')).size() > 0",
    "oldObject != null && object.spec.replicas < oldObject.spec.replicas - 10",
    "object.metadata.name.lowerAscii().contains('tmp')",
    "has(object.spec.template.spec.hostNetwork) && object.spec.template.spec.hostNetwork",
];

/// `policies` policies × 10 rules over Deployments, none of which fires.
fn rules(policies: usize) -> PolicySet {
    let policies: Vec<EscalationPolicy> = (0..policies)
        .map(|p| {
            let rules = RULES
                .iter()
                .enumerate()
                .map(|(i, e)| RiskRule {
                    name: format!("r{i}"),
                    expression: e.to_string(),
                    risk: Risk::Medium,
                    route: "engineering".into(),
                    action_class: ActionClass::Routine,
                    message: Some("m".into()),
                    message_expression: None,
                })
                .collect();
            let spec = EscalationPolicySpec {
                match_: MatchSpec {
                    rules: vec![ResourceRule {
                        operations: vec![Operation::Create, Operation::Update],
                        api_groups: vec!["apps".into()],
                        api_versions: vec!["v1".into()],
                        resources: vec!["deployments".into()],
                        scope: None,
                    }],
                    ..Default::default()
                },
                rules,
                ..Default::default()
            };
            EscalationPolicy::new(&format!("p{p}"), spec)
        })
        .collect();
    let set = PolicySet::new(&policies);
    assert_eq!(set.errors().count(), 0);
    set
}

/// The naive use of the `cel` crate that issue 11 measured: per request a fresh
/// root Context, every object converted whole into CEL values, each rule run.
struct Naive {
    env: Arc<cel::Env>,
    programs: Vec<cel::Program>,
}

impl Naive {
    fn new(rules: usize) -> Naive {
        let env = Arc::new(signoff::policy::celenv::build_env().unwrap());
        let programs = RULES.iter().cycle().take(rules).map(|r| env.compile(r).unwrap()).collect();
        Naive { env, programs }
    }

    fn classify(&self, input: &ReviewInput) -> usize {
        use signoff::policy::celenv::json_to_cel;
        let mut ctx = cel::Context::with_env(Arc::clone(&self.env));
        let request = json!({
            "operation": "UPDATE",
            "userInfo": {"username": input.user.username, "uid": input.user.uid, "groups": input.user.groups},
            "kind": {"group": input.kind.group, "version": input.kind.version, "kind": input.kind.kind},
            "resource": {"group": input.resource.group, "version": input.resource.version, "resource": input.resource.resource},
            "subResource": input.sub_resource, "namespace": input.namespace, "name": input.name, "dryRun": input.dry_run,
        });
        ctx.add_variable_from_value("request", json_to_cel(&request));
        let null = serde_json::Value::Null;
        ctx.add_variable_from_value("object", json_to_cel(input.object.as_ref().unwrap_or(&null)));
        ctx.add_variable_from_value("oldObject", json_to_cel(input.old_object.as_ref().unwrap_or(&null)));
        ctx.add_variable_from_value("namespaceObject", json_to_cel(input.namespace_object.as_deref().unwrap_or(&null)));
        self.programs.iter().filter(|p| p.execute(&ctx) == Ok(cel::Value::Bool(true))).count()
    }
}

/// The largest Deployment update the webhook still classifies on its async
/// workers with the example policies (PolicySet::estimate_for at most
/// INLINE_LIMIT): `k` containers, each with `k` env entries and `k` added
/// capabilities, `k` as large as that allows. Its time is the most one review
/// holds a worker.
fn largest_inline(examples: &PolicySet) -> (usize, ReviewInput) {
    let sized = |k: usize| {
        let mut i = input();
        let container = |n: usize| {
            json!({"name": format!("c{n}"), "image": "registry.example.com/payments/web:1.5.0",
                   "env": (0..k).map(|e| json!({"name": format!("V{e}"), "value": "x"})).collect::<Vec<_>>(),
                   "securityContext": {"capabilities": {"add": vec!["NET_BIND_SERVICE"; k]}}})
        };
        let containers: Vec<_> = (0..k).map(container).collect();
        i.object.as_mut().unwrap()["spec"]["template"]["spec"]["containers"] = json!(containers);
        i
    };
    let k = (1..).take_while(|k| examples.estimate_for(&sized(*k)) <= signoff::policy::budget::INLINE_LIMIT).last();
    let k = k.expect("the smallest Deployment is classified inline");
    (k, sized(k))
}

fn bench(c: &mut Criterion) {
    let input = input();
    let examples = example_policies();
    let twenty = rules(2);
    let hundred = rules(10);
    let empty = PolicySet::empty();
    let naive = Naive::new(20);
    assert!(classify(&input, &examples).held());
    assert!(!classify(&input, &twenty).held());
    assert!(!classify(&input, &hundred).held());
    assert_eq!(naive.classify(&input), 0);
    let mut g = c.benchmark_group("classify deployment update");
    g.bench_function("no policies (baseline)", |b| b.iter(|| classify(black_box(&input), black_box(&empty))));
    g.bench_function("20 rules, naive cel (baseline)", |b| b.iter(|| naive.classify(black_box(&input))));
    g.bench_function("20 rules", |b| b.iter(|| classify(black_box(&input), black_box(&twenty))));
    g.bench_function("example policies", |b| b.iter(|| classify(black_box(&input), black_box(&examples))));
    g.bench_function("100 rules", |b| b.iter(|| classify(black_box(&input), black_box(&hundred))));
    let (k, largest) = largest_inline(&examples);
    eprintln!("classify: the largest review classified inline has {k} containers x {k} env and capabilities");
    g.bench_function("example policies, largest inline review", |b| {
        b.iter(|| classify(black_box(&largest), black_box(&examples)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
