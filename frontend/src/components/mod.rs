//! The dashboard's components, each with typed props.

pub mod actions;
pub mod admin;
pub mod badges;
pub mod dashboard;
pub mod detail;
pub mod filter;
pub mod live_tree;
pub mod login;
pub mod operation;
pub mod operations;
pub mod pipeline;
pub mod shell;
pub mod snapshots;
pub mod tree;
