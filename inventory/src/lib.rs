//! The inventory tree (cluster → node → lxc/vm → docker): path IDs, the petgraph model,
//! the tree JSON (docs/design.md §7.3), reconcile (diff → events), rollups and selectors. Pure: no IO, no tokio,
//! and wasm-safe, so the server, the CLI and the yew frontend share one implementation.
//!
//! ```
//! use canopy_inventory::{Inventory, PathId, Selector, Vertex};
//!
//! let node = PathId::cluster("home")?.node("pve1")?;
//! let mut inv = Inventory::new();
//! inv.upsert(Vertex::new(node.cluster_id()))?;
//! inv.upsert(Vertex::new(node.clone()).with_status("online"))?;
//! inv.upsert(Vertex::new(node.lxc(101)?).with_name("web").with_tags(["prod"]))?;
//! let sel = Selector::parse("cluster/home/**[tag=prod]")?;
//! assert_eq!(inv.select(&sel), [node.lxc(101)?]);
//! assert_eq!(inv.targets(&sel).to_string(), "resolves to 1 host");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod facts;
mod flat;
mod graph;
mod keys;
mod kind;
mod merge;
mod model;
mod order;
mod path;
mod reconcile;
mod rollup;
mod selector;
mod text;
mod tree;
mod view;

pub use graph::{Inventory, InventoryError};
pub use model::Vertex;
pub use path::{
    compare_names, parse_vmid, validate_name, DockerKey, GuestKey, Kind, PathError, PathId,
    MAX_NAME, MAX_VMID, MIN_VMID,
};
pub use reconcile::{reconcile, Change};
pub use rollup::Counts;
pub use selector::{Selector, SelectorError, SkipReason, Skipped, TargetOptions, Targets};
pub use tree::TreeNode;
pub use view::TreeView;
