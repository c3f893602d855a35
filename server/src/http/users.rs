//! Users (admin): list, create, disable and enable, another role, a new password, delete.
//! Every change that takes something away ends the user's sessions at once (their refresh
//! tokens are revoked and their access tokens stop working at the next request); none may
//! leave the server without an enabled admin (409).

use super::extract::{Json, Path};
use super::routes::Routes;
use crate::auth::{password, Admin, RequireRole};
use crate::error::Result;
use crate::pipeline::bootstrap;
use crate::state::AppState;
use axum::extract::State;
use canopy_api_types::auth::*;

pub fn routes() -> Routes {
    Routes::new()
        .get("/users", list)
        .post("/users", create)
        .delete("/users/{username}", remove)
        .post("/users/{username}/disable", disable)
        .post("/users/{username}/enable", enable)
        .put("/users/{username}/role", set_role)
        .put("/users/{username}/password", set_password)
}

async fn list(
    State(state): State<AppState>,
    _admin: RequireRole<Admin>,
) -> Result<Json<Vec<User>>> {
    Ok(Json(state.store.list_users().await?))
}

/// Create a user; the event names the admin who did it.
async fn create(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Json(req): Json<CreateUserRequest>,
) -> Result<Json<User>> {
    Ok(Json(
        bootstrap::create_user(
            state.store.as_ref(),
            &req.username,
            req.password,
            req.role,
            &admin.actor(),
        )
        .await?,
    ))
}

async fn remove(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Path(username): Path<String>,
) -> Result<Json<AccountChange>> {
    Ok(Json(
        state.store.delete_user(&username, &admin.actor()).await?,
    ))
}

async fn disable(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Path(username): Path<String>,
) -> Result<Json<AccountChange>> {
    Ok(Json(
        state
            .store
            .set_user_disabled(&username, true, &admin.actor())
            .await?,
    ))
}

async fn enable(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Path(username): Path<String>,
) -> Result<Json<AccountChange>> {
    Ok(Json(
        state
            .store
            .set_user_disabled(&username, false, &admin.actor())
            .await?,
    ))
}

async fn set_role(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Path(username): Path<String>,
    Json(req): Json<SetRoleRequest>,
) -> Result<Json<AccountChange>> {
    Ok(Json(
        state
            .store
            .set_role(&username, req.role, &admin.actor())
            .await?,
    ))
}

/// An admin sets anyone's password (a user changes their own with `POST /me/password`).
async fn set_password(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Path(username): Path<String>,
    Json(req): Json<SetPasswordRequest>,
) -> Result<Json<AccountChange>> {
    let hash = password::hash(req.password).await?;
    Ok(Json(
        state
            .store
            .set_password(&username, &hash, &admin.actor())
            .await?,
    ))
}
