//! The server side: the certificate chain and key a Canopy server serves, loaded from a PEM
//! pair (the owner's own certificate) or generated self-signed with SANs for the names and
//! addresses it serves. The private key is never printed: [`Identity`] and [`SelfSigned`]
//! keep it out of `Debug`.

use crate::{provider, Fingerprint};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A certificate chain with its key, ready to serve.
#[derive(Clone)]
pub struct Identity {
    fingerprint: Fingerprint,
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// From PEM text: the leaf first, then any intermediates; the key as PKCS#8, PKCS#1 or
    /// SEC1. `what_cert` / `what_key` name the sources in errors (file names).
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        what_cert: &str,
        what_key: &str,
    ) -> Result<Self, String> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{what_cert} is not a PEM certificate: {e}"))?;
        let leaf = chain.first().ok_or_else(|| {
            format!(
                "{what_cert} holds no certificate (expected PEM \"-----BEGIN CERTIFICATE-----\")"
            )
        })?;
        let fingerprint = Fingerprint::of_der(leaf.as_ref());
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| format!("{what_key} holds no usable private key: {e}"))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => {
                    format!(
                        "the key in {what_key} does not belong to the certificate in {what_cert}"
                    )
                }
                e => format!("{what_cert} and {what_key} cannot be served: {e}"),
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            fingerprint,
            config: Arc::new(config),
        })
    }

    /// From a certificate file and a key file; errors name the file.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, String> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        Self::from_pem(
            &read(cert_file)?,
            &read(key_file)?,
            &cert_file.display().to_string(),
            &key_file.display().to_string(),
        )
    }

    /// SHA-256 of the leaf certificate, what clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The rustls server configuration (HTTP/1.1 over TLS 1.3 or 1.2).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }
}

/// A freshly generated self-signed certificate and its key, both PEM.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfSigned")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"***")
            .finish()
    }
}

/// A self-signed server certificate (ECDSA P-256) valid for `names`: DNS names and IP
/// addresses (an entry that parses as an address becomes an IP SAN). The first name is the
/// common name. Valid from last year for ten years: clients pin it, they do not renew it.
pub fn self_signed(names: &[String]) -> Result<SelfSigned, String> {
    if names.is_empty() {
        return Err("a certificate needs at least one name".into());
    }
    let mut params = CertificateParams::new(names.to_vec())
        .map_err(|e| format!("cannot make a certificate for {names:?}: {e}"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].clone());
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Canopy (self-signed)");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let year = current_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let key = KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot sign the certificate: {e}"))?;
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn current_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + (secs / 31_556_952) as i32
}

#[cfg(test)]
mod tests;
