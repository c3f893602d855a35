//! The command queue on PostgreSQL: enqueue, claim (`FOR UPDATE SKIP LOCKED`),
//! start, cancel, retry, time out, and the helpers approval and confirmation share.
//! Recording results and confirming dry-runs live in `complete.rs`.

use super::{insert_events, rows, PgStore};
use crate::common::{fingerprint, micros, now_micros, prepare_event, PreparedEvent};
use crate::{
    events, Actor, CommandStore, CompleteOutcome, NewCommand, NewEvent, Result, StoreError,
    SENT_GRACE_SECS,
};
use async_trait::async_trait;
use canopy_api_types::commands::{Command, CommandResult, CommandSpec, CommandStatus};
use canopy_api_types::*;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use std::collections::BTreeMap;
use uuid::Uuid;

pub(super) use crate::command_plan::carried_packages as packages;

/// Insert a pending command and return it as stored.
#[allow(clippy::too_many_arguments)]
pub(super) async fn insert_command(
    conn: &mut PgConnection,
    id: CommandId,
    host: HostId,
    spec: &CommandSpec,
    correlation: CorrelationId,
    caused_by: Option<CommandId>,
    retried_from: Option<CommandId>,
    timeout_secs: u32,
    now: DateTime<Utc>,
) -> Result<Command> {
    let timeout = i32::try_from(timeout_secs)
        .ok()
        .filter(|t| *t > 0)
        .ok_or_else(|| {
            StoreError::Conflict(format!(
                "command timeout of {timeout_secs} s is out of range"
            ))
        })?;
    let spec_json = serde_json::to_value(spec)
        .map_err(|e| StoreError::corrupt("commands", format!("spec does not serialise: {e}")))?;
    let row = sqlx::query(
        "INSERT INTO commands (id, host_id, kind, spec, status, correlation_id, caused_by, retried_from, timeout_secs, created_at) \
         VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9) RETURNING *",
    )
    .bind(id.0)
    .bind(host.0)
    .bind(spec.kind())
    .bind(spec_json)
    .bind(correlation.0)
    .bind(caused_by.map(|c| c.0))
    .bind(retried_from.map(|c| c.0))
    .bind(timeout)
    .bind(micros(now))
    .fetch_one(conn)
    .await
    .map_err(|e| {
        if super::is_foreign_key_violation(&e) {
            StoreError::NotFound(format!("host {host}"))
        } else {
            super::unique_to_conflict(e, || format!("command {id} already exists"))
        }
    })?;
    rows::command(&row)
}

/// An event about one command: subject `host/{h}/command/{c}`, the command's correlation.
pub(super) fn command_event(
    cmd: &Command,
    event_type: &str,
    actor: &Actor,
    payload: serde_json::Value,
    now: DateTime<Utc>,
) -> PreparedEvent {
    prepare_event(
        NewEvent {
            event_type: event_type.into(),
            subject: events::command_subject(cmd.host_id, cmd.id),
            actor: actor.clone(),
            correlation: Some(cmd.correlation_id),
            causation: None,
            payload,
        },
        Some(cmd.host_id),
        now,
    )
}

/// An event about the update rows of one host, under a command's correlation.
pub(super) fn rows_event(
    cmd: &Command,
    event_type: &str,
    actor: &Actor,
    payload: serde_json::Value,
    now: DateTime<Utc>,
) -> PreparedEvent {
    prepare_event(
        NewEvent {
            event_type: event_type.into(),
            subject: format!("host/{}/updates", cmd.host_id),
            actor: actor.clone(),
            correlation: Some(cmd.correlation_id),
            causation: None,
            payload,
        },
        Some(cmd.host_id),
        now,
    )
}

pub(super) fn queued_event(cmd: &Command, actor: &Actor, now: DateTime<Utc>) -> PreparedEvent {
    let payload = serde_json::json!({ "kind": cmd.spec.kind(), "packages": packages(&cmd.spec) });
    command_event(cmd, events::COMMAND_QUEUED, actor, payload, now)
}

/// The command row, locked for the rest of the transaction.
pub(super) async fn lock(conn: &mut PgConnection, id: CommandId) -> Result<Option<PgRow>> {
    Ok(
        sqlx::query("SELECT * FROM commands WHERE id = $1 FOR NO KEY UPDATE")
            .bind(id.0)
            .fetch_optional(conn)
            .await?,
    )
}

/// Rows carried by `cmd` in one of `statuses`, by package: `(id, package, still the
/// approved versions)` — `false` when a scan changed the row since its fingerprint was bound.
pub(super) async fn carried_rows(
    conn: &mut PgConnection,
    cmd: CommandId,
    statuses: &[&str],
) -> Result<Vec<(Uuid, String, bool)>> {
    let statuses: Vec<String> = statuses.iter().map(|s| s.to_string()).collect();
    let found = sqlx::query(
        "SELECT id, manager, package, arch, current_version, available_version, fingerprint FROM updates \
         WHERE command_id = $1 AND status = ANY($2) ORDER BY package COLLATE \"C\", id FOR NO KEY UPDATE",
    )
    .bind(cmd.0)
    .bind(&statuses)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(found.len());
    for r in &found {
        let package: String = r.try_get("package")?;
        let fp = fingerprint(
            r.try_get("manager")?,
            &package,
            r.try_get("arch")?,
            r.try_get("current_version")?,
            r.try_get("available_version")?,
        );
        let same = r.try_get::<Option<String>, _>("fingerprint")?.as_deref() == Some(fp.as_str());
        out.push((r.try_get("id")?, package, same));
    }
    Ok(out)
}

pub(super) fn not_found(id: CommandId) -> StoreError {
    StoreError::NotFound(format!("command {id}"))
}

fn sort(mut cmds: Vec<Command>) -> Vec<Command> {
    cmds.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    cmds
}

#[async_trait]
impl CommandStore for PgStore {
    async fn enqueue_command(&self, new: NewCommand, actor: &Actor) -> Result<Command> {
        let now = now_micros();
        let mut tx = self.pool.begin().await?;
        let r: Result<_> = async {
            let cmd = insert_command(
                &mut tx,
                new.id,
                new.host,
                &new.spec,
                new.correlation,
                new.caused_by,
                None,
                new.timeout_secs,
                now,
            )
            .await?;
            insert_events(&mut tx, &[queued_event(&cmd, actor, now)]).await?;
            Ok(cmd)
        }
        .await;
        super::finish(tx, r).await
    }

    async fn claim_commands(
        &self,
        host: HostId,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Command>> {
        let now = micros(now);
        let mut tx = self.pool.begin().await?;
        let r: Result<_> = async {
            let rows = sqlx::query(
                "UPDATE commands SET status = 'sent', sent_at = $1, \
                     deadline = $1 + make_interval(secs => timeout_secs + $2) \
                 WHERE id IN (SELECT id FROM commands WHERE host_id = $3 AND status = 'pending' \
                              ORDER BY created_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
                 RETURNING *",
            )
            .bind(now)
            .bind(SENT_GRACE_SECS as f64)
            .bind(host.0)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
            let cmds = sort(rows.iter().map(rows::command).collect::<Result<_>>()?);
            let actor = Actor::Agent(host);
            let evs: Vec<_> = cmds
                .iter()
                .map(|c| {
                    command_event(
                        c,
                        events::COMMAND_SENT,
                        &actor,
                        serde_json::json!({ "kind": c.spec.kind() }),
                        now,
                    )
                })
                .collect();
            insert_events(&mut tx, &evs).await?;
            Ok(cmds)
        }
        .await;
        super::finish(tx, r).await
    }

    async fn mark_running(
        &self,
        host: HostId,
        id: CommandId,
        now: DateTime<Utc>,
    ) -> Result<Command> {
        let now = micros(now);
        let mut tx = self.pool.begin().await?;
        let r: Result<_> = async {
            let row = lock(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
            let cmd = rows::command(&row)?;
            if cmd.host_id != host {
                return Err(not_found(id));
            }
            match cmd.status {
                CommandStatus::Running => return Ok(cmd),
                CommandStatus::Sent => {}
                s => {
                    return Err(StoreError::Conflict(format!(
                        "command {id} is {}, not sent",
                        s.as_str()
                    )))
                }
            }
            let row = sqlx::query(
                "UPDATE commands SET status = 'running', started_at = $1, \
                     deadline = $1 + make_interval(secs => timeout_secs) \
                 WHERE id = $2 RETURNING *",
            )
            .bind(now)
            .bind(id.0)
            .fetch_one(&mut *tx)
            .await?;
            let cmd = rows::command(&row)?;
            let ev = command_event(
                &cmd,
                events::COMMAND_RUNNING,
                &Actor::Agent(host),
                serde_json::json!({}),
                now,
            );
            insert_events(&mut tx, &[ev]).await?;
            Ok(cmd)
        }
        .await;
        super::finish(tx, r).await
    }

    async fn complete_command(
        &self,
        host: HostId,
        id: CommandId,
        result: CommandResult,
        now: DateTime<Utc>,
    ) -> Result<CompleteOutcome> {
        self.complete(host, id, result, now).await
    }

    async fn confirm_dry_run(
        &self,
        dry_run: CommandId,
        timeout_secs: u32,
        actor: &Actor,
    ) -> Result<Command> {
        self.confirm(dry_run, timeout_secs, actor).await
    }

    async fn cancel_command(&self, id: CommandId, actor: &Actor) -> Result<Command> {
        let now = now_micros();
        let mut tx = self.pool.begin().await?;
        let r: Result<_> = async {
            let row = lock(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
            let cmd = rows::command(&row)?;
            if !matches!(cmd.status, CommandStatus::Pending | CommandStatus::Sent) {
                return Err(StoreError::Conflict(format!(
                    "command {id} is {}; only pending or sent commands can be cancelled",
                    cmd.status.as_str()
                )));
            }
            let row = sqlx::query(
                "UPDATE commands SET status = 'cancelled', finished_at = $1, error = $2 WHERE id = $3 RETURNING *",
            )
            .bind(now)
            .bind(format!("cancelled by {actor}"))
            .bind(id.0)
            .fetch_one(&mut *tx)
            .await?;
            let cmd = rows::command(&row)?;
            // The rows keep `command_id` so that a retry can carry them again.
            let released: Vec<Uuid> = sqlx::query_scalar(
                "UPDATE updates SET status = 'pending', updated_at = $1 \
                 WHERE command_id = $2 AND status IN ('dry_run', 'installing') RETURNING id",
            )
            .bind(now)
            .bind(id.0)
            .fetch_all(&mut *tx)
            .await?;
            let ev = command_event(&cmd, events::COMMAND_CANCELLED, actor, serde_json::json!({ "command_id": id, "update_ids": released }), now);
            insert_events(&mut tx, &[ev]).await?;
            Ok(cmd)
        }
        .await;
        super::finish(tx, r).await
    }

    async fn retry_command(&self, id: CommandId, actor: &Actor) -> Result<Command> {
        let now = now_micros();
        let mut tx = self.pool.begin().await?;
        let r: Result<_> = async {
            let row = lock(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
            let old = rows::command(&row)?;
            if !matches!(
                old.status,
                CommandStatus::Failed | CommandStatus::TimedOut | CommandStatus::Cancelled
            ) {
                return Err(StoreError::Conflict(format!(
                    "command {id} is {}; only failed, timed-out or cancelled commands can be retried",
                    old.status.as_str()
                )));
            }
            let carried = if packages(&old.spec).is_empty() {
                Vec::new()
            } else {
                carried_rows(&mut tx, id, &["failed", "pending"]).await?
            };
            let usable: Vec<&(Uuid, String, bool)> = carried.iter().filter(|(_, _, same)| *same).collect();
            let mut pkgs: Vec<String> = usable.iter().map(|(_, p, _)| p.clone()).collect();
            pkgs.dedup();
            let (spec, row_status) = crate::command_plan::retry_spec(&old.spec, pkgs);
            if row_status.is_some() && usable.is_empty() {
                return Err(StoreError::Conflict(format!(
                    "command {id} carries no updates that can be retried (they were re-approved, rejected or changed since)"
                )));
            }
            let new = insert_command(
                &mut tx,
                CommandId::new(),
                old.host_id,
                &spec,
                old.correlation_id,
                old.caused_by,
                Some(old.id),
                old.timeout_secs,
                now,
            )
            .await?;
            let moved: Vec<Uuid> = usable.iter().map(|(u, _, _)| *u).collect();
            if let Some(status) = row_status {
                sqlx::query("UPDATE updates SET command_id = $1, status = $2, updated_at = $3 WHERE id = ANY($4)")
                    .bind(new.id.0)
                    .bind(status)
                    .bind(now)
                    .bind(&moved)
                    .execute(&mut *tx)
                    .await?;
            }
            let payload = serde_json::json!({ "command_id": id, "retry": new.id, "update_ids": moved });
            let evs = [
                command_event(&old, events::COMMAND_RETRIED, actor, payload, now),
                queued_event(&new, actor, now),
            ];
            insert_events(&mut tx, &evs).await?;
            Ok(new)
        }
        .await;
        super::finish(tx, r).await
    }

    async fn expire_commands(&self, now: DateTime<Utc>) -> Result<Vec<Command>> {
        let now = micros(now);
        let mut tx = self.pool.begin().await?;
        let r: Result<_> = async {
            let rows = sqlx::query(
                "UPDATE commands SET status = 'timed_out', finished_at = $1, \
                     error = format('no result within %s s (agent gone or command hung)', timeout_secs) \
                 WHERE status IN ('sent', 'running') AND deadline < $1 RETURNING *",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            let cmds = sort(rows.iter().map(rows::command).collect::<Result<_>>()?);
            if cmds.is_empty() {
                return Ok(cmds);
            }
            let ids: Vec<Uuid> = cmds.iter().map(|c| c.id.0).collect();
            let failed: Vec<(Uuid, Uuid)> = sqlx::query_as(
                "UPDATE updates SET status = 'failed', updated_at = $1 \
                 WHERE command_id = ANY($2) AND status IN ('dry_run', 'installing') RETURNING command_id, id",
            )
            .bind(now)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
            let mut by_cmd: BTreeMap<Uuid, Vec<Uuid>> = BTreeMap::new();
            for (cmd, row) in failed {
                by_cmd.entry(cmd).or_default().push(row);
            }
            let evs: Vec<_> = cmds
                .iter()
                .map(|c| {
                    let payload = serde_json::json!({
                        "error": c.error, "failed_updates": by_cmd.get(&c.id.0).cloned().unwrap_or_default(),
                    });
                    command_event(c, events::COMMAND_TIMED_OUT, &Actor::System, payload, now)
                })
                .collect();
            insert_events(&mut tx, &evs).await?;
            Ok(cmds)
        }
        .await;
        super::finish(tx, r).await
    }

    async fn get_command(&self, id: CommandId) -> Result<Option<Command>> {
        let row = sqlx::query("SELECT * FROM commands WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::command).transpose()
    }

    async fn list_commands(&self, host: HostId, limit: u32) -> Result<Vec<Command>> {
        let rows = sqlx::query(
            "SELECT * FROM commands WHERE host_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(host.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::command).collect()
    }
}
