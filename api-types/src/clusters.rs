//! Proxmox clusters, the inventory tree and selector previews, as the REST API shows them.
//! The cluster's API token secret never appears in any of these types.

use crate::ClusterId;
use canopy_inventory::TreeNode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A cluster (or standalone node) Canopy discovers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Cluster {
    pub id: ClusterId,
    pub name: String,
    /// Path ID of its vertex: `cluster/NAME`.
    pub path: String,
    pub endpoints: Vec<String>,
    /// `USER@REALM!TOKENID`; the secret is never returned.
    pub token_id: String,
    pub fingerprints: Vec<String>,
    /// Trusts a CA instead of (or besides) fingerprints.
    pub uses_ca: bool,
    pub interval_secs: u32,
    pub standalone: bool,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_discovery_at: Option<DateTime<Utc>>,
    /// Why the last pass failed as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `POST /api/v1/clusters`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateCluster {
    pub name: String,
    pub endpoints: Vec<String>,
    /// `USER@REALM!TOKENID=SECRET`.
    pub token: String,
    #[serde(default)]
    pub fingerprints: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<u32>,
}

/// `POST /api/v1/clusters/probe`: what certificate does this address present? With a token
/// and the fingerprint the user confirmed, also: does this token sign in over a connection
/// pinned to it? (The token is never sent before its certificate was confirmed.)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProbeRequest {
    pub url: String,
    /// `USER@REALM!ID=SECRET`; needs `fingerprint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The fingerprint the user confirmed, to pin the token check to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProbeResponse {
    pub url: String,
    /// SHA-256 of the certificate, `AA:BB:…` as the PVE GUI shows it.
    pub fingerprint: String,
    /// With a token: the nodes it can see (it signed in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
}

/// What one discovery pass found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DiscoveryReport {
    pub cluster: String,
    pub at: Option<DateTime<Utc>>,
    /// Requests sent to PVE by the pass (fail-overs included).
    pub api_calls: u64,
    pub nodes: usize,
    pub guests: usize,
    /// One line per change: `guest_added cluster/home/node/pve1/lxc/101`, …
    pub changes: Vec<String>,
    /// Nodes that could not be refreshed, with the reason.
    pub node_errors: Vec<NodeError>,
    /// Set when the whole pass failed (the last known tree stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct NodeError {
    pub node: String,
    pub error: String,
}

/// `GET /api/v1/tree?selector=…`: the matched subtrees (whole forest without a selector).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TreeResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    pub trees: Vec<TreeNode>,
}

/// A `reload` event of `GET /api/v1/tree/events`: the vertices whose children were added,
/// removed or moved (reload their children where they are shown), or everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TreeReload {
    /// The whole tree was rebuilt (a cluster added or removed), or the follower fell behind.
    #[serde(default)]
    pub all: bool,
    /// Path ids of the vertices whose children changed.
    #[serde(default)]
    pub parents: Vec<String>,
}

/// `GET /api/v1/tree/preview?selector=…`: what an action on the selector would touch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SelectorPreview {
    pub selector: String,
    /// Vertices the selector matches.
    pub matched: usize,
    /// Hosts an action would touch (templates and the like left out).
    pub targets: Vec<String>,
    pub skipped: Vec<SkippedTarget>,
    /// "resolves to 14 hosts (1 template skipped)".
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SkippedTarget {
    pub id: String,
    pub reason: String,
}

/// One PVE snapshot of a guest (`GET /tree/snapshots?id=GUEST`), newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GuestSnapshot {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Taken by a Canopy update operation (`canopy-<operation>`).
    pub canopy: bool,
}

/// A PVE node's own pending package updates (read-only, cached from the node's apt).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct NodeUpdates {
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub updates: Vec<NodeUpdate>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct NodeUpdate {
    pub package: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// Answer to `DELETE /api/v1/clusters/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ClusterRemoved {
    /// The cluster's name.
    pub removed: String,
}
