//! dnf dry-run. The dry-run is `dnf --assumeno upgrade PKG…` (it prints the transaction
//! table, then "Operation aborted." with exit 1); dnf refuses it to non-root users, so it is
//! the helper's `simulate` verb. The table gives the new versions as `[EPOCH:]VERSION-RELEASE`
//! (what a pinned install passes back as `NAME-[EPOCH:]VERSION-RELEASE`); the installed ones
//! come from `rpm -q`.

use super::{base_name, Plan};
use canopy_api_types::commands::PlannedPackage;
use std::collections::{HashMap, HashSet};

/// Parse the transaction table (`Installing:`, `Upgrading:`, `Installing
/// dependencies:`, `Removing:` … sections) up to `Transaction Summary`. Rows that dnf
/// wrapped (a long name alone on its line) are joined with the next line.
/// `installed` maps `name.arch` (or `name`) to the installed version.
pub fn parse_transaction(
    text: &str,
    requested: &[String],
    installed: &HashMap<String, String>,
) -> Plan {
    let wanted: HashSet<&str> = requested.iter().map(|r| base_name(r)).collect();
    let mut plan = Plan::default();
    let mut section: Option<String> = None;
    let mut pending: Option<String> = None;
    for raw in text.lines() {
        let t = raw.trim();
        if t.starts_with("Transaction Summary") {
            break;
        }
        if t.is_empty() || t.starts_with('=') || t.starts_with("Package ") {
            continue;
        }
        if !raw.starts_with(' ') && t.ends_with(':') {
            section = Some(t.trim_end_matches(':').to_ascii_lowercase());
            continue;
        }
        let Some(sec) = &section else { continue };
        let line = match pending.take() {
            Some(p) => format!("{p} {t}"),
            None => t.to_string(),
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 {
            pending = Some(line);
            continue;
        }
        let (name, arch, version) = (fields[0], fields[1], fields[2]);
        if sec.starts_with("removing") {
            plan.removed.push(name.to_string());
            continue;
        }
        if sec.starts_with("replacing") || sec.starts_with("skipping") {
            continue;
        }
        let from_version = installed
            .get(&format!("{name}.{arch}"))
            .or_else(|| installed.get(name))
            .cloned();
        plan.packages.push(PlannedPackage {
            package: name.to_string(),
            from_version,
            to_version: version.to_string(),
            requested: wanted.contains(name),
            manager: Some(canopy_api_types::updates::PackageManager::Dnf),
            containers: Vec::new(),
        });
    }
    plan
}

/// dnf's exit code for a dry-run is 1 ("Operation aborted.") even when the plan is fine.
pub fn dry_run_ok(exit_code: i32, stdout: &str, stderr: &str) -> bool {
    exit_code == 0
        || (exit_code == 1
            && (stdout.contains("Operation aborted") || stderr.contains("Operation aborted")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::strip_fixture_header;

    #[test]
    fn real_rhel8_transaction_table() {
        let text = strip_fixture_header(include_str!(
            "../../tests/fixtures/dnf-install-transaction-rhel8.txt"
        ));
        let installed =
            HashMap::from([("git-core.x86_64".to_string(), "2.27.0-1.el8".to_string())]);
        let plan = parse_transaction(&text, &["ansible-core".to_string()], &installed);
        assert_eq!(plan.packages.len(), 3);
        let a = &plan.packages[0];
        assert_eq!(a.package, "ansible-core");
        assert_eq!(a.to_version, "2.13.3-1.el8");
        assert!(a.requested);
        assert_eq!(a.from_version, None);
        let git = &plan.packages[1];
        assert!(!git.requested);
        assert_eq!(git.from_version.as_deref(), Some("2.27.0-1.el8"));
        assert_eq!(
            plan.packages[2].to_version,
            "3.9.6-1.module_el8.5.0+872+ab54e8e5"
        );
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
    fn real_dnf414_dry_run_lists_the_new_dependency() {
        let installed = crate::scan::dnf::parse_rpm_query(&lab("rpm418-debian12-query.txt"));
        let requested = [
            "canopy-demo-ssl".to_string(),
            "canopy-demo-tools".to_string(),
        ];
        let text = lab("dnf414-debian12-assumeno-upgrade.txt");
        assert!(dry_run_ok(1, &text, "Operation aborted.\n"));
        let plan = parse_transaction(&text, &requested, &installed);
        assert!(plan.removed.is_empty());
        let got: Vec<(&str, Option<&str>, &str, bool)> = plan
            .packages
            .iter()
            .map(|p| {
                (
                    p.package.as_str(),
                    p.from_version.as_deref(),
                    p.to_version.as_str(),
                    p.requested,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("canopy-demo-ssl", Some("1.0-1"), "1.0-2", true),
                ("canopy-demo-tools", Some("1.0-1"), "2.0-1", true),
                ("canopy-demo-libextra", None, "1.0-1", false),
            ]
        );
        assert_eq!(
            plan.summary(),
            "2 upgraded, 1 newly installed (2 requested, 1 dependencies)"
        );
        // The install prints the same table before its progress lines.
        let install = parse_transaction(
            &lab("dnf414-debian12-upgrade-y.txt"),
            &requested,
            &installed,
        );
        assert_eq!(install, plan);
    }

    #[test]
    fn real_dnf414_dry_run_edge_cases() {
        let none = lab("dnf414-debian12-assumeno-nothing-to-do.txt");
        assert!(dry_run_ok(0, &none, ""));
        assert_eq!(
            parse_transaction(&none, &["canopy-demo-tools".into()], &HashMap::new()),
            Plan::default()
        );
        let missing = lab("dnf414-debian12-assumeno-no-match.txt");
        assert!(!dry_run_ok(
            1,
            &missing,
            "Error: No packages marked for upgrade.\n"
        ));
        assert!(parse_transaction(
            &missing,
            &["canopy-no-such-package".into()],
            &HashMap::new()
        )
        .packages
        .is_empty());
    }

    #[test]
    fn upgrade_section_wrapped_rows_and_removals() {
        let text = "\
Dependencies resolved.
================================================================================
 Package                      Arch     Version              Repository     Size
================================================================================
Upgrading:
 openssl-libs                 x86_64   1:3.5.1-4.el9_7      baseos        2.3 M
 a-very-long-package-name-that-wraps-the-column
                              noarch   1.2-3.el9            appstream      10 k
Removing:
 old-thing                    x86_64   1.0-1.el9            @baseos        1 M

Transaction Summary
================================================================================
Upgrade  2 Packages
Operation aborted.
";
        let plan = parse_transaction(text, &["openssl-libs".to_string()], &HashMap::new());
        assert_eq!(plan.packages.len(), 2);
        assert_eq!(plan.packages[0].to_version, "1:3.5.1-4.el9_7");
        assert_eq!(
            plan.packages[1].package,
            "a-very-long-package-name-that-wraps-the-column"
        );
        assert_eq!(plan.removed, vec!["old-thing"]);
        assert!(dry_run_ok(1, text, ""));
        assert!(!dry_run_ok(1, "Error: Unable to find a match: nope", ""));
    }
}
