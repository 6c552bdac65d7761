//! The examples in docs/ are tested: every EscalationPolicy in a ```yaml block
//! parses and compiles, every documented `kubectl signoff check` gives the
//! documented output and exit status, and the field references cover the schema.
//!
//! Conventions in the docs: a ```yaml block whose first line is `# file: <path>` is
//! written to that path in a scratch directory; ```console blocks list `$ command`
//! lines followed by their output, and `$ echo $?` followed by the exit status.
//! Only `kubectl signoff check` commands are run (they need no cluster).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;
use signoff::crd::EscalationPolicy;
use signoff::policy::CompiledPolicy;

fn root() -> std::path::PathBuf {
    signoff_testenv::checkout().unwrap_or_else(|e| panic!("{e}"))
}

struct Block {
    info: String,
    text: String,
    line: usize,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        match current.take() {
            None => {
                if let Some(info) = line.strip_prefix("```") {
                    current = Some(Block { info: info.trim().to_string(), text: String::new(), line: i + 1 });
                }
            }
            Some(mut b) => {
                if line.starts_with("```") {
                    out.push(b);
                } else {
                    b.text.push_str(line);
                    b.text.push('\n');
                    current = Some(b);
                }
            }
        }
    }
    assert!(current.is_none(), "unterminated code block");
    out
}

fn docs() -> Vec<(PathBuf, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap())).collect()
}

fn documents(text: &str, at: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{at}: invalid YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn every_policy_in_the_docs_compiles() {
    let mut compiled = 0;
    for (path, text) in docs() {
        for b in blocks(&text).iter().filter(|b| b.info == "yaml") {
            let at = format!("{}:{}", path.display(), b.line);
            for doc in documents(&b.text, &at) {
                match doc["kind"].as_str() {
                    Some("EscalationPolicy") => {}
                    Some("Team") => {
                        let _: signoff::crd::Team =
                            serde_yaml::from_value(doc).unwrap_or_else(|e| panic!("{at}: not a Team: {e}"));
                        continue;
                    }
                    Some("Approver") => {
                        let _: signoff::crd::Approver =
                            serde_yaml::from_value(doc).unwrap_or_else(|e| panic!("{at}: not an Approver: {e}"));
                        continue;
                    }
                    _ => continue,
                }
                let policy: EscalationPolicy =
                    serde_yaml::from_value(doc).unwrap_or_else(|e| panic!("{at}: not an EscalationPolicy: {e}"));
                if let Err(e) = CompiledPolicy::compile(&policy) {
                    panic!("{at}: policy {:?} does not compile: {e}", policy.metadata.name);
                }
                compiled += 1;
            }
        }
    }
    eprintln!("{compiled} policies in docs/ compile");
    assert!(compiled >= 7, "expected the worked examples, found {compiled} policies");
}

/// One documented command: what it prints and, if documented, its exit status.
struct Documented {
    at: String,
    args: Vec<String>,
    output: String,
    status: Option<i32>,
}

fn documented_checks(path: &Path, text: &str) -> Vec<Documented> {
    let mut out: Vec<Documented> = Vec::new();
    for b in blocks(text).iter().filter(|b| b.info == "console") {
        let mut current: Option<Documented> = None;
        let mut last_status_for: Option<usize> = None;
        for (i, line) in b.text.lines().enumerate() {
            if let Some(cmd) = line.strip_prefix("$ ") {
                if let Some(d) = current.take() {
                    out.push(d);
                    last_status_for = Some(out.len() - 1);
                }
                if cmd == "echo $?" {
                    continue;
                }
                last_status_for = None;
                if let Some(args) = cmd.strip_prefix("kubectl signoff check ") {
                    assert!(
                        !args.contains(['"', '\'']),
                        "{}:{}: keep documented commands quote-free",
                        path.display(),
                        b.line
                    );
                    let mut args: Vec<String> = args.split_whitespace().map(String::from).collect();
                    args.insert(0, "check".into());
                    current = Some(Documented {
                        at: format!("{}:{}", path.display(), b.line + i + 1),
                        args,
                        output: String::new(),
                        status: None,
                    });
                }
            } else if let Some(d) = current.as_mut() {
                d.output.push_str(line);
                d.output.push('\n');
            } else if let Some(k) = last_status_for.take() {
                out[k].status = Some(line.trim().parse().expect("a status after `$ echo $?`"));
            }
        }
        if let Some(d) = current.take() {
            out.push(d);
        }
    }
    out
}

/// Writes every `# file: <path>` block of a doc into `dir`.
fn write_files(text: &str, dir: &Path) {
    for b in blocks(text).iter().filter(|b| b.info == "yaml") {
        if let Some(first) = b.text.lines().next()
            && let Some(file) = first.strip_prefix("# file: ")
        {
            let target = dir.join(file.trim());
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(target, &b.text).unwrap();
        }
    }
}

#[test]
fn documented_check_results_are_what_the_plugin_prints() {
    let mut ran = 0;
    for (path, text) in docs() {
        let checks = documented_checks(&path, &text);
        if checks.is_empty() {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        write_files(&text, dir.path());
        for d in checks {
            let out = Command::new(env!("CARGO_BIN_EXE_kubectl-signoff"))
                .current_dir(dir.path())
                .args(&d.args)
                .env_remove("SIGNOFF_POLICIES")
                .output()
                .expect("kubectl-signoff runs");
            let stdout = String::from_utf8(out.stdout).unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let normalize = |s: &str| s.lines().map(str::trim_end).collect::<Vec<_>>().join("\n").trim().to_string();
            assert_eq!(
                normalize(&stdout),
                normalize(&d.output),
                "{}: `kubectl signoff {}` printed something else (stderr: {stderr})",
                d.at,
                d.args.join(" ")
            );
            let status = d.status.unwrap_or_else(|| panic!("{}: document the exit status with `$ echo $?`", d.at));
            assert_eq!(out.status.code(), Some(status), "{}: exit status", d.at);
            ran += 1;
        }
    }
    eprintln!("{ran} documented `kubectl signoff check` commands give the documented result");
    assert!(ran >= 6, "expected the worked examples, ran {ran}");
}

/// Field paths as docs/tools/crd-fields.py prints them.
fn field_paths(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Some(props) = schema["properties"].as_mapping() else { return };
    for (name, sub) in props {
        let name = name.as_str().unwrap();
        let p = format!("{path}.{name}");
        out.push(p.clone());
        let depth = p.matches('.').count();
        if sub["type"] == "object" && depth < 3 && !name.contains("Selector") {
            field_paths(sub, &p, out);
        }
        if sub["type"] == "array" && sub["items"]["type"] == "object" && depth < 3 {
            field_paths(&sub["items"], &format!("{p}[]"), out);
        }
    }
}

#[test]
fn field_references_cover_the_crd_schemas() {
    for (crd, doc) in [
        ("escalationpolicies.signoff.dev.yaml", "writing-policies.md"),
        ("teams.signoff.dev.yaml", "teams-and-on-call.md"),
        ("approvers.signoff.dev.yaml", "teams-and-on-call.md"),
    ] {
        let crd: Value =
            serde_yaml::from_str(&std::fs::read_to_string(root().join("crds").join(crd)).unwrap()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut paths = Vec::new();
        field_paths(spec, "spec", &mut paths);
        assert!(paths.len() > 5);
        let text = std::fs::read_to_string(root().join("docs").join(doc)).unwrap();
        let missing: Vec<&String> = paths.iter().filter(|p| !text.contains(&format!("`{p}`"))).collect();
        assert!(
            missing.is_empty(),
            "docs/{doc} lacks fields of {}: {missing:?} (regenerate with docs/tools/crd-fields.py)",
            crd["spec"]["names"]["kind"].as_str().unwrap()
        );
    }
}
