//! apt scanner: `apt list --upgradable` (it names the candidate's suites, so a suite
//! ending in `-security` marks a security update) plus `apt-mark showhold` for held
//! packages. Held packages do appear in `apt list --upgradable` (checked on Debian 12)
//! and are reported with `held = true`.

use super::{lines, ScanOptions};
use crate::process::{run, Cmd};
use anyhow::Context;
use canopy_api_types::updates::{PackageManager, PackageUpdate, Severity};
use std::collections::HashSet;
use std::time::Duration;

/// One row of `apt list --upgradable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptUpgradable {
    pub package: String,
    /// Suites (archives) the candidate is available from: `bookworm`, `bookworm-security`.
    pub suites: Vec<String>,
    pub candidate: String,
    pub arch: String,
    pub installed: String,
}

impl AptUpgradable {
    pub fn is_security(&self) -> bool {
        self.suites.iter().any(|s| is_security_suite(s))
    }

    /// The suite shown as the update's source: the security suite when there is one.
    pub fn source(&self) -> Option<String> {
        self.suites
            .iter()
            .find(|s| is_security_suite(s))
            .or_else(|| self.suites.first())
            .cloned()
    }

    pub fn into_update(self, held: &HashSet<String>) -> PackageUpdate {
        let severity = if self.is_security() {
            Severity::Security
        } else {
            Severity::Normal
        };
        PackageUpdate {
            manager: PackageManager::Apt,
            held: held.contains(&self.package),
            source: self.source(),
            package: self.package,
            current_version: self.installed,
            available_version: self.candidate,
            arch: Some(self.arch),
            severity,
        }
    }
}

/// A suite, archive or origin label that carries security updates
/// (`bookworm-security`, `jammy-security`, `Debian-Security`).
pub fn is_security_suite(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    l.ends_with("-security") || l == "debian-security"
}

/// Parse `apt list --upgradable`:
/// `name/suite1,suite2 newver arch [upgradable from: oldver]`.
/// The `Listing...` header and apt's CLI warning are skipped; a line that does not
/// have this shape is an error naming the line (the format changed: better to say
/// so than to report nothing).
pub fn parse_list_upgradable(text: &str) -> anyhow::Result<Vec<AptUpgradable>> {
    let mut out = Vec::new();
    for line in lines(text) {
        let t = line.trim();
        if t.starts_with("Listing...") || t.starts_with("WARNING:") || t.starts_with("N: ") {
            continue;
        }
        out.push(parse_list_line(t).with_context(|| format!("unexpected apt list line: {t:?}"))?);
    }
    Ok(out)
}

fn parse_list_line(line: &str) -> anyhow::Result<AptUpgradable> {
    let (head, rest) = line
        .split_once(" [upgradable from: ")
        .context("no `[upgradable from: …]`")?;
    // `oldver]` — newer apt may append `, phased N%` or similar before the bracket.
    let installed = rest
        .trim_end_matches(']')
        .split([',', ' '])
        .next()
        .filter(|v| !v.is_empty())
        .context("empty installed version")?;
    let mut fields = head.split_whitespace();
    let name_suites = fields.next().context("no package field")?;
    let candidate = fields.next().context("no candidate version")?;
    let arch = fields.next().context("no architecture")?;
    let (package, suites) = name_suites
        .split_once('/')
        .context("no `/suite` after the package name")?;
    Ok(AptUpgradable {
        package: package.to_string(),
        suites: suites
            .split(',')
            .filter(|s| !s.is_empty() && *s != "now")
            .map(String::from)
            .collect(),
        candidate: candidate.to_string(),
        arch: arch.to_string(),
        installed: installed.to_string(),
    })
}

/// Parse `apt-mark showhold`: one package name per line (possibly `name:arch`).
pub fn parse_showhold(text: &str) -> HashSet<String> {
    lines(text)
        .map(|l| {
            let l = l.trim();
            l.split_once(':').map(|(n, _)| n).unwrap_or(l).to_string()
        })
        .collect()
}

/// `apt list --upgradable` (read-only).
pub fn list_cmd(timeout: Duration) -> Cmd {
    Cmd::new("apt")
        .args(["list", "--upgradable"])
        .timeout(timeout)
}

/// `apt-mark showhold` (read-only: it only reads dpkg's status, so no sudo is needed).
pub fn showhold_cmd(timeout: Duration) -> Cmd {
    Cmd::new("apt-mark").arg("showhold").timeout(timeout)
}

/// Scan with apt. `refresh` runs `apt-get update` first.
pub async fn scan(opts: &ScanOptions) -> anyhow::Result<Vec<PackageUpdate>> {
    if opts.refresh {
        crate::scan::refresh(PackageManager::Apt, opts.timeout).await?;
    }
    let list = run(&list_cmd(opts.timeout)).await?.check(&[])?;
    let held = run(&showhold_cmd(opts.timeout)).await?.check(&[])?;
    let held = parse_showhold(&held.stdout);
    Ok(parse_list_upgradable(&list.stdout)?
        .into_iter()
        .map(|u| u.into_update(&held))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../tests/fixtures/apt-list-upgradable-bookworm.txt");

    #[test]
    fn parses_real_bookworm_output() {
        let rows = parse_list_upgradable(FIXTURE).expect("parses");
        assert_eq!(rows.len(), 80, "every package line, not the header");
        let bash = rows.iter().find(|r| r.package == "bash").expect("bash");
        assert_eq!(bash.candidate, "5.2.15-2+b13");
        assert_eq!(bash.installed, "5.2.15-2+b8");
        assert_eq!(bash.arch, "amd64");
        assert_eq!(bash.suites, vec!["oldstable"]);
        assert!(!bash.is_security());

        // Candidate only in the security suite.
        let gnutls = rows
            .iter()
            .find(|r| r.package == "libgnutls30")
            .expect("gnutls");
        assert!(gnutls.is_security());
        assert_eq!(gnutls.source().as_deref(), Some("oldstable-security"));

        // Candidate in both the point release and the security suite.
        let cups = rows.iter().find(|r| r.package == "libcups2").expect("cups");
        assert_eq!(cups.suites, vec!["oldstable", "oldstable-security"]);
        assert!(cups.is_security());

        let common = rows
            .iter()
            .find(|r| r.package == "libgdk-pixbuf2.0-common")
            .expect("arch all");
        assert_eq!(common.arch, "all");
        let security = rows.iter().filter(|r| r.is_security()).count();
        assert!(security >= 10, "{security}");
    }

    #[test]
    fn held_packages_are_flagged() {
        let rows = parse_list_upgradable(FIXTURE).expect("parses");
        let held = parse_showhold("libaom3\nbash:amd64\n");
        let updates: Vec<_> = rows.into_iter().map(|r| r.into_update(&held)).collect();
        let aom = updates
            .iter()
            .find(|u| u.package == "libaom3")
            .expect("aom");
        assert!(aom.held);
        assert!(
            updates
                .iter()
                .find(|u| u.package == "bash")
                .expect("bash")
                .held
        );
        assert!(
            !updates
                .iter()
                .find(|u| u.package == "dpkg")
                .expect("dpkg")
                .held
        );
        assert_eq!(aom.severity, Severity::Normal);
    }

    #[test]
    fn ubuntu_style_lines_and_garbage() {
        let rows = parse_list_upgradable(
            "Listing... Done\nopenssl/jammy-updates,jammy-security 3.0.2-0ubuntu1.15 amd64 [upgradable from: 3.0.2-0ubuntu1.14]\n",
        )
        .expect("parses");
        assert_eq!(rows[0].source().as_deref(), Some("jammy-security"));
        let err = parse_list_upgradable("something else entirely\n").unwrap_err();
        assert!(format!("{err:#}").contains("something else entirely"));
        assert!(parse_list_upgradable("Listing...\n")
            .expect("empty")
            .is_empty());
    }
}
