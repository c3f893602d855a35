//! The command queue on SQLite: claim in `BEGIN IMMEDIATE`, results applied to the
//! update rows in the same transaction that completes the command.

use super::rows;
use super::{insert_events, SqliteStore, Tx};
use crate::common::{micros, now_micros, prepare_event, result_hash, PreparedEvent};
use crate::{events, Actor, CommandStore, CompleteOutcome, NewCommand, NewEvent, Result, StoreError, SENT_GRACE_SECS};
use async_trait::async_trait;
use canopy_api_types::commands::{Command, CommandResult, CommandSpec, CommandStatus};
use canopy_api_types::*;
use chrono::{DateTime, Duration, Utc};

#[allow(clippy::too_many_arguments)]
pub(super) async fn insert_command(
    tx: &mut Tx<'_>,
    id: CommandId,
    host: HostId,
    spec: &CommandSpec,
    correlation: CorrelationId,
    caused_by: Option<CommandId>,
    retried_from: Option<CommandId>,
    timeout_secs: u32,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO commands (id, host_id, kind, spec, status, correlation_id, caused_by, retried_from, timeout_secs, created_at) \
         VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
    )
    .bind(id.to_string())
    .bind(host.to_string())
    .bind(spec.kind())
    .bind(serde_json::to_string(spec).expect("spec serialises"))
    .bind(correlation.to_string())
    .bind(caused_by.map(|c| c.to_string()))
    .bind(retried_from.map(|c| c.to_string()))
    .bind(i64::from(timeout_secs.max(1)))
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => StoreError::NotFound(format!("host {host}")),
        _ => StoreError::Database(e),
    })?;
    Ok(())
}

pub(super) fn queued_event(
    host: HostId,
    id: CommandId,
    spec: &CommandSpec,
    correlation: CorrelationId,
    actor: &Actor,
    now: DateTime<Utc>,
) -> PreparedEvent {
    command_event(host, id, events::COMMAND_QUEUED, correlation, actor, serde_json::json!({ "spec": spec }), now)
}

fn command_event(
    host: HostId,
    id: CommandId,
    event_type: &str,
    correlation: CorrelationId,
    actor: &Actor,
    payload: serde_json::Value,
    now: DateTime<Utc>,
) -> PreparedEvent {
    prepare_event(
        NewEvent {
            event_type: event_type.into(),
            subject: events::command_subject(host, id),
            actor: actor.clone(),
            correlation: Some(correlation),
            causation: None,
            payload,
        },
        Some(host),
        now,
    )
}

pub(super) async fn fetch(tx: &mut Tx<'_>, id: CommandId) -> Result<Command> {
    fetch_opt(tx, id).await?.ok_or_else(|| StoreError::NotFound(format!("command {id}")))
}

async fn fetch_opt(tx: &mut Tx<'_>, id: CommandId) -> Result<Option<Command>> {
    let row = sqlx::query("SELECT * FROM commands WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(rows::command).transpose()
}

/// Move the update rows carried by `cmd` to `status` (and optionally re-point them).
async fn move_rows(tx: &mut Tx<'_>, cmd: CommandId, status: &str, new_cmd: Option<CommandId>, closed: bool, now: DateTime<Utc>) -> Result<Vec<String>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "UPDATE updates SET status = ?, command_id = ?, updated_at = ?, closed_at = CASE WHEN ? THEN ? ELSE closed_at END \
         WHERE command_id = ? AND status NOT IN ('installed', 'reconciled', 'rejected') RETURNING id",
    )
    .bind(status)
    .bind(new_cmd.map(|c| c.to_string()))
    .bind(now)
    .bind(closed)
    .bind(now)
    .bind(cmd.to_string())
    .fetch_all(&mut **tx)
    .await?;
    Ok(ids)
}

#[async_trait]
impl CommandStore for SqliteStore {
    async fn enqueue_command(&self, new: NewCommand, actor: &Actor) -> Result<Command> {
        let now = now_micros();
        let mut tx = self.write_tx().await?;
        insert_command(&mut tx, new.id, new.host, &new.spec, new.correlation, new.caused_by, None, new.timeout_secs, now).await?;
        insert_events(&mut tx, &[queued_event(new.host, new.id, &new.spec, new.correlation, actor, now)]).await?;
        let c = fetch(&mut tx, new.id).await?;
        tx.commit().await?;
        Ok(c)
    }

    async fn claim_commands(&self, host: HostId, now: DateTime<Utc>, limit: u32) -> Result<Vec<Command>> {
        let now = micros(now);
        let mut tx = self.write_tx().await?;
        let pending: Vec<(String, i64)> = sqlx::query_as(
            "SELECT id, timeout_secs FROM commands WHERE host_id = ? AND status = 'pending' ORDER BY created_at LIMIT ?",
        )
        .bind(host.to_string())
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut evs = Vec::new();
        for (id, timeout) in pending {
            let row = sqlx::query(
                "UPDATE commands SET status = 'sent', sent_at = ?, deadline = ? WHERE id = ? AND status = 'pending' RETURNING *",
            )
            .bind(now)
            .bind(now + Duration::seconds(timeout + SENT_GRACE_SECS))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
            let c = rows::command(&row)?;
            evs.push(command_event(host, c.id, events::COMMAND_SENT, c.correlation_id, &Actor::Agent(host), serde_json::json!({}), now));
            out.push(c);
        }
        insert_events(&mut tx, &evs).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn mark_running(&self, host: HostId, id: CommandId, now: DateTime<Utc>) -> Result<Command> {
        let now = micros(now);
        let mut tx = self.write_tx().await?;
        let c = fetch_opt(&mut tx, id).await?.filter(|c| c.host_id == host).ok_or_else(|| StoreError::NotFound(format!("command {id}")))?;
        match c.status {
            CommandStatus::Running => return Ok(c),
            s if s.is_terminal() => return Err(StoreError::Conflict(format!("command {id} is already {}", s.as_str()))),
            _ => {}
        }
        sqlx::query("UPDATE commands SET status = 'running', started_at = ?, deadline = ? WHERE id = ?")
            .bind(now)
            .bind(now + Duration::seconds(i64::from(c.timeout_secs)))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        insert_events(&mut tx, &[command_event(host, id, events::COMMAND_RUNNING, c.correlation_id, &Actor::Agent(host), serde_json::json!({}), now)]).await?;
        let c = fetch(&mut tx, id).await?;
        tx.commit().await?;
        Ok(c)
    }

    async fn complete_command(&self, host: HostId, id: CommandId, result: CommandResult, now: DateTime<Utc>) -> Result<CompleteOutcome> {
        let now = micros(now);
        let hash = result_hash(&result);
        let mut tx = self.write_tx().await?;
        let c = fetch_opt(&mut tx, id).await?.filter(|c| c.host_id == host).ok_or_else(|| StoreError::NotFound(format!("command {id}")))?;
        let stored_hash: Option<String> = sqlx::query_scalar("SELECT result_hash FROM commands WHERE id = ?")
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        if let Some(stored) = stored_hash {
            return if stored == hash {
                Ok(CompleteOutcome::Duplicate(c))
            } else {
                Err(StoreError::Conflict(format!("command {id} already has a different result")))
            };
        }
        let result_json = serde_json::to_string(&result).expect("result serialises");
        let actor = Actor::Agent(host);
        if matches!(c.status, CommandStatus::TimedOut | CommandStatus::Cancelled) {
            sqlx::query("UPDATE commands SET result = ?, result_hash = ? WHERE id = ?")
                .bind(&result_json)
                .bind(&hash)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            let ev = command_event(host, id, events::COMMAND_LATE_RESULT, c.correlation_id, &actor, serde_json::json!({ "success": result.success, "exit_code": result.exit_code, "status": c.status }), now);
            insert_events(&mut tx, &[ev]).await?;
            let c = fetch(&mut tx, id).await?;
            tx.commit().await?;
            return Ok(CompleteOutcome::Late(c));
        }
        if c.status.is_terminal() {
            return Err(StoreError::Conflict(format!("command {id} is already {}", c.status.as_str())));
        }
        let status = if result.success { "completed" } else { "failed" };
        sqlx::query("UPDATE commands SET status = ?, finished_at = ?, result = ?, result_hash = ?, started_at = COALESCE(started_at, ?) WHERE id = ?")
            .bind(status)
            .bind(now)
            .bind(&result_json)
            .bind(&hash)
            .bind(now)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let mut evs = vec![command_event(
            host,
            id,
            if result.success { events::COMMAND_COMPLETED } else { events::COMMAND_FAILED },
            c.correlation_id,
            &actor,
            serde_json::json!({ "exit_code": result.exit_code, "summary": result.summary }),
            now,
        )];
        match (&c.spec, result.success) {
            (CommandSpec::DryRun { .. }, true) => {
                let ids = move_rows(&mut tx, id, "awaiting_confirmation", Some(id), false, now).await?;
                evs.push(command_event(host, id, events::DRY_RUN_READY, c.correlation_id, &actor, serde_json::json!({ "updates": ids, "planned": result.planned }), now));
            }
            (CommandSpec::Install { .. }, true) => {
                sqlx::query(
                    "INSERT INTO update_version_history (id, host_id, update_id, manager, package, from_version, to_version, command_id, correlation_id, installed_at) \
                     SELECT lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-a' || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6))), \
                            host_id, id, manager, package, current_version, available_version, ?, ?, ? \
                     FROM updates WHERE command_id = ? AND status = 'installing'",
                )
                .bind(id.to_string())
                .bind(c.correlation_id.to_string())
                .bind(now)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
                let ids = move_rows(&mut tx, id, "installed", Some(id), true, now).await?;
                evs.push(command_event(host, id, events::UPDATES_INSTALLED, c.correlation_id, &actor, serde_json::json!({ "updates": ids }), now));
            }
            (CommandSpec::Scan, _) => {}
            (_, false) => {
                let ids = move_rows(&mut tx, id, "failed", Some(id), false, now).await?;
                evs.push(command_event(host, id, events::UPDATES_FAILED, c.correlation_id, &actor, serde_json::json!({ "updates": ids, "exit_code": result.exit_code }), now));
            }
        }
        insert_events(&mut tx, &evs).await?;
        let c = fetch(&mut tx, id).await?;
        tx.commit().await?;
        Ok(CompleteOutcome::Applied(c))
    }

    async fn confirm_dry_run(&self, dry_run: CommandId, timeout_secs: u32, actor: &Actor) -> Result<Command> {
        let now = now_micros();
        let mut tx = self.write_tx().await?;
        let c = fetch(&mut tx, dry_run).await?;
        let CommandSpec::DryRun { packages } = &c.spec else {
            return Err(StoreError::Conflict(format!("command {dry_run} is a {}, not a dry-run", c.spec.kind())));
        };
        if c.status != CommandStatus::Completed || !c.result.as_ref().is_some_and(|r| r.success) {
            return Err(StoreError::Conflict(format!("dry-run {dry_run} has not succeeded (status {})", c.status.as_str())));
        }
        let confirmed: Option<String> = sqlx::query_scalar("SELECT confirmed_by FROM commands WHERE id = ?")
            .bind(dry_run.to_string())
            .fetch_one(&mut *tx)
            .await?;
        if let Some(install) = confirmed {
            return Err(StoreError::Conflict(format!("dry-run {dry_run} was already confirmed (install {install})")));
        }
        let waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM updates WHERE command_id = ? AND status = 'awaiting_confirmation'")
            .bind(dry_run.to_string())
            .fetch_one(&mut *tx)
            .await?;
        if waiting == 0 {
            return Err(StoreError::Conflict(format!(
                "no update is waiting on dry-run {dry_run} any more (rejected, reconciled or changed since)"
            )));
        }
        let install = CommandId::new();
        let spec = CommandSpec::Install { packages: packages.clone() };
        insert_command(&mut tx, install, c.host_id, &spec, c.correlation_id, Some(dry_run), None, timeout_secs, now).await?;
        sqlx::query("UPDATE commands SET confirmed_by = ? WHERE id = ?")
            .bind(install.to_string())
            .bind(dry_run.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE updates SET status = 'installing', command_id = ?, updated_at = ? WHERE command_id = ? AND status = 'awaiting_confirmation'")
            .bind(install.to_string())
            .bind(now)
            .bind(dry_run.to_string())
            .execute(&mut *tx)
            .await?;
        let evs = [
            command_event(c.host_id, dry_run, events::INSTALL_CONFIRMED, c.correlation_id, actor, serde_json::json!({ "install": install }), now),
            queued_event(c.host_id, install, &spec, c.correlation_id, actor, now),
        ];
        insert_events(&mut tx, &evs).await?;
        let out = fetch(&mut tx, install).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn cancel_command(&self, id: CommandId, actor: &Actor) -> Result<Command> {
        let now = now_micros();
        let mut tx = self.write_tx().await?;
        let c = fetch(&mut tx, id).await?;
        if !matches!(c.status, CommandStatus::Pending | CommandStatus::Sent) {
            return Err(StoreError::Conflict(format!("command {id} is {}; only pending or sent commands can be cancelled", c.status.as_str())));
        }
        sqlx::query("UPDATE commands SET status = 'cancelled', finished_at = ?, error = ? WHERE id = ?")
            .bind(now)
            .bind(format!("cancelled by {actor}"))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        move_rows(&mut tx, id, "pending", None, false, now).await?;
        insert_events(&mut tx, &[command_event(c.host_id, id, events::COMMAND_CANCELLED, c.correlation_id, actor, serde_json::json!({}), now)]).await?;
        let c = fetch(&mut tx, id).await?;
        tx.commit().await?;
        Ok(c)
    }

    async fn retry_command(&self, id: CommandId, actor: &Actor) -> Result<Command> {
        let now = now_micros();
        let mut tx = self.write_tx().await?;
        let c = fetch(&mut tx, id).await?;
        if !matches!(c.status, CommandStatus::Failed | CommandStatus::TimedOut | CommandStatus::Cancelled) {
            return Err(StoreError::Conflict(format!("command {id} is {}; only failed, timed-out or cancelled commands can be retried", c.status.as_str())));
        }
        let new = CommandId::new();
        insert_command(&mut tx, new, c.host_id, &c.spec, c.correlation_id, c.caused_by, Some(id), c.timeout_secs, now).await?;
        let row_status = match c.spec {
            CommandSpec::Install { .. } => "installing",
            _ => "dry_run",
        };
        sqlx::query("UPDATE updates SET status = ?, command_id = ?, updated_at = ? WHERE command_id = ? AND status IN ('failed', 'pending')")
            .bind(row_status)
            .bind(new.to_string())
            .bind(now)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let evs = [
            command_event(c.host_id, id, events::COMMAND_RETRIED, c.correlation_id, actor, serde_json::json!({ "retry": new }), now),
            queued_event(c.host_id, new, &c.spec, c.correlation_id, actor, now),
        ];
        insert_events(&mut tx, &evs).await?;
        let out = fetch(&mut tx, new).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn expire_commands(&self, now: DateTime<Utc>) -> Result<Vec<Command>> {
        let now = micros(now);
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(
            "UPDATE commands SET status = 'timed_out', finished_at = ?1, \
             error = 'no result within ' || timeout_secs || ' s (agent gone or command hung)' \
             WHERE status IN ('sent', 'running') AND deadline < ?1 RETURNING *",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::new();
        let mut evs = Vec::new();
        for r in &rows {
            let c = rows::command(r)?;
            let ids = move_rows(&mut tx, c.id, "failed", Some(c.id), false, now).await?;
            evs.push(command_event(c.host_id, c.id, events::COMMAND_TIMED_OUT, c.correlation_id, &Actor::System, serde_json::json!({ "updates": ids, "error": c.error }), now));
            out.push(c);
        }
        if !evs.is_empty() {
            insert_events(&mut tx, &evs).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn get_command(&self, id: CommandId) -> Result<Option<Command>> {
        let row = sqlx::query("SELECT * FROM commands WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::command).transpose()
    }

    async fn list_commands(&self, host: HostId, limit: u32) -> Result<Vec<Command>> {
        let rows = sqlx::query("SELECT * FROM commands WHERE host_id = ? ORDER BY created_at DESC LIMIT ?")
            .bind(host.to_string())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::command).collect()
    }
}
