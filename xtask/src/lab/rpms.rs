//! The lab's RPM repository for the dnf guest: demo packages described in
//! `lab/packages/demo-rpms.txt`, built on this machine with Debian's `rpmbuild` (noarch, no
//! automatic dependencies: the guest's rpm database holds only these packages), indexed with
//! `createrepo_c`, with advisories in `repodata/updateinfo.xml` added by `modifyrepo_c`.
//! The repository lives in `repo/rpm/` so the apt repository's HTTP server serves both.

use crate::proc::{cmd, have};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bump when the way RPMs or their metadata are built changes (part of the dnf image key).
pub const RPM_BUILDER_VERSION: &str = "rpm-v1";
/// The repository id in the guest's `/etc/yum.repos.d/canopy-lab.repo` (dnf's "repo" column).
pub const REPO_ID: &str = "canopy-lab";
/// Subdirectory of the served repository root.
pub const SUBDIR: &str = "rpm";
/// SOURCE_DATE_EPOCH of every build and the date of every advisory (2023-11-14 22:13:20 UTC).
const EPOCH: &str = "1700000000";
const ADVISORY_DATE: &str = "2023-11-14 22:13:20";

/// One row of the description file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoRpm {
    pub name: String,
    /// `VERSION-RELEASE` installed in the image; `None` = only published (a new dependency).
    pub old: Option<String>,
    pub new: String,
    pub requires: Vec<String>,
    /// `security`, `bugfix` or `enhancement`.
    pub advisory: Option<String>,
}

impl DemoRpm {
    /// The advisory id of the new version, e.g. `CANOPY-LAB-2023-0004` (row number based).
    pub fn advisory_id(&self, row: usize) -> Option<String> {
        self.advisory
            .as_ref()
            .map(|_| format!("CANOPY-LAB-2023-{:04}", row + 1))
    }
}

pub fn description_path(root: &Path) -> PathBuf {
    root.join("lab/packages/demo-rpms.txt")
}

/// Reads the description. Returns the packages and its text (for the image cache key).
pub fn load(root: &Path) -> Result<(Vec<DemoRpm>, String)> {
    let text =
        fs::read_to_string(description_path(root)).context("read lab/packages/demo-rpms.txt")?;
    Ok((parse(&text)?, text))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-._".contains(c))
}

/// `1.0-1` → `("1.0", "1")`; neither part may be empty or hold another `-`.
pub fn split_evr(s: &str) -> Option<(&str, &str)> {
    let (v, r) = s.split_once('-')?;
    let ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+~".contains(c))
    };
    (ok(v) && ok(r)).then_some((v, r))
}

pub fn parse(text: &str) -> Result<Vec<DemoRpm>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("demo-rpms.txt line {}", n + 1);
        let cols: Vec<&str> = line.split_whitespace().collect();
        let [name, old, new, requires, advisory] = cols[..] else {
            bail!("{}: expected 5 columns, got {}", at(), cols.len());
        };
        if !valid_name(name) {
            bail!("{}: bad package name {name:?}", at());
        }
        for v in [old, new] {
            if v != "-" && split_evr(v).is_none() {
                bail!("{}: {v:?} is not VERSION-RELEASE", at());
            }
        }
        if new == "-" {
            bail!("{}: the new version is required", at());
        }
        let requires: Vec<String> = if requires == "-" {
            vec![]
        } else {
            requires.split(',').map(str::to_string).collect()
        };
        if let Some(bad) = requires.iter().find(|r| !valid_name(r)) {
            bail!("{}: bad requirement {bad:?}", at());
        }
        let advisory = match advisory {
            "-" => None,
            "security" | "bugfix" | "enhancement" => Some(advisory.to_string()),
            other => bail!(
                "{}: advisory must be security|bugfix|enhancement|-, not {other:?}",
                at()
            ),
        };
        out.push(DemoRpm {
            name: name.to_string(),
            old: (old != "-").then(|| old.to_string()),
            new: new.to_string(),
            requires,
            advisory,
        });
    }
    Ok(out)
}

/// The spec file of `name` at `evr` (already validated).
fn spec(name: &str, evr: &str, requires: &[String]) -> String {
    let (version, release) = split_evr(evr).unwrap_or((evr, "1"));
    let mut s = format!(
        "Name: {name}\nVersion: {version}\nRelease: {release}\n\
         Summary: Canopy lab demo package {name}\nLicense: MIT\nBuildArch: noarch\n\
         # The guest's rpm database knows only the demo packages: no /bin/sh provides.\n\
         AutoReqProv: no\n"
    );
    if !requires.is_empty() {
        s.push_str(&format!("Requires: {}\n", requires.join(", ")));
    }
    s.push_str(&format!(
        "\n%description\nCanopy lab demo package {name}. Built by cargo xtask lab.\n\n\
         %install\nmkdir -p %{{buildroot}}/usr/bin %{{buildroot}}/usr/share/canopy-demo/{name}\n\
         printf '#!/bin/sh\\necho \"{name} {evr}\"\\n' > %{{buildroot}}/usr/bin/{name}\n\
         chmod 0755 %{{buildroot}}/usr/bin/{name}\n\
         echo '{evr}' > %{{buildroot}}/usr/share/canopy-demo/{name}/VERSION\n\n\
         %files\n/usr/bin/{name}\n/usr/share/canopy-demo/{name}\n"
    ));
    s
}

/// Builds `name-evr.noarch.rpm` into `out_dir` and returns its path.
fn build_rpm(
    name: &str,
    evr: &str,
    requires: &[String],
    work: &Path,
    out_dir: &Path,
) -> Result<PathBuf> {
    let top = work.join(format!("{name}-{evr}"));
    if top.exists() {
        fs::remove_dir_all(&top)?;
    }
    fs::create_dir_all(top.join("tmp"))?;
    let spec_path = top.join(format!("{name}.spec"));
    fs::write(&spec_path, spec(name, evr, requires))?;
    let define = |k: &str, v: &str| format!("{k} {v}");
    cmd("rpmbuild", ["-bb", "--quiet"])
        .args_from(&["--define", &define("_topdir", &top.to_string_lossy())])
        .args_from(&[
            "--define",
            &define("_tmppath", &top.join("tmp").to_string_lossy()),
        ])
        .args_from(&["--define", "_buildhost canopy-lab.invalid"])
        .args_from(&["--define", "use_source_date_epoch_as_buildtime 1"])
        .args_from(&["--define", "clamp_mtime_to_source_date_epoch 1"])
        .arg(&spec_path)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .timeout(Duration::from_secs(120))
        .output()
        .with_context(|| format!("rpmbuild {name} {evr}"))?;
    let file = format!("{name}-{evr}.noarch.rpm");
    let built = top.join("RPMS/noarch").join(&file);
    if !built.is_file() {
        bail!("rpmbuild {name} {evr} did not write {}", built.display());
    }
    fs::create_dir_all(out_dir)?;
    let dest = out_dir.join(&file);
    fs::rename(&built, &dest)?;
    fs::remove_dir_all(&top)?;
    Ok(dest)
}

/// Builds every package: new versions into `repo` (then indexed, with `updateinfo.xml`), old
/// versions into `old_dir` for the image. Both directories are wiped first. Returns the old RPMs.
pub fn build(pkgs: &[DemoRpm], repo: &Path, old_dir: &Path) -> Result<Vec<PathBuf>> {
    for (tool, package) in [
        ("rpmbuild", "rpm"),
        ("createrepo_c", "createrepo-c"),
        ("modifyrepo_c", "createrepo-c"),
    ] {
        if !have(tool) {
            bail!("{tool} not found: the dnf guest's repository needs Debian's {package} (run `cargo xtask prereqs`)");
        }
    }
    for dir in [repo, old_dir] {
        if dir.exists() {
            fs::remove_dir_all(dir)?;
        }
        fs::create_dir_all(dir)?;
    }
    let work = repo.with_extension("work");
    fs::create_dir_all(&work)?;
    let mut old = Vec::new();
    for p in pkgs {
        if let Some(v) = &p.old {
            old.push(build_rpm(&p.name, v, &[], &work, old_dir)?);
        }
        build_rpm(&p.name, &p.new, &p.requires, &work, repo)?;
    }
    fs::remove_dir_all(&work)?;
    cmd("createrepo_c", ["-q", "--no-database"])
        .arg(repo)
        .timeout(Duration::from_secs(120))
        .output()
        .context("createrepo_c")?;
    if pkgs.iter().any(|p| p.advisory.is_some()) {
        let xml = repo.with_extension("updateinfo.xml");
        fs::write(&xml, updateinfo(pkgs))?;
        cmd("modifyrepo_c", ["--mdtype=updateinfo"])
            .arg(&xml)
            .arg(repo.join("repodata"))
            .timeout(Duration::from_secs(60))
            .output()
            .context("modifyrepo_c updateinfo")?;
        fs::remove_file(&xml)?;
    }
    Ok(old)
}

/// `updateinfo.xml`: one advisory per package that has one, for its new version.
pub fn updateinfo(pkgs: &[DemoRpm]) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<updates>\n");
    for (row, p) in pkgs.iter().enumerate() {
        let (Some(kind), Some(id)) = (&p.advisory, p.advisory_id(row)) else {
            continue;
        };
        let (version, release) = split_evr(&p.new).unwrap_or((&p.new, "1"));
        let severity = if kind == "security" {
            "    <severity>Important</severity>\n"
        } else {
            ""
        };
        s.push_str(&format!(
            "  <update from=\"lab@canopy.invalid\" status=\"stable\" type=\"{kind}\" version=\"1\">\n\
             \x20   <id>{id}</id>\n\
             \x20   <title>{name} {kind} update</title>\n\
             {severity}\
             \x20   <issued date=\"{ADVISORY_DATE}\"/>\n\
             \x20   <updated date=\"{ADVISORY_DATE}\"/>\n\
             \x20   <description>Canopy lab: a made-up {kind} advisory for {name} {new}.</description>\n\
             \x20   <references/>\n\
             \x20   <pkglist>\n\
             \x20     <collection short=\"{REPO_ID}\">\n\
             \x20       <name>Canopy lab</name>\n\
             \x20       <package name=\"{name}\" version=\"{version}\" release=\"{release}\" epoch=\"0\" arch=\"noarch\">\n\
             \x20         <filename>{name}-{new}.noarch.rpm</filename>\n\
             \x20       </package>\n\
             \x20     </collection>\n\
             \x20   </pkglist>\n\
             \x20 </update>\n",
            name = p.name,
            new = p.new,
        ));
    }
    s.push_str("</updates>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_committed_description() {
        let root = crate::state::repo_root().expect("root");
        let (pkgs, _) = load(&root).expect("load");
        let tools = pkgs
            .iter()
            .find(|p| p.name == "canopy-demo-tools")
            .expect("tools");
        assert_eq!(tools.requires, ["canopy-demo-libextra"]);
        let dep = pkgs
            .iter()
            .find(|p| p.name == "canopy-demo-libextra")
            .expect("dep");
        assert!(dep.old.is_none());
        assert!(pkgs
            .iter()
            .any(|p| p.advisory.as_deref() == Some("security")));
    }

    #[test]
    fn rejects_bad_rows() {
        assert!(parse("a 1.0 1.1-1 - -\n").is_err(), "no release");
        assert!(parse("a 1.0-1 1.1-1 - urgent\n").is_err());
        assert!(parse("a;b 1.0-1 1.1-1 - -\n").is_err());
        assert!(parse("a 1.0-1 1.1-1 -\n").is_err());
    }

    #[test]
    fn updateinfo_names_the_new_version() {
        let pkgs = parse("x 1.0-1 1.0-2 - security\ny 1-1 2-1 - -\n").expect("parse");
        let xml = updateinfo(&pkgs);
        assert!(xml.contains("type=\"security\""), "{xml}");
        assert!(xml.contains("<id>CANOPY-LAB-2023-0001</id>"));
        assert!(xml.contains("name=\"x\" version=\"1.0\" release=\"2\""));
        assert!(!xml.contains("name=\"y\""));
        assert!(spec("x", "1.0-2", &["y".into()]).contains("Requires: y\n"));
    }
}
