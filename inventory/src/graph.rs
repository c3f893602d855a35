//! The inventory itself: a petgraph `StableGraph` tree (edges point parent → child) plus a
//! `HashMap` from path ID to graph index. petgraph's adjacency lists come back in reverse
//! insertion order, so every vertex also keeps its children sorted (the tree order of
//! [`crate::order`]); walks then yield IDs already sorted without a sort. Each graph node
//! also carries the dictionary-encoded facts selectors filter on ([`crate::facts`]), and the
//! inventory caches a pre-order snapshot for walks ([`crate::flat`]). Graph indices never
//! leave this crate.

use crate::facts::{Facts, Interner};
use crate::flat::Flat;
use crate::model::Vertex;
use crate::path::{Kind, PathId};
use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::NodeIndexable;
use petgraph::Direction;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

/// Why a vertex or change could not go into the inventory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot add {id}: its parent {parent} is not in the inventory")]
    MissingParent { id: PathId, parent: PathId },
    #[error("{0} is not in the inventory")]
    NotFound(PathId),
    #[error("{0} is already in the inventory")]
    AlreadyExists(PathId),
    #[error("{id}: the vertex says kind {found} but the path is a {}", id.kind())]
    KindMismatch { id: PathId, found: Kind },
    #[error("{id}: the vertex says vmid {found:?} but the path says {:?}", id.vmid().filter(|_| id.kind().is_guest()))]
    VmidMismatch { id: PathId, found: Option<u32> },
    #[error("cannot move {from} to {to}: a move keeps the cluster, kind and vmid of a guest")]
    InvalidMove { from: PathId, to: PathId },
    #[error("expected exactly one cluster, found {0}")]
    NotOneCluster(usize),
}

/// A graph node: what walks need on every step, inline and small (the graph stays
/// cache-friendly at 100,000 vertices); the vertex itself behind a box.
#[derive(Clone)]
pub(crate) struct Slot {
    pub(crate) kind: Kind,
    /// The vertex's ID again, so results are built without touching the boxed vertex.
    pub(crate) id: PathId,
    pub(crate) facts: Facts,
    /// Sorted by [`PathId::sibling_cmp`].
    pub(crate) children: Vec<NodeIndex>,
    pub(crate) vertex: Box<Vertex>,
}

/// The tree of clusters → nodes → guests → docker containers.
#[derive(Clone, Default)]
pub struct Inventory {
    graph: StableGraph<Slot, ()>,
    index: HashMap<PathId, NodeIndex>,
    /// Clusters, sorted.
    roots: Vec<NodeIndex>,
    interner: Interner,
    /// Pre-order snapshot for selector walks; dropped whenever the shape changes.
    pub(crate) flat: OnceLock<Flat>,
}

impl Inventory {
    pub fn new() -> Inventory {
        Inventory::default()
    }

    /// Builds an inventory from vertices in any order (parents must be among them).
    pub fn from_vertices<I: IntoIterator<Item = Vertex>>(
        vertices: I,
    ) -> Result<Inventory, InventoryError> {
        let mut all: Vec<Vertex> = vertices.into_iter().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        let mut inv = Inventory::new();
        for v in all {
            inv.upsert(v)?;
        }
        Ok(inv)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn contains(&self, id: &PathId) -> bool {
        self.index.contains_key(id)
    }

    pub fn get(&self, id: &PathId) -> Option<&Vertex> {
        self.index.get(id).map(|&i| &*self.graph[i].vertex)
    }

    /// Edits a vertex in place. Changes `f` makes to `id`, `kind` or `vmid` are undone: a
    /// vertex changes identity only through [`Inventory::remove`] and [`Inventory::upsert`].
    pub fn update<R>(
        &mut self,
        id: &PathId,
        f: impl FnOnce(&mut Vertex) -> R,
    ) -> Result<R, InventoryError> {
        let &idx = self
            .index
            .get(id)
            .ok_or_else(|| InventoryError::NotFound(id.clone()))?;
        let slot = &mut self.graph[idx];
        let r = f(&mut slot.vertex);
        slot.vertex.id = id.clone();
        slot.vertex.fix_identity();
        slot.facts = Facts::of(&slot.vertex, &mut self.interner);
        Ok(r)
    }

    /// Inserts a vertex or replaces the one with the same ID (returning it; children stay).
    /// A new vertex's parent must already be present.
    pub fn upsert(&mut self, vertex: Vertex) -> Result<Option<Vertex>, InventoryError> {
        if let Some(e) = vertex.identity_error() {
            return Err(e);
        }
        let facts = Facts::of(&vertex, &mut self.interner);
        if let Some(&idx) = self.index.get(&vertex.id) {
            let slot = &mut self.graph[idx];
            slot.facts = facts;
            return Ok(Some(std::mem::replace(&mut *slot.vertex, vertex)));
        }
        let parent = match vertex.id.parent() {
            None => None,
            Some(p) => Some(
                *self
                    .index
                    .get(&p)
                    .ok_or_else(|| InventoryError::MissingParent {
                        id: vertex.id.clone(),
                        parent: p.clone(),
                    })?,
            ),
        };
        let id = vertex.id.clone();
        let siblings = match parent {
            Some(p) => &self.graph[p].children,
            None => &self.roots,
        };
        let pos = siblings
            .binary_search_by(|&c| self.graph[c].vertex.id.sibling_cmp(&id))
            .unwrap_or_else(|e| e);
        let idx = self.graph.add_node(Slot {
            kind: vertex.kind,
            id: id.clone(),
            facts,
            children: Vec::new(),
            vertex: Box::new(vertex),
        });
        self.index.insert(id, idx);
        match parent {
            Some(p) => {
                self.graph.add_edge(p, idx, ());
                self.graph[p].children.insert(pos, idx);
            }
            None => self.roots.insert(pos, idx),
        }
        self.flat.take();
        Ok(None)
    }

    /// Removes a vertex and its whole subtree; returns them in pre-order (empty if absent).
    pub fn remove(&mut self, id: &PathId) -> Vec<Vertex> {
        let Some(&root) = self.index.get(id) else {
            return Vec::new();
        };
        self.flat.take();
        let order = self.preorder_from(root);
        let siblings = match self.parent_index(root) {
            Some(p) => &mut self.graph[p].children,
            None => &mut self.roots,
        };
        siblings.retain(|&c| c != root);
        order
            .into_iter()
            .filter_map(|idx| self.graph.remove_node(idx))
            .map(|slot| {
                self.index.remove(&slot.vertex.id);
                *slot.vertex
            })
            .collect()
    }

    pub fn parent(&self, id: &PathId) -> Option<&Vertex> {
        let idx = self.parent_index(*self.index.get(id)?)?;
        Some(&*self.graph[idx].vertex)
    }

    /// Direct children in tree order (nodes by name, guests by vmid, containers by name).
    pub fn children(&self, id: &PathId) -> impl Iterator<Item = &Vertex> + '_ {
        self.index
            .get(id)
            .into_iter()
            .flat_map(|&i| self.graph[i].children.iter())
            .map(|&c| &*self.graph[c].vertex)
    }

    /// Everything below `id`, in pre-order (= sorted); empty if `id` is absent.
    pub fn descendants(&self, id: &PathId) -> impl Iterator<Item = &Vertex> + '_ {
        let stack = match self.index.get(id) {
            Some(&i) => self.graph[i].children.iter().rev().copied().collect(),
            None => Vec::new(),
        };
        PreOrder { inv: self, stack }.map(|i| &*self.graph[i].vertex)
    }

    /// Every vertex in pre-order, which is also [`PathId`] order.
    pub fn iter(&self) -> impl Iterator<Item = &Vertex> + '_ {
        self.preorder().map(|i| &*self.graph[i].vertex)
    }

    /// The clusters, sorted.
    pub fn clusters(&self) -> impl Iterator<Item = &Vertex> + '_ {
        self.roots.iter().map(|&i| &*self.graph[i].vertex)
    }

    /// A copy of one subtree with its ancestors (for diffing one cluster on its own).
    pub fn subtree(&self, id: &PathId) -> Inventory {
        let mut out = Inventory::new();
        let Some(&root) = self.index.get(id) else {
            return out;
        };
        let mut chain = Vec::new();
        let mut cur = self.parent_index(root);
        while let Some(p) = cur {
            chain.push(p);
            cur = self.parent_index(p);
        }
        let ancestors = chain.into_iter().rev();
        for idx in ancestors.chain(self.preorder_from(root)) {
            out.upsert(Vertex::clone(&self.graph[idx].vertex))
                .expect("parents come first");
        }
        out
    }

    // ---- crate-internal access for the walks in selector/, rollup and tree ----

    pub(crate) fn slot(&self, idx: NodeIndex) -> &Slot {
        &self.graph[idx]
    }

    pub(crate) fn index_of(&self, id: &PathId) -> Option<NodeIndex> {
        self.index.get(id).copied()
    }

    pub(crate) fn roots(&self) -> &[NodeIndex] {
        &self.roots
    }

    pub(crate) fn interner(&self) -> &Interner {
        &self.interner
    }

    /// One more than the largest graph index in use (for index-addressed scratch vectors).
    pub(crate) fn index_bound(&self) -> usize {
        self.graph.node_bound()
    }

    pub(crate) fn parent_index(&self, idx: NodeIndex) -> Option<NodeIndex> {
        self.graph
            .neighbors_directed(idx, Direction::Incoming)
            .next()
    }

    pub(crate) fn preorder(&self) -> PreOrder<'_> {
        PreOrder {
            inv: self,
            stack: self.roots.iter().rev().copied().collect(),
        }
    }

    fn preorder_from(&self, root: NodeIndex) -> Vec<NodeIndex> {
        PreOrder {
            inv: self,
            stack: vec![root],
        }
        .collect()
    }
}

/// Pre-order over graph indices, children in tree order.
pub(crate) struct PreOrder<'a> {
    inv: &'a Inventory,
    stack: Vec<NodeIndex>,
}

impl Iterator for PreOrder<'_> {
    type Item = NodeIndex;

    fn next(&mut self) -> Option<NodeIndex> {
        let idx = self.stack.pop()?;
        self.stack
            .extend(self.inv.graph[idx].children.iter().rev().copied());
        Some(idx)
    }
}

/// Two inventories are equal when they hold the same vertices (the shape follows from the IDs).
impl PartialEq for Inventory {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .index
                .iter()
                .all(|(id, &i)| other.get(id) == Some(&*self.graph[i].vertex))
    }
}

impl Eq for Inventory {}

impl fmt::Debug for Inventory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Serialized as the flat list of vertices in pre-order.
impl Serialize for Inventory {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Inventory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let vertices = Vec::<Vertex>::deserialize(deserializer)?;
        Inventory::from_vertices(vertices).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathId {
        PathId::parse(s).unwrap()
    }

    fn sample() -> Inventory {
        Inventory::from_vertices(
            [
                "cluster/home",
                "cluster/home/node/pve2",
                "cluster/home/node/pve10",
                "cluster/home/node/pve2/vm/300",
                "cluster/home/node/pve2/lxc/101",
                "cluster/home/node/pve2/lxc/101/docker/web",
                "cluster/lab",
            ]
            .map(|s| Vertex::new(p(s))),
        )
        .unwrap()
    }

    fn ids<'a>(it: impl Iterator<Item = &'a Vertex>) -> Vec<&'a str> {
        it.map(|v| v.id.as_str()).collect()
    }

    #[test]
    fn tree_operations() {
        let mut inv = sample();
        assert_eq!(inv.len(), 7);
        assert_eq!(
            ids(inv.children(&p("cluster/home"))),
            ["cluster/home/node/pve2", "cluster/home/node/pve10"]
        );
        assert_eq!(
            ids(inv.descendants(&p("cluster/home/node/pve2"))),
            [
                "cluster/home/node/pve2/lxc/101",
                "cluster/home/node/pve2/lxc/101/docker/web",
                "cluster/home/node/pve2/vm/300"
            ]
        );
        assert_eq!(ids(inv.clusters()), ["cluster/home", "cluster/lab"]);
        let all: Vec<PathId> = inv.iter().map(|v| v.id.clone()).collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]), "pre-order is sorted");
        assert_eq!(
            inv.parent(&p("cluster/home/node/pve2/vm/300")).unwrap().id,
            p("cluster/home/node/pve2")
        );

        let removed = inv.remove(&p("cluster/home/node/pve2"));
        assert_eq!(removed.len(), 4);
        assert_eq!(removed[0].id, p("cluster/home/node/pve2"));
        assert_eq!(inv.len(), 3);
        assert!(!inv.contains(&p("cluster/home/node/pve2/lxc/101/docker/web")));
        assert!(inv.remove(&p("cluster/home/node/pve2")).is_empty());
        assert_eq!(
            ids(inv.children(&p("cluster/home"))),
            ["cluster/home/node/pve10"]
        );
    }

    #[test]
    fn upsert_checks_parents_and_identity() {
        let mut inv = sample();
        let orphan = Vertex::new(p("cluster/home/node/pve9/lxc/105"));
        assert!(matches!(
            inv.upsert(orphan),
            Err(InventoryError::MissingParent { .. })
        ));
        let mut wrong = Vertex::new(p("cluster/home/node/pve10/lxc/105"));
        wrong.kind = Kind::Vm;
        assert!(matches!(
            inv.upsert(wrong),
            Err(InventoryError::KindMismatch { .. })
        ));
        let mut wrong = Vertex::new(p("cluster/home/node/pve10/lxc/105"));
        wrong.vmid = Some(106);
        assert!(matches!(
            inv.upsert(wrong),
            Err(InventoryError::VmidMismatch { .. })
        ));

        let id = p("cluster/home/node/pve2/lxc/101");
        let old = inv
            .upsert(Vertex::new(id.clone()).with_name("web1"))
            .unwrap()
            .unwrap();
        assert_eq!(old.name, "101");
        assert_eq!(inv.get(&id).unwrap().name, "web1");
        assert_eq!(inv.children(&id).count(), 1, "children survive a replace");

        inv.update(&id, |v| {
            v.status = Some("running".into());
            v.kind = Kind::Vm;
        })
        .unwrap();
        assert_eq!(inv.get(&id).unwrap().status.as_deref(), Some("running"));
        assert_eq!(inv.get(&id).unwrap().kind, Kind::Lxc);
    }

    #[test]
    fn shareable_between_threads() {
        fn check<T: Send + Sync>() {}
        check::<Inventory>();
        check::<crate::Selector>();
    }

    #[test]
    fn equality_serde_and_subtree() {
        let inv = sample();
        let json = serde_json::to_string(&inv).unwrap();
        let back: Inventory = serde_json::from_str(&json).unwrap();
        assert_eq!(back, inv);
        let mut other = inv.clone();
        other
            .update(&p("cluster/lab"), |v| v.status = Some("x".into()))
            .unwrap();
        assert_ne!(other, inv);

        let sub = inv.subtree(&p("cluster/home/node/pve2/lxc/101"));
        assert_eq!(
            ids(sub.iter()),
            [
                "cluster/home",
                "cluster/home/node/pve2",
                "cluster/home/node/pve2/lxc/101",
                "cluster/home/node/pve2/lxc/101/docker/web"
            ]
        );
    }
}
