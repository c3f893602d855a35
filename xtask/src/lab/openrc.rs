//! The PVE guest image `canopy-lab/debian-openrc:bookworm`: the guest image (base + old demo
//! packages, no apt sources) with Debian's `openrc` instead of systemd and no sudo, so a deploy
//! takes the OpenRC path and runs the agent as root. OpenRC is not PID 1: the container's
//! command writes a machine-id, marks OpenRC as booted (`/run/openrc/softlevel`), starts the
//! `default` runlevel with `openrc default` and idles, under Docker's `--init` (which reaps
//! stopped daemons; `sleep` as PID 1 would leave zombies that still look alive). `rc_sys="docker"` makes OpenRC skip what
//! a container cannot do; ssh is taken out of every runlevel (all containers share the host
//! network, and port 22 is not ours).

use super::base::{chroot, unpack, Extended};
use super::image::{self, machine_id_sh, INIT};
use super::packages::{DemoPackage, BUILDER_VERSION};
use crate::proc::cmd;
use crate::state::StableHash;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const IMAGE: &str = "canopy-lab/debian-openrc:bookworm";
const OPENRC_BASE: Extended = Extended {
    prefix: "openrc-base",
    recipe: "openrc-image-v1",
    packages: &["openrc"],
};
const INIT_PATH: &str = "usr/local/sbin/canopy-lab-openrc-init";
const CMD: &str = "[\"/usr/local/sbin/canopy-lab-openrc-init\"]";
/// The container's command: a machine-id of its own, OpenRC's default runlevel, then idle.
const OPENRC_INIT: &str = concat!(
    "#!/bin/sh\n# canopy lab PVE guest: a machine-id of its own, OpenRC's default runlevel, idle.\n",
    machine_id_sh!(),
    "mkdir -p /run/openrc && touch /run/openrc/softlevel\n\
     openrc default\n\
     exec sleep infinity\n"
);
/// `docker run` flags: Docker's init as PID 1 reaps the daemons OpenRC starts and stops.
pub const RUN_FLAGS: &[&str] = &["--init"];
/// Appended to `/etc/rc.conf`.
const RC_CONF: &str =
    "\n# canopy lab: OpenRC runs inside a Docker container, not as init.\nrc_sys=\"docker\"\n";

/// The content hash of the image: OpenRC base + demo packages + builder + init changes.
pub fn image_key(description: &str) -> String {
    let mut h = StableHash::new();
    for part in [
        OPENRC_BASE.key().as_str(),
        description,
        BUILDER_VERSION,
        INIT,
        OPENRC_INIT,
        RC_CONF,
        CMD,
        &RUN_FLAGS.join(","),
    ] {
        h.update(part.as_bytes());
    }
    h.hex()
}

/// Makes sure the image with hash `key` exists. Returns seconds spent building.
pub fn ensure(key: &str, pkgs: &[DemoPackage], old_debs: &[PathBuf]) -> Result<f64> {
    image::ensure_image(IMAGE, key, || {
        let root = unpack(&OPENRC_BASE.tarball()?, "openrcroot")?;
        image::install_demo_debs(&root, pkgs, old_debs)?;
        configure(&root)?;
        image::finish_root(&root)?;
        image::write_exec(&root, INIT_PATH, OPENRC_INIT)?;
        image::import(&root, IMAGE, key, CMD)
    })
}

/// `rc_sys="docker"` and no ssh in any runlevel.
fn configure(root: &Path) -> Result<()> {
    let conf = root.join("etc/rc.conf");
    let mut text = fs::read_to_string(&conf).context("the openrc image has no /etc/rc.conf")?;
    text.push_str(RC_CONF);
    fs::write(&conf, text)?;
    chroot(
        root,
        &[
            "sh",
            "-c",
            "for l in /etc/runlevels/*/ssh; do [ -e \"$l\" ] && rm -f \"$l\"; done; true",
        ],
    )
    .timeout(Duration::from_secs(30))
    .output()
    .context("take ssh out of the runlevels")?;
    Ok(())
}

/// Waits until `openrc default` in `name` has finished: `rc-status` answers and no service of
/// the runlevel is still starting.
pub fn wait_started(name: &str) -> Result<()> {
    let done = || {
        cmd("docker", ["exec", name, "sh", "-c", "rc-status default"])
            .timeout(Duration::from_secs(10))
            .output()
            .map(|out| !out.contains("starting"))
            .unwrap_or(false)
    };
    if !crate::proc::poll(Duration::from_secs(60), Duration::from_millis(200), done) {
        bail!("OpenRC in {name} did not come up (`rc-status default` never settled)");
    }
    Ok(())
}
