//! TLS trust for PVE endpoints: a pinned SHA-256 certificate fingerprint (as the PVE GUI
//! shows it, `AA:BB:…`) or a CA file. Never "accept invalid certificates".
//!
//! With a fingerprint, the server's leaf certificate must hash to one of the pins and the
//! handshake signature must verify against that certificate (so the peer holds its key);
//! the host name is not checked, because PVE's self-signed certificates name the node, not
//! the address the homelab owner types. With a CA, the standard WebPKI checks apply.
//! Either way the verifier remembers the fingerprint each server presented, so an error can
//! say "the server presents X, Y is pinned", and `probe` can show it for trust on first use.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// A SHA-256 certificate fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    /// `AA:BB:…` as the PVE GUI shows it (any case); plain 64 hex digits also accepted.
    fn from_str(s: &str) -> Result<Self, String> {
        let hex_digits: String = s.trim().chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&hex_digits).map_err(|_| {
            format!("{s:?} is not a SHA-256 fingerprint (expected 32 hex pairs like AB:CD:…)")
        })?;
        let arr: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "{s:?} has {} bytes; a SHA-256 fingerprint has 32 (AB:CD:… as the PVE GUI shows it)",
                b.len()
            )
        })?;
        Ok(Self(arr))
    }
}

/// How a PVE endpoint's certificate is trusted.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Any of these leaf-certificate fingerprints.
    Fingerprints(Vec<Fingerprint>),
    /// Certificates chaining to this CA (PEM), e.g. the cluster's `pve-root-ca.pem`.
    CaPem(String),
}

/// What the server presented, per server name, for error messages.
#[derive(Clone, Default, Debug)]
pub(crate) struct Seen(Arc<Mutex<HashMap<String, Fingerprint>>>);

impl Seen {
    fn record(&self, name: &ServerName<'_>, fp: Fingerprint) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_str().into_owned(), fp);
    }

    /// The fingerprint the server at `host` presented most recently.
    pub(crate) fn get(&self, host: &str) -> Option<Fingerprint> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .copied()
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
            Mode::Pins(_) => Err(rustls::Error::General(format!(
                "certificate fingerprint {fp} is not pinned"
            ))),
            Mode::Ca(webpki) => {
                webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            }
            Mode::Probe => Err(rustls::Error::General("probe only".into())),
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
pub(crate) fn client_config(trust: &Trust) -> Result<(rustls::ClientConfig, Seen), String> {
    let mode = match trust {
        Trust::Fingerprints(pins) if pins.is_empty() => {
            return Err("no certificate fingerprint or CA given".into())
        }
        Trust::Fingerprints(pins) => Mode::Pins(pins.clone()),
        Trust::CaPem(pem) => Mode::Ca(ca_verifier(pem)?),
    };
    Ok(build(mode))
}

/// A configuration that records the presented certificate and always refuses.
pub(crate) fn probe_config() -> (rustls::ClientConfig, Seen) {
    build(Mode::Probe)
}

fn build(mode: Mode) -> (rustls::ClientConfig, Seen) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("the CA file cannot be used: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_round_trips_in_gui_form() {
        let fp = Fingerprint::of_der(b"certificate");
        let text = fp.to_string();
        assert_eq!(text.len(), 32 * 3 - 1);
        assert_eq!(text, text.to_uppercase());
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(text.to_lowercase().parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(text.replace(':', "").parse::<Fingerprint>().unwrap(), fp);
    }

    #[test]
    fn bad_fingerprints_say_what_is_wrong() {
        assert!("AB:CD"
            .parse::<Fingerprint>()
            .unwrap_err()
            .contains("has 2 bytes"));
        assert!("zz"
            .parse::<Fingerprint>()
            .unwrap_err()
            .contains("not a SHA-256"));
    }

    #[test]
    fn ca_file_must_hold_a_certificate() {
        assert!(client_config(&Trust::CaPem("nothing".into()))
            .unwrap_err()
            .contains("no certificate"));
        assert!(client_config(&Trust::Fingerprints(vec![])).is_err());
    }
}
