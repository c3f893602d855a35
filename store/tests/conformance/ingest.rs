//! Report ingestion: volume, per-row isolation, reconciliation, re-scans.

use super::support::*;
use canopy_api_types::hosts::EventFilter;
use canopy_api_types::updates::{PackageManager, Severity, UpdateFilter, UpdateStatus};
use canopy_store::{events, Actor, StoreError};

pub async fn ingest_3772_rows_in_one_call(store: S) {
    let h = host(&store, "fedora").await;
    let mut rows = many("pkg", 3_765);
    rows.extend((0..7).map(|i| {
        pkg(
            PackageManager::Docker,
            &format!("image-{i}"),
            "sha-a",
            "sha-b",
            Severity::Low,
        )
    }));
    let out = store
        .ingest_report(h.id, report(rows), &Actor::Agent(h.id))
        .await
        .unwrap();
    assert_eq!(out.accepted, 3_772);
    assert_eq!(out.discovered, 3_772);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    let page = store.list_updates(&by_host(h.id)).await.unwrap();
    assert_eq!(page.total, 3_772);
    assert_eq!(page.items.len(), 500);
    let got = store.get_host(h.id).await.unwrap().unwrap();
    assert_eq!(got.pending_updates, 3_772);

    // The same report again changes nothing and discovers nothing.
    let mut rows = many("pkg", 3_765);
    rows.extend((0..7).map(|i| {
        pkg(
            PackageManager::Docker,
            &format!("image-{i}"),
            "sha-a",
            "sha-b",
            Severity::Low,
        )
    }));
    let again = store
        .ingest_report(h.id, report(rows), &Actor::Agent(h.id))
        .await
        .unwrap();
    assert_eq!(
        (again.accepted, again.discovered, again.reconciled),
        (3_772, 0, 0)
    );
    assert_eq!(
        store.list_updates(&by_host(h.id)).await.unwrap().total,
        3_772
    );

    // One event per report, not one per row.
    let evs = store
        .events(&EventFilter {
            host_id: Some(h.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        evs.iter()
            .filter(|e| e.event_type == events::REPORT_INGESTED)
            .count(),
        2
    );
    let first = evs
        .iter()
        .find(|e| e.event_type == events::REPORT_INGESTED)
        .unwrap();
    assert_eq!(first.payload["discovered"], 3_772);
}

pub async fn ingest_duplicate_rows_are_rejected_individually(store: S) {
    let h = host(&store, "dup").await;
    let rows = vec![
        apt("a", "1", "2"),
        apt("b", "1", "2"),
        apt("a", "1", "3"),
        apt("c", "1", "2"),
    ];
    let out = store
        .ingest_report(h.id, report(rows), &Actor::Agent(h.id))
        .await
        .unwrap();
    assert_eq!(out.accepted, 3);
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].index, 2);
    assert!(
        out.rejected[0].reason.contains("duplicate"),
        "{}",
        out.rejected[0].reason
    );
    let a = store
        .list_updates(&UpdateFilter {
            package: Some("a".into()),
            host_id: Some(h.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        a.items
            .iter()
            .find(|u| u.package == "a")
            .map(|u| u.available_version.as_str()),
        Some("2")
    );
}

pub async fn ingest_database_refused_rows_are_isolated(store: S) {
    let h = host(&store, "bad").await;
    // 700 rows: two chunks; the schema refuses an empty package name, one longer than
    // 512 characters and an empty available version (CHECK constraints). Every other
    // row is kept.
    let mut rows = many("ok", 700);
    rows[3].package = String::new();
    rows[612].package = "p".repeat(600);
    rows[640].available_version = String::new();
    let out = store
        .ingest_report(h.id, report(rows), &Actor::Agent(h.id))
        .await
        .unwrap();
    let idx: Vec<usize> = out.rejected.iter().map(|r| r.index).collect();
    assert_eq!(
        idx,
        vec![3, 612, 640],
        "rows refused by the schema's CHECKs: {:?}",
        out.rejected
    );
    assert!(out.rejected.iter().all(|r| !r.reason.is_empty()));
    assert_eq!(out.accepted, 697);
    assert_eq!(out.discovered, 697);
    assert_eq!(store.list_updates(&by_host(h.id)).await.unwrap().total, 697);

    // A refused refresh of an existing row leaves that row as it was.
    let mut rows = many("ok", 700);
    rows[10].available_version = String::new();
    rows[11].available_version = "3.0".into();
    let out = store
        .ingest_report(h.id, report(rows), &Actor::Agent(h.id))
        .await
        .unwrap();
    let idx: Vec<usize> = out.rejected.iter().map(|r| r.index).collect();
    assert!(idx.contains(&10), "{idx:?}");
    let page2 = store
        .list_updates(&UpdateFilter {
            host_id: Some(h.id),
            package: Some("ok-001".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let v = |p: &str| {
        page2
            .items
            .iter()
            .find(|u| u.package == p)
            .map(|u| u.available_version.clone())
    };
    assert_eq!(v("ok-0010").as_deref(), Some("2.0"));
    assert_eq!(v("ok-0011").as_deref(), Some("3.0"));
}

pub async fn ingest_reconciles_rows_no_longer_reported(store: S) {
    let h = host(&store, "rec").await;
    let a = Actor::Agent(h.id);
    let rows = vec![
        apt("gone", "1", "2"),
        apt("stays", "1", "2"),
        pkg(PackageManager::Docker, "nginx", "a", "b", Severity::Normal),
    ];
    store.ingest_report(h.id, report(rows), &a).await.unwrap();
    // apt scanned, docker scanner failed: only the apt row that vanished is closed.
    let out = store
        .ingest_report(
            h.id,
            report_scanned(vec![apt("stays", "1", "2")], vec![PackageManager::Apt]),
            &a,
        )
        .await
        .unwrap();
    assert_eq!(out.reconciled, 1);
    let all = store.list_updates(&by_host(h.id)).await.unwrap().items;
    let status = |p: &str| all.iter().find(|u| u.package == p).map(|u| u.status);
    assert_eq!(status("gone"), Some(UpdateStatus::Reconciled));
    assert_eq!(status("stays"), Some(UpdateStatus::Pending));
    assert_eq!(
        status("nginx"),
        Some(UpdateStatus::Pending),
        "docker's scanner did not run"
    );
    let evs = store
        .events(&EventFilter {
            host_id: Some(h.id),
            ..Default::default()
        })
        .await
        .unwrap();
    let rec = evs
        .iter()
        .find(|e| e.event_type == events::UPDATES_RECONCILED)
        .expect("reconciled event");
    let gone = all.iter().find(|u| u.package == "gone").unwrap().id;
    assert_eq!(rec.payload["ids"], serde_json::json!([gone]));
    assert_eq!(
        store.get_host(h.id).await.unwrap().unwrap().pending_updates,
        2
    );

    // The package comes back later: a new open row, the reconciled one stays history.
    let out = store
        .ingest_report(
            h.id,
            report_scanned(
                vec![apt("stays", "1", "2"), apt("gone", "1", "2")],
                vec![PackageManager::Apt],
            ),
            &a,
        )
        .await
        .unwrap();
    assert_eq!(out.discovered, 1);
    let again = store
        .list_updates(&UpdateFilter {
            host_id: Some(h.id),
            package: Some("gone".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(again.total, 2);
}

pub async fn ingest_leaves_rows_in_flight(store: S) {
    let (h, _dry, _) = approved_host(
        &store,
        "flight",
        vec![apt("x", "1", "2"), apt("y", "1", "2")],
    )
    .await;
    // The next scan lists nothing (or a newer version): in-flight rows are not touched.
    let out = store
        .ingest_report(h.id, report(vec![apt("y", "1", "3")]), &Actor::Agent(h.id))
        .await
        .unwrap();
    assert_eq!(out.reconciled, 0);
    let rows = store.list_updates(&by_host(h.id)).await.unwrap().items;
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter().all(|u| u.status == UpdateStatus::DryRun),
        "{rows:?}"
    );
    assert!(rows.iter().all(|u| u.available_version == "2"));
}

pub async fn ingest_version_change_voids_approval(store: S) {
    let (h, dry, _) = approved_host(&store, "void", vec![apt("x", "1", "2")]).await;
    run(&store, h.id, dry, ok(vec![planned("x", true)])).await;
    let row = &store.list_updates(&by_host(h.id)).await.unwrap().items[0];
    assert_eq!(row.status, UpdateStatus::AwaitingConfirmation);
    // A newer candidate appears before the user confirms.
    store
        .ingest_report(h.id, report(vec![apt("x", "1", "3")]), &Actor::Agent(h.id))
        .await
        .unwrap();
    let row = store.get_update(row.id).await.unwrap().unwrap();
    assert_eq!(row.status, UpdateStatus::Pending);
    assert_eq!(row.available_version, "3");
    assert_eq!(row.command_id, None);
    assert!(matches!(
        store.confirm_dry_run(dry, 600, &admin()).await,
        Err(StoreError::Conflict(_))
    ));

    // A rejected row stays rejected while the same version is offered, and comes back
    // as pending when a newer one is.
    assert_eq!(store.reject_updates(&[row.id], &admin()).await.unwrap(), 1);
    store
        .ingest_report(
            h.id,
            report(vec![apt("x", "1.5", "3")]),
            &Actor::Agent(h.id),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_update(row.id).await.unwrap().unwrap().status,
        UpdateStatus::Rejected
    );
    store
        .ingest_report(
            h.id,
            report(vec![apt("x", "1.5", "4")]),
            &Actor::Agent(h.id),
        )
        .await
        .unwrap();
    let row = store.get_update(row.id).await.unwrap().unwrap();
    assert_eq!(
        (row.status, row.available_version.as_str()),
        (UpdateStatus::Pending, "4")
    );
}

pub async fn rescan_after_install_closes_nothing_wrongly(store: S) {
    let rows = vec![apt("x", "1", "2"), apt("keep", "1", "2")];
    let (h, dry, corr) = approved_host(&store, "after", rows).await;
    run(
        &store,
        h.id,
        dry,
        ok(vec![planned("x", true), planned("keep", true)]),
    )
    .await;
    let install = store.confirm_dry_run(dry, 600, &admin()).await.unwrap();
    run(&store, h.id, install.id, ok(vec![])).await;
    // Re-scan: "x" has an even newer version, "keep" is up to date.
    let out = store
        .ingest_report(h.id, report(vec![apt("x", "2", "3")]), &Actor::Agent(h.id))
        .await
        .unwrap();
    assert_eq!(
        (out.discovered, out.reconciled),
        (1, 0),
        "installed rows are history, not reconciled"
    );
    let rows = store.list_updates(&by_host(h.id)).await.unwrap().items;
    let installed: Vec<_> = rows
        .iter()
        .filter(|u| u.status == UpdateStatus::Installed)
        .collect();
    assert_eq!(installed.len(), 2);
    assert!(installed.iter().all(|u| u.correlation_id == Some(corr)));
    let open: Vec<_> = rows
        .iter()
        .filter(|u| u.status == UpdateStatus::Pending)
        .collect();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (
            open[0].current_version.as_str(),
            open[0].available_version.as_str()
        ),
        ("2", "3")
    );
    assert_eq!(
        store.version_history(Some(h.id), 10).await.unwrap().len(),
        2
    );
}
