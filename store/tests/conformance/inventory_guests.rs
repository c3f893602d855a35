//! Guest identity: `(cluster, vmid)` and kind. A guest on another node keeps its id and
//! history; a guest no longer listed goes (its removal still linked to it); a vmid
//! reused with another kind is a new guest; 5,000 guests in one pass; passes of one
//! cluster serialise.

use super::inventory::*;
use super::support::*;
use canopy_store::GuestRow;
use std::time::Instant;

pub async fn moved_guest_keeps_id_first_seen_and_history(store: S) {
    let home = cluster(&store, "home").await;
    let (t1, t2) = (at(0), at(5));
    let before = guest("lxc", 101, "pve1", "web");
    let mut w = pass(home.id, t1, &["pve1", "pve2"], vec![before.clone()]);
    w.events = vec![ev("guest_added", &before)];
    store.apply_discovery(w).await.unwrap();
    let first = guest_by_vmid(&store, home.id, 101).await.unwrap();

    let after = GuestRow {
        status: "stopped".into(),
        tags: vec![],
        ..guest("lxc", 101, "pve2", "web")
    };
    let mut w = pass(home.id, t2, &["pve1", "pve2"], vec![after.clone()]);
    w.events = vec![
        ev("guest_moved", &after),
        ev("guest_status_changed", &after),
    ];
    store.apply_discovery(w).await.unwrap();

    let moved = guest_by_vmid(&store, home.id, 101).await.unwrap();
    assert_eq!(moved.id, first.id, "the guest keeps its id");
    assert_eq!(moved.first_seen, t1);
    assert_eq!(moved.last_seen, t2);
    assert_eq!(moved.row, after);

    let history = store.guest_history(moved.id, 10).await.unwrap();
    let types: Vec<_> = history.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["guest_status_changed", "guest_moved", "guest_added"]
    );
    assert!(history.iter().all(|e| e.guest_id == Some(moved.id)));
    assert_eq!(store.guest_history(moved.id, 1).await.unwrap().len(), 1);
}

pub async fn missing_guest_is_deleted_and_its_removal_linked(store: S) {
    let home = cluster(&store, "home").await;
    let (a, b) = (
        guest("lxc", 101, "pve1", "web"),
        guest("vm", 102, "pve1", "db"),
    );
    store
        .apply_discovery(pass(home.id, at(0), &["pve1"], vec![a.clone(), b.clone()]))
        .await
        .unwrap();
    let gone = guest_by_vmid(&store, home.id, 102).await.unwrap();

    let mut w = pass(home.id, at(1), &["pve1"], vec![a.clone()]);
    w.events = vec![ev("guest_removed", &b)];
    store.apply_discovery(w).await.unwrap();

    let left = guests_of(&store, home.id).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].row.vmid, 101);
    let removed = events_of_type(&store, "guest_removed").await;
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].guest_id, Some(gone.id));
    let history = store.guest_history(gone.id, 10).await.unwrap();
    assert_eq!(history.len(), 1, "a removed guest's history stays readable");

    // An empty pass removes everything.
    store
        .apply_discovery(pass(home.id, at(2), &[], vec![]))
        .await
        .unwrap();
    let inv = store.inventory().await.unwrap();
    assert!(inv.guests.is_empty() && inv.nodes.is_empty());
}

pub async fn vmid_reused_with_another_kind_is_a_new_guest(store: S) {
    let home = cluster(&store, "home").await;
    let old = guest("lxc", 105, "pve1", "old-ct");
    store
        .apply_discovery(pass(home.id, at(0), &["pve1"], vec![old.clone()]))
        .await
        .unwrap();
    let old_id = guest_by_vmid(&store, home.id, 105).await.unwrap().id;

    let new = guest("vm", 105, "pve1", "new-vm");
    let t = at(1);
    let mut w = pass(home.id, t, &["pve1"], vec![new.clone()]);
    w.events = vec![ev("guest_removed", &old), ev("guest_added", &new)];
    store.apply_discovery(w).await.unwrap();

    let now = guests_of(&store, home.id).await;
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].id, old_id);
    assert_eq!(now[0].row, new);
    assert_eq!(now[0].first_seen, t);
    let links: Vec<_> = all_events(&store)
        .await
        .into_iter()
        .filter(|e| e.event_type.starts_with("guest_"))
        .map(|e| (e.event_type, e.guest_id))
        .collect();
    assert_eq!(
        links,
        vec![
            ("guest_removed".to_string(), Some(old_id)),
            ("guest_added".to_string(), Some(now[0].id)),
        ]
    );
}
pub async fn five_thousand_guests_in_one_pass(store: S) {
    let home = cluster(&store, "home").await;
    let nodes = ["pve1", "pve2", "pve3", "pve4", "pve5"];
    let guests: Vec<GuestRow> = (0..5_000u32)
        .map(|i| {
            let kind = if i % 2 == 0 { "lxc" } else { "vm" };
            guest(
                kind,
                100 + i,
                nodes[(i % 5) as usize],
                &format!("guest-{i:04}"),
            )
        })
        .collect();
    let mut w = pass(home.id, at(0), &nodes, guests.clone());
    w.events = guests.iter().map(|g| ev("guest_added", g)).collect();
    let started = Instant::now();
    store.apply_discovery(w).await.unwrap();
    let first = started.elapsed();
    let stored = guests_of(&store, home.id).await;
    assert_eq!(stored.len(), 5_000);

    // Every guest moves to the next node; all keep their ids.
    let moved: Vec<GuestRow> = guests
        .iter()
        .enumerate()
        .map(|(i, g)| GuestRow {
            node: nodes[(i + 1) % 5].into(),
            ..g.clone()
        })
        .collect();
    let mut w = pass(home.id, at(1), &nodes, moved.clone());
    w.events = moved.iter().map(|g| ev("guest_moved", g)).collect();
    let started = Instant::now();
    store.apply_discovery(w).await.unwrap();
    let second = started.elapsed();
    eprintln!(
        "{}: apply_discovery of 5,000 guests (+5,000 events): first pass {first:?}, all moved {second:?}",
        store.backend()
    );
    let after = guests_of(&store, home.id).await;
    assert_eq!(after.len(), 5_000);
    for (a, b) in after.iter().zip(&stored) {
        assert_eq!(a.id, b.id);
        assert_ne!(a.row.node, b.row.node);
    }
    let moved_events = events_of_type(&store, "guest_moved").await;
    assert_eq!(moved_events.len(), 5_000);
    assert!(moved_events.iter().all(|e| e.guest_id.is_some()));

    store
        .apply_discovery(pass(home.id, at(2), &nodes, vec![]))
        .await
        .unwrap();
    assert!(guests_of(&store, home.id).await.is_empty());
}

pub async fn concurrent_passes_of_one_cluster_serialise(store: S) {
    let home = cluster(&store, "home").await;
    let guests: Vec<GuestRow> = (0..200u32)
        .map(|i| guest("lxc", 100 + i, "pve1", &format!("g{i}")))
        .collect();
    let mut passes = Vec::new();
    for k in 0..4 {
        let mut w = pass(home.id, at(k), &["pve1"], guests.clone());
        w.events = guests.iter().map(|g| ev("guest_seen", g)).collect();
        let s = store.clone();
        passes.push(tokio::spawn(async move { s.apply_discovery(w).await }));
    }
    for p in passes {
        p.await.unwrap().expect("every pass succeeds");
    }
    let stored = guests_of(&store, home.id).await;
    assert_eq!(stored.len(), 200);
    let ids: std::collections::HashSet<_> = stored.iter().map(|g| g.id).collect();
    let seen = events_of_type(&store, "guest_seen").await;
    assert_eq!(seen.len(), 800);
    assert!(
        seen.iter()
            .all(|e| e.guest_id.is_some_and(|g| ids.contains(&g))),
        "every pass linked its events to the stored guests"
    );
}
