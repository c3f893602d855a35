//! The server's one error enum and its one `IntoResponse`: JSON `{code, message}`.
//! Internal detail is logged, never returned.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use canopy_api_types::ApiError;
use canopy_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::Validation(_) => (StatusCode::BAD_REQUEST, "validation"),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = match &self {
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal error; the server log has the details".to_string()
            }
            other => other.to_string(),
        };
        (
            status,
            axum::Json(ApiError {
                code: code.into(),
                message,
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            StoreError::Conflict(msg) => Self::Conflict(msg),
            StoreError::TokenUnknown => {
                Self::Unauthenticated("registration token is not known".into())
            }
            StoreError::TokenExpired => Self::Unauthenticated("registration token expired".into()),
            StoreError::TokenRevoked => {
                Self::Unauthenticated("registration token was revoked".into())
            }
            StoreError::NoSeats => Self::Forbidden("registration token has no seats left".into()),
            StoreError::ReportRefused { reason, .. } => Self::Validation(reason),
            e @ (StoreError::Database(_) | StoreError::Corrupt { .. }) => {
                Self::Internal(e.to_string())
            }
        }
    }
}

impl From<JsonRejection> for Error {
    fn from(r: JsonRejection) -> Self {
        // serde's message names the field and position ("missing field `ids` at line 1 column 2").
        Self::Validation(format!("invalid JSON body: {}", r.body_text()))
    }
}

impl From<QueryRejection> for Error {
    fn from(r: QueryRejection) -> Self {
        Self::Validation(format!("invalid query string: {}", r.body_text()))
    }
}
