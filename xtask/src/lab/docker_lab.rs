//! The Docker part of the lab (`lab up --docker-guests`, the `docker` section of lab.json): the
//! registry and its rate-limiting front (`registry.rs`, `ratelimit.rs`), the lab images pushed
//! at v1 (`app_images.rs`), the Docker guests 201–204 with their engines and workloads
//! (`docker_guests.rs`, `engines.rs`), the simulator file `sim-dock.toml`; `lab image-push`;
//! and their teardown.

use super::app_images::{self, Kind, Variant};
use super::docker_guests::{self, Guest, Published};
use super::packages::DemoPackage;
use super::ratelimit::{self, Front};
use super::registry::{self, Registry};
use super::{engines, oci, pve, sim};
use crate::state::json_str;
use anyhow::{bail, Result};
use std::path::PathBuf;

pub struct DockerLab {
    registry: Registry,
    front: Front,
    images: Vec<Published>,
    pub guests: Vec<Guest>,
    sim_file: Option<PathBuf>,
}

/// Registry, front, images, engines, and the guest containers booting (configure them with
/// [`DockerLab::configure`] once the node runs).
pub fn start() -> Result<DockerLab> {
    let registry = registry::start()?;
    let front = ratelimit::start(&registry.addr)?;
    let images = docker_guests::push_images(&registry.addr)?;
    let engines = engines::start_fresh(docker_guests::VMIDS)?;
    let guests = docker_guests::start(engines)?;
    Ok(DockerLab {
        registry,
        front,
        images,
        guests,
        sim_file: None,
    })
}

impl DockerLab {
    /// The guests' apt, packages and workloads, a check through the node's `pct`, and the
    /// simulator file.
    pub fn configure(&mut self, sources: &str, pkgs: &[DemoPackage], pve: &pve::Pve) -> Result<()> {
        docker_guests::configure(&mut self.guests, sources, pkgs, &self.images)?;
        self_check(&self.guests, pve)?;
        self.sim_file = Some(sim::write_dock()?);
        Ok(())
    }

    /// The `"docker"` object of lab.json.
    pub fn json(&self) -> String {
        let variants: Vec<String> = app_images::VARIANTS.iter().map(|v| json_str(v)).collect();
        format!(
            "{{\n    \"registry\": {},\n    \"rate_limited\": {},\n    \"images\": {},\n    \
             \"variants\": [{}],\n    \"guest_image\": {},\n    \"cluster\": {},\n    \"node\": {},\n    \
             \"sim_file\": {},\n    \"compose_command\": \"docker-compose\",\n    \"guests\": {}\n  }}",
            self.registry.json(),
            self.front.json(),
            docker_guests::json_images(&self.images),
            variants.join(", "),
            json_str(docker_guests::IMAGE),
            json_str(sim::DOCK_CLUSTER),
            json_str(super::node::NODE),
            self.sim_file
                .as_ref()
                .map_or("null".into(), |p| json_str(&p.to_string_lossy())),
            docker_guests::json_guests(&self.guests),
        )
    }
}

/// Through the node's real sshd and its `pct` (one ssh session): every Docker guest runs and
/// its `docker ps` lists exactly its own containers.
fn self_check(guests: &[Guest], pve: &pve::Pve) -> Result<()> {
    let remote: Vec<String> = guests
        .iter()
        .map(|g| {
            format!(
                "echo '== {vmid}' && pct status {vmid} && pct exec {vmid} -- docker ps --format '{{{{.Names}}}}'",
                vmid = g.vmid
            )
        })
        .collect();
    let out = pve.node_ssh(&remote.join(" && ")).output()?;
    for g in guests {
        let section = out
            .split(&format!("== {}\n", g.vmid))
            .nth(1)
            .unwrap_or("")
            .split("== ")
            .next()
            .unwrap_or("");
        let mut lines: Vec<&str> = section.lines().collect();
        if lines.first() != Some(&"status: running") {
            bail!(
                "lab self-check: `pct status {}` printed {section:?}",
                g.vmid
            );
        }
        lines.remove(0);
        lines.sort_unstable();
        let mut want = g.container_names();
        want.sort_unstable();
        if lines != want {
            bail!(
                "lab self-check: `pct exec {} -- docker ps` lists {lines:?}, expected {want:?}",
                g.vmid
            );
        }
    }
    Ok(())
}

/// `lab status`: the containers of each Docker guest's engine that answers.
pub fn status() -> Result<()> {
    for vmid in docker_guests::VMIDS {
        let engine = engines::engine(vmid)?;
        if !engine.socket.exists() {
            continue;
        }
        let fmt = "{{.Names}}\t{{.Image}}\t{{.Status}}";
        if let Ok(ps) = engine.docker(&["ps", "-a", "--format", fmt]).output() {
            println!(
                "\nDocker guest {vmid} ({}):\n{}",
                engine.host(),
                ps.trim_end()
            );
        }
    }
    Ok(())
}

/// Stops and wipes the engines and stops the registry and its front (their logs stay until
/// the next `lab up`); the guest containers are gone already (`remove_guests`).
pub fn down() -> Result<()> {
    engines::remove(docker_guests::VMIDS)?;
    ratelimit::stop()?;
    registry::stop()?;
    let file = sim::dock_path()?;
    if file.exists() {
        std::fs::remove_file(&file)?;
    }
    Ok(())
}

/// `lab image-push REPOSITORY TAG VARIANT [--multi-platform] [--no-healthcheck]`: pushes a
/// version of `REPOSITORY:TAG` to the running lab registry and prints its digest (the index
/// digest for a multi-platform image). A lab image's repository keeps its kind; any other
/// repository is a single-platform image with a healthcheck unless the flags say otherwise.
pub fn image_push(args: &[&str]) -> Result<()> {
    const USAGE: &str = "usage: cargo xtask lab image-push REPOSITORY TAG v1|v2|broken|crash \
                         [--multi-platform] [--no-healthcheck]";
    let flags: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| a.starts_with("--"))
        .collect();
    let rest: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [repository, tag, variant] = rest[..] else {
        bail!("{USAGE}");
    };
    app_images::check_repository(repository)?;
    app_images::check_tag(tag)?;
    let variant = Variant::parse(variant)?;
    let mut kind = app_images::kind_of(repository);
    for flag in flags {
        match flag {
            "--multi-platform" => kind.multi_platform = true,
            "--no-healthcheck" => kind.healthcheck = false,
            other => bail!("unknown flag {other:?} ({USAGE})"),
        }
    }
    let addr = registry::running_addr()?;
    let pushed = push_one(&addr, repository, tag, variant, kind)?;
    eprintln!(
        "xtask: lab image-push: {addr}/{repository}:{tag} is now {} ({}, {})",
        pushed.digest,
        variant.name(),
        pushed.media_type
    );
    for (platform, digest) in &pushed.platforms {
        eprintln!("xtask: lab image-push:   {platform}: {digest}");
    }
    println!("{}", pushed.digest);
    Ok(())
}

fn push_one(
    addr: &str,
    repository: &str,
    tag: &str,
    variant: Variant,
    kind: Kind,
) -> Result<app_images::Pushed> {
    let reg = oci::Client { addr };
    let base = app_images::busybox_layer()?;
    app_images::push(&reg, &base, repository, tag, variant, kind)
}
