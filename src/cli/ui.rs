//! `kubectl signoff ui`: the web queue on 127.0.0.1, for the kubeconfig's user.
//! Every API call is made with the user's own credentials; the server answers
//! only to its own address and only to the browser that opened its one-time link.

use std::io::Write as _;
use std::sync::Arc;

use crate::ui::server::Ui;

#[derive(clap::Args)]
pub struct UiArgs {
    /// Port on 127.0.0.1; a free one when 0.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Print the sign-in URL instead of opening a browser.
    #[arg(long)]
    pub no_browser: bool,
}

/// Open `url` in the user's browser: $BROWSER, else the platform's opener.
fn open_browser(url: &str) -> Result<(), String> {
    let opener = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| if cfg!(target_os = "macos") { "open".into() } else { "xdg-open".into() });
    std::process::Command::new(&opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("{opener}: {e}"))
}

/// Serve until Ctrl-C or SIGTERM.
pub async fn run(client: kube::Client, namespace: String, args: &UiArgs) -> Result<i32, String> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| format!("listening on 127.0.0.1:{}: {e}", args.port))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let hosts = vec![format!("127.0.0.1:{port}"), format!("localhost:{port}")];
    let (ui, token) = Ui::local(client, namespace, hosts).await?;
    let url = format!("http://127.0.0.1:{port}/login?token={token}");
    let mut out = std::io::stdout();
    let _ = writeln!(out, "signoff's approval queue is at http://127.0.0.1:{port}/ (Ctrl-C stops it).");
    let _ = writeln!(out, "Sign in once with this link; it works one time only:");
    let _ = writeln!(out, "  {url}");
    if let Some(Err(e)) = (!args.no_browser).then(|| open_browser(&url)) {
        let _ = writeln!(out, "Could not open a browser ({e}): open the link yourself.");
    }
    let _ = out.flush();
    let app = Arc::new(ui).router();
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        })
        .await
        .map_err(|e| format!("serving: {e}"))?;
    Ok(0)
}
