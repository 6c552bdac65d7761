//! Pure: what the web queue shows, as HTML. The queue and the request page are
//! functions of the requests, who is looking and `now`; the server only fetches
//! and serves them. Every string from the cluster goes through maud's escaping.

use jiff::Timestamp;
use maud::{DOCTYPE, Markup, html};

use crate::approval::{eligible_routes, is_service_account, waiting_for};
use crate::crd::{ApprovalRequest, Phase, Verdict};
use crate::policy::UserInfo;
use crate::queue::{self, Filter, PhaseFilter, Row, short};

/// Whether `me` may decide a request now, and if not, why: the page offers the
/// buttons only in the first case and says the reason otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decidable {
    Yes,
    /// The request is no longer Pending.
    Settled(Phase),
    /// `me` made the change.
    OwnChange,
    /// Service accounts never count as approvers.
    ServiceAccount,
    /// `me` already decided in this attempt.
    Decided(Verdict),
    /// No lane has reached `me` (yet).
    NotReached,
}

pub fn decidable(ar: &ApprovalRequest, me: &UserInfo) -> Decidable {
    let status = ar.status.clone().unwrap_or_default();
    if waiting_for(ar, me) {
        return Decidable::Yes;
    }
    if status.phase != Phase::Pending {
        Decidable::Settled(status.phase)
    } else if ar.spec.requester.username == me.username {
        Decidable::OwnChange
    } else if is_service_account(&me.username) {
        Decidable::ServiceAccount
    } else if let Some(d) = status.decisions.iter().find(|d| d.approver == me.username && d.attempt == status.attempt) {
        Decidable::Decided(d.decision)
    } else {
        debug_assert!(eligible_routes(&status, me).is_empty());
        Decidable::NotReached
    }
}

impl Decidable {
    /// Why there are no buttons, in one sentence.
    pub fn why_not(&self) -> Option<String> {
        Some(match self {
            Decidable::Yes => return None,
            Decidable::Settled(phase) => format!("This request is {phase:?}: there is nothing left to decide."),
            Decidable::OwnChange => "You made this change: someone else must decide it.".into(),
            Decidable::ServiceAccount => "Service accounts never decide a change.".into(),
            Decidable::Decided(Verdict::Approve) => "You approved this request.".into(),
            Decidable::Decided(Verdict::Reject) => "You rejected this request.".into(),
            Decidable::NotReached => "The escalation has not reached you: you may not decide this request.".into(),
        })
    }
}

/// The requester may start a new attempt (admins too, from the command line).
pub fn may_reopen(ar: &ApprovalRequest, me: &UserInfo, now: Timestamp) -> bool {
    ar.spec.requester.username == me.username && ar.status.clone().unwrap_or_default().reopenable(now)
}

/// One event of a request's escalation, for the timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub at: Timestamp,
    /// held, tier, notified, skipped, approved, rejected, admitted, hand-back: the CSS class.
    pub kind: &'static str,
    pub text: String,
}

fn floor(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// The escalation as it happened, oldest first: the hold, tiers reached, who was
/// notified when and how, skips with the setting behind them, decisions with
/// comments, admissions and the GitOps hand-back.
pub fn timeline(ar: &ApprovalRequest) -> Vec<Entry> {
    let status = ar.status.clone().unwrap_or_default();
    let mut out = Vec::new();
    if let Some(t) = &ar.metadata.creation_timestamp {
        out.push(Entry {
            at: t.0,
            kind: "held",
            text: format!("Held: {} made the change", ar.spec.requester.username),
        });
    }
    for lane in &status.lanes {
        if let Some(t) = &lane.tier_started_at {
            let name = lane.tier_name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default();
            out.push(Entry {
                at: t.0,
                kind: "tier",
                text: format!("{}: tier {}/{}{name} reached", lane.route, lane.tier + 1, lane.tiers),
            });
        }
    }
    for n in &status.notifications {
        let what = if crate::escalation::is_expiry_notice(&n.key) {
            "expiry notice".to_string()
        } else if let Some(label) = crate::escalation::notice_label(&n.key) {
            format!("{label} notice")
        } else {
            format!("tier {}", n.tier + 1)
        };
        let route = if n.route.is_empty() { "requester".to_string() } else { n.route.clone() };
        let error = n.message.as_ref().map(|m| format!(": {m}")).unwrap_or_default();
        out.push(Entry {
            at: n.at.0,
            kind: "notified",
            text: format!("{route} {what}: notified {} via {} ({}{error})", n.recipient, n.sink, n.result),
        });
    }
    for s in &status.skips {
        let who = s.user.clone().unwrap_or_else(|| "the whole tier".into());
        let setting = s.setting.as_ref().map(|x| format!(" [{x}]")).unwrap_or_default();
        out.push(Entry {
            at: s.at.0,
            kind: "skipped",
            text: format!("{} tier {}: skipped {who}: {}{setting}", s.route, s.tier + 1, s.reason),
        });
    }
    for d in &status.decisions {
        let (kind, verb) = match d.decision {
            Verdict::Approve => ("approved", "approved"),
            Verdict::Reject => ("rejected", "rejected"),
        };
        let old = if d.attempt != status.attempt { " (an earlier attempt; no longer counts)" } else { "" };
        let comment = d.comment.as_ref().map(|c| format!(": “{c}”")).unwrap_or_default();
        out.push(Entry { at: d.at.0, kind, text: format!("{} {verb}{old}{comment}", d.approver) });
    }
    for a in &status.admissions {
        let how = if a.break_glass { " with break-glass, without an approval" } else { "" };
        out.push(Entry { at: a.at.0, kind: "admitted", text: format!("Applied by {}{how}", a.user) });
    }
    if let Some(h) = &status.hand_back {
        let msg = h.message.as_ref().map(|m| format!(": {m}")).unwrap_or_default();
        out.push(Entry {
            at: h.at.0,
            kind: "hand-back",
            text: format!("Handed back to its GitOps owner: {}{msg}", h.result),
        });
    }
    // Within a second (what the page shows), in the order things happen: a tier is
    // reached, then its people are skipped or notified, then they decide.
    let rank = |kind: &str| {
        ["held", "tier", "skipped", "notified", "approved", "rejected", "admitted", "hand-back"]
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(usize::MAX)
    };
    out.sort_by_key(|e| (e.at.as_second(), rank(e.kind), e.at));
    out
}

/// How a line of a unified diff is shown.
pub fn diff_class(line: &str) -> &'static str {
    if line.starts_with("+++") || line.starts_with("---") {
        "file"
    } else if line.starts_with('+') {
        "add"
    } else if line.starts_with('-') {
        "del"
    } else if line.starts_with('@') {
        "hunk"
    } else {
        "ctx"
    }
}

/// The head of every page; a signed-in page (`csrf`) also gets the live script.
fn head(title: &str, csrf: Option<&str>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            @if let Some(csrf) = csrf { meta name="csrf-token" content=(csrf); }
            title { (title) " · signoff" }
            link rel="stylesheet" href="/assets/app.css";
            @if csrf.is_some() { script src="/assets/app.js" defer {} }
        }
    }
}

/// The page around a view: the header with who is signed in, an optional notice
/// (kept outside the live region so a refresh does not remove it), and the live
/// region that the script refreshes from `live_src`.
/// `csrf` is also in a meta tag: forms are re-rendered by the live refresh, the token stays.
/// `sign_out` offers the button (a provider's session; the local server has none to end).
pub fn layout(
    title: &str,
    me: &UserInfo,
    csrf: &str,
    sign_out: bool,
    notice: Option<&Notice>,
    live_src: &str,
    live: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, Some(csrf)))
            body {
                header.top {
                    a.brand href="/" { "signoff" }
                    span.who {
                        "Signed in as " strong #me { (me.username) }
                        @if !me.groups.is_empty() { span.groups { " (" (me.groups.join(", ")) ")" } }
                        @if sign_out {
                            form.sign-out method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button #sign-out type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                @if let Some(n) = notice {
                    div.notice.(n.kind) #notice role=(if n.kind == "error" { "alert" } else { "status" }) { (n.text) }
                }
                main #live data-src=(live_src) aria-live="polite" { (live) }
            }
        }
    }
}

/// A one-sentence result shown above the page: an `error` or an `ok`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub kind: &'static str,
    pub text: String,
}

/// What the queue page's menus offer: the routes and namespaces seen.
pub struct Choices {
    pub routes: Vec<String>,
    pub namespaces: Vec<String>,
}

impl Choices {
    pub fn of(items: &[ApprovalRequest]) -> Choices {
        let mut routes: Vec<String> = items.iter().flat_map(|a| a.spec.routes.iter().cloned()).collect();
        let mut namespaces: Vec<String> = items.iter().filter_map(|a| a.metadata.namespace.clone()).collect();
        routes.sort();
        routes.dedup();
        namespaces.sort();
        namespaces.dedup();
        Choices { routes, namespaces }
    }
}

fn risk_class(risk: crate::crd::Risk) -> String {
    format!("risk risk-{}", risk.as_str().to_lowercase())
}

fn phase_class(phase: Phase) -> String {
    format!("phase phase-{}", format!("{phase:?}").to_lowercase())
}

/// The request page's full URL under the web queue's base URL.
pub fn request_url(base: &str, request: &crate::notify::RequestRef) -> String {
    format!("{}{}", base.trim_end_matches('/'), request_path(&request.namespace, &request.name))
}

/// The request page's address.
pub fn request_path(namespace: &str, name: &str) -> String {
    format!("/r/{namespace}/{name}")
}

fn row_markup(r: &Row) -> Markup {
    html! {
        tr.row.mine[r.mine] data-name=(r.name) data-namespace=(r.namespace) {
            td.action data-label="Action" {
                a href=(request_path(&r.namespace, &r.name)) { (r.action) }
                div.sub { (r.namespace) "/" (r.name) }
            }
            td data-label="Risk" { span class=(risk_class(r.risk)) { (r.risk.as_str()) } }
            td data-label="Phase" { span class=(phase_class(r.phase)) { (format!("{:?}", r.phase)) } }
            td data-label="Routes" { (r.routes.join(", ")) }
            td data-label="Tier" { (r.tier) }
            td data-label="Requester" { (r.requester) }
            td data-label="Age" { (r.age) }
            td.left data-label="Left" { (r.left) }
        }
    }
}

fn rows_table(id: &str, caption: &str, rows: &[Row], empty: &str) -> Markup {
    html! {
        section.queue #(id) {
            h2 { (caption) " " span.count { "(" (rows.len()) ")" } }
            @if rows.is_empty() {
                p.empty { (empty) }
            } @else {
                table {
                    thead { tr {
                        th scope="col" { "Action" } th scope="col" { "Risk" } th scope="col" { "Phase" }
                        th scope="col" { "Routes" } th scope="col" { "Tier" } th scope="col" { "Requester" }
                        th scope="col" { "Age" } th scope="col" { "Left" }
                    } }
                    tbody { @for r in rows { (row_markup(r)) } }
                }
            }
        }
    }
}

/// The queue's live region: the filters, what waits for `me`, then everything else
/// `me` can see that the filter keeps.
pub fn queue(items: &[ApprovalRequest], me: &UserInfo, filter: &Filter, now: Timestamp) -> Markup {
    let rows = queue::rows(items, me, filter, now);
    let (mine, others): (Vec<Row>, Vec<Row>) = rows.into_iter().partition(|r| r.mine);
    let choices = Choices::of(items);
    html! {
        h1 { "Approval queue" }
        form.filters method="get" action="/" {
            label { "Phase " select name="phase" {
                @for p in PhaseFilter::ALL {
                    option value=(p.as_str()) selected[filter.phase == p] { (p.as_str()) }
                }
            } }
            label { "Route " select name="route" {
                option value="" { "any" }
                @for r in &choices.routes { option value=(r) selected[filter.route.as_ref() == Some(r)] { (r) } }
            } }
            label { "Namespace " select name="namespace" {
                option value="" { "any" }
                @for n in &choices.namespaces { option value=(n) selected[filter.namespace.as_ref() == Some(n)] { (n) } }
            } }
            button type="submit" { "Filter" }
        }
        (rows_table("waiting", "Waiting for you", &mine, "Nothing is waiting for you."))
        (rows_table("visible", "Everything else you can see", &others, "Nothing else matches these filters."))
    }
}

/// The request page's live region: the packet, the diff, the escalation, and the
/// decision form when `me` may use it. `csrf` goes into every form.
pub fn request(ar: &ApprovalRequest, me: &UserInfo, now: Timestamp, csrf: &str) -> Markup {
    let spec = &ar.spec;
    let status = ar.status.clone().unwrap_or_default();
    let ns = ar.metadata.namespace.clone().unwrap_or_default();
    let name = ar.metadata.name.clone().unwrap_or_default();
    let row = queue::row(ar, me, now);
    let a = &spec.action;
    let gv = if a.group.is_empty() { a.version.clone() } else { format!("{}/{}", a.group, a.version) };
    let sub = a.sub_resource.as_ref().map(|s| format!("/{s}")).unwrap_or_default();
    let can = decidable(ar, me);
    let path = request_path(&ns, &name);
    html! {
        nav.back { a href="/" { "← Queue" } }
        h1 #title { (row.action) }
        p.summary {
            span class=(phase_class(status.phase)) #phase { (format!("{:?}", status.phase)) }
            " " span class=(risk_class(spec.risk)) { (spec.risk.as_str()) " risk" }
            " " span.class { (spec.action_class.as_str()) }
            " · routes " strong { (spec.routes.join(", ")) }
            " · requested by " strong #requester { (spec.requester.username) } " " (row.age) " ago"
            @if status.phase == Phase::Pending && row.left != "-" { " · " strong.left { (row.left) } " left in this tier" }
        }
        p.sub { (ns) "/" (name) " · attempt " (status.attempt) " · " (gv) ", " (a.resource) (sub) }

        section #reasons {
            h2 { "Why it was held" }
            ul { @for r in &spec.reasons {
                li { strong { (r.message) } " " span.sub { "rule " (r.rule) " of policy " (r.policy) ", " (r.risk.as_str()) " risk, route " (r.route) } }
            } }
        }
        @if let Some(ctx) = &spec.context {
            section #context {
                h2 { "Context from the requester" }
                dl {
                    @if let Some(reason) = &ctx.reason { dt { "Reason" } dd { (reason) } }
                    @if let Some(ticket) = &ctx.ticket { dt { "Ticket" } dd { (ticket) } }
                }
            }
        }
        section #cost {
            h2 { "Cost" }
            @match &spec.cost {
                Some(c) => p { (c.currency) " " (c.monthly_before) " → " (c.monthly_after) " per month ("
                    (if c.monthly_delta.starts_with('-') { "" } else { "+" }) (c.monthly_delta) ")" },
                None => p.sub { "No estimate." },
            }
        }
        @if let Some(owner) = &spec.gitops {
            section #gitops {
                h2 { "GitOps source" }
                p { (crate::gitops::describe(owner, status.gitops_source.as_ref())) }
            }
        }
        section #diff {
            h2 { "Change" }
            @match spec.diff.as_deref().filter(|d| !d.trim().is_empty()) {
                Some(diff) => pre.diff { @for line in diff.lines() { span class=(diff_class(line)) { (line) "\n" } } },
                None => p.sub { "No diff recorded." },
            }
        }
        section #decide {
            @match can.why_not() {
                None => {
                    form.decide method="post" action=(format!("{path}/decide")) {
                        input type="hidden" name="csrf" value=(csrf);
                        label for="comment" { "Comment (shown to the requester)" }
                        textarea #comment name="comment" rows="3" {}
                        div.buttons {
                            button.approve #approve type="submit" name="verdict" value="approve" { "Approve" }
                            button.reject #reject type="submit" name="verdict" value="reject" { "Reject" }
                        }
                    }
                }
                Some(why) => { p.why-not #why-not { (why) } }
            }
            @if may_reopen(ar, me, now) {
                form.reopen method="post" action=(format!("{path}/reopen")) {
                    input type="hidden" name="csrf" value=(csrf);
                    button #reopen type="submit" { "Ask again (reopen)" }
                    span.sub { " A new attempt starts at tier 1; earlier decisions no longer count." }
                }
            }
        }

        section #escalation {
            h2 { "Escalation" }
            @if status.lanes.is_empty() { p.sub { "Not started yet: signoff's controller opens the lanes." } }
            ul.lanes { @for lane in &status.lanes {
                li {
                    strong { (lane.route) } ": " (format!("{:?}", lane.phase)) ", tier " (lane.tier + 1) "/" (lane.tiers)
                    @if let Some(t) = &lane.tier_name { " " (t) }
                    @if let (Phase::Pending, Some(d)) = (lane.phase, &lane.tier_deadline) {
                        ", " (short(d.0.duration_since(now))) " left"
                    }
                    @let who: Vec<String> = lane.eligible.iter().filter(|u| **u != spec.requester.username).cloned()
                        .chain(lane.eligible_groups.iter().map(|g| format!("group {g}"))).collect();
                    @if !who.is_empty() { div.sub { "May decide: " (who.join(", ")) } }
                }
            } }
            ol.timeline { @for e in timeline(ar) {
                li class=(e.kind) { time datetime=(floor(e.at).to_string()) { (floor(e.at).strftime("%Y-%m-%d %H:%M:%S UTC")) } " " (e.text) }
            } }
            @if status.phase == Phase::Pending {
                @if let Some(d) = &status.deadline {
                    p.sub { "If nobody answers by " (floor(d.0).strftime("%Y-%m-%d %H:%M:%S UTC")) ": "
                        (spec.fallback.clone().unwrap_or_else(|| "the request expires and the change is never applied automatically; platform admins get a runbook.".into())) }
                }
            }
            @if let Some(runbook) = &status.runbook { h3 { "Runbook" } pre.runbook { (runbook) } }
        }
    }
}

/// A page for someone who is not signed in, or a request that failed, in one sentence.
pub fn message(title: &str, text: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, None))
            body { main.message { h1 { (title) } p #message { (text) } } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ApprovalRequestStatus, Decision, Lane};
    use crate::fixtures::Packet;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

    fn now() -> Timestamp {
        "2026-11-22T12:00:00Z".parse().unwrap()
    }

    fn me(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo { username: name.into(), uid: String::new(), groups: groups.iter().map(|g| g.to_string()).collect() }
    }

    fn held() -> ApprovalRequest {
        let mut ar = Packet::new("prod", "ar-1")
            .diff("--- a\n+++ b\n@@ -1 +1 @@\n-  replicas: 2\n+  replicas: <script>alert(1)</script>\n")
            .context("scale for the sale", "OPS-7")
            .build();
        ar.metadata.creation_timestamp = Some(Time(now() - jiff::SignedDuration::from_mins(5)));
        ar.status = Some(ApprovalRequestStatus {
            lanes: vec![Lane {
                route: "engineering".into(),
                policy: "p".into(),
                tier: 0,
                tiers: 3,
                tier_name: Some("Owner".into()),
                tier_started_at: Some(MicroTime(now() - jiff::SignedDuration::from_mins(5))),
                tier_deadline: Some(MicroTime(now() + jiff::SignedDuration::from_mins(10))),
                phase: Phase::Pending,
                eligible: vec!["alice".into(), "bob".into()],
                eligible_groups: vec![],
            }],
            ..Default::default()
        });
        ar
    }

    #[test]
    fn buttons_only_for_who_may_decide_and_a_reason_otherwise() {
        let ar = held();
        assert_eq!(decidable(&ar, &me("bob", &[])), Decidable::Yes);
        assert_eq!(decidable(&ar, &me("alice", &[])), Decidable::OwnChange);
        assert_eq!(decidable(&ar, &me("mallory", &[])), Decidable::NotReached);
        let page = request(&ar, &me("bob", &[]), now(), "tok").into_string();
        assert!(page.contains(r#"id="approve""#) && page.contains(r#"value="tok""#), "{page}");
        let page = request(&ar, &me("alice", &[]), now(), "tok").into_string();
        assert!(!page.contains(r#"id="approve""#), "no approve button for the requester");
        assert!(page.contains("You made this change"), "{page}");

        let mut decided = held();
        let status = decided.status.as_mut().unwrap();
        status.decisions.push(bob(Verdict::Approve, "looks fine", now() - jiff::SignedDuration::from_mins(1)));
        assert_eq!(decidable(&decided, &me("bob", &[])), Decidable::Decided(Verdict::Approve));
        status_phase(&mut decided, Phase::Rejected);
        assert_eq!(decidable(&decided, &me("bob", &[])), Decidable::Settled(Phase::Rejected));
        assert!(may_reopen(&decided, &me("alice", &[]), now()));
        assert!(!may_reopen(&decided, &me("bob", &[]), now()));
        let page = request(&decided, &me("alice", &[]), now(), "tok").into_string();
        assert!(page.contains(r#"id="reopen""#), "{page}");
    }

    /// bob's decision in attempt 1.
    fn bob(decision: Verdict, comment: &str, at: Timestamp) -> Decision {
        Decision {
            approver: "bob".into(),
            uid: None,
            groups: vec![],
            decision,
            routes: vec![],
            comment: Some(comment.into()),
            at: Time(at),
            attempt: 1,
        }
    }

    fn status_phase(ar: &mut ApprovalRequest, phase: Phase) {
        ar.status.as_mut().unwrap().phase = phase;
    }

    #[test]
    fn the_page_escapes_what_the_cluster_wrote_and_colours_the_diff() {
        let page = request(&held(), &me("bob", &[]), now(), "tok").into_string();
        assert!(!page.contains("<script>alert"), "escaped");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains(r#"<span class="del">-  replicas: 2"#), "{page}");
        assert!(page.contains(r#"<span class="add">+  replicas:"#));
        assert!(page.contains("scale for the sale") && page.contains("OPS-7"));
        assert!(page.contains("10m") && page.contains("left in this tier"), "{page}");
    }

    #[test]
    fn the_timeline_is_in_time_order() {
        let mut ar = held();
        let status = ar.status.as_mut().unwrap();
        status.decisions.push(bob(Verdict::Reject, "not now", now()));
        status.skips.push(crate::crd::Skip {
            route: "engineering".into(),
            tier: 0,
            user: Some("carol".into()),
            reason: "quiet hours".into(),
            setting: Some("Approver/carol spec.quietHours[0]".into()),
            at: Time(now() - jiff::SignedDuration::from_mins(4)),
        });
        let kinds: Vec<&str> = timeline(&ar).iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["held", "tier", "skipped", "rejected"]);
        let texts: Vec<String> = timeline(&ar).into_iter().map(|e| e.text).collect();
        assert!(texts[2].contains("[Approver/carol spec.quietHours[0]]"), "{texts:?}");
        assert!(texts[3].contains("bob rejected: “not now”"), "{texts:?}");
    }

    #[test]
    fn the_queue_splits_mine_from_the_rest() {
        let mut other = held();
        other.metadata.name = Some("ar-2".into());
        other.status.as_mut().unwrap().lanes[0].eligible = vec!["carol".into()];
        let page = queue(&[held(), other], &me("bob", &[]), &Filter::default(), now()).into_string();
        let waiting = page.find(r#"id="waiting""#).unwrap();
        let visible = page.find(r#"id="visible""#).unwrap();
        let one = page.find(r#"data-name="ar-1""#).unwrap();
        let two = page.find(r#"data-name="ar-2""#).unwrap();
        assert!(waiting < one && one < visible && visible < two, "{page}");
    }
}
