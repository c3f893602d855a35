//! Merging one cluster's fresh discovery into the whole inventory. Discovery (PVE's
//! `/cluster/resources`) is authoritative for the cluster, its nodes and guests and their
//! names, status, tags, template flag and errors; it knows nothing about agents, containers
//! or update counts, so those are carried over from what the inventory already had (following
//! migrated guests). Other clusters are never touched.

use crate::graph::{Inventory, InventoryError};
use crate::path::{GuestKey, PathId};
use crate::reconcile::{reconcile, Change};
use std::collections::HashMap;

impl Inventory {
    /// Merges `fresh` (exactly one cluster) into `self` and returns the changes applied.
    ///
    /// Carried over from the existing vertex (same path, or for a guest the same
    /// [`GuestKey`] under another node) when `fresh` leaves them empty: `os`, `image`,
    /// `host_id`, `machine_id`, `agent`, non-zero `counts`, and a guest's docker containers.
    pub fn merge_cluster(&mut self, fresh: &Inventory) -> Result<Vec<Change>, InventoryError> {
        let clusters: Vec<&PathId> = fresh.clusters().map(|c| &c.id).collect();
        let [cluster] = clusters[..] else {
            return Err(InventoryError::NotOneCluster(clusters.len()));
        };
        let old = self.subtree(cluster);
        let merged = carry_over(&old, fresh)?;
        let changes = reconcile(&old, &merged);
        self.apply(&changes)?;
        Ok(changes)
    }
}

fn carry_over(old: &Inventory, fresh: &Inventory) -> Result<Inventory, InventoryError> {
    let mut by_key: HashMap<GuestKey, &PathId> = HashMap::new();
    for v in old.iter() {
        if let Some(key) = v.id.guest_key() {
            by_key.entry(key).or_insert(&v.id);
        }
    }
    let mut out = fresh.clone();
    for v in fresh.iter() {
        let src = if old.contains(&v.id) {
            Some(&v.id)
        } else {
            v.id.guest_key().and_then(|k| by_key.get(&k).copied())
        };
        let Some(prev) = src.and_then(|s| old.get(s)) else {
            continue;
        };
        out.update(&v.id, |n| {
            fill(&mut n.os, &prev.os);
            fill(&mut n.image, &prev.image);
            fill(&mut n.host_id, &prev.host_id);
            fill(&mut n.machine_id, &prev.machine_id);
            fill(&mut n.agent, &prev.agent);
            fill(&mut n.agent_user, &prev.agent_user);
            if n.counts.is_zero() {
                n.counts = prev.counts;
            }
        })?;
        if v.kind.is_guest() && fresh.children(&v.id).next().is_none() {
            for d in old.descendants(&prev.id) {
                let mut d = d.clone();
                d.id = d.id.rebase(&prev.id, &v.id).expect("below the old guest");
                out.upsert(d)?;
            }
        }
    }
    Ok(out)
}

fn fill(slot: &mut Option<String>, prev: &Option<String>) {
    if slot.is_none() {
        slot.clone_from(prev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Counts, Vertex};

    fn v(s: &str) -> Vertex {
        Vertex::new(PathId::parse(s).unwrap())
    }

    #[test]
    fn merges_one_cluster_and_keeps_agent_facts() {
        let mut all = Inventory::from_vertices([
            v("cluster/home"),
            v("cluster/home/node/a"),
            v("cluster/home/node/b"),
            v("cluster/home/node/a/lxc/101")
                .with_status("running")
                .with_agent("online")
                .with_counts(Counts {
                    pending: 3,
                    ..Counts::default()
                }),
            v("cluster/home/node/a/lxc/101/docker/web").with_image("nginx"),
            v("cluster/home/node/a/lxc/102"),
            v("cluster/lab"),
            v("cluster/lab/node/x"),
        ])
        .unwrap();
        let lab_before = all.subtree(&PathId::parse("cluster/lab").unwrap());

        // Discovery: 101 migrated to b and stopped, 102 gone, 103 new.
        let fresh = Inventory::from_vertices([
            v("cluster/home"),
            v("cluster/home/node/a"),
            v("cluster/home/node/b"),
            v("cluster/home/node/b/lxc/101").with_status("stopped"),
            v("cluster/home/node/a/lxc/103"),
        ])
        .unwrap();
        let changes = all.merge_cluster(&fresh).unwrap();
        let types: Vec<String> = changes.iter().map(Change::event_type).collect();
        assert_eq!(
            types,
            [
                "guest_moved",
                "guest_added",
                "guest_status_changed",
                "guest_removed"
            ]
        );
        let moved = all
            .get(&PathId::parse("cluster/home/node/b/lxc/101").unwrap())
            .unwrap();
        assert_eq!(moved.agent.as_deref(), Some("online"));
        assert_eq!(moved.counts.pending, 3);
        assert!(all.contains(&PathId::parse("cluster/home/node/b/lxc/101/docker/web").unwrap()));
        assert_eq!(
            all.subtree(&PathId::parse("cluster/lab").unwrap()),
            lab_before
        );

        assert!(all.merge_cluster(&fresh).unwrap().is_empty(), "idempotent");
        assert!(matches!(
            all.merge_cluster(&Inventory::new()),
            Err(InventoryError::NotOneCluster(0))
        ));
    }
}
