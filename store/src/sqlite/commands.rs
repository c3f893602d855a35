//! The command queue on SQLite: enqueue, claim (`UPDATE … RETURNING` inside
//! `BEGIN IMMEDIATE`), the start handshake, heartbeats, cancel, retry and the sweep.
//! Results and confirmations are in `complete.rs`, shared building blocks in `queue.rs`,
//! the rules and the events in `command_plan` and `command_events`.

use super::queue::{carried_rows, end_command, insert_commands, load, move_rows, release_rows};
use super::rows;
use super::{insert_events, ts, SqliteStore, Tx};
use crate::command_events as ev;
use crate::command_plan::{self, host_cannot_run};
use crate::common::{micros, now_micros};
use crate::{
    Actor, CommandStore, CompleteOutcome, Expired, Expiry, ExpiryPolicy, NewCommand, Result,
    StoreError, SENT_GRACE_SECS,
};
use async_trait::async_trait;
use canopy_api_types::commands::{Command, CommandResult, CommandStatus};
use canopy_api_types::{CommandId, HostId, UpdateId};
use chrono::{DateTime, Duration, Utc};
use sqlx::{QueryBuilder, Sqlite};

fn not_found(id: CommandId) -> StoreError {
    StoreError::NotFound(format!("command {id}"))
}

/// `Conflict` unless `host` exists, is active and has an agent.
pub(super) async fn require_runnable_host(tx: &mut Tx, host: HostId) -> Result<()> {
    let row: Option<(String, String, bool)> =
        sqlx::query_as("SELECT hostname, state, agentless FROM hosts WHERE id = ?")
            .bind(host.to_string())
            .fetch_optional(&mut **tx)
            .await?;
    let (hostname, state, agentless) =
        row.ok_or_else(|| StoreError::NotFound(format!("host {host}")))?;
    match host_cannot_run(&hostname, &state, agentless) {
        Some(why) => Err(StoreError::Conflict(why)),
        None => Ok(()),
    }
}

#[async_trait]
impl CommandStore for SqliteStore {
    async fn enqueue_command(&self, new: NewCommand, actor: &Actor) -> Result<Command> {
        let now = now_micros();
        let mut tx = self.begin_immediate().await?;
        require_runnable_host(&mut tx, new.host).await?;
        let mut cmds = insert_commands(&mut tx, std::slice::from_ref(&new), None, now).await?;
        let cmd = cmds.pop().ok_or_else(|| not_found(new.id))?;
        insert_events(&mut tx, &[ev::queued(&cmd, actor, now)]).await?;
        tx.commit().await?;
        Ok(cmd)
    }

    async fn claim_commands(
        &self,
        host: HostId,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Command>> {
        let now = micros(now);
        // Most check-ins find nothing: answer those from a plain read, without taking
        // the database's write lock (a command queued right after this is not lost:
        // the check-in waits on its wake-up and claims again).
        let any: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM commands WHERE host_id = ? AND status = 'pending')",
        )
        .bind(host.to_string())
        .fetch_one(&self.pool)
        .await?;
        if !any {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_immediate().await?;
        let picked: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM commands WHERE host_id = ? AND status = 'pending' \
             ORDER BY created_at, rowid LIMIT ?",
        )
        .bind(host.to_string())
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if picked.is_empty() {
            return Ok(Vec::new());
        }
        let mut qb: QueryBuilder<'_, Sqlite> =
            QueryBuilder::new("UPDATE commands SET status = 'sent', sent_at = ");
        qb.push_bind(ts(now))
            .push(", deadline = ")
            .push_bind(ts(now + Duration::seconds(SENT_GRACE_SECS)))
            .push(" WHERE status = 'pending' AND id IN (");
        let mut ids = qb.separated(", ");
        for id in &picked {
            ids.push_bind(id.clone());
        }
        qb.push(") RETURNING *");
        let claimed = qb.build().fetch_all(&mut *tx).await?;
        let mut cmds = claimed
            .iter()
            .map(rows::command)
            .collect::<Result<Vec<_>>>()?;
        cmds.sort_by_key(|c| picked.iter().position(|id| *id == c.id.to_string()));
        let evs: Vec<_> = cmds.iter().map(|c| ev::sent(c, now)).collect();
        insert_events(&mut tx, &evs).await?;
        tx.commit().await?;
        Ok(cmds)
    }

    async fn mark_running(
        &self,
        host: HostId,
        id: CommandId,
        now: DateTime<Utc>,
    ) -> Result<Command> {
        let now = micros(now);
        let mut tx = self.begin_immediate().await?;
        let cmd = match load(&mut tx, id).await? {
            Some(l) if l.cmd.host_id == host => l.cmd,
            _ => return Err(not_found(id)),
        };
        match cmd.status {
            CommandStatus::Running => return Ok(cmd),
            CommandStatus::Sent => {}
            s => return Err(StoreError::Conflict(command_plan::start_refused(id, s))),
        }
        let deadline = now + Duration::seconds(i64::from(cmd.timeout_secs));
        let row = sqlx::query(
            "UPDATE commands SET status = 'running', started_at = ?, deadline = ? WHERE id = ? RETURNING *",
        )
        .bind(ts(now))
        .bind(ts(deadline))
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let cmd = rows::command(&row)?;
        insert_events(&mut tx, &[ev::started(&cmd, deadline, now)]).await?;
        tx.commit().await?;
        Ok(cmd)
    }

    async fn heartbeat(&self, host: HostId, id: CommandId, now: DateTime<Utc>) -> Result<Command> {
        let row = sqlx::query(
            "UPDATE commands SET heartbeat_at = ? WHERE id = ? AND host_id = ? AND status = 'running' \
             RETURNING *",
        )
        .bind(ts(micros(now)))
        .bind(id.to_string())
        .bind(host.to_string())
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
        let mut tx = self.begin_immediate().await?;
        let cmd = load(&mut tx, id).await?.ok_or_else(|| not_found(id))?.cmd;
        if !matches!(cmd.status, CommandStatus::Pending | CommandStatus::Sent) {
            return Err(StoreError::Conflict(command_plan::cancel_refused(
                id, cmd.status,
            )));
        }
        let reason = format!("cancelled by {actor}");
        cancel_in(&mut tx, id, actor, &reason, now).await?;
        tx.commit().await?;
        self.get_command(id).await?.ok_or_else(|| not_found(id))
    }

    async fn retry_command(&self, id: CommandId, actor: &Actor) -> Result<Command> {
        let now = now_micros();
        let mut tx = self.begin_immediate().await?;
        let old = load(&mut tx, id).await?.ok_or_else(|| not_found(id))?.cmd;
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
        let carried = if command_plan::carried_packages(&old.spec).is_empty() {
            Vec::new()
        } else {
            carried_rows(&mut tx, id, &["failed", "pending"]).await?
        };
        let usable: Vec<&(UpdateId, String, bool)> =
            carried.iter().filter(|(_, _, same)| *same).collect();
        let mut packages: Vec<String> = usable.iter().map(|(_, p, _)| p.clone()).collect();
        packages.dedup();
        let (spec, row_status) = command_plan::retry_spec(&old.spec, packages);
        if row_status.is_some() && usable.is_empty() {
            return Err(StoreError::Conflict(format!(
                "command {id} carries no updates that can be retried (they were re-approved, rejected or changed since)"
            )));
        }
        let new = NewCommand {
            id: CommandId::new(),
            host: old.host_id,
            spec,
            correlation: old.correlation_id,
            caused_by: old.caused_by,
            timeout_secs: old.timeout_secs,
        };
        let cmd = insert_commands(&mut tx, std::slice::from_ref(&new), Some(id), now)
            .await?
            .pop()
            .ok_or_else(|| not_found(new.id))?;
        let mut ids: Vec<UpdateId> = usable.iter().map(|(u, _, _)| *u).collect();
        ids.sort();
        if let Some(status) = row_status {
            move_rows(&mut tx, &ids, status, cmd.id, &ts(now)).await?;
        }
        let evs = [
            ev::retried(&old, cmd.id, actor, &ids, now),
            ev::queued(&cmd, actor, now),
        ];
        insert_events(&mut tx, &evs).await?;
        tx.commit().await?;
        Ok(cmd)
    }

    async fn expire_commands(
        &self,
        now: DateTime<Utc>,
        policy: &ExpiryPolicy,
    ) -> Result<Vec<Expired>> {
        let now = micros(now);
        let now_s = ts(now);
        let mut tx = self.begin_immediate().await?;
        let mut out = Vec::new();
        let mut evs = Vec::new();

        // Claimed, never started: it never ran, its rows go back to pending.
        let unstarted: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM commands WHERE status = 'sent' AND deadline < ? ORDER BY created_at, id",
        )
        .bind(&now_s)
        .fetch_all(&mut *tx)
        .await?;
        let reason = command_plan::not_started_reason();
        for id in unstarted {
            let id: CommandId = rows::parse("commands", "id", &id)?;
            let cmd = end_command(&mut tx, id, "timed_out", &reason, &now_s).await?;
            let released =
                release_rows(&mut tx, id, &["dry_run", "installing"], "pending", &now_s).await?;
            evs.push(ev::timed_out(&cmd, &reason, &released, now));
            out.push(expired(cmd, Expiry::NotStarted, &reason));
        }

        // Running past the deadline: overdue, left to finish.
        let overdue = sqlx::query(
            "UPDATE commands SET overdue_at = ? WHERE status = 'running' AND deadline < ? \
             AND overdue_at IS NULL RETURNING *",
        )
        .bind(&now_s)
        .bind(&now_s)
        .fetch_all(&mut *tx)
        .await?;
        for row in &overdue {
            let cmd = rows::command(row)?;
            let deadline = rows::opt_time(row, "commands", "deadline")?;
            evs.push(ev::overdue(&cmd, deadline, now));
            out.push(expired(
                cmd,
                Expiry::Overdue,
                "past its deadline; left to finish",
            ));
        }

        // Overdue and silent: the agent vanished, the outcome is unknown, its rows fail.
        let cutoff = ts(now - policy.vanished_after);
        let silent: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT id, COALESCE(heartbeat_at, started_at) FROM commands WHERE status = 'running' \
             AND overdue_at IS NOT NULL AND COALESCE(heartbeat_at, started_at) < ? ORDER BY created_at, id",
        )
        .bind(&cutoff)
        .fetch_all(&mut *tx)
        .await?;
        for (id, last) in silent {
            let id: CommandId = rows::parse("commands", "id", &id)?;
            let last = last
                .map(|t| rows::parse_ts("commands", "heartbeat_at", &t))
                .transpose()?;
            let reason = command_plan::vanished_reason(last);
            let cmd = end_command(&mut tx, id, "timed_out", &reason, &now_s).await?;
            let failed =
                release_rows(&mut tx, id, &["dry_run", "installing"], "failed", &now_s).await?;
            evs.push(ev::timed_out(&cmd, &reason, &failed, now));
            if !failed.is_empty() {
                evs.push(ev::updates_failed(
                    &cmd,
                    &Actor::System,
                    &failed,
                    &reason,
                    None,
                    now,
                ));
            }
            out.push(expired(cmd, Expiry::Vanished, &reason));
        }
        insert_events(&mut tx, &evs).await?;

        // Waiting for a host that cannot run it, or is offline too long.
        let offline_cutoff = now - policy.offline_after;
        let waiting: Vec<(String, String, String, bool, Option<String>, String, String)> =
            sqlx::query_as(
                "SELECT c.id, h.hostname, h.state, h.agentless, h.last_seen, h.registered_at, c.created_at \
                 FROM commands c JOIN hosts h ON h.id = c.host_id \
                 WHERE c.status IN ('pending', 'sent') AND (h.state <> 'active' OR h.agentless = 1 \
                     OR (COALESCE(h.last_seen, h.registered_at) < ?1 AND c.created_at < ?1)) \
                 ORDER BY c.created_at, c.id",
            )
            .bind(ts(offline_cutoff))
            .fetch_all(&mut *tx)
            .await?;
        for (id, hostname, state, agentless, last_seen, registered, created) in waiting {
            let id: CommandId = rows::parse("commands", "id", &id)?;
            if let Some(reason) = host_cannot_run(&hostname, &state, agentless) {
                cancel_in(&mut tx, id, &Actor::System, &reason, now).await?;
                let cmd = self.get_in(&mut tx, id).await?;
                out.push(expired(cmd, Expiry::HostCannotRun, &reason));
                continue;
            }
            let last_seen = last_seen
                .map(|t| rows::parse_ts("hosts", "last_seen", &t))
                .transpose()?;
            let seen = last_seen.unwrap_or(rows::parse_ts("hosts", "registered_at", &registered)?);
            let created = rows::parse_ts("commands", "created_at", &created)?;
            if seen < offline_cutoff && created < offline_cutoff {
                let reason = command_plan::offline_reason(&hostname, last_seen, policy);
                let cmd = end_command(&mut tx, id, "timed_out", &reason, &now_s).await?;
                let released =
                    release_rows(&mut tx, id, &["dry_run", "installing"], "pending", &now_s)
                        .await?;
                insert_events(&mut tx, &[ev::timed_out(&cmd, &reason, &released, now)]).await?;
                out.push(expired(cmd, Expiry::HostOffline, &reason));
            }
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
        let found = sqlx::query(
            "SELECT * FROM commands WHERE host_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
        )
        .bind(host.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::command).collect()
    }
}

impl SqliteStore {
    async fn get_in(&self, tx: &mut Tx, id: CommandId) -> Result<Command> {
        Ok(load(tx, id).await?.ok_or_else(|| not_found(id))?.cmd)
    }
}

fn expired(command: Command, expiry: Expiry, reason: &str) -> Expired {
    Expired {
        command,
        expiry,
        reason: reason.to_string(),
    }
}

/// Cancel `id` (pending or sent) for `reason`; its rows go back to `pending` and keep
/// `command_id`, so that a retry can carry them again.
pub(super) async fn cancel_in(
    tx: &mut Tx,
    id: CommandId,
    actor: &Actor,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let now_s = ts(now);
    let cmd = end_command(tx, id, "cancelled", reason, &now_s).await?;
    let released = release_rows(tx, id, &["dry_run", "installing"], "pending", &now_s).await?;
    insert_events(tx, &[ev::cancelled(&cmd, actor, reason, &released, now)]).await?;
    Ok(())
}
