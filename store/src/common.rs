//! Pure helpers shared by both backends: fingerprints, result hashes, timestamps,
//! event preparation and the reasons shown to users. No SQL here.

use crate::events;
use crate::model::NewEvent;
use canopy_api_types::commands::CommandResult;
use canopy_api_types::updates::UpdateStatus;
use canopy_api_types::EventId;
use chrono::{DateTime, SubsecRound, Utc};
use sha2::{Digest, Sha256};

/// Now, truncated to microseconds (what PostgreSQL stores; checksums must match).
pub fn now_micros() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// The approved plan's fingerprint of one update row.
pub fn fingerprint(
    manager: &str,
    package: &str,
    arch: &str,
    current: &str,
    available: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [manager, package, arch, current, available] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// Identity of a submitted result, to recognise a resubmission.
pub fn result_hash(result: &CommandResult) -> String {
    let json = serde_json::to_vec(result).expect("result serialises");
    hex::encode(Sha256::digest(json))
}

/// An event ready to insert: id, timestamp and checksum fixed.
#[derive(Debug, Clone)]
pub struct PreparedEvent {
    pub id: EventId,
    pub ts: DateTime<Utc>,
    pub event: NewEvent,
    pub checksum: String,
    pub host_id: Option<canopy_api_types::HostId>,
    /// The guest the event is about (not part of the checksum, like `host_id`).
    pub guest_id: Option<canopy_api_types::GuestId>,
}

pub fn prepare_event(
    event: NewEvent,
    host: Option<canopy_api_types::HostId>,
    ts: DateTime<Utc>,
) -> PreparedEvent {
    let id = EventId::new();
    let ts = micros(ts);
    let checksum = events::checksum(id, ts, &event);
    PreparedEvent {
        id,
        ts,
        event,
        checksum,
        host_id: host,
        guest_id: None,
    }
}

impl PreparedEvent {
    /// Link the event to a guest.
    pub fn with_guest(mut self, guest: Option<canopy_api_types::GuestId>) -> Self {
        self.guest_id = guest;
        self
    }
}

/// Statuses from which a row may be approved. Approving a row whose dry-run is awaiting
/// confirmation supersedes that dry-run: its rows now belong to the new one, so confirming the
/// old one is a conflict ("its rows changed since"). A plan that was never confirmed is
/// planned again, never stuck.
pub const APPROVABLE: [UpdateStatus; 3] = [
    UpdateStatus::Pending,
    UpdateStatus::Failed,
    UpdateStatus::AwaitingConfirmation,
];

/// Why an update id could not be approved.
pub fn skip_reason(status: UpdateStatus, held: bool) -> String {
    if held {
        "held back on the host (apt-mark hold); release it there first".into()
    } else {
        format!("status is {}", status.as_str())
    }
}

/// The dashboard figures, one query each (no N+1); plain SQL both backends accept.
pub const STATS_BY_SEVERITY_SQL: &str =
    "SELECT severity, COUNT(*) FROM updates WHERE status NOT IN ('installed', 'reconciled') GROUP BY severity";
pub const STATS_BY_STATUS_SQL: &str = "SELECT status, COUNT(*) FROM updates GROUP BY status";
pub const STATS_HOSTS_SQL: &str = "SELECT COUNT(*) FROM hosts";
pub const STATS_HOSTS_WITH_UPDATES_SQL: &str =
    "SELECT COUNT(DISTINCT host_id) FROM updates WHERE status NOT IN ('installed', 'reconciled')";

/// Build [`UpdateStats`] from the four figures, listing every severity and status
/// (zero counts included).
pub fn assemble_stats(
    by_severity: Vec<(String, i64)>,
    by_status: Vec<(String, i64)>,
    hosts: i64,
    hosts_with_updates: i64,
) -> canopy_api_types::updates::UpdateStats {
    use canopy_api_types::updates::Severity;
    use std::collections::HashMap;
    let sev: HashMap<String, i64> = by_severity.into_iter().collect();
    let st: HashMap<String, i64> = by_status.into_iter().collect();
    let n = |m: &HashMap<String, i64>, k: &str| m.get(k).copied().unwrap_or(0).max(0) as u64;
    canopy_api_types::updates::UpdateStats {
        by_severity: [
            Severity::Low,
            Severity::Normal,
            Severity::Important,
            Severity::Security,
        ]
        .into_iter()
        .map(|s| (s, n(&sev, s.as_str())))
        .collect(),
        by_status: UpdateStatus::ALL
            .into_iter()
            .map(|s| (s, n(&st, s.as_str())))
            .collect(),
        hosts: hosts.max(0) as u64,
        hosts_with_updates: hosts_with_updates.max(0) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_changes_with_any_part() {
        let a = fingerprint("apt", "nginx", "amd64", "1.0", "1.1");
        assert_eq!(a, fingerprint("apt", "nginx", "amd64", "1.0", "1.1"));
        assert_ne!(a, fingerprint("apt", "nginx", "amd64", "1.0", "1.2"));
        assert_ne!(
            fingerprint("apt", "ab", "", "c", "d"),
            fingerprint("apt", "a", "b", "c", "d")
        );
    }
}
