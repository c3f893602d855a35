//! Bulk update operations through the real server and HTTP API, on SQLite and PostgreSQL,
//! against the PVE simulator: the plan and its blast radius, approval by fingerprint, canaries,
//! snapshots, reboots, rollback, pause and cancel, a repository that moves on.
//!
//! The guests' agents here are scripted agents speaking the real agent protocol (check-in,
//! start handshake, report, result), each with the package state of one guest; they watch the
//! simulator's tasks, so a PVE rollback restores their packages and a reboot restarts them, as
//! a guest would. The real agent in real guests does the same in the lab (`lab_update.rs`).

mod common;

use canopy_api_types::bulk::{Canary, RebootPolicy, SnapshotPolicy, UpdateOptions, UpdateRequest};
use canopy_api_types::deploy::{DeployOutcome, ItemState, OperationState, Route};
use common::scripted::*;
use common::scripted_lab::*;
use common::*;
use std::collections::{BTreeMap, HashSet};

async fn plan_approve_and_update_a_node(backend: Backend) {
    let mut with_dep = standard();
    with_dep.packages.insert("tools".into(), pkg("1.0", "2.0"));
    // 102's new ssl leaves a service on the old library (needrestart's list): a reboot.
    with_dep.packages.get_mut("ssl").unwrap().outdates_service = Some("nginx.service".into());
    let mut reboots = standard();
    reboots.packages.insert(
        "kernel".into(),
        Pkg {
            needs_reboot: true,
            ..pkg("6.1", "6.2")
        },
    );
    let Some(lab) = lab(
        backend,
        vec![(101, standard()), (102, with_dep), (103, reboots)],
    )
    .await
    else {
        return;
    };
    let options = UpdateOptions {
        canary: Canary {
            count: 1,
            targets: vec![],
        },
        ..Default::default()
    };
    let op = lab.plan(options).await;
    assert_eq!(op.state, OperationState::AwaitingApproval, "{op:#?}");
    // The blast radius: every package per guest, the held one left out, the skipped guests.
    let plan = |vmid| item(&op, vmid).update.clone().unwrap().plan.unwrap();
    let names = |vmid| -> Vec<String> {
        plan(vmid)
            .packages
            .iter()
            .map(|p| p.package.clone())
            .collect()
    };
    assert_eq!(names(101), ["ssl", "web"]);
    assert_eq!(names(102), ["ssl", "tools", "web", "libextra"]);
    assert!(!plan(102).packages[3].requested, "a new dependency");
    assert_eq!(plan(101).left_out[0].package, "pinned");
    assert_eq!(plan(101).left_out[0].reason, "held");
    let skipped: BTreeMap<_, _> = op
        .skipped
        .iter()
        .map(|s| {
            (
                s.id.rsplit('/').next().unwrap().to_string(),
                s.reason.clone(),
            )
        })
        .collect();
    assert!(skipped["104"].starts_with("stopped"), "{skipped:?}");
    assert_eq!(skipped["105"], "template");
    assert!(skipped["106"].contains("agent missing"), "{skipped:?}");
    assert!(item(&op, 101).update.as_ref().unwrap().canary);
    // Nothing was installed or snapshot while planning.
    assert!(lab.installs(101).is_empty());
    assert!(lab.snapshots(101).is_empty());

    // Approving another plan than the one shown is refused; the right one runs.
    let err = lab
        .app
        .admin
        .approve_operation(op.id, "0000")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    lab.app
        .admin
        .approve_operation(op.id, &fingerprint(&op))
        .await
        .unwrap();
    let done = lab.until(op.id, |o| o.state.is_terminal()).await;
    assert_eq!(done.state, OperationState::Succeeded, "{done:#?}");
    for vmid in [101, 102, 103] {
        let i = item(&done, vmid);
        assert_eq!(i.outcome, Some(DeployOutcome::Updated), "{i:#?}");
        assert_eq!(
            lab.snapshots(vmid).len(),
            1,
            "one Canopy snapshot on {vmid}"
        );
        // Each package installed exactly once, at the planned version.
        let installs = lab.installs(vmid);
        let unique: HashSet<_> = installs.iter().collect();
        assert_eq!(unique.len(), installs.len(), "{installs:?}");
        assert!(installs.contains(&"web 1.1".to_string()), "{installs:?}");
        assert!(!installs.iter().any(|i| i.starts_with("pinned")));
    }
    // The guests whose install needed a reboot were rebooted once, through the API: 103 for
    // its reboot-required flag, 102 for a service running outdated code.
    assert_eq!(lab.tasks(103, "vzreboot"), 1);
    assert!(item(&done, 103).update.as_ref().unwrap().rebooted);
    assert_eq!(lab.tasks(102, "vzreboot"), 1);
    let d102 = item(&done, 102).update.clone().unwrap();
    assert!(
        d102.steps
            .iter()
            .any(|s| s.step == "reboot" && s.note.contains("outdated code: nginx.service")),
        "{:?}",
        d102.steps
    );
    assert_eq!(lab.tasks(101, "vzreboot"), 0);
    // Every step is in the guest's history.
    let history = lab
        .app
        .admin
        .guest_history("cluster/lab/node/pve1/lxc/101")
        .await
        .unwrap();
    let steps: Vec<String> = history
        .iter()
        .filter(|e| e.event_type == "operation.item_step")
        .map(|e| {
            format!(
                "{} {}",
                e.payload["step"].as_str().unwrap(),
                e.payload["status"].as_str().unwrap()
            )
        })
        .collect();
    for s in [
        "health-before done",
        "snapshot done",
        "install done",
        "health-after done",
    ] {
        assert!(steps.contains(&s.to_string()), "{s} missing from {steps:?}");
    }
}

async fn a_failing_canary_is_rolled_back_and_pauses_the_rest(backend: Backend) {
    let mut breaks = standard();
    breaks.packages.get_mut("web").unwrap().breaks_unit = Some("web.service".into());
    let Some(lab) = lab(
        backend,
        vec![
            (101, breaks),
            (102, standard()),
            (103, standard()),
            (107, standard()),
        ],
    )
    .await
    else {
        return;
    };
    let options = UpdateOptions {
        canary: Canary {
            count: 0,
            targets: vec!["101".into()],
        },
        snapshot: SnapshotPolicy::Required,
        reboot: RebootPolicy::Never,
        ..Default::default()
    };
    let op = lab.plan(options).await;
    // Under `snapshot: required` a guest whose storage cannot snapshot is skipped at once.
    let dir = op.skipped.iter().find(|s| s.id.ends_with("/lxc/107"));
    assert!(
        dir.is_some_and(|s| s.reason.contains("no snapshot possible")),
        "{:?}",
        op.skipped
    );
    assert!(op.items.iter().all(|i| i.vmid != 107));
    lab.app
        .admin
        .approve_operation(op.id, &fingerprint(&op))
        .await
        .unwrap();
    let paused = lab
        .until(op.id, |o| {
            o.state == OperationState::Paused || o.state.is_terminal()
        })
        .await;
    assert_eq!(paused.state, OperationState::Paused, "{paused:#?}");
    let reason = paused
        .update
        .as_ref()
        .unwrap()
        .paused_reason
        .clone()
        .unwrap();
    assert!(
        reason.contains("lxc/101") && reason.contains("web.service"),
        "{reason}"
    );
    let canary = item(&paused, 101);
    assert_eq!(canary.state, ItemState::Failed);
    assert_eq!(
        canary.outcome,
        Some(DeployOutcome::RolledBack),
        "{canary:#?}"
    );
    assert_eq!(lab.tasks(101, "vzrollback"), 1);
    // The guest is back on its old versions, and the snapshot stays.
    let st = lab.guests[&101].state.lock().unwrap().clone();
    assert_eq!(st.packages["web"].installed, "1.0");
    // No other guest was touched.
    for vmid in [102, 103] {
        assert!(
            lab.installs(vmid).is_empty(),
            "{vmid} installed while paused"
        );
        assert!(lab.snapshots(vmid).is_empty());
        assert_eq!(item(&paused, vmid).state, ItemState::Queued);
    }
    // Cancel: the queued guests never start.
    lab.app
        .admin
        .control_operation(op.id, "cancel")
        .await
        .unwrap();
    let done = lab.until(op.id, |o| o.state.is_terminal()).await;
    assert_eq!(done.state, OperationState::Cancelled, "{done:#?}");
    for vmid in [102, 103] {
        assert_eq!(item(&done, vmid).state, ItemState::Cancelled);
        assert!(lab.installs(vmid).is_empty());
    }
}

async fn a_repository_that_moved_on_is_replanned_and_waits(backend: Backend) {
    let mut moves = standard();
    moves.bump_after_dry_run = Some(("web".into(), "1.2".into()));
    let Some(lab) = lab(backend, vec![(101, standard()), (102, moves)]).await else {
        return;
    };
    let options = UpdateOptions {
        security_only: false,
        exclude: vec!["ss*".into()],
        reboot: RebootPolicy::Never,
        ..Default::default()
    };
    let op = lab.plan(options).await;
    let plan = item(&op, 101).update.clone().unwrap().plan.unwrap();
    assert_eq!(plan.packages.len(), 1, "{plan:?}");
    assert!(plan
        .left_out
        .iter()
        .any(|l| l.package == "ssl" && l.reason == "excluded"));
    let first = fingerprint(&op);
    lab.app
        .admin
        .approve_operation(op.id, &first)
        .await
        .unwrap();
    let waiting = lab
        .until(op.id, |o| {
            o.state == OperationState::AwaitingApproval || o.state.is_terminal()
        })
        .await;
    assert_eq!(
        waiting.state,
        OperationState::AwaitingApproval,
        "{waiting:#?}"
    );
    assert_eq!(item(&waiting, 101).outcome, Some(DeployOutcome::Updated));
    let moved = item(&waiting, 102).update.clone().unwrap();
    assert!(moved.needs_approval, "{moved:#?}");
    assert_eq!(moved.plan.unwrap().packages[0].to_version, "1.2");
    // Nothing newer than approved was installed: 102 got nothing yet.
    assert!(lab.installs(102).is_empty(), "{:?}", lab.installs(102));
    let second = fingerprint(&waiting);
    assert_ne!(first, second);
    // The old approval does not cover the new plan.
    assert_eq!(
        lab.app
            .admin
            .approve_operation(op.id, &first)
            .await
            .unwrap_err()
            .status(),
        Some(409)
    );
    lab.app
        .admin
        .approve_operation(op.id, &second)
        .await
        .unwrap();
    let done = lab.until(op.id, |o| o.state.is_terminal()).await;
    assert_eq!(done.state, OperationState::Succeeded, "{done:#?}");
    assert_eq!(lab.installs(102), ["web 1.2"]);
}

/// 107's root disk cannot snapshot: with a backup storage it gets a vzdump backup instead
/// (not skipped under `required`), and its broken install is undone by restoring it.
async fn a_guest_that_cannot_snapshot_is_backed_up_and_restored(backend: Backend) {
    let mut breaks = standard();
    breaks.packages.get_mut("web").unwrap().breaks_unit = Some("web.service".into());
    let Some(lab) = lab(backend, vec![(102, standard()), (107, breaks)]).await else {
        return;
    };
    let options = UpdateOptions {
        snapshot: SnapshotPolicy::Required,
        backup_storage: Some("local".into()),
        reboot: RebootPolicy::Never,
        ..Default::default()
    };
    let op = lab.plan(options.clone()).await;
    assert!(op.items.iter().any(|i| i.vmid == 107), "{:?}", op.skipped);
    lab.app
        .admin
        .approve_operation(op.id, &fingerprint(&op))
        .await
        .unwrap();
    let done = lab.until(op.id, |o| o.state.is_terminal()).await;
    assert_eq!(done.state, OperationState::Partial, "{done:#?}");
    // 102 could snapshot: a snapshot, no backup; the API lists it as Canopy's.
    let ok = item(&done, 102);
    assert_eq!(ok.outcome, Some(DeployOutcome::Updated), "{ok:#?}");
    assert_eq!(lab.snapshots(102).len(), 1);
    let admin = &lab.app.admin;
    let snaps = admin
        .guest_snapshots("cluster/lab/node/pve1/lxc/102")
        .await
        .unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert!(snaps[0].canopy && snaps[0].name == lab.snapshots(102)[0]);
    assert!(snaps[0].taken_at.is_some());
    assert!(admin
        .guest_snapshots("cluster/lab/node/pve1/lxc/107")
        .await
        .unwrap()
        .is_empty());
    for (id, status) in [
        ("cluster/lab/node/pve1", 400),
        ("cluster/lab/node/pve1/lxc/999", 404),
    ] {
        let err = admin.guest_snapshots(id).await.unwrap_err();
        assert_eq!(err.status(), Some(status), "{id}: {err}");
    }
    assert_eq!(lab.tasks(102, "vzdump"), 0);
    // 107: backed up, installed, broken, restored, verified.
    let rolled = item(&done, 107);
    assert_eq!(
        rolled.outcome,
        Some(DeployOutcome::RolledBack),
        "{rolled:#?}"
    );
    let d = rolled.update.clone().unwrap();
    let volid = d.backup.clone().expect("a backup volume");
    assert!(volid.starts_with("local:backup/vzdump-lxc-107-"), "{volid}");
    assert!(d.snapshot.is_none());
    let steps: Vec<String> = d
        .steps
        .iter()
        .map(|s| format!("{} {}", s.step, s.status))
        .collect();
    for s in [
        "backup done",
        "install done",
        "restore done",
        "verify-rollback done",
    ] {
        assert!(steps.contains(&s.to_string()), "{s} missing from {steps:?}");
    }
    assert_eq!(lab.tasks(107, "vzdump"), 1);
    assert_eq!(lab.tasks(107, "vzrestore"), 1);
    assert_eq!(lab.tasks(107, "vzrollback"), 0);
    let st = lab.guests[&107].state.lock().unwrap().clone();
    assert_eq!(st.packages["web"].installed, "1.0");
    assert!(lab.sim.guest(107).is_some_and(|g| g.status == "running"));

    // A storage id PVE would refuse is refused before anything is recorded.
    let bad = UpdateOptions {
        backup_storage: Some("../dump".into()),
        ..options
    };
    let err = lab
        .app
        .admin
        .start_update(&UpdateRequest {
            selector: "cluster/lab/node/pve1/lxc/*".into(),
            options: bad,
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
}

/// A VM goes through the same steps on PVE's qemu calls: snapshot, reboot (its kernel), the
/// health gate failing (a broken unit), rollback, verified.
async fn a_vm_is_snapshot_rebooted_and_rolled_back_through_the_qemu_calls(backend: Backend) {
    let mut vm = standard();
    vm.packages.get_mut("web").unwrap().breaks_unit = Some("web.service".into());
    vm.packages.insert(
        "kernel".into(),
        Pkg {
            needs_reboot: true,
            ..pkg("6.1", "6.2")
        },
    );
    let Some(lab) = lab(backend, vec![(200, vm)]).await else {
        return;
    };
    let op = lab
        .app
        .admin
        .start_update(&UpdateRequest {
            selector: "cluster/lab/node/pve1/vm/*".into(),
            options: UpdateOptions::default(),
        })
        .await
        .unwrap();
    let op = lab
        .until(op.id, |o| o.state != OperationState::Planning)
        .await;
    assert_eq!(op.state, OperationState::AwaitingApproval, "{op:#?}");
    assert_eq!(item(&op, 200).route, Route::Ssh);
    lab.app
        .admin
        .approve_operation(op.id, &fingerprint(&op))
        .await
        .unwrap();
    let done = lab.until(op.id, |o| o.state.is_terminal()).await;
    assert_eq!(done.state, OperationState::Failed, "{done:#?}");
    let i = item(&done, 200);
    assert_eq!(i.outcome, Some(DeployOutcome::RolledBack), "{i:#?}");
    assert!(i.update.as_ref().unwrap().rebooted);
    for (kind, n) in [
        ("qmsnapshot", 1),
        ("qmreboot", 1),
        ("qmrollback", 1),
        ("vzsnapshot", 0),
    ] {
        assert_eq!(lab.tasks(200, kind), n, "{kind}");
    }
    let st = lab.guests[&200].state.lock().unwrap().clone();
    assert_eq!(st.packages["web"].installed, "1.0");
    assert_eq!(st.packages["kernel"].installed, "6.1");
    assert!(lab.sim.guest(200).is_some_and(|g| g.status == "running"));

    // The operation is listed under the VM, its node and its cluster, not under a container.
    let admin = &lab.app.admin;
    for under in [
        "cluster/lab/node/pve1/vm/200",
        "cluster/lab/node/pve1",
        "cluster/lab",
    ] {
        let ops = admin.operations_under(under, 10).await.unwrap();
        assert_eq!(
            ops.iter().map(|o| o.id).collect::<Vec<_>>(),
            [op.id],
            "{under}"
        );
    }
    assert!(admin
        .operations_under("cluster/lab/node/pve1/lxc/101", 10)
        .await
        .unwrap()
        .is_empty());
    let err = admin.operations_under("pve1/200", 10).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
}

on_both_backends!(
    a_guest_that_cannot_snapshot_is_backed_up_and_restored,
    a_vm_is_snapshot_rebooted_and_rolled_back_through_the_qemu_calls,
    plan_approve_and_update_a_node,
    a_failing_canary_is_rolled_back_and_pauses_the_rest,
    a_repository_that_moved_on_is_replanned_and_waits,
);
