//! The part of the tree the page has loaded, level by level (docs/design.md §7.2): the
//! vertices of the answers so far, each with its own facts (children left out), and for
//! the vertices whose children are loaded, their order. `GET /tree?depth=1` fills the top;
//! expanding a vertex loads its children (`?selector=ID&depth=1`); a live update replaces
//! the facts of the loaded vertices it names and nothing else; collapsing unloads what was
//! below. A vertex's facts are an `Rc`, so a row whose vertex did not change compares equal
//! and is not drawn again.

use canopy_inventory::TreeNode;
use std::collections::HashMap;
use std::rc::Rc;

#[derive(Debug, Default, Clone)]
pub struct Loaded {
    nodes: HashMap<String, Rc<TreeNode>>,
    /// Children in order, of the vertices whose children are loaded.
    kids: HashMap<String, Vec<String>>,
    roots: Vec<String>,
}

impl Loaded {
    /// The top answer (`GET /tree?depth=1`, or with a selector): the roots and what was
    /// listed below them; what was loaded below vertices still there stays.
    pub fn set_roots(&mut self, trees: Vec<TreeNode>) {
        let ids: Vec<String> = trees.iter().map(|t| t.id.to_string()).collect();
        for gone in self.roots.clone().iter().filter(|r| !ids.contains(r)) {
            self.drop_subtree(gone);
        }
        self.roots = ids;
        for t in trees {
            self.put(t);
        }
    }

    /// `parent` as `?selector=ID&depth=1` answered it: its facts and its children.
    pub fn set_children(&mut self, parent: TreeNode) {
        self.put(parent);
    }

    /// New facts of vertices (`depth=0` views from the tree stream): those loaded are
    /// replaced, their children stay; the others are not shown and are left out. Returns
    /// how many were loaded.
    pub fn apply(&mut self, vertices: Vec<TreeNode>) -> usize {
        let mut n = 0;
        for mut v in vertices {
            if let Some(slot) = self.nodes.get_mut(v.id.as_str()) {
                v.children = Vec::new();
                if **slot != v {
                    *slot = Rc::new(v);
                }
                n += 1;
            }
        }
        n
    }

    /// Forgets everything below `id` (it was collapsed): its children are loaded again
    /// when it is expanded.
    pub fn unload_below(&mut self, id: &str) {
        if let Some(kids) = self.kids.remove(id) {
            for k in kids {
                self.drop_subtree(&k);
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&Rc<TreeNode>> {
        self.nodes.get(id)
    }

    pub fn roots(&self) -> &[String] {
        &self.roots
    }

    /// The children of `id`, if loaded.
    pub fn children(&self, id: &str) -> Option<&[String]> {
        self.kids.get(id).map(Vec::as_slice)
    }

    /// The vertex has children (loaded or not).
    pub fn has_children(&self, id: &str) -> bool {
        match self.kids.get(id) {
            Some(k) => !k.is_empty(),
            None => self
                .nodes
                .get(id)
                .is_some_and(|n| n.child_count.unwrap_or(0) > 0),
        }
    }

    /// Vertices below the roots whose children are loaded (what a refresh loads again),
    /// parents before their children.
    pub fn loaded_parents(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .kids
            .iter()
            .filter(|(id, k)| !k.is_empty() && !self.roots.contains(id))
            .map(|(id, _)| id.clone())
            .collect();
        out.sort_by_key(|id| (id.matches('/').count(), id.clone()));
        out
    }

    /// How many vertices are loaded.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The vertex at `id` with its loaded children nested (what the detail pane reads).
    pub fn forest_of(&self, id: &str) -> Vec<TreeNode> {
        self.nodes
            .get(id)
            .map(|n| vec![(**n).clone()])
            .unwrap_or_default()
    }

    fn put(&mut self, mut t: TreeNode) {
        let id = t.id.to_string();
        let children = std::mem::take(&mut t.children);
        if t.child_count.is_none() {
            // Listed (a leaf lists none): these are its children now.
            let ids: Vec<String> = children.iter().map(|c| c.id.to_string()).collect();
            if let Some(old) = self.kids.insert(id.clone(), ids.clone()) {
                for gone in old.iter().filter(|o| !ids.contains(o)) {
                    self.drop_subtree(gone);
                }
            }
            for c in children {
                self.put(c);
            }
        }
        match self.nodes.get_mut(&id) {
            Some(slot) if **slot == t => {}
            Some(slot) => *slot = Rc::new(t),
            None => {
                self.nodes.insert(id, Rc::new(t));
            }
        }
    }

    fn drop_subtree(&mut self, id: &str) {
        self.nodes.remove(id);
        self.unload_below(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(json: serde_json::Value) -> TreeNode {
        serde_json::from_value(json).unwrap()
    }

    /// `GET /tree?depth=1` of one cluster with two nodes.
    fn top() -> Vec<TreeNode> {
        vec![node(serde_json::json!({
            "id": "cluster/home", "kind": "cluster", "name": "home",
            "rollup": {"pending": 3},
            "children": [
                {"id": "cluster/home/node/pve1", "kind": "node", "name": "pve1",
                 "rollup": {"pending": 3}, "child_count": 2, "children": []},
                {"id": "cluster/home/node/pve2", "kind": "node", "name": "pve2",
                 "child_count": 1, "children": []}
            ]
        }))]
    }

    fn pve1() -> TreeNode {
        node(serde_json::json!({
            "id": "cluster/home/node/pve1", "kind": "node", "name": "pve1",
            "rollup": {"pending": 3}, "children": [
                {"id": "cluster/home/node/pve1/lxc/101", "kind": "lxc", "vmid": 101, "name": "web",
                 "template": false, "tags": [], "counts": {"pending": 3}, "rollup": {"pending": 3}, "children": []},
                {"id": "cluster/home/node/pve1/lxc/102", "kind": "lxc", "vmid": 102, "name": "db",
                 "template": false, "tags": [], "children": []}
            ]
        }))
    }

    #[test]
    fn levels_load_one_at_a_time() {
        let mut l = Loaded::default();
        l.set_roots(top());
        assert_eq!(l.len(), 3);
        assert_eq!(l.children("cluster/home").unwrap().len(), 2);
        assert!(l.children("cluster/home/node/pve1").is_none());
        assert!(l.has_children("cluster/home/node/pve1"));
        l.set_children(pve1());
        assert_eq!(l.len(), 5);
        assert!(!l.has_children("cluster/home/node/pve1/lxc/101"));
        assert_eq!(l.loaded_parents(), ["cluster/home/node/pve1"]);
        // A refresh of the top keeps the node's guests.
        l.set_roots(top());
        assert_eq!(l.len(), 5);
        l.unload_below("cluster/home/node/pve1");
        assert_eq!(l.len(), 3);
        assert!(l.get("cluster/home/node/pve1/lxc/101").is_none());
    }

    #[test]
    fn live_updates_touch_loaded_vertices_only() {
        let mut l = Loaded::default();
        l.set_roots(top());
        l.set_children(pve1());
        let untouched = l.get("cluster/home/node/pve2").unwrap().clone();
        let web = node(serde_json::json!({
            "id": "cluster/home/node/pve1/lxc/101", "kind": "lxc", "vmid": 101, "name": "web",
            "status": "stopped", "template": false, "tags": [], "children": []}));
        let unseen = node(serde_json::json!({
            "id": "cluster/home/node/pve2/lxc/201", "kind": "lxc", "vmid": 201, "name": "x",
            "template": false, "tags": [], "children": []}));
        let pve1 = node(serde_json::json!({
            "id": "cluster/home/node/pve1", "kind": "node", "name": "pve1",
            "child_count": 2, "children": []}));
        assert_eq!(l.apply(vec![web, unseen, pve1]), 2);
        let now = l.get("cluster/home/node/pve1/lxc/101").unwrap();
        assert_eq!(now.status.as_deref(), Some("stopped"));
        assert!(l.get("cluster/home/node/pve2/lxc/201").is_none());
        assert_eq!(l.children("cluster/home/node/pve1").unwrap().len(), 2);
        assert!(Rc::ptr_eq(
            &untouched,
            l.get("cluster/home/node/pve2").unwrap()
        ));
    }

    #[test]
    fn reloaded_children_drop_the_removed_ones() {
        let mut l = Loaded::default();
        l.set_roots(top());
        l.set_children(pve1());
        let mut fewer = pve1();
        fewer.children.pop();
        l.set_children(fewer);
        assert!(l.get("cluster/home/node/pve1/lxc/102").is_none());
        assert_eq!(l.children("cluster/home/node/pve1").unwrap().len(), 1);
        l.set_roots(Vec::new());
        assert!(l.is_empty());
    }
}
