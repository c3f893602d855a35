//! Routes for bulk update operations (docs/design.md §2.6): plan an update of a subtree,
//! approve its plan by fingerprint, pause, resume, cancel. An operation is followed like a
//! deploy: `GET /operations/{id}` and its event stream.

use super::deploy::operation_id;
use super::extract::{Json, Path};
use super::routes::Routes;
use crate::auth::{Operator, RequireRole};
use crate::error::Result;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use canopy_api_types::bulk::{ApproveOperation, UpdateRequest};
use canopy_api_types::deploy::Operation;

pub fn routes() -> Routes {
    Routes::new()
        .post("/operations/update", start)
        .post("/operations/{id}/approve", approve)
        .post("/operations/{id}/pause", pause)
        .post("/operations/{id}/resume", resume)
        .post("/operations/{id}/cancel", cancel)
}

async fn start(
    State(state): State<AppState>,
    op: RequireRole<Operator>,
    Json(req): Json<UpdateRequest>,
) -> Result<(StatusCode, Json<Operation>)> {
    let operation = state.updater.start(req, op.actor()).await?;
    Ok((StatusCode::ACCEPTED, Json(operation)))
}

async fn approve(
    State(state): State<AppState>,
    op: RequireRole<Operator>,
    Path(id): Path<String>,
    Json(req): Json<ApproveOperation>,
) -> Result<Json<Operation>> {
    let id = operation_id(&id)?;
    Ok(Json(
        state
            .updater
            .approve(id, &req.fingerprint, op.actor())
            .await?,
    ))
}

async fn pause(
    State(state): State<AppState>,
    op: RequireRole<Operator>,
    Path(id): Path<String>,
) -> Result<Json<Operation>> {
    let id = operation_id(&id)?;
    Ok(Json(state.updater.pause(id, op.actor()).await?))
}

async fn resume(
    State(state): State<AppState>,
    op: RequireRole<Operator>,
    Path(id): Path<String>,
) -> Result<Json<Operation>> {
    let id = operation_id(&id)?;
    Ok(Json(state.updater.resume(id, op.actor()).await?))
}

async fn cancel(
    State(state): State<AppState>,
    op: RequireRole<Operator>,
    Path(id): Path<String>,
) -> Result<Json<Operation>> {
    let id = operation_id(&id)?;
    Ok(Json(state.updater.cancel(id, op.actor()).await?))
}
