//! The command queue: claim, start, time out, retry, cancel, late results, concurrency.

use super::support::*;
use canopy_api_types::commands::{CommandSpec, CommandStatus};
use canopy_api_types::updates::UpdateStatus;
use canopy_api_types::{CommandId, CorrelationId, HostId};
use canopy_store::{Actor, CompleteOutcome, NewCommand, StoreError};
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
    // Not yet: deadline = sent + timeout (600) + grace.
    assert!(store
        .expire_commands(t0 + Duration::seconds(300))
        .await
        .unwrap()
        .is_empty());
    let gone = store
        .expire_commands(t0 + Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(gone.iter().map(|c| c.id).collect::<Vec<_>>(), vec![dry]);
    assert_eq!(gone[0].status, CommandStatus::TimedOut);
    assert!(gone[0].error.is_some());
    let row = &store.list_updates(&by_host(h.id)).await.unwrap().items[0];
    assert_eq!(row.status, UpdateStatus::Failed);
    assert!(store
        .expire_commands(t0 + Duration::hours(3))
        .await
        .unwrap()
        .is_empty());

    // Running commands time out on their own deadline (from mark_running).
    let c = store.enqueue_command(scan(h.id), &admin()).await.unwrap();
    store.claim_commands(h.id, t0, 10).await.unwrap();
    store
        .mark_running(h.id, c.id, t0 + Duration::seconds(10))
        .await
        .unwrap();
    assert!(store
        .expire_commands(t0 + Duration::seconds(65))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .expire_commands(t0 + Duration::seconds(75))
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn late_result_after_timeout_is_kept_but_status_stays(store: S) {
    let (h, dry, _) = approved_host(&store, "late", vec![apt("a", "1", "2")]).await;
    let t0 = Utc::now();
    store.claim_commands(h.id, t0, 10).await.unwrap();
    store
        .expire_commands(t0 + Duration::hours(2))
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
            packages: vec!["a".into(), "b".into()]
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
        .expire_commands(t0 + Duration::hours(2))
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
