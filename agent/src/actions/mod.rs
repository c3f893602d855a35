//! What the server asks an agent to *do*: dry-run, install, repair, per package manager.
//! Each returns a [`CommandResult`] (captured output, exit status, plan, summary);
//! failures are data in the result, never a panic or a lost command.
//!
//! [`route`] gives each package to the manager that reported it in the last scan (a host may
//! run apt and dnf side by side), so the dry-run and the install run with the manager of the
//! approved update rows, never "whichever was detected first"; a pinned install gives each
//! package to the manager its dry-run named ([`install`]).

pub mod apk;
pub mod apt;
pub mod dnf;
pub mod images;
pub mod install;
pub mod pinned;

pub use install::{install, repair, InstallJob};

use crate::helper::Verb;
use crate::process::{run, truncate_tail, Limit, Output, ProcessError, MAX_OUTPUT};
use canopy_api_types::agent::ScanReport;
use canopy_api_types::commands::{CommandResult, PlannedPackage};
use canopy_api_types::updates::PackageManager;
use std::time::Duration;

/// One package manager's share of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub manager: PackageManager,
    pub packages: Vec<String>,
}

/// What a dry-run says the install would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub packages: Vec<PlannedPackage>,
    /// Packages the transaction would remove (sent as `CommandResult::removed`).
    pub removed: Vec<String>,
}

impl Plan {
    /// "3 upgraded, 1 newly installed (1 requested, 3 dependencies)[, 1 to remove (x)]".
    pub fn summary(&self) -> String {
        let upgraded = self
            .packages
            .iter()
            .filter(|p| p.from_version.is_some())
            .count();
        let new = self.packages.len() - upgraded;
        let requested = self.packages.iter().filter(|p| p.requested).count();
        let mut s = format!(
            "{upgraded} upgraded, {new} newly installed ({requested} requested, {} dependencies)",
            self.packages.len() - requested
        );
        if !self.removed.is_empty() {
            s.push_str(&format!(
                ", {} to remove ({})",
                self.removed.len(),
                self.removed.join(", ")
            ));
        }
        s
    }
}

/// `pkg`, `pkg:amd64`, `pkg=1.2` → `pkg`.
pub(crate) fn base_name(s: &str) -> &str {
    let s = s.split('=').next().unwrap_or(s);
    s.split(':').next().unwrap_or(s)
}

/// A package name as it may be passed to a package manager: no option injection,
/// no shell or glob metacharacters.
pub fn validate_package_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-._:=~@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid package name {name:?}"))
    }
}

pub(crate) fn failed(exit_code: i32, stderr: String, summary: String) -> CommandResult {
    CommandResult {
        exit_code,
        success: false,
        stdout: String::new(),
        stderr,
        planned: Vec::new(),
        removed: Vec::new(),
        summary,
        health: None,
    }
}

/// Splits `packages` by manager: each goes to the manager of its row in `last` (the last
/// scan report) if that manager is in `managers`, else to the first of `managers`. A name
/// reported by two managers goes to the one listed first. Batches follow the order of
/// `managers`; names are validated first (nothing runs when one is bad).
pub fn route(
    packages: &[String],
    managers: &[PackageManager],
    last: Option<&ScanReport>,
) -> Result<Vec<Batch>, Box<CommandResult>> {
    let Some(&primary) = managers.first() else {
        return Err(Box::new(failed(
            -1,
            "no supported package manager found on this host".into(),
            "no package manager".into(),
        )));
    };
    if packages.is_empty() {
        return Err(Box::new(failed(
            -1,
            "no packages given".into(),
            "nothing to do".into(),
        )));
    }
    for p in packages {
        if let Err(e) = validate_package_name(p) {
            return Err(Box::new(failed(-1, e, "rejected".into())));
        }
    }
    let mut batches: Vec<Batch> = Vec::new();
    for p in packages {
        let name = base_name(p);
        let reported: Vec<PackageManager> = last
            .map(|r| {
                r.updates
                    .iter()
                    .filter(|u| u.package == name)
                    .map(|u| u.manager)
                    .collect()
            })
            .unwrap_or_default();
        let manager = managers
            .iter()
            .copied()
            .find(|m| reported.contains(m))
            .unwrap_or(primary);
        if reported.len() > 1 {
            tracing::warn!(package = %p, manager = manager.as_str(), "reported by several package managers; using the first configured");
        }
        match batches.iter_mut().find(|b| b.manager == manager) {
            Some(b) => b.packages.push(p.clone()),
            None => batches.push(Batch {
                manager,
                packages: vec![p.clone()],
            }),
        }
    }
    batches.sort_by_key(|b| managers.iter().position(|m| *m == b.manager));
    Ok(batches)
}

/// One result from several batches: output under a `==> manager <==` header each, plans
/// concatenated, the exit code of the first failure.
pub(crate) fn merge(results: Vec<(PackageManager, CommandResult)>) -> CommandResult {
    if results.len() == 1 {
        if let Some((_, r)) = results.into_iter().next() {
            return r;
        }
        unreachable!("one result");
    }
    let join = |f: &dyn Fn(&CommandResult) -> &str| {
        let parts: Vec<String> = results
            .iter()
            .filter(|(_, r)| !f(r).is_empty())
            .map(|(m, r)| format!("==> {} <==\n{}", m.as_str(), f(r)))
            .collect();
        truncate_tail(&parts.join("\n"), MAX_OUTPUT)
    };
    CommandResult {
        exit_code: results
            .iter()
            .find(|(_, r)| !r.success)
            .map_or(0, |(_, r)| r.exit_code),
        success: results.iter().all(|(_, r)| r.success),
        stdout: join(&|r| r.stdout.as_str()),
        stderr: join(&|r| r.stderr.as_str()),
        planned: results
            .iter()
            .flat_map(|(_, r)| r.planned.clone())
            .collect(),
        removed: results
            .iter()
            .flat_map(|(_, r)| r.removed.clone())
            .collect(),
        summary: results
            .iter()
            .map(|(m, r)| format!("{}: {}", m.as_str(), r.summary))
            .collect::<Vec<_>>()
            .join("; "),
        health: None,
    }
}

/// A command that did not finish (or was refused) as a failed result, with whatever it
/// printed before it was stopped.
pub(crate) fn process_failure(e: ProcessError) -> CommandResult {
    let (stdout, stderr) = match &e {
        ProcessError::Stopped { stdout, stderr, .. } => (stdout.clone(), stderr.clone()),
        _ => (String::new(), String::new()),
    };
    let msg = e.to_string();
    CommandResult {
        exit_code: e.exit_code(),
        success: false,
        stdout,
        stderr: if stderr.is_empty() {
            msg.clone()
        } else {
            format!("{stderr}\n{msg}")
        },
        planned: Vec::new(),
        removed: Vec::new(),
        summary: msg,
        health: None,
    }
}

pub(crate) fn result_from(
    out: Output,
    success: bool,
    plan: Option<Plan>,
    summary: String,
) -> CommandResult {
    CommandResult {
        exit_code: out.exit_code,
        success,
        stdout: truncate_tail(&out.stdout, MAX_OUTPUT),
        stderr: truncate_tail(&out.stderr, MAX_OUTPUT),
        removed: plan.as_ref().map(|p| p.removed.clone()).unwrap_or_default(),
        planned: plan.map(|p| p.packages).unwrap_or_default(),
        summary,
        health: None,
    }
}

/// Simulate installing every batch and report every package the install would touch.
pub async fn dry_run(batches: &[Batch], timeout: Duration) -> CommandResult {
    let mut results = Vec::new();
    for b in batches {
        results.push((
            b.manager,
            dry_run_one(b.manager, &b.packages, timeout).await,
        ));
    }
    if results.is_empty() {
        return failed(-1, "no packages given".into(), "nothing to do".into());
    }
    merge(results)
}

/// Simulate installing `packages` with `m` and report every package the install would touch.
#[tracing::instrument(skip_all, fields(manager = m.as_str(), packages = ?packages))]
pub async fn dry_run_one(
    m: PackageManager,
    packages: &[String],
    timeout: Duration,
) -> CommandResult {
    if let Err(r) = route(packages, &[m], None) {
        return *r;
    }
    // apt and apk simulate as the agent's user; dnf refuses that, so its simulation goes
    // through the helper.
    let out = match m {
        PackageManager::Apt => run(&apt::dry_run_cmd(packages, timeout)).await,
        PackageManager::Apk => run(&apk::dry_run_cmd(packages, timeout)).await,
        PackageManager::Dnf => match Verb::simulate(m, packages.to_vec()) {
            Ok(verb) => crate::helper::call(&verb, Limit::Deadline(timeout)).await,
            Err(e) => return failed(-1, e, "rejected".into()),
        },
        PackageManager::Docker => {
            return failed(
                -1,
                "docker dry-run is not supported".into(),
                "unsupported".into(),
            )
        }
    };
    let out = match out {
        Ok(o) => o,
        Err(e) => return process_failure(e),
    };
    let (ok, plan) = match m {
        PackageManager::Apt => (out.success(), apt::parse_simulation(&out.stdout, packages)),
        PackageManager::Dnf => {
            let ok = dnf::dry_run_ok(out.exit_code, &out.stdout, &out.stderr);
            let names: Vec<String> = packages.iter().map(|p| base_name(p).to_string()).collect();
            let mut plan = dnf::parse_transaction(&out.stdout, packages, &Default::default());
            let mut all: Vec<String> = plan.packages.iter().map(|p| p.package.clone()).collect();
            all.extend(names);
            all.sort();
            all.dedup();
            if let Ok(inst) = crate::scan::dnf::installed_versions(&all, timeout).await {
                plan = dnf::parse_transaction(&out.stdout, packages, &inst);
            }
            (ok, plan)
        }
        _ => (out.success(), apk::parse_simulation(&out.stdout, packages)),
    };
    let summary = if ok {
        plan.summary()
    } else {
        format!(
            "dry-run failed: `{}` exited with {}",
            out.command, out.exit_code
        )
    };
    result_from(out, ok, Some(plan), summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_api_types::updates::{PackageUpdate, Severity};

    #[tokio::test]
    async fn bad_names_are_rejected_before_running_anything() {
        let r = dry_run_one(
            PackageManager::Apt,
            &["-o=evil".into()],
            Duration::from_secs(5),
        )
        .await;
        assert!(!r.success);
        assert!(r.stderr.contains("invalid package name"));
        let e = route(&["bash".into()], &[], None).unwrap_err();
        assert!(e.stderr.contains("no supported package manager"));
        let e = route(&["ok".into(), "x;rm".into()], &[PackageManager::Apt], None).unwrap_err();
        assert!(e.stderr.contains("invalid package name"));
    }

    fn row(manager: PackageManager, package: &str) -> PackageUpdate {
        PackageUpdate {
            manager,
            package: package.into(),
            current_version: "1".into(),
            available_version: "2".into(),
            arch: None,
            source: None,
            severity: Severity::Normal,
            held: false,
        }
    }

    #[test]
    fn packages_go_to_the_manager_that_reported_them() {
        use PackageManager::*;
        let report = ScanReport {
            updates: vec![
                row(Apt, "curl"),
                row(Dnf, "canopy-demo-tools"),
                row(Dnf, "canopy-demo-ssl"),
                row(Apt, "both"),
                row(Dnf, "both"),
            ],
            ..ScanReport::default()
        };
        let pkgs: Vec<String> = ["canopy-demo-tools", "curl", "canopy-demo-ssl", "unknown"]
            .map(String::from)
            .to_vec();
        // apt detected first: before this routing, dnf's packages were handed to apt.
        let b = route(&pkgs, &[Apt, Dnf], Some(&report)).expect("route");
        assert_eq!(
            b,
            [
                Batch {
                    manager: Apt,
                    packages: vec!["curl".into(), "unknown".into()],
                },
                Batch {
                    manager: Dnf,
                    packages: vec!["canopy-demo-tools".into(), "canopy-demo-ssl".into()],
                },
            ]
        );
        // Only dnf enabled: everything goes to dnf; names reported twice go to the first listed.
        let b = route(&pkgs, &[Dnf], Some(&report)).expect("route");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].manager, Dnf);
        let b = route(&["both".into()], &[Dnf, Apt], Some(&report)).expect("route");
        assert_eq!(b[0].manager, Dnf);
        // No report yet: the first enabled manager.
        let b = route(&["x".into()], &[Dnf, Apt], None).expect("route");
        assert_eq!(b[0].manager, Dnf);
        // An arch or version suffix does not hide the row.
        let b = route(&["curl:amd64".into()], &[Dnf, Apt], Some(&report)).expect("route");
        assert_eq!(b[0].manager, Apt);
    }

    #[test]
    fn merged_results_keep_each_managers_output_and_the_first_failure() {
        let ok = CommandResult {
            exit_code: 0,
            success: true,
            stdout: "apt out".into(),
            stderr: String::new(),
            planned: vec![PlannedPackage {
                package: "curl".into(),
                from_version: Some("1".into()),
                to_version: "2".into(),
                requested: true,
                manager: None,
                containers: Vec::new(),
            }],
            removed: vec![],
            summary: "1 upgraded".into(),
            health: None,
        };
        let bad = failed(1, "dnf broke".into(), "dry-run failed".into());
        let m = merge(vec![
            (PackageManager::Apt, ok.clone()),
            (PackageManager::Dnf, bad),
        ]);
        assert!(!m.success);
        assert_eq!(m.exit_code, 1);
        assert_eq!(m.stdout, "==> apt <==\napt out");
        assert_eq!(m.stderr, "==> dnf <==\ndnf broke");
        assert_eq!(m.planned.len(), 1);
        assert_eq!(m.summary, "apt: 1 upgraded; dnf: dry-run failed");
        assert_eq!(merge(vec![(PackageManager::Apt, ok.clone())]), ok);
    }

    /// apt and apk simulate as the agent's own user (no sudo, a deadline); dnf's
    /// simulation is the helper's `simulate` verb, and only dnf's.
    #[test]
    fn only_the_dnf_dry_run_needs_the_helper() {
        let p = vec!["curl".to_string()];
        let t = Duration::from_secs(5);
        for cmd in [apt::dry_run_cmd(&p, t), apk::dry_run_cmd(&p, t)] {
            assert_ne!(cmd.program, "sudo", "{cmd}");
            assert_eq!(cmd.limit, Limit::Deadline(t));
        }
        assert!(Verb::simulate(PackageManager::Dnf, p.clone()).is_ok());
        assert!(Verb::simulate(PackageManager::Apt, p).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(base_name("libc6:amd64"), "libc6");
        assert_eq!(base_name("bash=5.2"), "bash");
        assert!(validate_package_name("g++-12").is_ok());
        assert!(validate_package_name("a b").is_err());
        assert!(validate_package_name("x;rm").is_err());
    }
}
