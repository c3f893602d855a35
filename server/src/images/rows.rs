//! From containers and registry checks to image updates, without any request: the checks
//! of one cycle kept per (registry, repository, tag, platform), and per host the `docker`
//! update rows its containers call for (docs/design.md §2.7). Pure functions, tested here.

use crate::registry::reference::ImageRef;
use crate::registry::report::{CheckResult, ImageStatus};
use canopy_api_types::docker::{Container, ImageCheck};
use canopy_api_types::updates::{PackageManager, PackageUpdate, Severity};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};

/// What a check is kept under: (registry, repository, tag, platform).
pub type CheckKey = (String, String, String, String);

/// The key of a container's image, `None` for a reference that does not parse or is pinned
/// by digest (nothing to check).
pub fn key_of(reference: &str, platform: &str) -> Option<CheckKey> {
    let r = ImageRef::parse(reference).ok()?;
    if r.digest.is_some() {
        return None;
    }
    Some((r.registry, r.repository, r.tag?, platform.to_string()))
}

/// The digests of `repo_digests` (`repo@sha256:…`) that belong to `reference`'s repository.
pub fn local_digests(reference: &str, repo_digests: &[String]) -> Vec<String> {
    let Ok(r) = ImageRef::parse(reference) else {
        return Vec::new();
    };
    repo_digests
        .iter()
        .filter_map(|rd| {
            let (repo, digest) = rd.split_once('@')?;
            let other = ImageRef::parse(repo).ok()?;
            (other.registry == r.registry && other.repository == r.repository)
                .then(|| digest.to_string())
        })
        .collect()
}

/// One check per key from a cycle's results: the first result of each key decides (every
/// input of a key got the same answer from the registry).
pub fn checks_of(
    containers: &[&Container],
    results: &[CheckResult],
    at: DateTime<Utc>,
) -> Vec<ImageCheck> {
    let mut out: BTreeMap<CheckKey, ImageCheck> = BTreeMap::new();
    for (c, result) in containers.iter().zip(results) {
        let Some(key) = key_of(&c.image, &c.platform) else {
            continue;
        };
        let (remote, platform_digest, error, retry_after) = match &result.status {
            ImageStatus::UpToDate {
                remote_digest,
                platform_digest,
            }
            | ImageStatus::UpdateAvailable {
                remote_digest,
                platform_digest,
                ..
            } => (Some(remote_digest.clone()), platform_digest.clone(), None, None),
            ImageStatus::Pinned { .. } => continue,
            ImageStatus::RateLimited {
                registry,
                retry_after,
            } => (
                None,
                None,
                Some(format!(
                    "{registry} answered 429 Too Many Requests: not asked again before {retry_after}"
                )),
                Some(*retry_after),
            ),
            // The local image has nothing to compare with: not a verdict on the tag.
            ImageStatus::Error { message, .. } => (None, None, Some(message.clone()), None),
        };
        let check = out.entry(key.clone()).or_insert_with(|| ImageCheck {
            registry: key.0.clone(),
            repository: key.1.clone(),
            tag: key.2.clone(),
            platform: key.3.clone(),
            remote_digest: None,
            platform_digest: None,
            error: None,
            retry_after: None,
            checked_at: at,
        });
        // A key with one input that could compare keeps its digests.
        if check.remote_digest.is_none() {
            check.remote_digest = remote;
            check.error = error;
            check.retry_after = retry_after;
        }
        if check.platform_digest.is_none() {
            check.platform_digest = platform_digest;
        }
    }
    out.into_values().collect()
}

/// Whether `c` runs what `check` says the registry serves (its index digest, or the
/// manifest of its platform); `None` when the check has no answer.
pub fn up_to_date(c: &Container, check: &ImageCheck) -> Option<bool> {
    let remote = check.remote_digest.as_deref()?;
    let local = local_digests(&c.image, &c.repo_digests);
    Some(
        local
            .iter()
            .any(|d| d == remote || check.platform_digest.as_deref() == Some(d.as_str())),
    )
}

/// A host's image updates: one row per reference some container of it runs behind the
/// registry (`current_version` its local digest, `available_version` the registry's).
pub fn host_rows(
    containers: &[Container],
    checks: &HashMap<CheckKey, ImageCheck>,
) -> Vec<PackageUpdate> {
    let mut rows: BTreeMap<String, PackageUpdate> = BTreeMap::new();
    for c in containers {
        let Some(key) = key_of(&c.image, &c.platform) else {
            continue;
        };
        let Some(check) = checks.get(&key) else {
            continue;
        };
        if up_to_date(c, check) != Some(false) {
            continue;
        }
        let current = local_digests(&c.image, &c.repo_digests)
            .into_iter()
            .next()
            .unwrap_or_else(|| c.image_id.clone());
        rows.entry(c.image.clone())
            .or_insert_with(|| PackageUpdate {
                manager: PackageManager::Docker,
                package: c.image.clone(),
                current_version: current,
                available_version: check.remote_digest.clone().unwrap_or_default(),
                arch: None,
                source: Some(check.registry.clone()),
                severity: Severity::Normal,
                held: false,
            });
    }
    rows.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, image: &str, digests: &[&str]) -> Container {
        Container {
            name: name.into(),
            id: "0".repeat(64),
            image: image.into(),
            image_id: "sha256:local".into(),
            repo_digests: digests.iter().map(|d| d.to_string()).collect(),
            platform: "linux/amd64".into(),
            state: "running".into(),
            health: None,
            restart_policy: None,
            compose: None,
        }
    }

    fn check(tag: &str, remote: &str, platform: Option<&str>) -> (CheckKey, ImageCheck) {
        let key = key_of(&format!("nginx:{tag}"), "linux/amd64").unwrap();
        let c = ImageCheck {
            registry: key.0.clone(),
            repository: key.1.clone(),
            tag: key.2.clone(),
            platform: key.3.clone(),
            remote_digest: Some(remote.into()),
            platform_digest: platform.map(Into::into),
            error: None,
            retry_after: None,
            checked_at: Utc::now(),
        };
        (key, c)
    }

    #[test]
    fn docker_hub_names_share_a_key_and_their_digests() {
        assert_eq!(
            key_of("nginx", "linux/amd64"),
            key_of("docker.io/library/nginx:latest", "linux/amd64")
        );
        assert_eq!(key_of("nginx@sha256:aa", "linux/amd64"), None, "pinned");
        assert_eq!(
            local_digests(
                "nginx:1",
                &["nginx@sha256:a".into(), "ghcr.io/x/nginx@sha256:b".into()]
            ),
            ["sha256:a"]
        );
    }

    #[test]
    fn an_index_or_platform_digest_match_is_up_to_date_anything_else_a_row() {
        let checks: HashMap<_, _> = [
            check("1", "sha256:index", Some("sha256:amd64")),
            check("2", "sha256:new", None),
        ]
        .into_iter()
        .collect();
        let by_index = container("a", "nginx:1", &["nginx@sha256:index"]);
        let by_platform = container("b", "nginx:1", &["nginx@sha256:amd64"]);
        let behind = container("c", "nginx:2", &["nginx@sha256:old"]);
        let also_behind = container("d", "nginx:2", &["nginx@sha256:old"]);
        let unchecked = container("e", "nginx:3", &["nginx@sha256:x"]);
        let rows = host_rows(
            &[by_index, by_platform, behind, also_behind, unchecked],
            &checks,
        );
        assert_eq!(rows.len(), 1, "one row per reference: {rows:?}");
        assert_eq!(
            (
                rows[0].package.as_str(),
                rows[0].current_version.as_str(),
                rows[0].available_version.as_str()
            ),
            ("nginx:2", "sha256:old", "sha256:new")
        );
    }
}
