//! Reading a password: from `--password-file`, or typed on the terminal without echo, or
//! one line of standard input when it is not a terminal (scripts pipe it in).
//!
//! Echo is switched off with termios through `rustix` (already in the dependency tree,
//! a safe API, so the workspace keeps `unsafe_code = "forbid"`) rather than a separate
//! crate such as rpassword: the terminal is the standard input itself, its mode is restored
//! by a guard on every path out, and Ctrl-C still interrupts (only ECHO is cleared).

use anyhow::Context;
use rustix::termios::{self, LocalModes, OptionalActions};
use std::io::{BufRead, Write};
use std::path::Path;

/// The password in `file` (one trailing newline removed), or read after `prompt`.
pub fn read(prompt: &str, file: Option<&Path>) -> anyhow::Result<String> {
    match file {
        Some(p) => from_file(p),
        None => from_stdin(prompt),
    }
}

/// A new password: like [`read`], but on a terminal it is asked twice and must match.
pub fn read_new(prompt: &str, file: Option<&Path>) -> anyhow::Result<String> {
    if file.is_some() || !termios::isatty(std::io::stdin()) {
        return read(prompt, file);
    }
    let first = from_stdin(prompt)?;
    let again = from_stdin("the same password again: ")?;
    anyhow::ensure!(
        first == again,
        "the two passwords differ; nothing was changed"
    );
    Ok(first)
}

fn from_file(p: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(p)
        .with_context(|| format!("cannot read {}", p.display()))?
        .trim_end_matches(['\n', '\r'])
        .to_string())
}

fn from_stdin(prompt: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let quiet = if termios::isatty(&stdin) {
        Some(NoEcho::on(&stdin)?)
    } else {
        None
    };
    // The prompt goes out only once echo is off, so nothing typed after it is shown.
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    if quiet.is_some() {
        // Enter was not echoed either: move on to the next line.
        eprintln!();
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Echo off on a terminal until dropped.
struct NoEcho<'a> {
    tty: &'a std::io::Stdin,
    saved: termios::Termios,
}

impl<'a> NoEcho<'a> {
    fn on(tty: &'a std::io::Stdin) -> anyhow::Result<Self> {
        let saved = termios::tcgetattr(tty).context("cannot read the terminal's mode")?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        termios::tcsetattr(tty, OptionalActions::Flush, &quiet)
            .context("cannot switch the terminal's echo off")?;
        Ok(Self { tty, saved })
    }
}

impl Drop for NoEcho<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.tty, OptionalActions::Now, &self.saved);
    }
}
