//! Sealing of secrets Canopy must be able to use again (PVE API token secrets): unlike our
//! own tokens they cannot be stored as hashes, so they are encrypted at rest with
//! XChaCha20-Poly1305 under `seal.key` in the data dir. A copied database alone reveals
//! nothing.

use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use std::path::Path;

const PREFIX: &str = "xc20p1:";

#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    pub fn from_key(key: &[u8]) -> anyhow::Result<Self> {
        let key: [u8; 32] = key
            .get(..32)
            .and_then(|k| k.try_into().ok())
            .context("a seal key has 32 bytes")?;
        Ok(Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
        })
    }

    /// Load `dir/seal.key`, creating it (0600, random) on first start.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        Self::from_key(&super::keyfile::load_or_create(dir, "seal.key", 32)?)
    }

    pub fn seal(&self, plain: &str) -> String {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plain.as_bytes())
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory input");
        let mut blob = nonce.to_vec();
        blob.extend(ct);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }

    pub fn open(&self, sealed: &str) -> anyhow::Result<String> {
        let Some(b64) = sealed.strip_prefix(PREFIX) else {
            bail!("not a sealed secret");
        };
        let blob = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .context("sealed secret is not base64")?;
        if blob.len() < 24 {
            bail!("sealed secret is truncated");
        }
        let (nonce, ct) = blob.split_at(24);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| {
                anyhow!("the secret was sealed with another seal.key (was the data dir replaced?)")
            })?;
        String::from_utf8(plain).context("sealed secret is not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_key() {
        let a = Sealer::from_key(&[7u8; 32]).unwrap();
        let b = Sealer::from_key(&[8u8; 32]).unwrap();
        let sealed = a.seal("token-secret");
        assert!(!sealed.contains("token-secret"));
        assert_ne!(sealed, a.seal("token-secret"), "fresh nonce each time");
        assert_eq!(a.open(&sealed).unwrap(), "token-secret");
        assert!(b
            .open(&sealed)
            .unwrap_err()
            .to_string()
            .contains("another seal.key"));
        assert!(a.open("plain").is_err());
    }
}
