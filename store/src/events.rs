//! Event types and the event checksum, shared by both backends.

use crate::model::NewEvent;
use canopy_api_types::{CorrelationId, EventId};
use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

pub const USER_CREATED: &str = "user.created";
pub const USER_PASSWORD_SET: &str = "user.password_set";
pub const USER_DISABLED: &str = "user.disabled";
pub const USER_ENABLED: &str = "user.enabled";
pub const USER_DELETED: &str = "user.deleted";
pub const USER_ROLE_CHANGED: &str = "user.role_changed";
/// "Log out everywhere": every refresh token revoked, every access token ended.
pub const USER_SESSIONS_REVOKED: &str = "user.sessions_revoked";
pub const REGISTRATION_TOKEN_CREATED: &str = "registration_token.created";
pub const REGISTRATION_TOKEN_REVOKED: &str = "registration_token.revoked";
pub const HOST_REGISTERED: &str = "host.registered";
pub const HOST_REENROLLED: &str = "host.reenrolled";
/// A host the server scans without an agent was first seen.
pub const HOST_AGENTLESS_ADDED: &str = "host.agentless_added";
/// A host's agent was uninstalled: credential revoked, detached from its guest.
pub const HOST_ARCHIVED: &str = "host.archived";
/// An admin deleted a host: credential revoked, detached, history kept.
pub const HOST_DELETED: &str = "host.deleted";
pub const REPORT_INGESTED: &str = "host.report_ingested";
pub const UPDATES_APPROVED: &str = "updates.approved";
pub const UPDATES_REJECTED: &str = "updates.rejected";
pub const UPDATES_RECONCILED: &str = "updates.reconciled";
pub const UPDATES_INSTALLED: &str = "updates.installed";
pub const UPDATES_FAILED: &str = "updates.failed";
pub const DRY_RUN_READY: &str = "dry_run.ready";
pub const COMMAND_QUEUED: &str = "command.queued";
pub const COMMAND_SENT: &str = "command.sent";
pub const COMMAND_RUNNING: &str = "command.running";
pub const COMMAND_COMPLETED: &str = "command.completed";
pub const COMMAND_FAILED: &str = "command.failed";
pub const COMMAND_TIMED_OUT: &str = "command.timed_out";
pub const COMMAND_CANCELLED: &str = "command.cancelled";
pub const COMMAND_RETRIED: &str = "command.retried";
pub const COMMAND_LATE_RESULT: &str = "command.late_result";
/// A running command passed its deadline; it is left to finish.
pub const COMMAND_OVERDUE: &str = "command.overdue";
pub const INSTALL_CONFIRMED: &str = "install.confirmed";
pub const IMAGE_UPDATES_CHECKED: &str = "image_updates.checked";
pub const REGISTRY_CREDENTIALS_SET: &str = "registry.credentials_set";
pub const REGISTRY_CREDENTIALS_REMOVED: &str = "registry.credentials_removed";
pub const SSH_HOST_KEY_PINNED: &str = "ssh.host_key_pinned";
pub const SSH_HOST_KEY_FORGOTTEN: &str = "ssh.host_key_forgotten";
pub const OPERATION_CREATED: &str = "operation.created";
pub const OPERATION_ITEM_SUCCEEDED: &str = "operation.item_succeeded";
pub const OPERATION_ITEM_FAILED: &str = "operation.item_failed";
pub const OPERATION_ITEM_CANCELLED: &str = "operation.item_cancelled";
pub const OPERATION_FINISHED: &str = "operation.finished";
// Update operations (written by the engine through `transition_operation` / `ItemUpdate.event`).
pub const OPERATION_PLANNED: &str = "operation.planned";
pub const OPERATION_APPROVED: &str = "operation.approved";
pub const OPERATION_PAUSED: &str = "operation.paused";
pub const OPERATION_RESUMED: &str = "operation.resumed";
pub const OPERATION_CANCEL_REQUESTED: &str = "operation.cancel_requested";
pub const OPERATION_REPLANNED: &str = "operation.replanned";
pub const OPERATION_ITEM_STEP: &str = "operation.item_step";
// The inventory's events are named like `canopy_inventory::reconcile` names its changes.
pub const CLUSTER_ADDED: &str = "cluster_added";
pub const CLUSTER_REMOVED: &str = "cluster_removed";
pub const HOST_ATTACHED: &str = "host_attached";
/// The one guest event linked to the guest row a discovery pass deletes.
pub const GUEST_REMOVED: &str = "guest_removed";

/// SHA-256 hex over the canonical event body. Both backends store it; verification
/// recomputes it from the stored columns.
pub fn checksum(id: EventId, ts: DateTime<Utc>, event: &NewEvent) -> String {
    checksum_parts(
        id,
        ts,
        &event.event_type,
        &event.subject,
        &event.actor.to_string(),
        event.correlation,
        event.causation,
        &event.payload,
    )
}

#[allow(clippy::too_many_arguments)]
pub fn checksum_parts(
    id: EventId,
    ts: DateTime<Utc>,
    event_type: &str,
    subject: &str,
    actor: &str,
    correlation: Option<CorrelationId>,
    causation: Option<EventId>,
    payload: &serde_json::Value,
) -> String {
    let mut h = Sha256::new();
    for part in [
        id.to_string(),
        ts.to_rfc3339_opts(SecondsFormat::Micros, true),
        event_type.to_string(),
        subject.to_string(),
        actor.to_string(),
        correlation.map(|c| c.to_string()).unwrap_or_default(),
        causation.map(|c| c.to_string()).unwrap_or_default(),
        payload.to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// Subject path of a host.
pub fn host_subject(host: canopy_api_types::HostId) -> String {
    format!("host/{host}")
}

/// Subject path of a command.
pub fn command_subject(host: canopy_api_types::HostId, id: canopy_api_types::CommandId) -> String {
    format!("host/{host}/command/{id}")
}

/// Path ID of a cluster: `cluster/{name}`.
pub fn cluster_subject(name: &str) -> String {
    format!("cluster/{name}")
}

/// Path ID of a guest: `cluster/{cluster}/node/{node}/{lxc|vm}/{vmid}`.
pub fn guest_subject(cluster: &str, node: &str, kind: &str, vmid: u32) -> String {
    format!("cluster/{cluster}/node/{node}/{kind}/{vmid}")
}

/// Subject path of a bulk operation.
pub fn operation_subject(id: canopy_api_types::OperationId) -> String {
    format!("operation/{id}")
}

/// Subject path of a pinned SSH host key.
pub fn ssh_host_key_subject(address: &str) -> String {
    format!("ssh_host_key/{address}")
}

/// Subject path of a container registry (`registry/docker.io`).
pub fn registry_subject(registry: &str) -> String {
    format!("registry/{registry}")
}
