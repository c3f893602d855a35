//! Opening a database and applying migrations, failing fast.
//!
//! Migrations are embedded from `migrations/sqlite/` and `migrations/postgres/` (same
//! numbers, same meaning; `cargo xtask check` keeps them paired). sqlx's migrator
//! records each applied migration with its checksum in `_sqlx_migrations` inside the
//! migration's own transaction, refuses an applied migration whose file changed, and
//! refuses a database that has migrations this binary does not know. Migration files
//! never write into that table themselves (seed 004, F-B1-1).

use sqlx::migrate::Migrator;

pub(crate) static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
pub(crate) static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// How long opening a database may take before start-up gives up.
pub const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("database URL '{0}' is neither sqlite:// nor postgres://")]
    BadUrl(String),
    #[error("cannot open database {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating {url} failed: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// The migrations this binary carries for a backend: `(version, description)`.
pub fn known_migrations(backend: &str) -> Vec<(i64, String)> {
    let m = match backend {
        "sqlite" => &SQLITE_MIGRATIONS,
        _ => &POSTGRES_MIGRATIONS,
    };
    m.iter()
        .map(|m| (m.version, m.description.to_string()))
        .collect()
}
