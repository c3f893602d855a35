//! The parts of a cluster file below the cluster: nodes (with apt updates), guests (with
//! snapshots), tokens and ACLs, storages, injected failures, bulk generation and TLS.

use serde::{Deserialize, Deserializer, Serialize};

use super::yes;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    /// Cluster network address reported by `/cluster/status` (not where the sim listens).
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default = "yes")]
    pub online: bool,
    /// Requests to this node (its listener and `/nodes/{node}/…`) never answer.
    #[serde(default)]
    pub hang: bool,
    #[serde(default)]
    pub latency_ms: u64,
    /// Fixed listener port on 127.0.0.1; 0 or absent picks a free one.
    #[serde(default)]
    pub port: Option<u16>,
    /// Subscription level (`""`, `c`, `b`, `s`, `p`).
    #[serde(default)]
    pub level: String,
    #[serde(default = "default_node_cpus")]
    pub cpus: u32,
    #[serde(default = "default_node_mem_gb")]
    pub memory_gb: u64,
    #[serde(default = "default_node_disk_gb")]
    pub disk_gb: u64,
    /// Pending apt updates (`GET /nodes/{node}/apt/update`).
    #[serde(default)]
    pub updates: Vec<AptUpdate>,
}

impl NodeSpec {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ip: None,
            online: true,
            hang: false,
            latency_ms: 0,
            port: None,
            level: String::new(),
            cpus: default_node_cpus(),
            memory_gb: default_node_mem_gb(),
            disk_gb: default_node_disk_gb(),
            updates: Vec::new(),
        }
    }
}

/// One entry of `GET /nodes/{node}/apt/update`; PVE's own key names are accepted as aliases.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AptUpdate {
    #[serde(alias = "Package")]
    pub package: String,
    #[serde(alias = "OldVersion", default)]
    pub old_version: Option<String>,
    #[serde(alias = "Version")]
    pub version: String,
    #[serde(alias = "Origin", default = "default_origin")]
    pub origin: String,
    #[serde(alias = "Title", default)]
    pub title: Option<String>,
    #[serde(alias = "Description", default)]
    pub description: Option<String>,
    #[serde(alias = "Priority", default = "default_priority")]
    pub priority: String,
    #[serde(alias = "Section", default = "default_section")]
    pub section: String,
    #[serde(alias = "Arch", default = "default_arch")]
    pub arch: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    Lxc,
    #[serde(alias = "vm")]
    Qemu,
}

impl GuestKind {
    /// The path segment and resource `type` (`lxc` / `qemu`).
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Lxc => "lxc",
            GuestKind::Qemu => "qemu",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    pub vmid: u32,
    #[serde(rename = "type", default = "default_kind")]
    pub kind: GuestKind,
    pub node: String,
    /// LXC hostname / VM name.
    pub name: String,
    /// `running` or `stopped`.
    #[serde(default = "default_status")]
    pub status: String,
    #[serde(default)]
    pub template: bool,
    /// Written `["prod", "web"]` or `"prod;web"`; served as `"prod;web"`.
    #[serde(default, deserialize_with = "tags_de")]
    pub tags: Vec<String>,
    /// MiB; defaults to 512 (LXC) or 2048 (VM).
    #[serde(default)]
    pub memory: Option<u64>,
    #[serde(default)]
    pub cores: Option<u32>,
    #[serde(default)]
    pub disk_gb: Option<u64>,
    /// `debian`, `ubuntu`, `alpine`, … (LXC) or `l26`, `win11` (VM).
    #[serde(default)]
    pub ostype: Option<String>,
    /// `net0` address; `dhcp` when absent.
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub lock: Option<String>,
    #[serde(default)]
    pub snapshots: Vec<SnapshotSpec>,
    /// The storage of the root disk: `local-lvm` (thin LVM, can snapshot; the default) or
    /// `local` (a directory: no snapshots, as on real PVE).
    #[serde(default)]
    pub storage: Option<String>,
}

impl GuestSpec {
    pub fn new(
        vmid: u32,
        kind: GuestKind,
        node: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            vmid,
            kind,
            node: node.into(),
            name: name.into(),
            status: default_status(),
            template: false,
            tags: Vec::new(),
            memory: None,
            cores: None,
            disk_gb: None,
            ostype: None,
            ip: None,
            lock: None,
            snapshots: Vec::new(),
            storage: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Unix time; defaults to one day before start per position.
    #[serde(default)]
    pub snaptime: Option<u64>,
}

/// An API token (`USER@REALM!TOKENID`) and what it may do. Privileges are given as a role at
/// `/` (`role`), a privilege list at `/` (`privs`), and/or path ACL entries (`acl`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    pub id: String,
    pub secret: String,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub privs: Vec<String>,
    #[serde(default)]
    pub acl: Vec<AclSpec>,
    /// Unix time after which the token is rejected.
    #[serde(default)]
    pub expire: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AclSpec {
    pub path: String,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub privs: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    pub name: String,
    #[serde(rename = "type", default = "default_storage_type")]
    pub plugintype: String,
    #[serde(default = "default_content")]
    pub content: String,
    #[serde(default)]
    pub shared: bool,
    #[serde(default = "default_storage_gb")]
    pub size_gb: u64,
}

/// Injected failure: requests whose API path (after `/api2/json`) starts with `path` answer
/// `status` with `reason`, `count` times (absent = always).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailureSpec {
    pub path: String,
    #[serde(default)]
    pub method: Option<String>,
    pub status: u16,
    pub reason: String,
    #[serde(default)]
    pub count: Option<u32>,
}

/// Bulk estate for benchmarks: `nodes` named `{prefix}{NN}`, each with LXCs and VMs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateSpec {
    pub nodes: u32,
    #[serde(default)]
    pub lxc_per_node: u32,
    #[serde(default)]
    pub vm_per_node: u32,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default = "default_first_vmid")]
    pub first_vmid: u32,
    /// The last N generated nodes are offline.
    #[serde(default)]
    pub offline_nodes: u32,
}

/// PEM material to serve instead of generating it (e.g. to keep fingerprints stable).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    pub ca_cert_pem: String,
    pub nodes: Vec<NodeTlsSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeTlsSpec {
    pub node: String,
    pub cert_pem: String,
    pub key_pem: String,
}

fn tags_de<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Tags {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Tags::deserialize(d)? {
        Tags::One(s) => crate::state::split_tags(&s),
        Tags::Many(v) => v,
    })
}

fn default_node_cpus() -> u32 {
    8
}
fn default_node_mem_gb() -> u64 {
    32
}
fn default_node_disk_gb() -> u64 {
    100
}
fn default_origin() -> String {
    "Debian".into()
}
fn default_priority() -> String {
    "optional".into()
}
fn default_section() -> String {
    "admin".into()
}
fn default_arch() -> String {
    "amd64".into()
}
fn default_kind() -> GuestKind {
    GuestKind::Lxc
}
fn default_status() -> String {
    "running".into()
}
fn default_storage_type() -> String {
    "dir".into()
}
fn default_content() -> String {
    "rootdir,images".into()
}
fn default_storage_gb() -> u64 {
    500
}
fn default_prefix() -> String {
    "node".into()
}
fn default_first_vmid() -> u32 {
    1000
}
