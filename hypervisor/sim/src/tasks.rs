//! Worker tasks, as `fork_worker` makes them: a UPID returned at once, `running` for a while,
//! then `stopped` with `OK` or the error text, and the effect (started, snapshot taken, …)
//! applied only when the task stops. Tasks complete lazily: `settle` runs before every
//! request and control call, so no timers are needed.

use std::time::Instant;

use serde_json::{json, Value};

use crate::config::GuestKind;
use crate::state::{unix_now, Guest, Snapshot, State};

#[derive(Debug, Clone)]
pub(crate) enum Action {
    Start,
    Shutdown,
    Stop,
    Reboot,
    Snapshot { name: String, description: String },
    Rollback { name: String, start: bool },
    DelSnapshot { name: String },
    Vzdump { vmids: Vec<u32>, storage: String, mode: String },
}

#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub upid: String,
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: u64,
    pub kind: String,
    pub id: String,
    /// Full token id (`root@pam!canopy`), as PVE puts it into the UPID.
    pub user: String,
    pub vmid: Option<u32>,
    pub action: Action,
    pub done_at: Instant,
    /// Set when the worker would die before doing anything (locked, missing snapshot, …).
    pub precheck: Option<String>,
    /// `None` while running; `Some(Ok)` = "OK", `Some(Err(text))` = exit status text.
    pub result: Option<Result<(), String>>,
    pub log: Vec<String>,
}

impl Task {
    pub fn status_json(&self) -> Value {
        let (user, tokenid) = match self.user.split_once('!') {
            Some((u, t)) => (u, Some(t)),
            None => (self.user.as_str(), None),
        };
        let mut v = json!({
            "upid": self.upid, "node": self.node, "pid": self.pid, "pstart": self.pstart,
            "starttime": self.starttime, "type": self.kind, "id": self.id, "user": user,
            "status": if self.result.is_some() { "stopped" } else { "running" },
        });
        if let Some(t) = tokenid {
            v["tokenid"] = json!(t);
        }
        if let Some(result) = &self.result {
            v["exitstatus"] = json!(match result {
                Ok(()) => "OK".to_string(),
                Err(e) => e.clone(),
            });
        }
        v
    }

    /// Log lines so far; the final `TASK OK` / `TASK ERROR: …` once stopped.
    pub fn log_lines(&self) -> Vec<String> {
        let mut lines = if self.result.is_some() {
            self.log.clone()
        } else {
            self.log.iter().take(self.log.len() / 2).cloned().collect()
        };
        match &self.result {
            Some(Ok(())) => lines.push("TASK OK".into()),
            Some(Err(e)) => lines.push(format!("TASK ERROR: {e}")),
            None => {}
        }
        lines
    }
}

fn kind_word(kind: GuestKind) -> &'static str {
    match kind {
        GuestKind::Lxc => "CT",
        GuestKind::Qemu => "VM",
    }
}

fn task_type(kind: GuestKind, action: &Action) -> &'static str {
    let lxc = kind == GuestKind::Lxc;
    match action {
        Action::Start => if lxc { "vzstart" } else { "qmstart" },
        Action::Shutdown => if lxc { "vzshutdown" } else { "qmshutdown" },
        Action::Stop => if lxc { "vzstop" } else { "qmstop" },
        Action::Reboot => if lxc { "vzreboot" } else { "qmreboot" },
        Action::Snapshot { .. } => if lxc { "vzsnapshot" } else { "qmsnapshot" },
        Action::Rollback { .. } => if lxc { "vzrollback" } else { "qmrollback" },
        Action::DelSnapshot { .. } => if lxc { "vzdelsnapshot" } else { "qmdelsnapshot" },
        Action::Vzdump { .. } => "vzdump",
    }
}

impl State {
    /// Creates a task for a guest action (or vzdump when `guest` is `None`) and returns its UPID.
    pub fn spawn_task(&mut self, node: &str, guest: Option<(u32, GuestKind)>, user: &str, action: Action, precheck: Option<String>) -> String {
        self.next_pid += 1;
        let pid = self.next_pid;
        let starttime = unix_now();
        let boot = self.node(node).map(|n| n.boot_unix).unwrap_or(starttime);
        let pstart = starttime.saturating_sub(boot) * 100;
        let kind = match guest {
            Some((_, k)) => task_type(k, &action),
            None => "vzdump",
        };
        let id = match (&action, guest) {
            (Action::Vzdump { vmids, .. }, _) if vmids.len() == 1 => vmids[0].to_string(),
            (Action::Vzdump { .. }, _) => String::new(),
            (_, Some((vmid, _))) => vmid.to_string(),
            _ => String::new(),
        };
        let upid = format!("UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{kind}:{id}:{user}:");
        let mut precheck = precheck;
        if precheck.is_none() {
            precheck = self.lock_for(&action, guest.map(|g| g.0));
        }
        let log = self.initial_log(&action, guest, node);
        let task = Task {
            upid: upid.clone(),
            node: node.into(),
            pid,
            pstart,
            starttime,
            kind: kind.into(),
            id,
            user: user.into(),
            vmid: guest.map(|g| g.0),
            action,
            done_at: Instant::now() + self.task_duration,
            precheck,
            result: None,
            log,
        };
        self.tasks.insert(upid.clone(), task);
        self.pending.push(upid.clone());
        upid
    }

    /// Checks what the worker checks first and takes the config lock the action holds.
    fn lock_for(&mut self, action: &Action, vmid: Option<u32>) -> Option<String> {
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
        let g = self.guests.get_mut(&vmid?)?;
        let word = kind_word(g.kind);
        let has_snap = |name: &str| g.snapshots.iter().any(|s| s.name == name);
        let (err, lock) = match action {
            Action::Start if g.template => {
                (Some(format!("you can't start a {} if it's a template", if g.kind == GuestKind::Lxc { "CT" } else { "vm" })), None)
            }
            Action::Snapshot { name, .. } if has_snap(name) => (Some(format!("snapshot name '{name}' already used")), None),
            Action::Rollback { name, .. } | Action::DelSnapshot { name } if !has_snap(name) => {
                (Some(format!("snapshot '{name}' does not exist")), None)
            }
            Action::Snapshot { .. } => (None, Some("snapshot")),
            Action::Rollback { .. } => (None, Some("rollback")),
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

    fn initial_log(&self, action: &Action, guest: Option<(u32, GuestKind)>, node: &str) -> Vec<String> {
        let vmid = guest.map(|g| g.0).unwrap_or_default();
        match action {
            Action::Snapshot { name, .. } => vec![
                format!("snapshotting 'rootfs' (local-lvm:vm-{vmid}-disk-0)"),
                format!("  Logical volume \"snap_vm-{vmid}-disk-0_{name}\" created."),
            ],
            Action::DelSnapshot { name } => {
                vec![format!("  Logical volume \"snap_vm-{vmid}-disk-0_{name}\" successfully removed.")]
            }
            Action::Rollback { name, .. } => {
                vec![format!("  Logical volume \"vm-{vmid}-disk-0\" successfully removed."), format!("rolled back to '{name}'")]
            }
            Action::Vzdump { vmids, storage, mode } => {
                let ids: Vec<String> = vmids.iter().map(u32::to_string).collect();
                let mut log = vec![format!("INFO: starting new backup job: vzdump {} --mode {mode} --storage {storage} --node {node}", ids.join(" "))];
                for id in vmids {
                    let (kind, name) = self
                        .guests
                        .get(id)
                        .map(|g| (g.kind.as_str(), g.name.as_str()))
                        .unwrap_or(("lxc", "unknown"));
                    log.push(format!("INFO: Starting Backup of VM {id} ({kind})"));
                    log.push(format!("INFO: CT Name: {name}"));
                    log.push(format!("INFO: creating vzdump archive '/var/lib/vz/dump/vzdump-{kind}-{id}.tar.zst'"));
                    log.push(format!("INFO: Finished Backup of VM {id} (00:00:01)"));
                }
                log.push("INFO: Backup job finished successfully".into());
                log
            }
            _ => Vec::new(),
        }
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
            .filter(|u| self.tasks.get(*u).is_none_or(|t| t.done_at <= now))
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
        let Some(task) = self.tasks.get(upid).cloned() else { return };
        let result = match task.precheck.clone() {
            Some(err) => Err(err),
            None => self.apply(&task),
        };
        if let Action::Vzdump { vmids, .. } = &task.action {
            for vmid in vmids {
                if let Some(g) = self.guests.get_mut(vmid).filter(|g| g.lock.as_deref() == Some("backup")) {
                    g.lock = None;
                }
            }
        }
        if let Some(t) = self.tasks.get_mut(upid) {
            t.result = Some(result);
        }
    }

    fn apply(&mut self, task: &Task) -> Result<(), String> {
        if let Action::Vzdump { .. } = &task.action {
            return Ok(());
        }
        let vmid = task.vmid.ok_or("no guest")?;
        let now = unix_now();
        let Some(g) = self.guests.get_mut(&vmid).filter(|g| g.node == task.node) else {
            let kind = if task.kind.starts_with("qm") { GuestKind::Qemu } else { GuestKind::Lxc };
            return Err(format!("Configuration file '{}' does not exist", Guest::conf_path(kind, &task.node, vmid)));
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
                let saved = g.snapshots.iter().find(|s| &s.name == name).map(|s| s.saved.clone());
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
                let removed_parent = g.snapshots.iter().find(|s| &s.name == name).and_then(|s| s.parent.clone());
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
            Action::Vzdump { .. } => {}
        }
        g.touch();
        Ok(())
    }
}
