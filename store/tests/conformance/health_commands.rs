//! The health command (read-only: failed units, reboot flag, services to restart, the
//! operation's checks) goes through the queue like a scan: no update rows, its report kept
//! with the result, retried with the same checks.

use super::support::*;
use canopy_api_types::bulk::{CheckOutcome, HealthCheck, HealthReport};
use canopy_api_types::commands::{CommandSpec, CommandStatus};
use canopy_api_types::{CommandId, CorrelationId};
use canopy_store::{CompleteOutcome, NewCommand};
use chrono::{SubsecRound, Utc};

pub async fn health_command_round_trip(store: S) {
    let h = host(&store, "health").await;
    let spec = CommandSpec::Health {
        checks: vec![
            HealthCheck::Http {
                url: "http://127.0.0.1:8080/".into(),
                status: Some(204),
            },
            HealthCheck::Command {
                argv: vec!["systemctl".into(), "is-active".into(), "nginx".into()],
            },
        ],
    };
    let cmd = store
        .enqueue_command(
            NewCommand {
                id: CommandId::new(),
                host: h.id,
                spec: spec.clone(),
                correlation: CorrelationId::new(),
                caused_by: None,
                timeout_secs: 60,
            },
            &admin(),
        )
        .await
        .unwrap();
    assert_eq!(
        (cmd.spec.clone(), cmd.status),
        (spec.clone(), CommandStatus::Pending)
    );
    let mut result = failed();
    result.summary = "1 check failed".into();
    result.health = Some(HealthReport {
        failed_units: vec!["nginx.service".into()],
        reboot_required: true,
        services_to_restart: vec!["ssh".into()],
        checks: vec![CheckOutcome {
            check: "http http://127.0.0.1:8080/ = 204".into(),
            ok: false,
            detail: "connection refused".into(),
        }],
        systemd: true,
        agent_started_at: Some(Utc::now().trunc_subsecs(6)),
    });
    run(&store, h.id, cmd.id, result.clone()).await;
    let done = store.get_command(cmd.id).await.unwrap().unwrap();
    assert_eq!(done.status, CommandStatus::Failed);
    assert_eq!(
        done.result.as_ref(),
        Some(&result),
        "the health report is kept"
    );
    assert!(matches!(
        store
            .complete_command(h.id, cmd.id, result, Utc::now())
            .await,
        Ok(CompleteOutcome::Duplicate(_))
    ));

    // A retry repeats the same checks and completes like the first.
    let retry = store.retry_command(cmd.id, &admin()).await.unwrap();
    assert_eq!(
        (retry.spec.clone(), retry.retried_from),
        (spec, Some(cmd.id))
    );
    let mut healthy = ok(vec![]);
    healthy.health = Some(HealthReport {
        systemd: true,
        ..Default::default()
    });
    run(&store, h.id, retry.id, healthy.clone()).await;
    let done = store.get_command(retry.id).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.result),
        (CommandStatus::Completed, Some(healthy))
    );
    assert!(store
        .list_updates(&by_host(h.id))
        .await
        .unwrap()
        .items
        .is_empty());
}
