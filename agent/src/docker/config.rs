//! The `[docker]` section of `agent.toml`: where the engine's socket is and how long a
//! moved container gets to prove itself healthy (docs/design.md §2.7).
//!
//! ```toml
//! [docker]
//! socket = "/var/run/docker.sock"   # default: $DOCKER_HOST (unix://…), else this
//! settle_secs = 10                  # without a healthcheck: running this long = healthy
//! health_timeout_secs = 120         # with one: `healthy` within this long, else rolled back
//! ```

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Where the engine listens when neither the config nor `$DOCKER_HOST` says.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// `[docker]` in `agent.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// The engine's unix socket. Unset: `$DOCKER_HOST` when it is a `unix://` address,
    /// else `/var/run/docker.sock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// A container without a healthcheck counts as healthy once it has kept running this long.
    #[serde(default = "default_settle")]
    pub settle_secs: u64,
    /// A container with a healthcheck must report `healthy` within this long (its first
    /// check runs one `--health-interval` after the start); otherwise it goes back.
    #[serde(default = "default_health_timeout")]
    pub health_timeout_secs: u64,
}

fn default_settle() -> u64 {
    10
}

fn default_health_timeout() -> u64 {
    120
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            socket: None,
            settle_secs: default_settle(),
            health_timeout_secs: default_health_timeout(),
        }
    }
}

impl DockerConfig {
    /// The socket configured here.
    pub fn with_socket(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: Some(socket.into()),
            ..Self::default()
        }
    }

    /// The socket to use: `socket`, else `$DOCKER_HOST` (`unix://PATH` only: the agent talks
    /// to the engine of its own host), else [`DEFAULT_SOCKET`].
    pub fn socket_path(&self) -> Result<PathBuf, String> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        socket_from_env(std::env::var("DOCKER_HOST").ok().as_deref())
    }

    /// Nothing set (the section is left out of a written config).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    pub fn settle(&self) -> Duration {
        Duration::from_secs(self.settle_secs)
    }

    pub fn health_timeout(&self) -> Duration {
        Duration::from_secs(self.health_timeout_secs.max(1))
    }
}

/// The socket named by a `DOCKER_HOST` value (`None`/empty = the default).
fn socket_from_env(docker_host: Option<&str>) -> Result<PathBuf, String> {
    match docker_host.map(str::trim).filter(|h| !h.is_empty()) {
        None => Ok(PathBuf::from(DEFAULT_SOCKET)),
        Some(h) => match h.strip_prefix("unix://") {
            Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
            _ => Err(format!(
                "DOCKER_HOST={h:?} is not a unix socket (unix:///path): the agent talks to its own host's engine only; set `socket` in the [docker] section"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_comes_from_the_config_then_docker_host_then_the_default() {
        assert_eq!(
            socket_from_env(None).expect("default"),
            PathBuf::from(DEFAULT_SOCKET)
        );
        assert_eq!(
            socket_from_env(Some("unix:///run/user/1000/docker.sock")).expect("unix"),
            PathBuf::from("/run/user/1000/docker.sock")
        );
        let e = socket_from_env(Some("tcp://10.0.0.1:2375")).unwrap_err();
        assert!(
            e.contains("not a unix socket") && e.contains("tcp://"),
            "{e}"
        );
        let c = DockerConfig::with_socket("/tmp/x.sock");
        assert_eq!(c.socket_path().expect("set"), PathBuf::from("/tmp/x.sock"));
    }

    #[test]
    fn the_section_has_defaults_and_refuses_unknown_keys() {
        let c: DockerConfig = toml::from_str("").expect("empty");
        assert_eq!(c, DockerConfig::default());
        assert_eq!(c.settle_secs, 10);
        let c: DockerConfig =
            toml::from_str("socket = \"/s\"\nsettle_secs = 3\nhealth_timeout_secs = 30\n")
                .expect("full");
        assert_eq!(c.health_timeout(), Duration::from_secs(30));
        assert!(toml::from_str::<DockerConfig>("sockt = \"/s\"").is_err());
    }
}
