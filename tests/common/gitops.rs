//! Shared by the GitOps end-to-end tests (tests/gitops_flux.rs,
//! tests/gitops_argocd_e2e.rs): the peers' build scripts, a Git repository,
//! the Deployments they apply, and when each appeared.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::{WatchStreamExt, watcher};

use super::*;

/// This checkout.
pub fn checkout() -> PathBuf {
    signoff_testenv::checkout().unwrap_or_else(|e| panic!("{e}"))
}

/// Run a script of this checkout; its progress goes to our stderr, the path it prints is returned.
pub fn script(path: &str, env: &[(&str, &str)]) -> PathBuf {
    let script = checkout().join(path);
    let out = Command::new(&script)
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("the script runs");
    assert!(out.status.success(), "{} failed (see above)", script.display());
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// `git ARGS` in `dir`, as a developer with a name; its output.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=dev", "-c", "user.email=dev@localhost"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A production Deployment, as a repository holds it.
pub fn deployment(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: 2\n  \
         selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      \
         containers: [{{name: app, image: \"registry.example/shop/{name}:1.0\"}}]\n"
    )
}

/// When each Deployment in `namespaces` first appeared, watched from now on.
pub fn watch_deployments(namespaces: &[String]) -> Arc<Mutex<BTreeMap<String, Instant>>> {
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    for ns in namespaces {
        let (seen, ns) = (seen.clone(), ns.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let client = cp().client(ADMIN).await.unwrap();
                let api: kube::Api<Deployment> = kube::Api::namespaced(client, &ns);
                let mut events = watcher(api, watcher::Config::default()).applied_objects().boxed();
                while let Some(Ok(d)) = events.next().await {
                    let key = format!("{ns}/{}", d.metadata.name.unwrap_or_default());
                    seen.lock().unwrap().entry(key).or_insert_with(Instant::now);
                }
            });
        });
    }
    seen
}

/// Seconds from each approval (`ns/name` -> when) in `ns` to the object's
/// appearance, sorted.
pub fn delays(approved_at: &BTreeMap<String, Instant>, present: &BTreeMap<String, Instant>, ns: &str) -> Vec<f64> {
    let mut d: Vec<f64> = approved_at
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{ns}/")))
        .map(|(k, at)| present[k].saturating_duration_since(*at).as_secs_f64())
        .collect();
    d.sort_by(f64::total_cmp);
    d
}

/// The `p`th percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The last lines of each log, for a failure message.
pub fn log_tails(logs: &[PathBuf]) -> String {
    logs.iter()
        .map(|l| {
            format!(
                "--- {}\n{}",
                l.display(),
                signoff_testenv::tail(&std::fs::read_to_string(l).unwrap_or_default(), 15)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
