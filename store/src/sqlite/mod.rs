//! SQLite backend of the [`Store`](crate::Store) trait: the embedded default.
//!
//! One WAL-mode file (or `sqlite::memory:` on a single connection). Writes that read
//! before they write run in `BEGIN IMMEDIATE` transactions so that concurrent writers
//! queue on SQLite's write lock instead of failing to upgrade a read lock.

use crate::migrate::{MigrationError, OPEN_TIMEOUT, SQLITE_MIGRATIONS};
use crate::Store;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;

mod stubs;

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
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(open_err)?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let opts = if memory {
            opts
        } else {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
        };
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
        SQLITE_MIGRATIONS
            .run(&pool)
            .await
            .map_err(|source| MigrationError::Migrate {
                url: shown.clone(),
                source,
            })?;
        Ok(Self { pool })
    }
}

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
