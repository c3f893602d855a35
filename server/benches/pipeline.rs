//! `cargo xtask bench` runs this: the pipeline benchmarks, each measured as a
//! ratio against a baseline taken in the same run on the same machine.
//!
//! 1. Ingest of one 3,772-update report vs a raw bulk INSERT of the same rows (SQLite), on a
//!    connection with the store's own settings: the floor of what the ingest can cost, so a
//!    ratio below 1 means the baseline is not one.
//! 2. Hash-gated check-ins per second vs a no-op axum handler (SQLite, loopback).
//! 3. Approve → the waiting agent receives its command: p50/p95 over loopback.
//!
//! Prints one `BENCH name=value` line per figure for xtask to record.

use canopy_api_types::agent::{CheckinRequest, HostFacts, RegisterRequest, ReportUpload};
use canopy_api_types::auth::CreateRegistrationToken;
use canopy_api_types::client::Client;
use canopy_api_types::updates::{PackageManager, PackageUpdate, Severity, UpdateFilter};
use canopy_api_types::HostId;
use canopy_server::settings::{Secret, Settings};
use canopy_store::{Actor, IngestReport, NewHost};
use sqlx::Connection;
use std::time::{Duration, Instant};

const REPORT_ROWS: usize = 3772;

fn rows() -> Vec<(usize, PackageUpdate)> {
    (0..REPORT_ROWS)
        .map(|i| {
            (
                i,
                PackageUpdate {
                    manager: PackageManager::Dnf,
                    package: format!("package-{i:05}"),
                    current_version: "1.0.0-1.fc40".into(),
                    available_version: "1.0.1-1.fc40".into(),
                    arch: Some("x86_64".into()),
                    source: Some("updates".into()),
                    severity: if i % 40 == 0 {
                        Severity::Security
                    } else {
                        Severity::Normal
                    },
                    held: false,
                },
            )
        })
        .collect()
}

fn facts(i: usize) -> HostFacts {
    HostFacts {
        hostname: format!("bench-{i}"),
        machine_id: format!("{:032x}", uuid::Uuid::new_v4().as_u128()),
        os_id: "fedora".into(),
        os_pretty: "Fedora Linux 40".into(),
        kernel: "6.8".into(),
        arch: "x86_64".into(),
        agent_version: "bench".into(),
        read_only: false,
        run_as: "root".into(),
        package_db: Vec::new(),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn bench_ingest(dir: &std::path::Path) -> (Duration, Duration) {
    let url = format!("sqlite://{}", dir.join("ingest.db").display());
    let store = canopy_store::open(&url).await.expect("open sqlite");
    let token = "bench-token";
    store
        .create_registration_token(
            canopy_store::NewRegistrationToken {
                id: Default::default(),
                token_hash: token.into(),
                label: String::new(),
                seats: 1000,
                expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
                guest_id: None,
            },
            &Actor::System,
        )
        .await
        .unwrap();
    let mut ingest = Vec::new();
    let mut raw = Vec::new();
    // The baseline connection is set up as the store's own (WAL, synchronous = NORMAL, busy
    // timeout, foreign keys): with sqlx's defaults (synchronous = FULL) it was slower than the
    // ingest it is the floor of.
    let opts = canopy_store::sqlite::connect_options(&url).unwrap();
    let mut raw_conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    for round in 0..7 {
        let host = store
            .register_host(
                token,
                NewHost {
                    id: HostId::new(),
                    facts: facts(round),
                    credential_hash: "x".into(),
                    reenrol: None,
                },
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        let report = IngestReport {
            report_hash: format!("h{round}"),
            reboot_required: false,
            scanned_at: chrono::Utc::now(),
            scanned_managers: vec![PackageManager::Dnf],
            scanner_errors: vec![],
            rows: rows(),
            containers: None,
        };
        checkpoint(&mut raw_conn).await;
        let t = Instant::now();
        let out = store
            .ingest_report(host.id, report, &Actor::Agent(host.id))
            .await
            .unwrap();
        ingest.push(t.elapsed());
        assert_eq!(out.accepted as usize, REPORT_ROWS);

        // Baseline: the same rows as plain multi-row INSERTs in one transaction.
        let raw_host = store
            .register_host(
                token,
                NewHost {
                    id: HostId::new(),
                    facts: facts(100 + round),
                    credential_hash: "x".into(),
                    reenrol: None,
                },
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        // Everything but the writing is ready before the clock starts (the ingest, too, gets
        // its rows built): the baseline times only what the store cannot do with less.
        let raw_rows = rows();
        let ids: Vec<String> = (0..raw_rows.len())
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        let now = chrono::Utc::now()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        checkpoint(&mut raw_conn).await;
        let t = Instant::now();
        let mut tx = raw_conn.begin().await.unwrap();
        for (chunk, ids) in raw_rows.chunks(500).zip(ids.chunks(500)) {
            let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO updates (id, host_id, manager, package, arch, current_version, available_version, source, severity, held, status, first_seen, updated_at) ",
            );
            qb.push_values(chunk.iter().zip(ids), |mut b, ((_, r), id)| {
                b.push_bind(id)
                    .push_bind(raw_host.id.to_string())
                    .push_bind(r.manager.as_str())
                    .push_bind(&r.package)
                    .push_bind(r.arch.clone().unwrap_or_default())
                    .push_bind(&r.current_version)
                    .push_bind(&r.available_version)
                    .push_bind(&r.source)
                    .push_bind(r.severity.as_str())
                    .push_bind(false)
                    .push_bind("pending")
                    .push_bind(&now)
                    .push_bind(&now);
            });
            qb.build().execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
        raw.push(t.elapsed());
    }
    (median(ingest), median(raw))
}

/// Both timed writes start from an empty WAL, so that neither pays for a checkpoint the
/// other's pages made due.
async fn checkpoint(conn: &mut sqlx::SqliteConnection) {
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(conn)
        .await
        .unwrap();
}

async fn spawn_server(dir: &std::path::Path) -> (String, tokio::sync::oneshot::Sender<()>) {
    let s = Settings {
        database_url: format!("sqlite://{}", dir.join("server.db").display()),
        data_dir: dir.join("data"),
        admin_password: Some(Secret::new("bench-password")),
        auth_attempts_per_minute: 100_000,
        ..Settings::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = canopy_server::prepare(s).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(canopy_server::serve(state, listener, async move {
        let _ = rx.await;
    }));
    (base, tx)
}

/// A bare axum server that answers check-ins with nothing: the HTTP floor, not Canopy's router.
#[allow(clippy::disallowed_methods)]
async fn spawn_noop() -> String {
    let app = axum::Router::new().route(
        "/api/v1/agent/checkin",
        axum::routing::post(|axum::Json(_): axum::Json<CheckinRequest>| async {
            axum::Json(serde_json::json!({ "commands": [], "report_wanted": false }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

struct Agent {
    client: Client,
    facts: HostFacts,
    hash: String,
}

async fn enrol(base: &str, admin: &Client, n: usize) -> Vec<Agent> {
    let token = admin
        .create_registration_token(&CreateRegistrationToken {
            label: "bench".into(),
            seats: n as u32,
            expires_in_secs: 3600,
        })
        .await
        .unwrap()
        .token;
    let anon = Client::new(http(), base);
    let mut agents = Vec::new();
    for i in 0..n {
        let facts = facts(i);
        let r = anon
            .register(&RegisterRequest {
                registration_token: token.clone(),
                facts: facts.clone(),
                current_token: None,
            })
            .await
            .unwrap();
        let client = Client::new(http(), base).with_token(r.agent_token);
        let hash = format!("hash-{i}");
        let upload = ReportUpload {
            report_hash: hash.clone(),
            reboot_required: false,
            scanned_at: chrono::Utc::now(),
            scanner_errors: vec![],
            updates: vec![serde_json::to_value(&rows()[i].1).unwrap()],
            containers: None,
        };
        client.upload_report(&upload).await.unwrap();
        agents.push(Agent {
            client,
            facts,
            hash,
        });
    }
    agents
}

/// Check-ins per second from `agents` concurrent loops for `dur`.
async fn checkin_rate(agents: &[(Client, CheckinRequest)], dur: Duration) -> f64 {
    let deadline = Instant::now() + dur;
    let mut set = tokio::task::JoinSet::new();
    for (client, req) in agents {
        let (client, req) = (client.clone(), req.clone());
        set.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let r = client.checkin(&req).await.expect("check-in");
                assert!(
                    !r.report_wanted,
                    "hash-gated: the report must not be wanted"
                );
                n += 1;
            }
            n
        });
    }
    let mut total = 0;
    while let Some(n) = set.join_next().await {
        total += n.unwrap();
    }
    total as f64 / dur.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (ingest, raw) = bench_ingest(dir.path()).await;
    println!("BENCH ingest_3772_ms={:.1}", ingest.as_secs_f64() * 1e3);
    println!("BENCH raw_insert_3772_ms={:.1}", raw.as_secs_f64() * 1e3);
    let ratio = ingest.as_secs_f64() / raw.as_secs_f64();
    if ratio < 1.0 {
        eprintln!("pipeline: the raw baseline was slower than the ingest: it is not a floor");
    }
    println!("BENCH ingest_vs_raw_ratio={ratio:.2}");

    let (base, _stop) = spawn_server(dir.path()).await;
    let anon = Client::new(http(), base.clone());
    let admin = anon.clone().with_token(
        anon.login("admin", "bench-password")
            .await
            .unwrap()
            .access_token,
    );
    let agents = enrol(&base, &admin, 16).await;
    let reqs: Vec<_> = agents
        .iter()
        .map(|a| {
            (
                a.client.clone(),
                CheckinRequest {
                    facts: a.facts.clone(),
                    report_hash: Some(a.hash.clone()),
                    wait_secs: 0,
                    connecting: false,
                },
            )
        })
        .collect();
    let noop_base = spawn_noop().await;
    let noop: Vec<_> = reqs
        .iter()
        .map(|(_, r)| (Client::new(http(), noop_base.clone()), r.clone()))
        .collect();
    let dur = Duration::from_secs(5);
    let canopy_rate = checkin_rate(&reqs, dur).await;
    let noop_rate = checkin_rate(&noop, dur).await;
    println!("BENCH checkins_per_sec={canopy_rate:.0}");
    println!("BENCH noop_per_sec={noop_rate:.0}");
    println!(
        "BENCH checkin_vs_noop_pct={:.1}",
        100.0 * canopy_rate / noop_rate
    );

    // Approve → the long-polling agent receives the dry-run.
    let agent = &agents[0];
    let mut lat = Vec::new();
    let mut to_start = Vec::new();
    for i in 0..40 {
        let pkg = format!("latency-{i}");
        let mut row = rows()[0].1.clone();
        row.package = pkg.clone();
        let upload = ReportUpload {
            report_hash: format!("lat-{i}"),
            reboot_required: false,
            scanned_at: chrono::Utc::now(),
            scanner_errors: vec![],
            updates: vec![
                serde_json::to_value(&rows()[0].1).unwrap(),
                serde_json::to_value(&row).unwrap(),
            ],
            containers: None,
        };
        agent.client.upload_report(&upload).await.unwrap();
        let id = admin
            .updates(&UpdateFilter {
                package: Some(pkg),
                ..Default::default()
            })
            .await
            .unwrap()
            .items[0]
            .id;
        let client = agent.client.clone();
        let req = CheckinRequest {
            facts: agent.facts.clone(),
            report_hash: Some(format!("lat-{i}")),
            wait_secs: 25,
            connecting: false,
        };
        let waiter = tokio::spawn(async move {
            let r = client.checkin(&req).await.unwrap();
            (Instant::now(), r)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t0 = Instant::now();
        admin.approve(vec![id]).await.unwrap();
        let (got_at, resp) = waiter.await.unwrap();
        assert_eq!(resp.commands.len(), 1);
        // The start handshake: the agent runs the command only once the server said go.
        agent
            .client
            .command_started(resp.commands[0].id)
            .await
            .unwrap();
        let go_at = Instant::now();
        lat.push(got_at.saturating_duration_since(t0));
        to_start.push(go_at.saturating_duration_since(t0));
    }
    let quantiles = |mut v: Vec<Duration>| {
        v.sort();
        let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;
        (p(0.5), p(0.95))
    };
    let (p50, p95) = quantiles(lat);
    println!("BENCH approve_to_command_p50_ms={p50:.1}");
    println!("BENCH approve_to_command_p95_ms={p95:.1}");
    let (p50, p95) = quantiles(to_start);
    println!("BENCH approve_to_start_p50_ms={p50:.1}");
    println!("BENCH approve_to_start_p95_ms={p95:.1}");
}
