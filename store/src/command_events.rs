//! The events of the command queue, built once for both backends: which event a step
//! writes, its subject (`host/{h}/command/{c}`), its actor and its payload. The backends
//! decide only how the rows change; the conformance suite compares the two logs.

use crate::common::{prepare_event, PreparedEvent};
use crate::{events, Actor, NewEvent};
use canopy_api_types::commands::{Command, CommandResult};
use canopy_api_types::{CommandId, UpdateId};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// An event about `c` (its subject, host and correlation).
fn about(
    c: &Command,
    event_type: &str,
    actor: &Actor,
    now: DateTime<Utc>,
    payload: Value,
) -> PreparedEvent {
    prepare_event(
        NewEvent {
            event_type: event_type.into(),
            subject: events::command_subject(c.host_id, c.id),
            actor: actor.clone(),
            correlation: Some(c.correlation_id),
            causation: None,
            payload,
        },
        Some(c.host_id),
        now,
    )
}

/// `command.queued`: the whole spec, so the log alone says what was asked.
pub fn queued(c: &Command, actor: &Actor, now: DateTime<Utc>) -> PreparedEvent {
    about(
        c,
        events::COMMAND_QUEUED,
        actor,
        now,
        json!({
            "command_id": c.id,
            "kind": c.spec.kind(),
            "spec": c.spec,
            "timeout_secs": c.timeout_secs,
            "caused_by": c.caused_by,
            "retried_from": c.retried_from,
        }),
    )
}

/// `command.sent`: the agent claimed it at a check-in.
pub fn sent(c: &Command, now: DateTime<Utc>) -> PreparedEvent {
    about(
        c,
        events::COMMAND_SENT,
        &Actor::Agent(c.host_id),
        now,
        json!({ "command_id": c.id, "kind": c.spec.kind() }),
    )
}

/// `command.running`: the server accepted the agent's start; the deadline counts from here.
pub fn started(c: &Command, deadline: DateTime<Utc>, now: DateTime<Utc>) -> PreparedEvent {
    about(
        c,
        events::COMMAND_RUNNING,
        &Actor::Agent(c.host_id),
        now,
        json!({ "command_id": c.id, "deadline": deadline }),
    )
}

/// `command.overdue`: past its deadline and still running; never stopped halfway.
pub fn overdue(c: &Command, deadline: Option<DateTime<Utc>>, now: DateTime<Utc>) -> PreparedEvent {
    about(
        c,
        events::COMMAND_OVERDUE,
        &Actor::System,
        now,
        json!({ "command_id": c.id, "deadline": deadline }),
    )
}

/// `command.completed` or `command.failed`, from the agent's result.
pub fn finished(
    c: &Command,
    result: &CommandResult,
    late: bool,
    now: DateTime<Utc>,
) -> PreparedEvent {
    let event_type = if result.success {
        events::COMMAND_COMPLETED
    } else {
        events::COMMAND_FAILED
    };
    about(
        c,
        event_type,
        &Actor::Agent(c.host_id),
        now,
        json!({
            "command_id": c.id,
            "kind": c.spec.kind(),
            "success": result.success,
            "exit_code": result.exit_code,
            "summary": result.summary,
            "late": late,
        }),
    )
}

/// `command.late_result`: a result for a command the server had already ended.
pub fn late_result(c: &Command, result: &CommandResult, now: DateTime<Utc>) -> PreparedEvent {
    about(
        c,
        events::COMMAND_LATE_RESULT,
        &Actor::Agent(c.host_id),
        now,
        json!({
            "command_id": c.id,
            "status": c.status,
            "success": result.success,
            "exit_code": result.exit_code,
            "summary": result.summary,
        }),
    )
}

/// `command.timed_out`, with the reason and the update rows it released or failed.
pub fn timed_out(
    c: &Command,
    reason: &str,
    update_ids: &[UpdateId],
    now: DateTime<Utc>,
) -> PreparedEvent {
    about(
        c,
        events::COMMAND_TIMED_OUT,
        &Actor::System,
        now,
        json!({ "command_id": c.id, "reason": reason, "update_ids": update_ids }),
    )
}

/// `command.cancelled` by `actor`, with the reason and the rows released to `pending`.
pub fn cancelled(
    c: &Command,
    actor: &Actor,
    reason: &str,
    update_ids: &[UpdateId],
    now: DateTime<Utc>,
) -> PreparedEvent {
    about(
        c,
        events::COMMAND_CANCELLED,
        actor,
        now,
        json!({ "command_id": c.id, "reason": reason, "update_ids": update_ids }),
    )
}

/// `command.retried`: `old` is repeated by `retry`, which carries `update_ids`.
pub fn retried(
    old: &Command,
    retry: CommandId,
    actor: &Actor,
    update_ids: &[UpdateId],
    now: DateTime<Utc>,
) -> PreparedEvent {
    about(
        old,
        events::COMMAND_RETRIED,
        actor,
        now,
        json!({ "command_id": old.id, "retry": retry, "update_ids": update_ids }),
    )
}

/// `dry_run.ready`: the plan the operator confirms.
pub fn dry_run_ready(
    c: &Command,
    ids: &[UpdateId],
    result: &CommandResult,
    now: DateTime<Utc>,
) -> PreparedEvent {
    about(
        c,
        events::DRY_RUN_READY,
        &Actor::Agent(c.host_id),
        now,
        json!({
            "command_id": c.id,
            "ids": ids,
            "planned": result.planned,
            "removed": result.removed,
            "summary": result.summary,
        }),
    )
}

/// `updates.installed`: rows the install closed (their versions are in the version history).
pub fn updates_installed(c: &Command, ids: &[UpdateId], now: DateTime<Utc>) -> PreparedEvent {
    about(
        c,
        events::UPDATES_INSTALLED,
        &Actor::Agent(c.host_id),
        now,
        json!({ "command_id": c.id, "ids": ids }),
    )
}

/// `updates.failed`: rows the command failed, why, and the exit code when the agent sent one.
pub fn updates_failed(
    c: &Command,
    actor: &Actor,
    ids: &[UpdateId],
    reason: &str,
    exit_code: Option<i32>,
    now: DateTime<Utc>,
) -> PreparedEvent {
    about(
        c,
        events::UPDATES_FAILED,
        actor,
        now,
        json!({ "command_id": c.id, "ids": ids, "reason": reason, "exit_code": exit_code }),
    )
}

/// `install.confirmed` on the dry-run: the install it queued, with the pinned plan.
pub fn install_confirmed(
    dry_run: &Command,
    install: &Command,
    actor: &Actor,
    ids: &[UpdateId],
    now: DateTime<Utc>,
) -> PreparedEvent {
    about(
        dry_run,
        events::INSTALL_CONFIRMED,
        actor,
        now,
        json!({
            "dry_run": dry_run.id,
            "install": install.id,
            "packages": crate::command_plan::carried_packages(&install.spec),
            "ids": ids,
        }),
    )
}

/// The events of a finished command's rows: `dry_run.ready`, `updates.installed` or
/// `updates.failed`, by the `to` status of [`row_transition`](crate::command_plan::row_transition).
pub fn rows_moved(
    c: &Command,
    to: &str,
    ids: &[UpdateId],
    result: &CommandResult,
    now: DateTime<Utc>,
) -> PreparedEvent {
    match to {
        "awaiting_confirmation" => dry_run_ready(c, ids, result, now),
        "installed" => updates_installed(c, ids, now),
        _ => updates_failed(
            c,
            &Actor::Agent(c.host_id),
            ids,
            &result.summary,
            Some(result.exit_code),
            now,
        ),
    }
}
