#![forbid(unsafe_code)]
//! signoff holds risky Kubernetes changes until the right people approve them, and
//! escalates every pending approval up a time-boxed ladder until someone answers.
//!
//! Library first, pure logic apart from I/O (see DESIGN.md):
//! - pure: [`crd`] (types only), [`policy`] (`classify`), [`digest`],
//!   [`approval`] (the approval rules, invariant 2), [`escalation`] (`step` and
//!   what the reconciler sends), the webhook's decisions ([`webhook::route`],
//!   [`webhook::review`], [`webhook::packet`], [`webhook::guard`]), the
//!   notifications' messages and payloads;
//! - I/O shells: the webhook server, the reconciler, delivery, [`tls`],
//!   [`runtime`] (`signoff run` wired), [`cli`] (`kubectl signoff`).
//!
//! The test control plane is the `signoff-testenv` crate (testenv/).

pub mod approval;
pub mod cli;
pub mod crd;
pub mod digest;
pub mod duration;
pub mod escalation;
pub mod events;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod gitops;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod queue;
pub mod readiness;
pub mod runtime;
pub mod tls;
pub mod ui;
pub mod webhook;

/// Errors surfaced by signoff. Messages say what went wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("yaml: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("TLS: {0}")]
    Tls(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds a human context to an I/O error: `io(context)(err)`.
pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}
