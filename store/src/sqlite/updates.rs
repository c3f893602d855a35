//! Update listings, approval, rejection, version history and dashboard figures on SQLite.

use super::queue::insert_commands;
use super::rows::{self, UPDATE_SELECT};
use super::{insert_events, new_event, placeholders, ts, SqliteStore, Tx};
use crate::common::{
    assemble_stats, STATS_BY_SEVERITY_SQL, STATS_BY_STATUS_SQL, STATS_HOSTS_SQL,
    STATS_HOSTS_WITH_UPDATES_SQL,
};
use crate::common::{fingerprint, now_micros, prepare_event, skip_reason};
use crate::{
    events, Actor, ApproveOutcome, IdempotencyKey, Idempotent, IngestOutcome, IngestReport,
    NewCommand, Result, StoreError, UpdateStore,
};
use async_trait::async_trait;
use canopy_api_types::updates::{
    Page, Update, UpdateFilter, UpdateStats, UpdateStatus, VersionChange,
};
use canopy_api_types::{CommandId, CorrelationId, HostId, UpdateId};
use serde_json::json;
use sqlx::{QueryBuilder, Sqlite};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Ids per approve statement. One statement covers any realistic selection (SQLite
/// allows 32,766 bound values; each id binds three).
const APPROVE_CHUNK: usize = 5_000;
/// Ids per `IN (…)` list of a lookup.
const LOOKUP_CHUNK: usize = 500;

/// Severity rank for `ORDER BY … DESC`.
const SEVERITY_RANK: &str =
    "CASE u.severity WHEN 'security' THEN 3 WHEN 'important' THEN 2 WHEN 'normal' THEN 1 ELSE 0 END";

fn push_filter(qb: &mut QueryBuilder<'_, Sqlite>, f: &UpdateFilter) {
    qb.push(" WHERE 1 = 1");
    if let Some(h) = f.host_id {
        qb.push(" AND u.host_id = ").push_bind(h.to_string());
    }
    if let Some(hosts) = &f.hosts {
        if hosts.is_empty() {
            qb.push(" AND 1 = 0");
        } else {
            qb.push(" AND u.host_id IN (");
            let mut list = qb.separated(", ");
            for h in hosts {
                list.push_bind(h.to_string());
            }
            qb.push(")");
        }
    }
    if let Some(s) = f.status {
        qb.push(" AND u.status = ").push_bind(s.as_str());
    }
    if let Some(s) = f.severity {
        qb.push(" AND u.severity = ").push_bind(s.as_str());
    }
    if let Some(m) = f.manager {
        qb.push(" AND u.manager = ").push_bind(m.as_str());
    }
    if let Some(p) = f.package.as_deref().filter(|p| !p.is_empty()) {
        // Case-insensitive substring, no LIKE wildcards to escape.
        qb.push(" AND instr(lower(u.package), lower(")
            .push_bind(p.to_string())
            .push(")) > 0");
    }
}

#[async_trait]
impl UpdateStore for SqliteStore {
    async fn ingest_report(
        &self,
        host: HostId,
        report: IngestReport,
        actor: &Actor,
    ) -> Result<IngestOutcome> {
        self.ingest(host, report, actor, crate::ingest_plan::Source::Report)
            .await
    }

    async fn list_updates(&self, filter: &UpdateFilter) -> Result<Page<Update>> {
        let (page, per_page) = (filter.page(), filter.per_page());
        let mut count: QueryBuilder<'_, Sqlite> =
            QueryBuilder::new("SELECT COUNT(*) FROM updates u");
        push_filter(&mut count, filter);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(UPDATE_SELECT);
        push_filter(&mut qb, filter);
        qb.push(format!(
            " ORDER BY {SEVERITY_RANK} DESC, u.package, h.hostname, u.id LIMIT "
        ))
        .push_bind(i64::from(per_page))
        .push(" OFFSET ")
        .push_bind(i64::from(page - 1) * i64::from(per_page));
        let found = qb.build().fetch_all(&self.pool).await?;
        Ok(Page {
            items: found.iter().map(rows::update).collect::<Result<_>>()?,
            total: total.max(0) as u64,
            page,
            per_page,
        })
    }

    async fn get_update(&self, id: UpdateId) -> Result<Option<Update>> {
        let row = sqlx::query(&format!("{UPDATE_SELECT} WHERE u.id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::update).transpose()
    }

    async fn approve_updates(
        &self,
        ids: &[UpdateId],
        correlation: CorrelationId,
        timeout_secs: u32,
        actor: &Actor,
    ) -> Result<ApproveOutcome> {
        let mut tx = self.begin_immediate().await?;
        let outcome = approve_in(&mut tx, ids, correlation, timeout_secs, actor).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn approve_updates_once(
        &self,
        key: &IdempotencyKey,
        ids: &[UpdateId],
        correlation: CorrelationId,
        timeout_secs: u32,
        actor: &Actor,
    ) -> Result<Idempotent<ApproveOutcome>> {
        let mut tx = self.begin_immediate().await?;
        if let Some(stored) = stored_response(&mut tx, key).await? {
            return Ok(Idempotent::Replayed(stored));
        }
        let outcome = approve_in(&mut tx, ids, correlation, timeout_secs, actor).await?;
        if outcome.approved.is_empty() {
            return Ok(Idempotent::Fresh(outcome));
        }
        let response = crate::approve_response_json(&outcome, correlation)?;
        sqlx::query(
            "INSERT INTO idempotency_keys (actor, key, request_hash, response, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&key.actor)
        .bind(&key.key)
        .bind(&key.request_hash)
        .bind(response.to_string())
        .bind(ts(now_micros()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Idempotent::Fresh(outcome))
    }

    async fn reject_updates(&self, ids: &[UpdateId], actor: &Actor) -> Result<u64> {
        let now = now_micros();
        let mut tx = self.begin_immediate().await?;
        let mut per_host: BTreeMap<HostId, Vec<UpdateId>> = BTreeMap::new();
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            let sql = format!(
                "UPDATE updates SET status = 'rejected', command_id = NULL, fingerprint = NULL, updated_at = ? \
                 WHERE id IN ({}) AND status IN ('pending', 'failed', 'awaiting_confirmation') \
                 RETURNING id, host_id",
                placeholders(chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(ts(now));
            for id in chunk {
                q = q.bind(id.to_string());
            }
            for r in q.fetch_all(&mut *tx).await? {
                per_host
                    .entry(rows::id(&r, "updates", "host_id")?)
                    .or_default()
                    .push(rows::id(&r, "updates", "id")?);
            }
        }
        let moved = per_host.values().map(Vec::len).sum::<usize>() as u64;
        let evs: Vec<_> = per_host
            .into_iter()
            .map(|(host, ids)| {
                let ev = new_event(
                    events::UPDATES_REJECTED,
                    events::host_subject(host),
                    actor,
                    None,
                    json!({ "ids": ids }),
                );
                prepare_event(ev, Some(host), now)
            })
            .collect();
        insert_events(&mut tx, &evs).await?;
        tx.commit().await?;
        Ok(moved)
    }

    async fn version_history(
        &self,
        host: Option<HostId>,
        limit: u32,
    ) -> Result<Vec<VersionChange>> {
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
            "SELECT v.host_id, h.hostname, v.manager, v.package, v.from_version, v.to_version, v.command_id, \
             v.correlation_id, v.installed_at FROM update_version_history v JOIN hosts h ON h.id = v.host_id",
        );
        if let Some(h) = host {
            qb.push(" WHERE v.host_id = ").push_bind(h.to_string());
        }
        qb.push(" ORDER BY v.installed_at DESC, v.package LIMIT ")
            .push_bind(i64::from(limit));
        let found = qb.build().fetch_all(&self.pool).await?;
        found.iter().map(rows::version_change).collect()
    }

    async fn stats(&self) -> Result<UpdateStats> {
        let by_severity: Vec<(String, i64)> = sqlx::query_as(STATS_BY_SEVERITY_SQL)
            .fetch_all(&self.pool)
            .await?;
        let by_status: Vec<(String, i64)> = sqlx::query_as(STATS_BY_STATUS_SQL)
            .fetch_all(&self.pool)
            .await?;
        let hosts: i64 = sqlx::query_scalar(STATS_HOSTS_SQL)
            .fetch_one(&self.pool)
            .await?;
        let with: i64 = sqlx::query_scalar(STATS_HOSTS_WITH_UPDATES_SQL)
            .fetch_one(&self.pool)
            .await?;
        Ok(assemble_stats(by_severity, by_status, hosts, with))
    }
}

/// Approve `ids` inside `tx` (see [`UpdateStore::approve_updates`]).
async fn approve_in(
    tx: &mut Tx,
    ids: &[UpdateId],
    correlation: CorrelationId,
    timeout_secs: u32,
    actor: &Actor,
) -> Result<ApproveOutcome> {
    const T: &str = "updates";
    let now = now_micros();
    let mut seen = HashSet::new();
    let ids: Vec<UpdateId> = ids.iter().copied().filter(|i| seen.insert(*i)).collect();
    // Read the candidates once: why an id is skipped, each row's fingerprint.
    type Candidate = (HostId, String, bool, UpdateStatus, Option<String>);
    let mut found: HashMap<UpdateId, Candidate> = HashMap::new();
    for chunk in ids.chunks(LOOKUP_CHUNK) {
        let sql = format!(
            "SELECT u.id, u.host_id, u.manager, u.package, u.arch, u.current_version, u.available_version, \
             u.held, u.status, h.hostname, h.state, h.agentless \
             FROM updates u JOIN hosts h ON h.id = u.host_id WHERE u.id IN ({})",
            placeholders(chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id.to_string());
        }
        for r in q.fetch_all(&mut **tx).await? {
            let status = rows::text(&r, T, "status")?;
            let status = UpdateStatus::parse(&status).ok_or_else(|| {
                StoreError::corrupt(T, format!("column status: unknown value '{status}'"))
            })?;
            let fp = fingerprint(
                &rows::text(&r, T, "manager")?,
                &rows::text(&r, T, "package")?,
                &rows::text(&r, T, "arch")?,
                &rows::text(&r, T, "current_version")?,
                &rows::text(&r, T, "available_version")?,
            );
            let held = rows::int(&r, T, "held")? != 0;
            let cannot_run = crate::command_plan::host_cannot_run(
                &rows::text(&r, "hosts", "hostname")?,
                &rows::text(&r, "hosts", "state")?,
                rows::int(&r, "hosts", "agentless")? != 0,
            );
            found.insert(
                rows::id(&r, T, "id")?,
                (rows::id(&r, T, "host_id")?, fp, held, status, cannot_run),
            );
        }
    }
    let mut skipped = Vec::new();
    let mut command_of: BTreeMap<HostId, CommandId> = BTreeMap::new();
    let mut todo: Vec<(UpdateId, String, CommandId)> = Vec::new();
    for id in &ids {
        match found.get(id) {
            None => skipped.push((*id, "not found".to_string())),
            Some((_, _, _, _, Some(why))) => skipped.push((*id, why.clone())),
            Some((_, _, held, status, None))
                if *held || !crate::common::APPROVABLE.contains(status) =>
            {
                skipped.push((*id, skip_reason(*status, *held)))
            }
            Some((host, fp, _, _, None)) => {
                let cmd = *command_of.entry(*host).or_default();
                todo.push((*id, fp.clone(), cmd));
            }
        }
    }

    // The approval itself: one guarded statement (per 5,000 ids).
    let mut approved: Vec<(UpdateId, HostId, crate::command_plan::ApprovedRow)> =
        Vec::with_capacity(todo.len());
    for chunk in todo.chunks(APPROVE_CHUNK) {
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new("WITH v(id, fp, cmd) AS (");
        qb.push_values(chunk, |mut b, (id, fp, cmd)| {
            b.push_bind(id.to_string())
                .push_bind(fp.clone())
                .push_bind(cmd.to_string());
        });
        qb.push(") UPDATE updates SET status = 'dry_run', fingerprint = v.fp, command_id = v.cmd, correlation_id = ")
            .push_bind(correlation.to_string())
            .push(", updated_at = ")
            .push_bind(ts(now))
            .push(
                " FROM v WHERE updates.id = v.id AND updates.status IN ('pending', 'failed', 'awaiting_confirmation') \
                 AND updates.held = 0 RETURNING id, host_id, manager, package, available_version",
            );
        for r in qb.build().fetch_all(&mut **tx).await? {
            approved.push((
                rows::id(&r, T, "id")?,
                rows::id(&r, T, "host_id")?,
                (
                    rows::text(&r, T, "manager")?,
                    rows::text(&r, T, "package")?,
                    rows::text(&r, T, "available_version")?,
                ),
            ));
        }
    }

    // One dry-run per host with that host's packages and image updates.
    let mut per_host: BTreeMap<HostId, (Vec<UpdateId>, Vec<crate::command_plan::ApprovedRow>)> =
        BTreeMap::new();
    for (id, host, row) in &approved {
        let e = per_host.entry(*host).or_default();
        e.0.push(*id);
        e.1.push(row.clone());
    }
    let mut new_commands = Vec::new();
    let mut evs = Vec::new();
    for (host, (ids, rows)) in per_host {
        let id = command_of[&host];
        evs.push(prepare_event(
            new_event(
                events::UPDATES_APPROVED,
                events::host_subject(host),
                actor,
                Some(correlation),
                json!({ "ids": ids, "command_id": id }),
            ),
            Some(host),
            now,
        ));
        new_commands.push(NewCommand {
            id,
            host,
            spec: crate::command_plan::dry_run_spec(rows),
            correlation,
            caused_by: None,
            timeout_secs,
        });
    }
    let commands = insert_commands(tx, &new_commands, None, now).await?;
    evs.extend(
        commands
            .iter()
            .map(|c| crate::command_events::queued(c, actor, now)),
    );
    insert_events(tx, &evs).await?;

    let mut rows_out = Vec::with_capacity(approved.len());
    for chunk in approved.chunks(LOOKUP_CHUNK) {
        let sql = format!(
            "{UPDATE_SELECT} WHERE u.id IN ({})",
            placeholders(chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for (id, _, _) in chunk {
            q = q.bind(id.to_string());
        }
        for r in q.fetch_all(&mut **tx).await? {
            rows_out.push(rows::update(&r)?);
        }
    }
    rows_out.sort_by(|a, b| (&a.package, a.host_id).cmp(&(&b.package, b.host_id)));
    Ok(ApproveOutcome {
        approved: rows_out,
        commands,
        skipped,
    })
}

/// The stored answer for `key`; `Conflict` when the key was used for another request.
async fn stored_response(tx: &mut Tx, key: &IdempotencyKey) -> Result<Option<serde_json::Value>> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT request_hash, response FROM idempotency_keys WHERE actor = ? AND key = ?",
    )
    .bind(&key.actor)
    .bind(&key.key)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((hash, body)) = row else {
        return Ok(None);
    };
    if hash != key.request_hash {
        return Err(StoreError::Conflict(format!(
            "Idempotency-Key '{}' was already used for a different request",
            key.key
        )));
    }
    serde_json::from_str(&body)
        .map(Some)
        .map_err(|e| StoreError::corrupt("idempotency_keys", format!("column response: {e}")))
}
