//! End to end in a lab guest: a real Debian bookworm container (host networking), the
//! real static `canopy-agent`, real apt against the lab's local repository, and the
//! real server. Needs `cargo xtask test` (it exports CANOPY_LAB and
//! CANOPY_AGENT_MUSL_BIN); without them the test fails, unless CANOPY_SKIP_LAB=1.

mod common;

use canopy_api_types::commands::{CommandSpec, CommandStatus};
use canopy_api_types::updates::{Severity, UpdateFilter, UpdateStatus};
use common::lab::*;
use common::*;
use std::process::Command;
use std::time::Duration;

fn lab() -> Option<Lab> {
    Lab::from_env("lab end-to-end test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_in_a_lab_guest_runs_the_whole_pipeline() {
    let Some(lab) = lab() else { return };
    let guest = lab.guests()[0].clone();
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    enrol_guest(&app, &lab, &guest).await;

    // The agent registers and reports the outdated demo packages.
    let updates = eventually(Duration::from_secs(120), || async {
        let page = app
            .admin
            .updates(&UpdateFilter {
                package: Some("canopy-demo".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        (page.total >= 4).then_some(page.items)
    })
    .await;
    let by_name = |n: &str| {
        updates
            .iter()
            .find(|u| u.package == n)
            .unwrap_or_else(|| panic!("{n} not reported: {updates:?}"))
    };
    assert_eq!(by_name("canopy-demo-ssl").severity, Severity::Security);
    assert!(
        by_name("canopy-demo-pinned").held,
        "held packages are reported as held"
    );
    assert_eq!(by_name("canopy-demo-tools").available_version, "2.0");

    // Approving two shows the new dependency in the dry-run.
    let old_tools = dpkg_version(&guest, "canopy-demo-tools");
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
    let planned = dry.result.unwrap().planned;
    let dep = planned
        .iter()
        .find(|p| p.package == "canopy-demo-libextra")
        .expect("the dry-run shows the new dependency");
    assert!(!dep.requested && dep.from_version.is_none());
    assert_eq!(
        dpkg_version(&guest, "canopy-demo-tools"),
        old_tools,
        "a dry-run changes nothing"
    );

    // Confirming installs them.
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
    assert_eq!(dpkg_version(&guest, "canopy-demo-tools"), "2.0");
    assert_eq!(dpkg_version(&guest, "canopy-demo-ssl"), "1.0+deb12u1");
    assert!(!dpkg_version(&guest, "canopy-demo-libextra").is_empty());

    // The re-scan after install closes nothing it should not; the installed rows are history.
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
    assert_eq!(history.len(), 2);
    assert!(history
        .iter()
        .all(|h| h.correlation_id == approved.correlation_id));

    // Every step under one correlation id.
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
    let _ = Command::new("docker")
        .args(["exec", &guest, "pkill", "-f", "canopy-agent run"])
        .output();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_during_install_times_out_and_a_retry_succeeds() {
    let Some(lab) = lab() else { return };
    let guests = lab.guests();
    let guest = guests.get(1).cloned().unwrap_or_else(|| guests[0].clone());
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.install_timeout_secs = 8;
        s.command_vanished_secs = 5;
    })
    .await
    .unwrap();
    enrol_guest(&app, &lab, &guest).await;
    let slow = app.reported("canopy-demo-slow").await;
    let (dry_id, _) = app.dry_run(&slow).await;
    let install = app.admin.confirm(dry_id).await.unwrap();
    eventually(Duration::from_secs(60), || async {
        (app.admin.command(install.id).await.unwrap().status == CommandStatus::Running)
            .then_some(())
    })
    .await;
    // The postinst of canopy-demo-slow sleeps; kill the agent in the middle of it (the agent
    // audits and re-checks the plan before apt-get starts, so wait for the postinst). Past
    // the deadline the command is overdue; with no heartbeat it times out as vanished.
    eventually(Duration::from_secs(60), || async {
        let out = Command::new("docker")
            .args(["exec", &guest, "pgrep", "-f", "canopy-demo-slow.postinst"])
            .output()
            .unwrap();
        out.status.success().then_some(())
    })
    .await;
    docker(&["exec", &guest, "pkill", "-9", "-f", "canopy-agent run"]);
    let timed_out = eventually(Duration::from_secs(60), || async {
        let c = app.admin.command(install.id).await.unwrap();
        (c.status == CommandStatus::TimedOut).then_some(c)
    })
    .await;
    assert!(timed_out.overdue_at.is_some());
    assert!(timed_out.error.unwrap().contains("vanished"));

    // Let the orphaned dpkg finish, restart the agent, retry.
    eventually(Duration::from_secs(60), || async {
        let out = Command::new("docker")
            .args(["exec", &guest, "pgrep", "-x", "dpkg"])
            .output()
            .unwrap();
        (!out.status.success()).then_some(())
    })
    .await;
    start_agent(&guest);
    let retry = app.admin.retry(install.id).await.unwrap();
    assert_eq!(retry.retried_from, Some(install.id));
    let done = app
        .finished_command(retry.id, Duration::from_secs(120))
        .await;
    assert_eq!(
        done.status,
        CommandStatus::Completed,
        "retry failed: {:?}",
        done.result
    );
    assert_eq!(dpkg_version(&guest, "canopy-demo-slow"), "1.1");
    let _ = Command::new("docker")
        .args(["exec", &guest, "pkill", "-f", "canopy-agent run"])
        .output();
}

/// The real agent in a lab guest is attached to its guest vertex in the tree: the PVE
/// simulator lists a container whose hostname is the one the agent reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_lab_agent_is_attached_to_its_guest_vertex() {
    let Some(lab) = lab() else { return };
    // A guest of its own: the other lab tests enrol (and restart) agents in guests 1 and 2
    // at the same time.
    let guests = lab.guests();
    let guest = guests.get(2).cloned().unwrap_or_else(|| guests[0].clone());
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    enrol_guest(&app, &lab, &guest).await;
    let host = eventually(Duration::from_secs(60), || async {
        app.admin.hosts().await.unwrap().into_iter().next()
    })
    .await;

    let estate = format!(
        r#"
[[clusters]]
name = "lab"
[[clusters.tokens]]
id = "canopy@pve!lab"
secret = "3e1f5a9c-7b2d-4c8e-9f0a-1b2c3d4e5f60"
role = "PVEAuditor"
[[clusters.nodes]]
name = "pve1"
[[clusters.guests]]
vmid = 120
type = "lxc"
node = "pve1"
name = "{}"
status = "running"
[[clusters.guests]]
vmid = 121
type = "lxc"
node = "pve1"
name = "no-agent-here"
status = "running"
"#,
        host.hostname
    );
    let sim = canopy_pve_sim::start(
        canopy_pve_sim::SimFile::from_toml_str(&estate)
            .unwrap()
            .clusters[0]
            .clone(),
    )
    .await
    .unwrap();
    app.admin
        .create_cluster(&canopy_api_types::clusters::CreateCluster {
            name: "lab".into(),
            endpoints: vec![sim.url()],
            token: "canopy@pve!lab=3e1f5a9c-7b2d-4c8e-9f0a-1b2c3d4e5f60".into(),
            fingerprints: vec![sim.fingerprint()],
            ca_pem: None,
            interval_secs: Some(3600),
        })
        .await
        .unwrap();
    let tree = app.admin.tree(Some("cluster/lab/**")).await.unwrap();
    let json = serde_json::to_value(&tree.trees).unwrap().to_string();
    let guests = app
        .admin
        .tree(Some("cluster/lab/node/pve1/lxc/*"))
        .await
        .unwrap();
    let attached = &guests.trees[0];
    assert_eq!(
        attached.id.as_str(),
        "cluster/lab/node/pve1/lxc/120",
        "{json}"
    );
    assert_eq!(
        attached.host_id.as_deref(),
        Some(host.id.to_string().as_str()),
        "{json}"
    );
    assert_eq!(attached.agent.as_deref(), Some("online"));
    assert_eq!(attached.os.as_deref(), Some("debian"));
    assert_eq!(guests.trees[1].agent.as_deref(), Some("missing"));
    stop_agent(&guest);
    sim.shutdown().await;
}
