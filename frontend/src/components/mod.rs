//! The dashboard's components, each with typed props.

pub mod badges;
pub mod dashboard;
pub mod detail;
pub mod filter;
pub mod live_tree;
pub mod login;
pub mod operation;
pub mod shell;
pub mod tree;
