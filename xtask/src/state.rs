//! Where xtask keeps its runtime state (pid files, logs, data dirs) and small helpers for the
//! background processes it owns: detached spawning, pid files, free ports, a stable hash.

use crate::proc::{cmd, Cmd};
use anyhow::{bail, Context, Result};
use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// `CI=true` (or `1`): missing prerequisites are hard failures.
pub fn is_ci() -> bool {
    matches!(
        std::env::var("CI").as_deref(),
        Ok("true") | Ok("1") | Ok("yes")
    )
}

/// The workspace root (the directory holding the root `Cargo.toml`).
pub fn repo_root() -> Result<PathBuf> {
    // `cargo run` sets CARGO_MANIFEST_DIR at run time to xtask/; fall back to the build-time one.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let root = manifest
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf();
    if !root.join("Cargo.toml").is_file() {
        bail!(
            "cannot find the workspace root above {}",
            manifest.display()
        );
    }
    Ok(root)
}

/// Runtime state: `CANOPY_XTASK_STATE` or `/tmp/canopy-xtask` (world-traversable so the
/// unprivileged PostgreSQL user can reach its data dir).
pub fn state_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("CANOPY_XTASK_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/canopy-xtask"));
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// Build cache that survives across runs on the same machine: `CANOPY_LAB_CACHE` or
/// `$HOME/.cache/canopy-lab`.
pub fn cache_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("CANOPY_LAB_CACHE") {
        Some(d) => PathBuf::from(d),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/canopy-lab")
        }
    };
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Starts `command` in its own process group with output appended to `log`, writes its pid to
/// `pidfile` and returns the pid. The process outlives xtask.
pub fn spawn_detached(command: Cmd, log: &Path, pidfile: &Path) -> Result<u32> {
    let shown = command.shown().to_string();
    let program = shown.split_whitespace().next().unwrap_or("").to_string();
    let logfile = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let mut command = command.into_command();
    command
        .stdin(Stdio::null())
        .stdout(logfile.try_clone()?)
        .stderr(logfile)
        .process_group(0);
    let child = command
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let pid = child.id();
    // The program name guards against a stale pid file whose pid was reused after a reboot.
    fs::write(pidfile, format!("{pid}\n{program}\n"))?;
    Ok(pid)
}

/// The pid in `pidfile` if that process is still alive and still runs the recorded program.
pub fn running_pid(pidfile: &Path) -> Option<u32> {
    let text = fs::read_to_string(pidfile).ok()?;
    let mut lines = text.lines();
    let pid: u32 = lines.next()?.trim().parse().ok()?;
    if let Some(program) = lines.next().map(str::trim).filter(|p| !p.is_empty()) {
        let base = program.rsplit('/').next().unwrap_or(program);
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(base) {
            return None;
        }
    }
    pid_alive(pid).then_some(pid)
}

/// Alive and not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL. Removes `pidfile`.
pub fn stop_pid(pidfile: &Path, grace: std::time::Duration) -> Result<bool> {
    let Some(pid) = running_pid(pidfile) else {
        let _ = fs::remove_file(pidfile);
        return Ok(false);
    };
    let _ = cmd("kill", ["-TERM", &pid.to_string()]).ok();
    let gone = crate::proc::poll(grace, std::time::Duration::from_millis(100), || {
        !pid_alive(pid)
    });
    if !gone {
        let _ = cmd("kill", ["-KILL", &pid.to_string()]).ok();
    }
    let _ = fs::remove_file(pidfile);
    Ok(true)
}

/// A detached shell that runs `teardown` once process `pid` (xtask) is gone, however it ended:
/// Ctrl-C kills xtask and the children in its process group, never the detached containers and
/// servers it started. [`Watchdog::disarm`] it once xtask has torn down by itself.
pub struct Watchdog {
    pidfile: PathBuf,
}

impl Watchdog {
    /// `name` keeps its pid file and log apart (`STATE/NAME-watchdog.{pid,log}`).
    pub fn spawn(name: &str, pid: u32, teardown: &str) -> Result<Watchdog> {
        let dir = state_dir()?;
        let script = format!("while kill -0 {pid} 2>/dev/null; do sleep 1; done; {teardown}");
        let pidfile = dir.join(format!("{name}-watchdog.pid"));
        spawn_detached(
            cmd("sh", ["-c", &script]),
            &dir.join(format!("{name}-watchdog.log")),
            &pidfile,
        )?;
        Ok(Watchdog { pidfile })
    }

    /// Stops the watchdog without running its teardown.
    pub fn disarm(self) -> Result<()> {
        stop_pid(&self.pidfile, std::time::Duration::from_secs(5)).map(|_| ())
    }
}

/// FNV-1a 64: a hash that is stable across Rust releases, for cache keys.
#[derive(Clone, Copy)]
pub struct StableHash(u64);

impl StableHash {
    pub fn new() -> Self {
        StableHash(0xcbf2_9ce4_8422_2325)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // Separator so that ("ab","c") and ("a","bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// Escapes `s` as a JSON string literal (with quotes).
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A process standing in for xtask, its teardown marker, and its watchdog.
    fn watched(name: &str) -> (std::process::Child, PathBuf, Watchdog) {
        let marker = state_dir()
            .unwrap()
            .join(format!("{name}-{}.torn-down", std::process::id()));
        let _ = fs::remove_file(&marker);
        let xtask = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let teardown = format!("touch '{}'", marker.display());
        let dog = Watchdog::spawn(
            &format!("{name}-{}", std::process::id()),
            xtask.id(),
            &teardown,
        )
        .unwrap();
        (xtask, marker, dog)
    }

    #[test]
    fn the_teardown_runs_when_xtask_is_interrupted() {
        let (mut xtask, marker, _dog) = watched("test-interrupted");
        // Ctrl-C: SIGINT to xtask, which dies without running any code of its own.
        cmd("kill", ["-INT", &xtask.id().to_string()])
            .output()
            .unwrap();
        xtask.wait().unwrap();
        assert!(
            crate::proc::poll(Duration::from_secs(20), Duration::from_millis(50), || {
                marker.exists()
            }),
            "the watchdog did not tear down"
        );
        fs::remove_file(&marker).unwrap();
    }

    #[test]
    fn a_disarmed_watchdog_tears_nothing_down() {
        let (mut xtask, marker, dog) = watched("test-disarmed");
        dog.disarm().unwrap();
        xtask.kill().unwrap();
        xtask.wait().unwrap();
        // The watchdog is gone (its pid file too), so nothing can run its teardown any more.
        let pidfile = state_dir()
            .unwrap()
            .join(format!("test-disarmed-{}-watchdog.pid", std::process::id()));
        assert!(!pidfile.exists());
        assert!(!marker.exists());
    }
}
