//! Small builders shared by the conformance cases.

use canopy_api_types::agent::HostFacts;
use canopy_api_types::commands::{CommandResult, PlannedPackage};
use canopy_api_types::hosts::Host;
use canopy_api_types::updates::{PackageManager, PackageUpdate, Severity, UpdateFilter};
use canopy_api_types::{CorrelationId, HostId, RegistrationTokenId};
use canopy_store::{Actor, IngestReport, NewHost, NewRegistrationToken, Store};
use chrono::{Duration, Utc};
use std::sync::Arc;

pub type S = Arc<dyn Store>;

pub fn admin() -> Actor {
    Actor::User("admin".into())
}

pub fn facts(name: &str) -> HostFacts {
    HostFacts {
        hostname: name.into(),
        machine_id: format!("machine-{name}"),
        os_id: "debian".into(),
        os_pretty: "Debian GNU/Linux 12 (bookworm)".into(),
        kernel: "6.8.12-4-pve".into(),
        arch: "x86_64".into(),
        agent_version: "0.1.0".into(),
        read_only: false,
        run_as: "root".into(),
        package_db: Vec::new(),
    }
}

pub fn token(hash: &str, seats: u32, valid_for: Duration) -> NewRegistrationToken {
    NewRegistrationToken {
        id: RegistrationTokenId::new(),
        token_hash: hash.into(),
        label: format!("token {hash}"),
        seats,
        expires_at: Utc::now() + valid_for,
        guest_id: None,
    }
}

/// Enrol a host named `name` with its own one-seat token.
pub async fn host(store: &S, name: &str) -> Host {
    let hash = format!("tok-{name}-{}", uuid::Uuid::new_v4());
    store
        .create_registration_token(token(&hash, 1, Duration::hours(1)), &admin())
        .await
        .expect("create token");
    let new = NewHost {
        id: HostId::new(),
        facts: facts(name),
        credential_hash: format!("cred-{name}"),
        reenrol: None,
    };
    store
        .register_host(&hash, new, Utc::now())
        .await
        .expect("register host")
}

pub fn pkg(
    manager: PackageManager,
    name: &str,
    current: &str,
    available: &str,
    severity: Severity,
) -> PackageUpdate {
    PackageUpdate {
        manager,
        package: name.into(),
        current_version: current.into(),
        available_version: available.into(),
        arch: Some("amd64".into()),
        source: Some("bookworm".into()),
        severity,
        held: false,
    }
}

pub fn apt(name: &str, current: &str, available: &str) -> PackageUpdate {
    pkg(
        PackageManager::Apt,
        name,
        current,
        available,
        Severity::Normal,
    )
}

/// A report of `rows` where every manager of the rows (and apt) scanned successfully.
pub fn report(rows: Vec<PackageUpdate>) -> IngestReport {
    let mut managers = vec![PackageManager::Apt];
    for r in &rows {
        if !managers.contains(&r.manager) {
            managers.push(r.manager);
        }
    }
    report_scanned(rows, managers)
}

pub fn report_scanned(rows: Vec<PackageUpdate>, managers: Vec<PackageManager>) -> IngestReport {
    IngestReport {
        report_hash: format!("hash-{}", uuid::Uuid::new_v4()),
        reboot_required: false,
        scanned_at: Utc::now(),
        scanned_managers: managers,
        scanner_errors: vec![],
        rows: rows.into_iter().enumerate().collect(),
        containers: None,
    }
}

/// `n` apt rows `prefix-0000 …` 1.0 → 2.0.
pub fn many(prefix: &str, n: usize) -> Vec<PackageUpdate> {
    (0..n)
        .map(|i| apt(&format!("{prefix}-{i:04}"), "1.0", "2.0"))
        .collect()
}

pub fn ok(planned: Vec<PlannedPackage>) -> CommandResult {
    CommandResult {
        exit_code: 0,
        success: true,
        stdout: "done".into(),
        stderr: String::new(),
        planned,
        removed: Vec::new(),
        summary: "ok".into(),
        health: None,
    }
}

pub fn failed() -> CommandResult {
    CommandResult {
        exit_code: 100,
        success: false,
        stdout: String::new(),
        stderr: "E: broken".into(),
        planned: vec![],
        removed: vec![],
        summary: "failed".into(),
        health: None,
    }
}

pub fn planned(name: &str, requested: bool) -> PlannedPackage {
    PlannedPackage {
        package: name.into(),
        from_version: requested.then(|| "1.0".to_string()),
        to_version: "2.0".into(),
        requested,
        manager: None,
        containers: Vec::new(),
    }
}

pub fn by_host(host: HostId) -> UpdateFilter {
    UpdateFilter {
        host_id: Some(host),
        per_page: Some(500),
        ..Default::default()
    }
}

/// Ingest `rows` for a new host, approve all of them; returns (host, dry-run id, correlation).
pub async fn approved_host(
    store: &S,
    name: &str,
    rows: Vec<PackageUpdate>,
) -> (Host, canopy_api_types::CommandId, CorrelationId) {
    let h = host(store, name).await;
    store
        .ingest_report(h.id, report(rows), &Actor::Agent(h.id))
        .await
        .expect("ingest");
    let ids: Vec<_> = store
        .list_updates(&by_host(h.id))
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|u| u.id)
        .collect();
    let corr = CorrelationId::new();
    let out = store
        .approve_updates(&ids, corr, 600, &admin())
        .await
        .expect("approve");
    assert_eq!(out.commands.len(), 1);
    (h, out.commands[0].id, corr)
}

/// Claim, start and complete `cmd` on `host` with `result`.
pub async fn run(store: &S, host: HostId, cmd: canopy_api_types::CommandId, result: CommandResult) {
    let claimed = store
        .claim_commands(host, Utc::now(), 10)
        .await
        .expect("claim");
    assert!(
        claimed.iter().any(|c| c.id == cmd),
        "command {cmd} was not claimable"
    );
    store
        .mark_running(host, cmd, Utc::now())
        .await
        .expect("running");
    store
        .complete_command(host, cmd, result, Utc::now())
        .await
        .expect("complete");
}

/// The sweep's policy in the conformance cases: silent for 2 min, offline for a day.
pub fn policy() -> canopy_store::ExpiryPolicy {
    canopy_store::ExpiryPolicy {
        vanished_after: chrono::Duration::seconds(120),
        offline_after: chrono::Duration::days(1),
    }
}
