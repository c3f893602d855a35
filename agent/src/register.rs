//! `canopy-agent register`: trade a single-use registration token for an agent
//! credential, then write the config and the credential (both 0600). Neither
//! secret is ever logged or printed. Registering again overwrites both.
//!
//! The token comes from `--token` / `$CANOPY_REGISTRATION_TOKEN` or from `--token-file`
//! (how the server hands it over when it deploys the agent into a guest: no token on a
//! command line). That file is deleted once the registration succeeded; after a failure
//! it stays, so a retry works.
//!
//! Registering again with the same server sends the credential the agent already holds
//! (`RegisterRequest.current_token`): the server then re-enrols that host instead of creating
//! a new one (a machine-id is a fact, never proof of identity). A credential the server no
//! longer accepts (401/403) is dropped and the registration retried without it.

use crate::config::{config_path, ensure_private_dir, write_private, AgentConfig, Secret};
use anyhow::Context;
use canopy_api_types::agent::RegisterRequest;
use canopy_api_types::client::Client;
use std::path::{Path, PathBuf};

/// Where the single-use registration token comes from.
#[derive(Debug, Clone)]
pub enum RegistrationToken {
    /// `--token` or `$CANOPY_REGISTRATION_TOKEN`.
    Value(Secret),
    /// `--token-file`: read (trimmed), deleted after a successful registration.
    File(PathBuf),
}

impl RegistrationToken {
    /// The token itself. Errors name the file, never its contents.
    pub fn read(&self) -> anyhow::Result<Secret> {
        let token = match self {
            Self::Value(s) => s.expose().trim().to_string(),
            Self::File(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading registration token file {}", path.display()))?
                .trim()
                .to_string(),
        };
        if token.is_empty() {
            match self {
                Self::Value(_) => anyhow::bail!("the registration token is empty"),
                Self::File(path) => {
                    anyhow::bail!("registration token file {} is empty", path.display())
                }
            }
        }
        Ok(Secret::new(token))
    }

    /// After a successful registration: delete the token file (it is spent). A file that
    /// cannot be deleted is a warning, not a failed registration.
    fn consume(&self) -> Option<PathBuf> {
        let Self::File(path) = self else { return None };
        match std::fs::remove_file(path) {
            Ok(()) => Some(path.clone()),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "registration token file not deleted");
                None
            }
        }
    }
}

/// What `register` needs.
#[derive(Debug, Clone)]
pub struct RegisterArgs {
    pub server: String,
    pub registration_token: RegistrationToken,
    pub config: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub read_only: bool,
    /// Pin the server's certificate by fingerprint (`--fingerprint`) …
    pub fingerprint: Option<canopy_tls::Fingerprint>,
    /// … or by CA (`--ca-file`).
    pub ca_file: Option<PathBuf>,
    /// Written to the config as `package_managers` (after the environment override).
    pub package_managers: Vec<canopy_api_types::updates::PackageManager>,
}

/// Where things were written.
#[derive(Debug, Clone)]
pub struct Registered {
    pub host_id: String,
    pub config_path: PathBuf,
    pub token_path: PathBuf,
    /// The registration token file deleted after success (`--token-file`).
    pub token_file_removed: Option<PathBuf>,
}

/// The credential file sits next to the config: `agent.token`.
pub fn token_path_for(config: &Path) -> PathBuf {
    config
        .parent()
        .unwrap_or(Path::new("."))
        .join("agent.token")
}

/// The credential of an earlier registration with `server` (same URL, trailing `/` aside),
/// read from the config at `config_path`; `None` when there is none or it is unreadable.
pub fn current_credential(config_path: &Path, server: &str) -> Option<Secret> {
    if !config_path.exists() {
        return None;
    }
    let old = AgentConfig::load(config_path).ok()?;
    let same = old.server_url.trim_end_matches('/') == server.trim_end_matches('/');
    if !same {
        return None;
    }
    old.token().ok()
}

pub async fn register(args: RegisterArgs) -> anyhow::Result<Registered> {
    let registration_token = args.registration_token.read()?;
    let config_path = config_path(args.config.as_deref());
    let mut cfg = AgentConfig::new(args.server.clone());
    if let Some(d) = args.state_dir {
        cfg.state_dir = d;
    }
    cfg.read_only = args.read_only;
    cfg.server_fingerprint = args.fingerprint;
    cfg.ca_file = args.ca_file;
    cfg.package_managers = crate::config::effective_managers(&[], &args.package_managers)?;
    // Fail before talking to the server if we cannot write where we must.
    let config_dir = config_path.parent().unwrap_or(Path::new("."));
    ensure_private_dir(config_dir)?;

    let http = crate::http::http_client(&cfg)?;
    let client = Client::new(http, args.server.clone());
    let mut req = RegisterRequest {
        registration_token: registration_token.expose().to_string(),
        facts: crate::facts::gather(cfg.read_only),
        current_token: current_credential(&config_path, &args.server)
            .map(|t| t.expose().to_string()),
    };
    if req.current_token.is_some() {
        tracing::info!("already registered with this server: asking to re-enrol the same host");
    }
    let resp = match client.register(&req).await {
        Err(e) if req.current_token.is_some() && matches!(e.status(), Some(401 | 403)) => {
            tracing::warn!(error = %e, "the server did not accept the current credential; registering as a new host");
            req.current_token = None;
            client.register(&req).await
        }
        other => other,
    }
    .map_err(|e| {
        let unpinned = cfg.server_fingerprint.is_none() && cfg.ca_file.is_none();
        let chain = crate::http::explain_transport(&e);
        let hint = if unpinned && chain.contains("certificate") {
            "; pin the server with --fingerprint AA:BB:… (printed by `canopy serve`) or --ca-file PATH"
        } else {
            ""
        };
        anyhow::anyhow!("registering with {} failed: {chain}{hint}", args.server)
    })?;

    let token_path = token_path_for(&config_path);
    write_private(&token_path, format!("{}\n", resp.agent_token).as_bytes())?;
    cfg.host_id = Some(resp.host_id.to_string());
    cfg.token_file = Some(token_path.clone());
    cfg.save(&config_path)?;
    if let Err(e) = ensure_private_dir(&cfg.state_dir) {
        tracing::warn!(error = %format!("{e:#}"), "state directory not created yet");
    }
    tracing::info!(host_id = %resp.host_id, config = %config_path.display(), "registered");
    Ok(Registered {
        host_id: resp.host_id.to_string(),
        config_path,
        token_path,
        token_file_removed: args.registration_token.consume(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_credential_is_sent_only_to_the_same_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("agent.toml");
        assert!(current_credential(&config, "https://canopy.lan:8080").is_none());
        let mut cfg = AgentConfig::new("https://canopy.lan:8080/");
        cfg.token_file = Some(dir.path().join("agent.token"));
        cfg.save(&config).expect("save");
        assert!(
            current_credential(&config, "https://canopy.lan:8080").is_none(),
            "no token yet"
        );
        std::fs::write(dir.path().join("agent.token"), "HOST.s3cr3t\n").expect("write");
        assert_eq!(
            current_credential(&config, "https://canopy.lan:8080")
                .expect("same server")
                .expose(),
            "HOST.s3cr3t"
        );
        assert!(current_credential(&config, "https://other.lan:8080").is_none());
    }

    #[test]
    fn token_file_is_trimmed_and_errors_do_not_show_the_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("reg.token");
        let source = RegistrationToken::File(path.clone());
        let e = format!("{:#}", source.read().unwrap_err());
        assert!(e.contains("reg.token"), "{e}");
        std::fs::write(&path, "  \n").expect("write");
        let e = format!("{:#}", source.read().unwrap_err());
        assert!(e.contains("is empty"), "{e}");
        std::fs::write(&path, "canopy-reg-s3cr3t\n").expect("write");
        assert_eq!(source.read().expect("read").expose(), "canopy-reg-s3cr3t");
        assert!(!format!("{source:?}").contains("s3cr3t"));
        assert_eq!(source.consume(), Some(path.clone()));
        assert!(!path.exists());
        assert!(RegistrationToken::Value(Secret::new(" ")).read().is_err());
        assert_eq!(RegistrationToken::Value(Secret::new("t")).consume(), None);
    }
}
