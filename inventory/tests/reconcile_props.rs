//! Properties of reconcile, apply, merge, rollups and the tree JSON over random inventories.

mod common;

use canopy_inventory::{reconcile, Change, Counts, Inventory, Kind, PathId, TreeNode, Vertex};
use common::{arb_inventory, arb_realistic_inventory};
use proptest::prelude::*;
use proptest::sample::Index;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        ..ProptestConfig::default()
    }
}

/// The same guest (with its containers) under another node of its cluster, if there is one.
fn migrate(inv: &Inventory, guest: Index, node: Index) -> Option<(Inventory, PathId, PathId)> {
    let guests: Vec<&Vertex> = inv.iter().filter(|v| v.kind.is_guest()).collect();
    let g = guests.get(guest.index(guests.len().max(1)))?;
    let cluster = g.id.cluster_id();
    let here = g.id.node_id()?;
    let others: Vec<&Vertex> = inv.children(&cluster).filter(|n| n.id != here).collect();
    let target = &others.get(node.index(others.len().max(1)))?.id;
    let to = target.guest(g.kind, g.vmid?).ok()?;
    let mut out = inv.clone();
    let moved = out.remove(&g.id);
    for mut v in moved {
        v.id = v.id.rebase(&g.id, &to)?;
        out.upsert(v).ok()?;
    }
    Some((out, g.id.clone(), to))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn reconcile_with_itself_is_empty(a in arb_inventory()) {
        prop_assert!(reconcile(&a, &a).is_empty());
    }

    #[test]
    fn applying_the_diff_gives_the_target(a in arb_inventory(), b in arb_inventory()) {
        let changes = reconcile(&a, &b);
        let mut replay = a.clone();
        replay.apply(&changes).map_err(|e| TestCaseError::fail(format!("{e}: {changes:#?}")))?;
        prop_assert_eq!(&replay, &b);
        // The changes survive JSON.
        let json = serde_json::to_string(&changes).unwrap();
        let back: Vec<Change> = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, changes);
    }

    #[test]
    fn a_migration_is_exactly_one_move(a in arb_realistic_inventory(), guest in any::<Index>(), node in any::<Index>()) {
        let Some((b, from, to)) = migrate(&a, guest, node) else { return Ok(()) };
        prop_assert_eq!(reconcile(&a, &b), vec![Change::Moved { from, to }]);
    }

    #[test]
    fn merging_one_cluster_leaves_the_others(all in arb_inventory(), fresh in arb_realistic_inventory()) {
        let fresh_cluster = fresh.clusters().next().unwrap().id.clone();
        let fresh = fresh.subtree(&fresh_cluster);
        let mut merged = all.clone();
        let changes = merged.merge_cluster(&fresh).unwrap();
        for c in all.clusters().filter(|c| c.id != fresh_cluster) {
            prop_assert_eq!(merged.subtree(&c.id), all.subtree(&c.id));
        }
        prop_assert!(changes.iter().all(|c| c.subject().cluster_id() == fresh_cluster));
        let guests = |inv: &Inventory| -> Vec<PathId> {
            inv.descendants(&fresh_cluster).filter(|v| v.kind != Kind::Docker).map(|v| v.id.clone()).collect()
        };
        prop_assert_eq!(guests(&merged), guests(&fresh));
        prop_assert!(merged.clone().merge_cluster(&fresh).unwrap().is_empty());
    }

    #[test]
    fn rollups_are_subtree_sums(a in arb_inventory()) {
        let rollups = a.rollups();
        prop_assert_eq!(rollups.len(), a.len());
        for v in a.iter() {
            let brute: Counts = a
                .iter()
                .filter(|w| w.id == v.id || v.id.is_ancestor_of(&w.id))
                .map(|w| w.counts)
                .sum();
            prop_assert_eq!(rollups[&v.id], brute);
        }
    }

    #[test]
    fn tree_json_round_trips(a in arb_inventory()) {
        let json = serde_json::to_string(&a.forest()).unwrap();
        let forest: Vec<TreeNode> = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(Inventory::from_forest(&forest).unwrap(), a.clone());
        let flat: Inventory = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        prop_assert_eq!(flat, a);
    }

    #[test]
    fn iteration_is_sorted_and_parents_come_first(a in arb_inventory()) {
        let ids: Vec<PathId> = a.iter().map(|v| v.id.clone()).collect();
        prop_assert!(ids.windows(2).all(|w| w[0] < w[1]));
        for id in &ids {
            prop_assert_eq!(PathId::parse(id.as_str()).unwrap(), id.clone());
        }
    }
}
