//! Docker inside guests (docs/design.md §2.7): the containers each host's agent reports, the
//! registry checks shared by the whole fleet, per-registry credentials and rate-limit status,
//! and the image updates worked out from them.
//!
//! Containers are written by [`UpdateStore::ingest_report`](crate::UpdateStore) in the same
//! transaction as the report they came with. Image updates are `updates` rows of manager
//! `docker` (`package` = the image reference as the containers were created with,
//! `current_version` = the local digest, `available_version` = the registry's): the server
//! works them out from containers and checks and hands them to
//! [`DockerStore::sync_image_updates`], which applies the same rules as a report's rows
//! (`ingest_plan`) to that manager only, so they are reviewed, approved, planned and
//! reconciled like packages.

use crate::{Actor, IngestOutcome, Result};
use async_trait::async_trait;
use canopy_api_types::docker::{Container, ImageCheck, RegistryStatus};
use canopy_api_types::updates::PackageUpdate;
use canopy_api_types::HostId;
use chrono::{DateTime, Utc};

/// A stored container and the host that reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostContainer {
    pub host_id: HostId,
    pub container: Container,
    /// When the report that carried it was stored.
    pub updated_at: DateTime<Utc>,
}

/// Credentials for one registry, the secret sealed by the server (never stored in clear).
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredential {
    /// `basic` (user name and password) or `token` (a bearer token given as is).
    pub kind: String,
    pub username: Option<String>,
    pub secret_sealed: String,
}

impl std::fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("kind", &self.kind)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One registry as stored: its last status and, if any, its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRecord {
    pub registry: String,
    pub credential: Option<RegistryCredential>,
    pub status: Option<RegistryStatus>,
}

#[async_trait]
pub trait DockerStore {
    /// Every stored container of an active host, by host then name.
    async fn list_containers(&self) -> Result<Vec<HostContainer>>;
    /// The containers `host` last reported, by name.
    async fn host_containers(&self, host: HostId) -> Result<Vec<Container>>;
    /// `(host, image reference)` of every open image update (manager `docker`, not installed
    /// or reconciled), of one host or of all.
    async fn open_image_updates(&self, host: Option<HostId>) -> Result<Vec<(HostId, String)>>;
    /// Replace the host's open image updates (manager `docker`) by `rows`, with the rules
    /// of a report's rows: new ones inserted `pending`, changed digests reset an approval,
    /// rows no longer listed reconciled, rows an in-flight command carries left alone. The
    /// host's report hash and reboot flag are not touched. Event `image_updates.checked`.
    /// Rows of another manager are `Validation` errors.
    async fn sync_image_updates(
        &self,
        host: HostId,
        rows: Vec<PackageUpdate>,
        actor: &Actor,
    ) -> Result<IngestOutcome>;
    /// Store the checks of one cycle (each replaces the one of its key) and the registries'
    /// status, in one transaction. Observations: no event.
    async fn save_image_checks(
        &self,
        checks: &[ImageCheck],
        registries: &[RegistryStatus],
    ) -> Result<()>;
    /// Every stored check.
    async fn list_image_checks(&self) -> Result<Vec<ImageCheck>>;
    /// Every registry with a status or credentials, by name.
    async fn list_registries(&self) -> Result<Vec<RegistryRecord>>;
    /// Store (`Some`) or remove (`None`) the credentials of `registry`. Event
    /// `registry.credentials_set` / `registry.credentials_removed` (kind and user name, never
    /// the secret); removing credentials that do not exist is `NotFound`.
    async fn set_registry_credential(
        &self,
        registry: &str,
        credential: Option<RegistryCredential>,
        actor: &Actor,
    ) -> Result<()>;
}

/// The event of [`DockerStore::set_registry_credential`]: type and payload (never the secret).
pub(crate) fn credential_event(
    registry: &str,
    credential: Option<&RegistryCredential>,
) -> (&'static str, serde_json::Value) {
    match credential {
        Some(c) => (
            crate::events::REGISTRY_CREDENTIALS_SET,
            serde_json::json!({"registry": registry, "kind": c.kind, "username": c.username}),
        ),
        None => (
            crate::events::REGISTRY_CREDENTIALS_REMOVED,
            serde_json::json!({"registry": registry}),
        ),
    }
}

/// Refuses a credential kind the table does not know, naming it.
pub(crate) fn check_credential(c: &RegistryCredential) -> Result<()> {
    if c.kind == "basic" || c.kind == "token" {
        return Ok(());
    }
    Err(crate::StoreError::Conflict(format!(
        "registry credential kind {:?}: expected basic or token",
        c.kind
    )))
}
