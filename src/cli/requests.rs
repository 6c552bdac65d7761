//! `kubectl signoff list|show|wait|reopen`: follow ApprovalRequests as a requester,
//! an approver or a CI pipeline. Every function returns its output (or one line of
//! error); the binary prints it.

use std::fmt::Write as _;

use jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::Scope;

use super::decide::{one_line, whoami};
use crate::crd::{ApprovalRequest, ApprovalRequestStatus, Phase, REOPEN_ANNOTATION, Verdict};
use crate::policy::UserInfo;
use crate::queue::{self, Filter, PhaseFilter, short};

#[derive(clap::Args)]
pub struct ListArgs {
    /// List requests in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only requests you made.
    #[arg(long)]
    pub mine: bool,
    /// Which phase to list.
    #[arg(long, value_enum, default_value = "pending")]
    pub phase: PhaseFilter,
    /// Output format: json and yaml print a v1 List, name one
    /// `approvalrequest.signoff.dev/NAME` per line, wide adds target and who may decide.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<ListFormat>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
    Name,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    Json,
    Yaml,
    Name,
    Wide,
}

/// `-o name` of a command that acts on one request.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum NameFormat {
    Name,
}

/// How kubectl names an object with `-o name`.
pub fn name_of(ar: &ApprovalRequest) -> String {
    kubectl_name(ar.metadata.name.as_deref().unwrap_or_default())
}

/// `approvalrequest.signoff.dev/NAME`, kubectl's `-o name` of a request.
pub fn kubectl_name(name: &str) -> String {
    format!("approvalrequest.signoff.dev/{name}")
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// The ApprovalRequest, e.g. ar-3f9c2a1b.
    pub request: String,
    /// Print the whole resource instead.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Format>,
}

#[derive(clap::Args)]
pub struct RequestArgs {
    /// The ApprovalRequest, e.g. ar-3f9c2a1b.
    pub request: String,
    /// `-o name`: print only `approvalrequest.signoff.dev/NAME` (for scripts).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<NameFormat>,
}

#[derive(clap::Args)]
pub struct WaitArgs {
    /// The ApprovalRequest, e.g. ar-3f9c2a1b.
    #[arg(required_unless_present = "filename", conflicts_with = "filename")]
    pub request: Option<String>,
    /// A manifest (one object; `-` for stdin): wait for the request its change is held under.
    #[arg(short = 'f', long = "filename", value_name = "FILE|-")]
    pub filename: Option<String>,
    /// Give up after this long (e.g. 90s, 30m, 2h); default: wait forever.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Where requests for cluster-scoped objects live (signoff's namespace).
    #[arg(long, default_value = "signoff-system")]
    pub controller_namespace: String,
}

fn status_of(ar: &ApprovalRequest) -> ApprovalRequestStatus {
    ar.status.clone().unwrap_or_default()
}

/// The rows of `list`, ordered: waiting for me first, then by tier deadline.
pub fn list_table(items: &[ApprovalRequest], me: &UserInfo, all_namespaces: bool, now: Timestamp) -> String {
    table(items, me, all_namespaces, false, now)
}

/// The list as a table; `wide` adds the target and who may decide.
fn table(items: &[ApprovalRequest], me: &UserInfo, all_namespaces: bool, wide: bool, now: Timestamp) -> String {
    let filter = Filter { phase: PhaseFilter::All, ..Filter::default() };
    let rows = queue::rows(items, me, &filter, now).into_iter().map(|r| {
        let mut row = Vec::new();
        if all_namespaces {
            row.push(r.namespace);
        }
        row.extend([
            format!("{}{}", r.name, if r.mine { " *" } else { "" }),
            format!("{:?}", r.phase),
            format!("{:?}", r.risk),
            r.routes.join(","),
            r.tier,
            r.requester,
            r.age,
            r.left,
        ]);
        if wide {
            row.push(r.target);
            row.push(if r.deciders.is_empty() { "-".into() } else { r.deciders.join(",") });
        }
        row
    });
    let mut header: Vec<String> = Vec::new();
    if all_namespaces {
        header.push("NAMESPACE".into());
    }
    header.extend(["NAME", "PHASE", "RISK", "ROUTE", "TIER", "REQUESTER", "AGE", "LEFT"].map(String::from));
    if wide {
        header.extend(["TARGET", "MAY-DECIDE"].map(String::from));
    }
    let table: Vec<Vec<String>> = std::iter::once(header).chain(rows).collect();
    let widths: Vec<usize> =
        (0..table[0].len()).map(|i| table.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &table {
        let line: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("   ").trim_end());
    }
    out
}

/// `list`: requests in one namespace (or all), filtered.
pub async fn list(
    client: &kube::Client,
    namespace: Option<&str>,
    mine: bool,
    phase: PhaseFilter,
    output: Option<ListFormat>,
) -> Result<String, String> {
    let me = whoami(client).await?;
    let api: Api<ApprovalRequest> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let items = api.list(&ListParams::default()).await.map_err(|e| one_line(&e))?.items;
    let items: Vec<ApprovalRequest> = items
        .into_iter()
        .filter(|ar| phase.matches(status_of(ar).phase))
        .filter(|ar| !mine || ar.spec.requester.username == me.username)
        .collect();
    match output {
        Some(ListFormat::Json | ListFormat::Yaml) => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {}});
            return if output == Some(ListFormat::Yaml) {
                serde_yaml::to_string(&list).map_err(|e| e.to_string())
            } else {
                serde_json::to_string_pretty(&list).map(|s| s + "\n").map_err(|e| e.to_string())
            };
        }
        Some(ListFormat::Name) => return Ok(items.iter().map(|ar| name_of(ar) + "\n").collect()),
        _ => {}
    }
    if items.is_empty() {
        let where_ = namespace.map(|ns| format!(" in namespace {ns}")).unwrap_or_default();
        return Ok(format!("No {phase:?} ApprovalRequests{where_}.\n").replace("All ", ""));
    }
    Ok(table(&items, &me, namespace.is_none(), output == Some(ListFormat::Wide), Timestamp::now()))
}

/// Read one request, with a clear message when it does not exist.
pub async fn get(client: &kube::Client, namespace: &str, name: &str) -> Result<ApprovalRequest, String> {
    let api: Api<ApprovalRequest> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name)
        .await
        .map_err(|e| one_line(&e))?
        .ok_or_else(|| format!("ApprovalRequest {namespace}/{name} not found (kubectl signoff list -n {namespace})"))
}

fn colored_diff(diff: &str, color: bool) -> String {
    let mut out = String::new();
    for line in diff.lines() {
        let code = match line.chars().next() {
            _ if !color => None,
            _ if line.starts_with("+++") || line.starts_with("---") => Some("1"),
            Some('+') => Some("32"),
            Some('-') => Some("31"),
            Some('@') => Some("36"),
            _ => None,
        };
        match code {
            Some(code) => {
                let _ = writeln!(out, "    \x1b[{code}m{line}\x1b[0m");
            }
            None => {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    out
}

fn when(t: Timestamp, now: Timestamp) -> String {
    let d = t.duration_since(now);
    let rel = if d.is_negative() { format!("{} ago", short(-d)) } else { format!("in {}", short(d)) };
    format!("{} ({rel})", floor(t))
}

fn floor(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// The packet, as a reviewer reads it. `color` for the diff (a TTY).
pub fn render(ar: &ApprovalRequest, now: Timestamp, color: bool) -> String {
    let spec = &ar.spec;
    let status = status_of(ar);
    let ns = ar.metadata.namespace.as_deref().unwrap_or_default();
    let name = ar.metadata.name.as_deref().unwrap_or_default();
    let mut o = String::new();
    let _ = writeln!(o, "ApprovalRequest {ns}/{name}   attempt {}", status.attempt);
    let _ = writeln!(
        o,
        "Phase:      {:?}{}",
        status.phase,
        status.tier.as_ref().map(|t| format!(" ({t})")).unwrap_or_default()
    );
    let requested =
        ar.metadata.creation_timestamp.as_ref().map(|t| format!(", {}", when(t.0, now))).unwrap_or_default();
    let _ = writeln!(o, "Requester:  {}{requested}", spec.requester.username);
    if let Some(owner) = &spec.gitops {
        let _ = writeln!(o, "GitOps:     {}", crate::gitops::describe(owner, status.gitops_source.as_ref()));
        if let Some(h) = status.hand_back.as_ref().filter(|h| h.for_attempt == status.attempt) {
            let _ = writeln!(
                o,
                "Hand-back:  {} after {} attempt(s), {}: {}",
                h.result,
                h.attempts,
                when(h.at.0, now),
                h.message.as_deref().unwrap_or_default()
            );
        }
    }
    let a = &spec.action;
    let target = crate::crd::target_text(&a.kind, a.namespace.as_deref(), &a.name);
    let gv = if a.group.is_empty() { a.version.clone() } else { format!("{}/{}", a.group, a.version) };
    let sub = a.sub_resource.as_ref().map(|s| format!("/{s}")).unwrap_or_default();
    let _ = writeln!(o, "Action:     {} {target} ({gv}, {}{sub})", a.operation, a.resource);
    let _ = writeln!(o, "Risk:       {:?}, {}", spec.risk, spec.action_class.as_str());
    let _ = writeln!(o, "Digest:     {}", spec.digest);
    let _ = writeln!(o, "Held because:");
    for r in &spec.reasons {
        let _ = writeln!(o, "  - {} ({:?}, route {}; policy {}): {}", r.rule, r.risk, r.route, r.policy, r.message);
    }
    if let Some(ctx) = &spec.context {
        if let Some(reason) = &ctx.reason {
            let _ = writeln!(o, "Reason:     {reason}");
        }
        if let Some(ticket) = &ctx.ticket {
            let _ = writeln!(o, "Ticket:     {ticket}");
        }
    }
    match &spec.cost {
        Some(c) => {
            let _ = writeln!(
                o,
                "Cost:       {} {} → {} per month ({}{})",
                c.currency,
                c.monthly_before,
                c.monthly_after,
                if c.monthly_delta.starts_with('-') { "" } else { "+" },
                c.monthly_delta
            );
        }
        None => {
            let _ = writeln!(o, "Cost:       no estimate");
        }
    }
    match &spec.diff {
        Some(diff) if !diff.trim().is_empty() => {
            let _ = writeln!(o, "Diff:");
            o.push_str(&colored_diff(diff, color));
        }
        _ => {
            let _ = writeln!(o, "Diff:       none recorded");
        }
    }
    let _ = writeln!(o, "Escalation:");
    if status.lanes.is_empty() {
        let _ = writeln!(o, "  not started yet (signoff's controller opens the lanes)");
    }
    for lane in &status.lanes {
        let tier = lane.tier_name.clone().unwrap_or_default();
        let deadline = match (&lane.phase, &lane.tier_deadline) {
            (Phase::Pending, Some(d)) => format!(", tier deadline {}", when(d.0, now)),
            _ => String::new(),
        };
        let _ =
            writeln!(o, "  {}: {:?}, tier {}/{} {tier}{deadline}", lane.route, lane.phase, lane.tier + 1, lane.tiers);
        // The requester may be in the tier's team, but never decides their own change.
        let mut eligible: Vec<String> =
            lane.eligible.iter().filter(|u| **u != spec.requester.username).cloned().collect();
        eligible.extend(lane.eligible_groups.iter().map(|g| format!("group {g}")));
        if !eligible.is_empty() {
            let _ = writeln!(o, "    may decide: {}", eligible.join(", "));
        }
    }
    for n in &status.notifications {
        let msg = n.message.as_ref().map(|m| format!(": {m}")).unwrap_or_default();
        let what = if crate::escalation::is_expiry_notice(&n.key) {
            format!("{}: chain exhausted, expiry notice", n.route)
        } else if let Some(label) = crate::escalation::notice_label(&n.key) {
            let route = if n.route.is_empty() { "requester".to_string() } else { n.route.clone() };
            format!("{route}: {label} notice")
        } else {
            format!("{} tier {}", n.route, n.tier + 1)
        };
        let _ =
            writeln!(o, "  notified {} via {} ({what}) at {}: {}{msg}", n.recipient, n.sink, floor(n.at.0), n.result);
    }
    for s in &status.skips {
        let who = s.user.clone().unwrap_or_else(|| "the whole tier".into());
        let setting = s.setting.as_ref().map(|x| format!(" [{x}]")).unwrap_or_default();
        let _ = writeln!(
            o,
            "  skipped {who} ({} tier {}) at {}: {}{setting}",
            s.route,
            s.tier + 1,
            floor(s.at.0),
            s.reason
        );
    }
    if !status.decisions.is_empty() {
        let _ = writeln!(o, "Decisions:");
        for d in &status.decisions {
            let verb = if d.decision == Verdict::Approve { "approved" } else { "rejected" };
            let old = if d.attempt != status.attempt { " (earlier attempt; no longer counts)" } else { "" };
            let comment = d.comment.as_ref().map(|c| format!(": {c}")).unwrap_or_default();
            let _ = writeln!(o, "  {} {verb} at {} (attempt {}){old}{comment}", d.approver, floor(d.at.0), d.attempt);
        }
    }
    match status.phase {
        Phase::Pending => {
            if let Some(d) = &status.deadline {
                let _ = writeln!(o, "Deadline:   {} if nobody answers", when(d.0, now));
            }
            let fallback = spec.fallback.clone().unwrap_or_else(|| {
                "the request expires and the change is never applied automatically; platform admins get a runbook"
                    .into()
            });
            let _ = writeln!(o, "Otherwise:  {fallback}");
            let _ = writeln!(o, "Decide:     kubectl signoff approve|reject -n {ns} {name} --comment \"…\"");
        }
        Phase::Approved => match status.approved_admission() {
            Some(used) => {
                let _ = writeln!(
                    o,
                    "Admitted:   applied by {} {}; an approval admits its change once",
                    used.user,
                    when(used.at.0, now)
                );
                let _ = writeln!(o, "Ask again:  kubectl signoff reopen -n {ns} {name}");
            }
            None if status.approval_spent(now) => {
                let _ =
                    writeln!(o, "Ask again:  kubectl signoff reopen -n {ns} {name} (the approval has passed notAfter)");
            }
            None => {
                if let Some(t) = &status.not_after {
                    let _ = writeln!(o, "Approved:   apply the same change once, before {}", when(t.0, now));
                }
            }
        },
        Phase::Superseded => {
            let newer = crate::approval::superseded_by(&ar.metadata).unwrap_or("a newer request");
            let _ = writeln!(
                o,
                "Superseded: a newer change to the same object holds it now: kubectl signoff show -n {ns} {newer}"
            );
        }
        Phase::Rejected | Phase::Expired => {
            if let Some(runbook) = &status.runbook {
                let _ = writeln!(o, "Runbook:");
                for line in runbook.lines() {
                    let _ = writeln!(o, "    {line}");
                }
            }
            let _ = writeln!(o, "Ask again:  kubectl signoff reopen -n {ns} {name}");
        }
    }
    o
}

/// `show -o yaml|json`.
pub fn serialize(ar: &ApprovalRequest, format: Format) -> Result<String, String> {
    let yaml = match format {
        Format::Name => return Ok(name_of(ar) + "\n"),
        Format::Yaml => true,
        Format::Json => false,
    };
    if yaml {
        serde_yaml::to_string(ar).map_err(|e| e.to_string())
    } else {
        serde_json::to_string_pretty(ar).map(|s| s + "\n").map_err(|e| e.to_string())
    }
}

/// Exit codes of `wait`.
pub const EXIT_APPROVED: i32 = 0;
pub const EXIT_REJECTED: i32 = 3;
pub const EXIT_EXPIRED: i32 = 4;
pub const EXIT_TIMEOUT: i32 = 5;

/// The request name (and full digest) a manifest's change would be held under.
/// The operation is CREATE when the object does not exist yet, else UPDATE; the
/// object is the one the API server would admit, from a server-side dry run.
pub async fn request_for_manifest(
    client: &kube::Client,
    manifest: &str,
    default_namespace: &str,
    controller_namespace: &str,
) -> Result<(String, String, String), String> {
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(manifest)
        .map(serde_json::Value::deserialize)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the manifest is not valid YAML: {}", e.to_string().lines().next().unwrap_or_default()))?
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    let [object] = docs.as_slice() else {
        return Err(format!("wait -f needs exactly one object in the manifest, found {}", docs.len()));
    };
    let api_version = object["apiVersion"].as_str().ok_or("the manifest has no apiVersion")?;
    let kind = object["kind"].as_str().ok_or("the manifest has no kind")?;
    let name = object.pointer("/metadata/name").and_then(|v| v.as_str()).ok_or("the manifest has no metadata.name")?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("the API server does not serve {kind} in {api_version}: {}", one_line(&e)))?;
    let namespaced = caps.scope == Scope::Namespaced;
    let namespace = if namespaced {
        object.pointer("/metadata/namespace").and_then(|v| v.as_str()).unwrap_or(default_namespace).to_string()
    } else {
        String::new()
    };
    let api: Api<DynamicObject> = if namespaced {
        Api::namespaced_with(client.clone(), &namespace, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    let mut object = object.clone();
    if namespaced {
        object["metadata"]["namespace"] = serde_json::Value::String(namespace.clone());
    }
    let dynamic: DynamicObject = serde_json::from_value(object.clone()).map_err(|e| format!("the manifest: {e}"))?;
    let exists = api.get_opt(name).await.map_err(|e| one_line(&e))?.is_some();
    let (operation, admitted) = if exists {
        let params = PatchParams::apply("kubectl-signoff-wait").force().dry_run();
        ("UPDATE", api.patch(name, &params, &Patch::Apply(&dynamic)).await)
    } else {
        ("CREATE", api.create(&PostParams { dry_run: true, ..Default::default() }, &dynamic).await)
    };
    let admitted = admitted.map_err(|e| format!("a dry run of the manifest failed: {}", one_line(&e)))?;
    let admitted = serde_json::to_value(&admitted).map_err(|e| e.to_string())?;
    let target = crate::digest::ChangeTarget {
        operation,
        group,
        version,
        kind,
        resource: &resource.plural,
        sub_resource: "",
        namespace: &namespace,
        name,
    };
    let digest = crate::digest::change_digest(&target, Some(&admitted));
    let ar_namespace = if namespaced { namespace.clone() } else { controller_namespace.to_string() };
    Ok((ar_namespace, crate::digest::request_name(&digest), digest))
}

use serde::Deserialize as _;

/// The attempt a reopen asked for that signoff has not started yet.
fn reopening(ar: &ApprovalRequest, now: Timestamp) -> Option<u32> {
    crate::approval::reopen_requested(ar, &status_of(ar), now)
}

/// One observation of a request, for `wait`: what changed is printed.
fn describe(ar: Option<&ApprovalRequest>, now: Timestamp) -> String {
    let Some(ar) = ar else { return "not found yet (apply the change to create it)".into() };
    let status = status_of(ar);
    if let Some(next) = reopening(ar, now) {
        return format!("reopening (attempt {next} requested after {:?})", status.phase);
    }
    let mut text = format!("{:?} (attempt {}", status.phase, status.attempt);
    if let Some(tier) = &status.tier {
        let _ = write!(text, ", {tier}");
    }
    text.push(')');
    if status.phase == Phase::Approved
        && let Some(t) = &status.not_after
    {
        let _ = write!(text, ", valid until {}", floor(t.0));
        if t.0 <= now {
            text.push_str(" (the approval has lapsed)");
        }
    }
    text
}

/// `wait`: poll until a final phase or the timeout. Prints every state change to
/// `out`; returns the exit code.
pub async fn wait(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    digest: Option<&str>,
    must_exist: bool,
    timeout: Option<SignedDuration>,
    out: &mut dyn std::io::Write,
) -> Result<i32, String> {
    let api: Api<ApprovalRequest> = Api::namespaced(client.clone(), namespace);
    let started = Timestamp::now();
    let mut last = String::new();
    loop {
        let now = Timestamp::now();
        let ar = api.get_opt(name).await.map_err(|e| one_line(&e))?;
        if ar.is_none() && must_exist {
            return Err(format!("ApprovalRequest {namespace}/{name} not found (kubectl signoff list -n {namespace})"));
        }
        if let (Some(ar), Some(digest)) = (&ar, digest)
            && ar.spec.digest != digest
        {
            return Err(format!("ApprovalRequest {namespace}/{name} belongs to a different change (digest mismatch)"));
        }
        let state = describe(ar.as_ref(), now);
        if state != last {
            let _ = writeln!(out, "{} {namespace}/{name}: {state}", floor(now));
            let _ = out.flush();
            last = state;
        }
        if let Some(ar) = ar.as_ref().filter(|ar| reopening(ar, now).is_none()) {
            let status = status_of(ar);
            match status.phase {
                Phase::Approved if status.not_after.as_ref().is_none_or(|t| t.0 > now) => return Ok(EXIT_APPROVED),
                Phase::Approved => return Ok(EXIT_EXPIRED),
                Phase::Rejected => return Ok(EXIT_REJECTED),
                Phase::Expired | Phase::Superseded => return Ok(EXIT_EXPIRED),
                Phase::Pending => {}
            }
        }
        if let Some(timeout) = timeout
            && now.duration_since(started) >= timeout
        {
            let _ = writeln!(out, "{} {namespace}/{name}: timed out after {}", floor(now), short(timeout));
            return Ok(EXIT_TIMEOUT);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `reopen`: ask for a new attempt after Rejected or Expired, or once an approval
/// was used or has passed notAfter.
pub async fn reopen(client: &kube::Client, namespace: &str, name: &str) -> Result<String, String> {
    let ar = get(client, namespace, name).await?;
    let status = status_of(&ar);
    if !status.reopenable(jiff::Timestamp::now()) {
        return Err(format!(
            "ApprovalRequest {namespace}/{name} is {:?}; only a Rejected or Expired request, or an Approved one whose \
             approval was used or has passed notAfter, can be reopened",
            status.phase
        ));
    }
    let next = status.attempt + 1;
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": ar.metadata.resource_version,
            "annotations": { REOPEN_ANNOTATION: next.to_string() },
        }
    });
    let api: Api<ApprovalRequest> = Api::namespaced(client.clone(), namespace);
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| one_line(&e))?;
    Ok(format!(
        "reopened ApprovalRequest {namespace}/{name}: attempt {next} starts at tier 1 (follow it: kubectl signoff wait -n {namespace} {name})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Lane;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

    fn now() -> Timestamp {
        "2026-11-22T12:00:00Z".parse().unwrap()
    }

    fn ar(name: &str, eligible: &[&str], deadline_mins: i64) -> ApprovalRequest {
        let mut ar = crate::fixtures::Packet::new("prod", name)
            .diff("--- a\n+++ b\n@@ -1 +1 @@\n-  value: '1'\n+  value: '2'\n")
            .build();
        ar.metadata.creation_timestamp = Some(Time(now() - SignedDuration::from_mins(5)));
        ar.status = Some(ApprovalRequestStatus {
            tier: Some("engineering 1/5".into()),
            lanes: vec![Lane {
                route: "engineering".into(),
                policy: "p".into(),
                tier: 0,
                tiers: 5,
                tier_name: Some("Team".into()),
                tier_started_at: None,
                tier_deadline: Some(MicroTime(now() + SignedDuration::from_mins(deadline_mins))),
                phase: Phase::Pending,
                eligible: eligible.iter().map(|s| s.to_string()).collect(),
                eligible_groups: vec![],
            }],
            ..Default::default()
        });
        ar
    }

    fn me(name: &str) -> UserInfo {
        UserInfo { username: name.into(), uid: String::new(), groups: vec![] }
    }

    #[test]
    fn list_puts_what_waits_for_me_first_then_the_nearest_deadline() {
        let items = [ar("ar-late", &["bob"], 50), ar("ar-other", &["carol"], 5), ar("ar-soon", &["bob"], 10)];
        let table = list_table(&items, &me("bob"), false, now());
        let names: Vec<&str> = table.lines().skip(1).map(|l| l.split_whitespace().next().unwrap()).collect();
        assert_eq!(names, ["ar-soon", "ar-late", "ar-other"], "{table}");
        assert!(table.lines().nth(1).unwrap().contains("ar-soon *"), "{table}");
        assert!(table.contains("5m") && table.contains("10m"), "age and time left:\n{table}");
        // The requester is never asked to decide their own request.
        assert!(!list_table(&items[..1], &me("alice"), false, now()).contains('*'));
        assert!(list_table(&items, &me("bob"), true, now()).starts_with("NAMESPACE"));
    }

    #[test]
    fn show_colors_the_diff_only_when_asked_and_explains_the_fallback() {
        let plain = render(&ar("ar-1", &["bob"], 10), now(), false);
        assert!(!plain.contains('\x1b'));
        assert!(
            plain.contains("+  value: '2'")
                && plain.contains("r (High, route engineering; policy p): a risky ConfigMap")
        );
        assert!(plain.contains("never applied automatically") && plain.contains("Decide:"), "{plain}");
        let colored = render(&ar("ar-1", &["bob"], 10), now(), true);
        assert!(colored.contains("\x1b[32m+  value: '2'\x1b[0m") && colored.contains("\x1b[31m-  value: '1'"));
    }

    #[test]
    fn show_tells_expiry_notices_from_tier_pages() {
        let mut request = ar("ar-1", &["bob"], 10);
        let record = |key: &str, route: &str| crate::crd::Notification {
            key: key.into(),
            route: route.into(),
            tier: 0,
            recipient: "ivan".into(),
            sink: "Event".into(),
            attempts: 1,
            result: "Delivered".into(),
            message: None,
            at: Time(now()),
        };
        request.status.as_mut().unwrap().notifications =
            vec![record("uid-1/engineering/0/event", "engineering"), record("uid-1/expired/user/ivan", "engineering")];
        let text = render(&request, now(), false);
        assert!(text.contains("(engineering tier 1)"), "{text}");
        assert!(text.contains("(engineering: chain exhausted, expiry notice)"), "{text}");
        assert!(crate::escalation::is_expiry_notice("uid-1/expired/event"));
        assert!(!crate::escalation::is_expiry_notice("uid-1/expired/2/event"), "a route named expired, tier 3");
        request.status.as_mut().unwrap().notifications = vec![
            record("uid-1/outcome/requester/user/alice", ""),
            record("uid-1/engineering/0/user/ivan/resolve", "engineering"),
            record("uid-1/outcome/0/user/ivan", "outcome"),
        ];
        let text = render(&request, now(), false);
        assert!(text.contains("(requester: outcome notice)"), "{text}");
        assert!(text.contains("(engineering: resolve notice)"), "{text}");
        assert!(text.contains("(outcome tier 1)"), "a route named outcome, tier 1: {text}");
    }

    /// Issue 18: the packet names the GitOps owner, the commit and the repository.
    #[test]
    fn show_prints_the_gitops_source_and_the_commit() {
        let mut request = ar("ar-1", &["alice", "bob"], 10);
        let text = render(&request, now(), false);
        assert!(!text.contains("GitOps:"), "not a GitOps change");
        assert!(text.contains("    may decide: bob\n"), "never the requester (alice): {text}");
        request.spec.gitops = Some(crate::crd::GitOpsOwner {
            tool: crate::crd::GitOpsTool::Flux,
            kind: "Kustomization".into(),
            namespace: "flux-system".into(),
            name: "shop".into(),
            hand_back: true,
        });
        let status = request.status.as_mut().unwrap();
        status.gitops_source = Some(crate::crd::GitOpsSource {
            url: Some("http://127.0.0.1:8080/acme/deploy.git".into()),
            revision: Some("main@sha1:3f2a9c1e0b6d4a7f8c9e0d1b2a3c4d5e6f708192".into()),
            unreadable: None,
            at: Time(now()),
        });
        status.hand_back = Some(crate::gitops::hand_back_record(1, 1, Ok("asked it".into()), now()));
        let text = render(&request, now(), false);
        assert!(
            text.contains(
                "GitOps:     commit 3f2a9c1 on main of 127.0.0.1:8080/acme/deploy, applied by Flux Kustomization flux-system/shop"
            ),
            "{text}"
        );
        assert!(text.contains("Hand-back:  Done after 1 attempt(s)"), "{text}");
    }
}
