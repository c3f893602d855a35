//! The inventory tree (cluster → node → lxc/vm → docker). Issue #4 fills this crate:
//! petgraph model, path IDs, selectors, reconcile and rollups. Pure: no IO, no tokio.
