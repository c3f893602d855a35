//! The SHA-256 certificate fingerprint, as people compare it: `AA:BB:…` (32 uppercase
//! pairs), the way the PVE GUI and `openssl x509 -fingerprint -sha256` show it.

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

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

/// Stored as text (`AA:BB:…`) in config and session files.
impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
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
    fn serde_uses_the_gui_form_and_names_bad_values() {
        let fp = Fingerprint::of_der(b"certificate");
        let json = serde_json::to_string(&fp).unwrap();
        assert_eq!(json, format!("\"{fp}\""));
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), fp);
        let err = serde_json::from_str::<Fingerprint>("\"AB:CD\"").unwrap_err();
        assert!(err.to_string().contains("has 2 bytes"), "{err}");
    }
}
