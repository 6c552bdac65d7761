#![forbid(unsafe_code)]
//! The signoff operator: `signoff run` (see `signoff::runtime`) and `signoff crds`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use signoff::runtime::RunArgs;

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
    #[command(verbatim_doc_comment)]
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD.
    ///
    /// Examples:
    ///   signoff crds | kubectl apply --server-side -f -
    ///   signoff crds --dir crds --dir charts/signoff/files/crds
    #[command(verbatim_doc_comment)]
    Crds {
        /// Write one file per CRD into each of these directories instead of printing.
        #[arg(long)]
        dir: Vec<PathBuf>,
    },
    /// Delete the ValidatingWebhookConfiguration (the chart's pre-delete hook), so
    /// that removing signoff's Service and pods never leaves a webhook refusing writes.
    ///
    /// Examples:
    ///   signoff remove-webhook-configuration --name signoff
    #[command(verbatim_doc_comment)]
    RemoveWebhookConfiguration {
        /// Name of the ValidatingWebhookConfiguration.
        #[arg(long)]
        name: String,
        /// Kubeconfig context (default: in-cluster config, or the current context).
        #[arg(long)]
        context: Option<String>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crds { dir } if dir.is_empty() => print!("{}", signoff::crd::crds_yaml()),
        Command::Crds { dir } => {
            for d in dir {
                if let Err(e) = signoff::crd::write_crd_files(&d) {
                    eprintln!("error: writing CRDs to {}: {e}", d.display());
                    return ExitCode::FAILURE;
                }
            }
        }
        Command::RemoveWebhookConfiguration { name, context } => {
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
            match runtime.block_on(signoff::runtime::remove_webhook_configuration(&name, context)) {
                Ok(true) => println!("validatingwebhookconfiguration/{name} deleted"),
                Ok(false) => println!("validatingwebhookconfiguration/{name} not found: nothing to delete"),
                Err(e) => {
                    eprintln!("error: deleting validatingwebhookconfiguration/{name}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Command::Run(args) => {
            // Log lines are written by a thread of their own, in batches
            // (signoff::runtime::log; each batch is one write of whole lines, so
            // stdout needs no buffer of its own); the guard writes what is left
            // when `run` returns.
            let (writer, _flush_on_exit) = signoff::runtime::log::batched(std::io::stdout(), "signoff-log");
            tracing_subscriber::fmt()
                .json()
                .with_writer(writer)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
                )
                .init();
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
            if let Err(e) = runtime.block_on(args.run()) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
