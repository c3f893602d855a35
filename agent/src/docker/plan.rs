//! The dry-run of image updates: per [`ImageTarget`], the containers created from exactly
//! that reference and what they would move from and to — from the engine's local state
//! only. A dry-run never asks a registry anything (no pull, no manifest request: the server
//! checked the registry, the install pulls).

use super::reference::{check_digest, digest_for, Reference};
use super::{inventory, DockerConfig, Engine};
use crate::process::{truncate_tail, MAX_OUTPUT};
use canopy_api_types::commands::{CommandResult, PlannedPackage};
use canopy_api_types::docker::{Container, ImageTarget};
use canopy_api_types::updates::PackageManager;
use std::time::Duration;

/// How a container is named in a plan: `name`, or `name (compose PROJECT/SERVICE)`.
pub fn label(c: &Container) -> String {
    match &c.compose {
        Some(s) => format!("{} (compose {}/{})", c.name, s.project, s.service),
        None => c.name.clone(),
    }
}

/// Checks a target's reference and digest: a reference that is itself pinned by digest
/// cannot move to another one.
pub fn check_target(reference: &str, to_digest: &str) -> Result<Reference, String> {
    let r = Reference::parse(reference)?;
    check_digest(to_digest).map_err(|e| format!("{reference}: {e}"))?;
    if r.digest.is_some() {
        return Err(format!(
            "{reference} names a digest: its containers stay on it (change the reference instead)"
        ));
    }
    Ok(r)
}

/// The plan entry of one target over the host's `containers`; an error names the reference
/// when no container was created from it.
pub fn plan_one(target: &ImageTarget, containers: &[Container]) -> Result<PlannedPackage, String> {
    let r = check_target(&target.reference, &target.to_digest)?;
    let users: Vec<&Container> = containers
        .iter()
        .filter(|c| c.image == target.reference)
        .collect();
    let Some(first) = users.first() else {
        return Err(format!(
            "no container on this host was created from {} (nothing would move)",
            target.reference
        ));
    };
    let from = digest_for(&first.repo_digests, &r.repository)
        .map(String::from)
        .unwrap_or_else(|| first.image_id.clone());
    Ok(PlannedPackage {
        package: target.reference.clone(),
        from_version: Some(from),
        to_version: target.to_digest.clone(),
        requested: true,
        manager: Some(PackageManager::Docker),
        containers: users.iter().map(|c| label(c)).collect(),
    })
}

/// The whole dry-run over `containers`: every target planned, or the first problem.
pub fn plan(
    targets: &[ImageTarget],
    containers: &[Container],
) -> Result<Vec<PlannedPackage>, String> {
    let mut out: Vec<PlannedPackage> = Vec::new();
    for t in targets {
        if out.iter().any(|p| p.package == t.reference) {
            return Err(format!("{} is listed twice", t.reference));
        }
        out.push(plan_one(t, containers)?);
    }
    Ok(out)
}

fn failed(stderr: String, summary: String) -> CommandResult {
    CommandResult {
        exit_code: -1,
        success: false,
        stdout: String::new(),
        stderr,
        planned: Vec::new(),
        removed: Vec::new(),
        summary,
        health: None,
    }
}

/// The dry-run command's result for `targets`: the engine's containers now, planned.
#[tracing::instrument(skip_all, fields(images = targets.len()))]
pub async fn dry_run(
    targets: &[ImageTarget],
    cfg: &DockerConfig,
    timeout: Duration,
) -> CommandResult {
    let engine = match Engine::connect(cfg, timeout).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            let socket = cfg.socket_path().unwrap_or_default();
            return failed(
                format!(
                    "no Docker engine on this host (no socket at {})",
                    socket.display()
                ),
                "docker dry-run failed: no Docker engine".into(),
            );
        }
        Err(e) => return failed(e, "docker dry-run failed: the engine cannot be used".into()),
    };
    let containers = match inventory::containers(&engine).await {
        Ok(c) => c,
        Err(e) => {
            return failed(
                e,
                "docker dry-run failed: listing the containers failed".into(),
            )
        }
    };
    match plan(targets, &containers) {
        Ok(planned) => {
            let lines: Vec<String> = planned
                .iter()
                .map(|p| {
                    format!(
                        "{}: {} -> {} ({})",
                        p.package,
                        p.from_version
                            .as_deref()
                            .map_or("?".into(), super::short_id),
                        super::short_id(&p.to_version),
                        p.containers.join(", ")
                    )
                })
                .collect();
            let moved: usize = planned.iter().map(|p| p.containers.len()).sum();
            CommandResult {
                exit_code: 0,
                success: true,
                stdout: truncate_tail(&lines.join("\n"), MAX_OUTPUT),
                stderr: String::new(),
                summary: format!(
                    "{} image update{} ({moved} container{})",
                    planned.len(),
                    if planned.len() == 1 { "" } else { "s" },
                    if moved == 1 { "" } else { "s" }
                ),
                planned,
                removed: Vec::new(),
                health: None,
            }
        }
        Err(e) => failed(e.clone(), format!("docker dry-run failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_api_types::docker::ComposeService;

    const OLD: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const NEW: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn c(name: &str, image: &str, digests: &[&str], compose: Option<(&str, &str)>) -> Container {
        Container {
            name: name.into(),
            id: format!("id-{name}"),
            image: image.into(),
            image_id: "sha256:cfg".into(),
            repo_digests: digests.iter().map(|d| d.to_string()).collect(),
            platform: "linux/amd64".into(),
            state: "running".into(),
            health: None,
            restart_policy: None,
            compose: compose.map(|(p, s)| ComposeService {
                project: p.into(),
                service: s.into(),
                working_dir: None,
                config_files: vec![],
            }),
        }
    }

    fn target(reference: &str) -> ImageTarget {
        ImageTarget {
            reference: reference.into(),
            to_digest: NEW.into(),
        }
    }

    #[test]
    fn exactly_the_containers_of_the_reference_move() {
        let hosts = vec![
            c(
                "api",
                "reg:5000/app:v1",
                &[&format!("reg:5000/app@{OLD}")],
                Some(("shop", "api")),
            ),
            c(
                "worker",
                "reg:5000/app:v1",
                &[&format!("reg:5000/app@{OLD}")],
                None,
            ),
            c("other", "reg:5000/app:v2", &[], None),
            c(
                "hub",
                "nginx",
                &[&format!("docker.io/library/nginx@{OLD}")],
                None,
            ),
        ];
        let p = plan(&[target("reg:5000/app:v1"), target("nginx")], &hosts).expect("plan");
        assert_eq!(p[0].package, "reg:5000/app:v1");
        assert_eq!(p[0].from_version.as_deref(), Some(OLD));
        assert_eq!(p[0].to_version, NEW);
        assert_eq!(p[0].manager, Some(PackageManager::Docker));
        assert!(p[0].requested);
        assert_eq!(p[0].containers, ["api (compose shop/api)", "worker"]);
        assert_eq!(p[1].containers, ["hub"]);
        assert_eq!(p[1].from_version.as_deref(), Some(OLD));
        // An image without a RepoDigest (built or imported here): its id.
        let p = plan(&[target("reg:5000/app:v2")], &hosts).expect("plan");
        assert_eq!(p[0].from_version.as_deref(), Some("sha256:cfg"));
    }

    #[test]
    fn a_reference_nobody_uses_or_a_bad_target_fails_naming_it() {
        let hosts = vec![c("api", "reg:5000/app:v1", &[], None)];
        let e = plan(&[target("reg:5000/app")], &hosts).unwrap_err();
        assert!(
            e.contains("reg:5000/app") && e.contains("no container"),
            "{e}"
        );
        let mut t = target("reg:5000/app:v1");
        t.to_digest = "latest".into();
        assert!(plan(&[t], &hosts)
            .unwrap_err()
            .contains("not a sha256 digest"));
        let e = plan(&[target(&format!("reg:5000/app@{OLD}"))], &hosts).unwrap_err();
        assert!(e.contains("names a digest"), "{e}");
        let e = plan(
            &[target("reg:5000/app:v1"), target("reg:5000/app:v1")],
            &hosts,
        )
        .unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }
}
