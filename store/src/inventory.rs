//! What the store keeps of the Proxmox estate: clusters (with their sealed API token),
//! nodes and guests as the last discovery pass saw them, and the node's own apt updates.
//!
//! A guest's identity is `(cluster, vmid)`: a guest seen on another node keeps its row, its
//! `GuestId`, its attached host and its history (event `guest_moved`). The server computes
//! the changes with `canopy_inventory::reconcile` and hands them over as events; the store
//! writes the new observation and those events in one transaction.

use crate::{Actor, Result};
use async_trait::async_trait;
use canopy_api_types::hosts::Event;
use canopy_api_types::{ClusterId, GuestId, HostId};
use chrono::{DateTime, Utc};

/// A cluster to add. `token_secret_sealed` is already encrypted by the caller.
#[derive(Debug, Clone)]
pub struct NewCluster {
    pub name: String,
    /// `https://host:port` origins, tried in order.
    pub endpoints: Vec<String>,
    /// `USER@REALM!TOKENID` (not secret).
    pub token_id: String,
    pub token_secret_sealed: String,
    /// Pinned SHA-256 fingerprints, `AA:BB:…`.
    pub fingerprints: Vec<String>,
    pub ca_pem: Option<String>,
    pub interval_secs: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterRecord {
    pub id: ClusterId,
    pub name: String,
    pub endpoints: Vec<String>,
    pub token_id: String,
    pub token_secret_sealed: String,
    pub fingerprints: Vec<String>,
    pub ca_pem: Option<String>,
    pub interval_secs: u32,
    pub created_at: DateTime<Utc>,
    pub last_discovery_at: Option<DateTime<Utc>>,
    /// Why the last pass failed as a whole (None after a successful pass).
    pub last_error: Option<String>,
    /// A single PVE node without a cluster.
    pub standalone: bool,
}

/// One node as a discovery pass saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub name: String,
    /// `online` | `offline` | `unknown`.
    pub status: String,
    pub ip: Option<String>,
    /// Partial failure as data: why this node could not be refreshed.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub cluster_id: ClusterId,
    pub row: NodeRow,
    pub updated_at: DateTime<Utc>,
    /// The node's pending apt updates as PVE lists them (JSON array), when fetched.
    pub apt_updates: Option<serde_json::Value>,
    pub apt_checked_at: Option<DateTime<Utc>>,
    pub apt_error: Option<String>,
}

/// One guest as a discovery pass saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestRow {
    /// `lxc` | `vm`.
    pub kind: String,
    pub vmid: u32,
    pub node: String,
    pub name: String,
    /// `running` | `stopped` | `paused` | `unknown` …
    pub status: String,
    pub template: bool,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GuestRecord {
    pub id: GuestId,
    pub cluster_id: ClusterId,
    pub row: GuestRow,
    pub os: Option<String>,
    /// The enrolled agent's host, once attached.
    pub host_id: Option<HostId>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// One change found by a discovery pass, to be written as an event.
#[derive(Debug, Clone)]
pub struct InventoryEvent {
    /// `guest_added`, `guest_moved`, `guest_removed`, `guest_status_changed`, `node_error` …
    pub event_type: String,
    /// The path ID at the time of the event (`cluster/home/node/pve2/lxc/101`).
    pub subject: String,
    /// Set for guest events: the event is linked to the guest's stable id.
    pub vmid: Option<u32>,
    pub payload: serde_json::Value,
}

/// Everything one successful discovery pass writes.
#[derive(Debug, Clone)]
pub struct DiscoveryWrite {
    pub cluster_id: ClusterId,
    pub at: DateTime<Utc>,
    pub standalone: bool,
    pub nodes: Vec<NodeRow>,
    pub guests: Vec<GuestRow>,
    pub events: Vec<InventoryEvent>,
}

/// The whole stored estate, for building the in-memory tree at start-up.
#[derive(Debug, Clone, Default)]
pub struct InventorySnapshot {
    pub clusters: Vec<ClusterRecord>,
    pub nodes: Vec<NodeRecord>,
    pub guests: Vec<GuestRecord>,
}

#[async_trait]
pub trait InventoryStore {
    /// Errors: `Conflict` when the name is taken. Event `cluster_added`.
    async fn create_cluster(&self, new: NewCluster, actor: &Actor) -> Result<ClusterRecord>;
    async fn list_clusters(&self) -> Result<Vec<ClusterRecord>>;
    async fn cluster_by_name(&self, name: &str) -> Result<Option<ClusterRecord>>;
    /// Removes the cluster with its nodes and guests (hosts stay, detached).
    /// Errors: `NotFound`. Event `cluster_removed`.
    async fn delete_cluster(&self, id: ClusterId, actor: &Actor) -> Result<()>;
    /// In one transaction: replace the cluster's nodes and guests with this observation
    /// (guests matched by `(cluster, vmid)`: a guest on another node keeps its id; guests
    /// not observed are deleted), append the events (guest events linked by vmid to the
    /// guest's id, a removed guest's before its row goes), clear `last_error`, set
    /// `last_discovery_at`, then attach enrolled hosts to guests by name where exactly one
    /// non-template guest and exactly one unattached host share it (event `host_attached`).
    async fn apply_discovery(&self, write: DiscoveryWrite) -> Result<()>;
    /// A pass that failed as a whole: the error is kept, the last known tree stays.
    async fn record_discovery_error(
        &self,
        cluster: ClusterId,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<()>;
    /// Cache the node's apt update list (or the error fetching it). Errors: `NotFound`.
    async fn set_node_updates(
        &self,
        cluster: ClusterId,
        node: &str,
        at: DateTime<Utc>,
        updates: Option<serde_json::Value>,
        error: Option<&str>,
    ) -> Result<()>;
    async fn inventory(&self) -> Result<InventorySnapshot>;
    /// One cluster's part of [`inventory`](InventoryStore::inventory) (its record, nodes and
    /// guests; empty when it does not exist), one consistent read: a pass of one cluster
    /// reads its own rows, not the whole estate's.
    async fn cluster_inventory(&self, cluster: ClusterId) -> Result<InventorySnapshot>;
    /// Bind an enrolled host to a guest explicitly (replaces a name match).
    /// Errors: `NotFound`. Event `host_attached`.
    async fn attach_host(&self, guest: GuestId, host: HostId, actor: &Actor) -> Result<()>;
    /// The guest `host` is attached to, if any (one indexed read): the server's in-memory
    /// tree follows a host that a registration, an agentless scan or a pass attached.
    async fn guest_of_host(&self, host: HostId) -> Result<Option<GuestId>>;
    /// The guest's events and those of its attached host, newest first.
    async fn guest_history(&self, guest: GuestId, limit: u32) -> Result<Vec<Event>>;
}
