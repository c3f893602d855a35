//! Update listings, approval, rejection, history and dashboard figures on PostgreSQL.
//! (Report ingestion lives in `ingest.rs`.)

use super::commands::insert_command;
use super::rows::{self, UPDATE_SELECT};
use super::{insert_events, PgStore};
use crate::command_plan::host_cannot_run;
use crate::common::{
    assemble_stats, STATS_BY_SEVERITY_SQL, STATS_BY_STATUS_SQL, STATS_HOSTS_SQL,
    STATS_HOSTS_WITH_UPDATES_SQL,
};
use crate::common::{fingerprint, now_micros, prepare_event, skip_reason, APPROVABLE};
use crate::{
    events, Actor, ApproveOutcome, IdempotencyKey, Idempotent, IngestOutcome, IngestReport,
    NewEvent, Result, StoreError, UpdateStore,
};
use async_trait::async_trait;
use canopy_api_types::updates::*;
use canopy_api_types::*;
use serde_json::json;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

/// Severity rank for `ORDER BY … DESC`: most severe first.
const SEVERITY_RANK: &str =
    "CASE u.severity WHEN 'security' THEN 3 WHEN 'important' THEN 2 WHEN 'normal' THEN 1 ELSE 0 END";

fn push_filters(q: &mut QueryBuilder<'_, Postgres>, f: &UpdateFilter) {
    q.push(" WHERE TRUE");
    if let Some(h) = f.host_id {
        q.push(" AND u.host_id = ").push_bind(h.0);
    }
    if let Some(hosts) = &f.hosts {
        let ids: Vec<Uuid> = hosts.iter().map(|h| h.0).collect();
        q.push(" AND u.host_id = ANY(").push_bind(ids).push(")");
    }
    if let Some(s) = f.status {
        q.push(" AND u.status = ").push_bind(s.as_str());
    }
    if let Some(s) = f.severity {
        q.push(" AND u.severity = ").push_bind(s.as_str());
    }
    if let Some(m) = f.manager {
        q.push(" AND u.manager = ").push_bind(m.as_str());
    }
    if let Some(p) = f.package.as_deref().filter(|p| !p.is_empty()) {
        // Case-insensitive substring, no LIKE wildcards to escape.
        q.push(" AND strpos(lower(u.package), lower(")
            .push_bind(p.to_string())
            .push(")) > 0");
    }
}

#[async_trait]
impl UpdateStore for PgStore {
    async fn ingest_report(
        &self,
        host: HostId,
        report: IngestReport,
        actor: &Actor,
    ) -> Result<IngestOutcome> {
        let mut tx = self.pool.begin().await?;
        let r: Result<_> = async {
            let out = super::ingest::ingest(
                &mut tx,
                host,
                report,
                actor,
                crate::ingest_plan::Source::Report,
            )
            .await?;
            Ok(out)
        }
        .await;
        super::finish(tx, r).await
    }

    async fn list_updates(&self, f: &UpdateFilter) -> Result<Page<Update>> {
        let mut count = QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM updates u");
        push_filters(&mut count, f);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        let mut q = QueryBuilder::<Postgres>::new(UPDATE_SELECT);
        push_filters(&mut q, f);
        q.push(format!(
            " ORDER BY {SEVERITY_RANK} DESC, u.package COLLATE \"C\", h.hostname COLLATE \"C\", u.id LIMIT "
        ))
            .push_bind(i64::from(f.per_page()))
            .push(" OFFSET ")
            .push_bind(i64::from(f.page() - 1) * i64::from(f.per_page()));
        let rows = q.build().fetch_all(&self.pool).await?;
        Ok(Page {
            items: rows.iter().map(rows::update).collect::<Result<_>>()?,
            total: total.max(0) as u64,
            page: f.page(),
            per_page: f.per_page(),
        })
    }

    async fn get_update(&self, id: UpdateId) -> Result<Option<Update>> {
        let row = sqlx::query(&format!("{UPDATE_SELECT} WHERE u.id = $1"))
            .bind(id.0)
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
        let mut tx = self.pool.begin().await?;
        let r = approve_in(&mut tx, ids, correlation, timeout_secs, actor).await;
        super::finish(tx, r).await
    }

    async fn approve_updates_once(
        &self,
        key: &IdempotencyKey,
        ids: &[UpdateId],
        correlation: CorrelationId,
        timeout_secs: u32,
        actor: &Actor,
    ) -> Result<Idempotent<ApproveOutcome>> {
        let mut tx = self.pool.begin().await?;
        let r: Result<_> = async {
            // Claim the key first: a concurrent request with the same key waits here until
            // this transaction ends, then finds the saved answer.
            let claimed: Option<String> = sqlx::query_scalar(
                "INSERT INTO idempotency_keys (actor, key, request_hash, response, created_at) \
                 VALUES ($1, $2, $3, 'null'::jsonb, $4) ON CONFLICT (actor, key) DO NOTHING RETURNING key",
            )
            .bind(&key.actor)
            .bind(&key.key)
            .bind(&key.request_hash)
            .bind(now_micros())
            .fetch_optional(&mut *tx)
            .await?;
            if claimed.is_none() {
                let (hash, response): (String, serde_json::Value) = sqlx::query_as(
                    "SELECT request_hash, response FROM idempotency_keys WHERE actor = $1 AND key = $2",
                )
                .bind(&key.actor)
                .bind(&key.key)
                .fetch_one(&mut *tx)
                .await?;
                if hash != key.request_hash {
                    return Err(StoreError::Conflict(format!(
                        "Idempotency-Key '{}' was already used for a different request",
                        key.key
                    )));
                }
                return Ok(Idempotent::Replayed(response));
            }
            let outcome = approve_in(&mut tx, ids, correlation, timeout_secs, actor).await?;
            if outcome.approved.is_empty() {
                sqlx::query("DELETE FROM idempotency_keys WHERE actor = $1 AND key = $2")
                    .bind(&key.actor)
                    .bind(&key.key)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query("UPDATE idempotency_keys SET response = $3 WHERE actor = $1 AND key = $2")
                    .bind(&key.actor)
                    .bind(&key.key)
                    .bind(crate::approve_response_json(&outcome, correlation)?)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(Idempotent::Fresh(outcome))
        }
        .await;
        super::finish(tx, r).await
    }

    async fn reject_updates(&self, ids: &[UpdateId], actor: &Actor) -> Result<u64> {
        let now = now_micros();
        let raw: Vec<Uuid> = ids.iter().map(|i| i.0).collect();
        let mut tx = self.pool.begin().await?;
        let r: Result<_> = async {
            let rejected: Vec<(Uuid, Uuid)> = sqlx::query_as(
                "UPDATE updates SET status = 'rejected', command_id = NULL, fingerprint = NULL, updated_at = $1 \
                 WHERE id = ANY($2) AND status IN ('pending', 'failed', 'awaiting_confirmation') RETURNING id, host_id",
            )
            .bind(now)
            .bind(&raw)
            .fetch_all(&mut *tx)
            .await?;
            let mut per_host: BTreeMap<HostId, Vec<Uuid>> = BTreeMap::new();
            for (id, host) in &rejected {
                per_host.entry(HostId(*host)).or_default().push(*id);
            }
            let evs: Vec<_> = per_host
                .into_iter()
                .map(|(host, mut ids)| {
                    ids.sort();
                    let ev = NewEvent {
                        event_type: events::UPDATES_REJECTED.into(),
                        subject: events::host_subject(host),
                        actor: actor.clone(),
                        correlation: None,
                        causation: None,
                        payload: json!({ "ids": ids }),
                    };
                    prepare_event(ev, Some(host), now)
                })
                .collect();
            insert_events(&mut tx, &evs).await?;
            Ok(rejected.len() as u64)
        }
        .await;
        super::finish(tx, r).await
    }

    async fn version_history(
        &self,
        host: Option<HostId>,
        limit: u32,
    ) -> Result<Vec<VersionChange>> {
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT v.*, h.hostname FROM update_version_history v JOIN hosts h ON h.id = v.host_id",
        );
        if let Some(h) = host {
            q.push(" WHERE v.host_id = ").push_bind(h.0);
        }
        q.push(" ORDER BY v.installed_at DESC, v.package LIMIT ")
            .push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(VersionChange {
                    host_id: HostId(r.try_get("host_id")?),
                    hostname: r.try_get("hostname")?,
                    manager: rows::manager(&r.try_get::<String, _>("manager")?)?,
                    package: r.try_get("package")?,
                    from_version: r.try_get("from_version")?,
                    to_version: r.try_get("to_version")?,
                    command_id: CommandId(r.try_get("command_id")?),
                    correlation_id: CorrelationId(r.try_get("correlation_id")?),
                    installed_at: r.try_get("installed_at")?,
                })
            })
            .collect()
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

/// Approve `ids` inside the caller's transaction (see [`UpdateStore::approve_updates`]).
async fn approve_in(
    conn: &mut PgConnection,
    ids: &[UpdateId],
    correlation: CorrelationId,
    timeout_secs: u32,
    actor: &Actor,
) -> Result<ApproveOutcome> {
    let now = now_micros();
    let mut seen = HashSet::new();
    let ids: Vec<UpdateId> = ids.iter().copied().filter(|i| seen.insert(*i)).collect();
    let raw: Vec<Uuid> = ids.iter().map(|i| i.0).collect();
    // Read and lock the candidates once (in id order, like ingest, so the two never
    // deadlock): why an id is skipped, each row's fingerprint.
    let found_rows = sqlx::query(
        "SELECT u.*, h.hostname AS hostname, h.state AS host_state, h.agentless AS host_agentless \
         FROM updates u JOIN hosts h ON h.id = u.host_id WHERE u.id = ANY($1) ORDER BY u.id \
         FOR NO KEY UPDATE OF u",
    )
    .bind(&raw)
    .fetch_all(&mut *conn)
    .await?;
    let found: HashMap<UpdateId, (Update, Option<String>)> = found_rows
        .iter()
        .map(|r| {
            let u = rows::update(r)?;
            let state: String = r.try_get("host_state")?;
            let cannot_run = host_cannot_run(&u.hostname, &state, r.try_get("host_agentless")?);
            Ok((u.id, (u, cannot_run)))
        })
        .collect::<Result<_>>()?;
    let mut skipped = Vec::new();
    let mut command_of: BTreeMap<HostId, CommandId> = BTreeMap::new();
    let (mut todo_ids, mut todo_fps, mut todo_cmds) = (Vec::new(), Vec::new(), Vec::new());
    for id in &ids {
        match found.get(id) {
            None => skipped.push((*id, "not found".to_string())),
            Some((_, Some(why))) => skipped.push((*id, why.clone())),
            Some((u, None)) if u.held || !APPROVABLE.contains(&u.status) => {
                skipped.push((*id, skip_reason(u.status, u.held)))
            }
            Some((u, None)) => {
                let arch = u.arch.as_deref().unwrap_or("");
                todo_ids.push(u.id.0);
                todo_fps.push(fingerprint(
                    u.manager.as_str(),
                    &u.package,
                    arch,
                    &u.current_version,
                    &u.available_version,
                ));
                todo_cmds.push(command_of.entry(u.host_id).or_default().0);
            }
        }
    }
    // The approval itself: ONE guarded statement for every row (seed 004, F-B1-7);
    // the rows go straight to `dry_run` on their host's command.
    let approved_rows = sqlx::query(
        "UPDATE updates u SET status = 'dry_run', fingerprint = v.fp, command_id = v.cmd, \
         correlation_id = $4, updated_at = $5 \
         FROM UNNEST($1::uuid[], $2::text[], $3::uuid[]) AS v(id, fp, cmd) \
         WHERE u.id = v.id AND u.status IN ('pending', 'failed', 'awaiting_confirmation') AND NOT u.held \
         RETURNING u.id, u.host_id, u.manager, u.package, u.available_version",
    )
    .bind(&todo_ids)
    .bind(&todo_fps)
    .bind(&todo_cmds)
    .bind(correlation.0)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    // One dry-run per host with that host's packages and image updates.
    let mut per_host: BTreeMap<HostId, (Vec<Uuid>, Vec<crate::command_plan::ApprovedRow>)> =
        BTreeMap::new();
    for r in &approved_rows {
        let e = per_host.entry(HostId(r.try_get("host_id")?)).or_default();
        e.0.push(r.try_get("id")?);
        e.1.push((
            r.try_get("manager")?,
            r.try_get("package")?,
            r.try_get("available_version")?,
        ));
    }
    let mut evs = Vec::new();
    let mut commands = Vec::with_capacity(per_host.len());
    for (host, (ids, rows)) in per_host {
        let cmd = command_of[&host];
        evs.push(prepare_event(
            NewEvent {
                event_type: events::UPDATES_APPROVED.into(),
                subject: events::host_subject(host),
                actor: actor.clone(),
                correlation: Some(correlation),
                causation: None,
                payload: json!({ "ids": ids, "command_id": cmd }),
            },
            Some(host),
            now,
        ));
        let spec = crate::command_plan::dry_run_spec(rows);
        let c = insert_command(
            &mut *conn,
            cmd,
            host,
            &spec,
            correlation,
            None,
            None,
            timeout_secs,
            now,
        )
        .await?;
        commands.push(c);
    }
    evs.extend(
        commands
            .iter()
            .map(|c| crate::command_events::queued(c, actor, now)),
    );
    insert_events(&mut *conn, &evs).await?;
    let approved_ids: Vec<Uuid> = approved_rows
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
    let rows = sqlx::query(&format!(
        "{UPDATE_SELECT} WHERE u.id = ANY($1) ORDER BY u.package COLLATE \"C\", u.host_id"
    ))
    .bind(&approved_ids)
    .fetch_all(&mut *conn)
    .await?;
    let approved = rows.iter().map(rows::update).collect::<Result<Vec<_>>>()?;
    Ok(ApproveOutcome {
        approved,
        commands,
        skipped,
    })
}
