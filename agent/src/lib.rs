//! canopy-agent: the per-host half of Canopy. Scans package managers and Docker containers, keeps a local
//! cache, long-polls the server for commands (dry-run, install, repair, scan, health) and
//! reports results. Every external command runs through [`process::run`]; everything that needs
//! root goes through the helper ([`helper`]).

pub mod actions;
pub mod audit;
pub mod cache;
pub mod cli;
pub mod config;
pub mod docker;
pub mod facts;
pub mod health;
pub mod helper;
pub mod http;
pub mod identity;
pub mod process;
pub mod register;
pub mod run;
pub mod scan;

pub use cli::{dispatch, Cli};
