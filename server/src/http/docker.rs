//! Docker inside guests (docs/design.md §2.7): the containers agents reported, with their
//! image updates and checks; the registries with their rate-limit budget; credentials per
//! registry (sealed like PVE token secrets, never shown); a check cycle now.

use super::extract::Json;
use super::routes::Routes;
use crate::auth::{Admin, Operator, RequireRole, UserAuth};
use crate::error::{Error, Result};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use canopy_api_types::docker::{CheckSummary, ContainerView, RegistryLogin, RegistryStatus};
use canopy_inventory::Selector;
use canopy_store::RegistryCredential;
use serde::Deserialize;

pub(super) fn routes() -> Routes {
    Routes::new()
        .get("/containers", containers)
        .get("/registries", registries)
        .put("/registries/{registry}/credentials", set_credentials)
        .delete("/registries/{registry}/credentials", remove_credentials)
        .post("/images/check", check_now)
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub(super) struct ContainersQuery {
    /// Only containers this selector selects (`cluster/home/**[image=nginx]`); a guest
    /// selected brings its containers along.
    #[serde(default)]
    selector: Option<String>,
}

async fn containers(
    State(state): State<AppState>,
    _u: UserAuth,
    Query(q): Query<ContainersQuery>,
) -> Result<Json<Vec<ContainerView>>> {
    let selector = q
        .selector
        .as_deref()
        .map(Selector::parse)
        .transpose()
        .map_err(|e| Error::Validation(format!("selector: {e}")))?;
    let all = state.images.containers().await.map_err(Error::internal)?;
    let Some(sel) = selector else {
        return Ok(Json(all));
    };
    let tree = state.discovery.tree();
    let chosen: std::collections::HashSet<String> = tree
        .select(&sel)
        .into_iter()
        .flat_map(|p| {
            let inside: Vec<String> = tree.descendants(&p).map(|v| v.id.to_string()).collect();
            std::iter::once(p.to_string()).chain(inside)
        })
        .collect();
    Ok(Json(
        all.into_iter()
            .filter(|c| c.id.as_ref().is_some_and(|id| chosen.contains(id)))
            .collect(),
    ))
}

async fn registries(
    State(state): State<AppState>,
    _u: UserAuth,
) -> Result<Json<Vec<RegistryStatus>>> {
    Ok(Json(
        state.images.registries().await.map_err(Error::internal)?,
    ))
}

/// `docker.io`, `ghcr.io`, `registry.lan:5000`: a host name with an optional port.
fn check_registry(registry: &str) -> Result<()> {
    let ok = !registry.is_empty()
        && registry.len() <= 253
        && registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if ok {
        Ok(())
    } else {
        Err(Error::Validation(format!(
            "registry {registry:?}: expected a host name with an optional port (docker.io, ghcr.io, registry.lan:5000)"
        )))
    }
}

async fn set_credentials(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Path(registry): Path<String>,
    Json(login): Json<RegistryLogin>,
) -> Result<Json<RegistryStatus>> {
    check_registry(&registry)?;
    if !matches!(login.kind.as_str(), "basic" | "token") {
        return Err(Error::Validation(format!(
            "kind {:?}: expected basic or token",
            login.kind
        )));
    }
    if login.secret.is_empty() {
        return Err(Error::Validation("secret: empty".into()));
    }
    if login.kind == "basic" && login.username.as_deref().unwrap_or("").is_empty() {
        return Err(Error::Validation(
            "username: basic credentials need a user name".into(),
        ));
    }
    let credential = RegistryCredential {
        kind: login.kind.clone(),
        username: login.username.clone(),
        secret_sealed: state.discovery.sealer().seal(&login.secret),
    };
    state
        .store
        .set_registry_credential(&registry, Some(credential), &admin.actor())
        .await?;
    state.images.credentials_changed().await;
    status_of(&state, &registry).await
}

async fn remove_credentials(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Path(registry): Path<String>,
) -> Result<Json<RegistryStatus>> {
    check_registry(&registry)?;
    state
        .store
        .set_registry_credential(&registry, None, &admin.actor())
        .await?;
    state.images.credentials_changed().await;
    status_of(&state, &registry).await
}

async fn status_of(state: &AppState, registry: &str) -> Result<Json<RegistryStatus>> {
    let all = state.images.registries().await.map_err(Error::internal)?;
    Ok(Json(
        all.into_iter()
            .find(|r| r.registry == registry)
            .unwrap_or_else(|| RegistryStatus {
                registry: registry.to_string(),
                ..RegistryStatus::default()
            }),
    ))
}

async fn check_now(
    State(state): State<AppState>,
    _op: RequireRole<Operator>,
) -> Result<Json<CheckSummary>> {
    Ok(Json(state.images.cycle().await.map_err(Error::internal)?))
}
