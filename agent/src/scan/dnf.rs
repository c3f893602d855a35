//! dnf scanner: `dnf check-update` (exit 100 = updates available) lists
//! `name.arch  [epoch:]version-release  repo`; the installed versions come from one
//! `rpm -q --qf` call; `dnf updateinfo list --security` marks security updates.

use super::{lines, ScanOptions};
use crate::process::{run, Cmd};
use canopy_api_types::updates::{PackageManager, PackageUpdate, Severity};
use std::collections::{HashMap, HashSet};

/// Architectures rpm uses as the `.arch` suffix.
const ARCHES: &[&str] = &[
    "x86_64", "noarch", "i686", "i386", "aarch64", "armv7hl", "ppc64le", "s390x", "src",
];

/// One row of `dnf check-update`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnfUpgradable {
    pub package: String,
    pub arch: String,
    pub version: String,
    pub repo: String,
}

/// Parse `dnf check-update` (dnf 4 and dnf 5). Stops at `Obsoleting Packages`
/// (those rows repeat packages already listed); skips the metadata line, locale
/// warnings and indented continuation lines.
pub fn parse_check_update(text: &str) -> Vec<DnfUpgradable> {
    let mut out = Vec::new();
    for line in lines(text) {
        let t = line.trim();
        if t.to_ascii_lowercase().starts_with("obsoleting") {
            break;
        }
        if line.starts_with(char::is_whitespace) {
            continue;
        }
        let fields: Vec<&str> = t.split_whitespace().collect();
        if fields.len() != 3 {
            continue;
        }
        let Some((name, arch)) = fields[0].rsplit_once('.') else {
            continue;
        };
        if !ARCHES.contains(&arch) || !fields[1].contains('-') {
            continue;
        }
        out.push(DnfUpgradable {
            package: name.to_string(),
            arch: arch.to_string(),
            version: fields[1].to_string(),
            repo: fields[2].to_string(),
        });
    }
    out
}

/// Split an rpm NEVRA (`grub2-common-1:2.06-114.el9_7.alma.1.noarch`) into
/// `(name, arch)`. Returns `None` when it does not have that shape.
pub fn split_nevra(nevra: &str) -> Option<(&str, &str)> {
    let (nevr, arch) = nevra.rsplit_once('.')?;
    if !ARCHES.contains(&arch) {
        return None;
    }
    let mut parts = nevr.rsplitn(3, '-');
    let _release = parts.next()?;
    let _version = parts.next()?;
    let name = parts.next()?;
    Some((name, arch))
}

/// Parse `dnf updateinfo list --security` (dnf 4: `ID Sev/Sec. NEVRA`; dnf 5:
/// `ID security Severity NEVRA date`) into the set of `(name, arch)` with a
/// security advisory.
pub fn parse_updateinfo_security(text: &str) -> HashSet<(String, String)> {
    let mut out = HashSet::new();
    for line in lines(text) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 {
            continue;
        }
        let is_sec = fields[1].ends_with("/Sec.") || fields[1].eq_ignore_ascii_case("security");
        if !is_sec {
            continue;
        }
        if let Some((name, arch)) = fields[2..].iter().find_map(|f| split_nevra(f)) {
            out.insert((name.to_string(), arch.to_string()));
        }
    }
    out
}

/// Parse `rpm -q --qf '%{NAME}.%{ARCH} %{EPOCH}:%{VERSION}-%{RELEASE}\n'` into
/// `name.arch -> [epoch:]version-release` (epoch `(none)` dropped).
pub fn parse_rpm_query(text: &str) -> HashMap<String, String> {
    lines(text)
        .filter_map(|l| {
            let (na, evr) = l.trim().split_once(' ')?;
            if l.contains("is not installed") {
                return None;
            }
            let evr = evr.strip_prefix("(none):").unwrap_or(evr);
            Some((na.to_string(), evr.to_string()))
        })
        .collect()
}

/// Installed versions of `names` (`name.arch -> evr`).
pub async fn installed_versions(
    names: &[String],
    timeout: std::time::Duration,
) -> anyhow::Result<HashMap<String, String>> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    // rpm exits 1 when one of the names is not installed; its other lines still count.
    let out = run(&rpm_query_cmd(names, timeout)).await?;
    Ok(parse_rpm_query(&out.stdout))
}

/// `rpm -q --qf … NAME…` (read-only).
pub fn rpm_query_cmd(names: &[String], timeout: std::time::Duration) -> Cmd {
    Cmd::new("rpm")
        .args([
            "-q",
            "--qf",
            "%{NAME}.%{ARCH} %{EPOCH}:%{VERSION}-%{RELEASE}\\n",
        ])
        .args(names.iter().cloned())
        .timeout(timeout)
}

/// `dnf check-update` (read-only; exit 100 = updates available).
pub fn check_update_cmd(timeout: std::time::Duration) -> Cmd {
    Cmd::new("dnf")
        .args(["-q", "check-update"])
        .timeout(timeout)
}

/// `dnf updateinfo list --security` (read-only).
pub fn updateinfo_cmd(timeout: std::time::Duration) -> Cmd {
    Cmd::new("dnf")
        .args(["-q", "updateinfo", "list", "--security"])
        .timeout(timeout)
}

/// Scan with dnf. `refresh` runs `dnf makecache` first.
pub async fn scan(opts: &ScanOptions) -> anyhow::Result<Vec<PackageUpdate>> {
    if opts.refresh {
        crate::scan::refresh(PackageManager::Dnf, opts.timeout).await?;
    }
    let cu = run(&check_update_cmd(opts.timeout)).await?.check(&[100])?;
    let rows = parse_check_update(&cu.stdout);
    // Security data is an enrichment: without it updates are still reported.
    let security = match run(&updateinfo_cmd(opts.timeout))
        .await
        .map_err(anyhow::Error::from)
        .and_then(|o| o.check(&[]).map_err(anyhow::Error::from))
    {
        Ok(o) => parse_updateinfo_security(&o.stdout),
        Err(e) => {
            tracing::warn!(error = %e, "dnf updateinfo failed; security flags unknown");
            HashSet::new()
        }
    };
    let mut names: Vec<String> = rows.iter().map(|r| r.package.clone()).collect();
    names.sort();
    names.dedup();
    let installed = installed_versions(&names, opts.timeout).await?;
    Ok(rows
        .into_iter()
        .map(|r| to_update(r, &installed, &security))
        .collect())
}

/// Combine one check-update row with the installed versions and the security set.
pub fn to_update(
    r: DnfUpgradable,
    installed: &HashMap<String, String>,
    security: &HashSet<(String, String)>,
) -> PackageUpdate {
    let key = format!("{}.{}", r.package, r.arch);
    let severity = if security.contains(&(r.package.clone(), r.arch.clone())) {
        Severity::Security
    } else {
        Severity::Normal
    };
    PackageUpdate {
        manager: PackageManager::Dnf,
        current_version: installed
            .get(&key)
            .cloned()
            .unwrap_or_else(|| "unknown".into()),
        package: r.package,
        available_version: r.version,
        arch: Some(r.arch),
        source: Some(r.repo),
        severity,
        held: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::strip_fixture_header;

    #[test]
    fn parses_real_almalinux_check_update() {
        let text = strip_fixture_header(include_str!(
            "../../tests/fixtures/dnf-check-update-almalinux9.txt"
        ));
        let rows = parse_check_update(&text);
        assert!(rows.len() >= 30, "{}", rows.len());
        let nm = rows
            .iter()
            .find(|r| r.package == "NetworkManager")
            .expect("NM");
        assert_eq!(nm.arch, "x86_64");
        assert_eq!(nm.version, "1:1.54.0-3.el9_7");
        assert_eq!(nm.repo, "baseos");
        // Rows below "Obsoleting Packages" are not updates of their own.
        assert!(rows.iter().all(|r| r.package != "mesa-dri-drivers"));
        assert!(rows.iter().all(|r| r.package != "Failed"));
        let ca = rows
            .iter()
            .find(|r| r.package == "ca-certificates")
            .expect("ca");
        assert_eq!(ca.arch, "noarch");
    }

    #[test]
    fn parses_real_updateinfo_security() {
        let text = strip_fixture_header(include_str!(
            "../../tests/fixtures/dnf-updateinfo-security-almalinux9.txt"
        ));
        let sec = parse_updateinfo_security(&text);
        assert!(sec.contains(&("binutils".into(), "x86_64".into())));
        assert!(sec.contains(&("grub2-common".into(), "noarch".into())));
        assert!(sec.contains(&("openssl-libs".into(), "x86_64".into())));
        assert!(!sec.iter().any(|(n, _)| n.starts_with("Last")));
    }

    #[test]
    fn security_flag_and_installed_version_join() {
        let cu = strip_fixture_header(include_str!(
            "../../tests/fixtures/dnf-check-update-almalinux9.txt"
        ));
        let sec = strip_fixture_header(include_str!(
            "../../tests/fixtures/dnf-updateinfo-security-almalinux9.txt"
        ));
        let sec = parse_updateinfo_security(&sec);
        let installed = parse_rpm_query(
            "binutils.x86_64 (none):2.35.2-63.el9\nNetworkManager.x86_64 1:1.52.0-7.el9_6\n",
        );
        let ups: Vec<_> = parse_check_update(&cu)
            .into_iter()
            .map(|r| to_update(r, &installed, &sec))
            .collect();
        let bin = ups
            .iter()
            .find(|u| u.package == "binutils")
            .expect("binutils");
        assert_eq!(bin.severity, Severity::Security);
        assert_eq!(bin.current_version, "2.35.2-63.el9");
        let nm = ups
            .iter()
            .find(|u| u.package == "NetworkManager")
            .expect("NM");
        assert_eq!(nm.current_version, "1:1.52.0-7.el9_6");
        assert_eq!(nm.severity, Severity::Normal);
    }

    // Real output of dnf 4.14 / rpm 4.18 (Debian 12's packages) in the lab's dnf guest.
    fn lab(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/{name}",
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")
        );
        strip_fixture_header(&std::fs::read_to_string(&path).expect("fixture"))
    }

    #[test]
    fn real_dnf414_check_update_rpm_query_and_advisories() {
        let rows = parse_check_update(&lab("dnf414-debian12-check-update.txt"));
        let names: Vec<&str> = rows.iter().map(|r| r.package.as_str()).collect();
        assert_eq!(
            names,
            ["canopy-demo-hello", "canopy-demo-ssl", "canopy-demo-tools"]
        );
        assert_eq!(
            rows[2],
            DnfUpgradable {
                package: "canopy-demo-tools".into(),
                arch: "noarch".into(),
                version: "2.0-1".into(),
                repo: "canopy-lab".into(),
            }
        );
        let installed = parse_rpm_query(&lab("rpm418-debian12-query.txt"));
        assert_eq!(installed.len(), 3, "{installed:?}");
        assert_eq!(installed["canopy-demo-hello.noarch"], "1.0-1");
        assert!(!installed.contains_key("canopy-demo-libextra.noarch"));
        // Only security advisories count: the bugfix advisory of hello does not.
        let all = parse_updateinfo_security(&lab("dnf414-debian12-updateinfo-all.txt"));
        let sec = parse_updateinfo_security(&lab("dnf414-debian12-updateinfo-security.txt"));
        assert_eq!(all, sec);
        assert_eq!(
            sec,
            HashSet::from([("canopy-demo-ssl".to_string(), "noarch".to_string())])
        );
        let ups: Vec<PackageUpdate> = rows
            .into_iter()
            .map(|r| to_update(r, &installed, &sec))
            .collect();
        assert_eq!(ups[0].severity, Severity::Normal);
        assert_eq!(ups[1].severity, Severity::Security);
        assert_eq!(ups[1].current_version, "1.0-1");
        assert_eq!(ups[1].available_version, "1.0-2");
        assert_eq!(ups[1].source.as_deref(), Some("canopy-lab"));
        assert!(ups
            .iter()
            .all(|u| u.manager == PackageManager::Dnf && !u.held));
    }

    #[test]
    fn nevra_split() {
        assert_eq!(
            split_nevra("grub2-tools-minimal-1:2.06-114.el9_7.alma.1.x86_64"),
            Some(("grub2-tools-minimal", "x86_64"))
        );
        assert_eq!(split_nevra("Moderate/Sec."), None);
        let dnf5 = parse_updateinfo_security(
            "FEDORA-2024-1 security Moderate curl-8.6.0-7.fc40.x86_64 2024-04-01 12:00:00\n",
        );
        assert!(dnf5.contains(&("curl".into(), "x86_64".into())));
    }
}
