//! The cluster's action hook (`hook = ["/path/prog", "arg", …]` in the cluster file): every
//! guest task runs `HOOK… ACTION VMID [SNAPNAME|ARCHIVE] [--start]` (`backup`, `restore` and
//! `delbackup` name the archive file) in the background, so something
//! real (the lab's Docker guests) follows the simulated estate. The task stays `running` until
//! the hook exits; `settle` collects the outcome without waiting for it.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Action, Archive};

/// A hook that runs longer than this is killed and its task fails.
const HOOK_TIMEOUT: Duration = Duration::from_secs(600);

/// One running (or finished) hook process.
#[derive(Debug, Clone)]
pub(crate) struct HookRun {
    /// `None` while the hook runs; `Ok` on exit 0, `Err(reason)` otherwise.
    outcome: Arc<Mutex<Option<Result<(), String>>>>,
    /// The hook's stderr lines, once it has exited (for the task log).
    stderr: Arc<Mutex<Vec<String>>>,
}

/// The hook's arguments after its own argv: `ACTION VMID [SNAPNAME] [--start]`.
pub(crate) fn hook_args(action: &Action, vmid: u32) -> Option<Vec<String>> {
    let (word, snap, start) = match action {
        Action::Start => ("start", None, false),
        Action::Shutdown => ("shutdown", None, false),
        Action::Stop => ("stop", None, false),
        Action::Reboot => ("reboot", None, false),
        Action::Snapshot { name, .. } => ("snapshot", Some(name.as_str()), false),
        Action::Rollback { name, start } => ("rollback", Some(name.as_str()), *start),
        Action::DelSnapshot { name } => ("delsnapshot", Some(name.as_str()), false),
        Action::Vzdump { archives, .. } => {
            let archive = archives.iter().find(|a| a.vmid == vmid)?;
            ("backup", Some(Archive::file_name(&archive.volid)), false)
        }
        Action::Restore { volid, start, .. } => {
            ("restore", Some(Archive::file_name(volid)), *start)
        }
        Action::DelVolume { volid } => ("delbackup", Some(Archive::file_name(volid)), false),
    };
    let mut args = vec![word.to_string(), vmid.to_string()];
    args.extend(snap.map(str::to_string));
    if start {
        args.push("--start".into());
    }
    Some(args)
}

impl HookRun {
    /// Starts `argv` + `args` on the current tokio runtime; the outcome arrives later.
    pub fn spawn(argv: &[String], args: Vec<String>) -> Self {
        let run = Self {
            outcome: Arc::new(Mutex::new(None)),
            stderr: Arc::new(Mutex::new(Vec::new())),
        };
        let (outcome, stderr) = (run.outcome.clone(), run.stderr.clone());
        let argv = argv.to_vec();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            *lock(&outcome) = Some(Err("action hook: no runtime to run it on".into()));
            return run;
        };
        rt.spawn(async move {
            let (result, lines) = run_hook(&argv, &args).await;
            *lock(&stderr) = lines;
            *lock(&outcome) = Some(result);
        });
        run
    }

    /// The hook's result once it has exited.
    pub fn outcome(&self) -> Option<Result<(), String>> {
        lock(&self.outcome).clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        lock(&self.stderr).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the hook to its end (or [`HOOK_TIMEOUT`]); a failure's reason is its last stderr line.
async fn run_hook(argv: &[String], args: &[String]) -> (Result<(), String>, Vec<String>) {
    let Some((prog, rest)) = argv.split_first() else {
        return (Err("action hook: empty command".into()), Vec::new());
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(rest)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return (Err(format!("action hook {prog}: {e}")), Vec::new()),
    };
    let shown = format!("{prog} {}", args.join(" "));
    let output = match tokio::time::timeout(HOOK_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return (Err(format!("action hook {shown}: {e}")), Vec::new()),
        Err(_) => {
            let secs = HOOK_TIMEOUT.as_secs();
            return (
                Err(format!("action hook {shown}: no exit after {secs}s")),
                Vec::new(),
            );
        }
    };
    let lines: Vec<String> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if output.status.success() {
        return (Ok(()), lines);
    }
    tracing::info!(hook = %shown, status = %output.status, "action hook failed");
    let reason = lines
        .last()
        .cloned()
        .unwrap_or_else(|| format!("action hook {shown}: {}", output.status));
    (Err(reason), lines)
}
