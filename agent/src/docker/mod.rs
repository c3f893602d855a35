//! Docker inside the host: the engine's containers in every scan report ([`inventory`]),
//! what an image update would move ([`plan`], the dry-run) and the update itself with its
//! rollback ([`apply`]) — all through the engine's API (bollard, on the local unix socket),
//! except compose projects, which compose itself recreates ([`compose`], through the
//! agent's one process runner).
//!
//! The agent talks to the engine of its own host only: the socket of the `[docker]` section
//! ([`DockerConfig`]), else `$DOCKER_HOST` (a `unix://` one), else `/var/run/docker.sock`.
//! A host without that socket has no Docker (`containers: None`, no error); a socket that
//! is there but cannot be used (permission denied, not an engine) is a scanner error
//! naming the socket and the cause.

pub mod apply;
pub mod compose;
pub mod config;
pub mod health;
pub mod image;
pub mod inventory;
pub mod local;
pub mod plan;
pub mod recreate;
pub mod reference;

pub use config::DockerConfig;

use bollard::Docker;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A connection to the local engine (its API version negotiated).
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) api: Docker,
    socket: PathBuf,
}

impl Engine {
    /// Connects to the configured socket. `Ok(None)`: there is no socket (no Docker on this
    /// host). `Err`: the socket is there but the engine cannot be used — the message names
    /// the socket and the cause. `timeout` bounds every request.
    pub async fn connect(cfg: &DockerConfig, timeout: Duration) -> Result<Option<Engine>, String> {
        let socket = cfg.socket_path()?;
        let failed = |cause: String| {
            format!(
                "cannot use the Docker engine at {}: {cause}",
                socket.display()
            )
        };
        match std::fs::symlink_metadata(&socket) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(failed(e.to_string())),
        }
        let path = socket
            .to_str()
            .ok_or_else(|| failed("the path is not UTF-8".into()))?;
        let secs = timeout.as_secs().max(1);
        let api = Docker::connect_with_unix(path, secs, bollard::API_DEFAULT_VERSION)
            .map_err(|e| failed(describe(&e)))?;
        // The engine may be older than the client (20.10 speaks API 1.41): ask it first.
        let api =
            match tokio::time::timeout(Duration::from_secs(secs), api.negotiate_version()).await {
                Ok(Ok(api)) => api,
                Ok(Err(e)) => return Err(failed(describe(&e))),
                Err(_) => return Err(failed(format!("no answer within {secs} s"))),
            };
        Ok(Some(Engine { api, socket }))
    }

    /// The socket this engine answers on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The same engine with another request timeout (pulls take longer than inspections).
    pub(crate) fn with_timeout(&self, timeout: Duration) -> Docker {
        self.api.clone().with_timeout(timeout)
    }
}

/// An engine error with its causes (`client error (Connect): Permission denied (os error 13)`),
/// each cause once.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let top = e.to_string();
    let mut out = top
        .strip_prefix("Error in the hyper legacy client: ")
        .unwrap_or(&top)
        .to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Is `e` the engine's "no such …" (404)?
pub(crate) fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// `sha256:0123456789ab` — an image id short enough for a step line.
pub fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    format!("sha256:{}", &hex[..hex.len().min(12)])
}
