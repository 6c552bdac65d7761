//! The web queue's HTTP server, shared by `kubectl signoff ui` (local) and signoff
//! in the cluster (OIDC): sessions, the Host check, CSRF tokens, security
//! headers, the pages and the live events. Every API call is made with the
//! signed-in person's own credentials, so the API server and signoff's webhook
//! see exactly who they are; this server decides nothing itself.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use jiff::Timestamp;
use kube::api::{Api, ListParams, PartialObjectMeta};
use kube::runtime::watcher;
use maud::Markup;
use serde::Deserialize;

use super::oidc::{self, Oidc};
use super::page::{self, Notice};
use crate::crd::{ApprovalRequest, Verdict};
use crate::policy::UserInfo;
use crate::queue::{Filter, PhaseFilter};

/// The cookie that carries a session's id.
pub const SESSION_COOKIE: &str = "signoff_session";
/// The header by which the page's script asks for the live region only.
pub const FRAGMENT_HEADER: &str = "x-signoff-fragment";

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// Where a person's requests are listed: every namespace, or only one (when the
/// API server does not let them list across namespaces).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespace(String),
}

/// A signed-in person: their API client, who the API server says they are, and
/// the token their forms must carry.
pub struct Session {
    pub client: kube::Client,
    pub user: UserInfo,
    pub scope: Scope,
    pub csrf: String,
    /// When the credentials stop working (an ID token's `exp`); none for local.
    pub expires: Option<Timestamp>,
}

/// How people sign in.
pub enum Auth {
    /// `kubectl signoff ui`: one person, the kubeconfig's. The first URL carries a
    /// one-time token that is exchanged for the session cookie.
    Local { login_token: Mutex<Option<String>>, client: kube::Client, namespace: String },
    /// In the cluster: the cluster's OIDC provider, authorization code with PKCE.
    Oidc(Box<Oidc>),
}

/// The server's state.
pub struct Ui {
    pub auth: Auth,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Host header values this server answers to (a DNS-rebinding defence).
    hosts: Vec<String>,
    /// Mark cookies Secure (served over HTTPS, in the cluster).
    secure_cookies: bool,
}

/// Random bytes as hex: session ids, one-time tokens, CSRF tokens, PKCE.
pub fn random_token() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who the API server says the client's user is, and where they may list requests.
pub async fn identify(client: &kube::Client, namespace: Option<&str>) -> Result<(UserInfo, Scope), String> {
    let user = crate::cli::decide::whoami(client).await?;
    let all: Api<ApprovalRequest> = Api::all(client.clone());
    let scope = match all.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Scope::All,
        Err(kube::Error::Api(e)) if e.code == 403 => match namespace {
            Some(ns) => Scope::Namespace(ns.to_string()),
            None => return Err(format!("{} may not list ApprovalRequests across namespaces", user.username)),
        },
        Err(e) => return Err(crate::cli::decide::one_line(&e)),
    };
    Ok((user, scope))
}

impl Ui {
    /// The local server for the kubeconfig's user; returns it and the one-time
    /// token of its first URL. `hosts`: the `host:port` names it answers to.
    pub async fn local(client: kube::Client, namespace: String, hosts: Vec<String>) -> Result<(Ui, String), String> {
        // Fail now, not in the browser, when the credentials do not work.
        identify(&client, Some(&namespace)).await?;
        let token = random_token();
        let auth = Auth::Local { login_token: Mutex::new(Some(token.clone())), client, namespace };
        Ok((Ui { auth, sessions: Mutex::new(HashMap::new()), hosts, secure_cookies: false }, token))
    }

    /// The in-cluster server: people sign in with `oidc`; `hosts` as for local.
    pub fn oidc(oidc: Oidc, hosts: Vec<String>, secure_cookies: bool) -> Ui {
        Ui { auth: Auth::Oidc(Box::new(oidc)), sessions: Mutex::new(HashMap::new()), hosts, secure_cookies }
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/", get(queue_page))
            .route("/r/{namespace}/{name}", get(request_page))
            .route("/r/{namespace}/{name}/decide", post(decide))
            .route("/r/{namespace}/{name}/reopen", post(reopen))
            .route("/events", get(events))
            .route("/login", get(login))
            .route("/callback", get(callback))
            .route("/logout", post(logout))
            .route("/assets/app.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS) }))
            .route("/assets/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], JS) }))
            .layer(axum::middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self)
    }

    fn session(&self, headers: &HeaderMap) -> Option<Arc<Session>> {
        let id = cookie(headers, SESSION_COOKIE)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let session = sessions.get(&id)?.clone();
        if session.expires.is_some_and(|t| t <= Timestamp::now()) {
            sessions.remove(&id);
            return None;
        }
        Some(session)
    }

    fn start_session(&self, session: Session) -> String {
        let id = random_token();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        // Sessions whose credentials expired are of no use: forget them.
        let now = Timestamp::now();
        sessions.retain(|_, s| s.expires.is_none_or(|t| t > now));
        sessions.insert(id.clone(), Arc::new(session));
        drop(sessions);
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        // After an OIDC sign-in the browser arrives from the provider's site, and a
        // Strict cookie would not be sent on that navigation's redirect: Lax is sent
        // on top-level GETs only, and every write needs the CSRF token anyway.
        let same_site = match self.auth {
            Auth::Local { .. } => "Strict",
            Auth::Oidc(_) => "Lax",
        };
        format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite={same_site}{secure}")
    }

    /// What someone without a session gets: a sign-in redirect (OIDC) or a page
    /// that says how to get in.
    fn signed_out(&self, wants: &str) -> Response {
        match &self.auth {
            Auth::Oidc(_) => Redirect::to(&format!("/login?next={}", urlencode(wants))).into_response(),
            Auth::Local { .. } => message(
                StatusCode::UNAUTHORIZED,
                "Not signed in",
                "Open the link that kubectl signoff ui printed (it signs this browser in once), or run kubectl signoff ui again.",
            ),
        }
    }
}

/// Percent-encode a URL component.
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

fn message(status: StatusCode, title: &str, text: &str) -> Response {
    (status, Html(page::message(title, text).into_string())).into_response()
}

/// Every response: the Host check first (a page served to another name could be
/// read by that name's scripts), then headers that keep the page out of frames,
/// other origins' scripts and caches. No CORS headers are ever sent.
async fn guard(State(ui): State<Arc<Ui>>, request: Request<axum::body::Body>, next: Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default().to_string();
    let mut response = if !ui.hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
        message(
            StatusCode::MISDIRECTED_REQUEST,
            "Wrong address",
            &format!("This server answers only to {}; it was asked for host {host:?}.", ui.hosts.join(", ")),
        )
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Not no-referrer: with it, browsers send `Origin: null` on our own form posts.
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A page, or only its live region when the script asks for it.
fn respond(
    ui: &Ui,
    headers: &HeaderMap,
    title: &str,
    session: &Session,
    notice: Option<&Notice>,
    src: &str,
    live: Markup,
) -> Response {
    if headers.get(FRAGMENT_HEADER).is_some() {
        return Html(live.into_string()).into_response();
    }
    let sign_out = matches!(ui.auth, Auth::Oidc(_));
    Html(page::layout(title, &session.user, &session.csrf, sign_out, notice, src, live).into_string()).into_response()
}

#[derive(Deserialize, Default)]
struct QueueQuery {
    phase: Option<String>,
    route: Option<String>,
    namespace: Option<String>,
}

async fn list(session: &Session) -> Result<Vec<ApprovalRequest>, kube::Error> {
    let api: Api<ApprovalRequest> = match &session.scope {
        Scope::All => Api::all(session.client.clone()),
        Scope::Namespace(ns) => Api::namespaced(session.client.clone(), ns),
    };
    Ok(api.list(&ListParams::default()).await?.items)
}

/// An API error while reading: signed out again when the API server no longer
/// accepts the credentials, else one sentence.
fn read_failed(ui: &Ui, error: &kube::Error, wants: &str) -> Response {
    if matches!(error, kube::Error::Api(e) if e.code == 401) && matches!(ui.auth, Auth::Oidc(_)) {
        return ui.signed_out(wants);
    }
    message(StatusCode::BAD_GATEWAY, "The API server refused", &crate::cli::decide::one_line(error))
}

async fn queue_page(State(ui): State<Arc<Ui>>, headers: HeaderMap, Query(q): Query<QueueQuery>) -> Response {
    let Some(session) = ui.session(&headers) else { return ui.signed_out("/") };
    let filter = Filter {
        phase: q.phase.as_deref().and_then(PhaseFilter::parse).unwrap_or_default(),
        route: q.route.filter(|r| !r.is_empty()),
        namespace: q.namespace.filter(|n| !n.is_empty()),
        mine: false,
    };
    let items = match list(&session).await {
        Ok(items) => items,
        Err(e) => return read_failed(&ui, &e, "/"),
    };
    let mut src = String::from("/?");
    src.push_str(&format!("phase={}", filter.phase.as_str()));
    for (k, v) in [("route", &filter.route), ("namespace", &filter.namespace)] {
        if let Some(v) = v {
            src.push_str(&format!("&{k}={}", urlencode(v)));
        }
    }
    let live = page::queue(&items, &session.user, &filter, Timestamp::now());
    respond(&ui, &headers, "Approval queue", &session, None, &src, live)
}

#[derive(Deserialize, Default)]
struct RequestQuery {
    done: Option<String>,
}

async fn show(
    ui: &Ui,
    session: &Session,
    headers: &HeaderMap,
    ns: &str,
    name: &str,
    notice: Option<Notice>,
) -> Response {
    let path = page::request_path(ns, name);
    let api: Api<ApprovalRequest> = Api::namespaced(session.client.clone(), ns);
    let ar = match api.get_opt(name).await {
        Ok(Some(ar)) => ar,
        Ok(None) => {
            return message(
                StatusCode::NOT_FOUND,
                "Not found",
                &format!("ApprovalRequest {ns}/{name} does not exist."),
            );
        }
        Err(e) => return read_failed(ui, &e, &path),
    };
    let status = match &notice {
        Some(n) if n.kind == "error" => StatusCode::FORBIDDEN,
        _ => StatusCode::OK,
    };
    let live = page::request(&ar, &session.user, Timestamp::now(), &session.csrf);
    let title = format!("{ns}/{name}");
    (status, respond(ui, headers, &title, session, notice.as_ref(), &path, live)).into_response()
}

async fn request_page(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<RequestQuery>,
) -> Response {
    let Some(session) = ui.session(&headers) else { return ui.signed_out(&page::request_path(&ns, &name)) };
    let notice = q.done.as_deref().and_then(|done| {
        let text = match done {
            "approved" => "You approved this request.",
            "rejected" => "You rejected this request.",
            "reopened" => "Reopened: a new attempt starts at tier 1.",
            _ => return None,
        };
        Some(Notice { kind: "ok", text: text.into() })
    });
    show(&ui, &session, &headers, &ns, &name, notice).await
}

#[derive(Deserialize)]
struct DecideForm {
    csrf: Option<String>,
    verdict: Option<String>,
    comment: Option<String>,
}

/// A write must come from our own page: the session's CSRF token, and no
/// foreign Origin.
fn check_write(
    session: &Session,
    headers: &HeaderMap,
    csrf: Option<&str>,
    hosts: &[String],
) -> Result<(), Box<Response>> {
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Err(Box::new(message(
                StatusCode::FORBIDDEN,
                "Refused",
                &format!("A write from {origin} is not allowed."),
            )));
        }
    }
    match csrf {
        Some(token) if same(token, &session.csrf) => Ok(()),
        _ => Err(Box::new(message(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form has no valid CSRF token: reload the page and try again.",
        ))),
    }
}

/// The session of a write about `path`: signed in, with the CSRF token, from our origin.
fn writer(ui: &Ui, headers: &HeaderMap, path: &str, csrf: Option<&str>) -> Result<Arc<Session>, Box<Response>> {
    let session = ui.session(headers).ok_or_else(|| Box::new(ui.signed_out(path)))?;
    check_write(&session, headers, csrf, &ui.hosts)?;
    Ok(session)
}

async fn decide(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Form(form): Form<DecideForm>,
) -> Response {
    let path = page::request_path(&ns, &name);
    let session = match writer(&ui, &headers, &path, form.csrf.as_deref()) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    let verdict = match form.verdict.as_deref() {
        Some("approve") => Verdict::Approve,
        Some("reject") => Verdict::Reject,
        _ => return message(StatusCode::BAD_REQUEST, "Refused", "Choose Approve or Reject."),
    };
    let comment = form.comment.map(|c| c.trim().to_string()).filter(|c| !c.is_empty());
    // The same write as `kubectl signoff approve|reject`, as this person; a refusal
    // is the webhook's own sentence.
    match crate::cli::decide::decide(&session.client, &ns, &name, verdict, comment).await {
        Ok(_) => {
            let done = if verdict == Verdict::Approve { "approved" } else { "rejected" };
            Redirect::to(&format!("{path}?done={done}")).into_response()
        }
        Err(sentence) => {
            show(&ui, &session, &headers, &ns, &name, Some(Notice { kind: "error", text: sentence })).await
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn reopen(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let path = page::request_path(&ns, &name);
    let session = match writer(&ui, &headers, &path, form.csrf.as_deref()) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    match crate::cli::requests::reopen(&session.client, &ns, &name).await {
        Ok(_) => Redirect::to(&format!("{path}?done=reopened")).into_response(),
        Err(sentence) => {
            show(&ui, &session, &headers, &ns, &name, Some(Notice { kind: "error", text: sentence })).await
        }
    }
}

/// Server-sent events: `change` whenever an ApprovalRequest the person can see
/// is added, changed or removed (a watch with their own credentials).
async fn events(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    let Some(session) = ui.session(&headers) else {
        return message(StatusCode::UNAUTHORIZED, "Not signed in", "Sign in to follow changes.");
    };
    Sse::new(changes(&session)).keep_alive(KeepAlive::default()).into_response()
}

fn changes(session: &Session) -> impl Stream<Item = Result<Event, Infallible>> + use<> {
    let api: Api<PartialObjectMeta<ApprovalRequest>> = match &session.scope {
        Scope::All => Api::all(session.client.clone()),
        Scope::Namespace(ns) => Api::namespaced(session.client.clone(), ns),
    };
    watcher::watcher(api, watcher::Config::default()).filter_map(|event| async move {
        let name = match event {
            Ok(watcher::Event::Apply(m) | watcher::Event::Delete(m)) => {
                format!("{}/{}", m.metadata.namespace.unwrap_or_default(), m.metadata.name.unwrap_or_default())
            }
            // A re-list may have missed changes: refresh once it is complete.
            Ok(watcher::Event::InitDone) => String::new(),
            Ok(_) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "ui: watch of ApprovalRequests failed; the watcher retries");
                return None;
            }
        };
        Some(Ok(Event::default().event("change").data(name)))
    })
}

#[derive(Deserialize)]
struct LoginQuery {
    token: Option<String>,
    next: Option<String>,
}

/// Local: exchange the one-time token for a session cookie. OIDC: go to the
/// provider.
async fn login(State(ui): State<Arc<Ui>>, Query(q): Query<LoginQuery>) -> Response {
    match &ui.auth {
        Auth::Local { login_token, client, namespace } => {
            let expected = login_token.lock().unwrap_or_else(|e| e.into_inner()).take();
            let ok = matches!((&expected, &q.token), (Some(e), Some(t)) if same(e, t));
            if !ok {
                // A wrong guess does not burn the real token.
                if let Some(e) = expected.filter(|_| q.token.is_some()) {
                    *login_token.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                }
                return message(
                    StatusCode::FORBIDDEN,
                    "Sign-in refused",
                    "This sign-in link is not valid or was already used: run kubectl signoff ui again for a new one.",
                );
            }
            let (user, scope) = match identify(client, Some(namespace)).await {
                Ok(found) => found,
                Err(e) => return message(StatusCode::BAD_GATEWAY, "The API server refused", &e),
            };
            let new = Session { client: client.clone(), user, scope, csrf: random_token(), expires: None };
            let cookie = ui.start_session(new);
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Auth::Oidc(provider) => {
            // Only a path of this server: not `//host` nor `/\host`, which browsers read as another site.
            let next = q
                .next
                .filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
                .unwrap_or_else(|| "/".into());
            match provider.start(&next).await {
                Ok(url) => Redirect::to(&url).into_response(),
                Err(e) => message(StatusCode::BAD_GATEWAY, "Sign-in is unavailable", &e),
            }
        }
    }
}

async fn callback(State(ui): State<Arc<Ui>>, Query(q): Query<oidc::CallbackQuery>) -> Response {
    let Auth::Oidc(provider) = &ui.auth else {
        return message(StatusCode::NOT_FOUND, "Not found", "This server signs people in without a provider.");
    };
    let signed_in = match provider.finish(&q).await {
        Ok(s) => s,
        Err(e) => return message(StatusCode::FORBIDDEN, "Sign-in refused", &e),
    };
    let (user, scope) = match identify(&signed_in.client, None).await {
        Ok(found) => found,
        Err(e) => {
            return message(
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                &format!("The API server does not accept this login: {e}"),
            );
        }
    };
    let session =
        Session { client: signed_in.client, user, scope, csrf: random_token(), expires: Some(signed_in.expires) };
    let cookie = ui.start_session(session);
    ([(header::SET_COOKIE, cookie)], Redirect::to(&signed_in.next)).into_response()
}

async fn logout(State(ui): State<Arc<Ui>>, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    if let Some(session) = ui.session(&headers) {
        if let Err(refused) = check_write(&session, &headers, form.csrf.as_deref(), &ui.hosts) {
            return *refused;
        }
        if let Some(id) = cookie(&headers, SESSION_COOKIE) {
            ui.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        }
    }
    let cookie = format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
    (
        [(header::SET_COOKIE, cookie)],
        message(
            StatusCode::OK,
            "Signed out",
            "You are signed out of signoff; opening any of its pages signs you in again.",
        ),
    )
        .into_response()
}

/// The Host a URL names (`signoff.example.com`, `127.0.0.1:8443`).
pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split('/').next().unwrap_or(rest)
}

/// Bind the in-cluster web queue and return its server, which runs until `shutdown`.
pub async fn serve_in_cluster(
    options: crate::runtime::UiOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::Result<impl std::future::Future<Output = ()>> {
    let oidc = Oidc::new(options.settings.clone(), options.ca_pem.as_deref(), options.api.clone())
        .map_err(|e| crate::Error::Config(format!("--ui-oidc-*: {e}")))?;
    let ui = Ui::oidc(oidc, vec![host_of(&options.url).to_string()], options.url.starts_with("https://"));
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(crate::io(format!("binding the web queue's address {}", options.addr)))?;
    tracing::info!(addr = %options.addr, url = %options.url, issuer = %options.settings.issuer, "web queue listening");
    let app = Arc::new(ui).router();
    Ok(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "web queue: serving failed");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_tokens() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; signoff_session=abc; b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(same(&a, &a.clone()) && !same(&a, &b) && !same(&a, "x"));
        assert_eq!(urlencode("/r/a b?x=1&y"), "%2Fr%2Fa%20b%3Fx%3D1%26y");
        assert_eq!(host_of("https://signoff.example.com/queue"), "signoff.example.com");
        assert_eq!(host_of("http://127.0.0.1:8443"), "127.0.0.1:8443");
    }
}
