//! Turning an uploaded report into validated rows. One bad row is rejected with its
//! reason; it never sinks the report (seed 000).

use canopy_api_types::agent::{RejectedRow, ReportUpload};
use canopy_api_types::docker::Container;
use canopy_api_types::updates::{PackageManager, PackageUpdate};
use canopy_store::IngestReport;
use std::collections::HashSet;

const MAX_NAME: usize = 256;
const MAX_VERSION: usize = 256;

fn check_field(name: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("field `{name}` is empty"));
    }
    if value.len() > max {
        return Err(format!("field `{name}` is longer than {max} bytes"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "field `{name}` contains whitespace or control characters"
        ));
    }
    Ok(())
}

fn validate_row(value: &serde_json::Value) -> Result<PackageUpdate, String> {
    let row: PackageUpdate = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    if row.manager == PackageManager::Docker {
        return Err(format!(
            "`{}`: image updates come from the server's registry checks, not from reports",
            row.package
        ));
    }
    check_field("package", &row.package, MAX_NAME)?;
    check_field("current_version", &row.current_version, MAX_VERSION)?;
    check_field("available_version", &row.available_version, MAX_VERSION)?;
    if let Some(arch) = &row.arch {
        check_field("arch", arch, 64)?;
    }
    Ok(row)
}

/// A container of a report: its name must be a path segment of the tree
/// (`[A-Za-z0-9][A-Za-z0-9_.-]*`, as Docker's own names are), the rest bounded.
fn validate_container(value: &serde_json::Value) -> Result<Container, String> {
    let c: Container = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    canopy_inventory::validate_name(&c.name).map_err(|e| format!("container name: {e}"))?;
    check_field("image", &c.image, 512)?;
    check_field("id", &c.id, 128)?;
    check_field("platform", &c.platform, 64)?;
    check_field("state", &c.state, 32)?;
    if c.repo_digests.len() > 64 {
        return Err("more than 64 repo_digests".into());
    }
    for d in &c.repo_digests {
        check_field("repo_digests", d, 512)?;
    }
    Ok(c)
}

/// Containers of an upload: `None` stays `None` (no engine, or listing failed); malformed
/// ones and repeated names are rejected with their index, the rest kept.
fn validate_containers(
    values: Option<Vec<serde_json::Value>>,
) -> (Option<Vec<Container>>, Vec<RejectedRow>) {
    let Some(values) = values else {
        return (None, Vec::new());
    };
    let mut kept: Vec<Container> = Vec::with_capacity(values.len());
    let mut rejected = Vec::new();
    let mut names = HashSet::new();
    for (index, value) in values.iter().enumerate() {
        match validate_container(value) {
            Ok(c) if !names.insert(c.name.clone()) => rejected.push(RejectedRow {
                index,
                reason: format!("duplicate of an earlier container named `{}`", c.name),
            }),
            Ok(c) => kept.push(c),
            Err(reason) => rejected.push(RejectedRow { index, reason }),
        }
    }
    (Some(kept), rejected)
}

/// A validated upload: what to store and what was refused, row by row.
#[derive(Debug)]
pub struct Validated {
    pub report: IngestReport,
    /// Update rows refused (index into `updates`).
    pub rejected: Vec<RejectedRow>,
    /// Containers refused (index into `containers`).
    pub rejected_containers: Vec<RejectedRow>,
}

/// The package manager a host's OS uses (from os-release `ID`).
pub fn native_manager(os_id: &str) -> Option<PackageManager> {
    match os_id {
        "debian" | "ubuntu" | "raspbian" | "linuxmint" | "pop" | "kali" => {
            Some(PackageManager::Apt)
        }
        "fedora" | "rhel" | "centos" | "rocky" | "almalinux" | "ol" | "amzn" => {
            Some(PackageManager::Dnf)
        }
        "alpine" => Some(PackageManager::Apk),
        _ => None,
    }
}

/// Validate every row; return the rows to store and the rejected ones with reasons.
/// `scanned_managers` = managers that produced rows plus the host's native manager,
/// minus any scanner that reported an error (its absent rows must not be closed).
pub fn validate(upload: ReportUpload, os_id: &str) -> Validated {
    let mut rows = Vec::with_capacity(upload.updates.len());
    let mut rejected = Vec::new();
    let mut seen = HashSet::new();
    for (index, value) in upload.updates.iter().enumerate() {
        match validate_row(value) {
            Ok(row) => {
                let key = (row.manager, row.package.clone(), row.arch.clone());
                if seen.insert(key) {
                    rows.push((index, row));
                } else {
                    rejected.push(RejectedRow {
                        index,
                        reason: format!(
                            "duplicate of an earlier row for package `{}`",
                            row.package
                        ),
                    });
                }
            }
            Err(reason) => rejected.push(RejectedRow { index, reason }),
        }
    }
    let failed: HashSet<&str> = upload
        .scanner_errors
        .iter()
        .map(|e| e.scanner.as_str())
        .collect();
    let mut managers: Vec<PackageManager> = rows.iter().map(|(_, r)| r.manager).collect();
    managers.extend(native_manager(os_id));
    managers.sort_by_key(|m| m.as_str());
    managers.dedup();
    managers.retain(|m| !failed.contains(m.as_str()));
    let (containers, rejected_containers) = validate_containers(upload.containers);
    Validated {
        report: IngestReport {
            report_hash: upload.report_hash,
            reboot_required: upload.reboot_required,
            scanned_at: upload.scanned_at,
            scanned_managers: managers,
            scanner_errors: upload.scanner_errors,
            rows,
            containers,
        },
        rejected,
        rejected_containers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_api_types::agent::ScannerError;
    use serde_json::json;

    fn upload(rows: Vec<serde_json::Value>) -> ReportUpload {
        ReportUpload {
            report_hash: "h".into(),
            reboot_required: false,
            scanned_at: chrono::Utc::now(),
            scanner_errors: vec![],
            updates: rows,
            containers: None,
        }
    }

    fn good(name: &str) -> serde_json::Value {
        json!({"manager": "apt", "package": name, "current_version": "1.0",
               "available_version": "1.1", "severity": "normal"})
    }

    #[test]
    fn bad_rows_are_rejected_with_reasons_and_the_rest_kept() {
        let rows = vec![
            good("a"),
            json!({"manager": "apt", "current_version": "1", "available_version": "2", "severity": "normal"}),
            json!({"manager": "zypper", "package": "b", "current_version": "1", "available_version": "2", "severity": "normal"}),
            json!({"manager": "apt", "package": "bad name", "current_version": "1", "available_version": "2", "severity": "normal"}),
            good("a"),
            json!("not an object"),
            good("c"),
        ];
        let Validated {
            report, rejected, ..
        } = validate(upload(rows), "debian");
        assert_eq!(
            report.rows.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 6]
        );
        let reasons: Vec<_> = rejected
            .iter()
            .map(|r| (r.index, r.reason.as_str()))
            .collect();
        assert!(
            reasons[0].1.contains("missing field `package`"),
            "{reasons:?}"
        );
        assert!(reasons[1].1.contains("zypper"), "{reasons:?}");
        assert!(reasons[2].1.contains("whitespace"), "{reasons:?}");
        assert!(reasons[3].1.contains("duplicate"), "{reasons:?}");
        assert_eq!(rejected.len(), 5);
    }

    #[test]
    fn failed_scanners_are_not_reconciled() {
        let mut u = upload(vec![]);
        u.scanner_errors.push(ScannerError {
            scanner: "apt".into(),
            message: "lock".into(),
        });
        let report = validate(u, "debian").report;
        assert!(report.scanned_managers.is_empty());
        let report = validate(upload(vec![]), "debian").report;
        assert_eq!(report.scanned_managers, vec![PackageManager::Apt]);
    }
}
