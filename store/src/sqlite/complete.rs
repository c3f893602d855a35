//! Applying an agent's result to a command and its update rows, and turning a
//! successful dry-run into an install — each one `BEGIN IMMEDIATE` transaction.

use super::queue::{carried_rows, insert_commands, load, move_rows};
use super::{insert_events, rows, ts, SqliteStore};
use crate::command_events as ev;
use crate::common::{micros, now_micros, result_hash};
use crate::{Actor, CompleteOutcome, NewCommand, Result, StoreError};
use canopy_api_types::commands::{Command, CommandResult, CommandSpec, CommandStatus};
use canopy_api_types::{CommandId, HostId, UpdateId};
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};
use std::collections::BTreeSet;

fn result_json(result: &CommandResult) -> Result<String> {
    serde_json::to_string(result)
        .map_err(|e| StoreError::corrupt("commands", format!("result: {e}")))
}

impl SqliteStore {
    pub(super) async fn complete(
        &self,
        host: HostId,
        id: CommandId,
        result: CommandResult,
        now: DateTime<Utc>,
    ) -> Result<CompleteOutcome> {
        let now = micros(now);
        let now_s = ts(now);
        let hash = result_hash(&result);
        let mut tx = self.begin_immediate().await?;
        let loaded = match load(&mut tx, id).await? {
            Some(l) if l.cmd.host_id == host => l,
            _ => return Err(StoreError::NotFound(format!("command {id}"))),
        };
        let cmd = loaded.cmd.clone();
        if let Some(stored) = loaded.result_hash.clone() {
            return if stored == hash {
                Ok(CompleteOutcome::Duplicate(cmd))
            } else {
                Err(StoreError::Conflict(format!(
                    "command {id} already has a different result ({})",
                    cmd.status.as_str()
                )))
            };
        }
        match cmd.status {
            CommandStatus::TimedOut | CommandStatus::Cancelled => {
                let row = sqlx::query(
                    "UPDATE commands SET result = ?, result_hash = ?, late = 1 WHERE id = ? RETURNING *",
                )
                .bind(result_json(&result)?)
                .bind(&hash)
                .bind(id.to_string())
                .fetch_one(&mut *tx)
                .await?;
                let cmd = rows::command(&row)?;
                insert_events(&mut tx, &[ev::late_result(&cmd, &result, now)]).await?;
                tx.commit().await?;
                return Ok(CompleteOutcome::Late(cmd));
            }
            CommandStatus::Sent | CommandStatus::Running => {}
            s => {
                return Err(StoreError::Conflict(format!(
                    "command {id} is {}; a result is accepted once it was sent",
                    s.as_str()
                )))
            }
        }
        let late = crate::command_plan::is_late(loaded.deadline, cmd.overdue_at, now);
        let status = if result.success {
            "completed"
        } else {
            "failed"
        };
        let row = sqlx::query(
            "UPDATE commands SET status = ?, finished_at = ?, result = ?, result_hash = ?, late = ? \
             WHERE id = ? RETURNING *",
        )
        .bind(status)
        .bind(&now_s)
        .bind(result_json(&result)?)
        .bind(&hash)
        .bind(late)
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let cmd = rows::command(&row)?;
        let mut evs = vec![ev::finished(&cmd, &result, late, now)];
        let (from, to) =
            crate::command_plan::row_transition(&cmd.spec, result.success).unwrap_or(("", ""));
        if !from.is_empty() {
            let closed = if to == "installed" {
                Some(now_s.clone())
            } else {
                None
            };
            let moved = sqlx::query(
                "UPDATE updates SET status = ?, updated_at = ?, closed_at = ? WHERE command_id = ? AND status = ? \
                 RETURNING id, host_id, manager, package, current_version, available_version",
            )
            .bind(to)
            .bind(&now_s)
            .bind(closed)
            .bind(id.to_string())
            .bind(from)
            .fetch_all(&mut *tx)
            .await?;
            let ids = moved
                .iter()
                .map(|r| rows::id::<UpdateId>(r, "updates", "id"))
                .collect::<Result<Vec<_>>>()?;
            if to == "installed" {
                let hist = moved
                    .iter()
                    .map(|r| {
                        let t = |c: &str| rows::text(r, "updates", c);
                        Ok([
                            t("id")?,
                            t("manager")?,
                            t("package")?,
                            t("current_version")?,
                            t("available_version")?,
                        ])
                    })
                    .collect::<Result<Vec<[String; 5]>>>()?;
                if !hist.is_empty() {
                    let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
                        "INSERT INTO update_version_history (id, host_id, update_id, manager, package, \
                         from_version, to_version, command_id, correlation_id, installed_at) ",
                    );
                    qb.push_values(&hist, |mut b, [uid, manager, package, from_v, to_v]| {
                        b.push_bind(UpdateId::new().to_string())
                            .push_bind(host.to_string())
                            .push_bind(uid.clone())
                            .push_bind(manager.clone())
                            .push_bind(package.clone())
                            .push_bind(from_v.clone())
                            .push_bind(to_v.clone())
                            .push_bind(id.to_string())
                            .push_bind(cmd.correlation_id.to_string())
                            .push_bind(now_s.clone());
                    });
                    qb.build().execute(&mut *tx).await?;
                }
            }
            let mut ids = ids;
            ids.sort();
            evs.push(ev::rows_moved(&cmd, to, &ids, &result, now));
        }
        insert_events(&mut tx, &evs).await?;
        tx.commit().await?;
        Ok(CompleteOutcome::Applied(cmd))
    }

    pub(super) async fn confirm(
        &self,
        dry_run: CommandId,
        timeout_secs: u32,
        actor: &Actor,
    ) -> Result<Command> {
        let now = now_micros();
        let mut tx = self.begin_immediate().await?;
        let loaded = load(&mut tx, dry_run)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("command {dry_run}")))?;
        let dr = loaded.cmd;
        let CommandSpec::DryRun { packages, .. } = &dr.spec else {
            return Err(StoreError::Conflict(format!(
                "command {dry_run} is not a dry-run"
            )));
        };
        let succeeded =
            dr.status == CommandStatus::Completed && dr.result.as_ref().is_some_and(|r| r.success);
        if !succeeded {
            return Err(StoreError::Conflict(format!(
                "dry-run {dry_run} did not succeed (status {})",
                dr.status.as_str()
            )));
        }
        if let Some(by) = loaded.confirmed_by {
            return Err(StoreError::Conflict(format!(
                "dry-run {dry_run} was already confirmed (install {by})"
            )));
        }
        let carried = carried_rows(&mut tx, dry_run, &["awaiting_confirmation"]).await?;
        let now_packages: BTreeSet<String> = carried.iter().map(|(_, p, _)| p.clone()).collect();
        let expected: BTreeSet<String> = crate::command_plan::carried_packages(&dr.spec)
            .into_iter()
            .collect();
        if carried.is_empty()
            || carried.iter().any(|(_, _, same)| !same)
            || now_packages != expected
        {
            return Err(StoreError::Conflict(format!(
                "the updates of dry-run {dry_run} changed since it ran; approve them again"
            )));
        }
        let new = NewCommand {
            id: CommandId::new(),
            host: dr.host_id,
            spec: crate::command_plan::install_spec(packages.clone(), dr.result.as_ref()),
            correlation: dr.correlation_id,
            caused_by: Some(dry_run),
            timeout_secs,
        };
        let cmd = insert_commands(&mut tx, std::slice::from_ref(&new), None, now)
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound(format!("command {}", new.id)))?;
        sqlx::query("UPDATE commands SET confirmed_by = ? WHERE id = ?")
            .bind(cmd.id.to_string())
            .bind(dry_run.to_string())
            .execute(&mut *tx)
            .await?;
        let mut ids: Vec<UpdateId> = carried.iter().map(|(u, _, _)| *u).collect();
        ids.sort();
        move_rows(&mut tx, &ids, "installing", cmd.id, &ts(now)).await?;
        let evs = [
            ev::install_confirmed(&dr, &cmd, actor, &ids, now),
            ev::queued(&cmd, actor, now),
        ];
        insert_events(&mut tx, &evs).await?;
        tx.commit().await?;
        Ok(cmd)
    }
}
