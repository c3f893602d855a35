//! `canopy-agent register`: trade a single-use registration token for an agent
//! credential, then write the config and the credential (both 0600). Neither
//! secret is ever logged or printed.

use crate::config::{config_path, ensure_private_dir, write_private, AgentConfig, Secret};
use anyhow::Context;
use canopy_api_types::agent::RegisterRequest;
use canopy_api_types::client::Client;
use std::path::{Path, PathBuf};

/// What `register` needs.
#[derive(Debug, Clone)]
pub struct RegisterArgs {
    pub server: String,
    pub registration_token: Secret,
    pub config: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub read_only: bool,
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
}

/// The credential file sits next to the config: `agent.token`.
pub fn token_path_for(config: &Path) -> PathBuf {
    config
        .parent()
        .unwrap_or(Path::new("."))
        .join("agent.token")
}

pub async fn register(args: RegisterArgs) -> anyhow::Result<Registered> {
    let config_path = config_path(args.config.as_deref());
    let mut cfg = AgentConfig::new(args.server.clone());
    if let Some(d) = args.state_dir {
        cfg.state_dir = d;
    }
    cfg.read_only = args.read_only;
    cfg.ca_file = args.ca_file;
    cfg.package_managers = crate::config::effective_managers(&[], &args.package_managers)?;
    // Fail before talking to the server if we cannot write where we must.
    let config_dir = config_path.parent().unwrap_or(Path::new("."));
    ensure_private_dir(config_dir)?;

    let http = crate::run::http_client(&cfg)?;
    let client = Client::new(http, args.server.clone());
    let resp = client
        .register(&RegisterRequest {
            registration_token: args.registration_token.expose().to_string(),
            facts: crate::facts::gather(cfg.read_only),
        })
        .await
        .with_context(|| format!("registering with {}", args.server))?;

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
    })
}
