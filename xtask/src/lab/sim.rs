//! The simulator cluster files for the node stand-in: `.lab/sim-pve1.toml` (`pve.sim_file` in
//! lab.json): cluster `lab`, node `pve1`, the systemd guests 101–106 as running LXCs named after
//! their hostnames; and with `--docker-guests`, `.lab/sim-dock.toml` (`docker.sim_file`):
//! cluster `dock`, the same node `pve1`, the Docker guests 201–204, so tests on them do not
//! disturb tests that select `lab/**`. Each file has an Administrator token with a fresh secret
//! and the action hook `env CANOPY_LAB_INSTANCE=… XTASK lab pve-action`, so every guest task the
//! simulator runs acts on the guest container behind it (`action.rs`). Tests and the demo start
//! `canopy-pve-sim` (or `canopy_pve_sim::start`) from them.

use super::pve;
use crate::state::{self, json_str};
use anyhow::{Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// The cluster name of `sim-pve1.toml`.
pub const CLUSTER: &str = "lab";
/// The cluster name of `sim-dock.toml`.
pub const DOCK_CLUSTER: &str = "dock";
/// The token id; its secret is new at every `lab up`.
pub const TOKEN_ID: &str = "root@pam!canopy";

/// `.lab/sim-pve1.toml` (`.lab/sim-pve1-NAME.toml` for an instance).
pub fn path() -> Result<PathBuf> {
    named("pve1")
}

/// `.lab/sim-dock.toml` (`.lab/sim-dock-NAME.toml` for an instance).
pub fn dock_path() -> Result<PathBuf> {
    named("dock")
}

fn named(stem: &str) -> Result<PathBuf> {
    let file = match super::instance()? {
        Some(name) => format!(".lab/sim-{stem}-{name}.toml"),
        None => format!(".lab/sim-{stem}.toml"),
    };
    Ok(state::repo_root()?.join(file))
}

/// The hook's argv: the xtask binary (`CANOPY_XTASK_BIN`, else this one) with this instance.
fn hook() -> Result<Vec<String>> {
    let xtask = match std::env::var("CANOPY_XTASK_BIN") {
        Ok(bin) if !bin.is_empty() => bin,
        _ => std::env::current_exe()
            .context("the xtask binary's path")?
            .to_string_lossy()
            .into_owned(),
    };
    let instance = super::instance()?.unwrap_or_default();
    Ok(vec![
        "/usr/bin/env".into(),
        format!("CANOPY_LAB_INSTANCE={instance}"),
        xtask,
        "lab".into(),
        "pve-action".into(),
    ])
}

/// Writes `sim-pve1.toml` (mode 0600: it holds the token secret) and returns its path.
pub fn write() -> Result<PathBuf> {
    write_cluster(&path()?, CLUSTER, "the lab's node pve1", pve::VMIDS, &[])
}

/// Writes `sim-dock.toml` (the Docker guests) and returns its path.
pub fn write_dock() -> Result<PathBuf> {
    write_cluster(
        &dock_path()?,
        DOCK_CLUSTER,
        "the lab's Docker guests on node pve1",
        super::docker_guests::VMIDS,
        &["docker"],
    )
}

fn write_cluster(
    path: &std::path::Path,
    cluster: &str,
    what: &str,
    vmids: std::ops::RangeInclusive<u32>,
    tags: &[&str],
) -> Result<PathBuf> {
    let secret = fs::read_to_string("/proc/sys/kernel/random/uuid")
        .context("a token secret from /proc/sys/kernel/random/uuid")?;
    let hook: Vec<String> = hook()?.iter().map(|a| json_str(a)).collect();
    let mut text = format!(
        "# Written by `cargo xtask lab up`: {what} behind the PVE simulator. Every\n\
         # guest task runs the hook, which acts on the guest's container.\n\
         [[clusters]]\nname = {}\ntask_duration_ms = 50\nhook = [{}]\n\n\
         [[clusters.tokens]]\nid = {}\nsecret = {}\nrole = \"Administrator\"\n\n\
         [[clusters.nodes]]\nname = {}\n",
        json_str(cluster),
        hook.join(", "),
        json_str(TOKEN_ID),
        json_str(secret.trim()),
        json_str(super::node::NODE),
    );
    for vmid in vmids {
        text.push_str(&format!(
            "\n[[clusters.guests]]\nvmid = {vmid}\ntype = \"lxc\"\nnode = {}\nname = \"ct{vmid}\"\n\
             status = \"running\"\nostype = \"debian\"\n",
            json_str(super::node::NODE),
        ));
        if !tags.is_empty() {
            let tags: Vec<String> = tags.iter().map(|t| json_str(t)).collect();
            text.push_str(&format!("tags = [{}]\n", tags.join(", ")));
        }
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(path.to_path_buf())
}
