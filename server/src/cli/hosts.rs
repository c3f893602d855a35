//! `canopy host …`: one host's lifecycle — delete it, or queue the repair of a package
//! database its agent reported as interrupted.

use super::remote::{print, Common};
use super::session;
use canopy_api_types::updates::PackageManager;
use canopy_api_types::HostId;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Delete a host (admin): its credential is revoked, it leaves its guest, its waiting
    /// commands are cancelled; its history stays. Uninstalling an agent
    /// (`canopy agent uninstall`) archives its host instead.
    Delete {
        #[command(flatten)]
        common: Common,
        id: HostId,
    },
    /// Repair an interrupted package database the host reported (`dpkg --configure -a`
    /// for apt), as its `canopy hosts` line proposes.
    Repair {
        #[command(flatten)]
        common: Common,
        id: HostId,
        /// The package manager whose database to repair.
        #[arg(long, default_value = "apt", value_parser = |s: &str| PackageManager::parse(s).ok_or_else(|| format!("unknown package manager '{s}'")))]
        manager: PackageManager,
    },
}

pub async fn run(cmd: HostCommand) -> anyhow::Result<()> {
    match cmd {
        HostCommand::Delete { common, id } => {
            let h = session::client(common.server.as_deref())
                .await?
                .delete_host(id)
                .await?;
            print(common.json, &h, |h| {
                println!(
                    "host {} ({}) deleted: credential revoked, history kept",
                    h.hostname, h.id
                )
            })
        }
        HostCommand::Repair {
            common,
            id,
            manager,
        } => {
            let c = session::client(common.server.as_deref())
                .await?
                .repair_host(id, manager)
                .await?;
            print(common.json, &c, |c| {
                println!(
                    "repair queued: {} (follow it with `canopy command {}`)",
                    c.id, c.id
                )
            })
        }
    }
}

/// The notes a host's line in `canopy hosts` ends with: lifecycle, duplicate machine-id,
/// package-database health.
pub fn notes(h: &canopy_api_types::hosts::Host) -> String {
    let mut notes = Vec::new();
    if h.state != canopy_api_types::hosts::HostState::Active {
        notes.push(h.state.as_str().to_string());
    }
    if h.agentless {
        notes.push("agentless".into());
    }
    if h.duplicate_machine_id {
        notes.push(
            "duplicate machine-id: in the clone run `rm /etc/machine-id && systemd-machine-id-setup`, then re-register its agent"
                .into(),
        );
    }
    for issue in &h.package_db {
        let first = issue.problem.lines().next().unwrap_or("");
        match &issue.repair {
            Some(r) => notes.push(format!(
                "{} database needs repair ({first}): `canopy host repair {} --manager {}` runs `{r}`",
                issue.manager.as_str(),
                h.id,
                issue.manager.as_str()
            )),
            None => notes.push(format!(
                "{} database needs attention: {first}",
                issue.manager.as_str()
            )),
        }
    }
    notes.join("; ")
}
