//! The client address behind a reverse proxy and the limits it feeds, through the real
//! HTTP API: `X-Forwarded-For` is believed only from `trusted_proxies`; logins are limited
//! per client address and per user name; agent registrations count only when they fail.
//! (The buckets live in the server's memory, so one backend is enough.)

mod common;

use canopy_api_types::agent::RegisterRequest;
use canopy_api_types::auth::{CreateUserRequest, LoginRequest, Role};
use canopy_api_types::hosts::EventFilter;
use common::*;

/// A login from the client `forwarded_for` (sent as `X-Forwarded-For`); the status.
async fn login_from(app: &TestApp, forwarded_for: &str, username: &str, password: &str) -> u16 {
    http()
        .post(format!("{}/api/v1/auth/login", app.base))
        .header("x-forwarded-for", forwarded_for)
        .json(&LoginRequest {
            username: username.into(),
            password: password.into(),
        })
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn create(app: &TestApp, name: &str) {
    app.admin
        .create_user(&CreateUserRequest {
            username: name.into(),
            password: format!("{name}-password"),
            role: Role::Viewer,
        })
        .await
        .unwrap();
}

/// The `ip` of the newest `user.login` event of `name`.
async fn login_ip(app: &TestApp, name: &str) -> String {
    let events = app.admin.events(&EventFilter::default()).await.unwrap();
    events
        .iter()
        .rev()
        .find(|e| e.event_type == "user.login" && e.subject == format!("user/{name}"))
        .and_then(|e| e.payload["ip"].as_str().map(String::from))
        .expect("a login event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_attacker_locks_out_neither_other_users_nor_other_addresses() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.auth_attempts_per_minute = 5;
        s.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await
    .unwrap();
    for name in ["alice", "bob", "carol"] {
        create(&app, name).await;
    }
    // Many failed logins for alice from one address, all through the same proxy.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(login_from(&app, "203.0.113.5", "alice", "guess-guess").await);
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert_eq!(&statuses[5..], &[429; 5], "{statuses:?}");
    // bob, from another address behind the same proxy, logs in.
    assert_eq!(
        login_from(&app, "203.0.113.9", "bob", "bob-password").await,
        200
    );
    assert_eq!(login_ip(&app, "bob").await, "203.0.113.9");
    // Successful logins never use up a bucket.
    for _ in 0..8 {
        assert_eq!(
            login_from(&app, "203.0.113.9", "bob", "bob-password").await,
            200
        );
    }

    // A spray across user names from one address is stopped by the address's bucket.
    let mut spray = Vec::new();
    for i in 0..8 {
        spray.push(login_from(&app, "198.51.100.7", &format!("user{i}"), "password1").await);
    }
    assert_eq!(&spray[..5], &[401; 5], "{spray:?}");
    assert_eq!(&spray[5..], &[429; 3], "{spray:?}");
    let resp = http()
        .post(format!("{}/api/v1/auth/login", app.base))
        .header("x-forwarded-for", "198.51.100.7")
        .json(&LoginRequest {
            username: "carol".into(),
            password: "wrong-password".into(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let body: canopy_api_types::ApiError = resp.json().await.unwrap();
    assert!(
        body.message.contains("from 198.51.100.7"),
        "{}",
        body.message
    );

    // Guesses at one name from many addresses are stopped by the name's bucket.
    let mut spread = Vec::new();
    for i in 0..7 {
        spread.push(login_from(&app, &format!("192.0.2.{i}"), "carol", "guess-guess").await);
    }
    assert_eq!(&spread[..5], &[401; 5], "{spread:?}");
    assert_eq!(&spread[5..], &[429; 2], "{spread:?}");
    let resp = http()
        .post(format!("{}/api/v1/auth/login", app.base))
        .header("x-forwarded-for", "192.0.2.99")
        .json(&LoginRequest {
            username: "carol".into(),
            password: "guess-guess".into(),
        })
        .send()
        .await
        .unwrap();
    let body: canopy_api_types::ApiError = resp.json().await.unwrap();
    assert!(body.message.contains("for user carol"), "{}", body.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
    // Nothing trusted (the default): the header is the client's own claim.
    let app = spawn_app_with(Backend::Sqlite, |s| s.auth_attempts_per_minute = 3)
        .await
        .unwrap();
    create(&app, "bob").await;
    for i in 0..3 {
        let status = login_from(&app, &format!("203.0.113.{i}"), "nobody", "guess-guess").await;
        assert_eq!(status, 401);
    }
    // A new forwarded address does not buy new attempts: the peer is the client.
    assert_eq!(
        login_from(&app, "203.0.113.200", "bob", "bob-password").await,
        429
    );

    // Trusted: only the peer in the list is believed, and the right-most untrusted hop wins.
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.trusted_proxies = vec!["10.0.0.0/8".into(), "127.0.0.1".into()]
    })
    .await
    .unwrap();
    create(&app, "bob").await;
    let status = login_from(
        &app,
        "192.0.2.1, 203.0.113.44, 10.1.2.3",
        "bob",
        "bob-password",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(login_ip(&app, "bob").await, "203.0.113.44");
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.trusted_proxies = vec!["10.0.0.0/8".into()]
    })
    .await
    .unwrap();
    create(&app, "bob").await;
    assert_eq!(
        login_from(&app, "203.0.113.44", "bob", "bob-password").await,
        200
    );
    assert_eq!(login_ip(&app, "bob").await, "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_registrations_are_not_throttled_and_failures_are() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.auth_attempts_per_minute = 3)
        .await
        .unwrap();
    let token = app.registration_token(20).await;
    // A deploy enrols 16 guests at once from one address.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (anon, token) = (app.anon.clone(), token.clone());
        set.spawn(async move {
            anon.register(&RegisterRequest {
                registration_token: token,
                facts: facts(&format!("guest{i}")),
                current_token: None,
            })
            .await
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap()
            .expect("a registration with a valid token is not throttled");
    }
    // Failed registrations count, and once used up the address waits.
    let bad = |i: u32| RegisterRequest {
        registration_token: "canopy-reg-guessed".into(),
        facts: facts(&format!("bad{i}")),
        current_token: None,
    };
    for i in 0..3 {
        let status = app.anon.register(&bad(i)).await.unwrap_err().status();
        assert_eq!(status, Some(401));
    }
    let err = app.anon.register(&bad(3)).await.unwrap_err();
    assert_eq!(err.status(), Some(429), "{err}");
    assert!(err.to_string().contains("too many attempts"), "{err}");
    // Registrations are not in the login bucket.
    app.anon.login("admin", ADMIN_PASSWORD).await.unwrap();
}
