use super::*;
use canopy_api_types::updates::PackageManager::{Apt, Dnf};

fn planned(name: &str, to: &str, requested: bool, m: Option<PackageManager>) -> PlannedPackage {
    PlannedPackage {
        package: name.into(),
        from_version: None,
        to_version: to.into(),
        requested,
        manager: m,
        containers: Vec::new(),
    }
}

fn job<'a>(
    packages: &'a [String],
    pinned: &'a [PlannedPackage],
    managers: &'a [PackageManager],
) -> InstallJob<'a> {
    InstallJob {
        packages,
        pinned,
        managers,
        last: None,
        read_only: false,
        check_timeout: Duration::from_secs(5),
        hang_timeout: Duration::from_secs(5),
        docker: crate::docker::DockerConfig::default(),
    }
}

#[tokio::test]
async fn read_only_refuses_installs_and_repairs() {
    let packages = ["bash".to_string()];
    let mut j = job(&packages, &[], &[Apt]);
    j.read_only = true;
    let r = install(&j).await;
    assert!(!r.success);
    assert!(r.stderr.contains("read-only"), "{r:?}");
    let r = repair(Apt, true, Duration::from_secs(5), Duration::from_secs(5)).await;
    assert!(!r.success && r.stderr.contains("read-only"), "{r:?}");
}

#[tokio::test]
async fn dnf_has_no_repair() {
    let r = repair(Dnf, false, Duration::from_secs(5), Duration::from_secs(5)).await;
    assert!(!r.success);
    assert!(r.stderr.contains("no safe automatic repair"), "{r:?}");
}

/// A bad name or version anywhere in the plan refuses the install before anything runs
/// (no audit, no simulation, no helper).
#[tokio::test]
async fn bad_names_and_versions_in_the_plan_are_refused_first() {
    let packages = ["canopy-demo-tools".to_string()];
    for (name, version, why) in [
        (
            "-oAPT::Update::Pre-Invoke::=id",
            "1",
            "invalid package name",
        ),
        ("canopy-demo-tools", "2.0;id", "invalid version"),
        ("canopy-demo-tools", "-1", "invalid version"),
        ("x*", "1", "invalid package name"),
    ] {
        let pinned = [planned(name, version, true, Some(Apt))];
        let r = install(&job(&packages, &pinned, &[Apt])).await;
        assert!(!r.success);
        assert_eq!(r.summary, "rejected", "{r:?}");
        assert!(r.stderr.contains(why), "{name} {version}: {}", r.stderr);
    }
    let bad = ["ok".to_string(), "--allow-downgrades".to_string()];
    let r = install(&job(&bad, &[], &[Apt])).await;
    assert!(r.stderr.contains("invalid package name"), "{r:?}");
}

/// Each pinned package goes to the manager its dry-run named; the requested ones are also
/// what the re-check simulates.
#[test]
fn pinned_packages_go_to_their_managers() {
    let packages = [
        "canopy-demo-tools".to_string(),
        "canopy-demo-ssl".to_string(),
    ];
    let pinned = [
        planned("canopy-demo-tools", "2.0-1", true, Some(Dnf)),
        planned("canopy-demo-libextra", "1.0-1", false, Some(Dnf)),
        planned("canopy-demo-ssl", "1.0+deb12u1", true, Some(Apt)),
    ];
    let s = shares(&job(&packages, &pinned, &[Apt, Dnf])).expect("shares");
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].manager, Dnf);
    assert_eq!(s[0].names, ["canopy-demo-tools"]);
    assert_eq!(
        s[0].plan
            .iter()
            .map(|p| p.package.as_str())
            .collect::<Vec<_>>(),
        ["canopy-demo-tools", "canopy-demo-libextra"]
    );
    assert_eq!(s[1].manager, Apt);
    assert_eq!(s[1].names, ["canopy-demo-ssl"]);
    // Without a manager in the plan (an older dry-run), the routing of today decides.
    let old = [planned("curl", "8.0", true, None)];
    let s = shares(&job(&["curl".to_string()], &old, &[Dnf, Apt])).expect("shares");
    assert_eq!(s[0].manager, Dnf);
    assert_eq!(s[0].names, ["curl"]);
}
