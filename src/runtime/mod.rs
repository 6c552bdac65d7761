//! `signoff run`, wired: the caches (`watch`), the webhook server over TLS, the
//! webhook configuration kept in sync (`config_sync`), the leader-gated
//! reconciler (`supervisor`, [`leader`]), and health/readiness/metrics on a
//! plain port (`health`).

mod args;
mod config_sync;
mod health;
pub mod leader;
pub mod log;
mod status;
mod supervisor;
pub(crate) mod watch;

pub use args::{RunArgs, remove_webhook_configuration};

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::events::Reporter;
use tokio::sync::{Notify, watch as watch_channel};
use tracing::info;

use crate::approval::Identities;
use crate::crd::{Approver, EscalationPolicy, Team};
use crate::escalation::reconciler;
use crate::metrics::Metrics;
use crate::tls;
use crate::webhook::config::{Endpoint, WebhookSettings};
use crate::webhook::review::GateSettings;
use crate::webhook::server::{WebhookState, router};
use crate::{Error, Result};

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// signoff keeps a CA and serving certificate in a Secret and rotates them.
    SelfManaged { secret: String, dns_names: Vec<String>, ip_addresses: Vec<IpAddr>, rotation: tls::RotationPolicy },
    /// Mounted files (e.g. from cert-manager), hot-reloaded; `ca_file` feeds the caBundle.
    Files { cert: PathBuf, key: PathBuf, ca_file: Option<PathBuf> },
}

/// Everything `signoff run` is told.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub namespace: String,
    pub webhook_addr: SocketAddr,
    pub health_addr: SocketAddr,
    pub endpoint: Endpoint,
    pub webhook_config_name: String,
    /// Write the ValidatingWebhookConfiguration at runtime (else a chart owns it).
    pub manage_webhook_config: bool,
    /// The ClusterRole whose deletion deletes the webhook configuration.
    pub webhook_config_owner: Option<String>,
    /// How long to keep serving, not ready, after the shutdown signal.
    pub shutdown_delay: Duration,
    pub tls: TlsSource,
    pub identities: Identities,
    pub break_glass_groups: Vec<String>,
    /// The most Pending requests per requester (0: no limit).
    pub max_pending_per_requester: u32,
    pub timeout_seconds: i32,
    /// Namespaces the gate's namespaceSelector leaves out, besides the system ones.
    pub exempt_namespaces: Vec<String>,
    /// This replica's identity in the leader Lease.
    pub identity: String,
    /// How long a leader's Lease lasts without renewal (failover time).
    pub lease_duration: Duration,
    /// Coalescing of pages during a flood: the window and the pages sent one by one in it.
    pub coalesce_window: Duration,
    pub coalesce_burst: u32,
    /// GitOps owners: how they are found, and whether approved changes go back to them.
    pub gitops: crate::gitops::Settings,
    /// The web queue's base URL: notifications link to each request's page.
    pub ui_url: Option<String>,
    /// Serve the web queue (in the cluster, with OIDC sign-in).
    pub ui: Option<UiOptions>,
}

/// The in-cluster web queue: where it listens, its public URL and its OIDC client.
#[derive(Clone)]
pub struct UiOptions {
    pub addr: SocketAddr,
    /// As browsers reach it, without a trailing slash.
    pub url: String,
    pub settings: crate::ui::oidc::Settings,
    /// Extra CA certificates for the issuer.
    pub ca_pem: Option<Vec<u8>>,
    /// The API server (people's clients replace the credentials with their ID token).
    pub api: kube::Config,
}

impl std::fmt::Debug for UiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiOptions")
            .field("addr", &self.addr)
            .field("url", &self.url)
            .field("issuer", &self.settings.issuer)
            .field("client_id", &self.settings.client_id)
            .finish_non_exhaustive()
    }
}

/// Run until `shutdown` resolves.
pub async fn run(
    client: kube::Client,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch_channel::channel(false);
    // Turns true at the shutdown signal, before the shutdown delay.
    let (stopping_tx, stopping) = watch_channel::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let health_task = tokio::spawn(health::serve(options.health_addr, ready.clone(), metrics.clone(), stopped()));

    let policy_changed = Arc::new(Notify::new());
    let policy_store = watch::cache(Api::<EscalationPolicy>::all(client.clone()), Some(policy_changed.clone()));
    let namespaces = watch::cache(Api::<Namespace>::all(client.clone()), None);
    // Teams and Approvers also poke the status writer (so does a policy, below).
    let people_changed = Arc::new(Notify::new());
    let teams = watch::cache(Api::<Team>::all(client.clone()), Some(people_changed.clone()));
    let approvers = watch::cache(Api::<Approver>::all(client.clone()), Some(people_changed.clone()));
    for (what, r) in [
        ("EscalationPolicies", policy_store.wait_until_ready().await),
        ("Namespaces", namespaces.wait_until_ready().await),
        ("Teams", teams.wait_until_ready().await),
        ("Approvers", approvers.wait_until_ready().await),
    ] {
        r.map_err(|e| Error::Config(format!("cache of {what} never synced: {e}")))?;
    }
    let policies = Arc::new(arc_swap::ArcSwap::from_pointee(watch::compile(&policy_store)));
    let config_changed = Arc::new(Notify::new());
    watch::recompile_on_change(
        policies.clone(),
        policy_store.clone(),
        policy_changed.clone(),
        [config_changed.clone(), people_changed.clone()],
    );

    // `_managed` rotates the certificates until it is dropped, when `run` returns.
    let (store, ca_bundle, _managed) = start_tls(&client, &options).await?;
    metrics.watch_certificate(store.clone());

    let reporter = Reporter { controller: "signoff".into(), instance: std::env::var("POD_NAME").ok() };
    let state = WebhookState {
        client: client.clone(),
        policies: policies.clone(),
        namespaces,
        namespace_json: Default::default(),
        settings: GateSettings {
            controller_namespace: options.namespace.clone(),
            break_glass_groups: options.break_glass_groups.clone(),
            refuse_uncovered: options.manage_webhook_config,
            max_pending_per_requester: options.max_pending_per_requester,
            gitops: options.gitops.clone(),
        },
        identities: options.identities.clone(),
        recorder: crate::events::Events::new(client.clone(), reporter),
        metrics: metrics.clone(),
        requests: crate::webhook::requests::watch(client.clone()),
        // Leave the API server a second of its timeoutSeconds to receive our answer.
        deadline: Duration::from_secs((options.timeout_seconds.max(2) - 1) as u64),
    };
    let listener = tokio::net::TcpListener::bind(options.webhook_addr)
        .await
        .map_err(crate::io(format!("binding {}", options.webhook_addr)))?;
    info!(addr = %listener.local_addr().map_err(crate::io("reading the bound address"))?, "webhook listening");
    let server = tokio::spawn(tls::serve(router(state), listener, tls::server_config(store), stopped()));
    let ui_server = match &options.ui {
        Some(ui) => Some(tokio::spawn(crate::ui::server::serve_in_cluster(ui.clone(), stopped()).await?)),
        None => None,
    };

    if options.manage_webhook_config {
        let owner = match &options.webhook_config_owner {
            Some(name) => Some(config_sync::cluster_role_owner(&client, name).await?),
            None => None,
        };
        let settings = WebhookSettings {
            owner,
            name: options.webhook_config_name.clone(),
            endpoint: options.endpoint.clone(),
            controller_namespace: options.namespace.clone(),
            timeout_seconds: options.timeout_seconds,
            exempt_namespaces: options.exempt_namespaces.clone(),
        };
        tokio::spawn(config_sync::sync_webhook_configuration(
            client.clone(),
            settings,
            policy_store.clone(),
            config_changed,
            ca_bundle,
            stopping.clone(),
        ));
    }

    // Only the leader escalates and writes statuses; every replica serves the webhook.
    let status_ctx = Arc::new(status::Context {
        client: client.clone(),
        policy_store: policy_store.clone(),
        policies: policies.clone(),
        teams: teams.clone(),
        approvers: approvers.clone(),
        changed: people_changed,
    });
    let reconciler_ctx = Arc::new(reconciler::Context {
        client: client.clone(),
        policies,
        teams,
        approvers,
        recorder: crate::events::Events::new(
            client.clone(),
            Reporter { controller: "signoff".into(), instance: Some(options.identity.clone()) },
        ),
        namespace: options.namespace.clone(),
        notifier: crate::notify::Notifier::new(),
        retry: reconciler::escalation_retry(),
        known: Default::default(),
        coalescer: reconciler::coalescer(options.coalesce_window, options.coalesce_burst),
        metrics: metrics.clone(),
        ui_url: options.ui_url.clone(),
        gate: crate::escalation::gate::Gate::new(reconciler::RECONCILE_CONCURRENCY),
    });
    {
        // Steps overdue by more than a second: the leader is behind.
        let ctx = reconciler_ctx.clone();
        metrics.watch_backlog(move |now| ctx.known.overdue(now, Duration::from_secs(1)));
    }
    let escalation = supervisor::start(
        client.clone(),
        &options.namespace,
        &options.identity,
        options.lease_duration,
        stop_tx.subscribe(),
        move || {
            let requests = watch::watch_pruned(Api::all(reconciler_ctx.client.clone()));
            let (reconciler_ctx, status_ctx, leading) = (reconciler_ctx.clone(), status_ctx.clone(), metrics.leading());
            async move {
                let _leading = leading; // the leader gauge reads 1 until this work is aborted
                futures::join!(reconciler::run(reconciler_ctx, requests), status::run(status_ctx));
            }
        },
    );
    ready.store(true, Ordering::Relaxed);
    info!(namespace = %options.namespace, policies = policy_store.state().len(), "signoff ready");

    shutdown.await;
    ready.store(false, Ordering::Relaxed);
    let _ = stopping_tx.send(true);
    if !options.shutdown_delay.is_zero() {
        // Endpoints and kube-proxy take a moment to drop this replica; until they
        // have, the API server's webhook calls still arrive here.
        info!(delay = ?options.shutdown_delay, "shutdown signal: not ready, still serving");
        tokio::time::sleep(options.shutdown_delay).await;
    }
    info!("shutting down");
    let _ = stop_tx.send(true);
    escalation.stop().await;
    let _ = server.await;
    if let Some(ui) = ui_server {
        let _ = ui.await;
    }
    let _ = health_task.await;
    Ok(())
}

type Tls = (Arc<tls::CertStore>, watch_channel::Receiver<Vec<u8>>, Option<tls::ManagedTls>);

/// The serving certificate's store, the caBundle to publish, and the rotation
/// task (self-managed only; it stops when dropped).
async fn start_tls(client: &kube::Client, options: &RunOptions) -> Result<Tls> {
    Ok(match &options.tls {
        TlsSource::SelfManaged { secret, dns_names, ip_addresses, rotation } => {
            let mut opts = tls::ManagedOptions::new(&options.namespace, secret);
            opts.dns_names = dns_names.clone();
            opts.ip_addresses = ip_addresses.clone();
            opts.policy = rotation.clone();
            if opts.resync >= rotation.handover {
                opts.resync = rotation.handover / 2;
            }
            let managed = tls::start_managed(client.clone(), opts).await?;
            (managed.store.clone(), managed.ca_bundle.clone(), Some(managed))
        }
        TlsSource::Files { cert, key, ca_file } => {
            let read = |p: &PathBuf| std::fs::read(p).map_err(crate::io(format!("reading {}", p.display())));
            let store = tls::CertStore::from_pem(&read(cert)?, &read(key)?)?;
            tokio::spawn(tls::watch_files(cert.clone(), key.clone(), store.clone(), Duration::from_secs(5)));
            let bundle = match ca_file {
                Some(p) => read(p)?,
                None => Vec::new(),
            };
            let (tx, rx) = watch_channel::channel(bundle);
            std::mem::forget(tx); // the bundle of mounted files is fixed for this process
            (store, rx, None)
        }
    })
}
