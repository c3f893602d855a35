//! The command queue on PostgreSQL: enqueue, claim (`FOR UPDATE SKIP LOCKED`),
//! start, cancel, retry, time out, and the helpers approval and confirmation share.
//! Recording results and confirming dry-runs live in `complete.rs`.

use super::{insert_events, rows, PgStore};
use crate::command_events as ev;
use crate::command_plan::{self, host_cannot_run};
use crate::common::{fingerprint, micros, now_micros};
use crate::{
    Actor, CommandStore, CompleteOutcome, Expired, Expiry, ExpiryPolicy, NewCommand, Result,
    StoreError, SENT_GRACE_SECS,
};
use async_trait::async_trait;
use canopy_api_types::commands::{Command, CommandResult, CommandSpec, CommandStatus};
use canopy_api_types::*;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
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

/// `Conflict` unless `host` exists, is active and has an agent.
pub(super) async fn require_runnable_host(conn: &mut PgConnection, host: HostId) -> Result<()> {
    let row: Option<(String, String, bool)> =
        sqlx::query_as("SELECT hostname, state, agentless FROM hosts WHERE id = $1")
            .bind(host.0)
            .fetch_optional(&mut *conn)
            .await?;
    let (hostname, state, agentless) =
        row.ok_or_else(|| StoreError::NotFound(format!("host {host}")))?;
    match host_cannot_run(&hostname, &state, agentless) {
        Some(why) => Err(StoreError::Conflict(why)),
        None => Ok(()),
    }
}

/// Move the rows `cmd` carries in `dry_run`/`installing` to `to`; returns their ids, sorted.
pub(super) async fn release_rows(
    conn: &mut PgConnection,
    cmd: CommandId,
    to: &str,
    now: DateTime<Utc>,
) -> Result<Vec<UpdateId>> {
    let mut ids: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE updates SET status = $1, updated_at = $2 \
         WHERE command_id = $3 AND status IN ('dry_run', 'installing') RETURNING id",
    )
    .bind(to)
    .bind(now)
    .bind(cmd.0)
    .fetch_all(&mut *conn)
    .await?;
    ids.sort();
    Ok(ids.into_iter().map(UpdateId).collect())
}

/// Set `status`, `finished_at` and `error` of a command; returns it as stored.
async fn end_command(
    conn: &mut PgConnection,
    id: CommandId,
    status: &str,
    error: &str,
    now: DateTime<Utc>,
) -> Result<Command> {
    let row = sqlx::query(
        "UPDATE commands SET status = $1, finished_at = $2, error = $3 WHERE id = $4 RETURNING *",
    )
    .bind(status)
    .bind(now)
    .bind(error)
    .bind(id.0)
    .fetch_one(&mut *conn)
    .await?;
    rows::command(&row)
}

/// Cancel `id` (pending or sent) for `reason`; its rows go back to `pending` and keep
/// `command_id`, so that a retry can carry them again.
pub(super) async fn cancel_in(
    conn: &mut PgConnection,
    id: CommandId,
    actor: &Actor,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Command> {
    let cmd = end_command(conn, id, "cancelled", reason, now).await?;
    let released = release_rows(conn, id, "pending", now).await?;
    insert_events(conn, &[ev::cancelled(&cmd, actor, reason, &released, now)]).await?;
    Ok(cmd)
}

fn expired(command: Command, expiry: Expiry, reason: &str) -> Expired {
    Expired {
        command,
        expiry,
        reason: reason.to_string(),
    }
}

#[async_trait]
impl CommandStore for PgStore {
    async fn enqueue_command(&self, new: NewCommand, actor: &Actor) -> Result<Command> {
        let now = now_micros();
        let mut tx = self.pool.begin().await?;
        let r: Result<_> = async {
            require_runnable_host(&mut tx, new.host).await?;
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
            insert_events(&mut tx, &[ev::queued(&cmd, actor, now)]).await?;
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
                "UPDATE commands SET status = 'sent', sent_at = $1, deadline = $2 \
                 WHERE id IN (SELECT id FROM commands WHERE host_id = $3 AND status = 'pending' \
                              ORDER BY created_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
                 RETURNING *",
            )
            .bind(now)
            .bind(now + chrono::Duration::seconds(SENT_GRACE_SECS))
            .bind(host.0)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
            let cmds = sort(rows.iter().map(rows::command).collect::<Result<_>>()?);
            let evs: Vec<_> = cmds.iter().map(|c| ev::sent(c, now)).collect();
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
                s => return Err(StoreError::Conflict(command_plan::start_refused(id, s))),
            }
            let deadline = now + chrono::Duration::seconds(i64::from(cmd.timeout_secs));
            let row = sqlx::query(
                "UPDATE commands SET status = 'running', started_at = $1, deadline = $2 \
                 WHERE id = $3 RETURNING *",
            )
            .bind(now)
            .bind(deadline)
            .bind(id.0)
            .fetch_one(&mut *tx)
            .await?;
            let cmd = rows::command(&row)?;
            insert_events(&mut tx, &[ev::started(&cmd, deadline, now)]).await?;
            Ok(cmd)
        }
        .await;
        super::finish(tx, r).await
    }

    async fn heartbeat(&self, host: HostId, id: CommandId, now: DateTime<Utc>) -> Result<Command> {
        let row = sqlx::query(
            "UPDATE commands SET heartbeat_at = $1 WHERE id = $2 AND host_id = $3 AND status = 'running' \
             RETURNING *",
        )
        .bind(micros(now))
        .bind(id.0)
        .bind(host.0)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return rows::command(&row);
        }
        match self.get_command(id).await? {
            Some(c) if c.host_id == host => Err(StoreError::Conflict(format!(
                "command {id} is {}, not running",
                c.status.as_str()
            ))),
            _ => Err(not_found(id)),
        }
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
                return Err(StoreError::Conflict(command_plan::cancel_refused(
                    id, cmd.status,
                )));
            }
            cancel_in(&mut tx, id, actor, &format!("cancelled by {actor}"), now).await
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
            require_runnable_host(&mut tx, old.host_id).await?;
            let carried = if packages(&old.spec).is_empty() {
                Vec::new()
            } else {
                carried_rows(&mut tx, id, &["failed", "pending"]).await?
            };
            let usable: Vec<&(Uuid, String, bool)> = carried.iter().filter(|(_, _, same)| *same).collect();
            let mut pkgs: Vec<String> = usable.iter().map(|(_, p, _)| p.clone()).collect();
            pkgs.dedup();
            let (spec, row_status) = command_plan::retry_spec(&old.spec, pkgs);
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
            let mut moved: Vec<Uuid> = usable.iter().map(|(u, _, _)| *u).collect();
            moved.sort();
            if let Some(status) = row_status {
                sqlx::query("UPDATE updates SET command_id = $1, status = $2, updated_at = $3 WHERE id = ANY($4)")
                    .bind(new.id.0)
                    .bind(status)
                    .bind(now)
                    .bind(&moved)
                    .execute(&mut *tx)
                    .await?;
            }
            let moved: Vec<UpdateId> = moved.into_iter().map(UpdateId).collect();
            let evs = [
                ev::retried(&old, new.id, actor, &moved, now),
                ev::queued(&new, actor, now),
            ];
            insert_events(&mut tx, &evs).await?;
            Ok(new)
        }
        .await;
        super::finish(tx, r).await
    }

    async fn expire_commands(
        &self,
        now: DateTime<Utc>,
        policy: &ExpiryPolicy,
    ) -> Result<Vec<Expired>> {
        let now = micros(now);
        let mut tx = self.pool.begin().await?;
        let r: Result<_> = async {
            let mut out = Vec::new();
            let mut evs = Vec::new();

            // Claimed, never started: it never ran, its rows go back to pending.
            let unstarted: Vec<Uuid> = sqlx::query_scalar(
                "SELECT id FROM commands WHERE status = 'sent' AND deadline < $1 \
                 ORDER BY created_at, id FOR NO KEY UPDATE",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            let reason = command_plan::not_started_reason();
            for id in unstarted {
                let id = CommandId(id);
                let cmd = end_command(&mut tx, id, "timed_out", &reason, now).await?;
                let released = release_rows(&mut tx, id, "pending", now).await?;
                evs.push(ev::timed_out(&cmd, &reason, &released, now));
                out.push(expired(cmd, Expiry::NotStarted, &reason));
            }

            // Running past the deadline: overdue, left to finish.
            let overdue = sqlx::query(
                "UPDATE commands SET overdue_at = $1 WHERE status = 'running' AND deadline < $1 \
                 AND overdue_at IS NULL RETURNING *",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            for row in &overdue {
                let cmd = rows::command(row)?;
                let deadline: Option<DateTime<Utc>> = row.try_get("deadline")?;
                evs.push(ev::overdue(&cmd, deadline, now));
                out.push(expired(cmd, Expiry::Overdue, "past its deadline; left to finish"));
            }

            // Overdue and silent: the agent vanished, the outcome is unknown, its rows fail.
            let silent: Vec<(Uuid, Option<DateTime<Utc>>)> = sqlx::query_as(
                "SELECT id, COALESCE(heartbeat_at, started_at) FROM commands WHERE status = 'running' \
                 AND overdue_at IS NOT NULL AND COALESCE(heartbeat_at, started_at) < $1 \
                 ORDER BY created_at, id FOR NO KEY UPDATE",
            )
            .bind(now - policy.vanished_after)
            .fetch_all(&mut *tx)
            .await?;
            for (id, last) in silent {
                let id = CommandId(id);
                let reason = command_plan::vanished_reason(last);
                let cmd = end_command(&mut tx, id, "timed_out", &reason, now).await?;
                let failed = release_rows(&mut tx, id, "failed", now).await?;
                evs.push(ev::timed_out(&cmd, &reason, &failed, now));
                if !failed.is_empty() {
                    evs.push(ev::updates_failed(&cmd, &Actor::System, &failed, &reason, None, now));
                }
                out.push(expired(cmd, Expiry::Vanished, &reason));
            }
            insert_events(&mut tx, &evs).await?;

            // Waiting for a host that cannot run it, or is offline too long.
            type Waiting = (Uuid, String, String, bool, Option<DateTime<Utc>>, DateTime<Utc>, DateTime<Utc>);
            let offline_cutoff = now - policy.offline_after;
            let waiting: Vec<Waiting> = sqlx::query_as(
                "SELECT c.id, h.hostname, h.state, h.agentless, h.last_seen, h.registered_at, c.created_at \
                 FROM commands c JOIN hosts h ON h.id = c.host_id \
                 WHERE c.status IN ('pending', 'sent') AND (h.state <> 'active' OR h.agentless \
                     OR (COALESCE(h.last_seen, h.registered_at) < $1 AND c.created_at < $1)) \
                 ORDER BY c.created_at, c.id FOR NO KEY UPDATE OF c",
            )
            .bind(offline_cutoff)
            .fetch_all(&mut *tx)
            .await?;
            for (id, hostname, state, agentless, last_seen, registered, created) in waiting {
                let id = CommandId(id);
                if let Some(reason) = host_cannot_run(&hostname, &state, agentless) {
                    let cmd = cancel_in(&mut tx, id, &Actor::System, &reason, now).await?;
                    out.push(expired(cmd, Expiry::HostCannotRun, &reason));
                    continue;
                }
                if last_seen.unwrap_or(registered) < offline_cutoff && created < offline_cutoff {
                    let reason = command_plan::offline_reason(&hostname, last_seen, policy);
                    let cmd = end_command(&mut tx, id, "timed_out", &reason, now).await?;
                    let released = release_rows(&mut tx, id, "pending", now).await?;
                    insert_events(&mut tx, &[ev::timed_out(&cmd, &reason, &released, now)]).await?;
                    out.push(expired(cmd, Expiry::HostOffline, &reason));
                }
            }
            Ok(out)
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
