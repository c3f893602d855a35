//! Quick end-to-end checks of the PostgreSQL backend against a real server, run only
//! when `CANOPY_TEST_POSTGRES_URL` names one (the conformance suite in `store/tests/`
//! is the real specification; these catch SQL mistakes early).

use super::PgStore;
use crate::*;
use canopy_api_types::agent::HostFacts;
use canopy_api_types::commands::{CommandResult, CommandSpec, CommandStatus};
use canopy_api_types::hosts::EventFilter;
use canopy_api_types::updates::{
    PackageManager, PackageUpdate, Severity, UpdateFilter, UpdateStatus,
};
use canopy_api_types::*;
use chrono::{Duration, Utc};

/// A fresh database on the test server, or `None` when no server is configured.
async fn fresh() -> Option<PgStore> {
    let base = std::env::var("CANOPY_TEST_POSTGRES_URL").ok()?;
    let admin = sqlx::PgPool::connect(&base)
        .await
        .expect("connect to the test server");
    let name = format!("canopy_smoke_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create database");
    let (head, _) = base.rsplit_once('/').expect("URL has a database path");
    Some(
        PgStore::open(&format!("{head}/{name}"))
            .await
            .expect("open"),
    )
}

/// Drop the test's database (a failed test leaves it behind for inspection).
async fn drop_db(s: &PgStore) {
    let Ok(base) = std::env::var("CANOPY_TEST_POSTGRES_URL") else {
        return;
    };
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(s.pool())
        .await
        .expect("database name");
    s.pool().close().await;
    let admin = sqlx::PgPool::connect(&base)
        .await
        .expect("connect to the test server");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .expect("drop database");
}

fn pu(pkg: &str, cur: &str, avail: &str) -> PackageUpdate {
    PackageUpdate {
        manager: PackageManager::Apt,
        package: pkg.into(),
        current_version: cur.into(),
        available_version: avail.into(),
        arch: Some("amd64".into()),
        source: None,
        severity: Severity::Security,
        held: false,
    }
}

fn report(rows: Vec<PackageUpdate>) -> IngestReport {
    IngestReport {
        report_hash: format!("h{}", rows.len()),
        reboot_required: true,
        scanned_at: Utc::now(),
        scanned_managers: vec![PackageManager::Apt],
        scanner_errors: vec![],
        rows: rows.into_iter().enumerate().collect(),
        containers: None,
    }
}

fn ok_result() -> CommandResult {
    CommandResult {
        exit_code: 0,
        success: true,
        stdout: "ok".into(),
        stderr: String::new(),
        planned: vec![],
        removed: vec![],
        summary: "done".into(),
        health: None,
    }
}

async fn host(s: &PgStore) -> HostId {
    let admin = Actor::User("admin".into());
    let tok = NewRegistrationToken {
        id: RegistrationTokenId::new(),
        token_hash: "t".into(),
        label: "l".into(),
        seats: 2,
        expires_at: Utc::now() + Duration::hours(1),
        guest_id: None,
    };
    s.create_registration_token(tok, &admin)
        .await
        .expect("token");
    let facts = HostFacts {
        hostname: "pve-1".into(),
        machine_id: "m1".into(),
        ..HostFacts::default()
    };
    let new = NewHost {
        id: HostId::new(),
        facts,
        credential_hash: "c".into(),
        reenrol: None,
    };
    s.register_host("t", new, Utc::now())
        .await
        .expect("register")
        .id
}

#[tokio::test]
async fn unreachable_server_fails_fast_without_password() {
    let started = std::time::Instant::now();
    let err = PgStore::open("postgres://u:secret@127.0.0.1:1/db")
        .await
        .expect_err("must fail");
    assert!(started.elapsed() < std::time::Duration::from_secs(7));
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[tokio::test]
async fn approve_dry_run_confirm_install() {
    let Some(s) = fresh().await else { return };
    let admin = Actor::User("admin".into());
    let h = host(&s).await;
    let mut rows = vec![
        pu("nginx", "1", "2"),
        pu("curl", "7", "8"),
        pu("curl", "7", "9"),
        pu("bad\0name", "1", "2"),
    ];
    rows.extend((0..1200).map(|i| pu(&format!("p{i}"), "1", "2")));
    let out = s
        .ingest_report(h, report(rows), &Actor::Agent(h))
        .await
        .expect("ingest");
    assert_eq!(out.discovered, 1202, "{out:?}");
    assert_eq!(
        out.rejected.iter().map(|r| r.index).collect::<Vec<_>>(),
        vec![2, 3]
    );
    let page = s
        .list_updates(&UpdateFilter {
            package: Some("n".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(page.items[0].package, "nginx");
    let ids: Vec<UpdateId> = page
        .items
        .iter()
        .filter(|u| u.package != "p1")
        .map(|u| u.id)
        .collect();
    let missing = UpdateId::new();
    let mut with_missing = ids.clone();
    with_missing.push(missing);
    let corr = CorrelationId::new();
    let ap = s
        .approve_updates(&with_missing, corr, 60, &admin)
        .await
        .expect("approve");
    assert_eq!(ap.skipped.len(), 1);
    assert_eq!(ap.commands.len(), 1);
    assert!(ap.approved.iter().all(|u| u.status == UpdateStatus::DryRun));
    let claimed = s.claim_commands(h, Utc::now(), 10).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].status, CommandStatus::Sent);
    let dry = claimed[0].id;
    s.mark_running(h, dry, Utc::now()).await.expect("running");
    let done = s
        .complete_command(h, dry, ok_result(), Utc::now())
        .await
        .expect("complete");
    assert!(matches!(done, CompleteOutcome::Applied(_)));
    let again = s
        .complete_command(h, dry, ok_result(), Utc::now())
        .await
        .expect("dup");
    assert!(matches!(again, CompleteOutcome::Duplicate(_)));
    let mut other = ok_result();
    other.stdout = "different".into();
    assert!(matches!(
        s.complete_command(h, dry, other, Utc::now()).await,
        Err(StoreError::Conflict(_))
    ));
    let install = s.confirm_dry_run(dry, 60, &admin).await.expect("confirm");
    assert!(matches!(install.spec, CommandSpec::Install { .. }));
    assert!(s.confirm_dry_run(dry, 60, &admin).await.is_err());
    let c = s
        .claim_commands(h, Utc::now(), 10)
        .await
        .expect("claim install");
    assert_eq!(c[0].id, install.id);
    s.complete_command(h, install.id, ok_result(), Utc::now())
        .await
        .expect("install");
    let hist = s.version_history(Some(h), 100).await.expect("history");
    assert_eq!(hist.len(), ids.len());
    let hosts = s.list_hosts().await.expect("hosts");
    assert_eq!(hosts[0].pending_updates, 1202 - ids.len() as u64);
    let stats = s.stats().await.expect("stats");
    assert_eq!(stats.hosts, 1);
    // A report without the installed rows and without p0 reconciles p0.
    let rows: Vec<_> = (1..1200).map(|i| pu(&format!("p{i}"), "1", "2")).collect();
    let out = s
        .ingest_report(h, report(rows), &Actor::Agent(h))
        .await
        .expect("ingest 2");
    assert_eq!(out.discovered, 0);
    assert!(out.reconciled >= 1, "{out:?}");
    let evs = s
        .events(&EventFilter {
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .expect("events");
    for e in &evs {
        let sum = events::checksum_parts(
            e.id,
            e.ts,
            &e.event_type,
            &e.subject,
            &e.actor,
            e.correlation_id,
            e.causation_id,
            &e.payload,
        );
        assert_eq!(sum, e.checksum, "event {} {}", e.seq, e.event_type);
    }
    drop_db(&s).await;
}

#[tokio::test]
async fn timeouts_retry_cancel_and_conflicts() {
    let Some(s) = fresh().await else { return };
    let admin = Actor::User("admin".into());
    let h = host(&s).await;
    s.ingest_report(h, report(vec![pu("a", "1", "2")]), &Actor::Agent(h))
        .await
        .expect("ingest");
    let u = s
        .list_updates(&UpdateFilter::default())
        .await
        .expect("list")
        .items[0]
        .id;
    let ap = s
        .approve_updates(&[u], CorrelationId::new(), 1, &admin)
        .await
        .expect("approve");
    let cmd = ap.commands[0].id;
    s.claim_commands(h, Utc::now(), 5).await.expect("claim");
    let expired = s
        .expire_commands(
            Utc::now() + Duration::hours(1),
            &crate::ExpiryPolicy {
                vanished_after: Duration::minutes(2),
                offline_after: Duration::days(1),
            },
        )
        .await
        .expect("expire");
    assert_eq!(expired.len(), 1);
    assert_eq!(
        s.get_update(u).await.expect("get").expect("row").status,
        UpdateStatus::Pending,
        "claimed but never started: the rows can be approved again"
    );
    let late = s
        .complete_command(h, cmd, ok_result(), Utc::now())
        .await
        .expect("late");
    assert!(matches!(late, CompleteOutcome::Late(ref c) if c.status == CommandStatus::TimedOut));
    let retry = s.retry_command(cmd, &admin).await.expect("retry");
    assert_eq!(retry.retried_from, Some(cmd));
    let row = s.get_update(u).await.expect("get").expect("row");
    assert_eq!(
        (row.status, row.command_id),
        (UpdateStatus::DryRun, Some(retry.id))
    );
    s.cancel_command(retry.id, &admin).await.expect("cancel");
    assert!(matches!(
        s.cancel_command(retry.id, &admin).await,
        Err(StoreError::Conflict(_))
    ));
    s.create_user("bob", "x", canopy_api_types::auth::Role::Admin, &admin)
        .await
        .expect("create bob");
    assert!(matches!(
        s.create_user("bob", "x", canopy_api_types::auth::Role::Admin, &admin)
            .await,
        Err(StoreError::Conflict(_))
    ));
    let resp = serde_json::json!({"a": 1});
    s.save_idempotent_response("u", "k", "h", &resp, Utc::now())
        .await
        .expect("save");
    assert!(matches!(
        s.save_idempotent_response("u", "k", "h", &resp, Utc::now())
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.idempotent_response("u", "k").await.expect("get"),
        Some(("h".into(), resp))
    );
    drop_db(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ingests_and_approvals_stay_consistent() {
    let Some(s) = fresh().await else { return };
    let s = std::sync::Arc::new(s);
    let h = host(&s).await;
    let rows: Vec<_> = (0..300).map(|i| pu(&format!("c{i}"), "1", "2")).collect();
    // Four replicas ingest the same report at once: every row exists once, none refused.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (s, rows) = (s.clone(), rows.clone());
        tasks.push(tokio::spawn(async move {
            s.ingest_report(h, report(rows), &Actor::Agent(h)).await
        }));
    }
    let mut discovered = 0;
    for t in tasks {
        let out = t.await.expect("join").expect("ingest");
        assert!(out.rejected.is_empty(), "{out:?}");
        discovered += out.discovered;
    }
    assert_eq!(discovered, 300);
    let ids: Vec<UpdateId> = s
        .list_updates(&UpdateFilter {
            per_page: Some(500),
            ..Default::default()
        })
        .await
        .expect("list")
        .items
        .iter()
        .map(|u| u.id)
        .collect();
    // Two users approve the same rows (in opposite orders) while a re-scan runs.
    let mut rev = ids.clone();
    rev.reverse();
    let admin = Actor::User("admin".into());
    let rescan = report(rows.clone());
    let agent = Actor::Agent(h);
    let (a, b, c) = tokio::join!(
        s.approve_updates(&ids, CorrelationId::new(), 60, &admin),
        s.approve_updates(&rev, CorrelationId::new(), 60, &admin),
        s.ingest_report(h, rescan, &agent),
    );
    let (a, b) = (a.expect("approve a"), b.expect("approve b"));
    c.expect("rescan");
    assert_eq!(a.approved.len() + b.approved.len(), 300);
    assert_eq!(a.skipped.len() + b.skipped.len(), 300);
    let page = s
        .list_updates(&UpdateFilter {
            per_page: Some(500),
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(page.items.iter().all(|u| u.status == UpdateStatus::DryRun));
    drop_db(&s).await;
}
