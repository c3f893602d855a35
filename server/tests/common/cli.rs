//! The real `canopy` binary as a homelab owner runs it: a session file of its own, answers
//! typed on stdin, stdout and stderr captured.

use std::path::PathBuf;

pub struct Cli {
    _dir: tempfile::TempDir,
    session: PathBuf,
    env: Vec<(String, String)>,
}

pub struct CliOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Cli {
    /// A CLI with an empty session.
    pub fn new() -> Cli {
        let dir = tempfile::tempdir().unwrap();
        Cli {
            session: dir.path().join("session.json"),
            _dir: dir,
            env: Vec::new(),
        }
    }

    /// Sets `key=value` in the environment of every later run.
    pub fn env(mut self, key: &str, value: &str) -> Cli {
        self.env.push((key.into(), value.into()));
        self
    }

    /// `canopy login` as the test admin to the server at `base`.
    pub fn login(self, base: &str) -> Cli {
        let pw = self._dir.path().join("pw");
        std::fs::write(&pw, super::ADMIN_PASSWORD).unwrap();
        let out = self.run(
            &[
                "login",
                "--server",
                base,
                "--password-file",
                pw.to_str().unwrap(),
            ],
            "",
        );
        assert!(out.status.success(), "{}", out.stderr);
        self
    }

    /// Runs `canopy ARGS` with its stdout a pipe nobody reads any more, as in `canopy tree |
    /// head -1` once `head` has its line (the reading end is closed before it starts).
    pub fn run_reader_gone(&self, args: &[&str]) -> CliOutput {
        tokio::task::block_in_place(|| {
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
                .args(args)
                .env("CANOPY_SESSION", &self.session)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdin(std::process::Stdio::null())
                .stdout(writer)
                .stderr(std::process::Stdio::piped())
                .output()
                .unwrap();
            CliOutput {
                status: out.status,
                stdout: String::new(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        })
    }

    /// Runs `canopy ARGS` with `stdin` typed in (from a blocking section of the runtime).
    pub fn run(&self, args: &[&str], stdin: &str) -> CliOutput {
        tokio::task::block_in_place(|| {
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
                .args(args)
                .env("CANOPY_SESSION", &self.session)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            CliOutput {
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        })
    }
}
