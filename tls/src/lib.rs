//! TLS trust, once, for every part of Canopy that speaks TLS: the PVE client pins PVE
//! nodes, the agent and the CLI pin the Canopy server, and the server loads or generates
//! the certificate it serves. Never "accept invalid certificates".
//!
//! - [`Fingerprint`]: SHA-256 of a DER certificate, shown `AA:BB:…` as the PVE GUI does.
//! - [`client_config`]: a rustls client that trusts pinned leaf fingerprints or a CA, and
//!   remembers what each server presented so an error can name both fingerprints;
//!   [`probe_config`] only records, for "trust this fingerprint?" prompts.
//! - [`Identity`]: a server certificate chain and key, from PEM files or self-signed.
//!
//! rustls with ring; no async runtime, so every caller brings its own transport.

mod fingerprint;
mod identity;
mod verify;

pub use fingerprint::Fingerprint;
pub use identity::{self_signed, Identity, SelfSigned};
pub use verify::{client_config, pin_mismatch, probe_config, PinMismatch, Seen, Trust};

/// An error and all its causes on one line (`a: b: c`), each text once. TLS failures hide
/// their reason a few levels down (reqwest → hyper → io → rustls).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = s.source();
    }
    parts.join(": ")
}

/// The rustls crypto provider every Canopy TLS configuration uses.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
