//! User commands against a running server: hosts, updates, approve, confirm, cancel, retry,
//! history; registration tokens and users live in `accounts.rs`. Every command has `--json`
//! for scripts.

use super::session::{self, Session};
use canopy_api_types::updates::{Severity, UpdateFilter, UpdateStatus};
use canopy_api_types::{CommandId, HostId, UpdateId};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct LoginArgs {
    #[arg(long, env = "CANOPY_SERVER")]
    server: String,
    #[arg(long, default_value = "admin")]
    username: String,
    /// Read the password from this file instead of the terminal (typed without echo) or
    /// one line of stdin.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Pin the server's certificate by its SHA-256 fingerprint (AA:BB:…, printed by
    /// `canopy serve`). Without it or --ca-file, an https server whose certificate this
    /// machine does not trust shows its fingerprint and asks.
    #[arg(long, env = super::trust::FINGERPRINT_ENV, value_name = "AA:BB:…", conflicts_with = "ca_file")]
    fingerprint: Option<canopy_tls::Fingerprint>,
    /// Trust only server certificates that chain to this PEM CA.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct Common {
    /// Server root URL (default: CANOPY_SERVER or the saved session).
    #[arg(long, global = true)]
    pub(crate) server: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// List enrolled hosts.
    Hosts(#[command(flatten)] Common),
    /// List updates (filters run on the server), optionally of the hosts under a selector
    /// (`canopy updates 'cluster/home/node/pve1/**'`).
    Updates {
        #[command(flatten)]
        common: Common,
        selector: Option<String>,
        #[arg(long)]
        host: Option<HostId>,
        #[arg(long, value_parser = |s: &str| UpdateStatus::parse(s).ok_or_else(|| format!("unknown status '{s}'")))]
        status: Option<UpdateStatus>,
        #[arg(long, value_parser = |s: &str| Severity::parse(s).ok_or_else(|| format!("unknown severity '{s}'")))]
        severity: Option<Severity>,
        #[arg(long)]
        package: Option<String>,
        #[arg(long)]
        page: Option<u32>,
        #[arg(long)]
        per_page: Option<u32>,
    },
    /// Approve updates by id; queues a dry-run per host.
    Approve {
        #[command(flatten)]
        common: Common,
        ids: Vec<UpdateId>,
    },
    /// Reject updates by id.
    Reject {
        #[command(flatten)]
        common: Common,
        ids: Vec<UpdateId>,
    },
    /// Show a command (dry-run plan, install output).
    Command {
        #[command(flatten)]
        common: Common,
        id: CommandId,
    },
    /// Confirm a finished dry-run: queues the install.
    Confirm {
        #[command(flatten)]
        common: Common,
        id: CommandId,
    },
    /// Cancel a command that has not started (pending or sent to its agent).
    Cancel {
        #[command(flatten)]
        common: Common,
        id: CommandId,
    },
    /// Retry a failed / timed-out / cancelled command.
    Retry {
        #[command(flatten)]
        common: Common,
        id: CommandId,
    },
    /// What Canopy installed.
    History {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        host: Option<HostId>,
    },
    /// Registration tokens for agents: create, list, revoke.
    #[command(subcommand)]
    Token(super::accounts::TokenCommand),
    /// Users (admin): list, create, disable, enable, delete, role; your own password.
    #[command(subcommand)]
    User(super::accounts::UserCommand),
}

pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let pin = super::trust::for_login(&args.server, args.fingerprint, args.ca_file.clone()).await?;
    let password = super::password::read(
        &format!("password for {}: ", args.username),
        args.password_file.as_deref(),
    )?;
    let client = canopy_api_types::client::Client::new(
        super::trust::http(pin.as_ref())?,
        args.server.clone(),
    );
    let pair = client.login(&args.username, &password).await?;
    let path = session::save(&Session {
        server: args.server,
        access_token: pair.access_token,
        refresh_token: pair.refresh_token,
        username: pair.user.username.clone(),
        fingerprint: match &pin {
            Some(super::trust::Pin::Fingerprint(fp)) => Some(*fp),
            _ => None,
        },
        ca_file: match pin {
            Some(super::trust::Pin::CaFile(path)) => Some(path),
            _ => None,
        },
    })?;
    eprintln!(
        "logged in as {} ({}); session saved to {}",
        pair.user.username,
        pair.user.role.as_str(),
        path.display()
    );
    Ok(())
}

pub(crate) fn print<T: Serialize>(
    json: bool,
    value: &T,
    table: impl FnOnce(&T),
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        table(value);
    }
    Ok(())
}

pub async fn run(cmd: RemoteCommand) -> anyhow::Result<()> {
    match cmd {
        RemoteCommand::Hosts(c) => {
            let hosts = session::client(c.server.as_deref()).await?.hosts().await?;
            print(c.json, &hosts, |hs| {
                println!(
                    "{:<36}  {:<20} {:<24} {:>7} {:>8}  LAST SEEN",
                    "ID", "HOSTNAME", "OS", "PENDING", "SECURITY"
                );
                for h in hs {
                    let notes = super::hosts::notes(h);
                    println!(
                        "{:<36}  {:<20} {:<24} {:>7} {:>8}  {}{}",
                        h.id,
                        h.hostname,
                        h.os_pretty,
                        h.pending_updates,
                        h.security_updates,
                        h.last_seen
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_else(|| "never".into()),
                        if notes.is_empty() {
                            String::new()
                        } else {
                            format!("  [{notes}]")
                        }
                    );
                }
            })
        }
        RemoteCommand::Updates {
            common,
            selector,
            host,
            status,
            severity,
            package,
            page,
            per_page,
        } => {
            let filter = UpdateFilter {
                host_id: host,
                status,
                severity,
                manager: None,
                package,
                page,
                per_page,
                selector,
                hosts: None,
            };
            let page = session::client(common.server.as_deref())
                .await?
                .updates(&filter)
                .await?;
            print(common.json, &page, |p| {
                println!(
                    "{:<36}  {:<20} {:<28} {:<20} {:<20} {:<9} STATUS",
                    "ID", "HOST", "PACKAGE", "CURRENT", "AVAILABLE", "SEVERITY"
                );
                for u in &p.items {
                    println!(
                        "{:<36}  {:<20} {:<28} {:<20} {:<20} {:<9} {}{}",
                        u.id,
                        u.hostname,
                        u.package,
                        u.current_version,
                        u.available_version,
                        u.severity.as_str(),
                        u.status.as_str(),
                        if u.held { " (held)" } else { "" }
                    );
                }
                println!(
                    "page {} · {} rows in all · {} per page",
                    p.page, p.total, p.per_page
                );
            })
        }
        RemoteCommand::Approve { common, ids } => {
            anyhow::ensure!(
                !ids.is_empty(),
                "name at least one update id (see `canopy updates`)"
            );
            let r = session::client(common.server.as_deref())
                .await?
                .approve(ids)
                .await?;
            print(common.json, &r, |r| {
                println!("approved {} update(s); dry-run queued:", r.approved);
                for c in &r.dry_run_commands {
                    println!("  {c}   (canopy command {c})");
                }
            })
        }
        RemoteCommand::Reject { common, ids } => {
            anyhow::ensure!(!ids.is_empty(), "name at least one update id");
            let r = session::client(common.server.as_deref())
                .await?
                .reject(ids)
                .await?;
            print(common.json, &r, |r| {
                println!("rejected {} update(s)", r.rejected)
            })
        }
        RemoteCommand::Command { common, id } => {
            let c = session::client(common.server.as_deref())
                .await?
                .command(id)
                .await?;
            print(common.json, &c, |c| {
                println!(
                    "{} {} on {}: {}{}",
                    c.spec.kind(),
                    c.id,
                    c.host_id,
                    c.status.as_str(),
                    match (c.overdue_at.is_some(), c.late) {
                        (_, true) => " (late: its result came after the deadline)",
                        (true, false) => " (overdue: past its deadline, left to finish)",
                        _ => "",
                    }
                );
                if let canopy_api_types::commands::CommandSpec::Install { pinned, .. } = &c.spec {
                    let pins: Vec<String> = pinned
                        .iter()
                        .map(|p| format!("{}={}", p.package, p.to_version))
                        .collect();
                    if !pins.is_empty() {
                        println!("pinned to the dry-run's plan: {}", pins.join(" "));
                    }
                }
                if let Some(r) = &c.result {
                    if !r.summary.is_empty() {
                        println!("{}", r.summary);
                    }
                    for p in &r.planned {
                        println!(
                            "  {:<32} {} -> {}{}",
                            p.package,
                            p.from_version.as_deref().unwrap_or("(new)"),
                            p.to_version,
                            if p.requested { "" } else { "   [dependency]" }
                        );
                    }
                    for name in &r.removed {
                        println!("  {name:<32} (removed)");
                    }
                }
                if let Some(e) = &c.error {
                    println!("error: {e}");
                }
            })
        }
        RemoteCommand::Confirm { common, id } => {
            let c = session::client(common.server.as_deref())
                .await?
                .confirm(id)
                .await?;
            print(common.json, &c, |c| println!("install queued: {}", c.id))
        }
        RemoteCommand::Cancel { common, id } => {
            let c = session::client(common.server.as_deref())
                .await?
                .cancel(id)
                .await?;
            print(common.json, &c, |c| {
                println!("{} {}: {}", c.spec.kind(), c.id, c.status.as_str())
            })
        }
        RemoteCommand::Retry { common, id } => {
            let c = session::client(common.server.as_deref())
                .await?
                .retry(id)
                .await?;
            print(common.json, &c, |c| {
                println!("retry queued: {} (retries {id})", c.id)
            })
        }
        RemoteCommand::History { common, host } => {
            let h = session::client(common.server.as_deref())
                .await?
                .history(host)
                .await?;
            print(common.json, &h, |rows| {
                for r in rows {
                    println!(
                        "{}  {:<20} {:<28} {} -> {}",
                        r.installed_at.to_rfc3339(),
                        r.hostname,
                        r.package,
                        r.from_version,
                        r.to_version
                    );
                }
            })
        }
        RemoteCommand::Token(cmd) => super::accounts::token(cmd).await,
        RemoteCommand::User(cmd) => super::accounts::user(cmd).await,
    }
}
