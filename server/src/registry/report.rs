//! What a check cycle takes and gives back, as plain serde types the server can store as
//! JSON: one [`CheckInput`] per container (or host image), one [`CheckResult`] per input in
//! the same order, and per registry the requests the cycle made, its budget and back-off.

use super::limits::Budget;
use super::platform::Platform;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One local image in use: a container's reference, platform and the local image's
/// RepoDigests (from `api_types::docker::Container`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckInput {
    /// The caller's id for this input (a container's path, `…/lxc/101/docker/web`).
    pub id: String,
    /// The reference as the container was created with (`nginx`, `ghcr.io/org/app:1.2`).
    pub reference: String,
    /// `os/architecture[/variant]` of the local image.
    pub platform: String,
    /// Every RepoDigest of the local image (`repo@sha256:…`), of any repository.
    #[serde(default)]
    pub repo_digests: Vec<String>,
}

/// The verdict for one input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// [`CheckInput::id`].
    pub id: String,
    /// [`CheckInput::reference`], as given.
    pub reference: String,
    /// The normalised reference (`docker.io/library/nginx:latest`); `None` when it does not
    /// parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub status: ImageStatus,
}

/// Up to date, an update, pinned, rate limited, or an error: all of it data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ImageStatus {
    /// A RepoDigest of the local image is what the registry serves for the tag (the index
    /// digest), or the manifest the index lists for the local platform.
    UpToDate {
        remote_digest: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        platform_digest: Option<String>,
    },
    /// The registry serves something else for the tag.
    UpdateAvailable {
        /// The local image's RepoDigests of this repository (digests only).
        local_digests: Vec<String>,
        /// What `docker pull <tag>` would record: the index digest for a multi-platform
        /// image, the manifest digest otherwise.
        remote_digest: String,
        /// The manifest for the local platform, when known (the remote digest itself for a
        /// single-platform image; from the index otherwise).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        platform_digest: Option<String>,
    },
    /// The reference names a digest: it never has an update, and nothing was requested.
    Pinned {
        digest: String,
    },
    /// The registry said `429`, now or in an earlier cycle: nothing is asked of it before
    /// `retry_after`.
    RateLimited {
        registry: String,
        retry_after: DateTime<Utc>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

/// What kind of thing went wrong, for the server to group and the UI to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The reference (or the container's platform) does not parse.
    InvalidReference,
    /// No connection, or no answer in time.
    Unreachable,
    /// `404`: no such tag, or no such repository.
    NotFound,
    /// `401`/`403`: no credentials for this registry, or they were refused.
    Unauthorized,
    /// An answer that is not what the registry API promises (no digest, a digest that does
    /// not match the content, an index that does not parse, an unexpected status).
    BadAnswer,
    /// The local image has no RepoDigest of this repository (built or imported locally):
    /// there is nothing to compare with.
    NoLocalDigest,
    /// The index has no manifest for the local image's platform.
    NoPlatform,
}

/// A failed check, naming the registry, the repository and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct CheckError {
    pub kind: ErrorKind,
    pub message: String,
}

impl CheckError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CheckError {
            kind,
            message: message.into(),
        }
    }
}

impl From<CheckError> for ImageStatus {
    fn from(e: CheckError) -> Self {
        ImageStatus::Error {
            kind: e.kind,
            message: e.message,
        }
    }
}

/// Requests one cycle sent, per registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Manifest `HEAD`s sent to the registry (a `401` answered and retried counts twice).
    pub heads: u64,
    /// Manifest `GET`s sent to the registry (index reads; Docker Hub counts them as pulls).
    pub gets: u64,
    /// Requests to the registry's token realm (often another host).
    pub token_requests: u64,
    /// Requests not sent because the registry was backed off after a `429`.
    pub held_back: u64,
}

impl RequestCounts {
    /// Requests that reached the registry itself.
    pub fn registry_requests(&self) -> u64 {
        self.heads + self.gets
    }
}

/// One registry in a cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryReport {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// Distinct (repository, tag) pairs this cycle had to check in it.
    pub references: usize,
    pub requests: RequestCounts,
    /// The last budget it announced (this cycle or earlier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Nothing is sent to it before this time (after a `429`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_until: Option<DateTime<Utc>>,
}

/// The outcome of one check cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleReport {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// One per input, in the inputs' order.
    pub results: Vec<CheckResult>,
    /// Per registry that any input named, sorted by name.
    pub registries: Vec<RegistryReport>,
    /// The earliest time a rate-limited registry may be asked again, for the caller to
    /// schedule the next cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
}

impl CycleReport {
    /// Manifest requests (HEAD and GET) to all registries.
    pub fn registry_requests(&self) -> u64 {
        self.registries
            .iter()
            .map(|r| r.requests.registry_requests())
            .sum()
    }

    /// Distinct (registry, repository, tag) checked.
    pub fn references(&self) -> usize {
        self.registries.iter().map(|r| r.references).sum()
    }

    /// The result for input `id`.
    pub fn result(&self, id: &str) -> Option<&CheckResult> {
        self.results.iter().find(|r| r.id == id)
    }

    /// The report for `registry`.
    pub fn registry(&self, registry: &str) -> Option<&RegistryReport> {
        self.registries.iter().find(|r| r.registry == registry)
    }
}

/// One manifest an index lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub digest: String,
    /// `None` for entries without a platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_tagged_json() {
        let s = ImageStatus::UpdateAvailable {
            local_digests: vec!["sha256:a".into()],
            remote_digest: "sha256:i".into(),
            platform_digest: None,
        };
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"status": "update_available", "local_digests": ["sha256:a"], "remote_digest": "sha256:i"})
        );
        assert_eq!(serde_json::from_value::<ImageStatus>(json).unwrap(), s);
        let e: ImageStatus = CheckError::new(ErrorKind::NotFound, "gone").into();
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"status": "error", "kind": "not_found", "message": "gone"})
        );
    }
}
