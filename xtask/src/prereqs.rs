//! `cargo xtask prereqs`: installs what the test suite needs on a fresh machine, and costs
//! only a few checks on a warm one. Every item is probed first (`command -v`, a known path,
//! `rustup target list --installed`); only what is missing is installed, and each install is
//! printed.

use crate::proc::{cmd, have};
use crate::state;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// One Debian package and how to tell whether what we need from it is already here.
struct AptNeed {
    package: &'static str,
    present: fn() -> bool,
    /// A server the lab runs itself on 127.0.0.1: apt must not start the package's own
    /// service (on 0.0.0.0:5000, :80) when it installs it.
    lab_server: bool,
}

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

const APT_NEEDS: &[AptNeed] = &[
    AptNeed {
        package: "docker.io",
        present: || have("dockerd") && have("containerd"),
        lab_server: false,
    },
    AptNeed {
        package: "debootstrap",
        present: || have("debootstrap"),
        lab_server: false,
    },
    AptNeed {
        package: "musl-tools",
        present: || have("musl-gcc"),
        lab_server: false,
    },
    AptNeed {
        package: "postgresql-15",
        present: || Path::new(PG_BIN).join("initdb").is_file(),
        lab_server: false,
    },
    AptNeed {
        package: "dpkg-dev",
        present: || have("dpkg-scanpackages"),
        lab_server: false,
    },
    AptNeed {
        package: "apt-utils",
        present: || have("apt-ftparchive"),
        lab_server: false,
    },
    // The lab's RPM repository for the dnf guest: rpmbuild, createrepo_c and modifyrepo_c.
    // (dnf itself runs only inside the guest image, installed there from the Debian mirror.)
    AptNeed {
        package: "rpm",
        present: || have("rpmbuild"),
        lab_server: false,
    },
    AptNeed {
        package: "createrepo-c",
        present: || have("createrepo_c") && have("modifyrepo_c"),
        lab_server: false,
    },
    // The lab's PVE node stand-in: a key pair for it, and `lab up`'s self-check over ssh.
    AptNeed {
        package: "openssh-client",
        present: || have("ssh") && have("ssh-keygen"),
        lab_server: false,
    },
    // The web dashboard's browser tests (server/tests/web_browser.rs, web_e2e.rs).
    AptNeed {
        package: "chromium",
        present: || have("chromium"),
        lab_server: false,
    },
    AptNeed {
        package: "chromium-driver",
        present: || have("chromedriver"),
        lab_server: false,
    },
    AptNeed {
        package: "procps",
        present: || have("ps"),
        lab_server: false,
    },
    AptNeed {
        package: "python3",
        present: || have("python3"),
        lab_server: false,
    },
    AptNeed {
        package: "passwd",
        present: || have("useradd"),
        lab_server: false,
    },
    AptNeed {
        package: "util-linux",
        present: || have("runuser"),
        lab_server: false,
    },
    // The lab's Docker part (`lab up --docker-guests`): the registry, its rate-limiting front,
    // the static busybox its images are made of, and docker-compose 1.29 (also installed in the
    // Docker guests' image).
    AptNeed {
        package: "docker-registry",
        present: || have("docker-registry"),
        lab_server: true,
    },
    AptNeed {
        package: "nginx",
        present: || have("nginx") || Path::new("/usr/sbin/nginx").is_file(),
        lab_server: true,
    },
    AptNeed {
        package: "busybox-static",
        present: static_busybox,
        lab_server: false,
    },
    AptNeed {
        package: "docker-compose",
        present: || have("docker-compose"),
        lab_server: false,
    },
];

/// `/bin/busybox` is there and statically linked (the `busybox` package's is not).
fn static_busybox() -> bool {
    Path::new("/bin/busybox").is_file()
        && cmd("ldd", ["/bin/busybox"])
            .capture()
            .is_ok_and(|o| !o.status.success() && (o.stdout + &o.stderr).contains("not a dynamic"))
}

const RUST_TARGETS: &[&str] = &["x86_64-unknown-linux-musl"];

/// Installs whatever is missing. With `strict` (CI), failing to install is an error;
/// otherwise it is a warning and the suite runs what it can.
pub fn run(strict: bool) -> Result<()> {
    let started = Instant::now();
    let result = install_missing();
    match result {
        Ok(()) => {
            println!(
                "xtask: prereqs ready in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(err) if !strict => {
            eprintln!("xtask: warning: prerequisites incomplete (not CI, continuing): {err:#}");
            Ok(())
        }
        Err(err) => Err(err),
    }
}

fn install_missing() -> Result<()> {
    let missing = |servers: bool| -> Vec<&str> {
        APT_NEEDS
            .iter()
            .filter(|n| n.lab_server == servers && !(n.present)())
            .map(|n| n.package)
            .collect()
    };
    let (packages, servers) = (missing(false), missing(true));
    if !packages.is_empty() || !servers.is_empty() {
        if !packages.is_empty() {
            apt_install(&packages)?;
        }
        if !servers.is_empty() {
            without_service_starts(|| apt_install(&servers))?;
        }
        let still: Vec<&str> = APT_NEEDS
            .iter()
            .filter(|n| !(n.present)())
            .map(|n| n.package)
            .collect();
        if !still.is_empty() {
            bail!("installed but still not usable: {}", still.join(", "));
        }
    }
    rust_targets()
}

/// Runs `f` with a `policy-rc.d` that forbids service starts (Debian's way to keep apt from
/// starting a package's daemon), unless the machine has one of its own.
fn without_service_starts(f: impl FnOnce() -> Result<()>) -> Result<()> {
    let policy = Path::new("/usr/sbin/policy-rc.d");
    if policy.exists() || !is_root() {
        return f();
    }
    std::fs::write(
        policy,
        "#!/bin/sh\n# cargo xtask prereqs: no service starts while it installs the lab's servers.\nexit 101\n",
    )?;
    std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let result = f();
    std::fs::remove_file(policy)?;
    result
}

fn apt_install(packages: &[&str]) -> Result<()> {
    if !is_root() {
        bail!(
            "need root to install {} (run `cargo xtask prereqs` as root)",
            packages.join(" ")
        );
    }
    println!("xtask: installing apt packages: {}", packages.join(" "));
    cmd("apt-get", ["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .timeout(Duration::from_secs(600))
        .output()
        .context("apt-get update")?;
    let mut args = vec!["install", "-y", "-q", "-o", "Dpkg::Use-Pty=0"];
    args.extend_from_slice(packages);
    let out = cmd("apt-get", &args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .timeout(Duration::from_secs(1500))
        .output()
        .context("apt-get install")?;
    let summary = out
        .lines()
        .find(|l| l.contains("newly installed"))
        .unwrap_or("done");
    println!("xtask: apt: {summary}");
    Ok(())
}

fn rust_targets() -> Result<()> {
    if !have("rustup") {
        bail!("rustup not found: cannot add {}", RUST_TARGETS.join(", "));
    }
    let root = state::repo_root()?;
    let installed = cmd("rustup", ["target", "list", "--installed"])
        .current_dir(&root)
        .output()?;
    for target in RUST_TARGETS {
        if installed.lines().any(|l| l.trim() == *target) {
            continue;
        }
        println!("xtask: rustup target add {target}");
        cmd("rustup", ["target", "add", target])
            .current_dir(&root)
            .timeout(Duration::from_secs(900))
            .output()?;
    }
    Ok(())
}

/// Effective uid 0, read from /proc (no libc dependency).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
