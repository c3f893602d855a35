//! Auth and bad input through the real HTTP API: every refusal names what was wrong.

mod common;

use canopy_api_types::agent::{CheckinRequest, RegisterRequest};
use canopy_api_types::auth::{CreateRegistrationToken, CreateUserRequest, Role};
use canopy_api_types::client::{Client, ClientError};
use common::*;

fn api_error(e: ClientError) -> (u16, String, String) {
    match e {
        ClientError::Api { status, error } => (status, error.code, error.message),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn wrong_password_and_bad_tokens_are_401_with_a_clear_message() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let (status, code, msg) = api_error(
        app.anon
            .login("admin", "not the password")
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
    assert!(msg.contains("wrong username or password"), "{msg}");

    let (status, _, msg) = api_error(app.anon.hosts().await.unwrap_err());
    assert_eq!(status, 401);
    assert!(msg.contains("Authorization"), "{msg}");

    let forged = app.anon.clone().with_token("eyJhbGciOiJIUzI1NiJ9.e30.AAAA");
    let (status, _, msg) = api_error(forged.hosts().await.unwrap_err());
    assert_eq!(status, 401);
    assert!(msg.contains("invalid"), "{msg}");

    // An agent token never opens a UI route, and a user JWT never opens an agent route.
    let agent = app.enrol("h1").await;
    let (status, _, _) = api_error(agent.client.hosts().await.unwrap_err());
    assert_eq!(status, 401);
    let req = CheckinRequest {
        facts: facts("x"),
        report_hash: None,
        wait_secs: 0,
        connecting: false,
    };
    let (status, _, msg) = api_error(app.admin.checkin(&req).await.unwrap_err());
    assert_eq!(status, 401);
    assert!(msg.contains("agent token"), "{msg}");
}

#[tokio::test]
async fn expired_access_token_is_401_expired_and_refresh_rotates() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.access_token_ttl_secs = 1)
        .await
        .unwrap();
    let pair = app.anon.login("admin", ADMIN_PASSWORD).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(8)).await; // past the 1 s TTL and the 5 s leeway
    let stale = app.anon.clone().with_token(pair.access_token.clone());
    let (status, _, msg) = api_error(stale.hosts().await.unwrap_err());
    assert_eq!(status, 401);
    assert!(msg.contains("expired"), "{msg}");

    let fresh = app.anon.refresh(&pair.refresh_token).await.unwrap();
    assert_ne!(fresh.refresh_token, pair.refresh_token);
    app.anon
        .clone()
        .with_token(fresh.access_token)
        .hosts()
        .await
        .unwrap();
    // The old refresh token was rotated away.
    let (status, _, msg) = api_error(app.anon.refresh(&pair.refresh_token).await.unwrap_err());
    assert_eq!(status, 401);
    assert!(msg.contains("refresh token"), "{msg}");
    // Logout revokes.
    app.anon.logout(&fresh.refresh_token).await.unwrap();
    assert_eq!(
        app.anon
            .refresh(&fresh.refresh_token)
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );
}

#[tokio::test]
async fn roles_are_enforced() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/api/v1/users", app.base))
        .bearer_auth(admin_token(&app).await)
        .json(&CreateUserRequest {
            username: "vera".into(),
            password: "viewer-password".into(),
            role: Role::Viewer,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let viewer = app.anon.clone().with_token(
        app.anon
            .login("vera", "viewer-password")
            .await
            .unwrap()
            .access_token,
    );
    viewer.hosts().await.unwrap();
    let (status, code, msg) = api_error(
        viewer
            .approve(vec![canopy_api_types::UpdateId::new()])
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    assert!(msg.contains("operator"), "{msg}");
    let req = CreateRegistrationToken {
        label: String::new(),
        seats: 1,
        expires_in_secs: 60,
    };
    assert_eq!(
        viewer
            .create_registration_token(&req)
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
}

async fn admin_token(app: &TestApp) -> String {
    app.anon
        .login("admin", ADMIN_PASSWORD)
        .await
        .unwrap()
        .access_token
}

#[tokio::test]
async fn registration_token_seats_and_unknown_tokens() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let token = app.registration_token(1).await;
    let reg = |t: String, name: &str| RegisterRequest {
        registration_token: t,
        facts: facts(name),
        current_token: None,
    };
    app.anon.register(&reg(token.clone(), "one")).await.unwrap();
    let (status, code, msg) = api_error(app.anon.register(&reg(token, "two")).await.unwrap_err());
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    assert!(msg.contains("no seats"), "{msg}");
    let (status, _, msg) = api_error(
        app.anon
            .register(&reg("canopy-reg-nope".into(), "three"))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 401);
    assert!(msg.contains("not known"), "{msg}");
}

#[tokio::test]
async fn malformed_json_is_400_naming_the_field() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let http = reqwest::Client::new();
    let token = admin_token(&app).await;
    let resp = http
        .post(format!("{}/api/v1/updates/approve", app.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"idz": []}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: canopy_api_types::ApiError = resp.json().await.unwrap();
    assert_eq!(body.code, "validation");
    assert!(
        body.message.contains("missing field `ids`"),
        "{}",
        body.message
    );

    let resp = http
        .post(format!("{}/api/v1/updates/approve", app.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"ids": ["not-a-uuid"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: canopy_api_types::ApiError = resp.json().await.unwrap();
    assert!(body.message.contains("ids"), "{}", body.message);

    let resp = http
        .post(format!("{}/api/v1/auth/login", app.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn login_is_rate_limited() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.auth_attempts_per_minute = 3)
        .await
        .unwrap();
    // spawn_app logged in once already.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            app.anon
                .login("admin", "wrong password")
                .await
                .unwrap_err()
                .status()
                .unwrap(),
        );
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
}

#[tokio::test]
async fn approve_honours_idempotency_keys() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let agent = app.enrol("idem").await;
    agent
        .report(vec![serde_json::to_value(package("vim", false)).unwrap()])
        .await;
    let id = app.admin.updates(&Default::default()).await.unwrap().items[0].id;
    let http = reqwest::Client::new();
    let token = admin_token(&app).await;
    let send = |body: serde_json::Value| {
        http.post(format!("{}/api/v1/updates/approve", app.base))
            .bearer_auth(&token)
            .header("idempotency-key", "approve-vim-1")
            .json(&body)
            .send()
    };
    let first: serde_json::Value = send(serde_json::json!({ "ids": [id] }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second: serde_json::Value = send(serde_json::json!({ "ids": [id] }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first, second, "the same key returns the first answer");
    let other = send(serde_json::json!({ "ids": [canopy_api_types::UpdateId::new()] }))
        .await
        .unwrap();
    assert_eq!(other.status(), 409);
}

/// `GET /api/v1/openapi.json` serves the committed `docs/openapi.json`, an OpenAPI 3.0
/// document with schemas (`cargo xtask check` also compares the two).
#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let served: serde_json::Value = reqwest::get(format!("{}/api/v1/openapi.json", app.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = format!(
        "{}/../docs/openapi.json",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")
    );
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("docs/openapi.json")).unwrap();
    assert!(
        served == committed,
        "docs/openapi.json is not what the server serves: run `cargo xtask openapi` and commit it"
    );
    let doc: openapiv3::OpenAPI = serde_json::from_value(served).expect("an OpenAPI 3.0 document");
    let login = doc.paths.paths["/api/v1/auth/login"]
        .as_item()
        .and_then(|p| p.post.as_ref())
        .expect("POST /api/v1/auth/login");
    assert!(login.request_body.is_some(), "requests have schemas");
    assert!(doc.components.unwrap().schemas.contains_key("TokenPair"));
}

#[tokio::test]
async fn healthz_is_ok() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let resp = reqwest::get(format!("{}/healthz", app.base)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = Client::new(http(), app.base.clone());
}
