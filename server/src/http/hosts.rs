//! Routes for hosts (their deletion, repair and scans), updates, the approve → dry-run →
//! confirm → install pipeline, commands, history, events, stats (for the CLI and the web UI).

use super::extract::{Json, Path, Query};
use super::routes::Routes;
use crate::auth::{Admin, Operator, RequireRole, UserAuth};
use crate::error::{Error, Result};
use crate::state::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use canopy_api_types::commands::{Command, CommandSpec};
use canopy_api_types::hosts::{Event, EventFilter, Host, HostState, RepairRequest};
use canopy_api_types::updates::*;
use canopy_api_types::{CommandId, CorrelationId, HostId};
use canopy_store::{Idempotent, NewCommand};

/// Most ids one approve/reject request may carry.
const MAX_IDS: usize = 10_000;

pub fn routes() -> Routes {
    Routes::new()
        .get("/hosts", hosts)
        .get("/hosts/{id}", host)
        .delete("/hosts/{id}", delete_host)
        .post("/hosts/{id}/repair", repair)
        .get("/hosts/{id}/commands", host_commands)
        .get("/hosts/{id}/history", host_history)
        .post("/hosts/{id}/scan", scan_now)
        .get("/updates", updates)
        .post("/updates/approve", approve)
        .post("/updates/reject", reject)
        .get("/commands/{id}", command)
        .post("/commands/{id}/confirm", confirm)
        .post("/commands/{id}/cancel", cancel)
        .post("/commands/{id}/retry", retry)
        .get("/history", history)
        .get("/events", events)
        .get("/stats", stats)
}

async fn hosts(State(state): State<AppState>, _u: UserAuth) -> Result<Json<Vec<Host>>> {
    Ok(Json(state.store.list_hosts().await?))
}

async fn host(
    State(state): State<AppState>,
    _u: UserAuth,
    Path(id): Path<HostId>,
) -> Result<Json<Host>> {
    state
        .store
        .get_host(id)
        .await?
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("host {id} not found")))
}

/// Delete a host (admin): credential revoked, detached from its guest, its waiting commands
/// cancelled; its history stays (`GET /hosts/{id}` still shows it, as `deleted`).
#[tracing::instrument(skip_all, fields(host = %id))]
async fn delete_host(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Path(id): Path<HostId>,
) -> Result<Json<Host>> {
    let host = state
        .store
        .retire_host(id, HostState::Deleted, &admin.actor(), chrono::Utc::now())
        .await?;
    state
        .discovery
        .host_changed(id)
        .await
        .map_err(Error::internal)?;
    state.wakeups.wake(id);
    Ok(Json(host))
}

/// Queue the repair of an interrupted package database the host reported
/// (`dpkg --configure -a`, `apk fix`); an operator approves it by asking for it.
#[tracing::instrument(skip_all, fields(host = %id))]
async fn repair(
    State(state): State<AppState>,
    op: RequireRole<Operator>,
    Path(id): Path<HostId>,
    Json(req): Json<RepairRequest>,
) -> Result<Json<Command>> {
    let host = state
        .store
        .get_host(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("host {id} not found")))?;
    if !host
        .package_db
        .iter()
        .any(|i| i.manager == req.manager && i.repair.is_some())
    {
        return Err(Error::Conflict(format!(
            "host {} reports no {} database problem with a repair; nothing to do",
            host.hostname,
            req.manager.as_str()
        )));
    }
    let spec = CommandSpec::Repair {
        manager: req.manager,
    };
    let timeout = state.settings.install_timeout_secs;
    queue_now(&state, id, spec, timeout, &op.actor()).await
}

async fn host_commands(
    State(state): State<AppState>,
    _u: UserAuth,
    Path(id): Path<HostId>,
) -> Result<Json<Vec<Command>>> {
    Ok(Json(state.store.list_commands(id, 200).await?))
}

async fn host_history(
    State(state): State<AppState>,
    _u: UserAuth,
    Path(id): Path<HostId>,
) -> Result<Json<Vec<VersionChange>>> {
    Ok(Json(state.store.version_history(Some(id), 1000).await?))
}

async fn history(State(state): State<AppState>, _u: UserAuth) -> Result<Json<Vec<VersionChange>>> {
    Ok(Json(state.store.version_history(None, 1000).await?))
}

#[tracing::instrument(skip_all, fields(host = %id))]
async fn scan_now(
    State(state): State<AppState>,
    op: RequireRole<Operator>,
    Path(id): Path<HostId>,
) -> Result<Json<Command>> {
    let timeout = state.settings.scan_timeout_secs;
    queue_now(&state, id, CommandSpec::Scan, timeout, &op.actor()).await
}

/// Queue `spec` for `host` (the store refuses a host that cannot run it) and wake its check-in.
pub(super) async fn queue_now(
    state: &AppState,
    host: HostId,
    spec: CommandSpec,
    timeout_secs: u32,
    actor: &canopy_store::Actor,
) -> Result<Json<Command>> {
    let new = NewCommand {
        id: CommandId::new(),
        host,
        spec,
        correlation: CorrelationId::new(),
        caused_by: None,
        timeout_secs,
    };
    let cmd = state.store.enqueue_command(new, actor).await?;
    state.wakeups.wake(host);
    Ok(Json(cmd))
}

async fn updates(
    State(state): State<AppState>,
    _u: UserAuth,
    Query(mut filter): Query<UpdateFilter>,
) -> Result<Json<Page<Update>>> {
    if let Some(sel) = filter.selector.as_deref().filter(|s| !s.trim().is_empty()) {
        let sel = canopy_inventory::Selector::parse(sel)
            .map_err(|e| Error::Validation(format!("selector: {e}")))?;
        filter.hosts = Some(state.discovery.hosts_under(&sel));
    }
    Ok(Json(state.store.list_updates(&filter).await?))
}

fn check_ids(ids: &[canopy_api_types::UpdateId]) -> Result<()> {
    if ids.is_empty() {
        return Err(Error::Validation(
            "field `ids` must list at least one update".into(),
        ));
    }
    if ids.len() > MAX_IDS {
        return Err(Error::Validation(format!(
            "field `ids` may list at most {MAX_IDS} updates"
        )));
    }
    Ok(())
}

/// Approve updates; queues one dry-run per host. Honours `Idempotency-Key`: the same
/// key with the same body returns the first answer; with another body it is 409.
#[tracing::instrument(skip_all, fields(count = req.ids.len()))]
async fn approve(
    State(state): State<AppState>,
    op: RequireRole<Operator>,
    headers: HeaderMap,
    Json(req): Json<UpdateIdsRequest>,
) -> Result<Json<ApproveResponse>> {
    check_ids(&req.ids)?;
    let correlation = CorrelationId::new();
    let timeout = state.settings.dry_run_timeout_secs;
    // With an Idempotency-Key the check, the approval and the saved answer are one
    // transaction: two requests with one key at once approve once.
    let outcome = match super::idempotency::key(&headers)? {
        Some(key) => {
            let key = canopy_store::IdempotencyKey {
                actor: op.actor().to_string(),
                key,
                request_hash: super::idempotency::body_hash(&req),
            };
            match state
                .store
                .approve_updates_once(&key, &req.ids, correlation, timeout, &op.actor())
                .await?
            {
                Idempotent::Replayed(previous) => {
                    return Ok(Json(
                        serde_json::from_value(previous).map_err(Error::internal)?,
                    ))
                }
                Idempotent::Fresh(outcome) => outcome,
            }
        }
        None => {
            state
                .store
                .approve_updates(&req.ids, correlation, timeout, &op.actor())
                .await?
        }
    };
    if outcome.approved.is_empty() {
        let reasons: Vec<String> = outcome
            .skipped
            .iter()
            .map(|(id, why)| format!("{id}: {why}"))
            .collect();
        return Err(Error::Conflict(format!(
            "nothing approved: {}",
            reasons.join("; ")
        )));
    }
    for c in &outcome.commands {
        state.wakeups.wake(c.host_id);
    }
    Ok(Json(canopy_store::approve_response(&outcome, correlation)))
}

async fn reject(
    State(state): State<AppState>,
    op: RequireRole<Operator>,
    Json(req): Json<UpdateIdsRequest>,
) -> Result<Json<RejectResponse>> {
    check_ids(&req.ids)?;
    let rejected = state.store.reject_updates(&req.ids, &op.actor()).await?;
    Ok(Json(RejectResponse { rejected }))
}

async fn command(
    State(state): State<AppState>,
    _u: UserAuth,
    Path(id): Path<CommandId>,
) -> Result<Json<Command>> {
    state
        .store
        .get_command(id)
        .await?
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("command {id} not found")))
}

#[tracing::instrument(skip_all, fields(dry_run = %id))]
async fn confirm(
    State(state): State<AppState>,
    op: RequireRole<Operator>,
    Path(id): Path<CommandId>,
) -> Result<Json<Command>> {
    let cmd = state
        .store
        .confirm_dry_run(id, state.settings.install_timeout_secs, &op.actor())
        .await?;
    state.wakeups.wake(cmd.host_id);
    Ok(Json(cmd))
}

async fn cancel(
    State(state): State<AppState>,
    op: RequireRole<Operator>,
    Path(id): Path<CommandId>,
) -> Result<Json<Command>> {
    Ok(Json(state.store.cancel_command(id, &op.actor()).await?))
}

async fn retry(
    State(state): State<AppState>,
    op: RequireRole<Operator>,
    Path(id): Path<CommandId>,
) -> Result<Json<Command>> {
    let cmd = state.store.retry_command(id, &op.actor()).await?;
    state.wakeups.wake(cmd.host_id);
    Ok(Json(cmd))
}

async fn events(
    State(state): State<AppState>,
    _u: UserAuth,
    Query(filter): Query<EventFilter>,
) -> Result<Json<Vec<Event>>> {
    Ok(Json(state.store.events(&filter).await?))
}

async fn stats(State(state): State<AppState>, _u: UserAuth) -> Result<Json<UpdateStats>> {
    Ok(Json(state.store.stats().await?))
}
