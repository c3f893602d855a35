//! canopy-agent: the per-host half of Canopy. Scans package managers, keeps a local
//! cache, long-polls the server for commands (dry-run, install, scan) and reports
//! results. Every external command runs through [`process::run`].

pub mod actions;
pub mod cache;
pub mod cli;
pub mod config;
pub mod facts;
pub mod identity;
pub mod process;
pub mod register;
pub mod run;
pub mod scan;

pub use cli::{dispatch, Cli};
