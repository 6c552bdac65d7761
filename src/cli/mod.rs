//! The `kubectl signoff` plugin's commands. Each command is a clap `Args` struct
//! plus a `run` function that writes to the given output and returns the exit code.

pub mod check;
pub mod decide;
pub mod kube;
pub mod me;
pub mod requests;
