//! A real browser for the web queue's tests: Debian's Chromium, headless, driven
//! through its WebDriver (chromedriver) with fantoccini, and the UI served by
//! `kubectl signoff ui` as a person would run it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::common::*;

/// chromedriver, started once per test binary on a free loopback port.
pub struct Driver {
    child: Mutex<Child>,
    pub url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The shared chromedriver (installed from Debian's packages if missing).
pub fn driver() -> &'static Driver {
    static DRIVER: OnceLock<Driver> = OnceLock::new();
    DRIVER.get_or_init(|| {
        crate::common::gitops::script("hack/browser/deps.sh", &[]);
        let port = free_port();
        let log = cp().dir.join("chromedriver.log");
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts (hack/browser/deps.sh installs it)");
        let url = format!("http://127.0.0.1:{port}");
        eventually(30, "chromedriver to listen", || TcpStream::connect(("127.0.0.1", port)).ok());
        Driver { child: Mutex::new(child), url }
    })
}

/// Browser tests one at a time: two cores, and a 2-second liveness bound.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A new browser (its own profile: its own cookies) of `width`x`height`.
pub async fn browser(width: u32, height: u32) -> Client {
    browser_with(width, height, false).await
}

/// A new browser; `test_ca` accepts certificates no system root vouches for
/// (Dex's, from the test's own CA).
pub async fn browser_with(width: u32, height: u32, test_ca: bool) -> Client {
    let profile = tempfile::tempdir().unwrap().keep();
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ]
    .map(String::from)
    .into_iter()
    .chain([format!("--user-data-dir={}", profile.display()), format!("--window-size={width},{height}")])
    .collect::<Vec<_>>();
    let caps = json!({
        "browserName": "chrome",
        "acceptInsecureCerts": test_ca,
        "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
    });
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps.as_object().unwrap().clone())
        .connect(&driver().url)
        .await
        .expect("a Chromium session through chromedriver");
    set_viewport(&client, width, height).await;
    client
}

/// Make the page's viewport (not the window) `width`x`height`.
pub async fn set_viewport(client: &Client, width: u32, height: u32) {
    client.set_window_size(width, height).await.unwrap();
    let inner = client.execute("return [window.innerWidth, window.innerHeight]", vec![]).await.unwrap();
    let (w, h) = (inner[0].as_u64().unwrap() as u32, inner[1].as_u64().unwrap() as u32);
    client.set_window_size(width + (width - w.min(width)), height + (height - h.min(height))).await.unwrap();
}

/// `kubectl signoff ui --no-browser` as `user`: the process and its one-time sign-in URL.
pub struct UiServer {
    child: Child,
    pub base: String,
    pub login: String,
    pub port: u16,
}

impl Drop for UiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ui_server(user: &str) -> UiServer {
    let cp = cp();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-signoff"))
        .args(["ui", "--no-browser", "--kubeconfig", &cp.kubeconfig.display().to_string(), "--context", user])
        .env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("kubectl-signoff ui starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let login = loop {
        let line = lines.next().expect("kubectl signoff ui prints its sign-in URL").unwrap();
        if let Some(url) = line.trim().strip_prefix("http://").filter(|u| u.contains("/login?token=")) {
            break format!("http://{url}");
        }
    };
    // Keep draining stdout so the server never blocks on it.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    let port: u16 = login.split(':').nth(2).unwrap().split('/').next().unwrap().parse().unwrap();
    UiServer { child, base: format!("http://127.0.0.1:{port}"), login, port }
}

/// One plain HTTP/1.1 exchange with the UI server, as any local program could
/// send it: (status, headers, body).
pub fn raw_http(port: u16, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("0").parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// Wait up to `secs` for `check` on the page; returns how long it took.
pub async fn within<F, Fut>(secs: f64, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed().as_secs_f64() < secs, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `check` holds within `secs` (for a failure message that shows the page).
pub async fn within_or<F, Fut>(secs: f64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The text of the element `css`, or "" when there is none.
pub async fn text_of(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Whether the page has an element `css`.
pub async fn has(client: &Client, css: &str) -> bool {
    !client.find_all(Locator::Css(css)).await.unwrap().is_empty()
}

/// Save a PNG of the page: into docs/images/ when UPDATE_SCREENSHOTS=1 (the
/// pictures in docs/approving.md), else beside the control plane's logs.
pub async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let dir = if std::env::var("UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        signoff_testenv::checkout().unwrap().join("docs/images")
    } else {
        cp().dir.join("screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap();
    path
}
