//! The second phase of an update operation: canaries first, then the others, each guest
//! through snapshot → health before → pinned install → reboot → health after, rolled back
//! when the install or the health gate fails. Each step is recorded (`UpdateItemDetail.steps`,
//! event `operation.item_step`) before it starts and when it ends; a resumed operation skips
//! the steps recorded done, reuses the snapshot it took and waits for the install it sent.

use super::commands::failure_text;
use super::plan::{snapshot_name, step_event};
use super::pve::Guest;
use super::{detail_of, Slots, Updater, POLL};
use crate::error::Result;
use crate::operations::record;
use canopy_api_types::bulk::{
    HealthReport, ItemStep, RebootPolicy, SnapshotPolicy, UpdateItemDetail, UpdateOptions,
};
use canopy_api_types::commands::CommandStatus;
use canopy_api_types::deploy::{
    DeployOutcome, ItemState, Operation, OperationItem, OperationState,
};
use canopy_api_types::OperationId;
use canopy_store::{Actor, ItemUpdate};
use std::sync::Arc;
use std::time::Duration;

/// How an item ended.
enum End {
    Updated(String),
    /// Failed before anything changed on the guest.
    Failed(String),
    /// Rolled back to its snapshot after `why`.
    RolledBack(String),
    /// Changed and not rolled back (no snapshot, or the rollback failed): loud.
    Broken(String),
    /// The repository moved on: re-planned, waiting for a new approval.
    Replanned,
}

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
            let mut detail = op.update.clone().unwrap_or_default();
            detail.paused_reason = Some(reason.clone());
            self.transition(
                id,
                &[OperationState::Running],
                OperationState::Paused,
                Some(detail),
                "operation.paused",
                serde_json::json!({"operation": id, "reason": reason}),
                actor,
            )
            .await?;
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
                "operation.replanned",
                serde_json::json!({"operation": id}),
                actor,
            )
            .await?;
            return Ok(());
        }
        let state = final_state(&op);
        let mut pause = record::backoff("the end of the operation");
        record::operation_end(self.store.as_ref(), id, state, &mut pause).await;
        self.engine.close(id);
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
                let _guest = match me.engine.guests.try_lock(&key) {
                    Ok(g) => g,
                    Err(wait) => wait.wait().await,
                };
                let _slots = slots.acquire(&item.node).await;
                match me.wait_while_paused(id).await {
                    Ok(OperationState::Running) => {}
                    Ok(OperationState::Cancelling) if item.state == ItemState::Queued => return,
                    Ok(_) if item.state == ItemState::Queued => return,
                    Ok(_) => {} // in flight before a restart: it finishes
                    Err(e) => {
                        tracing::error!(operation = %id, error = %e, "cannot read the operation");
                        return;
                    }
                }
                if let Err(e) = me.run_guest(id, &item, &actor).await {
                    tracing::error!(operation = %id, target = %item.target, error = %e, "cannot record the guest's end");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
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

/// One guest's work, with its detail kept current in the store.
struct Work<'a> {
    up: &'a Updater,
    id: OperationId,
    item: OperationItem,
    detail: UpdateItemDetail,
    options: UpdateOptions,
    actor: Actor,
}

impl Work<'_> {
    /// Records `step` as `status` (before it starts, and when it ends).
    async fn note(&mut self, step: &str, status: &str, note: &str) -> anyhow::Result<()> {
        self.detail.steps.push(ItemStep {
            step: step.into(),
            status: status.into(),
            note: note.into(),
            at: chrono::Utc::now(),
        });
        let mut up = ItemUpdate::running(step, chrono::Utc::now());
        up.host_id = self.item.host_id;
        up.update = Some(self.detail.clone());
        up.event = Some(step_event(self.id, step, status, note));
        self.item = self.up.item(self.id, &self.item, up, &self.actor).await?;
        Ok(())
    }

    fn host(&self) -> anyhow::Result<canopy_api_types::HostId> {
        self.item
            .host_id
            .ok_or_else(|| anyhow::anyhow!("the guest has no agent host"))
    }

    async fn pve(&self) -> anyhow::Result<Guest> {
        let cluster = self
            .item
            .target
            .split('/')
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("target {} names no cluster", self.item.target))?;
        // The guest may have migrated since it was planned: its node is the tree's now.
        let node = self
            .up
            .discovery
            .tree()
            .iter()
            .find(|v| v.vmid == Some(self.item.vmid) && v.id.cluster_name() == cluster)
            .and_then(|v| v.id.node_name().map(str::to_string))
            .unwrap_or_else(|| self.item.node.clone());
        Ok(Guest {
            pve: self.up.discovery.cluster_client(cluster).await?,
            node,
            vmid: self.item.vmid,
            task_timeout: Duration::from_secs(self.up.settings.pve_task_timeout_secs),
        })
    }

    fn back_cap(&self) -> Duration {
        Duration::from_secs(self.up.settings.agent_back_timeout_secs)
    }

    async fn run(&mut self) -> anyhow::Result<End> {
        let host = self.host()?;
        let plan = self
            .detail
            .plan
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the guest has no plan"))?;

        // Health before: the units that had already failed are not this update's doing.
        if !self.detail.done("health-before") {
            self.note("health-before", "started", "").await?;
            let h = self
                .up
                .health(self.id, host, &[], self.back_cap(), &self.actor)
                .await?;
            let note = summary(&h);
            self.detail.health_before = Some(h);
            self.note("health-before", "done", &note).await?;
        }

        // Snapshot.
        let snap = snapshot_name(self.id);
        if !self.detail.done("snapshot") {
            if self.options.snapshot == SnapshotPolicy::Off {
                self.note("snapshot", "skipped", "snapshot off").await?;
            } else {
                self.note("snapshot", "started", &snap).await?;
                let taken = match self.pve().await {
                    Ok(g) => {
                        g.snapshot(&snap, &format!("Canopy update operation {}", self.id))
                            .await
                    }
                    Err(e) => Err(e),
                };
                match taken {
                    Ok(()) => {
                        self.detail.snapshot = Some(snap.clone());
                        self.note("snapshot", "done", &snap).await?;
                    }
                    Err(e) if self.options.snapshot == SnapshotPolicy::Required => {
                        let why = format!("no snapshot possible ({e:#}); snapshot is required: nothing was changed");
                        self.note("snapshot", "failed", &why).await?;
                        return Ok(End::Failed(why));
                    }
                    Err(e) => {
                        let why = format!("{e:#}");
                        self.note(
                            "snapshot",
                            "skipped",
                            &format!("updating without a snapshot: {why}"),
                        )
                        .await?;
                    }
                }
            }
        }

        // The pinned install: sent once; a resumed operation waits for the one it sent.
        if !self.detail.done("install") {
            let cmd = match self.detail.install {
                Some(c) => c,
                None => {
                    let dry_run = self
                        .detail
                        .dry_run
                        .ok_or_else(|| anyhow::anyhow!("the guest's plan has no dry-run"))?;
                    let confirmed = self
                        .up
                        .store
                        .confirm_dry_run(dry_run, self.up.timeouts.install, &self.actor)
                        .await;
                    let cmd = match confirmed {
                        Ok(cmd) => cmd,
                        // The rows changed since the dry-run (a newer report: the repository
                        // moved on). Nothing was touched: plan again, never widen.
                        Err(canopy_store::StoreError::Conflict(why)) => {
                            self.note("install", "failed", &why).await?;
                            return self.replan(&why).await;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    self.detail.install = Some(cmd.id);
                    self.note(
                        "install",
                        "started",
                        &format!("{} packages", plan.packages.len()),
                    )
                    .await?;
                    self.up.wakeups.wake(host);
                    cmd.id
                }
            };
            let done = self.up.wait_command(cmd, self.up.install_cap()).await?;
            if done.status != CommandStatus::Completed {
                let why = failure_text(&done);
                if why.contains("run the dry-run again") {
                    // Nothing was touched: the repository moved on. Plan again, never widen.
                    self.note("install", "failed", &why).await?;
                    return self.replan(&why).await;
                }
                self.note("install", "failed", &why).await?;
                return self.roll_back(&format!("the install failed: {why}")).await;
            }
            self.note(
                "install",
                "done",
                &done.result.map(|r| r.summary).unwrap_or_default(),
            )
            .await?;
        }

        // Reboot, per the option, once.
        if !self.detail.done("reboot") {
            let after = self
                .up
                .health(self.id, host, &[], self.back_cap(), &self.actor)
                .await?;
            let wanted = match self.options.reboot {
                RebootPolicy::Never => false,
                RebootPolicy::Always => true,
                RebootPolicy::IfRequired => after.reboot_required,
            };
            if wanted && !self.detail.rebooted {
                self.note("reboot", "started", "").await?;
                self.pve().await?.reboot().await?;
                self.detail.rebooted = true;
                // The agent is back when it answers a health check with a new start time.
                let back = self.agent_back(after.agent_started_at).await?;
                self.note("reboot", "done", &summary(&back)).await?;
            } else {
                let why = if after.reboot_required {
                    "reboot required, policy never"
                } else {
                    "not required"
                };
                self.note("reboot", "skipped", why).await?;
            }
        }

        // Health after: the agent answers, no unit failed that ran before, the checks pass.
        self.note("health-after", "started", "").await?;
        let h = self
            .up
            .health(
                self.id,
                host,
                &self.options.checks,
                self.back_cap(),
                &self.actor,
            )
            .await?;
        let before = self.detail.health_before.clone().unwrap_or_default();
        let problems = verdict(&before, &h);
        self.detail.health_after = Some(h);
        if !problems.is_empty() {
            let why = problems.join("; ");
            self.note("health-after", "failed", &why).await?;
            return self
                .roll_back(&format!("the health check failed: {why}"))
                .await;
        }
        self.note("health-after", "done", "healthy").await?;

        // Older snapshots of Canopy's go; this one stays.
        if self.detail.snapshot.is_some() {
            match self.pve().await {
                Ok(g) => match g.prune(self.up.settings.snapshots_kept.max(1)).await {
                    Ok(gone) if !gone.is_empty() => {
                        self.note("prune-snapshots", "done", &gone.join(" "))
                            .await?
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.note("prune-snapshots", "failed", &format!("{e:#}"))
                            .await?
                    }
                },
                Err(e) => {
                    self.note("prune-snapshots", "failed", &format!("{e:#}"))
                        .await?
                }
            }
        }
        let mut msg = format!("{} packages installed", plan.packages.len());
        if self.detail.rebooted {
            msg.push_str("; rebooted");
        }
        Ok(End::Updated(msg))
    }

    /// Waits until the agent answers with a start time other than `before`.
    async fn agent_back(
        &mut self,
        before: Option<chrono::DateTime<chrono::Utc>>,
    ) -> anyhow::Result<HealthReport> {
        let host = self.host()?;
        let until = std::time::Instant::now() + self.back_cap();
        loop {
            let h = self
                .up
                .health(self.id, host, &[], self.back_cap(), &self.actor)
                .await?;
            if before.is_none() || h.agent_started_at != before {
                return Ok(h);
            }
            if std::time::Instant::now() >= until {
                anyhow::bail!(
                    "the agent did not come back from the reboot within {} s",
                    self.back_cap().as_secs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Back to the snapshot: shutdown, rollback, start, wait for the agent, verify the old
    /// versions. Loud when it fails; the snapshot stays.
    async fn roll_back(&mut self, why: &str) -> anyhow::Result<End> {
        let Some(snap) = self.detail.snapshot.clone() else {
            return Ok(End::Broken(format!(
                "{why}; no snapshot to roll back to: the guest keeps what was installed"
            )));
        };
        self.note("rollback", "started", &snap).await?;
        let g = self.pve().await?;
        if let Err(e) = g.rollback(&snap).await {
            let msg = format!("{why}; ROLLBACK FAILED: {e:#} (snapshot {snap} is kept)");
            self.note("rollback", "failed", &msg).await?;
            return Ok(End::Broken(msg));
        }
        let host = self.host()?;
        let back = self
            .up
            .health(self.id, host, &[], self.back_cap(), &self.actor)
            .await;
        if let Err(e) = back {
            let msg = format!("{why}; rolled back, but the agent did not come back: {e:#}");
            self.note("rollback", "failed", &msg).await?;
            return Ok(End::Broken(msg));
        }
        self.note("rollback", "done", &snap).await?;
        // Verify: a fresh scan must show the planned packages at their old versions.
        self.note("verify-rollback", "started", "").await?;
        match self.verify_old_versions().await {
            Ok(()) => {
                self.note("verify-rollback", "done", "old versions back")
                    .await?;
                Ok(End::RolledBack(format!("{why}; rolled back to {snap}")))
            }
            Err(e) => {
                let msg = format!("{why}; rolled back to {snap}, but {e:#}");
                self.note("verify-rollback", "failed", &msg).await?;
                Ok(End::Broken(msg))
            }
        }
    }

    async fn verify_old_versions(&self) -> anyhow::Result<()> {
        let host = self.host()?;
        let scan = self
            .up
            .queue(
                self.id,
                host,
                canopy_api_types::commands::CommandSpec::Scan,
                self.up.timeouts.scan,
                &self.actor,
            )
            .await?;
        let cap = Duration::from_secs(u64::from(self.up.timeouts.scan) + 120);
        let done = self.up.wait_command(scan.id, cap).await?;
        if done.status != CommandStatus::Completed {
            anyhow::bail!(
                "the scan after the rollback failed: {}",
                failure_text(&done)
            );
        }
        let rows = self.up.open_updates(host).await?;
        let plan = self.detail.plan.clone().unwrap_or_default();
        for p in plan.packages.iter().filter(|p| p.requested) {
            let Some(from) = &p.from_version else {
                continue;
            };
            let row = rows.iter().find(|u| u.package == p.package);
            match row {
                Some(u) if &u.current_version == from => {}
                Some(u) => anyhow::bail!(
                    "{} is at {} after the rollback, not {from}",
                    p.package,
                    u.current_version
                ),
                None => anyhow::bail!(
                    "{} no longer shows an update after the rollback (expected {from} installed)",
                    p.package
                ),
            }
        }
        Ok(())
    }

    /// The repository moved on: plan this guest again and wait for a new approval.
    async fn replan(&mut self, why: &str) -> anyhow::Result<End> {
        let item = self.item.clone();
        self.up
            .plan_item(self.id, &item, &self.options, &self.actor)
            .await?;
        let op = self.up.get(self.id).await?;
        if let Some(now) = op.items.iter().find(|i| i.target == self.item.target) {
            if !now.state.is_terminal() {
                // The new plan (and its dry-run) came with `now`; its install is yet to be
                // sent, after a new approval. The snapshot taken stays and is reused.
                let mut d = detail_of(now);
                d.needs_approval = true;
                d.install = None;
                d.steps.push(ItemStep {
                    step: "replan".into(),
                    status: "done".into(),
                    note: format!("{why}: waiting for a new approval"),
                    at: chrono::Utc::now(),
                });
                let mut up = ItemUpdate::running("waiting for a new approval", chrono::Utc::now());
                up.state = ItemState::Queued;
                up.update = Some(d);
                up.event = Some(step_event(self.id, "replan", "done", why));
                self.up.item(self.id, now, up, &self.actor).await?;
            }
        }
        Ok(End::Replanned)
    }
}

/// What is wrong after the update, compared with before.
pub(super) fn verdict(before: &HealthReport, after: &HealthReport) -> Vec<String> {
    let mut problems = Vec::new();
    let new_failed: Vec<&String> = after
        .failed_units
        .iter()
        .filter(|u| !before.failed_units.contains(u))
        .collect();
    if !new_failed.is_empty() {
        problems.push(format!(
            "failed units: {}",
            new_failed
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    for c in after.checks.iter().filter(|c| !c.ok) {
        problems.push(format!("{} failed: {}", c.check, c.detail));
    }
    problems
}

fn summary(h: &HealthReport) -> String {
    let mut parts = Vec::new();
    if h.failed_units.is_empty() {
        parts.push("no failed units".to_string());
    } else {
        parts.push(format!("failed units: {}", h.failed_units.join(" ")));
    }
    if h.reboot_required {
        parts.push("reboot required".into());
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_api_types::bulk::CheckOutcome;

    #[test]
    fn only_new_failures_and_failed_checks_count() {
        let before = HealthReport {
            failed_units: vec!["old.service".into()],
            ..Default::default()
        };
        let mut after = before.clone();
        assert!(verdict(&before, &after).is_empty());
        after.failed_units.push("web.service".into());
        after.checks.push(CheckOutcome {
            check: "tcp 127.0.0.1:80".into(),
            ok: false,
            detail: "connection refused".into(),
        });
        let v = verdict(&before, &after);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("web.service") && !v[0].contains("old.service"));
    }
}
