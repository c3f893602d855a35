//! Rules of bulk operations shared by both backends: how an [`ItemUpdate`] changes an
//! item, which moves between operation states an [`OperationTransition`] may make, the
//! events an operation writes, how the update details are stored, how items are grouped
//! under their operations and what a refused write means. The backends only load and store
//! rows.

use crate::common::{micros, prepare_event, PreparedEvent};
use crate::{
    events, Actor, ItemUpdate, NewEvent, OperationEvent, OperationTransition, Result, StoreError,
};
use canopy_api_types::deploy::{ItemState, Operation, OperationItem, OperationState};
use canopy_api_types::{CorrelationId, OperationId};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::HashMap;

/// The most operations `list_operations` returns.
pub(crate) const MAX_OPERATIONS: u32 = 1_000;

/// An operation's events share its id as their correlation id.
pub(crate) fn correlation(id: OperationId) -> CorrelationId {
    CorrelationId(id.0)
}

/// The action whose operations survive a restart: the engine resumes them
/// ([`crate::OperationStore::unfinished_operations`]) instead of failing them.
pub(crate) const RESUMED_ACTION: &str = "update";

/// The terminal operation states as an SQL list (`state NOT IN (…)`), both dialects.
pub(crate) const TERMINAL_STATES_SQL: &str = "'succeeded', 'partial', 'failed', 'cancelled'";

/// An update detail as the JSON stored in a `detail` column (`None` stays NULL).
pub(crate) fn detail_json<T: serde::Serialize>(
    table: &'static str,
    detail: Option<&T>,
) -> Result<Option<serde_json::Value>> {
    detail
        .map(|d| {
            serde_json::to_value(d).map_err(|e| {
                StoreError::corrupt(table, format!("column detail does not serialise: {e}"))
            })
        })
        .transpose()
}

/// The item after `u`; `Conflict` when it already ended. A running item may go back to
/// `queued` (its guest was planned again).
pub(crate) fn apply_update(
    id: OperationId,
    item: &OperationItem,
    u: ItemUpdate,
) -> Result<OperationItem> {
    if item.state.is_terminal() {
        return Err(StoreError::Conflict(format!(
            "item {} of operation {id} already {}",
            item.target,
            item.state.as_str()
        )));
    }
    let at = micros(u.at);
    let started_at = match (item.started_at, u.state) {
        (None, ItemState::Running) => Some(at),
        (s, _) => s,
    };
    Ok(OperationItem {
        state: u.state,
        step: u.step,
        outcome: u.outcome,
        message: u.message,
        host_id: u.host_id.or(item.host_id),
        run_as: u.run_as.or_else(|| item.run_as.clone()),
        started_at,
        finished_at: u.state.is_terminal().then_some(at).or(item.finished_at),
        update: u.update.or_else(|| item.update.clone()),
        ..item.clone()
    })
}

/// The item after `u` and the events it writes, in order: the engine's event (`u.event`)
/// then, when the item just ended, its end-of-item event. Both have the target as subject,
/// are linked to the item's guest and host, and carry the operation as correlation.
pub(crate) fn update_item(
    id: OperationId,
    action: &str,
    item: &OperationItem,
    mut u: ItemUpdate,
    actor: &Actor,
) -> Result<(OperationItem, Vec<PreparedEvent>)> {
    let at = micros(u.at);
    let asked = u.event.take();
    let item = apply_update(id, item, u)?;
    let mut evs = Vec::new();
    if let Some(ev) = asked {
        let ev = operation_event(&ev.event_type, item.target.clone(), id, actor, ev.payload);
        evs.push(prepare_event(ev, item.host_id, at).with_guest(item.guest_id));
    }
    evs.extend(item_event(id, action, &item, actor, at));
    Ok((item, evs))
}

/// The operation after `change` and its event (subject `operation/{id}`, correlation the
/// operation). `Conflict` when the operation already ended, when its state is not one of
/// `change.from` ("operation X is paused, not awaiting_approval"), or when
/// `change.expect_fingerprint` is not the stored plan's fingerprint. A terminal `to` sets
/// `finished_at`; `change.update` replaces the stored detail.
pub(crate) fn transition(
    op: &Operation,
    change: OperationTransition,
    actor: &Actor,
) -> Result<(Operation, PreparedEvent)> {
    if op.state.is_terminal() {
        return Err(StoreError::Conflict(format!(
            "operation {} already {}",
            op.id,
            op.state.as_str()
        )));
    }
    if !change.from.contains(&op.state) {
        let wanted: Vec<&str> = change.from.iter().map(|s| s.as_str()).collect();
        return Err(StoreError::Conflict(format!(
            "operation {} is {}, not {}",
            op.id,
            op.state.as_str(),
            if wanted.is_empty() {
                "in a state this change accepts".to_string()
            } else {
                wanted.join(" or ")
            }
        )));
    }
    if let Some(expected) = &change.expect_fingerprint {
        let stored = op.update.as_ref().and_then(|d| d.fingerprint.as_deref());
        if stored != Some(expected.as_str()) {
            return Err(StoreError::Conflict(match stored {
                Some(now) => format!("the plan changed: its fingerprint is now {now}"),
                None => format!("operation {} has no plan to approve yet", op.id),
            }));
        }
    }
    let at = micros(change.at);
    let next = Operation {
        state: change.to,
        finished_at: if change.to.is_terminal() {
            Some(at)
        } else {
            op.finished_at
        },
        update: change.update.or_else(|| op.update.clone()),
        ..op.clone()
    };
    let OperationEvent {
        event_type,
        payload,
    } = change.event;
    let ev = operation_event(
        &event_type,
        events::operation_subject(op.id),
        op.id,
        actor,
        payload,
    );
    Ok((next, prepare_event(ev, None, at)))
}

fn operation_event(
    event_type: &str,
    subject: String,
    id: OperationId,
    actor: &Actor,
    payload: serde_json::Value,
) -> NewEvent {
    NewEvent {
        event_type: event_type.into(),
        subject,
        actor: actor.clone(),
        correlation: Some(correlation(id)),
        causation: None,
        payload,
    }
}

/// `operation.created`.
pub(crate) fn created_event(op: &Operation, actor: &Actor) -> PreparedEvent {
    let ev = operation_event(
        events::OPERATION_CREATED,
        events::operation_subject(op.id),
        op.id,
        actor,
        json!({
            "operation": op.id,
            "action": op.action,
            "selector": op.selector,
            "items": op.items.len(),
            "skipped": op.skipped.len(),
        }),
    );
    prepare_event(ev, None, op.created_at)
}

/// `operation.item_succeeded` / `operation.item_failed` for an item that just ended, linked
/// to its guest and host; `None` while it runs.
pub(crate) fn item_event(
    id: OperationId,
    action: &str,
    item: &OperationItem,
    actor: &Actor,
    at: DateTime<Utc>,
) -> Option<PreparedEvent> {
    let event_type = match item.state {
        ItemState::Succeeded => events::OPERATION_ITEM_SUCCEEDED,
        ItemState::Failed => events::OPERATION_ITEM_FAILED,
        ItemState::Cancelled => events::OPERATION_ITEM_CANCELLED,
        ItemState::Queued | ItemState::Running => return None,
    };
    let ev = operation_event(
        event_type,
        item.target.clone(),
        id,
        actor,
        json!({
            "operation": id,
            "action": action,
            "target": item.target,
            "outcome": item.outcome,
            "message": item.message,
            "host_id": item.host_id,
            "run_as": item.run_as,
        }),
    );
    Some(prepare_event(ev, item.host_id, at).with_guest(item.guest_id))
}

/// `operation.finished`, with the item tally.
pub(crate) fn finished_event(op: &Operation, at: DateTime<Utc>) -> PreparedEvent {
    let (queued, running, succeeded, failed) = op.tally();
    let ev = operation_event(
        events::OPERATION_FINISHED,
        events::operation_subject(op.id),
        op.id,
        &Actor::System,
        json!({
            "operation": op.id,
            "action": op.action,
            "state": op.state,
            "succeeded": succeeded,
            "failed": failed,
            "cancelled": op.items.iter().filter(|i| i.state == ItemState::Cancelled).count(),
            "unfinished": queued + running,
        }),
    );
    prepare_event(ev, None, at)
}

/// A refused write of an operation or item: a unique violation is a `Conflict` (`dup`), a
/// foreign-key violation names a guest or host that is gone meanwhile (`NotFound`).
pub(crate) fn refused(e: sqlx::Error, dup: impl FnOnce() -> String) -> StoreError {
    match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(dup()),
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
            StoreError::NotFound("a guest or host the operation names".into())
        }
        e => e.into(),
    }
}

/// The events of operations cut short by a restart: each interrupted item's
/// `operation.item_failed` (in position order), then the operation's `operation.finished`.
/// `items` are `(operation, position, item)` as the failing UPDATE returned them.
pub(crate) fn interrupted_events(
    ops: &[(OperationId, String)],
    mut items: Vec<(OperationId, i64, OperationItem)>,
    now: DateTime<Utc>,
) -> Vec<PreparedEvent> {
    items.sort_by_key(|(op, position, _)| (*op, *position));
    let mut by_op: HashMap<OperationId, Vec<OperationItem>> = HashMap::new();
    for (op, _, item) in items {
        by_op.entry(op).or_default().push(item);
    }
    let mut ops = ops.to_vec();
    ops.sort_by_key(|(id, _)| *id);
    let mut evs = Vec::new();
    for (id, action) in &ops {
        for item in by_op.remove(id).unwrap_or_default() {
            evs.extend(item_event(*id, action, &item, &Actor::System, now));
        }
        let ev = operation_event(
            events::OPERATION_FINISHED,
            events::operation_subject(*id),
            *id,
            &Actor::System,
            json!({
                "operation": id,
                "action": action,
                "state": OperationState::Failed,
                "reason": crate::INTERRUPTED_MESSAGE,
            }),
        );
        evs.push(prepare_event(ev, None, now));
    }
    evs
}

/// Refuse to finish an operation that already ended, or to "finish" it in a state that is
/// not an end (running, paused, …). Any state that is not an end may be finished.
pub(crate) fn check_finish(op: &Operation, state: OperationState) -> Result<()> {
    if !state.is_terminal() {
        return Err(StoreError::Conflict(format!(
            "operation {} cannot be finished as {}",
            op.id,
            state.as_str()
        )));
    }
    if op.state.is_terminal() {
        return Err(StoreError::Conflict(format!(
            "operation {} already {}",
            op.id,
            op.state.as_str()
        )));
    }
    Ok(())
}

/// Put each item (in the order given, i.e. by position) under its operation.
pub(crate) fn attach_items(ops: &mut [Operation], items: Vec<(OperationId, OperationItem)>) {
    let at: HashMap<OperationId, usize> = ops.iter().enumerate().map(|(i, o)| (o.id, i)).collect();
    for (id, item) in items {
        if let Some(&i) = at.get(&id) {
            ops[i].items.push(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_api_types::bulk::{UpdateItemDetail, UpdateOperationDetail};
    use canopy_api_types::deploy::{DeployOutcome, Route};
    use canopy_api_types::HostId;

    fn queued() -> OperationItem {
        OperationItem::queued("cluster/c/node/n/lxc/101", None, "n", 101, Route::Pct)
    }

    fn update(state: ItemState, at: DateTime<Utc>) -> ItemUpdate {
        ItemUpdate {
            state,
            step: Some("connect".into()),
            outcome: None,
            message: None,
            host_id: None,
            run_as: None,
            at,
            event: None,
            update: None,
        }
    }

    #[test]
    fn started_once_finished_on_terminal_and_optional_fields_kept() {
        let id = OperationId::new();
        let t0 = micros(Utc::now());
        let t1 = t0 + chrono::Duration::seconds(1);
        let host = HostId::new();
        let mut u = update(ItemState::Running, t0);
        u.host_id = Some(host);
        u.run_as = Some("root".into());
        let running = apply_update(id, &queued(), u).unwrap();
        assert_eq!((running.started_at, running.finished_at), (Some(t0), None));
        let again = apply_update(id, &running, update(ItemState::Running, t1)).unwrap();
        assert_eq!(again.started_at, Some(t0), "first move to running only");
        assert_eq!(again.host_id, Some(host));
        assert_eq!(again.run_as.as_deref(), Some("root"));
        let mut done = update(ItemState::Succeeded, t1);
        done.outcome = Some(DeployOutcome::Installed);
        let done = apply_update(id, &again, done).unwrap();
        assert_eq!(done.finished_at, Some(t1));
        assert!(item_event(id, "deploy", &done, &Actor::System, t1).is_some());
        assert!(item_event(id, "deploy", &again, &Actor::System, t1).is_none());
        assert!(matches!(
            apply_update(id, &done, update(ItemState::Failed, t1)),
            Err(StoreError::Conflict(_))
        ));
    }

    #[test]
    fn running_item_may_be_queued_again_and_keeps_its_detail() {
        let id = OperationId::new();
        let t0 = micros(Utc::now());
        let mut u = update(ItemState::Running, t0);
        u.update = Some(UpdateItemDetail {
            canary: true,
            ..Default::default()
        });
        let running = apply_update(id, &queued(), u).unwrap();
        let requeued = apply_update(id, &running, update(ItemState::Queued, t0)).unwrap();
        assert_eq!(requeued.state, ItemState::Queued);
        assert_eq!(
            requeued.update, running.update,
            "kept when the update has none"
        );
        let mut cancel = update(ItemState::Cancelled, t0);
        cancel.event = Some(OperationEvent {
            event_type: "operation.item_step".into(),
            payload: json!({"step": "cancel"}),
        });
        let (done, evs) = update_item(id, "update", &requeued, cancel, &Actor::System).unwrap();
        assert_eq!(done.finished_at, Some(t0));
        let types: Vec<_> = evs.iter().map(|e| e.event.event_type.as_str()).collect();
        assert_eq!(
            types,
            vec!["operation.item_step", events::OPERATION_ITEM_CANCELLED]
        );
        assert!(evs.iter().all(|e| e.event.subject == done.target));
    }

    fn op(state: OperationState, fingerprint: Option<&str>) -> Operation {
        Operation {
            id: OperationId::new(),
            action: "update".into(),
            selector: "cluster/c".into(),
            state,
            created_by: "system".into(),
            created_at: micros(Utc::now()),
            finished_at: None,
            items: Vec::new(),
            skipped: Vec::new(),
            update: Some(UpdateOperationDetail {
                fingerprint: fingerprint.map(String::from),
                ..Default::default()
            }),
        }
    }

    fn change(from: &[OperationState], to: OperationState) -> OperationTransition {
        OperationTransition {
            from: from.to_vec(),
            to,
            expect_fingerprint: None,
            update: None,
            event: OperationEvent {
                event_type: "operation.paused".into(),
                payload: json!({}),
            },
            at: Utc::now(),
        }
    }

    #[test]
    fn transitions_check_the_state_and_the_fingerprint() {
        use OperationState::*;
        let paused = op(Paused, Some("abc"));
        let Err(StoreError::Conflict(m)) = transition(
            &paused,
            change(&[AwaitingApproval], Running),
            &Actor::System,
        ) else {
            panic!("a state not in `from` is a conflict");
        };
        assert_eq!(
            m,
            format!("operation {} is paused, not awaiting_approval", paused.id)
        );
        let mut c = change(&[Paused], Running);
        c.expect_fingerprint = Some("old".into());
        let Err(StoreError::Conflict(m)) = transition(&paused, c, &Actor::System) else {
            panic!("another fingerprint is a conflict");
        };
        assert_eq!(m, "the plan changed: its fingerprint is now abc");
        let mut c = change(&[Paused], Running);
        c.expect_fingerprint = Some("abc".into());
        let (next, ev) = transition(&paused, c, &Actor::System).unwrap();
        assert_eq!((next.state, next.finished_at), (Running, None));
        assert_eq!(next.update, paused.update, "kept when the change has none");
        assert_eq!(ev.event.subject, events::operation_subject(paused.id));
        assert_eq!(ev.event.correlation, Some(correlation(paused.id)));
        let c = change(&[Running], Cancelled);
        let at = micros(c.at);
        let (ended, _) = transition(&next, c, &Actor::System).unwrap();
        assert_eq!(ended.finished_at, Some(at));
        assert!(matches!(
            transition(&ended, change(&[Cancelled], Running), &Actor::System),
            Err(StoreError::Conflict(_))
        ));
    }

    #[test]
    fn terminal_states_sql_lists_exactly_the_terminal_states() {
        use OperationState::*;
        let all = [
            Planning,
            AwaitingApproval,
            Running,
            Paused,
            Cancelling,
            Succeeded,
            Partial,
            Failed,
            Cancelled,
        ];
        let listed: Vec<String> = all
            .iter()
            .filter(|s| s.is_terminal())
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        assert_eq!(listed.join(", "), TERMINAL_STATES_SQL);
    }
}
