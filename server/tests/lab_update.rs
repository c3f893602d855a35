//! "Update all LXCs on node pve1" end to end in the lab: the lab's six systemd Debian guests
//! behind the PVE simulator (whose snapshot, rollback, start, shutdown and reboot act on the
//! guest containers through the lab's action hook), real agents deployed over SSH, real apt
//! against the lab repository.
//!
//! One test, scenarios in order (they share the guests): a canary, then the others, with one
//! guest whose new package breaks a systemd service — rolled back, its old versions back and
//! the service running; a stopped guest skipped and left stopped; a repository that moves on
//! after approval — re-planned, nothing newer than approved installed; a failing canary that
//! pauses the operation before any other guest is touched.
//!
//! Needs a fresh lab (`cargo xtask test` brings one up: CANOPY_LAB, CANOPY_AGENT_MUSL_BIN,
//! CANOPY_XTASK_BIN); fails without it unless CANOPY_SKIP_LAB=1.

mod common;

use canopy_api_types::bulk::{Canary, RebootPolicy, SnapshotPolicy, UpdateOptions, UpdateRequest};
use canopy_api_types::deploy::{DeployAction, DeployRequest, ItemState, OperationState};
use canopy_hypervisor::GuestKind;
use common::lab::*;
use common::update_lab::*;
use common::*;
use std::time::Duration;

const ALL: &str = "cluster/lab/node/pve1/lxc/*";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_all_lxcs_on_node_pve1() {
    let Some(lab) = Lab::from_env("bulk update end-to-end test") else {
        return;
    };
    let env = setup(&lab).await;
    let vmids: Vec<u32> = env.pve.guests.iter().map(|g| g.vmid).collect();
    assert_eq!(vmids, [101, 102, 103, 104, 105, 106]);

    // Agents in every guest.
    let deploy = env
        .app
        .admin
        .deploy(&DeployRequest {
            selector: ALL.into(),
            action: DeployAction::Deploy,
        })
        .await
        .unwrap();
    let deployed = env
        .app
        .admin
        .follow_operation(deploy.id, |_| {})
        .await
        .unwrap();
    assert_eq!(deployed.state, OperationState::Succeeded, "{deployed:#?}");
    // 104's new canopy-demo-web will fail to start.
    in_guest(
        &container(&env, 104),
        &format!("mkdir -p /etc/canopy-demo && touch {BREAK_MARKER}"),
    );

    // 1. The whole node, canary 101 first; the slow package excluded.
    let options = UpdateOptions {
        exclude: vec!["canopy-demo-slow".into()],
        snapshot: SnapshotPolicy::Required,
        reboot: RebootPolicy::IfRequired,
        canary: Canary {
            count: 0,
            targets: vec!["101".into()],
        },
        ..Default::default()
    };
    let op = plan(&env, ALL, options).await;
    for &vmid in &vmids {
        let pkgs = planned_packages(&op, vmid);
        for (p, v) in [
            ("canopy-demo-hello", "1.1"),
            ("canopy-demo-web", "1.1"),
            ("canopy-demo-reboot", "1.1"),
            ("canopy-demo-ssl", "1.0+deb12u1"),
            ("canopy-demo-tools", "2.0"),
            ("canopy-demo-libextra", "1.0"),
        ] {
            assert_eq!(pkgs.get(p).map(String::as_str), Some(v), "{vmid}: {pkgs:?}");
        }
        assert!(!pkgs.contains_key("canopy-demo-slow"), "excluded: {pkgs:?}");
        let left: Vec<(String, String)> = item(&op, vmid)
            .update
            .as_ref()
            .unwrap()
            .plan
            .as_ref()
            .unwrap()
            .left_out
            .iter()
            .map(|l| (l.package.clone(), l.reason.clone()))
            .collect();
        assert!(
            left.contains(&("canopy-demo-slow".into(), "excluded".into())),
            "{left:?}"
        );
        assert!(
            left.contains(&("canopy-demo-pinned".into(), "held".into())),
            "{left:?}"
        );
        assert!(
            snapshots(&env, vmid).is_empty(),
            "nothing snapshot while planning"
        );
    }
    approve(&env, &op).await;
    let done = wait(&env, op.id, |o| o.state.is_terminal()).await;
    assert_eq!(done.state, OperationState::Partial, "{done:#?}");
    for &vmid in &vmids {
        let c = container(&env, vmid);
        let i = item(&done, vmid);
        assert_eq!(
            snapshots(&env, vmid).len(),
            1,
            "{vmid}: one Canopy snapshot"
        );
        assert_eq!(
            dpkg_version(&c, "canopy-demo-slow"),
            "1.0",
            "excluded, not installed"
        );
        assert_eq!(dpkg_version(&c, "canopy-demo-pinned"), "1.0", "held");
        if vmid == 104 {
            assert_eq!(i.state, ItemState::Failed, "{i:#?}");
            assert_eq!(
                i.outcome,
                Some(canopy_api_types::deploy::DeployOutcome::RolledBack),
                "{i:#?}"
            );
            let msg = i.message.clone().unwrap_or_default();
            assert!(msg.contains("canopy-demo-web.service"), "{msg}");
            assert_eq!(dpkg_version(&c, "canopy-demo-web"), "1.0");
            assert_eq!(dpkg_version(&c, "canopy-demo-hello"), "1.0");
            assert_eq!(
                in_guest(&c, "systemctl is-active canopy-demo-web || true"),
                "active"
            );
            assert_eq!(tasks(&env, vmid, "vzrollback"), 1);
        } else {
            assert_eq!(i.state, ItemState::Succeeded, "{i:#?}");
            for (p, v) in [
                ("canopy-demo-hello", "1.1"),
                ("canopy-demo-web", "1.1"),
                ("canopy-demo-reboot", "1.1"),
                ("canopy-demo-ssl", "1.0+deb12u1"),
                ("canopy-demo-tools", "2.0"),
            ] {
                assert_eq!(dpkg_version(&c, p), v, "{vmid} {p}");
            }
            assert_eq!(
                installs(&c, "canopy-demo-web 1.1"),
                1,
                "{vmid}: installed once"
            );
            // canopy-demo-reboot asked for a reboot: one, through the API, healthy after.
            assert_eq!(tasks(&env, vmid, "vzreboot"), 1, "{vmid}");
            assert!(i.update.as_ref().unwrap().rebooted);
            assert_eq!(
                in_guest(&c, "systemctl is-active canopy-demo-web || true"),
                "active"
            );
        }
    }
    in_guest(&container(&env, 104), &format!("rm -f {BREAK_MARKER}"));

    // 2. A stopped guest is skipped and stays stopped; the repository moves on after the
    //    approval: re-planned, nothing newer than approved installed anywhere.
    let pve = canopy_hypervisor::PveClient::new(canopy_hypervisor::Connection::new(
        vec![env.sim.url()],
        env.sim.token().parse().unwrap(),
        canopy_hypervisor::Trust::Fingerprints(vec![env.sim.fingerprint().parse().unwrap()]),
    ))
    .unwrap();
    use canopy_hypervisor::Hypervisor;
    let upid = pve
        .power(
            "pve1",
            GuestKind::Lxc,
            105,
            canopy_hypervisor::PowerAction::Shutdown,
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(120), || async {
        let st = pve.task_status(&upid).await.unwrap();
        (st.status == "stopped").then_some(())
    })
    .await;
    env.app.admin.discover_cluster("lab").await.unwrap();
    publish_for(&lab, &env, "moved-a", "canopy-demo-web", "1.2", &[101, 102]);
    let selector = "cluster/lab/node/pve1/lxc/101, cluster/lab/node/pve1/lxc/102, cluster/lab/node/pve1/lxc/105";
    let options = UpdateOptions {
        exclude: vec!["canopy-demo-slow".into()],
        reboot: RebootPolicy::Never,
        ..Default::default()
    };
    let op = plan(&env, selector, options).await;
    assert!(
        op.skipped
            .iter()
            .any(|s| s.id.ends_with("/lxc/105") && s.reason.starts_with("stopped")),
        "{:?}",
        op.skipped
    );
    assert_eq!(planned_packages(&op, 101)["canopy-demo-web"], "1.2");
    publish_for(&lab, &env, "moved-b", "canopy-demo-web", "1.3", &[101, 102]);
    approve(&env, &op).await;
    let replanned = wait(&env, op.id, |o| {
        o.state == OperationState::AwaitingApproval || o.state.is_terminal()
    })
    .await;
    assert_eq!(
        replanned.state,
        OperationState::AwaitingApproval,
        "{replanned:#?}"
    );
    for vmid in [101, 102] {
        let c = container(&env, vmid);
        assert_eq!(
            dpkg_version(&c, "canopy-demo-web"),
            "1.1",
            "nothing newer than approved"
        );
        assert_eq!(installs(&c, "canopy-demo-web 1.2"), 0);
        assert_eq!(installs(&c, "canopy-demo-web 1.3"), 0);
        let d = item(&replanned, vmid).update.clone().unwrap();
        assert!(d.needs_approval, "{d:#?}");
        assert_eq!(planned_packages(&replanned, vmid)["canopy-demo-web"], "1.3");
    }
    approve(&env, &replanned).await;
    let done = wait(&env, op.id, |o| o.state.is_terminal()).await;
    assert_eq!(done.state, OperationState::Succeeded, "{done:#?}");
    for vmid in [101, 102] {
        let c = container(&env, vmid);
        assert_eq!(dpkg_version(&c, "canopy-demo-web"), "1.3");
        assert_eq!(installs(&c, "canopy-demo-web 1.3"), 1);
    }
    assert!(
        !running(&container(&env, 105)),
        "the stopped guest was never started"
    );
    let upid = pve
        .power(
            "pve1",
            GuestKind::Lxc,
            105,
            canopy_hypervisor::PowerAction::Start,
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(120), || async {
        let st = pve.task_status(&upid).await.unwrap();
        (st.status == "stopped").then_some(())
    })
    .await;

    // 3. A canary that fails its health check pauses the operation: no other guest touched.
    publish_for(&lab, &env, "moved-c", "canopy-demo-web", "1.4", &[102, 103]);
    in_guest(
        &container(&env, 102),
        &format!("mkdir -p /etc/canopy-demo && touch {BREAK_MARKER}"),
    );
    let before_103 = snapshots(&env, 103);
    let options = UpdateOptions {
        exclude: vec!["canopy-demo-slow".into()],
        reboot: RebootPolicy::Never,
        canary: Canary {
            count: 0,
            targets: vec!["102".into()],
        },
        ..Default::default()
    };
    let op = plan(
        &env,
        "cluster/lab/node/pve1/lxc/102, cluster/lab/node/pve1/lxc/103",
        options,
    )
    .await;
    approve(&env, &op).await;
    let paused = wait(&env, op.id, |o| {
        o.state == OperationState::Paused || o.state.is_terminal()
    })
    .await;
    assert_eq!(paused.state, OperationState::Paused, "{paused:#?}");
    let c102 = container(&env, 102);
    assert_eq!(dpkg_version(&c102, "canopy-demo-web"), "1.3", "rolled back");
    let reason = paused
        .update
        .as_ref()
        .unwrap()
        .paused_reason
        .clone()
        .unwrap();
    assert!(
        reason.contains("lxc/102") && reason.contains("canopy-demo-web.service"),
        "{reason}"
    );
    // 1.3 too refuses to start while the marker is there (the rolled-back guest booted
    // with it); without it, the restored version runs.
    in_guest(
        &c102,
        &format!("rm -f {BREAK_MARKER} && systemctl restart canopy-demo-web"),
    );
    assert_eq!(
        in_guest(&c102, "systemctl is-active canopy-demo-web || true"),
        "active"
    );
    let c103 = container(&env, 103);
    assert_eq!(dpkg_version(&c103, "canopy-demo-web"), "1.1");
    assert_eq!(installs(&c103, "canopy-demo-web 1.4"), 0);
    assert_eq!(snapshots(&env, 103), before_103, "103 was not touched");
    assert_eq!(item(&paused, 103).state, ItemState::Queued);
    env.app
        .admin
        .control_operation(op.id, "cancel")
        .await
        .unwrap();
    let done = wait(&env, op.id, |o| o.state.is_terminal()).await;
    assert_eq!(done.state, OperationState::Cancelled);
    assert_eq!(item(&done, 103).state, ItemState::Cancelled);

    killed_mid_flight(&lab, &env).await;
}

/// kill -9 of the real server while guests are in flight: after a restart the operation
/// finishes, and no guest installed twice.
async fn killed_mid_flight(lab: &Lab, env: &Env) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = serve(dir.path(), port, env, lab);
    let anon = canopy_api_types::client::Client::new(http(), base.clone());
    let admin = eventually(Duration::from_secs(30), || async {
        anon.login("admin", ADMIN_PASSWORD).await.ok()
    })
    .await;
    let admin = anon.clone().with_token(admin.access_token);
    admin
        .create_cluster(&canopy_api_types::clusters::CreateCluster {
            name: "lab".into(),
            endpoints: vec![env.sim.url()],
            token: env.sim.token(),
            fingerprints: vec![env.sim.fingerprint()],
            ca_pem: None,
            interval_secs: Some(3600),
        })
        .await
        .unwrap();
    let selector = "cluster/lab/node/pve1/lxc/103, cluster/lab/node/pve1/lxc/104";
    let deploy = admin
        .deploy(&DeployRequest {
            selector: selector.into(),
            action: DeployAction::Deploy,
        })
        .await
        .unwrap();
    let deployed = admin.follow_operation(deploy.id, |_| {}).await.unwrap();
    assert_eq!(deployed.state, OperationState::Succeeded, "{deployed:#?}");
    publish_for(lab, env, "moved-d", "canopy-demo-web", "1.5", &[103, 104]);
    let op = admin
        .start_update(&UpdateRequest {
            selector: selector.into(),
            options: UpdateOptions {
                exclude: vec!["canopy-demo-slow".into()],
                reboot: RebootPolicy::Never,
                ..Default::default()
            },
        })
        .await
        .unwrap();
    let planned = eventually(Duration::from_secs(300), || async {
        let o = admin.operation(op.id).await.unwrap();
        (o.state != OperationState::Planning).then_some(o)
    })
    .await;
    assert_eq!(
        planned.state,
        OperationState::AwaitingApproval,
        "{planned:#?}"
    );
    let fp = planned
        .update
        .as_ref()
        .unwrap()
        .fingerprint
        .clone()
        .unwrap();
    admin.approve_operation(op.id, &fp).await.unwrap();
    // Kill it as soon as an install was sent.
    let at_kill = eventually(Duration::from_secs(300), || async {
        let o = admin.operation(op.id).await.unwrap();
        o.items
            .iter()
            .any(|i| i.update.as_ref().is_some_and(|d| d.install.is_some()))
            .then_some(o)
    })
    .await;
    server.kill().unwrap();
    for i in &at_kill.items {
        let last = i.update.as_ref().and_then(|d| d.steps.last());
        eprintln!(
            "killed with {} at {:?}",
            i.target,
            last.map(|s| format!("{} {}", s.step, s.status))
        );
    }
    server.wait().unwrap();
    let mut server = serve(dir.path(), port, env, lab);
    let admin = eventually(Duration::from_secs(30), || async {
        anon.login("admin", ADMIN_PASSWORD).await.ok()
    })
    .await;
    let admin = anon.clone().with_token(admin.access_token);
    let done = eventually(Duration::from_secs(600), || async {
        let o = admin.operation(op.id).await.ok()?;
        o.state.is_terminal().then_some(o)
    })
    .await;
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(done.state, OperationState::Succeeded, "{done:#?}");
    for vmid in [103, 104] {
        let c = container(env, vmid);
        assert_eq!(dpkg_version(&c, "canopy-demo-web"), "1.5");
        assert_eq!(
            installs(&c, "canopy-demo-web 1.5"),
            1,
            "{vmid} installed once"
        );
        let d = item(&done, vmid).update.clone().unwrap();
        let installs_sent = d
            .steps
            .iter()
            .filter(|s| s.step == "install" && s.status == "started")
            .count();
        assert_eq!(installs_sent, 1, "{vmid}: one install sent: {:#?}", d.steps);
        let snap = d.snapshot.clone().unwrap();
        assert_eq!(
            snapshots(env, vmid).iter().filter(|s| **s == snap).count(),
            1,
            "the snapshot is reused, not taken twice"
        );
    }
}
