//! Accounts, sessions and registration tokens through the real HTTP API, on both backends:
//! every revocation takes effect at once and every refusal says why.

mod common;

use canopy_api_types::agent::RegisterRequest;
use canopy_api_types::auth::{CreateUserRequest, Role, TokenPair};
use canopy_api_types::client::{Client, ClientError};
use canopy_api_types::hosts::EventFilter;
use common::*;

fn api_error(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, error } => (status, error.message),
        other => panic!("expected an API error, got {other}"),
    }
}

/// Creates `name` with `role` (password `{name}-password`) and logs them in.
async fn user(app: &TestApp, name: &str, role: Role) -> TokenPair {
    app.admin
        .create_user(&CreateUserRequest {
            username: name.into(),
            password: format!("{name}-password"),
            role,
        })
        .await
        .unwrap();
    login(app, name).await
}

async fn login(app: &TestApp, name: &str) -> TokenPair {
    app.anon
        .login(name, &format!("{name}-password"))
        .await
        .unwrap()
}

fn as_user(app: &TestApp, pair: &TokenPair) -> Client {
    app.anon.clone().with_token(pair.access_token.clone())
}

async fn revoked_registration_token_is_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let token = app.registration_token(5).await;
    let reg = |name: &str| RegisterRequest {
        registration_token: token.clone(),
        facts: facts(name),
        current_token: None,
    };
    let first = app.anon.register(&reg("before")).await.unwrap();
    let listed = app.admin.registration_tokens().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].seats_used, listed[0].revoked), (1, false));
    let viewer = as_user(&app, &user(&app, "vic", Role::Viewer).await);
    assert_eq!(
        viewer
            .revoke_registration_token(listed[0].id)
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );

    let revoked = app
        .admin
        .revoke_registration_token(listed[0].id)
        .await
        .unwrap();
    assert!(revoked.revoked && revoked.revoked_at.is_some());
    let (status, msg) = api_error(app.anon.register(&reg("after")).await.unwrap_err());
    assert_eq!(status, 401);
    assert!(msg.contains("registration token was revoked"), "{msg}");
    assert!(app.admin.registration_tokens().await.unwrap()[0].revoked);
    // The host enrolled before keeps its own credential.
    let agent = Client::new(http(), app.base.clone()).with_token(first.agent_token);
    agent
        .upload_report(&canopy_api_types::agent::ReportUpload {
            report_hash: "h".into(),
            reboot_required: false,
            scanned_at: chrono::Utc::now(),
            scanner_errors: vec![],
            updates: vec![],
            containers: None,
        })
        .await
        .unwrap();
    let events = app.admin.events(&EventFilter::default()).await.unwrap();
    let ev = events
        .iter()
        .find(|e| e.event_type == "registration_token.revoked")
        .expect("revocation event");
    assert_eq!(ev.actor, "user:admin");
}

async fn disabled_user_is_refused_everywhere(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let olive = user(&app, "olive", Role::Operator).await;
    let before = as_user(&app, &olive);
    before.hosts().await.unwrap();

    let change = app.admin.disable_user("olive").await.unwrap();
    assert_eq!(change.revoked_refresh_tokens, 1);
    assert_eq!(change.user.map(|u| u.disabled), Some(true));
    // The access token issued before the disable stops working at once.
    let (status, msg) = api_error(before.hosts().await.unwrap_err());
    assert_eq!(status, 403);
    assert!(msg.contains("olive is disabled"), "{msg}");
    let (status, msg) = api_error(app.anon.refresh(&olive.refresh_token).await.unwrap_err());
    assert_eq!(status, 401);
    assert!(msg.contains("disabled"), "{msg}");
    let (status, msg) = api_error(app.anon.login("olive", "olive-password").await.unwrap_err());
    assert_eq!(status, 403);
    assert!(msg.contains("olive is disabled"), "{msg}");
    // A wrong password says nothing about the account.
    let (status, msg) = api_error(app.anon.login("olive", "wrong!!!!").await.unwrap_err());
    assert_eq!(status, 401);
    assert!(msg.contains("wrong username or password"), "{msg}");
    let users = app.admin.users().await.unwrap();
    assert!(users.iter().any(|u| u.username == "olive" && u.disabled));

    app.admin.enable_user("olive").await.unwrap();
    as_user(&app, &login(&app, "olive").await)
        .hosts()
        .await
        .unwrap();
}

async fn deleted_user_is_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let dora = user(&app, "dora", Role::Operator).await;
    let change = app.admin.delete_user("dora").await.unwrap();
    assert_eq!((change.user, change.revoked_refresh_tokens), (None, 1));
    let (status, msg) = api_error(as_user(&app, &dora).hosts().await.unwrap_err());
    assert_eq!(status, 401);
    assert!(msg.contains("dora no longer exists"), "{msg}");
    let (status, msg) = api_error(app.anon.refresh(&dora.refresh_token).await.unwrap_err());
    assert_eq!(status, 401);
    assert!(msg.contains("deleted"), "{msg}");
    let (status, _) = api_error(app.anon.login("dora", "dora-password").await.unwrap_err());
    assert_eq!(status, 401);
    let (status, msg) = api_error(app.admin.delete_user("dora").await.unwrap_err());
    assert_eq!(status, 404);
    assert!(msg.contains("dora"), "{msg}");
}

async fn demoted_admin_loses_admin_routes_at_once(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let ada = user(&app, "ada", Role::Admin).await;
    let before = as_user(&app, &ada);
    before.users().await.unwrap();
    let change = app.admin.set_role("ada", Role::Operator).await.unwrap();
    assert_eq!(change.user.map(|u| u.role), Some(Role::Operator));
    let (status, msg) = api_error(before.users().await.unwrap_err());
    assert_eq!(status, 401);
    assert!(msg.contains("session of ada was ended"), "{msg}");
    let again = login(&app, "ada").await;
    assert_eq!(again.user.role, Role::Operator);
    let (status, msg) = api_error(as_user(&app, &again).users().await.unwrap_err());
    assert_eq!(status, 403);
    assert!(msg.contains("needs the admin role"), "{msg}");

    // The last enabled admin stays: a clear 409, and nothing changes.
    for r in [
        app.admin.set_role("admin", Role::Viewer).await,
        app.admin.disable_user("admin").await,
        app.admin.delete_user("admin").await,
    ] {
        let (status, msg) = api_error(r.unwrap_err());
        assert_eq!(status, 409);
        assert!(msg.contains("admin is the last enabled admin"), "{msg}");
    }
    app.admin.users().await.unwrap();
}

async fn password_changes_end_sessions(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let first = user(&app, "pia", Role::Viewer).await;
    let second = login(&app, "pia").await;
    let me = as_user(&app, &first);
    let (status, msg) = api_error(
        me.change_own_password("not-my-password", "pia-new-password")
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);
    assert!(msg.contains("current password is wrong"), "{msg}");
    let (status, msg) = api_error(
        me.change_own_password("pia-password", "short")
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 400);
    assert!(msg.contains("at least 8"), "{msg}");

    let renewed = me
        .change_own_password("pia-password", "pia-new-password")
        .await
        .unwrap();
    for old in [&first, &second] {
        assert_eq!(
            as_user(&app, old).hosts().await.unwrap_err().status(),
            Some(401)
        );
        assert_eq!(
            app.anon
                .refresh(&old.refresh_token)
                .await
                .unwrap_err()
                .status(),
            Some(401)
        );
    }
    as_user(&app, &renewed).hosts().await.unwrap();
    assert!(app.anon.login("pia", "pia-password").await.is_err());
    app.anon.login("pia", "pia-new-password").await.unwrap();

    // An admin sets it: the user's sessions end again.
    let change = app.admin.set_password("pia", "pia-password").await.unwrap();
    assert_eq!(change.revoked_refresh_tokens, 2);
    assert_eq!(
        as_user(&app, &renewed).hosts().await.unwrap_err().status(),
        Some(401)
    );
    login(&app, "pia").await;
}

async fn logout_all_ends_every_session(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let a = user(&app, "lou", Role::Operator).await;
    let b = login(&app, "lou").await;
    let other = user(&app, "max", Role::Operator).await;
    let change = as_user(&app, &a).logout_all().await.unwrap();
    assert_eq!(change.revoked_refresh_tokens, 2);
    for s in [&a, &b] {
        let (status, msg) = api_error(as_user(&app, s).hosts().await.unwrap_err());
        assert_eq!(status, 401);
        assert!(msg.contains("log in again"), "{msg}");
        assert_eq!(
            app.anon
                .refresh(&s.refresh_token)
                .await
                .unwrap_err()
                .status(),
            Some(401)
        );
    }
    // Another user's session is untouched.
    as_user(&app, &other).hosts().await.unwrap();
    app.anon.refresh(&other.refresh_token).await.unwrap();
}

async fn users_created_over_http_name_the_admin(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    user(&app, "nia", Role::Viewer).await;
    let events = app.admin.events(&EventFilter::default()).await.unwrap();
    let created = events
        .iter()
        .find(|e| e.event_type == "user.created" && e.subject == "user/nia")
        .expect("user.created for nia");
    assert_eq!(created.actor, "user:admin");
    let listed: Vec<_> = app
        .admin
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.username, u.role))
        .collect();
    assert_eq!(
        listed,
        vec![("admin".into(), Role::Admin), ("nia".into(), Role::Viewer)]
    );
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite { use super::*; $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(Backend::Sqlite).await } )* }
        mod postgres { use super::*; $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(Backend::Postgres).await } )* }
    };
}

on_both_backends!(
    revoked_registration_token_is_refused,
    disabled_user_is_refused_everywhere,
    deleted_user_is_refused,
    demoted_admin_loses_admin_routes_at_once,
    password_changes_end_sessions,
    logout_all_ends_every_session,
    users_created_over_http_name_the_admin,
);
