//! The live model of one simulated cluster: nodes, guests, snapshots, tokens, tasks and
//! injected failures. All listeners of a cluster share one `State` behind a mutex; handlers
//! lock it briefly, so a request sees one consistent moment.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::auth::Token;
use crate::config::{
    AptUpdate, ClusterSpec, FailureSpec, GuestKind, GuestSpec, NodeSpec, Quirks, StorageSpec,
};
use crate::tasks::Task;

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub name: String,
    pub ip: String,
    pub online: bool,
    pub hang: bool,
    pub latency: Duration,
    pub level: String,
    pub cpus: u32,
    pub memory: u64,
    pub disk: u64,
    pub updates: Vec<AptUpdate>,
    pub fingerprint: String,
    pub boot_unix: u64,
}

/// The parts of a guest's config a snapshot saves and a rollback restores.
#[derive(Debug, Clone)]
pub(crate) struct SavedConfig {
    pub name: String,
    pub tags: Vec<String>,
    pub memory: u64,
    pub cores: u32,
}

/// A vzdump archive on a storage (`local:backup/vzdump-lxc-101-….tar.zst`).
#[derive(Debug, Clone)]
pub(crate) struct Backup {
    pub volid: String,
    pub storage: String,
    pub node: String,
    pub vmid: u32,
    pub kind: GuestKind,
    pub ctime: u64,
    pub size: u64,
    pub notes: String,
    pub saved: SavedConfig,
}

#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub name: String,
    pub description: String,
    pub snaptime: u64,
    pub parent: Option<String>,
    pub saved: SavedConfig,
}

#[derive(Debug, Clone)]
pub(crate) struct Guest {
    pub vmid: u32,
    pub kind: GuestKind,
    pub node: String,
    pub name: String,
    pub running: bool,
    pub template: bool,
    pub tags: Vec<String>,
    /// MiB.
    pub memory: u64,
    pub cores: u32,
    pub disk_gb: u64,
    pub ostype: String,
    pub ip: Option<String>,
    pub lock: Option<String>,
    pub snapshots: Vec<Snapshot>,
    /// The root disk's storage (`local-lvm`, or `local`: a directory that cannot snapshot).
    pub storage: String,
    /// The snapshot the current state descends from.
    pub parent: Option<String>,
    pub started_unix: u64,
    /// Bumped on every config change, so the `digest` changes like PVE's SHA1 does.
    pub config_generation: u64,
}

impl Guest {
    /// Whether its root disk's storage can snapshot (a directory cannot).
    pub fn can_snapshot(&self) -> bool {
        self.storage != "local"
    }

    pub fn from_spec(spec: &GuestSpec, now: u64) -> Self {
        let lxc = spec.kind == GuestKind::Lxc;
        let mut guest = Self {
            vmid: spec.vmid,
            kind: spec.kind,
            node: spec.node.clone(),
            name: spec.name.clone(),
            running: spec.status == "running" && !spec.template,
            template: spec.template,
            tags: spec.tags.clone(),
            memory: spec.memory.unwrap_or(if lxc { 512 } else { 2048 }),
            cores: spec.cores.unwrap_or(if lxc { 1 } else { 2 }),
            disk_gb: spec.disk_gb.unwrap_or(if lxc { 8 } else { 32 }),
            ostype: spec
                .ostype
                .clone()
                .unwrap_or_else(|| if lxc { "debian" } else { "l26" }.into()),
            ip: spec.ip.clone(),
            lock: spec.lock.clone(),
            snapshots: Vec::new(),
            storage: spec.storage.clone().unwrap_or_else(|| "local-lvm".into()),
            parent: None,
            started_unix: now.saturating_sub(3600 + u64::from(spec.vmid % 1000) * 37),
            config_generation: 0,
        };
        for (i, snap) in spec.snapshots.iter().enumerate() {
            let snaptime = snap
                .snaptime
                .unwrap_or(now - 86_400 * (spec.snapshots.len() - i) as u64);
            guest.snapshots.push(Snapshot {
                name: snap.name.clone(),
                description: snap.description.clone(),
                snaptime,
                parent: guest.parent.clone(),
                saved: guest.saved(),
            });
            guest.parent = Some(snap.name.clone());
        }
        guest
    }

    pub fn saved(&self) -> SavedConfig {
        SavedConfig {
            name: self.name.clone(),
            tags: self.tags.clone(),
            memory: self.memory,
            cores: self.cores,
        }
    }

    pub fn restore(&mut self, saved: &SavedConfig) {
        self.name = saved.name.clone();
        self.tags = saved.tags.clone();
        self.memory = saved.memory;
        self.cores = saved.cores;
        self.touch();
    }

    pub fn touch(&mut self) {
        self.config_generation += 1;
    }

    pub fn status_str(&self) -> &'static str {
        if self.running {
            "running"
        } else {
            "stopped"
        }
    }

    pub fn tags_str(&self) -> Option<String> {
        (!self.tags.is_empty()).then(|| self.tags.join(";"))
    }

    /// The config file path PVE names in "does not exist" errors.
    pub fn conf_path(kind: GuestKind, node: &str, vmid: u32) -> String {
        let dir = match kind {
            GuestKind::Lxc => "lxc",
            GuestKind::Qemu => "qemu-server",
        };
        format!("nodes/{node}/{dir}/{vmid}.conf")
    }

    /// 40 hex chars like PVE's SHA1 config digest, stable until the config changes.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!(
            "{}|{}|{}|{:?}|{}|{}|{}|{:?}|{}",
            self.vmid,
            self.name,
            self.node,
            self.tags,
            self.memory,
            self.cores,
            self.template,
            self.lock,
            self.config_generation
        ));
        hex::encode(h.finalize())[..40].to_string()
    }

    pub fn hwaddr(&self) -> String {
        let v = self.vmid;
        format!(
            "BC:24:11:{:02X}:{:02X}:{:02X}",
            (v >> 16) & 0xff,
            (v >> 8) & 0xff,
            v & 0xff
        )
    }

    /// Deterministic "used memory" for a running guest (bytes).
    pub fn mem_used(&self) -> u64 {
        if !self.running {
            return 0;
        }
        let max = self.memory * 1024 * 1024;
        max / 100 * (20 + u64::from(self.vmid % 50))
    }

    pub fn cpu_used(&self) -> f64 {
        if self.running {
            f64::from(self.vmid % 13) / 1000.0
        } else {
            0.0
        }
    }

    pub fn uptime(&self, now: u64) -> u64 {
        if self.running {
            now.saturating_sub(self.started_unix)
        } else {
            0
        }
    }
}

/// An injected failure with its remaining count (`None` = always).
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub path: String,
    pub method: Option<String>,
    pub status: u16,
    pub reason: String,
    pub remaining: Option<u32>,
}

impl Failure {
    pub fn from_spec(spec: &FailureSpec) -> Self {
        Self {
            path: normalize_api_path(&spec.path),
            method: spec.method.as_ref().map(|m| m.to_ascii_uppercase()),
            status: spec.status,
            reason: spec.reason.clone(),
            remaining: spec.count,
        }
    }
}

pub(crate) struct State {
    pub name: String,
    pub standalone: bool,
    pub version: String,
    pub release: String,
    pub repoid: String,
    pub config_version: u64,
    pub quirks: Quirks,
    pub task_duration: Duration,
    /// The cluster's action hook argv (`hook` in the cluster file).
    pub hook: Option<Vec<String>>,
    pub nodes: Vec<Node>,
    pub guests: BTreeMap<u32, Guest>,
    pub tokens: Vec<Token>,
    pub storages: Vec<StorageSpec>,
    /// Backup archives vzdump made (none at start).
    pub backups: Vec<Backup>,
    pub failures: Vec<Failure>,
    pub tasks: BTreeMap<String, Task>,
    /// UPIDs of tasks still running, checked by `settle`.
    pub pending: Vec<String>,
    pub next_pid: u32,
}

impl State {
    pub fn new(spec: &ClusterSpec, fingerprints: &BTreeMap<String, String>) -> Self {
        let now = unix_now();
        let nodes = spec
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| node_from_spec(n, i, fingerprints, now))
            .collect();
        let guests = spec
            .guests
            .iter()
            .map(|g| (g.vmid, Guest::from_spec(g, now)))
            .collect();
        let storages = if spec.storages.is_empty() {
            default_storages()
        } else {
            spec.storages.clone()
        };
        Self {
            name: spec.name.clone(),
            standalone: spec.standalone,
            version: spec.version.clone(),
            release: spec.release.clone(),
            repoid: spec.repoid.clone(),
            config_version: spec.config_version.unwrap_or(spec.nodes.len() as u64),
            quirks: spec.quirks.clone(),
            task_duration: Duration::from_millis(spec.task_duration_ms),
            hook: spec.hook.clone(),
            nodes,
            guests,
            tokens: spec.tokens.iter().map(Token::from_spec).collect(),
            storages,
            backups: Vec::new(),
            failures: spec.failures.iter().map(Failure::from_spec).collect(),
            tasks: BTreeMap::new(),
            pending: Vec::new(),
            next_pid: 2_000_000 + (now % 100_000) as u32,
        }
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn node_mut(&mut self, name: &str) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.name == name)
    }

    pub fn quorate(&self) -> bool {
        let online = self.nodes.iter().filter(|n| n.online).count();
        online * 2 > self.nodes.len()
    }

    /// Takes one matching injected failure (decrementing its count).
    pub fn take_failure(&mut self, method: &str, rel_path: &str) -> Option<(u16, String)> {
        let idx = self.failures.iter().position(|f| {
            rel_path.starts_with(&f.path) && f.method.as_deref().is_none_or(|m| m == method)
        })?;
        let failure = &mut self.failures[idx];
        let out = (failure.status, failure.reason.clone());
        if let Some(remaining) = failure.remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                self.failures.remove(idx);
            }
        }
        Some(out)
    }
}

fn node_from_spec(n: &NodeSpec, i: usize, fps: &BTreeMap<String, String>, now: u64) -> Node {
    Node {
        name: n.name.clone(),
        ip: n
            .ip
            .clone()
            .unwrap_or_else(|| format!("192.168.1.{}", 11 + i)),
        online: n.online,
        hang: n.hang,
        latency: Duration::from_millis(n.latency_ms),
        level: n.level.clone(),
        cpus: n.cpus,
        memory: n.memory_gb * 1024 * 1024 * 1024,
        disk: n.disk_gb * 1024 * 1024 * 1024,
        updates: n.updates.clone(),
        fingerprint: fps.get(&n.name).cloned().unwrap_or_default(),
        boot_unix: now.saturating_sub(86_400 * 12 + i as u64 * 3_600),
    }
}

fn default_storages() -> Vec<StorageSpec> {
    vec![
        StorageSpec {
            name: "local".into(),
            plugintype: "dir".into(),
            content: "backup,iso,vztmpl".into(),
            shared: false,
            size_gb: 100,
        },
        StorageSpec {
            name: "local-lvm".into(),
            plugintype: "lvmthin".into(),
            content: "images,rootdir".into(),
            shared: false,
            size_gb: 800,
        },
    ]
}

/// `a;b` / `a,b` / `a b` → tags (PVE accepts all three separators).
pub fn split_tags(s: &str) -> Vec<String> {
    s.split([';', ',', ' '])
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Strips `/api2/json` and trailing slashes: `/api2/json/nodes/` → `/nodes`.
pub(crate) fn normalize_api_path(path: &str) -> String {
    let rest = path.strip_prefix("/api2/json").unwrap_or(path);
    let trimmed = rest.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else if trimmed.starts_with('/') {
        trimmed.into()
    } else {
        format!("/{trimmed}")
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
