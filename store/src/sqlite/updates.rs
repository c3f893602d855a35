//! Reports, update listings, approval and history on SQLite.

use super::rows::{self, UPDATE_SELECT};
use super::{insert_events, SqliteStore, Tx};
use crate::common::{fingerprint, micros, now_micros, prepare_event, skip_reason, APPROVABLE, SEVERITY_ORDER_SQL};
use crate::{events, Actor, ApproveOutcome, IngestOutcome, IngestReport, NewEvent, Result, UpdateStore, REPORT_CHUNK_ROWS};
use async_trait::async_trait;
use canopy_api_types::agent::RejectedRow;
use canopy_api_types::commands::CommandSpec;
use canopy_api_types::updates::*;
use canopy_api_types::*;
use sqlx::{QueryBuilder, Row, Sqlite};
use std::collections::{BTreeMap, HashMap};

/// An open row as ingest needs it.
struct OpenRow {
    id: String,
    current: String,
    available: String,
    source: Option<String>,
    severity: String,
    held: bool,
    status: UpdateStatus,
}

type Key = (String, String, String);

fn ids_json<T: ToString>(ids: impl IntoIterator<Item = T>) -> String {
    serde_json::to_string(&ids.into_iter().map(|i| i.to_string()).collect::<Vec<_>>()).expect("ids serialise")
}

async fn insert_new_rows(
    tx: &mut Tx<'_>,
    host: &str,
    rows: &[(usize, &PackageUpdate)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<RejectedRow>> {
    let mut rejected = Vec::new();
    for chunk in rows.chunks(REPORT_CHUNK_ROWS) {
        let mut sp = tx.begin().await?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO updates (id, host_id, manager, package, arch, current_version, available_version, source, severity, held, status, first_seen, updated_at) ",
        );
        q.push_values(chunk, |mut b, (_, r)| {
            b.push_bind(UpdateId::new().to_string())
                .push_bind(host)
                .push_bind(r.manager.as_str())
                .push_bind(&r.package)
                .push_bind(r.arch.clone().unwrap_or_default())
                .push_bind(&r.current_version)
                .push_bind(&r.available_version)
                .push_bind(&r.source)
                .push_bind(r.severity.as_str())
                .push_bind(r.held)
                .push_bind("pending")
                .push_bind(now)
                .push_bind(now);
        });
        match q.build().execute(&mut *sp).await {
            Ok(_) => sp.commit().await?,
            Err(_) => {
                // Isolate the bad row(s): redo the chunk one row at a time.
                sp.rollback().await?;
                for (index, r) in chunk {
                    let mut one = tx.begin().await?;
                    let res = sqlx::query(
                        "INSERT INTO updates (id, host_id, manager, package, arch, current_version, available_version, source, severity, held, status, first_seen, updated_at) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                    )
                    .bind(UpdateId::new().to_string())
                    .bind(host)
                    .bind(r.manager.as_str())
                    .bind(&r.package)
                    .bind(r.arch.clone().unwrap_or_default())
                    .bind(&r.current_version)
                    .bind(&r.available_version)
                    .bind(&r.source)
                    .bind(r.severity.as_str())
                    .bind(r.held)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *one)
                    .await;
                    match res {
                        Ok(_) => one.commit().await?,
                        Err(e) => {
                            one.rollback().await?;
                            rejected.push(RejectedRow {
                                index: *index,
                                reason: format!("database refused the row: {e}"),
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(rejected)
}

#[async_trait]
impl UpdateStore for SqliteStore {
    async fn ingest_report(&self, host: HostId, report: IngestReport, actor: &Actor) -> Result<IngestOutcome> {
        let now = now_micros();
        let host_s = host.to_string();
        let mut tx = self.write_tx().await?;
        let mut open: HashMap<Key, OpenRow> = HashMap::new();
        let existing = sqlx::query(
            "SELECT id, manager, package, arch, current_version, available_version, source, severity, held, status \
             FROM updates WHERE host_id = ? AND status NOT IN ('installed', 'reconciled')",
        )
        .bind(&host_s)
        .fetch_all(&mut *tx)
        .await?;
        for r in existing {
            let status: String = r.try_get("status")?;
            open.insert(
                (r.try_get("manager")?, r.try_get("package")?, r.try_get("arch")?),
                OpenRow {
                    id: r.try_get("id")?,
                    current: r.try_get("current_version")?,
                    available: r.try_get("available_version")?,
                    source: r.try_get("source")?,
                    severity: r.try_get("severity")?,
                    held: r.try_get("held")?,
                    status: UpdateStatus::parse(&status).unwrap_or(UpdateStatus::Pending),
                },
            );
        }
        let mut new_rows = Vec::new();
        let mut accepted = 0u64;
        for (index, r) in &report.rows {
            let key = (r.manager.as_str().to_string(), r.package.clone(), r.arch.clone().unwrap_or_default());
            let Some(o) = open.remove(&key) else {
                new_rows.push((*index, r));
                continue;
            };
            accepted += 1;
            let in_flight = matches!(o.status, UpdateStatus::DryRun | UpdateStatus::Installing);
            if o.available != r.available_version && !in_flight {
                // A newer candidate: any earlier decision was about another version.
                sqlx::query(
                    "UPDATE updates SET current_version = ?, available_version = ?, source = ?, severity = ?, held = ?, \
                     status = 'pending', fingerprint = NULL, command_id = NULL, updated_at = ? WHERE id = ?",
                )
                .bind(&r.current_version)
                .bind(&r.available_version)
                .bind(&r.source)
                .bind(r.severity.as_str())
                .bind(r.held)
                .bind(now)
                .bind(&o.id)
                .execute(&mut *tx)
                .await?;
            } else if o.available == r.available_version
                && (o.current != r.current_version || o.source != r.source || o.severity != r.severity.as_str() || o.held != r.held)
            {
                sqlx::query("UPDATE updates SET current_version = ?, source = ?, severity = ?, held = ?, updated_at = ? WHERE id = ?")
                    .bind(&r.current_version)
                    .bind(&r.source)
                    .bind(r.severity.as_str())
                    .bind(r.held)
                    .bind(now)
                    .bind(&o.id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let rejected = insert_new_rows(&mut tx, &host_s, &new_rows, now).await?;
        let discovered = (new_rows.len() - rejected.len()) as u64;
        accepted += discovered;

        // Open rows the scan no longer lists were applied outside Canopy or withdrawn.
        let scanned: Vec<&str> = report.scanned_managers.iter().map(|m| m.as_str()).collect();
        let gone: Vec<String> = open
            .into_iter()
            .filter(|((m, _, _), o)| {
                scanned.contains(&m.as_str()) && !matches!(o.status, UpdateStatus::DryRun | UpdateStatus::Installing)
            })
            .map(|(_, o)| o.id)
            .collect();
        if !gone.is_empty() {
            sqlx::query(
                "UPDATE updates SET status = 'reconciled', closed_at = ?, updated_at = ?, command_id = NULL \
                 WHERE id IN (SELECT value FROM json_each(?))",
            )
            .bind(now)
            .bind(now)
            .bind(ids_json(&gone))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE hosts SET report_hash = ?, reboot_required = ?, last_report = ? WHERE id = ?")
            .bind(&report.report_hash)
            .bind(report.reboot_required)
            .bind(micros(report.scanned_at))
            .bind(&host_s)
            .execute(&mut *tx)
            .await?;
        let mut evs = vec![prepare_event(
            NewEvent {
                event_type: events::REPORT_INGESTED.into(),
                subject: events::host_subject(host),
                actor: actor.clone(),
                correlation: None,
                causation: None,
                payload: serde_json::json!({
                    "accepted": accepted, "discovered": discovered, "reconciled": gone.len(),
                    "rejected": rejected.len(), "reboot_required": report.reboot_required,
                    "scanner_errors": report.scanner_errors, "report_hash": report.report_hash,
                }),
            },
            Some(host),
            now,
        )];
        if !gone.is_empty() {
            evs.push(prepare_event(
                NewEvent {
                    event_type: events::UPDATES_RECONCILED.into(),
                    subject: format!("host/{host}/updates"),
                    actor: actor.clone(),
                    correlation: None,
                    causation: None,
                    payload: serde_json::json!({ "ids": gone, "reason": "no longer offered by the host's package manager (applied outside Canopy or withdrawn)" }),
                },
                Some(host),
                now,
            ));
        }
        insert_events(&mut tx, &evs).await?;
        tx.commit().await?;
        Ok(IngestOutcome {
            accepted,
            rejected,
            reconciled: gone.len() as u64,
            discovered,
        })
    }

    async fn list_updates(&self, f: &UpdateFilter) -> Result<Page<Update>> {
        fn filters(q: &mut QueryBuilder<'_, Sqlite>, f: &UpdateFilter) {
            q.push(" WHERE 1 = 1");
            if let Some(h) = f.host_id {
                q.push(" AND u.host_id = ").push_bind(h.to_string());
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
                q.push(" AND instr(u.package, ").push_bind(p.clone()).push(") > 0");
            }
        }
        let mut count = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM updates u");
        filters(&mut count, f);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        let mut q = QueryBuilder::<Sqlite>::new(UPDATE_SELECT);
        filters(&mut q, f);
        q.push(format!(" ORDER BY {SEVERITY_ORDER_SQL}, u.package, h.hostname LIMIT "))
            .push_bind(i64::from(f.per_page()))
            .push(" OFFSET ")
            .push_bind(i64::from((f.page() - 1) * f.per_page()));
        let rows = q.build().fetch_all(&self.pool).await?;
        Ok(Page {
            items: rows.iter().map(rows::update).collect::<Result<_>>()?,
            total: total as u64,
            page: f.page(),
            per_page: f.per_page(),
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
        let now = now_micros();
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(&format!("{UPDATE_SELECT} WHERE u.id IN (SELECT value FROM json_each(?))"))
            .bind(ids_json(ids))
            .fetch_all(&mut *tx)
            .await?;
        let found: HashMap<UpdateId, Update> = rows
            .iter()
            .map(|r| rows::update(r).map(|u| (u.id, u)))
            .collect::<Result<_>>()?;
        let mut skipped = Vec::new();
        let mut fingerprints = serde_json::Map::new();
        for id in ids {
            match found.get(id) {
                None => skipped.push((*id, "unknown update".to_string())),
                Some(u) if u.held || !APPROVABLE.contains(&u.status) => skipped.push((*id, skip_reason(u.status, u.held))),
                Some(u) => {
                    let fp = fingerprint(u.manager.as_str(), &u.package, u.arch.as_deref().unwrap_or(""), &u.current_version, &u.available_version);
                    fingerprints.insert(u.id.to_string(), serde_json::Value::String(fp));
                }
            }
        }
        // The approval itself: one statement for every row.
        let approved_ids: Vec<String> = sqlx::query_scalar(
            "UPDATE updates SET status = 'approved', fingerprint = json_extract(?1, '$.\"' || id || '\"'), \
             correlation_id = ?2, updated_at = ?3 \
             WHERE id IN (SELECT key FROM json_each(?1)) AND status IN ('pending', 'failed') AND held = 0 RETURNING id",
        )
        .bind(serde_json::Value::Object(fingerprints).to_string())
        .bind(correlation.to_string())
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut by_host: BTreeMap<HostId, Vec<&Update>> = BTreeMap::new();
        for id in &approved_ids {
            if let Some(u) = found.get(&id.parse::<UpdateId>().map_err(|_| crate::StoreError::corrupt("updates", id.clone()))?) {
                by_host.entry(u.host_id).or_default().push(u);
            }
        }
        let mut evs = vec![prepare_event(
            NewEvent {
                event_type: events::UPDATES_APPROVED.into(),
                subject: "updates".into(),
                actor: actor.clone(),
                correlation: Some(correlation),
                causation: None,
                payload: serde_json::json!({ "ids": approved_ids, "skipped": skipped.iter().map(|(i, r)| serde_json::json!({"id": i, "reason": r})).collect::<Vec<_>>() }),
            },
            None,
            now,
        )];
        let mut commands = Vec::new();
        for (host, updates) in &by_host {
            let mut packages: Vec<String> = updates.iter().map(|u| u.package.clone()).collect();
            packages.sort();
            packages.dedup();
            let cmd_id = CommandId::new();
            let spec = CommandSpec::DryRun { packages };
            super::commands::insert_command(&mut tx, cmd_id, *host, &spec, correlation, None, None, timeout_secs, now).await?;
            sqlx::query("UPDATE updates SET status = 'dry_run', command_id = ? WHERE id IN (SELECT value FROM json_each(?))")
                .bind(cmd_id.to_string())
                .bind(ids_json(updates.iter().map(|u| u.id)))
                .execute(&mut *tx)
                .await?;
            evs.push(super::commands::queued_event(*host, cmd_id, &spec, correlation, actor, now));
            commands.push(cmd_id);
        }
        insert_events(&mut tx, &evs).await?;
        let mut approved = Vec::new();
        let rows = sqlx::query(&format!("{UPDATE_SELECT} WHERE u.id IN (SELECT value FROM json_each(?))"))
            .bind(ids_json(&approved_ids))
            .fetch_all(&mut *tx)
            .await?;
        for r in &rows {
            approved.push(rows::update(r)?);
        }
        let mut cmds = Vec::new();
        for id in commands {
            cmds.push(super::commands::fetch(&mut tx, id).await?);
        }
        tx.commit().await?;
        Ok(ApproveOutcome {
            approved,
            commands: cmds,
            skipped,
        })
    }

    async fn reject_updates(&self, ids: &[UpdateId], actor: &Actor) -> Result<u64> {
        let now = now_micros();
        let mut tx = self.write_tx().await?;
        let rejected: Vec<String> = sqlx::query_scalar(
            "UPDATE updates SET status = 'rejected', command_id = NULL, updated_at = ? WHERE id IN (SELECT value FROM json_each(?)) \
             AND status IN ('pending', 'failed', 'approved', 'awaiting_confirmation') RETURNING id",
        )
        .bind(now)
        .bind(ids_json(ids))
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
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT v.*, h.hostname FROM update_version_history v JOIN hosts h ON h.id = v.host_id",
        );
        if let Some(h) = host {
            q.push(" WHERE v.host_id = ").push_bind(h.to_string());
        }
        q.push(" ORDER BY v.installed_at DESC, v.package LIMIT ").push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let manager: String = r.try_get("manager")?;
                Ok(VersionChange {
                    host_id: HostId(rows::uuid(r, "host_id")?),
                    hostname: r.try_get("hostname")?,
                    manager: PackageManager::parse(&manager).unwrap_or(PackageManager::Apt),
                    package: r.try_get("package")?,
                    from_version: r.try_get("from_version")?,
                    to_version: r.try_get("to_version")?,
                    command_id: CommandId(rows::uuid(r, "command_id")?),
                    correlation_id: CorrelationId(rows::uuid(r, "correlation_id")?),
                    installed_at: r.try_get("installed_at")?,
                })
            })
            .collect()
    }

    async fn stats(&self) -> Result<UpdateStats> {
        let by_severity: Vec<(String, i64)> = sqlx::query_as(
            "SELECT severity, COUNT(*) FROM updates WHERE status NOT IN ('installed','reconciled','rejected') GROUP BY severity",
        )
        .fetch_all(&self.pool)
        .await?;
        let by_status: Vec<(String, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM updates GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let hosts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hosts").fetch_one(&self.pool).await?;
        let with: i64 = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT host_id) FROM updates WHERE status NOT IN ('installed','reconciled','rejected')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(UpdateStats {
            by_severity: by_severity
                .into_iter()
                .filter_map(|(s, n)| Some((Severity::parse(&s)?, n as u64)))
                .collect(),
            by_status: by_status
                .into_iter()
                .filter_map(|(s, n)| Some((UpdateStatus::parse(&s)?, n as u64)))
                .collect(),
            hosts: hosts as u64,
            hosts_with_updates: with as u64,
        })
    }
}
