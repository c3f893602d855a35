//! Bulk update operations (docs/design.md §2.6): "update all LXCs on node pve1" as one
//! operation on the engine deploys use. `POST /api/v1/operations/update` plans it (every target
//! refreshed and dry-run in parallel), the plan is the blast radius, one approval binds the
//! exact per-guest pinned package sets (a fingerprint over all of them), and each guest then
//! runs snapshot → health before → pinned install → reboot → health after → (rollback).

use crate::commands::PlannedPackage;
use crate::ids::{CommandId, HostId};
use crate::updates::{PackageManager, Severity};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `never` | `if-required` | `always`: whether a guest is rebooted after its install.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum RebootPolicy {
    Never,
    /// When the agent finds `/run/reboot-required` after the install, or `needrestart`
    /// (where installed) lists services still running outdated code.
    #[default]
    IfRequired,
    Always,
}

impl RebootPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::IfRequired => "if-required",
            Self::Always => "always",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "never" => Some(Self::Never),
            "if-required" => Some(Self::IfRequired),
            "always" => Some(Self::Always),
            _ => None,
        }
    }
}

/// `required` | `if-supported` | `off`: the PVE snapshot taken before a guest's install.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotPolicy {
    /// A guest that cannot be snapshot is skipped (no rollback possible, no change made).
    Required,
    /// Snapshot where the guest's storage can; otherwise update without one.
    #[default]
    IfSupported,
    Off,
}

impl SnapshotPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::IfSupported => "if-supported",
            Self::Off => "off",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "required" => Some(Self::Required),
            "if-supported" => Some(Self::IfSupported),
            "off" => Some(Self::Off),
            _ => None,
        }
    }
}

/// A check the agent runs inside the guest after the install (and after a reboot).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HealthCheck {
    /// `GET url` answers with a 2xx status (or `status` when given).
    Http {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
    },
    /// A TCP connection to `address` (`host:port`) succeeds.
    Tcp { address: String },
    /// The program exits 0 (argv, no shell), within the health command's timeout.
    Command { argv: Vec<String> },
}

impl HealthCheck {
    /// `http http://127.0.0.1/`, `tcp 127.0.0.1:22`, `command systemctl is-active nginx`.
    pub fn describe(&self) -> String {
        match self {
            Self::Http { url, status: None } => format!("http {url}"),
            Self::Http {
                url,
                status: Some(s),
            } => format!("http {url} = {s}"),
            Self::Tcp { address } => format!("tcp {address}"),
            Self::Command { argv } => format!("command {}", argv.join(" ")),
        }
    }
}

/// The canaries of an update operation: the first `count` planned guests, or these targets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Canary {
    #[serde(default)]
    pub count: u32,
    /// Path ids (or vmids as text) of guests to run first, instead of the first `count`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}

/// What an update operation does, as asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UpdateOptions {
    /// Only updates flagged as security updates.
    #[serde(default)]
    pub security_only: bool,
    /// Package names (`*` globs allowed) never installed by this operation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub reboot: RebootPolicy,
    #[serde(default)]
    pub snapshot: SnapshotPolicy,
    /// Where a guest's storage cannot snapshot, a vzdump backup to this PVE storage takes the
    /// snapshot's place (and a restore of it the rollback's). Unset: such a guest is updated
    /// without one (`if-supported`) or skipped (`required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_storage: Option<String>,
    #[serde(default)]
    pub canary: Canary,
    /// Guests worked on at once (0 = the server's `update.concurrency`).
    #[serde(default)]
    pub concurrency: u32,
    /// Guests of one node worked on at once (0 = the server's `update.per_node_concurrency`).
    #[serde(default)]
    pub per_node_concurrency: u32,
    /// Extra checks after the install, besides "the agent is back" and "no systemd unit that
    /// ran before has failed".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<HealthCheck>,
}

impl Default for UpdateOptions {
    fn default() -> Self {
        Self {
            security_only: false,
            exclude: Vec::new(),
            reboot: RebootPolicy::IfRequired,
            snapshot: SnapshotPolicy::IfSupported,
            backup_storage: None,
            canary: Canary::default(),
            concurrency: 0,
            per_node_concurrency: 0,
            checks: Vec::new(),
        }
    }
}

/// `POST /api/v1/operations/update`: plan an update of every guest `selector` resolves to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UpdateRequest {
    pub selector: String,
    #[serde(default)]
    pub options: UpdateOptions,
}

/// One package of a guest's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PlanPackage {
    pub package: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<PackageManager>,
    /// `None` for a package the install adds (a new dependency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    pub to_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// `false` for a dependency the dry-run pulled in.
    pub requested: bool,
    /// Image updates: the guest's containers that move (`name (compose PROJECT/SERVICE)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
}

/// An update the plan leaves out on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LeftOut {
    pub package: String,
    /// `held`, `excluded`, `not a security update`.
    pub reason: String,
}

/// What one guest of the operation will get: exactly what its dry-run planned.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GuestPlan {
    pub packages: Vec<PlanPackage>,
    /// Packages the install would remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<LeftOut>,
    /// The host already says a reboot is required (before this install); whether the install
    /// asks for one is known only after it.
    #[serde(default)]
    pub reboot_required: bool,
    /// The PVE snapshot the guest will get (`none`: policy `off`, or its storage cannot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// SHA-256 over the guest's pinned set; the operation's fingerprint covers every guest's.
    pub fingerprint: String,
}

impl GuestPlan {
    /// The pins an install command carries: every package at its planned version.
    pub fn pins(&self) -> Vec<PlannedPackage> {
        self.packages
            .iter()
            .map(|p| PlannedPackage {
                package: p.package.clone(),
                from_version: p.from_version.clone(),
                to_version: p.to_version.clone(),
                requested: p.requested,
                manager: p.manager,
                containers: p.containers.clone(),
            })
            .collect()
    }
}

/// The last health check of a guest.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HealthReport {
    /// `systemctl --failed` unit names (empty without systemd).
    #[serde(default)]
    pub failed_units: Vec<String>,
    /// `/run/reboot-required` (or `/var/run/reboot-required`) exists.
    #[serde(default)]
    pub reboot_required: bool,
    /// Services `needrestart -b` says run outdated code (empty when it is not installed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services_to_restart: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckOutcome>,
    /// Whether systemd is there to ask (an OpenRC or bare guest has no unit states).
    #[serde(default)]
    pub systemd: bool,
    /// When the agent process started (a reboot restarts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_started_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CheckOutcome {
    /// [`HealthCheck::describe`].
    pub check: String,
    pub ok: bool,
    /// What was seen ("503", "connection refused", "exit 1: …").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One recorded step of a guest in an update operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ItemStep {
    /// `plan`, `snapshot`, `health-before`, `install`, `reboot`, `health-after`, `rollback`,
    /// `verify-rollback`, `prune-snapshots`, …
    pub step: String,
    /// `started` | `done` | `failed` | `skipped`.
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    pub at: DateTime<Utc>,
}

/// What an update operation keeps per guest (persisted with the item, so a restarted server
/// resumes where it was: a step recorded `done` is not done again).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UpdateItemDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<GuestPlan>,
    #[serde(default)]
    pub canary: bool,
    /// The PVE snapshot taken for this operation, once it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The vzdump backup volume taken instead (the guest's storage cannot snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<CommandId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<CommandId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_before: Option<HealthReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_after: Option<HealthReport>,
    #[serde(default)]
    pub rebooted: bool,
    /// The repository moved on after approval: this guest was re-planned and waits for a new
    /// approval of `plan` (never widened silently).
    #[serde(default)]
    pub needs_approval: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<ItemStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<HostId>,
    /// The selector named containers of this guest, not the guest: only image updates of
    /// these references are planned (its packages are left out). Empty: everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images_only: Vec<String>,
}

impl UpdateItemDetail {
    /// Whether `step` was recorded `done` (a resumed operation skips it).
    pub fn done(&self, step: &str) -> bool {
        self.steps
            .iter()
            .rev()
            .find(|s| s.step == step)
            .is_some_and(|s| s.status == "done" || s.status == "skipped")
    }
}

/// What an update operation keeps as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UpdateOperationDetail {
    pub options: UpdateOptions,
    /// SHA-256 over every guest's pinned set, in target order; what an approval names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<DateTime<Utc>>,
    /// Why the operation is paused (a canary failed its health gate; an operator paused it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<String>,
    /// Totals per node: node → (guests, packages, reboots expected).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_node: Vec<NodeTotals>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct NodeTotals {
    pub node: String,
    pub guests: u32,
    pub packages: u32,
    pub security: u32,
    /// Guests that already need a reboot before their install.
    pub reboots: u32,
}

/// `POST /api/v1/operations/{id}/approve`: approve exactly the plan whose fingerprint the
/// client saw; another fingerprint is a 409 (the plan changed: look again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApproveOperation {
    pub fingerprint: String,
}
