//! The nested JSON view of the tree: the `canopy discover --json` contract (docs/design.md §7.3), also
//! what `canopy tree --json` and the frontend's tree read. Field order and presence are part
//! of the contract: `vmid`, `template` and `tags` appear on guests only (the last two even when
//! false or empty), `status` where known, extra facts only when set. [`crate::TreeView`]
//! writes the same JSON straight from the inventory.

use crate::graph::{Inventory, InventoryError};
use crate::model::Vertex;
use crate::path::{Kind, PathId};
use crate::rollup::Counts;
use petgraph::stable_graph::NodeIndex;
use serde::{Deserialize, Serialize};

/// One vertex with its children, in the docs/design.md §7.3 shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TreeNode {
    pub id: PathId,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmid: Option<u32>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `Some` on guests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<bool>,
    /// `Some` on guests (and wherever tags are set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The user the agent runs as (`root` when the guest has no sudo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// This vertex's own counts.
    #[serde(default, skip_serializing_if = "Counts::is_zero")]
    pub counts: Counts,
    /// The subtree's sum (own counts included): what the tree's badges show.
    #[serde(default, skip_serializing_if = "Counts::is_zero")]
    pub rollup: Counts,
    /// Set only when `children` was left out (`GET /tree?depth=N` below its last level):
    /// how many children the vertex has. Absent: `children` lists them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_count: Option<u32>,
    #[serde(default)]
    pub children: Vec<TreeNode>,
}

impl TreeNode {
    /// The vertex this node describes (without its children).
    pub fn to_vertex(&self) -> Vertex {
        Vertex {
            id: self.id.clone(),
            kind: self.kind,
            name: self.name.clone(),
            status: self.status.clone(),
            vmid: self.vmid,
            template: self.template.unwrap_or(false),
            tags: self.tags.clone().unwrap_or_default(),
            os: self.os.clone(),
            image: self.image.clone(),
            error: self.error.clone(),
            host_id: self.host_id.clone(),
            machine_id: self.machine_id.clone(),
            agent: self.agent.clone(),
            agent_user: self.agent_user.clone(),
            counts: self.counts,
        }
    }

    fn leaf(v: &Vertex) -> TreeNode {
        let guest = v.kind.is_guest();
        TreeNode {
            id: v.id.clone(),
            kind: v.kind,
            vmid: v.vmid,
            name: v.name.clone(),
            status: v.status.clone(),
            template: (guest || v.template).then_some(v.template),
            tags: (guest || !v.tags.is_empty()).then(|| v.tags.clone()),
            os: v.os.clone(),
            image: v.image.clone(),
            error: v.error.clone(),
            agent: v.agent.clone(),
            agent_user: v.agent_user.clone(),
            host_id: v.host_id.clone(),
            machine_id: v.machine_id.clone(),
            counts: v.counts,
            rollup: v.counts,
            child_count: None,
            children: Vec::new(),
        }
    }
}

impl Inventory {
    /// The subtree at `id` as nested nodes with rollups; `None` if `id` is absent.
    pub fn tree(&self, id: &PathId) -> Option<TreeNode> {
        Some(self.build_tree(self.index_of(id)?))
    }

    /// Every cluster's tree, sorted.
    pub fn forest(&self) -> Vec<TreeNode> {
        self.roots().iter().map(|&r| self.build_tree(r)).collect()
    }

    fn build_tree(&self, idx: NodeIndex) -> TreeNode {
        let slot = self.slot(idx);
        let mut node = TreeNode::leaf(&slot.vertex);
        node.children = slot.children.iter().map(|&c| self.build_tree(c)).collect();
        for c in &node.children {
            node.rollup += c.rollup;
        }
        node
    }

    /// Builds an inventory from trees (e.g. `canopy discover --json` output).
    pub fn from_forest(trees: &[TreeNode]) -> Result<Inventory, InventoryError> {
        let mut inv = Inventory::new();
        let mut stack: Vec<&TreeNode> = trees.iter().rev().collect();
        while let Some(t) = stack.pop() {
            inv.upsert(t.to_vertex())?;
            stack.extend(t.children.iter().rev());
        }
        Ok(inv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathId {
        PathId::parse(s).unwrap()
    }

    #[test]
    fn matches_the_discover_contract_exactly() {
        let mut inv = Inventory::new();
        inv.upsert(Vertex::new(p("cluster/NAME"))).unwrap();
        inv.upsert(Vertex::new(p("cluster/NAME/node/N")).with_status("online"))
            .unwrap();
        inv.upsert(
            Vertex::new(p("cluster/NAME/node/N/lxc/101"))
                .with_name("HOSTNAME")
                .with_status("running")
                .with_tags(["a", "b"]),
        )
        .unwrap();
        inv.upsert(
            Vertex::new(p("cluster/NAME/node/N/vm/100"))
                .with_name("tpl")
                .with_status("stopped")
                .with_template(true),
        )
        .unwrap();
        let json = serde_json::to_string(&inv.tree(&p("cluster/NAME")).unwrap()).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"id":"cluster/NAME","kind":"cluster","name":"NAME","children":["#,
                r#"{"id":"cluster/NAME/node/N","kind":"node","name":"N","status":"online","children":["#,
                r#"{"id":"cluster/NAME/node/N/vm/100","kind":"vm","vmid":100,"name":"tpl","status":"stopped","template":true,"tags":[],"children":[]},"#,
                r#"{"id":"cluster/NAME/node/N/lxc/101","kind":"lxc","vmid":101,"name":"HOSTNAME","status":"running","template":false,"tags":["a","b"],"children":[]}"#,
                "]}]}"
            )
        );
    }

    #[test]
    fn extras_and_rollups_appear_when_set() {
        let mut inv = Inventory::new();
        inv.upsert(Vertex::new(p("cluster/c"))).unwrap();
        inv.upsert(
            Vertex::new(p("cluster/c/node/n"))
                .with_status("offline")
                .with_error("unreachable"),
        )
        .unwrap();
        let pending = Counts {
            pending: 2,
            ..Counts::default()
        };
        inv.upsert(
            Vertex::new(p("cluster/c/node/n/lxc/101"))
                .with_os("debian")
                .with_agent("online")
                .with_counts(pending),
        )
        .unwrap();
        inv.upsert(Vertex::new(p("cluster/c/node/n/lxc/101/docker/web")).with_image("nginx:1.25"))
            .unwrap();
        let forest = inv.forest();
        let node = &forest[0].children[0];
        let json = serde_json::to_value(node).unwrap();
        assert_eq!(json["error"], "unreachable");
        assert_eq!(json["rollup"]["pending"], 2);
        assert!(json.get("counts").is_none());
        let guest = &json["children"][0];
        assert_eq!(guest["os"], "debian");
        assert_eq!(guest["agent"], "online");
        assert_eq!(guest["counts"]["pending"], 2);
        let docker = &guest["children"][0];
        assert_eq!(docker["image"], "nginx:1.25");
        assert!(docker.get("tags").is_none() && docker.get("template").is_none());

        let text = serde_json::to_string(&forest).unwrap();
        let back: Vec<TreeNode> = serde_json::from_str(&text).unwrap();
        assert_eq!(Inventory::from_forest(&back).unwrap(), inv);
    }
}
