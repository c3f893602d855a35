//! Expands a `[generate]` section into nodes and guests, so benchmarks can describe a
//! 50-node / 5,000-guest estate in three lines. Output is deterministic: the same file
//! always yields the same names, statuses and tags.

use anyhow::bail;

use crate::config::{AptUpdate, ClusterSpec, GenerateSpec, GuestKind, GuestSpec, NodeSpec};

const TAG_SETS: &[&[&str]] = &[
    &["prod", "web"],
    &["prod", "db"],
    &["dev"],
    &[],
    &["staging", "web"],
    &["prod"],
    &[],
    &["monitoring"],
];

const OSTYPES: &[&str] = &["debian", "debian", "ubuntu", "alpine", "debian", "centos"];

pub(crate) fn expand(cluster: &mut ClusterSpec, g: &GenerateSpec) -> anyhow::Result<()> {
    if g.nodes == 0 {
        bail!(
            "cluster {}: generate.nodes must be at least 1",
            cluster.name
        );
    }
    let width = g.nodes.to_string().len().max(2);
    let mut vmid = g.first_vmid.max(100);
    for n in 1..=g.nodes {
        let name = format!("{}{:0width$}", g.prefix, n);
        let mut node = NodeSpec::new(&name);
        node.ip = Some(format!(
            "10.{}.{}.{}",
            10 + n / 65536,
            (n / 256) % 256,
            n % 256
        ));
        node.online = n + g.offline_nodes <= g.nodes;
        node.cpus = 32;
        node.memory_gb = 256;
        node.updates = generated_updates(n);
        cluster.nodes.push(node);

        for i in 0..g.lxc_per_node + g.vm_per_node {
            let kind = if i < g.lxc_per_node {
                GuestKind::Lxc
            } else {
                GuestKind::Qemu
            };
            let prefix = if kind == GuestKind::Lxc { "ct" } else { "vm" };
            let mut guest = GuestSpec::new(vmid, kind, &name, format!("{prefix}-{vmid}"));
            let seed = vmid as usize;
            guest.tags = TAG_SETS[seed % TAG_SETS.len()]
                .iter()
                .map(|t| t.to_string())
                .collect();
            guest.template = seed.is_multiple_of(97);
            guest.status = if guest.template || seed % 7 == 3 {
                "stopped"
            } else {
                "running"
            }
            .into();
            if kind == GuestKind::Lxc {
                guest.ostype = Some(OSTYPES[seed % OSTYPES.len()].into());
            }
            cluster.guests.push(guest);
            vmid += 1;
        }
    }
    Ok(())
}

fn generated_updates(n: u32) -> Vec<AptUpdate> {
    let mut list = vec![update("pve-manager", "8.4.0", "8.4.1", "Proxmox")];
    if n.is_multiple_of(2) {
        list.push(update("libpve-common-perl", "8.3.0", "8.3.1", "Proxmox"));
    }
    if n.is_multiple_of(3) {
        list.push(update(
            "openssl",
            "3.0.15-1~deb12u1",
            "3.0.16-1~deb12u1",
            "Debian",
        ));
    }
    list
}

pub(crate) fn update(package: &str, old: &str, new: &str, origin: &str) -> AptUpdate {
    AptUpdate {
        package: package.into(),
        old_version: Some(old.into()),
        version: new.into(),
        origin: origin.into(),
        title: None,
        description: None,
        priority: "optional".into(),
        section: "admin".into(),
        arch: "amd64".into(),
    }
}
