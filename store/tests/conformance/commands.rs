//! The command queue: claim, start, time out, retry, cancel, late results, concurrency.

use super::support::*;
use canopy_api_types::commands::{CommandSpec, CommandStatus};
use canopy_api_types::hosts::HostState;
use canopy_api_types::updates::UpdateStatus;
use canopy_api_types::{CommandId, CorrelationId, HostId};
use canopy_store::{Actor, CompleteOutcome, Expiry, NewCommand, StoreError, SENT_GRACE_SECS};
use chrono::{Duration, Utc};
use std::collections::HashSet;

fn scan(host: HostId) -> NewCommand {
    NewCommand {
        id: CommandId::new(),
        host,
        spec: CommandSpec::Scan,
        correlation: CorrelationId::new(),
        caused_by: None,
        timeout_secs: 60,
    }
}

pub async fn claim_sets_sent_once(store: S) {
    let h = host(&store, "claim").await;
    let other = host(&store, "other").await;
    let first = store.enqueue_command(scan(h.id), &admin()).await.unwrap();
    let second = store.enqueue_command(scan(h.id), &admin()).await.unwrap();
    store
        .enqueue_command(scan(other.id), &admin())
        .await
        .unwrap();
    assert_eq!(first.status, CommandStatus::Pending);
    let now = Utc::now();
    let got = store.claim_commands(h.id, now, 1).await.unwrap();
    assert_eq!(
        got.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![first.id],
        "oldest first, limit honoured"
    );
    assert_eq!(got[0].status, CommandStatus::Sent);
    assert_eq!(
        got[0].sent_at.map(|t| t.timestamp_micros()),
        Some(now.timestamp_micros())
    );
    let got = store.claim_commands(h.id, now, 10).await.unwrap();
    assert_eq!(
        got.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![second.id]
    );
    assert!(store
        .claim_commands(h.id, now, 10)
        .await
        .unwrap()
        .is_empty());
    let listed = store.list_commands(h.id, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![second.id, first.id],
        "newest first"
    );
    assert_eq!(
        store.get_command(first.id).await.unwrap().unwrap().status,
        CommandStatus::Sent
    );
    assert!(store.get_command(CommandId::new()).await.unwrap().is_none());
}

pub async fn mark_running_rules(store: S) {
    let h = host(&store, "run").await;
    let other = host(&store, "other").await;
    let c = store.enqueue_command(scan(h.id), &admin()).await.unwrap();
    assert!(
        matches!(
            store.mark_running(h.id, c.id, Utc::now()).await,
            Err(StoreError::Conflict(_))
        ),
        "only a sent command can start running; a pending one is a Conflict"
    );
    store.claim_commands(h.id, Utc::now(), 10).await.unwrap();
    assert!(matches!(
        store.mark_running(other.id, c.id, Utc::now()).await,
        Err(StoreError::NotFound(_))
    ));
    let r = store.mark_running(h.id, c.id, Utc::now()).await.unwrap();
    assert_eq!(r.status, CommandStatus::Running);
    assert!(r.started_at.is_some());
    let again = store.mark_running(h.id, c.id, Utc::now()).await.unwrap();
    assert_eq!(
        (again.status, again.started_at),
        (CommandStatus::Running, r.started_at),
        "idempotent"
    );
    store
        .complete_command(h.id, c.id, ok(vec![]), Utc::now())
        .await
        .unwrap();
    assert!(matches!(
        store.mark_running(h.id, c.id, Utc::now()).await,
        Err(StoreError::Conflict(_))
    ));
}

pub async fn expire_times_out_and_fails_rows(store: S) {
    let (h, dry, _) = approved_host(&store, "exp", vec![apt("a", "1", "2")]).await;
    let t0 = Utc::now();
    store.claim_commands(h.id, t0, 10).await.unwrap();
    // Claimed: the agent has SENT_GRACE_SECS to ask for its start.
    assert!(store
        .expire_commands(t0 + Duration::seconds(30), &policy())
        .await
        .unwrap()
        .is_empty());
    let gone = store
        .expire_commands(t0 + Duration::seconds(SENT_GRACE_SECS + 5), &policy())
        .await
        .unwrap();
    assert_eq!(
        gone.iter()
            .map(|e| (e.command.id, e.expiry))
            .collect::<Vec<_>>(),
        vec![(dry, Expiry::NotStarted)]
    );
    assert_eq!(gone[0].command.status, CommandStatus::TimedOut);
    assert!(gone[0].reason.contains("never ran"), "{}", gone[0].reason);
    assert_eq!(
        gone[0].command.error.as_deref(),
        Some(gone[0].reason.as_str())
    );
    let row = &store.list_updates(&by_host(h.id)).await.unwrap().items[0];
    assert_eq!(
        row.status,
        UpdateStatus::Pending,
        "a command that never started leaves its rows approvable again"
    );
    assert!(store
        .expire_commands(t0 + Duration::hours(3), &policy())
        .await
        .unwrap()
        .is_empty());
    // And the agent asking for its start now is refused: it must not run it.
    assert!(matches!(
        store.mark_running(h.id, dry, t0 + Duration::hours(3)).await,
        Err(StoreError::Conflict(_))
    ));
}

pub async fn overdue_is_marked_and_only_a_vanished_agent_times_out(store: S) {
    let (h, dry, _) = approved_host(&store, "over", vec![apt("a", "1", "2")]).await;
    run(&store, h.id, dry, ok(vec![planned("a", true)])).await;
    let install = store.confirm_dry_run(dry, 60, &admin()).await.unwrap();
    let t0 = Utc::now();
    store.claim_commands(h.id, t0, 10).await.unwrap();
    let started = store
        .mark_running(h.id, install.id, t0 + Duration::seconds(10))
        .await
        .unwrap();
    assert_eq!(started.status, CommandStatus::Running);
    // The deadline counts from the accepted start: 10 + 60 s.
    assert!(store
        .expire_commands(t0 + Duration::seconds(65), &policy())
        .await
        .unwrap()
        .is_empty());
    let over = store
        .expire_commands(t0 + Duration::seconds(75), &policy())
        .await
        .unwrap();
    assert_eq!(
        over.iter()
            .map(|e| (e.command.id, e.expiry))
            .collect::<Vec<_>>(),
        vec![(install.id, Expiry::Overdue)]
    );
    let cmd = store.get_command(install.id).await.unwrap().unwrap();
    assert_eq!(
        cmd.status,
        CommandStatus::Running,
        "an overdue install keeps running"
    );
    assert!(cmd.overdue_at.is_some());
    assert_eq!(
        store.list_updates(&by_host(h.id)).await.unwrap().items[0].status,
        UpdateStatus::Installing
    );
    // Marked once; heartbeats keep it alive past the policy's silence.
    assert!(store
        .expire_commands(t0 + Duration::seconds(76), &policy())
        .await
        .unwrap()
        .is_empty());
    store
        .heartbeat(h.id, install.id, t0 + Duration::seconds(100))
        .await
        .unwrap();
    assert!(store
        .expire_commands(t0 + Duration::seconds(200), &policy())
        .await
        .unwrap()
        .is_empty());
    // Silent for longer than `vanished_after` (120 s) after the last heartbeat: timed out.
    let gone = store
        .expire_commands(t0 + Duration::seconds(300), &policy())
        .await
        .unwrap();
    assert_eq!(
        gone.iter()
            .map(|e| (e.command.id, e.expiry))
            .collect::<Vec<_>>(),
        vec![(install.id, Expiry::Vanished)]
    );
    assert!(gone[0].reason.contains("vanished"), "{}", gone[0].reason);
    assert_eq!(gone[0].command.status, CommandStatus::TimedOut);
    assert_eq!(
        store.list_updates(&by_host(h.id)).await.unwrap().items[0].status,
        UpdateStatus::Failed,
        "the outcome on the host is unknown"
    );
}

pub async fn overdue_result_is_applied_and_marked_late(store: S) {
    let (h, dry, _) = approved_host(&store, "latecomer", vec![apt("a", "1", "2")]).await;
    run(&store, h.id, dry, ok(vec![planned("a", true)])).await;
    let install = store.confirm_dry_run(dry, 60, &admin()).await.unwrap();
    let t0 = Utc::now();
    store.claim_commands(h.id, t0, 10).await.unwrap();
    store.mark_running(h.id, install.id, t0).await.unwrap();
    store
        .expire_commands(t0 + Duration::seconds(61), &policy())
        .await
        .unwrap();
    let out = store
        .complete_command(h.id, install.id, ok(vec![]), t0 + Duration::seconds(90))
        .await
        .unwrap();
    let CompleteOutcome::Applied(cmd) = out else {
        panic!("an overdue command's real outcome is applied, got {out:?}")
    };
    assert_eq!((cmd.status, cmd.late), (CommandStatus::Completed, true));
    assert_eq!(
        store.list_updates(&by_host(h.id)).await.unwrap().items[0].status,
        UpdateStatus::Installed
    );
    let done = store
        .events(&canopy_api_types::hosts::EventFilter {
            correlation_id: Some(cmd.correlation_id),
            ..Default::default()
        })
        .await
        .unwrap();
    let completed = done
        .iter()
        .rfind(|e| e.event_type == canopy_store::events::COMMAND_COMPLETED)
        .expect("command.completed");
    assert_eq!(completed.payload["late"], serde_json::json!(true));
    assert!(done
        .iter()
        .any(|e| e.event_type == canopy_store::events::COMMAND_OVERDUE));
    // A result within the deadline is not late.
    let c = store.enqueue_command(scan(h.id), &admin()).await.unwrap();
    store.claim_commands(h.id, Utc::now(), 10).await.unwrap();
    store.mark_running(h.id, c.id, Utc::now()).await.unwrap();
    let CompleteOutcome::Applied(c) = store
        .complete_command(h.id, c.id, ok(vec![]), Utc::now())
        .await
        .unwrap()
    else {
        panic!("applied")
    };
    assert!(!c.late);
}

pub async fn heartbeat_rules(store: S) {
    let h = host(&store, "beat").await;
    let other = host(&store, "other").await;
    let c = store.enqueue_command(scan(h.id), &admin()).await.unwrap();
    assert!(matches!(
        store.heartbeat(h.id, c.id, Utc::now()).await,
        Err(StoreError::Conflict(_))
    ));
    store.claim_commands(h.id, Utc::now(), 10).await.unwrap();
    store.mark_running(h.id, c.id, Utc::now()).await.unwrap();
    assert!(matches!(
        store.heartbeat(other.id, c.id, Utc::now()).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.heartbeat(h.id, CommandId::new(), Utc::now()).await,
        Err(StoreError::NotFound(_))
    ));
    let beat = store.heartbeat(h.id, c.id, Utc::now()).await.unwrap();
    assert_eq!(beat.status, CommandStatus::Running);
}

pub async fn commands_never_wait_forever_for_a_host_that_cannot_run_them(store: S) {
    // Offline longer than the policy: the pending command expires, its rows back to pending.
    let (h, dry, _) = approved_host(&store, "gone-quiet", vec![apt("a", "1", "2")]).await;
    let later = Utc::now() + policy().offline_after + Duration::minutes(1);
    let gone = store.expire_commands(later, &policy()).await.unwrap();
    assert_eq!(
        gone.iter()
            .map(|e| (e.command.id, e.expiry))
            .collect::<Vec<_>>(),
        vec![(dry, Expiry::HostOffline)]
    );
    assert!(gone[0].reason.contains("offline"), "{}", gone[0].reason);
    assert_eq!(
        store.list_updates(&by_host(h.id)).await.unwrap().items[0].status,
        UpdateStatus::Pending
    );
    // A host seen recently keeps its pending command however old it is.
    let fresh = host(&store, "fresh").await;
    let c = store
        .enqueue_command(scan(fresh.id), &admin())
        .await
        .unwrap();
    store
        .touch_host(fresh.id, &facts("fresh"), later)
        .await
        .unwrap();
    assert!(store
        .expire_commands(later, &policy())
        .await
        .unwrap()
        .iter()
        .all(|e| e.command.id != c.id));
    // A host that is archived: refused at once, and its waiting commands are cancelled.
    let (a, adry, _) = approved_host(&store, "uninstalled", vec![apt("b", "1", "2")]).await;
    let retired = store
        .retire_host(a.id, HostState::Archived, &admin(), Utc::now())
        .await
        .unwrap();
    assert_eq!(retired.state, HostState::Archived);
    let cmd = store.get_command(adry).await.unwrap().unwrap();
    assert_eq!(cmd.status, CommandStatus::Cancelled);
    assert!(cmd.error.unwrap_or_default().contains("archived"));
    let refused = store.enqueue_command(scan(a.id), &admin()).await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("archived")),
        "{refused:?}"
    );
    let rows = store.list_updates(&by_host(a.id)).await.unwrap().items;
    let outcome = store
        .approve_updates(&[rows[0].id], CorrelationId::new(), 300, &admin())
        .await
        .unwrap();
    assert!(outcome.approved.is_empty());
    assert!(
        outcome.skipped[0].1.contains("archived"),
        "{:?}",
        outcome.skipped
    );
}

pub async fn late_result_after_timeout_is_kept_but_status_stays(store: S) {
    let (h, dry, _) = approved_host(&store, "late", vec![apt("a", "1", "2")]).await;
    let t0 = Utc::now();
    store.claim_commands(h.id, t0, 10).await.unwrap();
    store.mark_running(h.id, dry, t0).await.unwrap();
    // Overdue, then silent past the policy: timed out with its rows failed.
    store
        .expire_commands(t0 + Duration::hours(1), &policy())
        .await
        .unwrap();
    store
        .expire_commands(t0 + Duration::hours(2), &policy())
        .await
        .unwrap();
    let out = store
        .complete_command(h.id, dry, ok(vec![planned("a", true)]), Utc::now())
        .await
        .unwrap();
    let CompleteOutcome::Late(cmd) = out else {
        panic!("expected Late, got {out:?}")
    };
    assert_eq!(cmd.status, CommandStatus::TimedOut);
    assert!(cmd.late);
    assert!(cmd.result.is_some(), "the late result is recorded");
    let row = &store.list_updates(&by_host(h.id)).await.unwrap().items[0];
    assert_eq!(
        row.status,
        UpdateStatus::Failed,
        "a late result does not move rows"
    );
    let again = store
        .complete_command(h.id, dry, ok(vec![planned("a", true)]), Utc::now())
        .await
        .unwrap();
    assert!(matches!(again, CompleteOutcome::Duplicate(_)));
}

pub async fn retry_links_and_completes(store: S) {
    let (h, dry, corr) = approved_host(
        &store,
        "retry",
        vec![apt("a", "1", "2"), apt("b", "1", "2")],
    )
    .await;
    run(&store, h.id, dry, failed()).await;
    let retry = store.retry_command(dry, &admin()).await.unwrap();
    assert_eq!(retry.retried_from, Some(dry));
    assert_eq!(retry.correlation_id, corr);
    assert_eq!(retry.status, CommandStatus::Pending);
    assert_eq!(
        retry.spec,
        CommandSpec::DryRun {
            packages: vec!["a".into(), "b".into()],
            images: Vec::new(),
        }
    );
    let rows = store.list_updates(&by_host(h.id)).await.unwrap().items;
    assert!(rows
        .iter()
        .all(|u| u.status == UpdateStatus::DryRun && u.command_id == Some(retry.id)));
    // Its rows now belong to the retry: a second retry of the same command has nothing
    // left to carry and is a Conflict (scans, which carry no rows, can be retried again).
    assert!(
        matches!(
            store.retry_command(dry, &admin()).await,
            Err(StoreError::Conflict(_))
        ),
        "a second retry of a dry-run whose rows moved to the first retry must be a Conflict"
    );
    run(
        &store,
        h.id,
        retry.id,
        ok(vec![planned("a", true), planned("b", true)]),
    )
    .await;
    let install = store
        .confirm_dry_run(retry.id, 600, &admin())
        .await
        .unwrap();
    assert_eq!(install.caused_by, Some(retry.id));
    run(&store, h.id, install.id, ok(vec![])).await;
    let rows = store.list_updates(&by_host(h.id)).await.unwrap().items;
    assert!(rows.iter().all(|u| u.status == UpdateStatus::Installed));
    // Only failed / timed-out / cancelled commands can be retried.
    assert!(matches!(
        store.retry_command(install.id, &admin()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.retry_command(CommandId::new(), &admin()).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn retry_of_timed_out_install(store: S) {
    let (h, dry, _) = approved_host(&store, "reinst", vec![apt("a", "1", "2")]).await;
    run(&store, h.id, dry, ok(vec![planned("a", true)])).await;
    let install = store.confirm_dry_run(dry, 600, &admin()).await.unwrap();
    let t0 = Utc::now();
    store.claim_commands(h.id, t0, 10).await.unwrap();
    store
        .expire_commands(t0 + Duration::hours(2), &policy())
        .await
        .unwrap();
    let retry = store.retry_command(install.id, &admin()).await.unwrap();
    assert_eq!(
        retry.spec,
        CommandSpec::Install {
            packages: vec!["a".into()],
            pinned: vec![planned("a", true)],
        }
    );
    assert_eq!(
        (retry.retried_from, retry.caused_by),
        (Some(install.id), Some(dry))
    );
    assert_eq!(
        store.list_updates(&by_host(h.id)).await.unwrap().items[0].status,
        UpdateStatus::Installing
    );
    run(&store, h.id, retry.id, ok(vec![])).await;
    assert_eq!(
        store.version_history(Some(h.id), 10).await.unwrap()[0].command_id,
        retry.id
    );
}

pub async fn cancel_pending_or_sent_only(store: S) {
    let (h, dry, _) = approved_host(&store, "cancel", vec![apt("a", "1", "2")]).await;
    let c = store.cancel_command(dry, &admin()).await.unwrap();
    assert_eq!(c.status, CommandStatus::Cancelled);
    assert!(c.finished_at.is_some());
    assert_eq!(
        store.list_updates(&by_host(h.id)).await.unwrap().items[0].status,
        UpdateStatus::Pending
    );
    assert!(matches!(
        store.cancel_command(dry, &admin()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        store
            .claim_commands(h.id, Utc::now(), 10)
            .await
            .unwrap()
            .is_empty(),
        "cancelled is not claimable"
    );
    // A cancelled command can be retried and carries its rows again (cancel leaves
    // `command_id` on the rows it put back to pending, so the retry finds them).
    let retry = store.retry_command(dry, &admin()).await.unwrap();
    let row = &store.list_updates(&by_host(h.id)).await.unwrap().items[0];
    assert_eq!(
        (row.status, row.command_id),
        (UpdateStatus::DryRun, Some(retry.id)),
        "the retry of a cancelled dry-run carries its rows"
    );
    // Sent: still cancellable; running: not.
    let s = store.enqueue_command(scan(h.id), &admin()).await.unwrap();
    store.claim_commands(h.id, Utc::now(), 10).await.unwrap();
    store
        .mark_running(h.id, retry.id, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        store.cancel_command(s.id, &admin()).await.unwrap().status,
        CommandStatus::Cancelled
    );
    assert!(matches!(
        store.cancel_command(retry.id, &admin()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.cancel_command(CommandId::new(), &admin()).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn concurrent_claims_never_hand_out_a_command_twice(store: S) {
    let h = host(&store, "race").await;
    let mut queued = HashSet::new();
    for _ in 0..40 {
        queued.insert(
            store
                .enqueue_command(scan(h.id), &Actor::System)
                .await
                .unwrap()
                .id,
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let s = store.clone();
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = s.claim_commands(h.id, Utc::now(), 3).await.expect("claim");
                if got.is_empty() {
                    break mine;
                }
                mine.extend(got.into_iter().map(|c| c.id));
            }
        });
    }
    let mut seen = HashSet::new();
    while let Some(res) = tasks.join_next().await {
        for id in res.unwrap() {
            assert!(seen.insert(id), "command {id} handed out twice");
        }
    }
    assert_eq!(seen, queued);
}
