//! Has the repository moved on since the dry-run? Before a pinned install touches anything,
//! the agent runs the same simulation the dry-run ran and compares its plan with the approved
//! one, package by package: a changed version, a package that dropped out, a dependency the
//! dry-run did not list. Any difference refuses the install with a message naming the package
//! and both versions (`canopy-demo-x: approved 2.4-1, now 2.5-1: run the dry-run again`).
//!
//! A package that dropped out of the plan because it is already installed at exactly the
//! approved version (a retry after an interrupted install, an operator who was faster) is
//! not a difference: what was approved is there.

use super::base_name;
use crate::process::{run, Cmd};
use canopy_api_types::commands::PlannedPackage;
use canopy_api_types::updates::PackageManager;
use std::collections::HashMap;
use std::time::Duration;

/// `1.0-1` and `0:1.0-1` are the same version (rpm prints the zero epoch, dnf's table not).
fn same_version(a: &str, b: &str) -> bool {
    a.strip_prefix("0:").unwrap_or(a) == b.strip_prefix("0:").unwrap_or(b)
}

/// The installed versions of `names` (`name -> version`), as far as the manager tells without
/// root: dpkg-query for apt, rpm for dnf; none for apk (an approved package that dropped out
/// of an apk plan is then always a difference).
pub async fn installed(
    m: PackageManager,
    names: &[String],
    timeout: Duration,
) -> HashMap<String, String> {
    if names.is_empty() {
        return HashMap::new();
    }
    match m {
        PackageManager::Apt => {
            let cmd = Cmd::new("dpkg-query")
                .args([
                    "-W",
                    "-f",
                    "${Package} ${Version} ${db:Status-Abbrev}\\n",
                    "--",
                ])
                .args(names.iter().cloned())
                .timeout(timeout);
            // Exit 1 when one name is unknown; the others are still listed.
            match run(&cmd).await {
                Ok(out) => parse_dpkg_query(&out.stdout),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the installed versions");
                    HashMap::new()
                }
            }
        }
        PackageManager::Dnf => crate::scan::dnf::installed_versions(names, timeout)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(na, v)| {
                (
                    na.rsplit_once('.')
                        .map_or(na.clone(), |(n, _)| n.to_string()),
                    v,
                )
            })
            .collect(),
        _ => HashMap::new(),
    }
}

/// `dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\n'`: installed (`ii`) rows.
pub fn parse_dpkg_query(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (name, version, status) = (f.next()?, f.next()?, f.next()?);
            (status == "ii").then(|| (name.to_string(), version.to_string()))
        })
        .collect()
}

/// The differences between the approved plan and the plan the simulation gives now, one line
/// each (empty: the install may go ahead). Compared by package name and target version; the
/// order and the `requested` flags do not matter. `installed` holds the installed versions of
/// the approved packages missing from `now`.
pub fn compare(
    approved: &[PlannedPackage],
    now: &[PlannedPackage],
    installed: &HashMap<String, String>,
) -> Vec<String> {
    let now_by_name: HashMap<&str, &PlannedPackage> =
        now.iter().map(|p| (p.package.as_str(), p)).collect();
    let approved_names: HashMap<&str, &PlannedPackage> =
        approved.iter().map(|p| (p.package.as_str(), p)).collect();
    let mut problems = Vec::new();
    for a in approved {
        match now_by_name.get(a.package.as_str()) {
            Some(n) if n.to_version == a.to_version => {}
            Some(n) => problems.push(moved_on(&a.package, &a.to_version, &n.to_version)),
            None if installed
                .get(base_name(&a.package))
                .is_some_and(|v| same_version(v, &a.to_version)) => {}
            None => problems.push(format!(
                "{}: approved {}, now no longer part of the plan: run the dry-run again",
                a.package, a.to_version
            )),
        }
    }
    for n in now {
        if !approved_names.contains_key(n.package.as_str()) {
            problems.push(format!(
                "{}: not in the approved plan, now needed at {}: run the dry-run again",
                n.package, n.to_version
            ));
        }
    }
    problems
}

/// `NAME: approved OLD, now NEW: run the dry-run again`.
pub fn moved_on(name: &str, approved: &str, now: &str) -> String {
    format!("{name}: approved {approved}, now {now}: run the dry-run again")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, to: &str, requested: bool) -> PlannedPackage {
        PlannedPackage {
            package: name.into(),
            from_version: Some("1".into()),
            to_version: to.into(),
            requested,
            manager: None,
            containers: Vec::new(),
        }
    }

    #[test]
    fn the_same_plan_passes_in_any_order() {
        let approved = [
            p("canopy-demo-tools", "2.0", true),
            p("libextra", "1.0", false),
        ];
        let now = [
            p("libextra", "1.0", false),
            p("canopy-demo-tools", "2.0", true),
        ];
        assert!(compare(&approved, &now, &HashMap::new()).is_empty());
    }

    #[test]
    fn a_requested_package_that_moved_on_names_both_versions() {
        let approved = [p("canopy-demo-x", "2.4-1", true)];
        let now = [p("canopy-demo-x", "2.5-1", true)];
        assert_eq!(
            compare(&approved, &now, &HashMap::new()),
            ["canopy-demo-x: approved 2.4-1, now 2.5-1: run the dry-run again"]
        );
    }

    #[test]
    fn new_changed_and_vanished_dependencies_are_named() {
        let approved = [
            p("canopy-demo-tools", "2.0", true),
            p("libold", "1.0", false),
            p("libmoved", "3.0", false),
        ];
        let now = [
            p("canopy-demo-tools", "2.0", true),
            p("libmoved", "3.1", false),
            p("libnew", "0.9", false),
        ];
        assert_eq!(
            compare(&approved, &now, &HashMap::new()),
            [
                "libold: approved 1.0, now no longer part of the plan: run the dry-run again",
                "libmoved: approved 3.0, now 3.1: run the dry-run again",
                "libnew: not in the approved plan, now needed at 0.9: run the dry-run again",
            ]
        );
    }

    /// A retry after an interrupted install: the package is already at the approved version,
    /// so it is no longer in the plan, and that is fine; at another version it is not.
    #[test]
    fn already_installed_at_the_approved_version_is_no_difference() {
        let approved = [
            p("canopy-demo-slow", "1.1", true),
            p("libdnf", "0:2.0-1", false),
        ];
        let installed = HashMap::from([
            ("canopy-demo-slow".to_string(), "1.1".to_string()),
            ("libdnf".to_string(), "2.0-1".to_string()),
        ]);
        assert!(compare(&approved, &[], &installed).is_empty());
        let older = HashMap::from([("canopy-demo-slow".to_string(), "1.0".to_string())]);
        assert_eq!(
            compare(&approved[..1], &[], &older),
            ["canopy-demo-slow: approved 1.1, now no longer part of the plan: run the dry-run again"]
        );
    }

    #[test]
    fn dpkg_query_rows_count_only_when_installed() {
        let text = "canopy-demo-slow 1.1 ii \nold-thing 2.0 rc \nhalf 1.0 iF \n";
        let got = parse_dpkg_query(text);
        assert_eq!(got.len(), 1);
        assert_eq!(got["canopy-demo-slow"], "1.1");
    }
}
