//! One Docker engine per Docker guest, run natively on the host: `dockerd` with its own
//! `--data-root` (`.lab/docker/engines/VMID/data`), `--exec-root` (`/run/canopy-lab/VMID`: it
//! must be short, dockerd puts 81-character socket names in it), socket
//! (`/run/canopy-lab/VMID.sock`), pid file and containerd namespace (`canopy-lab-VMID`), no
//! bridge and no iptables (containers use the host network), the main engine's storage
//! driver; its own containerd unless the machine runs one. The guest container
//! gets that socket bind-mounted at `/run/docker.sock`, so each guest sees only its own
//! containers, while they run on the host as real containers. Wiped at every `lab up`.

use super::base::remove_tree;
use super::daemon::Daemon;
use crate::proc::{cmd, Cmd};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

/// dockerd puts `EXEC_ROOT/libnetwork/<64 hex>.sock` in it; a socket path has at most 107 bytes.
const MAX_EXEC_ROOT: usize = 26;

/// The runtime files of the engine of guest `vmid`.
pub struct Engine {
    pub vmid: u32,
    pub socket: PathBuf,
    pub exec_root: PathBuf,
    pub data_root: PathBuf,
    pub log: PathBuf,
    daemon: Daemon,
}

/// `/run/canopy-lab` (`/run/canopy-lab-NAME` for an instance).
fn run_dir() -> Result<PathBuf> {
    Ok(PathBuf::from(match super::instance()? {
        None => "/run/canopy-lab".to_string(),
        Some(i) => format!("/run/canopy-lab-{i}"),
    }))
}

pub fn engine(vmid: u32) -> Result<Engine> {
    let run = run_dir()?;
    let exec_root = run.join(vmid.to_string());
    let dir = super::docker_dir()?.join("engines").join(vmid.to_string());
    Ok(Engine {
        vmid,
        socket: run.join(format!("{vmid}.sock")),
        exec_root,
        data_root: dir.join("data"),
        log: dir.join("dockerd.log"),
        daemon: Daemon {
            name: "dockerd",
            dir,
        },
    })
}

impl Engine {
    /// `docker -H unix://SOCKET ARGS…` (60 s timeout).
    pub fn docker(&self, args: &[&str]) -> Cmd {
        cmd("docker", ["-H".to_string(), self.host()])
            .args_from(args)
            .timeout(Duration::from_secs(60))
    }

    /// `unix:///run/canopy-lab/VMID.sock`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn answers(&self) -> bool {
        self.docker(&["version", "--format", "{{.Server.Version}}"])
            .timeout(Duration::from_secs(5))
            .ok()
    }

    /// Starts the engine (not waiting for it); its state must be gone (`stop`).
    fn spawn(&self, driver: &str) -> Result<()> {
        if self.exec_root.as_os_str().len() > MAX_EXEC_ROOT {
            bail!(
                "the exec root {} of a Docker guest's engine is longer than {MAX_EXEC_ROOT} \
                 bytes: use a shorter CANOPY_LAB_INSTANCE",
                self.exec_root.display()
            );
        }
        fs::create_dir_all(&self.data_root)?;
        fs::create_dir_all(self.socket.parent().context("socket dir")?)?;
        // Its own namespace also where engines share the machine's containerd.
        let ns = match super::instance()? {
            None => format!("canopy-lab-{}", self.vmid),
            Some(i) => format!("canopy-lab-{i}-{}", self.vmid),
        };
        let args = [
            format!("--data-root={}", self.data_root.display()),
            format!("--exec-root={}", self.exec_root.display()),
            format!("--host={}", self.host()),
            format!("--pidfile={}", self.socket.with_extension("pid").display()),
            format!("--containerd-namespace={ns}"),
            format!("--containerd-plugins-namespace={ns}-plugins"),
            format!("--storage-driver={driver}"),
            "--bridge=none".into(),
            "--iptables=false".into(),
            "--ip6tables=false".into(),
            "--ip-masq=false".into(),
            "--userland-proxy=false".into(),
        ];
        self.daemon
            .spawn(cmd("dockerd", &args), &self.log, &self.log)
            .map(drop)
    }

    fn wait(&self) -> Result<()> {
        self.daemon
            .wait(Duration::from_secs(60), &self.log, || self.answers())
    }

    /// Stops the engine (its containers stop with it) and unmounts what it left mounted.
    pub fn stop(&self) -> Result<()> {
        self.daemon.stop(Duration::from_secs(40))?;
        unmount_below(&self.data_root)?;
        unmount_below(&self.exec_root)
    }

    /// Starts the engine on its existing data (a guest started again) and waits for it.
    pub fn start(&self) -> Result<()> {
        if self.daemon.running().is_some() && self.answers() {
            return Ok(());
        }
        self.stop()?;
        self.spawn(&main_driver()?)?;
        self.wait()
    }

    /// Stops the engine and removes all its state.
    fn wipe(&self) -> Result<()> {
        self.stop()?;
        remove_tree(&self.daemon.dir)?;
        remove_tree(&self.exec_root)?;
        let _ = fs::remove_file(&self.socket);
        let _ = fs::remove_file(self.socket.with_extension("pid"));
        Ok(())
    }
}

/// The main engine's storage driver (overlay2, or vfs where overlay cannot mount).
fn main_driver() -> Result<String> {
    let driver = cmd("docker", ["info", "--format", "{{.Driver}}"])
        .timeout(Duration::from_secs(30))
        .output()?;
    Ok(driver.trim().to_string())
}

/// Fresh engines for `vmids`, all started at once; returns when all answer.
pub fn start_fresh(vmids: impl Iterator<Item = u32>) -> Result<Vec<Engine>> {
    if !crate::proc::have("dockerd") {
        bail!("dockerd is not installed (run `cargo xtask prereqs`)");
    }
    let driver = main_driver()?;
    let mut engines = Vec::new();
    for vmid in vmids {
        let e = engine(vmid)?;
        e.wipe()?;
        e.spawn(&driver)?;
        engines.push(e);
    }
    for e in &engines {
        e.wait()
            .with_context(|| format!("the Docker engine of guest {}", e.vmid))?;
    }
    Ok(engines)
}

/// Stops and wipes the engines of `vmids` (those that exist).
pub fn remove(vmids: impl Iterator<Item = u32>) -> Result<()> {
    for vmid in vmids {
        engine(vmid)?.wipe()?;
    }
    let run = run_dir()?;
    if run.is_dir() && fs::read_dir(&run)?.next().is_none() {
        fs::remove_dir(&run)?;
    }
    Ok(())
}

/// `umount -l` of every mount point below `dir`, deepest first (left by a killed dockerd).
fn unmount_below(dir: &std::path::Path) -> Result<()> {
    let prefix = format!("{}/", dir.display());
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|p| p.starts_with(&prefix) || *p == prefix.trim_end_matches('/'))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        cmd("umount", ["-l", &p])
            .timeout(Duration::from_secs(30))
            .output()
            .with_context(|| format!("unmount {p} (left by a Docker guest's engine)"))?;
    }
    Ok(())
}

/// mountinfo escapes space, tab, newline and backslash as `\NNN` (octal).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(super::unescape("/a\\040b/c"), "/a b/c");
        assert_eq!(super::unescape("/plain"), "/plain");
    }
}
