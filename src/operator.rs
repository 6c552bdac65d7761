//! `signoff run`: caches, the webhook server over TLS, the webhook configuration
//! kept in sync, the reconciler, and health/readiness/metrics on a plain port.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::approval::Identities;
use crate::crd::{Approver, EscalationPolicy, Team};
use crate::escalation::{leader, reconciler};
use crate::metrics::Metrics;
use crate::policy::PolicySet;
use crate::webhook::config::{Endpoint, WebhookSettings, gate_rules, webhook_configuration};
use crate::webhook::review::GateSettings;
use crate::webhook::server::{WebhookState, router};
use crate::webhook::tls;
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
    pub tls: TlsSource,
    pub identities: Identities,
    pub break_glass_groups: Vec<String>,
    pub timeout_seconds: i32,
    /// Namespaces the gate's namespaceSelector leaves out, besides the system ones.
    pub exempt_namespaces: Vec<String>,
    /// This replica's identity in the leader Lease.
    pub identity: String,
    /// How long a leader's Lease lasts without renewal (failover time).
    pub lease_duration: Duration,
}

/// Watch every `K` (with backoff), without managedFields: caches never need
/// them, and they are most of an object's size.
pub(crate) fn watch_pruned<K>(
    api: Api<K>,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, watcher::Config::default()).default_backoff().modify(|o: &mut K| o.meta_mut().managed_fields = None)
}

/// Start a reflector for `K`, return its store. The task runs until shutdown.
fn cache<K>(api: Api<K>, on_change: Option<Arc<Notify>>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watch_pruned(api)).touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    if let Some(n) = &on_change {
                        n.notify_one();
                    }
                }
                Err(e) => warn!(error = %e, "watch error; retrying with backoff"),
            }
        }
    });
    reader
}

fn compile(store: &Store<EscalationPolicy>) -> PolicySet {
    let state = store.state();
    let set = PolicySet::new(state.iter().map(|p| &**p));
    for e in set.errors() {
        error!(policy = %e.policy, error = %e, "invalid EscalationPolicy: its matching changes are held until it is fixed");
    }
    set
}

async fn sync_webhook_configuration(
    client: kube::Client,
    settings: WebhookSettings,
    policies: Store<EscalationPolicy>,
    changed: Arc<Notify>,
    mut ca_bundle: watch::Receiver<Vec<u8>>,
) {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let params = PatchParams::apply("signoff").force();
    let mut last = None;
    loop {
        let state = policies.state();
        let desired =
            webhook_configuration(&settings, gate_rules(state.iter().map(|p| &**p)), &ca_bundle.borrow_and_update());
        if last.as_ref() != Some(&desired) {
            let mut body = serde_json::to_value(&desired).unwrap_or_default();
            body["apiVersion"] = "admissionregistration.k8s.io/v1".into();
            body["kind"] = "ValidatingWebhookConfiguration".into();
            match api.patch(&settings.name, &params, &Patch::Apply(&body)).await {
                Ok(_) => {
                    info!(name = %settings.name, rules = desired.webhooks.as_ref().map(|w| w[0].rules.as_ref().map_or(0, Vec::len)), "webhook configuration applied");
                    last = Some(desired);
                }
                Err(e) => {
                    warn!(error = %e, "applying the webhook configuration failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        tokio::select! {
            _ = changed.notified() => {}
            r = ca_bundle.changed() => if r.is_err() { return },
        }
    }
}

async fn health(
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (axum::http::StatusCode::OK, "ok")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { m.render() }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(crate::io(format!("binding {addr}")))?;
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(crate::io("health server"))
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let health_task = tokio::spawn(health(options.health_addr, ready.clone(), metrics.clone(), stopped()));

    let policy_changed = Arc::new(Notify::new());
    let policy_store = cache(Api::<EscalationPolicy>::all(client.clone()), Some(policy_changed.clone()));
    let namespaces = cache(Api::<Namespace>::all(client.clone()), None);
    let teams = cache(Api::<Team>::all(client.clone()), None);
    let approvers = cache(Api::<Approver>::all(client.clone()), None);
    for (what, r) in [
        ("EscalationPolicies", policy_store.wait_until_ready().await),
        ("Namespaces", namespaces.wait_until_ready().await),
        ("Teams", teams.wait_until_ready().await),
        ("Approvers", approvers.wait_until_ready().await),
    ] {
        r.map_err(|e| Error::Config(format!("cache of {what} never synced: {e}")))?;
    }
    let policies = Arc::new(arc_swap::ArcSwap::from_pointee(compile(&policy_store)));
    let config_changed = Arc::new(Notify::new());
    {
        // Recompile on every policy change; then poke the configuration sync.
        let (policies, store, changed, config_changed) =
            (policies.clone(), policy_store.clone(), policy_changed.clone(), config_changed.clone());
        tokio::spawn(async move {
            loop {
                changed.notified().await;
                policies.store(Arc::new(compile(&store)));
                config_changed.notify_one();
            }
        });
    }

    let (store, ca_bundle, _managed) = match &options.tls {
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
            let (tx, rx) = watch::channel(bundle);
            std::mem::forget(tx); // the bundle of mounted files is fixed for this process
            (store, rx, None)
        }
    };

    let reporter = Reporter { controller: "signoff".into(), instance: std::env::var("POD_NAME").ok() };
    let state = WebhookState {
        client: client.clone(),
        policies: policies.clone(),
        namespaces,
        settings: GateSettings {
            controller_namespace: options.namespace.clone(),
            break_glass_groups: options.break_glass_groups.clone(),
            refuse_uncovered: options.manage_webhook_config,
        },
        identities: options.identities.clone(),
        recorder: crate::events::Events::new(client.clone(), reporter),
        metrics: metrics.clone(),
        // Leave the API server a second of its timeoutSeconds to receive our answer.
        deadline: Duration::from_secs((options.timeout_seconds.max(2) - 1) as u64),
    };
    let listener = tokio::net::TcpListener::bind(options.webhook_addr)
        .await
        .map_err(crate::io(format!("binding {}", options.webhook_addr)))?;
    info!(addr = %listener.local_addr().map_err(crate::io("reading the bound address"))?, "webhook listening");
    let server = tokio::spawn(tls::serve(router(state), listener, tls::server_config(store), stopped()));

    if options.manage_webhook_config {
        let settings = WebhookSettings {
            name: options.webhook_config_name.clone(),
            endpoint: options.endpoint.clone(),
            controller_namespace: options.namespace.clone(),
            timeout_seconds: options.timeout_seconds,
            exempt_namespaces: options.exempt_namespaces.clone(),
        };
        tokio::spawn(sync_webhook_configuration(
            client.clone(),
            settings,
            policy_store.clone(),
            config_changed,
            ca_bundle,
        ));
    }

    // Only the leader escalates; every replica serves the webhook.
    let (leading_tx, mut leading) = watch::channel(false);
    let election = tokio::spawn(leader::run(
        client.clone(),
        options.namespace.clone(),
        leader::LEASE_NAME.into(),
        options.identity.clone(),
        options.lease_duration,
        leading_tx,
    ));
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
    });
    let mut stopping = stop_tx.subscribe();
    let reconciler = tokio::spawn(async move {
        let mut running: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            let lead = *leading.borrow_and_update();
            match (lead, running.is_some()) {
                (true, false) => running = Some(tokio::spawn(reconciler::run(reconciler_ctx.clone()))),
                (false, true) => {
                    if let Some(task) = running.take() {
                        task.abort();
                    }
                }
                _ => {}
            }
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { break },
                _ = stopping.changed() => break,
            }
        }
        // Wait until the escalation task has really stopped: the Lease is
        // released after this, and no two leaders may overlap.
        if let Some(task) = running {
            task.abort();
            let _ = task.await;
        }
    });
    ready.store(true, Ordering::Relaxed);
    info!(namespace = %options.namespace, policies = policy_store.state().len(), "signoff ready");

    shutdown.await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = reconciler.await;
    election.abort();
    let _ = election.await;
    // Hand over at once instead of making the next leader wait out the Lease
    // (a rollout replaces every pod), as client-go's ReleaseOnCancel does.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), &options.namespace);
    match tokio::time::timeout(Duration::from_secs(3), leader::release(&leases, leader::LEASE_NAME, &options.identity))
        .await
    {
        Ok(Ok(true)) => info!(identity = %options.identity, "released the leader Lease"),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => warn!(error = %e, "could not release the leader Lease; the next leader waits for it to expire"),
        Err(_) => warn!("releasing the leader Lease timed out; the next leader waits for it to expire"),
    }
    let _ = server.await;
    let _ = health_task.await;
    Ok(())
}
