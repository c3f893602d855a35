//! apk scanner (Alpine): `apk list -u` (`name-newver arch {origin} (license)
//! [upgradable from: name-oldver]`), with `apk version -l '<'` as the fallback for
//! apk-tools that have no `list`. Alpine publishes no security flag per package.

use super::{lines, ScanOptions};
use crate::process::{run, Cmd};
use canopy_api_types::updates::{PackageManager, PackageUpdate, Severity};
use std::time::Duration;

/// Split an apk `name-version-rN` into `(name, "version-rN")`.
pub fn split_pkgver(s: &str) -> Option<(&str, &str)> {
    let (rest, release) = s.rsplit_once('-')?;
    if !release.starts_with('r') {
        return None;
    }
    let (name, _version) = rest.rsplit_once('-')?;
    Some((name, &s[name.len() + 1..]))
}

/// Parse `apk list -u` / `apk list --upgradable`.
pub fn parse_list_upgradable(text: &str) -> Vec<PackageUpdate> {
    let mut out = Vec::new();
    for line in lines(text) {
        let t = line.trim();
        let Some((head, from)) = t.split_once("[upgradable from: ") else {
            continue;
        };
        let mut fields = head.split_whitespace();
        let Some((name, new)) = fields.next().and_then(split_pkgver) else {
            continue;
        };
        let arch = fields.next().map(String::from);
        let old = from.trim_end_matches(']');
        let old = split_pkgver(old).map(|(_, v)| v).unwrap_or(old);
        out.push(update(name, old, new, arch));
    }
    out
}

/// Parse `apk version -l '<'`: `name-oldver   < newver` after an `Installed:` header.
pub fn parse_version_list(text: &str) -> Vec<PackageUpdate> {
    let mut out = Vec::new();
    for line in lines(text) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 3 || fields[1] != "<" {
            continue;
        }
        if let Some((name, old)) = split_pkgver(fields[0]) {
            out.push(update(name, old, fields[2], None));
        }
    }
    out
}

fn update(name: &str, old: &str, new: &str, arch: Option<String>) -> PackageUpdate {
    PackageUpdate {
        manager: PackageManager::Apk,
        package: name.to_string(),
        current_version: old.to_string(),
        available_version: new.to_string(),
        arch,
        source: None,
        severity: Severity::Normal,
        held: false,
    }
}

/// `apk list -u` (read-only).
pub fn list_cmd(timeout: Duration) -> Cmd {
    Cmd::new("apk").args(["list", "-u"]).timeout(timeout)
}

/// `apk version -l '<'` (read-only), for apk-tools without `list`.
pub fn version_cmd(timeout: Duration) -> Cmd {
    Cmd::new("apk")
        .args(["version", "-l", "<"])
        .timeout(timeout)
}

/// Scan with apk. `refresh` runs `apk update` first.
pub async fn scan(opts: &ScanOptions) -> anyhow::Result<Vec<PackageUpdate>> {
    if opts.refresh {
        crate::scan::refresh(PackageManager::Apk, opts.timeout).await?;
    }
    let list = run(&list_cmd(opts.timeout)).await?;
    if list.success() {
        return Ok(parse_list_upgradable(&list.stdout));
    }
    tracing::debug!("apk list -u unsupported, falling back to apk version");
    let v = run(&version_cmd(opts.timeout)).await?.check(&[])?;
    Ok(parse_version_list(&v.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::strip_fixture_header;

    #[test]
    fn parses_real_apk_list_upgradable() {
        let text =
            strip_fixture_header(include_str!("../../tests/fixtures/apk-list-upgradable.txt"));
        let ups = parse_list_upgradable(&text);
        assert_eq!(ups.len(), 6);
        let binsh = ups
            .iter()
            .find(|u| u.package == "busybox-binsh")
            .expect("binsh");
        assert_eq!(binsh.current_version, "1.36.1-r28");
        assert_eq!(binsh.available_version, "1.36.1-r29");
        assert_eq!(binsh.arch.as_deref(), Some("x86_64"));
        let ca = ups
            .iter()
            .find(|u| u.package == "ca-certificates-bundle")
            .expect("ca");
        assert_eq!(ca.current_version, "20240226-r0");
        assert_eq!(ca.available_version, "20240705-r0");
        assert!(ups
            .iter()
            .any(|u| u.package == "libcrypto3" && u.available_version == "3.3.2-r0"));
    }

    #[test]
    fn parses_real_apk_version_list() {
        let text = strip_fixture_header(include_str!("../../tests/fixtures/apk-version-l.txt"));
        let ups = parse_version_list(&text);
        assert_eq!(ups.len(), 3);
        assert_eq!(ups[0].package, "libcrypto1.0");
        assert_eq!(ups[0].current_version, "1.0.1q-r0");
        assert_eq!(ups[0].available_version, "1.0.2m-r0");
        assert_eq!(ups[2].package, "nrpe");
    }

    #[test]
    fn pkgver_split() {
        assert_eq!(
            split_pkgver("ssl_client-1.36.1-r29"),
            Some(("ssl_client", "1.36.1-r29"))
        );
        assert_eq!(split_pkgver("nope"), None);
    }
}
