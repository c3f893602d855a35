//! The PVE part of the lab: node `pve1` (`node.rs`) and its six LXC stand-ins, vmids 101–106,
//! systemd guests (`systemd.rs`) named `canopy-lab-pve1-ct{VMID}` with hostname `ct{VMID}` and
//! apt pointed at the lab repository like every guest. 101–104 have sudo; on 105 and 106 it is
//! purged, so deploy code must fall back to root; 106 also runs its own sshd (for "SSH straight
//! into the guest"). Guest 108 (`openrc.rs`, same naming) has OpenRC instead of systemd and no
//! sudo. `lab up` ends with a self-check through the real ssh client.

use super::{node, openrc, systemd};
use crate::proc::cmd;
use crate::state::{self, json_str};
use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The systemd guests.
pub const VMIDS: std::ops::RangeInclusive<u32> = 101..=106;
/// Guests whose sudo is purged after start.
const NO_SUDO: &[u32] = &[105, 106];
/// The guest that runs its own sshd.
const SSH_GUEST: u32 = 106;

struct Guest {
    vmid: u32,
    container: String,
    hostname: String,
    sudo: bool,
    ssh_port: Option<u16>,
}

/// What `up` started, for lab.json.
pub struct Pve {
    node_container: String,
    node_port: u16,
    key: PathBuf,
    guests: Vec<Guest>,
    /// The OpenRC guest (vmid [`OPENRC_VMID`]).
    openrc: Guest,
    /// The simulator cluster file (`sim.rs`), once written.
    pub sim_file: Option<PathBuf>,
}

/// Node container: `canopy-lab-pve1` (`canopy-lab-NAME-pve1` for an instance).
fn node_container() -> Result<String> {
    Ok(format!("{}{}", super::lab_prefix()?, node::NODE))
}

/// The container of guest `vmid`: `canopy-lab-pve1-ct{VMID}` (`canopy-lab-NAME-pve1-ct…`).
pub fn guest_container(vmid: u32) -> Result<String> {
    Ok(format!("{}-ct{vmid}", node_container()?))
}

/// The vmid under which the node's `pct` reaches the lab's dnf guest.
pub const DNF_VMID: u32 = 120;

/// The vmid of the OpenRC guest (no systemd, no sudo).
pub const OPENRC_VMID: u32 = 108;

/// Starts the guests and the node (the images exist), then checks them through ssh.
/// The old containers are gone (`remove_guests`). `extra` guests (`(vmid, container,
/// hostname)`: the Docker guests, started by the caller) join the node's `pct` list.
pub fn up(
    sources: &str,
    pkgs: &[super::packages::DemoPackage],
    extra: &[(u32, String, String)],
) -> Result<Pve> {
    let node_container = node_container()?;
    let mut guests = Vec::new();
    for vmid in VMIDS {
        let guest = Guest {
            vmid,
            container: guest_container(vmid)?,
            hostname: format!("ct{vmid}"),
            sudo: !NO_SUDO.contains(&vmid),
            ssh_port: (vmid == SSH_GUEST).then(state::free_port).transpose()?,
        };
        // All boot at once; configured one by one below.
        super::guest::run_container_with(
            &guest.container,
            systemd::IMAGE,
            &guest.hostname,
            systemd::RUN_FLAGS,
        )?;
        guests.push(guest);
    }
    let openrc = Guest {
        vmid: OPENRC_VMID,
        container: guest_container(OPENRC_VMID)?,
        hostname: format!("ct{OPENRC_VMID}"),
        sudo: false,
        ssh_port: None,
    };
    super::guest::run_container_with(
        &openrc.container,
        openrc::IMAGE,
        &openrc.hostname,
        openrc::RUN_FLAGS,
    )?;
    let key = node::ssh_key()?;
    let mut machine_ids = HashSet::new();
    for g in guests.iter().chain([&openrc]) {
        if g.vmid == OPENRC_VMID {
            openrc::wait_started(&g.container)?;
        } else {
            let (state, failed) = systemd::wait_booted(&g.container)?;
            if !failed.is_empty() {
                eprintln!(
                    "xtask: lab: {} is {state}; failed units: {}",
                    g.container,
                    failed.join(" ")
                );
            }
        }
        super::guest::configure_apt(&g.container, sources)?;
        super::guest::verify_guest(&g.container, pkgs)?;
        let id = exec(&g.container, &["cat", "/etc/machine-id"])?;
        if !machine_ids.insert(id.trim().to_string()) {
            bail!(
                "{} shares its machine-id {} with another guest",
                g.container,
                id.trim()
            );
        }
        if !g.sudo && g.vmid != OPENRC_VMID {
            // sudo's prerm refuses while root has no password, unless forced.
            let purge = [
                "-e",
                "SUDO_FORCE_REMOVE=yes",
                &g.container,
                "dpkg",
                "--purge",
                "sudo",
            ];
            cmd("docker", ["exec"])
                .args_from(&purge)
                .timeout(Duration::from_secs(120))
                .output()?;
        }
        if let Some(port) = g.ssh_port {
            start_guest_sshd(&g.container, port, &key)?;
        }
    }
    let node_port = state::free_port()?;
    let mut list: Vec<(u32, String, String)> = guests
        .iter()
        .chain([&openrc])
        .map(|g| (g.vmid, g.container.clone(), g.hostname.clone()))
        .collect();
    // The dnf guest (no systemd) is a container of this node too: agentless scans of a dnf
    // system, and a deploy that must fail clearly for want of a service manager.
    list.push((DNF_VMID, super::dnf_guest_name(1)?, "dnf-1".into()));
    list.extend(extra.iter().cloned());
    node::start(&node_container, node_port, &key, &list)?;
    let pve = Pve {
        node_container,
        node_port,
        key,
        guests,
        openrc,
        sim_file: None,
    };
    self_check(&pve)?;
    Ok(pve)
}

impl Pve {
    /// `ssh root@node REMOTE` through the node's sshd with the lab key.
    pub fn node_ssh(&self, remote: &str) -> crate::proc::Cmd {
        node::ssh(&self.key, self.node_port, remote)
    }
}

fn exec(container: &str, args: &[&str]) -> Result<String> {
    cmd("docker", ["exec", container])
        .args_from(args)
        .timeout(Duration::from_secs(120))
        .output()
}

/// sshd under systemd in guest `container`: fresh host keys, the lab key for root, the drop-in.
fn start_guest_sshd(container: &str, port: u16, key: &Path) -> Result<()> {
    let script = "set -e\nssh-keygen -A >/dev/null\nmkdir -p /root/.ssh\nchmod 700 /root/.ssh\n\
                  printf '%s\\n' \"$1\" > /root/.ssh/authorized_keys\n\
                  chmod 600 /root/.ssh/authorized_keys\n\
                  cat > /etc/ssh/sshd_config.d/canopy-lab.conf\n\
                  systemctl enable --now ssh.service\n";
    cmd(
        "docker",
        ["exec", "-i", container, "sh", "-c", script, "sh"],
    )
    .arg(node::public_key(key)?)
    .stdin(node::sshd_config(port))
    .timeout(Duration::from_secs(60))
    .output()
    .with_context(|| format!("start sshd in {container}"))?;
    node::wait_sshd(container, port)
}

/// Every guest answers `pct status` through the node's real sshd, the guest with its own sshd
/// answers directly, the sudo-less guests have none, and the OpenRC guest runs OpenRC (not
/// systemd) as the deploy probe sees it.
fn self_check(pve: &Pve) -> Result<()> {
    let all: Vec<&Guest> = pve.guests.iter().chain([&pve.openrc]).collect();
    let statuses: Vec<String> = all
        .iter()
        .map(|g| format!("pct status {}", g.vmid))
        .collect();
    let remote = statuses.join(" && ");
    let ssh = node::ssh(&pve.key, pve.node_port, &remote);
    let shown = ssh.shown().to_string();
    let out = ssh.capture()?;
    let running = out
        .stdout
        .lines()
        .filter(|l| *l == "status: running")
        .count();
    if !out.status.success() || running != all.len() {
        bail!(
            "lab self-check failed: `{shown}` ({}) printed:\n{}{}\nexpected {} × \"status: running\" \
             (node container {}: see `docker logs {}`)",
            out.status,
            out.stdout,
            out.stderr,
            all.len(),
            pve.node_container,
            pve.node_container
        );
    }
    let probe = format!(
        "pct exec {OPENRC_VMID} -- sh -c '[ ! -d /run/systemd/system ] && command -v rc-service \
         >/dev/null && rc-status --runlevel'"
    );
    let runlevel = node::ssh(&pve.key, pve.node_port, &probe)
        .output()
        .with_context(|| format!("lab self-check: OpenRC in {}", pve.openrc.container))?;
    if runlevel.trim() != "default" {
        bail!(
            "lab self-check: {} is in OpenRC runlevel {runlevel:?}, expected \"default\"",
            pve.openrc.container
        );
    }
    for g in all {
        if let Some(port) = g.ssh_port {
            let who = node::ssh(&pve.key, port, "id -u && hostname")
                .output()
                .with_context(|| format!("lab self-check: ssh straight into {}", g.container))?;
            if who.split_whitespace().collect::<Vec<_>>() != ["0", g.hostname.as_str()] {
                bail!("lab self-check: ssh into {} answered {who:?}", g.container);
            }
        }
        let has_sudo = cmd(
            "docker",
            ["exec", &g.container, "sh", "-c", "command -v sudo"],
        )
        .timeout(Duration::from_secs(30))
        .ok();
        if has_sudo != g.sudo {
            bail!(
                "lab self-check: {} has sudo: {has_sudo}, expected {}",
                g.container,
                g.sudo
            );
        }
    }
    Ok(())
}

/// The `"pve"` object of lab.json.
pub fn json_section(pve: &Pve) -> String {
    let guests: Vec<String> = pve
        .guests
        .iter()
        .map(|g| {
            format!(
                "      {{ \"vmid\": {}, \"container\": {}, \"hostname\": {}, \"sudo\": {}, \"ssh\": {} }}",
                g.vmid,
                json_str(&g.container),
                json_str(&g.hostname),
                g.sudo,
                g.ssh_port
                    .map(|p| json_str(&format!("127.0.0.1:{p}")))
                    .unwrap_or_else(|| "null".into()),
            )
        })
        .collect();
    format!(
        "{{\n    \"image\": {},\n    \"node_image\": {},\n    \"node\": {{ \"name\": {}, \"container\": {}, \
         \"ssh\": {}, \"user\": \"root\" }},\n    \"ssh_key\": {},\n    \"dnf_vmid\": {DNF_VMID},\n    \"openrc_vmid\": {OPENRC_VMID},\n    \"sim_file\": {},\n    \"guests\": [\n{}\n    ]\n  }}",
        json_str(systemd::IMAGE),
        json_str(node::IMAGE),
        json_str(node::NODE),
        json_str(&pve.node_container),
        json_str(&format!("127.0.0.1:{}", pve.node_port)),
        json_str(&pve.key.to_string_lossy()),
        pve.sim_file
            .as_ref()
            .map(|p| json_str(&p.to_string_lossy()))
            .unwrap_or_else(|| "null".into()),
        guests.join(",\n"),
    )
}
