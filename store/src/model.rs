//! Inputs and outcomes of the store's use-case methods.

use canopy_api_types::agent::{HostFacts, RejectedRow, ScannerError};
use canopy_api_types::bulk::{UpdateItemDetail, UpdateOperationDetail};
use canopy_api_types::clusters::SkippedTarget;
use canopy_api_types::commands::{Command, CommandSpec};
use canopy_api_types::deploy::{DeployOutcome, ItemState, OperationItem, OperationState};
use canopy_api_types::updates::{PackageManager, PackageUpdate, Update};
use canopy_api_types::*;
use chrono::{DateTime, Utc};
use std::fmt;

/// Rows per multi-row INSERT when ingesting a report.
pub const REPORT_CHUNK_ROWS: usize = 500;
/// How long a `sent` command may wait for the agent's start before it expires unstarted
/// (the agent claims one command at a time and asks to start it at once).
pub const SENT_GRACE_SECS: i64 = 60;

/// When the sweep ends commands nobody can finish ([`CommandStore::expire_commands`]).
///
/// [`CommandStore::expire_commands`]: crate::CommandStore::expire_commands
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryPolicy {
    /// An overdue command whose agent sent no heartbeat for this long is timed out.
    pub vanished_after: chrono::Duration,
    /// A pending command waiting this long for a host not seen for this long expires.
    pub offline_after: chrono::Duration,
}

/// What the sweep did to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Claimed but not started within [`SENT_GRACE_SECS`]: timed out, it never ran.
    NotStarted,
    /// Running past its deadline: marked overdue, left to finish.
    Overdue,
    /// Overdue and its agent stopped sending heartbeats: timed out, outcome unknown.
    Vanished,
    /// Its host is agentless, archived or deleted: cancelled, it never ran.
    HostCannotRun,
    /// Pending for a host offline longer than the policy allows: timed out, it never ran.
    HostOffline,
}

/// One command the sweep changed, and why.
#[derive(Debug, Clone)]
pub struct Expired {
    pub command: Command,
    pub expiry: Expiry,
    pub reason: String,
}

/// An `Idempotency-Key` of a user request: the first answer for `(actor, key)` is kept, a
/// repeat with the same body gets it back, a repeat with another body is refused.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub actor: String,
    pub key: String,
    /// Hash of the request body.
    pub request_hash: String,
}

/// The outcome of a use-case method called with an [`IdempotencyKey`].
#[derive(Debug, Clone)]
pub enum Idempotent<T> {
    /// Done now (and the answer saved under the key, when the method saved one).
    Fresh(T),
    /// The key was used before with the same body: its stored answer, nothing done.
    Replayed(serde_json::Value),
}

/// Who did something; stored as the event's `actor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(String),
    Agent(HostId),
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(name) => write!(f, "user:{name}"),
            Self::Agent(id) => write!(f, "agent:{id}"),
            Self::System => f.write_str("system"),
        }
    }
}

/// A user as the store keeps them: the argon2 PHC hash and the session epoch that every
/// access JWT carries (see [`AccountStore`](crate::AccountStore)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub user: canopy_api_types::auth::User,
    pub password_hash: String,
    pub session_epoch: i64,
}

#[derive(Debug, Clone)]
pub struct NewRegistrationToken {
    pub id: RegistrationTokenId,
    /// SHA-256 hex of the token secret; the secret itself is never stored.
    pub token_hash: String,
    pub label: String,
    pub seats: u32,
    pub expires_at: DateTime<Utc>,
    /// The guest this token enrols (a deploy token): the host registering with it is
    /// attached to that guest in the same transaction.
    pub guest_id: Option<GuestId>,
}

#[derive(Debug, Clone)]
pub struct NewHost {
    /// The id of a new host; a re-enrolled host keeps its own.
    pub id: HostId,
    pub facts: HostFacts,
    /// SHA-256 hex of the agent credential secret.
    pub credential_hash: String,
    /// The host whose current credential the agent proved (the server checked it): that host
    /// is re-enrolled. Without it, only a registration token a deploy bound to a guest
    /// re-enrols that guest's host; anything else is a new host, however its machine-id.
    pub reenrol: Option<HostId>,
}

/// The credential hash of an agentless host. Agents' hashes are SHA-256 hex, which never
/// contains `!`, so an agentless host can never authenticate as an agent.
pub const AGENTLESS_CREDENTIAL: &str = "!agentless";

/// A report whose rows the server already parsed and validated.
#[derive(Debug, Clone)]
pub struct IngestReport {
    pub report_hash: String,
    pub reboot_required: bool,
    pub scanned_at: DateTime<Utc>,
    /// Managers whose scanner ran successfully: only their missing rows are reconciled.
    pub scanned_managers: Vec<PackageManager>,
    pub scanner_errors: Vec<ScannerError>,
    /// Validated rows; `(original index in the upload, row)`.
    pub rows: Vec<(usize, PackageUpdate)>,
    /// The host's Docker containers (validated): `Some` replaces the stored ones in the same
    /// transaction, `None` (no engine, or listing failed) keeps them.
    pub containers: Option<Vec<canopy_api_types::docker::Container>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Rows stored (new or refreshed).
    pub accepted: u64,
    /// Rows the database refused, with the reason.
    pub rejected: Vec<RejectedRow>,
    /// Open rows closed as `reconciled`.
    pub reconciled: u64,
    /// Rows seen for the first time.
    pub discovered: u64,
}

#[derive(Debug, Clone)]
pub struct ApproveOutcome {
    pub approved: Vec<Update>,
    pub commands: Vec<Command>,
    /// `(id, reason)` for ids that were not approved.
    pub skipped: Vec<(UpdateId, String)>,
}

#[derive(Debug, Clone)]
pub enum CompleteOutcome {
    /// The result was recorded now.
    Applied(Command),
    /// The same result had already been recorded; nothing changed.
    Duplicate(Command),
    /// The command had timed out or been cancelled; the result was kept on the
    /// command for the record but its status did not change.
    Late(Command),
}

impl CompleteOutcome {
    pub fn command(&self) -> &Command {
        match self {
            Self::Applied(c) | Self::Duplicate(c) | Self::Late(c) => c,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewCommand {
    pub id: CommandId,
    pub host: HostId,
    pub spec: CommandSpec,
    pub correlation: CorrelationId,
    pub caused_by: Option<CommandId>,
    pub timeout_secs: u32,
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: String,
    pub subject: String,
    pub actor: Actor,
    pub correlation: Option<CorrelationId>,
    pub causation: Option<EventId>,
    pub payload: serde_json::Value,
}

/// A bulk operation to start.
#[derive(Debug, Clone)]
pub struct NewOperation {
    pub id: OperationId,
    /// `deploy` | `uninstall` | `update`.
    pub action: String,
    /// `running` for deploys; `planning` for updates.
    pub state: OperationState,
    /// Update operations: options (and later the fingerprint, approval, pause reason).
    pub update: Option<UpdateOperationDetail>,
    pub selector: String,
    /// The targets, in the order they are shown (kept as `position`).
    pub items: Vec<OperationItem>,
    /// Targets the selector matched but the operation leaves out, with the reason.
    pub skipped: Vec<SkippedTarget>,
    pub created_at: DateTime<Utc>,
}

/// The progress of one item: `state`, `step`, `outcome` and `message` replace the stored
/// ones; `host_id`, `run_as` and `update` only when `Some`.
#[derive(Debug, Clone)]
pub struct ItemUpdate {
    pub state: ItemState,
    pub step: Option<String>,
    pub outcome: Option<DeployOutcome>,
    pub message: Option<String>,
    pub host_id: Option<HostId>,
    pub run_as: Option<String>,
    /// Update operations: the item's detail (plan, snapshot, steps), replacing the stored one.
    pub update: Option<UpdateItemDetail>,
    /// An event written in the same transaction (subject the target, linked to the item's
    /// guest and host, correlation the operation), besides the end-of-item event.
    pub event: Option<OperationEvent>,
    /// `started_at` on the first move to `running`, `finished_at` on a terminal state.
    pub at: DateTime<Utc>,
}

/// An event an operation's engine asks the store to write with a change.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationEvent {
    /// `operation.item_step`, `operation.approved`, `operation.paused`, …
    pub event_type: String,
    pub payload: serde_json::Value,
}

/// A change of a whole operation's state ([`OperationStore::transition_operation`]).
#[derive(Debug, Clone)]
pub struct OperationTransition {
    /// The states it may be in; any other is a `Conflict` naming the state it is in.
    pub from: Vec<OperationState>,
    pub to: OperationState,
    /// When `Some`, the stored fingerprint of the plan must be this one (`Conflict`
    /// otherwise: the plan changed since the client looked).
    pub expect_fingerprint: Option<String>,
    /// Replaces the stored detail when `Some`.
    pub update: Option<UpdateOperationDetail>,
    pub event: OperationEvent,
    pub at: DateTime<Utc>,
}

impl ItemUpdate {
    /// The item is at `step`.
    pub fn running(step: &str, at: DateTime<Utc>) -> Self {
        Self {
            state: ItemState::Running,
            step: Some(step.into()),
            outcome: None,
            message: None,
            host_id: None,
            run_as: None,
            update: None,
            event: None,
            at,
        }
    }

    /// The item failed, `message` says why.
    pub fn failed(message: String, at: DateTime<Utc>) -> Self {
        Self {
            state: ItemState::Failed,
            step: None,
            outcome: None,
            message: Some(message),
            host_id: None,
            run_as: None,
            update: None,
            event: None,
            at,
        }
    }
}
