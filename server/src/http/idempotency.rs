//! `Idempotency-Key` handling for user actions that must not run twice: the header and the
//! request hash; the store checks and saves the key in the action's own transaction.

use crate::error::{Error, Result};
use axum::http::HeaderMap;
use serde::Serialize;

pub fn key(headers: &HeaderMap) -> Result<Option<String>> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let k = v
                .to_str()
                .map_err(|_| Error::Validation("Idempotency-Key must be ASCII".into()))?;
            if k.is_empty() || k.len() > 128 {
                return Err(Error::Validation(
                    "Idempotency-Key must be 1-128 characters".into(),
                ));
            }
            Ok(Some(k.to_string()))
        }
    }
}

pub fn body_hash<T: Serialize>(body: &T) -> String {
    crate::auth::secrets::sha256_hex(&serde_json::to_string(body).unwrap_or_default())
}
