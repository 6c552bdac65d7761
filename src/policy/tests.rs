use super::*;
use crate::crd::{MatchPolicy, MatchSpec, ResourceRule, RiskRule, RuleScope, Variable};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use serde_json::json;

fn rr(ops: &[Operation], groups: &[&str], versions: &[&str], resources: &[&str]) -> ResourceRule {
    ResourceRule {
        operations: ops.to_vec(),
        api_groups: groups.iter().map(|s| s.to_string()).collect(),
        api_versions: versions.iter().map(|s| s.to_string()).collect(),
        resources: resources.iter().map(|s| s.to_string()).collect(),
        scope: None,
    }
}

pub(super) fn input(op: Operation, gvr: (&str, &str, &str), sub: &str, ns: &str) -> ReviewInput {
    ReviewInput {
        operation: op,
        user: UserInfo { username: "alice".into(), uid: "u1".into(), groups: vec!["dev".into()] },
        kind: Gvk { group: gvr.0.into(), version: gvr.1.into(), kind: "Deployment".into() },
        resource: Gvr { group: gvr.0.into(), version: gvr.1.into(), resource: gvr.2.into() },
        sub_resource: sub.into(),
        namespace: ns.into(),
        name: "web".into(),
        dry_run: false,
        object: Some(json!({"metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {"replicas": 3}})),
        old_object: None,
        namespace_object: Some(Arc::new(
            json!({"metadata": {"name": ns, "labels": {"signoff.dev/environment": "production"}}}),
        )),
    }
}

fn deploy_rule() -> ResourceRule {
    rr(&[Operation::Create, Operation::Update], &["apps"], &["v1"], &["deployments"])
}

#[test]
fn resource_rule_matching() {
    use Operation::*;
    let cases: Vec<(&str, ResourceRule, MatchPolicy, ReviewInput, bool)> = vec![
        ("exact", deploy_rule(), MatchPolicy::Exact, input(Create, ("apps", "v1", "deployments"), "", "p"), true),
        ("wrong op", deploy_rule(), MatchPolicy::Exact, input(Delete, ("apps", "v1", "deployments"), "", "p"), false),
        (
            "star op",
            rr(&[All], &["apps"], &["v1"], &["deployments"]),
            MatchPolicy::Exact,
            input(Delete, ("apps", "v1", "deployments"), "", "p"),
            true,
        ),
        (
            "main rule skips subresource",
            deploy_rule(),
            MatchPolicy::Exact,
            input(Update, ("apps", "v1", "deployments"), "scale", "p"),
            false,
        ),
        (
            "deployments/scale",
            rr(&[Update], &["apps"], &["v1"], &["deployments/scale"]),
            MatchPolicy::Exact,
            input(Update, ("apps", "v1", "deployments"), "scale", "p"),
            true,
        ),
        (
            "deployments/scale not main",
            rr(&[Update], &["apps"], &["v1"], &["deployments/scale"]),
            MatchPolicy::Exact,
            input(Update, ("apps", "v1", "deployments"), "", "p"),
            false,
        ),
        (
            "*/scale",
            rr(&[Update], &["*"], &["*"], &["*/scale"]),
            MatchPolicy::Exact,
            input(Update, ("apps", "v1", "statefulsets"), "scale", "p"),
            true,
        ),
        (
            "pods/exec",
            rr(&[Connect], &[""], &["v1"], &["pods/exec"]),
            MatchPolicy::Exact,
            input(Connect, ("", "v1", "pods"), "exec", "p"),
            true,
        ),
        (
            "pods/exec not attach",
            rr(&[Connect], &[""], &["v1"], &["pods/exec"]),
            MatchPolicy::Exact,
            input(Connect, ("", "v1", "pods"), "attach", "p"),
            false,
        ),
        (
            "pods/*",
            rr(&[Connect], &[""], &["v1"], &["pods/*"]),
            MatchPolicy::Exact,
            input(Connect, ("", "v1", "pods"), "portforward", "p"),
            true,
        ),
        (
            "* excludes subresources",
            rr(&[All], &["*"], &["*"], &["*"]),
            MatchPolicy::Exact,
            input(Create, ("", "v1", "pods"), "exec", "p"),
            false,
        ),
        (
            "*/* everything",
            rr(&[All], &["*"], &["*"], &["*/*"]),
            MatchPolicy::Exact,
            input(Create, ("", "v1", "pods"), "exec", "p"),
            true,
        ),
        (
            "core group is empty",
            rr(&[Create], &[""], &["v1"], &["secrets"]),
            MatchPolicy::Exact,
            input(Create, ("", "v1", "secrets"), "", "p"),
            true,
        ),
        (
            "other group",
            rr(&[Create], &[""], &["v1"], &["secrets"]),
            MatchPolicy::Exact,
            input(Create, ("x.io", "v1", "secrets"), "", "p"),
            false,
        ),
        (
            "exact other version",
            deploy_rule(),
            MatchPolicy::Exact,
            input(Create, ("apps", "v1beta2", "deployments"), "", "p"),
            false,
        ),
        (
            "equivalent other version",
            deploy_rule(),
            MatchPolicy::Equivalent,
            input(Create, ("apps", "v1beta2", "deployments"), "", "p"),
            true,
        ),
        (
            "equivalent extensions",
            deploy_rule(),
            MatchPolicy::Equivalent,
            input(Create, ("extensions", "v1beta1", "deployments"), "", "p"),
            true,
        ),
        (
            "exact extensions",
            deploy_rule(),
            MatchPolicy::Exact,
            input(Create, ("extensions", "v1beta1", "deployments"), "", "p"),
            false,
        ),
        (
            "equivalent ingress",
            rr(&[Create], &["networking.k8s.io"], &["v1"], &["ingresses"]),
            MatchPolicy::Equivalent,
            input(Create, ("extensions", "v1beta1", "ingresses"), "", "p"),
            true,
        ),
        (
            "equivalent keeps resource",
            deploy_rule(),
            MatchPolicy::Equivalent,
            input(Create, ("apps", "v1", "statefulsets"), "", "p"),
            false,
        ),
        (
            "equivalent keeps subresource",
            deploy_rule(),
            MatchPolicy::Equivalent,
            input(Update, ("extensions", "v1beta1", "deployments"), "scale", "p"),
            false,
        ),
    ];
    for (name, rule, policy, inp, want) in cases {
        assert_eq!(matching::rule_matches(&rule, policy, &inp), want, "{name}");
    }
}

#[test]
fn scope_matching() {
    let mut r = rr(&[Operation::All], &["*"], &["*"], &["*"]);
    let ns_obj = input(Operation::Create, ("", "v1", "configmaps"), "", "p");
    let cluster_obj = input(Operation::Create, ("rbac.authorization.k8s.io", "v1", "clusterroles"), "", "");
    let namespace = input(Operation::Create, ("", "v1", "namespaces"), "", "p");
    r.scope = Some(RuleScope::Namespaced);
    assert!(matching::rule_matches(&r, MatchPolicy::Exact, &ns_obj));
    assert!(!matching::rule_matches(&r, MatchPolicy::Exact, &cluster_obj));
    assert!(!matching::rule_matches(&r, MatchPolicy::Exact, &namespace), "a Namespace is cluster-scoped");
    r.scope = Some(RuleScope::Cluster);
    assert!(!matching::rule_matches(&r, MatchPolicy::Exact, &ns_obj));
    assert!(matching::rule_matches(&r, MatchPolicy::Exact, &cluster_obj));
    r.scope = Some(RuleScope::All);
    assert!(matching::rule_matches(&r, MatchPolicy::Exact, &cluster_obj));
}

fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: if values.is_empty() { None } else { Some(values.iter().map(|s| s.to_string()).collect()) },
    }
}

#[test]
fn label_selectors() {
    let labels: std::collections::BTreeMap<&str, &str> = [("env", "prod"), ("team", "pay")].into_iter().collect();
    let ml = |k: &str, v: &str| LabelSelector {
        match_labels: Some([(k.to_string(), v.to_string())].into()),
        ..Default::default()
    };
    let me = |r| LabelSelector { match_expressions: Some(vec![r]), ..Default::default() };
    let cases: Vec<(&str, LabelSelector, bool)> = vec![
        ("empty matches all", LabelSelector::default(), true),
        ("matchLabels hit", ml("env", "prod"), true),
        ("matchLabels miss", ml("env", "dev"), false),
        ("matchLabels absent", ml("zone", "a"), false),
        ("In hit", me(req("env", "In", &["prod", "staging"])), true),
        ("In miss", me(req("env", "In", &["dev"])), false),
        ("In absent key", me(req("zone", "In", &["a"])), false),
        ("NotIn hit", me(req("env", "NotIn", &["dev"])), true),
        ("NotIn miss", me(req("env", "NotIn", &["prod"])), false),
        ("NotIn absent key", me(req("zone", "NotIn", &["a"])), true),
        ("Exists", me(req("team", "Exists", &[])), true),
        ("Exists miss", me(req("zone", "Exists", &[])), false),
        ("DoesNotExist", me(req("zone", "DoesNotExist", &[])), true),
        ("DoesNotExist miss", me(req("team", "DoesNotExist", &[])), false),
        ("unknown operator fails closed", me(req("team", "Bogus", &[])), false),
    ];
    for (name, sel, want) in cases {
        assert_eq!(matching::selector_matches(&sel, &labels), want, "{name}");
    }
}

fn prod_selector() -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some([("signoff.dev/environment".to_string(), "production".to_string())].into()),
        ..Default::default()
    })
}

#[test]
fn policy_match_selectors_and_exclusions() {
    let mut spec = MatchSpec { rules: vec![rr(&[Operation::All], &["*"], &["*"], &["*"])], ..Default::default() };
    spec.namespace_selector = prod_selector();
    let mut i = input(Operation::Create, ("apps", "v1", "deployments"), "", "p");
    assert!(matching::matches(&spec, &i));
    i.namespace_object = Some(Arc::new(json!({"metadata": {"labels": {"signoff.dev/environment": "development"}}})));
    assert!(!matching::matches(&spec, &i));
    i.namespace_object = None;
    assert!(!matching::matches(&spec, &i), "unknown namespace has no labels");
    // Cluster-scoped objects always match a namespaceSelector.
    let cr = input(Operation::Create, ("rbac.authorization.k8s.io", "v1", "clusterroles"), "", "");
    assert!(matching::matches(&spec, &ReviewInput { namespace_object: None, ..cr }));
    // A Namespace is matched on its own labels.
    let mut ns = input(Operation::Delete, ("", "v1", "namespaces"), "", "shop");
    ns.namespace_object = None;
    ns.object = None;
    ns.old_object = Some(json!({"metadata": {"name": "shop", "labels": {"signoff.dev/environment": "production"}}}));
    assert!(matching::matches(&spec, &ns));
    ns.old_object = Some(json!({"metadata": {"name": "shop", "labels": {"signoff.dev/environment": "development"}}}));
    assert!(!matching::matches(&spec, &ns));
    // Relabelling a namespace out of the selector is still seen: old or new labels.
    ns.operation = Operation::Update;
    ns.object = Some(json!({"metadata": {"name": "shop", "labels": {"signoff.dev/environment": "development"}}}));
    ns.old_object = Some(json!({"metadata": {"name": "shop", "labels": {"signoff.dev/environment": "production"}}}));
    assert!(matching::matches(&spec, &ns));

    // objectSelector: old or new object.
    let mut spec = MatchSpec { rules: vec![rr(&[Operation::All], &["*"], &["*"], &["*"])], ..Default::default() };
    spec.object_selector = Some(LabelSelector {
        match_labels: Some([("app".to_string(), "web".to_string())].into()),
        ..Default::default()
    });
    let mut i = input(Operation::Update, ("apps", "v1", "deployments"), "", "p");
    assert!(matching::matches(&spec, &i));
    i.object = Some(json!({"metadata": {"labels": {"app": "other"}}}));
    assert!(!matching::matches(&spec, &i));
    i.old_object = Some(json!({"metadata": {"labels": {"app": "web"}}}));
    assert!(matching::matches(&spec, &i), "old object matches");

    // Exclusions.
    let mut spec = MatchSpec { rules: vec![rr(&[Operation::All], &["*"], &["*"], &["*"])], ..Default::default() };
    let i = input(Operation::Create, ("apps", "v1", "deployments"), "", "p");
    spec.exclude_users = vec!["alice".into()];
    assert!(!matching::matches(&spec, &i));
    spec.exclude_users = vec!["bob".into()];
    spec.exclude_groups = vec!["dev".into()];
    assert!(!matching::matches(&spec, &i));
    spec.exclude_groups = vec!["ops".into()];
    assert!(matching::matches(&spec, &i));
}

fn rule(name: &str, expr: &str, risk: Risk, route: &str, class: ActionClass) -> RiskRule {
    RiskRule {
        name: name.into(),
        expression: expr.into(),
        risk,
        route: route.into(),
        action_class: class,
        message: Some(format!("{name} says so")),
        message_expression: None,
    }
}

fn policy(name: &str, rules: Vec<RiskRule>) -> EscalationPolicy {
    let spec = EscalationPolicySpec {
        match_: MatchSpec { rules: vec![rr(&[Operation::All], &["*"], &["*"], &["*", "*/*"])], ..Default::default() },
        rules,
        ..Default::default()
    };
    EscalationPolicy::new(name, spec)
}

/// Evaluates a boolean expression against a Deployment update.
fn eval(expr: &str) -> Result<bool, String> {
    let set = PolicySet::new([&policy("t", vec![rule("r", expr, Risk::High, "x", ActionClass::Routine)])]);
    if let Some(e) = set.errors().next() {
        return Err(e.to_string());
    }
    let mut i = input(Operation::Update, ("apps", "v1", "deployments"), "", "p");
    i.object = Some(json!({"metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 5, "template": {"spec": {"containers": [
            {"name": "a", "image": "reg.example.com/a:1.2", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
            {"name": "b", "image": "docker.io/b:latest"}]}}}}));
    i.old_object = Some(json!({"metadata": {"name": "web"}, "spec": {"replicas": 2}}));
    let a = classify(&i, &set);
    if let Some(e) = a.errors.first() {
        return Err(e.message.clone());
    }
    Ok(!a.fired.is_empty())
}

#[test]
fn helpers() {
    let truths = [
        // has() and the variables.
        "has(object.spec.replicas)",
        "!has(object.spec.paused)",
        "object.spec.replicas > oldObject.spec.replicas",
        "request.operation == 'UPDATE'",
        "request.userInfo.username == 'alice' && 'dev' in request.userInfo.groups",
        "request.kind.kind == 'Deployment' && request.resource.resource == 'deployments'",
        "request.resource.group == 'apps' && request.subResource == '' && request.namespace == 'p'",
        "request.name == 'web' && !request.dryRun",
        "namespaceObject.metadata.labels['signoff.dev/environment'] == 'production'",
        // Quantities.
        "quantity('500m').isLessThan(quantity('1'))",
        "quantity('2Gi').isGreaterThan(quantity('2G'))",
        "quantity('1').compareTo(quantity('1000m')) == 0",
        "quantity('1').compareTo(quantity('2')) == -1",
        "quantity('1Ki').asApproximateFloat() == 1024.0",
        "quantity('3').asInteger() == 3",
        "quantity('1').add(quantity('500m')) == quantity('1500m')",
        "quantity('2').sub(1) == quantity('1')",
        "quantity('-1').sign() == -1",
        "quantity('2').isInteger() && !quantity('1500m').isInteger()",
        "isQuantity('1Gi') && !isQuantity('lots')",
        "object.spec.template.spec.containers.exists(c, has(c.resources) && quantity(c.resources.requests.cpu).isLessThan(quantity('1')))",
        // Strings.
        "'PROD'.lowerAscii() == 'prod'",
        "'prod'.upperAscii() == 'PROD'",
        "'reg.example.com/a'.matches('^reg\\\\.example\\\\.com/')",
        "matches('payments-prod', '^payments-') && 'payments-prod'.matches('-prod$')",
        "'abc'.startsWith('ab') && 'abc'.endsWith('bc') && 'abc'.contains('b')",
        "'a,b,c'.split(',') == ['a', 'b', 'c']",
        "['a', 'b'].join('-') == 'a-b'",
        // Macros.
        "object.spec.template.spec.containers.all(c, c.name.size() == 1)",
        "object.spec.template.spec.containers.exists(c, c.image.endsWith(':latest'))",
        "object.spec.template.spec.containers.map(c, c.name) == ['a', 'b']",
        "object.spec.template.spec.containers.filter(c, c.image.startsWith('docker.io/')).size() == 1",
        "!object.spec.template.spec.containers.all(c, has(c.resources))",
    ];
    for e in truths {
        assert_eq!(eval(e), Ok(true), "{e}");
    }
    let falsehoods = ["quantity('1').isGreaterThan(quantity('1'))", "'x'.matches('^y')", "has(object.status)"];
    for e in falsehoods {
        assert_eq!(eval(e), Ok(false), "{e}");
    }
    let errors = [
        "object.spec.missing > 1",
        "quantity('lots').isGreaterThan(quantity('1'))",
        "quantity('1500m').asInteger() == 1",
        "object.spec.replicas == 'five' || object.metadata.name + 1 == 2",
        "1 / 0 == 1",
        "object.spec.replicas",
        "'x'.matches('(unclosed')",
    ];
    for e in errors {
        assert!(eval(e).is_err(), "{e} should be a runtime error");
    }
}

#[test]
fn compile_errors_name_policy_rule_and_position() {
    let bad = policy(
        "broken",
        vec![
            rule("ok", "true", Risk::Low, "x", ActionClass::Routine),
            rule("bad", "object.spec.(", Risk::High, "x", ActionClass::Routine),
        ],
    );
    let err = CompiledPolicy::compile(&bad).unwrap_err();
    assert_eq!(err.policy, "broken");
    assert_eq!(err.location, Location::Rule("bad".into()));
    assert!(err.position.is_some());
    let text = err.to_string();
    assert!(text.contains("\"broken\"") && text.contains("rule \"bad\"") && text.contains("line 1 column"), "{text}");

    let mut p = policy("vars", vec![rule("r", "variables.x", Risk::High, "x", ActionClass::Routine)]);
    p.spec.variables = vec![Variable { name: "x".into(), expression: "1 +".into() }];
    assert_eq!(CompiledPolicy::compile(&p).unwrap_err().location, Location::Variable("x".into()));

    let mut p = policy("msg", vec![rule("r", "true", Risk::High, "x", ActionClass::Routine)]);
    p.spec.rules[0].message_expression = Some("'a' +".into());
    assert_eq!(CompiledPolicy::compile(&p).unwrap_err().location, Location::MessageExpression("r".into()));

    let dup = policy(
        "dup",
        vec![
            rule("r", "true", Risk::High, "x", ActionClass::Routine),
            rule("r", "true", Risk::High, "x", ActionClass::Routine),
        ],
    );
    assert!(CompiledPolicy::compile(&dup).is_err());
    assert!(CompiledPolicy::compile(&policy("none", vec![])).is_err());
}

#[test]
fn invalid_policy_is_reported_and_holds_what_it_matches() {
    let good = policy("good", vec![rule("never", "false", Risk::High, "x", ActionClass::Routine)]);
    let bad = policy("bad", vec![rule("r", "object.(", Risk::High, "security", ActionClass::Routine)]);
    let set = PolicySet::new([&good, &bad]);
    assert_eq!(set.policies().len(), 1);
    assert_eq!(set.errors().map(|e| e.policy.as_str()).collect::<Vec<_>>(), ["bad"]);
    let a = classify(&input(Operation::Create, ("apps", "v1", "deployments"), "", "p"), &set);
    assert!(a.held());
    assert_eq!(a.risk, Risk::High);
    assert!(a.routes.contains("security"));
    assert!(a.errors[0].message.contains("invalid"));
}

#[test]
fn combining() {
    let p1 = policy(
        "a",
        vec![
            rule("sec", "true", Risk::Medium, "security", ActionClass::Routine),
            rule("low", "true", Risk::Low, "engineering", ActionClass::Destructive),
            rule("off", "false", Risk::High, "manager", ActionClass::Destructive),
        ],
    );
    let p2 = policy("b", vec![rule("fin", "true", Risk::High, "finance", ActionClass::TimeSensitive)]);
    let set = PolicySet::new([&p2, &p1]);
    let a = classify(&input(Operation::Create, ("apps", "v1", "deployments"), "", "p"), &set);
    assert!(a.held());
    assert_eq!(a.matched_policies, ["a", "b"]);
    assert_eq!(a.fired.iter().map(|f| f.rule.as_str()).collect::<Vec<_>>(), ["sec", "low", "fin"]);
    assert_eq!(a.risk, Risk::High);
    assert_eq!(a.action_class, ActionClass::TimeSensitive, "a Low rule does not set the class");
    assert_eq!(a.routes.iter().map(String::as_str).collect::<Vec<_>>(), ["finance", "security"]);
    assert_eq!(a.reasons().len(), 2);

    // Only Low rules: recorded, admitted.
    let low = PolicySet::new([&policy("l", vec![rule("low", "true", Risk::Low, "engineering", ActionClass::Routine)])]);
    let a = classify(&input(Operation::Create, ("apps", "v1", "deployments"), "", "p"), &low);
    assert!(!a.held());
    assert_eq!(a.fired.len(), 1);
    assert!(a.routes.is_empty());

    // No policy: admitted, nothing recorded.
    let a = classify(&input(Operation::Create, ("apps", "v1", "deployments"), "", "p"), &PolicySet::empty());
    assert!(!a.held() && a.fired.is_empty() && a.matched_policies.is_empty());
}

#[test]
fn message_expressions_variables_and_cost() {
    let mut p = policy(
        "p",
        vec![RiskRule {
            message: None,
            message_expression: Some("'scaling ' + object.metadata.name + ' to ' + string(variables.replicas)".into()),
            ..rule(
                "scale",
                "variables.big && cost.monthlyDelta > 100.0 && cost.currency == 'EUR'",
                Risk::Medium,
                "finance",
                ActionClass::Routine,
            )
        }],
    );
    p.spec.variables = vec![
        Variable { name: "replicas".into(), expression: "object.spec.replicas".into() },
        Variable { name: "big".into(), expression: "variables.replicas >= 3".into() },
    ];
    p.spec.pricing = Some(crate::crd::Pricing {
        currency: "EUR".into(),
        cpu_core_hour: 0.1,
        memory_gib_hour: 0.0,
        gpu_hour: 0.0,
        storage_gib_month: 0.0,
        load_balancer_month: 0.0,
        daemon_set_nodes: 3,
    });
    let set = PolicySet::new([&p]);
    let mut i = input(Operation::Update, ("apps", "v1", "deployments"), "", "p");
    let pod = json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]});
    i.object = Some(
        json!({"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3, "template": {"spec": pod}}}),
    );
    i.old_object = Some(
        json!({"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 1, "template": {"spec": pod}}}),
    );
    let a = classify(&i, &set);
    assert!(a.errors.is_empty(), "{:?}", a.errors);
    assert_eq!(a.fired[0].message, "scaling web to 3");
    // 2 more cores × 0.1 × 730 = 146.
    let c = a.cost.unwrap();
    assert!((c.monthly_delta - 146.0).abs() < 1e-9 && c.currency == "EUR");
}

#[test]
fn audit_mode_never_holds() {
    let mut p = policy(
        "audit",
        vec![
            rule("hi", "true", Risk::High, "security", ActionClass::Destructive),
            rule("boom", "object.nope.nope", Risk::High, "security", ActionClass::Routine),
        ],
    );
    p.spec.mode = PolicyMode::Audit;
    let a = classify(&input(Operation::Create, ("apps", "v1", "deployments"), "", "p"), &PolicySet::new([&p]));
    assert!(!a.held());
    assert!(a.fired.is_empty() && a.errors.is_empty() && a.routes.is_empty());
    assert_eq!(a.audit.len(), 1);
    assert_eq!(a.audit_errors.len(), 1);
    assert_eq!(a.risk, Risk::Low);
}

#[test]
fn runtime_errors_hold_and_name_the_rule() {
    let p = policy(
        "p",
        vec![
            rule("fine", "false", Risk::Low, "engineering", ActionClass::Routine),
            rule(
                "missing-field",
                "object.spec.template.spec.nodeName == 'x'",
                Risk::Low,
                "engineering",
                ActionClass::Routine,
            ),
            rule("not-bool", "object.spec.replicas", Risk::Medium, "finance", ActionClass::TimeSensitive),
        ],
    );
    let a = classify(&input(Operation::Create, ("apps", "v1", "deployments"), "", "p"), &PolicySet::new([&p]));
    assert!(a.held());
    assert_eq!(a.risk, Risk::High, "an error is High even for a Low rule");
    assert_eq!(a.errors.len(), 2);
    assert_eq!(a.errors[0].location, "rule \"missing-field\"");
    assert!(a.errors[1].message.contains("not a bool"));
    assert_eq!(a.action_class, ActionClass::TimeSensitive);
    assert!(a.routes.contains("engineering") && a.routes.contains("finance"));

    // oldObject is null on CREATE: reading it is an error, which holds.
    let p =
        policy("q", vec![rule("old", "oldObject.spec.replicas > 1", Risk::Low, "engineering", ActionClass::Routine)]);
    let a = classify(&input(Operation::Create, ("apps", "v1", "deployments"), "", "p"), &PolicySet::new([&p]));
    assert!(a.held());
    let p = policy("q", vec![rule("old", "oldObject == null", Risk::Medium, "engineering", ActionClass::Routine)]);
    let a = classify(&input(Operation::Create, ("apps", "v1", "deployments"), "", "p"), &PolicySet::new([&p]));
    assert!(a.held() && a.errors.is_empty());

    // A failing variable holds and names the variable.
    let mut p = policy("v", vec![rule("r", "variables.x > 1", Risk::Low, "engineering", ActionClass::Routine)]);
    p.spec.variables = vec![Variable { name: "x".into(), expression: "object.nope".into() }];
    let a = classify(&input(Operation::Create, ("apps", "v1", "deployments"), "", "p"), &PolicySet::new([&p]));
    assert!(a.held());
    assert_eq!(a.errors[0].location, "variable \"x\"");
}

#[test]
fn policy_set_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicySet>();
    assert_send_sync::<Assessment>();
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
            "[a-zA-Z0-9.:/-]{0,12}".prop_map(serde_json::Value::String),
            prop_oneof![Just("500m"), Just("2Gi"), Just("LoadBalancer"), Just("Deployment"), Just("1e400")]
                .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            let keys = prop_oneof![
                Just("metadata".to_string()),
                Just("labels".to_string()),
                Just("spec".to_string()),
                Just("kind".to_string()),
                Just("replicas".to_string()),
                Just("template".to_string()),
                Just("containers".to_string()),
                Just("resources".to_string()),
                Just("requests".to_string()),
                Just("cpu".to_string()),
                Just("type".to_string()),
                "[a-z]{1,6}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(keys, inner, 0..5)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn rich_set() -> PolicySet {
        let mut p = policy(
            "rich",
            vec![
                rule("a", "object.spec.replicas > oldObject.spec.replicas", Risk::High, "x", ActionClass::Routine),
                rule(
                    "b",
                    "object.spec.template.spec.containers.exists(c, quantity(c.resources.requests.cpu).isGreaterThan(quantity('1')))",
                    Risk::Medium,
                    "x",
                    ActionClass::Routine,
                ),
                rule("c", "cost.monthlyDelta > 10.0", Risk::Medium, "finance", ActionClass::Routine),
                rule(
                    "d",
                    "has(object.metadata.labels) && object.metadata.labels.all(k, k.startsWith('a'))",
                    Risk::Low,
                    "x",
                    ActionClass::Routine,
                ),
                rule(
                    "e",
                    "namespaceObject.metadata.labels['signoff.dev/environment'] == 'production'",
                    Risk::Medium,
                    "x",
                    ActionClass::Routine,
                ),
            ],
        );
        p.spec.pricing = Some(crate::crd::Pricing {
            currency: "USD".into(),
            cpu_core_hour: 0.04,
            memory_gib_hour: 0.005,
            gpu_hour: 2.0,
            storage_gib_month: 0.1,
            load_balancer_month: 18.0,
            daemon_set_nodes: 3,
        });
        PolicySet::new([&p])
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn classify_never_panics(object in arb_json(), old in arb_json(), ns in arb_json(), sub in prop_oneof![Just(""), Just("scale")]) {
            let set = rich_set();
            let mut i = input(Operation::Update, ("apps", "v1", "deployments"), sub, "p");
            i.object = Some(object);
            i.old_object = Some(old);
            i.namespace_object = Some(Arc::new(ns));
            let a = classify(&i, &set);
            // Either classified cleanly or held for an error: never silently admitted on error.
            prop_assert!(a.errors.is_empty() || a.held());
        }

        #[test]
        fn quantity_parse_never_panics(s in "\\PC{0,20}") {
            let _ = Quantity::parse(&s);
        }
    }
}

#[test]
fn from_admission_review() {
    use kube::core::DynamicObject;
    use kube::core::admission::{AdmissionRequest, AdmissionReview};
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "apps", "version": "v1", "kind": "Scale"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "subResource": "scale",
            "requestKind": {"group": "apps", "version": "v1", "kind": "Scale"},
            "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "requestSubResource": "scale",
            "name": "web", "namespace": "payments-prod", "operation": "UPDATE",
            "userInfo": {"username": "alice", "uid": "u1", "groups": ["team:payments"]},
            "object": {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web", "namespace": "payments-prod"}, "spec": {"replicas": 0}},
            "oldObject": {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web", "namespace": "payments-prod"}, "spec": {"replicas": 3}},
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions"}
        }
    }))
    .unwrap();
    let req: AdmissionRequest<DynamicObject> = review.try_into().unwrap();
    let ns = json!({"metadata": {"name": "payments-prod", "labels": {"signoff.dev/environment": "production", "signoff.dev/owner": "payments"}}});
    let json = |o: &Option<DynamicObject>| o.as_ref().map(|o| serde_json::to_value(o).unwrap());
    let i = ReviewInput::from_request(&req, json(&req.object), json(&req.old_object), Some(Arc::new(ns)));
    assert_eq!(i.operation, Operation::Update);
    assert_eq!(i.sub_resource, "scale");
    assert_eq!(i.user.groups, ["team:payments"]);
    assert_eq!(i.object.as_ref().unwrap()["spec"]["replicas"], 0);
    // The library holds scaling a production workload to zero (below its band).
    let text = std::fs::read_to_string("policies/workloads.yaml").unwrap();
    let p: EscalationPolicy = serde_yaml::from_str(&text).unwrap();
    let a = classify(&i, &PolicySet::new([&p]));
    assert!(a.errors.is_empty(), "{:?}", a.errors);
    assert!(a.held());
    let rules: Vec<&str> = a.fired.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(rules, ["replicas-outside-band"]);
    assert_eq!(
        a.fired[0].message,
        "Scale web scaled from 3 to 0 replicas in production (outside [max(2, old/2), old*2])"
    );
    assert_eq!(a.action_class, ActionClass::Routine);
}

#[test]
fn a_policy_set_covers_what_its_match_rules_name_and_nothing_else() {
    let mut p = policy("deploys", vec![rule("r", "true", Risk::High, "engineering", ActionClass::Routine)]);
    p.spec.match_.rules = vec![deploy_rule()];
    let mut broken = policy("broken", vec![rule("r", "not cel (", Risk::High, "engineering", ActionClass::Routine)]);
    broken.spec.match_.rules = vec![rr(&[Operation::Delete], &[""], &["v1"], &["secrets"])];
    let set = PolicySet::new([&p, &broken]);
    assert_eq!(set.errors().count(), 1);
    assert!(set.covers(&input(Operation::Update, ("apps", "v1", "deployments"), "", "prod")));
    // Equivalent: another version of the same resource.
    assert!(set.covers(&input(Operation::Create, ("apps", "v1beta2", "deployments"), "", "prod")));
    // An invalid policy's rules still count: its kinds are held, not refused as unknown.
    assert!(set.covers(&input(Operation::Delete, ("", "v1", "secrets"), "", "prod")));
    for (op, gvr, sub) in [
        (Operation::Delete, ("apps", "v1", "deployments"), ""),
        (Operation::Update, ("apps", "v1", "deployments"), "scale"),
        (Operation::Create, ("example.com", "v1", "frobnicators"), ""),
    ] {
        assert!(!set.covers(&input(op, gvr, sub, "prod")), "{op:?} {gvr:?} {sub}");
    }
    assert!(!PolicySet::empty().covers(&input(Operation::Update, ("apps", "v1", "deployments"), "", "prod")));
}

#[test]
fn map_literals_compare_with_object_fields_on_either_side() {
    // A policy with a map literal reads fully converted objects; one without reads
    // lazy views. Both answer the same.
    for (expr, expected) in [
        ("{'app': 'web'} == object.metadata.labels", true),
        ("object.metadata.labels == {'app': 'web'}", true),
        ("{'app': 'api'} == object.metadata.labels", false),
        ("[{'name': 'a'}] != object.spec.template.spec.containers", true),
        ("object.metadata.labels == object.metadata.labels", true),
        ("object.metadata != oldObject.metadata", true),
        ("object.spec.template.spec.containers[1] in object.spec.template.spec.containers", true),
    ] {
        assert_eq!(eval(expr), Ok(expected), "{expr}");
    }
}

/// A hostile or careless rule (issue 23, item 6): over the estimate it is
/// refused when written; over the runtime budget it holds, naming the rule,
/// and never admits; other rules and policies are evaluated as usual.
#[test]
fn expensive_rules_are_refused_when_written_and_hold_when_they_run_over() {
    let thousand = format!("[{}]", (0..1000).map(|i| i.to_string()).collect::<Vec<_>>().join(","));
    let hostile = format!("{thousand}.all(x, {thousand}.all(y, x != y || x == y))");
    let p = policy("hostile", vec![rule("loop", &hostile, Risk::Low, "x", ActionClass::Routine)]);
    let err = CompiledPolicy::compile(&p).unwrap_err();
    assert_eq!(err.location, Location::Rule("loop".into()));
    assert!(err.message.contains("estimated cost") && err.message.contains("exceeds the limit"), "{err}");

    // Estimated on an unknown list, which turns out to be long at run time.
    let nested = "object.data.items.all(x, object.data.items.all(y, x != y || x == y))";
    let set = PolicySet::new([
        &policy("careless", vec![rule("nested", nested, Risk::Low, "engineering", ActionClass::Routine)]),
        &policy("usual", vec![rule("always", "true", Risk::Low, "x", ActionClass::Routine)]),
    ]);
    assert_eq!(set.errors().count(), 0, "the estimate allows it");
    let with_items = |n: usize| {
        let mut i = input(Operation::Update, ("", "v1", "configmaps"), "", "p");
        i.object = Some(json!({"metadata": {"name": "c"}, "data": {"items": (0..n).collect::<Vec<_>>()}}));
        i
    };
    let small = classify(&with_items(10), &set);
    assert!(!small.held() && small.fired.len() == 2, "{small:?}");
    let big = classify(&with_items(1000), &set);
    assert!(big.held(), "over the budget holds: {big:?}");
    assert_eq!(big.errors.len(), 1, "{big:?}");
    assert_eq!((big.errors[0].policy.as_str(), big.errors[0].location.as_str()), ("careless", "rule \"nested\""));
    assert!(big.errors[0].message.contains("over the limit"), "{}", big.errors[0].message);
    assert!(big.fired.iter().any(|f| f.policy == "usual"), "the next policy has a budget of its own: {big:?}");
}

#[path = "../../benches/fixtures/deployment.rs"]
mod fixture;

mod inline {
    use super::*;

    fn update(object: serde_json::Value, old: serde_json::Value) -> ReviewInput {
        let mut i = input(Operation::Update, ("apps", "v1", "deployments"), "", "payments-prod");
        i.object = Some(object);
        i.old_object = Some(old);
        i.namespace_object = Some(Arc::new(json!({"metadata": {"name": "payments-prod",
            "labels": {"signoff.dev/environment": "production", "signoff.dev/owner": "payments"}}})));
        i
    }

    fn library() -> PolicySet {
        crate::cli::check::load_policies(std::path::Path::new("policies")).expect("the library compiles")
    }

    #[test]
    fn an_ordinary_deployment_update_is_classified_inline_by_the_library() {
        // Estimated with its own sizes, not the largest object a policy might see:
        // the hand-off to a blocking thread was a tenth of each review's CPU.
        let set = library();
        let i =
            update(fixture::deployment("payments-prod", "web:2", 3), fixture::deployment("payments-prod", "web:1", 3));
        let estimate = set.estimate_for(&i);
        assert!(estimate <= budget::INLINE_LIMIT, "estimated {estimate} steps");
    }

    #[test]
    fn a_review_with_a_large_collection_is_classified_off_the_async_workers() {
        let set = library();
        let mut big = fixture::deployment("payments-prod", "web:2", 3);
        let env: Vec<_> = (0..200).map(|i| json!({"name": format!("V{i}"), "value": "x"})).collect();
        big["spec"]["template"]["spec"]["containers"][0]["env"] = json!(env);
        let i = update(big, fixture::deployment("payments-prod", "web:1", 3));
        assert_eq!(set.estimate_for(&i), u64::MAX, "above the sizes estimated for: unbounded");
        // Wide enough to cost more than the inline limit, within the sizes known.
        let mut wide = fixture::deployment("payments-prod", "web:2", 3);
        let containers: Vec<_> = (0..40)
            .map(|i| json!({"name": format!("c{i}"), "image": "x", "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}))
            .collect();
        wide["spec"]["template"]["spec"]["containers"] = json!(containers);
        let i = update(wide, fixture::deployment("payments-prod", "web:1", 3));
        let estimate = set.estimate_for(&i);
        assert!(estimate > budget::INLINE_LIMIT && estimate < u64::MAX, "estimated {estimate} steps");
    }
}
