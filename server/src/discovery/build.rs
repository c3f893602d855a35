//! One discovery pass turned into data: `/cluster/status` + `/cluster/resources` (one call
//! each, whatever the number of guests) → the cluster's subtree of the inventory and the rows
//! the store keeps.
//!
//! The cluster is named by `--name`/the stored name, else by PVE's cluster name, else (a
//! standalone node) by the node's name. Node status comes from `/cluster/resources`
//! (`online`/`offline`), falling back to corosync's `online` flag in `/cluster/status`.
//! Guests on a node that is not online keep PVE's `unknown` status.

use anyhow::{bail, Context, Result};
use canopy_hypervisor::types::{ClusterResource, ClusterStatusEntry, ResourceType};
use canopy_hypervisor::Hypervisor;
use canopy_inventory::{Inventory, Kind, PathId, Vertex};
use canopy_store::{GuestRow, NodeRow};
use std::collections::BTreeMap;

/// What one pass saw of one cluster.
#[derive(Debug, Clone)]
pub struct Observed {
    pub name: String,
    pub standalone: bool,
    pub nodes: Vec<NodeRow>,
    pub guests: Vec<GuestRow>,
    /// Guests PVE listed without a name (on an offline node): their names are fallbacks.
    pub unnamed: std::collections::HashSet<u32>,
}

/// The PVE cluster name, or `None` on a standalone node.
pub fn pve_cluster_name(status: &[ClusterStatusEntry]) -> Option<&str> {
    status
        .iter()
        .find(|e| e.kind == "cluster")
        .map(|e| e.name.as_str())
}

/// Ask PVE (two calls) and build the observation.
pub async fn observe(pve: &dyn Hypervisor, name: Option<&str>) -> Result<Observed> {
    let status = pve.cluster_status().await?;
    let resources = pve.resources().await?;
    from_api(name, &status, &resources)
}

pub fn from_api(
    name: Option<&str>,
    status: &[ClusterStatusEntry],
    resources: &[ClusterResource],
) -> Result<Observed> {
    let pve_name = pve_cluster_name(status);
    let standalone = pve_name.is_none();
    let status_nodes: Vec<&ClusterStatusEntry> =
        status.iter().filter(|e| e.kind == "node").collect();
    let name = match (name, pve_name) {
        (Some(n), _) => n.to_string(),
        (None, Some(n)) => n.to_string(),
        (None, None) => match status_nodes.as_slice() {
            [only] => only.name.clone(),
            _ => bail!(
                "PVE reported no cluster name and {} nodes; give the cluster a name with --name",
                status_nodes.len()
            ),
        },
    };
    PathId::cluster(&name).with_context(|| format!("{name:?} cannot name a cluster"))?;

    let mut nodes: BTreeMap<String, NodeRow> = BTreeMap::new();
    for e in &status_nodes {
        nodes.insert(
            e.name.clone(),
            NodeRow {
                name: e.name.clone(),
                status: if e.online || standalone {
                    "online"
                } else {
                    "offline"
                }
                .into(),
                ip: e.ip.clone(),
                error: None,
            },
        );
    }
    let mut guests = Vec::new();
    let mut unnamed = std::collections::HashSet::new();
    for r in resources {
        match &r.kind {
            ResourceType::Node => {
                let Some(node) = r
                    .node
                    .clone()
                    .or_else(|| r.id.strip_prefix("node/").map(String::from))
                else {
                    continue;
                };
                let entry = nodes.entry(node.clone()).or_insert_with(|| NodeRow {
                    name: node,
                    status: "unknown".into(),
                    ip: None,
                    error: None,
                });
                if let Some(s) = r.status.as_deref().filter(|s| !s.is_empty()) {
                    entry.status = s.to_string();
                }
            }
            ResourceType::Lxc | ResourceType::Qemu => {
                let (Some(vmid), Some(node)) = (r.vmid, r.node.clone()) else {
                    tracing::warn!(id = %r.id, "guest without vmid or node in /cluster/resources; skipped");
                    continue;
                };
                let kind = if r.kind == ResourceType::Lxc {
                    "lxc"
                } else {
                    "vm"
                };
                let fallback = if kind == "lxc" { "CT" } else { "VM" };
                if r.name.as_deref().is_none_or(str::is_empty) {
                    unnamed.insert(vmid);
                }
                guests.push(GuestRow {
                    kind: kind.into(),
                    vmid,
                    node,
                    name: r
                        .name
                        .clone()
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(|| format!("{fallback}{vmid}")),
                    status: r.status.clone().unwrap_or_else(|| "unknown".into()),
                    template: r.template,
                    tags: r.tags.clone(),
                });
            }
            ResourceType::Storage | ResourceType::Other(_) => {}
        }
    }
    // A guest can name a node PVE did not list (a node being removed): keep it visible.
    for g in &guests {
        nodes.entry(g.node.clone()).or_insert_with(|| NodeRow {
            name: g.node.clone(),
            status: "unknown".into(),
            ip: None,
            error: None,
        });
    }
    guests.sort_by_key(|g| g.vmid);
    Ok(Observed {
        name,
        standalone,
        nodes: nodes.into_values().collect(),
        guests,
        unnamed,
    })
}

/// The cluster's subtree. Rows that cannot be placed (an invalid node name) are reported
/// in the returned warnings instead of failing the whole pass.
pub fn to_inventory(obs: &Observed) -> Result<(Inventory, Vec<String>)> {
    let cluster = PathId::cluster(&obs.name)?;
    let mut inv = Inventory::new();
    let mut warnings = Vec::new();
    inv.upsert(Vertex::new(cluster.clone()))?;
    for n in &obs.nodes {
        let vertex = cluster.node(&n.name).map(|id| {
            let mut v = Vertex::new(id).with_status(n.status.clone());
            v.error = n.error.clone();
            v
        });
        match vertex {
            Ok(v) => {
                inv.upsert(v)?;
            }
            Err(e) => warnings.push(format!("node {:?} skipped: {e}", n.name)),
        }
    }
    for g in &obs.guests {
        let kind = if g.kind == "lxc" { Kind::Lxc } else { Kind::Vm };
        let id = match cluster.node(&g.node).and_then(|n| n.guest(kind, g.vmid)) {
            Ok(id) => id,
            Err(e) => {
                warnings.push(format!("guest {} skipped: {e}", g.vmid));
                continue;
            }
        };
        let v = Vertex::new(id)
            .with_name(g.name.clone())
            .with_status(g.status.clone())
            .with_template(g.template)
            .with_tags(g.tags.clone());
        if let Err(e) = inv.upsert(v) {
            warnings.push(format!("guest {} skipped: {e}", g.vmid));
        }
    }
    Ok((inv, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn clustered_estate_with_offline_node() {
        let status: Vec<ClusterStatusEntry> = parse(json!([
            {"type":"cluster","name":"home","nodes":2,"quorate":1},
            {"type":"node","name":"pve1","online":1,"ip":"10.0.0.1"},
            {"type":"node","name":"pve2","online":0,"ip":"10.0.0.2"}
        ]));
        let res: Vec<ClusterResource> = parse(json!([
            {"id":"node/pve1","type":"node","node":"pve1","status":"online"},
            {"id":"node/pve2","type":"node","node":"pve2","status":"offline"},
            {"id":"lxc/101","type":"lxc","node":"pve1","vmid":101,"name":"web","status":"running","tags":"prod;web","template":0},
            {"id":"qemu/200","type":"qemu","node":"pve2","vmid":"200","status":"unknown"},
            {"id":"storage/pve1/local","type":"storage","node":"pve1"}
        ]));
        let obs = from_api(None, &status, &res).unwrap();
        assert_eq!(obs.name, "home");
        assert!(!obs.standalone);
        assert_eq!(obs.nodes[1].status, "offline");
        assert_eq!(obs.guests[1].name, "VM200");
        let (inv, warnings) = to_inventory(&obs).unwrap();
        assert!(warnings.is_empty());
        let json =
            serde_json::to_value(inv.tree(&PathId::cluster("home").unwrap()).unwrap()).unwrap();
        assert_eq!(
            json["children"][0]["children"][0]["tags"],
            json!(["prod", "web"])
        );
        assert_eq!(json["children"][1]["children"][0]["kind"], "vm");
    }

    #[test]
    fn standalone_node_names_the_cluster() {
        let status: Vec<ClusterStatusEntry> =
            parse(json!([{"type":"node","name":"edge","online":0,"local":1}]));
        let obs = from_api(None, &status, &[]).unwrap();
        assert_eq!(obs.name, "edge");
        assert!(obs.standalone);
        assert_eq!(obs.nodes[0].status, "online");
        assert_eq!(from_api(Some("lab"), &status, &[]).unwrap().name, "lab");
    }
}
