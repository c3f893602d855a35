//! One guest of an update operation: health before → snapshot (or backup) → pinned install →
//! reboot → health after, rolled back when the install or the health gate fails
//! (`restore_point.rs`). Each step is recorded
//! (`UpdateItemDetail.steps`, event `operation.item_step`) before it starts and when it ends; a
//! resumed operation skips the steps recorded done, reuses the snapshot it took and waits for
//! the install it sent.

use super::commands::failure_text;
use super::plan::step_event;
use super::pve::Guest;
use super::{detail_of, Updater, POLL};
use canopy_api_types::bulk::{
    HealthReport, ItemStep, RebootPolicy, UpdateItemDetail, UpdateOptions,
};
use canopy_api_types::commands::CommandStatus;
use canopy_api_types::deploy::{ItemState, OperationItem};
use canopy_api_types::OperationId;
use canopy_store::{Actor, ItemUpdate};
use std::time::Duration;

mod restore_point;

/// How an item ended.
pub(super) enum End {
    Updated(String),
    /// Failed before anything changed on the guest.
    Failed(String),
    /// Rolled back to its snapshot (or backup) after `why`.
    RolledBack(String),
    /// Changed and not rolled back (no snapshot, or the rollback failed): loud.
    Broken(String),
    /// The repository moved on: re-planned, waiting for a new approval.
    Replanned,
}

/// One guest's work, with its detail kept current in the store.
pub(super) struct Work<'a> {
    pub up: &'a Updater,
    pub id: OperationId,
    pub item: OperationItem,
    pub detail: UpdateItemDetail,
    pub options: UpdateOptions,
    pub actor: Actor,
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
            kind: super::pve::guest_kind(&self.item.target),
            vmid: self.item.vmid,
            task_timeout: Duration::from_secs(self.up.settings.pve_task_timeout_secs),
        })
    }

    fn back_cap(&self) -> Duration {
        Duration::from_secs(self.up.settings.agent_back_timeout_secs)
    }

    pub async fn run(&mut self) -> anyhow::Result<End> {
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

        // A restore point: the snapshot, or a backup where the storage cannot snapshot.
        if let Some(end) = self.restore_point().await? {
            return Ok(end);
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

        // Reboot, per the option, once. The check that decides it is the health gate too
        // when no reboot follows.
        let mut unrebooted = None;
        if !self.detail.done("reboot") {
            let after = self
                .up
                .health(
                    self.id,
                    host,
                    &self.options.checks,
                    self.back_cap(),
                    &self.actor,
                )
                .await?;
            // Why a reboot is needed: the reboot-required flag, or services needrestart says
            // still run outdated code (a reboot restarts them all, one guest per node at a time).
            let needed = if after.reboot_required {
                Some("reboot required".to_string())
            } else if !after.services_to_restart.is_empty() {
                Some(format!(
                    "services run outdated code: {}",
                    after.services_to_restart.join(" ")
                ))
            } else {
                None
            };
            let wanted = match self.options.reboot {
                RebootPolicy::Never => false,
                RebootPolicy::Always => true,
                RebootPolicy::IfRequired => needed.is_some(),
            };
            if wanted && !self.detail.rebooted {
                let g = self.pve().await?;
                let cluster = self.item.target.split('/').nth(1).unwrap_or_default();
                // One reboot at a time per node, until its agent is back.
                let lock = self.up.reboot_lock(&format!("{cluster}/{}", g.node));
                let _one = lock.lock().await;
                let why = needed.unwrap_or_else(|| "policy always".into());
                self.note("reboot", "started", &why).await?;
                g.reboot().await?;
                self.detail.rebooted = true;
                // The agent is back when it answers a health check with a new start time.
                let back = self.agent_back(after.agent_started_at).await?;
                self.note("reboot", "done", &summary(&back)).await?;
            } else {
                let why = match needed {
                    _ if self.detail.rebooted => "rebooted already (before a restart)".into(),
                    Some(why) => format!("{why}, policy never"),
                    None => "not required".into(),
                };
                self.note("reboot", "skipped", &why).await?;
                unrebooted = Some(after);
            }
        }

        // Health after: the agent answers, no unit failed that ran before, the checks pass.
        self.note("health-after", "started", "").await?;
        let h = match unrebooted {
            Some(h) => h,
            None => {
                self.up
                    .health(
                        self.id,
                        host,
                        &self.options.checks,
                        self.back_cap(),
                        &self.actor,
                    )
                    .await?
            }
        };
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

        self.prune().await?;
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
