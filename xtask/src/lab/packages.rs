//! The demo packages of the lab: parsed from `lab/packages/demo-packages.txt` and built with
//! `dpkg-deb` (architecture `all`, a tiny script and a version file each). A file
//! `lab/packages/NAME.postinst` becomes the postinst of NAME's new version (e.g. a slow one).

use crate::proc::cmd;
use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bump when the way packages are built changes (part of the image cache key).
pub const BUILDER_VERSION: &str = "pkg-v2";

/// One row of the description file.
#[derive(Debug, Clone)]
pub struct DemoPackage {
    pub name: String,
    /// Installed in the image; `None` = only published (a new dependency).
    pub old: Option<String>,
    pub new: String,
    pub suite: String,
    pub depends: Vec<String>,
    pub held: bool,
    /// postinst of the new version, from `lab/packages/NAME.postinst`.
    pub postinst: Option<String>,
}

/// Reads the description and the maintainer scripts. Returns the packages and the text of
/// every input (for the image cache key).
pub fn load(root: &Path) -> Result<(Vec<DemoPackage>, String)> {
    let description = fs::read_to_string(description_path(root))
        .context("read lab/packages/demo-packages.txt")?;
    let mut pkgs = parse(&description)?;
    let mut inputs = description;
    for p in &mut pkgs {
        let script = root
            .join("lab/packages")
            .join(format!("{}.postinst", p.name));
        if script.is_file() {
            let text = fs::read_to_string(&script)?;
            inputs.push_str(&format!("\n--- {}.postinst\n{text}", p.name));
            p.postinst = Some(text);
        }
    }
    Ok((pkgs, inputs))
}

pub fn description_path(root: &Path) -> PathBuf {
    root.join("lab/packages/demo-packages.txt")
}

pub fn parse(text: &str) -> Result<Vec<DemoPackage>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        let [name, old, new, suite, depends, held] = cols[..] else {
            bail!(
                "demo-packages.txt line {}: expected 6 columns, got {}",
                n + 1,
                cols.len()
            );
        };
        let held = match held {
            "yes" => true,
            "no" => false,
            other => bail!(
                "demo-packages.txt line {}: held must be yes|no, not {other:?}",
                n + 1
            ),
        };
        out.push(DemoPackage {
            name: name.to_string(),
            old: (old != "-").then(|| old.to_string()),
            new: new.to_string(),
            suite: suite.to_string(),
            depends: if depends == "-" {
                vec![]
            } else {
                depends.split(',').map(str::to_string).collect()
            },
            held,
            postinst: None,
        });
    }
    Ok(out)
}

/// Builds `name_version_all.deb` into `out_dir` and returns its path.
pub fn build_deb(
    name: &str,
    version: &str,
    depends: &[String],
    postinst: Option<&str>,
    work: &Path,
    out_dir: &Path,
) -> Result<PathBuf> {
    let root = work.join(format!("{name}_{version}"));
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    fs::create_dir_all(root.join("DEBIAN"))?;
    fs::create_dir_all(root.join("usr/bin"))?;
    let share = root.join("usr/share/canopy-demo").join(name);
    fs::create_dir_all(&share)?;
    fs::write(share.join("VERSION"), format!("{version}\n"))?;
    let bin = root.join("usr/bin").join(name);
    fs::write(&bin, format!("#!/bin/sh\necho \"{name} {version}\"\n"))?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;
    let mut control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: Canopy Lab <lab@canopy.invalid>\n\
         Section: misc\nPriority: optional\n"
    );
    if !depends.is_empty() {
        control.push_str(&format!("Depends: {}\n", depends.join(", ")));
    }
    control.push_str(&format!(
        "Description: Canopy lab demo package {name}\n Built by cargo xtask lab.\n"
    ));
    fs::write(root.join("DEBIAN/control"), control)?;
    if let Some(script) = postinst {
        let path = root.join("DEBIAN/postinst");
        fs::write(&path, script)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    }
    fs::create_dir_all(out_dir)?;
    let deb = out_dir.join(format!("{name}_{version}_all.deb"));
    cmd("dpkg-deb", ["--root-owner-group", "-Zgzip", "--build"])
        .arg(&root)
        .arg(&deb)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .timeout(Duration::from_secs(60))
        .output()
        .with_context(|| format!("build {name} {version}"))?;
    fs::remove_dir_all(&root)?;
    Ok(deb)
}
