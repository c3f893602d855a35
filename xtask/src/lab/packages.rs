//! The demo packages of the lab: parsed from `lab/packages/demo-packages.txt` and built with
//! `dpkg-deb` (architecture `all`, a tiny script and a version file each). A file
//! `lab/packages/NAME.postinst` becomes the postinst of NAME's new version (e.g. a slow one). A
//! directory `lab/packages/NAME/VERSION/` is merged into that version's package (e.g. a systemd
//! unit); its `DEBIAN/postinst`, if any, is that version's postinst. Every new or published
//! version's postinst first appends `NAME VERSION` to [`INSTALL_LOG`], so a test can count how
//! often a version was installed.

use crate::proc::cmd;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bump when the way packages are built changes (part of the image cache key).
pub const BUILDER_VERSION: &str = "pkg-v3";
/// One line `NAME VERSION` per configured install of a new or published version.
pub const INSTALL_LOG: &str = "/var/log/canopy-demo-installs.log";

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
    /// `lab/packages/NAME/VERSION/` trees, by version.
    pub trees: BTreeMap<String, PathBuf>,
}

impl DemoPackage {
    /// The tree merged into `version` (`NAME/VERSION/`), if there is one.
    pub fn tree(&self, version: &str) -> Option<&Path> {
        self.trees.get(version).map(PathBuf::as_path)
    }
}

/// The postinst a version tree brings (`DEBIAN/postinst`), if any.
pub fn tree_postinst(tree: Option<&Path>) -> Result<Option<String>> {
    let Some(path) = tree
        .map(|t| t.join("DEBIAN/postinst"))
        .filter(|p| p.is_file())
    else {
        return Ok(None);
    };
    Ok(Some(fs::read_to_string(path)?))
}

/// The postinst of a new or published version: the install log line, then `body` (the
/// version tree's `DEBIAN/postinst` or `NAME.postinst`) without its `#!` line.
pub fn new_postinst(name: &str, version: &str, body: Option<&str>) -> String {
    let mut script = format!(
        "#!/bin/sh\n# canopy lab: one line per install of {name} {version}.\n\
         if [ \"$1\" = configure ]; then echo \"{name} {version}\" >> {INSTALL_LOG}; fi\n"
    );
    if let Some(body) = body {
        let body = match body.strip_prefix("#!") {
            Some(rest) => rest.split_once('\n').map(|(_, b)| b).unwrap_or(""),
            None => body,
        };
        script.push_str(body);
    }
    script
}

/// Every file below `dir` (sorted, relative paths), for the cache key and the build.
fn files_below(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir)?.to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
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
        let dir = root.join("lab/packages").join(&p.name);
        if dir.is_dir() {
            for entry in fs::read_dir(&dir)? {
                let tree = entry?.path();
                let version = tree.file_name().unwrap_or_default().to_string_lossy();
                if !tree.is_dir() || (p.old.as_deref() != Some(&*version) && *version != p.new) {
                    bail!(
                        "{}: expected only version directories ({:?} or {})",
                        tree.display(),
                        p.old,
                        p.new
                    );
                }
                for file in files_below(&tree)? {
                    let text = fs::read_to_string(tree.join(&file))?;
                    let mode = fs::metadata(tree.join(&file))?.permissions().mode() & 0o111;
                    inputs.push_str(&format!(
                        "\n--- {}/{version}/{} {mode:o}\n{text}",
                        p.name,
                        file.display()
                    ));
                }
                p.trees.insert(version.into_owned(), tree);
            }
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
            trees: BTreeMap::new(),
        });
    }
    Ok(out)
}

/// Builds `name_version_all.deb` into `out_dir` and returns its path; `tree` is merged into
/// the package (all but its `DEBIAN/postinst`, which the caller passes as `postinst`).
pub fn build_deb(
    name: &str,
    version: &str,
    depends: &[String],
    postinst: Option<&str>,
    tree: Option<&Path>,
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
    if let Some(tree) = tree {
        for file in files_below(tree)? {
            if file == Path::new("DEBIAN/postinst") {
                continue;
            }
            let (from, to) = (tree.join(&file), root.join(&file));
            fs::create_dir_all(to.parent().unwrap_or(&root))?;
            fs::copy(&from, &to)?;
            let exec = fs::metadata(&from)?.permissions().mode() & 0o111 != 0;
            fs::set_permissions(
                &to,
                fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 }),
            )?;
        }
    }
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
