#![forbid(unsafe_code)]
//! `kubectl signoff`: the kubectl plugin for requesters, approvers and CI
//! (the commands are in `signoff::cli`).

fn main() -> std::process::ExitCode {
    signoff::cli::main()
}
