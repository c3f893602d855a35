//! Fresh databases for the conformance suite: a temp-file SQLite per test, and a new
//! `canopy_test_<random>` database on the PostgreSQL server named by
//! `CANOPY_TEST_POSTGRES_URL` per test.

use canopy_store::Store;
use sqlx::Connection;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A database URL no migration has touched yet.
pub struct Empty {
    pub backend: Backend,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// An opened (migrated) store on its own database.
pub struct Fresh {
    pub store: Arc<dyn Store>,
    pub db: Empty,
}

pub async fn empty(backend: Backend) -> Option<Empty> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("canopy.db").display());
            Some(Empty {
                backend,
                url,
                _dir: Some(dir),
            })
        }
        Backend::Postgres => {
            let base = match std::env::var("CANOPY_TEST_POSTGRES_URL") {
                Ok(u) if !u.trim().is_empty() => u,
                _ if std::env::var("CANOPY_SKIP_POSTGRES").as_deref() == Ok("1") => {
                    eprintln!("postgres conformance test skipped: CANOPY_SKIP_POSTGRES=1");
                    return None;
                }
                _ => panic!(
                    "set CANOPY_TEST_POSTGRES_URL; cargo xtask test starts a PostgreSQL \
                     (or set CANOPY_SKIP_POSTGRES=1 to skip the postgres conformance tests)"
                ),
            };
            let name = format!("canopy_test_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&base)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to CANOPY_TEST_POSTGRES_URL: {e}"));
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
            let _ = conn.close().await;
            Some(Empty {
                backend,
                url: with_database(&base, &name),
                _dir: None,
            })
        }
    }
}

/// `base` with its database name replaced by `name` (query string kept).
fn with_database(base: &str, name: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (base, String::new()),
    };
    let authority_start = head.find("://").map(|i| i + 3).unwrap_or(0);
    let head = match head[authority_start..].find('/') {
        Some(slash) => &head[..authority_start + slash],
        None => head,
    };
    format!("{head}/{name}{query}")
}

pub async fn fresh(backend: Backend) -> Option<Fresh> {
    let db = empty(backend).await?;
    let store = canopy_store::open(&db.url)
        .await
        .unwrap_or_else(|e| panic!("opening a fresh {} database: {e}", backend.name()));
    assert_eq!(store.backend(), backend.name());
    Some(Fresh { store, db })
}

pub async fn fresh_sqlite() -> Option<Fresh> {
    fresh(Backend::Sqlite).await
}

pub async fn fresh_postgres() -> Option<Fresh> {
    fresh(Backend::Postgres).await
}

impl Fresh {
    /// Drop a PostgreSQL test database once its test passed (a failed test keeps it
    /// for inspection). SQLite's temp dir goes away with `Empty`.
    pub async fn cleanup(self) {
        let Fresh { store, db } = self;
        drop(store);
        if db.backend != Backend::Postgres {
            return;
        }
        let Ok(base) = std::env::var("CANOPY_TEST_POSTGRES_URL") else {
            return;
        };
        let name = db
            .url
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .split('?')
            .next()
            .unwrap_or_default();
        if !name.starts_with("canopy_test_") {
            return;
        }
        if let Ok(mut c) = sqlx::PgConnection::connect(&base).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut c)
                .await;
            let _ = c.close().await;
        }
    }
}

/// Run raw SQL against the database behind `db` (outside the store).
pub async fn exec(db: &Empty, sql: &str) -> Result<(), sqlx::Error> {
    match db.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await?;
            sqlx::raw_sql(sql).execute(&mut c).await?;
            c.close().await
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await?;
            sqlx::raw_sql(sql).execute(&mut c).await?;
            c.close().await
        }
    }
}

/// `(version, description, success)` of every applied migration.
pub async fn applied(db: &Empty) -> Vec<(i64, String, bool)> {
    let sql = "SELECT version, description, success FROM _sqlx_migrations ORDER BY version";
    match db.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url)
                .await
                .expect("connect");
            sqlx::query_as(sql)
                .fetch_all(&mut c)
                .await
                .expect("read _sqlx_migrations")
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.expect("connect");
            sqlx::query_as(sql)
                .fetch_all(&mut c)
                .await
                .expect("read _sqlx_migrations")
        }
    }
}

/// Apply only the first `n` migration files of the backend (as an older binary would).
pub async fn apply_first(db: &Empty, n: usize) {
    let dir = std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("../migrations")
    .join(db.backend.name());
    let all = sqlx::migrate::Migrator::new(dir)
        .await
        .expect("read migrations");
    let mut some = sqlx::migrate::Migrator::DEFAULT;
    some.migrations = std::borrow::Cow::Owned(all.migrations[..n].to_vec());
    match db.backend {
        Backend::Sqlite => {
            let opts: sqlx::sqlite::SqliteConnectOptions = db.url.parse().expect("url");
            let mut c = sqlx::SqliteConnection::connect_with(&opts.create_if_missing(true))
                .await
                .expect("connect");
            some.run_direct(&mut c)
                .await
                .expect("apply first migrations");
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.expect("connect");
            some.run_direct(&mut c)
                .await
                .expect("apply first migrations");
        }
    }
}

#[test]
fn database_name_is_replaced() {
    assert_eq!(
        with_database("postgres://canopy@127.0.0.1:5433/postgres", "x"),
        "postgres://canopy@127.0.0.1:5433/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
}
