//! Routes for agent delivery: preview and start a deploy (an operation addressed by selector),
//! follow it (JSON or server-sent events), agentless scans, the deploy key and pinned host keys.

use super::extract::{Json, Path, Query};
use super::routes::Routes;
use crate::auth::extract::MayDeploy;
use crate::auth::{Admin, Operator, RequireRole, UserAuth};
use crate::error::{Error, Result};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use canopy_api_types::deploy::{
    AgentlessResult, DeployAction, DeployPreview, DeployRequest, HostKeyForgotten, Operation,
    SshHostKey, SshPublicKey,
};
use canopy_api_types::OperationId;
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;

pub fn routes() -> Routes {
    Routes::new()
        .get("/agents/deploy/preview", preview)
        .post("/agents/deploy", start)
        .post("/agents/agentless-scan", agentless)
        .get("/agents/ssh-key", ssh_key)
        .get("/agents/host-keys", host_keys)
        .delete("/agents/host-keys/{address}", forget_host_key)
        .get("/operations", list)
        .get("/operations/{id}", one)
        .get("/operations/{id}/events", events)
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(super) struct PreviewQuery {
    /// The guests to deploy to (`cluster/home/node/pve1/**`).
    selector: String,
    /// `deploy` (default) or `uninstall`.
    action: Option<String>,
}

async fn preview(
    State(state): State<AppState>,
    _u: UserAuth,
    Query(q): Query<PreviewQuery>,
) -> Result<Json<DeployPreview>> {
    let action = match q.action.as_deref() {
        None => DeployAction::Deploy,
        Some(a) => DeployAction::parse(a).ok_or_else(|| {
            Error::Validation(format!("action: {a:?} is not deploy or uninstall"))
        })?,
    };
    let req = DeployRequest {
        selector: q.selector,
        action,
    };
    Ok(Json(state.deployer.preview(&req).await?))
}

async fn start(
    State(state): State<AppState>,
    user: MayDeploy,
    Json(req): Json<DeployRequest>,
) -> Result<(StatusCode, Json<Operation>)> {
    let operation = state.deployer.start(req, user.actor()).await?;
    Ok((StatusCode::ACCEPTED, Json(operation)))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(super) struct SelectorBody {
    /// The guests to scan (`cluster/home/**`).
    selector: String,
}

async fn agentless(
    State(state): State<AppState>,
    op: RequireRole<Operator>,
    Json(body): Json<SelectorBody>,
) -> Result<Json<Vec<AgentlessResult>>> {
    let results = state
        .deployer
        .scan_agentless(&body.selector, &op.actor())
        .await?;
    state.images.hosts_scanned(&results).await;
    Ok(Json(results))
}

async fn ssh_key(
    State(state): State<AppState>,
    _a: RequireRole<Admin>,
) -> Result<Json<SshPublicKey>> {
    let public_key = crate::deploy::public_key(&state.settings.deploy, &state.settings.data_dir)
        .map_err(Error::internal)?;
    Ok(Json(SshPublicKey { public_key }))
}

async fn host_keys(
    State(state): State<AppState>,
    _a: RequireRole<Admin>,
) -> Result<Json<Vec<SshHostKey>>> {
    Ok(Json(state.store.list_host_keys().await?))
}

async fn forget_host_key(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Path(address): Path<String>,
) -> Result<Json<HostKeyForgotten>> {
    // Pins are kept under the canonical address: `2001:db8::10` finds `[2001:db8::10]:22`.
    let address = crate::deploy::address::SshAddress::parse(&address)
        .map(|a| a.to_string())
        .unwrap_or(address);
    if state
        .store
        .forget_host_key(&address, &admin.actor())
        .await?
    {
        Ok(Json(HostKeyForgotten { forgotten: address }))
    } else {
        Err(Error::NotFound(format!("no pinned host key for {address}")))
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(super) struct ListQuery {
    /// At most this many operations, newest first (default 20, at most 200).
    limit: Option<u32>,
    /// Only operations with a guest at or below this path id (`cluster/home/node/pve1`).
    under: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    _u: UserAuth,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Operation>>> {
    let under = match q.under.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        None => None,
        Some(u) => Some(
            u.parse::<canopy_inventory::PathId>()
                .map_err(|e| Error::Validation(format!("under: {e}")))?
                .to_string(),
        ),
    };
    let filter = canopy_store::OperationFilter {
        limit: q.limit.unwrap_or(20).min(200),
        under,
    };
    Ok(Json(state.store.find_operations(&filter).await?))
}

pub(super) fn operation_id(id: &str) -> Result<OperationId> {
    id.parse()
        .map_err(|_| Error::Validation(format!("id: {id:?} is not an operation id")))
}

async fn get_operation(state: &AppState, id: OperationId) -> Result<Operation> {
    state
        .store
        .get_operation(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("operation {id} not found")))
}

async fn one(
    State(state): State<AppState>,
    _u: UserAuth,
    Path(id): Path<String>,
) -> Result<Json<Operation>> {
    Ok(Json(get_operation(&state, operation_id(&id)?).await?))
}

/// A `snapshot` event (the operation as it stands), `item` events as items change, then one
/// `done` event with the whole operation. Subscribes
/// before reading the stored state, so no change falls between the two; a client that
/// connects after the end gets `done` at once.
async fn events(
    State(state): State<AppState>,
    _u: UserAuth,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    let id = operation_id(&id)?;
    // Subscribe first, then read: a change in between is in the copy read.
    let rx = state.engine.subscribe(id);
    let current = get_operation(&state, id).await?;
    let stream = operation_stream(state, current, rx);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn operation_stream(
    state: AppState,
    current: Operation,
    rx: Option<tokio::sync::broadcast::Receiver<canopy_api_types::deploy::OperationItem>>,
) -> impl Stream<Item = std::result::Result<Event, Infallible>> {
    let id = current.id;
    futures::stream::unfold(
        (Some(current), rx, false),
        move |(snapshot, mut rx, done)| {
            let state = state.clone();
            async move {
                if done {
                    return None;
                }
                // First the items as they stand now.
                if let Some(op) = snapshot {
                    let finished = op.state.is_terminal() || rx.is_none();
                    let event = if finished {
                        json_event("done", &op)
                    } else {
                        json_event("snapshot", &op)
                    };
                    return Some((Ok(event), (None, rx, finished)));
                }
                let live = rx.as_mut()?;
                loop {
                    match live.recv().await {
                        Ok(item) => {
                            return Some((Ok(json_event("item", &item)), (None, rx, false)));
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            let op = match state.store.get_operation(id).await {
                                Ok(Some(op)) => op,
                                _ => return None,
                            };
                            return Some((Ok(json_event("done", &op)), (None, None, true)));
                        }
                    }
                }
            }
        },
    )
}

fn json_event(name: &str, value: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(value).expect("operation serialises"))
}
