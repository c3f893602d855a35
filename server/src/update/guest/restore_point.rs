//! A guest's restore point and the way back to it. Before the install the guest gets a PVE
//! snapshot named after the operation, or — where its storage cannot snapshot and the
//! operation names a backup storage — a vzdump backup whose notes are that name. A failed
//! install or health gate goes back to it (rollback, or restore of the backup), waits for the
//! agent and verifies the old versions; a rollback that fails is loud and keeps the point.
//! After a healthy update Canopy's older points beyond `update.snapshots_kept` go.

use super::{End, Work};
use crate::update::plan::snapshot_name;
use canopy_api_types::bulk::SnapshotPolicy;

impl Work<'_> {
    /// Takes the restore point once (a resumed operation reuses the one it took). `Some` ends
    /// the guest's work: a required point was impossible, nothing was changed.
    pub(super) async fn restore_point(&mut self) -> anyhow::Result<Option<End>> {
        if self.detail.done("snapshot") || self.detail.done("backup") {
            return Ok(None);
        }
        let snap = snapshot_name(self.id);
        if self.options.snapshot == SnapshotPolicy::Off {
            self.note("snapshot", "skipped", "snapshot off").await?;
            return Ok(None);
        }
        let g = match self.pve().await {
            Ok(g) => g,
            Err(e) => return self.no_restore_point("snapshot", &format!("{e:#}")).await,
        };
        if let Some(storage) = self.options.backup_storage.clone() {
            if !g.can_snapshot().await {
                self.note("backup", "started", &format!("vzdump to {storage}"))
                    .await?;
                return match g.backup(&snap, &storage).await {
                    Ok(volid) => {
                        self.detail.backup = Some(volid.clone());
                        self.note("backup", "done", &volid).await?;
                        Ok(None)
                    }
                    Err(e) => self.no_restore_point("backup", &format!("{e:#}")).await,
                };
            }
        }
        self.note("snapshot", "started", &snap).await?;
        let description = format!("Canopy update operation {}", self.id);
        match g.snapshot(&snap, &description).await {
            Ok(()) => {
                self.detail.snapshot = Some(snap.clone());
                self.note("snapshot", "done", &snap).await?;
                Ok(None)
            }
            Err(e) => self.no_restore_point("snapshot", &format!("{e:#}")).await,
        }
    }

    /// `step` could not make a restore point: the end under `required`, a warning otherwise.
    async fn no_restore_point(&mut self, step: &str, why: &str) -> anyhow::Result<Option<End>> {
        if self.options.snapshot == SnapshotPolicy::Required {
            let why =
                format!("no {step} possible ({why}); a snapshot is required: nothing was changed");
            self.note(step, "failed", &why).await?;
            return Ok(Some(End::Failed(why)));
        }
        let note = format!("updating without a {step}: {why}");
        self.note(step, "skipped", &note).await?;
        Ok(None)
    }

    /// Back to the restore point: shutdown, rollback (or restore), start, wait for the agent,
    /// verify the old versions. Loud when it fails; the snapshot or backup stays.
    pub(super) async fn roll_back(&mut self, why: &str) -> anyhow::Result<End> {
        let (point, backup) = match (&self.detail.snapshot, &self.detail.backup) {
            (Some(snap), _) => (snap.clone(), false),
            (None, Some(volid)) => (volid.clone(), true),
            (None, None) => {
                return Ok(End::Broken(format!(
                    "{why}; no snapshot to roll back to: the guest keeps what was installed"
                )))
            }
        };
        let (step, kept) = if backup {
            ("restore", "backup")
        } else {
            ("rollback", "snapshot")
        };
        self.note(step, "started", &point).await?;
        let g = self.pve().await?;
        let done = if backup {
            g.restore(&point).await
        } else {
            g.rollback(&point).await
        };
        if let Err(e) = done {
            let msg = format!("{why}; ROLLBACK FAILED: {e:#} ({kept} {point} is kept)");
            self.note(step, "failed", &msg).await?;
            return Ok(End::Broken(msg));
        }
        let host = self.host()?;
        let back = self
            .up
            .health(self.id, host, &[], self.back_cap(), &self.actor)
            .await;
        if let Err(e) = back {
            let msg = format!("{why}; rolled back, but the agent did not come back: {e:#}");
            self.note(step, "failed", &msg).await?;
            return Ok(End::Broken(msg));
        }
        self.note(step, "done", &point).await?;
        // Verify: a fresh scan must show the planned packages at their old versions.
        self.note("verify-rollback", "started", "").await?;
        match self.verify_old_versions().await {
            Ok(()) => {
                self.note("verify-rollback", "done", "old versions back")
                    .await?;
                let how = if backup { "restored" } else { "rolled back to" };
                Ok(End::RolledBack(format!("{why}; {how} {point}")))
            }
            Err(e) => {
                let msg = format!("{why}; back to {point}, but {e:#}");
                self.note("verify-rollback", "failed", &msg).await?;
                Ok(End::Broken(msg))
            }
        }
    }

    async fn verify_old_versions(&self) -> anyhow::Result<()> {
        let host = self.host()?;
        self.up
            .scan(self.id, host, &self.actor)
            .await
            .map_err(|e| e.context("after the rollback"))?;
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

    /// After a healthy update: Canopy's older snapshots (or backups) of the guest go, this
    /// operation's stays. A failure is recorded, not fatal.
    pub(super) async fn prune(&mut self) -> anyhow::Result<()> {
        let keep = self.up.settings.snapshots_kept.max(1);
        let storage = match (&self.detail.snapshot, &self.detail.backup) {
            (Some(_), _) => None,
            (None, Some(_)) => self.options.backup_storage.clone(),
            (None, None) => return Ok(()),
        };
        let gone = match self.pve().await {
            Ok(g) => match &storage {
                None => g.prune(keep).await,
                Some(storage) => g.prune_backups(storage, keep).await,
            },
            Err(e) => Err(e),
        };
        let step = if storage.is_some() {
            "prune-backups"
        } else {
            "prune-snapshots"
        };
        match gone {
            Ok(gone) if !gone.is_empty() => self.note(step, "done", &gone.join(" ")).await,
            Ok(_) => Ok(()),
            Err(e) => self.note(step, "failed", &format!("{e:#}")).await,
        }
    }
}
