//! Package database health: is a package manager's database in a state an install may start
//! from? Checked at start-up, before every install, after every install and repair (a hung
//! transaction the watchdog stopped included), and reported in `HostFacts.package_db` with the
//! repair an operator can approve. The checks run through the helper (`audit` verb): apk's
//! needs root, and the helper gives every check the same fixed environment.
//!
//! What each check really reports, and why it was chosen:
//!
//! - **apt: `dpkg --audit`.** Lists packages left half-installed, unpacked but not configured,
//!   half-configured or awaiting triggers — exactly what a dpkg run that was killed or whose
//!   maintainer script failed leaves behind. dpkg 1.21 (Debian 12) exits 0 even when it
//!   reports something, so any output is the signal. Repair: `dpkg --configure -a` (what dpkg
//!   itself tells the operator), run non-interactively with the old config files kept.
//! - **dnf: `dnf -q -C check`.** Reports dependency problems, duplicate packages (both the old
//!   and the new version installed: what an interrupted rpm transaction leaves), obsoleted and
//!   unprovided packages, from the rpm database alone (`-C`: no repository access); exit 1 and
//!   "Check discovered N problem(s)" when it finds any. `rpm --verifydb` was tried and rejected:
//!   it checks only the database file's structure and exits 0 with duplicates installed.
//!   There is no safe automatic repair (which duplicate to remove, whose scriptlets ran, is an
//!   operator's call), so no repair is offered.
//! - **apk: `apk fix --simulate`.** apk records packages whose files or scripts failed in its
//!   installed database; `apk fix` without arguments reinstalls exactly those, and
//!   `--simulate` lists them (`(1/1) Reinstalling foo (1.0-r0)`) without changing anything.
//!   `apk audit` was rejected: it lists every file changed since installation, which includes
//!   every configuration file an operator edited — normal, not broken. Repair: `apk fix`.
//!
//! A check that cannot run (no sudo rule, no manager) is logged, not reported as a broken
//! database: the install that follows fails with that same reason.

use crate::helper::{commands::repair_line, Verb};
use crate::process::{Limit, Output};
use canopy_api_types::agent::PackageDbIssue;
use canopy_api_types::updates::PackageManager;
use std::time::Duration;

/// Lines of a check's output kept as the problem text.
const PROBLEM_LINES: usize = 12;
const PROBLEM_CHARS: usize = 2000;

/// Checks every manager in `managers`; the issues found (empty = healthy).
pub async fn audit(managers: &[PackageManager], timeout: Duration) -> Vec<PackageDbIssue> {
    let mut issues = Vec::new();
    for m in managers {
        if let Some(issue) = audit_one(*m, timeout).await {
            issues.push(issue);
        }
    }
    issues
}

/// Checks one manager's database.
#[tracing::instrument(skip_all, fields(manager = m.as_str()))]
pub async fn audit_one(m: PackageManager, timeout: Duration) -> Option<PackageDbIssue> {
    if m == PackageManager::Docker {
        return None;
    }
    match crate::helper::call(&Verb::Audit(m), Limit::Deadline(timeout)).await {
        Ok(out) => {
            let issue = interpret(m, &out);
            match &issue {
                Some(i) => {
                    tracing::warn!(problem = %i.problem, repair = ?i.repair, "package database needs attention")
                }
                None => tracing::debug!("package database healthy"),
            }
            issue
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not check the package database");
            None
        }
    }
}

/// What a check's output says (see the module documentation for each manager).
pub fn interpret(m: PackageManager, out: &Output) -> Option<PackageDbIssue> {
    let problem = match m {
        PackageManager::Apt | PackageManager::Dnf => {
            if out.exit_code == 0 && out.stdout.trim().is_empty() {
                return None;
            }
            format!("{}\n{}", out.stdout, out.stderr)
        }
        PackageManager::Apk => {
            let broken: Vec<&str> = out
                .stdout
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with('(') && l.contains(" Reinstalling "))
                .collect();
            if out.exit_code == 0 && broken.is_empty() {
                return None;
            }
            if broken.is_empty() {
                format!("{}\n{}", out.stdout, out.stderr)
            } else {
                format!("packages to reinstall:\n{}", broken.join("\n"))
            }
        }
        PackageManager::Docker => return None,
    };
    Some(PackageDbIssue {
        manager: m,
        problem: first_lines(&problem),
        repair: repair_line(m).map(String::from),
    })
}

fn first_lines(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .take(PROBLEM_LINES)
        .collect();
    let mut s = lines.join("\n");
    if s.len() > PROBLEM_CHARS {
        let mut cut = PROBLEM_CHARS;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// The database each manager keeps, as messages name it.
pub fn db_name(m: PackageManager) -> &'static str {
    match m {
        PackageManager::Apt => "dpkg",
        PackageManager::Dnf => "rpm",
        PackageManager::Apk => "apk",
        PackageManager::Docker => "docker",
    }
}

/// Why an install does not start on this database.
pub fn refusal(issue: &PackageDbIssue) -> String {
    let db = db_name(issue.manager);
    let head = match (&issue.repair, issue.manager) {
        (Some(r), PackageManager::Apt) => {
            format!("the {db} database is interrupted: approve the repair ({r}) first")
        }
        (Some(r), _) => {
            format!("the {db} database has broken packages: approve the repair ({r}) first")
        }
        (None, _) => format!(
            "the {db} database has problems an operator must resolve first (there is no safe \
             automatic repair)"
        ),
    };
    format!("{head}\n{}", issue.problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(exit_code: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            command: "check".into(),
            exit_code,
            stdout: stdout.into(),
            stderr: stderr.into(),
            duration: Duration::ZERO,
        }
    }

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/{name}",
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")
        );
        crate::scan::strip_fixture_header(&std::fs::read_to_string(path).expect("fixture"))
    }

    #[test]
    fn an_unconfigured_package_is_an_interrupted_dpkg_database() {
        // Real output: dpkg 1.21 exits 0 and prints the list.
        let text = fixture("dpkg121-debian12-audit-unpacked.txt");
        let issue = interpret(PackageManager::Apt, &out(0, &text, "")).expect("an issue");
        assert!(issue.problem.contains("unpacked but not yet configured"));
        assert!(issue.problem.contains("canopy-demo-hello"));
        assert_eq!(issue.repair.as_deref(), Some("dpkg --configure -a"));
        assert_eq!(
            refusal(&issue).lines().next(),
            Some(
                "the dpkg database is interrupted: approve the repair (dpkg --configure -a) first"
            )
        );
        assert_eq!(interpret(PackageManager::Apt, &out(0, "", "")), None);
        assert_eq!(interpret(PackageManager::Apt, &out(0, "\n", "")), None);
        // Real output after an install stopped with SIGTERM during its postinst.
        let text = fixture("dpkg121-debian12-audit-half-configured.txt");
        let issue = interpret(PackageManager::Apt, &out(0, &text, "")).expect("an issue");
        assert!(
            issue.problem.contains("only half configured"),
            "{}",
            issue.problem
        );
        assert!(issue.problem.contains("canopy-demo-slow"));
    }

    #[test]
    fn dnf_check_duplicates_have_no_automatic_repair() {
        let text = fixture("dnf414-debian12-check-duplicate.txt");
        let issue = interpret(
            PackageManager::Dnf,
            &out(1, &text, "Error: Check discovered 1 problem(s)\n"),
        )
        .expect("an issue");
        assert!(
            issue.problem.contains("is a duplicate with"),
            "{}",
            issue.problem
        );
        assert!(issue.problem.contains("Check discovered 1 problem(s)"));
        assert_eq!(issue.repair, None);
        assert!(refusal(&issue).contains("no safe automatic repair"));
        assert_eq!(interpret(PackageManager::Dnf, &out(0, "", "")), None);
    }

    #[test]
    fn apk_fix_simulate_lists_the_broken_packages() {
        let healthy = "OK: 8 MiB in 15 packages\n";
        assert_eq!(interpret(PackageManager::Apk, &out(0, healthy, "")), None);
        let broken = "(1/1) Reinstalling busybox (1.36.1-r29)\nOK: 8 MiB in 15 packages\n";
        let issue = interpret(PackageManager::Apk, &out(0, broken, "")).expect("an issue");
        assert_eq!(
            issue.problem,
            "packages to reinstall:\n(1/1) Reinstalling busybox (1.36.1-r29)"
        );
        assert_eq!(issue.repair.as_deref(), Some("apk fix"));
        assert!(refusal(&issue).starts_with(
            "the apk database has broken packages: approve the repair (apk fix) first"
        ));
        let failed = interpret(
            PackageManager::Apk,
            &out(1, "", "ERROR: unable to lock database"),
        );
        assert!(failed.expect("an issue").problem.contains("unable to lock"));
    }

    #[test]
    fn the_problem_text_is_its_first_lines() {
        let long: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let issue = interpret(PackageManager::Apt, &out(0, &long, "")).expect("an issue");
        assert_eq!(issue.problem.lines().count(), PROBLEM_LINES);
        assert!(issue.problem.starts_with("line 0\nline 1\n"));
    }
}
