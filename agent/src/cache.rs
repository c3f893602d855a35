//! The local cache (`STATE_DIR/cache.json`, mode 0600): the last scan report, its
//! hash, and when the agent last scanned, checked in and uploaded. `status` and
//! `list-updates` read it without touching the server or the package manager.

use crate::config::write_private;
use anyhow::Context;
use canopy_api_types::agent::ScanReport;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cache {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ScanReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_hash: Option<String>,
    /// Hash of the report the server last accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkin: Option<DateTime<Utc>>,
    /// Last check-in or upload error (cleared on success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Cache {
    /// Read the cache; a missing file is an empty cache, a corrupt one an error.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("parsing cache {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading cache {}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).context("serialising cache")?;
        write_private(path, &bytes)
    }

    /// Store a fresh scan.
    pub fn set_report(&mut self, report: ScanReport) {
        self.report_hash = Some(crate::scan::report_hash(&report));
        self.last_scan = Some(report.scanned_at);
        self.report = Some(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn save_load_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state/cache.json");
        assert_eq!(Cache::load(&p).expect("missing is empty"), Cache::default());
        let mut c = Cache::default();
        c.set_report(ScanReport {
            scanned_at: Utc::now(),
            ..Default::default()
        });
        c.save(&p).expect("save");
        assert_eq!(
            std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(Cache::load(&p).expect("load"), c);
    }
}
