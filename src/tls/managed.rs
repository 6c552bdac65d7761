//! Source B: self-managed certificates kept in a Secret shared by every replica.
//!
//! The Secret (type `kubernetes.io/tls`) holds:
//! - `tls.crt`, `tls.key`: the serving certificate, signed by the signing CA;
//! - `ca.crt`: the CA bundle to publish (signing CA, plus the next or previous CA
//!   during a handover);
//! - `signing-ca.crt`, `signing-ca.key`: the CA that signs serving certificates;
//! - `next-ca.crt`, `next-ca.key`: a new CA being handed over (published, not yet signing);
//! - `previous-ca.crt`: the CA handed over from (still published, no longer signing);
//! - annotations with the handover times.
//!
//! Replicas never race to different CAs: the Secret is created only if absent
//! (a conflict means another replica won: re-read), and every change is a replace
//! guarded by the resourceVersion that was read (a conflict: re-read and re-plan).
//! The timing is [`rotation::plan`](super::rotation::plan); this module does the I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::certs::{Ca, Validity};
use super::rotation::{self, Observed, Plan, Previous, RotationPolicy, RotationStep};
use super::{CertStore, certified_key};
use crate::{Error, Result};

/// The Secret key holding the CA bundle to publish.
pub const BUNDLE_KEY: &str = "ca.crt";
const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";
const SIGNING_CRT: &str = "signing-ca.crt";
const SIGNING_KEY: &str = "signing-ca.key";
const NEXT_CRT: &str = "next-ca.crt";
const NEXT_KEY: &str = "next-ca.key";
const PREVIOUS_CRT: &str = "previous-ca.crt";
const NEXT_PUBLISHED_AT: &str = "signoff.dev/next-ca-published-at";
const PREVIOUS_RETIRED_AT: &str = "signoff.dev/previous-ca-retired-at";

/// Where the Secret lives, what the serving certificate names, and the timings.
#[derive(Clone, Debug)]
pub struct ManagedOptions {
    pub namespace: String,
    pub secret_name: String,
    /// Common name of the serving certificate; CAs are named `<this> CA <time>`.
    pub common_name: String,
    /// e.g. `signoff-webhook.signoff-system.svc`.
    pub dns_names: Vec<String>,
    /// e.g. 127.0.0.1 for `make dev` and tests.
    pub ip_addresses: Vec<IpAddr>,
    pub policy: RotationPolicy,
    /// How often the Secret is re-read to pick up changes made by other replicas.
    /// Must be shorter than `policy.handover`.
    pub resync: Duration,
}

impl ManagedOptions {
    pub fn new(namespace: impl Into<String>, secret_name: impl Into<String>) -> ManagedOptions {
        ManagedOptions {
            namespace: namespace.into(),
            secret_name: secret_name.into(),
            common_name: "signoff-webhook".into(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            policy: RotationPolicy::default(),
            resync: Duration::from_secs(60),
        }
    }

    fn validate(&self) -> Result<()> {
        self.policy.validate()?;
        if self.dns_names.is_empty() && self.ip_addresses.is_empty() {
            return Err(Error::Config("self-managed TLS needs at least one DNS name or IP address".into()));
        }
        if self.resync >= self.policy.handover {
            return Err(Error::Config(format!(
                "self-managed TLS: the resync interval ({:?}) must be shorter than the CA handover ({:?}), \
                 or a replica could serve a certificate from a CA already removed from the bundle",
                self.resync, self.policy.handover
            )));
        }
        Ok(())
    }
}

/// Running self-managed TLS. Dropping it stops the rotation task.
#[derive(Debug)]
pub struct ManagedTls {
    /// The serving certificate, for [`server_config`](super::server_config).
    pub store: Arc<CertStore>,
    /// The CA bundle (PEM) clients must trust; changes ahead of the serving
    /// certificate during a CA handover. Whoever writes the webhook configuration's
    /// caBundle reads it here.
    pub ca_bundle: watch::Receiver<Vec<u8>>,
    task: JoinHandle<()>,
}

impl ManagedTls {
    /// Stops the rotation task (the store keeps serving its last certificate).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for ManagedTls {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Loads (or creates) the Secret, makes sure it holds a valid CA and serving
/// certificate, and keeps rotating them in a background task. Returns once a
/// certificate is being served.
pub async fn start_managed(client: kube::Client, options: ManagedOptions) -> Result<ManagedTls> {
    options.validate()?;
    let api: Api<Secret> = Api::namespaced(client, &options.namespace);
    let mut local: Option<Local> = None;
    let first_wake = sync(&api, &options, &mut local).await?;
    let local = local.ok_or_else(|| Error::Tls("self-managed TLS: no certificate after the first sync".into()))?;
    let store = local.store.clone();
    let ca_bundle = local.bundle.subscribe();
    let task = tokio::spawn(run(api, options, local, first_wake));
    Ok(ManagedTls { store, ca_bundle, task })
}

/// What this replica serves and publishes.
struct Local {
    store: Arc<CertStore>,
    bundle: watch::Sender<Vec<u8>>,
    serving: (Vec<u8>, Vec<u8>),
}

impl Local {
    /// Publishes the bundle first, then serves the certificate: a serving certificate
    /// from a new CA only ever follows a bundle holding that CA.
    fn apply(local: &mut Option<Local>, m: &Material) -> Result<()> {
        let bundle = m.bundle().into_bytes();
        let serving = (m.cert_pem.clone().into_bytes(), m.key_pem.clone().into_bytes());
        match local {
            None => {
                let store = CertStore::from_pem(&serving.0, &serving.1)?;
                let (bundle, _) = watch::channel(bundle);
                *local = Some(Local { store, bundle, serving });
            }
            Some(l) => {
                l.bundle.send_if_modified(|b| {
                    let changed = *b != bundle;
                    if changed {
                        tracing::info!(cas = m.ca_count(), "published a new webhook CA bundle");
                        *b = bundle;
                    }
                    changed
                });
                if l.serving != serving {
                    l.store.set(certified_key(&serving.0, &serving.1)?);
                    tracing::info!(not_after = %m.cert.not_after, "serving a new webhook certificate");
                    l.serving = serving;
                }
            }
        }
        Ok(())
    }
}

async fn run(api: Api<Secret>, options: ManagedOptions, local: Local, mut wake: Timestamp) {
    let mut local = Some(local);
    loop {
        let until_wake = Timestamp::now().duration_until(wake).unsigned_abs();
        let nap = if wake <= Timestamp::now() { Duration::ZERO } else { until_wake.min(options.resync) };
        tokio::time::sleep(nap).await;
        match sync(&api, &options, &mut local).await {
            Ok(next) => wake = next,
            Err(error) => {
                tracing::warn!(%error, secret = %options.secret_name, "self-managed TLS: syncing the Secret failed; still serving the current certificate, retrying");
                wake = Timestamp::now() + jiff::SignedDuration::try_from(options.resync).unwrap_or_default();
            }
        }
    }
}

/// One pass: read the Secret, serve and publish what it holds, and apply due steps
/// until nothing is due. Returns when to look again.
async fn sync(api: &Api<Secret>, options: &ManagedOptions, local: &mut Option<Local>) -> Result<Timestamp> {
    let name = &options.secret_name;
    for _ in 0..20 {
        let now = Timestamp::now();
        let Some(secret) = api.get_opt(name).await? else {
            let fresh = Material::generate(options, now)?;
            match api.create(&PostParams::default(), &fresh.to_secret(options, None)).await {
                Ok(_) => {
                    tracing::info!(secret = %name, ca = %fresh.signing.cert.subject, "created the webhook CA and serving certificate")
                }
                Err(kube::Error::Api(s)) if s.is_already_exists() => {
                    tracing::debug!(secret = %name, "another replica created the Secret first; reading it")
                }
                Err(e) => return Err(e.into()),
            }
            continue;
        };
        let version = secret.metadata.resource_version.clone();
        let (material, step) = match Material::from_secret(&secret) {
            Ok(m) => {
                Local::apply(local, &m)?;
                match rotation::plan(now, &m.observed(options), &options.policy) {
                    Plan::WaitUntil(at) => return Ok(at),
                    Plan::Now(step) => (m.advance(step, options, now)?, step),
                }
            }
            Err(error) => {
                tracing::error!(secret = %name, %error, "the webhook TLS Secret is unusable; replacing it with a new CA");
                (Material::generate(options, now)?, RotationStep::Regenerate)
            }
        };
        match api.replace(name, &PostParams::default(), &material.to_secret(options, version)).await {
            Ok(_) => tracing::info!(secret = %name, ?step, ca = %material.signing.cert.subject, "rotated webhook TLS"),
            Err(kube::Error::Api(s)) if s.is_conflict() => {
                tracing::debug!(secret = %name, ?step, "another replica changed the Secret first; re-reading")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Tls(format!("self-managed TLS: Secret {name} keeps changing under us; will retry")))
}

/// Facts read from one certificate.
#[derive(Clone, Debug)]
struct CertInfo {
    not_after: Timestamp,
    subject: String,
    subject_raw: Vec<u8>,
    issuer_raw: Vec<u8>,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
}

fn inspect(pem: &str) -> Result<CertInfo> {
    use x509_parser::extensions::GeneralName;
    let bad = |what: &str| Error::Tls(format!("parsing a certificate: {what}"));
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(&e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(&e.to_string()))?;
    let not_after = Timestamp::from_second(cert.validity().not_after.timestamp()).map_err(|e| bad(&e.to_string()))?;
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push((*d).to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("length checked"))),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("length checked"))),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        not_after,
        subject: cert.subject().to_string(),
        subject_raw: cert.subject().as_raw().to_vec(),
        issuer_raw: cert.issuer().as_raw().to_vec(),
        dns,
        ips,
    })
}

#[derive(Clone, Debug)]
struct CaMaterial {
    cert_pem: String,
    key_pem: String,
    cert: CertInfo,
}

impl CaMaterial {
    fn generate(options: &ManagedOptions, now: Timestamp) -> Result<CaMaterial> {
        let not_after = rotation::not_after(now, options.policy.ca_validity, None);
        let name = format!("{} CA {}", options.common_name, now.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"));
        let ca = Ca::new_with(&name, Validity::until(now.as_second(), not_after.as_second())?)?;
        CaMaterial::load(ca.cert_pem().to_string(), ca.pair().key_pem.clone())
    }

    fn load(cert_pem: String, key_pem: String) -> Result<CaMaterial> {
        let cert = inspect(&cert_pem)?;
        Ok(CaMaterial { cert_pem, key_pem, cert })
    }

    fn issue(&self, options: &ManagedOptions, now: Timestamp) -> Result<(String, String, CertInfo)> {
        let ca = Ca::from_pem(&self.cert_pem, &self.key_pem)?;
        let not_after = rotation::not_after(now, options.policy.cert_validity, Some(self.cert.not_after));
        let dns: Vec<&str> = options.dns_names.iter().map(String::as_str).collect();
        let pair = ca.issue_server_with(
            &options.common_name,
            &dns,
            &options.ip_addresses,
            Validity::until(now.as_second(), not_after.as_second())?,
        )?;
        let info = inspect(&pair.cert_pem)?;
        Ok((pair.cert_pem, pair.key_pem, info))
    }
}

/// Everything the Secret holds, parsed.
#[derive(Clone, Debug)]
struct Material {
    signing: CaMaterial,
    next: Option<(CaMaterial, Timestamp)>,
    previous: Option<(String, CertInfo, Timestamp)>,
    cert_pem: String,
    key_pem: String,
    cert: CertInfo,
}

impl Material {
    fn generate(options: &ManagedOptions, now: Timestamp) -> Result<Material> {
        let signing = CaMaterial::generate(options, now)?;
        let (cert_pem, key_pem, cert) = signing.issue(options, now)?;
        Ok(Material { signing, next: None, previous: None, cert_pem, key_pem, cert })
    }

    fn from_secret(secret: &Secret) -> Result<Material> {
        let empty = BTreeMap::new();
        let data = secret.data.as_ref().unwrap_or(&empty);
        let text = |key: &str| -> Result<Option<String>> {
            data.get(key)
                .map(|b| String::from_utf8(b.0.clone()).map_err(|_| Error::Tls(format!("{key} is not PEM text"))))
                .transpose()
        };
        let required = |key: &str| text(key)?.ok_or_else(|| Error::Tls(format!("the Secret has no {key}")));
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        let time = |key: &str| -> Result<Timestamp> {
            annotations
                .get(key)
                .ok_or_else(|| Error::Tls(format!("annotation {key} is missing")))?
                .parse()
                .map_err(|e| Error::Tls(format!("annotation {key}: {e}")))
        };
        let signing = CaMaterial::load(required(SIGNING_CRT)?, required(SIGNING_KEY)?)?;
        let next = match (text(NEXT_CRT)?, text(NEXT_KEY)?) {
            (Some(c), Some(k)) => Some((CaMaterial::load(c, k)?, time(NEXT_PUBLISHED_AT)?)),
            _ => None,
        };
        let previous = match text(PREVIOUS_CRT)? {
            Some(c) => {
                let info = inspect(&c)?;
                Some((c, info, time(PREVIOUS_RETIRED_AT)?))
            }
            None => None,
        };
        let (cert_pem, key_pem) = (required(CERT_KEY)?, required(KEY_KEY)?);
        // A pair that does not load is unusable: fail here, and the Secret is replaced.
        certified_key(cert_pem.as_bytes(), key_pem.as_bytes())?;
        let cert = inspect(&cert_pem)?;
        Ok(Material { signing, next, previous, cert_pem, key_pem, cert })
    }

    fn observed(&self, options: &ManagedOptions) -> Observed {
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v.dedup();
            v
        };
        let sorted_ips = |mut v: Vec<IpAddr>| {
            v.sort();
            v.dedup();
            v
        };
        let names_match = sorted(self.cert.dns.clone()) == sorted(options.dns_names.clone())
            && sorted_ips(self.cert.ips.clone()) == sorted_ips(options.ip_addresses.clone());
        Observed {
            signing_ca_not_after: self.signing.cert.not_after,
            cert_not_after: self.cert.not_after,
            cert_current: names_match && self.cert.issuer_raw == self.signing.cert.subject_raw,
            next_ca_published_at: self.next.as_ref().map(|(_, at)| *at),
            previous_ca: self
                .previous
                .as_ref()
                .map(|(_, info, at)| Previous { retired_at: *at, not_after: info.not_after }),
        }
    }

    fn advance(&self, step: RotationStep, options: &ManagedOptions, now: Timestamp) -> Result<Material> {
        let mut m = self.clone();
        match step {
            RotationStep::Regenerate => return Material::generate(options, now),
            RotationStep::BeginHandover => m.next = Some((CaMaterial::generate(options, now)?, now)),
            RotationStep::CompleteHandover => {
                let (next, _) = m.next.take().ok_or_else(|| Error::Tls("no CA to hand over to".into()))?;
                let old = std::mem::replace(&mut m.signing, next);
                m.previous = Some((old.cert_pem, old.cert, now));
                (m.cert_pem, m.key_pem, m.cert) = m.signing.issue(options, now)?;
            }
            RotationStep::RetirePrevious => m.previous = None,
            RotationStep::RenewCert => (m.cert_pem, m.key_pem, m.cert) = m.signing.issue(options, now)?,
        }
        Ok(m)
    }

    fn ca_count(&self) -> usize {
        1 + usize::from(self.next.is_some()) + usize::from(self.previous.is_some())
    }

    /// Signing CA, then the next, then the previous.
    fn bundle(&self) -> String {
        let mut pems = vec![self.signing.cert_pem.as_str()];
        pems.extend(self.next.as_ref().map(|(c, _)| c.cert_pem.as_str()));
        pems.extend(self.previous.as_ref().map(|(c, _, _)| c.as_str()));
        pems.iter().map(|p| if p.ends_with('\n') { p.to_string() } else { format!("{p}\n") }).collect()
    }

    fn to_secret(&self, options: &ManagedOptions, resource_version: Option<String>) -> Secret {
        let mut data = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
        };
        put(CERT_KEY, &self.cert_pem);
        put(KEY_KEY, &self.key_pem);
        put(BUNDLE_KEY, &self.bundle());
        put(SIGNING_CRT, &self.signing.cert_pem);
        put(SIGNING_KEY, &self.signing.key_pem);
        let mut annotations = BTreeMap::new();
        if let Some((next, at)) = &self.next {
            put(NEXT_CRT, &next.cert_pem);
            put(NEXT_KEY, &next.key_pem);
            annotations.insert(NEXT_PUBLISHED_AT.to_string(), at.to_string());
        }
        if let Some((cert, _, at)) = &self.previous {
            put(PREVIOUS_CRT, cert);
            annotations.insert(PREVIOUS_RETIRED_AT.to_string(), at.to_string());
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(options.secret_name.clone()),
                namespace: Some(options.namespace.clone()),
                resource_version,
                labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_string(), "signoff".to_string())])),
                annotations: Some(annotations),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(data),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn options() -> ManagedOptions {
        ManagedOptions {
            dns_names: vec!["signoff.example.svc".into()],
            ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            resync: Duration::from_secs(1),
            ..ManagedOptions::new("ns", "tls")
        }
    }

    #[test]
    fn secret_round_trip_and_handover_steps() {
        let o = options();
        let now = Timestamp::now();
        let m = Material::generate(&o, now).unwrap();
        let back = Material::from_secret(&m.to_secret(&o, None)).unwrap();
        assert!(back.observed(&o).cert_current);
        assert!(matches!(rotation::plan(now, &back.observed(&o), &o.policy), Plan::WaitUntil(_)));
        assert_eq!(back.cert.ips, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);

        let begun = back.advance(RotationStep::BeginHandover, &o, now).unwrap();
        let begun = Material::from_secret(&begun.to_secret(&o, None)).unwrap();
        assert_eq!(begun.ca_count(), 2);
        assert_eq!(begun.cert_pem, back.cert_pem, "the serving cert does not change when the new CA is published");
        assert_eq!(begun.observed(&o).next_ca_published_at, Some(now));

        let done = begun.advance(RotationStep::CompleteHandover, &o, now).unwrap();
        let done = Material::from_secret(&done.to_secret(&o, None)).unwrap();
        assert_eq!(done.ca_count(), 2);
        assert_eq!(done.cert.issuer_raw, begun.next.as_ref().unwrap().0.cert.subject_raw);
        assert!(done.bundle().contains(&back.signing.cert_pem), "previous CA still published");
        assert!(done.observed(&o).cert_current);

        let retired = done.advance(RotationStep::RetirePrevious, &o, now).unwrap();
        assert_eq!(retired.ca_count(), 1);
        assert!(!retired.bundle().contains(&back.signing.cert_pem));
    }

    #[test]
    fn changed_names_make_the_cert_stale() {
        let o = options();
        let m = Material::generate(&o, Timestamp::now()).unwrap();
        let o2 = ManagedOptions { dns_names: vec!["other.svc".into()], ..options() };
        assert!(!m.observed(&o2).cert_current);
    }

    #[test]
    fn broken_secrets_are_errors() {
        let o = options();
        let m = Material::generate(&o, Timestamp::now()).unwrap();
        let mut s = m.to_secret(&o, None);
        s.data.as_mut().unwrap().insert(KEY_KEY.into(), ByteString(m.signing.key_pem.clone().into_bytes()));
        assert!(Material::from_secret(&s).is_err(), "mismatched serving key");
        let mut s = m.to_secret(&o, None);
        s.data.as_mut().unwrap().remove(SIGNING_KEY);
        assert!(Material::from_secret(&s).unwrap_err().to_string().contains("signing-ca.key"));
        assert!(Material::from_secret(&Secret::default()).is_err());
    }

    #[test]
    fn invalid_options_are_refused() {
        assert!(options().validate().is_ok());
        assert!(ManagedOptions { dns_names: vec![], ip_addresses: vec![], ..options() }.validate().is_err());
        assert!(ManagedOptions { resync: Duration::from_secs(3600), ..options() }.validate().is_err());
    }
}
