//! The web queue, tested as people use it: Debian's Chromium, headless, driven
//! through chromedriver, against `kubectl signoff ui` run by each person with
//! their own kubeconfig context, on the real control plane with signoff's webhook.
//! bob approves alice's held change from the page, alice cannot approve her own
//! (a forged POST gets the webhook's sentence), mallory can decide nothing, a
//! decision made elsewhere appears within 2 s, and the local server refuses what
//! a hostile page or program would try.

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::*;
use common::approvals::{held_ref, wait_for_lanes};
use common::*;
use fantoccini::Locator;
use fantoccini::key::Key;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn limits(ns: &str, name: &str, labels: &str, value: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{labels}}}\n  annotations: {{{annotations}}}\ndata:\n  maxOrdersPerMinute: \"{value}\"\n  region: eu-west-1\n"
    )
}

/// alice changes a ConfigMap so that it is held: created low-risk, then labelled
/// risk=high with a new value, a reason and a ticket. Returns the request's name
/// and the manifest she applied.
fn held_change(ns: &str, name: &str) -> (String, String) {
    let cp = cp();
    kubectl_ok(cp, "alice", &["apply", "-f", "-"], Some(&limits(ns, name, "tier: web", "200", "")));
    let risky = limits(
        ns,
        name,
        "tier: web, risk: high",
        "900",
        "signoff.dev/reason: \"Black Friday: the checkout needs more headroom\", signoff.dev/ticket: OPS-1234",
    );
    let err = kubectl_err(cp, "alice", &["apply", "-f", "-"], Some(&risky));
    assert!(err.contains("held for approval"), "{err}");
    let (held_ns, ar) = held_ref(&err);
    assert_eq!(held_ns, ns);
    wait_for_lanes(cp, ns, &ar);
    (ar, risky)
}

fn setup() -> String {
    signoff();
    gated_namespace(cp(), "ui")
}

/// The page does not scroll sideways, and the queue's rows are cards on a phone.
async fn fits(client: &fantoccini::Client, what: &str) {
    let overflow = client
        .execute("return document.documentElement.scrollWidth - window.innerWidth", vec![])
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    assert!(overflow <= 0, "{what}: the page is {overflow}px wider than the viewport");
}

#[test]
fn bob_approves_alices_change_in_the_browser_and_her_reapply_is_admitted() {
    let _one = one_at_a_time();
    let ns = setup();
    let (ar, manifest) = held_change(&ns, "checkout-limits");
    let ui = ui_server("bob");
    runtime().block_on(async {
        let b = browser(1280, 800).await;
        b.goto(&ui.login).await.unwrap();
        // The one-time link signs in and lands on the queue, where alice's change
        // waits for bob; filtered to her namespace, it is the first row.
        let waiting = format!("#waiting tr[data-name=\"{ar}\"]");
        within(10.0, "alice's change in bob's queue", || async { has(&b, &waiting).await }).await;
        b.find(Locator::Css("select[name=namespace]")).await.unwrap().select_by_value(&ns).await.unwrap();
        b.find(Locator::Css("form.filters button")).await.unwrap().click().await.unwrap();
        let first = format!("#waiting tbody tr:first-child[data-name=\"{ar}\"]");
        within(10.0, "alice's change first in the filtered queue", || async {
            has(&b, &first).await && b.current_url().await.unwrap().as_str().contains(&format!("namespace={ns}"))
        })
        .await;
        assert_eq!(text_of(&b, "#me").await, "bob");
        let row = text_of(&b, &first).await;
        for part in ["UPDATE ConfigMap", "checkout-limits", "High", "engineering", "alice"] {
            assert!(row.contains(part), "the row shows {part}: {row}");
        }
        fits(&b, "queue at 1280x800").await;
        screenshot(&b, "queue.png").await;

        b.find(Locator::Css(&format!("#waiting tr[data-name=\"{ar}\"] a"))).await.unwrap().click().await.unwrap();
        within(10.0, "the request page", || async { has(&b, "#approve").await }).await;
        let reasons = text_of(&b, "#reasons").await;
        assert!(
            reasons.contains("a ConfigMap labelled risk=high") && reasons.contains("high-risk-configmap"),
            "{reasons}"
        );
        let context = text_of(&b, "#context").await;
        assert!(context.contains("Black Friday") && context.contains("OPS-1234"), "{context}");
        let lines = |class: &'static str| {
            let b = b.clone();
            async move {
                let mut out = Vec::new();
                for e in b.find_all(Locator::Css(&format!("#diff .{class}"))).await.unwrap() {
                    out.push(e.text().await.unwrap());
                }
                out
            }
        };
        let (removed, added) = (lines("del").await, lines("add").await);
        assert!(
            removed.iter().any(|l| l.contains("maxOrdersPerMinute: '200'")),
            "the old value is a removed line: {removed:?}"
        );
        assert!(
            added.iter().any(|l| l.contains("maxOrdersPerMinute: '900'")),
            "the new value is an added line: {added:?}"
        );
        let timeline = text_of(&b, "#escalation").await;
        assert!(timeline.contains("Held: alice made the change") && timeline.contains("tier 1/"), "{timeline}");
        fits(&b, "request page at 1280x800").await;
        // The picture shows the page down to the buttons.
        set_viewport(&b, 1280, 1300).await;
        screenshot(&b, "request.png").await;
        set_viewport(&b, 1280, 800).await;

        // On a phone: nothing scrolls sideways and the buttons are thumb-sized.
        set_viewport(&b, 390, 844).await;
        fits(&b, "request page at 390x844").await;
        let height = b
            .execute("return document.getElementById('approve').getBoundingClientRect().height", vec![])
            .await
            .unwrap();
        assert!(height.as_f64().unwrap() >= 44.0, "approve is at least 44px tall: {height}");
        set_viewport(&b, 1280, 800).await;

        // With the keyboard only: type the comment, Tab to Approve, Enter.
        let comment = b.find(Locator::Id("comment")).await.unwrap();
        comment.click().await.unwrap();
        comment.send_keys("Checked the limits with the checkout team").await.unwrap();
        comment.send_keys(&Key::Tab).await.unwrap();
        let focused = b.active_element().await.unwrap().attr("id").await.unwrap();
        assert_eq!(focused.as_deref(), Some("approve"), "Tab from the comment reaches Approve");
        b.active_element().await.unwrap().send_keys(&Key::Enter).await.unwrap();
        let confirmed =
            within_or(10.0, || async { text_of(&b, "#notice").await == "You approved this request." }).await;
        assert!(
            confirmed,
            "the approval is confirmed; the page at {} says: {}",
            b.current_url().await.unwrap(),
            text_of(&b, "body").await
        );
        let timeline = text_of(&b, "#escalation").await;
        assert!(timeline.contains("bob approved: “Checked the limits with the checkout team”"), "{timeline}");
        assert!(!has(&b, "#approve").await, "no second approval offered");
        b.close().await.unwrap();
    });
    let ar_json = common::approvals::wait_for_phase(cp(), &ns, &ar, "Approved");
    assert_eq!(ar_json["status"]["decisions"][0]["approver"], "bob");
    // alice's identical re-apply is admitted.
    kubectl_ok(cp(), "alice", &["apply", "-f", "-"], Some(&manifest));
}

#[test]
fn alice_gets_no_button_for_her_own_change_and_a_forged_post_gets_the_webhooks_sentence() {
    let _one = one_at_a_time();
    let ns = setup();
    let (ar, _) = held_change(&ns, "own-change");
    // What the command line says when alice approves her own change.
    let (code, _, cli) = plugin("alice", &["approve", "-n", &ns, &ar]);
    assert_eq!(code, 1, "{cli}");
    let sentence = cli.trim().strip_prefix("error: ").unwrap().to_string();
    let ui = ui_server("alice");
    runtime().block_on(async {
        let b = browser(1280, 800).await;
        b.goto(&ui.login).await.unwrap();
        within(10.0, "alice's queue", || async { has(&b, &format!("tr[data-name=\"{ar}\"]")).await }).await;
        assert!(!has(&b, &format!("#waiting tr[data-name=\"{ar}\"]")).await, "her own change never waits for her");
        b.goto(&format!("{}/r/{ns}/{ar}", ui.base)).await.unwrap();
        within(10.0, "the request page", || async { has(&b, "#why-not").await }).await;
        assert!(!has(&b, "#approve").await && !has(&b, "#reject").await, "no buttons for the requester");
        assert_eq!(text_of(&b, "#why-not").await, "You made this change: someone else must decide it.");

        // A forged approve from her own session, with her valid CSRF token: the
        // webhook refuses it, and the page shows its sentence.
        let forged = b
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                   const csrf = document.querySelector('meta[name="csrf-token"]').content;
                   fetch(arguments[0], {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'},
                                        body: 'verdict=approve&csrf=' + encodeURIComponent(csrf)})
                     .then(async r => done([r.status, await r.text()]));"#,
                vec![serde_json::json!(format!("/r/{ns}/{ar}/decide"))],
            )
            .await
            .unwrap();
        assert_eq!(forged[0], 403, "refused");
        let page = forged[1].as_str().unwrap();
        let escaped = sentence.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
        assert!(page.contains(&escaped), "the page shows the CLI's sentence {sentence:?}:\n{page}");
        b.close().await.unwrap();
    });
    let ar_json = common::approvals::request(cp(), &ns, &ar);
    assert!(ar_json["status"]["decisions"].as_array().is_none_or(|d| d.is_empty()), "nothing was written");
}

#[test]
fn mallory_sees_nothing_she_can_decide() {
    let _one = one_at_a_time();
    let ns = setup();
    let (ar, _) = held_change(&ns, "not-for-mallory");
    let ui = ui_server("mallory");
    runtime().block_on(async {
        let b = browser(390, 844).await;
        b.goto(&ui.login).await.unwrap();
        within(10.0, "mallory's queue", || async { has(&b, &format!("#visible tr[data-name=\"{ar}\"]")).await }).await;
        assert_eq!(text_of(&b, "#waiting .empty").await, "Nothing is waiting for you.");
        assert!(!has(&b, "#waiting tr.row").await, "nothing waits for mallory");
        fits(&b, "queue at 390x844").await;
        let display = b
            .execute("return getComputedStyle(document.querySelector('#visible tr.row')).display", vec![])
            .await
            .unwrap();
        assert_eq!(display, "block", "rows are cards on a phone");
        b.goto(&format!("{}/r/{ns}/{ar}", ui.base)).await.unwrap();
        within(10.0, "the request page", || async { has(&b, "#why-not").await }).await;
        assert!(!has(&b, "#approve").await);
        assert_eq!(
            text_of(&b, "#why-not").await,
            "The escalation has not reached you: you may not decide this request."
        );
        b.close().await.unwrap();
    });
}

#[test]
fn a_change_made_elsewhere_appears_on_open_pages_within_2_seconds() {
    let _one = one_at_a_time();
    let ns = setup();
    let (ar, _) = held_change(&ns, "live-page");
    let ui = ui_server("bob");
    runtime().block_on(async {
        let page = browser(1280, 800).await;
        page.goto(&ui.login).await.unwrap();
        page.goto(&format!("{}/r/{ns}/{ar}", ui.base)).await.unwrap();
        within(10.0, "the request page, live", || async {
            has(&page, "#approve").await
                && page.execute("return document.body.dataset.live", vec![]).await.unwrap() == "connected"
        })
        .await;
        page.execute("window.notReloaded = true", vec![]).await.unwrap();
        // dave approves from the command line.
        plugin_ok("dave", &["approve", "-n", &ns, &ar, "--comment", "approved from the CLI"]);
        let took = within(2.0, "dave's approval on bob's open page", || async {
            text_of(&page, "#escalation").await.contains("dave approved: “approved from the CLI”")
        })
        .await;
        assert_eq!(page.execute("return window.notReloaded === true", vec![]).await.unwrap(), true, "no reload");
        eprintln!("the approval appeared on the open page {} ms after the CLI returned", took.as_millis());

        // The queue: a new hold appears without a reload.
        page.goto(&format!("{}/", ui.base)).await.unwrap();
        within(10.0, "the queue, live", || async {
            page.execute("return document.body.dataset.live", vec![]).await.unwrap() == "connected"
        })
        .await;
        page.execute("window.notReloaded = true", vec![]).await.unwrap();
        let risky = limits(&ns, "live-queue", "risk: high", "1", "");
        let err = kubectl_err(cp(), "alice", &["apply", "-f", "-"], Some(&risky));
        let (_, newer) = held_ref(&err);
        let took = within(2.0, "the new hold in bob's open queue", || async {
            has(&page, &format!("tr[data-name=\"{newer}\"]")).await
        })
        .await;
        assert_eq!(page.execute("return window.notReloaded === true", vec![]).await.unwrap(), true, "no reload");
        eprintln!("the new hold appeared in the open queue {} ms after kubectl returned", took.as_millis());
        page.close().await.unwrap();
    });
}

#[test]
fn the_local_server_refuses_no_token_a_foreign_host_and_a_write_without_csrf() {
    let ns = setup();
    let ui = ui_server("bob");
    let host = format!("127.0.0.1:{}", ui.port);
    let get = |path: &str, host: &str, cookie: &str| {
        raw_http(ui.port, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{cookie}Connection: close\r\n\r\n"))
    };
    // No session: not signed in.
    let (status, _, body) = get("/", &host, "");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Open the link that kubectl signoff ui printed"), "{body}");
    // A wrong token is refused and does not burn the real one.
    let (status, _, _) = get("/login?token=0000", &host, "");
    assert_eq!(status, 403);
    let token = ui.login.split("token=").nth(1).unwrap();
    // The real token, but asked for under another name (DNS rebinding): refused.
    let (status, _, body) = get(&format!("/login?token={token}"), "attacker.example:80", "");
    assert_eq!(status, 421, "{body}");
    let (status, head, _) = get(&format!("/login?token={token}"), &host, "");
    assert_eq!(status, 303, "{head}");
    let session = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let head_lower = head.to_lowercase();
    assert!(head_lower.contains("httponly") && head_lower.contains("samesite=strict"), "{head}");
    // Used once: a second use is refused.
    assert_eq!(get(&format!("/login?token={token}"), &host, "").0, 403);
    let cookie = format!("Cookie: {session}\r\n");
    let (status, head, body) = get("/", &host, &cookie);
    assert_eq!(status, 200, "{body}");
    assert!(head.to_lowercase().contains("content-security-policy: default-src 'self'"), "{head}");
    assert!(head.to_lowercase().contains("x-frame-options: deny"), "{head}");
    assert_eq!(get("/", &format!("localhost:{}", ui.port), &cookie).0, 200, "localhost is this server too");
    let (status, _, _) = get("/", "attacker.example", &cookie);
    assert_eq!(status, 421, "a foreign Host is refused even with the cookie");
    // A write without the CSRF token, and one from another origin: refused.
    let (ar, _) = held_change(&ns, "csrf");
    let post = |body: &str, extra: &str| {
        raw_http(
            ui.port,
            &format!(
                "POST /r/{ns}/{ar}/decide HTTP/1.1\r\nHost: {host}\r\n{cookie}{extra}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let (status, _, body) = post("verdict=approve", "");
    assert_eq!(status, 403);
    assert!(body.contains("no valid CSRF token"), "{body}");
    let page = get(&format!("/r/{ns}/{ar}"), &host, &cookie).2;
    let start = page.find("name=\"csrf-token\" content=\"").unwrap() + "name=\"csrf-token\" content=\"".len();
    let csrf = &page[start..start + 64];
    let (status, _, body) = post(&format!("verdict=approve&csrf={csrf}"), "Origin: http://attacker.example\r\n");
    assert_eq!(status, 403);
    assert!(body.contains("A write from http://attacker.example is not allowed"), "{body}");
    // No CORS: nothing invites another origin to read the answers.
    let (_, head, _) = get("/", &host, &format!("{cookie}Origin: http://attacker.example\r\n"));
    assert!(!head.to_lowercase().contains("access-control-allow"), "{head}");
    let ar_json = common::approvals::request(cp(), &ns, &ar);
    assert!(ar_json["status"]["decisions"].as_array().is_none_or(|d| d.is_empty()), "nothing was written");
    // With the token, from this origin, the same write goes through.
    let (status, head, _) = post(&format!("verdict=approve&csrf={csrf}"), &format!("Origin: http://{host}\r\n"));
    assert_eq!(status, 303, "{head}");
}
