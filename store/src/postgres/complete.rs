//! Applying an agent's result to the projections, and turning a successful dry-run
//! into an install, on PostgreSQL. Both lock the command row first so that a
//! duplicate submission, a timeout sweep and a confirmation never interleave.

use super::commands::{insert_command, lock, not_found};
use super::{insert_events, rows, PgStore};
use crate::command_events as ev;
use crate::common::{fingerprint, micros, now_micros, result_hash, PreparedEvent};
use crate::{Actor, CompleteOutcome, Result, StoreError};
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
    now: DateTime<Utc>,
) -> Result<Option<PreparedEvent>> {
    let Some((from, to)) = crate::command_plan::row_transition(&cmd.spec, result.success) else {
        return Ok(None);
    };
    // Lock the carried rows in id order first, as ingest and approve do, so the UPDATE
    // below cannot deadlock with a report of the same host.
    sqlx::query("SELECT id FROM updates WHERE command_id = $1 ORDER BY id FOR NO KEY UPDATE")
        .bind(cmd.id.0)
        .execute(&mut *conn)
        .await?;
    let moved: Vec<Installed> = sqlx::query_as(
        "UPDATE updates SET status = $1, updated_at = $2, \
             closed_at = CASE WHEN $1 = 'installed' THEN $2 ELSE closed_at END \
         WHERE command_id = $3 AND status = $4 \
         RETURNING id, host_id, manager, package, current_version, available_version",
    )
    .bind(to)
    .bind(now)
    .bind(cmd.id.0)
    .bind(from)
    .fetch_all(&mut *conn)
    .await?;
    if to == "installed" && !moved.is_empty() {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO update_version_history (id, host_id, update_id, manager, package, from_version, \
             to_version, command_id, correlation_id, installed_at) ",
        );
        q.push_values(&moved, |mut b, r| {
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
    let mut ids: Vec<UpdateId> = moved.iter().map(|r| UpdateId(r.id)).collect();
    ids.sort();
    Ok(Some(ev::rows_moved(cmd, to, &ids, result, now)))
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
                    let row = sqlx::query(
                        "UPDATE commands SET result = $1, result_hash = $2, late = TRUE WHERE id = $3 RETURNING *",
                    )
                    .bind(&result_json)
                    .bind(&hash)
                    .bind(id.0)
                    .fetch_one(&mut *tx)
                    .await?;
                    let cmd = rows::command(&row)?;
                    insert_events(&mut tx, &[ev::late_result(&cmd, &result, now)]).await?;
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
            let deadline: Option<DateTime<Utc>> = row.try_get("deadline")?;
            let late = crate::command_plan::is_late(deadline, cmd.overdue_at, now);
            let status = if result.success { "completed" } else { "failed" };
            let row = sqlx::query(
                "UPDATE commands SET status = $1, finished_at = $2, result = $3, result_hash = $4, late = $5 \
                 WHERE id = $6 RETURNING *",
            )
            .bind(status)
            .bind(now)
            .bind(&result_json)
            .bind(&hash)
            .bind(late)
            .bind(id.0)
            .fetch_one(&mut *tx)
            .await?;
            let cmd = rows::command(&row)?;
            let mut evs = vec![ev::finished(&cmd, &result, late, now)];
            evs.extend(apply_to_rows(&mut tx, &cmd, &result, now).await?);
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
            let CommandSpec::DryRun { packages: planned, .. } = &dry.spec else {
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
            let expected: BTreeSet<String> =
                crate::command_plan::carried_packages(&dry.spec).into_iter().collect();
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
            let mut moved: Vec<UpdateId> = moved.into_iter().map(UpdateId).collect();
            moved.sort();
            let evs = [
                ev::install_confirmed(&dry, &install, actor, &moved, now),
                ev::queued(&install, actor, now),
            ];
            insert_events(&mut tx, &evs).await?;
            Ok(install)
        }
        .await;
        super::finish(tx, r).await
    }
}
