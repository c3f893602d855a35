//! One check cycle for the whole fleet: every input's reference is parsed, inputs are grouped
//! by (registry, repository, tag), and each group costs one manifest `HEAD`, however many
//! containers on however many guests share it.
//!
//! Comparing: the `HEAD`'s digest is what `docker pull <tag>` would record — the index digest
//! for a multi-platform image. A local image pulled by tag has that digest among its
//! RepoDigests, so a match is up to date and nothing more is asked. Only when no RepoDigest
//! matches and the answer is an index is the index read (a `GET`, which Docker Hub counts as
//! a pull; cached per index digest across cycles, since a digest's content never changes) to
//! find the manifest of the local platform: a RepoDigest equal to it is also up to date.
//! Only RepoDigests of the reference's own repository count.

use super::auth::Credentials;
use super::client::{ClientOptions, Failure, ManifestHead, RegistryClient, RegistryLimits, Tally};
use super::manifest::MediaType;
use super::platform::Platform;
use super::reference::ImageRef;
use super::report::*;
use chrono::Utc;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// How many checks run at once, in all and per registry.
#[derive(Debug, Clone)]
pub struct CheckerOptions {
    pub client: ClientOptions,
    pub concurrency: usize,
    pub per_registry_concurrency: usize,
}

impl Default for CheckerOptions {
    fn default() -> Self {
        CheckerOptions {
            client: ClientOptions::default(),
            concurrency: 16,
            per_registry_concurrency: 4,
        }
    }
}

/// Index entries cached this many cycles after their digest was last answered.
const INDEX_CACHE_CYCLES: u64 = 16;

/// What a checker keeps between cycles, for the server to store and restore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckerState {
    /// Back-off and last budget per registry.
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryLimits>,
    /// Index digest → the manifests it lists (`None`: the digest is a single manifest).
    #[serde(default)]
    pub indexes: BTreeMap<String, Option<Vec<IndexEntry>>>,
}

type Cached = Option<Arc<Vec<IndexEntry>>>;

/// The registry checks of one server: a client (tokens, back-offs, budgets) and the index
/// cache, shared by every cycle.
pub struct Checker {
    client: RegistryClient,
    options: CheckerOptions,
    /// Index digest → (entries, the cycle that last needed it).
    indexes: Mutex<HashMap<String, (Cached, u64)>>,
    cycles: Mutex<u64>,
}

/// The inputs of one (registry, repository, tag).
struct Group {
    reference: ImageRef,
    /// (input index, platform, local digests of the repository).
    members: Vec<(usize, String, Vec<String>)>,
}

impl Checker {
    pub fn new(options: CheckerOptions, credentials: Credentials) -> Result<Self, reqwest::Error> {
        Ok(Checker {
            client: RegistryClient::new(options.client.clone(), credentials)?,
            options,
            indexes: Mutex::default(),
            cycles: Mutex::new(0),
        })
    }

    /// Replace the per-registry credentials.
    pub fn set_credentials(&self, credentials: Credentials) {
        self.client.set_credentials(credentials);
    }

    /// Back-offs, budgets and cached indexes.
    pub fn state(&self) -> CheckerState {
        let indexes = self.indexes.lock().unwrap();
        CheckerState {
            registries: self.client.limits().into_iter().collect(),
            indexes: indexes
                .iter()
                .map(|(d, (e, _))| (d.clone(), e.as_ref().map(|v| v.to_vec())))
                .collect(),
        }
    }

    /// Take back what [`Checker::state`] gave.
    pub fn restore(&self, state: CheckerState) {
        self.client
            .restore_limits(state.registries.into_iter().collect());
        let cycle = *self.cycles.lock().unwrap();
        *self.indexes.lock().unwrap() = state
            .indexes
            .into_iter()
            .map(|(d, e)| (d, (e.map(Arc::new), cycle)))
            .collect();
    }

    /// One check cycle over `inputs`; one result per input, in order.
    pub async fn check(&self, inputs: &[CheckInput]) -> CycleReport {
        let started_at = Utc::now();
        let cycle = {
            let mut c = self.cycles.lock().unwrap();
            *c += 1;
            *c
        };
        let mut results: Vec<Option<ImageStatus>> = vec![None; inputs.len()];
        let mut images: Vec<Option<String>> = vec![None; inputs.len()];
        let mut groups: BTreeMap<(String, String, String), Group> = BTreeMap::new();
        let mut registries: BTreeMap<String, usize> = BTreeMap::new();
        for (i, input) in inputs.iter().enumerate() {
            let r = match ImageRef::parse(&input.reference) {
                Ok(r) => r,
                Err(e) => {
                    results[i] =
                        Some(CheckError::new(ErrorKind::InvalidReference, e.to_string()).into());
                    continue;
                }
            };
            images[i] = Some(r.to_string());
            registries.entry(r.registry.clone()).or_default();
            if let Some(d) = &r.digest {
                results[i] = Some(ImageStatus::Pinned { digest: d.clone() });
                continue;
            }
            let local = local_digests(&r, &input.repo_digests);
            let key = (
                r.registry.clone(),
                r.repository.clone(),
                r.tag.clone().unwrap_or_default(),
            );
            groups
                .entry(key)
                .or_insert_with(|| Group {
                    reference: r,
                    members: Vec::new(),
                })
                .members
                .push((i, input.platform.clone(), local));
        }
        for g in groups.values() {
            *registries.entry(g.reference.registry.clone()).or_default() += 1;
        }

        let gates: HashMap<String, Arc<Semaphore>> = registries
            .keys()
            .map(|r| {
                (
                    r.clone(),
                    Arc::new(Semaphore::new(self.options.per_registry_concurrency.max(1))),
                )
            })
            .collect();
        let tally = Tally::default();
        let checked: Vec<Vec<(usize, ImageStatus)>> = futures::stream::iter(groups.into_values())
            .map(|g| {
                let gate = gates[&g.reference.registry].clone();
                let tally = &tally;
                async move {
                    let _slot = gate
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed");
                    self.check_group(g, cycle, tally).await
                }
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        for (i, status) in checked.into_iter().flatten() {
            results[i] = Some(status);
        }
        self.prune_indexes(cycle);

        let finished_at = Utc::now();
        let registries: Vec<RegistryReport> = registries
            .into_iter()
            .map(|(registry, references)| {
                let limits = self.client.registry_limits(&registry);
                RegistryReport {
                    requests: tally.get(&registry),
                    references,
                    budget: limits.budget,
                    backoff_until: limits.backoff_until.filter(|u| *u > finished_at),
                    registry,
                }
            })
            .collect();
        let retry_at = registries.iter().filter_map(|r| r.backoff_until).min();
        let results = inputs
            .iter()
            .zip(results)
            .zip(images)
            .map(|((input, status), image)| CheckResult {
                id: input.id.clone(),
                reference: input.reference.clone(),
                image,
                status: status.expect("every input gets a status"),
            })
            .collect();
        CycleReport {
            started_at,
            finished_at,
            results,
            registries,
            retry_at,
        }
    }

    /// One `HEAD` for the group, a `GET` of the index only for members that need it.
    async fn check_group(&self, g: Group, cycle: u64, tally: &Tally) -> Vec<(usize, ImageStatus)> {
        let r = &g.reference;
        let name = format!("{}/{}", r.registry, r.repository);
        let no_local = || -> ImageStatus {
            CheckError::new(
                ErrorKind::NoLocalDigest,
                format!(
                    "{r}: the local image has no RepoDigest of {name} (built or imported locally), \
                     so there is nothing to compare with the registry"
                ),
            )
            .into()
        };
        // Nothing to compare with for any member: no request at all.
        if g.members.iter().all(|(_, _, local)| local.is_empty()) {
            return g.members.iter().map(|(i, _, _)| (*i, no_local())).collect();
        }
        let head = match self.client.head_manifest(r, tally).await {
            Ok(h) => h,
            Err(f) => {
                let status = failure_status(&r.registry, f);
                return g
                    .members
                    .iter()
                    .map(|(i, _, _)| (*i, status.clone()))
                    .collect();
            }
        };
        let ManifestHead {
            digest: remote,
            media_type,
        } = head;
        if let Some(e) = self.indexes.lock().unwrap().get_mut(&remote) {
            e.1 = cycle;
        }
        let mut index: Option<Result<Cached, ImageStatus>> = None;
        let mut out = Vec::with_capacity(g.members.len());
        for (i, platform, local) in &g.members {
            let status = if local.contains(&remote) {
                ImageStatus::UpToDate {
                    remote_digest: remote.clone(),
                    platform_digest: None,
                }
            } else if local.is_empty() {
                no_local()
            } else if media_type == MediaType::Manifest {
                update(local, &remote, Some(remote.clone()))
            } else {
                if index.is_none() {
                    index = Some(self.index(r, &remote, cycle, tally).await);
                }
                match index.as_ref().expect("set above") {
                    Err(status) => status.clone(),
                    Ok(None) => update(local, &remote, Some(remote.clone())),
                    Ok(Some(entries)) => {
                        let earlier = self.cached_indexes(local, cycle);
                        by_platform(r, &remote, entries, platform, local, &earlier)
                    }
                }
            };
            out.push((*i, status));
        }
        out
    }

    /// The entries of index `digest`: cached, or one `GET`.
    async fn index(
        &self,
        r: &ImageRef,
        digest: &str,
        cycle: u64,
        tally: &Tally,
    ) -> Result<Cached, ImageStatus> {
        if let Some((e, _)) = self.indexes.lock().unwrap().get(digest) {
            return Ok(e.clone());
        }
        match self.client.get_index(r, digest, tally).await {
            Ok(entries) => {
                let entries = entries.map(Arc::new);
                self.indexes
                    .lock()
                    .unwrap()
                    .insert(digest.to_string(), (entries.clone(), cycle));
                Ok(entries)
            }
            Err(f) => Err(failure_status(&r.registry, f)),
        }
    }

    /// The cached indexes among `digests` (earlier index digests a local image was pulled
    /// as), kept in the cache while an image still names them.
    fn cached_indexes(&self, digests: &[String], cycle: u64) -> Vec<Arc<Vec<IndexEntry>>> {
        let mut indexes = self.indexes.lock().unwrap();
        digests
            .iter()
            .filter_map(|d| {
                let (entries, seen) = indexes.get_mut(d)?;
                *seen = cycle;
                entries.clone()
            })
            .collect()
    }

    fn prune_indexes(&self, cycle: u64) {
        self.indexes
            .lock()
            .unwrap()
            .retain(|_, (_, seen)| cycle.saturating_sub(*seen) < INDEX_CACHE_CYCLES);
    }
}

/// The digests of `repo_digests` (`name@digest`) whose repository is `r`'s.
fn local_digests(r: &ImageRef, repo_digests: &[String]) -> Vec<String> {
    let mut out: Vec<String> = repo_digests
        .iter()
        .filter_map(|rd| ImageRef::parse(rd).ok())
        .filter(|d| d.same_repository(r))
        .filter_map(|d| d.digest)
        .collect();
    out.sort();
    out.dedup();
    out
}

fn update(local: &[String], remote: &str, platform_digest: Option<String>) -> ImageStatus {
    ImageStatus::UpdateAvailable {
        local_digests: local.to_vec(),
        remote_digest: remote.to_string(),
        platform_digest,
    }
}

/// The manifest an index lists for `platform`.
fn entry_for<'a>(entries: &'a [IndexEntry], platform: &Platform) -> Option<&'a IndexEntry> {
    entries
        .iter()
        .find(|e| e.platform.as_ref() == Some(platform))
}

/// Compare the local digests with the index's manifest for `platform`: up to date when a
/// RepoDigest is that manifest, or is an earlier index (`earlier`, cached) that lists the
/// same manifest for this platform (the index changed for other platforms only).
fn by_platform(
    r: &ImageRef,
    remote: &str,
    entries: &[IndexEntry],
    platform: &str,
    local: &[String],
    earlier: &[Arc<Vec<IndexEntry>>],
) -> ImageStatus {
    let wanted = match Platform::parse(platform) {
        Ok(p) => p,
        Err(e) => return CheckError::new(ErrorKind::InvalidReference, format!("{r}: {e}")).into(),
    };
    let same_as_earlier = |digest: &str| {
        earlier
            .iter()
            .any(|idx| entry_for(idx, &wanted).is_some_and(|e| e.digest == digest))
    };
    match entry_for(entries, &wanted) {
        Some(e) if local.contains(&e.digest) || same_as_earlier(&e.digest) => {
            ImageStatus::UpToDate {
                remote_digest: remote.to_string(),
                platform_digest: Some(e.digest.clone()),
            }
        }
        Some(e) => update(local, remote, Some(e.digest.clone())),
        None => {
            let listed: Vec<String> = entries
                .iter()
                .filter_map(|e| e.platform.as_ref())
                .filter(|p| p.os != "unknown")
                .map(ToString::to_string)
                .collect();
            CheckError::new(
                ErrorKind::NoPlatform,
                format!(
                    "{r}: the index {remote} has no manifest for {wanted} (it lists {})",
                    listed.join(", ")
                ),
            )
            .into()
        }
    }
}

fn failure_status(registry: &str, f: Failure) -> ImageStatus {
    match f {
        Failure::RateLimited(until) => ImageStatus::RateLimited {
            registry: registry.to_string(),
            retry_after: until,
        },
        Failure::Error(e) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const I: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn only_repo_digests_of_the_same_repository_count() {
        let r = ImageRef::parse("nginx:1.27").unwrap();
        let rds = vec![
            format!("nginx@{A}"),
            format!("docker.io/library/nginx@{A}"),
            format!("myorg/nginx@{B}"),
            format!("ghcr.io/library/nginx@{B}"),
            "garbage".to_string(),
        ];
        assert_eq!(local_digests(&r, &rds), vec![A.to_string()]);
    }

    #[test]
    fn platform_manifests_compare_by_normalised_platform() {
        let r = ImageRef::parse("127.0.0.1:5000/canopy/web:stable").unwrap();
        let entries = vec![
            IndexEntry {
                digest: A.into(),
                platform: Some(Platform::new("linux", "amd64", None)),
            },
            IndexEntry {
                digest: B.into(),
                platform: Some(Platform::new("linux", "arm64", Some("v8"))),
            },
            IndexEntry {
                digest: I.into(),
                platform: Some(Platform::new("unknown", "unknown", None)),
            },
        ];
        let local = vec![B.to_string()];
        assert_eq!(
            by_platform(&r, I, &entries, "linux/aarch64", &local, &[]),
            ImageStatus::UpToDate {
                remote_digest: I.into(),
                platform_digest: Some(B.into())
            }
        );
        assert_eq!(
            by_platform(&r, I, &entries, "linux/amd64", &local, &[]),
            ImageStatus::UpdateAvailable {
                local_digests: local.clone(),
                remote_digest: I.into(),
                platform_digest: Some(A.into())
            }
        );
        let ImageStatus::Error { kind, message } =
            by_platform(&r, I, &entries, "linux/s390x", &local, &[])
        else {
            panic!()
        };
        assert_eq!(kind, ErrorKind::NoPlatform);
        assert!(
            message.contains("linux/s390x") && message.contains("linux/amd64, linux/arm64"),
            "{message}"
        );
        assert!(
            message.contains("127.0.0.1:5000/canopy/web:stable"),
            "{message}"
        );
        let ImageStatus::Error { kind, .. } = by_platform(&r, I, &entries, "amd64", &local, &[])
        else {
            panic!()
        };
        assert_eq!(kind, ErrorKind::InvalidReference);
    }

    #[test]
    fn an_earlier_index_with_the_same_platform_manifest_is_up_to_date() {
        let r = ImageRef::parse("127.0.0.1:5000/canopy/web:stable").unwrap();
        let amd = |d: &str| IndexEntry {
            digest: d.into(),
            platform: Some(Platform::new("linux", "amd64", None)),
        };
        let arm = |d: &str| IndexEntry {
            digest: d.into(),
            platform: Some(Platform::new("linux", "arm64", None)),
        };
        // The new index I changed arm64 only; the local image was pulled as the earlier index.
        let earlier = vec![Arc::new(vec![amd(A), arm(A)])];
        let new = vec![amd(A), arm(B)];
        let local = vec![format!("sha256:{}", "0".repeat(64))];
        assert_eq!(
            by_platform(&r, I, &new, "linux/amd64", &local, &earlier),
            ImageStatus::UpToDate {
                remote_digest: I.into(),
                platform_digest: Some(A.into())
            }
        );
        assert!(matches!(
            by_platform(&r, I, &new, "linux/arm64", &local, &earlier),
            ImageStatus::UpdateAvailable { platform_digest: Some(d), .. } if d == B
        ));
    }
}
