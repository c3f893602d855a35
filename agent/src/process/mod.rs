//! The one process runner: every external command the agent starts (apt-get, apt,
//! apt-mark, dpkg-query, dnf, rpm, apk, sudo) goes through [`run`], which captures stdout and
//! stderr (tail-truncated to [`MAX_OUTPUT`] bytes each), enforces the command's [`Limit`] and
//! names the command in every error.
//!
//! Every child starts in a process group of its own, and a child is only ever stopped as a
//! group: SIGTERM to the whole group, SIGKILL to the group only when it is still there after
//! the grace period. Killing one process (`sudo`, a shell) would leave its children — apt,
//! dpkg, a maintainer script — running unsupervised.
//!
//! Two limits: read-only work (scans, dry-runs, list refreshes) has a [`Limit::Deadline`]; a
//! package transaction (install, repair) has a [`Limit::Silence`] instead: it may take as
//! long as it needs and is stopped only when it printed nothing at all for that long (a hung
//! package manager), because stopping dpkg halfway is worse than a late result.
//!
//! Nothing here needs root: what needs root goes through the helper (`crate::helper`), which
//! runs its package-manager commands with [`run_passthrough`].

mod capture;

use capture::{pump, Activity, Tail};
use rustix::process::{kill_process_group, Pid, Signal};
use std::fmt;
use std::future::Future;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Captured output is cut to its last `MAX_OUTPUT` bytes (the end of an apt or dnf
/// log is where the error is).
pub const MAX_OUTPUT: usize = 64 * 1024;

/// Between the group SIGTERM and the group SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// After the child exited, how long its pipes may stay open (a daemon a maintainer script
/// started may hold them) before the output is taken as complete.
const DRAIN: Duration = Duration::from_secs(2);

/// How long a command may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Stopped when it runs longer than this (read-only work).
    Deadline(Duration),
    /// Never stopped for taking long; stopped when it printed nothing on stdout or stderr
    /// for this long (package transactions: `hang_timeout_secs`).
    Silence(Duration),
    /// Runs until it ends or the caller's stop future fires (the helper: its caller watches).
    Unlimited,
}

/// A command to run: program, arguments, environment, limit.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub limit: Limit,
    /// Between the group SIGTERM and the group SIGKILL when the command is stopped.
    pub grace: Duration,
    /// Start from an empty environment (only `env`): the helper's package-manager commands
    /// take nothing from the caller.
    pub clear_env: bool,
    /// Working directory (`/` for the helper's commands), else the caller's.
    pub dir: Option<String>,
}

impl Cmd {
    /// A command with the C locale (parsers read English output) and a 5 minute deadline.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: vec![("LC_ALL".into(), "C".into()), ("LANG".into(), "C".into())],
            limit: Limit::Deadline(Duration::from_secs(300)),
            grace: STOP_GRACE,
            clear_env: false,
            dir: None,
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// A deadline (read-only work).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.limit = Limit::Deadline(t);
        self
    }

    pub fn limit(mut self, limit: Limit) -> Self {
        self.limit = limit;
        self
    }

    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The argv as one line, for messages.
    pub fn line(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

/// What a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Exit code; `-1` when the process was killed by a signal.
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub duration: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// Turn a non-zero exit into an error naming the command and its stderr tail.
    /// `ok_codes` lists extra codes that are not failures (dnf check-update: 100).
    pub fn check(self, ok_codes: &[i32]) -> Result<Self, ProcessError> {
        if self.exit_code == 0 || ok_codes.contains(&self.exit_code) {
            Ok(self)
        } else {
            Err(ProcessError::Failed {
                command: self.command.clone(),
                exit_code: self.exit_code,
                stderr_tail: tail_lines(&self.stderr, 5),
            })
        }
    }
}

/// Why a command was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// It ran past its [`Limit::Deadline`].
    Deadline(Duration),
    /// It printed nothing for its [`Limit::Silence`].
    Silent(Duration),
    /// The caller asked (the helper got SIGTERM).
    Requested,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Deadline(d) => write!(f, "timed out after {} s", d.as_secs_f64()),
            Self::Silent(d) => write!(
                f,
                "printed nothing for {} s and looks hung",
                d.as_secs_f64()
            ),
            Self::Requested => f.write_str("was asked to stop"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("could not start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "`{command}` {reason}: stopped with SIGTERM to its process group{}",
        if *killed { ", then SIGKILL after the grace period" } else { "" }
    )]
    Stopped {
        command: String,
        reason: StopReason,
        /// SIGTERM was not enough.
        killed: bool,
        /// What it printed before it was stopped (tails).
        stdout: String,
        stderr: String,
    },
    #[error("`{command}` failed with exit code {exit_code}: {stderr_tail}")]
    Failed {
        command: String,
        exit_code: i32,
        stderr_tail: String,
    },
    #[error("waiting for `{command}` failed: {source}")]
    Wait {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("refused `{command}`: {reason}")]
    Refused { command: String, reason: String },
}

impl ProcessError {
    /// Exit code to report in a `CommandResult` (-1 when the process did not finish).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Failed { exit_code, .. } => *exit_code,
            _ => -1,
        }
    }

    /// Stopped by the hang watchdog.
    pub fn hung(&self) -> bool {
        matches!(
            self,
            Self::Stopped {
                reason: StopReason::Silent(_),
                ..
            }
        )
    }
}

/// The process group of a child started here (its pid is the group id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group(Pid);

impl Group {
    fn of(child: &Child) -> Option<Group> {
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw)
            .map(Group)
    }

    /// Sends `sig` to every process of the group that this process may signal (a group
    /// that is gone already is not an error).
    pub fn signal(self, sig: Signal) {
        if let Err(e) = kill_process_group(self.0, sig) {
            tracing::debug!(group = self.0.as_raw_nonzero().get(), ?sig, error = %e, "signalling the process group");
        }
    }
}

/// SIGTERM to the group when the supervising future is dropped before the child ended (a
/// group is never left running unsupervised, and never SIGKILLed without a grace period).
struct TermOnDrop(Option<Group>);

impl Drop for TermOnDrop {
    fn drop(&mut self) {
        if let Some(g) = self.0.take() {
            g.signal(Signal::TERM);
        }
    }
}

fn spawn(cmd: &Cmd, capture: bool) -> Result<Child, ProcessError> {
    let mut c = Command::new(&cmd.program);
    c.args(&cmd.args);
    if cmd.clear_env {
        c.env_clear();
    }
    c.envs(cmd.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Some(dir) = &cmd.dir {
        c.current_dir(dir);
    }
    let out = || {
        if capture {
            Stdio::piped()
        } else {
            Stdio::inherit()
        }
    };
    c.stdin(Stdio::null())
        .stdout(out())
        .stderr(out())
        .process_group(0)
        .kill_on_drop(false);
    let child = c.spawn().map_err(|source| ProcessError::Spawn {
        command: cmd.line(),
        source,
    })?;
    tracing::debug!(command = %cmd, "started");
    Ok(child)
}

enum Supervised<T> {
    Finished(T),
    Stopped { reason: StopReason, killed: bool },
}

/// Fires when `limit` is reached.
async fn watchdog(limit: Limit, activity: &Activity) -> StopReason {
    match limit {
        Limit::Deadline(d) => {
            tokio::time::sleep(d).await;
            StopReason::Deadline(d)
        }
        Limit::Silence(d) => loop {
            let due = activity.last() + d;
            if Instant::now() >= due {
                return StopReason::Silent(d);
            }
            tokio::time::sleep_until(due.into()).await;
        },
        Limit::Unlimited => std::future::pending().await,
    }
}

/// Waits for `work` (the child and its pipes); when the limit or `stop` fires first, stops
/// the group: SIGTERM, and SIGKILL only if it is still there after the grace period.
async fn supervise<W: Future>(
    cmd: &Cmd,
    group: Option<Group>,
    work: W,
    activity: &Activity,
    stop: impl Future<Output = ()>,
) -> Supervised<W::Output> {
    tokio::pin!(work);
    let reason = tokio::select! {
        r = &mut work => return Supervised::Finished(r),
        r = watchdog(cmd.limit, activity) => r,
        _ = stop => StopReason::Requested,
    };
    tracing::warn!(command = %cmd, %reason, "stopping its process group with SIGTERM");
    if let Some(g) = group {
        g.signal(Signal::TERM);
    }
    if tokio::time::timeout(cmd.grace, &mut work).await.is_ok() {
        return Supervised::Stopped {
            reason,
            killed: false,
        };
    }
    tracing::warn!(command = %cmd, grace_secs = cmd.grace.as_secs_f64(), "still running after SIGTERM: SIGKILL to its process group");
    if let Some(g) = group {
        g.signal(Signal::KILL);
    }
    let _ = tokio::time::timeout(cmd.grace, &mut work).await;
    Supervised::Stopped {
        reason,
        killed: true,
    }
}

/// Run `cmd` within its limit and capture its output.
///
/// A non-zero exit is *not* an error here (see [`Output::check`]); failing to start,
/// failing to wait and being stopped are.
pub async fn run(cmd: &Cmd) -> Result<Output, ProcessError> {
    run_until(cmd, std::future::pending()).await
}

/// [`run`], also stopped (the same way) when `stop` completes.
pub async fn run_until(cmd: &Cmd, stop: impl Future<Output = ()>) -> Result<Output, ProcessError> {
    let command = cmd.line();
    let started = Instant::now();
    let mut child = spawn(cmd, true)?;
    let group = Group::of(&child);
    let mut guard = TermOnDrop(group);
    let activity = Activity::new();
    let (out_tail, err_tail) = (Tail::default(), Tail::default());
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let work = async {
        let pumps = async {
            tokio::join!(
                pump(out, &out_tail, &activity),
                pump(err, &err_tail, &activity)
            )
        };
        tokio::pin!(pumps);
        let wait = child.wait();
        tokio::pin!(wait);
        let (status, drained) = tokio::select! {
            s = &mut wait => (s, false),
            _ = &mut pumps => ((&mut wait).await, true),
        };
        if !drained {
            let _ = tokio::time::timeout(DRAIN, &mut pumps).await;
        }
        status
    };
    let outcome = supervise(cmd, group, work, &activity, stop).await;
    guard.0 = None;
    match outcome {
        Supervised::Finished(status) => {
            let status = status.map_err(|source| ProcessError::Wait {
                command: command.clone(),
                source,
            })?;
            let exit_code = status.code().unwrap_or(-1);
            tracing::debug!(%command, exit_code, elapsed_ms = started.elapsed().as_millis() as u64, "finished");
            Ok(Output {
                command,
                exit_code,
                stdout: out_tail.text(),
                stderr: err_tail.text(),
                duration: started.elapsed(),
            })
        }
        Supervised::Stopped { reason, killed } => Err(ProcessError::Stopped {
            command,
            reason,
            killed,
            stdout: out_tail.text(),
            stderr: err_tail.text(),
        }),
    }
}

/// Run `cmd` with this process's stdout and stderr (nothing captured) until it ends or
/// `stop` completes; returns its exit code (128 + the signal when a signal ended it). The
/// helper runs the package managers so, and its caller watches the output.
pub async fn run_passthrough(
    cmd: &Cmd,
    stop: impl Future<Output = ()>,
) -> Result<i32, ProcessError> {
    use std::os::unix::process::ExitStatusExt;
    let mut child = spawn(cmd, false)?;
    let group = Group::of(&child);
    let mut guard = TermOnDrop(group);
    let activity = Activity::new();
    let outcome = supervise(cmd, group, child.wait(), &activity, stop).await;
    guard.0 = None;
    match outcome {
        Supervised::Finished(status) => {
            let status = status.map_err(|source| ProcessError::Wait {
                command: cmd.line(),
                source,
            })?;
            Ok(status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(-1))
        }
        Supervised::Stopped { reason, killed } => Err(ProcessError::Stopped {
            command: cmd.line(),
            reason,
            killed,
            stdout: String::new(),
            stderr: String::new(),
        }),
    }
}

/// Cut a string to its last `max` bytes on a char boundary.
pub fn truncate_tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[… truncated …]\n{}", &s[start..])
}

pub(crate) fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    let tail = lines[start..].join(" | ");
    if tail.is_empty() {
        "(no stderr)".into()
    } else {
        tail
    }
}

/// The first executable `program` in `path` (a `PATH`-style list).
pub fn which_in(program: &str, path: &std::ffi::OsStr) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .map(|d| d.join(program))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Whether `program` is an executable somewhere on `PATH`.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    which_in(program, &path)
}

#[cfg(test)]
mod tests;
