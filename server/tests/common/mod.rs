//! `spawn_app()`: a real server on 127.0.0.1:0 with a fresh database (SQLite file or
//! a new PostgreSQL database), a logged-in admin client, and helpers that speak the
//! agent protocol over real HTTP.
#![allow(dead_code)]

pub mod cli;
pub mod deploy;
pub mod docker_lab;
pub mod lab;
pub mod privilege;
pub mod scripted;
pub mod scripted_lab;
pub mod tls;
pub mod update_lab;
pub mod webdriver;

use canopy_api_types::agent::*;
use canopy_api_types::auth::CreateRegistrationToken;
use canopy_api_types::client::Client;
use canopy_api_types::updates::{PackageManager, PackageUpdate, Severity};
use canopy_server::settings::{Secret, Settings};
use sqlx::Connection;
use std::time::Duration;

pub const ADMIN_PASSWORD: &str = "correct horse battery";

/// `on_both_backends!(a, b)`: one `#[tokio::test]` per function and backend, in the modules
/// `sqlite` and `postgres`; each function takes the [`Backend`].
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite { use super::*; $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(Backend::Sqlite).await } )* }
        mod postgres { use super::*; $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(Backend::Postgres).await } )* }
    };
}

pub struct TestApp {
    pub base: String,
    pub admin: Client,
    pub anon: Client,
    pub settings: Settings,
    _dir: tempfile::TempDir,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh PostgreSQL database on the server named by CANOPY_TEST_POSTGRES_URL.
/// Missing → the test fails (never a silent pass), unless CANOPY_SKIP_POSTGRES=1.
pub async fn fresh_postgres_url() -> Option<String> {
    let Ok(admin_url) = std::env::var("CANOPY_TEST_POSTGRES_URL") else {
        if std::env::var("CANOPY_SKIP_POSTGRES").as_deref() == Ok("1") {
            eprintln!("SKIPPED (CANOPY_SKIP_POSTGRES=1): PostgreSQL variant of this test");
            return None;
        }
        panic!("set CANOPY_TEST_POSTGRES_URL (cargo xtask test starts a PostgreSQL) or CANOPY_SKIP_POSTGRES=1");
    };
    let name = format!("canopy_srv_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect to test postgres");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').expect("url has a database part");
    Some(format!("{base}/{name}"))
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(
    backend: Backend,
    tweak: impl FnOnce(&mut Settings),
) -> Option<TestApp> {
    let dir = tempfile::tempdir().unwrap();
    let database_url = match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("canopy.db").display()),
        Backend::Postgres => fresh_postgres_url().await?,
    };
    let mut settings = Settings {
        database_url,
        data_dir: dir.path().join("data"),
        admin_password: Some(Secret::new(ADMIN_PASSWORD)),
        sweep_interval_secs: 1,
        auth_attempts_per_minute: 1000,
        ..Settings::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // Agents deployed by a test reach this server.
    settings.deploy.server_url = base.clone();
    tweak(&mut settings);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let s = settings.clone();
    let state = canopy_server::prepare(s).await.expect("server prepares");
    tokio::spawn(canopy_server::serve(state, listener, async move {
        let _ = rx.await;
    }));
    let anon = Client::new(http(), base.clone());
    let pair = anon
        .login("admin", ADMIN_PASSWORD)
        .await
        .expect("admin logs in");
    let admin = anon.clone().with_token(pair.access_token);
    Some(TestApp {
        base,
        admin,
        anon,
        settings,
        _dir: dir,
        _shutdown: tx,
    })
}

pub fn facts(name: &str) -> HostFacts {
    HostFacts {
        hostname: name.into(),
        machine_id: format!("{:032x}", uuid::Uuid::new_v4().as_u128()),
        os_id: "debian".into(),
        os_pretty: "Debian GNU/Linux 12 (bookworm)".into(),
        kernel: "6.8.12-4-pve".into(),
        arch: "x86_64".into(),
        agent_version: "test".into(),
        read_only: false,
        run_as: "root".into(),
        package_db: Vec::new(),
    }
}

pub fn package(name: &str, security: bool) -> PackageUpdate {
    PackageUpdate {
        manager: PackageManager::Apt,
        package: name.into(),
        current_version: "1.0-1".into(),
        available_version: "1.1-1".into(),
        arch: Some("amd64".into()),
        source: Some(
            if security {
                "bookworm-security"
            } else {
                "bookworm"
            }
            .into(),
        ),
        severity: if security {
            Severity::Security
        } else {
            Severity::Normal
        },
        held: false,
    }
}

/// An agent speaking the real protocol over HTTP (register, check-in, report, result).
pub struct ProtocolAgent {
    pub client: Client,
    pub host_id: canopy_api_types::HostId,
    pub facts: HostFacts,
}

impl TestApp {
    /// Asserts that the events recorded under `correlation` include each of `expected`.
    pub async fn assert_events(
        &self,
        correlation: canopy_api_types::CorrelationId,
        expected: &[&str],
    ) {
        let events = self
            .admin
            .events(&canopy_api_types::hosts::EventFilter {
                correlation_id: Some(correlation),
                ..Default::default()
            })
            .await
            .unwrap();
        let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
        for t in expected {
            assert!(types.contains(t), "{t} missing from {types:?}");
        }
    }

    pub async fn registration_token(&self, seats: u32) -> String {
        self.admin
            .create_registration_token(&CreateRegistrationToken {
                label: "test".into(),
                seats,
                expires_in_secs: 3600,
            })
            .await
            .unwrap()
            .token
    }

    /// The open update of `package` once an agent reported it (bounded wait).
    pub async fn reported(&self, package: &str) -> canopy_api_types::updates::Update {
        eventually(Duration::from_secs(120), || async {
            self.admin
                .updates(&canopy_api_types::updates::UpdateFilter {
                    package: Some(package.into()),
                    ..Default::default()
                })
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|u| u.package == package)
        })
        .await
    }

    /// Approve one update and wait for its dry-run to complete: its id and plan.
    pub async fn dry_run(
        &self,
        update: &canopy_api_types::updates::Update,
    ) -> (
        canopy_api_types::CommandId,
        Vec<canopy_api_types::commands::PlannedPackage>,
    ) {
        let approved = self.admin.approve(vec![update.id]).await.unwrap();
        let id = approved.dry_run_commands[0];
        let dry = self.finished_command(id, Duration::from_secs(90)).await;
        assert_eq!(
            dry.status,
            canopy_api_types::commands::CommandStatus::Completed,
            "dry-run of {} failed: {:?}",
            update.package,
            dry.result
        );
        (id, dry.result.unwrap().planned)
    }

    /// The command once it reaches a terminal state (bounded wait).
    pub async fn finished_command(
        &self,
        id: canopy_api_types::CommandId,
        limit: Duration,
    ) -> canopy_api_types::commands::Command {
        eventually(limit, || async {
            let c = self.admin.command(id).await.unwrap();
            c.status.is_terminal().then_some(c)
        })
        .await
    }

    pub async fn enrol(&self, hostname: &str) -> ProtocolAgent {
        let token = self.registration_token(1).await;
        let facts = facts(hostname);
        let r = self
            .anon
            .register(&RegisterRequest {
                registration_token: token,
                facts: facts.clone(),
                current_token: None,
            })
            .await
            .unwrap();
        ProtocolAgent {
            client: Client::new(http(), self.base.clone()).with_token(r.agent_token),
            host_id: r.host_id,
            facts,
        }
    }
}

impl ProtocolAgent {
    pub async fn report(&self, rows: Vec<serde_json::Value>) -> ReportAccepted {
        self.client
            .upload_report(&ReportUpload {
                report_hash: format!("{:x}", uuid::Uuid::new_v4().as_u128()),
                reboot_required: false,
                scanned_at: chrono::Utc::now(),
                scanner_errors: vec![],
                updates: rows,
                containers: None,
            })
            .await
            .unwrap()
    }

    pub async fn checkin(&self, wait_secs: u32) -> CheckinResponse {
        self.client
            .checkin(&CheckinRequest {
                facts: self.facts.clone(),
                report_hash: None,
                wait_secs,
                connecting: false,
            })
            .await
            .unwrap()
    }
}

/// Poll `f` until it returns Some, at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The PVE simulator serving the first cluster of `estate` (a cluster file's TOML).
#[allow(dead_code)]
pub async fn start_sim(estate: &str) -> canopy_pve_sim::RunningCluster {
    let file = canopy_pve_sim::SimFile::from_toml_str(estate).expect("the estate parses");
    canopy_pve_sim::start(file.clusters[0].clone())
        .await
        .expect("the simulator starts")
}

impl TestApp {
    /// Adds `sim` as cluster `name` with `token`, pinned by its fingerprint; the first
    /// discovery pass runs now, the next ones hourly.
    #[allow(dead_code)]
    pub async fn add_cluster(&self, name: &str, sim: &canopy_pve_sim::RunningCluster, token: &str) {
        self.admin
            .create_cluster(&canopy_api_types::clusters::CreateCluster {
                name: name.into(),
                endpoints: vec![sim.url()],
                token: token.into(),
                fingerprints: vec![sim.fingerprint()],
                ca_pem: None,
                interval_secs: Some(3600),
            })
            .await
            .expect("the cluster is added");
    }
}
