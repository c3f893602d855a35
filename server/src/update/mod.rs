//! Bulk update operations (docs/design.md §2.6): "update all LXCs on node pve1" as one
//! operation on the shared engine ([`crate::operations`]).
//!
//! An update operation is planned first (`planning`): every target is scanned and dry-run in
//! parallel, and each guest's exact pinned package set is kept with its item ([`plan`]). The
//! plan's fingerprint covers every guest's set; nothing changes before an operator approves
//! that fingerprint (`awaiting_approval` → `running`). Then canaries run first, and the others
//! only when every canary passed its health gate, within the per-node and global limits; each
//! guest runs snapshot → health before → pinned install → reboot → health after, rolled back to
//! its snapshot through the PVE API when the install or the gate fails ([`guest`]). Every step
//! is recorded before it starts, so a restarted server resumes where it was and never does a
//! step twice.

mod commands;
mod execute;
mod guest;
mod plan;
mod pve;
mod targets;

/// Where the names of Canopy's own snapshots start (`canopy-<operation>`).
pub use pve::PREFIX as SNAPSHOT_PREFIX;

use crate::discovery::Discovery;
use crate::error::{Error, Result};
use crate::operations::{record, Engine, Slots};
use crate::settings::{Settings, UpdateSettings};
use crate::state::Wakeups;
use canopy_api_types::bulk::{UpdateItemDetail, UpdateOperationDetail, UpdateRequest};
use canopy_api_types::deploy::{ItemState, Operation, OperationItem, OperationState};
use canopy_api_types::OperationId;
use canopy_store::events;
use canopy_store::{Actor, ItemUpdate, NewOperation, OperationEvent, OperationTransition, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How often a waiting engine looks at the store again (commands, a paused operation).
const POLL: Duration = Duration::from_millis(300);

/// Command timeouts, from the server's settings.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    scan: u32,
    dry_run: u32,
    install: u32,
    /// How long an overdue command may go without heartbeats before the sweep ends it.
    vanished: u64,
}

pub struct Updater {
    store: Arc<dyn Store>,
    discovery: Arc<Discovery>,
    wakeups: Arc<Wakeups>,
    engine: Arc<Engine>,
    settings: UpdateSettings,
    timeouts: Timeouts,
    /// Wakes the executor of an operation (approved, paused, resumed, cancelled).
    pokes: Mutex<HashMap<OperationId, Arc<Notify>>>,
    /// Operations whose executor runs in this process.
    active: Mutex<std::collections::HashSet<OperationId>>,
    /// Operations whose planner runs in this process.
    planning: Mutex<std::collections::HashSet<OperationId>>,
    /// One reboot at a time per node (`CLUSTER/NODE`), whatever the operation.
    reboots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Updater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updater").finish_non_exhaustive()
    }
}

impl Updater {
    pub fn new(
        store: Arc<dyn Store>,
        discovery: Arc<Discovery>,
        wakeups: Arc<Wakeups>,
        engine: Arc<Engine>,
        settings: &Settings,
    ) -> Self {
        Self {
            store,
            discovery,
            wakeups,
            engine,
            settings: settings.update.clone(),
            timeouts: Timeouts {
                scan: settings.scan_timeout_secs,
                dry_run: settings.dry_run_timeout_secs,
                install: settings.install_timeout_secs,
                vanished: settings.command_vanished_secs,
            },
            pokes: Mutex::new(HashMap::new()),
            active: Mutex::new(Default::default()),
            planning: Mutex::new(Default::default()),
            reboots: Mutex::new(HashMap::new()),
        }
    }

    fn poke_handle(&self, id: OperationId) -> Arc<Notify> {
        self.pokes
            .lock()
            .expect("pokes lock")
            .entry(id)
            .or_default()
            .clone()
    }

    /// The lock a reboot on `node` (`CLUSTER/NODE`) holds until its agent is back.
    fn reboot_lock(&self, node: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.reboots
            .lock()
            .expect("reboots lock")
            .entry(node.to_string())
            .or_default()
            .clone()
    }

    /// The operation ended: its stream closes and its wake-up goes.
    fn ended(&self, id: OperationId) {
        self.engine.close(id);
        self.pokes.lock().expect("pokes lock").remove(&id);
    }

    fn poke(&self, id: OperationId) {
        self.poke_handle(id).notify_waiters();
    }

    /// Records the operation (`planning`) and plans every target in the background.
    pub async fn start(self: &Arc<Self>, req: UpdateRequest, actor: Actor) -> Result<Operation> {
        plan::check_options(&req.options)?;
        let mut targets = targets::targets(&self.discovery, &req)?;
        if req.options.snapshot == canopy_api_types::bulk::SnapshotPolicy::Required
            && req.options.backup_storage.is_none()
        {
            self.keep_snapshot_capable(&mut targets).await;
        }
        targets::mark_canaries(&mut targets.items, &req.options.canary)?;
        let detail = UpdateOperationDetail {
            options: req.options.clone(),
            ..Default::default()
        };
        let op = self
            .store
            .create_operation(
                NewOperation {
                    id: OperationId::new(),
                    action: "update".into(),
                    state: OperationState::Planning,
                    update: Some(detail),
                    selector: req.selector.clone(),
                    items: targets.items,
                    skipped: targets.skipped,
                    created_at: chrono::Utc::now(),
                },
                &actor,
            )
            .await?;
        self.engine.open(op.id);
        let me = self.clone();
        let id = op.id;
        tokio::spawn(async move { me.planner(id, actor).await });
        Ok(op)
    }

    /// At start-up: resume every update operation a stopped server left unfinished.
    pub async fn resume_unfinished(self: &Arc<Self>) -> Result<usize> {
        let ops = self.store.unfinished_operations("update").await?;
        for op in &ops {
            self.engine.open(op.id);
            let me = self.clone();
            let id = op.id;
            match op.state {
                OperationState::Planning => {
                    tokio::spawn(async move { me.planner(id, Actor::System).await });
                }
                OperationState::AwaitingApproval => {}
                _ => {
                    tokio::spawn(async move { me.executor(id, Actor::System).await });
                }
            }
            tracing::info!(operation = %op.id, state = op.state.as_str(), "resuming an update operation");
        }
        Ok(ops.len())
    }

    /// Approve the plan whose fingerprint the operator saw; starts (or restarts) the work.
    pub async fn approve(
        self: &Arc<Self>,
        id: OperationId,
        fingerprint: &str,
        actor: Actor,
    ) -> Result<Operation> {
        let op = self.get(id).await?;
        let stored = op.update.as_ref().and_then(|u| u.fingerprint.as_deref());
        if op.state == OperationState::AwaitingApproval && stored == Some(fingerprint) {
            // Guests re-planned after an earlier approval are covered by this one. Cleared
            // before the state moves, so an executor that sees `running` finds them runnable;
            // the store checks the fingerprint again below.
            for item in &op.items {
                if let Some(d) = item.update.as_ref().filter(|d| d.needs_approval) {
                    let mut d = d.clone();
                    d.needs_approval = false;
                    let mut up = ItemUpdate::running("approved", chrono::Utc::now());
                    up.state = item.state;
                    up.step = item.step.clone();
                    up.update = Some(d);
                    self.engine
                        .publish(self.store.as_ref(), id, &item.target, up, &actor)
                        .await?;
                }
            }
        }
        let mut detail = op.update.clone().unwrap_or_default();
        detail.approved_by = Some(actor.to_string());
        detail.approved_at = Some(chrono::Utc::now());
        self.store
            .transition_operation(
                id,
                OperationTransition {
                    from: vec![OperationState::AwaitingApproval],
                    to: OperationState::Running,
                    expect_fingerprint: Some(fingerprint.to_string()),
                    update: Some(detail),
                    event: OperationEvent {
                        event_type: events::OPERATION_APPROVED.into(),
                        payload: serde_json::json!({"operation": id, "fingerprint": fingerprint}),
                    },
                    at: chrono::Utc::now(),
                },
                &actor,
            )
            .await?;
        let me = self.clone();
        tokio::spawn(async move { me.executor(id, actor).await });
        self.get(id).await
    }

    /// `pause`: no new guest starts; guests in flight finish.
    pub async fn pause(&self, id: OperationId, actor: Actor) -> Result<Operation> {
        let op = self
            .paused_because(id, format!("paused by {actor}"), &actor)
            .await?;
        self.poke(id);
        Ok(op)
    }

    /// Running → paused with `reason` (kept with the operation and in its event).
    async fn paused_because(
        &self,
        id: OperationId,
        reason: String,
        actor: &Actor,
    ) -> Result<Operation> {
        let op = self.get(id).await?;
        let mut detail = op.update.clone().unwrap_or_default();
        detail.paused_reason = Some(reason.clone());
        self.transition(
            id,
            &[OperationState::Running],
            OperationState::Paused,
            Some(detail),
            events::OPERATION_PAUSED,
            serde_json::json!({"operation": id, "reason": reason}),
            actor,
        )
        .await
    }

    pub async fn resume(&self, id: OperationId, actor: Actor) -> Result<Operation> {
        let op = self.get(id).await?;
        let mut detail = op.update.clone().unwrap_or_default();
        detail.paused_reason = None;
        let op = self
            .transition(
                id,
                &[OperationState::Paused],
                OperationState::Running,
                Some(detail),
                events::OPERATION_RESUMED,
                serde_json::json!({"operation": id}),
                &actor,
            )
            .await?;
        self.poke(id);
        Ok(op)
    }

    /// Cancel: before approval the operation ends at once; while it runs, guests in flight
    /// finish (a package manager is never stopped halfway) and no other starts.
    pub async fn cancel(&self, id: OperationId, actor: Actor) -> Result<Operation> {
        let op = self.get(id).await?;
        match op.state {
            OperationState::Planning | OperationState::AwaitingApproval => {
                let op = self
                    .transition(
                        id,
                        &[op.state],
                        OperationState::Cancelling,
                        None,
                        events::OPERATION_CANCEL_REQUESTED,
                        serde_json::json!({"operation": id}),
                        &actor,
                    )
                    .await?;
                if op.state == OperationState::Cancelling && !self.is_planning(id) {
                    self.finish_cancelled(id, &actor).await?;
                }
                self.poke(id);
                self.get(id).await
            }
            OperationState::Running | OperationState::Paused => {
                let op = self
                    .transition(
                        id,
                        &[OperationState::Running, OperationState::Paused],
                        OperationState::Cancelling,
                        None,
                        events::OPERATION_CANCEL_REQUESTED,
                        serde_json::json!({"operation": id}),
                        &actor,
                    )
                    .await?;
                self.poke(id);
                Ok(op)
            }
            s => Err(Error::Conflict(format!(
                "operation {id} is {}: nothing to cancel",
                s.as_str()
            ))),
        }
    }

    fn is_planning(&self, id: OperationId) -> bool {
        self.planning.lock().expect("planning lock").contains(&id)
    }

    #[allow(clippy::too_many_arguments)]
    async fn transition(
        &self,
        id: OperationId,
        from: &[OperationState],
        to: OperationState,
        update: Option<UpdateOperationDetail>,
        event_type: &str,
        payload: serde_json::Value,
        actor: &Actor,
    ) -> Result<Operation> {
        self.store
            .transition_operation(
                id,
                OperationTransition {
                    from: from.to_vec(),
                    to,
                    expect_fingerprint: None,
                    update,
                    event: OperationEvent {
                        event_type: event_type.into(),
                        payload,
                    },
                    at: chrono::Utc::now(),
                },
                actor,
            )
            .await
            .map_err(Error::from)
    }

    async fn get(&self, id: OperationId) -> Result<Operation> {
        let op = self
            .store
            .get_operation(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("operation {id}")))?;
        if op.action != "update" {
            return Err(Error::Conflict(format!(
                "operation {id} is a {}, not an update",
                op.action
            )));
        }
        Ok(op)
    }

    /// Items not ended are cancelled, then the operation.
    async fn finish_cancelled(&self, id: OperationId, actor: &Actor) -> Result<()> {
        let op = self.get(id).await?;
        for item in op.items.iter().filter(|i| i.state == ItemState::Queued) {
            let mut up =
                ItemUpdate::failed("the operation was cancelled".into(), chrono::Utc::now());
            up.state = ItemState::Cancelled;
            self.engine
                .publish(self.store.as_ref(), id, &item.target, up, actor)
                .await?;
        }
        let mut pause = record::backoff("the end of the operation");
        record::operation_end(
            self.store.as_ref(),
            id,
            OperationState::Cancelled,
            &mut pause,
        )
        .await;
        self.ended(id);
        Ok(())
    }

    /// The item's change, written and streamed.
    async fn item(
        &self,
        id: OperationId,
        item: &OperationItem,
        up: ItemUpdate,
        actor: &Actor,
    ) -> Result<OperationItem> {
        Ok(self
            .engine
            .publish(self.store.as_ref(), id, &item.target, up, actor)
            .await?)
    }

    /// Per-operation slots: global and per node.
    fn slots(&self, detail: &UpdateOperationDetail) -> Slots {
        let global = match detail.options.concurrency {
            0 => self.settings.concurrency,
            n => n as usize,
        };
        let per_node = match detail.options.per_node_concurrency {
            0 => self.settings.per_node_concurrency,
            n => n as usize,
        };
        Slots::new(global, per_node)
    }
}

/// The detail of an item (every item of an update operation has one once planned).
fn detail_of(item: &OperationItem) -> UpdateItemDetail {
    item.update.clone().unwrap_or_default()
}
