//! The cluster file (`examples/sim/*.toml`): what a simulated estate looks like before it
//! starts. Everything here is plain serde data; `state` turns it into the live model.

mod estate;

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

pub use estate::*;

/// A whole simulator file: one or more clusters (or standalone nodes).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimFile {
    #[serde(default)]
    pub clusters: Vec<ClusterSpec>,
}

impl SimFile {
    /// Reads and validates a cluster file; `[generate]` sections are expanded.
    pub fn load(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading simulator file {}", path.display()))?;
        Self::from_toml_str(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn from_toml_str(text: &str) -> anyhow::Result<Self> {
        let mut file: SimFile = toml::from_str(text).context("parsing simulator TOML")?;
        for cluster in &mut file.clusters {
            cluster.expand()?;
            cluster.validate()?;
        }
        Ok(file)
    }
}

/// One PVE cluster, or one standalone node when `standalone = true`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Cluster name as `/cluster/status` reports it (for a standalone node: only a label).
    pub name: String,
    /// A single node that is not part of a cluster (no `type=cluster` status entry).
    #[serde(default)]
    pub standalone: bool,
    /// pve-manager version reported by `/version` and `/nodes/{node}/status`.
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(default = "default_release")]
    pub release: String,
    #[serde(default = "default_repoid")]
    pub repoid: String,
    /// corosync config version (`/cluster/status` `version`); defaults to the node count.
    #[serde(default)]
    pub config_version: Option<u64>,
    /// How long a task (UPID) runs before it stops; its effect applies when it stops.
    #[serde(default = "default_task_ms")]
    pub task_duration_ms: u64,
    /// Action hook: every guest task (start, shutdown, stop, reboot, snapshot, rollback,
    /// snapshot delete) runs `HOOK… ACTION VMID [SNAPNAME] [--start]` and stays running until
    /// it exits; exit 0 applies the effect, anything else fails the task with the hook's last
    /// stderr line. The lab points it at `cargo xtask lab pve-action`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<Vec<String>>,
    #[serde(default)]
    pub quirks: Quirks,
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub guests: Vec<GuestSpec>,
    #[serde(default)]
    pub tokens: Vec<TokenSpec>,
    /// Storages defined on every node; `local` (dir) and `local-lvm` when empty.
    #[serde(default)]
    pub storages: Vec<StorageSpec>,
    #[serde(default)]
    pub failures: Vec<FailureSpec>,
    /// Generates nodes and guests in bulk (appended to the listed ones).
    #[serde(default)]
    pub generate: Option<GenerateSpec>,
    /// Existing TLS material; generated at start when absent.
    #[serde(default)]
    pub tls: Option<TlsSpec>,
}

/// Behaviour that differs between PVE versions.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Quirks {
    /// pve-http-server >= 5.2 (2025, "fix #6503") also puts the error text into the JSON
    /// body as `"message": "...\n"`; older versions only use the status reason phrase.
    #[serde(default = "yes")]
    pub error_message_in_body: bool,
    /// Older versions serialize some numbers as strings (`"vmid": "101"`).
    #[serde(default)]
    pub numbers_as_strings: bool,
    /// Real PVE delays every 401 by 3000 ms; 0 keeps tests fast.
    #[serde(default)]
    pub unauthorized_delay_ms: u64,
    /// Guests on an offline node keep their last name/template/stats (as during the first
    /// five minutes after a node fails) instead of the bare entry PVE shows afterwards.
    #[serde(default)]
    pub offline_guests_keep_stats: bool,
}

impl Default for Quirks {
    fn default() -> Self {
        Self {
            error_message_in_body: true,
            numbers_as_strings: false,
            unauthorized_delay_ms: 0,
            offline_guests_keep_stats: false,
        }
    }
}

impl ClusterSpec {
    /// A minimal cluster with the given node names and no guests or tokens.
    pub fn new(name: impl Into<String>, nodes: &[&str]) -> Self {
        Self {
            name: name.into(),
            standalone: false,
            version: default_version(),
            release: default_release(),
            repoid: default_repoid(),
            config_version: None,
            task_duration_ms: default_task_ms(),
            hook: None,
            quirks: Quirks::default(),
            nodes: nodes.iter().map(|n| NodeSpec::new(*n)).collect(),
            guests: Vec::new(),
            tokens: Vec::new(),
            storages: Vec::new(),
            failures: Vec::new(),
            generate: None,
            tls: None,
        }
    }

    /// Appends what `[generate]` describes and drops the section.
    pub fn expand(&mut self) -> anyhow::Result<()> {
        if let Some(generate) = self.generate.take() {
            crate::generate::expand(self, &generate)?;
        }
        Ok(())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        let name = &self.name;
        if self.nodes.is_empty() {
            bail!("cluster {name}: no nodes");
        }
        if self.standalone && self.nodes.len() != 1 {
            bail!("cluster {name}: a standalone node needs exactly one node");
        }
        let mut nodes = BTreeSet::new();
        for node in &self.nodes {
            if !valid_node_name(&node.name) || !nodes.insert(node.name.as_str()) {
                bail!(
                    "cluster {name}: invalid or duplicate node name {:?}",
                    node.name
                );
            }
        }
        if self.hook.as_ref().is_some_and(|h| h.is_empty()) {
            bail!("cluster {name}: hook must name a program (hook = [\"/path/prog\", …])");
        }
        let mut vmids = BTreeSet::new();
        for guest in &self.guests {
            if !(100..=999_999_999).contains(&guest.vmid) || !vmids.insert(guest.vmid) {
                bail!("cluster {name}: invalid or duplicate vmid {}", guest.vmid);
            }
            if !nodes.contains(guest.node.as_str()) {
                bail!(
                    "cluster {name}: guest {} on unknown node {}",
                    guest.vmid,
                    guest.node
                );
            }
            if guest.status != "running" && guest.status != "stopped" {
                bail!(
                    "cluster {name}: guest {} status must be running|stopped",
                    guest.vmid
                );
            }
        }
        for token in &self.tokens {
            crate::auth::split_token_id(&token.id)
                .with_context(|| format!("cluster {name}: token id {:?}", token.id))?;
            for role in token
                .role
                .iter()
                .chain(token.acl.iter().filter_map(|a| a.role.as_ref()))
            {
                if crate::auth::role_privs(role).is_none() {
                    bail!("cluster {name}: unknown role {role:?}");
                }
            }
        }
        Ok(())
    }
}

/// PVE's `pve-node` format.
pub(crate) fn valid_node_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

pub(crate) fn yes() -> bool {
    true
}
fn default_version() -> String {
    "8.4.1".into()
}
fn default_release() -> String {
    "8.4".into()
}
fn default_repoid() -> String {
    "2a5fa54a8503f96d".into()
}
fn default_task_ms() -> u64 {
    1000
}
