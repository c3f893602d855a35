//! Decoding PostgreSQL rows into API types (enums are stored as text, ids as UUID).

use crate::{Result, StoreError};
use canopy_api_types::commands::{Command, CommandResult, CommandSpec, CommandStatus};
use canopy_api_types::deploy::{
    DeployOutcome, ItemState, Operation, OperationItem, OperationState, Route, SshHostKey,
};
use canopy_api_types::hosts::{Host, HostState};
use canopy_api_types::updates::{PackageManager, Severity, Update, UpdateStatus};
use canopy_api_types::*;
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

/// `hosts h` with its open-update counts from one grouped join (no query per host).
pub(super) const HOST_SELECT: &str = "SELECT h.*, COALESCE(c.pending, 0) AS pending_updates, \
    (h.state = 'active' AND EXISTS (SELECT 1 FROM hosts d WHERE d.machine_id = h.machine_id \
        AND d.id <> h.id AND d.state = 'active')) AS duplicate_machine_id, \
    COALESCE(c.security, 0) AS security_updates FROM hosts h LEFT JOIN ( \
        SELECT host_id, COUNT(*) AS pending, COUNT(*) FILTER (WHERE severity = 'security') AS security \
        FROM updates WHERE status NOT IN ('installed', 'reconciled') GROUP BY host_id \
    ) c ON c.host_id = h.id";

/// Columns of `updates u JOIN hosts h` for [`update`].
pub(super) const UPDATE_SELECT: &str =
    "SELECT u.*, h.hostname AS hostname FROM updates u JOIN hosts h ON h.id = u.host_id";

fn count(row: &PgRow, col: &str) -> Result<u64> {
    Ok(u64::try_from(row.try_get::<i64, _>(col)?).unwrap_or(0))
}

pub(super) fn host(row: &PgRow) -> Result<Host> {
    Ok(Host {
        id: HostId(row.try_get("id")?),
        hostname: row.try_get("hostname")?,
        machine_id: row.try_get("machine_id")?,
        os_id: row.try_get("os_id")?,
        os_pretty: row.try_get("os_pretty")?,
        kernel: row.try_get("kernel")?,
        arch: row.try_get("arch")?,
        agent_version: row.try_get("agent_version")?,
        read_only: row.try_get("read_only")?,
        reboot_required: row.try_get("reboot_required")?,
        pending_updates: count(row, "pending_updates")?,
        security_updates: count(row, "security_updates")?,
        last_seen: row.try_get("last_seen")?,
        last_report: row.try_get("last_report")?,
        registered_at: row.try_get("registered_at")?,
        agentless: row.try_get("agentless")?,
        run_as: row.try_get("run_as")?,
        state: {
            let s: String = row.try_get("state")?;
            HostState::parse(&s)
                .ok_or_else(|| StoreError::corrupt("hosts", format!("unknown state '{s}'")))?
        },
        duplicate_machine_id: row.try_get("duplicate_machine_id")?,
        package_db: serde_json::from_value(row.try_get("package_db")?)
            .map_err(|e| StoreError::corrupt("hosts", format!("package_db: {e}")))?,
    })
}

pub(super) fn manager(s: &str) -> Result<PackageManager> {
    PackageManager::parse(s)
        .ok_or_else(|| StoreError::corrupt("updates", format!("unknown manager '{s}'")))
}

pub(super) fn update(row: &PgRow) -> Result<Update> {
    let severity: String = row.try_get("severity")?;
    let status: String = row.try_get("status")?;
    let arch: String = row.try_get("arch")?;
    Ok(Update {
        id: UpdateId(row.try_get("id")?),
        host_id: HostId(row.try_get("host_id")?),
        hostname: row.try_get("hostname")?,
        manager: manager(&row.try_get::<String, _>("manager")?)?,
        package: row.try_get("package")?,
        current_version: row.try_get("current_version")?,
        available_version: row.try_get("available_version")?,
        arch: (!arch.is_empty()).then_some(arch),
        source: row.try_get("source")?,
        severity: Severity::parse(&severity).ok_or_else(|| {
            StoreError::corrupt("updates", format!("unknown severity '{severity}'"))
        })?,
        held: row.try_get("held")?,
        status: update_status(&status)?,
        correlation_id: row
            .try_get::<Option<Uuid>, _>("correlation_id")?
            .map(CorrelationId),
        command_id: row.try_get::<Option<Uuid>, _>("command_id")?.map(CommandId),
        first_seen: row.try_get("first_seen")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(super) fn update_status(s: &str) -> Result<UpdateStatus> {
    UpdateStatus::parse(s)
        .ok_or_else(|| StoreError::corrupt("updates", format!("unknown status '{s}'")))
}

pub(super) fn command(row: &PgRow) -> Result<Command> {
    let spec: serde_json::Value = row.try_get("spec")?;
    let status: String = row.try_get("status")?;
    let result: Option<serde_json::Value> = row.try_get("result")?;
    let timeout: i32 = row.try_get("timeout_secs")?;
    Ok(Command {
        id: CommandId(row.try_get("id")?),
        host_id: HostId(row.try_get("host_id")?),
        spec: serde_json::from_value::<CommandSpec>(spec)
            .map_err(|e| StoreError::corrupt("commands", format!("spec: {e}")))?,
        status: CommandStatus::parse(&status)
            .ok_or_else(|| StoreError::corrupt("commands", format!("unknown status '{status}'")))?,
        correlation_id: CorrelationId(row.try_get("correlation_id")?),
        caused_by: row.try_get::<Option<Uuid>, _>("caused_by")?.map(CommandId),
        retried_from: row
            .try_get::<Option<Uuid>, _>("retried_from")?
            .map(CommandId),
        timeout_secs: u32::try_from(timeout).unwrap_or(0),
        created_at: row.try_get("created_at")?,
        sent_at: row.try_get("sent_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        result: result
            .map(serde_json::from_value::<CommandResult>)
            .transpose()
            .map_err(|e| StoreError::corrupt("commands", format!("result: {e}")))?,
        error: row.try_get("error")?,
        overdue_at: row.try_get("overdue_at")?,
        late: row.try_get("late")?,
    })
}

pub(super) fn event(row: &PgRow) -> Result<canopy_api_types::hosts::Event> {
    Ok(canopy_api_types::hosts::Event {
        id: EventId(row.try_get("id")?),
        seq: row.try_get("seq")?,
        ts: row.try_get("ts")?,
        event_type: row.try_get("event_type")?,
        subject: row.try_get("subject")?,
        actor: row.try_get("actor")?,
        correlation_id: row
            .try_get::<Option<Uuid>, _>("correlation_id")?
            .map(CorrelationId),
        causation_id: row.try_get::<Option<Uuid>, _>("causation_id")?.map(EventId),
        guest_id: row.try_get::<Option<Uuid>, _>("guest_id")?.map(GuestId),
        payload: row.try_get("payload")?,
        checksum: row.try_get("checksum")?,
    })
}

pub(super) fn json_col<T: serde::de::DeserializeOwned>(
    row: &PgRow,
    table: &'static str,
    col: &str,
) -> Result<T> {
    let v: serde_json::Value = row.try_get(col)?;
    serde_json::from_value(v).map_err(|e| StoreError::corrupt(table, format!("column {col}: {e}")))
}

/// A nullable JSON column: NULL is `None`, JSON that does not decode is `Corrupt`.
pub(super) fn opt_json_col<T: serde::de::DeserializeOwned>(
    row: &PgRow,
    table: &'static str,
    col: &str,
) -> Result<Option<T>> {
    let v: Option<serde_json::Value> = row.try_get(col)?;
    v.map(|v| {
        serde_json::from_value(v)
            .map_err(|e| StoreError::corrupt(table, format!("column {col}: {e}")))
    })
    .transpose()
}

fn u32_col(row: &PgRow, table: &'static str, col: &str) -> Result<u32> {
    let v: i64 = row.try_get(col)?;
    u32::try_from(v)
        .map_err(|_| StoreError::corrupt(table, format!("column {col}: {v} is not a u32")))
}

/// A cluster from a `SELECT * FROM clusters` row.
pub(super) fn cluster(row: &PgRow) -> Result<crate::ClusterRecord> {
    const T: &str = "clusters";
    Ok(crate::ClusterRecord {
        id: ClusterId(row.try_get("id")?),
        name: row.try_get("name")?,
        endpoints: json_col(row, T, "endpoints")?,
        token_id: row.try_get("token_id")?,
        token_secret_sealed: row.try_get("token_secret_sealed")?,
        fingerprints: json_col(row, T, "fingerprints")?,
        ca_pem: row.try_get("ca_pem")?,
        interval_secs: u32_col(row, T, "interval_secs")?,
        created_at: row.try_get("created_at")?,
        last_discovery_at: row.try_get("last_discovery_at")?,
        last_error: row.try_get("last_error")?,
        standalone: row.try_get("standalone")?,
    })
}

/// A node from a `SELECT * FROM pve_nodes` row.
pub(super) fn node(row: &PgRow) -> Result<crate::NodeRecord> {
    Ok(crate::NodeRecord {
        cluster_id: ClusterId(row.try_get("cluster_id")?),
        row: crate::NodeRow {
            name: row.try_get("name")?,
            status: row.try_get("status")?,
            ip: row.try_get("ip")?,
            error: row.try_get("error")?,
        },
        updated_at: row.try_get("updated_at")?,
        apt_updates: row.try_get("apt_updates")?,
        apt_checked_at: row.try_get("apt_checked_at")?,
        apt_error: row.try_get("apt_error")?,
    })
}

/// A guest from a `SELECT * FROM guests` row.
pub(super) fn guest(row: &PgRow) -> Result<crate::GuestRecord> {
    const T: &str = "guests";
    Ok(crate::GuestRecord {
        id: GuestId(row.try_get("id")?),
        cluster_id: ClusterId(row.try_get("cluster_id")?),
        row: crate::GuestRow {
            kind: row.try_get("kind")?,
            vmid: u32_col(row, T, "vmid")?,
            node: row.try_get("node")?,
            name: row.try_get("name")?,
            status: row.try_get("status")?,
            template: row.try_get("template")?,
            tags: json_col(row, T, "tags")?,
        },
        os: row.try_get("os")?,
        host_id: row.try_get::<Option<Uuid>, _>("host_id")?.map(HostId),
        first_seen: row.try_get("first_seen")?,
        last_seen: row.try_get("last_seen")?,
    })
}

/// A pinned key from a `SELECT * FROM ssh_host_keys` row.
pub(super) fn ssh_host_key(row: &PgRow) -> Result<SshHostKey> {
    Ok(SshHostKey {
        address: row.try_get("address")?,
        key_type: row.try_get("key_type")?,
        fingerprint: row.try_get("fingerprint")?,
        first_seen: row.try_get("first_seen")?,
    })
}

/// An operation (without its items) from a `SELECT * FROM operations` row.
pub(super) fn operation(row: &PgRow) -> Result<Operation> {
    const T: &str = "operations";
    let state: String = row.try_get("state")?;
    Ok(Operation {
        id: OperationId(row.try_get("id")?),
        action: row.try_get("action")?,
        selector: row.try_get("selector")?,
        state: OperationState::parse(&state)
            .ok_or_else(|| StoreError::corrupt(T, format!("unknown state '{state}'")))?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
        items: Vec::new(),
        skipped: json_col(row, T, "skipped")?,
        update: opt_json_col(row, T, "detail")?,
    })
}

/// An item and its operation's id from a `SELECT * FROM operation_items` row.
pub(super) fn operation_item(row: &PgRow) -> Result<(OperationId, OperationItem)> {
    const T: &str = "operation_items";
    let unknown = |col: &str, v: &str| StoreError::corrupt(T, format!("unknown {col} '{v}'"));
    let route: String = row.try_get("route")?;
    let state: String = row.try_get("state")?;
    let outcome: Option<String> = row.try_get("outcome")?;
    let item = OperationItem {
        target: row.try_get("target")?,
        guest_id: row.try_get::<Option<Uuid>, _>("guest_id")?.map(GuestId),
        node: row.try_get("node")?,
        vmid: u32_col(row, T, "vmid")?,
        route: Route::parse(&route).ok_or_else(|| unknown("route", &route))?,
        state: ItemState::parse(&state).ok_or_else(|| unknown("state", &state))?,
        step: row.try_get("step")?,
        outcome: outcome
            .map(|o| DeployOutcome::parse(&o).ok_or_else(|| unknown("outcome", &o)))
            .transpose()?,
        message: row.try_get("message")?,
        host_id: row.try_get::<Option<Uuid>, _>("host_id")?.map(HostId),
        run_as: row.try_get("run_as")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        update: opt_json_col(row, T, "detail")?,
    };
    Ok((OperationId(row.try_get("operation_id")?), item))
}
