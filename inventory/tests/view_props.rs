//! `TreeView` (the tree JSON written straight from the inventory) against `TreeNode` (the
//! same subtree built as values): byte for byte without a depth, and cut where the depth
//! says with the rollups of the whole subtree.

mod common;

use canopy_inventory::TreeNode;
use common::arb_inventory;
use proptest::prelude::*;

/// `t` with the children below `depth` levels left out, as `depth` promises.
fn cut(mut t: TreeNode, depth: u32) -> TreeNode {
    if depth == 0 {
        if !t.children.is_empty() {
            t.child_count = Some(t.children.len() as u32);
        }
        t.children.clear();
    } else {
        t.children = t.children.into_iter().map(|c| cut(c, depth - 1)).collect();
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn views_write_the_tree_json(inv in arb_inventory(), depth in 0u32..4) {
        let ids: Vec<_> = inv.iter().map(|v| v.id.clone()).collect();
        for id in &ids {
            let whole = inv.tree(id).unwrap();
            prop_assert_eq!(
                serde_json::to_string(&inv.view(id, None).unwrap()).unwrap(),
                serde_json::to_string(&whole).unwrap()
            );
            let cut_view: TreeNode =
                serde_json::from_str(&serde_json::to_string(&inv.view(id, Some(depth)).unwrap()).unwrap()).unwrap();
            prop_assert_eq!(cut_view, cut(whole.clone(), depth));
            prop_assert_eq!(inv.subtree_rollup(id), Some(whole.rollup));
        }
        prop_assert_eq!(
            serde_json::to_string(&inv.forest_view(None)).unwrap(),
            serde_json::to_string(&inv.forest()).unwrap()
        );
    }
}
