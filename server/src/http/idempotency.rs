//! `Idempotency-Key` handling for user actions that must not run twice.

use crate::error::{Error, Result};
use crate::state::AppState;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;
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

/// The earlier answer for this key, if any; 409 when the key was used for another body.
pub async fn lookup<T: DeserializeOwned>(
    state: &AppState,
    actor: &str,
    key: &str,
    hash: &str,
) -> Result<Option<T>> {
    match state.store.idempotent_response(actor, key).await? {
        None => Ok(None),
        Some((stored_hash, _)) if stored_hash != hash => Err(Error::Conflict(format!(
            "Idempotency-Key '{key}' was already used for a different request"
        ))),
        Some((_, value)) => Ok(Some(
            serde_json::from_value(value).map_err(Error::internal)?,
        )),
    }
}

pub async fn save<T: Serialize>(
    state: &AppState,
    actor: &str,
    key: &str,
    hash: &str,
    resp: &T,
) -> Result<()> {
    let value = serde_json::to_value(resp).map_err(Error::internal)?;
    state
        .store
        .save_idempotent_response(actor, key, hash, &value, chrono::Utc::now())
        .await?;
    Ok(())
}
