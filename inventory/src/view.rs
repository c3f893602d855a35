//! The tree JSON written straight from the inventory: a [`TreeView`] serialises exactly like
//! the [`TreeNode`](crate::TreeNode) of the same subtree (docs/design.md §7.3) without
//! building one, so answering `GET /tree` copies nothing but the bytes it sends. Rollups
//! come from one backward pass over the subtree's run of the pre-order snapshot
//! ([`crate::flat`]); `depth` cuts the listing below that many levels while the rollups
//! still cover the whole subtree, and a vertex whose children were left out says how many
//! it has (`child_count`). The cost is one pass over the subtree plus what is written.

use crate::graph::Inventory;
use crate::path::PathId;
use crate::rollup::Counts;
use petgraph::stable_graph::NodeIndex;
use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

/// One subtree, ready to serialise as a [`TreeNode`](crate::TreeNode).
pub struct TreeView<'a> {
    inv: &'a Inventory,
    root: NodeIndex,
    /// Levels of children listed below the root; `None`: all.
    depth: Option<u32>,
    /// Subtree sums by pre-order position minus `start`.
    rollups: Vec<Counts>,
    start: usize,
}

impl Inventory {
    /// The subtree at `id` as a serialisable view; `None` if `id` is absent.
    pub fn view(&self, id: &PathId, depth: Option<u32>) -> Option<TreeView<'_>> {
        Some(self.view_at(self.index_of(id)?, depth))
    }

    /// Every cluster's subtree, sorted (what [`Inventory::forest`] holds, as views).
    pub fn forest_view(&self, depth: Option<u32>) -> Vec<TreeView<'_>> {
        self.roots()
            .iter()
            .map(|&r| self.view_at(r, depth))
            .collect()
    }

    /// The subtree's own and summed counts (`None` if `id` is absent), in one pass over
    /// the subtree's contiguous run of the pre-order snapshot.
    pub fn subtree_rollup(&self, id: &PathId) -> Option<Counts> {
        let view = self.view_at(self.index_of(id)?, Some(0));
        Some(view.rollups[0])
    }

    fn view_at(&self, root: NodeIndex, depth: Option<u32>) -> TreeView<'_> {
        let flat = self.flat();
        let start = flat.pos[root.index()] as usize;
        let end = flat.entries[start].end as usize;
        // Post-order by scanning the run backwards: a vertex's children sit at i + 1, then
        // at each child's `end`, and are all summed before it.
        let mut rollups = vec![Counts::default(); end - start];
        for i in (start..end).rev() {
            let entry = flat.entries[i];
            let mut sum = self.slot(entry.idx).facts.counts;
            let mut c = i + 1;
            while c < entry.end as usize {
                sum += rollups[c - start];
                c = flat.entries[c].end as usize;
            }
            rollups[i - start] = sum;
        }
        TreeView {
            inv: self,
            root,
            depth,
            rollups,
            start,
        }
    }
}

impl TreeView<'_> {
    /// The subtree sum at the root (own counts included).
    pub fn rollup(&self) -> Counts {
        self.rollups[0]
    }
}

impl Serialize for TreeView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        At {
            view: self,
            idx: self.root,
            level: 0,
        }
        .serialize(serializer)
    }
}

/// One vertex of a view, `level` below its root.
struct At<'v, 'a> {
    view: &'v TreeView<'a>,
    idx: NodeIndex,
    level: u32,
}

impl Serialize for At<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let inv = self.view.inv;
        let slot = inv.slot(self.idx);
        let v = &*slot.vertex;
        let pos = inv.flat().pos[self.idx.index()] as usize;
        let rollup = self.view.rollups[pos - self.view.start];
        let listed = self.view.depth.is_none_or(|d| self.level < d);
        let guest = v.kind.is_guest();
        let template = guest || v.template;
        let tags = guest || !v.tags.is_empty();
        let omitted = (!listed && !slot.children.is_empty())
            .then(|| u32::try_from(slot.children.len()).unwrap_or(u32::MAX));

        let mut s = serializer.serialize_struct("TreeNode", 18)?;
        s.serialize_field("id", &v.id)?;
        s.serialize_field("kind", &v.kind)?;
        field(&mut s, "vmid", &v.vmid)?;
        s.serialize_field("name", &v.name)?;
        field(&mut s, "status", &v.status)?;
        if template {
            s.serialize_field("template", &v.template)?;
        } else {
            s.skip_field("template")?;
        }
        if tags {
            s.serialize_field("tags", &v.tags)?;
        } else {
            s.skip_field("tags")?;
        }
        field(&mut s, "os", &v.os)?;
        field(&mut s, "image", &v.image)?;
        field(&mut s, "error", &v.error)?;
        field(&mut s, "agent", &v.agent)?;
        field(&mut s, "agent_user", &v.agent_user)?;
        field(&mut s, "host_id", &v.host_id)?;
        field(&mut s, "machine_id", &v.machine_id)?;
        counts(&mut s, "counts", &v.counts)?;
        counts(&mut s, "rollup", &rollup)?;
        field(&mut s, "child_count", &omitted)?;
        s.serialize_field(
            "children",
            &Children {
                at: self,
                listed: if listed { &slot.children[..] } else { &[] },
            },
        )?;
        s.end()
    }
}

fn field<S: SerializeStruct, T: Serialize>(
    s: &mut S,
    key: &'static str,
    value: &Option<T>,
) -> Result<(), S::Error> {
    match value {
        Some(v) => s.serialize_field(key, v),
        None => s.skip_field(key),
    }
}

fn counts<S: SerializeStruct>(s: &mut S, key: &'static str, c: &Counts) -> Result<(), S::Error> {
    if c.is_zero() {
        s.skip_field(key)
    } else {
        s.serialize_field(key, c)
    }
}

struct Children<'x, 'v, 'a> {
    at: &'x At<'v, 'a>,
    listed: &'x [NodeIndex],
}

impl Serialize for Children<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.listed.len()))?;
        for &idx in self.listed {
            seq.serialize_element(&At {
                view: self.at.view,
                idx,
                level: self.at.level + 1,
            })?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Kind, Vertex};

    fn p(s: &str) -> PathId {
        PathId::parse(s).unwrap()
    }

    fn sample() -> Inventory {
        let pending = |n| Counts {
            pending: n,
            ..Counts::default()
        };
        let mut inv = Inventory::new();
        inv.upsert(Vertex::new(p("cluster/c")).with_error("pass failed"))
            .unwrap();
        inv.upsert(Vertex::new(p("cluster/c/node/n1")).with_status("online"))
            .unwrap();
        inv.upsert(Vertex::new(p("cluster/c/node/n2")).with_status("offline"))
            .unwrap();
        inv.upsert(
            Vertex::new(p("cluster/c/node/n1/lxc/101"))
                .with_name("web")
                .with_status("running")
                .with_tags(["prod"])
                .with_os("debian")
                .with_agent("online")
                .with_counts(pending(2)),
        )
        .unwrap();
        inv.upsert(Vertex::new(p("cluster/c/node/n1/lxc/101/docker/app")).with_image("nginx"))
            .unwrap();
        inv.upsert(
            Vertex::new(p("cluster/c/node/n2/vm/200"))
                .with_template(true)
                .with_counts(pending(3)),
        )
        .unwrap();
        inv.upsert(Vertex::new(p("cluster/d"))).unwrap();
        inv
    }

    #[test]
    fn whole_views_are_the_tree_json() {
        let inv = sample();
        for id in inv.iter().map(|v| v.id.clone()) {
            assert_eq!(
                serde_json::to_string(&inv.view(&id, None).unwrap()).unwrap(),
                serde_json::to_string(&inv.tree(&id).unwrap()).unwrap(),
                "{id}"
            );
            assert_eq!(inv.subtree_rollup(&id), inv.rollup(&id));
        }
        assert_eq!(
            serde_json::to_string(&inv.forest_view(None)).unwrap(),
            serde_json::to_string(&inv.forest()).unwrap()
        );
        assert!(inv.view(&p("cluster/x"), None).is_none());
    }

    #[test]
    fn depth_cuts_the_listing_not_the_rollups() {
        let inv = sample();
        let json = serde_json::to_value(inv.view(&p("cluster/c"), Some(1)).unwrap()).unwrap();
        assert_eq!(json["rollup"]["pending"], 5);
        assert!(json.get("child_count").is_none(), "its children are listed");
        let nodes = json["children"].as_array().unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0]["rollup"]["pending"], 2);
        assert_eq!(nodes[0]["child_count"], 1);
        assert_eq!(nodes[0]["children"], serde_json::json!([]));
        let back: crate::TreeNode = serde_json::from_value(json).unwrap();
        assert_eq!(back.children[1].child_count, Some(1));
        assert_eq!(back.children[1].kind, Kind::Node);

        let only = serde_json::to_value(inv.view(&p("cluster/d"), Some(0)).unwrap()).unwrap();
        assert!(only.get("child_count").is_none(), "nothing left out");
    }
}
