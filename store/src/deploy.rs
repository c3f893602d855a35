//! What bulk operations persist: operations with one item per targeted guest (their
//! progress is data the UI polls and streams), and the SSH host keys the server pinned on
//! first use when it connected to a PVE node or guest.
//!
//! Deploys and uninstalls run from start to end (`running`) and a restart fails them. Update
//! operations plan first (`planning` → `awaiting_approval`), run once an operator approved
//! their plan's fingerprint, may pause and be cancelled, and keep their state in `detail`
//! columns (JSON of `UpdateOperationDetail` per operation, `UpdateItemDetail` per item) so a
//! restarted server resumes them ([`OperationStore::unfinished_operations`]).
//!
//! An item that ends (succeeded, failed or cancelled) writes its event in the same
//! transaction, linked to the guest and, once known, to the host, with the operation's id as
//! correlation id, so a guest's history shows every operation that touched it; so does any
//! event the engine asks for with an item's progress or an operation's transition.

use crate::{Actor, ItemUpdate, NewOperation, OperationTransition, Result};
use async_trait::async_trait;
use canopy_api_types::deploy::{Operation, OperationItem, OperationState, SshHostKey};
use canopy_api_types::OperationId;
use chrono::{DateTime, Utc};

/// The message of an item that was still queued or running when its server stopped.
pub const INTERRUPTED_MESSAGE: &str = "the server stopped before this item finished";

/// Which operations [`OperationStore::find_operations`] lists, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationFilter {
    /// At most this many (capped by the store).
    pub limit: u32,
    /// Only those with an item at this path id or below it (`cluster/home/node/pve1` keeps an
    /// operation on `…/node/pve1/lxc/101`; `…/node/pve10` is not below `…/node/pve1`).
    pub under: Option<String>,
}

#[async_trait]
pub trait SshKeyStore {
    /// The key pinned for `address` (`host:port`), if any.
    async fn host_key(&self, address: &str) -> Result<Option<SshHostKey>>;
    /// Pin `key` unless a key is already pinned for its address (insert-or-ignore, safe
    /// against a concurrent pin) and return the key pinned afterwards: `key` itself, or the
    /// older one, which the caller compares. Event `ssh.host_key_pinned` only on insert.
    async fn pin_host_key(&self, key: &SshHostKey, actor: &Actor) -> Result<SshHostKey>;
    /// Unpin the key of `address` (the next connection pins again); `false` when none was
    /// pinned. Event `ssh.host_key_forgotten`.
    async fn forget_host_key(&self, address: &str, actor: &Actor) -> Result<bool>;
    /// Every pinned key, by address.
    async fn list_host_keys(&self) -> Result<Vec<SshHostKey>>;
}

#[async_trait]
pub trait OperationStore {
    /// Store a new operation (state `new.state`, `created_by` = the actor) with its items in
    /// the given order. Errors: `Conflict` for a known id or a target listed twice;
    /// `NotFound` when an item names a guest or host that is not known (any more).
    /// Event `operation.created` (subject `operation/{id}`).
    async fn create_operation(&self, new: NewOperation, actor: &Actor) -> Result<Operation>;
    /// Record the progress of one item (see [`ItemUpdate`]): `started_at = at` on its first
    /// move to `running`, `finished_at = at` on a terminal state, the stored detail replaced
    /// when `update.update` is `Some`. In the same transaction: `update.event` when given,
    /// then, for an item that just ended, `operation.item_succeeded` /
    /// `operation.item_failed` / `operation.item_cancelled` (each with the target as
    /// subject, linked to the guest and host). A running item may go back to `queued` (its
    /// guest was planned again). Errors: `NotFound` for an unknown operation, target or
    /// host; `Conflict` when the item already ended.
    async fn update_operation_item(
        &self,
        id: OperationId,
        target: &str,
        update: ItemUpdate,
        actor: &Actor,
    ) -> Result<OperationItem>;
    /// End an operation that has not ended (whatever its state: running, planning, paused,
    /// cancelling, …) with the terminal `state` (`finished_at = now`). Errors: `NotFound`;
    /// `Conflict` when it already ended or `state` is not an end. Event
    /// `operation.finished` with the item tally.
    async fn finish_operation(
        &self,
        id: OperationId,
        state: OperationState,
        now: DateTime<Utc>,
    ) -> Result<Operation>;
    /// The operation with its items in their original order.
    async fn get_operation(&self, id: OperationId) -> Result<Option<Operation>>;
    /// The newest `limit` operations with their items (two queries, no N+1).
    async fn list_operations(&self, limit: u32) -> Result<Vec<Operation>> {
        self.find_operations(&OperationFilter { limit, under: None })
            .await
    }
    /// The newest operations `filter` keeps, with their items (two queries, no N+1).
    async fn find_operations(&self, filter: &OperationFilter) -> Result<Vec<Operation>>;
    /// At start-up: every deploy or uninstall operation still `running` becomes `failed`,
    /// and its items that had not ended fail with [`INTERRUPTED_MESSAGE`] (events as for
    /// [`update_operation_item`](Self::update_operation_item) and `finish_operation`,
    /// actor `system`). Update operations are left alone: the engine resumes them
    /// ([`unfinished_operations`](Self::unfinished_operations)). Returns how many
    /// operations failed.
    async fn fail_interrupted_operations(&self, now: DateTime<Utc>) -> Result<u64>;
    /// Move a whole operation between states (see [`OperationTransition`]) and write
    /// `change.event` (subject `operation/{id}`, correlation the operation, the given actor)
    /// in one transaction; `change.update` replaces the stored detail; a terminal `to` sets
    /// `finished_at = change.at` (and items not ended are left as they are: end them first).
    /// Errors: `NotFound`; `Conflict` when it already ended, its state is not in `from`
    /// ("operation X is paused, not awaiting_approval"), or `expect_fingerprint` is not the
    /// stored plan's ("the plan changed: its fingerprint is now …"); a refused change
    /// changes nothing.
    async fn transition_operation(
        &self,
        id: OperationId,
        change: OperationTransition,
        actor: &Actor,
    ) -> Result<Operation>;
    /// Operations of `action` not ended yet (any state but terminal ones), oldest first,
    /// with their items: what a restarted server resumes.
    async fn unfinished_operations(&self, action: &str) -> Result<Vec<Operation>>;
}
