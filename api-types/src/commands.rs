//! Commands the server queues for an agent, and what the agent reports back.

use crate::bulk::{HealthCheck, HealthReport};
use crate::docker::ImageTarget;
use crate::updates::PackageManager;
use crate::{CommandId, CorrelationId, HostId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a command asks the agent to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommandSpec {
    /// Run the scanners now and send a full report.
    Scan,
    /// Simulate installing these packages (`apt-get -s install`, `dnf --assumeno`)
    /// and report every package the install would touch.
    ///
    /// `images` are the image updates of the same plan (Docker inside the guest): the agent
    /// lists, per reference, the containers and compose services it would move to
    /// `to_digest` (a [`PlannedPackage`] of manager `docker` each).
    DryRun {
        packages: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        images: Vec<ImageTarget>,
    },
    /// Install these packages at exactly the versions the confirmed dry-run planned.
    ///
    /// `packages` names the requested packages (what older agents install, unpinned);
    /// `pinned` is the confirmed dry-run's whole plan, requested packages and dependencies,
    /// each at its `to_version`. The agent installs `pkg=VERSION …` (`pkg-VERSION` for dnf)
    /// and refuses, before touching anything, when the repository no longer offers the
    /// planned versions ("approved 2.4-1, now 2.5-1: run the dry-run again").
    ///
    /// Pinned entries of manager `docker` are image updates (`package` the reference,
    /// `to_version` the digest): after the packages, the agent pulls each, checks the digest,
    /// and moves its containers to it (compose services through compose, others recreated
    /// with the same configuration), back to the old image when the new one is not healthy.
    Install {
        packages: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pinned: Vec<PlannedPackage>,
    },
    /// Repair an interrupted package database (`dpkg --configure -a`, `apk fix`), as the
    /// agent's host health proposed it ([`PackageDbIssue::repair`](crate::agent::PackageDbIssue)).
    Repair { manager: PackageManager },
    /// Report the host's health (failed systemd units, reboot required, services to
    /// restart) and run these checks inside the guest; the answer is in
    /// [`CommandResult::health`]. Read-only.
    Health {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        checks: Vec<HealthCheck>,
    },
}

impl CommandSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Scan => "scan",
            Self::DryRun { .. } => "dry_run",
            Self::Install { .. } => "install",
            Self::Repair { .. } => "repair",
            Self::Health { .. } => "health",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    Pending,
    Sent,
    Running,
    Completed,
    Failed,
    TimedOut,
    Cancelled,
}

impl CommandStatus {
    pub const ALL: [CommandStatus; 7] = [
        Self::Pending,
        Self::Sent,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::TimedOut,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::TimedOut | Self::Cancelled
        )
    }
}

/// A package the dry-run says the install would touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PlannedPackage {
    pub package: String,
    /// `None` when the package is newly installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    pub to_version: String,
    /// `true` when the user asked for it; `false` for a dependency pulled in.
    pub requested: bool,
    /// The package manager that planned it (set by agents since pinned installs; a pinned
    /// install gives each package to this manager).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<PackageManager>,
    /// Image updates (manager `docker`): the containers that move, `name` or
    /// `name (compose PROJECT/SERVICE)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
}

/// What the agent reports when a command finishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CommandResult {
    /// Process exit status of the package manager (or -1 when it could not start).
    pub exit_code: i32,
    pub success: bool,
    /// Captured output, tail-truncated by the agent to a bounded size.
    pub stdout: String,
    pub stderr: String,
    /// For dry-runs: every package the install would install or upgrade.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<PlannedPackage>,
    /// For dry-runs: packages the install would remove (apt `Remv`, dnf `Removing:`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// A short human-readable summary ("3 upgraded, 1 newly installed").
    #[serde(default)]
    pub summary: String,
    /// For health commands: what the agent found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthReport>,
}

/// A command as the agent receives it.
///
/// The agent runs it only after the server has accepted its start
/// (`POST /agent/commands/{id}/started` answered 200 with a [`StartAccepted`]); a 4xx answer
/// (cancelled, timed out, unknown) means "do not run it", a network error means "ask again",
/// never "run it anyway".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AgentCommand {
    pub id: CommandId,
    pub spec: CommandSpec,
    /// Seconds the command may take, counted from its accepted start. Read-only work (scan,
    /// dry-run) is stopped at the deadline; a package transaction (install, repair) is never
    /// stopped halfway: the server marks it overdue and records its real outcome as late.
    pub timeout_secs: u32,
}

/// The server's go for one command: `POST /agent/commands/{id}/started` → 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StartAccepted {
    pub id: CommandId,
    /// Always `running`.
    pub status: CommandStatus,
    /// When the server will mark the command overdue: accepted start + `timeout_secs`.
    pub deadline: DateTime<Utc>,
}

/// `POST /agent/commands/{id}/heartbeat`: the agent is still working on a running command
/// (sent every [`HEARTBEAT_SECS`]); only an agent whose heartbeats stop makes an overdue
/// command `timed_out`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HeartbeatAck {
    /// The command is past its deadline (the result will be recorded as late).
    pub overdue: bool,
}

/// Seconds between an agent's heartbeats for the command it runs.
pub const HEARTBEAT_SECS: u64 = 15;

/// A command as users see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Command {
    pub id: CommandId,
    pub host_id: HostId,
    pub spec: CommandSpec,
    pub status: CommandStatus,
    pub correlation_id: CorrelationId,
    /// The command whose outcome caused this one (dry-run → install).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caused_by: Option<CommandId>,
    /// Set on a retry: the command it repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried_from: Option<CommandId>,
    pub timeout_secs: u32,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CommandResult>,
    /// Why the server (not the agent) ended it: timeout, cancel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the running command passed its deadline (it keeps running: a package manager
    /// is never stopped halfway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdue_at: Option<DateTime<Utc>>,
    /// The result arrived after the deadline (recorded all the same).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
}
