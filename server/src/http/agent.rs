//! Routes for agents: register, long-poll check-in, report upload, command results.
//! Separate router, separate auth extractor (`AgentAuth`).

use super::client_ip::{self, ClientIp};
use super::extract::{Json, Path};
use super::routes::{Routes, Verb};
use crate::auth::secrets::{random_token, sha256_hex};
use crate::auth::AgentAuth;
use crate::error::{Error, Result};
use crate::pipeline::{checkin, report};
use crate::state::AppState;
use axum::extract::State;
use canopy_api_types::agent::*;
use canopy_api_types::commands::{HeartbeatAck, StartAccepted};
use canopy_api_types::CommandId;
use canopy_store::{CompleteOutcome, NewHost};

/// Reports of many thousands of packages are a few MB.
const REPORT_BODY_LIMIT: usize = 32 * 1024 * 1024;

pub fn routes() -> Routes {
    Routes::new()
        .post("/agent/register", register)
        .post("/agent/checkin", checkin_route)
        .with_body_limit(
            Verb::Post,
            "/agent/report",
            upload_report,
            REPORT_BODY_LIMIT,
        )
        .post("/agent/commands/{id}/started", started)
        .post("/agent/commands/{id}/heartbeat", heartbeat)
        .post("/agent/commands/{id}/result", result)
}

#[tracing::instrument(skip_all, fields(hostname = %req.facts.hostname))]
async fn register(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    Json(req): Json<RegisterRequest>,
) -> Result<Json<RegisterResponse>> {
    // Only failed registrations count against the address (a deploy enrols many guests at
    // once from one address): every error return below charges it.
    let attempt = state
        .register_limiter
        .failures(client)
        .map_err(|wait| client_ip::too_many(&format!("from {client}"), wait))?;
    if req.facts.machine_id.trim().is_empty() || req.facts.hostname.trim().is_empty() {
        return Err(Error::Validation(
            "facts.machine_id and facts.hostname must not be empty".into(),
        ));
    }
    // Re-enrolment needs the host's current credential; a stale or foreign one is ignored
    // (the registration then creates a new host, as a registration token alone does).
    let reenrol = match req.current_token.as_deref() {
        Some(token) => {
            let host = crate::auth::extract::verify_agent_token(&state, token).await?;
            if host.is_none() {
                tracing::warn!("registration carried a current credential that is not valid; registering a new host");
            }
            host.map(|h| h.id)
        }
        None => None,
    };
    let secret = random_token();
    let host = state
        .store
        .register_host(
            &sha256_hex(&req.registration_token),
            NewHost {
                id: canopy_api_types::HostId::new(),
                facts: req.facts,
                credential_hash: sha256_hex(&secret),
                reenrol,
            },
            chrono::Utc::now(),
        )
        .await?;
    attempt.succeeded();
    if host.duplicate_machine_id {
        tracing::warn!(host = %host.id, machine_id = %host.machine_id, "another host reports the same machine-id (a cloned guest?)");
    }
    tracing::info!(host = %host.id, "agent registered");
    if let Err(e) = state.discovery.host_registered(&host).await {
        tracing::warn!(host = %host.id, error = %format!("{e:#}"), "cannot attach the host to its guest");
    }
    Ok(Json(RegisterResponse {
        host_id: host.id,
        agent_token: format!("{}.{}", host.id, secret),
    }))
}

#[tracing::instrument(skip_all, fields(host = %agent.0.id))]
async fn checkin_route(
    State(state): State<AppState>,
    agent: AgentAuth,
    Json(req): Json<CheckinRequest>,
) -> Result<Json<CheckinResponse>> {
    Ok(Json(checkin::checkin(&state, &agent.0, req).await?))
}

#[tracing::instrument(skip_all, fields(host = %agent.0.id))]
async fn upload_report(
    State(state): State<AppState>,
    agent: AgentAuth,
    Json(upload): Json<ReportUpload>,
) -> Result<Json<ReportAccepted>> {
    let report::Validated {
        report: ingest,
        mut rejected,
        rejected_containers,
    } = report::validate(upload, &agent.0.os_id);
    let had_containers = ingest.containers.is_some();
    let outcome = state
        .store
        .ingest_report(agent.host_id(), ingest, &agent.actor())
        .await?;
    if had_containers {
        // Its image updates from the stored checks, before the tree shows the host again.
        if let Err(e) = state.images.host_reported(agent.host_id()).await {
            tracing::warn!(error = %format!("{e:#}"), "image updates not worked out for the report");
        }
    }
    tree_follows(&state, agent.host_id()).await;
    rejected.extend(outcome.rejected);
    rejected.sort_by_key(|r| r.index);
    if !rejected.is_empty() {
        tracing::warn!(rejected = rejected.len(), "report rows rejected");
    }
    Ok(Json(ReportAccepted {
        accepted: outcome.accepted,
        rejected,
        reconciled: outcome.reconciled,
        rejected_containers,
    }))
}

/// The start handshake: 200 = the agent may run it now (its deadline counts from here);
/// 409 (cancelled, timed out, never sent) or 404 = it must not run it.
#[tracing::instrument(skip_all, fields(host = %agent.0.id, command = %id))]
async fn started(
    State(state): State<AppState>,
    agent: AgentAuth,
    Path(id): Path<CommandId>,
) -> Result<Json<StartAccepted>> {
    let cmd = state
        .store
        .mark_running(agent.host_id(), id, chrono::Utc::now())
        .await?;
    let deadline = cmd
        .started_at
        .map(|t| t + chrono::Duration::seconds(i64::from(cmd.timeout_secs)))
        .ok_or_else(|| Error::internal(format!("command {id} is running without a start time")))?;
    Ok(Json(StartAccepted {
        id,
        status: cmd.status,
        deadline,
    }))
}

/// The agent is still working on `id`; tells it whether the command is overdue.
async fn heartbeat(
    State(state): State<AppState>,
    agent: AgentAuth,
    Path(id): Path<CommandId>,
) -> Result<Json<HeartbeatAck>> {
    let cmd = state
        .store
        .heartbeat(agent.host_id(), id, chrono::Utc::now())
        .await?;
    Ok(Json(HeartbeatAck {
        overdue: cmd.overdue_at.is_some(),
    }))
}

#[tracing::instrument(skip_all, fields(host = %agent.0.id, command = %id))]
async fn result(
    State(state): State<AppState>,
    agent: AgentAuth,
    Path(id): Path<CommandId>,
    Json(sub): Json<ResultSubmission>,
) -> Result<Json<ResultRecorded>> {
    let outcome = state
        .store
        .complete_command(agent.host_id(), id, sub.result, chrono::Utc::now())
        .await?;
    let recorded = match &outcome {
        CompleteOutcome::Applied(_) => Recorded::Applied,
        CompleteOutcome::Duplicate(_) => Recorded::Duplicate,
        CompleteOutcome::Late(_) => Recorded::Late,
    };
    if recorded != Recorded::Duplicate {
        // An install's rows are closed: the host's counts changed.
        tree_follows(&state, agent.host_id()).await;
    }
    Ok(Json(ResultRecorded {
        recorded,
        status: outcome.command().status,
    }))
}

/// The tree shows the host's new counts; what is stored is the answer, so a failure to read
/// it back is logged, not returned (the host's next change shows it).
async fn tree_follows(state: &AppState, host: canopy_api_types::HostId) {
    if let Err(e) = state.discovery.host_changed(host).await {
        tracing::warn!(%host, error = %format!("{e:#}"), "the tree could not follow the host");
    }
}
