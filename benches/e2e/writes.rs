//! Section 5's yardstick: the API server's CPU for each request an escalation
//! step makes (its status write, its Event, its read), beside the cheapest
//! status write a custom resource can have, in the same run, after the
//! escalations have stopped. The copies live
//! in a CRD signoff does not watch (the ApprovalRequest schema under another
//! group) and in a namespace no webhook sees, so each figure is the request's
//! own cost. Their sum bounds the steps per second this machine's API server
//! can take, whoever writes them.

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GetParams, GroupVersionKind, Patch, PatchParams, PostParams};
use serde_json::json;
use signoff::crd::ApprovalRequest;

use super::env::{Env, NS_NONE, kubectl};
use super::scale::cpu_ms;
use super::stats::Table;

const GROUP: &str = "bench.signoff.dev";
/// Requests per kind, one at a time: CPU per request, not latency under load.
const N: usize = 600;
/// Objects the writes go round (a step writes a different request each time).
const COPIES: usize = 20;

/// The ApprovalRequest CRD as generated, renamed into the bench's group, and
/// its version.
fn copied_crd() -> Result<(String, String), String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/approvalrequests.signoff.dev.yaml");
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut crd: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    crd["metadata"]["name"] = format!("approvalrequests.{GROUP}").into();
    crd["spec"]["group"] = GROUP.into();
    // The short name `ar` and the category stay signoff's.
    if let Some(names) = crd["spec"]["names"].as_mapping_mut() {
        names.remove("shortNames");
        names.remove("categories");
    }
    let version = crd["spec"]["versions"][0]["name"].as_str().ok_or("the CRD has no version")?.to_string();
    Ok((serde_yaml::to_string(&crd).map_err(|e| e.to_string())?, version))
}

/// The floor: a custom resource whose status is two strings.
fn marker_crd() -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: markers.{GROUP}}}
spec:
  group: {GROUP}
  scope: Namespaced
  names: {{plural: markers, singular: marker, kind: Marker, listKind: MarkerList}}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {{status: {{}}}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, properties: {{note: {{type: string}}}}}}
          status: {{type: object, properties: {{tier: {{type: string}}, tierDeadline: {{type: string}}}}}}
"#
    )
}

fn api(client: &kube::Client, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(GROUP, version, kind);
    Api::namespaced_with(client.clone(), NS_NONE, &ApiResource::from_gvk_with_plural(&gvk, plural))
}

/// The API server's CPU per call of `f` (ms), over `N` calls one after the other.
async fn cpu_per<F, Fut>(env: &Env, what: &str, mut f: F) -> Result<f64, String>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    let apiserver = || env.cp.pid("kube-apiserver").and_then(cpu_ms).ok_or("the API server is not running");
    let before = apiserver()?;
    for i in 0..N {
        f(i).await.map_err(|e| format!("{what} ({i} of {N}): {e}"))?;
    }
    Ok((apiserver()? - before) / N as f64)
}

/// Measures and reports; `request` is a held request after its first step.
pub async fn per_request_cpu(
    env: &Env,
    request: &ApprovalRequest,
    table: &mut Table,
    section: &str,
) -> Result<(), String> {
    let (copied, version) = copied_crd()?;
    let crds = format!("{copied}---\n{}", marker_crd());
    kubectl(&env.cp, "admin", &["apply", "-f", "-"], Some(&crds))?;
    let names = [format!("approvalrequests.{GROUP}"), format!("markers.{GROUP}")];
    env.cp.wait_established(&[&names[0], &names[1]]).map_err(|e| e.to_string())?;
    let measured = measure(env, request, &version).await;
    // The copies go with their CRDs, and the Events with them, whatever happened.
    let deleted = kubectl(&env.cp, "admin", &["delete", "crd", &names[0], &names[1], "--wait=false"], None)
        .and(kubectl(&env.cp, "admin", &["delete", "events", "-n", NS_NONE, "--all"], None));
    let (status_write, floor, event, read) = measured?;
    deleted?;
    table.info(
        section,
        &format!(
            "API server CPU per request, one at a time (n={N} each): an ApprovalRequest's status write / a two-string custom resource's (the floor) / an Event / a read from the watch cache"
        ),
        format!("{status_write:.2} / {floor:.2} / {event:.2} / {read:.2} ms"),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    table.info(
        section,
        &format!("steps/s the API server could take with all {cores} cores (status write + Event + read; no etcd, signoff or webhook)"),
        format!("{:.0}/s", 1000.0 * cores as f64 / (status_write + event + read)),
    );
    Ok(())
}

async fn measure(env: &Env, request: &ApprovalRequest, version: &str) -> Result<(f64, f64, f64, f64), String> {
    let client = env.cp.client("admin").await.map_err(|e| e.to_string())?;
    let copies = api(&client, version, "ApprovalRequest", "approvalrequests");
    let markers = api(&client, "v1", "Marker", "markers");

    // A step writes the request's whole status (less decisions and
    // admissions); the copies' alternate between two that differ as a
    // step's do (the tier, the conditions' message).
    let mut status = serde_json::to_value(&request.status).map_err(|e| e.to_string())?;
    let fields = status.as_object_mut().ok_or("the request has no status yet")?;
    fields.remove("decisions");
    fields.remove("admissions");
    let mut stepped = status.clone();
    stepped["tier"] = json!("engineering 2/5");
    for condition in stepped["conditions"].as_array_mut().into_iter().flatten() {
        condition["message"] = json!("waiting for a decision (engineering 2/5)");
    }
    let spec = serde_json::to_value(&request.spec).map_err(|e| e.to_string())?;
    let post = PostParams::default();
    for i in 0..COPIES {
        let copy = json!({"apiVersion": format!("{GROUP}/{version}"), "kind": "ApprovalRequest",
                          "metadata": {"name": format!("copy-{i}")}, "spec": spec});
        copies
            .create(&post, &serde_json::from_value(copy).map_err(|e| e.to_string())?)
            .await
            .map_err(|e| e.to_string())?;
        let first = json!({"status": status});
        copies
            .patch_status(&format!("copy-{i}"), &PatchParams::default(), &Patch::Merge(&first))
            .await
            .map_err(|e| e.to_string())?;
        let marker = json!({"apiVersion": format!("{GROUP}/v1"), "kind": "Marker",
                            "metadata": {"name": format!("marker-{i}")}, "spec": {"note": "floor"}});
        markers
            .create(&post, &serde_json::from_value(marker).map_err(|e| e.to_string())?)
            .await
            .map_err(|e| e.to_string())?;
    }
    // Let the creates' own work (watch cache, etcd compaction) pass.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let statuses = [json!({"status": stepped}), json!({"status": status})];
    let status_write = cpu_per(env, "an ApprovalRequest copy's status write", |i| {
        let (copies, patch) = (copies.clone(), &statuses[(i / COPIES) % 2]);
        async move {
            copies
                .patch_status(&format!("copy-{}", i % COPIES), &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map(drop)
        }
    })
    .await?;
    let floor = cpu_per(env, "a marker's status write", |i| {
        let markers = markers.clone();
        let patch = json!({"status": {"tier": format!("tier {}", i / COPIES), "tierDeadline": "2026-12-06T06:00:00Z"}});
        async move {
            markers
                .patch_status(&format!("marker-{}", i % COPIES), &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop)
        }
    })
    .await?;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::events::v1::Event;
    let events: Api<Event> = Api::namespaced(client.clone(), NS_NONE);
    let event = cpu_per(env, "an Event", |i| {
        let events = events.clone();
        let event = Event {
            metadata: kube::api::ObjectMeta { generate_name: Some("copy-".into()), ..Default::default() },
            event_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(jiff::Timestamp::now())),
            reporting_controller: Some("signoff".into()),
            reporting_instance: Some("signoff".into()),
            action: Some("Notify".into()),
            reason: Some("Escalated".into()),
            type_: Some("Normal".into()),
            note: Some(
                "engineering reached tier 2 (OnCall) until 2026-12-06T06:00:00Z: notified dave and team payments"
                    .into(),
            ),
            regarding: Some(ObjectReference {
                api_version: Some(format!("{GROUP}/{version}")),
                kind: Some("ApprovalRequest".into()),
                namespace: Some(NS_NONE.into()),
                name: Some(format!("copy-{}", i % COPIES)),
                ..Default::default()
            }),
            ..Default::default()
        };
        async move { events.create(&PostParams::default(), &event).await.map(drop) }
    })
    .await?;
    let read = cpu_per(env, "a read from the watch cache", |i| {
        let copies = copies.clone();
        async move { copies.get_with(&format!("copy-{}", i % COPIES), &GetParams::any()).await.map(drop) }
    })
    .await?;
    Ok((status_write, floor, event, read))
}
