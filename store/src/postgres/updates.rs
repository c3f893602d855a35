//! Update listings, approval, rejection, history and dashboard figures on PostgreSQL.
//! (Report ingestion lives in `ingest.rs`.)

use super::commands::{insert_command, queued_event};
use super::rows::{self, UPDATE_SELECT};
use super::{insert_events, PgStore};
use crate::common::{fingerprint, now_micros, prepare_event, skip_reason, APPROVABLE, SEVERITY_ORDER_SQL};
use crate::{events, Actor, ApproveOutcome, IngestOutcome, IngestReport, NewEvent, Result, UpdateStore};
use async_trait::async_trait;
use canopy_api_types::commands::CommandSpec;
use canopy_api_types::updates::*;
use canopy_api_types::*;
use sqlx::{Postgres, QueryBuilder, Row};
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

fn push_filters(q: &mut QueryBuilder<'_, Postgres>, f: &UpdateFilter) {
    q.push(" WHERE TRUE");
    if let Some(h) = f.host_id {
        q.push(" AND u.host_id = ").push_bind(h.0);
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
    if let Some(p) = &f.package {
        // Plain substring (no LIKE wildcards), case-sensitive like the SQLite backend.
        q.push(" AND strpos(u.package, ").push_bind(p.clone()).push(") > 0");
    }
}

#[async_trait]
impl UpdateStore for PgStore {
    async fn ingest_report(&self, host: HostId, report: IngestReport, actor: &Actor) -> Result<IngestOutcome> {
        let mut tx = self.pool.begin().await?;
        let out = super::ingest::ingest(&mut tx, host, report, actor).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn list_updates(&self, f: &UpdateFilter) -> Result<Page<Update>> {
        let mut count = QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM updates u");
        push_filters(&mut count, f);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        let mut q = QueryBuilder::<Postgres>::new(UPDATE_SELECT);
        push_filters(&mut q, f);
        q.push(format!(" ORDER BY {SEVERITY_ORDER_SQL}, u.package, h.hostname, u.id LIMIT "))
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
        let now = now_micros();
        let raw: Vec<Uuid> = ids.iter().map(|i| i.0).collect();
        let mut tx = self.pool.begin().await?;
        // Lock the rows so the fingerprints below describe exactly what gets approved.
        let found_rows = sqlx::query(&format!("{UPDATE_SELECT} WHERE u.id = ANY($1) FOR UPDATE OF u"))
            .bind(&raw)
            .fetch_all(&mut *tx)
            .await?;
        let found: HashMap<UpdateId, Update> = found_rows
            .iter()
            .map(|r| rows::update(r).map(|u| (u.id, u)))
            .collect::<Result<_>>()?;
        let mut skipped = Vec::new();
        let (mut fp_ids, mut fps) = (Vec::new(), Vec::new());
        let mut seen = HashSet::new();
        for id in ids {
            match found.get(id) {
                None => skipped.push((*id, "unknown update".to_string())),
                Some(u) if u.held || !APPROVABLE.contains(&u.status) => skipped.push((*id, skip_reason(u.status, u.held))),
                Some(u) if !seen.insert(u.id) => {}
                Some(u) => {
                    let arch = u.arch.as_deref().unwrap_or("");
                    fp_ids.push(u.id.0);
                    fps.push(fingerprint(u.manager.as_str(), &u.package, arch, &u.current_version, &u.available_version));
                }
            }
        }
        // The approval itself: ONE statement for every row (seed 004, F-B1-7).
        let approved_ids: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE updates u SET status = 'approved', fingerprint = f.fp, correlation_id = $3, updated_at = $4 \
             FROM UNNEST($1::uuid[], $2::text[]) AS f(id, fp) \
             WHERE u.id = f.id AND u.status IN ('pending', 'failed') AND NOT u.held RETURNING u.id",
        )
        .bind(&fp_ids)
        .bind(&fps)
        .bind(correlation.0)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut by_host: BTreeMap<HostId, Vec<&Update>> = BTreeMap::new();
        for id in &approved_ids {
            if let Some(u) = found.get(&UpdateId(*id)) {
                by_host.entry(u.host_id).or_default().push(u);
            }
        }
        let skipped_json: Vec<_> = skipped
            .iter()
            .map(|(i, r)| serde_json::json!({ "id": i, "reason": r }))
            .collect();
        let mut evs = vec![prepare_event(
            NewEvent {
                event_type: events::UPDATES_APPROVED.into(),
                subject: "updates".into(),
                actor: actor.clone(),
                correlation: Some(correlation),
                causation: None,
                payload: serde_json::json!({ "ids": approved_ids, "skipped": skipped_json }),
            },
            None,
            now,
        )];
        let (mut moved_ids, mut moved_cmds, mut commands) = (Vec::new(), Vec::new(), Vec::new());
        for (host, updates) in &by_host {
            let mut packages: Vec<String> = updates.iter().map(|u| u.package.clone()).collect();
            packages.sort();
            packages.dedup();
            let cmd = CommandId::new();
            let spec = CommandSpec::DryRun { packages };
            let c = insert_command(&mut tx, cmd, *host, &spec, correlation, None, None, timeout_secs, now).await?;
            evs.push(queued_event(&c, actor, now));
            moved_ids.extend(updates.iter().map(|u| u.id.0));
            moved_cmds.extend(updates.iter().map(|_| cmd.0));
            commands.push(c);
        }
        if !moved_ids.is_empty() {
            sqlx::query(
                "UPDATE updates u SET status = 'dry_run', command_id = m.cmd \
                 FROM UNNEST($1::uuid[], $2::uuid[]) AS m(id, cmd) WHERE u.id = m.id",
            )
            .bind(&moved_ids)
            .bind(&moved_cmds)
            .execute(&mut *tx)
            .await?;
        }
        insert_events(&mut tx, &evs).await?;
        let rows = sqlx::query(&format!(
            "{UPDATE_SELECT} WHERE u.id = ANY($1) ORDER BY array_position($1, u.id)"
        ))
        .bind(&approved_ids)
        .fetch_all(&mut *tx)
        .await?;
        let approved = rows.iter().map(rows::update).collect::<Result<Vec<_>>>()?;
        tx.commit().await?;
        Ok(ApproveOutcome {
            approved,
            commands,
            skipped,
        })
    }

    async fn reject_updates(&self, ids: &[UpdateId], actor: &Actor) -> Result<u64> {
        let now = now_micros();
        let raw: Vec<Uuid> = ids.iter().map(|i| i.0).collect();
        let mut tx = self.pool.begin().await?;
        let rejected: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE updates SET status = 'rejected', command_id = NULL, updated_at = $1 WHERE id = ANY($2) \
             AND status IN ('pending', 'failed', 'approved', 'awaiting_confirmation') RETURNING id",
        )
        .bind(now)
        .bind(&raw)
        .fetch_all(&mut *tx)
        .await?;
        let ev = NewEvent {
            event_type: events::UPDATES_REJECTED.into(),
            subject: "updates".into(),
            actor: actor.clone(),
            correlation: None,
            causation: None,
            payload: serde_json::json!({ "ids": rejected }),
        };
        insert_events(&mut tx, &[prepare_event(ev, None, now)]).await?;
        tx.commit().await?;
        Ok(rejected.len() as u64)
    }

    async fn version_history(&self, host: Option<HostId>, limit: u32) -> Result<Vec<VersionChange>> {
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
        let by_severity: Vec<(String, i64)> = sqlx::query_as(
            "SELECT severity, COUNT(*) FROM updates WHERE status NOT IN ('installed', 'reconciled', 'rejected') \
             GROUP BY severity ORDER BY severity",
        )
        .fetch_all(&self.pool)
        .await?;
        let by_status: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM updates GROUP BY status ORDER BY status")
                .fetch_all(&self.pool)
                .await?;
        let hosts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hosts")
            .fetch_one(&self.pool)
            .await?;
        let with: i64 = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT host_id) FROM updates WHERE status NOT IN ('installed', 'reconciled', 'rejected')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(UpdateStats {
            by_severity: by_severity
                .into_iter()
                .filter_map(|(s, n)| Some((Severity::parse(&s)?, n.max(0) as u64)))
                .collect(),
            by_status: by_status
                .into_iter()
                .filter_map(|(s, n)| Some((UpdateStatus::parse(&s)?, n.max(0) as u64)))
                .collect(),
            hosts: hosts.max(0) as u64,
            hosts_with_updates: with.max(0) as u64,
        })
    }
}
