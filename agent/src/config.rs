//! The agent's configuration file (TOML) and its credential file, both written 0600.
//!
//! Lookup: `--config PATH`, else `$CANOPY_AGENT_CONFIG`, else
//! `/etc/canopy-agent/agent.toml`. The agent token lives in `token_file` (default
//! `agent.token` next to the config) or inline as `token`; it is never logged.
//!
//! How the agent trusts the server's certificate: `server_fingerprint` (a pinned SHA-256,
//! `AA:BB:…`, as `canopy serve` prints it) or `ca_file` (certificates chaining to that CA
//! only), never both; with neither, an `https://` server needs a certificate the public web
//! roots vouch for (e.g. a reverse proxy's). Never "accept invalid certificates".
//!
//! Which package managers the agent uses: `package_managers` in the file, replaced by
//! `$CANOPY_AGENT_PACKAGE_MANAGERS` (`dnf`, `apt,dnf` or `auto`), replaced by `--package-manager`
//! flags; none set = every one found on PATH.

use anyhow::Context;
use canopy_api_types::updates::PackageManager;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "/etc/canopy-agent/agent.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/canopy-agent";
pub const CONFIG_ENV: &str = "CANOPY_AGENT_CONFIG";
pub const STATE_DIR_ENV: &str = "CANOPY_AGENT_STATE_DIR";
pub const PACKAGE_MANAGERS_ENV: &str = "CANOPY_AGENT_PACKAGE_MANAGERS";
pub const HANG_TIMEOUT_ENV: &str = "CANOPY_AGENT_HANG_TIMEOUT_SECS";

/// A secret string whose `Debug`/`Display` never show the value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `agent.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Server root, e.g. `https://canopy.lan:8080`.
    pub server_url: String,
    /// The host id the server assigned at registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// File holding the agent token (`HOST_ID.SECRET`), mode 0600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The agent token inline (prefer `token_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Cache and state directory.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Scan and dry-run only; installs are refused.
    #[serde(default)]
    pub read_only: bool,
    /// Periodic re-scan interval.
    #[serde(default = "default_scan_interval")]
    pub scan_interval_secs: u64,
    /// Run `apt-get update` / `dnf makecache` / `apk update` before periodic scans.
    #[serde(default = "yes")]
    pub refresh_before_scan: bool,
    /// Timeout of each scanner command.
    #[serde(default = "default_scan_timeout")]
    pub scan_timeout_secs: u64,
    /// How long the server may hold a check-in (long poll; the server caps it at 30).
    #[serde(default = "default_wait")]
    pub wait_secs: u32,
    /// TCP/TLS connect timeout to the server.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// The server's certificate, pinned by its SHA-256 fingerprint (`AA:BB:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_fingerprint: Option<canopy_tls::Fingerprint>,
    /// PEM CA certificate the server's certificate must chain to (a homelab CA); the only
    /// CA trusted then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The package managers this agent scans and installs with, e.g. `["dnf"]` on a host that
    /// has apt as well. Empty (the default) = every one found on PATH (apt, dnf, apk).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub package_managers: Vec<PackageManager>,
    /// An install or repair is never stopped for taking long, only when its package manager
    /// printed nothing at all for this long (then SIGTERM to its process group). Overridden
    /// by `$CANOPY_AGENT_HANG_TIMEOUT_SECS`.
    #[serde(default = "default_hang_timeout")]
    pub hang_timeout_secs: u64,
    /// Docker inside the host (`[docker]`): the engine's socket, and how long a container
    /// moved to a new image gets to be healthy ([`crate::docker::DockerConfig`]).
    #[serde(
        default,
        skip_serializing_if = "crate::docker::DockerConfig::is_default"
    )]
    pub docker: crate::docker::DockerConfig,
}

fn default_state_dir() -> PathBuf {
    std::env::var_os(STATE_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}
fn default_scan_interval() -> u64 {
    1800
}
fn default_scan_timeout() -> u64 {
    600
}
fn default_wait() -> u32 {
    25
}
fn default_connect_timeout() -> u64 {
    10
}
fn yes() -> bool {
    true
}
fn default_hang_timeout() -> u64 {
    3600
}

impl AgentConfig {
    pub fn new(server_url: impl Into<String>) -> Self {
        Self {
            server_url: server_url.into(),
            host_id: None,
            token_file: None,
            token: None,
            state_dir: default_state_dir(),
            read_only: false,
            scan_interval_secs: default_scan_interval(),
            refresh_before_scan: true,
            scan_timeout_secs: default_scan_timeout(),
            wait_secs: default_wait(),
            connect_timeout_secs: default_connect_timeout(),
            server_fingerprint: None,
            ca_file: None,
            package_managers: Vec::new(),
            hang_timeout_secs: default_hang_timeout(),
            docker: crate::docker::DockerConfig::default(),
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading agent config {}", path.display()))?;
        let cfg: Self = toml::from_str(&text)
            .with_context(|| format!("parsing agent config {}", path.display()))?;
        check_managers(&cfg.package_managers)
            .with_context(|| format!("agent config {}: package_managers", path.display()))?;
        cfg.check_pin()
            .with_context(|| format!("agent config {}", path.display()))?;
        Ok(cfg)
    }

    fn check_pin(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.server_fingerprint.is_none() || self.ca_file.is_none(),
            "server_fingerprint and ca_file are both set: pin the server one way (keep one)"
        );
        Ok(())
    }

    /// How the server's certificate is trusted: the pinned fingerprint, the CA file, or
    /// `None` for the public web roots.
    pub fn server_trust(&self) -> anyhow::Result<Option<canopy_tls::Trust>> {
        self.check_pin()?;
        if let Some(fp) = self.server_fingerprint {
            return Ok(Some(canopy_tls::Trust::Fingerprints(vec![fp])));
        }
        match &self.ca_file {
            Some(ca) => {
                let pem = std::fs::read_to_string(ca)
                    .with_context(|| format!("reading CA file {}", ca.display()))?;
                Ok(Some(canopy_tls::Trust::CaPem(pem)))
            }
            None => Ok(None),
        }
    }

    /// The config `run` needs: present and registered (a readable agent token), else an
    /// error that says to register first.
    pub fn load_registered(path: &Path) -> anyhow::Result<Self> {
        if !path.exists() {
            anyhow::bail!(
                "no agent config at {}: register first (`canopy-agent register --server URL --token-file PATH`) or pass --config",
                path.display()
            );
        }
        let cfg = Self::load(path)?;
        cfg.token().with_context(|| {
            format!(
                "agent config {} is not registered: run `canopy-agent register` first",
                path.display()
            )
        })?;
        Ok(cfg)
    }

    /// Write the config (0600, parent directory 0700 when created).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = toml::to_string_pretty(self).context("serialising agent config")?;
        write_private(path, text.as_bytes())
    }

    /// The agent token: inline `token`, else the contents of `token_file`.
    pub fn token(&self) -> anyhow::Result<Secret> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        let path = self.token_file.as_ref().context(
            "the config has neither `token` nor `token_file`: run `canopy-agent register` first",
        )?;
        let t = std::fs::read_to_string(path)
            .with_context(|| format!("reading agent token file {}", path.display()))?;
        let t = t.trim();
        anyhow::ensure!(
            !t.is_empty(),
            "agent token file {} is empty",
            path.display()
        );
        Ok(Secret::new(t))
    }

    pub fn cache_path(&self) -> PathBuf {
        self.state_dir.join("cache.json")
    }

    /// `hang_timeout_secs`, or `$CANOPY_AGENT_HANG_TIMEOUT_SECS` when set (at least 1 s).
    pub fn hang_timeout(&self) -> anyhow::Result<std::time::Duration> {
        let secs = match std::env::var(HANG_TIMEOUT_ENV) {
            Ok(v) => v
                .trim()
                .parse::<u64>()
                .with_context(|| format!("${HANG_TIMEOUT_ENV}={v:?} is not a number of seconds"))?,
            Err(_) => self.hang_timeout_secs,
        };
        anyhow::ensure!(secs > 0, "hang_timeout_secs must be at least 1");
        Ok(std::time::Duration::from_secs(secs))
    }
}

/// Only managers the agent can scan and install with (not `docker`).
fn check_managers(list: &[PackageManager]) -> anyhow::Result<()> {
    match list.iter().find(|m| **m == PackageManager::Docker) {
        Some(_) => {
            anyhow::bail!("docker is not a package manager the agent scans; use apt, dnf or apk")
        }
        None => Ok(()),
    }
}

/// One `--package-manager` value: `apt`, `dnf` or `apk`.
pub fn parse_manager(s: &str) -> Result<PackageManager, String> {
    match PackageManager::parse(s.trim()) {
        Some(PackageManager::Docker) | None => Err(format!(
            "unknown package manager {s:?}: use apt, dnf or apk"
        )),
        Some(m) => Ok(m),
    }
}

/// A list such as `dnf`, `apt,dnf` or `apt dnf`; `auto` or an empty string = auto-detect
/// (an empty list).
pub fn parse_managers(s: &str) -> anyhow::Result<Vec<PackageManager>> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("auto") {
        return Ok(Vec::new());
    }
    s.split([',', ' '])
        .filter(|w| !w.is_empty())
        .map(|w| parse_manager(w).map_err(anyhow::Error::msg))
        .collect()
}

/// The package managers to use: the `--package-manager` flags if any, else
/// `$CANOPY_AGENT_PACKAGE_MANAGERS` if set, else the config file's list. Duplicates dropped,
/// order kept; empty = auto-detect.
pub fn effective_managers(
    file: &[PackageManager],
    flags: &[PackageManager],
) -> anyhow::Result<Vec<PackageManager>> {
    let env = std::env::var(PACKAGE_MANAGERS_ENV).ok();
    let chosen = if !flags.is_empty() {
        flags.to_vec()
    } else if let Some(v) = env {
        parse_managers(&v).with_context(|| format!("${PACKAGE_MANAGERS_ENV}={v:?}"))?
    } else {
        file.to_vec()
    };
    check_managers(&chosen)?;
    let mut out: Vec<PackageManager> = Vec::new();
    for m in chosen {
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

/// The config path from the flag, the environment or the default.
pub fn config_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

/// Create `dir` (and parents) with mode 0700 if missing.
pub fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating directory {}", dir.display()))
}

/// Write `bytes` to `path` atomically (temp file + rename) with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_private_dir(dir)?;
    let file_name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        // The mode only applies on creation: force it for a leftover temp file.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting mode 0600 on {}", tmp.display()))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_0600_and_hides_the_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/agent.toml");
        let mut c = AgentConfig::new("http://127.0.0.1:8080");
        c.token = Some(Secret::new("hid.s3cr3t"));
        c.state_dir = dir.path().join("state");
        c.save(&path).expect("save");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(path.parent().expect("parent"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        let back = AgentConfig::load(&path).expect("load");
        assert_eq!(back, c);
        assert_eq!(back.token().expect("token").expose(), "hid.s3cr3t");
        assert!(!format!("{back:?}").contains("s3cr3t"));
        assert_eq!(back.wait_secs, 25);
    }

    #[test]
    fn minimal_file_gets_defaults_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "server_url = \"http://x\"\n").expect("write");
        let c = AgentConfig::load(&p).expect("load");
        assert_eq!(c.scan_interval_secs, 1800);
        assert!(c.token().is_err());
        std::fs::write(&p, "server_url = \"http://x\"\nbogus = 1\n").expect("write");
        let e = AgentConfig::load(&p).unwrap_err();
        assert!(format!("{e:#}").contains("bogus"), "{e:#}");
    }

    #[test]
    fn run_needs_a_registered_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        let e = format!("{:#}", AgentConfig::load_registered(&path).unwrap_err());
        assert!(
            e.contains("no agent config") && e.contains("register"),
            "{e}"
        );
        std::fs::write(&path, "server_url = \"http://x\"\n").expect("write");
        let e = format!("{:#}", AgentConfig::load_registered(&path).unwrap_err());
        assert!(e.contains("not registered"), "{e}");
        let token = dir.path().join("agent.token");
        let text = format!("server_url = \"http://x\"\ntoken_file = {:?}\n", token);
        std::fs::write(&path, text).expect("write");
        let e = format!("{:#}", AgentConfig::load_registered(&path).unwrap_err());
        assert!(
            e.contains("not registered") && e.contains("agent.token"),
            "{e}"
        );
        std::fs::write(&token, "h.s\n").expect("write");
        assert!(AgentConfig::load_registered(&path).is_ok());
    }

    #[test]
    fn package_managers_from_file_and_strings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.toml");
        std::fs::write(
            &p,
            "server_url = \"http://x\"\npackage_managers = [\"dnf\"]\n",
        )
        .expect("write");
        let c = AgentConfig::load(&p).expect("load");
        assert_eq!(c.package_managers, [PackageManager::Dnf]);
        c.save(&p).expect("save");
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(text.contains("package_managers = [\"dnf\"]"), "{text}");
        std::fs::write(
            &p,
            "server_url = \"http://x\"\npackage_managers = [\"docker\"]\n",
        )
        .expect("write");
        let e = AgentConfig::load(&p).unwrap_err();
        assert!(format!("{e:#}").contains("docker is not"), "{e:#}");
        std::fs::write(
            &p,
            "server_url = \"http://x\"\npackage_managers = [\"yum\"]\n",
        )
        .expect("write");
        assert!(AgentConfig::load(&p).is_err());

        assert_eq!(
            parse_managers("apt, dnf").expect("parse"),
            [PackageManager::Apt, PackageManager::Dnf]
        );
        assert!(parse_managers("auto").expect("auto").is_empty());
        assert!(parse_managers("").expect("empty").is_empty());
        assert!(parse_managers("dnf,docker").is_err());
        assert!(parse_manager("yum").is_err());
    }

    #[test]
    fn flags_replace_the_file_list_and_duplicates_go() {
        // (The environment variable is exercised by the lab test, in a process of its own.)
        if std::env::var_os(PACKAGE_MANAGERS_ENV).is_some() {
            return;
        }
        let file = [PackageManager::Apt];
        assert_eq!(effective_managers(&file, &[]).expect("file"), file);
        assert_eq!(
            effective_managers(&file, &[PackageManager::Dnf, PackageManager::Dnf]).expect("flags"),
            [PackageManager::Dnf]
        );
        assert!(effective_managers(&[], &[PackageManager::Docker]).is_err());
    }

    #[test]
    fn the_pin_round_trips_and_one_way_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.toml");
        let fp = canopy_tls::Fingerprint::of_der(b"server certificate");
        let mut c = AgentConfig::new("https://canopy.lan:8443");
        c.server_fingerprint = Some(fp);
        c.save(&p).expect("save");
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(
            text.contains(&format!("server_fingerprint = \"{fp}\"")),
            "{text}"
        );
        let back = AgentConfig::load(&p).expect("load");
        assert_eq!(back.server_fingerprint, Some(fp));
        assert!(matches!(
            back.server_trust().expect("trust"),
            Some(canopy_tls::Trust::Fingerprints(pins)) if pins == [fp]
        ));
        std::fs::write(&p, format!("{text}ca_file = \"/etc/ca.pem\"\n")).expect("write");
        let e = format!("{:#}", AgentConfig::load(&p).unwrap_err());
        assert!(e.contains("server_fingerprint and ca_file"), "{e}");
        std::fs::write(
            &p,
            "server_url = \"https://x\"\nserver_fingerprint = \"AB:CD\"\n",
        )
        .expect("write");
        let e = format!("{:#}", AgentConfig::load(&p).unwrap_err());
        assert!(e.contains("has 2 bytes"), "{e}");
        let c = AgentConfig::new("https://x");
        assert!(c.server_trust().expect("none").is_none());
    }

    #[test]
    fn the_docker_section_round_trips_and_is_left_out_when_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.toml");
        let mut c = AgentConfig::new("http://x");
        c.save(&p).expect("save");
        assert!(!std::fs::read_to_string(&p)
            .expect("read")
            .contains("[docker]"));
        c.docker = crate::docker::DockerConfig::with_socket("/run/docker.sock");
        c.docker.settle_secs = 3;
        c.save(&p).expect("save");
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(
            text.contains("[docker]") && text.contains("settle_secs = 3"),
            "{text}"
        );
        assert_eq!(AgentConfig::load(&p).expect("load"), c);
    }

    #[test]
    fn the_example_config_parses() {
        let example = format!(
            "{}/../examples/agent.toml",
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")
        );
        let c = AgentConfig::load(Path::new(&example)).expect("examples/agent.toml loads");
        assert!(c.package_managers.is_empty(), "the example auto-detects");
    }
}
