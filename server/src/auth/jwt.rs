//! Access JWTs (HS256). The signing key is 64 random bytes generated on first start
//! into `DATA_DIR/jwt.key` with mode 0600; it is never printed or returned.

use crate::error::{Error, Result};
use canopy_api_types::auth::Role;
use canopy_api_types::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: UserId,
    pub name: String,
    pub role: Role,
    /// The user's session epoch when the token was issued; a token whose epoch is no
    /// longer the user's is refused (see `extract::UserAuth`).
    #[serde(default)]
    pub epoch: i64,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(***)")
    }
}

impl JwtKeys {
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// Load `dir/jwt.key`, creating it (0600, random) on first start.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let key = super::keyfile::load_or_create(dir, "jwt.key", 32)?;
        Ok(Self::from_secret(&key))
    }

    pub fn issue(&self, claims: &Claims) -> Result<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(Error::internal)
    }

    pub fn verify(&self, token: &str) -> Result<Claims> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Error::Unauthenticated(
                    "access token expired; refresh it or log in again".into(),
                ),
                _ => Error::Unauthenticated("access token is invalid".into()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn claims(exp_offset: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: UserId::new(),
            name: "alice".into(),
            role: Role::Operator,
            epoch: 0,
            iat: now,
            exp: now + exp_offset,
        }
    }

    #[test]
    fn key_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = JwtKeys::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("jwt.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = JwtKeys::load_or_create(dir.path()).unwrap();
        let t = a.issue(&claims(60)).unwrap();
        assert_eq!(b.verify(&t).unwrap().name, "alice");
    }

    #[test]
    fn expired_and_foreign_tokens_are_refused() {
        let k = JwtKeys::from_secret(&[7u8; 64]);
        let err = k.verify(&k.issue(&claims(-120)).unwrap()).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        let other = JwtKeys::from_secret(&[8u8; 64]);
        assert!(other.verify(&k.issue(&claims(60)).unwrap()).is_err());
    }
}
