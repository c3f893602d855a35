//! Updates as the agent reports them and as the server lists them.

use crate::{CommandId, CorrelationId, HostId, UpdateId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Which package manager (or image source) an update belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PackageManager {
    Apt,
    Dnf,
    Apk,
    Docker,
}

impl PackageManager {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apt => "apt",
            Self::Dnf => "dnf",
            Self::Apk => "apk",
            Self::Docker => "docker",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "apt" => Self::Apt,
            "dnf" => Self::Dnf,
            "apk" => Self::Apk,
            "docker" => Self::Docker,
            _ => return None,
        })
    }
}

/// How urgent an update is. `Security` comes from a security suite / advisory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Normal,
    Important,
    Security,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::Important => "important",
            Self::Security => "security",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "low" => Self::Low,
            "normal" => Self::Normal,
            "important" => Self::Important,
            "security" => Self::Security,
            _ => return None,
        })
    }
}

/// One outdated package as a scanner found it. Sent by the agent inside a
/// [`crate::agent::ScanReport`]; also what `canopy-agent scan --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PackageUpdate {
    pub manager: PackageManager,
    pub package: String,
    pub current_version: String,
    pub available_version: String,
    /// Architecture where the package manager reports one (`amd64`, `x86_64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Repository origin / suite the candidate comes from (`bookworm-security`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub severity: Severity,
    /// Pinned / held back by the administrator (`apt-mark hold`): reported, never installed.
    #[serde(default)]
    pub held: bool,
}

/// Lifecycle of one update row on the server.
///
/// `pending` → `approved` → `dry_run` → `awaiting_confirmation` → `installing` →
/// `installed` | `failed`; `rejected` by a user; `reconciled` when a re-scan shows the
/// update was applied outside Canopy or is no longer offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum UpdateStatus {
    Pending,
    Approved,
    Rejected,
    DryRun,
    AwaitingConfirmation,
    Installing,
    Installed,
    Failed,
    Reconciled,
}

impl UpdateStatus {
    pub const ALL: [UpdateStatus; 9] = [
        Self::Pending,
        Self::Approved,
        Self::Rejected,
        Self::DryRun,
        Self::AwaitingConfirmation,
        Self::Installing,
        Self::Installed,
        Self::Failed,
        Self::Reconciled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::DryRun => "dry_run",
            Self::AwaitingConfirmation => "awaiting_confirmation",
            Self::Installing => "installing",
            Self::Installed => "installed",
            Self::Failed => "failed",
            Self::Reconciled => "reconciled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Closed rows are history: a re-scan never reopens them. A rejected row stays
    /// open (so the same version is not offered again) until the scan stops listing it.
    pub fn is_closed(self) -> bool {
        matches!(self, Self::Installed | Self::Reconciled)
    }
}

/// An update row as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Update {
    pub id: UpdateId,
    pub host_id: HostId,
    pub hostname: String,
    pub manager: PackageManager,
    pub package: String,
    pub current_version: String,
    pub available_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub severity: Severity,
    pub held: bool,
    pub status: UpdateStatus,
    /// The correlation of the user action that moved this row last (approve → install).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<CorrelationId>,
    /// The dry-run or install command currently carrying this update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<CommandId>,
    pub first_seen: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Server-side filters for `GET /api/v1/updates`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UpdateFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<HostId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<UpdateStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<PackageManager>,
    /// Substring match on the package name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// 1-based page number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// Rows per page (1..=500, default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_page: Option<u32>,
    /// Only hosts attached to the guests a selector matches (`cluster/home/**[tag=prod]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The hosts `selector` resolved to; set by the server, never read from the wire.
    #[serde(skip)]
    pub hosts: Option<Vec<HostId>>,
}

impl UpdateFilter {
    pub const DEFAULT_PER_PAGE: u32 = 100;
    pub const MAX_PER_PAGE: u32 = 500;

    pub fn page(&self) -> u32 {
        self.page.unwrap_or(1).max(1)
    }

    pub fn per_page(&self) -> u32 {
        self.per_page
            .unwrap_or(Self::DEFAULT_PER_PAGE)
            .clamp(1, Self::MAX_PER_PAGE)
    }
}

/// One page of a listing with the total row count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub page: u32,
    pub per_page: u32,
}

/// `POST /api/v1/updates/approve` and `/reject`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UpdateIdsRequest {
    pub ids: Vec<UpdateId>,
}

/// Answer to approve: the rows that moved and the dry-run command queued per host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApproveResponse {
    pub approved: u64,
    pub correlation_id: CorrelationId,
    pub dry_run_commands: Vec<CommandId>,
}

/// Answer to reject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RejectResponse {
    pub rejected: u64,
}

/// Counts for the dashboard: one query per figure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UpdateStats {
    /// Open (not closed) updates by severity: `[severity, count]` pairs.
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::counted::<Severity>")
    )]
    pub by_severity: Vec<(Severity, u64)>,
    /// All updates by status: `[status, count]` pairs.
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::counted::<UpdateStatus>")
    )]
    pub by_status: Vec<(UpdateStatus, u64)>,
    pub hosts: u64,
    pub hosts_with_updates: u64,
}

/// One row of a host's version history: what Canopy installed, from what to what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct VersionChange {
    pub host_id: HostId,
    pub hostname: String,
    pub manager: PackageManager,
    pub package: String,
    pub from_version: String,
    pub to_version: String,
    pub command_id: CommandId,
    pub correlation_id: CorrelationId,
    pub installed_at: DateTime<Utc>,
}
