//! Image updates in the same commands as the packages: a dry-run's `images` and an
//! install's pinned entries of manager `docker` go to the Docker engine
//! ([`crate::docker`]), the rest to the package managers as before. In an install the
//! packages go first; the images only when the packages succeeded.

use super::{dry_run_one, failed, merge, route, InstallJob};
use crate::docker::DockerConfig;
use canopy_api_types::agent::ScanReport;
use canopy_api_types::commands::{CommandResult, PlannedPackage};
use canopy_api_types::docker::ImageTarget;
use canopy_api_types::updates::PackageManager;
use std::time::Duration;

/// Splits pins into image updates (manager `docker`) and packages.
pub fn split(pinned: &[PlannedPackage]) -> (Vec<PlannedPackage>, Vec<PlannedPackage>) {
    pinned
        .iter()
        .cloned()
        .partition(|p| p.manager == Some(PackageManager::Docker))
}

/// The dry-run of `packages` (each to the manager that reported it) and of `images`.
pub async fn dry_run(
    packages: &[String],
    images: &[ImageTarget],
    managers: &[PackageManager],
    last: Option<&ScanReport>,
    docker: &DockerConfig,
    timeout: Duration,
) -> CommandResult {
    let mut results = Vec::new();
    if !packages.is_empty() || images.is_empty() {
        match route(packages, managers, last) {
            Ok(batches) => {
                for b in &batches {
                    let r = dry_run_one(b.manager, &b.packages, timeout).await;
                    results.push((b.manager, r));
                }
            }
            Err(refused) => return *refused,
        }
    }
    if !images.is_empty() {
        let r = crate::docker::plan::dry_run(images, docker, timeout).await;
        results.push((PackageManager::Docker, r));
    }
    merge(results)
}

/// An install with image updates: the packages (if any) through [`super::install`]'s
/// package path, then — only when they succeeded — the images.
pub async fn install(
    job: &InstallJob<'_>,
    images: &[PlannedPackage],
    pins: &[PlannedPackage],
) -> CommandResult {
    // The requested names may include the references (an older server listed them too).
    let packages: Vec<String> = job
        .packages
        .iter()
        .filter(|p| !images.iter().any(|i| &i.package == *p))
        .cloned()
        .collect();
    let mut results = Vec::new();
    if !packages.is_empty() || !pins.is_empty() {
        let sub = InstallJob {
            packages: &packages,
            pinned: pins,
            ..job.clone()
        };
        let r = super::install::install_packages(&sub).await;
        let label = pins
            .iter()
            .find_map(|p| p.manager)
            .or_else(|| job.managers.first().copied())
            .unwrap_or(PackageManager::Apt);
        let ok = r.success;
        results.push((label, r));
        if !ok {
            let skipped = failed(
                -1,
                String::new(),
                format!("not attempted ({} failed first)", label.as_str()),
            );
            results.push((PackageManager::Docker, skipped));
            return merge(results);
        }
    }
    let r = crate::docker::apply::apply(images, &job.docker, job.hang_timeout).await;
    results.push((PackageManager::Docker, r));
    merge(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(name: &str, m: Option<PackageManager>) -> PlannedPackage {
        PlannedPackage {
            package: name.into(),
            from_version: None,
            to_version: "2".into(),
            requested: true,
            manager: m,
            containers: Vec::new(),
        }
    }

    #[test]
    fn image_pins_are_split_from_package_pins() {
        let pins = [
            pin("curl", Some(PackageManager::Apt)),
            pin("127.0.0.1:5000/app:v1", Some(PackageManager::Docker)),
            pin("bash", None),
        ];
        let (images, packages) = split(&pins);
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].package, "127.0.0.1:5000/app:v1");
        let names: Vec<&str> = packages.iter().map(|p| p.package.as_str()).collect();
        assert_eq!(names, ["curl", "bash"]);
    }

    /// Images only: no package manager runs, and the engine is asked (here: none there).
    #[tokio::test]
    async fn an_images_only_dry_run_asks_no_package_manager() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = DockerConfig::with_socket(dir.path().join("absent.sock"));
        let t = ImageTarget {
            reference: "127.0.0.1:5000/app:v1".into(),
            to_digest: format!("sha256:{}", "a".repeat(64)),
        };
        let r = dry_run(&[], &[t], &[], None, &cfg, Duration::from_secs(5)).await;
        assert!(!r.success);
        assert!(
            r.stderr.contains("no Docker engine") && r.stderr.contains("absent.sock"),
            "{r:?}"
        );
        assert!(!r.stderr.contains("no supported package manager"), "{r:?}");
    }
}
