//! `cargo xtask dockerd [start|stop]`: makes sure a Docker engine answers. This sandbox has
//! the client only, so we start Debian's `dockerd` ourselves without a bridge and without
//! iptables (containers use `--network host`); data stays in /var/lib/docker so the lab
//! image survives restarts. Falls back to the vfs storage driver if overlay2 cannot mount.

use crate::proc::{cmd, poll};
use crate::state;
use anyhow::{bail, Result};
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

fn dir() -> Result<PathBuf> {
    let d = state::state_dir()?.join("dockerd");
    fs::create_dir_all(&d)?;
    Ok(d)
}

/// `docker info` answers within a few seconds.
pub fn engine_up() -> bool {
    cmd("docker", ["info", "--format", "{{.ServerVersion}}"])
        .timeout(Duration::from_secs(10))
        .ok()
}

/// Ensures an engine runs. Returns true when this call started it (the caller may stop it).
pub fn ensure() -> Result<bool> {
    if engine_up() {
        return Ok(false);
    }
    if !crate::proc::have("dockerd") {
        bail!("no Docker engine answers and dockerd is not installed (run `cargo xtask prereqs`)");
    }
    let d = dir()?;
    for driver in [None, Some("vfs")] {
        start_once(driver)?;
        if poll(
            Duration::from_secs(60),
            Duration::from_millis(250),
            engine_up,
        ) {
            let how = driver
                .map(|s| format!(" (storage driver {s})"))
                .unwrap_or_default();
            eprintln!(
                "xtask: dockerd started{how}, log {}",
                d.join("dockerd.log").display()
            );
            return Ok(true);
        }
        eprintln!("xtask: dockerd did not come up with storage driver {driver:?}; see log");
        state::stop_pid(&d.join("xtask.pid"), Duration::from_secs(15))?;
    }
    let log = fs::read_to_string(d.join("dockerd.log")).unwrap_or_default();
    bail!(
        "dockerd did not start; last log lines:\n{}",
        crate::proc::tail(&log, 25)
    )
}

fn start_once(driver: Option<&str>) -> Result<()> {
    let d = dir()?;
    let mut args = vec![
        "--bridge=none".to_string(),
        "--iptables=false".to_string(),
        "--ip6tables=false".to_string(),
        "--ip-masq=false".to_string(),
        format!("--pidfile={}", d.join("docker.pid").display()),
    ];
    if let Some(driver) = driver {
        args.push(format!("--storage-driver={driver}"));
    }
    state::spawn_detached(
        cmd("dockerd", args),
        &d.join("dockerd.log"),
        &d.join("xtask.pid"),
    )?;
    Ok(())
}

/// Stops the engine if xtask started it (never one it did not start).
pub fn stop() -> Result<()> {
    let d = dir()?;
    if state::stop_pid(&d.join("xtask.pid"), Duration::from_secs(20))? {
        eprintln!("xtask: dockerd stopped");
    }
    Ok(())
}
