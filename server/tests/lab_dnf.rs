//! End to end in the lab's dnf guest: Debian's real dnf 4.14 and rpm 4.18 with an rpm
//! database of their own, a local RPM repository with a security advisory
//! (`lab/packages/demo-rpms.txt`), the real static `canopy-agent` restricted to dnf
//! (`--package-manager dnf` at registration, saved in agent.toml; apt is present in the guest
//! too), and the real server. Needs `cargo xtask test` (CANOPY_LAB, CANOPY_AGENT_MUSL_BIN);
//! without them the test fails, unless CANOPY_SKIP_LAB=1.

mod common;

use canopy_api_types::commands::{CommandSpec, CommandStatus};
use canopy_api_types::updates::{PackageManager, Severity, UpdateFilter, UpdateStatus};
use common::lab::*;
use common::*;
use std::time::Duration;

/// `VERSION-RELEASE` of an installed rpm, or `None`.
fn rpm_version(guest: &str, package: &str) -> Option<String> {
    let out = docker_output(&[
        "exec",
        guest,
        "rpm",
        "-q",
        "--qf",
        "%{VERSION}-%{RELEASE}",
        package,
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Register with `--package-manager dnf` and start `canopy-agent run`.
async fn enrol_dnf_guest(app: &TestApp, lab: &Lab, guest: &str) {
    install_agent(lab, guest);
    let token = app.registration_token(1).await;
    let out = docker(&[
        "exec",
        "-e",
        &format!("CANOPY_REGISTRATION_TOKEN={token}"),
        guest,
        "canopy-agent",
        "--package-manager",
        "dnf",
        "register",
        "--server",
        &app.base,
    ]);
    assert!(
        !out.contains(&token),
        "the registration token must not be echoed"
    );
    let config = docker(&["exec", guest, "cat", "/etc/canopy-agent/agent.toml"]);
    assert!(
        config.contains("package_managers = [\"dnf\"]"),
        "register saves the choice: {config}"
    );
    start_agent(guest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnf_agent_in_a_lab_guest_runs_the_whole_pipeline() {
    let Some(lab) = Lab::from_env("dnf lab end-to-end test") else {
        return;
    };
    let guest = lab.dnf_guests()[0].clone();
    let expected = lab.dnf()["packages"]
        .as_object()
        .expect("dnf.packages")
        .clone();
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    enrol_dnf_guest(&app, &lab, &guest).await;

    // The agent registers and reports the outdated demo RPMs, with dnf's security advisory.
    let updates = eventually(Duration::from_secs(120), || async {
        let page = app
            .admin
            .updates(&UpdateFilter {
                package: Some("canopy-demo".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        (page.total as usize >= expected.len()).then_some(page.items)
    })
    .await;
    assert_eq!(updates.len(), expected.len(), "{updates:?}");
    for (name, want) in &expected {
        let u = updates
            .iter()
            .find(|u| &u.package == name)
            .unwrap_or_else(|| panic!("{name} not reported: {updates:?}"));
        assert_eq!(u.manager, PackageManager::Dnf, "{u:?}");
        assert_eq!(Some(u.current_version.as_str()), want["old"].as_str());
        assert_eq!(Some(u.available_version.as_str()), want["new"].as_str());
        assert_eq!(u.arch.as_deref(), Some("noarch"));
        assert_eq!(u.source.as_deref(), lab.dnf()["repo_id"].as_str());
        let security = want["security"].as_bool() == Some(true);
        assert_eq!(
            u.severity == Severity::Security,
            security,
            "{name}: severity {:?}",
            u.severity
        );
        assert!(!u.held);
    }
    let log = agent_log(&guest);
    assert!(
        log.contains("managers=dnf") && log.contains("configured"),
        "the agent runs with the configured dnf only:\n{log}"
    );
    let status: serde_json::Value = serde_json::from_str(&docker(&[
        "exec",
        &guest,
        "canopy-agent",
        "status",
        "--json",
    ]))
    .expect("status --json");
    assert_eq!(status["package_managers"], serde_json::json!(["dnf"]));
    let by_name = |n: &str| {
        updates
            .iter()
            .find(|u| u.package == n)
            .unwrap_or_else(|| panic!("{n} not reported"))
    };

    // Approving two shows the new dependency in the dry-run, which changes nothing.
    let approved = app
        .admin
        .approve(vec![
            by_name("canopy-demo-tools").id,
            by_name("canopy-demo-ssl").id,
        ])
        .await
        .unwrap();
    assert_eq!(approved.approved, 2);
    let dry_id = approved.dry_run_commands[0];
    let dry = app.finished_command(dry_id, Duration::from_secs(60)).await;
    assert_eq!(
        dry.status,
        CommandStatus::Completed,
        "dry-run failed: {:?}",
        dry.result
    );
    let result = dry.result.unwrap();
    assert!(
        result.stdout.contains("Installing dependencies:"),
        "the real dnf transaction table: {}",
        result.stdout
    );
    let planned = result.planned;
    let new_dep = expected["canopy-demo-tools"]["new_dependency"]
        .as_str()
        .expect("tools has a new dependency");
    let dep = planned
        .iter()
        .find(|p| p.package == new_dep)
        .unwrap_or_else(|| panic!("the dry-run shows {new_dep}: {planned:?}"));
    assert!(!dep.requested && dep.from_version.is_none(), "{dep:?}");
    let tools = planned
        .iter()
        .find(|p| p.package == "canopy-demo-tools")
        .expect("tools planned");
    assert!(tools.requested);
    assert_eq!(tools.from_version.as_deref(), Some("1.0-1"));
    assert_eq!(tools.to_version, "2.0-1");
    assert_eq!(planned.len(), 3, "{planned:?}");
    assert_eq!(
        rpm_version(&guest, "canopy-demo-tools").as_deref(),
        Some("1.0-1"),
        "a dry-run changes nothing"
    );
    assert_eq!(rpm_version(&guest, new_dep), None);

    // Confirming installs them; rpm in the guest shows the new versions.
    let install = app.admin.confirm(dry_id).await.unwrap();
    assert!(matches!(install.spec, CommandSpec::Install { .. }));
    let done = app
        .finished_command(install.id, Duration::from_secs(120))
        .await;
    assert_eq!(
        done.status,
        CommandStatus::Completed,
        "install failed: {:?}",
        done.result
    );
    let result = done.result.unwrap();
    assert!(result.stdout.contains("Complete!"));
    // Installed pinned (`dnf install NAME-VERSION-RELEASE`), the dependency included.
    assert!(
        result.summary.contains("canopy-demo-libextra 1.0-1"),
        "{}",
        result.summary
    );
    for name in ["canopy-demo-tools", "canopy-demo-ssl"] {
        assert_eq!(
            rpm_version(&guest, name).as_deref(),
            expected[name]["new"].as_str(),
            "{name} after the install"
        );
    }
    assert_eq!(rpm_version(&guest, new_dep).as_deref(), Some("1.0-1"));
    assert_eq!(
        rpm_version(&guest, "canopy-demo-hello").as_deref(),
        Some("1.0-1"),
        "what was not approved stays"
    );

    // The installed rows are history, under the approval's correlation id.
    let installed = app
        .admin
        .updates(&UpdateFilter {
            status: Some(UpdateStatus::Installed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(installed.total, 2);
    let history = app.admin.history(None).await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    for h in &history {
        assert_eq!(h.correlation_id, approved.correlation_id);
        assert_eq!(h.manager, PackageManager::Dnf);
        assert_eq!(
            Some(h.to_version.as_str()),
            expected[&h.package]["new"].as_str()
        );
    }
    app.assert_events(
        approved.correlation_id,
        &[
            "updates.approved",
            "command.queued",
            "command.sent",
            "command.running",
            "command.completed",
            "dry_run.ready",
            "install.confirmed",
            "updates.installed",
        ],
    )
    .await;
    // The re-scan after the install still reports the update nobody approved.
    eventually(Duration::from_secs(60), || async {
        let page = app
            .admin
            .updates(&UpdateFilter {
                status: Some(UpdateStatus::Pending),
                ..Default::default()
            })
            .await
            .unwrap();
        (page.total == 1 && page.items[0].package == "canopy-demo-hello").then_some(())
    })
    .await;

    // With apt listed first, a dry-run still goes to dnf: the cached scan says where
    // canopy-demo-hello came from (before, the first detected manager got every package).
    let out = docker(&[
        "exec",
        "-e",
        "CANOPY_AGENT_PACKAGE_MANAGERS=apt,dnf",
        &guest,
        "canopy-agent",
        "dry-run",
        "--json",
        "canopy-demo-hello",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).expect("dry-run --json");
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(
        r["planned"],
        serde_json::json!([{ "package": "canopy-demo-hello", "from_version": "1.0-1",
                              "to_version": "1.1-1", "requested": true, "manager": "dnf" }]),
        "{r}"
    );
    stop_agent(&guest);
}
