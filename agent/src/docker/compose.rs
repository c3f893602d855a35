//! Compose-managed containers move through compose itself, so that the container keeps
//! compose's labels (project, service, config hash) and compose keeps owning it.
//!
//! Why pull-by-digest + tag + `up -d --no-deps SERVICE`, not `docker compose pull` + `up -d`:
//! the approval names a digest, and `compose pull` fetches whatever the tag means at that
//! moment — possibly a newer image than the one approved, pushed after the check. So the
//! agent pulls exactly `REPO@DIGEST` through the engine, points the service's tag at that
//! image, and only then asks compose to converge the one service. Compose sees that the
//! image its tag names differs from the container's and recreates it from its own project
//! files (labels, networks, volumes as compose writes them); a later `docker compose up -d`
//! by the user finds the container matching and leaves it alone (same container id).
//! Rolling back is the same move the other way: the tag back on the old image, `up -d
//! --no-deps SERVICE` again.
//!
//! Compose v2 (`docker compose`) when the plugin is there, else v1 (`docker-compose`).
//! Compose runs through the agent's one process runner ([`crate::process::run`]) with a
//! deadline, in the project's working directory, with the project's config files and name,
//! against the same engine socket as the agent.

use super::config::DockerConfig;
use crate::process::{run, which, Cmd, Output};
use canopy_api_types::docker::ComposeService;
use std::path::Path;
use std::time::Duration;

/// Which compose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `docker compose` (the CLI plugin).
    V2,
    /// `docker-compose` (the Python one).
    V1,
}

/// `docker compose version` answers → v2; else `docker-compose` on PATH → v1.
pub async fn detect(timeout: Duration) -> Result<Flavor, String> {
    if which("docker").is_some() {
        let probe = Cmd::new("docker")
            .args(["compose", "version"])
            .timeout(timeout);
        if run(&probe).await.is_ok_and(|o| o.success()) {
            return Ok(Flavor::V2);
        }
    }
    if which("docker-compose").is_some() {
        return Ok(Flavor::V1);
    }
    Err("this container belongs to a compose project, but neither `docker compose` nor `docker-compose` is installed".into())
}

/// A compose project or service name as it may reach compose's argv.
fn check_name(what: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "compose {what} {s:?} has characters compose does not allow"
        ))
    }
}

/// The project's directory: the working-dir label, else the first config file's directory.
pub fn project_dir(s: &ComposeService) -> Result<String, String> {
    if let Some(d) = s.working_dir.as_deref().filter(|d| d.starts_with('/')) {
        return Ok(d.to_string());
    }
    s.config_files
        .first()
        .and_then(|f| Path::new(f).parent())
        .map(|p| p.display().to_string())
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| {
            format!(
                "compose service {}/{} has no working-directory label: cannot tell where its project is",
                s.project, s.service
            )
        })
}

/// `[docker] compose -p PROJECT --project-directory DIR -f FILE… up -d --no-deps SERVICE`.
pub fn up_cmd(
    flavor: Flavor,
    s: &ComposeService,
    cfg: &DockerConfig,
    deadline: Duration,
) -> Result<Cmd, String> {
    check_name("project", &s.project)?;
    check_name("service", &s.service)?;
    let dir = project_dir(s)?;
    let socket = cfg.socket_path()?;
    let mut cmd = match flavor {
        Flavor::V2 => Cmd::new("docker").arg("compose"),
        Flavor::V1 => Cmd::new("docker-compose"),
    };
    cmd = cmd
        .args(["--project-name", &s.project, "--project-directory", &dir])
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .timeout(deadline);
    for f in &s.config_files {
        cmd = cmd.args(["--file", f]);
    }
    cmd = cmd.args(["up", "-d", "--no-deps", &s.service]);
    cmd.dir = Some(dir);
    Ok(cmd)
}

/// Runs `up -d --no-deps SERVICE`; `Err` carries the failure with compose's output tail.
pub async fn up(
    flavor: Flavor,
    s: &ComposeService,
    cfg: &DockerConfig,
    deadline: Duration,
) -> Result<Output, String> {
    let cmd = up_cmd(flavor, s, cfg, deadline)?;
    let out = run(&cmd).await.map_err(|e| e.to_string())?;
    out.check(&[]).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> ComposeService {
        ComposeService {
            project: "shop".into(),
            service: "web".into(),
            working_dir: Some("/srv/shop".into()),
            config_files: vec!["/srv/shop/compose.yml".into(), "/srv/shop/prod.yml".into()],
        }
    }

    #[test]
    fn the_command_names_project_files_and_the_one_service() {
        let cfg = DockerConfig::with_socket("/run/docker.sock");
        let t = Duration::from_secs(60);
        let c = up_cmd(Flavor::V1, &svc(), &cfg, t).expect("v1");
        assert_eq!(
            c.to_string(),
            "docker-compose --project-name shop --project-directory /srv/shop --file /srv/shop/compose.yml --file /srv/shop/prod.yml up -d --no-deps web"
        );
        assert_eq!(c.dir.as_deref(), Some("/srv/shop"));
        assert!(c
            .env
            .contains(&("DOCKER_HOST".into(), "unix:///run/docker.sock".into())));
        assert_eq!(c.limit, crate::process::Limit::Deadline(t));
        let c = up_cmd(Flavor::V2, &svc(), &cfg, t).expect("v2");
        assert!(
            c.to_string()
                .starts_with("docker compose --project-name shop"),
            "{c}"
        );
    }

    #[test]
    fn odd_names_and_a_missing_directory_are_refused() {
        let cfg = DockerConfig::default();
        let t = Duration::from_secs(1);
        let mut s = svc();
        s.service = "--build".into();
        assert!(up_cmd(Flavor::V1, &s, &cfg, t)
            .unwrap_err()
            .contains("service"));
        let mut s = svc();
        s.working_dir = None;
        assert_eq!(project_dir(&s).expect("from the file"), "/srv/shop");
        s.config_files.clear();
        assert!(project_dir(&s).unwrap_err().contains("working-directory"));
    }
}
