//! What the server asks an agent to *do*: dry-run and install, per package manager.
//! Each returns a [`CommandResult`] (captured output, exit status, plan, summary);
//! failures are data in the result, never a panic or a lost command.

pub mod apk;
pub mod apt;
pub mod dnf;

use crate::process::{run, truncate_tail, Cmd, Output, MAX_OUTPUT};
use canopy_api_types::commands::{CommandResult, PlannedPackage};
use canopy_api_types::updates::PackageManager;
use std::time::Duration;

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

fn failed(exit_code: i32, stderr: String, summary: String) -> CommandResult {
    CommandResult {
        exit_code,
        success: false,
        stdout: String::new(),
        stderr,
        planned: Vec::new(),
        removed: Vec::new(),
        summary,
    }
}

fn check_request(
    manager: Option<PackageManager>,
    packages: &[String],
) -> Result<PackageManager, Box<CommandResult>> {
    let Some(m) = manager else {
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
    Ok(m)
}

async fn run_captured(cmd: &Cmd) -> Result<Output, Box<CommandResult>> {
    run(cmd)
        .await
        .map_err(|e| Box::new(failed(e.exit_code(), e.to_string(), format!("{e}"))))
}

fn result_from(out: Output, success: bool, plan: Option<Plan>, summary: String) -> CommandResult {
    CommandResult {
        exit_code: out.exit_code,
        success,
        stdout: truncate_tail(&out.stdout, MAX_OUTPUT),
        stderr: truncate_tail(&out.stderr, MAX_OUTPUT),
        removed: plan.as_ref().map(|p| p.removed.clone()).unwrap_or_default(),
        planned: plan.map(|p| p.packages).unwrap_or_default(),
        summary,
    }
}

/// Simulate installing `packages` and report every package the install would touch.
#[tracing::instrument(skip_all, fields(packages = ?packages))]
pub async fn dry_run(
    manager: Option<PackageManager>,
    packages: &[String],
    timeout: Duration,
) -> CommandResult {
    let m = match check_request(manager, packages) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let cmd = match m {
        PackageManager::Apt => apt::dry_run_cmd(packages, timeout),
        PackageManager::Dnf => dnf::dry_run_cmd(packages, timeout),
        PackageManager::Apk => apk::dry_run_cmd(packages, timeout),
        PackageManager::Docker => {
            return failed(
                -1,
                "docker dry-run is not supported".into(),
                "unsupported".into(),
            )
        }
    };
    let out = match run_captured(&cmd).await {
        Ok(o) => o,
        Err(r) => return *r,
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

/// Install (upgrade) `packages` and their new dependencies. Refused when `read_only`.
#[tracing::instrument(skip_all, fields(packages = ?packages))]
pub async fn install(
    manager: Option<PackageManager>,
    packages: &[String],
    timeout: Duration,
    read_only: bool,
) -> CommandResult {
    if read_only {
        return failed(
            -1,
            "this agent is read-only (read_only = true / --read-only): installs are refused".into(),
            "refused: agent is read-only".into(),
        );
    }
    let m = match check_request(manager, packages) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let cmd = match m {
        PackageManager::Apt => apt::install_cmd(packages, timeout),
        PackageManager::Dnf => dnf::install_cmd(packages, timeout),
        PackageManager::Apk => apk::install_cmd(packages, timeout),
        PackageManager::Docker => {
            return failed(
                -1,
                "docker install is not supported".into(),
                "unsupported".into(),
            )
        }
    };
    let out = match run_captured(&cmd).await {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let ok = out.success();
    let summary = if ok {
        format!("installed {}", packages.join(", "))
    } else {
        format!(
            "install failed: `{}` exited with {}",
            out.command, out.exit_code
        )
    };
    result_from(out, ok, None, summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn read_only_refuses_installs() {
        let r = install(
            Some(PackageManager::Apt),
            &["bash".into()],
            Duration::from_secs(5),
            true,
        )
        .await;
        assert!(!r.success);
        assert!(r.stderr.contains("read-only"));
    }

    #[tokio::test]
    async fn bad_names_are_rejected_before_running_anything() {
        let r = dry_run(
            Some(PackageManager::Apt),
            &["-o=evil".into()],
            Duration::from_secs(5),
        )
        .await;
        assert!(!r.success);
        assert!(r.stderr.contains("invalid package name"));
        let r = dry_run(None, &["bash".into()], Duration::from_secs(5)).await;
        assert!(r.stderr.contains("no supported package manager"));
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
