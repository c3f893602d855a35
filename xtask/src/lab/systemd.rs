//! The PVE guest image `canopy-lab/debian-systemd:bookworm`: what a Debian LXC on PVE looks
//! like from inside, i.e. the guest image (base + old demo packages, no apt sources) plus
//! systemd as PID 1, sudo and dbus. Units that make no sense in a container are masked, units
//! that would change a guest behind a test's back (apt's daily timers) too, and ssh is disabled
//! (all containers share the host network, so sshd runs only where `lab up` gives it a port).
//!
//! Containers run `/sbin/init` unprivileged with [`RUN_FLAGS`], behind a two-line wrapper that
//! first writes a fresh `/etc/machine-id` (the image has none). systemd would not do it here:
//! without one it boots in "first boot" mode, writes `uninitialized`, cannot mount a transient
//! id without CAP_SYS_ADMIN, and runs `preset-all`, which enables ssh again.

use super::base::{chroot, unpack, Extended};
use super::image::{self, machine_id_sh, INIT};
use super::packages::{DemoPackage, BUILDER_VERSION};
use crate::proc::cmd;
use crate::state::StableHash;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const IMAGE: &str = "canopy-lab/debian-systemd:bookworm";
const SYSTEMD_BASE: Extended = Extended {
    prefix: "systemd-base",
    recipe: "systemd-image-v1",
    packages: &["systemd", "systemd-sysv", "sudo", "dbus"],
};
/// No consoles, no network or time to manage, no disks to check, no first-boot wizard, and
/// nothing that runs apt or dpkg on its own.
const MASKED: &[&str] = &[
    "getty.target",
    "console-getty.service",
    "systemd-firstboot.service",
    "systemd-networkd.service",
    "systemd-networkd-wait-online.service",
    "systemd-resolved.service",
    "systemd-timesyncd.service",
    "systemd-udevd.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
];
/// Installed but not started at boot.
const DISABLED: &[&str] = &["ssh.service", "ssh.socket"];
/// `docker run` flags for systemd as PID 1 without `--privileged` (which fails on this kind of
/// host with "unable to apply caps"): the host's cgroup tree, tmpfs on /run.
pub const RUN_FLAGS: &[&str] = &[
    "--cgroupns=host",
    "--tmpfs",
    "/run",
    "--tmpfs",
    "/run/lock",
    "-v",
    "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--env",
    "container=docker",
    "--stop-signal",
    "SIGRTMIN+3",
];
const INIT_PATH: &str = "usr/local/sbin/canopy-lab-systemd-init";
const CMD: &str = "[\"/usr/local/sbin/canopy-lab-systemd-init\"]";
/// The container's command: a machine-id of its own, then systemd as PID 1.
const SYSTEMD_INIT: &str = concat!(
    "#!/bin/sh\n# canopy lab PVE guest: a machine-id of its own, then systemd.\n",
    machine_id_sh!(),
    "exec /sbin/init\n"
);

/// The content hash of the image: systemd base + demo packages + builder + unit changes.
pub fn image_key(description: &str) -> String {
    image_key_on(&SYSTEMD_BASE, description)
}

/// [`image_key`] of an image built the same way on another systemd base (the Docker guests').
pub(super) fn image_key_on(base: &Extended, description: &str) -> String {
    let mut h = StableHash::new();
    for part in [
        base.key().as_str(),
        description,
        BUILDER_VERSION,
        INIT,
        SYSTEMD_INIT,
        &MASKED.join(","),
        &DISABLED.join(","),
        CMD,
    ] {
        h.update(part.as_bytes());
    }
    h.hex()
}

/// Makes sure the image with hash `key` exists. Returns seconds spent building.
pub fn ensure(key: &str, pkgs: &[DemoPackage], old_debs: &[PathBuf]) -> Result<f64> {
    ensure_on(IMAGE, &SYSTEMD_BASE, key, pkgs, old_debs)
}

/// [`ensure`] for `image` built the same way on another systemd base (the Docker guests').
pub(super) fn ensure_on(
    image: &str,
    base: &Extended,
    key: &str,
    pkgs: &[DemoPackage],
    old_debs: &[PathBuf],
) -> Result<f64> {
    image::ensure_image(image, key, || {
        let root = unpack(&base.tarball()?, "systemdroot")?;
        image::install_demo_debs(&root, pkgs, old_debs)?;
        container_units(&root)?;
        image::finish_root(&root)?;
        image::write_exec(&root, INIT_PATH, SYSTEMD_INIT)?;
        image::import(&root, image, key, CMD)
    })
}

/// `systemctl mask` / `disable` in the chroot (systemctl works offline there).
fn container_units(root: &Path) -> Result<()> {
    chroot(root, &["systemctl", "mask"])
        .args_from(MASKED)
        .timeout(Duration::from_secs(60))
        .output()
        .context("systemctl mask in the systemd image")?;
    chroot(root, &["systemctl", "disable"])
        .args_from(DISABLED)
        .timeout(Duration::from_secs(60))
        .output()
        .context("systemctl disable in the systemd image")?;
    chroot(root, &["systemctl", "set-default", "multi-user.target"])
        .timeout(Duration::from_secs(60))
        .output()?;
    Ok(())
}

/// Waits until systemd in `name` has finished booting. Returns its state (`running` or
/// `degraded`) and the failed units; any other state is an error.
pub fn wait_booted(name: &str) -> Result<(String, Vec<String>)> {
    // `is-system-running --wait` fails at once while systemd's socket is not there yet (just
    // after a (re)start: the machine-id the wrapper checks survives restarts, /run does not).
    let socket = || {
        cmd(
            "docker",
            ["exec", name, "test", "-S", "/run/systemd/private"],
        )
        .timeout(Duration::from_secs(10))
        .ok()
    };
    if !crate::proc::poll(Duration::from_secs(60), Duration::from_millis(100), socket) {
        bail!("systemd in {name} did not start (no /run/systemd/private after 60s)");
    }
    let out = cmd(
        "docker",
        ["exec", name, "systemctl", "is-system-running", "--wait"],
    )
    .timeout(Duration::from_secs(90))
    .capture()?;
    let state = out.stdout.trim().to_string();
    let failed = cmd(
        "docker",
        [
            "exec",
            name,
            "systemctl",
            "list-units",
            "--failed",
            "--plain",
            "--no-legend",
        ],
    )
    .timeout(Duration::from_secs(30))
    .output()
    .unwrap_or_default();
    let failed: Vec<String> = failed
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    if state != "running" && state != "degraded" {
        bail!(
            "systemd in {name} did not boot: is-system-running says {state:?} ({}); failed \
             units: {failed:?}",
            out.stderr.trim()
        );
    }
    Ok((state, failed))
}
