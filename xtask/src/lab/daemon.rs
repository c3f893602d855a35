//! The lab's native background servers (the Docker registry, its nginx front, the Docker
//! guests' engines): each a detached child in its own process group, stdout and stderr to files
//! of their own (the registry's access log is its stdout), a pid file in `state.rs`'s format so
//! `stop` ends exactly that process, and a wait for its port or socket.

use crate::proc::Cmd;
use anyhow::{bail, Context, Result};
use std::fs;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// A server's files: `DIR/NAME.out` (stdout), `DIR/NAME.err` (stderr) unless given,
/// `DIR/xtask-NAME.pid`.
pub struct Daemon {
    pub name: &'static str,
    pub dir: PathBuf,
}

impl Daemon {
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join(format!("xtask-{}.pid", self.name))
    }

    /// Stops a running instance (SIGTERM, then SIGKILL after `grace`). Safe to repeat.
    pub fn stop(&self, grace: Duration) -> Result<bool> {
        crate::state::stop_pid(&self.pidfile(), grace)
    }

    /// The pid recorded at `spawn`, alive or not.
    fn pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.pidfile()).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    pub fn running(&self) -> Option<u32> {
        crate::state::running_pid(&self.pidfile())
    }

    /// Starts `command` detached (stdout appended to `stdout`, stderr to `stderr`) and records
    /// its pid. The process outlives xtask.
    pub fn spawn(&self, command: Cmd, stdout: &Path, stderr: &Path) -> Result<u32> {
        fs::create_dir_all(&self.dir)?;
        let shown = command.shown().to_string();
        let program = shown.split_whitespace().next().unwrap_or("").to_string();
        let open = |p: &Path| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("open {}", p.display()))
        };
        let mut command = command.into_command();
        command
            .stdin(Stdio::null())
            .stdout(open(stdout)?)
            .stderr(open(stderr)?)
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        let pid = child.id();
        fs::write(self.pidfile(), format!("{pid}\n{program}\n"))?;
        Ok(pid)
    }

    /// Waits until `ready` holds; fails with the tail of `log` if the process died or it took
    /// longer than `within`.
    pub fn wait(
        &self,
        within: Duration,
        log: &Path,
        mut ready: impl FnMut() -> bool,
    ) -> Result<()> {
        let mut died = false;
        let ok = crate::proc::poll(within, Duration::from_millis(100), || {
            if ready() {
                return true;
            }
            // Not `running()`: while a big binary is still being loaded, /proc/PID/cmdline
            // can read empty, and that would look like another program.
            died = !self.pid().is_some_and(crate::state::pid_alive);
            died
        });
        if ok && !died {
            return Ok(());
        }
        let text = fs::read_to_string(log).unwrap_or_default();
        bail!(
            "{} {} (log {}):\n{}",
            self.name,
            if died {
                "exited at start"
            } else {
                "did not get ready in time"
            },
            log.display(),
            crate::proc::tail(&text, 25)
        )
    }
}

/// Something accepts on 127.0.0.1:`port`.
pub fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}
