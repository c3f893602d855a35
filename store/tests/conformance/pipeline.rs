//! approve → dry-run → confirm → install, and the results that drive it.

use super::support::*;
use canopy_api_types::commands::{CommandSpec, CommandStatus};
use canopy_api_types::hosts::EventFilter;
use canopy_api_types::updates::UpdateStatus;
use canopy_api_types::{CorrelationId, UpdateId};
use canopy_store::{events, Actor, CompleteOutcome, StoreError};
use chrono::Utc;

pub async fn approve_many_one_dry_run_per_host(store: S) {
    let a = host(&store, "alpha").await;
    let b = host(&store, "beta").await;
    let mut rows_a = many("a", 120);
    rows_a[0].held = true;
    store
        .ingest_report(a.id, report(rows_a), &Actor::Agent(a.id))
        .await
        .unwrap();
    store
        .ingest_report(b.id, report(many("b", 80)), &Actor::Agent(b.id))
        .await
        .unwrap();
    let all: Vec<_> = [a.id, b.id].iter().map(|h| by_host(*h)).collect();
    let mut ids = Vec::new();
    for f in &all {
        ids.extend(
            store
                .list_updates(f)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|u| u.id),
        );
    }
    // One row rejected first (wrong status), one unknown id, one held row.
    let rejected = store.list_updates(&by_host(b.id)).await.unwrap().items[0].id;
    store.reject_updates(&[rejected], &admin()).await.unwrap();
    let unknown = UpdateId::new();
    ids.push(unknown);
    let corr = CorrelationId::new();
    let out = store
        .approve_updates(&ids, corr, 900, &admin())
        .await
        .unwrap();
    assert_eq!(out.approved.len(), 198);
    assert_eq!(out.commands.len(), 2, "one dry-run per host");
    assert_eq!(out.skipped.len(), 3, "{:?}", out.skipped);
    assert!(out
        .skipped
        .iter()
        .any(|(id, why)| *id == unknown && !why.is_empty()));
    assert!(out
        .skipped
        .iter()
        .any(|(id, why)| *id == rejected && why.contains("rejected")));
    for c in &out.commands {
        assert_eq!(c.status, CommandStatus::Pending);
        assert_eq!(c.correlation_id, corr);
        assert_eq!(c.timeout_secs, 900);
        let CommandSpec::DryRun { packages, .. } = &c.spec else {
            panic!("not a dry-run: {:?}", c.spec)
        };
        let mut sorted = packages.clone();
        sorted.sort();
        assert_eq!(&sorted, packages, "packages are sorted");
        let expected = if c.host_id == a.id { 119 } else { 79 };
        assert_eq!(packages.len(), expected);
    }
    assert!(out
        .approved
        .iter()
        .all(|u| u.status == UpdateStatus::DryRun && u.correlation_id == Some(corr)));
    assert!(out.approved.iter().all(|u| out
        .commands
        .iter()
        .any(|c| Some(c.id) == u.command_id && c.host_id == u.host_id)));
    let evs = store
        .events(&EventFilter {
            correlation_id: Some(corr),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(evs.iter().any(|e| e.event_type == events::UPDATES_APPROVED));
    assert_eq!(
        evs.iter()
            .filter(|e| e.event_type == events::COMMAND_QUEUED)
            .count(),
        2
    );
    // Approving the same ids again: nothing is approvable any more.
    let again = store
        .approve_updates(&ids, CorrelationId::new(), 900, &admin())
        .await
        .unwrap();
    assert!(again.approved.is_empty() && again.commands.is_empty());
}

pub async fn full_flow_shares_one_correlation(store: S) {
    let (h, dry, corr) = approved_host(
        &store,
        "flow",
        vec![apt("nginx", "1.0", "2.0"), apt("curl", "1.0", "2.0")],
    )
    .await;
    let plan = vec![
        planned("curl", true),
        planned("nginx", true),
        planned("libssl3", false),
    ];
    run(&store, h.id, dry, ok(plan.clone())).await;
    let rows = store.list_updates(&by_host(h.id)).await.unwrap().items;
    assert!(rows
        .iter()
        .all(|u| u.status == UpdateStatus::AwaitingConfirmation));
    let evs = store
        .events(&EventFilter {
            correlation_id: Some(corr),
            ..Default::default()
        })
        .await
        .unwrap();
    let ready = evs
        .iter()
        .find(|e| e.event_type == events::DRY_RUN_READY)
        .expect("dry_run.ready");
    assert_eq!(
        ready.payload["planned"],
        serde_json::to_value(&plan).unwrap()
    );

    let install = store.confirm_dry_run(dry, 1800, &admin()).await.unwrap();
    assert_eq!(install.caused_by, Some(dry));
    assert_eq!(install.correlation_id, corr);
    assert_eq!(install.timeout_secs, 1800);
    assert_eq!(
        install.spec,
        CommandSpec::Install {
            packages: vec!["curl".into(), "nginx".into()],
            pinned: plan.clone(),
        }
    );
    let rows = store.list_updates(&by_host(h.id)).await.unwrap().items;
    assert!(rows
        .iter()
        .all(|u| u.status == UpdateStatus::Installing && u.command_id == Some(install.id)));

    run(&store, h.id, install.id, ok(vec![])).await;
    let done = store.get_command(install.id).await.unwrap().unwrap();
    assert_eq!(done.status, CommandStatus::Completed);
    assert!(done.finished_at.is_some() && done.result.is_some());
    let rows = store.list_updates(&by_host(h.id)).await.unwrap().items;
    assert!(rows.iter().all(|u| u.status == UpdateStatus::Installed));
    let hist = store.version_history(Some(h.id), 10).await.unwrap();
    assert_eq!(hist.len(), 2);
    assert!(hist
        .iter()
        .all(|v| v.from_version == "1.0" && v.to_version == "2.0"));
    assert!(hist
        .iter()
        .all(|v| v.correlation_id == corr && v.command_id == install.id && v.hostname == "flow"));
    assert_eq!(store.version_history(None, 1).await.unwrap().len(), 1);

    let evs = store
        .events(&EventFilter {
            correlation_id: Some(corr),
            ..Default::default()
        })
        .await
        .unwrap();
    let types: Vec<&str> = evs.iter().map(|e| e.event_type.as_str()).collect();
    for t in [
        events::UPDATES_APPROVED,
        events::COMMAND_QUEUED,
        events::COMMAND_SENT,
        events::COMMAND_RUNNING,
        events::COMMAND_COMPLETED,
        events::DRY_RUN_READY,
        events::INSTALL_CONFIRMED,
        events::UPDATES_INSTALLED,
    ] {
        assert!(types.contains(&t), "missing {t} in {types:?}");
    }
    assert!(evs.iter().all(|e| e.correlation_id == Some(corr)));
    assert!(evs.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        store.get_host(h.id).await.unwrap().unwrap().pending_updates,
        0
    );
}

pub async fn confirm_refuses_failed_unfinished_and_repeated(store: S) {
    let (h, dry, _) = approved_host(&store, "conf", vec![apt("a", "1", "2")]).await;
    assert!(matches!(
        store.confirm_dry_run(dry, 600, &admin()).await,
        Err(StoreError::Conflict(_))
    ));
    run(&store, h.id, dry, ok(vec![planned("a", true)])).await;
    let install = store.confirm_dry_run(dry, 600, &admin()).await.unwrap();
    assert!(matches!(
        store.confirm_dry_run(dry, 600, &admin()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.confirm_dry_run(install.id, 600, &admin()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .confirm_dry_run(canopy_api_types::CommandId::new(), 600, &admin())
            .await,
        Err(StoreError::NotFound(_))
    ));

    let (h2, dry2, _) = approved_host(&store, "conf2", vec![apt("b", "1", "2")]).await;
    run(&store, h2.id, dry2, failed()).await;
    assert_eq!(
        store.get_command(dry2).await.unwrap().unwrap().status,
        CommandStatus::Failed
    );
    let row = &store.list_updates(&by_host(h2.id)).await.unwrap().items[0];
    assert_eq!(row.status, UpdateStatus::Failed);
    assert!(matches!(
        store.confirm_dry_run(dry2, 600, &admin()).await,
        Err(StoreError::Conflict(_))
    ));
    let evs = store
        .events(&EventFilter {
            host_id: Some(h2.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(evs.iter().any(|e| e.event_type == events::UPDATES_FAILED));
    let _ = h;
}

pub async fn duplicate_result_is_duplicate_and_different_is_conflict(store: S) {
    let (h, dry, _) = approved_host(&store, "dupres", vec![apt("a", "1", "2")]).await;
    run(&store, h.id, dry, ok(vec![planned("a", true)])).await;
    let again = store
        .complete_command(h.id, dry, ok(vec![planned("a", true)]), Utc::now())
        .await
        .unwrap();
    assert!(matches!(again, CompleteOutcome::Duplicate(_)), "{again:?}");
    assert_eq!(again.command().status, CommandStatus::Completed);
    assert!(matches!(
        store
            .complete_command(h.id, dry, failed(), Utc::now())
            .await,
        Err(StoreError::Conflict(_))
    ));
    // Another host cannot complete this host's command.
    let other = host(&store, "other").await;
    assert!(matches!(
        store
            .complete_command(other.id, dry, ok(vec![]), Utc::now())
            .await,
        Err(StoreError::NotFound(_))
    ));
    let done = store
        .events(&EventFilter {
            host_id: Some(h.id),
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event_type == events::COMMAND_COMPLETED)
        .count();
    assert_eq!(done, 1, "a duplicate writes no second event");
}

pub async fn reject_moves_only_rejectable_rows(store: S) {
    let h = host(&store, "rej").await;
    store
        .ingest_report(h.id, report(many("r", 5)), &Actor::Agent(h.id))
        .await
        .unwrap();
    let ids: Vec<_> = store
        .list_updates(&by_host(h.id))
        .await
        .unwrap()
        .items
        .iter()
        .map(|u| u.id)
        .collect();
    store
        .approve_updates(&ids[..2], CorrelationId::new(), 600, &admin())
        .await
        .unwrap();
    // Two rows are in dry_run now: not rejectable.
    assert_eq!(store.reject_updates(&ids, &admin()).await.unwrap(), 3);
    assert_eq!(store.reject_updates(&ids, &admin()).await.unwrap(), 0);
    let rows = store.list_updates(&by_host(h.id)).await.unwrap().items;
    assert_eq!(
        rows.iter()
            .filter(|u| u.status == UpdateStatus::Rejected)
            .count(),
        3
    );
    let evs = store
        .events(&EventFilter {
            host_id: Some(h.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(evs.iter().any(|e| e.event_type == events::UPDATES_REJECTED));
}
