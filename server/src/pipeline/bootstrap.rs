//! The first admin: from `CANOPY_ADMIN_PASSWORD(_FILE)` at start-up, or from
//! `canopy admin create-user`.

use crate::auth::password;
use crate::error::{Error, Result};
use crate::settings::Settings;
use canopy_api_types::auth::{Role, User};
use canopy_store::{Actor, Store};

/// Create the configured admin if a password is configured and the user is absent.
pub async fn ensure_admin(store: &dyn Store, settings: &Settings) -> Result<Option<User>> {
    let Some(pw) = &settings.admin_password else {
        if store.count_users().await? == 0 {
            tracing::warn!(
                "no users yet: set CANOPY_ADMIN_PASSWORD(_FILE) or run `canopy admin create-user NAME --role admin`"
            );
        }
        return Ok(None);
    };
    if store
        .user_by_name(&settings.admin_username)
        .await?
        .is_some()
    {
        return Ok(None);
    }
    let hash = password::hash(pw.expose().to_string()).await?;
    let user = store
        .create_user(&settings.admin_username, &hash, Role::Admin, &Actor::System)
        .await?;
    tracing::info!(username = %user.username, "created the first admin from CANOPY_ADMIN_PASSWORD");
    Ok(Some(user))
}

/// Create a user, recorded with `actor` (the admin over HTTP, `system` from the CLI's
/// direct database access); `Conflict` when taken.
pub async fn create_user(
    store: &dyn Store,
    username: &str,
    pw: String,
    role: Role,
    actor: &Actor,
) -> Result<User> {
    if username.is_empty()
        || username.len() > 64
        || username
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::Validation(
            "username must be 1-64 characters without spaces".into(),
        ));
    }
    let hash = password::hash(pw).await?;
    Ok(store.create_user(username, &hash, role, actor).await?)
}
