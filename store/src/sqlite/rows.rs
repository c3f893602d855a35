//! Decoding SQLite rows into the API types, with a `Corrupt` error naming the table
//! and column instead of a panic when a stored value does not parse.

use crate::{StoreError, UserRecord};
use canopy_api_types::auth::{RegistrationToken, Role, User};
use canopy_api_types::commands::{Command, CommandSpec, CommandStatus};
use canopy_api_types::deploy::{
    DeployOutcome, ItemState, Operation, OperationItem, OperationState, Route, SshHostKey,
};
use canopy_api_types::hosts::{Event, Host, HostState};
use canopy_api_types::updates::{PackageManager, Severity, Update, UpdateStatus, VersionChange};
use canopy_api_types::OperationId;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use std::str::FromStr;

type R<T> = Result<T, StoreError>;

/// Columns of a host with its open/security counts (see [`HOST_SELECT`]).
pub(super) const HOST_SELECT: &str = "SELECT h.id, h.hostname, h.machine_id, h.os_id, h.os_pretty, h.kernel, h.arch, \
     h.agent_version, h.read_only, h.reboot_required, h.last_seen, h.last_report, h.registered_at, \
     h.credential_hash, h.agentless, h.run_as, h.state, h.package_db, \
     (h.state = 'active' AND EXISTS (SELECT 1 FROM hosts d WHERE d.machine_id = h.machine_id \
         AND d.id <> h.id AND d.state = 'active')) AS duplicate_machine_id, \
     COUNT(u.id) AS open_updates, \
     COALESCE(SUM(CASE WHEN u.severity = 'security' THEN 1 ELSE 0 END), 0) AS security_updates \
     FROM hosts h LEFT JOIN updates u ON u.host_id = h.id AND u.status NOT IN ('installed', 'reconciled')";

/// Columns of an update row joined with its host's name.
pub(super) const UPDATE_SELECT: &str = "SELECT u.id, u.host_id, h.hostname, u.manager, u.package, u.current_version, \
     u.available_version, u.arch, u.source, u.severity, u.held, u.status, u.correlation_id, u.command_id, \
     u.first_seen, u.updated_at FROM updates u JOIN hosts h ON h.id = u.host_id";

pub(super) fn text(row: &SqliteRow, table: &'static str, col: &str) -> R<String> {
    row.try_get::<String, _>(col)
        .map_err(|e| StoreError::corrupt(table, format!("column {col}: {e}")))
}

pub(super) fn opt_text(row: &SqliteRow, table: &'static str, col: &str) -> R<Option<String>> {
    row.try_get::<Option<String>, _>(col)
        .map_err(|e| StoreError::corrupt(table, format!("column {col}: {e}")))
}

pub(super) fn int(row: &SqliteRow, table: &'static str, col: &str) -> R<i64> {
    row.try_get::<i64, _>(col)
        .map_err(|e| StoreError::corrupt(table, format!("column {col}: {e}")))
}

pub(super) fn parse<T: FromStr>(table: &'static str, col: &str, s: &str) -> R<T>
where
    T::Err: std::fmt::Display,
{
    s.parse::<T>()
        .map_err(|e| StoreError::corrupt(table, format!("column {col}: '{s}': {e}")))
}

pub(super) fn id<T: FromStr>(row: &SqliteRow, table: &'static str, col: &str) -> R<T>
where
    T::Err: std::fmt::Display,
{
    parse(table, col, &text(row, table, col)?)
}

pub(super) fn opt_id<T: FromStr>(row: &SqliteRow, table: &'static str, col: &str) -> R<Option<T>>
where
    T::Err: std::fmt::Display,
{
    opt_text(row, table, col)?
        .map(|s| parse(table, col, &s))
        .transpose()
}

pub(super) fn parse_ts(table: &'static str, col: &str, s: &str) -> R<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::corrupt(table, format!("column {col}: '{s}': {e}")))
}

pub(super) fn time(row: &SqliteRow, table: &'static str, col: &str) -> R<DateTime<Utc>> {
    parse_ts(table, col, &text(row, table, col)?)
}

pub(super) fn opt_time(
    row: &SqliteRow,
    table: &'static str,
    col: &str,
) -> R<Option<DateTime<Utc>>> {
    opt_text(row, table, col)?
        .map(|s| parse_ts(table, col, &s))
        .transpose()
}

fn enum_col<T>(row: &SqliteRow, table: &'static str, col: &str, f: fn(&str) -> Option<T>) -> R<T> {
    let s = text(row, table, col)?;
    f(&s).ok_or_else(|| StoreError::corrupt(table, format!("column {col}: unknown value '{s}'")))
}

fn count(row: &SqliteRow, table: &'static str, col: &str) -> R<u64> {
    Ok(int(row, table, col)?.max(0) as u64)
}

fn bool_col(row: &SqliteRow, table: &'static str, col: &str) -> R<bool> {
    Ok(int(row, table, col)? != 0)
}

/// Columns of [`user`] and [`user_record`].
pub(super) const USER_COLUMNS: &str =
    "users.id, users.username, users.role, users.disabled_at, users.password_hash, users.session_epoch";

pub(super) fn user(row: &SqliteRow) -> R<User> {
    Ok(User {
        id: id(row, "users", "id")?,
        username: text(row, "users", "username")?,
        role: enum_col(row, "users", "role", Role::parse)?,
        disabled: opt_text(row, "users", "disabled_at")?.is_some(),
    })
}

/// A user with hash and session epoch, from a row of [`USER_COLUMNS`].
pub(super) fn user_record(row: &SqliteRow) -> R<UserRecord> {
    Ok(UserRecord {
        user: user(row)?,
        password_hash: text(row, "users", "password_hash")?,
        session_epoch: int(row, "users", "session_epoch")?,
    })
}

pub(super) fn registration_token(row: &SqliteRow) -> R<RegistrationToken> {
    const T: &str = "registration_tokens";
    Ok(RegistrationToken {
        id: id(row, T, "id")?,
        label: text(row, T, "label")?,
        seats: int(row, T, "seats")?.clamp(0, u32::MAX as i64) as u32,
        seats_used: int(row, T, "seats_used")?.clamp(0, u32::MAX as i64) as u32,
        expires_at: time(row, T, "expires_at")?,
        revoked: bool_col(row, T, "revoked")?,
        revoked_at: opt_time(row, T, "revoked_at")?,
        guest_id: opt_id(row, T, "guest_id")?,
    })
}

/// A host from a [`HOST_SELECT`] row.
pub(super) fn host(row: &SqliteRow) -> R<Host> {
    const T: &str = "hosts";
    Ok(Host {
        id: id(row, T, "id")?,
        hostname: text(row, T, "hostname")?,
        machine_id: text(row, T, "machine_id")?,
        os_id: text(row, T, "os_id")?,
        os_pretty: text(row, T, "os_pretty")?,
        kernel: text(row, T, "kernel")?,
        arch: text(row, T, "arch")?,
        agent_version: text(row, T, "agent_version")?,
        read_only: bool_col(row, T, "read_only")?,
        reboot_required: bool_col(row, T, "reboot_required")?,
        pending_updates: count(row, T, "open_updates")?,
        security_updates: count(row, T, "security_updates")?,
        last_seen: opt_time(row, T, "last_seen")?,
        last_report: opt_time(row, T, "last_report")?,
        registered_at: time(row, T, "registered_at")?,
        agentless: bool_col(row, T, "agentless")?,
        run_as: text(row, T, "run_as")?,
        state: enum_col(row, T, "state", HostState::parse)?,
        duplicate_machine_id: bool_col(row, T, "duplicate_machine_id")?,
        package_db: json_col(row, T, "package_db")?,
    })
}

/// An update from an [`UPDATE_SELECT`] row.
pub(super) fn update(row: &SqliteRow) -> R<Update> {
    const T: &str = "updates";
    let arch = text(row, T, "arch")?;
    Ok(Update {
        id: id(row, T, "id")?,
        host_id: id(row, T, "host_id")?,
        hostname: text(row, T, "hostname")?,
        manager: enum_col(row, T, "manager", PackageManager::parse)?,
        package: text(row, T, "package")?,
        current_version: text(row, T, "current_version")?,
        available_version: text(row, T, "available_version")?,
        arch: (!arch.is_empty()).then_some(arch),
        source: opt_text(row, T, "source")?,
        severity: enum_col(row, T, "severity", Severity::parse)?,
        held: bool_col(row, T, "held")?,
        status: enum_col(row, T, "status", UpdateStatus::parse)?,
        correlation_id: opt_id(row, T, "correlation_id")?,
        command_id: opt_id(row, T, "command_id")?,
        first_seen: time(row, T, "first_seen")?,
        updated_at: time(row, T, "updated_at")?,
    })
}

/// A command from a `SELECT * FROM commands` row.
pub(super) fn command(row: &SqliteRow) -> R<Command> {
    const T: &str = "commands";
    let spec: CommandSpec = serde_json::from_str(&text(row, T, "spec")?)
        .map_err(|e| StoreError::corrupt(T, format!("column spec: {e}")))?;
    let result = opt_text(row, T, "result")?
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| StoreError::corrupt(T, format!("column result: {e}")))?;
    Ok(Command {
        id: id(row, T, "id")?,
        host_id: id(row, T, "host_id")?,
        spec,
        status: enum_col(row, T, "status", CommandStatus::parse)?,
        correlation_id: id(row, T, "correlation_id")?,
        caused_by: opt_id(row, T, "caused_by")?,
        retried_from: opt_id(row, T, "retried_from")?,
        timeout_secs: int(row, T, "timeout_secs")?.clamp(1, u32::MAX as i64) as u32,
        created_at: time(row, T, "created_at")?,
        sent_at: opt_time(row, T, "sent_at")?,
        started_at: opt_time(row, T, "started_at")?,
        finished_at: opt_time(row, T, "finished_at")?,
        result,
        error: opt_text(row, T, "error")?,
        overdue_at: opt_time(row, T, "overdue_at")?,
        late: bool_col(row, T, "late")?,
    })
}

pub(super) fn event(row: &SqliteRow) -> R<Event> {
    const T: &str = "events";
    let payload = serde_json::from_str(&text(row, T, "payload")?)
        .map_err(|e| StoreError::corrupt(T, format!("column payload: {e}")))?;
    Ok(Event {
        id: id(row, T, "id")?,
        seq: int(row, T, "seq")?,
        ts: time(row, T, "ts")?,
        event_type: text(row, T, "event_type")?,
        subject: text(row, T, "subject")?,
        actor: text(row, T, "actor")?,
        correlation_id: opt_id(row, T, "correlation_id")?,
        causation_id: opt_id(row, T, "causation_id")?,
        guest_id: opt_id(row, T, "guest_id")?,
        payload,
        checksum: text(row, T, "checksum")?,
    })
}

pub(super) fn version_change(row: &SqliteRow) -> R<VersionChange> {
    const T: &str = "update_version_history";
    Ok(VersionChange {
        host_id: id(row, T, "host_id")?,
        hostname: text(row, T, "hostname")?,
        manager: enum_col(row, T, "manager", PackageManager::parse)?,
        package: text(row, T, "package")?,
        from_version: text(row, T, "from_version")?,
        to_version: text(row, T, "to_version")?,
        command_id: id(row, T, "command_id")?,
        correlation_id: id(row, T, "correlation_id")?,
        installed_at: time(row, T, "installed_at")?,
    })
}

pub(super) fn json_col<T: serde::de::DeserializeOwned>(
    row: &SqliteRow,
    table: &'static str,
    col: &str,
) -> R<T> {
    serde_json::from_str(&text(row, table, col)?)
        .map_err(|e| StoreError::corrupt(table, format!("column {col}: {e}")))
}

/// A nullable JSON column: NULL is `None`, JSON that does not decode is `Corrupt`.
pub(super) fn opt_json_col<T: serde::de::DeserializeOwned>(
    row: &SqliteRow,
    table: &'static str,
    col: &str,
) -> R<Option<T>> {
    opt_text(row, table, col)?
        .map(|s| {
            serde_json::from_str(&s)
                .map_err(|e| StoreError::corrupt(table, format!("column {col}: {e}")))
        })
        .transpose()
}

fn u32_col(row: &SqliteRow, table: &'static str, col: &str) -> R<u32> {
    let v = int(row, table, col)?;
    u32::try_from(v)
        .map_err(|_| StoreError::corrupt(table, format!("column {col}: {v} is not a u32")))
}

/// A cluster from a `SELECT * FROM clusters` row.
pub(super) fn cluster(row: &SqliteRow) -> R<crate::ClusterRecord> {
    const T: &str = "clusters";
    Ok(crate::ClusterRecord {
        id: id(row, T, "id")?,
        name: text(row, T, "name")?,
        endpoints: json_col(row, T, "endpoints")?,
        token_id: text(row, T, "token_id")?,
        token_secret_sealed: text(row, T, "token_secret_sealed")?,
        fingerprints: json_col(row, T, "fingerprints")?,
        ca_pem: opt_text(row, T, "ca_pem")?,
        interval_secs: u32_col(row, T, "interval_secs")?,
        created_at: time(row, T, "created_at")?,
        last_discovery_at: opt_time(row, T, "last_discovery_at")?,
        last_error: opt_text(row, T, "last_error")?,
        standalone: bool_col(row, T, "standalone")?,
    })
}

/// A node from a `SELECT * FROM pve_nodes` row.
pub(super) fn node(row: &SqliteRow) -> R<crate::NodeRecord> {
    const T: &str = "pve_nodes";
    Ok(crate::NodeRecord {
        cluster_id: id(row, T, "cluster_id")?,
        row: crate::NodeRow {
            name: text(row, T, "name")?,
            status: text(row, T, "status")?,
            ip: opt_text(row, T, "ip")?,
            error: opt_text(row, T, "error")?,
        },
        updated_at: time(row, T, "updated_at")?,
        apt_updates: opt_text(row, T, "apt_updates")?
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| StoreError::corrupt(T, format!("column apt_updates: {e}")))?,
        apt_checked_at: opt_time(row, T, "apt_checked_at")?,
        apt_error: opt_text(row, T, "apt_error")?,
    })
}

/// A guest from a `SELECT * FROM guests` row.
pub(super) fn guest(row: &SqliteRow) -> R<crate::GuestRecord> {
    const T: &str = "guests";
    Ok(crate::GuestRecord {
        id: id(row, T, "id")?,
        cluster_id: id(row, T, "cluster_id")?,
        row: crate::GuestRow {
            kind: text(row, T, "kind")?,
            vmid: u32_col(row, T, "vmid")?,
            node: text(row, T, "node")?,
            name: text(row, T, "name")?,
            status: text(row, T, "status")?,
            template: bool_col(row, T, "template")?,
            tags: json_col(row, T, "tags")?,
        },
        os: opt_text(row, T, "os")?,
        host_id: opt_id(row, T, "host_id")?,
        first_seen: time(row, T, "first_seen")?,
        last_seen: time(row, T, "last_seen")?,
    })
}

/// A pinned key from a `SELECT * FROM ssh_host_keys` row.
pub(super) fn ssh_host_key(row: &SqliteRow) -> R<SshHostKey> {
    const T: &str = "ssh_host_keys";
    Ok(SshHostKey {
        address: text(row, T, "address")?,
        key_type: text(row, T, "key_type")?,
        fingerprint: text(row, T, "fingerprint")?,
        first_seen: time(row, T, "first_seen")?,
    })
}

/// An operation (without its items) from a `SELECT * FROM operations` row.
pub(super) fn operation(row: &SqliteRow) -> R<Operation> {
    const T: &str = "operations";
    Ok(Operation {
        id: id(row, T, "id")?,
        action: text(row, T, "action")?,
        selector: text(row, T, "selector")?,
        state: enum_col(row, T, "state", OperationState::parse)?,
        created_by: text(row, T, "created_by")?,
        created_at: time(row, T, "created_at")?,
        finished_at: opt_time(row, T, "finished_at")?,
        items: Vec::new(),
        skipped: json_col(row, T, "skipped")?,
        update: opt_json_col(row, T, "detail")?,
    })
}

/// An item and its operation's id from a `SELECT * FROM operation_items` row.
pub(super) fn operation_item(row: &SqliteRow) -> R<(OperationId, OperationItem)> {
    const T: &str = "operation_items";
    let outcome = opt_text(row, T, "outcome")?
        .map(|s| {
            DeployOutcome::parse(&s).ok_or_else(|| {
                StoreError::corrupt(T, format!("column outcome: unknown value '{s}'"))
            })
        })
        .transpose()?;
    let item = OperationItem {
        target: text(row, T, "target")?,
        guest_id: opt_id(row, T, "guest_id")?,
        node: text(row, T, "node")?,
        vmid: u32_col(row, T, "vmid")?,
        route: enum_col(row, T, "route", Route::parse)?,
        state: enum_col(row, T, "state", ItemState::parse)?,
        step: opt_text(row, T, "step")?,
        outcome,
        message: opt_text(row, T, "message")?,
        host_id: opt_id(row, T, "host_id")?,
        run_as: opt_text(row, T, "run_as")?,
        started_at: opt_time(row, T, "started_at")?,
        finished_at: opt_time(row, T, "finished_at")?,
        update: opt_json_col(row, T, "detail")?,
    };
    Ok((id(row, T, "operation_id")?, item))
}
