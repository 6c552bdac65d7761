#![forbid(unsafe_code)]
//! `kubectl signoff`: the kubectl plugin for requesters, approvers and CI.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use signoff::cli::check::CheckArgs;
use signoff::cli::kube::KubeArgs;
use signoff::crd::Verdict;

/// kubectl signoff: see why a change is held, and check manifests before applying them.
#[derive(Parser)]
#[command(name = "kubectl-signoff", bin_name = "kubectl signoff", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Check(CheckArgs),
    /// Approve a held change, as yourself.
    ///
    /// Examples:
    ///   kubectl signoff approve -n payments-prod ar-3f9c2a1b
    ///   kubectl signoff approve --context bob -n payments-prod ar-3f9c2a1b --comment "reviewed the diff"
    Approve(DecideArgs),
    /// Reject a held change, as yourself. Any eligible rejection rejects the request.
    ///
    /// Examples:
    ///   kubectl signoff reject -n payments-prod ar-3f9c2a1b --comment "not during the freeze"
    Reject(DecideArgs),
}

#[derive(Args)]
struct DecideArgs {
    /// The ApprovalRequest, e.g. ar-3f9c2a1b (as named in the denial message).
    request: String,
    /// Why: recorded with the decision and shown to the requester.
    #[arg(long)]
    comment: Option<String>,
    #[command(flatten)]
    kube: KubeArgs,
}

fn decide(args: DecideArgs, verdict: Verdict) -> i32 {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime starts");
    let result = runtime.block_on(async {
        let (client, namespace) = args.kube.connect().await?;
        signoff::cli::decide::decide(&client, &namespace, &args.request, verdict, args.comment).await
    });
    match result {
        Ok(summary) => {
            println!("{summary}");
            0
        }
        Err(message) => {
            eprintln!("error: {message}");
            1
        }
    }
}

fn main() -> ExitCode {
    let code = match Cli::parse().command {
        Command::Check(args) => signoff::cli::check::run(&args, &mut std::io::stdout(), &mut std::io::stderr()),
        Command::Approve(args) => decide(args, Verdict::Approve),
        Command::Reject(args) => decide(args, Verdict::Reject),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
