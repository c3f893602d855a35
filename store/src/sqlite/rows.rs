//! Decoding SQLite rows into API types (ids and enums are stored as text).

use crate::{Result, StoreError};
use canopy_api_types::commands::{Command, CommandResult, CommandSpec, CommandStatus};
use canopy_api_types::hosts::Host;
use canopy_api_types::updates::{PackageManager, Severity, Update, UpdateStatus};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

pub(super) fn uuid(row: &SqliteRow, col: &str) -> Result<Uuid> {
    let s: String = row.try_get(col)?;
    Uuid::parse_str(&s).map_err(|e| StoreError::corrupt("row", format!("{col}: {e}")))
}

pub(super) fn opt_uuid(row: &SqliteRow, col: &str) -> Result<Option<Uuid>> {
    let s: Option<String> = row.try_get(col)?;
    s.map(|s| Uuid::parse_str(&s).map_err(|e| StoreError::corrupt("row", format!("{col}: {e}"))))
        .transpose()
}

/// Columns of `hosts h` plus the open-update counts, for [`host`].
pub(super) const HOST_SELECT: &str = "SELECT h.*, \
    (SELECT COUNT(*) FROM updates u WHERE u.host_id = h.id AND u.status NOT IN ('installed','reconciled','rejected')) AS pending_updates, \
    (SELECT COUNT(*) FROM updates u WHERE u.host_id = h.id AND u.status NOT IN ('installed','reconciled','rejected') AND u.severity = 'security') AS security_updates \
    FROM hosts h";

pub(super) fn host(row: &SqliteRow) -> Result<Host> {
    Ok(Host {
        id: canopy_api_types::HostId(uuid(row, "id")?),
        hostname: row.try_get("hostname")?,
        machine_id: row.try_get("machine_id")?,
        os_id: row.try_get("os_id")?,
        os_pretty: row.try_get("os_pretty")?,
        kernel: row.try_get("kernel")?,
        arch: row.try_get("arch")?,
        agent_version: row.try_get("agent_version")?,
        read_only: row.try_get("read_only")?,
        reboot_required: row.try_get("reboot_required")?,
        pending_updates: row.try_get::<i64, _>("pending_updates")? as u64,
        security_updates: row.try_get::<i64, _>("security_updates")? as u64,
        last_seen: row.try_get("last_seen")?,
        last_report: row.try_get("last_report")?,
        registered_at: row.try_get("registered_at")?,
    })
}

/// Columns of `updates u JOIN hosts h` for [`update`].
pub(super) const UPDATE_SELECT: &str = "SELECT u.*, h.hostname AS hostname FROM updates u JOIN hosts h ON h.id = u.host_id";

pub(super) fn update(row: &SqliteRow) -> Result<Update> {
    let manager: String = row.try_get("manager")?;
    let severity: String = row.try_get("severity")?;
    let status: String = row.try_get("status")?;
    let arch: String = row.try_get("arch")?;
    Ok(Update {
        id: canopy_api_types::UpdateId(uuid(row, "id")?),
        host_id: canopy_api_types::HostId(uuid(row, "host_id")?),
        hostname: row.try_get("hostname")?,
        manager: PackageManager::parse(&manager).ok_or_else(|| StoreError::corrupt("updates", format!("manager {manager}")))?,
        package: row.try_get("package")?,
        current_version: row.try_get("current_version")?,
        available_version: row.try_get("available_version")?,
        arch: (!arch.is_empty()).then_some(arch),
        source: row.try_get("source")?,
        severity: Severity::parse(&severity).ok_or_else(|| StoreError::corrupt("updates", format!("severity {severity}")))?,
        held: row.try_get("held")?,
        status: UpdateStatus::parse(&status).ok_or_else(|| StoreError::corrupt("updates", format!("status {status}")))?,
        correlation_id: opt_uuid(row, "correlation_id")?.map(canopy_api_types::CorrelationId),
        command_id: opt_uuid(row, "command_id")?.map(canopy_api_types::CommandId),
        first_seen: row.try_get("first_seen")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(super) fn command(row: &SqliteRow) -> Result<Command> {
    let spec: String = row.try_get("spec")?;
    let status: String = row.try_get("status")?;
    let result: Option<String> = row.try_get("result")?;
    let timeout: i64 = row.try_get("timeout_secs")?;
    Ok(Command {
        id: canopy_api_types::CommandId(uuid(row, "id")?),
        host_id: canopy_api_types::HostId(uuid(row, "host_id")?),
        spec: serde_json::from_str::<CommandSpec>(&spec).map_err(|e| StoreError::corrupt("commands", format!("spec: {e}")))?,
        status: CommandStatus::parse(&status).ok_or_else(|| StoreError::corrupt("commands", format!("status {status}")))?,
        correlation_id: canopy_api_types::CorrelationId(uuid(row, "correlation_id")?),
        caused_by: opt_uuid(row, "caused_by")?.map(canopy_api_types::CommandId),
        retried_from: opt_uuid(row, "retried_from")?.map(canopy_api_types::CommandId),
        timeout_secs: timeout as u32,
        created_at: row.try_get("created_at")?,
        sent_at: row.try_get("sent_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        result: result
            .map(|r| serde_json::from_str::<CommandResult>(&r))
            .transpose()
            .map_err(|e| StoreError::corrupt("commands", format!("result: {e}")))?,
        error: row.try_get("error")?,
    })
}
