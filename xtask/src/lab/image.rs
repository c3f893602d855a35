//! The guest image `canopy-lab/debian:bookworm`: debootstrap (cached as a tarball keyed by its
//! recipe), the old demo packages installed with `dpkg -i` in the chroot, `apt-mark hold` for
//! held ones, no apt sources (guests get theirs at start), then `docker import`. The image
//! carries its content hash in the label `canopy.lab.hash`, so it is rebuilt only when the
//! recipe or the demo packages change.

use super::mirror::debian_mirror;
use super::packages::{DemoPackage, BUILDER_VERSION};
use crate::proc::cmd;
use crate::state::{self, StableHash};
use anyhow::{Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const IMAGE: &str = "canopy-lab/debian:bookworm";
pub(super) const SUITE: &str = "bookworm";
const VARIANT: &str = "minbase";
const INCLUDE: &str = "openssh-server,ca-certificates,procps";
/// Bump when the steps below change in a way the hash inputs do not show.
const RECIPE_VERSION: &str = "image-v1";

/// The container's command: host keys for the (later) sshd, then idle.
pub(super) const INIT: &str = "#!/bin/sh\n\
# canopy lab guest init: a machine-id and SSH host keys of its own for each container, then idle.\n\
if [ ! -s /etc/machine-id ]; then tr -d '-' < /proc/sys/kernel/random/uuid > /etc/machine-id; fi\n\
ssh-keygen -A >/dev/null 2>&1 || true\n\
mkdir -p /run/sshd\n\
exec sleep infinity\n";

pub(super) fn base_key() -> String {
    let mut h = StableHash::new();
    for part in [RECIPE_VERSION, SUITE, VARIANT, INCLUDE] {
        h.update(part.as_bytes());
    }
    h.hex()
}

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
    if current_label(IMAGE).as_deref() == Some(key) {
        return Ok(0.0);
    }
    let started = Instant::now();
    eprintln!("xtask: building lab image {IMAGE} (hash {key})");
    let root = unpack(&base_tarball()?, "imgroot")?;
    customise(&root, pkgs, old_debs)?;
    finish_root(&root)?;
    import(&root, IMAGE, key)?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!("xtask: lab image built in {secs:.1}s");
    Ok(secs)
}

/// Unpacks `tarball` into a fresh scratch directory `lab_dir/NAME` and returns it.
pub(super) fn unpack(tarball: &Path, name: &str) -> Result<PathBuf> {
    let root = super::lab_dir()?.join(name);
    remove_tree(&root)?;
    fs::create_dir_all(&root)?;
    cmd("tar", ["-x", "--numeric-owner", "-p", "-f"])
        .arg(tarball)
        .arg("-C")
        .arg(&root)
        .timeout(Duration::from_secs(300))
        .output()?;
    Ok(root)
}

/// `docker import` of `root` as `image` labelled with `key`; removes `root` and the image it
/// replaces.
pub(super) fn import(root: &Path, image: &str, key: &str) -> Result<()> {
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
        .arg("CMD [\"/usr/local/sbin/canopy-lab-init\"]")
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

fn customise(root: &Path, pkgs: &[DemoPackage], old_debs: &[PathBuf]) -> Result<()> {
    let debs = root.join("tmp/canopy-debs");
    fs::create_dir_all(&debs)?;
    let mut inside = Vec::new();
    for deb in old_debs {
        let name = deb.file_name().context("deb without a name")?;
        fs::copy(deb, debs.join(name))?;
        inside.push(format!("/tmp/canopy-debs/{}", name.to_string_lossy()));
    }
    if !inside.is_empty() {
        let mut args = vec![
            root.to_string_lossy().into_owned(),
            "dpkg".into(),
            "-i".into(),
        ];
        args.extend(inside);
        cmd("chroot", args)
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
        cmd(
            "chroot",
            [root.to_string_lossy().as_ref(), "apt-mark", "hold"],
        )
        .timeout(Duration::from_secs(60))
        .args_from(&held)
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
    let init = root.join("usr/local/sbin/canopy-lab-init");
    fs::create_dir_all(init.parent().unwrap_or(root))?;
    fs::write(&init, INIT)?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The debootstrapped base system as a tarball in the cache dir (built once per recipe).
pub(super) fn base_tarball() -> Result<PathBuf> {
    let cache = state::cache_dir()?;
    let tarball = cache.join(format!("debootstrap-{SUITE}-{}.tar", base_key()));
    if tarball.is_file() {
        return Ok(tarball);
    }
    let mirror = debian_mirror(SUITE)?;
    let root = cache.join("debootstrap-root");
    remove_tree(&root)?;
    let started = Instant::now();
    eprintln!("xtask: debootstrap --variant={VARIANT} {SUITE} (this takes a minute or two)");
    cmd(
        "debootstrap",
        [
            &format!("--variant={VARIANT}"),
            &format!("--include={INCLUDE}"),
            SUITE,
        ],
    )
    .arg(&root)
    .arg(&mirror)
    .timeout(Duration::from_secs(1800))
    .output()
    .context("debootstrap")?;
    let partial = tarball.with_extension("partial");
    cmd("tar", ["--numeric-owner", "-c", "-f"])
        .arg(&partial)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .timeout(Duration::from_secs(300))
        .output()?;
    fs::rename(&partial, &tarball)?;
    remove_tree(&root)?;
    eprintln!(
        "xtask: debootstrap done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(tarball)
}

pub(super) fn clear_dir(dir: &Path) -> Result<()> {
    if let Ok(rd) = fs::read_dir(dir) {
        for entry in rd.flatten() {
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                if entry.file_name() != "partial" {
                    fs::remove_dir_all(&path)?;
                }
            } else {
                fs::remove_file(&path)?;
            }
        }
    }
    Ok(())
}

/// `rm -rf` that does not follow symlinks out of the tree (std's remove_dir_all does not).
pub(super) fn remove_tree(dir: &Path) -> Result<()> {
    if dir.symlink_metadata().is_ok() {
        fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    Ok(())
}
