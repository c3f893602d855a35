//! The one process runner: every external command the agent starts (apt-get, apt,
//! apt-mark, dpkg-query, dnf, rpm, apk) goes through [`run`], which applies a timeout
//! (the child is killed when it expires), captures stdout and stderr (tail-truncated
//! to [`MAX_OUTPUT`] bytes each) and names the command in every error.
//!
//! A command marked [`Cmd::privileged`] needs root (apt-get install, dnf upgrade, apk add…);
//! when the agent is not root it runs as `sudo -n -- PROGRAM ARGS…`, so a missing sudoers
//! rule fails at once with sudo's own message instead of waiting for a password.

use std::fmt;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Captured output is cut to its last `MAX_OUTPUT` bytes (the end of an apt or dnf
/// log is where the error is).
pub const MAX_OUTPUT: usize = 64 * 1024;

/// A command to run: program, arguments, extra environment, timeout, whether it needs root.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// Needs root: started through `sudo -n --` when the agent is not root (see [`Cmd::argv`]).
    pub privileged: bool,
}

impl Cmd {
    /// A command with the C locale (parsers read English output) and a 5 minute timeout.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: vec![("LC_ALL".into(), "C".into()), ("LANG".into(), "C".into())],
            timeout: Duration::from_secs(300),
            privileged: false,
        }
    }

    /// Mark the command as needing root (it changes the package database or lists).
    pub fn privileged(mut self) -> Self {
        self.privileged = true;
        self
    }

    /// The program and arguments actually started: `sudo -n -- PROGRAM ARGS…` for a
    /// privileged command when the agent is not root, else `PROGRAM ARGS…`. The environment
    /// goes to sudo, which keeps only what sudoers' `env_keep` allows (the server's rule
    /// keeps `LC_ALL LANG DEBIAN_FRONTEND`).
    pub fn argv(&self, is_root: bool) -> Vec<String> {
        let mut argv = Vec::with_capacity(self.args.len() + 4);
        if self.privileged && !is_root {
            argv.extend(["sudo", "-n", "--"].map(String::from));
        }
        argv.push(self.program.clone());
        argv.extend(self.args.iter().cloned());
        argv
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

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
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

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("could not start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` timed out after {timeout:?} and was killed")]
    TimedOut { command: String, timeout: Duration },
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
}

impl ProcessError {
    /// Exit code to report in a `CommandResult` (-1 when the process did not finish).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Failed { exit_code, .. } => *exit_code,
            _ => -1,
        }
    }
}

/// Run `cmd`, wait at most `cmd.timeout`, capture its output.
///
/// A non-zero exit is *not* an error here (see [`Output::check`]); only failing to
/// start, failing to wait and the timeout are.
pub async fn run(cmd: &Cmd) -> Result<Output, ProcessError> {
    let argv = cmd.argv(crate::identity::is_root());
    let command = argv.join(" ");
    let started = Instant::now();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .envs(cmd.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ProcessError::Spawn {
            command: command.clone(),
            source,
        })?;
    tracing::debug!(%command, "started");

    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let work = async {
        let (o, e, status) = tokio::join!(read_tail(&mut out), read_tail(&mut err), child.wait());
        (o, e, status)
    };
    let (stdout, stderr, status) = match tokio::time::timeout(cmd.timeout, work).await {
        Ok(r) => r,
        Err(_) => {
            // `child` is still owned here; kill it and reap it.
            let _ = child.kill().await;
            return Err(ProcessError::TimedOut {
                command,
                timeout: cmd.timeout,
            });
        }
    };
    let status = status.map_err(|source| ProcessError::Wait {
        command: command.clone(),
        source,
    })?;
    let exit_code = status.code().unwrap_or(-1);
    tracing::debug!(%command, exit_code, elapsed_ms = started.elapsed().as_millis() as u64, "finished");
    Ok(Output {
        command,
        exit_code,
        stdout,
        stderr,
        duration: started.elapsed(),
    })
}

/// Read a pipe to its end, keeping only the last [`MAX_OUTPUT`] bytes.
async fn read_tail<R: tokio::io::AsyncRead + Unpin>(pipe: &mut Option<R>) -> String {
    let Some(pipe) = pipe.as_mut() else {
        return String::new();
    };
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    let mut dropped = false;
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * MAX_OUTPUT {
                    let cut = kept.len() - MAX_OUTPUT;
                    kept.drain(..cut);
                    dropped = true;
                }
            }
        }
    }
    if kept.len() > MAX_OUTPUT {
        let cut = kept.len() - MAX_OUTPUT;
        kept.drain(..cut);
        dropped = true;
    }
    let text = String::from_utf8_lossy(&kept).into_owned();
    if dropped {
        format!("[… output truncated to the last {MAX_OUTPUT} bytes …]\n{text}")
    } else {
        text
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

fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    let tail = lines[start..].join(" | ");
    if tail.is_empty() {
        "(no stderr)".into()
    } else {
        tail
    }
}

/// Whether `program` is an executable somewhere on `PATH`.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn captures_output_and_exit_code() {
        let out = run(&Cmd::new("sh").args(["-c", "echo hi; echo err >&2; exit 3"]))
            .await
            .expect("sh runs");
        assert_eq!(out.exit_code, 3);
        assert_eq!(out.stdout, "hi\n");
        assert_eq!(out.stderr, "err\n");
        let e = out.check(&[]).unwrap_err().to_string();
        assert!(
            e.contains("sh -c") && e.contains("exit code 3") && e.contains("err"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn kills_on_timeout() {
        let started = Instant::now();
        let err = run(&Cmd::new("sleep")
            .arg("30")
            .timeout(Duration::from_millis(200)))
        .await
        .unwrap_err();
        assert!(matches!(err, ProcessError::TimedOut { .. }));
        assert!(err.to_string().contains("sleep 30"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn missing_program_is_named() {
        let err = run(&Cmd::new("definitely-not-a-program-xyz"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("definitely-not-a-program-xyz"));
        assert_eq!(err.exit_code(), -1);
    }

    #[tokio::test]
    async fn output_is_tail_truncated() {
        let out =
            run(&Cmd::new("sh").args(["-c", "head -c 300000 /dev/zero | tr '\\0' a; echo END"]))
                .await
                .expect("sh runs");
        assert!(out.stdout.len() < MAX_OUTPUT + 200);
        assert!(out.stdout.ends_with("END\n"));
        assert!(out.stdout.starts_with("[… output truncated"));
    }

    #[test]
    fn only_privileged_commands_get_sudo_and_only_when_not_root() {
        let plain = Cmd::new("apt").args(["list", "--upgradable"]);
        let root_needed = Cmd::new("apt-get").args(["-q", "update"]).privileged();
        for is_root in [true, false] {
            assert_eq!(plain.argv(is_root), ["apt", "list", "--upgradable"]);
        }
        assert_eq!(root_needed.argv(true), ["apt-get", "-q", "update"]);
        assert_eq!(
            root_needed.argv(false),
            ["sudo", "-n", "--", "apt-get", "-q", "update"]
        );
        // The environment is unchanged: sudo passes on what sudoers keeps.
        assert!(root_needed.env.contains(&("LC_ALL".into(), "C".into())));
    }

    #[test]
    fn truncate_tail_respects_char_boundaries() {
        let s = "ééééé";
        let t = truncate_tail(s, 3);
        assert!(t.ends_with('é'));
    }
}
