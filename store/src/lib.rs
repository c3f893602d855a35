//! Canopy's storage: one [`Store`] trait, two backends (SQLite, PostgreSQL).
//!
//! Every mutating method writes its events into the append-only `events` table in the
//! SAME transaction as the projection rows it changes (hosts, updates, commands,
//! version_history, clusters, guests, operations, ssh_host_keys). Repeated observations
//! that change nothing a user did — an agent's check-in, a failed discovery pass, a node's
//! apt list — only update their columns. Methods are use-case shaped ("approve these updates and queue the
//! dry-runs") rather than row-shaped, so that each one is a single transaction on both
//! backends and the server never holds a transaction across an await on the network.
//!
//! Both backends pass the same conformance suite (`tests/conformance/`).

mod account_plan;
mod command_events;
mod command_plan;
mod common;
pub mod deploy;
pub mod docker;
mod error;
pub mod events;
mod host_plan;
mod ingest_plan;
pub mod inventory;
mod inventory_plan;
mod migrate;
pub mod model;
mod operation_plan;
pub mod postgres;
pub mod sqlite;

pub use deploy::*;
pub use docker::*;
pub use error::StoreError;
pub use inventory::*;
pub use migrate::{known_migrations, MigrationError};
pub use model::*;

use async_trait::async_trait;
use canopy_api_types::agent::HostFacts;
use canopy_api_types::auth::{AccountChange, RegistrationToken, Role, User};
use canopy_api_types::commands::{Command, CommandResult};
use canopy_api_types::hosts::{Event, EventFilter, Host};
use canopy_api_types::updates::{Page, Update, UpdateFilter, UpdateStats, VersionChange};
use canopy_api_types::*;
use chrono::{DateTime, Utc};
use std::sync::Arc;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Open the database named by `url` (`sqlite://PATH`, `sqlite::memory:`,
/// `postgres://…`) and apply every pending migration. Any failure is returned: the
/// caller must stop (seed 004: never print OK after a failed migration).
pub async fn open(url: &str) -> Result<Arc<dyn Store>, MigrationError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(url).await?))
    } else {
        Err(MigrationError::BadUrl(url_without_password(url)))
    }
}

/// The URL with any password replaced by `***`, for error messages and logs.
pub fn url_without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The answer to an approval, as the API returns it and an `Idempotency-Key` replays it.
pub fn approve_response(
    outcome: &ApproveOutcome,
    correlation: CorrelationId,
) -> canopy_api_types::updates::ApproveResponse {
    canopy_api_types::updates::ApproveResponse {
        approved: outcome.approved.len() as u64,
        correlation_id: correlation,
        dry_run_commands: outcome.commands.iter().map(|c| c.id).collect(),
    }
}

/// [`approve_response`] as the JSON an `Idempotency-Key` stores.
pub(crate) fn approve_response_json(
    outcome: &ApproveOutcome,
    correlation: CorrelationId,
) -> Result<serde_json::Value> {
    serde_json::to_value(approve_response(outcome, correlation))
        .map_err(|e| StoreError::corrupt("idempotency_keys", format!("response: {e}")))
}

/// Everything the server persists. Split by capability into sub-traits; `Store` is
/// their union so that `Arc<dyn Store>` is the one handle in `AppState`.
pub trait Store:
    UserStore
    + AccountStore
    + HostStore
    + UpdateStore
    + CommandStore
    + EventStore
    + InventoryStore
    + SshKeyStore
    + OperationStore
    + DockerStore
    + Send
    + Sync
    + 'static
{
    /// Which backend: `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;
}

#[async_trait]
pub trait UserStore {
    /// Cheap round trip used by `/healthz`.
    async fn ping(&self) -> Result<()>;

    async fn count_users(&self) -> Result<u64>;
    /// `Conflict` when the username is taken.
    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
        actor: &Actor,
    ) -> Result<User>;
    /// The user with their argon2 PHC hash and session epoch.
    async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>>;

    /// Store a new refresh token (SHA-256 hex of the secret) for `user` if they are still
    /// enabled at `session_epoch` (the one their login read), in one statement: a change
    /// that ended their sessions in between wins. `NotFound` for an unknown user,
    /// `Conflict` when the user was disabled or their epoch moved on.
    async fn insert_refresh_token(
        &self,
        user: UserId,
        token_hash: &str,
        expires_at: DateTime<Utc>,
        session_epoch: i64,
    ) -> Result<()>;
    /// Atomically check `old_hash` (exists, not revoked, not expired at `now`, its user
    /// not disabled), revoke it, and store `new_hash` valid until `new_expiry` (rotation =
    /// sliding window). `None` when the old token is unknown, revoked or expired, or its
    /// user is disabled.
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new_expiry: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<UserRecord>>;
    /// Revoke one refresh token; `false` when it did not exist.
    async fn revoke_refresh_token(&self, token_hash: &str) -> Result<bool>;
    /// Delete refresh tokens expired or revoked before `now`; returns how many.
    async fn purge_refresh_tokens(&self, now: DateTime<Utc>) -> Result<u64>;

    async fn create_registration_token(
        &self,
        new: NewRegistrationToken,
        actor: &Actor,
    ) -> Result<RegistrationToken>;
    async fn list_registration_tokens(&self) -> Result<Vec<RegistrationToken>>;
}

/// The lifecycle of accounts and registration tokens. Every change that takes something
/// away from a user (disable, delete, another role, a new password, "log out everywhere")
/// revokes all their refresh tokens and bumps their session epoch in the same transaction
/// as its event, so that access tokens issued before it stop working at the next request.
/// No change may leave the server without an enabled admin (`Conflict`).
#[async_trait]
pub trait AccountStore {
    /// Every user, by name.
    async fn list_users(&self) -> Result<Vec<User>>;
    /// The user with this id: the one read (by primary key) that every authenticated
    /// request makes to check the access token's session epoch.
    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>>;
    /// Replace a user's password hash; ends their sessions. Event `user.password_set`.
    /// `NotFound` when absent.
    async fn set_password(
        &self,
        username: &str,
        password_hash: &str,
        actor: &Actor,
    ) -> Result<AccountChange>;
    /// Disable (ending their sessions; event `user.disabled`) or enable (event
    /// `user.enabled`) a user. Asking for the state the user is already in changes nothing
    /// and writes no event. `NotFound`; `Conflict` for the last enabled admin.
    async fn set_user_disabled(
        &self,
        username: &str,
        disabled: bool,
        actor: &Actor,
    ) -> Result<AccountChange>;
    /// Give a user another role; ends their sessions. Event `user.role_changed` (from, to);
    /// the same role changes nothing. `NotFound`; `Conflict` when demoting the last enabled
    /// admin.
    async fn set_role(&self, username: &str, role: Role, actor: &Actor) -> Result<AccountChange>;
    /// Delete a user and their refresh tokens; their events stay. Event `user.deleted`.
    /// `NotFound`; `Conflict` for the last enabled admin.
    async fn delete_user(&self, username: &str, actor: &Actor) -> Result<AccountChange>;
    /// "Log out everywhere": revoke every refresh token of `user` and end their access
    /// tokens. Event `user.sessions_revoked`. `NotFound` when absent.
    async fn end_sessions(&self, user: UserId, actor: &Actor) -> Result<AccountChange>;
    /// Revoke a registration token: registering with it fails with `TokenRevoked` from now
    /// on; the record stays, with `revoked_at`. Event `registration_token.revoked`.
    /// Revoking a revoked token changes nothing and writes no event. `NotFound`.
    async fn revoke_registration_token(
        &self,
        id: RegistrationTokenId,
        actor: &Actor,
    ) -> Result<RegistrationToken>;
}

#[async_trait]
pub trait HostStore {
    /// Consume one seat of the registration token whose hash is `token_hash` and enrol a
    /// host with the new credential hash, in one transaction. The host is
    /// - `new.reenrol`'s host when the agent proved its current credential (event
    ///   `host.reenrolled`, `how: credential`);
    /// - else, for a token a deploy bound to a guest, the active host attached to that guest
    ///   (an agentless host becomes an agent host: same id, its updates kept; `how:
    ///   deploy_token`);
    /// - else a new host (`host.registered`), whatever its machine-id: a machine-id is a
    ///   fact, never a key, so a holder of a registration token can never take over another
    ///   host. When another active host has the same machine-id, both show
    ///   `duplicate_machine_id` and the event names them.
    ///
    /// A token bound to a guest attaches the host to that guest in the same transaction
    /// (event `host_attached`, like [`attach_host`](InventoryStore::attach_host)). Errors:
    /// `TokenUnknown`, `TokenExpired`, `TokenRevoked`, `NoSeats`; `Conflict` when the host to
    /// re-enrol is no longer active.
    async fn register_host(
        &self,
        token_hash: &str,
        new: NewHost,
        now: DateTime<Utc>,
    ) -> Result<Host>;
    /// The host and its credential hash (SHA-256 hex), for agent authentication.
    async fn host_credential(&self, host: HostId) -> Result<Option<(Host, String)>>;
    /// Record a check-in: `last_seen = now` and the facts the agent sent (its package-database
    /// health included).
    async fn touch_host(&self, host: HostId, facts: &HostFacts, now: DateTime<Utc>) -> Result<()>;
    async fn get_host(&self, host: HostId) -> Result<Option<Host>>;
    /// Every host that is not deleted, with its open/security update counts (one query, no
    /// N+1).
    async fn list_hosts(&self) -> Result<Vec<Host>>;
    /// Hash of the last report accepted from this host.
    async fn report_hash(&self, host: HostId) -> Result<Option<String>>;
    /// The host the server scans through `guest` without an agent, keyed by the guest
    /// (cluster, vmid), never by machine-id: the host attached to `guest` if it is an agent's
    /// is returned unchanged; an attached agentless host gets the facts and `last_seen = now`;
    /// with no host attached a new one is inserted with `agentless = true`, the credential
    /// [`AGENTLESS_CREDENTIAL`] (never a valid agent credential) and attached to `guest`
    /// (events `host.agentless_added` and `host_attached`, actor `system`). Its updates
    /// then go through [`UpdateStore::ingest_report`]. Errors: `NotFound` for an unknown
    /// guest.
    async fn upsert_agentless_host(
        &self,
        guest: GuestId,
        facts: &HostFacts,
        now: DateTime<Utc>,
    ) -> Result<Host>;
    /// Retire an active host: `state` becomes `to` (archived: its agent was uninstalled;
    /// deleted: by an admin), its credential is revoked, it is detached from its guest (which
    /// an agentless scan then picks up again as a new agentless host), its pending and sent
    /// commands are cancelled; its events, commands and version history stay. One event
    /// `host.archived` / `host.deleted`. `NotFound` for an unknown host, `Conflict` for one
    /// already retired, `Validation` for `to = Active`.
    async fn retire_host(
        &self,
        host: HostId,
        to: canopy_api_types::hosts::HostState,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Host>;
}

#[async_trait]
pub trait UpdateStore {
    /// Store one validated report in chunks (see [`REPORT_CHUNK_ROWS`]) in one
    /// transaction, with per-row error isolation: a row the database refuses is
    /// returned in `rejected` (index into `report.rows`) and the rest are kept.
    /// Open rows of a scanned manager that the report no longer lists are closed as
    /// `reconciled`; rows carried by an in-flight command (dry_run, installing) are left.
    /// Sets the host's report hash, reboot flag and last_report.
    async fn ingest_report(
        &self,
        host: HostId,
        report: IngestReport,
        actor: &Actor,
    ) -> Result<IngestOutcome>;

    async fn list_updates(&self, filter: &UpdateFilter) -> Result<Page<Update>>;
    async fn get_update(&self, id: UpdateId) -> Result<Option<Update>>;

    /// Approve the given updates (status pending or failed, not held, of a host that can run
    /// commands: active and not agentless) in one statement,
    /// bind each row's fingerprint (package, current, available), then queue ONE dry-run
    /// command per host carrying that host's approved packages and move those rows to
    /// `dry_run` with `command_id` set. All under `correlation`, in one transaction.
    /// Ids that are unknown or not approvable are listed in `skipped` with the reason.
    async fn approve_updates(
        &self,
        ids: &[UpdateId],
        correlation: CorrelationId,
        timeout_secs: u32,
        actor: &Actor,
    ) -> Result<ApproveOutcome>;
    /// [`approve_updates`](Self::approve_updates) under an `Idempotency-Key`, checked and
    /// saved in the approval's own transaction: a repeat with the same body returns the
    /// stored [`ApproveResponse`](canopy_api_types::updates::ApproveResponse), one with
    /// another body is `Conflict`. Nothing is saved when nothing was approved.
    async fn approve_updates_once(
        &self,
        key: &IdempotencyKey,
        ids: &[UpdateId],
        correlation: CorrelationId,
        timeout_secs: u32,
        actor: &Actor,
    ) -> Result<Idempotent<ApproveOutcome>>;
    /// Reject the given pending/failed/awaiting rows in one statement; returns how many moved.
    async fn reject_updates(&self, ids: &[UpdateId], actor: &Actor) -> Result<u64>;

    /// What Canopy installed (newest first). `None` = every host.
    async fn version_history(&self, host: Option<HostId>, limit: u32)
        -> Result<Vec<VersionChange>>;
    /// Dashboard figures, one query per figure.
    async fn stats(&self) -> Result<UpdateStats>;
}

#[async_trait]
pub trait CommandStore {
    /// Queue a command (used for scans and by tests). Writes `command.queued`.
    async fn enqueue_command(&self, new: NewCommand, actor: &Actor) -> Result<Command>;
    /// Claim up to `limit` pending commands of `host`, oldest first: pending → sent,
    /// `sent_at = now`, deadline = now + [`SENT_GRACE_SECS`] (the time the agent has to ask
    /// for its start). Postgres uses `FOR UPDATE SKIP LOCKED`; SQLite `UPDATE … RETURNING` in
    /// `BEGIN IMMEDIATE`.
    async fn claim_commands(
        &self,
        host: HostId,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Command>>;
    /// The start handshake: sent → running (`started_at = now`, deadline = now + timeout).
    /// Idempotent for a command already running (the agent's first answer may have been
    /// lost). `NotFound` for another host's command; `Conflict` otherwise (cancelled, timed
    /// out, never sent): the agent must not run it.
    async fn mark_running(
        &self,
        host: HostId,
        id: CommandId,
        now: DateTime<Utc>,
    ) -> Result<Command>;
    /// Record the agent's result and apply it to the projections in one transaction:
    /// dry-run ok → rows `awaiting_confirmation`; install ok → rows `installed` +
    /// version_history; failure → rows `failed`. Submitting the same result again
    /// returns `Duplicate` and changes nothing; a different result for a terminal
    /// command is `Conflict`. A result arriving after a timeout is recorded on the
    /// command (`late_result`) but the status stays `timed_out`. A result after the deadline
    /// of a running (overdue) command is applied and marked `late`.
    async fn complete_command(
        &self,
        host: HostId,
        id: CommandId,
        result: CommandResult,
        now: DateTime<Utc>,
    ) -> Result<CompleteOutcome>;
    /// Turn a successful dry-run into an install command (same correlation,
    /// `caused_by` = the dry-run) and move its rows to `installing`. `Conflict` when the
    /// dry-run did not succeed, was already confirmed, or its rows changed since.
    async fn confirm_dry_run(
        &self,
        dry_run: CommandId,
        timeout_secs: u32,
        actor: &Actor,
    ) -> Result<Command>;
    /// Cancel a pending or sent command (a sent one was not started: the agent's start will be
    /// refused); its rows go back to `pending`. `Conflict` once running (a package manager is
    /// never stopped halfway) or terminal.
    async fn cancel_command(&self, id: CommandId, actor: &Actor) -> Result<Command>;
    /// Queue a copy of a failed / timed_out / cancelled command with `retried_from`
    /// set and the same correlation; rows it carried move to the new command.
    async fn retry_command(&self, id: CommandId, actor: &Actor) -> Result<Command>;
    /// The sweep, in one transaction (see [`Expiry`]): a sent command not started within
    /// [`SENT_GRACE_SECS`] times out and its rows go back to `pending`; a running command past
    /// its deadline is marked overdue (event `command.overdue`) and left to finish; an overdue
    /// command whose agent sent no heartbeat for `policy.vanished_after` times out and its
    /// rows fail; a pending or sent command of a host that cannot run it (agentless, archived,
    /// deleted) is cancelled, and one waiting longer than `policy.offline_after` for a host
    /// not seen as long times out, their rows back to `pending`.
    async fn expire_commands(
        &self,
        now: DateTime<Utc>,
        policy: &ExpiryPolicy,
    ) -> Result<Vec<Expired>>;
    /// The agent is still working on running command `id`: `heartbeat_at = now`.
    /// `NotFound` for another host's command; `Conflict` unless it is running.
    async fn heartbeat(&self, host: HostId, id: CommandId, now: DateTime<Utc>) -> Result<Command>;
    async fn get_command(&self, id: CommandId) -> Result<Option<Command>>;
    /// Commands of one host, newest first.
    async fn list_commands(&self, host: HostId, limit: u32) -> Result<Vec<Command>>;
}

#[async_trait]
pub trait EventStore {
    /// Events in `seq` order, filtered.
    async fn events(&self, filter: &EventFilter) -> Result<Vec<Event>>;
    /// Append a free-standing event (logins, settings changes).
    async fn append_event(&self, event: NewEvent) -> Result<Event>;
    /// Delete events older than `before`; returns how many (retention job).
    async fn purge_events(&self, before: DateTime<Utc>) -> Result<u64>;

    /// The stored response for `(actor, key)` of an earlier request carrying an
    /// `Idempotency-Key`, with the hash of that request's body.
    async fn idempotent_response(
        &self,
        actor: &str,
        key: &str,
    ) -> Result<Option<(String, serde_json::Value)>>;
    /// Remember a response; a second save for the same `(actor, key)` is `Conflict`.
    async fn save_idempotent_response(
        &self,
        actor: &str,
        key: &str,
        request_hash: &str,
        response: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<()>;
}
