#![forbid(unsafe_code)]
//! `kubectl signoff`: the kubectl plugin for requesters, approvers and CI.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use signoff::cli::check::CheckArgs;

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
}

fn main() -> ExitCode {
    let code = match Cli::parse().command {
        Command::Check(args) => signoff::cli::check::run(&args, &mut std::io::stdout(), &mut std::io::stderr()),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
