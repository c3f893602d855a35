//! Random inventories for the property tests: small name pools so that independently drawn
//! trees overlap (same clusters, nodes, vmids), which is what makes diffs interesting.

#![allow(dead_code)] // each test binary uses its own part

use canopy_inventory::{Counts, Inventory, PathId, Vertex};
use proptest::collection::vec;
use proptest::prelude::*;

pub const CLUSTERS: [&str; 3] = ["home", "lab", "c3"];
pub const NODES: [&str; 4] = ["pve1", "pve2", "pve10", "n-3"];
pub const GUEST_NAMES: [&str; 4] = ["web1", "db", "h0", "cache"];
pub const STATUSES: [Option<&str>; 4] = [None, Some("running"), Some("stopped"), Some("unknown")];
pub const TAGS: [&str; 3] = ["prod", "dev", "a"];
pub const OSES: [&str; 2] = ["debian", "alpine"];
pub const AGENTS: [&str; 3] = ["online", "offline", "missing"];
pub const CONTAINERS: [&str; 3] = ["nginx", "app", "db"];
pub const IMAGES: [&str; 5] = [
    "nginx:1.25",
    "library/nginx",
    "ghcr.io/x/nginx:latest",
    "postgres:16",
    "localhost:5000/redis",
];

#[derive(Debug, Clone)]
pub struct GuestSpec {
    node: usize,
    lxc: bool,
    vmid: u32,
    name: usize,
    status: usize,
    template: bool,
    tags: u8,
    os: Option<usize>,
    agent: Option<usize>,
    docker: Vec<(usize, usize, bool)>,
    pending: u32,
}

#[derive(Debug, Clone)]
pub struct ClusterSpec {
    name: usize,
    nodes: Vec<(usize, bool, bool)>,
    guests: Vec<GuestSpec>,
}

prop_compose! {
    fn arb_guest()(
        node in 0..4usize,
        lxc in any::<bool>(),
        vmid in 100u32..109,
        name in 0..4usize,
        status in 0..4usize,
        template in prop::bool::weighted(0.15),
        tags in 0u8..8,
        os in prop::option::of(0..2usize),
        agent in prop::option::of(0..3usize),
        docker in vec((0..3usize, 0..5usize, any::<bool>()), 0..3),
        pending in 0u32..3,
    ) -> GuestSpec {
        GuestSpec { node, lxc, vmid, name, status, template, tags, os, agent, docker, pending }
    }
}

prop_compose! {
    fn arb_cluster()(
        name in 0..3usize,
        nodes in vec((0..4usize, any::<bool>(), prop::bool::weighted(0.2)), 0..4),
        guests in vec(arb_guest(), 0..12),
    ) -> ClusterSpec {
        ClusterSpec { name, nodes, guests }
    }
}

/// Any inventory; a vmid may repeat within a cluster (which PVE never does) to exercise
/// the odd cases.
pub fn arb_inventory() -> impl Strategy<Value = Inventory> {
    vec(arb_cluster(), 0..4).prop_map(|cs| build(&cs, false))
}

/// Inventories as PVE makes them: vmids unique per cluster.
pub fn arb_realistic_inventory() -> impl Strategy<Value = Inventory> {
    vec(arb_cluster(), 1..3).prop_map(|cs| build(&cs, true))
}

fn build(clusters: &[ClusterSpec], unique_vmids: bool) -> Inventory {
    let mut inv = Inventory::new();
    for c in clusters {
        let cluster = PathId::cluster(CLUSTERS[c.name]).unwrap();
        inv.upsert(Vertex::new(cluster.clone())).unwrap();
        let mut nodes: Vec<PathId> = Vec::new();
        for &(n, online, error) in &c.nodes {
            let id = cluster.node(NODES[n]).unwrap();
            let mut v =
                Vertex::new(id.clone()).with_status(if online { "online" } else { "offline" });
            if error {
                v.error = Some("unreachable".into());
            }
            inv.upsert(v).unwrap();
            if !nodes.contains(&id) {
                nodes.push(id);
            }
        }
        if nodes.is_empty() {
            continue;
        }
        for g in &c.guests {
            let node = &nodes[g.node % nodes.len()];
            let id = if g.lxc {
                node.lxc(g.vmid)
            } else {
                node.vm(g.vmid)
            }
            .unwrap();
            if unique_vmids
                && inv
                    .descendants(&cluster)
                    .any(|v| v.kind.is_guest() && v.vmid == Some(g.vmid))
            {
                continue;
            }
            let mut v = Vertex::new(id.clone())
                .with_name(GUEST_NAMES[g.name])
                .with_template(g.template)
                .with_tags(
                    TAGS.iter()
                        .enumerate()
                        .filter(|(i, _)| g.tags & (1 << i) != 0)
                        .map(|(_, t)| *t),
                )
                .with_counts(Counts {
                    pending: g.pending,
                    ..Counts::default()
                });
            v.status = STATUSES[g.status].map(String::from);
            v.os = g.os.map(|o| OSES[o].to_owned());
            v.agent = g.agent.map(|a| AGENTS[a].to_owned());
            inv.upsert(v).unwrap();
            for &(name, image, running) in &g.docker {
                let d = Vertex::new(id.docker(CONTAINERS[name]).unwrap())
                    .with_image(IMAGES[image])
                    .with_status(if running { "running" } else { "exited" });
                inv.upsert(d).unwrap();
            }
        }
    }
    inv
}
