//! The root file systems every lab image starts from, cached as tarballs in the cache dir and
//! keyed by their recipe: the debootstrapped Debian base, and "extended" bases that add Debian
//! packages to it with apt in a chroot (dnf and rpm for the dnf guest, systemd for the PVE
//! guests), fetched from the mirror this machine's own apt uses.

use super::mirror::debian_mirror;
use crate::proc::cmd;
use crate::state::{self, StableHash};
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(super) const SUITE: &str = "bookworm";
const VARIANT: &str = "minbase";
const INCLUDE: &str = "openssh-server,ca-certificates,procps";
/// Bump when the steps below change in a way the hash inputs do not show.
const RECIPE_VERSION: &str = "image-v1";

pub(super) fn base_key() -> String {
    let mut h = StableHash::new();
    for part in [RECIPE_VERSION, SUITE, VARIANT, INCLUDE] {
        h.update(part.as_bytes());
    }
    h.hex()
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
    tar_root(&root, &tarball)?;
    eprintln!(
        "xtask: debootstrap done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(tarball)
}

/// The base plus Debian `packages` (their dependencies come along, recommends do not), cached
/// as `PREFIX-SUITE-HASH.tar`.
pub(super) struct Extended {
    pub prefix: &'static str,
    /// Bump when the steps change in a way the package list does not show.
    pub recipe: &'static str,
    pub packages: &'static [&'static str],
}

impl Extended {
    /// The recipe hash (base recipe + this recipe + the package list).
    pub fn key(&self) -> String {
        let mut h = StableHash::new();
        for part in [base_key().as_str(), self.recipe, &self.packages.join(",")] {
            h.update(part.as_bytes());
        }
        h.hex()
    }

    /// The tarball, built once per recipe: apt in a chroot of the unpacked base.
    pub fn tarball(&self) -> Result<PathBuf> {
        let cache = state::cache_dir()?;
        let tarball = cache.join(format!("{}-{SUITE}-{}.tar", self.prefix, self.key()));
        if tarball.is_file() {
            return Ok(tarball);
        }
        let started = Instant::now();
        let list = self.packages.join(" ");
        eprintln!("xtask: installing {list} into the base system");
        let root = unpack(&base_tarball()?, self.prefix)?;
        // The mirror this machine's apt uses (as debootstrap did), and its resolver.
        let mirror = debian_mirror(SUITE)?;
        fs::write(
            root.join("etc/apt/sources.list"),
            format!("deb {mirror} {SUITE} main\n"),
        )?;
        let _ = fs::remove_file(root.join("etc/apt/sources.list.d/debian.sources"));
        if let Ok(resolv) = fs::read("/etc/resolv.conf") {
            let target = root.join("etc/resolv.conf");
            let _ = fs::remove_file(&target);
            fs::write(target, resolv)?;
        }
        chroot(&root, &["apt-get", "update", "-q"])
            .timeout(Duration::from_secs(600))
            .output()
            .with_context(|| format!("apt-get update in the {} base", self.prefix))?;
        chroot(
            &root,
            &[
                "apt-get",
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "-o",
                "Dpkg::Use-Pty=0",
            ],
        )
        .args_from(self.packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .timeout(Duration::from_secs(1200))
        .output()
        .with_context(|| format!("apt-get install {list} in the {} base", self.prefix))?;
        clear_dir(&root.join("var/lib/apt/lists"))?;
        clear_dir(&root.join("var/cache/apt/archives"))?;
        tar_root(&root, &tarball)?;
        eprintln!(
            "xtask: {} base ready in {:.1}s",
            self.prefix,
            started.elapsed().as_secs_f64()
        );
        Ok(tarball)
    }
}

/// `chroot ROOT ARGS…`.
pub(super) fn chroot(root: &Path, args: &[&str]) -> crate::proc::Cmd {
    cmd("chroot", [root.as_os_str()]).args_from(args)
}

/// Tars `root` into `tarball` (atomically: a `.partial` file renamed), then removes `root`.
fn tar_root(root: &Path, tarball: &Path) -> Result<()> {
    let partial = tarball.with_extension("partial");
    cmd("tar", ["--numeric-owner", "-c", "-f"])
        .arg(&partial)
        .arg("-C")
        .arg(root)
        .arg(".")
        .timeout(Duration::from_secs(300))
        .output()?;
    fs::rename(&partial, tarball)?;
    remove_tree(root)
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
