//! The agent ↔ server protocol: registration, long-poll check-in, reports, results.

use crate::commands::{AgentCommand, CommandResult};
use crate::docker::Container;
use crate::updates::{PackageManager, PackageUpdate};
use crate::HostId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Facts about the machine the agent runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HostFacts {
    pub hostname: String,
    /// `/etc/machine-id`: with (cluster, vmid) the stable identity of a guest.
    pub machine_id: String,
    /// `ID` from /etc/os-release (`debian`, `fedora`, `alpine`).
    pub os_id: String,
    /// `PRETTY_NAME` from /etc/os-release.
    pub os_pretty: String,
    pub kernel: String,
    pub arch: String,
    pub agent_version: String,
    /// The agent runs read-only: scan and dry-run only, never install.
    #[serde(default)]
    pub read_only: bool,
    /// The user the agent runs as (`root`, or `canopy-agent` with a sudoers rule); empty from
    /// agents older than this field.
    #[serde(default)]
    pub run_as: String,
    /// What the agent's last check of the package databases found (at start-up, and after
    /// every install and repair; the check before an install refuses it on an interrupted
    /// database): an interrupted dpkg and the like. Empty = healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub package_db: Vec<PackageDbIssue>,
}

/// A package database that needs attention (`dpkg --audit` printed something).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PackageDbIssue {
    pub manager: PackageManager,
    /// What the check found, first lines of its output ("The following packages are only
    /// half configured …").
    pub problem: String,
    /// The repair an operator can approve (`dpkg --configure -a`), if the agent has one for
    /// this manager; it runs as the command `repair`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<String>,
}

/// `POST /api/v1/agent/register`.
///
/// A registration creates a new host, unless it proves it is an existing one: by
/// `current_token` (the host's current credential, `HOST_ID.SECRET`), or by a registration
/// token a deploy bound to the guest that host is attached to. A machine-id is a fact, never
/// a key: a new host whose machine-id another host already has is flagged
/// `duplicate_machine_id` (both are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RegisterRequest {
    pub registration_token: String,
    pub facts: HostFacts,
    /// Re-enrol the host this credential belongs to (it is replaced by the new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_token: Option<String>,
}

/// The credential the agent keeps (0600) and sends as `Authorization: Bearer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RegisterResponse {
    pub host_id: HostId,
    /// `HOST_ID.SECRET`; shown once, stored hashed on the server.
    pub agent_token: String,
}

/// One complete scan of a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ScanReport {
    pub updates: Vec<PackageUpdate>,
    /// `/var/run/reboot-required` exists (or the equivalent).
    #[serde(default)]
    pub reboot_required: bool,
    /// Scanners that failed, with their reason; their packages are absent, not removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scanner_errors: Vec<ScannerError>,
    pub scanned_at: DateTime<Utc>,
    /// The host's Docker containers: `None` when the host has no Docker engine, or when
    /// listing them failed (then `scanner_errors` names `docker`, and the server keeps the
    /// containers it knew: absent, not removed); `Some(vec![])` for an engine without any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<Container>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ScannerError {
    pub scanner: String,
    pub message: String,
}

/// `POST /api/v1/agent/checkin`: held open by the server up to `wait_secs` until a
/// command is queued for this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CheckinRequest {
    pub facts: HostFacts,
    /// Hash of the agent's current scan report (see [`report_hash`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_hash: Option<String>,
    /// How long the server may hold the request (capped at 30 s by the server).
    #[serde(default)]
    pub wait_secs: u32,
    /// The first check-in since the agent started (or since it lost the server): the server
    /// records it at once, which is how a deploy sees a freshly started agent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub connecting: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CheckinResponse {
    pub commands: Vec<AgentCommand>,
    /// The server does not have the report with `report_hash`: send it.
    pub report_wanted: bool,
}

/// `POST /api/v1/agent/report`: `raw` is a list of JSON values so that one malformed
/// row is rejected with its reason while the rest are stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReportUpload {
    pub report_hash: String,
    pub reboot_required: bool,
    pub scanned_at: DateTime<Utc>,
    #[serde(default)]
    pub scanner_errors: Vec<ScannerError>,
    pub updates: Vec<serde_json::Value>,
    /// [`ScanReport::containers`], one JSON value per container so that a malformed one is
    /// rejected with its reason (`ReportAccepted::rejected_containers`) and the rest stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<serde_json::Value>>,
}

impl ReportUpload {
    /// The upload of `report`, whose hash is `report_hash`.
    pub fn of(report: &ScanReport, report_hash: String) -> Self {
        Self {
            report_hash,
            reboot_required: report.reboot_required,
            scanned_at: report.scanned_at,
            scanner_errors: report.scanner_errors.clone(),
            updates: report
                .updates
                .iter()
                .filter_map(|u| serde_json::to_value(u).ok())
                .collect(),
            containers: report.containers.as_ref().map(|cs| {
                cs.iter()
                    .filter_map(|c| serde_json::to_value(c).ok())
                    .collect()
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RejectedRow {
    /// Index of the row in `updates`.
    pub index: usize,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReportAccepted {
    pub accepted: u64,
    pub rejected: Vec<RejectedRow>,
    /// Rows closed because the update is no longer offered or was applied outside Canopy.
    pub reconciled: u64,
    /// Containers of the report that were malformed (`index` into `containers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected_containers: Vec<RejectedRow>,
}

/// `POST /api/v1/agent/commands/{id}/result`. Submitting the same result twice is a no-op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ResultSubmission {
    pub result: CommandResult,
}

/// Stable hash of a report's content (not of its timestamp): SHA-256 hex computed by
/// the agent over the canonical JSON of the sorted updates and the reboot flag, and the
/// containers sorted by name when the host has Docker (a host without keeps the hash it
/// had before containers were reported).
pub fn report_hash_input(report: &ScanReport) -> Vec<u8> {
    let mut updates = report.updates.clone();
    updates.sort_by(|a, b| {
        (a.manager.as_str(), &a.package, &a.arch).cmp(&(b.manager.as_str(), &b.package, &b.arch))
    });
    let base = (updates, report.reboot_required, &report.scanner_errors);
    match &report.containers {
        None => serde_json::to_vec(&base),
        Some(containers) => {
            let mut containers = containers.clone();
            containers.sort_by(|a, b| a.name.cmp(&b.name));
            serde_json::to_vec(&(base, containers))
        }
    }
    .expect("report serialises")
}

/// How the server recorded a submitted result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Recorded {
    /// The result finished the command.
    Applied,
    /// The same result was already recorded.
    Duplicate,
    /// The command had already ended (timed out, cancelled): kept as `command.late_result`.
    Late,
}

/// Answer to `POST /api/v1/agent/commands/{id}/result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ResultRecorded {
    pub recorded: Recorded,
    /// The command's status after the submission.
    pub status: crate::commands::CommandStatus,
}
