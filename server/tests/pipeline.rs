//! The update pipeline end to end through the real HTTP API, on SQLite and PostgreSQL:
//! report → approve → dry-run → confirm → install → history, timeouts and retries,
//! big and malformed reports.

mod common;

use canopy_api_types::agent::ResultSubmission;
use canopy_api_types::commands::{CommandResult, CommandSpec, CommandStatus, PlannedPackage};
use canopy_api_types::updates::{UpdateFilter, UpdateStatus};
use common::*;
use std::time::Duration;

fn ok_result(planned: Vec<PlannedPackage>) -> CommandResult {
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

async fn full_pipeline(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let agent = app.enrol("web-1").await;
    let rows = ["nginx", "openssl", "curl"]
        .iter()
        .map(|p| serde_json::to_value(package(p, *p == "openssl")).unwrap())
        .collect();
    let acc = agent.report(rows).await;
    assert_eq!((acc.accepted, acc.rejected.len()), (3, 0));

    let page = app
        .admin
        .updates(&UpdateFilter {
            host_id: Some(agent.host_id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 3);
    let ids: Vec<_> = page
        .items
        .iter()
        .filter(|u| u.package != "curl")
        .map(|u| u.id)
        .collect();

    // The agent is already waiting in a long poll when the approval lands.
    let waiting = tokio::spawn({
        let client = agent.client.clone();
        let facts = agent.facts.clone();
        async move {
            client
                .checkin(&canopy_api_types::agent::CheckinRequest {
                    facts,
                    report_hash: None,
                    wait_secs: 20,
                    connecting: false,
                })
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let approved = app.admin.approve(ids.clone()).await.unwrap();
    assert_eq!(approved.approved, 2);
    assert_eq!(approved.dry_run_commands.len(), 1);
    let got = waiting.await.unwrap();
    assert_eq!(
        got.commands.len(),
        1,
        "the held check-in returns the dry-run"
    );
    let dry = &got.commands[0];
    match &dry.spec {
        CommandSpec::DryRun { packages, .. } => {
            assert_eq!(packages, &vec!["nginx".to_string(), "openssl".to_string()])
        }
        other => panic!("expected a dry-run, got {other:?}"),
    }
    agent.client.command_started(dry.id).await.unwrap();
    let planned = vec![
        PlannedPackage {
            package: "nginx".into(),
            from_version: Some("1.0-1".into()),
            to_version: "1.1-1".into(),
            requested: true,
            manager: None,
            containers: Vec::new(),
        },
        PlannedPackage {
            package: "openssl".into(),
            from_version: Some("1.0-1".into()),
            to_version: "1.1-1".into(),
            requested: true,
            manager: None,
            containers: Vec::new(),
        },
        PlannedPackage {
            package: "libnew1".into(),
            from_version: None,
            to_version: "2.0".into(),
            requested: false,
            manager: None,
            containers: Vec::new(),
        },
    ];
    let sub = ResultSubmission {
        result: CommandResult {
            removed: vec!["libold0".into()],
            ..ok_result(planned)
        },
    };
    agent.client.submit_result(dry.id, &sub).await.unwrap();
    // Idempotent: the same result again is recorded as a duplicate, not an error.
    let again = agent.client.submit_result(dry.id, &sub).await.unwrap();
    assert_eq!(again["recorded"], "duplicate");

    let shown = app.admin.command(dry.id).await.unwrap();
    assert_eq!(shown.status, CommandStatus::Completed);
    let result = shown.result.unwrap();
    assert_eq!(
        result.removed,
        vec!["libold0".to_string()],
        "removals survive the round trip"
    );
    let deps: Vec<_> = result
        .planned
        .into_iter()
        .filter(|p| !p.requested)
        .collect();
    assert_eq!(deps[0].package, "libnew1");
    let awaiting = app
        .admin
        .updates(&UpdateFilter {
            status: Some(UpdateStatus::AwaitingConfirmation),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(awaiting.total, 2);

    let install = app.admin.confirm(dry.id).await.unwrap();
    assert_eq!(install.caused_by, Some(dry.id));
    // Confirming twice is refused.
    let err = app.admin.confirm(dry.id).await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    let got = agent.checkin(5).await;
    assert_eq!(got.commands[0].id, install.id);
    agent.client.command_started(install.id).await.unwrap();
    agent
        .client
        .submit_result(
            install.id,
            &ResultSubmission {
                result: ok_result(vec![]),
            },
        )
        .await
        .unwrap();

    let installed = app
        .admin
        .updates(&UpdateFilter {
            status: Some(UpdateStatus::Installed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(installed.total, 2);
    let history = app.admin.history(Some(agent.host_id)).await.unwrap();
    assert_eq!(history.len(), 2);
    assert!(history
        .iter()
        .all(|h| h.correlation_id == approved.correlation_id && h.to_version == "1.1-1"));

    // The re-scan after install lists only curl: nothing reopens, curl stays pending.
    let acc = agent
        .report(vec![serde_json::to_value(package("curl", false)).unwrap()])
        .await;
    assert_eq!(acc.reconciled, 0);
    let open = app
        .admin
        .updates(&UpdateFilter {
            host_id: Some(agent.host_id),
            status: Some(UpdateStatus::Pending),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        open.items
            .iter()
            .map(|u| u.package.as_str())
            .collect::<Vec<_>>(),
        vec!["curl"]
    );
    // curl upgraded outside Canopy: the next scan no longer lists it → reconciled.
    let acc = agent.report(vec![]).await;
    assert_eq!(acc.reconciled, 1);

    // Every step is an event under the one correlation id.
    app.assert_events(
        approved.correlation_id,
        &[
            "updates.approved",
            "command.queued",
            "command.sent",
            "command.running",
            "dry_run.ready",
            "install.confirmed",
            "updates.installed",
        ],
    )
    .await;
    let stats = app.admin.stats().await.unwrap();
    assert_eq!(stats.hosts, 1);
}

async fn killed_agent_times_out_and_retry_succeeds(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.install_timeout_secs = 2;
        s.command_vanished_secs = 3;
    })
    .await
    else {
        return;
    };
    let agent = app.enrol("db-1").await;
    agent
        .report(vec![
            serde_json::to_value(package("postgresql", false)).unwrap()
        ])
        .await;
    let id = app
        .admin
        .updates(&UpdateFilter::default())
        .await
        .unwrap()
        .items[0]
        .id;
    let approved = app.admin.approve(vec![id]).await.unwrap();
    let dry = agent.checkin(5).await.commands.remove(0);
    agent.client.command_started(dry.id).await.unwrap();
    agent
        .client
        .submit_result(
            dry.id,
            &ResultSubmission {
                result: ok_result(vec![]),
            },
        )
        .await
        .unwrap();
    let install = app
        .admin
        .confirm(approved.dry_run_commands[0])
        .await
        .unwrap();
    let got = agent.checkin(5).await;
    assert_eq!(got.commands[0].id, install.id);
    agent.client.command_started(install.id).await.unwrap();
    // ... and the agent dies here. Past its deadline the command is first marked overdue
    // (a package manager is never stopped halfway) ...
    let overdue = eventually(Duration::from_secs(20), || async {
        let c = app.admin.command(install.id).await.unwrap();
        c.overdue_at.is_some().then_some(c)
    })
    .await;
    assert!(
        matches!(
            overdue.status,
            CommandStatus::Running | CommandStatus::TimedOut
        ),
        "{overdue:?}"
    );
    // ... and, since no heartbeat comes, timed out as vanished.
    let timed_out = eventually(Duration::from_secs(20), || async {
        let c = app.admin.command(install.id).await.unwrap();
        (c.status == CommandStatus::TimedOut).then_some(c)
    })
    .await;
    let why = timed_out.error.unwrap_or_default();
    assert!(
        why.contains("vanished"),
        "a timed-out command says why: {why}"
    );
    let failed = app
        .admin
        .updates(&UpdateFilter {
            status: Some(UpdateStatus::Failed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.total, 1);

    let retry = app.admin.retry(install.id).await.unwrap();
    assert_eq!(retry.retried_from, Some(install.id));
    assert_eq!(retry.correlation_id, approved.correlation_id);
    let got = agent.checkin(5).await;
    assert_eq!(got.commands[0].id, retry.id);
    agent.client.command_started(retry.id).await.unwrap();
    agent
        .client
        .submit_result(
            retry.id,
            &ResultSubmission {
                result: ok_result(vec![]),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        app.admin.command(retry.id).await.unwrap().status,
        CommandStatus::Completed
    );
    let installed = app
        .admin
        .updates(&UpdateFilter {
            status: Some(UpdateStatus::Installed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(installed.total, 1);
}

async fn big_and_malformed_reports(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let agent = app.enrol("fedora-big").await;
    let rows: Vec<_> = (0..3772)
        .map(|i| serde_json::to_value(package(&format!("pkg-{i:05}"), i % 50 == 0)).unwrap())
        .collect();
    let acc = agent.report(rows).await;
    assert_eq!((acc.accepted, acc.rejected.len()), (3772, 0));
    let page = app
        .admin
        .updates(&UpdateFilter {
            host_id: Some(agent.host_id),
            per_page: Some(500),
            page: Some(8),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((page.total, page.items.len()), (3772, 272));

    let other = app.enrol("messy").await;
    let mut rows: Vec<serde_json::Value> = (0..40)
        .map(|i| serde_json::to_value(package(&format!("ok-{i}"), false)).unwrap())
        .collect();
    for i in 0..10 {
        let bad = match i % 5 {
            0 => {
                serde_json::json!({ "manager": "apt", "current_version": "1", "available_version": "2", "severity": "normal" })
            }
            1 => {
                serde_json::json!({ "manager": "pacman", "package": "x", "current_version": "1", "available_version": "2", "severity": "normal" })
            }
            2 => {
                serde_json::json!({ "manager": "apt", "package": "y", "current_version": "", "available_version": "2", "severity": "normal" })
            }
            3 => serde_json::json!(42),
            _ => {
                serde_json::json!({ "manager": "apt", "package": "z", "current_version": "1", "available_version": "2", "severity": "urgent!" })
            }
        };
        rows.insert(i * 4 + 1, bad);
    }
    let acc = other.report(rows).await;
    assert_eq!(acc.accepted, 40);
    assert_eq!(acc.rejected.len(), 10);
    assert!(acc.rejected.iter().all(|r| !r.reason.is_empty()));
    assert!(
        acc.rejected
            .iter()
            .any(|r| r.reason.contains("missing field `package`")),
        "{:?}",
        acc.rejected
    );
    let stored = app
        .admin
        .updates(&UpdateFilter {
            host_id: Some(other.host_id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.total, 40);
}

on_both_backends!(
    full_pipeline,
    killed_agent_times_out_and_retry_succeeds,
    big_and_malformed_reports
);
