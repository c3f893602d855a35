//! Clusters, nodes and guests: what a discovery pass writes, what a failed pass keeps,
//! and the node's cached apt updates. Shared builders for the other inventory cases.

use super::support::*;
use canopy_api_types::hosts::{Event, EventFilter};
use canopy_api_types::ClusterId;
use canopy_store::{
    ClusterRecord, DiscoveryWrite, GuestRecord, GuestRow, InventoryEvent, NewCluster, NodeRow,
    StoreError,
};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::json;

pub fn new_cluster(name: &str) -> NewCluster {
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

pub fn node(name: &str) -> NodeRow {
    NodeRow {
        name: name.into(),
        status: "online".into(),
        ip: Some("192.0.2.10".into()),
        error: None,
    }
}

pub fn guest(kind: &str, vmid: u32, node: &str, name: &str) -> GuestRow {
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

pub fn template(vmid: u32, node: &str, name: &str) -> GuestRow {
    GuestRow {
        template: true,
        status: "stopped".into(),
        ..guest("vm", vmid, node, name)
    }
}

pub fn ev(event_type: &str, g: &GuestRow) -> InventoryEvent {
    InventoryEvent {
        event_type: event_type.into(),
        subject: format!("cluster/home/node/{}/{}/{}", g.node, g.kind, g.vmid),
        vmid: Some(g.vmid),
        payload: json!({ "name": g.name }),
    }
}

/// A whole time in microseconds, so stored times compare equal.
pub fn at(minutes: i64) -> DateTime<Utc> {
    (Utc::now() + Duration::minutes(minutes)).trunc_subsecs(6)
}

pub fn pass(
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

pub async fn cluster(store: &S, name: &str) -> ClusterRecord {
    store
        .create_cluster(new_cluster(name), &admin())
        .await
        .expect("create cluster")
}

pub async fn guests_of(store: &S, cluster: ClusterId) -> Vec<GuestRecord> {
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

pub async fn guest_by_vmid(store: &S, cluster: ClusterId, vmid: u32) -> Option<GuestRecord> {
    guests_of(store, cluster)
        .await
        .into_iter()
        .find(|g| g.row.vmid == vmid)
}

/// The whole log, page by page.
pub async fn all_events(store: &S) -> Vec<Event> {
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

pub async fn events_of_type(store: &S, event_type: &str) -> Vec<Event> {
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

    // One cluster's rows alone: another cluster's are left out.
    let lab = cluster(&store, "lab").await;
    store
        .apply_discovery(pass(
            lab.id,
            t,
            &["lab1"],
            vec![guest("lxc", 300, "lab1", "cache")],
        ))
        .await
        .unwrap();
    let whole = store.inventory().await.unwrap();
    let own = store.cluster_inventory(home.id).await.unwrap();
    assert_eq!(own.clusters, vec![c.clone()]);
    let of_home = |n: &canopy_store::NodeRecord| n.cluster_id == home.id;
    assert_eq!(
        own.nodes,
        whole
            .nodes
            .iter()
            .filter(|n| of_home(n))
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(own.guests, stored);
    let none = store.cluster_inventory(ClusterId::new()).await.unwrap();
    assert!(none.clusters.is_empty() && none.nodes.is_empty() && none.guests.is_empty());

    // A node no longer listed goes; a pass of an unknown cluster is NotFound.
    store
        .apply_discovery(pass(home.id, at(1), &["pve1"], guests.clone()))
        .await
        .unwrap();
    let inv = store.inventory().await.unwrap();
    assert_eq!(
        inv.nodes.iter().filter(|n| n.cluster_id == home.id).count(),
        1
    );
    assert!(matches!(
        store
            .apply_discovery(pass(ClusterId::new(), at(1), &["x"], vec![]))
            .await,
        Err(StoreError::NotFound(_))
    ));
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
