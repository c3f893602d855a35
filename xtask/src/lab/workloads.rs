//! What runs in the Docker guests ([`LAYOUT`]): 20 containers on the three single-platform lab
//! images (7 on `canopy/web:stable`, 7 on `canopy/worker:stable`, 6 on `canopy/cache:1`), pulled
//! from the lab registry at v1, plus one on the multi-platform `canopy/multi:1` (its amd64 image,
//! pulled by the tag, so its RepoDigests hold the index digest). Some run with plain `docker run`
//! (an environment variable and a label naming the container, a restart policy, one with a named
//! volume), the others in compose projects (`/srv/compose/PROJECT/docker-compose.yml` in the
//! guest, brought up by `docker-compose up -d` run inside the guest, so the compose labels name
//! the guest's paths). Every container uses the host network; none bind-mounts a guest path.

use super::docker_guests::Published;
use super::engines::Engine;
use crate::proc::cmd;
use crate::state::json_str;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::time::Duration;

/// Where the compose projects live in a guest.
pub const COMPOSE_ROOT: &str = "/srv/compose";

/// A container started with `docker run`.
struct Plain {
    name: &'static str,
    /// Key of its image in `app_images::IMAGES`.
    image: &'static str,
    restart: &'static str,
    /// A named volume mounted at `/data`.
    volume: bool,
}

/// A compose project: one service per image key, named after it.
struct Project {
    name: &'static str,
    services: &'static [&'static str],
}

struct Layout {
    vmid: u32,
    projects: &'static [Project],
    plain: &'static [Plain],
}

const fn plain(name: &'static str, image: &'static str, restart: &'static str) -> Plain {
    Plain {
        name,
        image,
        restart,
        volume: false,
    }
}

/// What runs in which guest.
const LAYOUT: &[Layout] = &[
    Layout {
        vmid: 201,
        projects: &[Project {
            name: "shop",
            services: &["web", "worker", "cache"],
        }],
        plain: &[
            plain("web-a", "web", "unless-stopped"),
            plain("worker-a", "worker", "always"),
        ],
    },
    Layout {
        vmid: 202,
        projects: &[Project {
            name: "blog",
            services: &["web", "cache"],
        }],
        plain: &[
            plain("worker-b", "worker", "on-failure:3"),
            plain("worker-c", "worker", "no"),
            Plain {
                name: "web-b",
                image: "web",
                restart: "unless-stopped",
                volume: true,
            },
        ],
    },
    Layout {
        vmid: 203,
        projects: &[Project {
            name: "queue",
            services: &["worker", "cache"],
        }],
        plain: &[
            plain("web-c", "web", "always"),
            Plain {
                name: "cache-c",
                image: "cache",
                restart: "unless-stopped",
                volume: true,
            },
            plain("worker-d", "worker", "unless-stopped"),
        ],
    },
    Layout {
        vmid: 204,
        projects: &[],
        plain: &[
            plain("web-d", "web", "unless-stopped"),
            plain("web-e", "web", "always"),
            plain("worker-e", "worker", "unless-stopped"),
            plain("cache-d", "cache", "unless-stopped"),
            plain("cache-e", "cache", "on-failure:3"),
            plain("multi-1", "multi", "unless-stopped"),
        ],
    },
];

/// `com.docker.compose.{project,service,project.working_dir,project.config_files}` as
/// docker-compose wrote them (config_files is relative to working_dir when compose found the
/// file by itself, as here).
pub struct ComposeLabels {
    project: String,
    service: String,
    working_dir: String,
    config_files: String,
}

/// A container as it runs, for lab.json.
pub struct Running {
    pub name: String,
    pub image: &'static str,
    pub reference: String,
    pub restart: String,
    /// The compose labels of a compose service's container.
    pub compose: Option<ComposeLabels>,
}

fn reference<'a>(images: &'a [Published], key: &str) -> Result<&'a Published> {
    images
        .iter()
        .find(|p| p.image.key == key)
        .with_context(|| format!("no lab image {key}"))
}

/// Starts the workloads of guest `vmid` (container `container`, engine `engine`) and checks
/// them; returns the containers as they run.
pub fn start(
    vmid: u32,
    container: &str,
    engine: &Engine,
    images: &[Published],
) -> Result<Vec<Running>> {
    let layout = LAYOUT
        .iter()
        .find(|l| l.vmid == vmid)
        .context("no layout for a Docker guest")?;
    let running = workloads(container, engine, layout, images)?;
    check(container, engine, &running, images)?;
    Ok(running)
}

fn workloads(
    container: &str,
    engine: &Engine,
    layout: &Layout,
    images: &[Published],
) -> Result<Vec<Running>> {
    let mut running = Vec::new();
    let keys: BTreeSet<&str> = layout
        .plain
        .iter()
        .map(|p| p.image)
        .chain(
            layout
                .projects
                .iter()
                .flat_map(|p| p.services.iter().copied()),
        )
        .collect();
    for key in keys {
        let r = reference(images, key)?;
        engine
            .docker(&["pull", "-q", &r.reference])
            .timeout(Duration::from_secs(180))
            .output()?;
    }
    for p in layout.plain {
        let r = reference(images, p.image)?;
        let role = format!("CANOPY_LAB_ROLE={}", p.name);
        let label = format!("canopy.lab.role={}", p.name);
        let volume = format!("{}-data:/data", p.name);
        let mut args = vec![
            "run",
            "-d",
            "--name",
            p.name,
            "--network",
            "host",
            "--restart",
            p.restart,
            "-e",
            &role,
            "--label",
            &label,
        ];
        if p.volume {
            args.extend(["-v", volume.as_str()]);
        }
        args.push(&r.reference);
        engine.docker(&args).output()?;
        running.push(Running {
            name: p.name.to_string(),
            image: r.image.key,
            reference: r.reference.clone(),
            restart: p.restart.to_string(),
            compose: None,
        });
    }
    for project in layout.projects {
        let dir = dir_of(project);
        let file = compose_file(project, images)?;
        let write = format!("mkdir -p {dir} && cat > {dir}/docker-compose.yml");
        cmd("docker", ["exec", "-i", container, "sh", "-c", &write])
            .stdin(file)
            .timeout(Duration::from_secs(30))
            .output()?;
        cmd(
            "docker",
            [
                "exec",
                container,
                "sh",
                "-c",
                &format!("cd {dir} && docker-compose up -d --no-color"),
            ],
        )
        .timeout(Duration::from_secs(300))
        .output()
        .with_context(|| format!("docker-compose up -d in {dir}"))?;
        for service in project.services {
            let filter = |k: &str, v: &str| format!("label=com.docker.compose.{k}={v}");
            let name = engine
                .docker(&[
                    "ps",
                    "-a",
                    "--filter",
                    &filter("project", project.name),
                    "--filter",
                    &filter("service", service),
                    "--format",
                    "{{.Names}}",
                ])
                .output()?;
            let names: Vec<&str> = name.split_whitespace().collect();
            let [name] = names[..] else {
                bail!(
                    "compose service {}/{service}: containers {names:?}",
                    project.name
                );
            };
            let r = reference(images, service)?;
            let label =
                |k: &str| format!("{{{{index .Config.Labels \"com.docker.compose.{k}\"}}}}");
            let format = [
                label("project"),
                label("service"),
                label("project.working_dir"),
                label("project.config_files"),
            ]
            .join("\n");
            let labels = engine
                .docker(&["inspect", "--format", &format, name])
                .output()?;
            let labels: Vec<&str> = labels.lines().collect();
            let [p, s, dir, files] = labels[..] else {
                bail!("compose labels of {name}: {labels:?}");
            };
            if p != project.name || s != *service || dir != dir_of(project) {
                bail!(
                    "compose labels of {name}: project {p:?}, service {s:?}, working dir {dir:?}"
                );
            }
            running.push(Running {
                name: name.to_string(),
                image: r.image.key,
                reference: r.reference.clone(),
                restart: "unless-stopped".into(),
                compose: Some(ComposeLabels {
                    project: p.into(),
                    service: s.into(),
                    working_dir: dir.into(),
                    config_files: files.into(),
                }),
            });
        }
    }
    Ok(running)
}

/// `/srv/compose/PROJECT`.
fn dir_of(project: &Project) -> String {
    format!("{COMPOSE_ROOT}/{}", project.name)
}

/// A project's `docker-compose.yml`: each service on its lab image at the lab registry.
fn compose_file(project: &Project, images: &[Published]) -> Result<String> {
    let mut text = format!(
        "# Written by `cargo xtask lab up`: compose project {} of the canopy lab.\n\
         version: \"3.8\"\nservices:\n",
        project.name
    );
    for service in project.services {
        let r = reference(images, service)?;
        let role = format!("{}-{service}", project.name);
        text.push_str(&format!(
            "  {service}:\n    image: {}\n    network_mode: host\n    restart: unless-stopped\n    \
             environment:\n      CANOPY_LAB_ROLE: {role}\n    labels:\n      canopy.lab.role: {role}\n",
            r.reference
        ));
    }
    Ok(text)
}

/// The guest's engine holds exactly its containers, running, the ones with a healthcheck
/// healthy; the multi-platform container runs the amd64 image with the index digest.
fn check(
    container: &str,
    engine: &Engine,
    running: &[Running],
    images: &[Published],
) -> Result<()> {
    let all = engine
        .docker(&["ps", "-a", "--format", "{{.Names}}"])
        .output()?;
    let mut seen: Vec<&str> = all.split_whitespace().collect();
    seen.sort_unstable();
    let mut want: Vec<&str> = running.iter().map(|c| c.name.as_str()).collect();
    want.sort_unstable();
    if seen != want {
        bail!(
            "Docker guest {}: containers {seen:?}, expected {want:?}",
            container
        );
    }
    let names: Vec<&str> = want.clone();
    let fmt = "{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}";
    let settled = || -> Result<bool> {
        let mut args = vec!["inspect", "--format", fmt];
        args.extend(&names);
        let out = engine.docker(&args).output()?;
        Ok(out.lines().all(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"running") && matches!(f.get(2), Some(&"healthy") | Some(&"none"))
        }))
    };
    let ok = crate::proc::poll(Duration::from_secs(60), Duration::from_millis(250), || {
        settled().unwrap_or(false)
    });
    if !ok {
        let mut args = vec!["inspect", "--format", fmt];
        args.extend(&names);
        let out = engine.docker(&args).output().unwrap_or_default();
        bail!(
            "Docker guest {}: not every container is running and healthy after 60s:\n{out}",
            container
        );
    }
    for c in running {
        if c.image == "multi" {
            let r = reference(images, "multi")?;
            let out = engine
                .docker(&[
                    "image",
                    "inspect",
                    "--format",
                    "{{.Architecture}} {{join .RepoDigests \" \"}}",
                    &c.reference,
                ])
                .output()?;
            let want = format!("{}@{}", repo_of(&c.reference), r.pushed.digest);
            if !out.starts_with("amd64 ") || !out.split_whitespace().any(|d| d == want) {
                bail!(
                    "{}: the multi-platform image is {out:?}, expected amd64 and {want}",
                    c.name
                );
            }
        }
    }
    Ok(())
}

/// `HOST/REPO` of `HOST/REPO:TAG`.
fn repo_of(reference: &str) -> &str {
    match reference.rfind(':') {
        Some(i) if !reference[i..].contains('/') => &reference[..i],
        _ => reference,
    }
}

/// The compose projects of guest `vmid` for lab.json.
pub fn projects_json(vmid: u32) -> Vec<String> {
    LAYOUT
        .iter()
        .filter(|l| l.vmid == vmid)
        .flat_map(|l| l.projects.iter())
        .map(|p| {
            format!(
                "{{ \"name\": {}, \"working_dir\": {}, \"config_file\": {} }}",
                json_str(p.name),
                json_str(&dir_of(p)),
                json_str(&format!("{}/docker-compose.yml", dir_of(p))),
            )
        })
        .collect()
}

impl Running {
    /// One entry of a guest's `containers` in lab.json.
    pub fn json(&self) -> String {
        let compose = self.compose.as_ref().map_or("null".to_string(), |l| {
            format!(
                "{{ \"project\": {}, \"service\": {}, \"working_dir\": {}, \"config_files\": {} }}",
                json_str(&l.project),
                json_str(&l.service),
                json_str(&l.working_dir),
                json_str(&l.config_files)
            )
        });
        format!(
            "          {{ \"name\": {}, \"image\": {}, \"reference\": {}, \"restart\": {}, \"compose\": {compose} }}",
            json_str(&self.name),
            json_str(self.image),
            json_str(&self.reference),
            json_str(&self.restart),
        )
    }
}
