//! What an update does to a guest through the PVE API: the snapshot before (or a vzdump backup
//! where the storage cannot snapshot), the rollback (shutdown, rollback or restore, start), the
//! reboot, and pruning Canopy's older snapshots and backups. Every call
//! starts a PVE task whose end is awaited; a failed task is an error carrying PVE's own words.
//! A guest PVE has locked (backup, migration, another snapshot) is waited for a while, never
//! forced.

use anyhow::{bail, Context};
use canopy_hypervisor::types::Upid;
use canopy_hypervisor::{GuestKind, Hypervisor, PowerAction, PveClient, VzdumpMode};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where snapshots of Canopy's own start (`canopy-<operation>`).
pub const PREFIX: &str = "canopy-";

/// How long a guest locked by PVE is waited for before the step gives up.
const LOCK_WAIT: Duration = Duration::from_secs(120);

pub(super) struct Guest {
    pub pve: Arc<PveClient>,
    pub node: String,
    pub kind: GuestKind,
    pub vmid: u32,
    pub task_timeout: Duration,
}

impl Guest {
    /// PVE's word for the guest: `CT` or `VM`.
    fn word(&self) -> &'static str {
        match self.kind {
            GuestKind::Lxc => "CT",
            GuestKind::Qemu => "VM",
        }
    }

    /// Runs a task-starting call until PVE accepts it (a lock is waited for) and the task
    /// ends; PVE's error text otherwise.
    async fn task<F, Fut>(&self, what: &str, start: F) -> anyhow::Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Upid, canopy_hypervisor::Error>>,
    {
        let until = Instant::now() + LOCK_WAIT;
        loop {
            let upid = start()
                .await
                .with_context(|| format!("{what} of {} {}", self.word(), self.vmid))?;
            match self.wait(&upid).await {
                Ok(()) => return Ok(()),
                Err(e) if is_locked(&e.to_string()) && Instant::now() < until => {
                    tracing::info!(vmid = self.vmid, error = %e, "the guest is locked by PVE; waiting");
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                Err(e) => {
                    return Err(e.context(format!("{what} of {} {}", self.word(), self.vmid)))
                }
            }
        }
    }

    async fn wait(&self, upid: &Upid) -> anyhow::Result<()> {
        let until = Instant::now() + self.task_timeout;
        loop {
            let st = self.pve.task_status(upid).await?;
            if st.status == "stopped" {
                return match st.exitstatus.as_deref() {
                    Some("OK") => Ok(()),
                    Some(e) => bail!("PVE task failed: {e}"),
                    None => bail!("PVE task stopped without an exit status"),
                };
            }
            if Instant::now() >= until {
                bail!(
                    "PVE task {upid} still running after {} s",
                    self.task_timeout.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub async fn snapshot_exists(&self, name: &str) -> anyhow::Result<bool> {
        let snaps = self.pve.snapshots(&self.node, self.kind, self.vmid).await?;
        Ok(snaps.iter().any(|s| s.name == name))
    }

    /// Takes snapshot `name`, or reuses it when it exists already (a resumed operation).
    pub async fn snapshot(&self, name: &str, description: &str) -> anyhow::Result<()> {
        if self.snapshot_exists(name).await? {
            return Ok(());
        }
        self.task("snapshot", || {
            self.pve
                .snapshot_create(&self.node, self.kind, self.vmid, name, description)
        })
        .await
    }

    /// Shutdown, rollback to `name`, start.
    pub async fn rollback(&self, name: &str) -> anyhow::Result<()> {
        // Rolling back a running CT: PVE stops it first; we shut it down cleanly ourselves.
        self.shutdown_for("rollback").await;
        self.task("rollback", || {
            self.pve
                .snapshot_rollback(&self.node, self.kind, self.vmid, name)
        })
        .await?;
        self.task("start", || {
            self.pve
                .power(&self.node, self.kind, self.vmid, PowerAction::Start)
        })
        .await
    }

    /// Whether the guest's storage can snapshot; a guest PVE cannot answer for is tried.
    pub async fn can_snapshot(&self) -> bool {
        self.pve
            .can_snapshot(&self.node, self.kind, self.vmid)
            .await
            .unwrap_or(true)
    }

    /// Backs the guest up to `storage` with vzdump, the archive's notes being `tag`; an
    /// archive with those notes already there (a resumed operation) is reused. Returns its
    /// volume id. A container is backed up in mode `suspend` (a storage that cannot snapshot
    /// cannot do `snapshot` mode either), a VM in `snapshot` mode (QEMU's own live backup).
    pub async fn backup(&self, tag: &str, storage: &str) -> anyhow::Result<String> {
        if let Some(volid) = self.backup_tagged(tag, storage).await? {
            return Ok(volid);
        }
        let mode = match self.kind {
            GuestKind::Lxc => VzdumpMode::Suspend,
            GuestKind::Qemu => VzdumpMode::Snapshot,
        };
        self.task("backup", || {
            self.pve
                .vzdump(&self.node, self.vmid, mode, Some(storage), tag)
        })
        .await?;
        self.backup_tagged(tag, storage).await?.with_context(|| {
            format!(
                "vzdump of {} {} ended OK but no archive on {storage} has the notes {tag:?}",
                self.word(),
                self.vmid
            )
        })
    }

    async fn backup_tagged(&self, tag: &str, storage: &str) -> anyhow::Result<Option<String>> {
        let mut ours: Vec<_> = self
            .pve
            .backups(&self.node, storage, self.vmid)
            .await?
            .into_iter()
            .filter(|b| b.notes.as_deref() == Some(tag))
            .collect();
        ours.sort_by_key(|b| std::cmp::Reverse(b.ctime.unwrap_or(0)));
        Ok(ours.into_iter().next().map(|b| b.volid))
    }

    /// Shutdown, restore `volid` over the guest (a container's root disk where its config
    /// says, a VM's disks where the backup says), start.
    pub async fn restore(&self, volid: &str) -> anyhow::Result<()> {
        let storage = match self.kind {
            GuestKind::Qemu => None,
            GuestKind::Lxc => {
                let config = self.pve.lxc_config(&self.node, self.vmid).await?;
                let rootfs = config
                    .other
                    .get("rootfs")
                    .and_then(|v| v.as_str())
                    .and_then(|r| r.split_once(':'))
                    .map(|(storage, _)| storage.to_string())
                    .with_context(|| {
                        format!("CT {} has no rootfs storage in its config", self.vmid)
                    })?;
                Some(rootfs)
            }
        };
        self.shutdown_for("restore").await;
        self.task("restore", || {
            self.pve
                .restore(&self.node, self.kind, self.vmid, volid, storage.as_deref())
        })
        .await?;
        self.task("start", || {
            self.pve
                .power(&self.node, self.kind, self.vmid, PowerAction::Start)
        })
        .await
    }

    /// Deletes Canopy's backups of this guest on `storage` beyond the newest `keep`.
    pub async fn prune_backups(&self, storage: &str, keep: usize) -> anyhow::Result<Vec<String>> {
        let backups = self.pve.backups(&self.node, storage, self.vmid).await?;
        let stale = beyond_newest(
            backups,
            keep,
            |b| b.notes.as_deref().is_some_and(|n| n.starts_with(PREFIX)),
            |b| b.ctime,
        );
        let mut deleted = Vec::new();
        for b in stale {
            self.task("backup delete", || {
                self.pve.volume_delete(&self.node, storage, &b.volid)
            })
            .await?;
            deleted.push(b.volid);
        }
        Ok(deleted)
    }

    /// A clean shutdown before a rollback or restore; when it fails PVE stops the guest itself
    /// (rollback) or refuses (restore), which the next step reports.
    async fn shutdown_for(&self, what: &str) {
        let _ = self
            .task("shutdown", || {
                self.pve
                    .power(&self.node, self.kind, self.vmid, PowerAction::Shutdown)
            })
            .await
            .map_err(|e| tracing::warn!(vmid = self.vmid, error = %format!("{e:#}"), "shutdown before {what} failed; going on"));
    }

    pub async fn reboot(&self) -> anyhow::Result<()> {
        self.task("reboot", || {
            self.pve
                .power(&self.node, self.kind, self.vmid, PowerAction::Reboot)
        })
        .await
    }

    /// Deletes Canopy's snapshots of this guest beyond the newest `keep`; returns their names.
    pub async fn prune(&self, keep: usize) -> anyhow::Result<Vec<String>> {
        let snapshots = self.pve.snapshots(&self.node, self.kind, self.vmid).await?;
        let stale = beyond_newest(
            snapshots,
            keep,
            |s| s.name.starts_with(PREFIX),
            |s| s.snaptime,
        );
        let mut deleted = Vec::new();
        for s in stale {
            self.task("snapshot delete", || {
                self.pve
                    .snapshot_delete(&self.node, self.kind, self.vmid, &s.name)
            })
            .await?;
            deleted.push(s.name);
        }
        Ok(deleted)
    }
}

/// Canopy's own restore points (`ours`) beyond the newest `keep`, by their creation time: what
/// pruning deletes. Someone else's snapshots and backups are never in it.
fn beyond_newest<T>(
    items: Vec<T>,
    keep: usize,
    ours: impl Fn(&T) -> bool,
    created: impl Fn(&T) -> Option<i64>,
) -> Vec<T> {
    let mut ours: Vec<T> = items.into_iter().filter(|i| ours(i)).collect();
    ours.sort_by_key(|i| std::cmp::Reverse(created(i).unwrap_or(0)));
    ours.into_iter().skip(keep).collect()
}

/// The PVE family of an item's guest, from its path (`…/lxc/101`, `…/vm/200`).
pub(super) fn guest_kind(target: &str) -> GuestKind {
    match target.parse::<canopy_inventory::PathId>() {
        Ok(p) if p.kind() == canopy_inventory::Kind::Vm => GuestKind::Qemu,
        _ => GuestKind::Lxc,
    }
}

/// PVE's words for a guest somebody else holds: `CT is locked (backup)`.
fn is_locked(text: &str) -> bool {
    text.contains("is locked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newest_of_ours_and_never_touches_others() {
        // (name, created): two of someone else's, four of ours out of order, one undated.
        let items = vec![
            ("manual-before-upgrade", Some(50)),
            (&format!("{PREFIX}a")[..], Some(10)),
            (&format!("{PREFIX}d")[..], Some(40)),
            ("vzdump", Some(5)),
            (&format!("{PREFIX}b")[..], Some(20)),
            (&format!("{PREFIX}undated")[..], None),
            (&format!("{PREFIX}c")[..], Some(30)),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect::<Vec<_>>();
        let stale = beyond_newest(items.clone(), 2, |i| i.0.starts_with(PREFIX), |i| i.1);
        let names: Vec<_> = stale
            .iter()
            .map(|i| i.0.trim_start_matches(PREFIX))
            .collect();
        assert_eq!(names, ["b", "a", "undated"]);
        assert!(beyond_newest(items, 10, |i| i.0.starts_with(PREFIX), |i| i.1).is_empty());
    }
}
