//! The single-host path is exact (issue "Trustworthy core"), end to end over HTTP on both
//! backends: a command runs only with the server's go, cancel wins over a claimed command,
//! nobody takes over a host with a copied machine-id, retired hosts cannot authenticate, an
//! interrupted package database gets a repair an operator can queue, and commands never wait
//! forever for a host that cannot run them.

mod common;

use canopy_api_types::agent::{CheckinRequest, PackageDbIssue, RegisterRequest};
use canopy_api_types::client::Client;
use canopy_api_types::commands::{CommandSpec, CommandStatus};
use canopy_api_types::hosts::HostState;
use canopy_api_types::updates::{PackageManager, UpdateFilter};
use common::*;

/// Register `facts` with a fresh one-seat token, optionally proving a current credential.
async fn register(
    app: &TestApp,
    facts: &canopy_api_types::agent::HostFacts,
    current: Option<String>,
) -> canopy_api_types::agent::RegisterResponse {
    let token = app.registration_token(1).await;
    app.anon
        .register(&RegisterRequest {
            registration_token: token,
            facts: facts.clone(),
            current_token: current,
        })
        .await
        .expect("register")
}

fn agent_client(app: &TestApp, token: &str) -> Client {
    Client::new(http(), app.base.clone()).with_token(token)
}

async fn checkin(
    client: &Client,
    facts: &canopy_api_types::agent::HostFacts,
) -> Result<(), String> {
    client
        .checkin(&CheckinRequest {
            facts: facts.clone(),
            report_hash: None,
            wait_secs: 0,
            connecting: true,
        })
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Two approvals for one host: the agent is handed one command at a time, so the second
/// stays pending and is cancelled before it is ever sent; and a command cancelled after the
/// agent claimed it is refused at its start (409): the agent never gets a go for it.
async fn cancel_wins_over_a_claimed_command(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let agent = app.enrol("web-1").await;
    agent
        .report(vec![
            serde_json::to_value(package("curl", false)).unwrap(),
            serde_json::to_value(package("nginx", false)).unwrap(),
        ])
        .await;
    let rows = app
        .admin
        .updates(&UpdateFilter::default())
        .await
        .unwrap()
        .items;
    let first = app.admin.approve(vec![rows[0].id]).await.unwrap();
    let second = app.admin.approve(vec![rows[1].id]).await.unwrap();
    let got = agent.checkin(5).await;
    assert_eq!(got.commands.len(), 1, "one command per check-in");
    let claimed = &got.commands[0];
    assert_eq!(claimed.id, first.dry_run_commands[0]);
    // The second is still pending: cancelled, it is never handed out.
    let cancelled = app.admin.cancel(second.dry_run_commands[0]).await.unwrap();
    assert_eq!(cancelled.status, CommandStatus::Cancelled);
    // The claimed one is cancelled before the agent asks for its start: refused.
    app.admin.cancel(claimed.id).await.unwrap();
    let refused = agent.client.command_started(claimed.id).await.unwrap_err();
    assert_eq!(refused.status(), Some(409), "{refused}");
    assert!(refused.to_string().contains("cancelled"), "{refused}");
    assert_eq!(
        app.admin.command(claimed.id).await.unwrap().status,
        CommandStatus::Cancelled
    );
    assert!(agent.checkin(0).await.commands.is_empty());
    // A started command cannot be cancelled (a package manager is never stopped halfway).
    let third = app.admin.approve(vec![rows[0].id]).await.unwrap();
    let cmd = agent.checkin(5).await.commands.remove(0);
    assert_eq!(cmd.id, third.dry_run_commands[0]);
    let go = agent.client.command_started(cmd.id).await.unwrap();
    assert_eq!(go.status, CommandStatus::Running);
    let again = agent.client.command_started(cmd.id).await.unwrap();
    assert_eq!(
        again.deadline, go.deadline,
        "a repeated start is the same go"
    );
    let refused = app.admin.cancel(cmd.id).await.unwrap_err();
    assert_eq!(refused.status(), Some(409));
    assert!(refused.to_string().contains("halfway"), "{refused}");
    assert!(
        !agent
            .client
            .command_heartbeat(cmd.id)
            .await
            .unwrap()
            .overdue
    );
}

/// A registration with a copied machine-id and a fresh registration token creates a second
/// host; both are flagged; the first host's credential still works. Proving the current
/// credential re-enrols the same host.
async fn a_copied_machine_id_is_a_new_host(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let f = facts("template-clone");
    let first = register(&app, &f, None).await;
    let second = register(&app, &f, None).await;
    assert_ne!(first.host_id, second.host_id);
    for id in [first.host_id, second.host_id] {
        let h = app.admin.hosts().await.unwrap();
        let h = h.iter().find(|h| h.id == id).expect("listed");
        assert!(h.duplicate_machine_id, "{h:?}");
    }
    checkin(&agent_client(&app, &first.agent_token), &f)
        .await
        .expect("the first host's credential still works");
    checkin(&agent_client(&app, &second.agent_token), &f)
        .await
        .expect("the second host works too");
    // The first agent re-registers proving its credential: same host, new credential.
    let again = register(&app, &f, Some(first.agent_token.clone())).await;
    assert_eq!(again.host_id, first.host_id);
    let old = checkin(&agent_client(&app, &first.agent_token), &f).await;
    assert!(old.is_err(), "the replaced credential is revoked");
    checkin(&agent_client(&app, &again.agent_token), &f)
        .await
        .unwrap();
    // A credential that does not verify proves nothing: a new host.
    let forged = format!("{}.not-the-secret", first.host_id);
    let third = register(&app, &f, Some(forged)).await;
    assert_ne!(third.host_id, first.host_id);
    let hosts = app.admin.hosts().await.unwrap();
    assert_eq!(hosts.len(), 3);
}

/// A deleted host: its agent is refused with a clear error, its history stays, it is no
/// longer listed; its waiting commands are cancelled.
async fn a_deleted_host_is_refused_and_keeps_its_history(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let agent = app.enrol("retired-1").await;
    agent
        .report(vec![serde_json::to_value(package("curl", false)).unwrap()])
        .await;
    let row = app
        .admin
        .updates(&UpdateFilter::default())
        .await
        .unwrap()
        .items[0]
        .id;
    let approved = app.admin.approve(vec![row]).await.unwrap();
    let deleted = app.admin.delete_host(agent.host_id).await.unwrap();
    assert_eq!(deleted.state, HostState::Deleted);
    let err = agent
        .client
        .checkin(&CheckinRequest {
            facts: agent.facts.clone(),
            report_hash: None,
            wait_secs: 0,
            connecting: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(err.to_string().contains("deleted"), "{err}");
    assert!(app.admin.hosts().await.unwrap().is_empty());
    assert_eq!(
        app.admin.host(agent.host_id).await.unwrap().state,
        HostState::Deleted
    );
    let cmd = app
        .admin
        .command(approved.dry_run_commands[0])
        .await
        .unwrap();
    assert_eq!(cmd.status, CommandStatus::Cancelled);
    let history = app
        .admin
        .events(&canopy_api_types::hosts::EventFilter {
            host_id: Some(agent.host_id),
            ..Default::default()
        })
        .await
        .unwrap();
    let types: Vec<&str> = history.iter().map(|e| e.event_type.as_str()).collect();
    assert!(types.contains(&"host.registered"), "{types:?}");
    assert!(types.contains(&"host.deleted"), "{types:?}");
    let again = app.admin.delete_host(agent.host_id).await.unwrap_err();
    assert_eq!(again.status(), Some(409));
}

/// An interrupted package database reported at check-in shows on the host with its repair;
/// an operator queues it; a host without the problem gets a clear 409.
async fn an_interrupted_package_database_gets_a_repair(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let mut agent = app.enrol("half-configured").await;
    let refused = app
        .admin
        .repair_host(agent.host_id, PackageManager::Apt)
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(409), "{refused}");
    agent.facts.package_db = vec![PackageDbIssue {
        manager: PackageManager::Apt,
        problem: "The following packages are only half configured: canopy-demo-slow".into(),
        repair: Some("dpkg --configure -a".into()),
    }];
    agent.checkin(0).await;
    let host = app.admin.host(agent.host_id).await.unwrap();
    assert_eq!(host.package_db, agent.facts.package_db);
    let cmd = app
        .admin
        .repair_host(agent.host_id, PackageManager::Apt)
        .await
        .unwrap();
    assert_eq!(
        cmd.spec,
        CommandSpec::Repair {
            manager: PackageManager::Apt
        }
    );
    let got = agent.checkin(5).await;
    assert_eq!(got.commands[0].id, cmd.id);
    // Healthy again: the host says so at its next check-in.
    agent.facts.package_db.clear();
    agent.checkin(0).await;
    assert!(app
        .admin
        .host(agent.host_id)
        .await
        .unwrap()
        .package_db
        .is_empty());
}

/// Hosts that cannot run commands (deleted, archived, agentless): approving their updates
/// is refused with the reason.
async fn retired_hosts_are_refused_at_approval(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let agent = app.enrol("will-be-agentless").await;
    agent
        .report(vec![serde_json::to_value(package("curl", false)).unwrap()])
        .await;
    let row = app
        .admin
        .updates(&UpdateFilter::default())
        .await
        .unwrap()
        .items[0]
        .id;
    app.admin.delete_host(agent.host_id).await.unwrap();
    let err = app.admin.approve(vec![row]).await.unwrap_err();
    assert_eq!(err.status(), Some(409));
    assert!(err.to_string().contains("cannot run commands"), "{err}");
}

on_both_backends!(
    cancel_wins_over_a_claimed_command,
    a_copied_machine_id_is_a_new_host,
    a_deleted_host_is_refused_and_keeps_its_history,
    an_interrupted_package_database_gets_a_repair,
    retired_hosts_are_refused_at_approval,
);
