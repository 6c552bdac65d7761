//! `signoff run`'s command line: its clap arguments, turned into [`RunOptions`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use super::{RunOptions, TlsSource, run};
use crate::approval::Identities;
use crate::webhook::config::Endpoint;

/// `signoff run`: everything it is told on the command line (or the environment).
#[derive(clap::Args)]
pub struct RunArgs {
    /// Kubeconfig context to use (default: in-cluster config, or the current context).
    #[arg(long, env = "SIGNOFF_CONTEXT")]
    pub context: Option<String>,
    /// signoff's own namespace: its Secret, Lease and the requests for cluster-scoped objects.
    #[arg(long, env = "POD_NAMESPACE", default_value = "signoff-system")]
    pub namespace: String,
    /// Address of the HTTPS webhook server.
    #[arg(long, default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,
    /// Address of the plain-HTTP /healthz, /readyz and /metrics server.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub health_addr: SocketAddr,
    /// How the API server reaches the webhook from outside the cluster (tests, make dev).
    #[arg(long, conflicts_with = "service")]
    pub webhook_url: Option<String>,
    /// The Service in front of the webhook (in a cluster), in --namespace, port 443.
    #[arg(long, default_value = "signoff-webhook")]
    pub service: String,
    /// Name of the ValidatingWebhookConfiguration.
    #[arg(long, default_value = "signoff")]
    pub webhook_config_name: String,
    /// Do not write the ValidatingWebhookConfiguration (when a Helm chart owns it).
    #[arg(long)]
    pub no_manage_webhook_config: bool,
    /// A ClusterRole that owns the ValidatingWebhookConfiguration signoff writes: when
    /// it is deleted (`helm uninstall`), the garbage collector deletes the
    /// configuration too, so no webhook is left refusing writes for a missing Service.
    #[arg(long, conflicts_with = "no_manage_webhook_config")]
    pub webhook_config_owner: Option<String>,
    /// After SIGTERM, keep serving this long with /readyz failing, so the Service stops
    /// sending to this replica before it stops listening (the chart sets 5s).
    #[arg(long, default_value = "0s", value_parser = duration)]
    pub shutdown_delay: std::time::Duration,
    /// Serving certificate file (mounted Secret); default: self-managed certificates.
    #[arg(long, requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Serving key file.
    #[arg(long, requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// CA bundle file for the webhook configuration, with --tls-cert-file.
    #[arg(long)]
    pub tls_ca_file: Option<PathBuf>,
    /// Secret holding self-managed certificates.
    #[arg(long, default_value = "signoff-webhook-tls")]
    pub tls_secret: String,
    /// Extra IP SANs for self-managed certificates (e.g. 127.0.0.1).
    #[arg(long)]
    pub tls_ip: Vec<IpAddr>,
    /// Self-managed TLS: how long a CA is valid (Go duration).
    #[arg(long, default_value = "8760h", value_parser = duration)]
    pub tls_ca_validity: std::time::Duration,
    /// Self-managed TLS: start a CA handover this long before the CA expires.
    #[arg(long, default_value = "1440h", value_parser = duration)]
    pub tls_ca_renew_before: std::time::Duration,
    /// Self-managed TLS: how long a serving certificate is valid.
    #[arg(long, default_value = "720h", value_parser = duration)]
    pub tls_cert_validity: std::time::Duration,
    /// Self-managed TLS: renew the serving certificate this long before it expires.
    #[arg(long, default_value = "240h", value_parser = duration)]
    pub tls_cert_renew_before: std::time::Duration,
    /// Self-managed TLS: how long a new CA is published before it signs the served
    /// certificate (and the old CA stays published after). Must cover the API
    /// server picking up the new caBundle.
    #[arg(long, default_value = "10m", value_parser = duration)]
    pub tls_handover: std::time::Duration,
    /// signoff's own username, never allowed to add a decision.
    #[arg(long, env = "SIGNOFF_CONTROLLER_USER")]
    pub controller_user: Option<String>,
    /// Groups whose members may write anyone's Approver and delete requests.
    #[arg(long, default_value = "signoff:platform-admins")]
    pub admin_group: Vec<String>,
    /// Groups admitted without approval, with a loud recorded warning.
    #[arg(long, default_value = "signoff:break-glass")]
    pub break_glass_group: Vec<String>,
    /// The most Pending requests one requester may have; a further hold is denied
    /// with what to do. 0: no limit.
    #[arg(long, default_value_t = 20)]
    pub max_pending_per_requester: u32,
    /// During a flood, how long one recipient's pages about one requester's
    /// requests are counted together (0s: never coalesce).
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub coalesce_window: std::time::Duration,
    /// How many of those pages go out one by one in a window; the rest go out as
    /// one summary when it ends.
    #[arg(long, default_value_t = 3)]
    pub coalesce_burst: u32,
    /// Once a change is approved, ask its GitOps owner (Flux Kustomization or
    /// HelmRelease, Argo CD Application) to apply it at once, unless the
    /// policy says otherwise (`spec.gitops.handBack`). Needs patch on those
    /// kinds (the chart's gitops.handBack).
    #[arg(long)]
    pub gitops_hand_back: bool,
    /// Argo CD label tracking: the label naming the Application (Argo CD's
    /// `application.instanceLabelKey`, e.g. app.kubernetes.io/instance). Unset:
    /// annotation tracking only (Argo CD's default).
    #[arg(long)]
    pub argocd_instance_label: Option<String>,
    /// Where Argo CD's Applications live (unless the tracking id names a namespace).
    #[arg(long, default_value = "argocd")]
    pub argocd_namespace: String,
    /// This replica's identity in the leader Lease (default: POD_NAME, else host and pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long the leader's Lease lasts without renewal: the failover time.
    #[arg(long, default_value = "15s", value_parser = duration)]
    pub lease_duration: std::time::Duration,
    /// Namespaces the gate never sees (repeatable), besides kube-system,
    /// kube-node-lease and signoff's own: e.g. a GitOps tool's own namespace.
    #[arg(long)]
    pub exempt_namespace: Vec<String>,
    /// The API server's timeout for each webhook call.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i32).range(2..=30))]
    pub timeout_seconds: i32,
    /// Serve the web approval queue on this plain-HTTP address (off when unset; TLS is
    /// the Ingress's). People sign in with --ui-oidc-issuer, and every API call carries
    /// their own ID token.
    #[arg(long, requires_all = ["ui_url", "ui_oidc_issuer"])]
    pub ui_addr: Option<SocketAddr>,
    /// The web queue's address as browsers reach it, e.g. https://signoff.example.com:
    /// its Host is the only one served, its /callback is the OIDC redirect URL, and
    /// notifications link to each request's page under it.
    #[arg(long)]
    pub ui_url: Option<String>,
    /// The OIDC issuer people sign in with; the API server must trust the same issuer.
    #[arg(long)]
    pub ui_oidc_issuer: Option<String>,
    /// The OIDC client id registered for the web queue (the API server's audience).
    #[arg(long, default_value = "signoff")]
    pub ui_oidc_client_id: String,
    /// The client secret, for a confidential client (PKCE is used either way).
    #[arg(long, env = "SIGNOFF_UI_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub ui_oidc_client_secret: Option<String>,
    /// CA certificates (PEM) for the issuer, besides the system's.
    #[arg(long)]
    pub ui_oidc_ca_file: Option<PathBuf>,
    /// Scopes to ask for besides openid.
    #[arg(long, default_values = ["email", "profile", "groups"])]
    pub ui_oidc_scope: Vec<String>,
}

impl RunArgs {
    /// Connect as told and run until SIGTERM or SIGINT.
    pub async fn run(self) -> crate::Result<()> {
        let args = self;
        let config = kube_config(args.context.clone()).await?;
        let client = kube::Client::try_from(config.clone())?;
        let ui = match (args.ui_addr, args.ui_oidc_issuer.clone()) {
            (Some(addr), Some(issuer)) => {
                let url = args.ui_url.clone().unwrap_or_default().trim_end_matches('/').to_string();
                let ca_pem = match &args.ui_oidc_ca_file {
                    Some(path) => Some(std::fs::read(path).map_err(crate::io(format!("reading {}", path.display())))?),
                    None => None,
                };
                Some(super::UiOptions {
                    addr,
                    settings: crate::ui::oidc::Settings {
                        issuer,
                        client_id: args.ui_oidc_client_id.clone(),
                        client_secret: args.ui_oidc_client_secret.clone(),
                        redirect_url: format!("{url}/callback"),
                        scopes: args.ui_oidc_scope.clone(),
                    },
                    url,
                    ca_pem,
                    api: config,
                })
            }
            _ => None,
        };
        let namespace = args.namespace.clone();
        let endpoint = match args.webhook_url {
            Some(url) => Endpoint::Url(url),
            None => Endpoint::Service { namespace: namespace.clone(), name: args.service.clone(), port: 443 },
        };
        let tls = match (args.tls_cert_file, args.tls_key_file) {
            (Some(cert), Some(key)) => TlsSource::Files { cert, key, ca_file: args.tls_ca_file },
            _ => TlsSource::SelfManaged {
                secret: args.tls_secret,
                dns_names: vec![
                    format!("{}.{namespace}.svc", args.service),
                    format!("{}.{namespace}.svc.cluster.local", args.service),
                ],
                ip_addresses: args.tls_ip,
                rotation: crate::tls::RotationPolicy {
                    ca_validity: args.tls_ca_validity,
                    ca_renew_before: args.tls_ca_renew_before,
                    cert_validity: args.tls_cert_validity,
                    cert_renew_before: args.tls_cert_renew_before,
                    handover: args.tls_handover,
                },
            },
        };
        let options = RunOptions {
            namespace: namespace.clone(),
            webhook_addr: args.webhook_addr,
            health_addr: args.health_addr,
            endpoint,
            webhook_config_name: args.webhook_config_name,
            manage_webhook_config: !args.no_manage_webhook_config,
            webhook_config_owner: args.webhook_config_owner,
            shutdown_delay: args.shutdown_delay,
            tls,
            identities: Identities {
                controller: args
                    .controller_user
                    .unwrap_or_else(|| format!("system:serviceaccount:{namespace}:signoff")),
                admin_groups: args.admin_group,
            },
            break_glass_groups: args.break_glass_group,
            max_pending_per_requester: args.max_pending_per_requester,
            timeout_seconds: args.timeout_seconds,
            exempt_namespaces: args.exempt_namespace,
            identity: args.identity.unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            }),
            lease_duration: args.lease_duration,
            coalesce_window: args.coalesce_window,
            coalesce_burst: args.coalesce_burst,
            gitops: crate::gitops::Settings {
                hand_back: args.gitops_hand_back,
                argocd_instance_label: args.argocd_instance_label.filter(|l| !l.is_empty()),
                argocd_namespace: args.argocd_namespace,
            },
            ui_url: args.ui_url.map(|u| u.trim_end_matches('/').to_string()),
            ui,
        };
        run(client, options, shutdown_signal()).await
    }
}

/// The configuration for the kubeconfig `context`, else in-cluster or the current context.
async fn kube_config(context: Option<String>) -> crate::Result<kube::Config> {
    Ok(match context {
        Some(context) => {
            let options = kube::config::KubeConfigOptions { context: Some(context), ..Default::default() };
            kube::Config::from_kubeconfig(&options).await?
        }
        None => kube::Config::infer().await.map_err(|e| crate::Error::Config(format!("kubeconfig: {e}")))?,
    })
}

/// `signoff remove-webhook-configuration`: delete it; false when it was not there.
pub async fn remove_webhook_configuration(name: &str, context: Option<String>) -> crate::Result<bool> {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let api: kube::Api<ValidatingWebhookConfiguration> =
        kube::Api::all(kube::Client::try_from(kube_config(context).await?)?);
    match api.delete(name, &Default::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn duration(text: &str) -> Result<std::time::Duration, String> {
    let parsed = crate::duration::parse(text)?;
    std::time::Duration::try_from(parsed).map_err(|_| format!("{text}: must not be negative"))
}
