//! The lab's containers: started from a lab image on the host network with this lab's label
//! (so `lab down` finds them all), apt pointed at the lab repository, checked, removed.

use super::{guest_label, packages};
use crate::proc::cmd;
use anyhow::{bail, Context, Result};
use std::time::Duration;

/// Removes every container that carries this lab's label (guests, dnf guests, PVE node and
/// guests), then the PVE guests' snapshot images.
pub(super) fn remove_guests() -> Result<()> {
    let ids = cmd(
        "docker",
        [
            "ps",
            "-aq",
            "--filter",
            &format!("label={}", guest_label()?),
        ],
    )
    .output()?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        cmd("docker", ["rm", "-f"])
            .args_from(&ids)
            .timeout(Duration::from_secs(60))
            .output()?;
    }
    super::action::remove_snapshot_images()
}

pub(super) fn start_guest(name: &str, sources: &str) -> Result<()> {
    run_container(name, super::image::IMAGE)?;
    configure_apt(name, sources)
}

/// Points apt in the running guest `name` at the lab repository (`sources`) and updates.
pub(super) fn configure_apt(name: &str, sources: &str) -> Result<()> {
    cmd(
        "docker",
        [
            "exec",
            "-i",
            name,
            "sh",
            "-c",
            "cat > /etc/apt/sources.list",
        ],
    )
    .stdin(sources)
    .timeout(Duration::from_secs(30))
    .output()?;
    cmd("docker", ["exec", name, "apt-get", "update", "-q"])
        .timeout(Duration::from_secs(120))
        .output()
        .with_context(|| format!("apt-get update in {name}"))?;
    Ok(())
}

/// Starts guest container `name` from `image` (host network, this lab's label) and waits for
/// its init to write a machine-id.
pub(super) fn run_container(name: &str, image: &str) -> Result<()> {
    run_container_with(name, image, name, &[])
}

/// [`run_container`] with hostname `hostname` and `extra` `docker run` flags.
pub(super) fn run_container_with(
    name: &str,
    image: &str,
    hostname: &str,
    extra: &[&str],
) -> Result<()> {
    create_container(name, image, hostname, extra)?;
    start_container(name)
}

/// Creates (does not start) guest container `name` from `image`: host network, this lab's
/// label, hostname `hostname`, `extra` flags. `lab up` and a PVE rollback (`action.rs`) both
/// come here, so a rolled-back guest runs exactly as `lab up` started it.
pub(super) fn create_container(
    name: &str,
    image: &str,
    hostname: &str,
    extra: &[&str],
) -> Result<()> {
    let label = guest_label()?;
    cmd(
        "docker",
        [
            "create",
            // Never ask a registry: the image is built here or the lab fails.
            "--pull=never",
            "--name",
            name,
            "--hostname",
            hostname,
            "--network",
            "host",
            "--label",
            &label,
        ],
    )
    .args_from(extra)
    .arg(image)
    .timeout(Duration::from_secs(60))
    .output()
    .with_context(|| format!("create guest {name}"))?;
    Ok(())
}

/// Starts the existing container `name` and waits for its init to write a machine-id.
pub(super) fn start_container(name: &str) -> Result<()> {
    cmd("docker", ["start", name])
        .timeout(Duration::from_secs(60))
        .output()
        .with_context(|| format!("start guest {name}"))?;
    wait_machine_id(name)
}

/// Waits until `name` has a machine-id (its init wrote one, or it kept its own).
pub(super) fn wait_machine_id(name: &str) -> Result<()> {
    let identity = || {
        cmd("docker", ["exec", name, "test", "-s", "/etc/machine-id"])
            .timeout(Duration::from_secs(10))
            .ok()
    };
    if !crate::proc::poll(
        Duration::from_secs(20),
        Duration::from_millis(100),
        identity,
    ) {
        bail!("guest {name} has no /etc/machine-id (its init did not run)");
    }
    Ok(())
}

/// Each installed demo package must have its new version as the apt candidate (held ones too:
/// a hold keeps the candidate, it only stops the upgrade).
pub(super) fn verify_guest(name: &str, pkgs: &[packages::DemoPackage]) -> Result<()> {
    let names: Vec<&str> = pkgs
        .iter()
        .filter(|p| p.old.is_some())
        .map(|p| p.name.as_str())
        .collect();
    let policy = cmd("docker", ["exec", name, "apt-cache", "policy"])
        .args_from(&names)
        .timeout(Duration::from_secs(30))
        .output()?;
    for p in pkgs.iter().filter(|p| p.old.is_some()) {
        let section = policy.split(&format!("{}:", p.name)).nth(1).unwrap_or("");
        let field = |k: &str| {
            section
                .lines()
                .find_map(|l| l.trim().strip_prefix(k).map(str::trim))
        };
        let (installed, candidate) = (field("Installed:"), field("Candidate:"));
        if installed != p.old.as_deref() || candidate != Some(p.new.as_str()) {
            bail!(
                "guest {name}: {} installed {installed:?} candidate {candidate:?}, expected {:?} -> {}",
                p.name,
                p.old,
                p.new
            );
        }
    }
    Ok(())
}
