//! What a task does to the estate: the config lock it takes when it starts (or the error
//! its worker dies with at once), and the effect applied when it stops.

use std::time::Instant;

use super::{kind_word, Action, Task};
use crate::config::GuestKind;
use crate::state::{unix_now, Backup, Guest, Snapshot, State};

impl State {
    /// Checks what the worker checks first and takes the config lock the action holds.
    pub(super) fn lock_for(&mut self, action: &Action, vmid: Option<u32>) -> Option<String> {
        if let Action::Vzdump { vmids, .. } = action {
            for vmid in vmids {
                if let Some(g) = self.guests.get_mut(vmid) {
                    if g.lock.is_none() {
                        g.lock = Some("backup".into());
                    }
                }
            }
            return None;
        }
        let backups: Vec<String> = self.backups.iter().map(|b| b.volid.clone()).collect();
        let g = self.guests.get_mut(&vmid?)?;
        let word = kind_word(g.kind);
        let has_snap = |name: &str| g.snapshots.iter().any(|s| s.name == name);
        let (err, lock) = match action {
            Action::Start if g.template => (
                Some(format!(
                    "you can't start a {} if it's a template",
                    if g.kind == GuestKind::Lxc { "CT" } else { "vm" }
                )),
                None,
            ),
            Action::Snapshot { .. } if !g.can_snapshot() => {
                (Some("snapshot feature is not available".to_string()), None)
            }
            Action::Snapshot { name, .. } if has_snap(name) => {
                (Some(format!("snapshot name '{name}' already used")), None)
            }
            Action::Rollback { name, .. } | Action::DelSnapshot { name } if !has_snap(name) => {
                (Some(format!("snapshot '{name}' does not exist")), None)
            }
            Action::Restore { volid, .. } if !backups.contains(volid) => {
                (Some(format!("volume '{volid}' does not exist")), None)
            }
            Action::Snapshot { .. } => (None, Some("snapshot")),
            Action::Rollback { .. } => (None, Some("rollback")),
            Action::Restore { .. } => (None, Some("create")),
            Action::DelSnapshot { .. } => (None, Some("snapshot-delete")),
            _ => (None, None),
        };
        if err.is_some() {
            return err;
        }
        if let Some(current) = &g.lock {
            return Some(format!("{word} is locked ({current})"));
        }
        if let Some(lock) = lock {
            g.lock = Some(lock.into());
            g.touch();
        }
        None
    }

    /// Stops every task whose time has come and applies its effect.
    pub fn settle(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let now = Instant::now();
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|u| {
                self.tasks.get(*u).is_none_or(|t| {
                    t.done_at <= now && t.hook.as_ref().is_none_or(|h| h.outcome().is_some())
                })
            })
            .cloned()
            .collect();
        if due.is_empty() {
            return;
        }
        self.pending.retain(|u| !due.contains(u));
        for upid in due {
            self.finish(&upid);
        }
    }

    fn finish(&mut self, upid: &str) {
        let Some(task) = self.tasks.get(upid).cloned() else {
            return;
        };
        let hook = task.hook.as_ref().and_then(|h| h.outcome());
        let result = match (task.precheck.clone(), hook) {
            (Some(err), _) => Err(err),
            (None, Some(Err(err))) => {
                self.release_lock(&task);
                Err(err)
            }
            (None, _) => self.apply(&task),
        };
        if let Some(h) = &task.hook {
            let lines = h.stderr_lines();
            if let Some(t) = self.tasks.get_mut(upid) {
                t.log.extend(lines);
            }
        }
        if let Action::Vzdump { vmids, .. } = &task.action {
            for vmid in vmids {
                if let Some(g) = self
                    .guests
                    .get_mut(vmid)
                    .filter(|g| g.lock.as_deref() == Some("backup"))
                {
                    g.lock = None;
                }
            }
        }
        if let Some(t) = self.tasks.get_mut(upid) {
            t.result = Some(result);
        }
    }

    /// A task that failed in its hook has no effect; the lock it took goes away.
    fn release_lock(&mut self, task: &Task) {
        let lock = match task.action {
            Action::Snapshot { .. } => "snapshot",
            Action::Rollback { .. } => "rollback",
            Action::DelSnapshot { .. } => "snapshot-delete",
            Action::Restore { .. } => "create",
            _ => return,
        };
        if let Some(g) = task
            .vmid
            .and_then(|v| self.guests.get_mut(&v))
            .filter(|g| g.lock.as_deref() == Some(lock))
        {
            g.lock = None;
            g.touch();
        }
    }

    fn apply(&mut self, task: &Task) -> Result<(), String> {
        match &task.action {
            Action::Vzdump {
                archives, storage, ..
            } => {
                for a in archives {
                    let Some(g) = self.guests.get(&a.vmid) else {
                        continue;
                    };
                    let backup = Backup {
                        volid: a.volid.clone(),
                        storage: storage.clone(),
                        node: task.node.clone(),
                        vmid: a.vmid,
                        kind: g.kind,
                        ctime: task.starttime,
                        size: g.disk_gb * 1024 * 1024 * 64,
                        notes: a.notes.clone(),
                        saved: g.saved(),
                    };
                    self.backups.push(backup);
                }
                return Ok(());
            }
            Action::DelVolume { volid } => {
                self.backups.retain(|b| &b.volid != volid);
                return Ok(());
            }
            Action::Restore {
                volid,
                start,
                storage,
            } => {
                let saved = self
                    .backups
                    .iter()
                    .find(|b| &b.volid == volid)
                    .map(|b| b.saved.clone());
                let g = task
                    .vmid
                    .and_then(|v| self.guests.get_mut(&v))
                    .ok_or("no guest")?;
                if let Some(saved) = saved {
                    g.restore(&saved);
                }
                // A restored container has the backup's state and no snapshots.
                g.snapshots.clear();
                g.parent = None;
                g.storage = storage.clone();
                g.running = *start;
                if *start {
                    g.started_unix = unix_now();
                }
                g.lock = None;
                g.touch();
                return Ok(());
            }
            _ => {}
        }
        let vmid = task.vmid.ok_or("no guest")?;
        let now = unix_now();
        let Some(g) = self.guests.get_mut(&vmid).filter(|g| g.node == task.node) else {
            let kind = if task.kind.starts_with("qm") {
                GuestKind::Qemu
            } else {
                GuestKind::Lxc
            };
            return Err(format!(
                "Configuration file '{}' does not exist",
                Guest::conf_path(kind, &task.node, vmid)
            ));
        };
        match &task.action {
            Action::Start => {
                g.running = true;
                g.started_unix = now;
            }
            Action::Shutdown | Action::Stop => g.running = false,
            Action::Reboot => g.started_unix = now,
            Action::Snapshot { name, description } => {
                let snap = Snapshot {
                    name: name.clone(),
                    description: description.clone(),
                    snaptime: task.starttime,
                    parent: g.parent.clone(),
                    saved: g.saved(),
                };
                g.snapshots.push(snap);
                g.parent = Some(name.clone());
                g.lock = None;
            }
            Action::Rollback { name, start } => {
                let saved = g
                    .snapshots
                    .iter()
                    .find(|s| &s.name == name)
                    .map(|s| s.saved.clone());
                if let Some(saved) = saved {
                    g.restore(&saved);
                }
                g.parent = Some(name.clone());
                g.running = *start;
                if *start {
                    g.started_unix = now;
                }
                g.lock = None;
            }
            Action::DelSnapshot { name } => {
                let removed_parent = g
                    .snapshots
                    .iter()
                    .find(|s| &s.name == name)
                    .and_then(|s| s.parent.clone());
                g.snapshots.retain(|s| &s.name != name);
                for s in &mut g.snapshots {
                    if s.parent.as_deref() == Some(name) {
                        s.parent = removed_parent.clone();
                    }
                }
                if g.parent.as_deref() == Some(name) {
                    g.parent = removed_parent;
                }
                g.lock = None;
            }
            Action::Vzdump { .. } | Action::DelVolume { .. } | Action::Restore { .. } => {}
        }
        g.touch();
        Ok(())
    }
}
