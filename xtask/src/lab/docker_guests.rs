//! The Docker guests of node pve1, vmids 201–204 (`lab up --docker-guests`): systemd guests like
//! 101–104 (image `canopy-lab/debian-docker:bookworm`: the systemd guest image on a base that
//! also has Debian's `docker-compose` 1.29, sudo, the old demo packages, apt pointed at the lab
//! repository), containers `canopy-lab-pve1-ct{VMID}`, hostname `ct{VMID}`. Each has its own
//! engine on the host (`engines.rs`), whose socket is bind-mounted at `/run/docker.sock`, and the
//! host's Docker CLI at `/usr/bin/docker`: `docker ps` in a guest shows its containers only.
//!
//! Their workloads are `workloads.rs`'s.

use super::app_images::{self, LabImage, Pushed};
use super::base::Extended;
use super::engines::{self, Engine};
use super::packages::DemoPackage;
use super::{guest, node, pve, systemd, workloads};
use crate::proc::cmd;
use crate::state::json_str;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::Duration;

pub const IMAGE: &str = "canopy-lab/debian-docker:bookworm";
const DOCKER_BASE: Extended = Extended {
    prefix: "docker-base",
    recipe: "docker-image-v1",
    packages: &["systemd", "systemd-sysv", "sudo", "dbus", "docker-compose"],
};
/// The Docker guests' vmids (`sim-dock.toml`, the node's `pct`).
pub const VMIDS: std::ops::RangeInclusive<u32> = 201..=204;

/// The guest image's content hash: the systemd image's recipe on the Docker base.
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

pub struct Guest {
    pub vmid: u32,
    pub container: String,
    pub hostname: String,
    engine: Engine,
    containers: Vec<workloads::Running>,
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
/// their workloads (`workloads.rs`) and waits until every container with a healthcheck is healthy.
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
        docker_group(&g.container)?;
    }
    // The guests' engines are independent: their workloads start side by side.
    std::thread::scope(|scope| {
        let runs: Vec<_> = guests
            .iter_mut()
            .map(|g| {
                scope.spawn(move || -> Result<()> {
                    g.containers = workloads::start(g.vmid, &g.container, &g.engine, images)
                        .with_context(|| {
                            format!("the containers of Docker guest {}", g.container)
                        })?;
                    Ok(())
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| {
                r.join()
                    .unwrap_or_else(|_| bail!("a Docker guest's set-up panicked"))
            })
            .collect::<Result<Vec<()>>>()
    })?;
    Ok(())
}

/// A `docker` group owning the engine's socket, as Debian's docker.io package makes one in
/// an LXC running Docker: the socket's group on the host, named in the guest, so a deploy
/// gives the agent's user access to it the way it would in a real guest.
fn docker_group(container: &str) -> Result<()> {
    cmd(
        "docker",
        [
            "exec",
            container,
            "sh",
            "-c",
            "getent group docker >/dev/null || groupadd -g \"$(stat -c %g /run/docker.sock)\" docker",
        ],
    )
    .timeout(Duration::from_secs(30))
    .output()
    .with_context(|| format!("the docker group in {container}"))?;
    Ok(())
}

/// The `"guests"` list of lab.json's `docker` section.
pub fn json_guests(guests: &[Guest]) -> String {
    let items: Vec<String> = guests
        .iter()
        .map(|g| {
            let projects = workloads::projects_json(g.vmid);
            let containers: Vec<String> =
                g.containers.iter().map(workloads::Running::json).collect();
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
