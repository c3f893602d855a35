//! The `[deploy]` and `[update]` sections: how the server delivers agents over SSH, and how
//! bulk update operations run (docs/design.md §2.2, §2.6).

use crate::deploy::address::SshAddress;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[deploy]`: how the server reaches PVE nodes and guests over SSH to install agents.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DeploySettings {
    /// The URL agents use to reach this server (`https://canopy.lan:8080`). Deploying refuses
    /// to start without it: `listen` is often a loopback address guests cannot reach.
    pub server_url: String,
    /// PEM CA certificate of `server_url`, copied into each guest as the agent's `ca_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_ca_file: Option<PathBuf>,
    /// Private key for SSH to PVE nodes and direct guests (OpenSSH format). Default
    /// `DATA_DIR/ssh/id_ed25519`, generated on first use; `canopy agent ssh-key` prints its
    /// public half for the nodes' `/root/.ssh/authorized_keys`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_key_file: Option<PathBuf>,
    /// User on the PVE nodes (`pct` needs root).
    pub ssh_user: String,
    /// The static agent binary to push. Default: `canopy-agent` next to the `canopy` binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_binary: Option<PathBuf>,
    /// Guests deployed at once on one node.
    pub per_node_concurrency: usize,
    /// Guests deployed at once in total.
    pub concurrency: usize,
    /// Seconds an SSH connection may take.
    pub connect_timeout_secs: u64,
    /// Seconds any one remote command may take.
    pub command_timeout_secs: u64,
    /// Seconds to wait for a freshly started agent's first check-in.
    pub checkin_timeout_secs: u64,
    /// Seconds between agentless scans of the guests that have no agent (through `pct exec`);
    /// 0 = never. They run only once the deploy key exists (deploys are set up).
    pub agentless_interval_secs: u64,
    /// SSH address per node, `"CLUSTER/NODE" = "host:port"` (IPv6: `"[2001:db8::10]:22"`),
    /// overriding the address PVE reports in `/cluster/status` (port 22).
    pub nodes: std::collections::BTreeMap<String, SshAddress>,
    /// Guests reached by SSH directly instead of through their node: `"CLUSTER/VMID"`.
    pub direct: std::collections::BTreeMap<String, DirectSsh>,
    /// Deploying and uninstalling agents runs commands as root on every node over SSH, so
    /// only admins may, unless this lets operators too.
    pub operators_may_deploy: bool,
}

/// `[update]`: bulk update operations (docs/design.md §2.6).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateSettings {
    /// Guests updated at once, when an operation does not say.
    pub concurrency: usize,
    /// Guests of one node updated at once, when an operation does not say.
    pub per_node_concurrency: usize,
    /// Canopy's own snapshots kept per guest; older ones are deleted after a success.
    pub snapshots_kept: usize,
    /// Seconds a guest's agent may take to come back (after a reboot or a rollback).
    pub agent_back_timeout_secs: u64,
    /// Seconds a PVE task (snapshot, rollback, start, reboot) may take.
    pub pve_task_timeout_secs: u64,
}

impl Default for UpdateSettings {
    fn default() -> Self {
        Self {
            concurrency: 4,
            per_node_concurrency: 2,
            snapshots_kept: 3,
            agent_back_timeout_secs: 300,
            pve_task_timeout_secs: 600,
        }
    }
}

/// One guest reached by SSH directly.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DirectSsh {
    /// `host:port` (port 22 when left out; IPv6 as `[ADDRESS]:PORT`).
    pub address: SshAddress,
    #[serde(default = "root")]
    pub user: String,
    /// Key for this guest; the deploy key when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

fn root() -> String {
    "root".into()
}

impl Default for DeploySettings {
    fn default() -> Self {
        Self {
            server_url: String::new(),
            server_ca_file: None,
            ssh_key_file: None,
            ssh_user: root(),
            agent_binary: None,
            per_node_concurrency: 4,
            concurrency: 16,
            connect_timeout_secs: 10,
            command_timeout_secs: 120,
            checkin_timeout_secs: 60,
            agentless_interval_secs: 3600,
            nodes: Default::default(),
            direct: Default::default(),
            operators_may_deploy: false,
        }
    }
}
