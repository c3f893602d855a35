//! The second phase of an update operation, as a whole: canaries first, then the others
//! within the operation's limits, the canary gate (a failed canary pauses the operation),
//! pause, resume, cancel, and the operation's end. Each guest's own steps are in [`super::guest`].

use super::guest::{End, Work};
use super::{detail_of, Updater};
use crate::error::Result;
use crate::operations::record;
use crate::operations::Slots;
use canopy_api_types::deploy::{
    DeployOutcome, ItemState, Operation, OperationItem, OperationState,
};
use canopy_api_types::OperationId;
use canopy_store::events;
use canopy_store::{Actor, ItemUpdate};
use std::sync::Arc;
use std::time::Duration;

/// The state an operation ends in, from its items.
pub(super) fn final_state(op: &Operation) -> OperationState {
    if op.state == OperationState::Cancelling {
        return OperationState::Cancelled;
    }
    let failed = op
        .items
        .iter()
        .filter(|i| i.state == ItemState::Failed)
        .count();
    let ok = op
        .items
        .iter()
        .filter(|i| i.state == ItemState::Succeeded)
        .count();
    match (ok, failed) {
        (_, 0) => OperationState::Succeeded,
        (0, _) => OperationState::Failed,
        _ => OperationState::Partial,
    }
}

fn runnable(i: &OperationItem) -> bool {
    !i.state.is_terminal()
        && i.update
            .as_ref()
            .is_some_and(|d| d.plan.is_some() && !d.needs_approval)
}

impl Updater {
    /// Runs an approved operation to its end (or until it waits for an approval again).
    pub(super) async fn executor(self: Arc<Self>, id: OperationId, actor: Actor) {
        {
            let mut active = self.active.lock().expect("active lock");
            if !active.insert(id) {
                return; // already running in this process
            }
        }
        loop {
            if let Err(e) = self.execute(id, &actor).await {
                tracing::error!(operation = %id, error = %e, "the update operation stopped");
            }
            self.active.lock().expect("active lock").remove(&id);
            // Approved again while this executor was ending (re-planned guests): run on,
            // unless the approval's own executor took over.
            let again = matches!(self.get(id).await, Ok(op) if op.state == OperationState::Running);
            if !again || !self.active.lock().expect("active lock").insert(id) {
                return;
            }
        }
    }

    async fn execute(self: &Arc<Self>, id: OperationId, actor: &Actor) -> Result<()> {
        let op = self.get(id).await?;
        let slots = Arc::new(self.slots(&op.update.clone().unwrap_or_default()));
        // Canaries first; the others only once every canary passed.
        let canaries: Vec<_> = op
            .items
            .iter()
            .filter(|i| runnable(i) && i.update.as_ref().is_some_and(|d| d.canary))
            .cloned()
            .collect();
        self.run_batch(id, canaries, &slots, actor).await;
        let op = self.get(id).await?;
        let failed = op
            .items
            .iter()
            .find(|i| i.update.as_ref().is_some_and(|d| d.canary) && i.state == ItemState::Failed);
        if let (Some(failed), OperationState::Running) = (failed, op.state) {
            // A failed canary pauses the operation; an operator resumes (the failed canaries
            // stay failed, the others go on) or cancels it.
            let reason = format!(
                "canary {} failed: {}",
                failed.target,
                failed.message.as_deref().unwrap_or("see its steps")
            );
            self.paused_because(id, reason, actor).await?;
            self.wait_while_paused(id).await?;
        }
        let op = self.get(id).await?;
        let rest: Vec<_> = op.items.iter().filter(|i| runnable(i)).cloned().collect();
        self.run_batch(id, rest, &slots, actor).await;
        self.conclude(id, actor).await
    }

    /// Waits until the operation is no longer paused; its state then.
    async fn wait_while_paused(&self, id: OperationId) -> Result<OperationState> {
        let poke = self.poke_handle(id);
        loop {
            let notified = poke.notified();
            let op = self.get(id).await?;
            if op.state != OperationState::Paused {
                return Ok(op.state);
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), notified).await;
        }
    }

    /// The operation's end: cancelled, waiting for a new approval (re-planned guests), or
    /// done.
    async fn conclude(&self, id: OperationId, actor: &Actor) -> Result<()> {
        let op = self.get(id).await?;
        if op.state == OperationState::Cancelling {
            return self.finish_cancelled(id, actor).await;
        }
        if op
            .items
            .iter()
            .any(|i| !i.state.is_terminal() && i.update.as_ref().is_some_and(|d| d.needs_approval))
        {
            let mut detail = op.update.clone().unwrap_or_default();
            detail.fingerprint = Some(super::plan::operation_fingerprint(&op.items));
            detail.per_node = super::plan::per_node(&op.items);
            self.transition(
                id,
                &[OperationState::Running, OperationState::Paused],
                OperationState::AwaitingApproval,
                Some(detail),
                events::OPERATION_REPLANNED,
                serde_json::json!({"operation": id}),
                actor,
            )
            .await?;
            return Ok(());
        }
        let state = final_state(&op);
        let mut pause = record::backoff("the end of the operation");
        record::operation_end(self.store.as_ref(), id, state, &mut pause).await;
        self.ended(id);
        tracing::info!(operation = %id, state = state.as_str(), "update operation finished");
        Ok(())
    }

    /// Runs `items` within the operation's limits; each waits for its slots, then checks
    /// the operation is still running (paused: waits; cancelling: never starts).
    async fn run_batch(
        self: &Arc<Self>,
        id: OperationId,
        items: Vec<OperationItem>,
        slots: &Arc<Slots>,
        actor: &Actor,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        for item in items {
            let (me, slots, actor) = (self.clone(), slots.clone(), actor.clone());
            tasks.spawn(async move {
                let key = format!("{}/{}", item.target.split('/').nth(1).unwrap_or(""), item.vmid);
                // A paused operation holds neither the guest nor a slot: its guests wait here,
                // and look again once they hold both.
                let (_guest, _slots) = loop {
                    if !me.may_start(id, &item).await {
                        return;
                    }
                    let guest = match me.engine.guests.try_lock(&key) {
                        Ok(g) => g,
                        Err(wait) => wait.wait().await,
                    };
                    let slots = slots.acquire(&item.node).await;
                    if me.state_is(id, OperationState::Running).await
                        || item.state != ItemState::Queued
                    {
                        break (guest, slots);
                    }
                };
                if let Err(e) = me.run_guest(id, &item, &actor).await {
                    tracing::error!(operation = %id, target = %item.target, error = %e, "cannot record the guest's end");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Whether `item` may start now: waits while the operation is paused; a queued guest of
    /// an operation being cancelled (or no longer running) never starts. A guest that was in
    /// flight before a restart always finishes.
    async fn may_start(&self, id: OperationId, item: &OperationItem) -> bool {
        match self.wait_while_paused(id).await {
            Ok(OperationState::Running) => true,
            Ok(_) => item.state != ItemState::Queued,
            Err(e) => {
                tracing::error!(operation = %id, error = %e, "cannot read the operation");
                false
            }
        }
    }

    async fn state_is(&self, id: OperationId, state: OperationState) -> bool {
        matches!(self.get(id).await, Ok(op) if op.state == state)
    }

    /// One guest, from where it stands to its end.
    async fn run_guest(&self, id: OperationId, item: &OperationItem, actor: &Actor) -> Result<()> {
        let op = self.get(id).await?;
        let options = op.update.clone().unwrap_or_default().options;
        let mut w = Work {
            up: self,
            id,
            item: item.clone(),
            detail: detail_of(item),
            options,
            actor: actor.clone(),
        };
        let end = w.run().await;
        let (state, outcome, message) = match end {
            Ok(End::Updated(m)) => (ItemState::Succeeded, Some(DeployOutcome::Updated), m),
            Ok(End::Failed(m)) => (ItemState::Failed, None, m),
            Ok(End::RolledBack(m)) => (ItemState::Failed, Some(DeployOutcome::RolledBack), m),
            Ok(End::Broken(m)) => (ItemState::Failed, None, m),
            Ok(End::Replanned) => return Ok(()),
            Err(e) => (ItemState::Failed, None, format!("{e:#}")),
        };
        let mut up = ItemUpdate::running("done", chrono::Utc::now());
        up.state = state;
        up.step = None;
        up.outcome = outcome;
        up.message = Some(message);
        up.update = Some(w.detail.clone());
        let stream = self.engine.stream(id);
        let mut pause = record::backoff("an item's result");
        record::item_end(
            self.store.as_ref(),
            &stream,
            id,
            &item.target,
            up,
            actor,
            &mut pause,
        )
        .await;
        Ok(())
    }
}
