//! The privilege boundary: `canopy-agent helper VERB MANAGER [ITEM…]`, the only thing a
//! non-root agent may run as root. A deploy writes one sudoers rule for it and nothing else:
//!
//! ```text
//! canopy-agent ALL=(root) NOPASSWD: /usr/local/bin/canopy-agent helper *
//! ```
//!
//! The helper accepts only its own verbs ([`Verb`]: refresh, simulate (dnf), install pinned
//! versions, upgrade, audit, repair), checks every package name and version character by
//! character ([`verbs::check_name`], [`verbs::check_version`]) and builds the package-manager
//! command itself ([`commands::commands`]: a fixed argv, its own `PATH`, `LC_ALL=C`,
//! `DEBIAN_FRONTEND=noninteractive`, working directory `/`). Nothing from the caller reaches
//! the argv except validated names, versions and the manager; the caller's environment and
//! options are ignored. So `sudo apt-get -o APT::Update::Pre-Invoke::=sh update` — root for
//! whoever holds the agent's account under the old "any arguments to apt-get" rule — has no
//! equivalent here.
//!
//! The helper runs its package manager in a process group of its own and passes its output
//! through as it comes (the agent's hang watchdog watches it). On SIGTERM (relayed by sudo
//! when the agent stops a hung transaction) it forwards SIGTERM to that group and waits; only
//! after [`commands::HELPER_GRACE`] does it SIGKILL the group.
//!
//! The agent calls it with [`call`]: `sudo -n -- /path/to/canopy-agent helper …` when it is
//! not root, and the same verbs and commands in its own process when it is root.

pub mod commands;
pub mod verbs;

pub use verbs::{Pin, Verb};

use crate::process::{run, run_passthrough, Cmd, Limit, Output, ProcessError, STOP_GRACE};
use tokio::sync::watch;

/// The helper's exit code when it refuses a call (bad verb, name or version).
pub const REFUSED: i32 = 64;
/// The helper's exit code when it is not root.
pub const NOT_ROOT: i32 = 77;

/// `canopy-agent helper ARGS…` (as root, through sudo): check, build, run; returns the exit
/// code of the first command that failed (0 when all succeeded).
pub async fn main(args: &[String]) -> i32 {
    let verb = match Verb::parse(args) {
        Ok(v) => v,
        Err(reason) => {
            eprintln!("canopy-agent helper: refused: {reason}");
            return REFUSED;
        }
    };
    let cmds = match commands::commands(&verb) {
        Ok(c) => c,
        Err(reason) => {
            eprintln!("canopy-agent helper: refused: {reason}");
            return REFUSED;
        }
    };
    if !crate::identity::is_root() {
        eprintln!("canopy-agent helper: must run as root (the agent calls it through sudo)");
        return NOT_ROOT;
    }
    let stop = stop_on_signals();
    for cmd in cmds {
        if *stop.borrow() {
            return 128 + 15;
        }
        let mut rx = stop.clone();
        let stopped = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        match run_passthrough(&commands::resolved(cmd), stopped).await {
            Ok(0) => {}
            Ok(code) => return code,
            Err(e) => {
                eprintln!("canopy-agent helper: {e}");
                return if matches!(e, ProcessError::Stopped { .. }) {
                    128 + 15
                } else {
                    1
                };
            }
        }
    }
    0
}

/// Flips to `true` on SIGTERM, SIGINT or SIGHUP.
fn stop_on_signals() -> watch::Receiver<bool> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = watch::channel(false);
    for kind in [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
    ] {
        let tx = tx.clone();
        match signal(kind) {
            Ok(mut s) => {
                tokio::spawn(async move {
                    if s.recv().await.is_some() {
                        let _ = tx.send(true);
                    }
                });
            }
            Err(e) => eprintln!("canopy-agent helper: cannot listen for {kind:?}: {e}"),
        }
    }
    rx
}

/// This binary's path, as sudoers names it (`/usr/local/bin/canopy-agent`); a binary replaced
/// while running shows as `… (deleted)`, and the new one at the same path is the helper.
pub fn helper_path() -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/usr/local/bin/canopy-agent".into());
    exe.strip_suffix(" (deleted)").unwrap_or(&exe).to_string()
}

/// `sudo -n -- HELPER helper VERB MANAGER ITEM…`: `-n` fails at once with sudo's own message
/// when the sudoers rule is missing, instead of waiting for a password.
pub fn sudo_cmd(helper: &str, verb: &Verb) -> Cmd {
    Cmd::new("sudo")
        .args(["-n", "--", helper, "helper"])
        .args(verb.to_args())
        .grace(STOP_GRACE)
}

/// Runs `verb` as root within `limit`: through sudo and the helper when this agent is not
/// root, else the same commands directly. Output is captured; for a verb of several commands
/// it is their output in turn, up to the first that failed.
pub async fn call(verb: &Verb, limit: Limit) -> Result<Output, ProcessError> {
    if !crate::identity::is_root() {
        return run(&sudo_cmd(&helper_path(), verb).limit(limit)).await;
    }
    let cmds = commands::commands(verb).map_err(|reason| ProcessError::Refused {
        command: format!("helper {}", verb.to_args().join(" ")),
        reason,
    })?;
    let mut all: Option<Output> = None;
    for cmd in cmds {
        let cmd = commands::resolved(cmd).limit(limit).grace(STOP_GRACE);
        let out = run(&cmd).await?;
        let failed = !out.success();
        all = Some(match all {
            None => out,
            Some(mut a) => {
                a.command = format!("{} && {}", a.command, out.command);
                a.exit_code = out.exit_code;
                a.stdout.push_str(&out.stdout);
                a.stderr.push_str(&out.stderr);
                a.duration += out.duration;
                a
            }
        });
        if failed {
            break;
        }
    }
    all.ok_or_else(|| ProcessError::Refused {
        command: format!("helper {}", verb.to_args().join(" ")),
        reason: "nothing to run".into(),
    })
}

#[cfg(test)]
mod tests;
