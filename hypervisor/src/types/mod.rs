//! The PVE item types Canopy reads, written by hand so they survive real PVE output.
//!
//! `openapi/pve.yaml` documents these schemas; the generated client (`generated.rs`) uses
//! these types in place of strict generated ones. Every field we do not need is ignored,
//! every field we read is optional unless PVE always sends it, booleans accept 0/1, numbers
//! accept strings, and enums keep the values they do not know (`Other`).

pub mod de;

use serde::{Deserialize, Serialize};
use std::fmt;

/// `GET /version`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Version {
    #[serde(default, deserialize_with = "de::opt_string")]
    pub version: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub release: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub repoid: Option<String>,
}

/// One entry of `GET /cluster/status`: the cluster itself or one node.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct ClusterStatusEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "de::opt_num")]
    pub nodeid: Option<u32>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default, deserialize_with = "de::bool01")]
    pub online: bool,
    #[serde(default, deserialize_with = "de::bool01")]
    pub local: bool,
    #[serde(default, deserialize_with = "de::bool01")]
    pub quorate: bool,
    #[serde(default, deserialize_with = "de::opt_num")]
    pub nodes: Option<u32>,
}

/// What a `/cluster/resources` entry is. PVE adds types over time (`sdn`, `pool`, …).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "String", into = "String")]
pub enum ResourceType {
    Node,
    Lxc,
    Qemu,
    Storage,
    Other(String),
}

impl From<String> for ResourceType {
    fn from(s: String) -> Self {
        match s.as_str() {
            "node" => Self::Node,
            "lxc" => Self::Lxc,
            "qemu" => Self::Qemu,
            "storage" => Self::Storage,
            _ => Self::Other(s),
        }
    }
}

impl From<ResourceType> for String {
    fn from(t: ResourceType) -> Self {
        match t {
            ResourceType::Node => "node".into(),
            ResourceType::Lxc => "lxc".into(),
            ResourceType::Qemu => "qemu".into(),
            ResourceType::Storage => "storage".into(),
            ResourceType::Other(s) => s,
        }
    }
}

/// One entry of `GET /cluster/resources`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct ClusterResource {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: ResourceType,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default, deserialize_with = "de::opt_num")]
    pub vmid: Option<u32>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "de::bool01")]
    pub template: bool,
    #[serde(default, deserialize_with = "de::tags")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub lock: Option<String>,
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default, deserialize_with = "de::opt_num")]
    pub uptime: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_num")]
    pub maxmem: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_num")]
    pub mem: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub maxcpu: Option<f64>,
}

/// One entry of `GET /nodes`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct NodeListEntry {
    pub node: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "de::opt_num")]
    pub uptime: Option<u64>,
    #[serde(default)]
    pub ssl_fingerprint: Option<String>,
}

/// `GET /nodes/{node}/status` (only the fields we show).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct NodeStatus {
    #[serde(default, deserialize_with = "de::opt_num")]
    pub uptime: Option<u64>,
    #[serde(default)]
    pub kversion: Option<String>,
    #[serde(default)]
    pub pveversion: Option<String>,
}

/// One entry of `GET /nodes/{node}/lxc` or `/qemu`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct GuestListEntry {
    #[serde(deserialize_with = "de::u32_required")]
    pub vmid: u32,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "de::bool01")]
    pub template: bool,
    #[serde(default, deserialize_with = "de::tags")]
    pub tags: Vec<String>,
}

/// `GET /nodes/{node}/lxc/{vmid}/status/current`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct GuestStatus {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "de::opt_num")]
    pub uptime: Option<u64>,
}

/// `GET /nodes/{node}/lxc/{vmid}/config`: the keys we read; `netN`, `mpN` and the rest
/// stay in `other` untouched.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct LxcConfig {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub ostype: Option<String>,
    #[serde(default)]
    pub arch: Option<String>,
    #[serde(default, deserialize_with = "de::tags")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "de::bool01")]
    pub template: bool,
    #[serde(default, deserialize_with = "de::bool01")]
    pub unprivileged: bool,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl LxcConfig {
    /// The numbered keys of one family (`net` → net0, net1, …), in number order.
    pub fn numbered(&self, prefix: &str) -> Vec<(u32, String)> {
        let mut out: Vec<(u32, String)> = self
            .other
            .iter()
            .filter_map(|(k, v)| {
                let n = k.strip_prefix(prefix)?.parse().ok()?;
                Some((n, v.as_str()?.to_string()))
            })
            .collect();
        out.sort();
        out
    }
}

/// One entry of `GET …/snapshot`; PVE lists the running state as `current`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Snapshot {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "de::opt_num")]
    pub snaptime: Option<i64>,
    #[serde(default)]
    pub parent: Option<String>,
}

impl Snapshot {
    /// The `current` pseudo-entry is the live state, not a snapshot.
    pub fn is_current(&self) -> bool {
        self.name == "current"
    }
}

/// One volume of `GET /nodes/{node}/storage/{storage}/content` (a backup archive for us).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct StorageVolume {
    /// `local:backup/vzdump-lxc-101-2026_12_06-10_30_00.tar.zst`.
    pub volid: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "de::opt_num")]
    pub ctime: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_num")]
    pub size: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_num")]
    pub vmid: Option<u32>,
    /// The backup's notes (vzdump's `notes-template`, expanded).
    #[serde(default)]
    pub notes: Option<String>,
}

/// `GET …/lxc/{vmid}/feature?feature=snapshot`: whether the guest's storage allows it now.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Feature {
    #[serde(rename = "hasFeature", default, deserialize_with = "de::bool01")]
    pub has_feature: bool,
    #[serde(default)]
    pub nodes: Vec<String>,
}

/// A task identifier: `UPID:node:pid:pstart:starttime:type:id:user:`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Upid(pub String);

impl Upid {
    /// The node that runs the task (its status must be asked there).
    pub fn node(&self) -> Option<&str> {
        let mut parts = self.0.split(':');
        (parts.next() == Some("UPID")).then_some(())?;
        parts.next().filter(|n| !n.is_empty())
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct TaskStatus {
    pub status: String,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub exitstatus: Option<String>,
    pub upid: String,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
}

impl TaskStatus {
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }

    /// Finished with `OK` (or only warnings).
    pub fn succeeded(&self) -> bool {
        !self.is_running()
            && self
                .exitstatus
                .as_deref()
                .is_some_and(|s| s == "OK" || s.starts_with("WARNINGS"))
    }
}

/// One line of a task log.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct TaskLogLine {
    #[serde(deserialize_with = "de::u32_required")]
    pub n: u32,
    #[serde(default)]
    pub t: String,
}

/// One pending package update of a PVE node (`GET /nodes/{node}/apt/update`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct AptUpdate {
    #[serde(rename = "Package")]
    pub package: String,
    #[serde(rename = "Title", default)]
    pub title: Option<String>,
    #[serde(rename = "OldVersion", default)]
    pub old_version: Option<String>,
    #[serde(rename = "Version", default)]
    pub version: Option<String>,
    #[serde(rename = "Origin", default)]
    pub origin: Option<String>,
    #[serde(rename = "Priority", default)]
    pub priority: Option<String>,
    #[serde(rename = "Section", default)]
    pub section: Option<String>,
    #[serde(rename = "Arch", default)]
    pub arch: Option<String>,
}

#[cfg(test)]
mod tests;
