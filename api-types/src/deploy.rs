//! Agent delivery (docs/design.md §2.2): `POST /api/v1/agents/deploy` starts an [`Operation`] with one
//! [`OperationItem`] per targeted guest; its progress is data (`GET /api/v1/operations/{id}`)
//! and a stream (`GET /api/v1/operations/{id}/events`, SSE: a `snapshot` event with the
//! operation as it stands, one `item` event per item change, then one `done` event carrying
//! the whole operation).

use crate::bulk::{UpdateItemDetail, UpdateOperationDetail};
use crate::clusters::SkippedTarget;
use crate::ids::{GuestId, HostId, OperationId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a deploy operation does to each guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeployAction {
    /// Install, upgrade or repair the agent (a no-op when it runs at this version).
    #[default]
    Deploy,
    /// Stop and remove the agent, its service, user and files.
    Uninstall,
}

impl DeployAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Uninstall => "uninstall",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "deploy" => Some(Self::Deploy),
            "uninstall" => Some(Self::Uninstall),
            _ => None,
        }
    }
}

/// `POST /api/v1/agents/deploy` and `GET /api/v1/agents/deploy/preview?selector=&action=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeployRequest {
    pub selector: String,
    #[serde(default)]
    pub action: DeployAction,
}

/// How the server reaches a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// SSH to the guest's PVE node, then `pct exec` / `pct push`.
    Pct,
    /// SSH straight into the guest (configured per guest).
    Ssh,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pct => "pct",
            Self::Ssh => "ssh",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pct" => Some(Self::Pct),
            "ssh" => Some(Self::Ssh),
            _ => None,
        }
    }
}

/// A deploy preview: the guests an operation would touch, and why others are left out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeployPreview {
    pub selector: String,
    pub action: DeployAction,
    pub targets: Vec<DeployTarget>,
    pub skipped: Vec<SkippedTarget>,
    /// "deploys to 6 guests on 1 node (1 template skipped)".
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeployTarget {
    /// Path id of the guest (`cluster/home/node/pve1/lxc/101`).
    pub target: String,
    pub node: String,
    pub vmid: u32,
    pub name: String,
    pub route: Route,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    /// An update operation refreshes and dry-runs its targets (§2.6).
    Planning,
    /// The plan is ready; nothing changes before an operator approves its fingerprint.
    AwaitingApproval,
    Running,
    /// No new guest starts (a canary failed its health gate, or an operator paused it);
    /// guests in flight finish.
    Paused,
    /// Cancelled while guests were in flight: they finish, no other starts.
    Cancelling,
    /// Every item succeeded (or was skipped).
    Succeeded,
    /// Some items failed, some succeeded.
    Partial,
    /// No item succeeded, or the operation itself failed (e.g. the server restarted).
    Failed,
    /// Cancelled by an operator: items that had not started never will.
    Cancelled,
}

impl OperationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Planning => "planning",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Cancelling => "cancelling",
            Self::Succeeded => "succeeded",
            Self::Partial => "partial",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "planning" => Some(Self::Planning),
            "awaiting_approval" => Some(Self::AwaitingApproval),
            "running" => Some(Self::Running),
            "paused" => Some(Self::Paused),
            "cancelling" => Some(Self::Cancelling),
            "succeeded" => Some(Self::Succeeded),
            "partial" => Some(Self::Partial),
            "failed" => Some(Self::Failed),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Partial | Self::Failed | Self::Cancelled
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    Queued,
    Running,
    Succeeded,
    Failed,
    /// Never started: its operation was cancelled first.
    Cancelled,
}

impl ItemState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(Self::Queued),
            "running" => Some(Self::Running),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// What a successful item did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeployOutcome {
    /// There was no agent; it is installed, registered and has checked in.
    Installed,
    /// An older agent was replaced.
    Upgraded,
    /// The agent was there at this version but its service was dead or it was not registered.
    Repaired,
    /// Already running at this version and checking in: nothing was changed.
    Unchanged,
    /// The agent was removed.
    Uninstalled,
    /// Uninstall found no agent.
    Absent,
    /// Update: the planned packages are installed and the guest passed its health gate.
    Updated,
    /// Update: the install or the health gate failed and the guest was rolled back to its
    /// snapshot (the item is `failed`; its message says why).
    RolledBack,
}

impl DeployOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Installed => "installed",
            Self::Upgraded => "upgraded",
            Self::Repaired => "repaired",
            Self::Unchanged => "unchanged",
            Self::Uninstalled => "uninstalled",
            Self::Absent => "absent",
            Self::Updated => "updated",
            Self::RolledBack => "rolled_back",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "installed" => Some(Self::Installed),
            "upgraded" => Some(Self::Upgraded),
            "repaired" => Some(Self::Repaired),
            "unchanged" => Some(Self::Unchanged),
            "uninstalled" => Some(Self::Uninstalled),
            "absent" => Some(Self::Absent),
            "updated" => Some(Self::Updated),
            "rolled_back" => Some(Self::RolledBack),
            _ => None,
        }
    }
}

/// One guest of an operation: its state, current step, and result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OperationItem {
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_id: Option<GuestId>,
    pub node: String,
    pub vmid: u32,
    pub route: Route,
    pub state: ItemState,
    /// The step running or last run (`connect`, `detect-os`, `push`, `register`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<DeployOutcome>,
    /// Why it failed, or a note on success ("runs as root: no sudo in the guest").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<HostId>,
    /// The user the agent runs as (`canopy-agent` or `root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Update operations: the guest's plan, snapshot, health and steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateItemDetail>,
}

impl OperationItem {
    /// An item not started yet.
    pub fn queued(
        target: impl Into<String>,
        guest_id: Option<GuestId>,
        node: impl Into<String>,
        vmid: u32,
        route: Route,
    ) -> Self {
        Self {
            target: target.into(),
            guest_id,
            node: node.into(),
            vmid,
            route,
            state: ItemState::Queued,
            step: None,
            outcome: None,
            message: None,
            host_id: None,
            run_as: None,
            started_at: None,
            finished_at: None,
            update: None,
        }
    }
}

/// A bulk operation addressed by selector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Operation {
    pub id: OperationId,
    /// `deploy` | `uninstall` | `update`.
    pub action: String,
    pub selector: String,
    pub state: OperationState,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    pub items: Vec<OperationItem>,
    /// Targets left out, with the reason (templates, stopped guests, VMs without direct SSH).
    #[serde(default)]
    pub skipped: Vec<SkippedTarget>,
    /// Update operations: options, the plan's fingerprint, approval, pause reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateOperationDetail>,
}

impl Operation {
    /// Counts per item state: (queued, running, succeeded, failed).
    pub fn tally(&self) -> (usize, usize, usize, usize) {
        let n = |s| self.items.iter().filter(|i| i.state == s).count();
        (
            n(ItemState::Queued),
            n(ItemState::Running),
            n(ItemState::Succeeded),
            n(ItemState::Failed),
        )
    }
}

/// A pinned SSH host key (trust on first use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SshHostKey {
    /// `host:port` as the server connects to it.
    pub address: String,
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`.
    pub key_type: String,
    /// `SHA256:base64` as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub first_seen: DateTime<Utc>,
}

/// `POST /api/v1/agents/agentless-scan` answer: one entry per guest read through `pct exec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AgentlessResult {
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<HostId>,
    /// Pending updates found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    /// Why this guest could not be scanned (or why it was left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /api/v1/agents/ssh-key`: the line to add to each PVE node's `authorized_keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SshPublicKey {
    pub public_key: String,
}

/// Answer to `DELETE /api/v1/agents/host-keys/{address}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HostKeyForgotten {
    /// The `host:port` whose pinned key was removed.
    pub forgotten: String,
}
