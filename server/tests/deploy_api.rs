//! The deploy API without the lab: who may deploy, and pinned host keys of IPv6 nodes. Nothing
//! here connects anywhere but to the test server on 127.0.0.1.

mod common;

use canopy_api_types::deploy::SshHostKey;
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
