//! Enrolled hosts and the event history.

use crate::agent::PackageDbIssue;
use crate::{CommandId, CorrelationId, EventId, GuestId, HostId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Host {
    pub id: HostId,
    pub hostname: String,
    pub machine_id: String,
    pub os_id: String,
    pub os_pretty: String,
    pub kernel: String,
    pub arch: String,
    pub agent_version: String,
    pub read_only: bool,
    pub reboot_required: bool,
    /// Open (not closed) updates.
    pub pending_updates: u64,
    pub security_updates: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report: Option<DateTime<Utc>>,
    pub registered_at: DateTime<Utc>,
    /// Scanned by the server through `pct exec`, with no agent installed.
    #[serde(default)]
    pub agentless: bool,
    /// The user the agent runs as (empty when unknown or agentless).
    #[serde(default)]
    pub run_as: String,
    /// `active`; `archived` once its agent was uninstalled; `deleted` by an admin. Neither
    /// of the last two can authenticate; their history stays.
    #[serde(default)]
    pub state: HostState,
    /// Another active host reports the same `/etc/machine-id` (a guest cloned from a
    /// template without resetting it): fix with `rm /etc/machine-id &&
    /// systemd-machine-id-setup` in the clone, then re-register its agent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate_machine_id: bool,
    /// The agent's last check of its package databases; empty = healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub package_db: Vec<PackageDbIssue>,
}

/// A host's lifecycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    #[default]
    Active,
    /// Its agent was uninstalled; the guest is scanned agentless again.
    Archived,
    /// Deleted by an admin: credential revoked, detached from its guest, history kept.
    Deleted,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Archived => "archived",
            Self::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => Self::Active,
            "archived" => Self::Archived,
            "deleted" => Self::Deleted,
            _ => return None,
        })
    }
}

/// `POST /api/v1/hosts/{id}/repair`: queue the repair the host's health proposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RepairRequest {
    pub manager: crate::updates::PackageManager,
}

/// One entry of the append-only event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Event {
    pub id: EventId,
    /// Monotonic position in the log.
    pub seq: i64,
    pub ts: DateTime<Utc>,
    /// `update.approved`, `command.completed`, ...
    pub event_type: String,
    /// Path of what it is about: `host/{id}`, `host/{id}/update/{id}`, `command/{id}`.
    pub subject: String,
    /// `user:{name}`, `agent:{host id}`, `system`.
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<CorrelationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<EventId>,
    /// The guest (LXC or VM) the event is about, kept across migrations between nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_id: Option<GuestId>,
    pub payload: serde_json::Value,
    /// SHA-256 of the canonical event body (`canopy_store::events::checksum_parts`).
    pub checksum: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EventFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<HostId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<CorrelationId>,
    /// Events with `seq` greater than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `POST /hosts/scan`: ask every agent in a subtree to scan now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ScanRequest {
    /// The guests whose agents scan (`cluster/home/node/pve1/**`).
    pub selector: String,
}

/// One guest of a bulk scan: its scan queued, or skipped and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HostScan {
    /// The guest's path id.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<HostId>,
    /// The scan command queued (follow it at `GET /commands/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<CommandId>,
    pub queued: bool,
    /// Why it was skipped ("agent missing: …"), or a note on a queued one ("agent offline:
    /// it scans when it checks in again").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
