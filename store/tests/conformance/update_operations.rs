//! Update operations: they start in `planning` with their options and per-guest details,
//! items carry their detail and the engine's events, whole operations move between states
//! only from the states a change names and only for the plan the operator saw, and a
//! restart resumes them instead of failing them.

use super::inventory::*;
use super::support::*;
use canopy_api_types::bulk::{
    Canary, CheckOutcome, GuestPlan, HealthCheck, HealthReport, ItemStep, PlanPackage,
    UpdateItemDetail, UpdateOperationDetail, UpdateOptions,
};
use canopy_api_types::deploy::{DeployOutcome, ItemState, OperationItem, OperationState, Route};
use canopy_api_types::hosts::EventFilter;
use canopy_api_types::{CommandId, CorrelationId, GuestId, OperationId};
use canopy_store::{
    events, ItemUpdate, NewOperation, OperationEvent, OperationTransition, StoreError,
};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::json;

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn options() -> UpdateOptions {
    UpdateOptions {
        security_only: true,
        exclude: vec!["linux-image-*".into()],
        canary: Canary {
            count: 1,
            targets: Vec::new(),
        },
        concurrency: 4,
        checks: vec![HealthCheck::Tcp {
            address: "127.0.0.1:22".into(),
        }],
        ..Default::default()
    }
}

fn plan(fingerprint: &str) -> GuestPlan {
    GuestPlan {
        packages: vec![PlanPackage {
            package: "openssl".into(),
            manager: None,
            from_version: Some("3.0.11-1".into()),
            to_version: "3.0.13-1".into(),
            severity: None,
            requested: true,
            containers: Vec::new(),
        }],
        reboot_required: true,
        fingerprint: fingerprint.into(),
        ..Default::default()
    }
}

fn item(vmid: u32, guest: Option<GuestId>, canary: bool) -> OperationItem {
    let mut i = OperationItem::queued(
        format!("cluster/home/node/pve1/lxc/{vmid}"),
        guest,
        "pve1",
        vmid,
        Route::Pct,
    );
    i.update = Some(UpdateItemDetail {
        canary,
        ..Default::default()
    });
    i
}

fn update_op(action: &str, items: Vec<OperationItem>, created_at: DateTime<Utc>) -> NewOperation {
    let update = action == "update";
    NewOperation {
        id: OperationId::new(),
        action: action.into(),
        state: if update {
            OperationState::Planning
        } else {
            OperationState::Running
        },
        update: update.then(|| UpdateOperationDetail {
            options: options(),
            ..Default::default()
        }),
        selector: "cluster/home/node/pve1".into(),
        items,
        skipped: Vec::new(),
        created_at,
    }
}

fn step(state: ItemState, step: &str, at: DateTime<Utc>) -> ItemUpdate {
    ItemUpdate {
        step: Some(step.into()),
        state,
        ..ItemUpdate::running(step, at)
    }
}

fn change(
    from: &[OperationState],
    to: OperationState,
    event_type: &str,
    at: DateTime<Utc>,
) -> OperationTransition {
    OperationTransition {
        from: from.to_vec(),
        to,
        expect_fingerprint: None,
        update: None,
        event: OperationEvent {
            event_type: event_type.into(),
            payload: json!({ "to": to }),
        },
        at,
    }
}

pub async fn update_operation_keeps_its_details_and_item_events(store: S) {
    let home = cluster(&store, "home").await;
    store
        .apply_discovery(pass(
            home.id,
            at(0),
            &["pve1"],
            vec![
                guest("lxc", 101, "pve1", "web"),
                guest("lxc", 102, "pve1", "db"),
            ],
        ))
        .await
        .unwrap();
    let gs = guests_of(&store, home.id).await;
    let h = host(&store, "web").await;
    let t0 = now();
    let new = update_op(
        "update",
        vec![
            item(101, Some(gs[0].id), true),
            item(102, Some(gs[1].id), false),
        ],
        t0,
    );
    let id = new.id;
    let (a, b) = (new.items[0].target.clone(), new.items[1].target.clone());
    let op = store.create_operation(new.clone(), &admin()).await.unwrap();
    assert_eq!(op.state, OperationState::Planning);
    assert_eq!(op.update, new.update);
    assert_eq!(op.items, new.items, "item details stored in order");
    assert_eq!(store.get_operation(id).await.unwrap(), Some(op.clone()));
    assert_eq!(store.list_operations(10).await.unwrap(), vec![op.clone()]);

    // The planner records the guest's plan with an event of its own.
    let t1 = t0 + Duration::seconds(1);
    let planned = UpdateItemDetail {
        plan: Some(plan("fp-101")),
        canary: true,
        dry_run: Some(CommandId::new()),
        health_before: Some(HealthReport {
            failed_units: vec!["cron.service".into()],
            checks: vec![CheckOutcome {
                check: "tcp 127.0.0.1:22".into(),
                ok: true,
                detail: "connected".into(),
            }],
            systemd: true,
            ..Default::default()
        }),
        steps: vec![ItemStep {
            step: "dry-run".into(),
            status: "done".into(),
            note: "1 package".into(),
            at: t1,
        }],
        host_id: Some(h.id),
        ..Default::default()
    };
    let mut u = step(ItemState::Running, "dry-run", t1);
    u.host_id = Some(h.id);
    u.update = Some(planned.clone());
    u.event = Some(OperationEvent {
        event_type: "operation.item_planned".into(),
        payload: json!({ "packages": 1 }),
    });
    let running = store
        .update_operation_item(id, &a, u, &admin())
        .await
        .unwrap();
    assert_eq!(running.update.as_ref(), Some(&planned));

    // Re-planned: back to the queue; a detail-less update keeps the stored detail.
    let t2 = t1 + Duration::seconds(1);
    let requeued = store
        .update_operation_item(id, &a, step(ItemState::Queued, "re-plan", t2), &admin())
        .await
        .unwrap();
    assert_eq!(requeued.state, ItemState::Queued);
    assert_eq!(requeued.update.as_ref(), Some(&planned));
    assert_eq!(requeued.started_at, Some(t1));

    let mut done = step(ItemState::Succeeded, "health", t2);
    done.outcome = Some(DeployOutcome::Updated);
    let done = store
        .update_operation_item(id, &a, done, &admin())
        .await
        .unwrap();
    assert_eq!(done.outcome, Some(DeployOutcome::Updated));
    let mut rolled = step(ItemState::Failed, "rollback", t2);
    rolled.outcome = Some(DeployOutcome::RolledBack);
    rolled.message = Some("health gate: cron.service failed".into());
    let rolled = store
        .update_operation_item(id, &b, rolled, &admin())
        .await
        .unwrap();
    assert_eq!(rolled.outcome, Some(DeployOutcome::RolledBack));
    let op = store.get_operation(id).await.unwrap().unwrap();
    assert_eq!(op.items, vec![done, rolled]);

    let evs = store
        .events(&EventFilter {
            correlation_id: Some(CorrelationId(id.0)),
            ..Default::default()
        })
        .await
        .unwrap();
    let types: Vec<_> = evs.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        vec![
            events::OPERATION_CREATED,
            "operation.item_planned",
            events::OPERATION_ITEM_SUCCEEDED,
            events::OPERATION_ITEM_FAILED,
        ]
    );
    let planned_ev = &evs[1];
    assert_eq!(planned_ev.subject, a);
    assert_eq!(planned_ev.guest_id, Some(gs[0].id));
    assert!(store
        .events(&EventFilter {
            host_id: Some(h.id),
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .any(|e| e.event_type == "operation.item_planned"));
    assert_eq!(planned_ev.actor, "user:admin");
    assert_eq!(planned_ev.payload, json!({ "packages": 1 }));
    assert!(store
        .guest_history(gs[0].id, 10)
        .await
        .unwrap()
        .iter()
        .any(|e| e.event_type == "operation.item_planned"));
}

pub async fn update_operation_moves_through_its_states(store: S) {
    use OperationState::*;
    let t0 = now();
    let new = update_op(
        "update",
        vec![item(101, None, true), item(102, None, false)],
        t0,
    );
    let id = new.id;
    let targets: Vec<String> = new.items.iter().map(|i| i.target.clone()).collect();
    let created = store.create_operation(new, &admin()).await.unwrap();

    let mut ready = change(&[Planning], AwaitingApproval, "operation.planned", t0);
    let mut detail = created.update.clone().unwrap();
    detail.fingerprint = Some("fp-1".into());
    ready.update = Some(detail.clone());
    let op = store
        .transition_operation(id, ready, &canopy_store::Actor::System)
        .await
        .unwrap();
    assert_eq!(
        (op.state, op.update.as_ref()),
        (AwaitingApproval, Some(&detail))
    );

    // Another state than `from`: a Conflict naming the state it is in; nothing changes.
    let Err(StoreError::Conflict(msg)) = store
        .transition_operation(
            id,
            change(&[Paused], Running, "operation.resumed", t0),
            &admin(),
        )
        .await
    else {
        panic!("a state not in `from` is a conflict");
    };
    assert!(msg.contains("is awaiting_approval, not paused"), "{msg}");

    // An approval of another plan: a Conflict; nothing changes.
    let mut stale = change(&[AwaitingApproval], Running, "operation.approved", t0);
    stale.expect_fingerprint = Some("fp-0".into());
    stale.update = Some(UpdateOperationDetail {
        approved_by: Some("user:admin".into()),
        ..detail.clone()
    });
    let Err(StoreError::Conflict(msg)) = store.transition_operation(id, stale, &admin()).await
    else {
        panic!("another fingerprint is a conflict");
    };
    assert!(msg.contains("fingerprint is now fp-1"), "{msg}");
    assert_eq!(store.get_operation(id).await.unwrap(), Some(op.clone()));

    let t1 = t0 + Duration::seconds(1);
    let mut approve = change(&[AwaitingApproval], Running, "operation.approved", t1);
    approve.expect_fingerprint = Some("fp-1".into());
    let approved = UpdateOperationDetail {
        approved_by: Some("user:admin".into()),
        approved_at: Some(t1),
        ..detail.clone()
    };
    approve.update = Some(approved.clone());
    let op = store
        .transition_operation(id, approve, &admin())
        .await
        .unwrap();
    assert_eq!((op.state, op.update.as_ref()), (Running, Some(&approved)));

    let mut pause = change(&[Running], Paused, "operation.paused", t1);
    pause.update = Some(UpdateOperationDetail {
        paused_reason: Some("canary failed its health gate".into()),
        ..approved.clone()
    });
    let op = store
        .transition_operation(id, pause, &admin())
        .await
        .unwrap();
    assert_eq!(op.state, Paused);
    let resume = change(&[Paused], Running, "operation.resumed", t1);
    let op = store
        .transition_operation(id, resume, &admin())
        .await
        .unwrap();
    assert_eq!(op.state, Running);
    assert_eq!(
        op.update.as_ref().unwrap().paused_reason.as_deref(),
        Some("canary failed its health gate"),
        "kept when the change has none"
    );
    let cancel = change(
        &[Running, Paused],
        Cancelling,
        "operation.cancel_requested",
        t1,
    );
    let op = store
        .transition_operation(id, cancel, &admin())
        .await
        .unwrap();
    assert_eq!((op.state, op.finished_at), (Cancelling, None));

    // The item in flight finishes; the queued one never starts.
    let t2 = t1 + Duration::seconds(1);
    let mut ok = step(ItemState::Succeeded, "health", t2);
    ok.outcome = Some(DeployOutcome::Updated);
    store
        .update_operation_item(id, &targets[0], ok, &admin())
        .await
        .unwrap();
    let cancelled = store
        .update_operation_item(
            id,
            &targets[1],
            step(ItemState::Cancelled, "cancel", t2),
            &admin(),
        )
        .await
        .unwrap();
    assert_eq!(
        (cancelled.state, cancelled.finished_at),
        (ItemState::Cancelled, Some(t2))
    );

    let t3 = t2 + Duration::seconds(1);
    let end = change(&[Cancelling], Cancelled, "operation.cancelled", t3);
    let op = store.transition_operation(id, end, &admin()).await.unwrap();
    assert_eq!((op.state, op.finished_at), (Cancelled, Some(t3)));
    assert_eq!(store.get_operation(id).await.unwrap(), Some(op.clone()));
    assert!(matches!(
        store
            .transition_operation(id, change(&[Cancelled], Running, "x", t3), &admin())
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.finish_operation(id, Failed, t3).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .transition_operation(
                OperationId::new(),
                change(&[Running], Paused, "x", t3),
                &admin()
            )
            .await,
        Err(StoreError::NotFound(_))
    ));

    let evs = store
        .events(&EventFilter {
            correlation_id: Some(CorrelationId(id.0)),
            ..Default::default()
        })
        .await
        .unwrap();
    let seen: Vec<_> = evs
        .iter()
        .map(|e| (e.event_type.as_str(), e.subject.as_str()))
        .collect();
    let subject = format!("operation/{id}");
    assert_eq!(
        seen,
        vec![
            (events::OPERATION_CREATED, subject.as_str()),
            ("operation.planned", subject.as_str()),
            ("operation.approved", subject.as_str()),
            ("operation.paused", subject.as_str()),
            ("operation.resumed", subject.as_str()),
            ("operation.cancel_requested", subject.as_str()),
            (events::OPERATION_ITEM_SUCCEEDED, targets[0].as_str()),
            (events::OPERATION_ITEM_CANCELLED, targets[1].as_str()),
            ("operation.cancelled", subject.as_str()),
        ]
    );
    assert_eq!(evs[1].actor, "system");
    assert_eq!(evs[2].actor, "user:admin");
    assert_eq!(evs[2].payload, json!({ "to": "running" }));
}

pub async fn restart_resumes_update_operations_and_fails_deploys(store: S) {
    use OperationState::*;
    let t0 = now();
    let mut ids = Vec::new();
    for (k, action) in ["update", "update", "deploy", "update"].iter().enumerate() {
        let vmid = 200 + k as u32;
        let new = update_op(
            action,
            vec![item(vmid, None, false), item(vmid + 10, None, false)],
            t0 + Duration::minutes(k as i64),
        );
        ids.push(new.id);
        store.create_operation(new, &admin()).await.unwrap();
    }
    let (planning, running, deploy, ended) = (ids[0], ids[1], ids[2], ids[3]);
    for (id, from, to) in [
        (running, Planning, AwaitingApproval),
        (running, AwaitingApproval, Running),
        (ended, Planning, AwaitingApproval),
    ] {
        store
            .transition_operation(id, change(&[from], to, "operation.step", t0), &admin())
            .await
            .unwrap();
    }
    // An update ends from any state that is not an end (here: awaiting its approval).
    let fin = store.finish_operation(ended, Cancelled, t0).await.unwrap();
    assert_eq!(fin.state, Cancelled);
    assert!(matches!(
        store.finish_operation(running, Paused, t0).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .update_operation_item(
            running,
            "cluster/home/node/pve1/lxc/201",
            step(ItemState::Running, "install", t0),
            &admin(),
        )
        .await
        .unwrap();

    let open = store.unfinished_operations("update").await.unwrap();
    let listed: Vec<_> = open.iter().map(|o| (o.id, o.state)).collect();
    assert_eq!(
        listed,
        vec![(planning, Planning), (running, Running)],
        "oldest first"
    );
    for op in &open {
        assert_eq!(Some(op.clone()), store.get_operation(op.id).await.unwrap());
        assert_eq!(op.items.len(), 2, "with their items");
        assert!(op.items[0].vmid < op.items[1].vmid, "in position order");
    }
    let deploys = store.unfinished_operations("deploy").await.unwrap();
    assert_eq!(
        deploys.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![deploy]
    );
    assert!(store
        .unfinished_operations("uninstall")
        .await
        .unwrap()
        .is_empty());

    // A restart fails the running deploy and leaves the updates to the engine.
    let t1 = t0 + Duration::minutes(10);
    assert_eq!(store.fail_interrupted_operations(t1).await.unwrap(), 1);
    assert_eq!(
        store.get_operation(deploy).await.unwrap().unwrap().state,
        Failed
    );
    assert_eq!(store.unfinished_operations("update").await.unwrap(), open);
    assert!(store
        .unfinished_operations("deploy")
        .await
        .unwrap()
        .is_empty());
}
