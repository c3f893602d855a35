//! The command queue on SQLite: enqueue, claim (`UPDATE … RETURNING` inside
//! `BEGIN IMMEDIATE`), start, cancel, retry, time out. Results and confirmations are in
//! `complete.rs`, shared building blocks in `queue.rs`.

use super::queue::{carried_rows, command_event, insert_commands, load, move_rows, queued_event};
use super::rows;
use super::{insert_events, ts, SqliteStore};
use crate::common::{micros, now_micros};
use crate::{
    events, Actor, CommandStore, CompleteOutcome, NewCommand, Result, StoreError, SENT_GRACE_SECS,
};
use async_trait::async_trait;
use canopy_api_types::commands::{Command, CommandResult, CommandStatus};
use canopy_api_types::{CommandId, HostId, UpdateId};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use sqlx::{QueryBuilder, Sqlite};

fn not_found(id: CommandId) -> StoreError {
    StoreError::NotFound(format!("command {id}"))
}

#[async_trait]
impl CommandStore for SqliteStore {
    async fn enqueue_command(&self, new: NewCommand, actor: &Actor) -> Result<Command> {
        let now = now_micros();
        let mut tx = self.pool.begin().await?;
        let mut cmds = insert_commands(&mut tx, std::slice::from_ref(&new), None, now).await?;
        let cmd = cmds.pop().ok_or_else(|| not_found(new.id))?;
        insert_events(&mut tx, &[queued_event(&cmd, actor, now)]).await?;
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
        let picked: Vec<(String, i64)> = sqlx::query_as(
            "SELECT id, timeout_secs FROM commands WHERE host_id = ? AND status = 'pending' \
             ORDER BY created_at, rowid LIMIT ?",
        )
        .bind(host.to_string())
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if picked.is_empty() {
            return Ok(Vec::new());
        }
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new("WITH v(id, deadline) AS (");
        qb.push_values(&picked, |mut b, (id, timeout)| {
            b.push_bind(id.clone())
                .push_bind(ts(now + Duration::seconds(*timeout + SENT_GRACE_SECS)));
        });
        qb.push(") UPDATE commands SET status = 'sent', sent_at = ")
            .push_bind(ts(now))
            .push(", deadline = v.deadline FROM v WHERE commands.id = v.id AND commands.status = 'pending' RETURNING *");
        let claimed = qb.build().fetch_all(&mut *tx).await?;
        let mut cmds = claimed
            .iter()
            .map(rows::command)
            .collect::<Result<Vec<_>>>()?;
        let order: Vec<&String> = picked.iter().map(|(id, _)| id).collect();
        cmds.sort_by_key(|c| order.iter().position(|id| **id == c.id.to_string()));
        let actor = Actor::Agent(host);
        let evs: Vec<_> = cmds
            .iter()
            .map(|c| {
                command_event(
                    events::COMMAND_SENT,
                    c,
                    &actor,
                    now,
                    json!({ "command_id": c.id }),
                )
            })
            .collect();
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
            s => {
                return Err(StoreError::Conflict(format!(
                    "command {id} is {}, not sent",
                    s.as_str()
                )))
            }
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
        let ev = command_event(
            events::COMMAND_RUNNING,
            &cmd,
            &Actor::Agent(host),
            now,
            json!({ "command_id": id }),
        );
        insert_events(&mut tx, &[ev]).await?;
        tx.commit().await?;
        Ok(cmd)
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
            return Err(StoreError::Conflict(format!(
                "command {id} is {}; only pending or sent commands can be cancelled",
                cmd.status.as_str()
            )));
        }
        let row = sqlx::query(
            "UPDATE commands SET status = 'cancelled', finished_at = ?, error = ? WHERE id = ? RETURNING *",
        )
        .bind(ts(now))
        .bind(format!("cancelled by {actor}"))
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let cmd = rows::command(&row)?;
        // The rows keep `command_id` so that a retry can carry them again.
        let moved: Vec<String> = sqlx::query_scalar(
            "UPDATE updates SET status = 'pending', updated_at = ? \
             WHERE command_id = ? AND status IN ('dry_run', 'installing') RETURNING id",
        )
        .bind(ts(now))
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let ev = command_event(
            events::COMMAND_CANCELLED,
            &cmd,
            actor,
            now,
            json!({ "command_id": id, "update_ids": moved }),
        );
        insert_events(&mut tx, &[ev]).await?;
        tx.commit().await?;
        Ok(cmd)
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
        let carried = if crate::command_plan::carried_packages(&old.spec).is_empty() {
            Vec::new()
        } else {
            carried_rows(&mut tx, id, &["failed", "pending"]).await?
        };
        let usable: Vec<&(UpdateId, String, bool)> =
            carried.iter().filter(|(_, _, same)| *same).collect();
        let mut packages: Vec<String> = usable.iter().map(|(_, p, _)| p.clone()).collect();
        packages.dedup();
        let (spec, row_status) = crate::command_plan::retry_spec(&old.spec, packages);
        let row_status = row_status.unwrap_or("");
        if !row_status.is_empty() && usable.is_empty() {
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
        let ids: Vec<UpdateId> = usable.iter().map(|(u, _, _)| *u).collect();
        if !row_status.is_empty() {
            move_rows(&mut tx, &ids, row_status, cmd.id, &ts(now)).await?;
        }
        let evs = [
            command_event(
                events::COMMAND_RETRIED,
                &old,
                actor,
                now,
                json!({ "command_id": id, "retry": cmd.id, "update_ids": ids }),
            ),
            queued_event(&cmd, actor, now),
        ];
        insert_events(&mut tx, &evs).await?;
        tx.commit().await?;
        Ok(cmd)
    }

    async fn expire_commands(&self, now: DateTime<Utc>) -> Result<Vec<Command>> {
        let now = micros(now);
        let mut tx = self.begin_immediate().await?;
        let found = sqlx::query(
            "UPDATE commands SET status = 'timed_out', finished_at = ?, \
             error = 'timed out: no result before the deadline' \
             WHERE status IN ('sent', 'running') AND deadline < ? RETURNING *",
        )
        .bind(ts(now))
        .bind(ts(now))
        .fetch_all(&mut *tx)
        .await?;
        let cmds = found
            .iter()
            .map(rows::command)
            .collect::<Result<Vec<_>>>()?;
        let mut evs = Vec::new();
        for c in &cmds {
            let failed: Vec<String> = sqlx::query_scalar(
                "UPDATE updates SET status = 'failed', updated_at = ? \
                 WHERE command_id = ? AND status IN ('dry_run', 'installing') RETURNING id",
            )
            .bind(ts(now))
            .bind(c.id.to_string())
            .fetch_all(&mut *tx)
            .await?;
            evs.push(command_event(
                events::COMMAND_TIMED_OUT,
                c,
                &Actor::System,
                now,
                json!({ "command_id": c.id }),
            ));
            if !failed.is_empty() {
                evs.push(command_event(
                    events::UPDATES_FAILED,
                    c,
                    &Actor::System,
                    now,
                    json!({ "command_id": c.id, "ids": failed, "reason": "timed out" }),
                ));
            }
        }
        insert_events(&mut tx, &evs).await?;
        tx.commit().await?;
        Ok(cmds)
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
