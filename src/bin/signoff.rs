#![forbid(unsafe_code)]
//! The signoff operator.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use signoff::approval::Identities;
use signoff::runtime::{RunOptions, TlsSource};
use signoff::webhook::config::Endpoint;

/// signoff: hold risky Kubernetes changes until the right people approve them.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: admission webhook, escalation reconciler, metrics.
    ///
    /// Examples:
    ///   signoff run --service signoff-webhook            # in a cluster, self-managed TLS
    ///   signoff run --context sa:signoff-system:signoff --webhook-url https://127.0.0.1:9443/validate \
    ///     --webhook-addr 127.0.0.1:9443 --tls-ip 127.0.0.1
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD.
    ///
    /// Examples:
    ///   signoff crds | kubectl apply --server-side -f -
    ///   signoff crds --dir crds --dir charts/signoff/crds
    Crds {
        /// Write one file per CRD into each of these directories instead of printing.
        #[arg(long)]
        dir: Vec<PathBuf>,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Kubeconfig context to use (default: in-cluster config, or the current context).
    #[arg(long, env = "SIGNOFF_CONTEXT")]
    context: Option<String>,
    /// signoff's own namespace: its Secret, Lease and the requests for cluster-scoped objects.
    #[arg(long, env = "POD_NAMESPACE", default_value = "signoff-system")]
    namespace: String,
    /// Address of the HTTPS webhook server.
    #[arg(long, default_value = "0.0.0.0:9443")]
    webhook_addr: SocketAddr,
    /// Address of the plain-HTTP /healthz, /readyz and /metrics server.
    #[arg(long, default_value = "0.0.0.0:8080")]
    health_addr: SocketAddr,
    /// How the API server reaches the webhook from outside the cluster (tests, make dev).
    #[arg(long, conflicts_with = "service")]
    webhook_url: Option<String>,
    /// The Service in front of the webhook (in a cluster), in --namespace, port 443.
    #[arg(long, default_value = "signoff-webhook")]
    service: String,
    /// Name of the ValidatingWebhookConfiguration.
    #[arg(long, default_value = "signoff")]
    webhook_config_name: String,
    /// Do not write the ValidatingWebhookConfiguration (when a Helm chart owns it).
    #[arg(long)]
    no_manage_webhook_config: bool,
    /// Serving certificate file (mounted Secret); default: self-managed certificates.
    #[arg(long, requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// Serving key file.
    #[arg(long, requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// CA bundle file for the webhook configuration, with --tls-cert-file.
    #[arg(long)]
    tls_ca_file: Option<PathBuf>,
    /// Secret holding self-managed certificates.
    #[arg(long, default_value = "signoff-webhook-tls")]
    tls_secret: String,
    /// Extra IP SANs for self-managed certificates (e.g. 127.0.0.1).
    #[arg(long)]
    tls_ip: Vec<IpAddr>,
    /// Self-managed TLS: how long a CA is valid (Go duration).
    #[arg(long, default_value = "8760h", value_parser = duration)]
    tls_ca_validity: std::time::Duration,
    /// Self-managed TLS: start a CA handover this long before the CA expires.
    #[arg(long, default_value = "1440h", value_parser = duration)]
    tls_ca_renew_before: std::time::Duration,
    /// Self-managed TLS: how long a serving certificate is valid.
    #[arg(long, default_value = "720h", value_parser = duration)]
    tls_cert_validity: std::time::Duration,
    /// Self-managed TLS: renew the serving certificate this long before it expires.
    #[arg(long, default_value = "240h", value_parser = duration)]
    tls_cert_renew_before: std::time::Duration,
    /// Self-managed TLS: how long a new CA is published before it signs the served
    /// certificate (and the old CA stays published after). Must cover the API
    /// server picking up the new caBundle.
    #[arg(long, default_value = "10m", value_parser = duration)]
    tls_handover: std::time::Duration,
    /// signoff's own username, never allowed to add a decision.
    #[arg(long, env = "SIGNOFF_CONTROLLER_USER")]
    controller_user: Option<String>,
    /// Groups whose members may write anyone's Approver and delete requests.
    #[arg(long, default_value = "signoff:platform-admins")]
    admin_group: Vec<String>,
    /// Groups admitted without approval, with a loud recorded warning.
    #[arg(long, default_value = "signoff:break-glass")]
    break_glass_group: Vec<String>,
    /// This replica's identity in the leader Lease (default: POD_NAME, else host and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long the leader's Lease lasts without renewal: the failover time.
    #[arg(long, default_value = "15s", value_parser = duration)]
    lease_duration: std::time::Duration,
    /// Namespaces the gate never sees (repeatable), besides kube-system,
    /// kube-node-lease and signoff's own: e.g. a GitOps tool's own namespace.
    #[arg(long)]
    exempt_namespace: Vec<String>,
    /// The API server's timeout for each webhook call.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i32).range(2..=30))]
    timeout_seconds: i32,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crds { dir } if dir.is_empty() => print!("{}", signoff::crd::crds_yaml()),
        Command::Crds { dir } => {
            for d in dir {
                if let Err(e) = write_crds(&d) {
                    eprintln!("error: writing CRDs to {}: {e}", d.display());
                    return ExitCode::FAILURE;
                }
            }
        }
        Command::Run(args) => {
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
                )
                .init();
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
            if let Err(e) = runtime.block_on(run(*args)) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

async fn run(args: RunArgs) -> signoff::Result<()> {
    let config = match &args.context {
        Some(context) => {
            let options = kube::config::KubeConfigOptions { context: Some(context.clone()), ..Default::default() };
            kube::Config::from_kubeconfig(&options).await?
        }
        None => kube::Config::infer().await.map_err(|e| signoff::Error::Config(format!("kubeconfig: {e}")))?,
    };
    let client = kube::Client::try_from(config)?;
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
            rotation: signoff::tls::RotationPolicy {
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
        tls,
        identities: Identities {
            controller: args.controller_user.unwrap_or_else(|| format!("system:serviceaccount:{namespace}:signoff")),
            admin_groups: args.admin_group,
        },
        break_glass_groups: args.break_glass_group,
        timeout_seconds: args.timeout_seconds,
        exempt_namespaces: args.exempt_namespace,
        identity: args.identity.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        }),
        lease_duration: args.lease_duration,
    };
    signoff::runtime::run(client, options, shutdown_signal()).await
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
    let parsed = signoff::duration::parse(text)?;
    std::time::Duration::try_from(parsed).map_err(|_| format!("{text}: must not be negative"))
}

fn write_crds(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (file, yaml) in signoff::crd::crd_files() {
        std::fs::write(dir.join(file), yaml)?;
    }
    Ok(())
}
