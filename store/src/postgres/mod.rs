//! PostgreSQL backend of the [`Store`](crate::Store) trait, for several server replicas.
//!
//! Native types (UUID, TIMESTAMPTZ, JSONB, BOOLEAN). Every mutating method is one
//! transaction that writes its events next to the projection rows it changes. Rows that
//! a concurrent writer could change between a read and a write are locked with
//! `SELECT … FOR NO KEY UPDATE` (never plain `FOR UPDATE`: that would also block the
//! foreign-key checks of inserts referencing the row, e.g. a new command of a host whose
//! report is being ingested, and deadlock); update rows are locked in id order. The
//! command queue is claimed with `FOR UPDATE SKIP LOCKED`.

use crate::common::PreparedEvent;
use crate::migrate::{MigrationError, OPEN_TIMEOUT, POSTGRES_MIGRATIONS};
use crate::{Store, StoreError};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use std::str::FromStr;

mod accounts;
mod commands;
mod complete;
mod discovery;
mod docker;
mod events;
mod hosts;
mod ingest;
mod inventory;
mod operations;
mod rows;
mod ssh_keys;
mod updates;
mod users;

#[cfg(test)]
mod smoke;

/// Connections per pool (per server replica).
const MAX_CONNECTIONS: u32 = 16;
/// SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";
/// SQLSTATE of a foreign-key violation.
const FOREIGN_KEY_VIOLATION: &str = "23503";

/// The PostgreSQL store: a connection pool over one database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connect to `url` (`postgres://…`) and apply every pending migration. Fails within
    /// about [`OPEN_TIMEOUT`] when the server is unreachable; errors never show the password.
    pub async fn open(url: &str) -> Result<Self, MigrationError> {
        let shown = crate::url_without_password(url);
        let open_err = |source| MigrationError::Open {
            url: shown.clone(),
            source,
        };
        let opts = PgConnectOptions::from_str(url).map_err(open_err)?;
        let pool_opts = PgPoolOptions::new()
            .acquire_timeout(OPEN_TIMEOUT)
            .max_connections(MAX_CONNECTIONS);
        let pool = match tokio::time::timeout(OPEN_TIMEOUT, pool_opts.connect_with(opts)).await {
            Ok(Ok(pool)) => pool,
            Ok(Err(e)) => return Err(open_err(e)),
            Err(_) => return Err(open_err(sqlx::Error::PoolTimedOut)),
        };
        POSTGRES_MIGRATIONS
            .run(&pool)
            .await
            .map_err(|source| MigrationError::Migrate {
                url: shown.clone(),
                source,
            })?;
        Ok(Self { pool })
    }

    /// The underlying pool (for tools and tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }
}

/// The SQLSTATE of a database error, if `e` is one.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

/// A unique violation becomes `Conflict(msg())`; anything else stays a database error.
fn unique_to_conflict(e: sqlx::Error, msg: impl FnOnce() -> String) -> StoreError {
    if sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) {
        StoreError::Conflict(msg())
    } else {
        StoreError::Database(e)
    }
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    sqlstate(e).as_deref() == Some(FOREIGN_KEY_VIOLATION)
}

/// Events per multi-row INSERT (11 binds each, well below PostgreSQL's 65,535).
const EVENT_CHUNK: usize = 1_000;

/// Append prepared events in multi-row INSERTs of [`EVENT_CHUNK`] (inside the caller's
/// transaction).
async fn insert_events(conn: &mut PgConnection, evs: &[PreparedEvent]) -> Result<(), StoreError> {
    for chunk in evs.chunks(EVENT_CHUNK) {
        insert_event_chunk(&mut *conn, chunk).await?;
    }
    Ok(())
}

async fn insert_event_chunk(
    conn: &mut PgConnection,
    evs: &[PreparedEvent],
) -> Result<(), StoreError> {
    let mut q = QueryBuilder::<Postgres>::new(
        "INSERT INTO events (id, ts, event_type, subject, host_id, guest_id, actor, correlation_id, causation_id, payload, checksum) ",
    );
    q.push_values(evs, |mut b, e| {
        b.push_bind(e.id.0)
            .push_bind(e.ts)
            .push_bind(e.event.event_type.clone())
            .push_bind(e.event.subject.clone())
            .push_bind(e.host_id.map(|h| h.0))
            .push_bind(e.guest_id.map(|g| g.0))
            .push_bind(e.event.actor.to_string())
            .push_bind(e.event.correlation.map(|c| c.0))
            .push_bind(e.event.causation.map(|c| c.0))
            .push_bind(e.event.payload.clone())
            .push_bind(e.checksum.clone());
    });
    q.build().execute(&mut *conn).await?;
    Ok(())
}

/// End a transaction: commit on success; on failure roll back right away. (A dropped
/// sqlx transaction only rolls back when its connection is next used, keeping its row
/// locks until then — which a `SKIP LOCKED` claim or a waiting UPDATE would trip over.)
async fn finish<T>(
    tx: sqlx::Transaction<'_, Postgres>,
    r: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match r {
        Ok(v) => {
            tx.commit().await?;
            Ok(v)
        }
        Err(e) => {
            if let Err(re) = tx.rollback().await {
                tracing::warn!(error = %re, "rolling back a failed transaction failed");
            }
            Err(e)
        }
    }
}
