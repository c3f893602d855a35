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

impl Cli {
    /// Runs `canopy ARGS` on a pseudo-terminal, as a person at a keyboard would: each
    /// answer is typed only once its prompt is on the screen. Returns the exit status and
    /// everything the terminal showed (the echo of what was typed included, if any).
    pub fn run_on_terminal(&self, args: &[&str], answers: &[(&str, &str)]) -> (bool, String) {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        use std::io::{Read, Write};
        use std::time::{Duration, Instant};
        tokio::task::block_in_place(|| {
            let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("open a pty");
            grantpt(&master).unwrap();
            unlockpt(&master).unwrap();
            let name = ptsname(&master, Vec::new()).unwrap();
            let slave = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(name.to_str().unwrap())
                .unwrap();
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
                .args(args)
                .env("CANOPY_SESSION", &self.session)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdin(slave.try_clone().unwrap())
                .stdout(slave.try_clone().unwrap())
                .stderr(slave)
                .spawn()
                .unwrap();
            let mut master = std::fs::File::from(master);
            let mut reader = master.try_clone().unwrap();
            let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // EIO once the child closed the terminal: the end.
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            });
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut screen = String::new();
            let mut seen = 0;
            let mut answers = answers.iter();
            let mut next = answers.next();
            loop {
                if let Some((prompt, answer)) = next {
                    if let Some(at) = screen[seen..].find(prompt) {
                        seen += at + prompt.len();
                        master.write_all(format!("{answer}\n").as_bytes()).unwrap();
                        next = answers.next();
                        continue;
                    }
                }
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                    Ok(bytes) => screen.push_str(&String::from_utf8_lossy(&bytes)),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        if child.try_wait().unwrap().is_some() && next.is_none() {
                            // Drain what is left, then stop.
                            while let Ok(bytes) = rx.recv_timeout(Duration::from_millis(200)) {
                                screen.push_str(&String::from_utf8_lossy(&bytes));
                            }
                            break;
                        }
                        assert!(
                            Instant::now() < deadline,
                            "canopy {args:?} on a terminal did not finish; screen:\n{screen}"
                        );
                    }
                }
            }
            let status = child.wait().unwrap();
            (status.success(), screen)
        })
    }
}
