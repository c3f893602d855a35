//! The real apt scanner, the real `apt-get -s` dry-run and the real `dpkg --audit` on this
//! machine (Debian with apt). No network: `apt list --upgradable` reads the local lists as
//! they are (possibly empty), and the dry-run simulates a reinstall of an installed package.
//! A host without apt fails these tests in CI (`CI=true`: the CI machine is Debian, so a
//! missing apt is a broken prerequisite, not a reason to pass); elsewhere they say SKIPPED.

use canopy_agent::scan::{self, ScanOptions};
use canopy_api_types::updates::PackageManager;
use std::time::Duration;

/// Whether apt is here. Without it: a failure in CI, a SKIPPED line elsewhere.
fn have_apt() -> bool {
    if canopy_agent::process::which("apt-get").is_some() {
        return true;
    }
    let ci = matches!(
        std::env::var("CI").as_deref(),
        Ok("true") | Ok("1") | Ok("yes")
    );
    assert!(
        !ci,
        "CI=true but apt-get is not on PATH: the real-apt tests need a Debian machine with apt"
    );
    eprintln!("SKIPPED (no apt-get on this host; CI would fail here)");
    false
}

#[tokio::test]
async fn real_apt_scan_is_well_formed() {
    if !have_apt() {
        return;
    }
    assert!(scan::detect_managers().contains(&PackageManager::Apt));
    let report = scan::scan(&ScanOptions {
        refresh: false,
        timeout: Duration::from_secs(120),
        managers: vec![PackageManager::Apt],
        ..ScanOptions::default()
    })
    .await;
    assert!(
        report.scanner_errors.is_empty(),
        "{:?}",
        report.scanner_errors
    );
    for u in &report.updates {
        assert_eq!(u.manager, PackageManager::Apt);
        assert!(!u.package.is_empty() && !u.package.contains('/'), "{u:?}");
        assert!(
            !u.current_version.is_empty() && !u.available_version.is_empty(),
            "{u:?}"
        );
        assert_ne!(u.current_version, u.available_version, "{u:?}");
        assert!(u.arch.is_some());
    }
    // Sorted, and the JSON shape round-trips.
    let names: Vec<_> = report.updates.iter().map(|u| u.package.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let json = serde_json::to_string(&report).expect("serialise");
    let back: canopy_api_types::agent::ScanReport = serde_json::from_str(&json).expect("parse");
    assert_eq!(back, report);
    assert_eq!(scan::report_hash(&report).len(), 64);
}

#[tokio::test]
async fn real_apt_dry_run_of_an_installed_package() {
    if !have_apt() {
        return;
    }
    let r = canopy_agent::actions::dry_run_one(
        PackageManager::Apt,
        &["bash".to_string()],
        Duration::from_secs(120),
    )
    .await;
    assert!(r.success, "{r:?}");
    assert_eq!(r.exit_code, 0);
    // bash is installed: either it is upgradable (planned, requested, with its old
    // version) or already newest (nothing planned).
    if let Some(p) = r.planned.iter().find(|p| p.package == "bash") {
        assert!(p.requested);
        assert!(p.from_version.is_some());
    }
    assert!(r.planned.iter().filter(|p| p.requested).count() <= 1);
    assert!(r.summary.contains("upgraded"), "{}", r.summary);
    assert!(r.stdout.contains("Reading package lists"));
}

#[tokio::test]
async fn real_apt_dry_run_of_an_unknown_package_fails_cleanly() {
    if !have_apt() {
        return;
    }
    let r = canopy_agent::actions::dry_run_one(
        PackageManager::Apt,
        &["canopy-no-such-package-xyz".to_string()],
        Duration::from_secs(120),
    )
    .await;
    assert!(!r.success);
    assert_eq!(r.exit_code, 100);
    assert!(
        r.stderr.contains("Unable to locate package"),
        "{}",
        r.stderr
    );
    assert!(r.summary.contains("apt-get"), "{}", r.summary);
}

/// This machine's dpkg database, checked the way the agent checks it before every install.
#[tokio::test]
async fn real_dpkg_audit_of_this_machine() {
    if !have_apt() {
        return;
    }
    // As root, the helper's own code path (in process); otherwise the same command directly
    // (the sudo path needs the deploy's sudoers rule: the lab test covers it).
    let limit = canopy_agent::process::Limit::Deadline(Duration::from_secs(120));
    let verb = canopy_agent::helper::Verb::Audit(PackageManager::Apt);
    let out = if canopy_agent::identity::is_root() {
        canopy_agent::helper::call(&verb, limit).await
    } else {
        let cmd = canopy_agent::helper::commands::commands(&verb).expect("audit apt")[0].clone();
        canopy_agent::process::run(&cmd.limit(limit)).await
    }
    .expect("dpkg --audit runs");
    assert_eq!(out.exit_code, 0, "{out:?}");
    // Whatever this machine's state, the reading agrees with the raw output.
    let issue = canopy_agent::audit::interpret(PackageManager::Apt, &out);
    assert_eq!(issue.is_some(), !out.stdout.trim().is_empty(), "{out:?}");
}
