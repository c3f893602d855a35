//! Listings, dashboard figures, the event log and idempotency keys.

use super::support::*;
use canopy_api_types::hosts::EventFilter;
use canopy_api_types::updates::{PackageManager, Severity, UpdateFilter, UpdateStatus};
use canopy_api_types::CorrelationId;
use canopy_store::{events, Actor, NewEvent, StoreError};
use chrono::{Duration, Utc};
use serde_json::json;

async fn two_hosts(store: &S) -> (canopy_api_types::hosts::Host, canopy_api_types::hosts::Host) {
    let a = host(store, "alpha").await;
    let b = host(store, "beta").await;
    let mut rows = many("lib", 30);
    rows.push(pkg(
        PackageManager::Apt,
        "openssl",
        "3.0.1",
        "3.0.2",
        Severity::Security,
    ));
    rows.push(pkg(
        PackageManager::Apt,
        "OpenSSH-server",
        "9.1",
        "9.2",
        Severity::Important,
    ));
    rows.push(pkg(
        PackageManager::Docker,
        "nginx",
        "a",
        "b",
        Severity::Low,
    ));
    store
        .ingest_report(a.id, report(rows), &Actor::Agent(a.id))
        .await
        .unwrap();
    let rows = vec![
        pkg(
            PackageManager::Apt,
            "openssl",
            "3.0.1",
            "3.0.2",
            Severity::Security,
        ),
        apt("zlib", "1", "2"),
    ];
    store
        .ingest_report(b.id, report(rows), &Actor::Agent(b.id))
        .await
        .unwrap();
    (a, b)
}

pub async fn list_updates_filters_order_and_pages(store: S) {
    let (a, b) = two_hosts(&store).await;
    let all = store.list_updates(&UpdateFilter::default()).await.unwrap();
    assert_eq!((all.total, all.page, all.per_page), (35, 1, 100));
    let sev: Vec<Severity> = all.items.iter().map(|u| u.severity).collect();
    assert!(
        sev.windows(2).all(|w| w[0] >= w[1]),
        "most severe first: {sev:?}"
    );
    assert_eq!(all.items[0].package, "openssl");
    assert_eq!(all.items[2].package, "OpenSSH-server");
    let normal: Vec<&str> = all
        .items
        .iter()
        .filter(|u| u.severity == Severity::Normal)
        .map(|u| u.package.as_str())
        .collect();
    let mut sorted = normal.clone();
    sorted.sort();
    assert_eq!(normal, sorted, "then by package");

    let f = |f: UpdateFilter| {
        let s = store.clone();
        async move { s.list_updates(&f).await.unwrap() }
    };
    assert_eq!(
        f(UpdateFilter {
            host_id: Some(b.id),
            ..Default::default()
        })
        .await
        .total,
        2
    );
    assert_eq!(
        f(UpdateFilter {
            severity: Some(Severity::Security),
            ..Default::default()
        })
        .await
        .total,
        2
    );
    assert_eq!(
        f(UpdateFilter {
            manager: Some(PackageManager::Docker),
            ..Default::default()
        })
        .await
        .total,
        1
    );
    let ssl = f(UpdateFilter {
        package: Some("SSL".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(ssl.total, 2, "case-insensitive substring");
    let ssh = f(UpdateFilter {
        package: Some("ssh".into()),
        host_id: Some(a.id),
        ..Default::default()
    })
    .await;
    assert_eq!(
        ssh.items
            .iter()
            .map(|u| u.package.as_str())
            .collect::<Vec<_>>(),
        vec!["OpenSSH-server"]
    );
    assert_eq!(
        f(UpdateFilter {
            package: Some("%".into()),
            ..Default::default()
        })
        .await
        .total,
        0,
        "no wildcards"
    );

    // Pagination: totals stay, pages do not overlap and cover everything.
    let mut seen = Vec::new();
    for page in 1..=4 {
        let p = f(UpdateFilter {
            page: Some(page),
            per_page: Some(10),
            ..Default::default()
        })
        .await;
        assert_eq!((p.total, p.page, p.per_page), (35, page, 10));
        assert_eq!(p.items.len(), if page == 4 { 5 } else { 10 });
        seen.extend(p.items.into_iter().map(|u| u.id));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 35);
    let beyond = f(UpdateFilter {
        page: Some(9),
        per_page: Some(10),
        ..Default::default()
    })
    .await;
    assert!(beyond.items.is_empty());
    assert_eq!(beyond.total, 35);

    let rej = all.items.iter().find(|u| u.package == "zlib").unwrap().id;
    store.reject_updates(&[rej], &admin()).await.unwrap();
    let st = f(UpdateFilter {
        status: Some(UpdateStatus::Rejected),
        ..Default::default()
    })
    .await;
    assert_eq!(st.items.iter().map(|u| u.id).collect::<Vec<_>>(), vec![rej]);
    assert_eq!(st.items[0].hostname, "beta");
    assert_eq!(
        store.get_update(rej).await.unwrap().unwrap().status,
        UpdateStatus::Rejected
    );
}

pub async fn list_hosts_counts_open_and_security(store: S) {
    let (a, b) = two_hosts(&store).await;
    let empty = host(&store, "gamma").await;
    let hosts = store.list_hosts().await.unwrap();
    assert_eq!(
        hosts
            .iter()
            .map(|h| h.hostname.as_str())
            .collect::<Vec<_>>(),
        vec!["alpha", "beta", "gamma"]
    );
    let get = |id| hosts.iter().find(|h| h.id == id).unwrap();
    assert_eq!(
        (get(a.id).pending_updates, get(a.id).security_updates),
        (33, 1)
    );
    assert_eq!(
        (get(b.id).pending_updates, get(b.id).security_updates),
        (2, 1)
    );
    assert_eq!(
        (
            get(empty.id).pending_updates,
            get(empty.id).security_updates
        ),
        (0, 0)
    );
    // Closed rows do not count.
    store
        .ingest_report(
            b.id,
            report(vec![apt("zlib", "1", "2")]),
            &Actor::Agent(b.id),
        )
        .await
        .unwrap();
    let h = store.get_host(b.id).await.unwrap().unwrap();
    assert_eq!((h.pending_updates, h.security_updates), (1, 0));
}

pub async fn stats_one_figure_each(store: S) {
    let empty = store.stats().await.unwrap();
    assert_eq!((empty.hosts, empty.hosts_with_updates), (0, 0));
    assert!(empty.by_severity.iter().all(|(_, n)| *n == 0));
    let (_, b) = two_hosts(&store).await;
    host(&store, "gamma").await;
    store
        .ingest_report(
            b.id,
            report(vec![apt("zlib", "1", "2")]),
            &Actor::Agent(b.id),
        )
        .await
        .unwrap();
    let s = store.stats().await.unwrap();
    assert_eq!((s.hosts, s.hosts_with_updates), (3, 2));
    let sev = |x: Severity| s.by_severity.iter().find(|(k, _)| *k == x).map(|(_, n)| *n);
    assert_eq!(
        sev(Severity::Security),
        Some(1),
        "the reconciled openssl row is closed"
    );
    assert_eq!(sev(Severity::Important), Some(1));
    assert_eq!(sev(Severity::Normal), Some(31));
    assert_eq!(sev(Severity::Low), Some(1));
    let st = |x: UpdateStatus| s.by_status.iter().find(|(k, _)| *k == x).map(|(_, n)| *n);
    assert_eq!(st(UpdateStatus::Pending), Some(34));
    assert_eq!(st(UpdateStatus::Reconciled), Some(1));
    assert_eq!(st(UpdateStatus::Installed), Some(0));
}

pub async fn events_filter_checksums_and_purge(store: S) {
    let (ha, _, _) = approved_host(&store, "ev-a", vec![apt("x", "1", "2")]).await;
    let a = ha.id;
    let b = host(&store, "ev-b").await;
    let corr = CorrelationId::new();
    let appended = store
        .append_event(NewEvent {
            event_type: "user.login".into(),
            subject: format!("host/{}", b.id),
            actor: admin(),
            correlation: Some(corr),
            causation: None,
            payload: json!({ "ip": "127.0.0.1", "n": 1, "nested": { "z": 1, "a": [1, 2] } }),
        })
        .await
        .unwrap();
    assert_eq!(appended.actor, "user:admin");
    let all = store.events(&EventFilter::default()).await.unwrap();
    assert!(all.len() > 5);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    for e in &all {
        let again = events::checksum_parts(
            e.id,
            e.ts,
            &e.event_type,
            &e.subject,
            &e.actor,
            e.correlation_id,
            e.causation_id,
            &e.payload,
        );
        assert_eq!(again, e.checksum, "checksum of {} {}", e.event_type, e.id);
    }
    let of_a = store
        .events(&EventFilter {
            host_id: Some(a),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        !of_a.is_empty()
            && of_a
                .iter()
                .all(|e| e.subject.starts_with(&format!("host/{a}")))
    );
    let of_b = store
        .events(&EventFilter {
            host_id: Some(b.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        of_b.iter().any(|e| e.id == appended.id),
        "append_event stores host_id from a `host/{{id}}…` subject so the host filter finds it"
    );
    let by_corr = store
        .events(&EventFilter {
            correlation_id: Some(corr),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        by_corr.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![appended.id]
    );
    let after = store
        .events(&EventFilter {
            after: Some(all[2].seq),
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        after.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![all[3].seq, all[4].seq]
    );

    assert_eq!(
        store
            .purge_events(Utc::now() - Duration::hours(1))
            .await
            .unwrap(),
        0
    );
    let purged = store
        .purge_events(Utc::now() + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(purged as usize, all.len());
    assert!(store
        .events(&EventFilter::default())
        .await
        .unwrap()
        .is_empty());
}

pub async fn idempotency_keys(store: S) {
    assert!(store
        .idempotent_response("user:admin", "k1")
        .await
        .unwrap()
        .is_none());
    let body = json!({ "approved": 3, "ids": ["a", "b"] });
    store
        .save_idempotent_response("user:admin", "k1", "req-hash", &body, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        store.idempotent_response("user:admin", "k1").await.unwrap(),
        Some(("req-hash".to_string(), body.clone()))
    );
    assert!(matches!(
        store
            .save_idempotent_response("user:admin", "k1", "other", &body, Utc::now())
            .await,
        Err(StoreError::Conflict(_))
    ));
    // Keys are per actor.
    assert!(store
        .idempotent_response("user:bob", "k1")
        .await
        .unwrap()
        .is_none());
    store
        .save_idempotent_response("user:bob", "k1", "h", &json!(null), Utc::now())
        .await
        .unwrap();
}

/// An approval under an `Idempotency-Key` is checked and saved in its own transaction: two
/// requests with one key at once approve once, the other gets the same answer; another
/// body with the key is refused; nothing approved saves nothing.
pub async fn approve_once_is_one_transaction(store: S) {
    let h = host(&store, "idem").await;
    store
        .ingest_report(h.id, report(many("p", 3)), &Actor::Agent(h.id))
        .await
        .unwrap();
    let ids: Vec<_> = store
        .list_updates(&by_host(h.id))
        .await
        .unwrap()
        .items
        .iter()
        .map(|u| u.id)
        .collect();
    let key = |hash: &str| canopy_store::IdempotencyKey {
        actor: "user:admin".into(),
        key: "approve-1".into(),
        request_hash: hash.into(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (s, ids, k) = (store.clone(), ids.clone(), key("body-a"));
        tasks.spawn(async move {
            s.approve_updates_once(&k, &ids, CorrelationId::new(), 300, &admin())
                .await
                .expect("approve once")
        });
    }
    let (mut fresh, mut replayed) = (Vec::new(), Vec::new());
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            canopy_store::Idempotent::Fresh(o) => fresh.push(o),
            canopy_store::Idempotent::Replayed(v) => replayed.push(v),
        }
    }
    assert_eq!(fresh.len(), 1, "exactly one request approved");
    assert_eq!(replayed.len(), 3);
    let answer = serde_json::to_value(canopy_store::approve_response(
        &fresh[0],
        fresh[0].approved[0].correlation_id.unwrap(),
    ))
    .unwrap();
    assert!(
        replayed.iter().all(|v| *v == answer),
        "{replayed:?} vs {answer}"
    );
    assert_eq!(
        store.list_commands(h.id, 10).await.unwrap().len(),
        1,
        "one dry-run, not four"
    );
    assert!(matches!(
        store
            .approve_updates_once(&key("body-b"), &ids, CorrelationId::new(), 300, &admin())
            .await,
        Err(StoreError::Conflict(_))
    ));
    // Nothing approvable: nothing saved, the key stays free.
    let other = canopy_store::IdempotencyKey {
        key: "approve-2".into(),
        ..key("body-c")
    };
    let out = store
        .approve_updates_once(&other, &ids, CorrelationId::new(), 300, &admin())
        .await
        .unwrap();
    assert!(matches!(out, canopy_store::Idempotent::Fresh(ref o) if o.approved.is_empty()));
    assert!(store
        .idempotent_response("user:admin", "approve-2")
        .await
        .unwrap()
        .is_none());
}
