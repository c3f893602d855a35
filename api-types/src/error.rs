//! The JSON error body every route returns: `{"code": "...", "message": "..."}`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApiError {
    /// Stable machine-readable code: `not_found`, `conflict`, `unauthenticated`,
    /// `forbidden`, `validation`, `rate_limited`, `unavailable`, `internal`.
    pub code: String,
    /// Human-readable explanation naming what was wrong.
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}
