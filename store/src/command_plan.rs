//! The rules of the command queue that do not depend on the backend: which packages a
//! command carries, what a confirmed dry-run installs, what a retry repeats, and which
//! update-row status a command's outcome moves its rows between. Both backends call these;
//! only their SQL differs.

use canopy_api_types::commands::{CommandResult, CommandSpec, CommandStatus, PlannedPackage};
use canopy_api_types::docker::ImageTarget;
use canopy_api_types::updates::PackageManager;

/// What a command carries, by update-row `package`: its packages and the references of its
/// image updates (none for a scan, a repair or a health check).
pub fn carried_packages(spec: &CommandSpec) -> Vec<String> {
    match spec {
        CommandSpec::Scan | CommandSpec::Repair { .. } | CommandSpec::Health { .. } => Vec::new(),
        CommandSpec::DryRun { packages, images } => packages
            .iter()
            .cloned()
            .chain(images.iter().map(|i| i.reference.clone()))
            .collect(),
        CommandSpec::Install { packages, pinned } => packages
            .iter()
            .cloned()
            .chain(
                pinned
                    .iter()
                    .filter(|p| p.manager == Some(PackageManager::Docker))
                    .map(|p| p.package.clone()),
            )
            .collect(),
    }
}

/// An approved row as its dry-run needs it: `(manager, package, available_version)`.
pub type ApprovedRow = (String, String, String);

/// The dry-run of one host's approved rows, `(manager, package, available_version)`: the
/// package managers' names sorted, and the image updates (rows of manager `docker`: the
/// reference and the digest the registry served) sorted by reference.
pub fn dry_run_spec(rows: Vec<ApprovedRow>) -> CommandSpec {
    let mut packages = Vec::new();
    let mut images = Vec::new();
    for (manager, package, available) in rows {
        if manager == PackageManager::Docker.as_str() {
            images.push(ImageTarget {
                reference: package,
                to_digest: available,
            });
        } else {
            packages.push(package);
        }
    }
    packages.sort();
    packages.dedup();
    images.sort_by(|a, b| a.reference.cmp(&b.reference));
    images.dedup_by(|a, b| a.reference == b.reference);
    CommandSpec::DryRun { packages, images }
}

/// The install a successful dry-run turns into: its requested packages, and its whole plan
/// (requested packages and the dependencies it listed) pinned at the planned versions.
pub fn install_spec(packages: Vec<String>, dry_run_result: Option<&CommandResult>) -> CommandSpec {
    CommandSpec::Install {
        packages,
        pinned: dry_run_result
            .map(|r| r.planned.clone())
            .unwrap_or_default(),
    }
}

/// What a retry of `old` runs, given the packages whose rows it still carries, and the
/// status those rows move to (`None`: the command carries no rows). A retried install keeps
/// its pins, less the requested packages it no longer carries: it never installs other
/// versions than the ones approved.
pub fn retry_spec(old: &CommandSpec, packages: Vec<String>) -> (CommandSpec, Option<&'static str>) {
    match old {
        CommandSpec::Scan => (CommandSpec::Scan, None),
        CommandSpec::Repair { manager } => (CommandSpec::Repair { manager: *manager }, None),
        CommandSpec::Health { checks } => (
            CommandSpec::Health {
                checks: checks.clone(),
            },
            None,
        ),
        CommandSpec::DryRun { images, .. } => {
            let images: Vec<ImageTarget> = images
                .iter()
                .filter(|i| packages.contains(&i.reference))
                .cloned()
                .collect();
            let packages = packages
                .into_iter()
                .filter(|p| !images.iter().any(|i| i.reference == *p))
                .collect();
            (CommandSpec::DryRun { packages, images }, Some("dry_run"))
        }
        CommandSpec::Install { pinned, .. } => {
            let pinned: Vec<PlannedPackage> = pinned
                .iter()
                .filter(|p| !p.requested || packages.contains(&p.package))
                .cloned()
                .collect();
            // Image references are carried by their pins, never installed as packages.
            let packages = packages
                .into_iter()
                .filter(|name| {
                    !pinned
                        .iter()
                        .any(|p| p.manager == Some(PackageManager::Docker) && p.package == *name)
                })
                .collect();
            (
                CommandSpec::Install { packages, pinned },
                Some("installing"),
            )
        }
    }
}

/// The update-row statuses a finished command moves its rows `(from, to)`; `None` for
/// commands that carry no rows.
pub fn row_transition(spec: &CommandSpec, success: bool) -> Option<(&'static str, &'static str)> {
    match (spec, success) {
        (CommandSpec::Scan | CommandSpec::Repair { .. } | CommandSpec::Health { .. }, _) => None,
        (CommandSpec::DryRun { .. }, true) => Some(("dry_run", "awaiting_confirmation")),
        (CommandSpec::DryRun { .. }, false) => Some(("dry_run", "failed")),
        (CommandSpec::Install { .. }, true) => Some(("installing", "installed")),
        (CommandSpec::Install { .. }, false) => Some(("installing", "failed")),
    }
}

/// Why a host cannot run commands, or `None` when it can (an active agent host).
pub fn host_cannot_run(hostname: &str, state: &str, agentless: bool) -> Option<String> {
    match state {
        "archived" => Some(format!(
            "host {hostname} is archived (its agent was uninstalled): it cannot run commands"
        )),
        "deleted" => Some(format!(
            "host {hostname} was deleted: it cannot run commands"
        )),
        _ if agentless => Some(format!(
            "host {hostname} has no agent (scanned agentless): deploy an agent to run commands"
        )),
        _ => None,
    }
}

/// Why the server refuses an agent's start of command `id` in `status`: the agent must not
/// run it.
pub fn start_refused(id: canopy_api_types::CommandId, status: CommandStatus) -> String {
    match status {
        CommandStatus::Pending => format!("command {id} was not sent to this agent; do not run it"),
        s => format!("command {id} is {}; do not run it", s.as_str()),
    }
}

/// Why command `id` in `status` cannot be cancelled.
pub fn cancel_refused(id: canopy_api_types::CommandId, status: CommandStatus) -> String {
    match status {
        CommandStatus::Running => format!(
            "command {id} is running; a package manager is never stopped halfway — wait for its result"
        ),
        s => format!(
            "command {id} is {}; only pending or sent commands can be cancelled",
            s.as_str()
        ),
    }
}

/// Why a claimed command timed out before the agent started it.
pub fn not_started_reason() -> String {
    format!(
        "the agent did not start it within {} s of claiming it; it never ran",
        crate::SENT_GRACE_SECS
    )
}

/// Why an overdue command timed out: its agent stopped sending heartbeats.
pub fn vanished_reason(last_sign: Option<chrono::DateTime<chrono::Utc>>) -> String {
    let since = last_sign
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "its start".into());
    format!(
        "the agent vanished: no heartbeat since {since}, past the deadline; the outcome on the host is unknown"
    )
}

/// Why a pending command expired: its host has been offline too long.
pub fn offline_reason(
    hostname: &str,
    last_seen: Option<chrono::DateTime<chrono::Utc>>,
    policy: &crate::ExpiryPolicy,
) -> String {
    let since = last_seen
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "it registered".into());
    format!(
        "host {hostname} has been offline since {since} (longer than {} s); the command never ran",
        policy.offline_after.num_seconds()
    )
}

/// Whether a result arriving `now` for a command with `deadline` / `overdue_at` is late.
pub fn is_late(
    deadline: Option<chrono::DateTime<chrono::Utc>>,
    overdue_at: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    overdue_at.is_some() || deadline.is_some_and(|d| now > d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(name: &str, requested: bool) -> PlannedPackage {
        PlannedPackage {
            package: name.into(),
            from_version: Some("1".into()),
            to_version: "2".into(),
            requested,
            manager: None,
            containers: Vec::new(),
        }
    }

    #[test]
    fn a_retried_install_keeps_the_pins_of_what_it_still_carries() {
        let old = CommandSpec::Install {
            packages: vec!["a".into(), "b".into()],
            pinned: vec![
                planned("a", true),
                planned("b", true),
                planned("dep", false),
            ],
        };
        let (spec, rows) = retry_spec(&old, vec!["a".into()]);
        assert_eq!(rows, Some("installing"));
        let CommandSpec::Install { packages, pinned } = spec else {
            panic!("an install")
        };
        assert_eq!(packages, ["a"]);
        let names: Vec<&str> = pinned.iter().map(|p| p.package.as_str()).collect();
        assert_eq!(names, ["a", "dep"]);
    }

    #[test]
    fn confirm_pins_the_whole_plan() {
        let result = CommandResult {
            exit_code: 0,
            success: true,
            stdout: String::new(),
            stderr: String::new(),
            planned: vec![planned("a", true), planned("dep", false)],
            removed: vec![],
            summary: String::new(),
            health: None,
        };
        let CommandSpec::Install { pinned, .. } = install_spec(vec!["a".into()], Some(&result))
        else {
            panic!("an install")
        };
        assert_eq!(pinned, result.planned);
        assert!(carried_packages(&CommandSpec::Scan).is_empty());
    }

    #[test]
    fn image_updates_ride_in_dry_runs_and_pins_never_as_packages() {
        let spec = dry_run_spec(vec![
            ("apt".into(), "curl".into(), "8.0".into()),
            ("docker".into(), "nginx:1".into(), "sha256:b".into()),
            ("docker".into(), "app".into(), "sha256:c".into()),
        ]);
        let CommandSpec::DryRun { packages, images } = &spec else {
            panic!("a dry-run")
        };
        assert_eq!(packages, &["curl"]);
        let refs: Vec<&str> = images.iter().map(|i| i.reference.as_str()).collect();
        assert_eq!(refs, ["app", "nginx:1"]);
        assert_eq!(carried_packages(&spec), ["curl", "app", "nginx:1"]);

        let (retried, _) = retry_spec(&spec, vec!["nginx:1".into()]);
        assert_eq!(
            retried,
            CommandSpec::DryRun {
                packages: vec![],
                images: vec![ImageTarget {
                    reference: "nginx:1".into(),
                    to_digest: "sha256:b".into()
                }]
            }
        );

        let mut image = planned("nginx:1", true);
        image.manager = Some(PackageManager::Docker);
        let install = CommandSpec::Install {
            packages: vec!["curl".into()],
            pinned: vec![planned("curl", true), image],
        };
        assert_eq!(carried_packages(&install), ["curl", "nginx:1"]);
        let (retried, _) = retry_spec(&install, vec!["curl".into(), "nginx:1".into()]);
        let CommandSpec::Install { packages, pinned } = retried else {
            panic!("an install")
        };
        assert_eq!(packages, ["curl"], "a reference is never an apt package");
        assert_eq!(pinned.len(), 2);
    }
}
