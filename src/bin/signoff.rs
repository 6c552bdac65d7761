#![forbid(unsafe_code)]
//! The signoff operator.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// signoff: hold risky Kubernetes changes until the right people approve them.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    }
    ExitCode::SUCCESS
}

fn write_crds(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (file, yaml) in signoff::crd::crd_files() {
        std::fs::write(dir.join(file), yaml)?;
    }
    Ok(())
}
