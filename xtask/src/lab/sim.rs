//! The simulator cluster file for the node stand-in (`.lab/sim-pve1.toml`, `pve.sim_file` in
//! lab.json): cluster `lab`, node `pve1`, the systemd guests 101–106 as running LXCs named after
//! their hostnames, an Administrator token with a fresh secret, and the action hook
//! `env CANOPY_LAB_INSTANCE=… XTASK lab pve-action`, so every guest task the simulator runs acts
//! on the guest container behind it (`action.rs`). Tests and the demo start `canopy-pve-sim`
//! (or `canopy_pve_sim::start`) from it.

use super::pve;
use crate::state::{self, json_str};
use anyhow::{Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// The cluster name the file declares.
pub const CLUSTER: &str = "lab";
/// The token id; its secret is new at every `lab up`.
pub const TOKEN_ID: &str = "root@pam!canopy";

/// `.lab/sim-pve1.toml` (`.lab/sim-pve1-NAME.toml` for an instance).
pub fn path() -> Result<PathBuf> {
    let file = match super::instance()? {
        Some(name) => format!(".lab/sim-pve1-{name}.toml"),
        None => ".lab/sim-pve1.toml".to_string(),
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

/// Writes the file (mode 0600: it holds the token secret) and returns its path.
pub fn write() -> Result<PathBuf> {
    let secret = fs::read_to_string("/proc/sys/kernel/random/uuid")
        .context("a token secret from /proc/sys/kernel/random/uuid")?;
    let hook: Vec<String> = hook()?.iter().map(|a| json_str(a)).collect();
    let mut text = format!(
        "# Written by `cargo xtask lab up`: the lab's node pve1 behind the PVE simulator. Every\n\
         # guest task runs the hook, which acts on the guest's container.\n\
         [[clusters]]\nname = {}\ntask_duration_ms = 50\nhook = [{}]\n\n\
         [[clusters.tokens]]\nid = {}\nsecret = {}\nrole = \"Administrator\"\n\n\
         [[clusters.nodes]]\nname = {}\n",
        json_str(CLUSTER),
        hook.join(", "),
        json_str(TOKEN_ID),
        json_str(secret.trim()),
        json_str(super::node::NODE),
    );
    for vmid in pve::VMIDS {
        text.push_str(&format!(
            "\n[[clusters.guests]]\nvmid = {vmid}\ntype = \"lxc\"\nnode = {}\nname = \"ct{vmid}\"\n\
             status = \"running\"\nostype = \"debian\"\n",
            json_str(super::node::NODE),
        ));
    }
    let path = path()?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&path, text)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
    Ok(path)
}
