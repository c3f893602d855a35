//! The Docker guests of node pve1, vmids 201–204 (`lab up --docker-guests`): systemd guests like
//! 101–104 (image `canopy-lab/debian-docker:bookworm`: the systemd guest image on a base that
//! also has Debian's `docker-compose` 1.29, sudo, the old demo packages, apt pointed at the lab
//! repository), containers `canopy-lab-pve1-ct{VMID}`, hostname `ct{VMID}`. Each has its own
//! engine on the host (`engines.rs`), whose socket is bind-mounted at `/run/docker.sock`, and the
//! host's Docker CLI at `/usr/bin/docker`: `docker ps` in a guest shows its containers only.
//!
//! Their workloads ([`LAYOUT`]): 20 containers on the three single-platform lab images (7 on
//! `canopy/web:stable`, 7 on `canopy/worker:stable`, 6 on `canopy/cache:1`), pulled from the lab
//! registry at v1, plus one on the multi-platform `canopy/multi:1` (its amd64 image, pulled by
//! the tag, so its RepoDigests hold the index digest). Some run with plain `docker run` (an
//! environment variable and a label naming the container, a restart policy, one with a named
//! volume), the others in compose projects (`/srv/compose/PROJECT/docker-compose.yml` in the
//! guest, brought up by `docker-compose up -d` run inside the guest, so the compose labels name
//! the guest's paths). Every container uses the host network; none bind-mounts a guest path.

use super::app_images::{self, LabImage, Pushed};
use super::base::Extended;
use super::engines::{self, Engine};
use super::packages::DemoPackage;
use super::{guest, node, pve, systemd};
use crate::proc::cmd;
use crate::state::json_str;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

pub const IMAGE: &str = "canopy-lab/debian-docker:bookworm";
const DOCKER_BASE: Extended = Extended {
    prefix: "docker-base",
    recipe: "docker-image-v1",
    packages: &["systemd", "systemd-sysv", "sudo", "dbus", "docker-compose"],
};
pub const VMIDS: std::ops::RangeInclusive<u32> = 201..=204;
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

pub fn image_key(description: &str) -> String {
    systemd::image_key_on(&DOCKER_BASE, description)
}

/// Makes sure the guest image with hash `key` exists. Returns seconds spent building.
pub fn ensure(key: &str, pkgs: &[DemoPackage], old_debs: &[PathBuf]) -> Result<f64> {
    systemd::ensure_on(IMAGE, &DOCKER_BASE, key, pkgs, old_debs)
}

/// `docker run` flags of guest `vmid`: the systemd guests' flags, its engine's socket at
/// `/run/docker.sock`, the host's Docker CLI. `lab up` and a PVE rollback both use them.
pub fn run_flags(vmid: u32) -> Result<Vec<String>> {
    let mut flags: Vec<String> = systemd::RUN_FLAGS.iter().map(|f| f.to_string()).collect();
    flags.push("-v".into());
    flags.push(format!(
        "{}:/run/docker.sock",
        engines::engine(vmid)?.socket.display()
    ));
    flags.push("-v".into());
    flags.push(format!(
        "{}:/usr/bin/docker:ro",
        node::docker_binary()?.display()
    ));
    Ok(flags)
}

/// An image the guests use, as pushed.
pub struct Published {
    pub image: &'static LabImage,
    pub reference: String,
    pub pushed: Pushed,
}

/// A container as it runs, for lab.json.
struct Running {
    name: String,
    image: &'static str,
    reference: String,
    restart: String,
    /// (project, service) for compose services.
    compose: Option<(String, String)>,
}

pub struct Guest {
    pub vmid: u32,
    pub container: String,
    pub hostname: String,
    engine: Engine,
    containers: Vec<Running>,
}

impl Guest {
    /// The names of the containers `lab up` started in this guest.
    pub fn container_names(&self) -> Vec<&str> {
        self.containers.iter().map(|c| c.name.as_str()).collect()
    }
}

/// Starts the guest containers (their engines answer already); they boot while the rest of
/// the lab comes up.
pub fn start(engines: Vec<Engine>) -> Result<Vec<Guest>> {
    let mut guests = Vec::new();
    for engine in engines {
        let vmid = engine.vmid;
        let g = Guest {
            vmid,
            container: pve::guest_container(vmid)?,
            hostname: format!("ct{vmid}"),
            engine,
            containers: Vec::new(),
        };
        let flags = run_flags(vmid)?;
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        guest::run_container_with(&g.container, IMAGE, &g.hostname, &flags)?;
        guests.push(g);
    }
    Ok(guests)
}

/// `(vmid, container, hostname)` for the node's `pct` list.
pub fn pct_entries(guests: &[Guest]) -> Vec<(u32, String, String)> {
    guests
        .iter()
        .map(|g| (g.vmid, g.container.clone(), g.hostname.clone()))
        .collect()
}

/// Waits for systemd, points apt at the lab repository, checks the demo packages, then starts
/// the workloads of [`LAYOUT`] and waits until every container with a healthcheck is healthy.
pub fn configure(
    guests: &mut [Guest],
    sources: &str,
    pkgs: &[DemoPackage],
    images: &[Published],
) -> Result<()> {
    for g in guests.iter() {
        let (state, failed) = systemd::wait_booted(&g.container)?;
        if !failed.is_empty() {
            eprintln!(
                "xtask: lab: {} is {state}; failed units: {}",
                g.container,
                failed.join(" ")
            );
        }
        guest::configure_apt(&g.container, sources)?;
        guest::verify_guest(&g.container, pkgs)?;
    }
    for g in guests.iter_mut() {
        let layout = LAYOUT
            .iter()
            .find(|l| l.vmid == g.vmid)
            .context("no layout for a Docker guest")?;
        workloads(g, layout, images)
            .with_context(|| format!("the containers of Docker guest {}", g.container))?;
    }
    for g in guests.iter() {
        check(g, images)?;
    }
    Ok(())
}

fn reference<'a>(images: &'a [Published], key: &str) -> Result<&'a Published> {
    images
        .iter()
        .find(|p| p.image.key == key)
        .with_context(|| format!("no lab image {key}"))
}

fn workloads(g: &mut Guest, layout: &Layout, images: &[Published]) -> Result<()> {
    let keys: BTreeSet<&str> = layout
        .plain
        .iter()
        .map(|p| p.image)
        .chain(layout.projects.iter().flat_map(|p| p.services.iter().copied()))
        .collect();
    for key in keys {
        let r = reference(images, key)?;
        g.engine
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
            "run", "-d", "--name", p.name, "--network", "host", "--restart", p.restart, "-e",
            &role, "--label", &label,
        ];
        if p.volume {
            args.extend(["-v", volume.as_str()]);
        }
        args.push(&r.reference);
        g.engine.docker(&args).output()?;
        g.containers.push(Running {
            name: p.name.to_string(),
            image: r.image.key,
            reference: r.reference.clone(),
            restart: p.restart.to_string(),
            compose: None,
        });
    }
    for project in layout.projects {
        let dir = format!("{COMPOSE_ROOT}/{}", project.name);
        let file = compose_file(project, images)?;
        let write = format!("mkdir -p {dir} && cat > {dir}/docker-compose.yml");
        cmd("docker", ["exec", "-i", &g.container, "sh", "-c", &write])
            .stdin(file)
            .timeout(Duration::from_secs(30))
            .output()?;
        cmd(
            "docker",
            [
                "exec",
                &g.container,
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
            let name = g
                .engine
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
                bail!("compose service {}/{service}: containers {names:?}", project.name);
            };
            let r = reference(images, service)?;
            g.containers.push(Running {
                name: name.to_string(),
                image: r.image.key,
                reference: r.reference.clone(),
                restart: "unless-stopped".into(),
                compose: Some((project.name.to_string(), service.to_string())),
            });
        }
    }
    Ok(())
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
/// healthy; the multi-platform container runs the amd64 image with the index digest; compose
/// labels name the guest's paths.
fn check(g: &Guest, images: &[Published]) -> Result<()> {
    let all = g
        .engine
        .docker(&["ps", "-a", "--format", "{{.Names}}"])
        .output()?;
    let mut seen: Vec<&str> = all.split_whitespace().collect();
    seen.sort_unstable();
    let mut want: Vec<&str> = g.containers.iter().map(|c| c.name.as_str()).collect();
    want.sort_unstable();
    if seen != want {
        bail!("Docker guest {}: containers {seen:?}, expected {want:?}", g.container);
    }
    let names: Vec<&str> = want.clone();
    let fmt = "{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}";
    let settled = || -> Result<bool> {
        let mut args = vec!["inspect", "--format", fmt];
        args.extend(&names);
        let out = g.engine.docker(&args).output()?;
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
        let out = g.engine.docker(&args).output().unwrap_or_default();
        bail!(
            "Docker guest {}: not every container is running and healthy after 60s:\n{out}",
            g.container
        );
    }
    for c in &g.containers {
        if let Some((project, service)) = &c.compose {
            let dir = g
                .engine
                .docker(&[
                    "inspect",
                    "--format",
                    "{{index .Config.Labels \"com.docker.compose.project.working_dir\"}}",
                    &c.name,
                ])
                .output()?;
            let want = format!("{COMPOSE_ROOT}/{project}");
            if dir.trim() != want {
                bail!("{}/{}: compose working_dir {:?}, expected {want}", g.container, service, dir.trim());
            }
        }
        if c.image == "multi" {
            let r = reference(images, "multi")?;
            let out = g
                .engine
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
                bail!("{}: the multi-platform image is {out:?}, expected amd64 and {want}", c.name);
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

/// The `"guests"` list of lab.json's `docker` section.
pub fn json_guests(guests: &[Guest]) -> String {
    let items: Vec<String> = guests
        .iter()
        .map(|g| {
            let projects: Vec<String> = LAYOUT
                .iter()
                .filter(|l| l.vmid == g.vmid)
                .flat_map(|l| l.projects.iter())
                .map(|p| {
                    format!(
                        "{{ \"name\": {}, \"working_dir\": {}, \"config_file\": {} }}",
                        json_str(p.name),
                        json_str(&format!("{COMPOSE_ROOT}/{}", p.name)),
                        json_str(&format!("{COMPOSE_ROOT}/{}/docker-compose.yml", p.name)),
                    )
                })
                .collect();
            let containers: Vec<String> = g
                .containers
                .iter()
                .map(|c| {
                    let compose = c.compose.as_ref().map_or("null".to_string(), |(p, s)| {
                        format!("{{ \"project\": {}, \"service\": {} }}", json_str(p), json_str(s))
                    });
                    format!(
                        "          {{ \"name\": {}, \"image\": {}, \"reference\": {}, \"restart\": {}, \"compose\": {compose} }}",
                        json_str(&c.name),
                        json_str(c.image),
                        json_str(&c.reference),
                        json_str(&c.restart),
                    )
                })
                .collect();
            format!(
                "      {{ \"vmid\": {}, \"container\": {}, \"hostname\": {}, \"docker_host\": {}, \
                 \"socket\": {}, \"data_root\": {}, \"engine_log\": {},\n        \
                 \"compose_projects\": [{}],\n        \"containers\": [\n{}\n        ] }}",
                g.vmid,
                json_str(&g.container),
                json_str(&g.hostname),
                json_str(&g.engine.host()),
                json_str(&g.engine.socket.to_string_lossy()),
                json_str(&g.engine.data_root.to_string_lossy()),
                json_str(&g.engine.log.to_string_lossy()),
                projects.join(", "),
                containers.join(",\n"),
            )
        })
        .collect();
    format!("[\n{}\n    ]", items.join(",\n"))
}

/// The `"images"` object of lab.json's `docker` section.
pub fn json_images(images: &[Published]) -> String {
    let items: Vec<String> = images
        .iter()
        .map(|p| {
            let platforms: Vec<String> = p
                .pushed
                .platforms
                .iter()
                .map(|(pl, d)| format!("{}: {}", json_str(pl), json_str(d)))
                .collect();
            format!(
                "      {}: {{ \"repository\": {}, \"tag\": {}, \"reference\": {}, \"media_type\": {}, \
                 \"digest\": {}, \"healthcheck\": {}, \"multi_platform\": {}, \"platforms\": {{ {} }} }}",
                json_str(p.image.key),
                json_str(p.image.repository),
                json_str(p.image.tag),
                json_str(&p.reference),
                json_str(p.pushed.media_type),
                json_str(&p.pushed.digest),
                p.image.kind.healthcheck,
                p.image.kind.multi_platform,
                platforms.join(", "),
            )
        })
        .collect();
    format!("{{\n{}\n    }}", items.join(",\n"))
}

/// Pushes v1 of every lab image to the registry at `addr`.
pub fn push_images(addr: &str) -> Result<Vec<Published>> {
    let reg = super::oci::Client { addr };
    let base = app_images::busybox_layer()?;
    app_images::IMAGES
        .iter()
        .map(|image| {
            let pushed = app_images::push(
                &reg,
                &base,
                image.repository,
                image.tag,
                app_images::Variant::V1,
                image.kind,
            )?;
            Ok(Published {
                image,
                reference: format!("{addr}/{}:{}", image.repository, image.tag),
                pushed,
            })
        })
        .collect()
}
