//! apk dry-run: `apk add --simulate --upgrade PKG…` prints
//! `(1/2) Upgrading busybox (1.36.1-r28 -> 1.36.1-r29)` and
//! `(2/2) Installing foo (1.0-r0)` lines; the install is the helper's.
//! No real captured fixture was available for this output; the parser is tested on
//! the documented line shapes.

use super::{base_name, Plan};
use crate::process::Cmd;
use canopy_api_types::commands::PlannedPackage;
use std::collections::HashSet;
use std::time::Duration;

pub fn parse_simulation(text: &str, requested: &[String]) -> Plan {
    let wanted: HashSet<&str> = requested.iter().map(|r| base_name(r)).collect();
    let mut plan = Plan::default();
    for line in text.lines() {
        let t = line.trim();
        let Some(rest) = t
            .strip_prefix('(')
            .and_then(|r| r.split_once(") "))
            .map(|x| x.1)
        else {
            continue;
        };
        let mut words = rest.splitn(3, ' ');
        let (Some(verb), Some(name), Some(vers)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let vers = vers.trim().trim_start_matches('(').trim_end_matches(')');
        let (from, to) = match vers.split_once(" -> ") {
            Some((a, b)) => (Some(a.to_string()), b.to_string()),
            None => (None, vers.to_string()),
        };
        match verb {
            "Purging" | "Removing" => plan.removed.push(name.to_string()),
            "Upgrading" | "Installing" | "Downgrading" | "Replacing" => {
                plan.packages.push(PlannedPackage {
                    requested: wanted.contains(name),
                    manager: Some(canopy_api_types::updates::PackageManager::Apk),
                    containers: Vec::new(),
                    package: name.to_string(),
                    from_version: from,
                    to_version: to,
                })
            }
            _ => {}
        }
    }
    plan
}

/// `apk add --simulate` opens the database read-only: no sudo.
pub fn dry_run_cmd(packages: &[String], timeout: Duration) -> Cmd {
    Cmd::new("apk")
        .args(["add", "--simulate", "--upgrade"])
        .args(packages.iter().cloned())
        .timeout(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_and_install_lines() {
        let plan = parse_simulation(
            "(1/2) Upgrading busybox (1.36.1-r28 -> 1.36.1-r29)\n(2/2) Installing ssl_client (1.36.1-r29)\nOK: 8 MiB in 15 packages\n",
            &["busybox".to_string()],
        );
        assert_eq!(plan.packages.len(), 2);
        assert_eq!(plan.packages[0].from_version.as_deref(), Some("1.36.1-r28"));
        assert!(plan.packages[0].requested);
        assert_eq!(plan.packages[1].from_version, None);
        assert!(!plan.packages[1].requested);
    }
}
