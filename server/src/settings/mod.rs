//! Server settings: defaults → TOML file (`--config`) → `CANOPY_*` environment →
//! command-line flags. Defaults live in this module and only here (`operations.rs` holds the
//! `[deploy]` and `[update]` sections).

mod operations;

pub use operations::{DeploySettings, DirectSsh, UpdateSettings};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
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

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on. Keep it on loopback behind a reverse proxy.
    pub listen: SocketAddr,
    /// HTTPS or plain HTTP: `auto` (HTTPS unless `listen` is a loopback address and no
    /// certificate is given), `on` (always HTTPS) or `off` (plain HTTP, which a non-loopback
    /// `listen` also needs `allow_plain_http` for).
    pub tls: TlsMode,
    /// PEM certificate (leaf first, then intermediates) to serve; with `tls_key_file`.
    /// Without them a self-signed certificate is generated in `data_dir` on first start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback `listen` (passwords and agent tokens cross the
    /// network unencrypted). Off: such a server refuses to start.
    pub allow_plain_http: bool,
    /// `sqlite://PATH` (default) or `postgres://USER@HOST/DB`.
    pub database_url: String,
    /// Where the server keeps its own files (the JWT signing key, the self-signed certificate).
    pub data_dir: PathBuf,
    /// Username of the first admin created from `CANOPY_ADMIN_PASSWORD(_FILE)`.
    pub admin_username: String,
    /// Lifetime of an access JWT, seconds.
    pub access_token_ttl_secs: u64,
    /// Sliding lifetime of a refresh token, seconds.
    pub refresh_token_ttl_secs: u64,
    /// Longest a check-in is held open, seconds.
    pub checkin_max_wait_secs: u32,
    /// An agent that has not checked in for this many seconds shows as offline in the tree
    /// (and a bulk update skips its guest).
    pub agent_offline_after_secs: u64,
    pub dry_run_timeout_secs: u32,
    pub install_timeout_secs: u32,
    pub scan_timeout_secs: u32,
    /// How often the command-timeout sweep runs, seconds.
    pub sweep_interval_secs: u64,
    /// A running command past its deadline is marked overdue and left to finish (a package
    /// manager is never stopped halfway); it times out only when its agent has sent no
    /// heartbeat for this many seconds (the agent beats every 15 s while it works).
    pub command_vanished_secs: u64,
    /// A command waiting this many seconds for a host that has not checked in for as long
    /// expires ("host offline since …"): nothing stays pending forever.
    pub command_offline_expiry_secs: u64,
    /// Events older than this many days are deleted by the retention job.
    pub event_retention_days: u32,
    /// Login attempts allowed per minute per client address and, separately, per user
    /// name; failed agent registrations allowed per client address per minute.
    pub auth_attempts_per_minute: u32,
    /// Reverse proxies whose `X-Forwarded-For` is believed (addresses or CIDR networks,
    /// e.g. `["127.0.0.1", "10.0.0.0/8"]`). Empty: the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    /// Default seconds between discovery passes of a cluster (each cluster may override).
    pub discovery_interval_secs: u32,
    /// Seconds a PVE request may take before its node counts as not answering.
    pub pve_timeout_secs: u64,
    /// Seconds between refreshes of each PVE node's own apt update list.
    pub node_updates_interval_secs: u64,
    /// Seconds between registry check cycles of every container's image (a `HEAD` per
    /// registry, repository and tag; 0: only on demand, `POST /images/check`).
    pub image_check_interval_secs: u64,
    /// Agent delivery over SSH (`canopy agent deploy`).
    pub deploy: DeploySettings,
    /// Bulk update operations (`canopy update SELECTOR`).
    pub update: UpdateSettings,
    /// Serve the web dashboard from this directory (what `cargo xtask ui` writes,
    /// `frontend/dist`) instead of the copy built into the binary: for work on the
    /// dashboard with `cargo xtask ui --watch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ui_dir: Option<PathBuf>,
    #[serde(skip_serializing)]
    pub admin_password: Option<Secret>,
}

/// `tls`: whether `canopy serve` speaks HTTPS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// HTTPS, except on a loopback `listen` without a configured certificate (a reverse proxy
    /// or a browser on the same machine).
    #[default]
    Auto,
    On,
    Off,
}

impl std::str::FromStr for TlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "on" | "true" | "https" => Ok(Self::On),
            "off" | "false" | "http" => Ok(Self::Off),
            other => Err(format!("{other:?} is not a TLS mode: use auto, on or off")),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            tls: TlsMode::Auto,
            tls_cert_file: None,
            tls_key_file: None,
            allow_plain_http: false,
            database_url: "sqlite://canopy.db".into(),
            data_dir: PathBuf::from("canopy-data"),
            admin_username: "admin".into(),
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            checkin_max_wait_secs: 30,
            agent_offline_after_secs: 300,
            dry_run_timeout_secs: 300,
            install_timeout_secs: 1800,
            scan_timeout_secs: 600,
            sweep_interval_secs: 5,
            command_vanished_secs: 120,
            command_offline_expiry_secs: 24 * 3600,
            event_retention_days: 180,
            auth_attempts_per_minute: 10,
            trusted_proxies: Vec::new(),
            discovery_interval_secs: 60,
            pve_timeout_secs: 15,
            node_updates_interval_secs: 3600,
            image_check_interval_secs: 6 * 3600,
            deploy: DeploySettings::default(),
            update: UpdateSettings::default(),
            ui_dir: None,
            admin_password: None,
        }
    }
}

/// The example configuration printed by `canopy default-config`.
pub fn example_toml() -> String {
    let body = toml::to_string_pretty(&Settings::default()).expect("settings serialise");
    format!(
        "# Canopy server configuration. Every key may also be set as CANOPY_<KEY> in the\n\
         # environment (e.g. CANOPY_DATABASE_URL), which wins over this file.\n\
         # The first admin's password comes from CANOPY_ADMIN_PASSWORD or\n\
         # CANOPY_ADMIN_PASSWORD_FILE, never from this file.\n\
         # HTTPS: with tls = \"auto\" a server that listens beyond loopback serves a\n\
         # self-signed certificate generated in data_dir (tls-cert.pem, tls-key.pem); give\n\
         # your own with tls_cert_file = \"/etc/canopy/cert.pem\" and tls_key_file = \"...\".\n{body}"
    )
}

/// How `canopy serve` talks, decided from `tls`, the certificate files and `listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Plain HTTP (loopback, or `allow_plain_http`).
    Plain,
    /// HTTPS with the owner's certificate and key.
    Given { cert: PathBuf, key: PathBuf },
    /// HTTPS with the self-signed certificate kept in `data_dir` (generated on first start).
    SelfSigned,
}

/// 127.0.0.0/8 and ::1 (also as ::ffff:127.x): only this machine can connect.
pub fn is_loopback(addr: SocketAddr) -> bool {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback(),
        std::net::IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("environment variable {name} is invalid: {reason}")]
    Env { name: String, reason: String },
    #[error(
        "config file {path} sets admin_password: the first admin's password never goes in the \
         config file; set CANOPY_ADMIN_PASSWORD or CANOPY_ADMIN_PASSWORD_FILE instead"
    )]
    AdminPasswordInFile { path: PathBuf },
    #[error("setting {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl Settings {
    /// When the command sweep ends commands nobody can finish.
    pub fn expiry_policy(&self) -> canopy_store::ExpiryPolicy {
        let secs = |s: u64| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000));
        canopy_store::ExpiryPolicy {
            vanished_after: secs(self.command_vanished_secs),
            offline_after: secs(self.command_offline_expiry_secs),
        }
    }

    /// HTTPS or plain HTTP, or why these settings must not start a server. Checked before
    /// anything is opened or bound.
    pub fn transport(&self) -> Result<Transport, String> {
        let given = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(Transport::Given {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            (Some(_), None) => return Err("tls_cert_file is set but tls_key_file is not: give the certificate and its key (CANOPY_TLS_CERT_FILE, CANOPY_TLS_KEY_FILE)".into()),
            (None, Some(_)) => return Err("tls_key_file is set but tls_cert_file is not: give the certificate and its key (CANOPY_TLS_CERT_FILE, CANOPY_TLS_KEY_FILE)".into()),
        };
        let loopback = is_loopback(self.listen);
        match self.tls {
            TlsMode::Off if given.is_some() => Err(
                "tls = \"off\" but tls_cert_file and tls_key_file are set: remove them, or use tls = \"auto\" to serve them".into(),
            ),
            TlsMode::Off if !loopback && !self.allow_plain_http => Err(format!(
                "refusing plain HTTP on {}: it is not a loopback address, so passwords and agent \
                 tokens would cross the network unencrypted. Use tls = \"auto\" (CANOPY_TLS; a \
                 self-signed certificate is generated when you give none), or listen on \
                 127.0.0.1 behind a reverse proxy that terminates TLS; set allow_plain_http = \
                 true (CANOPY_ALLOW_PLAIN_HTTP) only if you accept plain HTTP on the network",
                self.listen
            )),
            TlsMode::Off => Ok(Transport::Plain),
            TlsMode::Auto if loopback && given.is_none() => Ok(Transport::Plain),
            TlsMode::Auto | TlsMode::On => Ok(given.unwrap_or(Transport::SelfSigned)),
        }
    }

    /// Defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let mut s = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
                    path: path.into(),
                    source,
                })?;
                let s: Settings = toml::from_str(&text).map_err(|source| SettingsError::Parse {
                    path: path.into(),
                    source,
                })?;
                if s.admin_password.is_some() {
                    return Err(SettingsError::AdminPasswordInFile { path: path.into() });
                }
                s
            }
            None => Settings::default(),
        };
        s.apply_env(|k| std::env::var(k).ok())?;
        s.trusted_proxies()?;
        Ok(s)
    }

    /// The parsed `trusted_proxies`; the error names the bad entry.
    pub fn trusted_proxies(&self) -> Result<crate::http::client_ip::TrustedProxies, SettingsError> {
        crate::http::client_ip::TrustedProxies::parse(&self.trusted_proxies).map_err(|reason| {
            SettingsError::Invalid {
                name: "trusted_proxies",
                reason,
            }
        })
    }

    /// Apply `CANOPY_*` variables read through `get` (injectable for tests).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), SettingsError> {
        fn parse<T: std::str::FromStr>(name: &str, v: String) -> Result<T, SettingsError>
        where
            T::Err: fmt::Display,
        {
            v.trim().parse().map_err(|e: T::Err| SettingsError::Env {
                name: name.into(),
                reason: e.to_string(),
            })
        }
        macro_rules! env {
            ($field:ident, $name:literal) => {
                if let Some(v) = get($name) {
                    self.$field = parse($name, v)?;
                }
            };
        }
        env!(listen, "CANOPY_LISTEN");
        env!(tls, "CANOPY_TLS");
        env!(allow_plain_http, "CANOPY_ALLOW_PLAIN_HTTP");
        if let Some(v) = get("CANOPY_TLS_CERT_FILE") {
            self.tls_cert_file = Some(v.into());
        }
        if let Some(v) = get("CANOPY_TLS_KEY_FILE") {
            self.tls_key_file = Some(v.into());
        }
        env!(database_url, "CANOPY_DATABASE_URL");
        env!(data_dir, "CANOPY_DATA_DIR");
        env!(admin_username, "CANOPY_ADMIN_USERNAME");
        env!(access_token_ttl_secs, "CANOPY_ACCESS_TOKEN_TTL_SECS");
        env!(refresh_token_ttl_secs, "CANOPY_REFRESH_TOKEN_TTL_SECS");
        env!(checkin_max_wait_secs, "CANOPY_CHECKIN_MAX_WAIT_SECS");
        env!(agent_offline_after_secs, "CANOPY_AGENT_OFFLINE_AFTER_SECS");
        env!(dry_run_timeout_secs, "CANOPY_DRY_RUN_TIMEOUT_SECS");
        env!(install_timeout_secs, "CANOPY_INSTALL_TIMEOUT_SECS");
        env!(scan_timeout_secs, "CANOPY_SCAN_TIMEOUT_SECS");
        env!(sweep_interval_secs, "CANOPY_SWEEP_INTERVAL_SECS");
        env!(command_vanished_secs, "CANOPY_COMMAND_VANISHED_SECS");
        env!(
            command_offline_expiry_secs,
            "CANOPY_COMMAND_OFFLINE_EXPIRY_SECS"
        );
        env!(event_retention_days, "CANOPY_EVENT_RETENTION_DAYS");
        env!(auth_attempts_per_minute, "CANOPY_AUTH_ATTEMPTS_PER_MINUTE");
        env!(discovery_interval_secs, "CANOPY_DISCOVERY_INTERVAL_SECS");
        env!(pve_timeout_secs, "CANOPY_PVE_TIMEOUT_SECS");
        env!(
            node_updates_interval_secs,
            "CANOPY_NODE_UPDATES_INTERVAL_SECS"
        );
        env!(
            image_check_interval_secs,
            "CANOPY_IMAGE_CHECK_INTERVAL_SECS"
        );
        if let Some(v) = get("CANOPY_TRUSTED_PROXIES") {
            self.trusted_proxies = v
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = get("CANOPY_UI_DIR") {
            self.ui_dir = Some(v.into());
        }
        if let Some(v) = get("CANOPY_DEPLOY_SERVER_URL") {
            self.deploy.server_url = v;
        }
        if let Some(v) = get("CANOPY_DEPLOY_SERVER_CA_FILE") {
            self.deploy.server_ca_file = Some(v.into());
        }
        if let Some(v) = get("CANOPY_DEPLOY_SSH_KEY_FILE") {
            self.deploy.ssh_key_file = Some(v.into());
        }
        if let Some(v) = get("CANOPY_DEPLOY_AGENT_BINARY") {
            self.deploy.agent_binary = Some(v.into());
        }
        if let Some(p) = get("CANOPY_ADMIN_PASSWORD") {
            self.admin_password = Some(Secret::new(p));
        } else if let Some(path) = get("CANOPY_ADMIN_PASSWORD_FILE") {
            let text = std::fs::read_to_string(&path).map_err(|e| SettingsError::Env {
                name: "CANOPY_ADMIN_PASSWORD_FILE".into(),
                reason: format!("cannot read {path}: {e}"),
            })?;
            self.admin_password = Some(Secret::new(text.trim_end_matches(['\n', '\r'])));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_round_trips() {
        let text = example_toml();
        let parsed: Settings = toml::from_str(&text).unwrap();
        assert_eq!(parsed, Settings::default());
        assert!(text.contains("tls = \"auto\"\n"), "{text}");
        assert!(text.contains("allow_plain_http = false\n"), "{text}");
        let own = Settings {
            tls_cert_file: Some("/etc/canopy/cert.pem".into()),
            tls_key_file: Some("/etc/canopy/key.pem".into()),
            ..Settings::default()
        };
        let text = toml::to_string_pretty(&own).unwrap();
        assert_eq!(toml::from_str::<Settings>(&text).unwrap(), own);
    }

    #[test]
    fn env_overrides_and_names_bad_values() {
        let mut s = Settings::default();
        s.apply_env(|k| (k == "CANOPY_LISTEN").then(|| "127.0.0.1:9999".to_string()))
            .unwrap();
        assert_eq!(s.listen.port(), 9999);
        let err = s
            .apply_env(|k| (k == "CANOPY_INSTALL_TIMEOUT_SECS").then(|| "soon".to_string()))
            .unwrap_err();
        assert!(
            err.to_string().contains("CANOPY_INSTALL_TIMEOUT_SECS"),
            "{err}"
        );
    }

    #[test]
    fn admin_password_in_the_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("canopy.toml");
        std::fs::write(&path, "admin_password = \"hunter2\"\n").unwrap();
        let err = Settings::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("admin_password"), "{err}");
        assert!(err.contains("CANOPY_ADMIN_PASSWORD_FILE"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn trusted_proxies_from_env_and_bad_entries_named() {
        let mut s = Settings::default();
        s.apply_env(|k| {
            (k == "CANOPY_TRUSTED_PROXIES").then(|| "127.0.0.1, 10.0.0.0/8".to_string())
        })
        .unwrap();
        assert_eq!(s.trusted_proxies, vec!["127.0.0.1", "10.0.0.0/8"]);
        assert!(s
            .trusted_proxies()
            .unwrap()
            .contains("10.1.2.3".parse().unwrap()));
        s.trusted_proxies.push("proxy.lan".into());
        let err = s.trusted_proxies().unwrap_err().to_string();
        assert!(
            err.contains("trusted_proxies") && err.contains("proxy.lan"),
            "{err}"
        );
    }

    #[test]
    fn tls_follows_the_mode_the_address_and_the_files() {
        let with = |tls: &str, listen: &str, files: bool, plain: bool| {
            let mut s = Settings::default();
            s.apply_env(|k| match k {
                "CANOPY_TLS" => Some(tls.to_string()),
                "CANOPY_LISTEN" => Some(listen.to_string()),
                "CANOPY_ALLOW_PLAIN_HTTP" => Some(plain.to_string()),
                "CANOPY_TLS_CERT_FILE" if files => Some("/etc/canopy/cert.pem".into()),
                "CANOPY_TLS_KEY_FILE" if files => Some("/etc/canopy/key.pem".into()),
                _ => None,
            })
            .unwrap();
            s.transport()
        };
        let given = Transport::Given {
            cert: "/etc/canopy/cert.pem".into(),
            key: "/etc/canopy/key.pem".into(),
        };
        // auto: loopback stays plain unless a certificate is given; the network gets HTTPS.
        assert_eq!(
            with("auto", "127.0.0.1:8080", false, false),
            Ok(Transport::Plain)
        );
        assert_eq!(
            with("auto", "[::1]:8080", false, false),
            Ok(Transport::Plain)
        );
        assert_eq!(
            with("auto", "127.0.0.1:8080", true, false),
            Ok(given.clone())
        );
        assert_eq!(
            with("auto", "0.0.0.0:8080", false, false),
            Ok(Transport::SelfSigned)
        );
        assert_eq!(
            with("auto", "192.0.2.1:8080", true, false),
            Ok(given.clone())
        );
        assert_eq!(
            with("on", "127.0.0.1:8080", false, false),
            Ok(Transport::SelfSigned)
        );
        assert_eq!(
            with("off", "127.0.0.1:8080", false, false),
            Ok(Transport::Plain)
        );
        assert_eq!(
            with("off", "[::ffff:127.0.0.1]:80", false, false),
            Ok(Transport::Plain)
        );
        let err = with("off", "0.0.0.0:8080", false, false).unwrap_err();
        assert!(
            err.contains("refusing plain HTTP on 0.0.0.0:8080") && err.contains("allow_plain_http"),
            "{err}"
        );
        assert_eq!(
            with("off", "0.0.0.0:8080", false, true),
            Ok(Transport::Plain)
        );
        assert!(with("off", "127.0.0.1:8080", true, false)
            .unwrap_err()
            .contains("tls = \"off\""));
        let s = Settings {
            tls_cert_file: Some("c.pem".into()),
            ..Settings::default()
        };
        assert!(s.transport().unwrap_err().contains("tls_key_file is not"));
        let err = Settings::default()
            .apply_env(|k| (k == "CANOPY_TLS").then(|| "maybe".to_string()))
            .unwrap_err();
        assert!(
            err.to_string().contains("CANOPY_TLS") && err.to_string().contains("auto, on or off"),
            "{err}"
        );
    }

    #[test]
    fn secrets_never_print() {
        let mut s = Settings::default();
        s.apply_env(|k| (k == "CANOPY_ADMIN_PASSWORD").then(|| "hunter2".to_string()))
            .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!example_toml().contains("hunter2"));
    }
}
