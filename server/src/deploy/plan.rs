//! From a selector to deploy items: which guests, reached how. Templates and stopped guests
//! are skipped with the reason (never started unasked), and so are VMs that have no direct
//! SSH configured (`pct` reaches only containers).

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
    /// Through its node: `address` from `[deploy.nodes]` or PVE's `/cluster/status`.
    Node {
        cluster: String,
        address: Option<String>,
    },
    Direct(DirectSsh),
}

#[derive(Debug, Clone)]
pub struct Planned {
    pub item: OperationItem,
    pub reach: Reach,
}

impl Planned {
    /// `CLUSTER/NODE` (or the direct address): the unit of per-node concurrency.
    pub fn node_key(&self) -> String {
        match &self.reach {
            Reach::Node { cluster, .. } => format!("{cluster}/{}", self.item.node),
            Reach::Direct(d) => d.address.clone(),
        }
    }
}

/// `host:port`, port 22 when none is given.
fn with_port(address: &str) -> String {
    if address
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !address.ends_with(']')
    {
        address.to_string()
    } else {
        format!("{address}:22")
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
            (_, Some(mut d)) => {
                d.address = with_port(&d.address);
                Reach::Direct(d)
            }
            (Kind::Lxc, None) => {
                let key = format!("{cluster}/{node}");
                let address = settings.nodes.get(&key).map(|a| with_port(a)).or_else(|| {
                    node_ips
                        .get(&(cluster.to_string(), node.to_string()))
                        .map(|ip| with_port(ip))
                });
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
    use super::with_port;

    #[test]
    fn addresses_get_port_22_unless_they_have_one() {
        assert_eq!(with_port("10.0.0.5"), "10.0.0.5:22");
        assert_eq!(with_port("127.0.0.1:2201"), "127.0.0.1:2201");
        assert_eq!(with_port("pve1.lan"), "pve1.lan:22");
    }
}
