//! Certificates: a small in-memory CA that issues serving and client certificates.
//! Used by the local control plane and by signoff's self-managed webhook TLS.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::net::IpAddr;

use crate::Result;

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The validity window of a new certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: time::OffsetDateTime,
    pub not_after: time::OffsetDateTime,
}

impl Validity {
    /// From now (backdated by an hour to tolerate clock skew) for `days` days.
    pub fn days(days: i64) -> Validity {
        let now = time::OffsetDateTime::now_utc();
        Validity { not_before: now - time::Duration::hours(1), not_after: now + time::Duration::days(days) }
    }

    /// From `now` (backdated by an hour) until `not_after`, both in Unix seconds.
    pub fn until(now_unix: i64, not_after_unix: i64) -> Result<Validity> {
        let at = |secs: i64| {
            time::OffsetDateTime::from_unix_timestamp(secs)
                .map_err(|e| crate::Error::Config(format!("certificate time {secs} out of range: {e}")))
        };
        Ok(Validity { not_before: at(now_unix - 3600)?, not_after: at(not_after_unix)? })
    }
}

/// A certificate authority held in memory.
pub struct Ca {
    pair: CertPair,
    issuer: Issuer<'static, KeyPair>,
}

fn name(common_name: &str, organizations: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    for org in organizations {
        dn.push(DnType::OrganizationName, *org);
    }
    dn
}

impl Ca {
    /// A new self-signed CA, valid for `days` days.
    pub fn new(common_name: &str, days: i64) -> Result<Ca> {
        Ca::new_with(common_name, Validity::days(days))
    }

    /// A new self-signed CA with an explicit validity window.
    pub fn new_with(common_name: &str, validity: Validity) -> Result<Ca> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, validity);
        let cert = params.self_signed(&key)?;
        let pair = CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() };
        Ok(Ca { pair, issuer: Issuer::new(params, key) })
    }

    /// A CA loaded back from its certificate and key (PEM), e.g. from a Secret.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Ca { pair: CertPair { cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string() }, issuer })
    }

    /// The CA certificate (PEM), for trust bundles.
    pub fn cert_pem(&self) -> &str {
        &self.pair.cert_pem
    }

    /// The CA certificate and key (PEM).
    pub fn pair(&self) -> &CertPair {
        &self.pair
    }

    /// A serving certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, common_name: &str, dns: &[&str], ips: &[IpAddr], days: i64) -> Result<CertPair> {
        self.issue_server_with(common_name, dns, ips, Validity::days(days))
    }

    /// A serving certificate with an explicit validity window.
    pub fn issue_server_with(
        &self,
        common_name: &str,
        dns: &[&str],
        ips: &[IpAddr],
        validity: Validity,
    ) -> Result<CertPair> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, &[]);
        params.subject_alt_names = dns
            .iter()
            .map(|d| Ok(SanType::DnsName((*d).try_into()?)))
            .chain(ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        self.sign(params, validity)
    }

    /// A client certificate: Kubernetes reads the user from the CN and the groups
    /// from the O attributes.
    pub fn issue_client(&self, user: &str, groups: &[&str], days: i64) -> Result<CertPair> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(user, groups);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        self.sign(params, Validity::days(days))
    }

    fn sign(&self, mut params: CertificateParams, validity: Validity) -> Result<CertPair> {
        set_validity(&mut params, validity);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
}
