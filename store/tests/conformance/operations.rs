//! Bulk operations: items keep their order, updates move them through their states with
//! their times and events, an ended item refuses further updates, and operations a
//! restart interrupted end as failed.

use super::inventory::*;
use super::support::*;
use canopy_api_types::clusters::SkippedTarget;
use canopy_api_types::deploy::{DeployOutcome, ItemState, OperationItem, OperationState, Route};
use canopy_api_types::hosts::EventFilter;
use canopy_api_types::{CorrelationId, GuestId, OperationId};
use canopy_store::{
    events, ItemUpdate, NewOperation, OperationFilter, StoreError, INTERRUPTED_MESSAGE,
};
use chrono::{DateTime, Duration, SubsecRound, Utc};

fn item(vmid: u32, guest_id: Option<GuestId>) -> OperationItem {
    let route = if vmid.is_multiple_of(2) {
        Route::Ssh
    } else {
        Route::Pct
    };
    OperationItem::queued(
        format!("cluster/home/node/pve1/lxc/{vmid}"),
        guest_id,
        "pve1",
        vmid,
        route,
    )
}

fn new_op(items: Vec<OperationItem>, created_at: DateTime<Utc>) -> NewOperation {
    NewOperation {
        id: OperationId::new(),
        action: "deploy".into(),
        selector: "cluster/home".into(),
        items,
        skipped: vec![SkippedTarget {
            id: "cluster/home/node/pve1/vm/9000".into(),
            reason: "template".into(),
        }],
        created_at,
        state: canopy_api_types::deploy::OperationState::Running,
        update: None,
    }
}

fn upd(state: ItemState, step: &str, at: DateTime<Utc>) -> ItemUpdate {
    ItemUpdate {
        state,
        step: Some(step.into()),
        outcome: None,
        message: None,
        host_id: None,
        run_as: None,
        at,
        event: None,
        update: None,
    }
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub async fn create_and_get_keep_item_order(store: S) {
    // Targets deliberately out of text order: the given order is kept.
    let vmids = [105, 101, 110, 103];
    let t0 = now();
    let new = new_op(vmids.iter().map(|v| item(*v, None)).collect(), t0);
    let id = new.id;
    let op = store.create_operation(new.clone(), &admin()).await.unwrap();
    assert_eq!(op.state, OperationState::Running);
    assert_eq!(op.created_by, "user:admin");
    assert_eq!(op.created_at, t0);
    assert_eq!(op.finished_at, None);
    assert_eq!(op.skipped, new.skipped);
    assert_eq!(op.items, new.items);
    assert_eq!(store.get_operation(id).await.unwrap(), Some(op.clone()));
    assert_eq!(store.get_operation(OperationId::new()).await.unwrap(), None);

    let created = events_of_type(&store, events::OPERATION_CREATED).await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].subject, format!("operation/{id}"));
    assert_eq!(created[0].correlation_id, Some(CorrelationId(id.0)));
    assert_eq!(created[0].payload["items"], 4);

    // The same id again, or a target listed twice, is a conflict and stores nothing.
    assert!(matches!(
        store.create_operation(new, &admin()).await,
        Err(StoreError::Conflict(_))
    ));
    let twice = new_op(vec![item(101, None), item(101, None)], t0);
    let twice_id = twice.id;
    assert!(matches!(
        store.create_operation(twice, &admin()).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.get_operation(twice_id).await.unwrap(), None);

    // A guest that went away meanwhile (or a host that is not known) is `NotFound`.
    let gone = new_op(vec![item(101, Some(GuestId::new()))], t0);
    let gone_id = gone.id;
    assert!(matches!(
        store.create_operation(gone, &admin()).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.get_operation(gone_id).await.unwrap(), None);
    let mut u = upd(ItemState::Running, "register", t0);
    u.host_id = Some(canopy_api_types::HostId::new());
    let target = op.items[0].target.clone();
    assert!(matches!(
        store.update_operation_item(id, &target, u, &admin()).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.get_operation(id).await.unwrap(), Some(op));
}

pub async fn item_updates_record_progress_and_events(store: S) {
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
    let new = new_op(
        vec![item(101, Some(gs[0].id)), item(102, Some(gs[1].id))],
        t0,
    );
    let id = new.id;
    let (a, b) = (new.items[0].target.clone(), new.items[1].target.clone());
    store.create_operation(new, &admin()).await.unwrap();

    let t1 = t0 + Duration::seconds(1);
    let running = store
        .update_operation_item(id, &a, upd(ItemState::Running, "connect", t1), &admin())
        .await
        .unwrap();
    assert_eq!(running.state, ItemState::Running);
    assert_eq!(running.started_at, Some(t1));
    assert_eq!(running.step.as_deref(), Some("connect"));

    let t2 = t1 + Duration::seconds(1);
    let mut u = upd(ItemState::Running, "register", t2);
    u.host_id = Some(h.id);
    u.run_as = Some("canopy-agent".into());
    let step = store
        .update_operation_item(id, &a, u, &admin())
        .await
        .unwrap();
    assert_eq!(step.started_at, Some(t1), "started once");
    assert_eq!(step.host_id, Some(h.id));

    let t3 = t2 + Duration::seconds(1);
    let mut done = upd(ItemState::Succeeded, "verify", t3);
    done.outcome = Some(DeployOutcome::Installed);
    done.message = Some("runs as canopy-agent".into());
    let done = store
        .update_operation_item(id, &a, done, &admin())
        .await
        .unwrap();
    assert_eq!(done.finished_at, Some(t3));
    assert_eq!(done.outcome, Some(DeployOutcome::Installed));
    assert_eq!(done.host_id, Some(h.id), "kept when the update has none");
    assert_eq!(done.run_as.as_deref(), Some("canopy-agent"));

    // An ended item refuses any further update.
    for state in [ItemState::Running, ItemState::Failed, ItemState::Succeeded] {
        assert!(matches!(
            store
                .update_operation_item(id, &a, upd(state, "again", t3), &admin())
                .await,
            Err(StoreError::Conflict(_))
        ));
    }
    assert!(matches!(
        store
            .update_operation_item(id, "cluster/x", upd(ItemState::Running, "x", t3), &admin())
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .update_operation_item(
                OperationId::new(),
                &a,
                upd(ItemState::Running, "x", t3),
                &admin()
            )
            .await,
        Err(StoreError::NotFound(_))
    ));

    // The second item fails straight from the queue.
    let mut failed = upd(ItemState::Failed, "connect", t3);
    failed.message = Some("ssh: connection refused".into());
    let failed = store
        .update_operation_item(id, &b, failed, &admin())
        .await
        .unwrap();
    assert_eq!((failed.started_at, failed.finished_at), (None, Some(t3)));

    let op = store.get_operation(id).await.unwrap().unwrap();
    assert_eq!(op.items, vec![done.clone(), failed.clone()]);
    assert_eq!(op.tally(), (0, 0, 1, 1));

    // One event per ended item, linked to guest (and host), correlated by the operation.
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
            events::OPERATION_ITEM_SUCCEEDED,
            events::OPERATION_ITEM_FAILED
        ]
    );
    let ok = &evs[1];
    assert_eq!(ok.subject, a);
    assert_eq!(ok.guest_id, Some(gs[0].id));
    assert_eq!(ok.actor, "user:admin");
    assert_eq!(ok.payload["operation"], serde_json::json!(id));
    assert_eq!(ok.payload["action"], "deploy");
    assert_eq!(ok.payload["target"], a);
    assert_eq!(ok.payload["outcome"], "installed");
    assert_eq!(ok.payload["message"], "runs as canopy-agent");
    assert_eq!(ok.payload["host_id"], serde_json::json!(h.id));
    assert_eq!(ok.payload["run_as"], "canopy-agent");
    assert_eq!(evs[2].guest_id, Some(gs[1].id));
    assert_eq!(evs[2].payload["message"], "ssh: connection refused");
    let host_events = store
        .events(&EventFilter {
            host_id: Some(h.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(host_events
        .iter()
        .any(|e| e.event_type == events::OPERATION_ITEM_SUCCEEDED));
    assert!(store
        .guest_history(gs[1].id, 10)
        .await
        .unwrap()
        .iter()
        .any(|e| e.event_type == events::OPERATION_ITEM_FAILED));

    // Finishing records the state and time once.
    let t4 = t3 + Duration::seconds(1);
    let fin = store
        .finish_operation(id, OperationState::Partial, t4)
        .await
        .unwrap();
    assert_eq!(
        (fin.state, fin.finished_at),
        (OperationState::Partial, Some(t4))
    );
    assert_eq!(fin.items.len(), 2);
    assert_eq!(store.get_operation(id).await.unwrap(), Some(fin));
    let finished = events_of_type(&store, events::OPERATION_FINISHED).await;
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].payload["state"], "partial");
    assert_eq!(finished[0].correlation_id, Some(CorrelationId(id.0)));
    assert!(matches!(
        store.finish_operation(id, OperationState::Failed, t4).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .finish_operation(OperationId::new(), OperationState::Failed, t4)
            .await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn list_operations_newest_first_with_items(store: S) {
    let t0 = now();
    let mut ids = Vec::new();
    for i in 0..5 {
        let items = (0..=i).map(|k| item(200 + k, None)).collect();
        let new = new_op(items, t0 + Duration::minutes(i64::from(i)));
        ids.push(new.id);
        store.create_operation(new, &admin()).await.unwrap();
    }
    let all = store.list_operations(100).await.unwrap();
    let listed: Vec<_> = all.iter().map(|o| o.id).collect();
    ids.reverse();
    assert_eq!(listed, ids);
    for op in &all {
        let vmids: Vec<u32> = op.items.iter().map(|i| i.vmid).collect();
        assert_eq!(vmids, (200..200 + vmids.len() as u32).collect::<Vec<_>>());
        assert_eq!(Some(op.clone()), store.get_operation(op.id).await.unwrap());
    }
    assert_eq!(all[0].items.len(), 5);
    let two = store.list_operations(2).await.unwrap();
    assert_eq!(two, all[..2].to_vec());
    assert!(store.list_operations(0).await.unwrap().is_empty());
}

/// `under` keeps the operations with an item at or below a path, not a sibling's prefix.
pub async fn find_operations_under_a_path(store: S) {
    let t0 = now();
    let on = |target: &str| {
        let mut i = item(101, None);
        i.target = target.into();
        i
    };
    let pve1 = new_op(vec![on("cluster/home/node/pve1/lxc/101")], t0);
    let pve10 = new_op(
        vec![on("cluster/home/node/pve10/lxc/101")],
        t0 + Duration::minutes(1),
    );
    let other = new_op(
        vec![on("cluster/lab_1/node/pve1/lxc/101")],
        t0 + Duration::minutes(2),
    );
    let (a, b, c) = (pve1.id, pve10.id, other.id);
    for op in [pve1, pve10, other] {
        store.create_operation(op, &admin()).await.unwrap();
    }
    let find = |under: &str| {
        let filter = OperationFilter {
            limit: 10,
            under: Some(under.into()),
        };
        let store = &store;
        async move {
            store
                .find_operations(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|o| o.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(find("cluster/home/node/pve1").await, [a]);
    assert_eq!(find("cluster/home/node/pve1/lxc/101").await, [a]);
    assert_eq!(find("cluster/home").await, [b, a]);
    // `_` and `%` are not patterns.
    assert_eq!(find("cluster/lab_1").await, [c]);
    assert!(find("cluster/lab%").await.is_empty());
    assert!(find("cluster/home/node/pve").await.is_empty());
    let all = store
        .find_operations(&OperationFilter {
            limit: 10,
            under: None,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
}

pub async fn fail_interrupted_fails_running_operations_and_their_open_items(store: S) {
    let t0 = now();
    let running = new_op(vec![item(101, None), item(102, None), item(103, None)], t0);
    let (rid, targets): (OperationId, Vec<String>) = (
        running.id,
        running.items.iter().map(|i| i.target.clone()).collect(),
    );
    store.create_operation(running, &admin()).await.unwrap();
    let mut ok = upd(ItemState::Succeeded, "verify", t0);
    ok.outcome = Some(DeployOutcome::Unchanged);
    store
        .update_operation_item(rid, &targets[0], ok, &admin())
        .await
        .unwrap();
    store
        .update_operation_item(
            rid,
            &targets[1],
            upd(ItemState::Running, "push", t0),
            &admin(),
        )
        .await
        .unwrap();

    let ended = new_op(vec![item(104, None)], t0);
    let eid = ended.id;
    store.create_operation(ended, &admin()).await.unwrap();
    let mut f = upd(ItemState::Failed, "connect", t0);
    f.message = Some("refused".into());
    store
        .update_operation_item(eid, "cluster/home/node/pve1/lxc/104", f, &admin())
        .await
        .unwrap();
    store
        .finish_operation(eid, OperationState::Failed, t0)
        .await
        .unwrap();
    let ended_before = store.get_operation(eid).await.unwrap();

    let t1 = t0 + Duration::minutes(1);
    assert_eq!(store.fail_interrupted_operations(t1).await.unwrap(), 1);
    let op = store.get_operation(rid).await.unwrap().unwrap();
    assert_eq!(
        (op.state, op.finished_at),
        (OperationState::Failed, Some(t1))
    );
    let states: Vec<_> = op.items.iter().map(|i| i.state).collect();
    assert_eq!(
        states,
        vec![ItemState::Succeeded, ItemState::Failed, ItemState::Failed]
    );
    assert_eq!(
        op.items[0].finished_at,
        Some(t0),
        "an ended item stays as it was"
    );
    assert_eq!(op.items[0].message, None);
    for i in &op.items[1..] {
        assert_eq!(i.message.as_deref(), Some(INTERRUPTED_MESSAGE));
        assert_eq!(i.finished_at, Some(t1));
    }
    assert_eq!(
        op.items[1].step.as_deref(),
        Some("push"),
        "where it stopped"
    );
    assert_eq!(store.get_operation(eid).await.unwrap(), ended_before);

    let evs = store
        .events(&EventFilter {
            correlation_id: Some(CorrelationId(rid.0)),
            ..Default::default()
        })
        .await
        .unwrap();
    let tail: Vec<_> = evs[evs.len() - 3..]
        .iter()
        .map(|e| (e.event_type.as_str(), e.subject.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        tail,
        vec![
            (events::OPERATION_ITEM_FAILED, targets[1].as_str(), "system"),
            (events::OPERATION_ITEM_FAILED, targets[2].as_str(), "system"),
            (
                events::OPERATION_FINISHED,
                format!("operation/{rid}").as_str(),
                "system"
            ),
        ]
    );
    assert_eq!(store.fail_interrupted_operations(t1).await.unwrap(), 0);
}
