//! Scanners: decide which package managers to use (the configured ones, else every one
//! present), ask each for its outdated packages, list the Docker engine's containers
//! ([`crate::docker::inventory`]) and assemble one [`ScanReport`]. A scanner that fails is recorded in
//! `scanner_errors` (its packages are then absent, not removed) instead of failing
//! the whole scan. Parsers are pure functions tested on captured real output.

pub mod apk;
pub mod apt;
pub mod dnf;

use crate::process::which;
use canopy_api_types::agent::{report_hash_input, ScanReport, ScannerError};
use canopy_api_types::updates::PackageManager;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

/// The longest the engine may take to answer one inventory request.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);

/// How to scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Refresh the package lists first (`apt-get update`, `dnf makecache`, `apk update`).
    pub refresh: bool,
    /// Timeout of each external command.
    pub timeout: Duration,
    /// The package managers to scan, in order (`package_managers` in the config); empty =
    /// every one detected.
    pub managers: Vec<PackageManager>,
    /// Where the Docker engine is (its containers join every report, [`crate::docker`]).
    pub docker: crate::docker::DockerConfig,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            refresh: false,
            timeout: Duration::from_secs(600),
            managers: Vec::new(),
            docker: crate::docker::DockerConfig::default(),
        }
    }
}

/// The program a manager needs on PATH (and what the error names when it is missing).
fn program(m: PackageManager) -> &'static str {
    match m {
        PackageManager::Apt => "apt-get",
        PackageManager::Dnf => "dnf",
        PackageManager::Apk => "apk",
        PackageManager::Docker => "docker",
    }
}

/// The package managers found on this machine, in the order they are scanned.
pub fn detect_managers() -> Vec<PackageManager> {
    let mut found = Vec::new();
    if which("apt-get").is_some() && which("dpkg-query").is_some() {
        found.push(PackageManager::Apt);
    }
    if which("dnf").is_some() {
        found.push(PackageManager::Dnf);
    }
    if which("apk").is_some() {
        found.push(PackageManager::Apk);
    }
    found
}

/// The managers the agent works with: `configured` (duplicates dropped, order kept) when it
/// names any, else every one detected. A configured manager is used even when missing, so
/// that its scan fails loudly instead of the host silently reporting nothing.
pub fn select_managers(configured: &[PackageManager]) -> Vec<PackageManager> {
    if configured.is_empty() {
        return detect_managers();
    }
    let mut out: Vec<PackageManager> = Vec::new();
    for m in configured {
        if *m != PackageManager::Docker && !out.contains(m) {
            out.push(*m);
        }
    }
    out
}

/// Run the scanner of every selected manager and build the report.
#[tracing::instrument(skip_all, fields(refresh = opts.refresh))]
pub async fn scan(opts: &ScanOptions) -> ScanReport {
    let mut report = ScanReport {
        scanned_at: chrono::Utc::now(),
        ..ScanReport::default()
    };
    let managers = select_managers(&opts.managers);
    if managers.is_empty() {
        report.scanner_errors.push(ScannerError {
            scanner: "detect".into(),
            message: "no supported package manager found (looked for apt-get, dnf, apk on PATH)"
                .into(),
        });
    }
    for m in managers {
        if which(program(m)).is_none() {
            report.scanner_errors.push(ScannerError {
                scanner: m.as_str().into(),
                message: format!(
                    "{} is configured (package_managers) but `{}` is not on PATH",
                    m.as_str(),
                    program(m)
                ),
            });
            continue;
        }
        let result = match m {
            PackageManager::Apt => apt::scan(opts).await,
            PackageManager::Dnf => dnf::scan(opts).await,
            PackageManager::Apk => apk::scan(opts).await,
            PackageManager::Docker => continue,
        };
        match result {
            Ok(mut updates) => report.updates.append(&mut updates),
            Err(e) => {
                tracing::warn!(scanner = m.as_str(), error = %e, "scanner failed");
                report.scanner_errors.push(ScannerError {
                    scanner: m.as_str().into(),
                    message: format!("{e:#}"),
                });
            }
        }
    }
    report.updates.sort_by(|a, b| {
        (a.manager.as_str(), &a.package, &a.arch).cmp(&(b.manager.as_str(), &b.package, &b.arch))
    });
    report.reboot_required = reboot_required(Path::new("/"));
    // No engine: `None` and no error; an engine that cannot be used: `None` and an error.
    let (containers, docker_error) =
        crate::docker::inventory::scan(&opts.docker, opts.timeout.min(DOCKER_TIMEOUT)).await;
    report.containers = containers;
    report.scanner_errors.extend(docker_error);
    tracing::info!(
        updates = report.updates.len(),
        containers = report.containers.as_ref().map(Vec::len),
        errors = report.scanner_errors.len(),
        "scan finished"
    );
    report
}

/// Refresh `m`'s package lists (`apt-get update`, `dnf makecache`, `apk update`): they need
/// root, so through the helper ([`crate::helper`]); read-only work with a deadline.
pub async fn refresh(m: PackageManager, timeout: Duration) -> anyhow::Result<()> {
    crate::helper::call(
        &crate::helper::Verb::Refresh(m),
        crate::process::Limit::Deadline(timeout),
    )
    .await?
    .check(&[])?;
    Ok(())
}

/// `/var/run/reboot-required` (Debian/Ubuntu) or `/run/reboot-required` exists under `root`.
pub fn reboot_required(root: &Path) -> bool {
    ["var/run/reboot-required", "run/reboot-required"]
        .iter()
        .any(|p| root.join(p).exists())
}

/// SHA-256 hex of the canonical report content (not its timestamp).
pub fn report_hash(report: &ScanReport) -> String {
    hex::encode(Sha256::digest(report_hash_input(report)))
}

/// Non-empty, trimmed lines.
pub(crate) fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
}

/// Drop the leading `#` provenance lines of a committed third-party fixture.
#[cfg(test)]
pub(crate) fn strip_fixture_header(text: &str) -> String {
    text.lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_api_types::updates::{PackageUpdate, Severity};

    fn upd(name: &str) -> PackageUpdate {
        PackageUpdate {
            manager: PackageManager::Apt,
            package: name.into(),
            current_version: "1".into(),
            available_version: "2".into(),
            arch: Some("amd64".into()),
            source: None,
            severity: Severity::Normal,
            held: false,
        }
    }

    #[test]
    fn hash_ignores_order_and_timestamp() {
        let a = ScanReport {
            updates: vec![upd("a"), upd("b")],
            scanned_at: chrono::Utc::now(),
            ..Default::default()
        };
        let mut b = a.clone();
        b.updates.reverse();
        b.scanned_at = chrono::DateTime::<chrono::Utc>::MIN_UTC;
        assert_eq!(report_hash(&a), report_hash(&b));
        assert_eq!(report_hash(&a).len(), 64);
        let mut c = a.clone();
        c.reboot_required = true;
        assert_ne!(report_hash(&a), report_hash(&c));
    }

    #[test]
    fn configured_managers_win_over_detection() {
        use PackageManager::*;
        assert_eq!(select_managers(&[Dnf, Apt, Dnf]), [Dnf, Apt]);
        assert_eq!(select_managers(&[Docker, Apk]), [Apk]);
        assert_eq!(select_managers(&[]), detect_managers());
    }

    #[tokio::test]
    async fn a_configured_but_missing_manager_is_a_scanner_error() {
        if which("apk").is_some() {
            return;
        }
        let report = scan(&ScanOptions {
            managers: vec![PackageManager::Apk],
            ..ScanOptions::default()
        })
        .await;
        assert!(report.updates.is_empty());
        assert_eq!(report.scanner_errors.len(), 1);
        assert_eq!(report.scanner_errors[0].scanner, "apk");
        assert!(
            report.scanner_errors[0].message.contains("not on PATH"),
            "{:?}",
            report.scanner_errors
        );
    }

    /// The scanners themselves read only; the refresh is the one step that needs root, and
    /// it goes through the helper's `refresh` verb, never `sudo apt-get …`.
    #[test]
    fn scanner_commands_run_as_the_agent_user() {
        let t = Duration::from_secs(5);
        for cmd in [
            apt::list_cmd(t),
            apt::showhold_cmd(t),
            dnf::check_update_cmd(t),
            dnf::updateinfo_cmd(t),
            dnf::rpm_query_cmd(&["bash".into()], t),
            apk::list_cmd(t),
            apk::version_cmd(t),
        ] {
            assert_ne!(cmd.program, "sudo", "{cmd}");
            assert!(
                matches!(cmd.limit, crate::process::Limit::Deadline(_)),
                "{cmd}"
            );
        }
    }

    #[test]
    fn reboot_flag_reads_the_marker_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!reboot_required(dir.path()));
        std::fs::create_dir_all(dir.path().join("var/run")).expect("mkdir");
        std::fs::write(dir.path().join("var/run/reboot-required"), "").expect("write");
        assert!(reboot_required(dir.path()));
    }
}
