//! `cargo xtask lab pve-action ACTION VMID [SNAPNAME|ARCHIVE] [--start]`: what the simulator's
//! action hook runs (`sim.rs` writes the cluster file), so a PVE task on node pve1 acts on the
//! lab guest container behind it. A snapshot is a `docker commit` into an image per guest and
//! snapshot (labelled, so `lab up` and `lab down` remove them); a rollback replaces the
//! container by one created from that image with the flags `lab up` uses, stopped unless
//! `--start`. A vzdump backup is the same commit into an image per guest and archive, a
//! restore the same replacement from it, `delbackup` removes it; start, shutdown, stop and reboot are `docker start|stop|stop|restart`, waiting
//! for the guest's init to be up again. The guest keeps its `/etc/machine-id` throughout (the
//! init wrappers write one only when there is none), so an enrolled agent stays the same host.
//! A Docker guest (201–204) takes its engine along: stopped after the guest, started before
//! it, restarted on reboot (containers with a restart policy come back, as in an LXC); its
//! containers and images are not in a snapshot, so a rollback restores the guest's files only.
//! On failure the last line on stderr is the reason the PVE task shows.

use super::guest::{create_container, start_container};
use super::{docker_guests, lab_prefix, openrc, pve, systemd};
use crate::proc::cmd;
use anyhow::{bail, Context, Result};
use std::time::Duration;

/// The label every snapshot image carries (value: this lab's container prefix).
const SNAPSHOT_LABEL: &str = "canopy.lab.snapshot";

#[derive(Debug, PartialEq)]
enum Act {
    Start,
    Shutdown,
    Stop,
    Reboot,
    Snapshot(String),
    Rollback { snap: String, start: bool },
    DelSnapshot(String),
    Backup(String),
    Restore { archive: String, start: bool },
    DelBackup(String),
}

/// The container behind a vmid, with the flags `lab up` started it with.
struct Target {
    container: String,
    hostname: String,
    flags: Vec<String>,
    systemd: bool,
    /// A Docker guest's engine (`engines.rs`): it stops, starts and reboots with the guest, as
    /// Docker does inside an LXC. A snapshot does not hold it (its containers and images live
    /// on the host): a rollback restores the guest's files only.
    engine: Option<super::engines::Engine>,
}

pub fn run(args: &[&str]) -> Result<()> {
    let (act, vmid) = parse(args)?;
    let target = target(vmid)?;
    let what = format!(
        "pve-action {} (container {})",
        args.join(" "),
        target.container
    );
    act_on(&act, vmid, &target).with_context(|| what)
}

fn parse(args: &[&str]) -> Result<(Act, u32)> {
    const USAGE: &str = "usage: cargo xtask lab pve-action \
        start|shutdown|stop|reboot|snapshot|rollback|delsnapshot VMID SNAPNAME [--start] | \
        backup|restore|delbackup VMID ARCHIVE [--start]";
    let start = args.contains(&"--start");
    let rest: Vec<&str> = args.iter().copied().filter(|a| *a != "--start").collect();
    let (action, vmid, snap) = match rest[..] {
        [action, vmid] => (action, vmid, None),
        [action, vmid, snap] => (action, vmid, Some(snap)),
        _ => bail!("{USAGE}"),
    };
    let vmid: u32 = vmid
        .parse()
        .with_context(|| format!("VMID {vmid:?} is not a number ({USAGE})"))?;
    let snap_name = || -> Result<String> {
        let name = snap.with_context(|| format!("{action} needs a SNAPNAME ({USAGE})"))?;
        let ok = name.len() <= 40
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            bail!("invalid snapshot name {name:?} (letters, digits, _ and -; at most 40)");
        }
        Ok(name.to_string())
    };
    // `vzdump-lxc-101-2026_12_06-10_30_00.tar.zst`: a Docker tag as it is.
    let archive = || -> Result<String> {
        let name = snap.with_context(|| format!("{action} needs an ARCHIVE ({USAGE})"))?;
        let ok = name.len() <= 128
            && name.starts_with("vzdump-")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !ok {
            bail!("invalid archive name {name:?} (vzdump-…, letters, digits, _ - .)");
        }
        Ok(name.to_string())
    };
    let act = match action {
        "start" => Act::Start,
        "shutdown" => Act::Shutdown,
        "stop" => Act::Stop,
        "reboot" => Act::Reboot,
        "snapshot" => Act::Snapshot(snap_name()?),
        "rollback" => Act::Rollback {
            snap: snap_name()?,
            start,
        },
        "delsnapshot" => Act::DelSnapshot(snap_name()?),
        "backup" => Act::Backup(archive()?),
        "restore" => Act::Restore {
            archive: archive()?,
            start,
        },
        "delbackup" => Act::DelBackup(archive()?),
        other => bail!("unknown action {other:?} ({USAGE})"),
    };
    let takes_snap = !matches!(act, Act::Start | Act::Shutdown | Act::Stop | Act::Reboot);
    let may_start = matches!(act, Act::Rollback { .. } | Act::Restore { .. });
    if (snap.is_some() && !takes_snap) || (start && !may_start) {
        bail!("{action} takes only a VMID ({USAGE})");
    }
    Ok((act, vmid))
}

fn target(vmid: u32) -> Result<Target> {
    let owned = |flags: &[&str]| flags.iter().map(|f| f.to_string()).collect::<Vec<_>>();
    let (flags, systemd, engine) = if pve::VMIDS.contains(&vmid) {
        (owned(systemd::RUN_FLAGS), true, None)
    } else if vmid == pve::OPENRC_VMID {
        (owned(openrc::RUN_FLAGS), false, None)
    } else if docker_guests::VMIDS.contains(&vmid) {
        (
            docker_guests::run_flags(vmid)?,
            true,
            Some(super::engines::engine(vmid)?),
        )
    } else {
        bail!(
            "CT {vmid} is not a lab guest of node {} (101–106, {}, 201–204)",
            super::node::NODE,
            pve::OPENRC_VMID
        );
    };
    Ok(Target {
        container: pve::guest_container(vmid)?,
        hostname: format!("ct{vmid}"),
        flags,
        systemd,
        engine,
    })
}

/// `canopy-lab/snap-CONTAINER:SNAPNAME`: one image per guest and snapshot.
fn snapshot_image(container: &str, snap: &str) -> String {
    format!("canopy-lab/snap-{container}:{snap}")
}

fn docker(args: &[&str], secs: u64) -> Result<String> {
    cmd("docker", args)
        .timeout(Duration::from_secs(secs))
        .output()
}

fn act_on(act: &Act, vmid: u32, t: &Target) -> Result<()> {
    let name = t.container.as_str();
    let flags: Vec<&str> = t.flags.iter().map(String::as_str).collect();
    // A Docker guest's engine runs while the guest runs (its socket is mounted at start).
    let engine_start = || t.engine.as_ref().map_or(Ok(()), |e| e.start());
    let engine_stop = || t.engine.as_ref().map_or(Ok(()), |e| e.stop());
    match act {
        Act::Start => {
            engine_start()?;
            start_container(name)?;
            wait_up(t)
        }
        Act::Shutdown => {
            docker(&["stop", "-t", "60", name], 90)?;
            engine_stop()
        }
        Act::Stop => {
            docker(&["stop", "-t", "5", name], 30)?;
            engine_stop()
        }
        Act::Reboot if t.engine.is_some() => {
            docker(&["stop", "-t", "60", name], 90)?;
            engine_stop()?;
            engine_start()?;
            start_container(name)?;
            wait_up(t)
        }
        Act::Reboot => {
            docker(&["restart", "-t", "60", name], 120)?;
            super::guest::wait_machine_id(name)?;
            wait_up(t)
        }
        Act::Snapshot(snap) | Act::Backup(snap) => commit(name, &image_of(name, act, snap)),
        Act::Rollback { snap, start }
        | Act::Restore {
            archive: snap,
            start,
        } => {
            let image = image_of(name, act, snap);
            if !image_exists(&image) {
                bail!(
                    "no {} image {image} for CT {vmid} ('{snap}' is gone)",
                    kind_of(act)
                );
            }
            docker(&["rm", "-f", name], 60)?;
            create_container(name, &image, &t.hostname, &flags)?;
            if *start {
                engine_start()?;
                start_container(name)?;
                wait_up(t)?;
            }
            Ok(())
        }
        Act::DelSnapshot(snap) | Act::DelBackup(snap) => {
            let image = image_of(name, act, snap);
            if !image_exists(&image) {
                bail!("no {} image {image} for CT {vmid} ('{snap}')", kind_of(act));
            }
            // -f untags an image a rolled-back container still runs from.
            docker(&["image", "rm", "-f", &image], 60).map(drop)
        }
    }
}

fn kind_of(act: &Act) -> &'static str {
    match act {
        Act::Backup(_) | Act::Restore { .. } | Act::DelBackup(_) => "backup",
        _ => "snapshot",
    }
}

/// A snapshot's image, or a backup archive's (`canopy-lab/backup-CONTAINER:ARCHIVE`).
fn image_of(container: &str, act: &Act, name: &str) -> String {
    match kind_of(act) {
        "backup" => format!("canopy-lab/backup-{container}:{name}"),
        _ => snapshot_image(container, name),
    }
}

/// `docker commit` of the guest, labelled so `lab up` and `lab down` remove the image.
fn commit(container: &str, image: &str) -> Result<()> {
    let label = format!("LABEL {SNAPSHOT_LABEL}={}", lab_prefix()?);
    docker(&["commit", "--change", &label, container, image], 300).map(drop)
}

fn image_exists(image: &str) -> bool {
    cmd("docker", ["image", "inspect", "--format", "{{.Id}}", image])
        .timeout(Duration::from_secs(30))
        .ok()
}

/// Waits for the guest's init as `lab up` does (systemd booted, or OpenRC's runlevel).
fn wait_up(t: &Target) -> Result<()> {
    if t.systemd {
        systemd::wait_booted(&t.container).map(drop)
    } else {
        openrc::wait_started(&t.container)
    }
}

/// Removes this lab's snapshot images (their containers are gone: `remove_guests`). A snapshot
/// of a rolled-back guest is a child of the image it was rolled back to, and Docker removes a
/// parent only after its children: one pass per generation.
pub(super) fn remove_snapshot_images() -> Result<()> {
    let filter = format!("label={SNAPSHOT_LABEL}={}", lab_prefix()?);
    let mut left = usize::MAX;
    loop {
        let ids = docker(&["images", "-q", "--filter", &filter], 60)?;
        let mut ids: Vec<&str> = ids.split_whitespace().collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(());
        }
        if ids.len() >= left {
            bail!(
                "cannot remove the lab's snapshot images {} (see `docker image rm {}`)",
                ids.join(" "),
                ids[0]
            );
        }
        left = ids.len();
        for id in ids {
            // A parent fails while its children exist; the next pass takes it.
            let _ = cmd("docker", ["image", "rm", "-f", id])
                .timeout(Duration::from_secs(120))
                .ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_actions_and_refuses_bad_ones() {
        assert_eq!(parse(&["start", "101"]).unwrap(), (Act::Start, 101));
        assert_eq!(
            parse(&["rollback", "102", "canopy_op1", "--start"]).unwrap(),
            (
                Act::Rollback {
                    snap: "canopy_op1".into(),
                    start: true
                },
                102
            )
        );
        assert_eq!(
            parse(&["delsnapshot", "103", "s1"]).unwrap(),
            (Act::DelSnapshot("s1".into()), 103)
        );
        assert_eq!(
            parse(&[
                "restore",
                "104",
                "vzdump-lxc-104-2026_12_06-10_30_00.tar.zst",
                "--start"
            ])
            .unwrap(),
            (
                Act::Restore {
                    archive: "vzdump-lxc-104-2026_12_06-10_30_00.tar.zst".into(),
                    start: true
                },
                104
            )
        );
        for bad in [
            &["backup", "101"][..],
            &["backup", "101", "../etc"],
            &["delbackup", "101", "vzdump-x", "--start"],
            &["snapshot", "101"],
            &["start", "101", "x1"],
            &["start", "101", "--start"],
            &["rollback", "101", "1bad"],
            &["launch", "101"],
            &["start", "ct101"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
