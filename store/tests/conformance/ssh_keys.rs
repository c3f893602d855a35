//! SSH host keys pinned on first use: the first key pinned for an address stays (even
//! when several connections race to pin one), forgetting it lets the next one pin.

use super::inventory::events_of_type;
use super::support::*;
use canopy_api_types::deploy::SshHostKey;
use canopy_store::events;
use chrono::{Duration, SubsecRound, Utc};

fn key(address: &str, fingerprint: &str) -> SshHostKey {
    SshHostKey {
        address: address.into(),
        key_type: "ssh-ed25519".into(),
        fingerprint: fingerprint.into(),
        first_seen: Utc::now().trunc_subsecs(6),
    }
}

pub async fn pin_keeps_the_first_key(store: S) {
    assert_eq!(store.host_key("pve1:22").await.unwrap(), None);
    let first = key("pve1:22", "SHA256:first");
    assert_eq!(store.pin_host_key(&first, &admin()).await.unwrap(), first);
    assert_eq!(
        store.host_key("pve1:22").await.unwrap(),
        Some(first.clone())
    );

    let mut second = key("pve1:22", "SHA256:second");
    second.key_type = "ssh-rsa".into();
    second.first_seen = first.first_seen + Duration::minutes(1);
    let pinned = store.pin_host_key(&second, &admin()).await.unwrap();
    assert_eq!(pinned, first, "the older key stays; the caller compares");
    assert_eq!(
        store.host_key("pve1:22").await.unwrap(),
        Some(first.clone())
    );

    let pinned_events = events_of_type(&store, events::SSH_HOST_KEY_PINNED).await;
    assert_eq!(
        pinned_events.len(),
        1,
        "an event only when a key was pinned"
    );
    assert_eq!(pinned_events[0].subject, "ssh_host_key/pve1:22");
    assert_eq!(pinned_events[0].actor, "user:admin");
    assert_eq!(pinned_events[0].payload["fingerprint"], "SHA256:first");

    let other = key("10.0.0.5:2222", "SHA256:other");
    store.pin_host_key(&other, &admin()).await.unwrap();
    let listed = store.list_host_keys().await.unwrap();
    assert_eq!(listed, vec![other, first], "by address");
}

pub async fn forget_then_pin_again(store: S) {
    let old = key("ct-101:22", "SHA256:old");
    store.pin_host_key(&old, &admin()).await.unwrap();
    assert!(store.forget_host_key("ct-101:22", &admin()).await.unwrap());
    assert_eq!(store.host_key("ct-101:22").await.unwrap(), None);
    assert!(!store.forget_host_key("ct-101:22", &admin()).await.unwrap());
    let forgotten = events_of_type(&store, events::SSH_HOST_KEY_FORGOTTEN).await;
    assert_eq!(forgotten.len(), 1);
    assert_eq!(forgotten[0].payload["fingerprint"], "SHA256:old");

    let new = key("ct-101:22", "SHA256:new");
    assert_eq!(store.pin_host_key(&new, &admin()).await.unwrap(), new);
    assert_eq!(store.list_host_keys().await.unwrap(), vec![new]);
    assert_eq!(
        events_of_type(&store, events::SSH_HOST_KEY_PINNED)
            .await
            .len(),
        2
    );
}

pub async fn concurrent_pins_agree_on_one_key(store: S) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            let k = key("race:22", &format!("SHA256:key-{i}"));
            store.pin_host_key(&k, &canopy_store::Actor::System).await
        });
    }
    let mut seen = Vec::new();
    while let Some(r) = tasks.join_next().await {
        seen.push(r.unwrap().unwrap());
    }
    let stored = store.host_key("race:22").await.unwrap().unwrap();
    assert!(seen.iter().all(|k| *k == stored), "{seen:?}");
    assert_eq!(
        events_of_type(&store, events::SSH_HOST_KEY_PINNED)
            .await
            .len(),
        1
    );
}
