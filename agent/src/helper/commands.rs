//! The package-manager commands behind each verb: a fixed argv per manager, the validated
//! names and versions appended after it, an environment built from nothing (`PATH`, the C
//! locale, apt's non-interactive front end) and `/` as the working directory. The caller's
//! environment, options and working directory never reach a package manager.
//!
//! Pinned installs, per manager:
//! - apt: `apt-get -y install -- NAME=VERSION…` (requested packages and dependencies).
//! - dnf: `dnf -y install NAME-VERSION…`. The version is the dry-run's `to_version`, i.e. the
//!   transaction table's Version column, `[EPOCH:]VERSION-RELEASE` (`1:3.5.1-4.el9_7`), so the
//!   argument is the `NAME-[EPOCH:]VERSION-RELEASE` form dnf accepts (checked with dnf 4.14:
//!   `canopy-demo-hello-1.1-1` and `canopy-demo-tools-0:2.0-1` both resolve).
//! - apk: `apk add --virtual .canopy-pinned NAME=VERSION…`, then `apk del .canopy-pinned`.
//!   A plain `apk add NAME=VERSION` would write the pin into `/etc/apk/world`, holding the
//!   package at that version for ever; a virtual package holds the pins for the transaction
//!   only, and deleting it afterwards leaves `world` as it was and every package installed
//!   (each is still needed by `world`: Canopy upgrades installed packages).

use super::verbs::{Pin, Verb};
use crate::process::{Cmd, Limit};
use canopy_api_types::updates::PackageManager;
use std::time::Duration;

/// The `PATH` the package managers run with (and where the helper finds them).
pub const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// The helper's own grace between SIGTERM and SIGKILL of its package manager's group;
/// shorter than the agent's ([`crate::process::STOP_GRACE`]), so the helper finishes first.
pub const HELPER_GRACE: Duration = Duration::from_secs(20);

/// The virtual package that holds an apk transaction's pins.
pub const APK_PIN_GROUP: &str = ".canopy-pinned";

/// What an operator can run (and approve as a `repair` command) for each manager.
pub fn repair_line(m: PackageManager) -> Option<&'static str> {
    match m {
        PackageManager::Apt => Some("dpkg --configure -a"),
        PackageManager::Apk => Some("apk fix"),
        _ => None,
    }
}

fn base(program: &str) -> Cmd {
    let mut c = Cmd::new(program)
        .limit(Limit::Unlimited)
        .grace(HELPER_GRACE);
    c.clear_env = true;
    c.dir = Some("/".into());
    c.env("PATH", PATH)
}

/// dpkg and apt: no prompts, no pagers, no needrestart dialog.
fn debian(program: &str) -> Cmd {
    base(program)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("NEEDRESTART_MODE", "l")
        .env("APT_LISTCHANGES_FRONTEND", "none")
}

/// `apt-get -y install`: waits up to two minutes for the dpkg lock (unattended-upgrades may
/// hold it) instead of failing at once; keeps changed config files. `Dpkg::Use-Pty=0`: with
/// its default pty apt starts dpkg in a session of its own, outside the process group a hung
/// transaction's SIGTERM goes to (seen in the lab: apt-get ended, dpkg ran on unsupervised).
fn apt_get_install() -> Cmd {
    debian("apt-get").args([
        "-y",
        "-q",
        "-o",
        "DPkg::Lock::Timeout=120",
        "-o",
        "Dpkg::Use-Pty=0",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        "install",
        "--",
    ])
}

/// `NAME-[EPOCH:]VERSION-RELEASE`, the form dnf resolves to exactly one package.
pub fn dnf_nevra(p: &Pin) -> String {
    format!("{}-{}", p.name, p.version)
}

/// The commands a verb runs, in order (the helper stops at the first that fails). Refused:
/// docker (not a package manager the helper drives), a dnf repair (there is no safe one)
/// and a simulation for apt or apk (they simulate without root).
pub fn commands(verb: &Verb) -> Result<Vec<Cmd>, String> {
    use PackageManager::*;
    let m = verb.manager();
    if m == Docker {
        return Err("docker is not a package manager the helper drives".into());
    }
    Ok(match verb {
        Verb::Refresh(Apt) => vec![debian("apt-get").args(["-q", "update"])],
        Verb::Refresh(Dnf) => vec![base("dnf").args(["-q", "makecache"])],
        Verb::Refresh(_) => vec![base("apk").arg("update")],
        Verb::Simulate { manager, packages } => {
            Verb::simulate(*manager, Vec::new())?;
            vec![base("dnf")
                .args(["--assumeno", "upgrade"])
                .args(packages.iter().cloned())]
        }
        Verb::Install { manager, pins } => match manager {
            Apt => vec![apt_get_install().args(pins.iter().map(Pin::to_string))],
            Dnf => vec![base("dnf")
                .args(["-y", "install"])
                .args(pins.iter().map(dnf_nevra))],
            _ => vec![
                base("apk")
                    .args(["add", "--virtual", APK_PIN_GROUP])
                    .args(pins.iter().map(Pin::to_string)),
                base("apk").args(["del", APK_PIN_GROUP]),
            ],
        },
        Verb::Upgrade { manager, packages } => match manager {
            Apt => vec![apt_get_install().args(packages.iter().cloned())],
            Dnf => vec![base("dnf")
                .args(["-y", "upgrade"])
                .args(packages.iter().cloned())],
            _ => vec![base("apk")
                .args(["add", "--upgrade"])
                .args(packages.iter().cloned())],
        },
        Verb::Audit(Apt) => vec![base("dpkg").arg("--audit")],
        Verb::Audit(Dnf) => vec![base("dnf").args(["-q", "-C", "check"])],
        Verb::Audit(_) => vec![base("apk").args(["fix", "--simulate"])],
        Verb::Repair(Apt) => {
            vec![debian("dpkg").args(["--force-confdef", "--force-confold", "--configure", "-a"])]
        }
        Verb::Repair(m) => {
            Verb::repair(*m)?;
            vec![base("apk").arg("fix")]
        }
    })
}

/// `cmd` with its program resolved in [`PATH`] (an absolute path, so nothing from the
/// caller's `PATH` is used to find it).
pub fn resolved(mut cmd: Cmd) -> Cmd {
    if let Some(p) = crate::process::which_in(&cmd.program, std::ffi::OsStr::new(PATH)) {
        cmd.program = p.display().to_string();
    }
    cmd
}
