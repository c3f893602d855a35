//! The dnf guest: the image `canopy-lab/dnf:bookworm` is the debootstrapped Debian base plus
//! Debian's own `dnf` (4.14) and `rpm` (4.18), installed in the chroot from the same mirror
//! debootstrap used (cached as a second tarball keyed by its recipe). dnf manages an rpm database
//! of its own in `/var/lib/rpm` (Debian's rpm defaults to `~/.rpmdb`), holding only the old demo
//! RPMs (`rpm -i` at build time); its one repository, written at guest start, is the lab's
//! RPM repository on 127.0.0.1. No apt sources, no demo debs: apt is present but idle.

use super::base::{chroot, remove_tree, unpack, Extended};
use super::image::{self, INIT, INIT_CMD};
use super::rpms::{DemoRpm, REPO_ID, RPM_BUILDER_VERSION};
use crate::proc::cmd;
use crate::state::{json_str, StableHash};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const IMAGE: &str = "canopy-lab/dnf:bookworm";
/// The base plus Debian's dnf and rpm (their dependencies come along, recommends do not).
const DNF_BASE: Extended = Extended {
    prefix: "dnf-base",
    recipe: "dnf-image-v1",
    packages: &["dnf", "rpm"],
};
const REPO_FILE: &str = "/etc/yum.repos.d/canopy-lab.repo";

/// One system-wide rpm database, the same for rpm, dnf and every user.
const RPM_MACROS: &str =
    "# canopy lab: one system-wide rpm database (Debian's rpm defaults to ~/.rpmdb)\n\
%_dbpath /var/lib/rpm\n";
/// dnf's main config. `skip_if_unavailable=False`: an unreachable lab repository must fail
/// loudly instead of looking like "no updates".
const DNF_CONF: &str = "# canopy lab (written by cargo xtask lab)\n[main]\n\
gpgcheck=True\ninstallonly_limit=3\nclean_requirements_on_remove=True\nbest=False\n\
skip_if_unavailable=False\nreposdir=/etc/yum.repos.d\n";
/// dnf cannot detect a release version on Debian (no `system-release(releasever)` provide) and
/// says so on every run; a dnf variable file answers it.
const RELEASEVER: &str = "12\n";

/// The content hash of the image: dnf base recipe + RPM description + builder + config + init.
pub fn image_key(rpm_description: &str) -> String {
    let mut h = StableHash::new();
    for part in [
        DNF_BASE.key().as_str(),
        rpm_description,
        RPM_BUILDER_VERSION,
        RPM_MACROS,
        DNF_CONF,
        RELEASEVER,
        INIT,
    ] {
        h.update(part.as_bytes());
    }
    h.hex()
}

/// Makes sure the image with hash `key` exists; builds it otherwise. Returns seconds spent
/// building (0 when cached).
pub fn ensure(key: &str, old_rpms: &[PathBuf]) -> Result<f64> {
    image::ensure_image(IMAGE, key, || {
        let root = unpack(&DNF_BASE.tarball()?, "dnfroot")?;
        customise(&root, old_rpms)?;
        image::finish_root(&root)?;
        image::import(&root, IMAGE, key, INIT_CMD)
    })
}

fn customise(root: &Path, old_rpms: &[PathBuf]) -> Result<()> {
    fs::create_dir_all(root.join("etc/rpm"))?;
    fs::write(root.join("etc/rpm/macros.canopy-lab"), RPM_MACROS)?;
    fs::create_dir_all(root.join("etc/dnf/vars"))?;
    fs::write(root.join("etc/dnf/dnf.conf"), DNF_CONF)?;
    fs::write(root.join("etc/dnf/vars/releasever"), RELEASEVER)?;
    let repos = root.join("etc/yum.repos.d");
    remove_tree(&repos)?;
    fs::create_dir_all(&repos)?;
    chroot(root, &["rpm", "--initdb"])
        .timeout(Duration::from_secs(60))
        .output()
        .context("rpm --initdb in the dnf image")?;
    let dir = root.join("tmp/canopy-rpms");
    fs::create_dir_all(&dir)?;
    let mut args = vec!["rpm", "-i", "--force-debian"];
    let mut inside = Vec::new();
    for rpm in old_rpms {
        let name = rpm.file_name().context("rpm without a name")?;
        fs::copy(rpm, dir.join(name))?;
        inside.push(format!("/tmp/canopy-rpms/{}", name.to_string_lossy()));
    }
    if !inside.is_empty() {
        args.extend(inside.iter().map(String::as_str));
        chroot(root, &args)
            .timeout(Duration::from_secs(120))
            .output()
            .context("rpm -i in the dnf image")?;
    }
    remove_tree(&dir)?;
    Ok(())
}

/// The guest's only repository: the lab's RPM repository at `rpm_url`.
pub fn repo_file(rpm_url: &str) -> String {
    format!(
        "# written by `cargo xtask lab up`\n[{REPO_ID}]\nname=Canopy lab\nbaseurl={rpm_url}\n\
         enabled=1\ngpgcheck=0\nrepo_gpgcheck=0\nskip_if_unavailable=False\n"
    )
}

/// Points the running guest `name` at `rpm_url` and fetches the metadata.
pub fn configure_guest(name: &str, rpm_url: &str) -> Result<()> {
    cmd(
        "docker",
        [
            "exec",
            "-i",
            name,
            "sh",
            "-c",
            &format!("cat > {REPO_FILE}"),
        ],
    )
    .stdin(repo_file(rpm_url))
    .timeout(Duration::from_secs(30))
    .output()?;
    cmd("docker", ["exec", name, "dnf", "-q", "makecache"])
        .timeout(Duration::from_secs(120))
        .output()
        .with_context(|| format!("dnf makecache in {name}"))?;
    Ok(())
}

/// Each installed demo RPM must be at its old version with the new one offered by
/// `dnf check-update`, and every security advisory must be listed.
pub fn verify_guest(name: &str, pkgs: &[DemoRpm]) -> Result<()> {
    let installed: Vec<&DemoRpm> = pkgs.iter().filter(|p| p.old.is_some()).collect();
    let names: Vec<&str> = installed.iter().map(|p| p.name.as_str()).collect();
    let q = cmd(
        "docker",
        [
            "exec",
            name,
            "rpm",
            "-q",
            "--qf",
            "%{NAME} %{VERSION}-%{RELEASE}\\n",
        ],
    )
    .args_from(&names)
    .timeout(Duration::from_secs(30))
    .output()?;
    let have: HashMap<&str, &str> = q.lines().filter_map(|l| l.split_once(' ')).collect();
    let cu = cmd("docker", ["exec", name, "dnf", "-q", "check-update"])
        .timeout(Duration::from_secs(120))
        .capture()?;
    if cu.status.code() != Some(100) {
        bail!(
            "guest {name}: `dnf check-update` exited {} (expected 100, updates available):\n{}{}",
            cu.status,
            cu.stdout,
            cu.stderr
        );
    }
    let offered: HashMap<&str, &str> = cu
        .stdout
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (na, evr) = (f.next()?, f.next()?);
            Some((na.strip_suffix(".noarch")?, evr))
        })
        .collect();
    for p in &installed {
        let (now, next) = (have.get(p.name.as_str()), offered.get(p.name.as_str()));
        if now.copied() != p.old.as_deref() || next.copied() != Some(p.new.as_str()) {
            bail!(
                "guest {name}: {} installed {now:?}, dnf offers {next:?}; expected {:?} -> {}",
                p.name,
                p.old,
                p.new
            );
        }
    }
    let security = cmd(
        "docker",
        [
            "exec",
            name,
            "dnf",
            "-q",
            "updateinfo",
            "list",
            "--security",
        ],
    )
    .timeout(Duration::from_secs(60))
    .output()?;
    for p in installed
        .iter()
        .filter(|p| p.advisory.as_deref() == Some("security"))
    {
        let nevra = format!("{}-{}.noarch", p.name, p.new);
        if !security.lines().any(|l| l.ends_with(&nevra)) {
            bail!("guest {name}: no security advisory for {nevra} in:\n{security}");
        }
    }
    Ok(())
}

/// The `"dnf"` object of lab.json.
pub fn json_section(rpm_url: &str, guests: &[String], pkgs: &[DemoRpm]) -> String {
    let guests: Vec<String> = guests.iter().map(|g| json_str(g)).collect();
    let mut entries = Vec::new();
    for (row, p) in pkgs.iter().enumerate() {
        let Some(old) = &p.old else { continue };
        let new_dep = p
            .requires
            .iter()
            .find(|d| pkgs.iter().any(|q| &q.name == *d && q.old.is_none()));
        let opt = |s: Option<&str>| s.map(json_str).unwrap_or_else(|| "null".into());
        entries.push(format!(
            "      {}: {{ \"old\": {}, \"new\": {}, \"arch\": \"noarch\", \"advisory\": {}, \
             \"advisory_id\": {}, \"security\": {}, \"new_dependency\": {} }}",
            json_str(&p.name),
            json_str(old),
            json_str(&p.new),
            opt(p.advisory.as_deref()),
            opt(p.advisory_id(row).as_deref()),
            p.advisory.as_deref() == Some("security"),
            opt(new_dep.map(String::as_str)),
        ));
    }
    format!(
        "{{\n    \"image\": {},\n    \"repo_url\": {},\n    \"repo_id\": {},\n    \"guests\": [{}],\n    \
         \"packages\": {{\n{}\n    }}\n  }}",
        json_str(IMAGE),
        json_str(rpm_url),
        json_str(REPO_ID),
        guests.join(", "),
        entries.join(",\n"),
    )
}
