//! The PVE node stand-in: container `canopy-lab-pve1` (image `canopy-lab/pve-node:bookworm`,
//! the debootstrapped base, which already carries openssh-server) runs a real sshd as its
//! main process on its own 127.0.0.1 port (host network: every sshd needs its own port), root
//! login by the lab key only. The Docker CLI and socket are bind-mounted from the host, and
//! `lab/node/pct` is copied to `/usr/sbin/pct`: a shim that maps `pct exec/push/pull/status/list`
//! onto the guest containers listed in `/etc/canopy-lab/guests`. So the server reaches guests
//! exactly as on PVE: `ssh root@node pct exec VMID -- …`.

use super::base::{base_key, base_tarball, unpack};
use super::image::{self, machine_id_sh, INIT};
use crate::proc::{cmd, Cmd};
use crate::state::{self, StableHash};
use anyhow::{bail, Context, Result};
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const IMAGE: &str = "canopy-lab/pve-node:bookworm";
/// The node's PVE name (its hostname; `pct` prints it in its errors).
pub const NODE: &str = "pve1";
/// The shim in the repository, and where it goes in the node.
const SHIM: &str = "lab/node/pct";
const SHIM_PATH: &str = "/usr/sbin/pct";
pub const GUESTS_FILE: &str = "/etc/canopy-lab/guests";
const NODE_INIT_PATH: &str = "usr/local/sbin/canopy-lab-node-init";
/// Bump when the steps below change in a way the hash inputs do not show.
const RECIPE_VERSION: &str = "node-image-v1";

/// The node's command: its own machine-id and host keys, the sshd drop-in and authorized key
/// handed over in the environment by `lab up`, then sshd in the foreground.
const NODE_INIT: &str = concat!(
    "#!/bin/sh\n\
# canopy lab PVE node: a machine-id and SSH host keys of its own, the lab key for root, sshd.\n\
set -e\n",
    machine_id_sh!(),
    "ssh-keygen -A >/dev/null\n\
mkdir -p /run/sshd /root/.ssh\n\
chmod 700 /root/.ssh\n\
printf '%s\\n' \"$CANOPY_LAB_AUTHORIZED_KEYS\" > /root/.ssh/authorized_keys\n\
chmod 600 /root/.ssh/authorized_keys\n\
printf '%s' \"$CANOPY_LAB_SSHD_CONFIG\" > /etc/ssh/sshd_config.d/canopy-lab.conf\n\
exec /usr/sbin/sshd -D -e\n"
);

/// The content hash of the node image.
pub fn image_key() -> String {
    let mut h = StableHash::new();
    for part in [base_key().as_str(), RECIPE_VERSION, INIT, NODE_INIT] {
        h.update(part.as_bytes());
    }
    h.hex()
}

/// Makes sure the node image with hash `key` exists. Returns seconds spent building.
pub fn ensure(key: &str) -> Result<f64> {
    image::ensure_image(IMAGE, key, || {
        let root = unpack(&base_tarball()?, "noderoot")?;
        image::finish_root(&root)?;
        image::write_exec(&root, NODE_INIT_PATH, NODE_INIT)?;
        image::import(&root, IMAGE, key, &format!("[\"/{NODE_INIT_PATH}\"]"))
    })
}

/// The sshd drop-in of the node and of guests with their own sshd: 127.0.0.1:`port` only
/// (containers share the host network), root by key only. No PAM: pam_loginuid cannot write
/// /proc/self/loginuid in an unprivileged container and would end every session.
pub fn sshd_config(port: u16) -> String {
    format!(
        "# canopy lab (written by cargo xtask lab up)\nListenAddress 127.0.0.1\nPort {port}\n\
         PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nUsePAM no\n"
    )
}

/// The lab's ed25519 key pair (`lab_dir/ssh/id_ed25519`), generated once and kept.
pub fn ssh_key() -> Result<PathBuf> {
    let dir = super::lab_dir()?.join("ssh");
    let key = dir.join("id_ed25519");
    if key.is_file() && key.with_extension("pub").is_file() {
        return Ok(key);
    }
    fs::create_dir_all(&dir)?;
    let _ = fs::remove_file(&key);
    let _ = fs::remove_file(key.with_extension("pub"));
    cmd(
        "ssh-keygen",
        ["-q", "-t", "ed25519", "-N", "", "-C", "canopy-lab", "-f"],
    )
    .arg(&key)
    .timeout(Duration::from_secs(30))
    .output()
    .context("generate the lab SSH key")?;
    Ok(key)
}

/// The public half of `key`, one line.
pub fn public_key(key: &Path) -> Result<String> {
    let text = fs::read_to_string(key.with_extension("pub"))?;
    Ok(text.trim().to_string())
}

/// Starts the node container `name` with sshd on `port`, the Docker CLI and socket, the shim
/// and the `guests` list (`(vmid, container, hostname)`), and waits for sshd to listen.
pub fn start(name: &str, port: u16, key: &Path, guests: &[(u32, String, String)]) -> Result<()> {
    let docker = docker_binary()?;
    let extra = [
        "-v".to_string(),
        "/var/run/docker.sock:/var/run/docker.sock".to_string(),
        "-v".to_string(),
        format!("{}:/usr/bin/docker:ro", docker.display()),
        "--env".to_string(),
        format!("CANOPY_LAB_SSHD_CONFIG={}", sshd_config(port)),
        "--env".to_string(),
        format!("CANOPY_LAB_AUTHORIZED_KEYS={}", public_key(key)?),
    ];
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    super::guest::run_container_with(name, IMAGE, NODE, &extra)?;
    let shim = state::repo_root()?.join(SHIM);
    cmd("docker", ["cp"])
        .arg(&shim)
        .arg(format!("{name}:{SHIM_PATH}"))
        .timeout(Duration::from_secs(30))
        .output()?;
    let list: String = guests
        .iter()
        .map(|(vmid, ct, host)| format!("{vmid} {ct} {host}\n"))
        .collect();
    let write =
        format!("chmod 0755 {SHIM_PATH} && mkdir -p /etc/canopy-lab && cat > {GUESTS_FILE}");
    cmd("docker", ["exec", "-i", name, "sh", "-c", &write])
        .stdin(format!(
            "# VMID CONTAINER NAME (written by cargo xtask lab up)\n{list}"
        ))
        .timeout(Duration::from_secs(30))
        .output()?;
    wait_sshd(name, port)
}

/// Polls until something accepts on 127.0.0.1:`port` (sshd of container `name`).
pub fn wait_sshd(name: &str, port: u16) -> Result<()> {
    let listening = || {
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok()
    };
    if !crate::proc::poll(
        Duration::from_secs(20),
        Duration::from_millis(100),
        listening,
    ) {
        let logs = cmd("docker", ["logs", "--tail", "20", name])
            .capture()
            .map(|o| format!("{}{}", o.stdout, o.stderr))
            .unwrap_or_default();
        bail!("sshd of {name} does not listen on 127.0.0.1:{port}; docker logs:\n{logs}");
    }
    Ok(())
}

/// `ssh` as root to 127.0.0.1:`port` with the lab key, running `remote` (host keys are fresh
/// per container, so none are recorded or checked).
pub fn ssh(key: &Path, port: u16, remote: &str) -> Cmd {
    cmd("ssh", ["-i"])
        .arg(key)
        .args_from(&[
            "-p",
            &port.to_string(),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
            "root@127.0.0.1",
            remote,
        ])
        .timeout(Duration::from_secs(60))
}

/// The host's Docker CLI (a static binary), to bind-mount into the node.
pub(super) fn docker_binary() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("docker"))
        .find(|p| p.is_file())
        .map(|p| fs::canonicalize(&p).unwrap_or(p))
        .context("no docker client on PATH")
}
