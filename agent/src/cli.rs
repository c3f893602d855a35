//! The command line (clap derive) and what each subcommand does. Machine output
//! goes to stdout, logs to stderr, so `scan --json | jq` works.

use crate::cache::Cache;
use crate::config::{
    config_path, effective_managers, parse_manager, AgentConfig, Secret, DEFAULT_STATE_DIR,
    STATE_DIR_ENV,
};
use crate::register::RegistrationToken;
use crate::scan::{self, ScanOptions};
use anyhow::Context;
use canopy_api_types::updates::{PackageManager, PackageUpdate, Severity};
use clap::{ArgGroup, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "canopy-agent",
    version = crate::facts::AGENT_VERSION,
    about = "Canopy agent: scans packages, reports to the Canopy server, runs approved dry-runs and installs"
)]
pub struct Cli {
    /// Config file [default: $CANOPY_AGENT_CONFIG or /etc/canopy-agent/agent.toml]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Package manager to use (apt, dnf, apk); repeat or comma-separate for several. Replaces
    /// `package_managers` from the config and $CANOPY_AGENT_PACKAGE_MANAGERS; `register`
    /// writes it into the config. [default: every one found on PATH]
    #[arg(long = "package-manager", global = true, value_delimiter = ',', value_parser = parse_manager)]
    pub package_managers: Vec<PackageManager>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check in with the server (long poll), report, and execute commands until SIGTERM.
    Run {
        /// Refuse installs (scan and dry-run still work).
        #[arg(long)]
        read_only: bool,
    },
    /// Register with a server using a registration token; writes the config and credential
    /// (0600) to --config (overwriting an earlier registration).
    #[command(group(
        ArgGroup::new("registration_token")
            .args(["token", "token_file"])
            .required(true)
            .multiple(false)
    ))]
    Register {
        /// Server root URL, e.g. https://canopy.lan:8080
        #[arg(long)]
        server: String,
        /// Single-use registration token (or set CANOPY_REGISTRATION_TOKEN; either conflicts
        /// with --token-file).
        #[arg(long, env = "CANOPY_REGISTRATION_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// File holding the single-use registration token; deleted after a successful
        /// registration (kept after a failure, so a retry works).
        #[arg(long, value_name = "PATH")]
        token_file: Option<PathBuf>,
        /// State/cache directory [default: $CANOPY_AGENT_STATE_DIR or /var/lib/canopy-agent]
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Register as a read-only agent.
        #[arg(long)]
        read_only: bool,
        /// Pin the server's certificate by its SHA-256 fingerprint (AA:BB:…, as `canopy serve`
        /// prints it); stored in the config as `server_fingerprint`.
        #[arg(long, value_name = "AA:BB:…", conflicts_with = "ca_file")]
        fingerprint: Option<canopy_tls::Fingerprint>,
        /// Trust only server certificates that chain to this PEM CA (a homelab CA).
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Run the scanners locally (no server needed) and print the result.
    Scan {
        /// Print the ScanReport as JSON.
        #[arg(long)]
        json: bool,
        /// Refresh package lists first (apt-get update / dnf makecache / apk update).
        #[arg(long)]
        refresh: bool,
    },
    /// List the Docker engine's containers (image, digests, platform, health, compose service).
    Containers {
        #[arg(long)]
        json: bool,
    },
    /// Show registration, server, last check-in, last scan and pending counts (from the cache).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List the updates found by the last scan (from the cache).
    ListUpdates {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Simulate installing packages and print every package the install would touch.
    DryRun {
        #[arg(required = true)]
        packages: Vec<String>,
        #[arg(long)]
        json: bool,
        /// Timeout in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// The host's health, as the server's health command sees it: failed systemd units,
    /// reboot required, services to restart (needrestart, as root), and these checks.
    /// Exit 0 healthy, 2 a failed unit or check, 1 when the report cannot be made.
    Health {
        #[arg(long)]
        json: bool,
        /// `GET URL` answers 2xx (repeatable).
        #[arg(long, value_name = "URL")]
        http: Vec<String>,
        /// A TCP connection to HOST:PORT succeeds (repeatable).
        #[arg(long, value_name = "HOST:PORT")]
        tcp: Vec<String>,
        /// This program exits 0: its argv split on spaces, no shell (repeatable).
        #[arg(long, value_name = "\"PROGRAM ARG…\"")]
        command: Vec<String>,
        /// Timeout in seconds for the whole report.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// The root helper (run by the agent through `sudo -n`): `helper VERB MANAGER [ITEM…]`
    /// with its own fixed verbs; see the `helper` module.
    #[command(hide = true)]
    Helper {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// The config if there is one (status and scan work without registration).
fn try_config(flag: Option<&std::path::Path>) -> anyhow::Result<Option<AgentConfig>> {
    let path = config_path(flag);
    if path.exists() {
        AgentConfig::load(&path).map(Some)
    } else {
        Ok(None)
    }
}

fn cache_path(cfg: Option<&AgentConfig>) -> PathBuf {
    match cfg {
        Some(c) => c.cache_path(),
        None => std::env::var_os(STATE_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
            .join("cache.json"),
    }
}

/// Execute the parsed command. Returns the process exit code.
pub async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let cfg_flag = cli.config.as_deref();
    let manager_flags = cli.package_managers.clone();
    match cli.command {
        // Reads no config and no environment: only its own arguments.
        Command::Helper { args } => Ok(crate::helper::main(&args).await),
        Command::Run { read_only } => {
            let cfg = AgentConfig::load_registered(&config_path(cfg_flag))?;
            crate::run::launch(cfg, read_only, &manager_flags).await?;
            Ok(0)
        }
        Command::Register {
            server,
            token,
            token_file,
            state_dir,
            read_only,
            fingerprint,
            ca_file,
        } => {
            let registration_token = match (token, token_file) {
                (Some(t), None) => RegistrationToken::Value(Secret::new(t)),
                (None, Some(path)) => RegistrationToken::File(path),
                _ => anyhow::bail!(
                    "give exactly one of --token (or $CANOPY_REGISTRATION_TOKEN) and --token-file"
                ),
            };
            let r = crate::register::register(crate::register::RegisterArgs {
                server,
                registration_token,
                config: cli.config.clone(),
                state_dir,
                read_only,
                fingerprint,
                ca_file,
                package_managers: manager_flags,
            })
            .await?;
            println!("registered as host {}", r.host_id);
            println!("config:     {}", r.config_path.display());
            println!("credential: {} (mode 0600)", r.token_path.display());
            if let Some(p) = r.token_file_removed {
                println!("registration token file {} deleted", p.display());
            }
            Ok(0)
        }
        Command::Scan { json, refresh } => {
            let cfg = try_config(cfg_flag)?;
            let timeout = Duration::from_secs(cfg.as_ref().map_or(600, |c| c.scan_timeout_secs));
            let managers = configured_managers(cfg.as_ref(), &manager_flags)?;
            let report = scan::scan(&ScanOptions {
                refresh,
                timeout,
                managers,
                docker: cfg.as_ref().map(|c| c.docker.clone()).unwrap_or_default(),
            })
            .await;
            let path = cache_path(cfg.as_ref());
            let mut cache = Cache::load(&path).unwrap_or_default();
            cache.set_report(report.clone());
            if let Err(e) = cache.save(&path) {
                tracing::warn!(error = %format!("{e:#}"), "scan result not cached");
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).context("serialising report")?
                );
            } else {
                print_table(&report.updates);
                for e in &report.scanner_errors {
                    eprintln!("scanner {} failed: {}", e.scanner, e.message);
                }
                if report.reboot_required {
                    println!("reboot required");
                }
            }
            Ok(if report.scanner_errors.is_empty() {
                0
            } else {
                2
            })
        }
        Command::Health {
            json,
            http,
            tcp,
            command,
            timeout,
        } => {
            let checks = crate::health::local::checks_from_flags(http, tcp, command)?;
            crate::health::local::print(&checks, json, Duration::from_secs(timeout.max(1))).await
        }
        Command::Containers { json } => {
            let docker = try_config(cfg_flag)?.map(|c| c.docker).unwrap_or_default();
            crate::docker::local::print(&docker, json, Duration::from_secs(60)).await
        }
        Command::Status { json } => {
            let cfg = try_config(cfg_flag)?;
            let cache = Cache::load(&cache_path(cfg.as_ref()))?;
            let status = status_json(cfg.as_ref(), &cache);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).context("serialising status")?
                );
            } else {
                print_status(&status);
            }
            Ok(0)
        }
        Command::ListUpdates { format } => {
            let cfg = try_config(cfg_flag)?;
            let path = cache_path(cfg.as_ref());
            let cache = Cache::load(&path)?;
            let report = cache.report.with_context(|| {
                format!(
                    "no scan cached in {}: run `canopy-agent scan` first",
                    path.display()
                )
            })?;
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report.updates).context("serialising updates")?
                ),
                Format::Csv => print!("{}", to_csv(&report.updates)),
                Format::Table => print_table(&report.updates),
            }
            Ok(0)
        }
        Command::DryRun {
            packages,
            json,
            timeout,
        } => {
            // Like the service: each package goes to the manager that reported it in the
            // cached scan, else to the first manager in use.
            let cfg = try_config(cfg_flag)?;
            let managers =
                scan::select_managers(&configured_managers(cfg.as_ref(), &manager_flags)?);
            let cache = Cache::load(&cache_path(cfg.as_ref())).unwrap_or_default();
            let r = match crate::actions::route(&packages, &managers, cache.report.as_ref()) {
                Ok(batches) => {
                    crate::actions::dry_run(&batches, Duration::from_secs(timeout)).await
                }
                Err(refused) => *refused,
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r).context("serialising result")?
                );
            } else {
                for p in &r.planned {
                    println!(
                        "{:<40} {:<28} -> {:<28} {}",
                        p.package,
                        p.from_version.as_deref().unwrap_or("(new)"),
                        p.to_version,
                        if p.requested {
                            "requested"
                        } else {
                            "dependency"
                        }
                    );
                }
                println!("{}", r.summary);
                if !r.success {
                    eprintln!("{}", r.stderr.trim_end());
                }
            }
            Ok(if r.success { 0 } else { 1 })
        }
    }
}

/// The configured package managers (flags > environment > config file); empty = detect.
fn configured_managers(
    cfg: Option<&AgentConfig>,
    flags: &[PackageManager],
) -> anyhow::Result<Vec<PackageManager>> {
    effective_managers(cfg.map_or(&[][..], |c| &c.package_managers), flags)
}

fn status_json(cfg: Option<&AgentConfig>, cache: &Cache) -> serde_json::Value {
    let updates = cache
        .report
        .as_ref()
        .map(|r| r.updates.as_slice())
        .unwrap_or(&[]);
    serde_json::json!({
        "registered": cfg.is_some_and(|c| c.token.is_some() || c.token_file.as_ref().is_some_and(|p| p.exists())),
        "host_id": cfg.and_then(|c| c.host_id.clone()),
        "server_url": cfg.map(|c| c.server_url.clone()),
        "read_only": cfg.is_some_and(|c| c.read_only),
        "package_managers": cfg.map(|c| c.package_managers.iter().map(|m| m.as_str()).collect::<Vec<_>>()).unwrap_or_default(),
        "last_checkin": cache.last_checkin,
        "last_scan": cache.last_scan,
        "last_error": cache.last_error,
        "report_uploaded": cache.report_hash.is_some() && cache.report_hash == cache.uploaded_hash,
        "pending": updates.len(),
        "security": updates.iter().filter(|u| u.severity == Severity::Security).count(),
        "held": updates.iter().filter(|u| u.held).count(),
        "reboot_required": cache.report.as_ref().is_some_and(|r| r.reboot_required),
        "scanner_errors": cache.report.as_ref().map(|r| r.scanner_errors.len()).unwrap_or(0),
    })
}

fn print_status(s: &serde_json::Value) {
    let text = |k: &str| match &s[k] {
        serde_json::Value::Null => "never".to_string(),
        serde_json::Value::String(v) => v.clone(),
        v => v.to_string(),
    };
    let yn = |k: &str| {
        if s[k].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    };
    println!(
        "registered:      {}{}",
        yn("registered"),
        s["host_id"]
            .as_str()
            .map(|h| format!(" (host {h})"))
            .unwrap_or_default()
    );
    println!(
        "server:          {}",
        s["server_url"].as_str().unwrap_or("(none)")
    );
    println!("read-only:       {}", yn("read_only"));
    let managers: Vec<&str> = s["package_managers"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    println!(
        "managers:        {}",
        if managers.is_empty() {
            "auto-detect".to_string()
        } else {
            managers.join(", ")
        }
    );
    println!("last check-in:   {}", text("last_checkin"));
    println!("last scan:       {}", text("last_scan"));
    println!(
        "pending updates: {} ({} security, {} held)",
        s["pending"], s["security"], s["held"]
    );
    println!("reboot required: {}", yn("reboot_required"));
    if let Some(e) = s["last_error"].as_str() {
        println!("last error:      {e}");
    }
}

fn print_table(updates: &[PackageUpdate]) {
    if updates.is_empty() {
        println!("no updates");
        return;
    }
    for u in updates {
        println!(
            "{:<4} {:<36} {:<28} -> {:<28} {:<9} {}{}",
            u.manager.as_str(),
            u.package,
            u.current_version,
            u.available_version,
            u.severity.as_str(),
            u.source.as_deref().unwrap_or("-"),
            if u.held { " [held]" } else { "" }
        );
    }
    println!("{} updates", updates.len());
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// CSV with a header: manager,package,current_version,available_version,arch,source,severity,held
pub fn to_csv(updates: &[PackageUpdate]) -> String {
    let mut out = String::from(
        "manager,package,current_version,available_version,arch,source,severity,held\n",
    );
    for u in updates {
        let row = [
            u.manager.as_str().to_string(),
            csv_field(&u.package),
            csv_field(&u.current_version),
            csv_field(&u.available_version),
            csv_field(u.arch.as_deref().unwrap_or("")),
            csv_field(u.source.as_deref().unwrap_or("")),
            u.severity.as_str().to_string(),
            u.held.to_string(),
        ];
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["canopy-agent", "list-updates", "--format", "csv"])
            .expect("parses");
        assert!(matches!(
            c.command,
            Command::ListUpdates {
                format: Format::Csv
            }
        ));
    }

    #[test]
    fn register_takes_exactly_one_token_source() {
        let c = Cli::try_parse_from([
            "canopy-agent",
            "register",
            "--server",
            "http://x",
            "--token-file",
            "/run/canopy/reg.token",
            "--config",
            "/tmp/a.toml",
        ])
        .expect("--token-file alone parses");
        assert_eq!(
            c.config.as_deref(),
            Some(std::path::Path::new("/tmp/a.toml"))
        );
        assert!(matches!(
            c.command,
            Command::Register { token: None, token_file: Some(ref p), .. } if p.ends_with("reg.token")
        ));
        let both = Cli::try_parse_from([
            "canopy-agent",
            "register",
            "--server",
            "http://x",
            "--token",
            "t",
            "--token-file",
            "f",
        ])
        .unwrap_err();
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(!both.to_string().contains(": t "), "{both}");
        if std::env::var_os("CANOPY_REGISTRATION_TOKEN").is_none() {
            let none = Cli::try_parse_from(["canopy-agent", "register", "--server", "http://x"])
                .unwrap_err();
            assert_eq!(none.kind(), clap::error::ErrorKind::MissingRequiredArgument);
            assert!(none.to_string().contains("--token-file"), "{none}");
        }
    }

    #[test]
    fn version_is_the_agent_version() {
        let v = Cli::try_parse_from(["canopy-agent", "--version"]).unwrap_err();
        assert_eq!(v.kind(), clap::error::ErrorKind::DisplayVersion);
        assert_eq!(
            v.to_string().trim_end(),
            format!("canopy-agent {}", crate::facts::AGENT_VERSION)
        );
    }

    #[test]
    fn package_manager_flag_repeats_and_splits() {
        let c = Cli::try_parse_from([
            "canopy-agent",
            "scan",
            "--package-manager",
            "dnf,apt",
            "--package-manager=apk",
        ])
        .expect("parses");
        assert_eq!(
            c.package_managers,
            [
                PackageManager::Dnf,
                PackageManager::Apt,
                PackageManager::Apk
            ]
        );
        let c = Cli::try_parse_from(["canopy-agent", "--package-manager", "dnf", "run"])
            .expect("global flag before the subcommand");
        assert_eq!(c.package_managers, [PackageManager::Dnf]);
        assert!(
            Cli::try_parse_from(["canopy-agent", "--package-manager", "docker", "scan"]).is_err()
        );
    }

    #[test]
    fn csv_quotes() {
        let u = PackageUpdate {
            manager: canopy_api_types::updates::PackageManager::Apt,
            package: "a".into(),
            current_version: "1,2".into(),
            available_version: "3".into(),
            arch: None,
            source: Some("x\"y".into()),
            severity: Severity::Security,
            held: true,
        };
        let csv = to_csv(&[u]);
        assert!(
            csv.ends_with("apt,a,\"1,2\",3,,\"x\"\"y\",security,true\n"),
            "{csv}"
        );
    }
}
