//! The web queue, tested as people use it: Debian's Chromium, headless, driven
//! through chromedriver, on the real control plane with signoff's webhook.
//!
//! Local mode: `kubectl signoff ui` run by each person with their own kubeconfig
//! context. bob approves alice's held change from the page, alice cannot approve
//! her own (a forged POST gets the webhook's sentence), mallory can decide
//! nothing, a decision made elsewhere appears within 2 s, and the local server
//! refuses what a hostile page or program would try.
//!
//! In-cluster mode: signoff serves the queue itself; people sign in with Dex
//! (built from Go modules, hack/peers/dex), and the API server of this test
//! binary trusts Dex's ID tokens (an AuthenticationConfiguration). erin signs in
//! through Dex's login form and approves a held Secret; a user Dex does not know
//! cannot sign in.

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

/// bcrypt of "password": Dex's own example hash, for the static users.
const DEX_PASSWORD_HASH: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";

/// Dex, the control plane that trusts it, and signoff serving the web queue.
struct World {
    _dex: signoff_testenv::Supervised,
    _dir: tempfile::TempDir,
    /// signoff's web queue, as browsers reach it.
    ui: String,
    issuer: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Everything this binary's tests run against, started once: Dex first (the API
/// server's authentication configuration names it), then the control plane, then
/// signoff with its webhook and its web queue.
fn world() -> &'static World {
    static WORLD: std::sync::OnceLock<World> = std::sync::OnceLock::new();
    WORLD.get_or_init(|| {
        let dex_bin = common::gitops::script("hack/peers/dex/build.sh", &[]).join("dex");
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let (dex_port, ui_port) = (free_port(), free_port());
        let issuer = format!("https://127.0.0.1:{dex_port}/dex");
        let ui = format!("http://127.0.0.1:{ui_port}");
        let ca = signoff::tls::certs::Ca::new("signoff-test-oidc-ca", 30).unwrap();
        let serving = ca.issue_server("dex", &[], &["127.0.0.1".parse().unwrap()], 30).unwrap();
        std::fs::write(path("ca.crt"), ca.cert_pem()).unwrap();
        std::fs::write(path("tls.crt"), &serving.cert_pem).unwrap();
        std::fs::write(path("tls.key"), &serving.key_pem).unwrap();
        // The people of the demo who sign in here, with their groups; nobody else.
        let users = [("erin", "team:security"), ("bob", "team:payments"), ("mallory", "signoff:requesters")]
            .map(|(name, group)| {
                format!(
                    "- {{email: {name}@signoff.test, hash: \"{DEX_PASSWORD_HASH}\", username: {name}, preferredUsername: {name}, userID: u-{name}, groups: [\"{group}\"]}}\n"
                )
            })
            .concat();
        let config = format!(
            "issuer: {issuer}\nstorage: {{type: memory}}\nweb:\n  https: 127.0.0.1:{dex_port}\n  tlsCert: {}\n  tlsKey: {}\n\
             logger: {{level: info}}\noauth2: {{skipApprovalScreen: true}}\nenablePasswordDB: true\nstaticPasswords:\n{users}\
             staticClients:\n- {{id: signoff-ui, name: signoff, public: true, redirectURIs: [\"{ui}/callback\"]}}\n",
            path("tls.crt").display(),
            path("tls.key").display()
        );
        std::fs::write(path("dex.yaml"), config).unwrap();
        let config_path = path("dex.yaml").display().to_string();
        let dex = signoff_testenv::Supervised::spawn("dex", &dex_bin, &["serve", &config_path], &[], &path("dex.log"), None)
            .unwrap();
        eventually(30, "Dex to serve its discovery document", || {
            std::net::TcpStream::connect(("127.0.0.1", dex_port)).ok()
        });
        // The API server trusts Dex's ID tokens for signoff's client: username and
        // groups from the token, as the demo users' static tokens give them.
        let indent = |pem: &str| pem.lines().map(|l| format!("      {l}\n")).collect::<String>();
        let authn = format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AuthenticationConfiguration\njwt:\n- issuer:\n    url: {issuer}\n    audiences: [signoff-ui]\n    certificateAuthority: |\n{}  claimMappings:\n    username: {{claim: preferred_username, prefix: \"\"}}\n    groups: {{claim: groups, prefix: \"\"}}\n",
            indent(ca.cert_pem())
        );
        std::fs::write(path("authentication.yaml"), authn).unwrap();
        signoff_testenv::ControlPlane::shared_with(|| signoff_testenv::Options {
            authentication_config: Some(path("authentication.yaml")),
            ..Default::default()
        });
        let fixture = signoff_testenv::checkout().unwrap().join("tests/fixtures/ui-policies.yaml");
        kubectl_ok(cp(), ADMIN, &["apply", "-f", &fixture.display().to_string()], None);
        let ca_file = path("ca.crt").display().to_string();
        let signoff = start_signoff(&[
            &format!("--ui-addr=127.0.0.1:{ui_port}"),
            &format!("--ui-url={ui}"),
            &format!("--ui-oidc-issuer={issuer}"),
            "--ui-oidc-client-id=signoff-ui",
            &format!("--ui-oidc-ca-file={ca_file}"),
        ]);
        // Kept for the binary's life: its Drop stops the process.
        Box::leak(Box::new(signoff));
        World { _dex: dex, _dir: dir, ui, issuer }
    })
}

fn setup() -> String {
    world();
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

#[test]
fn in_the_cluster_erin_signs_in_with_dex_and_approves_a_held_secret() {
    let _one = one_at_a_time();
    let ns = setup();
    let world = world();
    // erin's pages go to a loopback receiver: they link to the request's page.
    let receiver = Receiver::start();
    let approver = format!(
        "apiVersion: signoff.dev/v1alpha1\nkind: Approver\nmetadata: {{name: erin}}\nspec:\n  user: erin\n  contacts: [{{kind: Webhook, url: \"{}/erin\"}}]\n",
        receiver.url
    );
    kubectl_ok(cp(), ADMIN, &["apply", "-f", "-"], Some(&approver));
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: payment-keys\n  namespace: {ns}\nstringData:\n  api-key: rotated-2026-12\n"
    );
    let err = kubectl_err(cp(), "alice", &["apply", "-f", "-"], Some(&secret));
    assert!(err.contains("held for approval") && err.contains("security"), "{err}");
    let (_, ar) = held_ref(&err);
    wait_for_lanes(cp(), &ns, &ar);
    let page = format!("{}/r/{ns}/{ar}", world.ui);
    let paged = eventually(30, "erin's page about the Secret", || {
        receiver.received("/erin").into_iter().find(|r| r.body["request"]["name"] == ar.as_str())
    });
    assert_eq!(paged.body["url"], page.as_str(), "the notification links to the request's page");
    runtime().block_on(async {
        // Chromium trusts Dex's test CA only through this session's setting; signoff
        // checks Dex's certificate against the CA file it was given.
        let b = browser_with(1280, 800, true).await;
        // She follows the link in her notification.
        b.goto(&page).await.unwrap();
        // Not signed in: signoff sends the browser to Dex's login form.
        within(15.0, "Dex's login form", || async { has(&b, "#login").await && has(&b, "#password").await }).await;
        let at = b.current_url().await.unwrap().to_string();
        assert!(at.starts_with(&world.issuer), "the login form is Dex's: {at}");
        b.find(Locator::Id("login")).await.unwrap().send_keys("erin@signoff.test").await.unwrap();
        b.find(Locator::Id("password")).await.unwrap().send_keys("password").await.unwrap();
        b.find(Locator::Id("submit-login")).await.unwrap().click().await.unwrap();
        // Back at the request page, signed in as the API server authenticates her.
        let back = within_or(15.0, || async { has(&b, "#approve").await }).await;
        assert!(
            back,
            "erin on the request page; at {}: {}\nDex's log:\n{}",
            b.current_url().await.unwrap(),
            text_of(&b, "body").await,
            std::fs::read_to_string(world._dir.path().join("dex.log")).unwrap_or_default()
        );
        assert_eq!(b.current_url().await.unwrap().as_str(), page);
        assert_eq!(text_of(&b, "#me").await, "erin");
        let reasons = text_of(&b, "#reasons").await;
        assert!(reasons.contains("security signs off"), "{reasons}");
        b.find(Locator::Id("comment")).await.unwrap().send_keys("Rotation agreed in SEC-88").await.unwrap();
        b.find(Locator::Id("approve")).await.unwrap().click().await.unwrap();
        within(10.0, "the approval to be confirmed", || async {
            text_of(&b, "#notice").await == "You approved this request."
        })
        .await;
        b.goto(&format!("{}/", world.ui)).await.unwrap();
        within(10.0, "erin's queue", || async { has(&b, "#visible, #waiting").await }).await;
        // Signing out ends the session: the queue asks for Dex again.
        b.find(Locator::Id("sign-out")).await.unwrap().click().await.unwrap();
        within(10.0, "signed out", || async { text_of(&b, "h1").await == "Signed out" }).await;
        b.goto(&format!("{}/", world.ui)).await.unwrap();
        within(15.0, "Dex's login form again", || async { has(&b, "#login").await }).await;
        b.close().await.unwrap();
    });
    let approved = common::approvals::wait_for_phase(cp(), &ns, &ar, "Approved");
    let decision = &approved["status"]["decisions"][0];
    assert_eq!(decision["approver"], "erin");
    assert_eq!(decision["groups"], serde_json::json!(["team:security", "system:authenticated"]));
    assert_eq!(decision["comment"], "Rotation agreed in SEC-88");
    kubectl_ok(cp(), "alice", &["apply", "-f", "-"], Some(&secret));
}

#[test]
fn in_the_cluster_a_user_dex_does_not_know_cannot_sign_in() {
    let _one = one_at_a_time();
    setup();
    let world = world();
    runtime().block_on(async {
        let b = browser_with(1280, 800, true).await;
        b.goto(&format!("{}/", world.ui)).await.unwrap();
        within(15.0, "Dex's login form", || async { has(&b, "#login").await }).await;
        b.find(Locator::Id("login")).await.unwrap().send_keys("nobody@signoff.test").await.unwrap();
        b.find(Locator::Id("password")).await.unwrap().send_keys("password").await.unwrap();
        b.find(Locator::Id("submit-login")).await.unwrap().click().await.unwrap();
        within(15.0, "Dex to refuse", || async {
            text_of(&b, "body").await.contains("Invalid") && has(&b, "#login").await
        })
        .await;
        assert!(b.current_url().await.unwrap().as_str().starts_with(&world.issuer), "still at Dex");
        // signoff never gave this browser a session: the queue sends it to sign in again.
        b.goto(&format!("{}/", world.ui)).await.unwrap();
        within(15.0, "the sign-in again", || async { has(&b, "#login").await }).await;
        assert!(!has(&b, "#me").await);
        b.close().await.unwrap();
    });
    // Nor does a forged callback: a state signoff never issued is refused.
    let port: u16 = world.ui.rsplit(':').next().unwrap().parse().unwrap();
    let (status, _, body) = raw_http(
        port,
        &format!("GET /callback?code=x&state=forged HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("this sign-in was not started here"), "{body}");
}

#[test]
fn alice_reopens_her_rejected_change_from_the_page() {
    let _one = one_at_a_time();
    let ns = setup();
    let (ar, _) = held_change(&ns, "reopen-me");
    plugin_ok("bob", &["reject", "-n", &ns, &ar, "--comment", "not during the freeze"]);
    common::approvals::wait_for_phase(cp(), &ns, &ar, "Rejected");
    let ui = ui_server("alice");
    runtime().block_on(async {
        let b = browser(390, 844).await;
        b.goto(&ui.login).await.unwrap();
        b.goto(&format!("{}/r/{ns}/{ar}", ui.base)).await.unwrap();
        within(10.0, "the reopen button", || async { has(&b, "#reopen").await }).await;
        let timeline = text_of(&b, "#escalation").await;
        assert!(timeline.contains("bob rejected: “not during the freeze”"), "{timeline}");
        b.find(Locator::Id("reopen")).await.unwrap().click().await.unwrap();
        within(10.0, "the reopen to be confirmed", || async {
            text_of(&b, "#notice").await == "Reopened: a new attempt starts at tier 1."
        })
        .await;
        b.close().await.unwrap();
    });
    eventually(30, "attempt 2 to start", || {
        let ar = common::approvals::request(cp(), &ns, &ar);
        (ar["status"]["attempt"] == 2 && ar["status"]["phase"] == "Pending").then_some(())
    });
}
