//! Runtime control for tests: change the estate under a running simulator (migrate, power,
//! rename, tags, nodes going offline or hanging, latency, injected failures) and read the
//! request log. Every call first lets due tasks finish, like a request would.

use std::time::Duration;

use anyhow::{anyhow, bail};

use crate::config::{AptUpdate, GuestSpec, SnapshotSpec};
use crate::server::RequestRecord;
use crate::state::{normalize_api_path, unix_now, Failure, Guest, State};
use crate::RunningCluster;

/// A task as the simulator knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub upid: String,
    pub node: String,
    /// `vzstart`, `vzsnapshot`, `vzdump`, …
    pub kind: String,
    pub id: String,
    /// `running` or `stopped`.
    pub status: String,
    /// `OK` or the error text once stopped.
    pub exitstatus: Option<String>,
}

impl RunningCluster {
    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let mut st = self.shared.lock();
        st.settle();
        f(&mut st)
    }

    fn with_guest(&self, vmid: u32, f: impl FnOnce(&mut Guest)) -> anyhow::Result<()> {
        self.with_state(|st| {
            let g = st
                .guests
                .get_mut(&vmid)
                .ok_or_else(|| anyhow!("no guest {vmid}"))?;
            f(g);
            g.touch();
            Ok(())
        })
    }

    /// Moves a guest to another node (its config, snapshots and status follow).
    pub fn migrate(&self, vmid: u32, to_node: &str) -> anyhow::Result<()> {
        self.with_state(|st| {
            if st.node(to_node).is_none() {
                bail!("no node {to_node}");
            }
            let g = st
                .guests
                .get_mut(&vmid)
                .ok_or_else(|| anyhow!("no guest {vmid}"))?;
            g.node = to_node.into();
            g.touch();
            Ok(())
        })
    }

    /// `running` or `stopped`, effective at once (no task).
    pub fn set_guest_status(&self, vmid: u32, status: &str) -> anyhow::Result<()> {
        let running = match status {
            "running" => true,
            "stopped" => false,
            other => bail!("status must be running|stopped, not {other}"),
        };
        self.with_guest(vmid, |g| {
            if running && !g.running {
                g.started_unix = unix_now();
            }
            g.running = running;
        })
    }

    /// Takes a node offline (its listener closes; `/nodes/{node}/…` answers 595) or back.
    pub fn set_node_online(&self, node: &str, online: bool) -> anyhow::Result<()> {
        self.with_state(|st| {
            st.node_mut(node)
                .ok_or_else(|| anyhow!("no node {node}"))?
                .online = online;
            Ok(())
        })?;
        if let Some(tx) = self.shared.online.get(node) {
            tx.send_replace(online);
        }
        Ok(())
    }

    /// A hanging node accepts connections but never answers.
    pub fn set_node_hang(&self, node: &str, hang: bool) -> anyhow::Result<()> {
        self.with_state(|st| {
            st.node_mut(node)
                .ok_or_else(|| anyhow!("no node {node}"))?
                .hang = hang;
            Ok(())
        })
    }

    /// Delay before answering requests on `node`'s listener or proxied to `node`.
    pub fn set_latency(&self, node: &str, latency: Duration) -> anyhow::Result<()> {
        self.with_state(|st| {
            st.node_mut(node)
                .ok_or_else(|| anyhow!("no node {node}"))?
                .latency = latency;
            Ok(())
        })
    }

    pub fn add_guest(&self, spec: GuestSpec) -> anyhow::Result<()> {
        self.with_state(|st| {
            if st.guests.contains_key(&spec.vmid) {
                bail!("vmid {} already exists", spec.vmid);
            }
            if st.node(&spec.node).is_none() {
                bail!("no node {}", spec.node);
            }
            st.guests
                .insert(spec.vmid, Guest::from_spec(&spec, unix_now()));
            Ok(())
        })
    }

    pub fn remove_guest(&self, vmid: u32) -> anyhow::Result<()> {
        self.with_state(|st| {
            st.guests
                .remove(&vmid)
                .map(|_| ())
                .ok_or_else(|| anyhow!("no guest {vmid}"))
        })
    }

    /// Changes the hostname (LXC) or name (VM).
    pub fn rename_guest(&self, vmid: u32, name: &str) -> anyhow::Result<()> {
        self.with_guest(vmid, |g| g.name = name.into())
    }

    pub fn set_tags(&self, vmid: u32, tags: &[&str]) -> anyhow::Result<()> {
        self.with_guest(vmid, |g| {
            g.tags = tags.iter().map(|t| t.to_string()).collect()
        })
    }

    pub fn set_template(&self, vmid: u32, template: bool) -> anyhow::Result<()> {
        self.with_guest(vmid, |g| {
            g.template = template;
            g.running &= !template;
        })
    }

    /// Replaces a node's pending apt updates.
    pub fn set_updates(&self, node: &str, updates: Vec<AptUpdate>) -> anyhow::Result<()> {
        self.with_state(|st| {
            st.node_mut(node)
                .ok_or_else(|| anyhow!("no node {node}"))?
                .updates = updates;
            Ok(())
        })
    }

    /// How long tasks started from now on run.
    pub fn set_task_duration(&self, duration: Duration) {
        let _ = self.with_state(|st| {
            st.task_duration = duration;
            Ok(())
        });
    }

    /// The next `count` requests whose API path starts with `path_prefix` (with or without
    /// `/api2/json`) fail with `status` and `reason`.
    pub fn fail_next(&self, path_prefix: &str, status: u16, reason: &str, count: u32) {
        self.push_failure(path_prefix, status, reason, Some(count));
    }

    /// Every request under `path_prefix` fails until `clear_failures`.
    pub fn fail_always(&self, path_prefix: &str, status: u16, reason: &str) {
        self.push_failure(path_prefix, status, reason, None);
    }

    pub fn clear_failures(&self) {
        self.shared.lock().failures.clear();
    }

    fn push_failure(&self, path_prefix: &str, status: u16, reason: &str, remaining: Option<u32>) {
        if remaining == Some(0) {
            return;
        }
        self.shared.lock().failures.push(Failure {
            path: normalize_api_path(path_prefix),
            method: None,
            status,
            reason: reason.into(),
            remaining,
        });
    }

    /// The guest as it is now (status `running|stopped`, snapshots by name).
    pub fn guest(&self, vmid: u32) -> Option<GuestSpec> {
        let mut st = self.shared.lock();
        st.settle();
        let g = st.guests.get(&vmid)?;
        Some(GuestSpec {
            vmid: g.vmid,
            kind: g.kind,
            node: g.node.clone(),
            name: g.name.clone(),
            status: g.status_str().into(),
            template: g.template,
            tags: g.tags.clone(),
            memory: Some(g.memory),
            cores: Some(g.cores),
            disk_gb: Some(g.disk_gb),
            ostype: Some(g.ostype.clone()),
            ip: g.ip.clone(),
            lock: g.lock.clone(),
            snapshots: g
                .snapshots
                .iter()
                .map(|s| SnapshotSpec {
                    name: s.name.clone(),
                    description: s.description.clone(),
                    snaptime: Some(s.snaptime),
                })
                .collect(),
            storage: Some(g.storage.clone()),
        })
    }

    /// All tasks started so far, oldest first.
    pub fn tasks(&self) -> Vec<TaskInfo> {
        let mut st = self.shared.lock();
        st.settle();
        let mut list: Vec<_> = st.tasks.values().collect();
        list.sort_by_key(|t| (t.starttime, t.pid));
        list.into_iter()
            .map(|t| TaskInfo {
                upid: t.upid.clone(),
                node: t.node.clone(),
                kind: t.kind.clone(),
                id: t.id.clone(),
                status: if t.result.is_some() {
                    "stopped"
                } else {
                    "running"
                }
                .into(),
                exitstatus: t.result.as_ref().map(|r| match r {
                    Ok(()) => "OK".to_string(),
                    Err(e) => e.clone(),
                }),
            })
            .collect()
    }

    /// Every HTTP request that reached any listener of this cluster, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests()
    }

    pub fn request_count(&self) -> usize {
        self.shared.request_count()
    }

    pub fn reset_requests(&self) {
        self.shared.reset_requests();
    }
}
