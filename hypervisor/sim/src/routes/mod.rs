//! The API paths the simulator serves. `route` maps method + path to an endpoint together
//! with what real PVE checks before running it: the privilege (`permissions => { check }`)
//! and the node the call is proxied to (`proxyto => 'node'`). `execute` runs the handler
//! against the locked state.

mod cluster;
mod guests;
mod storage;
mod tasks;

use std::collections::BTreeMap;

use crate::auth::Token;
use crate::config::GuestKind;
use crate::reply::{ApiError, Reply};
use crate::state::State;

/// The privilege check PVE makes before the handler runs.
#[derive(Debug, Clone)]
pub(crate) enum Perm {
    /// `user => 'all'` (handlers may filter what they return).
    All,
    /// `check => ['perm', path, [privs]]`: every privilege needed.
    Check(String, &'static [&'static str]),
    /// `check => ['perm', path, [privs], any => 1]`.
    Any(String, &'static [&'static str]),
}

impl Perm {
    pub fn verify(&self, token: &Token) -> Result<(), ApiError> {
        let res = match self {
            Perm::All => Ok(()),
            Perm::Check(path, privs) => token.check(path, privs),
            Perm::Any(path, privs) => token.check_any(path, privs),
        };
        res.map_err(|what| ApiError::perm(&what))
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Endpoint {
    Version,
    ClusterStatus,
    ClusterResources,
    Nodes,
    NodeStatus,
    AptUpdates,
    GuestList(GuestKind),
    GuestConfig(GuestKind, String),
    GuestStatus(GuestKind, String),
    GuestAction(GuestKind, String, &'static str),
    Feature(GuestKind, String),
    SnapshotList(GuestKind, String),
    SnapshotCreate(GuestKind, String),
    SnapshotRollback(GuestKind, String, String),
    SnapshotDelete(GuestKind, String, String),
    Vzdump,
    StorageContent(String),
    VolumeDelete(String, String),
    Restore(GuestKind),
    TaskStatus(String),
    TaskLog(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// `{node}` of the path: the node that really answers (proxied when not the listener).
    pub node: Option<String>,
    pub perm: Perm,
    pub endpoint: Endpoint,
}

const VM_AUDIT: &[&str] = &["VM.Audit"];
const VM_POWER: &[&str] = &["VM.PowerMgmt"];
const VM_SNAPSHOT: &[&str] = &["VM.Snapshot"];
const VM_ROLLBACK: &[&str] = &["VM.Snapshot", "VM.Snapshot.Rollback"];
const SYS_AUDIT: &[&str] = &["Sys.Audit"];
const SYS_MODIFY: &[&str] = &["Sys.Modify"];

/// Matches a path relative to `/api2/json` (no trailing slash).
pub(crate) fn route(method: &str, rel_path: &str) -> Option<Route> {
    let segs: Vec<&str> = rel_path.split('/').filter(|s| !s.is_empty()).collect();
    let vms = |vmid: &str| format!("/vms/{vmid}");
    let node_path = |node: &str| format!("/nodes/{node}");
    let (node, perm, endpoint) = match (method, segs.as_slice()) {
        ("GET", ["version"]) => (None, Perm::All, Endpoint::Version),
        ("GET", ["cluster", "status"]) => (
            None,
            Perm::Check("/".into(), SYS_AUDIT),
            Endpoint::ClusterStatus,
        ),
        ("GET", ["cluster", "resources"]) => (None, Perm::All, Endpoint::ClusterResources),
        ("GET", ["nodes"]) => (None, Perm::All, Endpoint::Nodes),
        ("GET", ["nodes", n, "status"]) => (
            Some(n),
            Perm::Check(node_path(n), SYS_AUDIT),
            Endpoint::NodeStatus,
        ),
        ("GET", ["nodes", n, "apt", "update"]) => (
            Some(n),
            Perm::Check(node_path(n), SYS_MODIFY),
            Endpoint::AptUpdates,
        ),
        ("POST", ["nodes", n, "vzdump"]) => (Some(n), Perm::All, Endpoint::Vzdump),
        ("GET", ["nodes", n, "storage", st, "content"]) => (
            Some(n),
            Perm::Any(
                format!("/storage/{st}"),
                &["Datastore.Audit", "Datastore.AllocateSpace"],
            ),
            Endpoint::StorageContent(st.to_string()),
        ),
        // The volume id holds a `/` (`local:backup/vzdump-…`) when the client left it unescaped.
        ("DELETE", ["nodes", n, "storage", st, "content", volume @ ..]) if !volume.is_empty() => (
            Some(n),
            Perm::Check(format!("/storage/{st}"), &["Datastore.AllocateSpace"]),
            Endpoint::VolumeDelete(
                st.to_string(),
                percent_encoding::percent_decode_str(&volume.join("/"))
                    .decode_utf8_lossy()
                    .into_owned(),
            ),
        ),
        ("POST", ["nodes", n, "lxc"]) => (Some(n), Perm::All, Endpoint::Restore(GuestKind::Lxc)),
        ("POST", ["nodes", n, "qemu"]) => (Some(n), Perm::All, Endpoint::Restore(GuestKind::Qemu)),
        ("GET", ["nodes", n, "tasks", upid, "status"]) => {
            (Some(n), Perm::All, Endpoint::TaskStatus(upid.to_string()))
        }
        ("GET", ["nodes", n, "tasks", upid, "log"]) => {
            (Some(n), Perm::All, Endpoint::TaskLog(upid.to_string()))
        }
        (_, ["nodes", n, kind @ ("lxc" | "qemu"), rest @ ..]) => {
            let kind = if *kind == "lxc" {
                GuestKind::Lxc
            } else {
                GuestKind::Qemu
            };
            let (perm, endpoint) = guest_route(method, kind, rest, vms)?;
            (Some(n), perm, endpoint)
        }
        _ => return None,
    };
    Some(Route {
        node: node.map(|n| n.to_string()),
        perm,
        endpoint,
    })
}

fn guest_route(
    method: &str,
    kind: GuestKind,
    rest: &[&str],
    vms: impl Fn(&str) -> String,
) -> Option<(Perm, Endpoint)> {
    Some(match (method, rest) {
        ("GET", []) => (Perm::All, Endpoint::GuestList(kind)),
        ("GET", [id, "config"]) => (
            Perm::Check(vms(id), VM_AUDIT),
            Endpoint::GuestConfig(kind, id.to_string()),
        ),
        ("GET", [id, "status", "current"]) => (
            Perm::Check(vms(id), VM_AUDIT),
            Endpoint::GuestStatus(kind, id.to_string()),
        ),
        ("POST", [id, "status", action @ ("start" | "shutdown" | "reboot" | "stop")]) => {
            let action: &'static str = match *action {
                "start" => "start",
                "shutdown" => "shutdown",
                "reboot" => "reboot",
                _ => "stop",
            };
            (
                Perm::Check(vms(id), VM_POWER),
                Endpoint::GuestAction(kind, id.to_string(), action),
            )
        }
        ("GET", [id, "feature"]) => (
            Perm::Check(vms(id), VM_AUDIT),
            Endpoint::Feature(kind, id.to_string()),
        ),
        ("GET", [id, "snapshot"]) => (
            Perm::Check(vms(id), VM_AUDIT),
            Endpoint::SnapshotList(kind, id.to_string()),
        ),
        ("POST", [id, "snapshot"]) => (
            Perm::Check(vms(id), VM_SNAPSHOT),
            Endpoint::SnapshotCreate(kind, id.to_string()),
        ),
        ("POST", [id, "snapshot", snap, "rollback"]) => (
            Perm::Any(vms(id), VM_ROLLBACK),
            Endpoint::SnapshotRollback(kind, id.to_string(), snap.to_string()),
        ),
        ("DELETE", [id, "snapshot", snap]) => (
            Perm::Check(vms(id), VM_SNAPSHOT),
            Endpoint::SnapshotDelete(kind, id.to_string(), snap.to_string()),
        ),
        _ => return None,
    })
}

/// Request parameters: query string and body (form-encoded or JSON) merged.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params(pub BTreeMap<String, String>);

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// PVE booleans: 1/0, true/false, yes/no, on/off.
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(false),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(other) => Err(ApiError::param(&[(
                key,
                format!("type check ('boolean') failed - got '{other}'"),
            )])),
        }
    }

    pub fn required(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key).ok_or_else(|| {
            ApiError::param(&[(key, "property is missing and it is not optional".into())])
        })
    }
}

/// What a handler knows about the caller.
pub(crate) struct Ctx<'a> {
    pub token: &'a Token,
    /// The node whose listener received the request.
    pub listener: &'a str,
    /// `{node}` of the path.
    pub node: Option<&'a str>,
    pub params: &'a Params,
}

pub(crate) fn execute(
    state: &mut State,
    endpoint: &Endpoint,
    ctx: &Ctx<'_>,
) -> Result<Reply, ApiError> {
    let node = ctx.node.unwrap_or_default();
    match endpoint {
        Endpoint::Version => Ok(cluster::version(state)),
        Endpoint::ClusterStatus => Ok(cluster::status(state, ctx.listener)),
        Endpoint::ClusterResources => cluster::resources(state, ctx),
        Endpoint::Nodes => Ok(cluster::nodes(state, ctx)),
        Endpoint::NodeStatus => Ok(cluster::node_status(state, node)),
        Endpoint::AptUpdates => Ok(cluster::apt_updates(state, node)),
        Endpoint::GuestList(kind) => Ok(guests::list(state, ctx, node, *kind)),
        Endpoint::GuestConfig(kind, id) => guests::config(state, node, *kind, id),
        Endpoint::GuestStatus(kind, id) => guests::status(state, node, *kind, id),
        Endpoint::GuestAction(kind, id, action) => {
            guests::action(state, ctx, node, *kind, id, action)
        }
        Endpoint::Feature(kind, id) => guests::feature(state, ctx, node, *kind, id),
        Endpoint::SnapshotList(kind, id) => guests::snapshots(state, node, *kind, id),
        Endpoint::SnapshotCreate(kind, id) => guests::snapshot_create(state, ctx, node, *kind, id),
        Endpoint::SnapshotRollback(kind, id, snap) => {
            guests::snapshot_rollback(state, ctx, node, *kind, id, snap)
        }
        Endpoint::SnapshotDelete(kind, id, snap) => {
            guests::snapshot_delete(state, ctx, node, *kind, id, snap)
        }
        Endpoint::Vzdump => tasks::vzdump(state, ctx, node),
        Endpoint::StorageContent(st) => storage::list(state, ctx, node, st),
        Endpoint::VolumeDelete(st, volume) => storage::delete(state, ctx, node, st, volume),
        Endpoint::Restore(kind) => storage::restore(state, ctx, node, *kind),
        Endpoint::TaskStatus(upid) => tasks::status(state, ctx, node, upid),
        Endpoint::TaskLog(upid) => tasks::log(state, ctx, node, upid),
    }
}

/// `pve-vmid`: an integer 100..=999999999, else PVE's parameter error.
pub(crate) fn parse_vmid(id: &str) -> Result<u32, ApiError> {
    match id.parse::<u32>() {
        Ok(v) if (100..=999_999_999).contains(&v) => Ok(v),
        Ok(v) if v < 100 => Err(ApiError::param(&[(
            "vmid",
            "value must have a minimum value of 100".to_string(),
        )])),
        _ => Err(ApiError::param(&[(
            "vmid",
            format!("type check ('integer') failed - got '{id}'"),
        )])),
    }
}
