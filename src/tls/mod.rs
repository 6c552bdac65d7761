//! TLS for the webhook server: certificates ([`certs`]: a CA, serving and client
//! certificates), the hot-swappable store, the server, and where certificates come from.
//!
//! - [`CertStore`]: the serving certificate, swapped atomically. It is the
//!   [`ResolvesServerCert`] of [`server_config`], so each new handshake picks up the
//!   current certificate while established connections keep theirs.
//! - [`serve`]: axum over rustls (HTTP/1.1 and HTTP/2, keep-alive), graceful shutdown,
//!   failed handshakes logged and counted ([`TlsStats`]).
//! - Two sources of certificates:
//!   - [`watch_files`]: mounted files (a Secret volume), hot-reloaded on change;
//!   - [`start_managed`]: self-managed: signoff keeps a CA and a serving certificate
//!     in a Secret, rotates them before expiry with a CA handover, and publishes the CA
//!     bundle on a `watch` channel for whoever writes the webhook configuration.

pub mod certs;
mod files;
mod managed;
pub mod rotation;
mod serve;

pub use files::{FileReloader, Reload, watch_files};
pub use managed::{BUNDLE_KEY, ManagedOptions, ManagedTls, start_managed};
pub use rotation::RotationPolicy;
pub use serve::{TlsStats, failed_handshakes, serve, serve_with_stats};

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result};

/// The crypto provider used by the webhook server (ring, like the rest of the crate).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain (leaf first) and its PEM private key, and checks
/// that the key belongs to the leaf. A half-written or mismatched pair is an error.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("reading the certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Tls("the certificate PEM holds no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| Error::Tls(format!("reading the key PEM: {e}")))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            Error::Tls("the private key does not belong to the certificate (a half-updated pair?)".into())
        }
        e => Error::Tls(format!("loading the certificate and key: {e}")),
    })
}

/// The serving certificate, swapped atomically: new handshakes get the new one,
/// connections already established are unaffected.
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
    swaps: AtomicU64,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").field("swaps", &self.swaps()).finish_non_exhaustive()
    }
}

impl CertStore {
    /// A store serving `key`.
    pub fn new(key: CertifiedKey) -> Arc<CertStore> {
        Arc::new(CertStore { current: RwLock::new(Arc::new(key)), swaps: AtomicU64::new(0) })
    }

    /// A store serving the given PEM certificate chain and key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertStore>> {
        Ok(CertStore::new(certified_key(cert_pem, key_pem)?))
    }

    /// The certificate new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Serve `key` from the next handshake on.
    pub fn set(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        self.swaps.fetch_add(1, Ordering::Relaxed);
    }

    /// Parse, check and serve a PEM pair; on error the current certificate stays.
    pub fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<()> {
        self.set(certified_key(cert_pem, key_pem)?);
        Ok(())
    }

    /// Whether the store already serves exactly this certificate chain.
    pub fn serves(&self, chain: &[CertificateDer<'_>]) -> bool {
        self.current().cert.as_slice() == chain
    }

    /// How many times the certificate has been replaced.
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Relaxed)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The webhook's rustls configuration: TLS 1.2 and 1.3, ALPN h2 and http/1.1, the
/// certificate resolved from `store` at each handshake.
pub fn server_config(store: Arc<CertStore>) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Splits a PEM bundle into its certificates (DER); used for trust stores.
pub fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("reading a PEM bundle: {e}")))
}

#[cfg(test)]
mod tests {
    use super::certs::Ca;
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn pair(ca: &Ca) -> super::certs::CertPair {
        ca.issue_server("signoff", &["localhost"], &[IpAddr::V4(Ipv4Addr::LOCALHOST)], 1).unwrap()
    }

    #[test]
    fn parses_a_matching_pair() {
        let ca = Ca::new("test-ca", 1).unwrap();
        let p = pair(&ca);
        let key = certified_key(p.cert_pem.as_bytes(), p.key_pem.as_bytes()).unwrap();
        assert_eq!(key.cert.len(), 1);
        // a chain with the CA appended is fine too
        let chain = format!("{}{}", p.cert_pem, ca.cert_pem());
        assert_eq!(certified_key(chain.as_bytes(), p.key_pem.as_bytes()).unwrap().cert.len(), 2);
    }

    #[test]
    fn rejects_mismatched_empty_and_garbage() {
        let ca = Ca::new("test-ca", 1).unwrap();
        let (a, b) = (pair(&ca), pair(&ca));
        let err = certified_key(a.cert_pem.as_bytes(), b.key_pem.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("does not belong"), "{err}");
        let err = certified_key(b"", a.key_pem.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("no CERTIFICATE"), "{err}");
        let err = certified_key(a.cert_pem.as_bytes(), b"").unwrap_err().to_string();
        assert!(err.contains("key PEM"), "{err}");
        // a truncated (half-written) certificate
        let half = &a.cert_pem.as_bytes()[..a.cert_pem.len() / 2];
        assert!(certified_key(half, a.key_pem.as_bytes()).is_err());
        let half_key = &a.key_pem.as_bytes()[..a.key_pem.len() / 2];
        assert!(certified_key(a.cert_pem.as_bytes(), half_key).is_err());
    }

    #[test]
    fn store_swaps_and_keeps_old_on_error() {
        let ca = Ca::new("test-ca", 1).unwrap();
        let (a, b) = (pair(&ca), pair(&ca));
        let store = CertStore::from_pem(a.cert_pem.as_bytes(), a.key_pem.as_bytes()).unwrap();
        let first = store.current();
        assert!(store.set_pem(a.cert_pem.as_bytes(), b.key_pem.as_bytes()).is_err());
        assert!(Arc::ptr_eq(&first, &store.current()));
        assert_eq!(store.swaps(), 0);
        store.set_pem(b.cert_pem.as_bytes(), b.key_pem.as_bytes()).unwrap();
        assert_eq!(store.swaps(), 1);
        assert!(!Arc::ptr_eq(&first, &store.current()));
        // the first certificate stays valid for whoever holds it (an established connection)
        assert_eq!(first.cert.len(), 1);
        let _config = server_config(store);
    }
}
