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
