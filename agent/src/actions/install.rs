//! Installs and repairs: the commands that change the host, all through the helper.
//!
//! An install with a plan (`CommandSpec::Install.pinned`, the confirmed dry-run's packages and
//! versions) goes, before anything is touched:
//! 1. every pinned name and version is checked (the helper's rules);
//! 2. each package goes to the manager its dry-run named (else [`super::route`]);
//! 3. each of those managers' databases is audited: an interrupted one refuses the install
//!    ("the dpkg database is interrupted: approve the repair (dpkg --configure -a) first");
//! 4. the dry-run's simulation runs again and its plan must equal the approved one
//!    ([`super::pinned::compare`]), else the install is refused naming each difference;
//! 5. then each manager installs exactly the pinned versions (`install` verb), the first
//!    failure ending the command.
//!
//! An install without a plan (an older server) upgrades the named packages to their
//! candidates, as before (`upgrade` verb), after the same audit. A transaction is never
//! stopped for taking long: only the hang watchdog (`hang_timeout_secs` without any output)
//! stops it, as a process group.

use super::{base_name, failed, merge, process_failure, result_from, route};
use crate::audit;
use crate::helper::{verbs, Pin, Verb};
use crate::process::Limit;
use canopy_api_types::agent::ScanReport;
use canopy_api_types::commands::{CommandResult, PlannedPackage};
use canopy_api_types::updates::PackageManager;
use std::time::Duration;

/// What an install needs to know.
#[derive(Debug, Clone)]
pub struct InstallJob<'a> {
    /// The requested packages (`CommandSpec::Install.packages`).
    pub packages: &'a [String],
    /// The approved plan; empty = unpinned (an older server).
    pub pinned: &'a [PlannedPackage],
    /// The managers this agent uses, in order.
    pub managers: &'a [PackageManager],
    /// The last scan, for routing packages without a manager.
    pub last: Option<&'a ScanReport>,
    pub read_only: bool,
    /// Deadline of the read-only steps (audit, simulation).
    pub check_timeout: Duration,
    /// The transaction's hang watchdog (also the deadline of each image pull and compose run).
    pub hang_timeout: Duration,
    /// The Docker engine, for pinned entries of manager `docker` ([`super::images`]).
    pub docker: crate::docker::DockerConfig,
}

/// One manager's share of an install.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Share {
    manager: PackageManager,
    /// Names to simulate (the requested packages routed here).
    names: Vec<String>,
    /// The approved plan's packages for this manager.
    plan: Vec<PlannedPackage>,
}

fn refused(stderr: String, summary: String) -> CommandResult {
    failed(-1, stderr, summary)
}

pub(crate) fn refused_read_only() -> CommandResult {
    refused(
        "this agent is read-only (read_only = true / --read-only): installs are refused".into(),
        "refused: agent is read-only".into(),
    )
}

/// The manager of `name`: the one the scan reported it for, else the first in use.
fn routed(name: &str, job: &InstallJob<'_>) -> Result<PackageManager, Box<CommandResult>> {
    let batches = route(&[name.to_string()], job.managers, job.last)?;
    Ok(batches[0].manager)
}

fn share_of(shares: &mut Vec<Share>, m: PackageManager) -> &mut Share {
    let i = match shares.iter().position(|s| s.manager == m) {
        Some(i) => i,
        None => {
            shares.push(Share {
                manager: m,
                names: Vec::new(),
                plan: Vec::new(),
            });
            shares.len() - 1
        }
    };
    &mut shares[i]
}

/// Splits the job by manager; names and versions are checked first.
fn shares(job: &InstallJob<'_>) -> Result<Vec<Share>, Box<CommandResult>> {
    let rejected = |e: String| Box::new(refused(e, "rejected".into()));
    let mut shares: Vec<Share> = Vec::new();
    for p in job.pinned {
        let m = match p.manager {
            Some(m) => m,
            None => routed(&p.package, job)?,
        };
        verbs::pin(m, &p.package, &p.to_version).map_err(rejected)?;
        share_of(&mut shares, m).plan.push(p.clone());
    }
    let requested = job
        .pinned
        .iter()
        .filter(|p| p.requested)
        .map(|p| &p.package);
    for name in job.packages.iter().chain(requested) {
        let planned = job.pinned.iter().find(|p| p.package == base_name(name));
        let m = match planned.and_then(|p| p.manager) {
            Some(m) => m,
            None => routed(name, job)?,
        };
        verbs::check_name(m, name).map_err(rejected)?;
        let s = share_of(&mut shares, m);
        if !s.names.iter().any(|x| base_name(x) == base_name(name)) {
            s.names.push(name.clone());
        }
    }
    if shares.is_empty() {
        return Err(Box::new(refused(
            "no packages given".into(),
            "nothing to do".into(),
        )));
    }
    Ok(shares)
}

/// Install `job`: checks, then the transaction(s), then the image updates among the pins
/// ([`super::images`]). See the module documentation.
#[tracing::instrument(skip_all, fields(packages = ?job.packages, pinned = job.pinned.len()))]
pub async fn install(job: &InstallJob<'_>) -> CommandResult {
    if job.read_only {
        return refused_read_only();
    }
    let (images, pins) = super::images::split(job.pinned);
    if !images.is_empty() {
        return super::images::install(job, &images, &pins).await;
    }
    install_packages(job).await
}

/// The package managers' part of an install.
pub(crate) async fn install_packages(job: &InstallJob<'_>) -> CommandResult {
    let shares = match shares(job) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    for s in &shares {
        if let Some(issue) = audit::audit_one(s.manager, job.check_timeout).await {
            return refused(
                audit::refusal(&issue),
                format!(
                    "refused: the {} database needs attention first",
                    audit::db_name(s.manager)
                ),
            );
        }
    }
    if !job.pinned.is_empty() {
        let mut problems = Vec::new();
        for s in &shares {
            let now = super::dry_run_one(s.manager, &s.names, job.check_timeout).await;
            if !now.success {
                return refused(
                    now.stderr,
                    format!(
                        "refused: re-checking the approved plan failed ({})",
                        now.summary
                    ),
                );
            }
            let gone: Vec<String> = s
                .plan
                .iter()
                .filter(|a| !now.planned.iter().any(|n| n.package == a.package))
                .map(|a| a.package.clone())
                .collect();
            let installed = super::pinned::installed(s.manager, &gone, job.check_timeout).await;
            problems.extend(super::pinned::compare(&s.plan, &now.planned, &installed));
        }
        if !problems.is_empty() {
            tracing::warn!(?problems, "the repository moved on since the dry-run");
            return refused(
                problems.join("\n"),
                format!("refused: {}", problems.join("; ")),
            );
        }
    }
    let mut results = Vec::new();
    for (i, s) in shares.iter().enumerate() {
        let r = transaction(s, !job.pinned.is_empty(), job.hang_timeout).await;
        let stop = !r.success;
        results.push((s.manager, r));
        if stop {
            for rest in &shares[i + 1..] {
                results.push((
                    rest.manager,
                    failed(
                        -1,
                        String::new(),
                        format!("not attempted ({} failed first)", s.manager.as_str()),
                    ),
                ));
            }
            break;
        }
    }
    merge(results)
}

/// One manager's transaction through the helper.
async fn transaction(s: &Share, pinned: bool, hang: Duration) -> CommandResult {
    let verb = if pinned {
        Verb::Install {
            manager: s.manager,
            pins: s
                .plan
                .iter()
                .map(|p| Pin {
                    name: p.package.clone(),
                    version: p.to_version.clone(),
                })
                .collect(),
        }
    } else {
        Verb::Upgrade {
            manager: s.manager,
            packages: s.names.clone(),
        }
    };
    let out = match crate::helper::call(&verb, Limit::Silence(hang)).await {
        Ok(o) => o,
        Err(e) => return process_failure(e),
    };
    let ok = out.success();
    let summary = if !ok {
        format!(
            "install failed: `{}` exited with {}",
            out.command, out.exit_code
        )
    } else if pinned {
        let items: Vec<String> = s
            .plan
            .iter()
            .map(|p| format!("{} {}", p.package, p.to_version))
            .collect();
        format!("installed {}", items.join(", "))
    } else {
        format!("installed {}", s.names.join(", "))
    };
    result_from(out, ok, None, summary)
}

/// Repair `m`'s database (`dpkg --configure -a`, `apk fix`) and check it again: success
/// when the repair ran and the database is healthy afterwards.
#[tracing::instrument(skip_all, fields(manager = m.as_str()))]
pub async fn repair(
    m: PackageManager,
    read_only: bool,
    check_timeout: Duration,
    hang: Duration,
) -> CommandResult {
    if read_only {
        return refused(
            "this agent is read-only (read_only = true / --read-only): repairs are refused".into(),
            "refused: agent is read-only".into(),
        );
    }
    let verb = match Verb::repair(m) {
        Ok(v) => v,
        Err(e) => return refused(e, "refused: no safe repair".into()),
    };
    let out = match crate::helper::call(&verb, Limit::Silence(hang)).await {
        Ok(o) => o,
        Err(e) => return process_failure(e),
    };
    let ran = out.success();
    let after = audit::audit_one(m, check_timeout).await;
    let summary = match (&after, ran) {
        (None, true) => format!("repaired the {} database", audit::db_name(m)),
        (Some(i), _) => format!(
            "the {} database still needs attention: {}",
            audit::db_name(m),
            i.problem.lines().next().unwrap_or("")
        ),
        (None, false) => format!(
            "repair failed: `{}` exited with {}",
            out.command, out.exit_code
        ),
    };
    result_from(out, ran && after.is_none(), None, summary)
}

#[cfg(test)]
mod tests;
