//! The CLI's saved login: `$CANOPY_SESSION` or `~/.config/canopy/session.json`, 0600.
//! `CANOPY_SERVER` / `CANOPY_TOKEN` override it (for scripts and CI). The session keeps the
//! server's certificate pin (fingerprint or CA file, see [`super::trust`]);
//! `CANOPY_SERVER_FINGERPRINT` replaces it.

use super::trust::{self, Pin};
use anyhow::Context;
use canopy_api_types::client::{Client, ClientError};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub server: String,
    pub access_token: String,
    pub refresh_token: String,
    pub username: String,
    /// The server's certificate, pinned at login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<canopy_tls::Fingerprint>,
    /// Or the CA its certificate chains to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Session {
    pub fn pin(&self) -> Option<Pin> {
        match (&self.fingerprint, &self.ca_file) {
            (Some(fp), _) => Some(Pin::Fingerprint(*fp)),
            (None, Some(ca)) => Some(Pin::CaFile(ca.clone())),
            (None, None) => None,
        }
    }
}

pub fn path() -> PathBuf {
    if let Ok(p) = std::env::var("CANOPY_SESSION") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join(".config/canopy/session.json")
}

pub fn save(s: &Session) -> anyhow::Result<PathBuf> {
    let p = path();
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = p.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(s)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &p)?;
    Ok(p)
}

/// Remove the saved session (absent is fine).
pub fn forget() -> anyhow::Result<()> {
    let p = path();
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", p.display())),
    }
}

pub fn load() -> Option<Session> {
    let text = std::fs::read_to_string(path()).ok()?;
    serde_json::from_str(&text).ok()
}

/// A client for the user commands: `--server` / CANOPY_SERVER / session, token from
/// CANOPY_TOKEN or the session (refreshed once when it has expired).
pub async fn client(server: Option<&str>) -> anyhow::Result<Client> {
    let session = load();
    let base = server
        .map(str::to_string)
        .or_else(|| std::env::var("CANOPY_SERVER").ok())
        .or_else(|| session.as_ref().map(|s| s.server.clone()))
        .context("no server: pass --server URL, set CANOPY_SERVER, or run `canopy login`")?;
    // The session's pin belongs to the session's server.
    let pin = match trust::from_env()? {
        Some(pin) => Some(pin),
        None => session
            .as_ref()
            .filter(|s| s.server == base)
            .and_then(Session::pin),
    };
    let client = Client::new(trust::http(pin.as_ref())?, base.clone());
    if let Ok(token) = std::env::var("CANOPY_TOKEN") {
        return Ok(client.with_token(token));
    }
    let mut s =
        session.context("not logged in: run `canopy login --server URL --username NAME`")?;
    let authed = client.clone().with_token(s.access_token.clone());
    match authed.stats().await {
        Err(ClientError::Api { status: 401, .. }) => {
            let pair = client
                .refresh(&s.refresh_token)
                .await
                .context("session expired; run `canopy login` again")?;
            s.access_token = pair.access_token;
            s.refresh_token = pair.refresh_token;
            save(&s)?;
            Ok(client.with_token(s.access_token))
        }
        _ => Ok(authed),
    }
}
