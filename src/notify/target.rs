//! Where a notification goes: a [`Target`] resolved from a [`Contact`] and the
//! Secrets it names (in signoff's own namespace).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::payload::PAGERDUTY_EVENTS_URL;
use crate::crd::{Contact, ContactKind, SecretKeyRef};

/// Why a contact could not be turned into a target. Each becomes a Failed delivery.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("Secret {namespace}/{name} not found (referenced by a {sink} contact)")]
    SecretNotFound { namespace: String, name: String, sink: &'static str },
    #[error("Secret {namespace}/{name} has no key {key:?} (referenced by a {sink} contact)")]
    KeyNotFound { namespace: String, name: String, key: String, sink: &'static str },
    #[error("Secret {namespace}/{name} key {key:?} is empty or not UTF-8 (referenced by a {sink} contact)")]
    BadValue { namespace: String, name: String, key: String, sink: &'static str },
    #[error("{sink} contact has neither url nor urlSecretRef")]
    NoUrl { sink: &'static str },
    #[error("PagerDuty contact has no routingKeySecretRef")]
    NoRoutingKey,
    #[error("{sink} contact URL is not http(s): {url}")]
    BadUrl { sink: &'static str, url: String },
    #[error("reading Secret {namespace}/{name}: {source}")]
    Kube { namespace: String, name: String, source: kube::Error },
}

impl From<ResolveError> for crate::Error {
    fn from(e: ResolveError) -> Self {
        crate::Error::Config(e.to_string())
    }
}

/// A resolved sink, with its credentials. `Debug` never prints secrets or URLs'
/// paths (a Slack webhook URL is itself a credential).
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// A generic webhook; the body is signed when a signing key is set, in
    /// `signature_header` (default [`super::payload::SIGNATURE_HEADER`]).
    Webhook { url: String, signing_key: Option<Vec<u8>>, signature_header: String },
    /// A Slack incoming webhook.
    Slack { url: String },
    /// PagerDuty Events API v2.
    PagerDuty { url: String, routing_key: String },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Webhook { url, signing_key, .. } => f
                .debug_struct("Webhook")
                .field("url", &redact_url(url))
                .field("signed", &signing_key.is_some())
                .finish(),
            Target::Slack { url } => f.debug_struct("Slack").field("url", &redact_url(url)).finish(),
            Target::PagerDuty { url, .. } => f.debug_struct("PagerDuty").field("url", &redact_url(url)).finish(),
        }
    }
}

/// `scheme://host[:port]/…`: what may appear in logs and status.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "<invalid url>".into() };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if rest.len() > authority.len() { format!("{scheme}://{host}/…") } else { format!("{scheme}://{host}") }
}

fn sink_name(kind: ContactKind) -> &'static str {
    match kind {
        ContactKind::Webhook => "Webhook",
        ContactKind::Slack => "Slack",
        ContactKind::PagerDuty => "PagerDuty",
    }
}

impl Target {
    /// A generic webhook signed (when `signing_key` is set) in the default header.
    pub fn webhook(url: impl Into<String>, signing_key: Option<Vec<u8>>) -> Target {
        Target::Webhook { url: url.into(), signing_key, signature_header: super::payload::SIGNATURE_HEADER.to_string() }
    }

    /// `Webhook`, `Slack` or `PagerDuty`, as recorded in status.
    pub fn sink(&self) -> &'static str {
        match self {
            Target::Webhook { .. } => "Webhook",
            Target::Slack { .. } => "Slack",
            Target::PagerDuty { .. } => "PagerDuty",
        }
    }

    /// The URL requests go to.
    pub fn url(&self) -> &str {
        match self {
            Target::Webhook { url, .. } | Target::Slack { url } | Target::PagerDuty { url, .. } => url,
        }
    }

    /// Resolves a contact, pure: `secrets` holds the data of the Secrets it names,
    /// by Secret name (as read from `namespace`, which only appears in errors).
    pub fn from_contact(
        contact: &Contact,
        namespace: &str,
        secrets: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    ) -> Result<Target, ResolveError> {
        let sink = sink_name(contact.kind);
        let value = |r: &SecretKeyRef| -> Result<Vec<u8>, ResolveError> {
            let data = secrets.get(&r.name).ok_or_else(|| ResolveError::SecretNotFound {
                namespace: namespace.into(),
                name: r.name.clone(),
                sink,
            })?;
            data.get(&r.key).cloned().ok_or_else(|| ResolveError::KeyNotFound {
                namespace: namespace.into(),
                name: r.name.clone(),
                key: r.key.clone(),
                sink,
            })
        };
        let text = |r: &SecretKeyRef| -> Result<String, ResolveError> {
            let bytes = value(r)?;
            match String::from_utf8(bytes) {
                Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                _ => Err(ResolveError::BadValue {
                    namespace: namespace.into(),
                    name: r.name.clone(),
                    key: r.key.clone(),
                    sink,
                }),
            }
        };
        let url = match (&contact.url, &contact.url_secret_ref) {
            (Some(url), _) if !url.trim().is_empty() => Some(url.trim().to_string()),
            (_, Some(r)) => Some(text(r)?),
            _ => None,
        };
        if let Some(url) = &url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ResolveError::BadUrl { sink, url: redact_url(url) });
        }
        match contact.kind {
            ContactKind::Webhook => Ok(Target::Webhook {
                url: url.ok_or(ResolveError::NoUrl { sink })?,
                signing_key: contact.signing_secret_ref.as_ref().map(value).transpose()?,
                signature_header: contact
                    .signature_header
                    .clone()
                    .filter(|h| !h.trim().is_empty())
                    .unwrap_or_else(|| super::payload::SIGNATURE_HEADER.to_string()),
            }),
            ContactKind::Slack => Ok(Target::Slack { url: url.ok_or(ResolveError::NoUrl { sink })? }),
            ContactKind::PagerDuty => Ok(Target::PagerDuty {
                url: url.unwrap_or_else(|| PAGERDUTY_EVENTS_URL.to_string()),
                routing_key: text(contact.routing_key_secret_ref.as_ref().ok_or(ResolveError::NoRoutingKey)?)?,
            }),
        }
    }

    /// Resolves a contact, reading the Secrets it names from `namespace`
    /// (signoff's own). A missing Secret or key is an error, never a panic.
    pub async fn resolve(client: &kube::Client, namespace: &str, contact: &Contact) -> Result<Target, ResolveError> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let mut secrets = BTreeMap::new();
        let refs = [&contact.url_secret_ref, &contact.signing_secret_ref, &contact.routing_key_secret_ref];
        for r in refs.into_iter().flatten() {
            if secrets.contains_key(&r.name) {
                continue;
            }
            let secret = api.get_opt(&r.name).await.map_err(|source| ResolveError::Kube {
                namespace: namespace.into(),
                name: r.name.clone(),
                source,
            })?;
            if let Some(secret) = secret {
                let mut data: BTreeMap<String, Vec<u8>> =
                    secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                for (k, v) in secret.string_data.unwrap_or_default() {
                    data.insert(k, v.into_bytes());
                }
                secrets.insert(r.name.clone(), data);
            }
        }
        Target::from_contact(contact, namespace, &secrets)
    }
}
