//! Everything that crosses a wire between Canopy's server, agent, CLI and frontend.
//!
//! This crate is wasm-safe: no tokio, no sqlx, no axum. The REST client behind the
//! `client` feature is the one typed client used by the agent, the CLI and the tests.

pub mod agent;
pub mod auth;
pub mod bulk;
pub mod clusters;
pub mod commands;
pub mod deploy;
pub mod docker;
pub mod error;
pub mod hosts;
pub mod ids;
pub mod updates;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "schema")]
mod schema;

pub use error::ApiError;
pub use ids::*;

/// Base path of every REST route.
pub const API_PREFIX: &str = "/api/v1";
