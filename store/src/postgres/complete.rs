//! Applying an agent's result to the projections, and turning a successful dry-run
//! into an install, on PostgreSQL. Both lock the command row first so that a
//! duplicate submission, a timeout sweep and a confirmation never interleave.

use super::commands::{
    command_event, insert_command, lock, not_found, packages, queued_event, rows_event,
};
use super::{insert_events, rows, PgStore};
use crate::common::{fingerprint, micros, now_micros, result_hash, PreparedEvent};
use crate::{events, Actor, CompleteOutcome, Result, StoreError};
use canopy_api_types::commands::{Command, CommandResult, CommandSpec, CommandStatus};
use canopy_api_types::*;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use std::collections::BTreeSet;
use uuid::Uuid;

/// A row an install completed, as version history needs it.
#[derive(sqlx::FromRow)]
struct Installed {
    id: Uuid,
    host_id: Uuid,
    manager: String,
    package: String,
    current_version: String,
    available_version: String,
}

/// Move the command's rows according to its result; returns the projection event.
async fn apply_to_rows(
    conn: &mut PgConnection,
    cmd: &Command,
    result: &CommandResult,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Option<PreparedEvent>> {
    if !super::commands::packages(&cmd.spec).is_empty() {
        // Lock the carried rows in id order first, as ingest and approve do, so the
        // UPDATEs below cannot deadlock with a report of the same host.
        sqlx::query("SELECT id FROM updates WHERE command_id = $1 ORDER BY id FOR NO KEY UPDATE")
            .bind(cmd.id.0)
            .execute(&mut *conn)
            .await?;
    }
    let ev = match (&cmd.spec, result.success) {
        (CommandSpec::Scan | CommandSpec::Repair { .. }, _) => None,
        (CommandSpec::DryRun { .. }, true) => {
            let ids: Vec<Uuid> = sqlx::query_scalar(
                "UPDATE updates SET status = 'awaiting_confirmation', updated_at = $1 \
                 WHERE command_id = $2 AND status = 'dry_run' RETURNING id",
            )
            .bind(now)
            .bind(cmd.id.0)
            .fetch_all(&mut *conn)
            .await?;
            let payload =
                serde_json::json!({ "dry_run": cmd.id, "ids": ids, "planned": result.planned });
            Some(rows_event(cmd, events::DRY_RUN_READY, actor, payload, now))
        }
        (CommandSpec::Install { .. }, true) => {
            let done: Vec<Installed> = sqlx::query_as(
                "UPDATE updates SET status = 'installed', closed_at = $1, updated_at = $1 \
                 WHERE command_id = $2 AND status = 'installing' \
                 RETURNING id, host_id, manager, package, current_version, available_version",
            )
            .bind(now)
            .bind(cmd.id.0)
            .fetch_all(&mut *conn)
            .await?;
            if !done.is_empty() {
                let mut q = QueryBuilder::<Postgres>::new(
                    "INSERT INTO update_version_history (id, host_id, update_id, manager, package, from_version, \
                     to_version, command_id, correlation_id, installed_at) ",
                );
                q.push_values(&done, |mut b, r| {
                    b.push_bind(Uuid::new_v4())
                        .push_bind(r.host_id)
                        .push_bind(r.id)
                        .push_bind(&r.manager)
                        .push_bind(&r.package)
                        .push_bind(&r.current_version)
                        .push_bind(&r.available_version)
                        .push_bind(cmd.id.0)
                        .push_bind(cmd.correlation_id.0)
                        .push_bind(now);
                });
                q.build().execute(&mut *conn).await?;
            }
            let ids: Vec<Uuid> = done.iter().map(|r| r.id).collect();
            Some(rows_event(
                cmd,
                events::UPDATES_INSTALLED,
                actor,
                serde_json::json!({ "ids": ids }),
                now,
            ))
        }
        (_, false) => {
            let ids: Vec<Uuid> = sqlx::query_scalar(
                "UPDATE updates SET status = 'failed', updated_at = $1 \
                 WHERE command_id = $2 AND status IN ('dry_run', 'installing') RETURNING id",
            )
            .bind(now)
            .bind(cmd.id.0)
            .fetch_all(&mut *conn)
            .await?;
            let payload = serde_json::json!({ "ids": ids, "exit_code": result.exit_code, "summary": result.summary });
            Some(rows_event(cmd, events::UPDATES_FAILED, actor, payload, now))
        }
    };
    Ok(ev)
}

impl PgStore {
    pub(super) async fn complete(
        &self,
        host: HostId,
        id: CommandId,
        result: CommandResult,
        now: DateTime<Utc>,
    ) -> Result<CompleteOutcome> {
        let now = micros(now);
        let hash = result_hash(&result);
        let result_json = serde_json::to_value(&result).map_err(|e| {
            StoreError::corrupt("commands", format!("result does not serialise: {e}"))
        })?;
        let actor = Actor::Agent(host);
        let mut tx = self.pool.begin().await?;
        let r: Result<_> = async {
            let row = lock(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
            let cmd = rows::command(&row)?;
            if cmd.host_id != host {
                return Err(not_found(id));
            }
            let stored: Option<String> = row.try_get("result_hash")?;
            match stored {
                Some(h) if h == hash => return Ok(CompleteOutcome::Duplicate(cmd)),
                Some(_) => return Err(StoreError::Conflict("command already has a different result".into())),
                None => {}
            }
            match cmd.status {
                CommandStatus::TimedOut | CommandStatus::Cancelled => {
                    let row = sqlx::query("UPDATE commands SET result = $1, result_hash = $2 WHERE id = $3 RETURNING *")
                        .bind(&result_json)
                        .bind(&hash)
                        .bind(id.0)
                        .fetch_one(&mut *tx)
                        .await?;
                    let cmd = rows::command(&row)?;
                    let payload = serde_json::json!({
                        "status": cmd.status.as_str(), "success": result.success, "exit_code": result.exit_code,
                    });
                    insert_events(&mut tx, &[command_event(&cmd, events::COMMAND_LATE_RESULT, &actor, payload, now)]).await?;
                    return Ok(CompleteOutcome::Late(cmd));
                }
                CommandStatus::Sent | CommandStatus::Running => {}
                s => {
                    return Err(StoreError::Conflict(format!(
                        "command {id} is {}; a result is accepted once it was sent",
                        s.as_str()
                    )));
                }
            }
            let status = if result.success { "completed" } else { "failed" };
            let row = sqlx::query(
                "UPDATE commands SET status = $1, finished_at = $2, result = $3, result_hash = $4 WHERE id = $5 RETURNING *",
            )
            .bind(status)
            .bind(now)
            .bind(&result_json)
            .bind(&hash)
            .bind(id.0)
            .fetch_one(&mut *tx)
            .await?;
            let cmd = rows::command(&row)?;
            let event_type = if result.success {
                events::COMMAND_COMPLETED
            } else {
                events::COMMAND_FAILED
            };
            let payload = serde_json::json!({
                "kind": cmd.spec.kind(), "success": result.success, "exit_code": result.exit_code, "summary": result.summary,
            });
            let mut evs = vec![command_event(&cmd, event_type, &actor, payload, now)];
            evs.extend(apply_to_rows(&mut tx, &cmd, &result, &actor, now).await?);
            insert_events(&mut tx, &evs).await?;
            Ok(CompleteOutcome::Applied(cmd))
        }
        .await;
        super::finish(tx, r).await
    }

    pub(super) async fn confirm(
        &self,
        dry_run: CommandId,
        timeout_secs: u32,
        actor: &Actor,
    ) -> Result<Command> {
        let now = now_micros();
        let mut tx = self.pool.begin().await?;
        let r: Result<_> = async {
            let row = lock(&mut tx, dry_run).await?.ok_or_else(|| not_found(dry_run))?;
            let dry = rows::command(&row)?;
            let CommandSpec::DryRun { packages: planned } = &dry.spec else {
                return Err(StoreError::Conflict(format!(
                    "command {dry_run} is a {} command, not a dry-run",
                    dry.spec.kind()
                )));
            };
            if dry.status != CommandStatus::Completed || !dry.result.as_ref().is_some_and(|r| r.success) {
                return Err(StoreError::Conflict(format!(
                    "dry-run {dry_run} is {}; only a successful, completed dry-run can be confirmed",
                    dry.status.as_str()
                )));
            }
            if let Some(install) = row.try_get::<Option<Uuid>, _>("confirmed_by")? {
                return Err(StoreError::Conflict(format!(
                    "dry-run {dry_run} was already confirmed (install command {install})"
                )));
            }
            let carried = sqlx::query(
                "SELECT id, manager, package, arch, current_version, available_version, fingerprint, status \
                 FROM updates WHERE command_id = $1 ORDER BY id FOR NO KEY UPDATE",
            )
            .bind(dry_run.0)
            .fetch_all(&mut *tx)
            .await?;
            let mut names = BTreeSet::new();
            for r in &carried {
                let id: Uuid = r.try_get("id")?;
                let status: String = r.try_get("status")?;
                if status != "awaiting_confirmation" {
                    return Err(StoreError::Conflict(format!(
                        "update {id} of dry-run {dry_run} is {status}, not awaiting confirmation"
                    )));
                }
                let now_fp = fingerprint(
                    r.try_get("manager")?,
                    r.try_get("package")?,
                    r.try_get("arch")?,
                    r.try_get("current_version")?,
                    r.try_get("available_version")?,
                );
                if r.try_get::<Option<String>, _>("fingerprint")?.as_deref() != Some(now_fp.as_str()) {
                    return Err(StoreError::Conflict(format!(
                        "update {id} changed since dry-run {dry_run} ran (a new scan reported other versions); approve it again"
                    )));
                }
                names.insert(r.try_get::<String, _>("package")?);
            }
            let expected: BTreeSet<String> = planned.iter().cloned().collect();
            if carried.is_empty() || names != expected {
                return Err(StoreError::Conflict(format!(
                    "the updates of dry-run {dry_run} changed since it ran (rejected or re-scanned); approve them again"
                )));
            }
            let spec = crate::command_plan::install_spec(planned.clone(), dry.result.as_ref());
            let install = insert_command(
                &mut tx,
                CommandId::new(),
                dry.host_id,
                &spec,
                dry.correlation_id,
                Some(dry.id),
                None,
                timeout_secs,
                now,
            )
            .await?;
            sqlx::query("UPDATE commands SET confirmed_by = $1 WHERE id = $2")
                .bind(install.id.0)
                .bind(dry_run.0)
                .execute(&mut *tx)
                .await?;
            let moved: Vec<Uuid> = sqlx::query_scalar(
                "UPDATE updates SET status = 'installing', command_id = $1, updated_at = $2 WHERE command_id = $3 RETURNING id",
            )
            .bind(install.id.0)
            .bind(now)
            .bind(dry_run.0)
            .fetch_all(&mut *tx)
            .await?;
            let payload = serde_json::json!({
                "dry_run": dry.id, "install": install.id, "packages": packages(&spec), "ids": moved,
            });
            let evs = [
                command_event(&dry, events::INSTALL_CONFIRMED, actor, payload, now),
                queued_event(&install, actor, now),
            ];
            insert_events(&mut tx, &evs).await?;
            Ok(install)
        }
        .await;
        super::finish(tx, r).await
    }
}
