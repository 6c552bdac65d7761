//! The runbook written when a request expires: everything a human needs to
//! review the change and, if it should go ahead, apply it deliberately.

use std::fmt::Write;

use jiff::Timestamp;

use crate::crd::{ApprovalRequest, ApprovalRequestStatus};

pub fn write(ar: &ApprovalRequest, status: &ApprovalRequestStatus, now: Timestamp) -> String {
    let spec = &ar.spec;
    let ns = ar.metadata.namespace.as_deref().unwrap_or_default();
    let name = ar.metadata.name.as_deref().unwrap_or_default();
    let a = &spec.action;
    let target = match &a.namespace {
        Some(target_ns) => format!("{} {target_ns}/{}", a.kind, a.name),
        None => format!("{} {}", a.kind, a.name),
    };
    let mut out = String::new();
    let _ = writeln!(out, "signoff runbook for ApprovalRequest {ns}/{name}, expired at {now}");
    let _ = writeln!(out, "Nobody approved this change before the last tier timed out. It was NOT applied.");
    let _ = writeln!(out);
    let sub = a.sub_resource.as_deref().map(|s| format!(" (subresource {s})")).unwrap_or_default();
    let _ = writeln!(out, "Change: {} {target}{sub}, requested by {}", a.operation, spec.requester.username);
    let _ = writeln!(
        out,
        "Risk: {} ({}); routes: {}",
        spec.risk.as_str(),
        spec.action_class.as_str(),
        spec.routes.join(", ")
    );
    let _ = writeln!(out, "Why it was held:");
    for r in &spec.reasons {
        let _ = writeln!(out, "  - {} ({}/{})", r.message, r.policy, r.rule);
    }
    if let Some(ctx) = &spec.context {
        if let Some(reason) = &ctx.reason {
            let _ = writeln!(out, "Requester's reason: {reason}");
        }
        if let Some(ticket) = &ctx.ticket {
            let _ = writeln!(out, "Ticket: {ticket}");
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Escalation:");
    for lane in &status.lanes {
        let _ = writeln!(
            out,
            "  - {}: {:?} at tier {}/{} ({}); reached: {}",
            lane.route,
            lane.phase,
            lane.tier + 1,
            lane.tiers,
            lane.tier_name.as_deref().unwrap_or("-"),
            if lane.eligible.is_empty() && lane.eligible_groups.is_empty() {
                "nobody".to_string()
            } else {
                [lane.eligible.clone(), lane.eligible_groups.iter().map(|g| format!("group {g}")).collect()]
                    .concat()
                    .join(", ")
            }
        );
    }
    for skip in &status.skips {
        let who = skip.user.as_deref().unwrap_or("(whole tier)");
        let setting = skip.setting.as_deref().map(|s| format!(" [{s}]")).unwrap_or_default();
        let _ = writeln!(out, "  - skipped {who} at {} tier {}: {}{setting}", skip.route, skip.tier + 1, skip.reason);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Steps:");
    let _ = writeln!(out, "  1. Review the packet and the diff: kubectl signoff show -n {ns} {name}");
    let _ = writeln!(out, "  2. If the change should not happen, do nothing: it stays out of the cluster.");
    let _ = writeln!(out, "  3. If it should, ask again so that an eligible approver decides:");
    let _ = writeln!(out, "       kubectl signoff reopen -n {ns} {name}");
    let _ = writeln!(out, "     or, as a platform admin in an emergency, apply it under break-glass (audited):");
    match a.operation.as_str() {
        "DELETE" => {
            let ns_flag = a.namespace.as_deref().map(|n| format!(" -n {n}")).unwrap_or_default();
            let _ = writeln!(out, "       kubectl delete {}{ns_flag} {}", a.resource, a.name);
        }
        _ => match &spec.manifest {
            Some(manifest) => {
                let _ = writeln!(out, "       kubectl apply -f - <<'EOF'");
                for line in manifest.lines() {
                    let _ = writeln!(out, "       {line}");
                }
                let _ = writeln!(out, "       EOF");
            }
            None => {
                let _ = writeln!(out, "       (no manifest recorded; re-run the original command)");
            }
        },
    }
    let _ = writeln!(out, "  4. Tune the chain so this does not happen again: the skips above show who was");
    let _ = writeln!(out, "     unavailable and why; adjust Teams, on-call rotations or the policy's timeouts.");
    out
}
