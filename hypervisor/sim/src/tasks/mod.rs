//! Worker tasks, as `fork_worker` makes them: a UPID returned at once, `running` for a while,
//! then `stopped` with `OK` or the error text, and the effect (started, snapshot taken, …)
//! applied only when the task stops. Tasks complete lazily: `settle` runs before every
//! request and control call, so no timers are needed. With a cluster action hook (`hook.rs`)
//! a guest task also waits for its hook process, and fails with the hook's reason.

mod effects;
mod hook;

use std::time::Instant;

use serde_json::{json, Value};

use crate::config::GuestKind;
use crate::state::{unix_now, State};

#[derive(Debug, Clone)]
pub(crate) enum Action {
    Start,
    Shutdown,
    Stop,
    Reboot,
    Snapshot {
        name: String,
        description: String,
    },
    Rollback {
        name: String,
        start: bool,
    },
    DelSnapshot {
        name: String,
    },
    Vzdump {
        vmids: Vec<u32>,
        storage: String,
        mode: String,
        /// The archive each guest's backup becomes, with its expanded notes.
        archives: Vec<Archive>,
    },
    /// `POST /nodes/{node}/lxc` with `restore=1` over the existing container.
    Restore {
        volid: String,
        storage: String,
        start: bool,
    },
    /// `DELETE …/storage/{storage}/content/{volume}`.
    DelVolume {
        volid: String,
    },
}

/// One guest's archive of a vzdump task.
#[derive(Debug, Clone)]
pub(crate) struct Archive {
    pub vmid: u32,
    pub volid: String,
    pub notes: String,
}

impl Archive {
    /// The file name of the volume (`vzdump-lxc-101-….tar.zst`).
    pub fn file_name(volid: &str) -> &str {
        volid.rsplit('/').next().unwrap_or(volid)
    }
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
    /// The cluster's action hook for this task, when it has one and the worker got past
    /// its first checks: the task runs until the hook exits.
    pub hook: Option<hook::HookRun>,
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
        Action::Start => {
            if lxc {
                "vzstart"
            } else {
                "qmstart"
            }
        }
        Action::Shutdown => {
            if lxc {
                "vzshutdown"
            } else {
                "qmshutdown"
            }
        }
        Action::Stop => {
            if lxc {
                "vzstop"
            } else {
                "qmstop"
            }
        }
        Action::Reboot => {
            if lxc {
                "vzreboot"
            } else {
                "qmreboot"
            }
        }
        Action::Snapshot { .. } => {
            if lxc {
                "vzsnapshot"
            } else {
                "qmsnapshot"
            }
        }
        Action::Rollback { .. } => {
            if lxc {
                "vzrollback"
            } else {
                "qmrollback"
            }
        }
        Action::DelSnapshot { .. } => {
            if lxc {
                "vzdelsnapshot"
            } else {
                "qmdelsnapshot"
            }
        }
        Action::Vzdump { .. } => "vzdump",
        Action::Restore { .. } => {
            if lxc {
                "vzrestore"
            } else {
                "qmrestore"
            }
        }
        Action::DelVolume { .. } => "imgdel",
    }
}

impl State {
    /// Creates a task for a guest action (or vzdump when `guest` is `None`) and returns its UPID.
    pub fn spawn_task(
        &mut self,
        node: &str,
        guest: Option<(u32, GuestKind)>,
        user: &str,
        action: Action,
        precheck: Option<String>,
    ) -> String {
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
            // PVE starts `imgdel` without an id (a volid holds `:`, which a UPID cannot).
            (Action::DelVolume { .. }, _) => String::new(),
            (Action::Vzdump { vmids, .. }, _) if vmids.len() == 1 => vmids[0].to_string(),
            (Action::Vzdump { .. }, _) => String::new(),
            (_, Some((vmid, _))) => vmid.to_string(),
            _ => String::new(),
        };
        let upid =
            format!("UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{kind}:{id}:{user}:");
        let mut precheck = precheck;
        if precheck.is_none() {
            precheck = self.lock_for(&action, guest.map(|g| g.0));
        }
        let log = self.initial_log(&action, guest, node);
        // A one-guest vzdump runs the hook too (the backup of that guest).
        let hook_vmid = guest.map(|g| g.0).or(match &action {
            Action::Vzdump { vmids, .. } if vmids.len() == 1 => Some(vmids[0]),
            _ => None,
        });
        let hook = match (&self.hook, hook_vmid, &precheck) {
            (Some(argv), Some(vmid), None)
                if self.guests.get(&vmid).is_some_and(|g| g.node == node) =>
            {
                hook::hook_args(&action, vmid).map(|args| hook::HookRun::spawn(argv, args))
            }
            _ => None,
        };
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
            hook,
            result: None,
            log,
        };
        self.tasks.insert(upid.clone(), task);
        self.pending.push(upid.clone());
        upid
    }

    fn initial_log(
        &self,
        action: &Action,
        guest: Option<(u32, GuestKind)>,
        node: &str,
    ) -> Vec<String> {
        let vmid = guest.map(|g| g.0).unwrap_or_default();
        match action {
            Action::Snapshot { name, .. } => vec![
                format!("snapshotting 'rootfs' (local-lvm:vm-{vmid}-disk-0)"),
                format!("  Logical volume \"snap_vm-{vmid}-disk-0_{name}\" created."),
            ],
            Action::DelSnapshot { name } => {
                vec![format!(
                    "  Logical volume \"snap_vm-{vmid}-disk-0_{name}\" successfully removed."
                )]
            }
            Action::Rollback { name, .. } => {
                vec![
                    format!("  Logical volume \"vm-{vmid}-disk-0\" successfully removed."),
                    format!("rolled back to '{name}'"),
                ]
            }
            Action::Vzdump {
                vmids,
                storage,
                mode,
                ..
            } => {
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
}
