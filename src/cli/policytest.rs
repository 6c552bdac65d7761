//! `kubectl signoff test DIR`: prove policies on labelled cases, in the spirit of
//! `kyverno test`. Each case places a real object in an environment and an
//! operation and says what should happen (admitted, or held with its routes and
//! class); the verdict is the webhook's, computed offline as `check` does.
//! Prints the mismatches, the totals and a confusion table; exits 2 on any
//! mismatch, 1 on invalid input.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::check::{CheckError, CheckResult, Document, judge, load_policies, parse_documents};
use crate::crd::Operation;
use crate::policy::{PolicySet, ReviewInput, UserInfo};

/// Exit code when every case matches.
pub const EXIT_PASSED: i32 = 0;
/// Exit code on invalid input (cases, objects or policies).
pub const EXIT_INVALID: i32 = 1;
/// Exit code when at least one case does not match.
pub const EXIT_MISMATCH: i32 = 2;

/// The owning team of every environment's namespace, and the default requester.
pub const OWNER: &str = "shop";
pub const DEFAULT_USER: &str = "alice";

/// Prove policies on labelled cases.
///
/// DIR holds `cases/*.yaml` (or case files directly): each a list `cases:` of
/// {object, environment, operation, patch, user, namespaceLabels, expect, routes,
/// class, why}; `object` paths are relative to DIR. Environments are namespaces
/// `shop-<environment>` labelled `signoff.dev/environment` and owned by team
/// shop; the requester is alice in group team:shop unless a case says otherwise.
/// See policies/tests/README.md for the format and the labelling guide.
///
/// Exit status: 0 every case matches, 2 a case does not, 1 invalid input.
///
/// Examples:
///   kubectl signoff test policies/tests
///   kubectl signoff test my-cases/ --policies my-policies/ -o json
#[derive(Args, Debug, Clone)]
#[command(verbatim_doc_comment)]
pub struct TestArgs {
    /// Directory of cases.
    pub dir: PathBuf,

    /// Directory (or file) of EscalationPolicy manifests; default: DIR's parent
    /// when it holds YAML files (policies/tests -> policies), else ./policies.
    #[arg(long, env = "SIGNOFF_POLICIES", value_name = "DIR")]
    pub policies: Option<PathBuf>,

    /// Print every case, not only those that do not match.
    #[arg(short, long)]
    pub verbose: bool,

    /// Output format: table (default) or json (every case with its verdict).
    #[arg(short = 'o', long, value_parser = ["table", "json"], default_value = "table")]
    pub output: String,
}

/// One labelled case, as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Case {
    pub object: String,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub patch: Option<Value>,
    #[serde(default)]
    pub user: Option<CaseUser>,
    #[serde(default)]
    pub namespace_labels: BTreeMap<String, String>,
    pub expect: Expect,
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub class: Option<String>,
    #[serde(default)]
    pub why: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct CaseUser {
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Held,
    Admitted,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    cases: Vec<Case>,
}

/// A case made concrete: where it came from and the admission request it is.
pub struct Prepared {
    /// `cases/x.yaml#3`.
    pub at: String,
    pub case: Case,
    pub input: ReviewInput,
    /// The object as the case file names it, for the report.
    pub document: Document,
}

/// One case's outcome.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub at: String,
    pub object: String,
    pub kind: String,
    pub environment: String,
    pub operation: String,
    pub expected: String,
    pub got: String,
    pub matches: bool,
    /// Held, but some route the case expects is missing (a specialist not reached).
    pub missed_routes: Vec<String>,
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

fn verdict(admitted: bool, routes: &[String], class: &str) -> String {
    if admitted { "admitted".into() } else { format!("held [{}] {class}", routes.join(", ")) }
}

/// The case's namespace: `shop-<environment>`, labelled (with a suffix naming
/// its extra labels, so that every label set is a namespace of its own).
pub fn namespace_of(case: &Case) -> Option<(String, Value)> {
    use sha2::Digest;
    let env = case.environment.as_deref()?;
    let name = if case.namespace_labels.is_empty() {
        format!("{OWNER}-{env}")
    } else {
        let extra: Vec<String> = case.namespace_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let hash = sha2::Sha256::digest(extra.join(",").as_bytes());
        format!("{OWNER}-{env}-{:02x}{:02x}{:02x}", hash[0], hash[1], hash[2])
    };
    let mut labels: BTreeMap<String, String> = BTreeMap::from([
        ("signoff.dev/environment".to_string(), env.to_string()),
        ("signoff.dev/owner".to_string(), OWNER.to_string()),
    ]);
    labels.extend(case.namespace_labels.clone());
    Some((name.clone(), json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})))
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (_, Some(_)) => {
            *target = json!({});
            merge_patch(target, patch);
        }
        _ => *target = patch.clone(),
    }
}

/// Every case file under `dir` (its `cases/` when there is one), in order.
fn case_files(dir: &Path) -> Result<Vec<PathBuf>, CheckError> {
    let root = if dir.join("cases").is_dir() { dir.join("cases") } else { dir.to_path_buf() };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .map_err(|e| CheckError(format!("{}: {e}", root.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(CheckError(format!("{}: no case files (*.yaml with a `cases:` list)", root.display())));
    }
    Ok(files)
}

/// Reads every case and builds its admission request.
pub fn prepare(dir: &Path) -> Result<Vec<Prepared>, CheckError> {
    let mut out = Vec::new();
    for file in case_files(dir)? {
        let shown = file.strip_prefix(dir).unwrap_or(&file).display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|e| CheckError(format!("{}: {e}", file.display())))?;
        let parsed: CaseFile = serde_yaml::from_str(&text).map_err(|e| CheckError(format!("{shown}: {e}")))?;
        for (i, case) in parsed.cases.into_iter().enumerate() {
            let at = format!("{shown}#{i}");
            out.push(prepare_case(dir, at, case)?);
        }
    }
    Ok(out)
}

fn prepare_case(dir: &Path, at: String, case: Case) -> Result<Prepared, CheckError> {
    let bad = |why: String| CheckError(format!("{at}: {why}"));
    let path = dir.join(&case.object);
    let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("object {}: {e}", case.object)))?;
    let mut docs = parse_documents(&case.object, &text)?;
    if docs.len() != 1 {
        return Err(bad(format!("object {} holds {} documents; one object per file", case.object, docs.len())));
    }
    let mut document = docs.remove(0);
    let namespace = namespace_of(&case);
    if let (Some((ns, _)), Some(meta)) =
        (&namespace, document.object.get_mut("metadata").and_then(Value::as_object_mut))
    {
        meta.insert("namespace".into(), json!(ns));
    }
    let target = super::check::target_of(&document)?;
    if target.namespaced && namespace.is_none() {
        return Err(bad(format!("{} is namespaced: give the case an environment", target.kind.kind)));
    }
    let operation = match case.operation.as_deref().unwrap_or("CREATE") {
        "CREATE" => Operation::Create,
        "UPDATE" => Operation::Update,
        "DELETE" => Operation::Delete,
        other => return Err(bad(format!("operation {other:?}: expected CREATE, UPDATE or DELETE"))),
    };
    let (object, old_object) = match operation {
        Operation::Update => {
            let patch = case.patch.as_ref().ok_or_else(|| bad("an UPDATE needs a `patch`".into()))?;
            let mut new = document.object.clone();
            merge_patch(&mut new, patch);
            (Some(new), Some(document.object.clone()))
        }
        Operation::Delete => (None, Some(document.object.clone())),
        _ => (Some(document.object.clone()), None),
    };
    if case.expect == Expect::Held && (case.routes.is_empty() || case.class.is_none()) {
        return Err(bad("a held case names its routes and class".into()));
    }
    let user = match &case.user {
        Some(u) => UserInfo {
            username: u.username.clone(),
            uid: String::new(),
            groups: [u.groups.clone(), vec!["system:authenticated".into()]].concat(),
        },
        None => UserInfo {
            username: DEFAULT_USER.into(),
            uid: String::new(),
            groups: vec![format!("team:{OWNER}"), "system:authenticated".into()],
        },
    };
    let input = ReviewInput {
        operation,
        user,
        kind: target.kind.clone(),
        resource: target.resource.clone(),
        sub_resource: String::new(),
        namespace: if target.namespaced { target.namespace.clone() } else { String::new() },
        name: target.name.clone(),
        dry_run: false,
        object,
        old_object,
        namespace_object: if target.namespaced { namespace.map(|(_, o)| std::sync::Arc::new(o)) } else { None },
    };
    Ok(Prepared { at, case, input, document })
}

/// Compares a verdict with the case's label.
pub fn compare(p: &Prepared, r: &CheckResult) -> Outcome {
    let case = &p.case;
    let expected_routes: BTreeSet<&String> = case.routes.iter().collect();
    let got_routes: BTreeSet<&String> = r.routes.iter().collect();
    let held = !r.admitted;
    let matches = match case.expect {
        Expect::Admitted => r.admitted,
        Expect::Held => held && expected_routes == got_routes && case.class.as_deref() == Some(r.action_class.as_str()),
    };
    Outcome {
        at: p.at.clone(),
        object: case.object.clone(),
        kind: p.input.kind.kind.clone(),
        environment: case.environment.clone().unwrap_or_else(|| "cluster".into()),
        operation: format!("{:?}", p.input.operation).to_uppercase(),
        expected: match case.expect {
            Expect::Admitted => "admitted".into(),
            Expect::Held => verdict(false, &case.routes, case.class.as_deref().unwrap_or_default()),
        },
        got: verdict(r.admitted, &r.routes, &r.action_class),
        matches,
        missed_routes: if case.expect == Expect::Held && held {
            case.routes.iter().filter(|r| !got_routes.contains(r)).cloned().collect()
        } else {
            vec![]
        },
        reasons: r.reasons.clone(),
        why: case.why.clone(),
    }
}

/// Evaluates every case against `set`.
pub fn evaluate(cases: &[Prepared], set: &PolicySet) -> Vec<Outcome> {
    cases.iter().map(|p| compare(p, &judge(&p.input, set, &p.document))).collect()
}

/// Benign/risky x admitted/held, per kind and environment, and the totals.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Confusion {
    pub risky_held: usize,
    pub risky_admitted: usize,
    pub benign_admitted: usize,
    pub benign_held: usize,
}

impl Confusion {
    fn add(&mut self, o: &Outcome) {
        let risky = o.expected != "admitted";
        let held = o.got != "admitted";
        match (risky, held) {
            (true, true) => self.risky_held += 1,
            (true, false) => self.risky_admitted += 1,
            (false, false) => self.benign_admitted += 1,
            (false, true) => self.benign_held += 1,
        }
    }
}

/// The confusion table by (kind, environment), and in total.
pub fn confusion(outcomes: &[Outcome]) -> (BTreeMap<(String, String), Confusion>, Confusion) {
    let mut by: BTreeMap<(String, String), Confusion> = BTreeMap::new();
    let mut total = Confusion::default();
    for o in outcomes {
        by.entry((o.kind.clone(), o.environment.clone())).or_default().add(o);
        total.add(o);
    }
    (by, total)
}

fn percent(n: usize, d: usize) -> String {
    if d == 0 { "-".into() } else { format!("{:.1}%", 100.0 * n as f64 / d as f64) }
}

/// Writes the report: mismatches (or every case), totals, the confusion table.
pub fn write_report(outcomes: &[Outcome], verbose: bool, out: &mut dyn Write) -> std::io::Result<()> {
    for o in outcomes.iter().filter(|o| verbose || !o.matches) {
        let mark = if o.matches { "ok  " } else { "FAIL" };
        writeln!(
            out,
            "{mark} {} {} {} {}: expected {}, got {}",
            o.at, o.operation, o.environment, o.object, o.expected, o.got
        )?;
        if !o.matches {
            if let Some(why) = &o.why {
                writeln!(out, "       label: {why}")?;
            }
            for r in &o.reasons {
                writeln!(out, "       - {r}")?;
            }
        }
    }
    let (by, total) = confusion(outcomes);
    let failed = outcomes.iter().filter(|o| !o.matches).count();
    let held_risky: Vec<&Outcome> =
        outcomes.iter().filter(|o| o.expected != "admitted" && o.got != "admitted").collect();
    let fully_routed = held_risky.iter().filter(|o| o.missed_routes.is_empty()).count();
    writeln!(out)?;
    writeln!(out, "{} cases: {} match, {failed} do not", outcomes.len(), outcomes.len() - failed)?;
    let risky = total.risky_held + total.risky_admitted;
    let benign = total.benign_admitted + total.benign_held;
    writeln!(
        out,
        "risky changes admitted: {} of {risky} ({})",
        total.risky_admitted,
        percent(total.risky_admitted, risky)
    )?;
    writeln!(out, "benign changes held: {} of {benign} ({})", total.benign_held, percent(total.benign_held, benign))?;
    writeln!(
        out,
        "held risky changes reaching every specialist: {fully_routed} of {} ({})",
        held_risky.len(),
        percent(fully_routed, held_risky.len())
    )?;
    // A reason reads `policy/rule: message`: the reviewer sees which rule held it.
    let held: Vec<&Outcome> = outcomes.iter().filter(|o| o.got != "admitted").collect();
    let named = held
        .iter()
        .filter(|o| {
            !o.reasons.is_empty() && o.reasons.iter().all(|r| r.split_once(": ").is_some_and(|(p, _)| p.contains('/')))
        })
        .count();
    writeln!(out, "holds naming their rule: {named} of {} ({})", held.len(), percent(named, held.len()))?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<26} {:<12} {:>11} {:>14} {:>15} {:>11}",
        "KIND", "ENVIRONMENT", "RISKY HELD", "RISKY ADMITTED", "BENIGN ADMITTED", "BENIGN HELD"
    )?;
    for ((kind, env), c) in by.iter().chain(std::iter::once((&("total".to_string(), String::new()), &total))) {
        writeln!(
            out,
            "{kind:<26} {env:<12} {:>11} {:>14} {:>15} {:>11}",
            c.risky_held, c.risky_admitted, c.benign_admitted, c.benign_held
        )?;
    }
    Ok(())
}

/// The policies to prove: --policies, else DIR's parent when it holds YAML.
fn policies_dir(args: &TestArgs) -> PathBuf {
    if let Some(p) = &args.policies {
        return p.clone();
    }
    let parent = args.dir.canonicalize().ok().and_then(|d| d.parent().map(Path::to_path_buf));
    match parent {
        Some(p)
            if std::fs::read_dir(&p).is_ok_and(|mut e| {
                e.any(|f| f.ok().is_some_and(|f| f.path().extension().is_some_and(|x| x == "yaml")))
            }) =>
        {
            p
        }
        _ => PathBuf::from("policies"),
    }
}

/// Runs the command; returns the exit code.
pub fn run(args: &TestArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let loaded = (|| -> Result<(Vec<Prepared>, PolicySet), CheckError> {
        let set = load_policies(&policies_dir(args))?;
        Ok((prepare(&args.dir)?, set))
    })();
    let (cases, set) = match loaded {
        Ok(x) => x,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return EXIT_INVALID;
        }
    };
    let outcomes = evaluate(&cases, &set);
    let written = if args.output == "json" {
        serde_json::to_writer_pretty(&mut *out, &outcomes).map_err(std::io::Error::other).and_then(|_| writeln!(out))
    } else {
        write_report(&outcomes, args.verbose, out)
    };
    if let Err(e) = written {
        let _ = writeln!(err, "error: writing output: {e}");
        return EXIT_INVALID;
    }
    if outcomes.iter().all(|o| o.matches) { EXIT_PASSED } else { EXIT_MISMATCH }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        merge_patch(&mut doc, &json!({"spec": {"replicas": 3}}));
        assert_eq!(doc["spec"]["replicas"], 3);
        merge_patch(
            &mut doc,
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:2"}]}}}}),
        );
        assert_eq!(doc["spec"]["template"]["spec"]["containers"][0]["image"], "x:2", "lists are replaced whole");
    }

    #[test]
    fn the_confusion_table_counts_labels_against_verdicts() {
        let o = |expected: &str, got: &str| Outcome {
            at: String::new(),
            object: String::new(),
            kind: "Deployment".into(),
            environment: "production".into(),
            operation: "CREATE".into(),
            expected: expected.into(),
            got: got.into(),
            matches: expected == got,
            missed_routes: vec![],
            reasons: vec![],
            why: None,
        };
        let held = "held [engineering] routine";
        let (_, total) =
            confusion(&[o(held, held), o(held, "admitted"), o("admitted", "admitted"), o("admitted", held)]);
        assert_eq!(total, Confusion { risky_held: 1, risky_admitted: 1, benign_admitted: 1, benign_held: 1 });
    }
}
