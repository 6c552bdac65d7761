//! The web approval queue: the queue and each request's page, live, for people
//! who never open a terminal. Two ways to serve it share this code: `kubectl
//! signoff ui` on 127.0.0.1 with the kubeconfig's credentials, and signoff in the
//! cluster with the cluster's OIDC provider. Either way every API call carries
//! the person's own credentials, so the webhook's guards hold unchanged.
//!
//! - [`page`]: pure; the pages as HTML from the requests, the viewer and `now`.
//! - [`server`]: axum; sessions, Host and CSRF checks, the live events.
//! - [`oidc`]: authorization code with PKCE.

pub mod oidc;
pub mod page;
pub mod server;
