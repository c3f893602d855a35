//! Account lifecycle and registration-token revocation: every change that takes something
//! away revokes the user's refresh tokens and bumps their session epoch with its event, in
//! one transaction; the last enabled admin stays.

use super::support::*;
use canopy_api_types::auth::Role;
use canopy_api_types::hosts::{Event, EventFilter};
use canopy_api_types::{HostId, RegistrationTokenId, UserId};
use canopy_store::{events, NewHost, StoreError};
use chrono::{Duration, Utc};

async fn user(store: &S, name: &str, role: Role) -> canopy_api_types::auth::User {
    store
        .create_user(name, &format!("hash-{name}"), role, &admin())
        .await
        .unwrap()
}

/// Gives `user` refresh tokens named `{prefix}{i}`, at their current session epoch.
async fn refresh_tokens(store: &S, user: UserId, prefix: &str, n: usize) {
    let epoch = epoch(store, user).await;
    for i in 0..n {
        store
            .insert_refresh_token(
                user,
                &format!("{prefix}{i}"),
                Utc::now() + Duration::days(1),
                epoch,
            )
            .await
            .unwrap();
    }
}

async fn rotates(store: &S, token: &str) -> bool {
    let next = format!("{token}-next-{}", uuid::Uuid::new_v4());
    store
        .rotate_refresh_token(token, &next, Utc::now() + Duration::days(1), Utc::now())
        .await
        .unwrap()
        .is_some()
}

async fn epoch(store: &S, id: UserId) -> i64 {
    store.user_by_id(id).await.unwrap().unwrap().session_epoch
}

async fn events_about(store: &S, subject: &str) -> Vec<Event> {
    let all = store.events(&EventFilter::default()).await.unwrap();
    all.into_iter().filter(|e| e.subject == subject).collect()
}

fn types(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

pub async fn disable_ends_sessions_and_enable_lets_the_user_back(store: S) {
    let root = user(&store, "root", Role::Admin).await;
    let alice = user(&store, "alice", Role::Operator).await;
    refresh_tokens(&store, alice.id, "alice-", 2).await;
    refresh_tokens(&store, root.id, "root-", 1).await;
    let before = epoch(&store, alice.id).await;

    let change = store
        .set_user_disabled("alice", true, &admin())
        .await
        .unwrap();
    assert_eq!(change.revoked_refresh_tokens, 2);
    assert_eq!(change.user.as_ref().map(|u| u.disabled), Some(true));
    assert_eq!(epoch(&store, alice.id).await, before + 1);
    assert!(!rotates(&store, "alice-0").await, "revoked by the disable");
    assert!(
        rotates(&store, "root-0").await,
        "other users keep their sessions"
    );
    // A login that checked the password before the disable cannot store its session after
    // it: neither at the epoch it read nor at the new one.
    for e in [before, before + 1] {
        let late = store
            .insert_refresh_token(alice.id, "late", Utc::now() + Duration::days(1), e)
            .await;
        assert!(matches!(late, Err(StoreError::Conflict(_))), "{late:?}");
    }
    let listed = store.list_users().await.unwrap();
    let names: Vec<_> = listed
        .iter()
        .map(|u| (u.username.as_str(), u.disabled))
        .collect();
    assert_eq!(names, vec![("alice", true), ("root", false)]);

    // Disabling again changes nothing and writes no event.
    let again = store
        .set_user_disabled("alice", true, &admin())
        .await
        .unwrap();
    assert_eq!(again.revoked_refresh_tokens, 0);
    assert_eq!(epoch(&store, alice.id).await, before + 1);

    let enabled = store
        .set_user_disabled("alice", false, &admin())
        .await
        .unwrap();
    assert_eq!(enabled.user.map(|u| u.disabled), Some(false));
    refresh_tokens(&store, alice.id, "back-", 1).await;
    assert!(rotates(&store, "back-0").await);
    let evs = events_about(&store, "user/alice").await;
    assert_eq!(
        types(&evs),
        vec![
            events::USER_CREATED,
            events::USER_DISABLED,
            events::USER_ENABLED
        ]
    );
    assert_eq!(evs[1].payload["revoked_refresh_tokens"], 2);
    assert_eq!(evs[1].actor, "user:admin");
    assert!(matches!(
        store.set_user_disabled("nobody", true, &admin()).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn role_and_password_changes_end_sessions(store: S) {
    user(&store, "root", Role::Admin).await;
    let bob = user(&store, "bob", Role::Admin).await;
    refresh_tokens(&store, bob.id, "bob-", 3).await;
    let e0 = epoch(&store, bob.id).await;

    let change = store.set_role("bob", Role::Viewer, &admin()).await.unwrap();
    assert_eq!(change.revoked_refresh_tokens, 3);
    // A session whose login read the epoch before the change is not stored.
    let stale = store
        .insert_refresh_token(bob.id, "stale", Utc::now() + Duration::days(1), e0)
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    assert_eq!(change.user.map(|u| u.role), Some(Role::Viewer));
    assert_eq!(epoch(&store, bob.id).await, e0 + 1);
    assert!(!rotates(&store, "bob-1").await);
    // The same role again: nothing happens.
    let same = store.set_role("bob", Role::Viewer, &admin()).await.unwrap();
    assert_eq!(same.revoked_refresh_tokens, 0);
    assert_eq!(epoch(&store, bob.id).await, e0 + 1);

    refresh_tokens(&store, bob.id, "pw-", 1).await;
    let change = store
        .set_password("bob", "hash-new", &admin())
        .await
        .unwrap();
    assert_eq!(change.revoked_refresh_tokens, 1);
    let rec = store.user_by_name("bob").await.unwrap().unwrap();
    assert_eq!(rec.password_hash, "hash-new");
    assert_eq!(rec.session_epoch, e0 + 2);
    assert_eq!(rec.user.role, Role::Viewer);
    assert!(!rotates(&store, "pw-0").await);

    let evs = events_about(&store, "user/bob").await;
    assert_eq!(
        types(&evs),
        vec![
            events::USER_CREATED,
            events::USER_ROLE_CHANGED,
            events::USER_PASSWORD_SET
        ]
    );
    assert_eq!(
        (
            evs[1].payload["from"].as_str(),
            evs[1].payload["to"].as_str()
        ),
        (Some("admin"), Some("viewer"))
    );
    assert!(matches!(
        store.set_role("nobody", Role::Admin, &admin()).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.set_password("nobody", "h", &admin()).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn delete_user_removes_sessions_and_keeps_history(store: S) {
    user(&store, "root", Role::Admin).await;
    let carol = user(&store, "carol", Role::Operator).await;
    refresh_tokens(&store, carol.id, "carol-", 2).await;
    let change = store.delete_user("carol", &admin()).await.unwrap();
    assert_eq!(change.user, None);
    assert_eq!(change.revoked_refresh_tokens, 2);
    assert!(store.user_by_name("carol").await.unwrap().is_none());
    assert!(store.user_by_id(carol.id).await.unwrap().is_none());
    assert!(!rotates(&store, "carol-0").await);
    assert_eq!(
        types(&events_about(&store, "user/carol").await),
        vec![events::USER_CREATED, events::USER_DELETED]
    );
    // The name is free again, for a new user with a new id.
    let again = user(&store, "carol", Role::Viewer).await;
    assert_ne!(again.id, carol.id);
    assert!(matches!(
        store.delete_user("nobody", &admin()).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn the_last_enabled_admin_stays(store: S) {
    user(&store, "root", Role::Admin).await;
    for (what, r) in [
        (
            "disabled",
            store.set_user_disabled("root", true, &admin()).await,
        ),
        ("deleted", store.delete_user("root", &admin()).await),
        (
            "demoted",
            store.set_role("root", Role::Operator, &admin()).await,
        ),
    ] {
        match r {
            Err(StoreError::Conflict(msg)) => {
                assert!(msg.contains("root is the last enabled admin"), "{msg}");
                assert!(msg.contains(what), "{msg}");
            }
            other => panic!("{what}: expected Conflict, got {other:?}"),
        }
    }
    // Nothing was written by the refusals.
    assert_eq!(
        types(&events_about(&store, "user/root").await),
        vec![events::USER_CREATED]
    );
    user(&store, "ada", Role::Admin).await;
    store
        .set_role("root", Role::Operator, &admin())
        .await
        .unwrap();
    assert!(matches!(
        store.set_user_disabled("ada", true, &admin()).await,
        Err(StoreError::Conflict(_))
    ));
    // A disabled admin does not count as the one keeping the server administrable.
    store.set_role("root", Role::Admin, &admin()).await.unwrap();
    store
        .set_user_disabled("root", true, &admin())
        .await
        .unwrap();
    assert!(matches!(
        store.delete_user("ada", &admin()).await,
        Err(StoreError::Conflict(_))
    ));
    store.delete_user("root", &admin()).await.unwrap();
    let left: Vec<_> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.username, u.role, u.disabled))
        .collect();
    assert_eq!(left, vec![("ada".to_string(), Role::Admin, false)]);
}

/// Two admins demote each other at the same time: exactly one of them succeeds.
pub async fn concurrent_demotions_keep_one_admin(store: S) {
    for round in 0..5 {
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        user(&store, &a, Role::Admin).await;
        user(&store, &b, Role::Admin).await;
        // Earlier rounds left one admin each; demote those first so that a and b are the
        // only enabled admins.
        for u in store.list_users().await.unwrap() {
            if u.role == Role::Admin && u.username != a && u.username != b {
                store
                    .set_role(&u.username, Role::Viewer, &admin())
                    .await
                    .unwrap();
            }
        }
        let actor = admin();
        let (ra, rb) = tokio::join!(
            store.set_role(&a, Role::Operator, &actor),
            store.set_role(&b, Role::Operator, &actor)
        );
        let ok = [ra.is_ok(), rb.is_ok()];
        assert_eq!(
            ok.iter().filter(|x| **x).count(),
            1,
            "round {round}: {ra:?} / {rb:?}"
        );
        let admins = store
            .list_users()
            .await
            .unwrap()
            .into_iter()
            .filter(|u| u.role == Role::Admin && !u.disabled)
            .count();
        assert_eq!(admins, 1);
    }
}

pub async fn end_sessions_revokes_every_refresh_token(store: S) {
    let dave = user(&store, "dave", Role::Viewer).await;
    refresh_tokens(&store, dave.id, "dave-", 3).await;
    let e0 = epoch(&store, dave.id).await;
    let change = store
        .end_sessions(dave.id, &canopy_store::Actor::User("dave".into()))
        .await
        .unwrap();
    assert_eq!(change.revoked_refresh_tokens, 3);
    assert_eq!(epoch(&store, dave.id).await, e0 + 1);
    for i in 0..3 {
        assert!(!rotates(&store, &format!("dave-{i}")).await);
    }
    let evs = events_about(&store, "user/dave").await;
    assert_eq!(
        types(&evs),
        vec![events::USER_CREATED, events::USER_SESSIONS_REVOKED]
    );
    assert_eq!(evs[1].actor, "user:dave");
    assert!(matches!(
        store.end_sessions(UserId::new(), &admin()).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn revoked_registration_token_refuses_registration(store: S) {
    let t = store
        .create_registration_token(token("rev", 5, Duration::hours(1)), &admin())
        .await
        .unwrap();
    let reg = |name: &str| NewHost {
        id: HostId::new(),
        facts: facts(name),
        credential_hash: format!("cred-{name}"),
        reenrol: None,
    };
    store
        .register_host("rev", reg("a"), Utc::now())
        .await
        .unwrap();
    let revoked = store
        .revoke_registration_token(t.id, &admin())
        .await
        .unwrap();
    assert!(revoked.revoked);
    assert!(revoked.revoked_at.is_some());
    assert_eq!(revoked.seats_used, 1);
    assert!(matches!(
        store.register_host("rev", reg("b"), Utc::now()).await,
        Err(StoreError::TokenRevoked)
    ));
    // Revoking again changes nothing.
    let again = store
        .revoke_registration_token(t.id, &admin())
        .await
        .unwrap();
    assert_eq!(again.revoked_at, revoked.revoked_at);
    let listed = store.list_registration_tokens().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked);
    let evs = events_about(&store, &format!("registration_token/{}", t.id)).await;
    assert_eq!(
        types(&evs),
        vec![
            events::REGISTRATION_TOKEN_CREATED,
            events::REGISTRATION_TOKEN_REVOKED
        ]
    );
    assert_eq!(evs[1].actor, "user:admin");
    assert!(matches!(
        store
            .revoke_registration_token(RegistrationTokenId::new(), &admin())
            .await,
        Err(StoreError::NotFound(_))
    ));
    // The host registered before the revocation keeps its credential.
    assert_eq!(store.list_hosts().await.unwrap().len(), 1);
}

/// A refresh racing a password change: whichever runs first, no session outlives the
/// change (the rotated token is revoked by it, or the rotation finds the old one revoked).
pub async fn refresh_racing_a_change_never_outlives_it(store: S) {
    let eve = user(&store, "eve", Role::Operator).await;
    for round in 0..30 {
        let old = format!("eve-{round}-");
        refresh_tokens(&store, eve.id, &old, 1).await;
        let old = format!("{old}0");
        let new = format!("eve-{round}-rotated");
        let (actor, hash) = (admin(), format!("hash-{round}"));
        let (rotated, changed) = tokio::join!(
            store.rotate_refresh_token(&old, &new, Utc::now() + Duration::days(1), Utc::now()),
            store.set_password("eve", &hash, &actor)
        );
        changed.unwrap();
        if let Some(rec) = rotated.unwrap() {
            assert!(
                rec.session_epoch < epoch(&store, eve.id).await,
                "round {round}: the rotation ran first, so its epoch is the old one"
            );
        }
        assert!(
            !rotates(&store, &new).await,
            "round {round}: a session outlived the password change"
        );
    }
}
