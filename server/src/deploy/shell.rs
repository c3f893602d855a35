//! A shell inside one guest, whichever way it is reached: SSH to the guest's PVE node and
//! `pct exec` / `pct push` (PVE has no REST call that runs a command in a container), or SSH
//! straight into the guest. The deploy steps are written once against this.
//!
//! Secrets never travel on a command line: they go through the command's stdin
//! (`pct exec` passes stdin through).

use super::ssh::{quote, RemoteOutput, Ssh, SshError};
use anyhow::{bail, Context, Result};
use canopy_api_types::deploy::Route;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Where the node keeps the agent binary between `pct push`es, keyed by its checksum.
const NODE_STAGING: &str = "/var/tmp/canopy-deploy";

#[derive(Clone)]
pub struct Shell {
    ssh: Ssh,
    via: Via,
    timeout: Duration,
}

#[derive(Clone)]
enum Via {
    /// `pct exec VMID` on the node; `staging` serialises the node-side upload of the binary.
    Pct {
        vmid: u32,
        staging: Arc<tokio::sync::Mutex<()>>,
    },
    /// A login on the guest itself; `sudo` when the user is not root.
    Direct { sudo: bool },
}

impl Shell {
    pub fn pct(
        node: Ssh,
        vmid: u32,
        staging: Arc<tokio::sync::Mutex<()>>,
        timeout: Duration,
    ) -> Self {
        Self {
            ssh: node,
            via: Via::Pct { vmid, staging },
            timeout,
        }
    }

    pub fn direct(guest: Ssh, user: &str, timeout: Duration) -> Self {
        Self {
            ssh: guest,
            via: Via::Direct {
                sudo: user != "root",
            },
            timeout,
        }
    }

    pub fn route(&self) -> Route {
        match self.via {
            Via::Pct { .. } => Route::Pct,
            Via::Direct { .. } => Route::Ssh,
        }
    }

    /// The command line that runs `script` with `sh` inside the guest.
    fn command(&self, script: &str) -> String {
        match &self.via {
            Via::Pct { vmid, .. } => format!("pct exec {vmid} -- sh -c {}", quote(script)),
            Via::Direct { sudo: false } => format!("sh -c {}", quote(script)),
            Via::Direct { sudo: true } => format!("sudo -n sh -c {}", quote(script)),
        }
    }

    /// Runs `script` in the guest; a non-zero exit is returned, not an error.
    pub async fn run(
        &self,
        script: &str,
        stdin: Option<Vec<u8>>,
    ) -> Result<RemoteOutput, SshError> {
        self.ssh
            .exec(&self.command(script), stdin, self.timeout)
            .await
    }

    /// Runs `script` in the guest and returns its stdout; a non-zero exit is an error that
    /// says `what` failed and shows the end of its output.
    pub async fn ok(&self, what: &str, script: &str, stdin: Option<Vec<u8>>) -> Result<String> {
        let out = self.run(script, stdin).await?;
        if !out.success() {
            bail!("{what} failed (exit {}): {}", out.exit_code, out.tail());
        }
        Ok(out.stdout)
    }

    /// Writes `content` to `dest` in the guest with `mode`, through stdin (never a command
    /// line), atomically (temporary file, then rename).
    pub async fn write_file(&self, dest: &str, mode: &str, content: &[u8]) -> Result<()> {
        let dir = Path::new(dest)
            .parent()
            .and_then(|p| p.to_str())
            .unwrap_or("/");
        let tmp = format!("{dest}.canopy-tmp");
        let script = format!(
            "set -e; umask 077; mkdir -p {d}; cat > {t}; chmod {mode} {t}; mv -f {t} {f}",
            d = quote(dir),
            t = quote(&tmp),
            f = quote(dest),
        );
        self.ok(&format!("writing {dest}"), &script, Some(content.to_vec()))
            .await
            .map(drop)
    }

    /// Puts the local file `local` (SHA-256 `sha`) at `dest` in the guest with mode 0755:
    /// `pct push` from the node's staging copy (uploaded once per node and checksum), or scp.
    pub async fn push_executable(&self, local: &Path, sha: &str, dest: &str) -> Result<()> {
        match &self.via {
            Via::Pct { vmid, staging } => {
                let staged = format!("{NODE_STAGING}/canopy-agent-{sha}");
                {
                    let _one_upload_per_node = staging.lock().await;
                    let check = format!(
                        "test \"$(sha256sum {s} 2>/dev/null | cut -d' ' -f1)\" = {sha}",
                        s = quote(&staged)
                    );
                    if !self.ssh.exec(&check, None, self.timeout).await?.success() {
                        let part = format!("{staged}.part");
                        node_ok(
                            &self.ssh,
                            &format!("mkdir -p -m 0700 {NODE_STAGING}"),
                            self.timeout,
                        )
                        .await?;
                        self.ssh
                            .upload(local, &part, 0o600, self.timeout)
                            .await
                            .context("uploading the agent to the node")?;
                        node_ok(
                            &self.ssh,
                            &format!(
                                "test \"$(sha256sum {p} | cut -d' ' -f1)\" = {sha} && mv -f {p} {s}",
                                p = quote(&part),
                                s = quote(&staged)
                            ),
                            self.timeout,
                        )
                        .await
                        .context("the agent copied to the node has the wrong checksum")?;
                    }
                }
                node_ok(
                    &self.ssh,
                    &format!(
                        "pct push {vmid} {} {} --perms 0755",
                        quote(&staged),
                        quote(dest)
                    ),
                    self.timeout,
                )
                .await
                .context("pct push of the agent")
            }
            Via::Direct { sudo: false } => self
                .ssh
                .upload(local, dest, 0o755, self.timeout)
                .await
                .context("copying the agent to the guest"),
            Via::Direct { sudo: true } => {
                let tmp = format!("/tmp/canopy-agent-{sha}");
                self.ssh
                    .upload(local, &tmp, 0o700, self.timeout)
                    .await
                    .context("copying the agent to the guest")?;
                self.ok(
                    "moving the agent into place",
                    &format!(
                        "install -m 0755 {} {} && rm -f {0}",
                        quote(&tmp),
                        quote(dest)
                    ),
                    None,
                )
                .await
                .map(drop)
            }
        }
    }

    /// `pct status VMID` on the node: `running`, `stopped`, …; `None` for direct guests.
    /// An unknown VMID is an error carrying pct's own message.
    pub async fn pct_status(&self) -> Result<Option<String>> {
        let Via::Pct { vmid, .. } = &self.via else {
            return Ok(None);
        };
        let out = self
            .ssh
            .exec(&format!("pct status {vmid}"), None, self.timeout)
            .await?;
        if !out.success() {
            bail!("pct status {vmid} on the node failed: {}", out.tail());
        }
        let status = out
            .stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("status:"))
            .map(|s| s.trim().to_string())
            .with_context(|| format!("pct status {vmid} printed no status: {:?}", out.stdout))?;
        Ok(Some(status))
    }
}

/// Runs `command` on the node itself (not in a guest); non-zero exit is an error.
async fn node_ok(ssh: &Ssh, command: &str, timeout: Duration) -> Result<()> {
    let out = ssh.exec(command, None, timeout).await?;
    if !out.success() {
        bail!("`{command}` on {} failed: {}", ssh.address, out.tail());
    }
    Ok(())
}
