//! The guest image `canopy-lab/debian:bookworm`: the debootstrapped base (`base.rs`), the old
//! demo packages installed with `dpkg -i` in the chroot, `apt-mark hold` for held ones, no apt
//! sources (guests get theirs at start), then `docker import`. Every lab image carries its
//! content hash in the label `canopy.lab.hash`, so it is rebuilt only when its recipe or inputs
//! change; the helpers here are shared by the other images.

use super::base::{base_key, base_tarball, chroot, clear_dir, remove_tree, unpack};
use super::packages::{DemoPackage, BUILDER_VERSION};
use crate::proc::cmd;
use crate::state::StableHash;
use anyhow::{Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const IMAGE: &str = "canopy-lab/debian:bookworm";
/// The `CMD` of the images whose containers run [`INIT`].
pub(super) const INIT_CMD: &str = "[\"/usr/local/sbin/canopy-lab-init\"]";

/// The shell line that gives a container a machine-id of its own at its first start (images
/// have none), for the init scripts' `concat!`.
macro_rules! machine_id_sh {
    () => {
        "if [ ! -s /etc/machine-id ]; then tr -d '-' < /proc/sys/kernel/random/uuid > /etc/machine-id; fi\n"
    };
}
pub(super) use machine_id_sh;

/// The container's command: host keys for the (later) sshd, then idle.
pub(super) const INIT: &str = concat!(
    "#!/bin/sh\n\
# canopy lab guest init: a machine-id and SSH host keys of its own for each container, then idle.\n",
    machine_id_sh!(),
    "ssh-keygen -A >/dev/null 2>&1 || true\n\
mkdir -p /run/sshd\n\
exec sleep infinity\n"
);

/// The content hash of the image: base recipe + package description + builder + init script.
pub fn image_key(description: &str) -> String {
    let mut h = StableHash::new();
    for part in [base_key().as_str(), description, BUILDER_VERSION, INIT] {
        h.update(part.as_bytes());
    }
    h.hex()
}

/// The hash label of an existing image, if any.
pub(super) fn current_label(image: &str) -> Option<String> {
    let fmt = "{{index .Config.Labels \"canopy.lab.hash\"}}";
    cmd("docker", ["image", "inspect", "--format", fmt, image])
        .output()
        .ok()
        .map(|s| s.trim().to_string())
}

fn image_id(image: &str) -> Option<String> {
    cmd("docker", ["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Makes sure the image with hash `key` exists; builds it otherwise. Returns seconds spent
/// building (0 when cached).
pub fn ensure(key: &str, pkgs: &[DemoPackage], old_debs: &[PathBuf]) -> Result<f64> {
    ensure_image(IMAGE, key, || {
        let root = unpack(&base_tarball()?, "imgroot")?;
        install_demo_debs(&root, pkgs, old_debs)?;
        finish_root(&root)?;
        import(&root, IMAGE, key, INIT_CMD)
    })
}

/// Runs `build` unless `image` already carries the hash label `key`. Returns seconds spent
/// building (0 when cached).
pub(super) fn ensure_image(
    image: &str,
    key: &str,
    build: impl FnOnce() -> Result<()>,
) -> Result<f64> {
    if current_label(image).as_deref() == Some(key) {
        return Ok(0.0);
    }
    let started = Instant::now();
    eprintln!("xtask: building lab image {image} (hash {key})");
    build().with_context(|| format!("build lab image {image}"))?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!("xtask: lab image {image} built in {secs:.1}s");
    Ok(secs)
}

/// `docker import` of `root` as `image` labelled with `key`, with `CMD` `cmd_json` (a JSON
/// array); removes `root` and the image it replaces.
pub(super) fn import(root: &Path, image: &str, key: &str, cmd_json: &str) -> Result<()> {
    let previous = image_id(image);
    let tar = root.with_extension("tar");
    cmd("tar", ["--numeric-owner", "-c", "-f"])
        .arg(&tar)
        .arg("-C")
        .arg(root)
        .arg(".")
        .timeout(Duration::from_secs(300))
        .output()?;
    cmd("docker", ["import"])
        .arg("--change")
        .arg(format!("CMD {cmd_json}"))
        .arg("--change")
        .arg(format!("LABEL canopy.lab.hash={key}"))
        .arg(&tar)
        .arg(image)
        .timeout(Duration::from_secs(600))
        .output()
        .with_context(|| format!("docker import {image}"))?;
    fs::remove_file(&tar)?;
    remove_tree(root)?;
    if let Some(old) = previous {
        // The replaced image is now untagged; drop it (fails harmlessly while a container uses it).
        let _ = cmd("docker", ["image", "rm", &old]).ok();
    }
    Ok(())
}

/// The old demo packages installed with `dpkg -i` in the chroot `root`; held ones held.
pub(super) fn install_demo_debs(
    root: &Path,
    pkgs: &[DemoPackage],
    old_debs: &[PathBuf],
) -> Result<()> {
    let debs = root.join("tmp/canopy-debs");
    fs::create_dir_all(&debs)?;
    let mut inside = Vec::new();
    for deb in old_debs {
        let name = deb.file_name().context("deb without a name")?;
        fs::copy(deb, debs.join(name))?;
        inside.push(format!("/tmp/canopy-debs/{}", name.to_string_lossy()));
    }
    if !inside.is_empty() {
        let mut args = vec!["dpkg", "-i"];
        args.extend(inside.iter().map(String::as_str));
        chroot(root, &args)
            .timeout(Duration::from_secs(120))
            .output()
            .context("dpkg -i in the image")?;
    }
    let held: Vec<&str> = pkgs
        .iter()
        .filter(|p| p.held && p.old.is_some())
        .map(|p| p.name.as_str())
        .collect();
    if !held.is_empty() {
        chroot(root, &["apt-mark", "hold"])
            .args_from(&held)
            .timeout(Duration::from_secs(60))
            .output()
            .context("apt-mark hold in the image")?;
    }
    fs::remove_dir_all(&debs)?;
    Ok(())
}

/// What every guest image gets: no apt sources (guests get theirs at start), empty apt caches,
/// no machine-id or SSH host keys (per container), and the init script.
pub(super) fn finish_root(root: &Path) -> Result<()> {
    // No internet inside guests: apt sources are written at `lab up` to point at the local repo.
    fs::write(
        root.join("etc/apt/sources.list"),
        "# written by `cargo xtask lab up`\n",
    )?;
    let _ = fs::remove_file(root.join("etc/apt/sources.list.d/debian.sources"));
    clear_dir(&root.join("var/lib/apt/lists"))?;
    clear_dir(&root.join("var/cache/apt/archives"))?;
    // Per-container identity: init writes a fresh machine-id; no host keys are baked in.
    let _ = fs::remove_file(root.join("etc/machine-id"));
    let _ = fs::remove_file(root.join("var/lib/dbus/machine-id"));
    for entry in fs::read_dir(root.join("etc/ssh"))?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(entry.path())?;
        }
    }
    write_exec(root, "usr/local/sbin/canopy-lab-init", INIT)
}

/// Writes an executable (0755) file `rel` below `root`.
pub(super) fn write_exec(root: &Path, rel: &str, text: &str) -> Result<()> {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap_or(root))?;
    fs::write(&path, text)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}
