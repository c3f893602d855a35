//! SQLite backend of the [`Store`](crate::Store) trait: the embedded default.
//!
//! One WAL-mode file (or `sqlite::memory:` on a single connection). Writes that read
//! before they write run in `BEGIN IMMEDIATE` transactions so that concurrent writers
//! queue on SQLite's write lock instead of failing to upgrade a read lock.

use crate::common::PreparedEvent;
use crate::migrate::{MigrationError, OPEN_TIMEOUT, SQLITE_MIGRATIONS};
use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, Transaction};
use std::str::FromStr;
use std::time::Duration;

mod accounts;
mod commands;
mod complete;
mod discovery;
mod docker;
mod event_store;
mod hosts;
mod ingest;
mod inventory;
mod operations;
mod queue;
mod rows;
mod ssh_keys;
mod updates;
mod users;

/// How long a writer waits for SQLite's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections in the pool of a file database.
const MAX_CONNECTIONS: u32 = 8;

/// The SQLite store: a connection pool over one database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating the file if missing) and migrate the database at `url`
    /// (`sqlite://PATH` or `sqlite::memory:`). Fails within [`OPEN_TIMEOUT`].
    pub async fn open(url: &str) -> Result<Self, MigrationError> {
        let shown = crate::url_without_password(url);
        let open_err = |source| MigrationError::Open {
            url: shown.clone(),
            source,
        };
        let memory = is_memory(url);
        let opts = connect_options(url).map_err(open_err)?;
        let pool_opts = SqlitePoolOptions::new().acquire_timeout(OPEN_TIMEOUT);
        // An in-memory database lives as long as its one connection: keep it forever.
        let pool_opts = if memory {
            pool_opts
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            pool_opts.max_connections(MAX_CONNECTIONS)
        };
        let pool = match tokio::time::timeout(OPEN_TIMEOUT, pool_opts.connect_with(opts)).await {
            Ok(Ok(pool)) => pool,
            Ok(Err(e)) => return Err(open_err(e)),
            Err(_) => return Err(open_err(sqlx::Error::PoolTimedOut)),
        };
        migrate(&pool)
            .await
            .map_err(|source| MigrationError::Migrate {
                url: shown.clone(),
                source,
            })?;
        Ok(Self { pool })
    }
}

fn is_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// How the store opens every connection to the database at `url`: WAL with
/// `synchronous = NORMAL` (a file database), foreign keys on, [`BUSY_TIMEOUT`]. Public so that
/// a benchmark's baseline connection is set up exactly like the store's.
pub fn connect_options(url: &str) -> Result<SqliteConnectOptions, sqlx::Error> {
    let opts = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    Ok(if is_memory(url) {
        opts
    } else {
        opts.journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
    })
}

/// Apply the pending migrations on one connection with foreign-key enforcement off, as
/// SQLite's procedure for rebuilding a table asks (dropping the old table must cascade
/// nothing); a rebuilding migration ends with a guard that fails it unless every
/// reference still resolves. The connection is put back with enforcement on; if that
/// fails it is closed instead of returned to the pool.
async fn migrate(pool: &SqlitePool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut conn = pool.acquire().await?;
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&mut *conn)
        .await?;
    let ran = SQLITE_MIGRATIONS.run(&mut *conn).await;
    let restored = sqlx::query("PRAGMA foreign_keys = ON")
        .execute(&mut *conn)
        .await;
    if restored.is_err() {
        conn.detach();
    }
    ran?;
    restored?;
    Ok(())
}

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

type Tx = Transaction<'static, Sqlite>;

impl SqliteStore {
    /// A write transaction holding SQLite's write lock from the start.
    async fn begin_immediate(&self) -> Result<Tx, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// The one timestamp encoding of this backend: UTC, microseconds, `Z` — fixed width,
/// so text order is time order and `<` in SQL compares times.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    crate::common::micros(t)
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Events per multi-row INSERT (11 binds each, well below SQLite's 32,766).
const EVENT_CHUNK: usize = 1_000;

/// Append prepared events (ids, timestamps and checksums fixed), one statement per
/// [`EVENT_CHUNK`] events.
async fn insert_events(
    conn: &mut SqliteConnection,
    events: &[PreparedEvent],
) -> Result<(), StoreError> {
    for chunk in events.chunks(EVENT_CHUNK) {
        insert_event_chunk(&mut *conn, chunk).await?;
    }
    Ok(())
}

async fn insert_event_chunk(
    conn: &mut SqliteConnection,
    events: &[PreparedEvent],
) -> Result<(), StoreError> {
    let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
        "INSERT INTO events (id, ts, event_type, subject, host_id, guest_id, actor, correlation_id, causation_id, payload, checksum) ",
    );
    qb.push_values(events, |mut b, e| {
        b.push_bind(e.id.to_string())
            .push_bind(ts(e.ts))
            .push_bind(e.event.event_type.clone())
            .push_bind(e.event.subject.clone())
            .push_bind(e.host_id.map(|h| h.to_string()))
            .push_bind(e.guest_id.map(|g| g.to_string()))
            .push_bind(e.event.actor.to_string())
            .push_bind(e.event.correlation.map(|c| c.to_string()))
            .push_bind(e.event.causation.map(|c| c.to_string()))
            .push_bind(e.event.payload.to_string())
            .push_bind(e.checksum.clone());
    });
    qb.build().execute(conn).await?;
    Ok(())
}

/// `true` when the error is a UNIQUE / PRIMARY KEY violation.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// `?, ?, ?` for an `IN (...)` list of `n` items.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// A new event about `subject` (no causation: the correlation groups the chain).
fn new_event(
    event_type: &str,
    subject: String,
    actor: &crate::Actor,
    correlation: Option<canopy_api_types::CorrelationId>,
    payload: serde_json::Value,
) -> crate::NewEvent {
    crate::NewEvent {
        event_type: event_type.to_string(),
        subject,
        actor: actor.clone(),
        correlation,
        causation: None,
        payload,
    }
}
