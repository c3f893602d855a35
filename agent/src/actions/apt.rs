//! apt dry-run. The dry-run is `apt-get -s install PKG…` (no root needed); its
//! `Inst pkg [old] (new origin/suite [arch])` lines are the plan. The install itself is the
//! helper's (`crate::helper::commands`): `apt-get -y install PKG=VERSION…` with
//! `DEBIAN_FRONTEND=noninteractive` and `--force-confdef/--force-confold`. Held packages are
//! never forced.

use super::{base_name, Plan};
use crate::process::Cmd;
use canopy_api_types::commands::PlannedPackage;
use std::collections::HashSet;
use std::time::Duration;

/// Parse the simulation output of `apt-get -s install`.
pub fn parse_simulation(text: &str, requested: &[String]) -> Plan {
    let wanted: HashSet<&str> = requested.iter().map(|r| base_name(r)).collect();
    let mut plan = Plan::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Inst ") {
            if let Some(p) = parse_inst(rest, &wanted) {
                plan.packages.push(p);
            }
        } else if let Some(rest) = line.strip_prefix("Remv ") {
            if let Some(name) = rest.split_whitespace().next() {
                plan.removed.push(name.to_string());
            }
        }
    }
    plan
}

/// `name [old] (new Origin:rel/suite [arch]) [extra]` or `name (new …)` for a new install.
fn parse_inst(rest: &str, wanted: &HashSet<&str>) -> Option<PlannedPackage> {
    let rest = rest.trim();
    let (name, after) = rest.split_once(' ')?;
    let after = after.trim_start();
    let (from_version, after) = match after.strip_prefix('[') {
        Some(a) => {
            let (old, tail) = a.split_once(']')?;
            (Some(old.to_string()), tail.trim_start())
        }
        None => (None, after),
    };
    let to_version = after
        .strip_prefix('(')?
        .split_whitespace()
        .next()?
        .trim_end_matches(')')
        .to_string();
    let package = name.to_string();
    Some(PlannedPackage {
        requested: wanted.contains(base_name(&package)),
        manager: Some(canopy_api_types::updates::PackageManager::Apt),
        containers: Vec::new(),
        package,
        from_version,
        to_version,
    })
}

/// `apt-get -s install` (a simulation without locking: read-only, no sudo).
pub fn dry_run_cmd(packages: &[String], timeout: Duration) -> Cmd {
    Cmd::new("apt-get")
        .args(["-s", "-o", "Debug::NoLocking=1", "install"])
        .arg("--")
        .args(packages.iter().cloned())
        .timeout(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_new_install_with_dependencies() {
        let text = include_str!("../../tests/fixtures/apt-get-s-install-chromium.txt");
        let plan = parse_simulation(text, &["chromium".to_string()]);
        assert_eq!(plan.packages.len(), 131);
        let chromium = plan
            .packages
            .iter()
            .find(|p| p.package == "chromium")
            .expect("chromium");
        assert!(chromium.requested);
        assert_eq!(chromium.from_version, None);
        // An installed package upgraded as a dependency, with apt's trailing `[perl:amd64 ]`.
        let perl = plan
            .packages
            .iter()
            .find(|p| p.package == "libperl5.36")
            .expect("perl");
        assert!(!perl.requested);
        assert_eq!(perl.from_version.as_deref(), Some("5.36.0-7+deb12u2"));
        assert_eq!(perl.to_version, "5.36.0-7+deb12u3");
        assert_eq!(plan.packages.iter().filter(|p| p.requested).count(), 1);
        let s = plan.summary();
        assert!(
            s.contains("upgraded") && s.contains("newly installed"),
            "{s}"
        );
    }

    #[test]
    fn real_security_upgrade_plan() {
        let text = include_str!("../../tests/fixtures/apt-get-s-install-security.txt");
        let req = vec!["libgnutls30".to_string(), "libcups2:amd64".to_string()];
        let plan = parse_simulation(text, &req);
        let gnutls = plan
            .packages
            .iter()
            .find(|p| p.package == "libgnutls30")
            .expect("gnutls");
        assert!(gnutls.requested);
        assert_eq!(gnutls.from_version.as_deref(), Some("3.7.9-2+deb12u6"));
        assert_eq!(gnutls.to_version, "3.7.9-2+deb12u7");
        let cups = plan
            .packages
            .iter()
            .find(|p| p.package == "libcups2")
            .expect("cups");
        assert!(cups.requested, "arch-qualified request matches");
        let dane = plan
            .packages
            .iter()
            .find(|p| p.package == "libgnutls-dane0")
            .expect("dane");
        assert!(!dane.requested);
        assert!(plan.removed.is_empty());
        assert_eq!(
            plan.summary(),
            "6 upgraded, 0 newly installed (2 requested, 4 dependencies)"
        );
    }

    #[test]
    fn removals_are_counted() {
        let plan = parse_simulation(
            "Remv foo [1.0]\nInst bar (2.0 Debian:12/stable [amd64])\n",
            &["bar".to_string()],
        );
        assert_eq!(plan.removed, vec!["foo"]);
        assert!(plan.summary().contains("1 to remove (foo)"));
    }
}
