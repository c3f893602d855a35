//! Registry checks for Docker images (docs/design.md §2.7): is there a newer image for the
//! tag a container runs, asked of the registry as cheaply as Docker Hub's rate limits demand.
//!
//! A library for the server: no storage, routes or schedule here. The caller builds one
//! [`Checker`] (per-registry [`Credentials`], timeouts, concurrency), calls
//! [`Checker::check`] once per interval with every container's [`CheckInput`], and stores
//! the [`CycleReport`] (serde, JSON). [`Checker::state`] / [`Checker::restore`] carry
//! back-offs, budgets and cached indexes across restarts.
//!
//! - [`reference`]: image references parsed and normalised as Docker does.
//! - [`client`]: manifest `HEAD` and index `GET`, `429` back-off; [`auth`] the challenges,
//!   tokens and credentials; [`manifest`] media types and index documents.
//! - [`check`]: the cycle: one request per (registry, repository, tag), digests compared.

pub mod auth;
pub mod check;
pub mod client;
pub mod limits;
pub mod manifest;
pub mod platform;
pub mod reference;
pub mod report;

pub use auth::{Credential, Credentials};
pub use check::{Checker, CheckerOptions, CheckerState};
pub use client::{ClientOptions, RegistryLimits};
pub use limits::Budget;
pub use platform::Platform;
pub use reference::{ImageRef, ReferenceError};
pub use report::{
    CheckError, CheckInput, CheckResult, CycleReport, ErrorKind, ImageStatus, IndexEntry,
    RegistryReport, RequestCounts,
};
