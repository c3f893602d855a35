//! Client-side trust: a pinned SHA-256 leaf fingerprint or a CA.
//!
//! With a fingerprint, the server's leaf certificate must hash to one of the pins and the
//! handshake signature must verify against that certificate (so the peer holds its key);
//! the host name is not checked, because self-signed certificates (PVE's, a Canopy server's)
//! name the machine, not the address the homelab owner types. With a CA, the standard
//! WebPKI checks apply, host name included. Either way the verifier remembers the
//! fingerprint each server presented, so an error can say "the server presents X, Y is
//! pinned", and a probe can show it for trust on first use.

use crate::{provider, Fingerprint};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How a server's certificate is trusted.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Any of these leaf-certificate fingerprints.
    Fingerprints(Vec<Fingerprint>),
    /// Certificates chaining to this CA (PEM), e.g. a PVE cluster's `pve-root-ca.pem`.
    CaPem(String),
}

/// What servers presented, per server name, for error messages and probes.
#[derive(Clone, Default, Debug)]
pub struct Seen(Arc<Mutex<SeenInner>>);

#[derive(Default, Debug)]
struct SeenInner {
    by_name: HashMap<String, Fingerprint>,
    last: Option<Fingerprint>,
}

impl Seen {
    fn record(&self, name: &ServerName<'_>, fp: Fingerprint) {
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        inner.by_name.insert(name.to_str().into_owned(), fp);
        inner.last = Some(fp);
    }

    /// The fingerprint the server at `host` presented most recently (`host` as in the URL;
    /// IPv6 with or without brackets).
    pub fn get(&self, host: &str) -> Option<Fingerprint> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        inner.by_name.get(host).copied()
    }

    /// The fingerprint presented in the most recent handshake, by any server.
    pub fn last(&self) -> Option<Fingerprint> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).last
    }
}

#[derive(Debug)]
enum Mode {
    Pins(Vec<Fingerprint>),
    Ca(Arc<WebPkiServerVerifier>),
    /// Record and refuse: used only to show a fingerprint before the user trusts it.
    Probe,
}

#[derive(Debug)]
struct Verifier {
    mode: Mode,
    seen: Seen,
    provider: Arc<CryptoProvider>,
}

/// A pinned server presented another certificate. Returned by the verifier (inside
/// rustls, io and HTTP client errors: find it with [`pin_mismatch`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinMismatch {
    pub presented: Fingerprint,
    pub pinned: Vec<Fingerprint>,
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "certificate fingerprint mismatch: the server presents {}, but {} is pinned",
            self.presented,
            pin_list(&self.pinned)
        )
    }
}

impl std::error::Error for PinMismatch {}

/// The [`PinMismatch`] somewhere in `e`'s chain (through io errors and rustls' own), if any.
pub fn pin_mismatch(e: &(dyn std::error::Error + 'static)) -> Option<PinMismatch> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(m) = err.downcast_ref::<PinMismatch>() {
            return Some(m.clone());
        }
        if let Some(rustls::Error::Other(other)) = err.downcast_ref::<rustls::Error>() {
            if let Some(m) = other.0.downcast_ref::<PinMismatch>() {
                return Some(m.clone());
            }
        }
        // io::Error's `source` skips the error it wraps; look inside.
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(m) = pin_mismatch(inner) {
                return Some(m);
            }
        }
        current = err.source();
    }
    None
}

/// "X or Y" for the pins in an error message.
fn pin_list(pins: &[Fingerprint]) -> String {
    pins.iter()
        .map(Fingerprint::to_string)
        .collect::<Vec<_>>()
        .join(" or ")
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = Fingerprint::of_der(end_entity.as_ref());
        self.seen.record(server_name, fp);
        match &self.mode {
            Mode::Pins(pins) if pins.contains(&fp) => Ok(ServerCertVerified::assertion()),
            Mode::Pins(pins) => Err(rustls::Error::Other(rustls::OtherError(Arc::new(
                PinMismatch {
                    presented: fp,
                    pinned: pins.clone(),
                },
            )))),
            Mode::Ca(webpki) => {
                webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            }
            Mode::Probe => Err(rustls::Error::General(format!(
                "probe only: the server presents the certificate fingerprint {fp}"
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A rustls client configuration for `trust`, and the record of what servers presented.
pub fn client_config(trust: &Trust) -> Result<(rustls::ClientConfig, Seen), String> {
    let mode = match trust {
        Trust::Fingerprints(pins) if pins.is_empty() => {
            return Err("no certificate fingerprint or CA given".into())
        }
        Trust::Fingerprints(pins) => Mode::Pins(pins.clone()),
        Trust::CaPem(pem) => Mode::Ca(ca_verifier(pem)?),
    };
    Ok(build(mode))
}

/// A configuration that records the presented certificate and always refuses: nothing is
/// ever sent over it.
pub fn probe_config() -> (rustls::ClientConfig, Seen) {
    build(Mode::Probe)
}

fn build(mode: Mode) -> (rustls::ClientConfig, Seen) {
    let provider = provider();
    let seen = Seen::default();
    let verifier = Arc::new(Verifier {
        mode,
        seen: seen.clone(),
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous() // a custom verifier; it verifies, see the module doc
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    (config, seen)
}

fn ca_verifier(pem: &str) -> Result<Arc<WebPkiServerVerifier>, String> {
    let mut roots = RootCertStore::empty();
    let mut count = 0;
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes()) {
        let cert: CertificateDer<'static> =
            cert.map_err(|e| format!("the CA file is not valid PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the CA file holds an unusable certificate: {e}"))?;
        count += 1;
    }
    if count == 0 {
        return Err("the CA file holds no certificate".into());
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| format!("the CA file cannot be used: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_must_hold_a_certificate() {
        assert!(client_config(&Trust::CaPem("nothing".into()))
            .unwrap_err()
            .contains("no certificate"));
        assert!(client_config(&Trust::Fingerprints(vec![])).is_err());
    }

    #[test]
    fn seen_answers_by_host_and_last() {
        let seen = Seen::default();
        let fp = Fingerprint::of_der(b"x");
        seen.record(&ServerName::try_from("::1").unwrap(), fp);
        assert_eq!(seen.get("[::1]"), Some(fp));
        assert_eq!(seen.get("::1"), Some(fp));
        assert_eq!(seen.get("127.0.0.1"), None);
        assert_eq!(seen.last(), Some(fp));
    }
}
