//! Extractors whose rejections speak our error format.

use crate::error::Error;
use axum::extract::{FromRequest, FromRequestParts};

/// `axum::Json` whose rejection is a 400 naming the bad field.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(Error))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` with our rejection.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub struct Query<T>(pub T);

/// `axum::extract::Path` with our rejection.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub struct Path<T>(pub T);

impl From<axum::extract::rejection::PathRejection> for Error {
    fn from(r: axum::extract::rejection::PathRejection) -> Self {
        Self::Validation(format!("invalid path: {}", r.body_text()))
    }
}
