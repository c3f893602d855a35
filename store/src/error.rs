//! Errors of the store. The server maps each variant to one HTTP status.

use canopy_api_types::agent::RejectedRow;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    /// A uniqueness or state conflict: "username 'x' is taken", "command is running".
    #[error("{0}")]
    Conflict(String),
    #[error("registration token is not known")]
    TokenUnknown,
    #[error("registration token expired")]
    TokenExpired,
    #[error("registration token was revoked")]
    TokenRevoked,
    #[error("registration token has no seats left")]
    NoSeats,
    /// The whole report was refused (never for one bad row).
    #[error("report refused: {reason}")]
    ReportRefused {
        reason: String,
        rejected: Vec<RejectedRow>,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

impl StoreError {
    pub fn corrupt(table: &'static str, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            table,
            detail: detail.into(),
        }
    }
}
