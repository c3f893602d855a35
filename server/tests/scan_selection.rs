//! `POST /hosts/scan` (the dashboard's "Scan now" on a subtree) through the real server on
//! SQLite and PostgreSQL, with scripted agents speaking the real agent protocol on a simulated
//! node: every guest with an agent gets a scan command, the others are skipped with the
//! reason, and the agents' new reports arrive.

mod common;

use canopy_api_types::commands::{CommandSpec, CommandStatus};
use canopy_api_types::updates::UpdateFilter;
use common::scripted::*;
use common::scripted_lab::*;
use common::*;
use std::time::Duration;

async fn a_subtree_is_scanned_per_guest(backend: Backend) {
    let Some(lab) = lab(backend, vec![(101, standard()), (102, standard())]).await else {
        return;
    };
    let admin = &lab.app.admin;
    // Something new in 101's repository, seen only by a new scan.
    lab.guests[&101]
        .state
        .lock()
        .unwrap()
        .packages
        .insert("curl".into(), pkg("7.88", "7.88+deb12u5"));
    let lines = admin
        .scan_selection("cluster/lab/node/pve1/**")
        .await
        .unwrap();
    let line = |vmid: u32| {
        lines
            .iter()
            .find(|l| l.target == format!("cluster/lab/node/pve1/lxc/{vmid}"))
            .unwrap_or_else(|| panic!("no line for {vmid}: {lines:#?}"))
    };
    for vmid in [101, 102] {
        assert!(line(vmid).queued, "{:?}", line(vmid));
        assert!(line(vmid).command_id.is_some());
    }
    let missing = line(103);
    assert!(!missing.queued);
    assert!(
        missing
            .reason
            .as_deref()
            .unwrap()
            .starts_with("agent missing"),
        "{missing:?}"
    );
    assert_eq!(line(104).reason.as_deref(), Some("stopped"));
    assert_eq!(line(105).reason.as_deref(), Some("template"));
    // Every command is a scan of that guest's host, and each one ends with its report in.
    for vmid in [101, 102] {
        let id = line(vmid).command_id.unwrap();
        let cmd = eventually(Duration::from_secs(30), || async move {
            let c = admin.command(id).await.unwrap();
            c.status.is_terminal().then_some(c)
        })
        .await;
        assert_eq!(cmd.spec, CommandSpec::Scan);
        assert_eq!(cmd.status, CommandStatus::Completed, "{cmd:?}");
        assert_eq!(Some(cmd.host_id), line(vmid).host_id);
    }
    let host = line(101).host_id.unwrap();
    let page = admin
        .updates(&UpdateFilter {
            host_id: Some(host),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        page.items.iter().any(|u| u.package == "curl"),
        "the new scan's report is in: {:?}",
        page.items
    );

    // A selector that is not one, and one that matches nothing, are refused by name.
    let err = admin.scan_selection("cluster/lab/[").await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("selector"), "{err}");
    let err = admin
        .scan_selection("cluster/nowhere/**")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
}

on_both_backends!(a_subtree_is_scanned_per_guest);
