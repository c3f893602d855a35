//! What the actions on a selection show: one line per guest for a scan, an agentless scan and
//! a deploy preview; the single-host pipeline's command in words and its dry-run's plan
//! (what apt or dnf would also install or remove); a guest's snapshots as rows.

use canopy_api_types::clusters::GuestSnapshot;
use canopy_api_types::commands::{Command, CommandResult, CommandStatus};
use canopy_api_types::deploy::{AgentlessResult, DeployPreview};
use canopy_api_types::hosts::HostScan;
use canopy_api_types::updates::{Update, UpdateStatus};

/// One guest's answer to an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub target: String,
    /// "queued", "skipped: agent missing: …", "3 pending updates".
    pub text: String,
    /// Done or queued (`true`), skipped or failed (`false`).
    pub ok: bool,
}

pub fn scan_lines(answer: &[HostScan]) -> Vec<Line> {
    answer
        .iter()
        .map(|s| Line {
            target: s.target.clone(),
            text: match (s.queued, &s.reason) {
                (true, None) => "queued".into(),
                (true, Some(note)) => format!("queued ({note})"),
                (false, Some(why)) => format!("skipped: {why}"),
                (false, None) => "skipped".into(),
            },
            ok: s.queued,
        })
        .collect()
}

pub fn agentless_lines(answer: &[AgentlessResult]) -> Vec<Line> {
    answer
        .iter()
        .map(|r| Line {
            target: r.target.clone(),
            text: match (&r.error, r.pending) {
                (Some(e), _) => format!("not scanned: {e}"),
                (None, Some(1)) => "scanned: 1 pending update".into(),
                (None, Some(n)) => format!("scanned: {n} pending updates"),
                (None, None) => "scanned".into(),
            },
            ok: r.error.is_none(),
        })
        .collect()
}

/// The guests a deploy would reach (and how), then the ones it leaves out.
pub fn deploy_lines(p: &DeployPreview) -> Vec<Line> {
    let reached = p.targets.iter().map(|t| Line {
        target: t.target.clone(),
        text: format!(
            "{} {} ({}) through {}",
            p.action.as_str(),
            t.name,
            t.vmid,
            match t.route.as_str() {
                "pct" => "pct exec on its node",
                _ => "SSH into the guest",
            }
        ),
        ok: true,
    });
    let skipped = p.skipped.iter().map(|s| Line {
        target: s.id.clone(),
        text: format!("skipped: {}", s.reason),
        ok: false,
    });
    reached.chain(skipped).collect()
}

/// "2 queued, 1 skipped".
pub fn tally(lines: &[Line], ok_word: &str, not_word: &str) -> String {
    let ok = lines.iter().filter(|l| l.ok).count();
    let not = lines.len() - ok;
    match (ok, not) {
        (_, 0) => format!("{ok} {ok_word}"),
        (0, _) => format!("{not} {not_word}"),
        _ => format!("{ok} {ok_word}, {not} {not_word}"),
    }
}

/// May this update be approved from the guest pane (open and not held)?
pub fn selectable(u: &Update) -> bool {
    u.status == UpdateStatus::Pending && !u.held
}

/// Where a command of the single-host pipeline stands, in words.
pub fn command_line(c: &Command) -> String {
    let what = match c.spec.kind() {
        "dry_run" => "Dry-run",
        "install" => "Install",
        "scan" => "Scan",
        other => other,
    };
    let state = match c.status {
        CommandStatus::Pending => "waiting for the agent".to_string(),
        CommandStatus::Sent => "sent to the agent".into(),
        CommandStatus::Running => "running".into(),
        CommandStatus::Completed => match c.result.as_ref().map(|r| r.summary.trim()) {
            Some(s) if !s.is_empty() => format!("done ({s})"),
            _ => "done".into(),
        },
        CommandStatus::Failed => format!("failed: {}", failure(c)),
        CommandStatus::TimedOut => "timed out".into(),
        CommandStatus::Cancelled => "cancelled".into(),
    };
    format!("{what}: {state}")
}

/// Why a command failed: the server's reason, else the last line the package manager wrote.
fn failure(c: &Command) -> String {
    if let Some(e) = &c.error {
        return e.clone();
    }
    let Some(r) = &c.result else {
        return "no result".into();
    };
    let last = |s: &str| {
        s.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(str::to_string)
    };
    last(&r.stderr)
        .or_else(|| last(&r.stdout))
        .unwrap_or_else(|| format!("exit code {}", r.exit_code))
}

/// A dry-run's plan: the requested packages, then what the package manager would also
/// install, then what it would remove.
pub fn dry_run_plan(r: &CommandResult) -> Vec<String> {
    let asked = r.planned.iter().filter(|p| p.requested);
    let also = r.planned.iter().filter(|p| !p.requested);
    asked
        .chain(also)
        .map(|p| {
            let versions = match &p.from_version {
                Some(from) => format!("{from} → {}", p.to_version),
                None => format!("{} (new)", p.to_version),
            };
            let role = if p.requested {
                ""
            } else {
                ", also installed as a dependency"
            };
            format!("{} {versions}{role}", p.package)
        })
        .chain(r.removed.iter().map(|n| format!("− {n} (removed)")))
        .collect()
}

/// A scan line once its command is known: "scanned" when the agent's report is in.
pub fn scan_progress(line: &Line, command: Option<&Command>) -> String {
    let Some(c) = command else {
        return line.text.clone();
    };
    match c.status {
        CommandStatus::Pending => line.text.clone(),
        CommandStatus::Sent | CommandStatus::Running => "scanning".into(),
        CommandStatus::Completed => "scanned".into(),
        CommandStatus::Failed => format!("scan failed: {}", failure(c)),
        CommandStatus::TimedOut => "scan timed out".into(),
        CommandStatus::Cancelled => "scan cancelled".into(),
    }
}

/// One snapshot of a guest as a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    pub name: String,
    pub when: String,
    pub description: String,
    /// Taken by a Canopy update.
    pub canopy: bool,
}

pub fn snapshot_row(s: &GuestSnapshot) -> SnapshotRow {
    SnapshotRow {
        name: s.name.clone(),
        when: s
            .taken_at
            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| "unknown".into()),
        description: s.description.clone().unwrap_or_default(),
        canopy: s.canopy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_scan_answers_per_guest() {
        let answer: Vec<HostScan> = serde_json::from_value(json!([
            {"target": "cluster/c/node/n/lxc/101", "host_id": "00000000-0000-0000-0000-000000000001",
             "command_id": "00000000-0000-0000-0000-000000000002", "queued": true},
            {"target": "cluster/c/node/n/lxc/102", "queued": true, "reason": "agent offline: it scans when it checks in again"},
            {"target": "cluster/c/node/n/lxc/103", "queued": false, "reason": "agent missing: deploy it"}
        ]))
        .unwrap();
        let lines = scan_lines(&answer);
        assert_eq!(lines[0].text, "queued");
        assert!(lines[1].text.starts_with("queued (agent offline"));
        assert_eq!(lines[2].text, "skipped: agent missing: deploy it");
        assert!(!lines[2].ok);
        assert_eq!(tally(&lines, "queued", "skipped"), "2 queued, 1 skipped");
        assert_eq!(tally(&lines[..1], "queued", "skipped"), "1 queued");
        assert_eq!(tally(&lines[2..], "queued", "skipped"), "1 skipped");
        let scan = |status: &str| command(json!({"kind": "scan"}), status, json!(null));
        assert_eq!(scan_progress(&lines[0], None), "queued");
        assert_eq!(scan_progress(&lines[0], Some(&scan("pending"))), "queued");
        assert_eq!(scan_progress(&lines[0], Some(&scan("running"))), "scanning");
        assert_eq!(
            scan_progress(&lines[0], Some(&scan("completed"))),
            "scanned"
        );
    }

    #[test]
    fn agentless_and_deploy_lines() {
        let r: Vec<AgentlessResult> = serde_json::from_value(json!([
            {"target": "a", "pending": 3}, {"target": "b", "pending": 1},
            {"target": "c", "error": "stopped"}
        ]))
        .unwrap();
        let l = agentless_lines(&r);
        assert_eq!(l[0].text, "scanned: 3 pending updates");
        assert_eq!(l[1].text, "scanned: 1 pending update");
        assert_eq!(l[2].text, "not scanned: stopped");
        let p: DeployPreview = serde_json::from_value(json!({
            "selector": "cluster/c/**", "action": "deploy", "summary": "deploys to 1 guest",
            "targets": [{"target": "cluster/c/node/n/lxc/101", "node": "n", "vmid": 101, "name": "web", "route": "pct"}],
            "skipped": [{"id": "cluster/c/node/n/lxc/102", "reason": "stopped"}]
        }))
        .unwrap();
        let l = deploy_lines(&p);
        assert_eq!(l[0].text, "deploy web (101) through pct exec on its node");
        assert_eq!(l[1].text, "skipped: stopped");
    }

    fn command(kind: serde_json::Value, status: &str, result: serde_json::Value) -> Command {
        serde_json::from_value(json!({
            "id": "00000000-0000-0000-0000-000000000001",
            "host_id": "00000000-0000-0000-0000-000000000002",
            "spec": kind, "status": status,
            "correlation_id": "00000000-0000-0000-0000-000000000003",
            "timeout_secs": 60, "created_at": "2026-01-01T00:00:00Z", "result": result
        }))
        .unwrap()
    }

    #[test]
    fn commands_and_dry_runs_in_words() {
        let result = json!({
            "exit_code": 0, "success": true, "stdout": "", "stderr": "", "summary": "2 upgraded",
            "planned": [
                {"package": "libextra", "to_version": "1.0", "requested": false},
                {"package": "tools", "from_version": "1.0", "to_version": "1.1", "requested": true}
            ],
            "removed": ["oldlib"]
        });
        let dry = command(
            json!({"kind": "dry_run", "packages": ["tools"]}),
            "completed",
            result.clone(),
        );
        assert_eq!(command_line(&dry), "Dry-run: done (2 upgraded)");
        assert_eq!(
            dry_run_plan(dry.result.as_ref().unwrap()),
            [
                "tools 1.0 → 1.1",
                "libextra 1.0 (new), also installed as a dependency",
                "− oldlib (removed)"
            ]
        );
        let waiting = command(
            json!({"kind": "install", "packages": ["tools"]}),
            "sent",
            json!(null),
        );
        assert_eq!(command_line(&waiting), "Install: sent to the agent");
        let failed = command(
            json!({"kind": "install", "packages": ["tools"]}),
            "failed",
            json!({"exit_code": 100, "success": false, "stdout": "", "stderr": "E: x\nE: tools: approved 1.1, now 1.2\n"}),
        );
        assert_eq!(
            command_line(&failed),
            "Install: failed: E: tools: approved 1.1, now 1.2"
        );
    }

    #[test]
    fn snapshots_as_rows_and_what_may_be_approved() {
        let s: GuestSnapshot = serde_json::from_value(json!({
            "name": "canopy-0123456789ab", "taken_at": "2026-03-01T10:20:00Z", "canopy": true
        }))
        .unwrap();
        let r = snapshot_row(&s);
        assert_eq!(r.when, "2026-03-01 10:20");
        assert!(r.canopy);
        assert_eq!(r.description, "");
        let u = |held: bool, status: &str| -> Update {
            serde_json::from_value(json!({
                "id": "00000000-0000-0000-0000-000000000001",
                "host_id": "00000000-0000-0000-0000-000000000002",
                "hostname": "web", "manager": "apt", "package": "openssl",
                "current_version": "3.0.1", "available_version": "3.0.2",
                "severity": "security", "held": held, "status": status,
                "first_seen": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
            }))
            .unwrap()
        };
        assert!(selectable(&u(false, "pending")));
        assert!(!selectable(&u(true, "pending")));
        assert!(!selectable(&u(false, "installed")));
    }
}
