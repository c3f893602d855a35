//! Report ingestion on PostgreSQL: one transaction, multi-row statements of
//! [`REPORT_CHUNK_ROWS`] rows, and per-row error isolation with savepoints.
//!
//! The host's open rows are loaded once and the report is classified in Rust by the
//! shared [`crate::ingest_plan`] (new, refreshed, reset to pending, unchanged, gone). A chunk
//! the database refuses is redone row by row, each in its own SAVEPOINT, so one bad row
//! is reported in `rejected` and the rest are kept.

use super::{insert_events, rows};
use crate::common::{now_micros, prepare_event};
use crate::ingest_plan::{self, OpenRow, Refresh, Source};
use crate::{
    events, Actor, IngestOutcome, IngestReport, NewEvent, Result, StoreError, REPORT_CHUNK_ROWS,
};
use canopy_api_types::agent::RejectedRow;
use canopy_api_types::updates::{PackageUpdate, Severity};
use canopy_api_types::{HostId, UpdateId};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{Acquire, PgConnection, Row};
use uuid::Uuid;

/// What to write for one reported row.
enum Op<'a> {
    Insert(UpdateId, &'a PackageUpdate),
    Refresh(&'a Refresh),
}

struct Write<'a> {
    index: usize,
    op: Op<'a>,
}

/// Insert new rows with one `INSERT … SELECT FROM UNNEST(…)`.
async fn insert_rows(
    conn: &mut PgConnection,
    host: HostId,
    rows: &[&Write<'_>],
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let n = rows.len();
    let (mut ids, mut managers, mut packages, mut arches) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut currents, mut availables, mut sources, mut severities, mut helds) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for w in rows {
        let Op::Insert(id, r) = w.op else { continue };
        ids.push(id.0);
        managers.push(r.manager.as_str());
        packages.push(r.package.as_str());
        arches.push(r.arch.as_deref().unwrap_or(""));
        currents.push(r.current_version.as_str());
        availables.push(r.available_version.as_str());
        sources.push(r.source.as_deref());
        severities.push(r.severity.as_str());
        helds.push(r.held);
    }
    sqlx::query(
        "INSERT INTO updates (id, host_id, manager, package, arch, current_version, available_version, source, \
         severity, held, status, first_seen, updated_at) \
         SELECT r.id, $1, r.manager, r.package, r.arch, r.cur, r.avail, r.source, r.severity, r.held, 'pending', $2, $2 \
         FROM UNNEST($3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bool[]) \
              AS r(id, manager, package, arch, cur, avail, source, severity, held)",
    )
    .bind(host.0)
    .bind(now)
    .bind(ids)
    .bind(managers)
    .bind(packages)
    .bind(arches)
    .bind(currents)
    .bind(availables)
    .bind(sources)
    .bind(severities)
    .bind(helds)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Refresh or reset open rows with one `UPDATE … FROM UNNEST(…)`.
async fn update_rows(
    conn: &mut PgConnection,
    rows: &[&Write<'_>],
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let n = rows.len();
    let (mut ids, mut currents, mut availables, mut sources) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut severities, mut helds, mut resets) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for w in rows {
        let Op::Refresh(f) = w.op else { continue };
        let (r, reset) = (&f.row, f.reset);
        ids.push(f.id.0);
        currents.push(r.current_version.as_str());
        availables.push(r.available_version.as_str());
        sources.push(r.source.as_deref());
        severities.push(r.severity.as_str());
        helds.push(r.held);
        resets.push(reset);
    }
    sqlx::query(
        "UPDATE updates u SET current_version = r.cur, available_version = r.avail, source = r.source, \
         severity = r.severity, held = r.held, updated_at = $1, \
         status = CASE WHEN r.reset THEN 'pending' ELSE u.status END, \
         fingerprint = CASE WHEN r.reset THEN NULL ELSE u.fingerprint END, \
         command_id = CASE WHEN r.reset THEN NULL ELSE u.command_id END \
         FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::bool[]) \
              AS r(id, cur, avail, source, severity, held, reset) \
         WHERE u.id = r.id",
    )
    .bind(now)
    .bind(ids)
    .bind(currents)
    .bind(availables)
    .bind(sources)
    .bind(severities)
    .bind(helds)
    .bind(resets)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn write(
    conn: &mut PgConnection,
    host: HostId,
    rows: &[&Write<'_>],
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let (inserts, updates): (Vec<&Write<'_>>, Vec<&Write<'_>>) =
        rows.iter().partition(|w| matches!(w.op, Op::Insert(..)));
    if !inserts.is_empty() {
        insert_rows(conn, host, &inserts, now).await?;
    }
    if !updates.is_empty() {
        update_rows(conn, &updates, now).await?;
    }
    Ok(())
}

/// Write `writes` chunk by chunk; a refused chunk is redone row by row in savepoints.
/// Returns the refused rows.
async fn write_isolated(
    conn: &mut PgConnection,
    host: HostId,
    writes: &[Write<'_>],
    now: DateTime<Utc>,
) -> Result<Vec<RejectedRow>> {
    let mut rejected = Vec::new();
    for chunk in writes.chunks(REPORT_CHUNK_ROWS) {
        let refs: Vec<&Write<'_>> = chunk.iter().collect();
        let mut sp = conn.begin().await?;
        match write(&mut sp, host, &refs, now).await {
            Ok(()) => {
                sp.commit().await?;
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "report chunk refused; isolating the bad rows");
                sp.rollback().await?;
            }
        }
        for w in chunk {
            let mut one = conn.begin().await?;
            match write(&mut one, host, &[w], now).await {
                Ok(()) => one.commit().await?,
                Err(e) => {
                    one.rollback().await?;
                    let reason = match e.as_database_error() {
                        Some(d) => format!("refused by the database: {}", d.message()),
                        None => return Err(StoreError::Database(e)),
                    };
                    rejected.push(RejectedRow {
                        index: w.index,
                        reason,
                    });
                }
            }
        }
    }
    Ok(rejected)
}

/// The host's open rows, locked in id order: an approval running at the same time either
/// finishes first (and ingest sees its `dry_run` rows) or waits for this report.
async fn load_open(conn: &mut PgConnection, host: HostId) -> Result<Vec<OpenRow>> {
    let found = sqlx::query(
        "SELECT id, manager, package, arch, current_version, available_version, source, severity, held, status \
         FROM updates WHERE host_id = $1 AND status NOT IN ('installed', 'reconciled') ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(host.0)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(found.len());
    for r in &found {
        let severity: String = r.try_get("severity")?;
        out.push(OpenRow {
            id: UpdateId(r.try_get("id")?),
            manager: rows::manager(&r.try_get::<String, _>("manager")?)?,
            package: r.try_get("package")?,
            arch: r.try_get("arch")?,
            current_version: r.try_get("current_version")?,
            available_version: r.try_get("available_version")?,
            source: r.try_get("source")?,
            severity: Severity::parse(&severity).ok_or_else(|| {
                StoreError::corrupt("updates", format!("unknown severity '{severity}'"))
            })?,
            held: r.try_get("held")?,
            status: rows::update_status(&r.try_get::<String, _>("status")?)?,
        });
    }
    Ok(out)
}

/// Store one report for `host` inside the caller's transaction.
pub(super) async fn ingest(
    conn: &mut PgConnection,
    host: HostId,
    report: IngestReport,
    actor: &Actor,
    source: Source,
) -> Result<IngestOutcome> {
    let now = now_micros();
    // Serialise reports of one host: two concurrent ingests would both see a row as new.
    let exists: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM hosts WHERE id = $1 FOR NO KEY UPDATE")
            .bind(host.0)
            .fetch_optional(&mut *conn)
            .await?;
    if exists.is_none() {
        return Err(StoreError::NotFound(format!("host {host}")));
    }
    let open = load_open(conn, host).await?;
    let plan = ingest_plan::plan(open, &report);
    let mut writes: Vec<Write<'_>> = plan
        .inserts
        .iter()
        .map(|(index, r)| Write {
            index: *index,
            op: Op::Insert(UpdateId::new(), r),
        })
        .collect();
    writes.extend(plan.refreshes.iter().map(|f| Write {
        index: f.index,
        op: Op::Refresh(f),
    }));
    let refused = write_isolated(conn, host, &writes, now).await?;
    let refused_new = writes
        .iter()
        .filter(|w| matches!(w.op, Op::Insert(..)) && refused.iter().any(|x| x.index == w.index))
        .count() as u64;
    let discovered = plan.inserts.len() as u64 - refused_new;
    let refreshed = plan.refreshes.len() as u64 - (refused.len() as u64 - refused_new);
    let accepted = discovered + refreshed + plan.unchanged;
    let mut rejected = plan.rejected.clone();
    rejected.extend(refused);
    rejected.sort_by_key(|r| r.index);

    // Open rows the scan no longer lists were applied outside Canopy or withdrawn.
    let gone: Vec<Uuid> = plan.reconcile.iter().map(|id| id.0).collect();
    if !gone.is_empty() {
        sqlx::query("UPDATE updates SET status = 'reconciled', closed_at = $1, updated_at = $1 WHERE id = ANY($2)")
            .bind(now)
            .bind(&gone)
            .execute(&mut *conn)
            .await?;
    }
    if source == Source::Report {
        sqlx::query(
            "UPDATE hosts SET report_hash = $1, reboot_required = $2, last_report = $3 WHERE id = $4",
        )
        .bind(&report.report_hash)
        .bind(report.reboot_required)
        .bind(now)
        .bind(host.0)
        .execute(&mut *conn)
        .await?;
        if let Some(containers) = &report.containers {
            super::docker::replace_containers(conn, host, containers, now).await?;
        }
    }
    let reconciled = gone.len() as u64;
    let resets = plan.refreshes.iter().filter(|f| f.reset).count();
    let mut evs = vec![prepare_event(
        NewEvent {
            event_type: source.event_type().into(),
            subject: events::host_subject(host),
            actor: actor.clone(),
            correlation: None,
            causation: None,
            payload: json!({
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
        },
        Some(host),
        now,
    )];
    if reconciled > 0 {
        evs.push(prepare_event(
            NewEvent {
                event_type: events::UPDATES_RECONCILED.into(),
                subject: events::host_subject(host),
                actor: actor.clone(),
                correlation: None,
                causation: None,
                payload: json!({ "ids": plan.reconcile }),
            },
            Some(host),
            now,
        ));
    }
    insert_events(conn, &evs).await?;
    Ok(IngestOutcome {
        accepted,
        rejected,
        reconciled,
        discovered,
    })
}
