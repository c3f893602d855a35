//! One wrapper for every external command xtask runs: a timeout, captured (or streamed)
//! output, and an error that names the command and shows what it printed.

use anyhow::{anyhow, bail, Context, Result};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A command with a timeout. Build with [`cmd`], then `output`, `ok` or `stream`.
pub struct Cmd {
    inner: Command,
    shown: String,
    timeout: Duration,
    stdin: Option<Vec<u8>>,
}

/// `cmd("docker", ["ps"])`: default timeout 120 s.
pub fn cmd<I, S>(program: &str, args: I) -> Cmd
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut inner = Command::new(program);
    let mut shown = program.to_string();
    for arg in args {
        shown.push(' ');
        shown.push_str(&arg.as_ref().to_string_lossy());
        inner.arg(arg);
    }
    Cmd {
        inner,
        shown,
        timeout: Duration::from_secs(120),
        stdin: None,
    }
}

/// Captured result of a finished command.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Cmd {
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.shown.push(' ');
        self.shown.push_str(&arg.as_ref().to_string_lossy());
        self.inner.arg(arg);
        self
    }

    pub fn args_from(mut self, args: &[&str]) -> Self {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.inner.env(key, value);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.inner.current_dir(dir);
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Runs with captured output; never fails on a non-zero exit (see `output`).
    pub fn capture(mut self) -> Result<Output> {
        self.inner.stdout(Stdio::piped()).stderr(Stdio::piped());
        self.inner.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = self
            .inner
            .spawn()
            .with_context(|| format!("cannot start `{}`", self.shown))?;
        let feeder = self.stdin.take().map(|data| {
            let mut pipe = child.stdin.take().expect("stdin piped");
            thread::spawn(move || {
                let _ = pipe.write_all(&data);
            })
        });
        let out = reader(child.stdout.take());
        let err = reader(child.stderr.take());
        let status = wait(&mut child, self.timeout, &self.shown)?;
        if let Some(f) = feeder {
            let _ = f.join();
        }
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Runs with captured output and fails on a non-zero exit, showing stderr.
    pub fn output(self) -> Result<String> {
        let shown = self.shown.clone();
        let out = self.capture()?;
        if !out.status.success() {
            bail!(
                "`{shown}` failed ({}):\n{}{}",
                out.status,
                tail(&out.stdout, 20),
                tail(&out.stderr, 40)
            );
        }
        Ok(out.stdout)
    }

    /// True when the command exits 0 (output discarded; start failures count as false).
    pub fn ok(self) -> bool {
        self.capture().map(|o| o.status.success()).unwrap_or(false)
    }

    /// Runs with stdout/stderr inherited (progress visible) and fails on a non-zero exit.
    pub fn stream(mut self) -> Result<()> {
        self.inner.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        self.inner.stdin(Stdio::null());
        let mut child = self
            .inner
            .spawn()
            .with_context(|| format!("cannot start `{}`", self.shown))?;
        let status = wait(&mut child, self.timeout, &self.shown)?;
        if !status.success() {
            bail!("`{}` failed ({status})", self.shown);
        }
        Ok(())
    }

    /// The command line as shown in messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Escape hatch for detached spawning (see `state::spawn_detached`).
    pub fn into_command(self) -> Command {
        self.inner
    }
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn wait(child: &mut Child, timeout: Duration, shown: &str) -> Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(anyhow!("`{shown}` timed out after {}s", timeout.as_secs()));
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// Last `n` lines of `s`, for error messages.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = lines[start..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// `command -v NAME`: is an executable on PATH?
pub fn have(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| is_executable(&dir.join(name))))
        .unwrap_or(false)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Polls `cond` every `every` until it returns true or `within` passes.
pub fn poll(within: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(every);
    }
}
