//! The `health` command (and `canopy-agent health`): what an update operation looks at before
//! and after a guest's install or reboot. Read-only — it changes nothing, so a read-only agent
//! answers it too.
//!
//! - **systemd units**: whether systemd runs (`/run/systemd/system` is a directory) and which
//!   units failed (`systemctl --failed --plain --no-legend --no-pager`; the server compares
//!   the lists from before and after). Without systemd the list is empty and `systemd` false.
//! - **reboot required**: the scanner's own test ([`crate::scan::reboot_required`]).
//! - **services to restart**: `needrestart -b -r l` (batch mode lists, never restarts) where
//!   it is installed, its `NEEDRESTART-SVC:` lines. needrestart sees services only as root: as
//!   another user it checks that user's own processes alone, so a non-root agent does not ask
//!   it and leaves the list empty (no helper verb for an advisory list).
//! - **checks**: each [`HealthCheck`] run inside the guest, all at once, each within the
//!   command's time ([`checks`]).
//!
//! The report "could not be made" only when systemd runs and its failed units cannot be
//! listed: an empty list would then read as healthy. Everything else (a needrestart that
//! fails, a check that fails) is part of a report that was made.

mod checks;
pub mod local;
#[cfg(test)]
mod tests;

pub use checks::run_check;

use crate::process::{self, Cmd};
use canopy_api_types::bulk::{CheckOutcome, HealthCheck, HealthReport};
use canopy_api_types::commands::CommandResult;
use chrono::{DateTime, Utc};
use std::path::Path;
use std::time::Duration;

/// Between SIGTERM and SIGKILL for the processes of a health command (a check that ignores
/// SIGTERM must not hold the answer for the runner's default 30 s).
pub const CHECK_GRACE: Duration = Duration::from_secs(3);

/// Unit types `systemctl` lists (the first column of a line is a unit only with one of these).
const UNIT_SUFFIXES: [&str; 11] = [
    "service",
    "socket",
    "device",
    "mount",
    "automount",
    "swap",
    "target",
    "path",
    "timer",
    "slice",
    "scope",
];

/// A health report, or why it could not be made, with remarks on parts that did not work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gathered {
    pub report: HealthReport,
    /// Why the report could not be made (the failed units are unknown); `None` = made.
    pub error: Option<String>,
    /// What did not work but leaves the report usable (needrestart failed, …).
    pub notes: Vec<String>,
}

impl Gathered {
    /// Made, no failed unit and every check passed (a pending reboot is not a fault).
    pub fn healthy(&self) -> bool {
        self.error.is_none()
            && self.report.failed_units.is_empty()
            && self.report.checks.iter().all(|c| c.ok)
    }
}

/// The time the parts of a health command may take: the command's timeout less room for the
/// stop's grace period and the answer (a quarter, at most 10 s), at least one second.
pub fn budget(timeout: Duration) -> Duration {
    let room = (timeout / 4).min(Duration::from_secs(10));
    timeout.saturating_sub(room).max(Duration::from_secs(1))
}

/// The `health` command's result: `success` when the report could be made, the report in
/// `health` (`None` when it could not), its lines in `stdout`, remarks in `stderr`.
pub async fn command(
    checks: &[HealthCheck],
    timeout: Duration,
    started_at: Option<DateTime<Utc>>,
) -> CommandResult {
    result(gather(Path::new("/"), checks, timeout, started_at).await)
}

/// Gather the report of the system under `root` (`/`; the files only — the programs asked
/// are this system's).
#[tracing::instrument(skip_all, fields(checks = checks.len()))]
pub async fn gather(
    root: &Path,
    checks: &[HealthCheck],
    timeout: Duration,
    started_at: Option<DateTime<Utc>>,
) -> Gathered {
    let budget = budget(timeout);
    let systemd = root.join("run/systemd/system").is_dir();
    // Boxed: each holds a process runner's future, large in a debug build, and the
    // check-in loop polls this one on its own stack.
    let (units, services, outcomes) = tokio::join!(
        Box::pin(failed_units(systemd, budget)),
        Box::pin(services_to_restart(budget)),
        Box::pin(checks::run_all(checks, budget))
    );
    let mut notes = Vec::new();
    let services_to_restart = services.unwrap_or_else(|e| {
        notes.push(e);
        Vec::new()
    });
    let (failed_units, error) = match units {
        Ok(u) => (u, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    Gathered {
        report: HealthReport {
            failed_units,
            reboot_required: crate::scan::reboot_required(root),
            services_to_restart,
            checks: outcomes,
            systemd,
            agent_started_at: started_at,
        },
        error,
        notes,
    }
}

/// The failed units, or why they cannot be listed (no systemd: none).
async fn failed_units(systemd: bool, budget: Duration) -> Result<Vec<String>, String> {
    if !systemd {
        return Ok(Vec::new());
    }
    let cmd = Cmd::new("systemctl")
        .args(["--failed", "--plain", "--no-legend", "--no-pager"])
        .timeout(budget)
        .grace(CHECK_GRACE);
    let out = process::run(&cmd)
        .await
        .and_then(|o| o.check(&[]))
        .map_err(|e| format!("cannot list the failed systemd units: {e}"))?;
    Ok(parse_failed_units(&out.stdout))
}

/// `needrestart -b`'s services, empty where it is not installed or the agent is not root.
async fn services_to_restart(budget: Duration) -> Result<Vec<String>, String> {
    let Some(program) = process::which("needrestart") else {
        return Ok(Vec::new());
    };
    if !crate::identity::is_root() {
        // As another user needrestart checks only that user's processes and never lists a
        // service; root would need a helper verb, not worth it for an advisory list.
        tracing::debug!("needrestart needs root to see services: not asked");
        return Ok(Vec::new());
    }
    let cmd = Cmd::new(program.to_string_lossy())
        .args(["-b", "-r", "l"])
        .timeout(budget)
        .grace(CHECK_GRACE);
    let out = process::run(&cmd)
        .await
        .and_then(|o| o.check(&[]))
        .map_err(|e| format!("services to restart unknown: {e}"))?;
    Ok(parse_needrestart(&out.stdout))
}

/// Unit names from `systemctl --failed --plain --no-legend` output: the first column, after
/// the `●` (or `*`, `×`) marker some versions print; lines whose first column is not a unit
/// name (a legend, "0 loaded units listed.") are skipped.
pub fn parse_failed_units(text: &str) -> Vec<String> {
    let mut units = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(mut first) = words.next() else {
            continue;
        };
        if !first.chars().any(|c| c.is_alphanumeric() || c == '-') {
            match words.next() {
                Some(w) => first = w,
                None => continue,
            }
        }
        let is_unit = first
            .rsplit_once('.')
            .is_some_and(|(name, kind)| !name.is_empty() && UNIT_SUFFIXES.contains(&kind));
        if is_unit && !units.iter().any(|u| u == first) {
            units.push(first.to_string());
        }
    }
    units
}

/// Service names from `needrestart -b` (`NEEDRESTART-SVC: name` lines), in order, once each.
pub fn parse_needrestart(text: &str) -> Vec<String> {
    let mut services = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.trim().strip_prefix("NEEDRESTART-SVC:") {
            let name = name.trim();
            if !name.is_empty() && !services.iter().any(|s| s == name) {
                services.push(name.to_string());
            }
        }
    }
    services
}

/// At most five names, then how many more.
fn names(list: &[String]) -> String {
    let mut s = list.iter().take(5).cloned().collect::<Vec<_>>().join(" ");
    if list.len() > 5 {
        s.push_str(&format!(" and {} more", list.len() - 5));
    }
    s
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One line: "2 failed units: a.service b.service; reboot required; 1 of 3 checks failed: …".
pub fn summary(g: &Gathered) -> String {
    let r = &g.report;
    let mut parts = Vec::new();
    match (&g.error, r.systemd) {
        (Some(e), _) => parts.push(e.clone()),
        (None, false) => parts.push("no systemd".to_string()),
        (None, true) if r.failed_units.is_empty() => parts.push("no failed units".to_string()),
        (None, true) => parts.push(format!(
            "{}: {}",
            plural(r.failed_units.len(), "failed unit", "failed units"),
            names(&r.failed_units)
        )),
    }
    if r.reboot_required {
        parts.push("reboot required".into());
    }
    if !r.services_to_restart.is_empty() {
        parts.push(format!(
            "{} to restart: {}",
            plural(r.services_to_restart.len(), "service", "services"),
            names(&r.services_to_restart)
        ));
    }
    let failed: Vec<&CheckOutcome> = r.checks.iter().filter(|c| !c.ok).collect();
    if failed.is_empty() && !r.checks.is_empty() {
        parts.push(plural(r.checks.len(), "check passed", "checks passed"));
    } else if !failed.is_empty() {
        let which: Vec<String> = failed
            .iter()
            .map(|c| format!("{} ({})", c.check, c.detail))
            .collect();
        parts.push(format!(
            "{} of {} failed: {}",
            failed.len(),
            plural(r.checks.len(), "check", "checks"),
            which.join(", ")
        ));
    }
    parts.join("; ")
}

/// The report as lines for a person (the CLI's table, the result's stdout).
pub fn lines(g: &Gathered) -> Vec<String> {
    let r = &g.report;
    let list = |l: &[String]| {
        if l.is_empty() {
            "none".to_string()
        } else {
            l.join(" ")
        }
    };
    let yn = |b: bool| if b { "yes" } else { "no" };
    let mut out = vec![format!("systemd:             {}", yn(r.systemd))];
    match &g.error {
        Some(e) => out.push(format!("failed units:        unknown ({e})")),
        None => out.push(format!("failed units:        {}", list(&r.failed_units))),
    }
    out.push(format!("reboot required:     {}", yn(r.reboot_required)));
    out.push(format!(
        "services to restart: {}",
        list(&r.services_to_restart)
    ));
    if let Some(t) = r.agent_started_at {
        out.push(format!("agent started:       {}", t.to_rfc3339()));
    }
    for c in &r.checks {
        out.push(format!(
            "check {:<6} {}: {}",
            if c.ok { "ok" } else { "FAILED" },
            c.check,
            c.detail
        ));
    }
    out
}

/// The command's result from a gathered report.
pub fn result(g: Gathered) -> CommandResult {
    let made = g.error.is_none();
    let mut stderr: Vec<String> = g.error.iter().cloned().collect();
    stderr.extend(g.notes.iter().cloned());
    CommandResult {
        exit_code: if made { 0 } else { 1 },
        success: made,
        stdout: lines(&g).join("\n"),
        stderr: stderr.join("\n"),
        planned: vec![],
        removed: vec![],
        summary: summary(&g),
        health: made.then_some(g.report),
    }
}
