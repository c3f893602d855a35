//! From a selector to deploy items: which guests, reached how. Templates and stopped guests
//! are skipped with the reason (never started unasked), and so are VMs that have no direct
//! SSH configured (`pct` reaches only containers).

use super::address::SshAddress;
use crate::discovery::Discovery;
use crate::error::{Error, Result};
use crate::settings::{DeploySettings, DirectSsh};
use canopy_api_types::clusters::SkippedTarget;
use canopy_api_types::deploy::{
    DeployAction, DeployPreview, DeployRequest, DeployTarget, OperationItem, Route,
};
use canopy_inventory::{Kind, Selector};
use canopy_store::Store;
use std::collections::{BTreeSet, HashMap};

/// How an item's guest is reached.
#[derive(Debug, Clone)]
pub enum Reach {
    /// Through its node: `address` from `[deploy.nodes]` or PVE's `/cluster/status`, or why
    /// there is none.
    Node {
        cluster: String,
        address: std::result::Result<SshAddress, String>,
    },
    Direct(DirectSsh),
}

#[derive(Debug, Clone)]
pub struct Planned {
    pub item: OperationItem,
    pub reach: Reach,
    /// `CLUSTER/VMID`: one operation at a time works on it ([`super::guest_lock`]).
    pub guest_key: String,
}

impl Planned {
    /// `CLUSTER/NODE` (or the direct address): the unit of per-node concurrency.
    pub fn node_key(&self) -> String {
        match &self.reach {
            Reach::Node { cluster, .. } => format!("{cluster}/{}", self.item.node),
            Reach::Direct(d) => d.address.to_string(),
        }
    }
}

/// The configured address of node `key` (`CLUSTER/NODE`), else the one PVE reported (port
/// 22), else why there is none.
fn node_address(
    settings: &DeploySettings,
    reported: &HashMap<(String, String), String>,
    key: &str,
    cluster: &str,
    node: &str,
) -> std::result::Result<SshAddress, String> {
    if let Some(a) = settings.nodes.get(key) {
        return Ok(a.clone());
    }
    let set = format!(
        "set [deploy.nodes] \"{key}\" = \"HOST:PORT\" (an IPv6 address as \"[ADDRESS]:PORT\")"
    );
    match reported.get(&(cluster.to_string(), node.to_string())) {
        Some(ip) => SshAddress::parse(ip)
            .map_err(|e| format!("PVE reported an unusable address for node {node} ({e}); {set}")),
        None => Err(format!(
            "no SSH address for node {node}: PVE reported none; {set}"
        )),
    }
}

pub async fn plan(
    discovery: &Discovery,
    store: &dyn Store,
    settings: &DeploySettings,
    req: &DeployRequest,
) -> Result<(DeployPreview, Vec<Planned>)> {
    let sel =
        Selector::parse(&req.selector).map_err(|e| Error::Validation(format!("selector: {e}")))?;
    let inv = discovery.tree();
    let targets = inv.targets(&sel);
    let mut skipped = crate::http::clusters::skipped(&targets);
    // Node addresses PVE reported, by (cluster name, node).
    let snap = store.inventory().await?;
    let cluster_names: HashMap<_, _> = snap
        .clusters
        .iter()
        .map(|c| (c.id, c.name.clone()))
        .collect();
    let node_ips: HashMap<(String, String), String> = snap
        .nodes
        .iter()
        .filter_map(|n| {
            let ip = n.row.ip.clone()?;
            Some((
                (
                    cluster_names.get(&n.cluster_id)?.clone(),
                    n.row.name.clone(),
                ),
                ip,
            ))
        })
        .collect();

    let mut planned = Vec::new();
    let mut names = HashMap::new();
    // PVE nodes (a guest reached directly still lives on its node).
    let mut nodes = BTreeSet::new();
    for path in &targets.hosts {
        let (cluster, kind) = (path.cluster_name(), path.kind());
        let (Some(node), Some(vmid)) = (path.node_name(), path.vmid()) else {
            continue;
        };
        let name = inv.get(path).map(|v| v.name.clone()).unwrap_or_default();
        let direct = settings.direct.get(&format!("{cluster}/{vmid}")).cloned();
        let reach = match (kind, direct) {
            (_, Some(d)) => Reach::Direct(d),
            (Kind::Lxc, None) => {
                let key = format!("{cluster}/{node}");
                let address = node_address(settings, &node_ips, &key, cluster, node);
                Reach::Node {
                    cluster: cluster.to_string(),
                    address,
                }
            }
            _ => {
                skipped.push(SkippedTarget {
                    id: path.to_string(),
                    reason: format!(
                        "a VM has no pct: configure [deploy.direct.\"{cluster}/{vmid}\"] to reach it by SSH"
                    ),
                });
                continue;
            }
        };
        names.insert(path.to_string(), name);
        nodes.extend(path.node_id());
        let route = match reach {
            Reach::Direct(_) => Route::Ssh,
            Reach::Node { .. } => Route::Pct,
        };
        planned.push(Planned {
            item: OperationItem::queued(
                path.to_string(),
                discovery.guest_id(path),
                node,
                vmid,
                route,
            ),
            reach,
            guest_key: format!("{cluster}/{vmid}"),
        });
    }
    let verb = match req.action {
        DeployAction::Deploy => "deploys to",
        DeployAction::Uninstall => "uninstalls from",
    };
    let n = planned.len();
    let mut summary = format!(
        "{verb} {n} guest{} on {} node{}",
        if n == 1 { "" } else { "s" },
        nodes.len(),
        if nodes.len() == 1 { "" } else { "s" }
    );
    if !skipped.is_empty() {
        summary.push_str(&format!(" ({} skipped)", skipped.len()));
    }
    let preview = DeployPreview {
        selector: req.selector.clone(),
        action: req.action,
        targets: planned
            .iter()
            .map(|p| DeployTarget {
                target: p.item.target.clone(),
                node: p.item.node.clone(),
                vmid: p.item.vmid,
                name: names.get(&p.item.target).cloned().unwrap_or_default(),
                route: p.item.route,
            })
            .collect(),
        skipped,
        summary,
    };
    Ok((preview, planned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_node_addresses_win_and_reported_ones_get_port_22() {
        let settings: DeploySettings = toml::from_str(
            "[nodes]\n\"home/pve1\" = \"[2001:db8::10]:2222\"\n\"home/pve2\" = \"2001:db8::11\"\n",
        )
        .unwrap();
        let reported = HashMap::from([
            (("home".into(), "pve1".into()), "10.0.0.1".to_string()),
            (("home".into(), "pve3".into()), "2001:db8::13".to_string()),
            (("home".into(), "pve4".into()), "10.0.0.4".to_string()),
            (("home".into(), "pve5".into()), "not an address".to_string()),
        ]);
        let addr = |node: &str| {
            node_address(&settings, &reported, &format!("home/{node}"), "home", node)
                .map(|a| a.to_string())
        };
        assert_eq!(addr("pve1").unwrap(), "[2001:db8::10]:2222");
        assert_eq!(addr("pve2").unwrap(), "[2001:db8::11]:22");
        assert_eq!(addr("pve3").unwrap(), "[2001:db8::13]:22");
        assert_eq!(addr("pve4").unwrap(), "10.0.0.4:22");
        let unusable = addr("pve5").unwrap_err();
        assert!(
            unusable.contains("unusable address for node pve5"),
            "{unusable}"
        );
        let none = addr("pve6").unwrap_err();
        assert!(none.contains("PVE reported none"), "{none}");
        assert!(none.contains("[deploy.nodes] \"home/pve6\""), "{none}");
    }

    #[test]
    fn a_direct_guest_is_its_own_node_key_in_canonical_form() {
        let settings: DeploySettings =
            toml::from_str("[direct.\"home/120\"]\naddress = \"2001:db8::120\"\n").unwrap();
        let d = settings.direct["home/120"].clone();
        let p = Planned {
            item: OperationItem::queued(
                "cluster/home/node/pve1/qemu/120",
                None,
                "pve1",
                120,
                Route::Ssh,
            ),
            reach: Reach::Direct(d),
            guest_key: "home/120".into(),
        };
        assert_eq!(p.node_key(), "[2001:db8::120]:22");
    }
}
