//! Guests and enrolled hosts: the hostname auto-attach (only when unambiguous), explicit
//! attachment (and `guest_of_host` following it), and a guest's history including its
//! host's events.

use super::inventory::*;
use super::support::*;
use canopy_api_types::hosts::EventFilter;
use canopy_api_types::GuestId;
use canopy_store::{GuestRecord, StoreError};
use chrono::{Duration, Utc};
use serde_json::json;

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
                reenrol: None,
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
    assert_eq!(store.guest_of_host(h.id).await.unwrap(), None);

    store.attach_host(gs[0].id, h.id, &admin()).await.unwrap();
    assert_eq!(guests_of(&store, home.id).await[0].host_id, Some(h.id));
    assert_eq!(store.guest_of_host(h.id).await.unwrap(), Some(gs[0].id));
    // Attaching it elsewhere moves it: a host is one machine.
    store.attach_host(gs[1].id, h.id, &admin()).await.unwrap();
    let now = guests_of(&store, home.id).await;
    assert_eq!((now[0].host_id, now[1].host_id), (None, Some(h.id)));
    assert_eq!(store.guest_of_host(h.id).await.unwrap(), Some(gs[1].id));
    assert_eq!(
        store
            .guest_of_host(canopy_api_types::HostId::new())
            .await
            .unwrap(),
        None
    );
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
