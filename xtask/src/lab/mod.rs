//! `cargo xtask lab up|down|status`: real Debian guests in Docker containers (host network)
//! with apt pointed at a local repository that holds newer demo packages.
//!
//! `lab up` writes `.lab/lab.json` (the contract tests read through `CANOPY_LAB`):
//!
//! ```json
//! {
//!   "schema": 1,
//!   "image": "canopy-lab/debian:bookworm",
//!   "image_hash": "0123456789abcdef",
//!   "repo_url": "http://127.0.0.1:PORT/",
//!   "repo_dir": "/tmp/canopy-xtask/lab/repo",
//!   "suites": { "main": "bookworm", "security": "bookworm-security" },
//!   "apt_sources": "deb [trusted=yes] http://127.0.0.1:PORT/ bookworm main\n…",
//!   "guests": ["canopy-lab-guest-1"],
//!   "packages": {
//!     "canopy-demo-tools": { "old": "1.0", "new": "2.0", "suite": "bookworm",
//!                            "security": false, "held": false,
//!                            "new_dependency": "canopy-demo-libextra" }
//!   },
//!   "dnf": {
//!     "image": "canopy-lab/dnf:bookworm",
//!     "repo_url": "http://127.0.0.1:PORT/rpm/",
//!     "repo_id": "canopy-lab",
//!     "guests": ["canopy-lab-guest-dnf-1"],
//!     "packages": {
//!       "canopy-demo-ssl": { "old": "1.0-1", "new": "1.0-2", "arch": "noarch",
//!                            "advisory": "security", "advisory_id": "CANOPY-LAB-2023-0004",
//!                            "security": true, "new_dependency": null }
//!     }
//!   },
//!   "pve": {
//!     "image": "canopy-lab/debian-systemd:bookworm",
//!     "node_image": "canopy-lab/pve-node:bookworm",
//!     "node": { "name": "pve1", "container": "canopy-lab-pve1", "ssh": "127.0.0.1:PORT",
//!               "user": "root" },
//!     "ssh_key": "/tmp/canopy-xtask/lab/ssh/id_ed25519",
//!     "dnf_vmid": 120,
//!     "openrc_vmid": 108,
//!     "sim_file": "/…/.lab/sim-pve1.toml",
//!     "guests": [
//!       { "vmid": 101, "container": "canopy-lab-pve1-ct101", "hostname": "ct101",
//!         "sudo": true, "ssh": null },
//!       { "vmid": 106, "container": "canopy-lab-pve1-ct106", "hostname": "ct106",
//!         "sudo": false, "ssh": "127.0.0.1:PORT" }
//!     ]
//!   },
//!   "docker": {
//!     "registry": { "url": "http://127.0.0.1:PORT", "host": "127.0.0.1:PORT",
//!                   "access_log": "/…/.lab/docker/registry/access.log",
//!                   "access_log_format": "combined", "log": "…", "config": "…", "data_dir": "…" },
//!     "rate_limited": { "url": "http://127.0.0.1:PORT", "host": "127.0.0.1:PORT",
//!                       "limited": "HEAD and GET /v2/*/manifests/*", "rate_per_minute": 30,
//!                       "burst": 0, "status": 429, "retry_after_secs": 2,
//!                       "ratelimit_limit": "100;w=21600", "ratelimit_remaining": "76;w=21600",
//!                       "ratelimit_remaining_when_limited": "0;w=21600",
//!                       "access_log": "…", "error_log": "…" },
//!     "images": {
//!       "web": { "repository": "canopy/web", "tag": "stable",
//!                "reference": "127.0.0.1:PORT/canopy/web:stable",
//!                "media_type": "application/vnd.docker.distribution.manifest.v2+json",
//!                "digest": "sha256:…", "healthcheck": true, "multi_platform": false,
//!                "platforms": {} },
//!       "multi": { …, "media_type": "application/vnd.oci.image.index.v1+json",
//!                  "multi_platform": true,
//!                  "platforms": { "linux/amd64": "sha256:…", "linux/arm64": "sha256:…" } }
//!     },
//!     "variants": ["v1", "v2", "broken", "crash"],
//!     "guest_image": "canopy-lab/debian-docker:bookworm",
//!     "cluster": "dock", "node": "pve1", "sim_file": "/…/.lab/sim-dock.toml",
//!     "compose_command": "docker-compose",
//!     "guests": [
//!       { "vmid": 201, "container": "canopy-lab-pve1-ct201", "hostname": "ct201",
//!         "docker_host": "unix:///run/canopy-lab/201.sock", "socket": "/run/canopy-lab/201.sock",
//!         "data_root": "…", "engine_log": "…",
//!         "compose_projects": [ { "name": "shop", "working_dir": "/srv/compose/shop",
//!                                 "config_file": "/srv/compose/shop/docker-compose.yml" } ],
//!         "containers": [
//!           { "name": "web-a", "image": "web", "reference": "127.0.0.1:PORT/canopy/web:stable",
//!             "restart": "unless-stopped", "compose": null },
//!           { "name": "shop_web_1", "image": "web", "reference": "…", "restart": "unless-stopped",
//!             "compose": { "project": "shop", "service": "web",
//!                          "working_dir": "/srv/compose/shop",
//!                          "config_files": "docker-compose.yml" } }
//!         ] }
//!     ]
//!   }
//! }
//! ```
//!
//! `packages` lists the installed demo packages (each has an upgrade); `new_dependency` is null
//! when the upgrade pulls in nothing new. `dnf` describes the dnf guests (see `dnf.rs`): the same
//! shape for the RPM demo packages of `lab/packages/demo-rpms.txt`. `pve` describes the PVE node
//! stand-in (`node.rs`: `ssh -i ssh_key -p PORT root@127.0.0.1 pct exec VMID -- …`) and its six
//! systemd guests 101–106 (`pve.rs`, `systemd.rs`): `sudo` false means sudo is not installed,
//! `ssh` is the guest's own sshd (null: reach it through the node's `pct` only). `dnf_vmid` is
//! the vmid under which the node's `pct` reaches the dnf guest; `openrc_vmid` the OpenRC guest
//! (`openrc.rs`: container `canopy-lab-pve1-ct108`, hostname `ct108`, image
//! `canopy-lab/debian-openrc:bookworm`, no systemd, no sudo), which is not in `guests`.
//! `sim_file` is the PVE simulator cluster file for node pve1 (`sim.rs`): guests 101–106 behind
//! the simulator, whose tasks act on their containers (`action.rs`).
//!
//! `docker` is there only after `lab up --docker-guests` (`docker_lab.rs`): the registry and
//! its access log, the rate-limiting front and its fixed budget headers, the images as pushed
//! at v1 (`image` in a container names one of `images`), and the Docker guests 201–204 with
//! their engines and containers (`compose` null for a `docker run` container).

mod action;
mod app_images;
mod base;
mod daemon;
mod dnf;
mod docker_guests;
mod docker_lab;
mod engines;
mod guest;
mod http;
mod image;
mod mirror;
mod node;
mod oci;
mod openrc;
mod packages;
mod pve;
mod ratelimit;
mod registry;
mod repo;
mod rpms;
mod sim;
mod systemd;
mod workloads;

use crate::proc::cmd;
use crate::state::{self, json_str};
use anyhow::{bail, Result};
use guest::{remove_guests, run_container, start_guest, verify_guest};
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

/// `CANOPY_LAB_INSTANCE=NAME` runs a second lab beside the default one (own guests, repo
/// server and state dir; shared image), e.g. tests while a demo runs. Empty = the default lab.
fn instance() -> Result<Option<String>> {
    match std::env::var("CANOPY_LAB_INSTANCE") {
        Ok(i) if i.is_empty() => Ok(None),
        Ok(i)
            if i.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
        {
            Ok(Some(i))
        }
        Ok(i) => bail!("CANOPY_LAB_INSTANCE={i:?}: use lowercase letters, digits and '-'"),
        Err(_) => Ok(None),
    }
}

/// `canopy-lab-` (`canopy-lab-NAME-` for an instance): the start of every container name.
fn lab_prefix() -> Result<String> {
    Ok(match instance()? {
        None => "canopy-lab-".into(),
        Some(i) => format!("canopy-lab-{i}-"),
    })
}

fn guest_prefix() -> Result<String> {
    Ok(format!("{}guest-", lab_prefix()?))
}

/// dnf guests: `canopy-lab-guest-dnf-N` (`canopy-lab-NAME-guest-dnf-N` for an instance).
fn dnf_guest_name(i: usize) -> Result<String> {
    Ok(format!("{}dnf-{i}", guest_prefix()?))
}

/// How many dnf guests `lab up` starts.
const DNF_GUESTS: usize = 1;

fn guest_label() -> Result<String> {
    Ok(match instance()? {
        None => "canopy.lab=guest".into(),
        Some(i) => format!("canopy.lab=guest-{i}"),
    })
}

/// Runtime files of this lab instance (repo, server pid and log, image build scratch).
pub fn lab_dir() -> Result<PathBuf> {
    let name = match instance()? {
        None => "lab".to_string(),
        Some(i) => format!("lab-{i}"),
    };
    let dir = state::state_dir()?.join(name);
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The Docker part's files in the workspace: `.lab/docker` (`.lab/docker-NAME` for an
/// instance): the registry's storage and logs, the rate-limiting front's, the Docker guests'
/// engines' data roots and logs.
pub fn docker_dir() -> Result<PathBuf> {
    let dir = match instance()? {
        None => ".lab/docker".to_string(),
        Some(i) => format!(".lab/docker-{i}"),
    };
    Ok(state::repo_root()?.join(dir))
}

/// `.lab/lab.json` in the workspace root (`.lab/lab-NAME.json` for a second lab started
/// with `CANOPY_LAB_INSTANCE=NAME`, so it never overwrites the file the tests read).
pub fn lab_json_path() -> Result<PathBuf> {
    let file = match instance()? {
        Some(name) => format!(".lab/lab-{name}.json"),
        None => ".lab/lab.json".to_string(),
    };
    Ok(state::repo_root()?.join(file))
}

/// Builds what is missing, (re)starts the repo server and `guests` containers, writes lab.json
/// and returns its path.
pub fn up(guests: usize) -> Result<PathBuf> {
    up_with(guests, false)
}

/// [`up`], with the Docker part (`docker_lab.rs`) when `docker` is true.
pub fn up_with(guests: usize, docker: bool) -> Result<PathBuf> {
    let started = Instant::now();
    crate::dockerd::ensure()?;
    let root = state::repo_root()?;
    let (pkgs, inputs) = packages::load(&root)?;
    let lab_state = lab_dir()?;
    let repo_dir = lab_state.join("repo");
    let old_debs = repo::build(&pkgs, &repo_dir)?;
    let (rpms, rpm_inputs) = rpms::load(&root)?;
    let old_rpms = rpms::build(
        &rpms,
        &repo_dir.join(rpms::SUBDIR),
        &lab_state.join("rpm-old"),
    )?;
    let key = image::image_key(&inputs);
    let build_secs = image::ensure(&key, &pkgs, &old_debs)?;
    let dnf_key = dnf::image_key(&rpm_inputs);
    let dnf_build_secs = dnf::ensure(&dnf_key, &old_rpms)?;
    let pve_build_secs = systemd::ensure(&systemd::image_key(&inputs), &pkgs, &old_debs)?
        + openrc::ensure(&openrc::image_key(&inputs), &pkgs, &old_debs)?
        + node::ensure(&node::image_key())?;
    let docker_build_secs = if docker {
        docker_guests::ensure(&docker_guests::image_key(&inputs), &pkgs, &old_debs)?
    } else {
        0.0
    };
    let url = repo::serve(&repo_dir)?;
    let rpm_url = format!("{url}{}/", rpms::SUBDIR);
    let sources = format!(
        "deb [trusted=yes] {url} {} main\ndeb [trusted=yes] {url} {} main\n",
        repo::MAIN_SUITE,
        repo::SECURITY_SUITE
    );
    remove_guests()?;
    docker_lab::down()?;
    let mut names = Vec::new();
    for i in 1..=guests {
        let name = format!("{}{i}", guest_prefix()?);
        start_guest(&name, &sources)?;
        verify_guest(&name, &pkgs)?;
        names.push(name);
    }
    let mut dnf_names = Vec::new();
    for i in 1..=DNF_GUESTS {
        let name = dnf_guest_name(i)?;
        run_container(&name, dnf::IMAGE)?;
        dnf::configure_guest(&name, &rpm_url)?;
        dnf::verify_guest(&name, &rpms)?;
        dnf_names.push(name);
    }
    let docker_started = Instant::now();
    let mut dock = docker.then(docker_lab::start).transpose()?;
    let extra = dock
        .as_ref()
        .map(|d| docker_guests::pct_entries(&d.guests))
        .unwrap_or_default();
    let mut docker_secs = docker_started.elapsed().as_secs_f64();
    let pve_started = Instant::now();
    let mut pve = pve::up(&sources, &pkgs, &extra)?;
    pve.sim_file = Some(sim::write()?);
    let pve_secs = pve_started.elapsed().as_secs_f64();
    let configure_started = Instant::now();
    if let Some(d) = dock.as_mut() {
        d.configure(&sources, &pkgs, &pve)?;
        docker_secs += configure_started.elapsed().as_secs_f64();
    }
    let path = lab_json_path()?;
    fs::create_dir_all(path.parent().unwrap_or(&root))?;
    let mut sections = vec![
        ("dnf", dnf::json_section(&rpm_url, &dnf_names, &rpms)),
        ("pve", pve::json_section(&pve)),
    ];
    if let Some(d) = &dock {
        sections.push(("docker", d.json()));
    }
    fs::write(
        &path,
        lab_json(&key, &url, &repo_dir, &sources, &names, &pkgs, &sections),
    )?;
    let docker_note = if docker {
        format!(
            ", Docker guests {}–{} ({docker_secs:.1}s, image build {docker_build_secs:.1}s)",
            docker_guests::VMIDS.start(),
            docker_guests::VMIDS.end()
        )
    } else {
        String::new()
    };
    eprintln!(
        "xtask: lab up: {} apt + {} dnf guest(s), PVE node {} with 7 guests ({pve_secs:.1}s){docker_note}, \
         repo {url}, image builds {build_secs:.1}s + {dnf_build_secs:.1}s (dnf) + \
         {pve_build_secs:.1}s (PVE), total {:.1}s; wrote {}",
        names.len(),
        dnf_names.len(),
        node::NODE,
        started.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(path)
}

/// `lab publish SUITE PACKAGE VERSION`: publishes a version into the running lab's repository
/// (suite `SUITE`, created if new); the lab tests use it to make the repository move on.
pub fn publish(args: &[&str]) -> Result<()> {
    let [suite, name, version] = args else {
        bail!("usage: cargo xtask lab publish SUITE PACKAGE VERSION");
    };
    let repo_dir = lab_dir()?.join("repo");
    if !repo_dir.join("dists").is_dir() {
        bail!(
            "no lab repository at {} (run `cargo xtask lab up`)",
            repo_dir.display()
        );
    }
    let (pkgs, _) = packages::load(&state::repo_root()?)?;
    let like = pkgs.iter().find(|p| p.name == *name);
    let deb = repo::publish(&repo_dir, suite, name, version, like)?;
    eprintln!("xtask: lab publish: {} in suite {suite}", deb.display());
    Ok(())
}

/// `lab image-push REPOSITORY TAG VARIANT`: a new version in the running lab registry
/// (`docker_lab.rs`); prints its digest.
pub fn image_push(args: &[&str]) -> Result<()> {
    docker_lab::image_push(args)
}

/// `lab pve-action ACTION VMID [SNAPNAME] [--start]`: the simulator's action hook (`action.rs`).
pub fn pve_action(args: &[&str]) -> Result<()> {
    action::run(args)
}

/// Removes the guests, stops the repo server and deletes lab.json. Safe to repeat.
pub fn down() -> Result<()> {
    if crate::dockerd::engine_up() {
        remove_guests()?;
    }
    docker_lab::down()?;
    repo::stop()?;
    let path = lab_json_path()?;
    for file in [path, sim::path()?] {
        if file.exists() {
            fs::remove_file(&file)?;
        }
    }
    eprintln!("xtask: lab down");
    Ok(())
}

pub fn status() -> Result<()> {
    let path = lab_json_path()?;
    match fs::read_to_string(&path) {
        Ok(text) => {
            print!("{text}");
            if crate::dockerd::engine_up() {
                let filter = format!("label={}", guest_label()?);
                let fmt = "{{.Names}}\t{{.Status}}";
                let ps = cmd("docker", ["ps", "-a", "--filter", &filter, "--format", fmt]);
                println!("\ncontainers:\n{}", ps.output()?.trim_end());
            }
            docker_lab::status()
        }
        Err(_) => bail!(
            "no lab is up ({} missing; run `cargo xtask lab up`)",
            path.display()
        ),
    }
}

fn lab_json(
    key: &str,
    url: &str,
    repo_dir: &std::path::Path,
    sources: &str,
    guests: &[String],
    pkgs: &[packages::DemoPackage],
    sections: &[(&str, String)],
) -> String {
    let guests: Vec<String> = guests.iter().map(|g| json_str(g)).collect();
    let mut entries = Vec::new();
    for p in pkgs {
        let Some(old) = &p.old else { continue };
        let new_dep = p
            .depends
            .iter()
            .find(|d| pkgs.iter().any(|q| &q.name == *d && q.old.is_none()));
        entries.push(format!(
            "    {}: {{ \"old\": {}, \"new\": {}, \"suite\": {}, \"security\": {}, \"held\": {}, \"new_dependency\": {} }}",
            json_str(&p.name),
            json_str(old),
            json_str(&p.new),
            json_str(&p.suite),
            p.suite == repo::SECURITY_SUITE,
            p.held,
            new_dep.map(|d| json_str(d)).unwrap_or_else(|| "null".into()),
        ));
    }
    format!(
        "{{\n  \"schema\": 1,\n  \"image\": {},\n  \"image_hash\": {},\n  \"repo_url\": {},\n  \"repo_dir\": {},\n  \
         \"suites\": {{ \"main\": {}, \"security\": {} }},\n  \"apt_sources\": {},\n  \"guests\": [{}],\n  \
         \"packages\": {{\n{}\n  }}{}\n}}\n",
        json_str(image::IMAGE),
        json_str(key),
        json_str(url),
        json_str(&repo_dir.to_string_lossy()),
        json_str(repo::MAIN_SUITE),
        json_str(repo::SECURITY_SUITE),
        json_str(sources),
        guests.join(", "),
        entries.join(",\n"),
        sections
            .iter()
            .map(|(name, json)| format!(",\n  {}: {json}", json_str(name)))
            .collect::<String>(),
    )
}
