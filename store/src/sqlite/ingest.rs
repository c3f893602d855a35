//! `ingest_report` on SQLite: one `BEGIN IMMEDIATE` transaction; the host's open rows
//! are loaded once, classified in Rust ([`crate::ingest_plan`]), then written as
//! multi-row INSERTs and `UPDATE … FROM (VALUES …)` statements of
//! [`REPORT_CHUNK_ROWS`] rows. A chunk the database refuses is replayed row by row,
//! each in its own SAVEPOINT, so one bad row is reported and the others are kept.

use super::{insert_events, new_event, placeholders, rows, ts, SqliteStore, Tx};
use crate::common::{now_micros, prepare_event};
use crate::ingest_plan::{self, OpenRow, Refresh, Source};
use crate::{events, Actor, IngestOutcome, IngestReport, Result, StoreError, REPORT_CHUNK_ROWS};
use canopy_api_types::agent::RejectedRow;
use canopy_api_types::updates::{PackageManager, PackageUpdate, Severity, UpdateStatus};
use canopy_api_types::{HostId, UpdateId};
use serde_json::json;
use sqlx::{QueryBuilder, Sqlite};

/// The database's own words for a refused row.
fn reason(e: &sqlx::Error) -> String {
    match e.as_database_error() {
        Some(d) => format!("refused by the database: {}", d.message()),
        None => format!("refused by the database: {e}"),
    }
}

async fn load_open(tx: &mut Tx, host: HostId) -> Result<Vec<OpenRow>> {
    const T: &str = "updates";
    let found = sqlx::query(
        "SELECT id, manager, package, arch, current_version, available_version, source, severity, held, status \
         FROM updates WHERE host_id = ? AND status NOT IN ('installed', 'reconciled')",
    )
    .bind(host.to_string())
    .fetch_all(&mut **tx)
    .await?;
    let mut out = Vec::with_capacity(found.len());
    for r in &found {
        let enum_of = |col: &str, s: String| {
            StoreError::corrupt(T, format!("column {col}: unknown value '{s}'"))
        };
        let manager = rows::text(r, T, "manager")?;
        let severity = rows::text(r, T, "severity")?;
        let status = rows::text(r, T, "status")?;
        out.push(OpenRow {
            id: rows::id(r, T, "id")?,
            manager: PackageManager::parse(&manager)
                .ok_or_else(|| enum_of("manager", manager.clone()))?,
            package: rows::text(r, T, "package")?,
            arch: rows::text(r, T, "arch")?,
            current_version: rows::text(r, T, "current_version")?,
            available_version: rows::text(r, T, "available_version")?,
            source: rows::opt_text(r, T, "source")?,
            severity: Severity::parse(&severity)
                .ok_or_else(|| enum_of("severity", severity.clone()))?,
            held: rows::int(r, T, "held")? != 0,
            status: UpdateStatus::parse(&status)
                .ok_or_else(|| enum_of("status", status.clone()))?,
        });
    }
    Ok(out)
}

/// Multi-row INSERT of new rows; `ids` are the ids given to `rows` (same order).
async fn insert_rows(
    tx: &mut Tx,
    host: HostId,
    rows: &[(UpdateId, &PackageUpdate)],
    now: &str,
) -> sqlx::Result<()> {
    let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
        "INSERT INTO updates (id, host_id, manager, package, arch, current_version, available_version, source, \
         severity, held, status, first_seen, updated_at) ",
    );
    qb.push_values(rows, |mut b, (id, r)| {
        b.push_bind(id.to_string())
            .push_bind(host.to_string())
            .push_bind(r.manager.as_str())
            .push_bind(r.package.clone())
            .push_bind(r.arch.clone().unwrap_or_default())
            .push_bind(r.current_version.clone())
            .push_bind(r.available_version.clone())
            .push_bind(r.source.clone())
            .push_bind(r.severity.as_str())
            .push_bind(r.held)
            .push_bind("pending")
            .push_bind(now.to_string())
            .push_bind(now.to_string());
    });
    qb.build().execute(&mut **tx).await.map(|_| ())
}

/// One `UPDATE … FROM (VALUES …)` overwriting changed rows.
async fn refresh_rows(tx: &mut Tx, rows: &[&Refresh], now: &str) -> sqlx::Result<()> {
    let mut qb: QueryBuilder<'_, Sqlite> =
        QueryBuilder::new("WITH v(id, cur, avail, src, sev, held, reset) AS (");
    qb.push_values(rows, |mut b, f| {
        b.push_bind(f.id.to_string())
            .push_bind(f.row.current_version.clone())
            .push_bind(f.row.available_version.clone())
            .push_bind(f.row.source.clone())
            .push_bind(f.row.severity.as_str())
            .push_bind(f.row.held)
            .push_bind(f.reset);
    });
    qb.push(
        ") UPDATE updates SET current_version = v.cur, available_version = v.avail, source = v.src, \
         severity = v.sev, held = v.held, \
         status = CASE WHEN v.reset THEN 'pending' ELSE updates.status END, \
         fingerprint = CASE WHEN v.reset THEN NULL ELSE updates.fingerprint END, \
         command_id = CASE WHEN v.reset THEN NULL ELSE updates.command_id END, updated_at = ",
    );
    qb.push_bind(now.to_string());
    qb.push(" FROM v WHERE updates.id = v.id");
    qb.build().execute(&mut **tx).await.map(|_| ())
}

/// Opens the per-row SAVEPOINT.
async fn savepoint(tx: &mut Tx) -> Result<()> {
    sqlx::query("SAVEPOINT ingest_row")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Closes the per-row SAVEPOINT, undoing the row's statement when it failed.
async fn release(tx: &mut Tx, failed: bool) -> Result<()> {
    if failed {
        sqlx::query("ROLLBACK TO ingest_row")
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("RELEASE ingest_row").execute(&mut **tx).await?;
    Ok(())
}

impl SqliteStore {
    pub(super) async fn ingest(
        &self,
        host: HostId,
        report: IngestReport,
        actor: &Actor,
        source: Source,
    ) -> Result<IngestOutcome> {
        let now = now_micros();
        let now_s = ts(now);
        let mut tx = self.begin_immediate().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM hosts WHERE id = ?")
            .bind(host.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("host {host}")));
        }
        let open = load_open(&mut tx, host).await?;
        let plan = ingest_plan::plan(open, &report);
        let mut rejected = plan.rejected.clone();
        let mut discovered = 0u64;
        let mut refreshed = 0u64;

        let new_rows: Vec<(UpdateId, usize, &PackageUpdate)> = plan
            .inserts
            .iter()
            .map(|(i, r)| (UpdateId::new(), *i, r))
            .collect();
        for chunk in new_rows.chunks(REPORT_CHUNK_ROWS) {
            let batch: Vec<(UpdateId, &PackageUpdate)> =
                chunk.iter().map(|(id, _, r)| (*id, *r)).collect();
            if insert_rows(&mut tx, host, &batch, &now_s).await.is_ok() {
                discovered += batch.len() as u64;
                continue;
            }
            for (id, index, row) in chunk {
                let one = [(*id, *row)];
                savepoint(&mut tx).await?;
                let res = insert_rows(&mut tx, host, &one, &now_s).await;
                release(&mut tx, res.is_err()).await?;
                match res {
                    Ok(()) => discovered += 1,
                    Err(e) => rejected.push(RejectedRow {
                        index: *index,
                        reason: reason(&e),
                    }),
                }
            }
        }

        let refreshes: Vec<&Refresh> = plan.refreshes.iter().collect();
        for chunk in refreshes.chunks(REPORT_CHUNK_ROWS) {
            if refresh_rows(&mut tx, chunk, &now_s).await.is_ok() {
                refreshed += chunk.len() as u64;
                continue;
            }
            for f in chunk {
                let one = [*f];
                savepoint(&mut tx).await?;
                let res = refresh_rows(&mut tx, &one, &now_s).await;
                release(&mut tx, res.is_err()).await?;
                match res {
                    Ok(()) => refreshed += 1,
                    Err(e) => rejected.push(RejectedRow {
                        index: f.index,
                        reason: reason(&e),
                    }),
                }
            }
        }

        for chunk in plan.reconcile.chunks(REPORT_CHUNK_ROWS) {
            let sql = format!(
                "UPDATE updates SET status = 'reconciled', closed_at = ?, updated_at = ? WHERE id IN ({})",
                placeholders(chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(&now_s).bind(&now_s);
            for id in chunk {
                q = q.bind(id.to_string());
            }
            q.execute(&mut *tx).await?;
        }

        if source == Source::Report {
            sqlx::query(
                "UPDATE hosts SET report_hash = ?, reboot_required = ?, last_report = ? WHERE id = ?",
            )
            .bind(&report.report_hash)
            .bind(report.reboot_required)
            .bind(&now_s)
            .bind(host.to_string())
            .execute(&mut *tx)
            .await?;
            if let Some(containers) = &report.containers {
                super::docker::replace_containers(&mut tx, host, containers, &now_s).await?;
            }
        }

        rejected.sort_by_key(|r| r.index);
        let accepted = discovered + refreshed + plan.unchanged;
        let reconciled = plan.reconcile.len() as u64;
        let resets = plan.refreshes.iter().filter(|f| f.reset).count();
        let mut evs = vec![prepare_event(
            new_event(
                source.event_type(),
                events::host_subject(host),
                actor,
                None,
                json!({
                    "containers": report.containers.as_ref().map(Vec::len),
                    "report_hash": report.report_hash,
                    "scanned_at": report.scanned_at,
                    "rows": report.rows.len(),
                    "accepted": accepted,
                    "discovered": discovered,
                    "refreshed": refreshed,
                    "reset_to_pending": resets,
                    "unchanged": plan.unchanged,
                    "rejected": rejected.len(),
                    "reconciled": reconciled,
                    "reboot_required": report.reboot_required,
                    "scanned_managers": report.scanned_managers,
                    "scanner_errors": report.scanner_errors,
                }),
            ),
            Some(host),
            now,
        )];
        if reconciled > 0 {
            evs.push(prepare_event(
                new_event(
                    events::UPDATES_RECONCILED,
                    events::host_subject(host),
                    actor,
                    None,
                    json!({ "ids": plan.reconcile }),
                ),
                Some(host),
                now,
            ));
        }
        insert_events(&mut tx, &evs).await?;
        tx.commit().await?;
        Ok(IngestOutcome {
            accepted,
            rejected,
            reconciled,
            discovered,
        })
    }
}
