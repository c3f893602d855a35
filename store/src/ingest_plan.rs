//! Pure classification of a scan report against a host's open update rows, shared by
//! both backends: which rows are new, which open rows change (and whether their
//! approval is void), which stay as they are, and which open rows the report no
//! longer lists. The backends only turn the plan into chunked SQL.
//!
//! Rules (the conformance suite pins them):
//! - A key is `(manager, package, arch)`. A key repeated within one report keeps its
//!   first row; the repeats are rejected with a reason naming the first row.
//! - Rows carried by an in-flight command (`dry_run`, `installing`) are never touched.
//! - A changed version (current or available) voids the row's binding: it goes back to
//!   `pending` with fingerprint and command cleared — except a `rejected` row whose
//!   `available_version` is unchanged, which stays rejected (the same version is not
//!   offered again). Severity, source and held are refreshed in place.
//! - Open rows of a manager whose scanner ran (`scanned_managers`) that the report no
//!   longer lists are reconciled, except in-flight ones. A manager whose scanner failed
//!   keeps its rows.

use crate::model::IngestReport;
use canopy_api_types::agent::RejectedRow;
use canopy_api_types::updates::{PackageManager, PackageUpdate, Severity, UpdateStatus};
use canopy_api_types::UpdateId;
use std::collections::{HashMap, HashSet};

/// Where the rows of an ingest come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// An agent's (or an agentless scan's) report: it also sets the host's report hash,
    /// reboot flag and last report, and replaces its containers when it carries them.
    Report,
    /// The server's image updates for the host (`DockerStore::sync_image_updates`): the
    /// `docker` rows only, nothing else of the host.
    ImageChecks,
}

impl Source {
    pub(crate) fn event_type(self) -> &'static str {
        match self {
            Source::Report => crate::events::REPORT_INGESTED,
            Source::ImageChecks => crate::events::IMAGE_UPDATES_CHECKED,
        }
    }
}

/// The report an image-update sync is ingested as: the `docker` manager scanned, `rows`.
pub(crate) fn image_update_report(rows: Vec<PackageUpdate>) -> crate::Result<IngestReport> {
    if let Some(r) = rows.iter().find(|r| r.manager != PackageManager::Docker) {
        return Err(crate::StoreError::ReportRefused {
            reason: format!(
                "image updates are rows of manager docker; {} is of manager {}",
                r.package,
                r.manager.as_str()
            ),
            rejected: Vec::new(),
        });
    }
    Ok(IngestReport {
        report_hash: String::new(),
        reboot_required: false,
        scanned_at: chrono::Utc::now(),
        scanned_managers: vec![PackageManager::Docker],
        scanner_errors: Vec::new(),
        rows: rows.into_iter().enumerate().collect(),
        containers: None,
    })
}

/// An open update row as loaded for ingestion.
#[derive(Debug, Clone)]
pub(crate) struct OpenRow {
    pub id: UpdateId,
    pub manager: PackageManager,
    pub package: String,
    pub arch: String,
    pub current_version: String,
    pub available_version: String,
    pub source: Option<String>,
    pub severity: Severity,
    pub held: bool,
    pub status: UpdateStatus,
}

/// An existing open row to overwrite with the report's values.
#[derive(Debug, Clone)]
pub(crate) struct Refresh {
    /// Index of the row in the upload.
    pub index: usize,
    pub id: UpdateId,
    pub row: PackageUpdate,
    /// `true` when the row's approval/rejection is void: status → pending,
    /// fingerprint and command cleared.
    pub reset: bool,
}

#[derive(Debug, Default)]
pub(crate) struct IngestPlan {
    /// `(index in the upload, row)` for keys without an open row.
    pub inserts: Vec<(usize, PackageUpdate)>,
    pub refreshes: Vec<Refresh>,
    /// Rows listed again with nothing to change (including in-flight ones).
    pub unchanged: u64,
    /// Open rows no longer listed by a scanner that ran.
    pub reconcile: Vec<UpdateId>,
    /// Repeated keys within the report.
    pub rejected: Vec<RejectedRow>,
}

type Key = (PackageManager, String, String);

fn key(row: &PackageUpdate) -> Key {
    (
        row.manager,
        row.package.clone(),
        row.arch.clone().unwrap_or_default(),
    )
}

fn in_flight(status: UpdateStatus) -> bool {
    matches!(status, UpdateStatus::DryRun | UpdateStatus::Installing)
}

pub(crate) fn plan(open: Vec<OpenRow>, report: &IngestReport) -> IngestPlan {
    let mut by_key: HashMap<Key, OpenRow> = open
        .into_iter()
        .map(|r| ((r.manager, r.package.clone(), r.arch.clone()), r))
        .collect();
    let mut out = IngestPlan::default();
    let mut first_index: HashMap<Key, usize> = HashMap::with_capacity(report.rows.len());
    let mut listed: HashSet<Key> = HashSet::with_capacity(report.rows.len());
    for (index, row) in &report.rows {
        let k = key(row);
        if let Some(first) = first_index.get(&k) {
            out.rejected.push(RejectedRow {
                index: *index,
                reason: format!(
                    "duplicate of row {first}: same manager, package and arch ({} {} {})",
                    k.0.as_str(),
                    k.1,
                    if k.2.is_empty() { "-" } else { &k.2 }
                ),
            });
            continue;
        }
        first_index.insert(k.clone(), *index);
        listed.insert(k.clone());
        let Some(old) = by_key.get(&k) else {
            out.inserts.push((*index, row.clone()));
            continue;
        };
        if in_flight(old.status) {
            out.unchanged += 1;
            continue;
        }
        let available_changed = old.available_version != row.available_version;
        let current_changed = old.current_version != row.current_version;
        let others_changed =
            old.source != row.source || old.severity != row.severity || old.held != row.held;
        if !available_changed && !current_changed && !others_changed {
            out.unchanged += 1;
            continue;
        }
        let keeps_rejection = old.status == UpdateStatus::Rejected && !available_changed;
        let reset = (available_changed || current_changed) && !keeps_rejection;
        out.refreshes.push(Refresh {
            index: *index,
            id: old.id,
            row: row.clone(),
            reset,
        });
    }
    let scanned: HashSet<PackageManager> = report.scanned_managers.iter().copied().collect();
    let mut reconcile: Vec<((&'static str, String, String), UpdateId)> = by_key
        .drain()
        .filter(|(k, r)| scanned.contains(&k.0) && !listed.contains(k) && !in_flight(r.status))
        .map(|(k, r)| ((k.0.as_str(), k.1, k.2), r.id))
        .collect();
    reconcile.sort();
    out.reconcile = reconcile.into_iter().map(|(_, id)| id).collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn pu(pkg: &str, cur: &str, avail: &str) -> PackageUpdate {
        PackageUpdate {
            manager: PackageManager::Apt,
            package: pkg.into(),
            current_version: cur.into(),
            available_version: avail.into(),
            arch: Some("amd64".into()),
            source: None,
            severity: Severity::Normal,
            held: false,
        }
    }

    fn open(pkg: &str, cur: &str, avail: &str, status: UpdateStatus) -> OpenRow {
        OpenRow {
            id: UpdateId::new(),
            manager: PackageManager::Apt,
            package: pkg.into(),
            arch: "amd64".into(),
            current_version: cur.into(),
            available_version: avail.into(),
            source: None,
            severity: Severity::Normal,
            held: false,
            status,
        }
    }

    fn report(rows: Vec<PackageUpdate>) -> IngestReport {
        IngestReport {
            report_hash: "h".into(),
            reboot_required: false,
            scanned_at: Utc::now(),
            scanned_managers: vec![PackageManager::Apt],
            scanner_errors: vec![],
            rows: rows.into_iter().enumerate().collect(),
            containers: None,
        }
    }

    #[test]
    fn classifies_rows() {
        let rows = vec![
            open("same", "1", "2", UpdateStatus::Pending),
            open("newer", "1", "2", UpdateStatus::AwaitingConfirmation),
            open("gone", "1", "2", UpdateStatus::Pending),
            open("flight", "1", "2", UpdateStatus::Installing),
            open("rej", "1", "2", UpdateStatus::Rejected),
        ];
        let r = report(vec![
            pu("same", "1", "2"),
            pu("newer", "1", "3"),
            pu("fresh", "1", "2"),
            pu("fresh", "1", "2"),
            pu("rej", "1.5", "2"),
        ]);
        let p = plan(rows, &r);
        assert_eq!(p.inserts.len(), 1);
        assert_eq!(p.unchanged, 1);
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(p.rejected[0].index, 3);
        assert_eq!(p.refreshes.len(), 2);
        assert!(p
            .refreshes
            .iter()
            .any(|f| f.row.package == "newer" && f.reset));
        assert!(p
            .refreshes
            .iter()
            .any(|f| f.row.package == "rej" && !f.reset));
        assert_eq!(p.reconcile.len(), 1, "only 'gone'; 'flight' is in flight");
    }
}
