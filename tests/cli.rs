//! The `kubectl signoff` plugin, built and run as a process by different users
//! against the real control plane and a running signoff: the full loop, reject,
//! `wait` with each exit code, reopen, `away`, and every error path.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// Expect a failure: one clear line on stderr, nothing on stdout. Returns the line.
fn plugin_err(user: &str, args: &[&str], code: i32, message: &str) -> String {
    let (got, out, err) = plugin(user, args);
    assert_eq!(got, code, "kubectl signoff {} as {user}: exit {got}\nstdout:\n{out}\nstderr:\n{err}", args.join(" "));
    assert_eq!(err.lines().count(), 1, "exactly one line on stderr:\n{err}");
    assert!(out.is_empty(), "nothing on stdout:\n{out}");
    assert!(err.contains(message), "stderr {err:?} should contain {message:?}");
    err.trim().to_string()
}

fn setup() {
    let cp = cp();
    signoff();
    static FAST: std::sync::Once = std::sync::Once::new();
    FAST.call_once(|| {
        let fixture =
            signoff_testenv::checkout().unwrap_or_else(|e| panic!("{e}")).join("tests/fixtures/cli-policies.yaml");
        kubectl_ok(cp, ADMIN, &["apply", "-f", &fixture.display().to_string()], None);
    });
}

fn fast_namespace() -> String {
    namespace(cp(), "clifast", &[("signoff.dev/test-cli-fast", "true"), ("signoff.dev/owner", "payments")])
}

fn configmap(ns: &str, name: &str, risk: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{risk: {risk}}}\ndata:\n  value: \"{data}\"\n"
    )
}

/// Apply as alice, expect a hold; returns the request's name.
fn hold(manifest: &str) -> String {
    let err = kubectl_err(cp(), "alice", &["apply", "-f", "-"], Some(manifest));
    assert!(err.contains("held for approval"), "{err}");
    let start = err.find("ApprovalRequest ").unwrap() + "ApprovalRequest ".len();
    err[start..].split_whitespace().next().unwrap().split('/').nth(1).unwrap().to_string()
}

fn request(ns: &str, name: &str) -> Value {
    serde_json::from_str(&kubectl_ok(cp(), ADMIN, &["get", "ar", "-n", ns, name, "-o", "json"], None)).unwrap()
}

fn wait_for_lanes(ns: &str, name: &str) -> Value {
    eventually(30, "the reconciler to open the lanes", || {
        let ar = request(ns, name);
        ar["status"]["lanes"].as_array().is_some_and(|l| !l.is_empty()).then_some(ar)
    })
}

fn write_manifest(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn full_loop_held_show_approve_reapply_admitted() {
    setup();
    let ns = gated_namespace(cp(), "cliloop");
    let manifest = configmap(&ns, "limits", "high", "100");
    let name = hold(&manifest);
    wait_for_lanes(&ns, &name);

    // bob sees it waiting for him, first.
    let list = plugin_ok("bob", &["list", "-n", &ns]);
    assert!(list.starts_with("NAME"), "{list}");
    assert!(list.contains(&format!("{name} *")), "marked as waiting for bob:\n{list}");
    for column in ["Pending", "High", "engineering", "engineering 1/5", "alice"] {
        assert!(list.contains(column), "{column} in\n{list}");
    }
    let everywhere = plugin_ok("bob", &["list", "-A"]);
    assert!(everywhere.starts_with("NAMESPACE") && everywhere.contains(&ns), "{everywhere}");
    let mine = plugin_ok("alice", &["list", "-n", &ns, "--mine"]);
    assert!(mine.contains(&name) && !mine.contains(&format!("{name} *")), "not waiting for alice herself:\n{mine}");
    assert!(plugin_ok("bob", &["list", "-n", &ns, "--mine"]).contains("No Pending ApprovalRequests"));

    // The packet: action, rule and message, diff (no color: not a TTY), escalation, deadline, fallback.
    let show = plugin_ok("bob", &["show", "-n", &ns, &name]);
    for part in [
        &format!("ApprovalRequest {ns}/{name}"),
        "Action:     CREATE ConfigMap",
        "high-risk-configmap",
        "a ConfigMap labelled risk=high",
        "+  value: '100'",
        "engineering: Pending, tier 1/5",
        "may decide: bob, carol, dave, group team:payments", // never the requester, alice
        "Deadline:",
        "never applied automatically",
        "Cost:",
    ] {
        assert!(show.contains(part), "{part:?} in\n{show}");
    }
    assert!(!show.contains('\x1b'), "no color when stdout is not a TTY");
    let json: Value = serde_json::from_str(&plugin_ok("bob", &["show", "-n", &ns, &name, "-o", "json"])).unwrap();
    assert_eq!(json["spec"]["requester"]["username"], "alice");
    let yaml = plugin_ok("bob", &["show", "-n", &ns, &name, "-o", "yaml"]);
    assert!(yaml.contains("kind: ApprovalRequest"), "{yaml}");

    // A CI pipeline waits on the manifest; bob approves; the wait ends with 0 after printing the changes.
    let file = write_manifest(&manifest);
    let waiter = Command::new(env!("CARGO_BIN_EXE_kubectl-signoff"))
        .args(["wait", "-f", &file.path().display().to_string(), "--timeout", "60s"])
        .args(["--kubeconfig", &cp().kubeconfig.display().to_string(), "--context", "alice"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let approved = plugin_ok("bob", &["approve", "-n", &ns, &name, "--comment", "reviewed the diff"]);
    assert!(approved.contains(&format!("approved ApprovalRequest {ns}/{name} as bob")), "{approved}");
    let out = waiter.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "wait -f: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("{ns}/{name}: Pending")), "{stdout}");
    assert!(stdout.contains(&format!("{ns}/{name}: Approved")), "{stdout}");

    // The same change is admitted now; the request shows the decision.
    kubectl_ok(cp(), "alice", &["apply", "-f", "-"], Some(&manifest));
    assert_eq!(plugin(ADMIN, &["wait", "-n", &ns, &name]).0, 0);
    let show = plugin_ok("alice", &["show", "-n", &ns, &name]);
    assert!(show.contains("bob approved") && show.contains("reviewed the diff"), "{show}");
    // An approval admits its change once: the request says it was used.
    assert!(show.contains("Admitted:   applied by alice") && show.contains("Ask again:"), "{show}");
}

#[test]
fn reject_then_wait_exits_3_and_only_the_requester_reopens() {
    setup();
    let ns = gated_namespace(cp(), "clireject");
    let name = hold(&configmap(&ns, "limits", "high", "200"));
    wait_for_lanes(&ns, &name);
    let (code, out, _) = plugin("alice", &["wait", "-n", &ns, &name, "--timeout", "2s"]);
    assert_eq!(code, 5, "timeout:\n{out}");
    assert!(out.contains("Pending") && out.contains("timed out after 2s"), "{out}");

    plugin_ok("carol", &["reject", "-n", &ns, &name, "--comment", "not during the freeze"]);
    let (code, out, _) = plugin("alice", &["wait", "-n", &ns, &name]);
    assert_eq!(code, 3, "rejected:\n{out}");
    assert!(out.contains("Rejected"), "{out}");
    assert!(plugin_ok("alice", &["list", "-n", &ns, "--phase", "rejected"]).contains(&name));

    plugin_err(
        "bob",
        &["reopen", "-n", &ns, &name],
        1,
        "only the requester (alice) or an admin may reopen this request",
    );
    let reopened = plugin_ok("alice", &["reopen", "-n", &ns, &name]);
    assert!(reopened.contains("attempt 2"), "{reopened}");
    let ar = eventually(30, "attempt 2 to start", || {
        let ar = request(&ns, &name);
        (ar["status"]["attempt"] == 2 && ar["status"]["phase"] == "Pending").then_some(ar)
    });
    assert_eq!(ar["status"]["decisions"][0]["attempt"], 1, "carol's rejection stays as history");
    // carol's old rejection no longer counts; bob approves attempt 2.
    wait_for_lanes(&ns, &name);
    plugin_ok("bob", &["approve", "-n", &ns, &name]);
    assert_eq!(plugin("alice", &["wait", "-n", &ns, &name, "--timeout", "30s"]).0, 0);
    let show = plugin_ok("alice", &["show", "-n", &ns, &name]);
    assert!(show.contains("earlier attempt; no longer counts"), "{show}");
}

#[test]
fn a_chain_that_times_out_makes_wait_exit_4_and_reopen_starts_again() {
    setup();
    let ns = fast_namespace();
    let manifest = configmap(&ns, "fast", "fast", "1");
    let name = hold(&manifest);
    let file = write_manifest(&manifest);
    let (code, out, err) = plugin("alice", &["wait", "-f", &file.path().display().to_string(), "--timeout", "60s"]);
    assert_eq!(code, 4, "expired:\n{out}\n{err}");
    assert!(out.contains(&format!("{ns}/{name}: Expired")), "{out}");
    let show = plugin_ok("alice", &["show", "-n", &ns, &name]);
    assert!(show.contains("Runbook:") && show.contains("kubectl signoff reopen"), "{show}");

    plugin_ok("alice", &["reopen", "-n", &ns, &name]);
    let (code, out, _) = plugin("alice", &["wait", "-n", &ns, &name, "--timeout", "60s"]);
    assert_eq!(code, 4, "attempt 2 expires too:\n{out}");
    assert!(out.contains("attempt 2"), "{out}");
}

#[test]
fn away_makes_the_escalation_skip_you() {
    setup();
    let set = plugin_ok("frank", &["away", "--until", "2h", "--reason", "vacation", "--note", "dave covers"]);
    assert!(set.contains("Approver frank"), "{set}");
    let approver: Value =
        serde_json::from_str(&kubectl_ok(cp(), ADMIN, &["get", "approver", "frank", "-o", "json"], None)).unwrap();
    assert_eq!(approver["spec"]["user"], "frank");
    assert_eq!(approver["spec"]["away"][0]["reason"], "Vacation");

    // The controller reads Approvers from its watch cache, which can lag this write
    // by a moment (CI saw it once): a hold stepped before the cache has frank away
    // pages him, as it should then. Such a hold proves nothing here; hold a new
    // change until one is stepped after the setting reached the controller.
    let ns = fast_namespace();
    let mut attempt = 0;
    let (name, ar) = eventually(30, "a hold stepped after frank's away setting reached the controller", || {
        attempt += 1;
        let name = hold(&configmap(&ns, &format!("away-{attempt}"), "fast", "1"));
        let listed = |ar: &Value, field: &str| ar["status"][field].as_array().is_some_and(|l| !l.is_empty());
        let ar = eventually(15, "tier 1 to be stepped", || {
            let ar = request(&ns, &name);
            (listed(&ar, "skips") || listed(&ar, "notifications")).then_some(ar)
        });
        let skipped = ar["status"]["skips"].as_array().is_some_and(|s| s.iter().any(|s| s["user"] == "frank"));
        if !skipped {
            eprintln!("{name} was stepped before the controller saw frank away: {}", ar["status"]);
        }
        skipped.then_some((name, ar))
    });
    let skip = ar["status"]["skips"].as_array().unwrap().iter().find(|s| s["user"] == "frank").unwrap().clone();
    assert!(skip["reason"].as_str().unwrap().contains("away"), "{skip}");
    // dave is paged instead; frank stays eligible (away stops the page, not the right to answer).
    let paged: Vec<&str> =
        ar["status"]["notifications"].as_array().unwrap().iter().filter_map(|n| n["recipient"].as_str()).collect();
    assert!(paged.contains(&"dave") && !paged.contains(&"frank"), "dave was paged instead of frank: {ar}");
    let show = plugin_ok("dave", &["show", "-n", &ns, &name]);
    assert!(show.contains("skipped frank (engineering tier 1)"), "{show}");

    // Quiet hours edit the same Approver; another person's is out of reach.
    let quiet = plugin_ok(
        "frank",
        &["quiet-hours", "set", "--start", "22:00", "--end", "07:00", "--time-zone", "Europe/Berlin"],
    );
    assert!(quiet.contains("quiet hours 22:00-07:00 Europe/Berlin"), "{quiet}");
    plugin_ok("frank", &["away", "--clear"]);
    let approver: Value =
        serde_json::from_str(&kubectl_ok(cp(), ADMIN, &["get", "approver", "frank", "-o", "json"], None)).unwrap();
    assert!(approver["spec"]["away"].is_null(), "{approver}");
    assert_eq!(approver["spec"]["quietHours"][0]["start"], "22:00");
}

#[test]
fn every_error_is_one_clear_line_and_a_non_zero_exit() {
    setup();
    let ns = gated_namespace(cp(), "clierr");
    let name = hold(&configmap(&ns, "limits", "high", "300"));
    wait_for_lanes(&ns, &name);
    let missing = write_manifest("");
    let two = write_manifest(&format!("{}---\n{}", configmap(&ns, "a", "high", "1"), configmap(&ns, "b", "high", "1")));
    let (missing, two) = (missing.path().display().to_string(), two.path().display().to_string());
    let cases: Vec<(&str, Vec<&str>, i32, String)> = vec![
        (
            "alice",
            vec!["approve", "-n", &ns, &name],
            1,
            "you requested this change; someone else must approve it".into(),
        ),
        ("mallory", vec!["approve", "-n", &ns, &name], 1, "mallory is not an eligible approver".into()),
        (
            "bob",
            vec!["show", "-n", &ns, "ar-000000000000"],
            1,
            format!("ApprovalRequest {ns}/ar-000000000000 not found"),
        ),
        ("bob", vec!["approve", "-n", &ns, "ar-000000000000"], 1, "not found".into()),
        ("alice", vec!["wait", "-n", &ns, "ar-000000000000"], 1, "not found".into()),
        ("alice", vec!["reopen", "-n", &ns, &name], 1, "only a Rejected or Expired request, or an Approved one whose approval was used or has passed notAfter, can be reopened".into()),
        ("alice", vec!["wait", "-n", &ns, &name, "--timeout", "soon"], 1, "--timeout".into()),
        ("alice", vec!["wait", "-f", "/nonexistent/manifest.yaml"], 1, "/nonexistent/manifest.yaml".into()),
        ("alice", vec!["wait", "-f", &missing], 1, "exactly one object".into()),
        ("alice", vec!["wait", "-f", &two], 1, "exactly one object in the manifest, found 2".into()),
        ("frank", vec!["away", "--until", "someday"], 1, "\"someday\" is not a time".into()),
        ("frank", vec!["away", "--from", "2h", "--until", "1h"], 1, "must be after --from".into()),
        ("frank", vec!["quiet-hours", "set", "--start", "25:00", "--end", "07:00"], 1, "not a time of day".into()),
        (
            "frank",
            vec!["quiet-hours", "set", "--start", "22:00", "--end", "07:00", "--days", "Funday"],
            1,
            "not a day".into(),
        ),
        (
            "frank",
            vec!["quiet-hours", "set", "--start", "22:00", "--end", "07:00", "--time-zone", "Mars/Base"],
            1,
            "unknown time zone".into(),
        ),
        ("nobody-such-context", vec!["list"], 1, "nobody-such-context".into()),
        ("alice", vec!["list", "--phase", "done"], 2, "invalid value 'done'".into()),
        ("alice", vec!["wait"], 2, "required arguments were not provided".into()),
        ("alice", vec!["frobnicate"], 2, "unrecognized subcommand".into()),
    ];
    for (user, args, code, message) in &cases {
        let line = plugin_err(user, args, *code, message);
        eprintln!("{user}: kubectl signoff {} → {line}", args.join(" "));
    }
    // After a decision: deciding again is refused with the phase.
    plugin_ok("bob", &["approve", "-n", &ns, &name]);
    eventually(30, "Approved", || (request(&ns, &name)["status"]["phase"] == "Approved").then_some(()));
    plugin_err("carol", &["reject", "-n", &ns, &name], 1, "is already Approved");
}

#[test]
fn help_has_examples_and_completion_scripts_generate() {
    let bin = env!("CARGO_BIN_EXE_kubectl-signoff");
    let run = |args: &[&str]| {
        let out = Command::new(bin).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for command in [
        vec!["list"],
        vec!["show"],
        vec!["approve"],
        vec!["reject"],
        vec!["wait"],
        vec!["reopen"],
        vec!["away"],
        vec!["quiet-hours", "set"],
        vec!["quiet-hours", "clear"],
        vec!["completion"],
        vec!["check"],
    ] {
        let mut args = command.clone();
        args.push("--help");
        let help = run(&args);
        assert!(
            help.contains("Examples:") && help.contains("kubectl signoff")
                || help.contains("kubectl-signoff completion"),
            "{command:?}:\n{help}"
        );
        assert!(
            command[0] == "completion" || command[0] == "check" || help.contains("--context"),
            "{command:?} takes the kubectl flags:\n{help}"
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completion", shell]);
        assert!(script.contains("kubectl-signoff") && script.contains("quiet-hours"), "{shell}:\n{script}");
    }
}

#[test]
fn wait_f_finds_the_request_of_an_update_by_its_digest() {
    setup();
    let ns = gated_namespace(cp(), "cliupdate");
    kubectl_ok(cp(), "alice", &["apply", "-f", "-"], Some(&configmap(&ns, "limits", "low", "1")));
    let manifest = configmap(&ns, "limits", "high", "2");
    let name = hold(&manifest);
    let ar = request(&ns, &name);
    assert_eq!(ar["spec"]["action"]["operation"], "UPDATE");
    let file = write_manifest(&manifest);
    let (code, out, err) = plugin("alice", &["wait", "-f", &file.path().display().to_string(), "--timeout", "1s"]);
    assert_eq!(code, 5, "{out}\n{err}");
    assert!(out.contains(&format!("{ns}/{name}: Pending")), "the UPDATE's request, not another:\n{out}");
}

/// Impersonation is approval (issue 23, item 7): the API server gives admission
/// only the impersonated identity, so signoff cannot refuse it; platform teams
/// see who can do it with `kubectl signoff impersonators`.
#[test]
fn impersonators_lists_who_can_act_as_an_approver() {
    setup();
    let cp = cp();
    let name = format!("impersonate-bob-{}", std::process::id());
    let rbac = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {name}}}\n\
         rules: [{{apiGroups: [\"\"], resources: [users], resourceNames: [bob], verbs: [impersonate]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {name}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {name}}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}}]\n"
    );
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&rbac));

    // What admission sees of an impersonated request is what the API server
    // authenticates: bob, and nothing that names alice.
    let seen = eventually(30, "alice's impersonation right", || {
        let (ok, out, _) = cp.kubectl_run("alice", &["--as", "bob", "auth", "whoami", "-o", "json"], None).unwrap();
        ok.then_some(out)
    });
    let seen: Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(seen["status"]["userInfo"]["username"], "bob", "{seen}");
    assert!(!seen["status"]["userInfo"].to_string().contains("alice"), "the impersonator is not passed on: {seen}");

    let report = plugin_ok(ADMIN, &["impersonators"]);
    let line = format!("User alice: can act as user bob (via ClusterRoleBinding {name} → ClusterRole {name})");
    assert!(report.contains(&line), "{report}");
    kubectl_ok(cp, ADMIN, &["delete", "clusterrolebinding", &name], None);
    let report = plugin_ok(ADMIN, &["impersonators"]);
    assert!(!report.contains("User alice"), "{report}");
}

/// Issue 21: kubectl's flags anywhere on the line, impersonation, a request
/// timeout, `-o` formats for scripts, and a clear error with no kubeconfig.
#[test]
fn kubectl_flags_work_anywhere_and_outputs_suit_scripts() {
    setup();
    let ns = gated_namespace(cp(), "cliflags");
    let name = hold(&configmap(&ns, "flags", "high", "1"));
    wait_for_lanes(&ns, &name);
    let kubeconfig = cp().kubeconfig.display().to_string();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kubectl-signoff"))
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", "/nonexistent")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    };
    // Global flags before the command, as `kubectl --context bob get ...`.
    let (code, out, err) = run(&["--kubeconfig", &kubeconfig, "--context", "bob", "-n", &ns, "list", "-o", "name"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("approvalrequest.signoff.dev/{name}\n"));
    // --user picks the kubeconfig user; --as impersonates (the admin as bob).
    let (code, out, err) =
        run(&["list", "-n", &ns, "--kubeconfig", &kubeconfig, "--context", "admin", "--user", "bob", "-o", "wide"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("{name} *")), "waiting for bob, read as bob: {out}");
    assert!(out.contains("TARGET") && out.contains(&format!("ConfigMap {ns}/flags")), "{out}");
    assert!(out.contains("MAY-DECIDE") && !out.contains("alice,"), "never the requester: {out}");
    let (code, out, err) = run(&[
        "--kubeconfig",
        &kubeconfig,
        "--context",
        "admin",
        "--as",
        "bob",
        "--as-group",
        "team:payments",
        "--as-group",
        "system:authenticated",
        "--request-timeout",
        "20s",
        "list",
        "-n",
        &ns,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("{name} *")), "impersonating bob, it waits for him: {out}");
    // A v1 List for json and yaml.
    let (_, out, _) = run(&["--kubeconfig", &kubeconfig, "--context", "bob", "list", "-n", &ns, "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (list["kind"].as_str(), list["items"][0]["metadata"]["name"].as_str()),
        (Some("List"), Some(name.as_str()))
    );
    let (_, out, _) = run(&["--kubeconfig", &kubeconfig, "--context", "bob", "list", "-n", &ns, "-o", "yaml"]);
    assert!(out.starts_with("apiVersion: v1\n") && out.contains("kind: List"), "{out}");
    let (_, out, _) = run(&["--kubeconfig", &kubeconfig, "--context", "bob", "show", "-n", &ns, &name, "-o", "name"]);
    assert_eq!(out, format!("approvalrequest.signoff.dev/{name}\n"));
    let (code, out, err) =
        run(&["approve", &name, "-o", "name", "--kubeconfig", &kubeconfig, "--context", "bob", "-n", &ns]);
    assert_eq!((code, out.as_str()), (0, format!("approvalrequest.signoff.dev/{name}\n").as_str()), "{err}");
    // No kubeconfig and not in a pod: one clear line, exit 1.
    let (code, out, err) = run(&["list"]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("kubeconfig") && err.lines().count() == 1, "{err}");
    // A bad --request-timeout is refused before any call.
    let (code, _, err) = run(&["--kubeconfig", &kubeconfig, "--request-timeout", "soon", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("--request-timeout"), "{err}");
}

/// Issue 21: kubectl completes `kubectl signoff <TAB>` through
/// plugins/kubectl_complete-signoff, with the real kubectl (1.35).
#[test]
fn kubectl_completes_the_plugin() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-signoff")).parent().unwrap().to_path_buf();
    let plugins = signoff_testenv::checkout().unwrap().join("plugins");
    let kubectl = signoff_testenv::binaries(None).unwrap().join("kubectl");
    let path = format!("{}:{}:{}", bin.display(), plugins.display(), std::env::var("PATH").unwrap_or_default());
    let complete = |words: &[&str]| {
        let out = Command::new(&kubectl).arg("__complete").args(words).env("PATH", &path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let out = complete(&["signoff", "ap"]);
    assert!(out.lines().any(|l| l.starts_with("approve")), "{out}");
    assert!(out.trim_end().ends_with(":4"), "no file names: {out}");
    let out = complete(&["signoff", "list", "--phase", "ex"]);
    assert!(out.lines().any(|l| l == "expired"), "{out}");
    let out = complete(&["signoff", "show", "--con"]);
    assert!(out.lines().any(|l| l.starts_with("--context")), "kubectl's flags too: {out}");
}

/// `kubectl signoff wait` as a CI job in a pod runs it: no kubeconfig, only the
/// ServiceAccount's token, CA and namespace at
/// /var/run/secrets/kubernetes.io/serviceaccount and KUBERNETES_SERVICE_HOST/PORT.
/// The mount is real, in a private mount namespace (`unshare -rm`): /run, where
/// /var/run points, is a fresh tmpfs holding only those files.
#[test]
fn wait_works_in_a_pod_with_only_a_service_account() {
    setup();
    let cp = cp();
    if !Command::new("unshare").args(["-rm", "true"]).status().is_ok_and(|s| s.success()) {
        panic!("unshare -rm is not permitted here: the in-cluster test needs a private mount namespace");
    }
    let ns = gated_namespace(cp, "cliincluster");
    let role = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: ci-reads-requests, namespace: {ns}}}\nrules:\n- apiGroups: [signoff.dev]\n  resources: [approvalrequests]\n  verbs: [get, list, watch]\n"
    );
    kubectl_ok(cp, ADMIN, &["apply", "-f", "-"], Some(&role));
    kubectl_ok(cp, ADMIN, &["create", "serviceaccount", "ci", "-n", &ns], None);
    let sa = format!("--serviceaccount={ns}:ci");
    kubectl_ok(cp, ADMIN, &["create", "rolebinding", "ci", "-n", &ns, "--role=ci-reads-requests", &sa], None);
    let token = kubectl_ok(cp, ADMIN, &["create", "token", "ci", "-n", &ns, "--duration=10m"], None);
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("token"), token.trim()).unwrap();
    std::fs::write(files.path().join("ca.crt"), cp.ca.cert_pem()).unwrap();
    std::fs::write(files.path().join("namespace"), &ns).unwrap();
    let home = tempfile::tempdir().unwrap();

    let name = hold(&configmap(&ns, "ci-limits", "high", "300"));
    wait_for_lanes(&ns, &name);
    let port = cp.server.rsplit(':').next().unwrap();
    let script = r#"set -e
mount -t tmpfs tmpfs "$(readlink -f /var/run)"
mkdir -p /var/run/secrets/kubernetes.io/serviceaccount
cp "$SA_FILES"/* /var/run/secrets/kubernetes.io/serviceaccount/
exec "$PLUGIN" wait "$REQUEST" --timeout 60s"#;
    let waiting = Command::new("unshare")
        .args(["-rm", "sh", "-c", script])
        .env_remove("KUBECONFIG")
        .env("HOME", home.path())
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", port)
        .env("SA_FILES", files.path())
        .env("PLUGIN", env!("CARGO_BIN_EXE_kubectl-signoff"))
        .env("REQUEST", &name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The job waits (the request is Pending) until bob approves.
    plugin_ok("bob", &["approve", "-n", &ns, &name]);
    let out = waiting.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "wait in the pod:\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("Approved") && stdout.contains(&name), "{stdout}");
    // The same sandbox without the token mounted: the error says what is missing.
    let no_token = Command::new("unshare")
        .args(["-rm", "sh", "-c", r#"mount -t tmpfs tmpfs "$(readlink -f /var/run)"; exec "$PLUGIN" list"#])
        .env_remove("KUBECONFIG")
        .env("HOME", home.path())
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", port)
        .env("PLUGIN", env!("CARGO_BIN_EXE_kubectl-signoff"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&no_token.stderr);
    assert_eq!(no_token.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("kubeconfig"), "says there is no kubeconfig: {stderr}");
}
