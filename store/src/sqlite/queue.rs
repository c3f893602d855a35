//! Building blocks of the command queue shared by `commands.rs` and `complete.rs`:
//! inserting commands, their events, loading one with its hidden columns, and finding
//! or moving the update rows a command carries.

use super::rows;
use super::{placeholders, ts, Tx};
use crate::common::{fingerprint, micros};
use crate::{NewCommand, Result, StoreError};
use canopy_api_types::commands::{Command, CommandStatus};
use canopy_api_types::{CommandId, UpdateId};
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};

/// Insert commands (status pending) in one statement; returns them as stored.
pub(super) async fn insert_commands(
    tx: &mut Tx,
    new: &[NewCommand],
    retried_from: Option<CommandId>,
    now: DateTime<Utc>,
) -> Result<Vec<Command>> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let now = micros(now);
    let mut specs = Vec::with_capacity(new.len());
    for c in new {
        specs.push(
            serde_json::to_string(&c.spec)
                .map_err(|e| StoreError::corrupt("commands", e.to_string()))?,
        );
    }
    let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
        "INSERT INTO commands (id, host_id, kind, spec, status, correlation_id, caused_by, retried_from, \
         timeout_secs, created_at) ",
    );
    qb.push_values(new.iter().zip(&specs), |mut b, (c, spec)| {
        b.push_bind(c.id.to_string())
            .push_bind(c.host.to_string())
            .push_bind(c.spec.kind())
            .push_bind(spec.clone())
            .push_bind("pending")
            .push_bind(c.correlation.to_string())
            .push_bind(c.caused_by.map(|x| x.to_string()))
            .push_bind(retried_from.map(|x| x.to_string()))
            .push_bind(i64::from(c.timeout_secs))
            .push_bind(ts(now));
    });
    match qb.build().execute(&mut **tx).await {
        Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
            return Err(StoreError::NotFound(
                "host (or caused_by command) of the new command".into(),
            ));
        }
        Err(e) if super::is_unique_violation(&e) => {
            return Err(StoreError::Conflict(
                "a command with this id already exists".into(),
            ));
        }
        other => other?,
    };
    Ok(new
        .iter()
        .map(|c| Command {
            id: c.id,
            host_id: c.host,
            spec: c.spec.clone(),
            status: CommandStatus::Pending,
            correlation_id: c.correlation,
            caused_by: c.caused_by,
            retried_from,
            timeout_secs: c.timeout_secs,
            created_at: now,
            sent_at: None,
            started_at: None,
            finished_at: None,
            result: None,
            error: None,
            overdue_at: None,
            late: false,
        })
        .collect())
}

/// A command with the columns the API type does not show.
pub(super) struct Loaded {
    pub cmd: Command,
    pub result_hash: Option<String>,
    pub confirmed_by: Option<CommandId>,
    pub deadline: Option<DateTime<Utc>>,
}

pub(super) async fn load(tx: &mut Tx, id: CommandId) -> Result<Option<Loaded>> {
    let row = sqlx::query("SELECT * FROM commands WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(Loaded {
        cmd: rows::command(&row)?,
        result_hash: rows::opt_text(&row, "commands", "result_hash")?,
        confirmed_by: rows::opt_id(&row, "commands", "confirmed_by")?,
        deadline: rows::opt_time(&row, "commands", "deadline")?,
    }))
}

/// Move rows to a new command and status, one statement.
pub(super) async fn move_rows(
    tx: &mut Tx,
    ids: &[UpdateId],
    status: &str,
    cmd: CommandId,
    now: &str,
) -> Result<()> {
    for chunk in ids.chunks(500) {
        let sql = format!(
            "UPDATE updates SET status = ?, command_id = ?, updated_at = ? WHERE id IN ({})",
            placeholders(chunk.len())
        );
        let mut q = sqlx::query(&sql)
            .bind(status)
            .bind(cmd.to_string())
            .bind(now);
        for id in chunk {
            q = q.bind(id.to_string());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Move the rows `cmd` carries in `from` statuses to `to` (`updated_at = now`); returns their ids.
pub(super) async fn release_rows(
    tx: &mut Tx,
    cmd: CommandId,
    from: &[&str],
    to: &str,
    now: &str,
) -> Result<Vec<UpdateId>> {
    let sql = format!(
        "UPDATE updates SET status = ?, updated_at = ? WHERE command_id = ? AND status IN ({}) RETURNING id",
        placeholders(from.len())
    );
    let mut q = sqlx::query(&sql).bind(to).bind(now).bind(cmd.to_string());
    for s in from {
        q = q.bind(*s);
    }
    let found = q.fetch_all(&mut **tx).await?;
    let mut ids: Vec<UpdateId> = found
        .iter()
        .map(|r| rows::id(r, "updates", "id"))
        .collect::<Result<_>>()?;
    ids.sort();
    Ok(ids)
}

/// Set `status`, `finished_at` and `error` of a command; returns it as stored.
pub(super) async fn end_command(
    tx: &mut Tx,
    id: CommandId,
    status: &str,
    error: &str,
    now: &str,
) -> Result<Command> {
    let row = sqlx::query(
        "UPDATE commands SET status = ?, finished_at = ?, error = ? WHERE id = ? RETURNING *",
    )
    .bind(status)
    .bind(now)
    .bind(error)
    .bind(id.to_string())
    .fetch_one(&mut **tx)
    .await?;
    rows::command(&row)
}

/// Rows carried by `cmd` in one of `statuses` whose versions still match the bound
/// fingerprint: `(id, package)`.
pub(super) async fn carried_rows(
    tx: &mut Tx,
    cmd: CommandId,
    statuses: &[&str],
) -> Result<Vec<(UpdateId, String, bool)>> {
    const T: &str = "updates";
    let sql = format!(
        "SELECT id, manager, package, arch, current_version, available_version, fingerprint FROM updates \
         WHERE command_id = ? AND status IN ({}) ORDER BY package",
        placeholders(statuses.len())
    );
    let mut q = sqlx::query(&sql).bind(cmd.to_string());
    for s in statuses {
        q = q.bind(*s);
    }
    let mut out = Vec::new();
    for r in q.fetch_all(&mut **tx).await? {
        let fp = fingerprint(
            &rows::text(&r, T, "manager")?,
            &rows::text(&r, T, "package")?,
            &rows::text(&r, T, "arch")?,
            &rows::text(&r, T, "current_version")?,
            &rows::text(&r, T, "available_version")?,
        );
        let same = rows::opt_text(&r, T, "fingerprint")?.as_deref() == Some(fp.as_str());
        out.push((rows::id(&r, T, "id")?, rows::text(&r, T, "package")?, same));
    }
    Ok(out)
}
