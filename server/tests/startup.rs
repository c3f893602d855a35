//! The real `canopy` binary refuses to start on a database it cannot open or
//! migrate, or with plain HTTP on a non-loopback address: non-zero exit within 10 s, with
//! the reason.

use std::process::Command;
use std::time::{Duration, Instant};

fn serve_with(db_url: &str, dir: &std::path::Path) -> (std::process::Output, Duration) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .arg("serve")
        .env("CANOPY_DATABASE_URL", db_url)
        .env("CANOPY_LISTEN", "127.0.0.1:0")
        .env("CANOPY_DATA_DIR", dir.join("data"))
        .env_remove("CANOPY_CONFIG")
        .output()
        .expect("canopy runs");
    (out, start.elapsed())
}

#[test]
fn unopenable_sqlite_exits_non_zero_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let (out, took) = serve_with("sqlite:///nonexistent-dir/deeper/canopy.db", dir.path());
    assert!(!out.status.success());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open database"), "{err}");
}

#[test]
fn unreachable_postgres_exits_non_zero_quickly() {
    let dir = tempfile::tempdir().unwrap();
    // Port 9 on loopback: nothing listens there.
    let (out, took) = serve_with("postgres://canopy:secret-pw@127.0.0.1:9/canopy", dir.path());
    assert!(!out.status.success());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("database start-up failed"), "{err}");
    assert!(!err.contains("secret-pw"), "the password leaked: {err}");
}

#[test]
fn a_database_with_an_unknown_migration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("canopy.db");
    let url = format!("sqlite://{}", db.display());
    // First start migrates (and then fails to listen on a bad address, which is fine).
    let out = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["admin", "migrate"])
        .env("CANOPY_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Pretend a newer Canopy applied migration 9999 to this database.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'from the future', 1, x'00', 0)")
            .execute(&mut c)
            .await
            .unwrap();
    });
    let (out, took) = serve_with(&url, dir.path());
    assert!(!out.status.success());
    assert!(took < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("migrat"), "{err}");
}

#[test]
fn admin_password_in_the_config_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("canopy.toml");
    std::fs::write(&config, "admin_password = \"in-the-file-pw\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env(
            "CANOPY_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("canopy.db").display()),
        )
        .env("CANOPY_LISTEN", "127.0.0.1:0")
        .env("CANOPY_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sets admin_password"), "{err}");
    assert!(err.contains("CANOPY_ADMIN_PASSWORD_FILE"), "{err}");
    assert!(
        !err.contains("in-the-file-pw"),
        "the password leaked: {err}"
    );
    assert!(
        !dir.path().join("canopy.db").exists(),
        "refused before touching the database"
    );
}

#[test]
fn plain_http_beyond_loopback_is_refused_before_anything_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("canopy.db");
    let start = Instant::now();
    // 192.0.2.1 (TEST-NET-1) is never this machine: nothing is bound and nothing is sent.
    let out = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .arg("serve")
        .env("CANOPY_DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("CANOPY_LISTEN", "192.0.2.1:8080")
        .env("CANOPY_TLS", "off")
        .env("CANOPY_DATA_DIR", dir.path().join("data"))
        .env_remove("CANOPY_CONFIG")
        .env_remove("CANOPY_ALLOW_PLAIN_HTTP")
        .output()
        .expect("canopy runs");
    assert!(!out.status.success());
    assert!(start.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing plain HTTP on 192.0.2.1:8080") && err.contains("allow_plain_http"),
        "{err}"
    );
    assert!(
        !err.contains("cannot listen"),
        "refused before binding: {err}"
    );
    assert!(!db.exists(), "refused before the database was opened");
}
