//! Docker inside guests: the containers an agent finds (through the guest's Docker engine),
//! and the image updates the server works out from registry checks (docs/design.md §2.7).

use serde::{Deserialize, Serialize};

/// One container as the guest's Docker engine describes it. Sent in
/// [`ScanReport::containers`](crate::agent::ScanReport); the tree shows it as
/// `…/{lxc|vm}/{vmid}/docker/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Container {
    /// The container's name, without Docker's leading `/`.
    pub name: String,
    /// The engine's container id (64 hex).
    pub id: String,
    /// The image reference as written when the container was created (`nginx`,
    /// `ghcr.io/org/app:1.2`, `repo@sha256:…`).
    pub image: String,
    /// The local image id (`sha256:…`, the config digest).
    pub image_id: String,
    /// Every `RepoDigests` entry of the local image (`repo@sha256:…`): what the registry
    /// served for this image when it was pulled (an index digest, a platform manifest's, or
    /// both). Empty for an image built or imported locally.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repo_digests: Vec<String>,
    /// The image's platform, `os/architecture[/variant]` (`linux/amd64`, `linux/arm/v7`).
    pub platform: String,
    /// `running`, `exited`, `restarting`, `paused`, `created`, `dead`.
    pub state: String,
    /// The healthcheck's verdict (`healthy`, `unhealthy`, `starting`); `None` without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// `no`, `always`, `unless-stopped`, `on-failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    /// Set when Docker Compose created the container (its `com.docker.compose.*` labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose: Option<ComposeService>,
}

/// The compose project and service a container belongs to, from its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ComposeService {
    /// `com.docker.compose.project`.
    pub project: String,
    /// `com.docker.compose.service`.
    pub service: String,
    /// `com.docker.compose.project.working_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `com.docker.compose.project.config_files`, split on `,`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_files: Vec<String>,
}

/// Label names Docker Compose (v1 and v2) puts on the containers it creates.
pub mod compose_labels {
    pub const PROJECT: &str = "com.docker.compose.project";
    pub const SERVICE: &str = "com.docker.compose.service";
    pub const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
    pub const CONFIG_FILES: &str = "com.docker.compose.project.config_files";
}

/// An image update the server asks an agent to apply, inside a dry-run or an install: every
/// container of this guest created from `reference` moves to the image the registry serves
/// as `to_digest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ImageTarget {
    /// The reference as the containers were created with (`Container::image`).
    pub reference: String,
    /// The digest the registry serves for the reference now (an index digest for a
    /// multi-platform image): what `docker pull` must yield, checked after the pull.
    pub to_digest: String,
}

/// What the last registry check of one (registry, repository, tag, platform) found; shared
/// by every container of the fleet on that reference and platform. Whether a container is
/// up to date is decided per container: one of its RepoDigests is `remote_digest` or
/// `platform_digest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ImageCheck {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// `library/nginx`.
    pub repository: String,
    pub tag: String,
    /// `linux/amd64`.
    pub platform: String,
    /// The digest the registry serves for the tag (an index digest for a multi-platform
    /// image): what `docker pull` records in RepoDigests. `None` when the check failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_digest: Option<String>,
    /// For a multi-platform image: the platform's own manifest digest, when it had to be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_digest: Option<String>,
    /// Why the check failed (unreachable, unknown tag, refused credentials, rate limited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Rate limited: the registry asked not to be asked again before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<chrono::DateTime<chrono::Utc>>,
    pub checked_at: chrono::DateTime<chrono::Utc>,
}

/// What a registry last said about its rate limit (Docker Hub's `ratelimit-limit` and
/// `ratelimit-remaining`, `N;w=SECONDS`) and whether it asked us to wait.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RegistryStatus {
    pub registry: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// The window `remaining` counts over, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
    /// After a `429`: no request to this registry before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<chrono::DateTime<chrono::Utc>>,
    /// Manifest requests of the last check cycle: `HEAD`s (not counted as pulls by Docker
    /// Hub) and `GET`s (counted).
    #[serde(default)]
    pub heads: u64,
    #[serde(default)]
    pub gets: u64,
    /// Credentials are stored for this registry (never shown).
    #[serde(default)]
    pub authenticated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A container as `GET /api/v1/containers` lists it: where it is, what it runs, and what the
/// registry checks say about its image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ContainerView {
    /// Its path in the tree (`…/lxc/101/docker/web`); `None` while its host is attached to
    /// no guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub host_id: crate::HostId,
    pub hostname: String,
    pub container: Container,
    /// The open image update of its reference on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<ImageUpdateView>,
    /// The last check of its reference and platform, when one ran (its error, if it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<ImageCheck>,
}

/// An open image update: the update row's id, status and digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ImageUpdateView {
    pub update_id: crate::UpdateId,
    pub status: crate::updates::UpdateStatus,
    pub from_digest: String,
    pub to_digest: String,
}

/// `PUT /api/v1/registries/{registry}/credentials`: how Canopy signs in to a registry. The
/// secret is sealed at once and never shown again.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RegistryLogin {
    /// `basic` (user name and password or access token, also for token realms) or `token`
    /// (a bearer token sent as is).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub secret: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("kind", &self.kind)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What one check cycle did (`POST /api/v1/images/check`, and each scheduled cycle's log).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CheckSummary {
    /// Containers looked at.
    pub containers: u64,
    /// Distinct (registry, repository, tag, platform) checked.
    pub references: u64,
    /// Manifest requests sent: `HEAD`s and `GET`s (only `GET`s count as pulls on Docker Hub).
    pub heads: u64,
    pub gets: u64,
    /// Containers whose image has an update now.
    pub updates: u64,
    /// Checks that failed or were held back by a rate limit.
    pub errors: u64,
    pub registries: Vec<RegistryStatus>,
}
