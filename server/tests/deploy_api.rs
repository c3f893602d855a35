//! The deploy API without the lab: who may deploy, and pinned host keys of IPv6 nodes. Nothing
//! here connects anywhere but to the test server on 127.0.0.1.

mod common;

use canopy_api_types::auth::{CreateUserRequest, Role};
use canopy_api_types::client::{Client, ClientError};
use canopy_api_types::deploy::{DeployAction, DeployRequest, SshHostKey};
use common::*;

#[tokio::test]
async fn ipv6_host_keys_are_pinned_shown_and_forgotten_by_their_canonical_address() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    // A pin as a deploy to `[deploy.nodes] "home/pve1" = "2001:db8::10"` records it.
    let store = canopy_store::open(&app.settings.database_url)
        .await
        .unwrap();
    let address = canopy_server::deploy::address::SshAddress::parse("2001:db8::10")
        .unwrap()
        .to_string();
    assert_eq!(address, "[2001:db8::10]:22");
    store
        .pin_host_key(
            &SshHostKey {
                address: address.clone(),
                key_type: "ssh-ed25519".into(),
                fingerprint: "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU".into(),
                first_seen: chrono::Utc::now(),
            },
            &canopy_store::Actor::System,
        )
        .await
        .unwrap();
    let shown: Vec<_> = app
        .admin
        .host_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.address)
        .collect();
    assert_eq!(shown, ["[2001:db8::10]:22"]);
    // Typed as the settings have it (no brackets, no port), the pin is still found.
    let out = app.admin.forget_host_key("2001:db8::10").await.unwrap();
    assert_eq!(out["forgotten"], "[2001:db8::10]:22");
    assert!(app.admin.host_keys().await.unwrap().is_empty());
    let err = app
        .admin
        .forget_host_key("[2001:db8::10]:22")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no pinned host key for [2001:db8::10]:22"),
        "{err}"
    );
}

/// A logged-in user of `role`.
async fn user(app: &TestApp, name: &str, role: Role) -> Client {
    let admin = app.anon.login("admin", ADMIN_PASSWORD).await.unwrap();
    let resp = http()
        .post(format!("{}/api/v1/users", app.base))
        .bearer_auth(admin.access_token)
        .json(&CreateUserRequest {
            username: name.into(),
            password: format!("{name}-password"),
            role,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let pair = app
        .anon
        .login(name, &format!("{name}-password"))
        .await
        .unwrap();
    app.anon.clone().with_token(pair.access_token)
}

/// A server whose deploys have an agent binary to push (a selector matching no guest never
/// pushes it) and no clusters, so an allowed deploy is a recorded operation with no item.
async fn deploy_app(operators_may_deploy: bool) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("canopy-agent");
    std::fs::write(&agent, [b"\x7fELF".as_slice(), &[0u8; 60]].concat()).unwrap();
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.deploy.agent_binary = Some(agent);
        s.deploy.operators_may_deploy = operators_may_deploy;
    })
    .await
    .unwrap();
    (app, dir)
}

fn request(action: DeployAction) -> DeployRequest {
    DeployRequest {
        selector: "cluster/home/**".into(),
        action,
    }
}

fn refusal(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, error } => (status, error.message),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn deploying_agents_is_for_admins_unless_operators_are_let_in() {
    let (app, _dir) = deploy_app(false).await;
    let operator = user(&app, "olga", Role::Operator).await;
    for action in [DeployAction::Deploy, DeployAction::Uninstall] {
        let (status, message) = refusal(operator.deploy(&request(action)).await.unwrap_err());
        assert_eq!(status, 403, "{message}");
        assert!(
            message.contains("needs the admin role; olga has operator"),
            "{message}"
        );
        assert!(message.contains("operators_may_deploy = true"), "{message}");
        let op = app.admin.deploy(&request(action)).await.unwrap();
        assert_eq!(op.created_by, "user:admin");
    }
    // Agentless scans only read: operators keep them.
    assert!(operator
        .agentless_scan("cluster/home/**")
        .await
        .unwrap()
        .is_empty());
    // The route table says who may deploy.
    let doc: serde_json::Value = reqwest::get(format!("{}/api/v1/openapi.json", app.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let deploy = &doc["paths"]["/api/v1/agents/deploy"]["post"];
    assert_eq!(deploy["x-canopy-role"], "admin", "{deploy}");
    assert_eq!(
        deploy["x-canopy-operators-if"],
        "deploy.operators_may_deploy"
    );
    let scan = &doc["paths"]["/api/v1/agents/agentless-scan"]["post"];
    assert_eq!(scan["x-canopy-role"], "operator", "{scan}");
}

#[tokio::test]
async fn operators_may_deploy_when_the_setting_lets_them_viewers_never() {
    let (app, _dir) = deploy_app(true).await;
    let operator = user(&app, "olga", Role::Operator).await;
    for action in [DeployAction::Deploy, DeployAction::Uninstall] {
        let op = operator.deploy(&request(action)).await.unwrap();
        assert_eq!(op.created_by, "user:olga");
    }
    let viewer = user(&app, "vera", Role::Viewer).await;
    let (status, message) = refusal(
        viewer
            .deploy(&request(DeployAction::Deploy))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403, "{message}");
    assert!(
        message.contains("needs the operator role; vera has viewer"),
        "{message}"
    );
}
