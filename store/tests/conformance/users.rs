//! Users, refresh tokens, registration tokens and host enrolment.

use super::support::*;
use canopy_api_types::auth::Role;
use canopy_api_types::{HostId, UserId};
use canopy_store::{NewHost, StoreError};
use chrono::{Duration, Utc};

pub async fn users_create_lookup_and_conflict(store: S) {
    assert_eq!(store.count_users().await.unwrap(), 0);
    let u = store
        .create_user("alice", "$argon2id$hash", Role::Admin, &admin())
        .await
        .unwrap();
    assert_eq!(u.username, "alice");
    assert_eq!(u.role, Role::Admin);
    assert_eq!(store.count_users().await.unwrap(), 1);
    let found = store.user_by_name("alice").await.unwrap().expect("alice");
    assert_eq!(found.user, u);
    assert!(!found.user.disabled);
    assert_eq!(found.password_hash, "$argon2id$hash");
    assert_eq!(
        store.user_by_id(u.id).await.unwrap().map(|r| r.user),
        Some(u.clone())
    );
    assert!(store.user_by_name("bob").await.unwrap().is_none());

    match store
        .create_user("alice", "other", Role::Viewer, &admin())
        .await
    {
        Err(StoreError::Conflict(msg)) => {
            assert!(msg.contains("alice"), "message names the user: {msg}")
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.count_users().await.unwrap(), 1);

    store
        .set_password("alice", "$argon2id$new", &admin())
        .await
        .unwrap();
    assert_eq!(
        store
            .user_by_name("alice")
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "$argon2id$new"
    );
    assert!(matches!(
        store.set_password("nobody", "x", &admin()).await,
        Err(StoreError::NotFound(_))
    ));
    store.ping().await.unwrap();
}

pub async fn refresh_tokens_rotate_refuse_and_purge(store: S) {
    let u = store
        .create_user("carol", "h", Role::Operator, &admin())
        .await
        .unwrap();
    let now = Utc::now();
    store
        .insert_refresh_token(u.id, "r1", now + Duration::days(30), 0)
        .await
        .unwrap();
    let got = store
        .rotate_refresh_token("r1", "r2", now + Duration::days(30), now)
        .await
        .unwrap();
    assert_eq!(got.map(|r| r.user), Some(u.clone()));
    // The old token is revoked by the rotation: it cannot be used twice.
    assert_eq!(
        store
            .rotate_refresh_token("r1", "r3", now + Duration::days(30), now)
            .await
            .unwrap(),
        None
    );
    // Unknown token.
    assert_eq!(
        store
            .rotate_refresh_token("nope", "r4", now + Duration::days(30), now)
            .await
            .unwrap(),
        None
    );
    // Expired token (checked against `now`).
    store
        .insert_refresh_token(u.id, "old", now + Duration::minutes(1), 0)
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate_refresh_token(
                "old",
                "r5",
                now + Duration::days(1),
                now + Duration::minutes(2)
            )
            .await
            .unwrap(),
        None
    );
    // Unknown user.
    assert!(matches!(
        store
            .insert_refresh_token(UserId::new(), "orphan", now + Duration::days(1), 0)
            .await,
        Err(StoreError::NotFound(_))
    ));
    // Revoked token.
    assert!(store.revoke_refresh_token("r2").await.unwrap());
    assert!(!store.revoke_refresh_token("never-existed").await.unwrap());
    assert_eq!(
        store
            .rotate_refresh_token("r2", "r6", now + Duration::days(1), now)
            .await
            .unwrap(),
        None
    );
    // A live token survives the purge; revoked (r1, r2) and expired (old) ones go.
    store
        .insert_refresh_token(u.id, "live", now + Duration::days(30), 0)
        .await
        .unwrap();
    let purged = store
        .purge_refresh_tokens(Utc::now() + Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(purged, 3);
    let again = store
        .rotate_refresh_token("live", "live2", now + Duration::days(30), Utc::now())
        .await
        .unwrap();
    assert_eq!(again.map(|r| r.user.username), Some("carol".to_string()));
}

pub async fn registration_token_seats_and_refusals(store: S) {
    let t = store
        .create_registration_token(token("two", 2, Duration::hours(1)), &admin())
        .await
        .unwrap();
    assert_eq!((t.seats, t.seats_used, t.revoked), (2, 0, false));
    let reg = |name: &str| NewHost {
        id: HostId::new(),
        facts: facts(name),
        credential_hash: format!("cred-{name}"),
        reenrol: None,
    };
    store
        .register_host("two", reg("a"), Utc::now())
        .await
        .unwrap();
    store
        .register_host("two", reg("b"), Utc::now())
        .await
        .unwrap();
    assert!(matches!(
        store.register_host("two", reg("c"), Utc::now()).await,
        Err(StoreError::NoSeats)
    ));
    let listed = store.list_registration_tokens().await.unwrap();
    assert_eq!(
        listed.iter().find(|x| x.id == t.id).map(|x| x.seats_used),
        Some(2)
    );

    store
        .create_registration_token(token("short", 5, Duration::minutes(1)), &admin())
        .await
        .unwrap();
    assert!(matches!(
        store
            .register_host("short", reg("d"), Utc::now() + Duration::minutes(2))
            .await,
        Err(StoreError::TokenExpired)
    ));
    assert!(matches!(
        store.register_host("unknown", reg("e"), Utc::now()).await,
        Err(StoreError::TokenUnknown)
    ));
    assert_eq!(store.list_hosts().await.unwrap().len(), 2);
}

pub async fn reenrol_same_machine_keeps_host_id(store: S) {
    let first = host(&store, "web").await;
    let (_, first_cred) = store.host_credential(first.id).await.unwrap().unwrap();
    store
        .create_registration_token(token("again", 3, Duration::hours(1)), &admin())
        .await
        .unwrap();
    // A registration token and a copied machine-id do not take over a host: a new host,
    // both flagged, the first one's credential untouched.
    let clone = store
        .register_host(
            "again",
            NewHost {
                id: HostId::new(),
                facts: facts("web"),
                credential_hash: "cred-clone".into(),
                reenrol: None,
            },
            Utc::now(),
        )
        .await
        .unwrap();
    assert_ne!(clone.id, first.id, "a machine-id is not a key");
    assert!(clone.duplicate_machine_id);
    let first_now = store.get_host(first.id).await.unwrap().unwrap();
    assert!(first_now.duplicate_machine_id);
    let (_, cred) = store.host_credential(first.id).await.unwrap().unwrap();
    assert_eq!(cred, first_cred);
    assert_eq!(store.list_hosts().await.unwrap().len(), 2);
    // The agent that proved the first host's credential re-enrols it: same id.
    let mut f = facts("web");
    f.agent_version = "0.2.0".into();
    let again = store
        .register_host(
            "again",
            NewHost {
                id: HostId::new(),
                facts: f,
                credential_hash: "cred-new".into(),
                reenrol: Some(first.id),
            },
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.agent_version, "0.2.0");
    let (_, cred) = store.host_credential(first.id).await.unwrap().unwrap();
    assert_eq!(cred, "cred-new");
    let events = store
        .events(&canopy_api_types::hosts::EventFilter {
            host_id: Some(first.id),
            ..Default::default()
        })
        .await
        .unwrap();
    let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        vec![
            canopy_store::events::HOST_REGISTERED,
            canopy_store::events::HOST_REENROLLED
        ]
    );
    assert_eq!(events[1].payload["how"], "credential");
    // Deleting the clone clears the flag; a deleted host cannot be re-enrolled.
    store
        .retire_host(
            clone.id,
            canopy_api_types::hosts::HostState::Deleted,
            &admin(),
            Utc::now(),
        )
        .await
        .unwrap();
    assert!(
        !store
            .get_host(first.id)
            .await
            .unwrap()
            .unwrap()
            .duplicate_machine_id
    );
    assert_eq!(
        store.list_hosts().await.unwrap().len(),
        1,
        "deleted hosts are not listed"
    );
    let refused = store
        .register_host(
            "again",
            NewHost {
                id: HostId::new(),
                facts: facts("web"),
                credential_hash: "cred-x".into(),
                reenrol: Some(clone.id),
            },
            Utc::now(),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
}

pub async fn touch_host_and_report_hash(store: S) {
    let h = host(&store, "db").await;
    assert_eq!(store.report_hash(h.id).await.unwrap(), None);
    let mut f = facts("db-renamed");
    f.machine_id = "machine-db".into();
    f.kernel = "6.9".into();
    let at = Utc::now() + Duration::seconds(5);
    store.touch_host(h.id, &f, at).await.unwrap();
    let got = store.get_host(h.id).await.unwrap().unwrap();
    assert_eq!(got.hostname, "db-renamed");
    assert_eq!(got.kernel, "6.9");
    assert_eq!(
        got.last_seen.map(|t| t.timestamp_micros()),
        Some(at.timestamp_micros())
    );
    assert!(matches!(
        store.touch_host(HostId::new(), &f, at).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(store.get_host(HostId::new()).await.unwrap().is_none());

    let r = report(vec![apt("curl", "1", "2")]);
    let hash = r.report_hash.clone();
    store
        .ingest_report(h.id, r, &canopy_store::Actor::Agent(h.id))
        .await
        .unwrap();
    assert_eq!(store.report_hash(h.id).await.unwrap(), Some(hash));
    assert!(store
        .get_host(h.id)
        .await
        .unwrap()
        .unwrap()
        .last_report
        .is_some());
}
