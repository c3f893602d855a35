//! Has the repository moved on since the dry-run? Before a pinned install touches anything,
//! the agent runs the same simulation the dry-run ran and compares its plan with the approved
//! one, package by package: a changed version, a package that dropped out, a dependency the
//! dry-run did not list. Any difference refuses the install with a message naming the package
//! and both versions (`canopy-demo-x: approved 2.4-1, now 2.5-1: run the dry-run again`).

use canopy_api_types::commands::PlannedPackage;
use std::collections::HashMap;

/// The differences between the approved plan and the plan the simulation gives now, one line
/// each (empty: the install may go ahead). Compared by package name and target version; the
/// order and the `requested` flags do not matter.
pub fn compare(approved: &[PlannedPackage], now: &[PlannedPackage]) -> Vec<String> {
    let now_by_name: HashMap<&str, &PlannedPackage> =
        now.iter().map(|p| (p.package.as_str(), p)).collect();
    let approved_names: HashMap<&str, &PlannedPackage> =
        approved.iter().map(|p| (p.package.as_str(), p)).collect();
    let mut problems = Vec::new();
    for a in approved {
        match now_by_name.get(a.package.as_str()) {
            Some(n) if n.to_version == a.to_version => {}
            Some(n) => problems.push(moved_on(&a.package, &a.to_version, &n.to_version)),
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
        assert!(compare(&approved, &now).is_empty());
    }

    #[test]
    fn a_requested_package_that_moved_on_names_both_versions() {
        let approved = [p("canopy-demo-x", "2.4-1", true)];
        let now = [p("canopy-demo-x", "2.5-1", true)];
        assert_eq!(
            compare(&approved, &now),
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
            compare(&approved, &now),
            [
                "libold: approved 1.0, now no longer part of the plan: run the dry-run again",
                "libmoved: approved 3.0, now 3.1: run the dry-run again",
                "libnew: not in the approved plan, now needed at 0.9: run the dry-run again",
            ]
        );
    }
}
