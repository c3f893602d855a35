//! Clusters, nodes and guests: the inventory a discovery pass writes, guest identity
//! across migrations, removals, hostname auto-attach and a guest's history.

use super::support::*;
use canopy_api_types::hosts::{Event, EventFilter};
use canopy_api_types::{ClusterId, GuestId};
use canopy_store::{
    ClusterRecord, DiscoveryWrite, GuestRecord, GuestRow, InventoryEvent, NewCluster, NodeRow,
    StoreError,
};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::json;
use std::time::Instant;

fn new_cluster(name: &str) -> NewCluster {
    NewCluster {
        name: name.into(),
        endpoints: vec![
            format!("https://{name}-1.lan:8006"),
            format!("https://{name}-2.lan:8006"),
        ],
        token_id: "canopy@pve!discovery".into(),
        token_secret_sealed: "sealed:v1:abcdef".into(),
        fingerprints: vec!["AA:BB:CC".into()],
        ca_pem: Some("-----BEGIN CERTIFICATE-----\n…".into()),
        interval_secs: 300,
    }
}

fn node(name: &str) -> NodeRow {
    NodeRow {
        name: name.into(),
        status: "online".into(),
        ip: Some("192.0.2.10".into()),
        error: None,
    }
}

fn guest(kind: &str, vmid: u32, node: &str, name: &str) -> GuestRow {
    GuestRow {
        kind: kind.into(),
        vmid,
        node: node.into(),
        name: name.into(),
        status: "running".into(),
        template: false,
        tags: vec!["prod".into(), "web".into()],
    }
}

fn template(vmid: u32, node: &str, name: &str) -> GuestRow {
    GuestRow {
        template: true,
        status: "stopped".into(),
        ..guest("vm", vmid, node, name)
    }
}

fn ev(event_type: &str, g: &GuestRow) -> InventoryEvent {
    InventoryEvent {
        event_type: event_type.into(),
        subject: format!("cluster/home/node/{}/{}/{}", g.node, g.kind, g.vmid),
        vmid: Some(g.vmid),
        payload: json!({ "name": g.name }),
    }
}

/// A whole time in microseconds, so stored times compare equal.
fn at(minutes: i64) -> DateTime<Utc> {
    (Utc::now() + Duration::minutes(minutes)).trunc_subsecs(6)
}

fn pass(
    cluster: ClusterId,
    at: DateTime<Utc>,
    nodes: &[&str],
    guests: Vec<GuestRow>,
) -> DiscoveryWrite {
    DiscoveryWrite {
        cluster_id: cluster,
        at,
        standalone: false,
        nodes: nodes.iter().map(|n| node(n)).collect(),
        guests,
        events: vec![],
    }
}

async fn cluster(store: &S, name: &str) -> ClusterRecord {
    store
        .create_cluster(new_cluster(name), &admin())
        .await
        .expect("create cluster")
}

async fn guests_of(store: &S, cluster: ClusterId) -> Vec<GuestRecord> {
    let mut g: Vec<_> = store
        .inventory()
        .await
        .expect("inventory")
        .guests
        .into_iter()
        .filter(|g| g.cluster_id == cluster)
        .collect();
    g.sort_by_key(|g| g.row.vmid);
    g
}

async fn guest_by_vmid(store: &S, cluster: ClusterId, vmid: u32) -> Option<GuestRecord> {
    guests_of(store, cluster)
        .await
        .into_iter()
        .find(|g| g.row.vmid == vmid)
}

/// The whole log, page by page.
async fn all_events(store: &S) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    loop {
        let page = store
            .events(&EventFilter {
                after: out.last().map(|e| e.seq),
                limit: Some(5_000),
                ..Default::default()
            })
            .await
            .expect("events");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

async fn events_of_type(store: &S, event_type: &str) -> Vec<Event> {
    all_events(store)
        .await
        .into_iter()
        .filter(|e| e.event_type == event_type)
        .collect()
}

pub async fn clusters_create_list_by_name_and_conflict(store: S) {
    assert!(store.list_clusters().await.unwrap().is_empty());
    let home = cluster(&store, "home").await;
    assert_eq!(home.name, "home");
    assert_eq!(home.endpoints.len(), 2);
    assert_eq!(
        home.ca_pem.as_deref(),
        Some("-----BEGIN CERTIFICATE-----\n…")
    );
    assert_eq!(home.interval_secs, 300);
    assert!(!home.standalone);
    assert!(home.last_discovery_at.is_none() && home.last_error.is_none());
    let lab = store
        .create_cluster(
            NewCluster {
                ca_pem: None,
                fingerprints: vec![],
                ..new_cluster("lab")
            },
            &admin(),
        )
        .await
        .unwrap();

    assert_eq!(
        store.list_clusters().await.unwrap(),
        vec![home.clone(), lab.clone()]
    );
    assert_eq!(
        store.cluster_by_name("home").await.unwrap(),
        Some(home.clone())
    );
    assert_eq!(store.cluster_by_name("lab").await.unwrap(), Some(lab));
    assert_eq!(store.cluster_by_name("nope").await.unwrap(), None);

    match store.create_cluster(new_cluster("home"), &admin()).await {
        Err(StoreError::Conflict(msg)) => assert!(msg.contains("home"), "{msg}"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.list_clusters().await.unwrap().len(), 2);

    let added = events_of_type(&store, "cluster_added").await;
    assert_eq!(added.len(), 2);
    assert_eq!(added[0].subject, "cluster/home");
    assert_eq!(added[0].actor, "user:admin");
    assert!(
        !added[0].payload.to_string().contains("sealed"),
        "the sealed secret stays out of the log: {}",
        added[0].payload
    );
}

pub async fn delete_cluster_cascades_and_keeps_hosts(store: S) {
    let home = cluster(&store, "home").await;
    let lab = cluster(&store, "lab").await;
    let web = host(&store, "web").await;
    store
        .apply_discovery(pass(
            home.id,
            at(0),
            &["pve1"],
            vec![guest("lxc", 101, "pve1", "web")],
        ))
        .await
        .unwrap();
    store
        .apply_discovery(pass(
            lab.id,
            at(0),
            &["lab1"],
            vec![guest("vm", 200, "lab1", "other")],
        ))
        .await
        .unwrap();
    assert_eq!(guests_of(&store, home.id).await[0].host_id, Some(web.id));

    store.delete_cluster(home.id, &admin()).await.unwrap();
    let inv = store.inventory().await.unwrap();
    assert_eq!(inv.clusters.len(), 1);
    assert!(inv.nodes.iter().all(|n| n.cluster_id == lab.id));
    assert!(inv.guests.iter().all(|g| g.cluster_id == lab.id));
    assert_eq!(inv.nodes.len(), 1);
    assert_eq!(inv.guests.len(), 1);
    assert!(
        store.get_host(web.id).await.unwrap().is_some(),
        "hosts stay"
    );
    assert!(store.cluster_by_name("home").await.unwrap().is_none());

    assert!(matches!(
        store.delete_cluster(home.id, &admin()).await,
        Err(StoreError::NotFound(_))
    ));
    let removed = events_of_type(&store, "cluster_removed").await;
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].subject, "cluster/home");

    // The name is free again, and the detached host attaches to the new cluster's guest.
    let again = cluster(&store, "home").await;
    store
        .apply_discovery(pass(
            again.id,
            at(1),
            &["pve1"],
            vec![guest("lxc", 101, "pve1", "web")],
        ))
        .await
        .unwrap();
    assert_eq!(guests_of(&store, again.id).await[0].host_id, Some(web.id));
}

pub async fn discovery_inserts_nodes_and_guests(store: S) {
    let home = cluster(&store, "home").await;
    let t = at(0);
    let guests = vec![
        guest("lxc", 101, "pve1", "web"),
        guest("vm", 102, "pve2", "db"),
        template(9000, "pve1", "debian-tpl"),
    ];
    let mut write = pass(home.id, t, &["pve1", "pve2"], guests.clone());
    write.standalone = true;
    write.nodes[1].status = "offline".into();
    write.nodes[1].error = Some("no route to host".into());
    write.events = guests.iter().map(|g| ev("guest_added", g)).collect();
    write.events.push(InventoryEvent {
        event_type: "node_error_changed".into(),
        subject: "cluster/home/node/pve2".into(),
        vmid: None,
        payload: json!({ "to": "no route to host" }),
    });
    store.apply_discovery(write).await.unwrap();

    let inv = store.inventory().await.unwrap();
    assert_eq!(inv.clusters.len(), 1);
    let c = &inv.clusters[0];
    assert_eq!(c.last_discovery_at, Some(t));
    assert!(c.standalone);
    assert!(c.last_error.is_none());

    assert_eq!(inv.nodes.len(), 2);
    assert_eq!(inv.nodes[0].row, node("pve1"));
    assert_eq!(inv.nodes[0].updated_at, t);
    assert_eq!(inv.nodes[0].apt_updates, None);
    assert_eq!(inv.nodes[1].row.status, "offline");
    assert_eq!(inv.nodes[1].row.error.as_deref(), Some("no route to host"));

    let stored = guests_of(&store, home.id).await;
    assert_eq!(stored.len(), 3);
    for (s, g) in stored.iter().zip(&guests) {
        assert_eq!(&s.row, g);
        assert_eq!(s.cluster_id, home.id);
        assert_eq!((s.first_seen, s.last_seen), (t, t));
        assert_eq!(s.host_id, None);
        assert_eq!(s.os, None);
    }

    let added = events_of_type(&store, "guest_added").await;
    assert_eq!(added.len(), 3);
    for (e, s) in added.iter().zip(&stored) {
        assert_eq!(e.guest_id, Some(s.id), "{} links to its guest", e.subject);
        assert_eq!(e.actor, "system");
        assert_eq!(e.ts, t);
    }
    let node_ev = events_of_type(&store, "node_error_changed").await;
    assert_eq!(node_ev[0].guest_id, None);
    assert_eq!(node_ev[0].subject, "cluster/home/node/pve2");

    // A node no longer listed goes; a pass of an unknown cluster is NotFound.
    store
        .apply_discovery(pass(home.id, at(1), &["pve1"], guests.clone()))
        .await
        .unwrap();
    let inv = store.inventory().await.unwrap();
    assert_eq!(inv.nodes.len(), 1);
    assert!(matches!(
        store
            .apply_discovery(pass(ClusterId::new(), at(1), &["x"], vec![]))
            .await,
        Err(StoreError::NotFound(_))
    ));
}

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

pub async fn discovery_error_keeps_tree_and_success_clears_it(store: S) {
    let home = cluster(&store, "home").await;
    let t1 = at(0);
    store
        .apply_discovery(pass(
            home.id,
            t1,
            &["pve1"],
            vec![guest("lxc", 101, "pve1", "web")],
        ))
        .await
        .unwrap();
    let t2 = at(1);
    store
        .record_discovery_error(home.id, t2, "all endpoints refused the connection")
        .await
        .unwrap();
    let c = store.cluster_by_name("home").await.unwrap().unwrap();
    assert_eq!(
        c.last_error.as_deref(),
        Some("all endpoints refused the connection")
    );
    assert_eq!(c.last_discovery_at, Some(t2));
    let inv = store.inventory().await.unwrap();
    assert_eq!(
        (inv.nodes.len(), inv.guests.len()),
        (1, 1),
        "the last tree stays"
    );
    assert!(matches!(
        store
            .record_discovery_error(ClusterId::new(), t2, "x")
            .await,
        Err(StoreError::NotFound(_))
    ));

    let t3 = at(2);
    store
        .apply_discovery(pass(
            home.id,
            t3,
            &["pve1"],
            vec![guest("lxc", 101, "pve1", "web")],
        ))
        .await
        .unwrap();
    let c = store.cluster_by_name("home").await.unwrap().unwrap();
    assert_eq!(c.last_error, None);
    assert_eq!(c.last_discovery_at, Some(t3));
}

pub async fn node_updates_round_trip(store: S) {
    let home = cluster(&store, "home").await;
    store
        .apply_discovery(pass(home.id, at(0), &["pve1", "pve2"], vec![]))
        .await
        .unwrap();
    let list = json!([
        { "Package": "pve-manager", "OldVersion": "8.2.4", "Version": "8.2.7", "Priority": "important" },
        { "Package": "libc6", "OldVersion": "2.36-9", "Version": "2.36-9+deb12u8", "Origin": "Debian" }
    ]);
    let t = at(1);
    store
        .set_node_updates(home.id, "pve1", t, Some(list.clone()), None)
        .await
        .unwrap();
    store
        .set_node_updates(
            home.id,
            "pve2",
            t,
            None,
            Some("401 permission check failed"),
        )
        .await
        .unwrap();
    // A later pass refreshes the nodes but keeps the cached lists.
    store
        .apply_discovery(pass(home.id, at(2), &["pve1", "pve2"], vec![]))
        .await
        .unwrap();
    let nodes = store.inventory().await.unwrap().nodes;
    assert_eq!(nodes[0].apt_updates, Some(list));
    assert_eq!(nodes[0].apt_checked_at, Some(t));
    assert_eq!(nodes[0].apt_error, None);
    assert_eq!(nodes[1].apt_updates, None);
    assert_eq!(
        nodes[1].apt_error.as_deref(),
        Some("401 permission check failed")
    );

    assert!(matches!(
        store
            .set_node_updates(home.id, "pve9", t, Some(json!([])), None)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .set_node_updates(ClusterId::new(), "pve1", t, Some(json!([])), None)
            .await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn hostname_auto_attach_only_when_unambiguous(store: S) {
    let home = cluster(&store, "home").await;
    let lab = cluster(&store, "lab").await;
    let web = host(&store, "web").await;
    host(&store, "db").await;
    host(&store, "tpl").await;
    let app = host(&store, "app").await;
    host(&store, "dup").await;
    store
        .register_host(
            &{
                let hash = format!("tok-dup2-{}", uuid::Uuid::new_v4());
                store
                    .create_registration_token(token(&hash, 1, Duration::hours(1)), &admin())
                    .await
                    .unwrap();
                hash
            },
            canopy_store::NewHost {
                id: canopy_api_types::HostId::new(),
                facts: canopy_api_types::agent::HostFacts {
                    machine_id: "machine-dup-2".into(),
                    ..facts("dup")
                },
                credential_hash: "cred-dup-2".into(),
            },
            Utc::now(),
        )
        .await
        .unwrap();

    // "cache" is in lab before its host enrols; home's "cache" then makes the name
    // ambiguous across clusters.
    store
        .apply_discovery(pass(
            lab.id,
            at(0),
            &["lab1"],
            vec![guest("lxc", 300, "lab1", "cache")],
        ))
        .await
        .unwrap();
    host(&store, "cache").await;
    store
        .apply_discovery(pass(
            home.id,
            at(0),
            &["pve1"],
            vec![
                guest("lxc", 101, "pve1", "web"),
                guest("lxc", 102, "pve1", "db"), // two guests named "db"
                guest("lxc", 106, "pve1", "db"),
                template(9000, "pve1", "tpl"), // templates never attach
                template(9001, "pve1", "app"),
                guest("vm", 103, "pve1", "app"), // the one non-template "app"
                guest("vm", 104, "pve1", "dup"), // two hosts named "dup"
                guest("vm", 105, "pve1", "nobody"),
                guest("vm", 107, "pve1", "cache"),
            ],
        ))
        .await
        .unwrap();
    let by_vmid = |gs: &[GuestRecord], v: u32| gs.iter().find(|g| g.row.vmid == v).unwrap().host_id;
    let gs = guests_of(&store, home.id).await;
    assert_eq!(by_vmid(&gs, 101), Some(web.id));
    assert_eq!(by_vmid(&gs, 102), None);
    assert_eq!(by_vmid(&gs, 106), None);
    assert_eq!(by_vmid(&gs, 9000), None);
    assert_eq!(by_vmid(&gs, 9001), None);
    assert_eq!(by_vmid(&gs, 103), Some(app.id));
    assert_eq!(by_vmid(&gs, 104), None);
    assert_eq!(by_vmid(&gs, 105), None);
    assert_eq!(by_vmid(&gs, 107), None);
    assert_eq!(guests_of(&store, lab.id).await[0].host_id, None);

    let attached = events_of_type(&store, "host_attached").await;
    assert_eq!(attached.len(), 2);
    let web_guest = gs.iter().find(|g| g.row.vmid == 101).unwrap();
    assert_eq!(attached[0].subject, "cluster/home/node/pve1/lxc/101");
    assert_eq!(attached[0].guest_id, Some(web_guest.id));
    assert_eq!(attached[0].actor, "system");
    assert_eq!(attached[0].payload["host_id"], json!(web.id));

    // Another pass changes no binding and writes no new attachment.
    store
        .apply_discovery(pass(
            home.id,
            at(1),
            &["pve1"],
            gs.iter().map(|g| g.row.clone()).collect(),
        ))
        .await
        .unwrap();
    assert_eq!(events_of_type(&store, "host_attached").await.len(), 2);
    let again: Vec<_> = guests_of(&store, home.id)
        .await
        .iter()
        .map(|g| (g.id, g.host_id))
        .collect();
    assert_eq!(
        again,
        gs.iter().map(|g| (g.id, g.host_id)).collect::<Vec<_>>()
    );
}

pub async fn attach_host_explicitly(store: S) {
    let home = cluster(&store, "home").await;
    let h = host(&store, "mystery-box").await;
    store
        .apply_discovery(pass(
            home.id,
            at(0),
            &["pve1"],
            vec![
                guest("lxc", 101, "pve1", "ct-101"),
                guest("lxc", 102, "pve1", "ct-102"),
            ],
        ))
        .await
        .unwrap();
    let gs = guests_of(&store, home.id).await;
    assert!(gs.iter().all(|g| g.host_id.is_none()));

    store.attach_host(gs[0].id, h.id, &admin()).await.unwrap();
    assert_eq!(guests_of(&store, home.id).await[0].host_id, Some(h.id));
    // Attaching it elsewhere moves it: a host is one machine.
    store.attach_host(gs[1].id, h.id, &admin()).await.unwrap();
    let now = guests_of(&store, home.id).await;
    assert_eq!((now[0].host_id, now[1].host_id), (None, Some(h.id)));
    let attached = events_of_type(&store, "host_attached").await;
    assert_eq!(attached.len(), 2);
    assert_eq!(attached[1].actor, "user:admin");
    assert_eq!(attached[1].guest_id, Some(gs[1].id));
    assert_eq!(attached[1].subject, "cluster/home/node/pve1/lxc/102");

    // The binding survives later passes (and a move to another node).
    store
        .apply_discovery(pass(
            home.id,
            at(1),
            &["pve1", "pve2"],
            vec![
                guest("lxc", 101, "pve1", "ct-101"),
                guest("lxc", 102, "pve2", "ct-102"),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(guests_of(&store, home.id).await[1].host_id, Some(h.id));

    assert!(matches!(
        store.attach_host(GuestId::new(), h.id, &admin()).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .attach_host(gs[0].id, canopy_api_types::HostId::new(), &admin())
            .await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn guest_history_includes_the_attached_hosts_events(store: S) {
    let home = cluster(&store, "home").await;
    let h = host(&store, "web").await; // host.registered
    store
        .ingest_report(
            h.id,
            report(many("pkg", 3)),
            &canopy_store::Actor::Agent(h.id),
        )
        .await
        .unwrap();
    let g = guest("lxc", 101, "pve1", "web-ct");
    let mut w = pass(home.id, at(0), &["pve1"], vec![g.clone()]);
    w.events = vec![ev("guest_added", &g)];
    store.apply_discovery(w).await.unwrap();
    let id = guests_of(&store, home.id).await[0].id;
    let before = store.guest_history(id, 100).await.unwrap();
    assert_eq!(before.len(), 1, "not attached yet: only its own events");

    store.attach_host(id, h.id, &admin()).await.unwrap();
    let history = store.guest_history(id, 100).await.unwrap();
    let host_events = store
        .events(&EventFilter {
            host_id: Some(h.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        host_events.len() >= 3,
        "registered, report, attached: {host_events:?}"
    );
    let mut expected: Vec<i64> = host_events.iter().map(|e| e.seq).collect();
    expected.extend(before.iter().map(|e| e.seq));
    expected.sort_unstable_by(|a, b| b.cmp(a));
    expected.dedup();
    assert_eq!(
        history.iter().map(|e| e.seq).collect::<Vec<_>>(),
        expected,
        "newest first"
    );
    assert_eq!(history[0].event_type, "host_attached");
    assert_eq!(history[0].guest_id, Some(id));
    assert!(history.iter().any(|e| e.event_type == "host.registered"));
    assert!(history.iter().any(|e| e.event_type == "guest_added"));
    let top2 = store.guest_history(id, 2).await.unwrap();
    assert_eq!(top2, history[..2].to_vec());
    assert!(store
        .guest_history(GuestId::new(), 10)
        .await
        .unwrap()
        .is_empty());
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
