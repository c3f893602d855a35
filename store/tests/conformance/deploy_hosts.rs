//! Hosts of agent delivery: a deploy token bound to a guest attaches the host that
//! registers with it, the server's agentless hosts (inserted, refreshed, never able to
//! authenticate, turned into agent hosts by a later registration), and `run_as`.

use super::inventory::*;
use super::support::*;
use canopy_api_types::hosts::{EventFilter, HostState};
use canopy_api_types::{GuestId, HostId};
use canopy_store::{events, GuestRecord, NewHost, StoreError, AGENTLESS_CREDENTIAL};
use chrono::{Duration, SubsecRound, Utc};
use sha2::{Digest, Sha256};

/// A cluster `home` with guests 101 (`ct-101`) and 102 (`ct-102`) on pve1.
async fn two_guests(store: &S) -> (GuestRecord, GuestRecord) {
    let home = cluster(store, "home").await;
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
    let gs = guests_of(store, home.id).await;
    (gs[0].clone(), gs[1].clone())
}

/// Register `facts(name)` with a new one-seat token bound to `guest`.
async fn register_for(store: &S, guest: Option<GuestId>, name: &str, machine: &str) -> HostId {
    let hash = format!("tok-{name}-{}", uuid::Uuid::new_v4());
    let mut t = token(&hash, 1, Duration::hours(1));
    t.guest_id = guest;
    let created = store.create_registration_token(t, &admin()).await.unwrap();
    assert_eq!(created.guest_id, guest);
    let new = NewHost {
        id: HostId::new(),
        facts: canopy_api_types::agent::HostFacts {
            machine_id: machine.into(),
            run_as: "canopy-agent".into(),
            ..facts(name)
        },
        credential_hash: format!("cred-{name}"),
        reenrol: None,
    };
    store
        .register_host(&hash, new, Utc::now())
        .await
        .unwrap()
        .id
}

async fn attached_to(store: &S, guest: GuestId) -> Option<HostId> {
    store
        .inventory()
        .await
        .unwrap()
        .guests
        .into_iter()
        .find(|g| g.id == guest)
        .and_then(|g| g.host_id)
}

pub async fn guest_bound_token_attaches_the_registered_host(store: S) {
    let (g1, g2) = two_guests(&store).await;
    let listed = store.list_registration_tokens().await.unwrap();
    assert!(listed.iter().all(|t| t.guest_id.is_none()));

    let h = register_for(&store, Some(g1.id), "agent-one", "machine-one").await;
    assert_eq!(attached_to(&store, g1.id).await, Some(h));
    assert_eq!(store.guest_of_host(h).await.unwrap(), Some(g1.id));
    let got = store.get_host(h).await.unwrap().unwrap();
    assert_eq!(
        (got.agentless, got.run_as.as_str()),
        (false, "canopy-agent")
    );
    let tokens = store.list_registration_tokens().await.unwrap();
    assert_eq!(tokens[0].guest_id, Some(g1.id));

    // The attachment is recorded like an explicit one, by the agent, in the same
    // transaction as the registration (right after it).
    let evs = store
        .events(&EventFilter {
            host_id: Some(h),
            ..Default::default()
        })
        .await
        .unwrap();
    let types: Vec<_> = evs.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, vec![events::HOST_REGISTERED, events::HOST_ATTACHED]);
    let attached = &evs[1];
    assert_eq!(attached.guest_id, Some(g1.id));
    assert_eq!(attached.subject, "cluster/home/node/pve1/lxc/101");
    assert_eq!(attached.actor, format!("agent:{h}"));
    assert_eq!(attached.payload["match"], "registration_token");

    // Another guest's token with the same machine-id (a clone of one template) is another
    // host: it does not take the first one away from its guest; both are flagged.
    let clone = register_for(&store, Some(g2.id), "agent-one", "machine-one").await;
    assert_ne!(clone, h);
    assert_eq!(attached_to(&store, g1.id).await, Some(h));
    assert_eq!(attached_to(&store, g2.id).await, Some(clone));
    for id in [h, clone] {
        assert!(
            store
                .get_host(id)
                .await
                .unwrap()
                .unwrap()
                .duplicate_machine_id
        );
    }
    // The deploy's token for g1 again (a repair) re-enrols g1's host.
    let repaired = register_for(&store, Some(g1.id), "agent-one", "machine-one").await;
    assert_eq!(repaired, h);

    // A token for an unknown guest is refused; a removed guest takes its tokens along.
    let mut t = token("ghost", 1, Duration::hours(1));
    t.guest_id = Some(GuestId::new());
    assert!(matches!(
        store.create_registration_token(t, &admin()).await,
        Err(StoreError::NotFound(_))
    ));
    let mut t = token("for-g1", 1, Duration::hours(1));
    t.guest_id = Some(g1.id);
    store.create_registration_token(t, &admin()).await.unwrap();
    let home = store.cluster_by_name("home").await.unwrap().unwrap();
    store
        .apply_discovery(pass(home.id, at(1), &["pve1"], vec![g2.row.clone()]))
        .await
        .unwrap();
    let new = NewHost {
        id: HostId::new(),
        facts: facts("late"),
        credential_hash: "cred-late".into(),
        reenrol: None,
    };
    assert!(matches!(
        store.register_host("for-g1", new, Utc::now()).await,
        Err(StoreError::TokenUnknown)
    ));
}

pub async fn token_without_guest_attaches_nothing(store: S) {
    // A token without a guest attaches nothing, even when a guest has the host's name.
    let (g1, _) = two_guests(&store).await;
    let h = register_for(&store, None, "ct-101", "machine-101").await;
    assert_eq!(attached_to(&store, g1.id).await, None);
    assert!(events_of_type(&store, events::HOST_ATTACHED)
        .await
        .is_empty());
    assert_eq!(
        store.get_host(h).await.unwrap().unwrap().run_as,
        "canopy-agent"
    );
}

pub async fn agentless_host_is_added_refreshed_and_cannot_authenticate(store: S) {
    let (g1, _) = two_guests(&store).await;
    let t0 = Utc::now().trunc_subsecs(6);
    let mut f = facts("ct-101");
    f.run_as = String::new();
    let h = store.upsert_agentless_host(g1.id, &f, t0).await.unwrap();
    assert!(h.agentless);
    assert_eq!(h.hostname, "ct-101");
    assert_eq!(h.last_seen, Some(t0));
    assert_eq!(attached_to(&store, g1.id).await, Some(h.id));
    let evs = store
        .events(&EventFilter {
            host_id: Some(h.id),
            ..Default::default()
        })
        .await
        .unwrap();
    let types: Vec<_> = evs.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        vec![events::HOST_AGENTLESS_ADDED, events::HOST_ATTACHED]
    );
    assert_eq!(evs[0].guest_id, Some(g1.id));
    assert_eq!(evs[0].actor, "system");
    assert_eq!(evs[0].payload["guest_id"], serde_json::json!(g1.id));
    assert_eq!(evs[1].payload["match"], "agentless");

    // Its credential can never equal an agent credential's SHA-256 hex.
    let (_, hash) = store.host_credential(h.id).await.unwrap().unwrap();
    assert_eq!(hash, AGENTLESS_CREDENTIAL);
    assert!(!hash.chars().all(|c| c.is_ascii_hexdigit()));
    for secret in ["", "!agentless", "agentless", "secret"] {
        assert_ne!(hex::encode(Sha256::digest(secret.as_bytes())), hash);
    }

    // A later scan refreshes the facts and last_seen; no new host, no new event.
    let t1 = t0 + Duration::minutes(5);
    let mut f2 = f.clone();
    f2.kernel = "6.9".into();
    let again = store.upsert_agentless_host(g1.id, &f2, t1).await.unwrap();
    assert_eq!(again.id, h.id);
    assert_eq!((again.kernel.as_str(), again.last_seen), ("6.9", Some(t1)));
    assert!(again.agentless);
    assert_eq!(store.list_hosts().await.unwrap().len(), 1);
    assert_eq!(
        store
            .events(&EventFilter {
                host_id: Some(h.id),
                ..Default::default()
            })
            .await
            .unwrap()
            .len(),
        2
    );

    // Its updates go through the ordinary ingest.
    store
        .ingest_report(h.id, report(many("pkg", 3)), &canopy_store::Actor::System)
        .await
        .unwrap();
    assert_eq!(
        store.get_host(h.id).await.unwrap().unwrap().pending_updates,
        3
    );

    // An unknown guest adds nothing.
    let mut other = facts("nowhere");
    other.machine_id = "machine-nowhere".into();
    assert!(matches!(
        store
            .upsert_agentless_host(GuestId::new(), &other, t1)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.list_hosts().await.unwrap().len(), 1);
}

pub async fn registration_turns_an_agentless_host_into_an_agent_host(store: S) {
    let (g1, _) = two_guests(&store).await;
    let f = facts("ct-101");
    let h = store
        .upsert_agentless_host(g1.id, &f, Utc::now())
        .await
        .unwrap();
    store
        .ingest_report(h.id, report(many("pkg", 2)), &canopy_store::Actor::System)
        .await
        .unwrap();

    let id = register_for(&store, Some(g1.id), "ct-101", &f.machine_id).await;
    assert_eq!(id, h.id, "the agent takes over the agentless host's id");
    let got = store.get_host(h.id).await.unwrap().unwrap();
    assert!(!got.agentless);
    assert_eq!(got.run_as, "canopy-agent");
    assert_eq!(got.pending_updates, 2, "its updates are kept");
    let (_, cred) = store.host_credential(h.id).await.unwrap().unwrap();
    assert_eq!(cred, "cred-ct-101");
    assert_eq!(store.list_hosts().await.unwrap().len(), 1);
    assert_eq!(attached_to(&store, g1.id).await, Some(h.id));
    let reenrolled = events_of_type(&store, events::HOST_REENROLLED).await;
    assert_eq!(reenrolled.len(), 1);
    assert_eq!(reenrolled[0].payload["was_agentless"], true);
    // Already attached there: no second attachment.
    assert_eq!(events_of_type(&store, events::HOST_ATTACHED).await.len(), 1);
}

pub async fn agentless_upsert_leaves_an_agent_host_untouched(store: S) {
    let (g1, g2) = two_guests(&store).await;
    let id = register_for(&store, Some(g1.id), "web", "machine-web").await;
    let before = store.host_credential(id).await.unwrap().unwrap();
    let events_before = all_events(&store).await.len();

    // The guest's own agent host is returned unchanged.
    let mut f = facts("renamed-by-pct");
    f.machine_id = "machine-web".into();
    let got = store
        .upsert_agentless_host(g1.id, &f, Utc::now() + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(got, before.0, "returned unchanged");
    assert_eq!(store.host_credential(id).await.unwrap().unwrap(), before);
    assert_eq!(all_events(&store).await.len(), events_before);

    // Agentless hosts are keyed by the guest, not by machine-id: a clone in another guest
    // is a host of its own, and the agent's host stays where it is.
    let other = store
        .upsert_agentless_host(g2.id, &f, Utc::now() + Duration::hours(1))
        .await
        .unwrap();
    assert_ne!(other.id, id);
    assert!(other.agentless && other.duplicate_machine_id);
    assert_eq!(
        store.host_credential(id).await.unwrap().unwrap().1,
        before.1
    );
    assert_eq!(attached_to(&store, g1.id).await, Some(id));
    assert_eq!(attached_to(&store, g2.id).await, Some(other.id));
}

pub async fn touch_host_stores_run_as(store: S) {
    let h = host(&store, "db").await;
    assert_eq!((h.run_as.as_str(), h.agentless), ("root", false));
    let mut f = facts("db");
    f.run_as = "canopy-agent".into();
    store.touch_host(h.id, &f, Utc::now()).await.unwrap();
    let listed = store.list_hosts().await.unwrap();
    assert_eq!(listed[0].run_as, "canopy-agent");
    assert!(!listed[0].agentless);
}

pub async fn retired_hosts_keep_history_and_their_guest_goes_back_to_agentless(store: S) {
    let (g1, g2) = two_guests(&store).await;
    let id = register_for(&store, Some(g1.id), "web", "machine-web").await;
    store
        .ingest_report(id, report(many("pkg", 2)), &canopy_store::Actor::Agent(id))
        .await
        .unwrap();
    let events_before = store
        .events(&EventFilter {
            host_id: Some(id),
            ..Default::default()
        })
        .await
        .unwrap()
        .len();

    // Uninstalling the agent archives its host: credential revoked, detached, history kept.
    let archived = store
        .retire_host(id, HostState::Archived, &admin(), Utc::now())
        .await
        .unwrap();
    assert_eq!(archived.state, HostState::Archived);
    let (_, cred) = store.host_credential(id).await.unwrap().unwrap();
    assert!(
        cred.starts_with('!'),
        "a retired credential never authenticates: {cred}"
    );
    assert_eq!(attached_to(&store, g1.id).await, None);
    assert_eq!(store.guest_of_host(id).await.unwrap(), None);
    let evs = store
        .events(&EventFilter {
            host_id: Some(id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        evs.len(),
        events_before + 1,
        "nothing of its history is lost"
    );
    assert_eq!(evs.last().unwrap().event_type, events::HOST_ARCHIVED);
    assert_eq!(evs.last().unwrap().guest_id, Some(g1.id));
    assert!(matches!(
        store
            .retire_host(id, HostState::Deleted, &admin(), Utc::now())
            .await,
        Err(StoreError::Conflict(_))
    ));
    // The guest is scanned agentless again: a new agentless host, attached to it.
    let f = facts("web");
    let agentless = store
        .upsert_agentless_host(g1.id, &f, Utc::now())
        .await
        .unwrap();
    assert_ne!(agentless.id, id);
    assert!(agentless.agentless);
    assert_eq!(attached_to(&store, g1.id).await, Some(agentless.id));
    assert_eq!(
        store.guest_of_host(agentless.id).await.unwrap(),
        Some(g1.id)
    );

    // An agent host registered through hostname matching later replaces the agentless one,
    // which is archived (one host per guest).
    let replacement = register_for(&store, None, "web2", "machine-web2").await;
    store
        .attach_host(g1.id, replacement, &admin())
        .await
        .unwrap();
    let old = store.get_host(agentless.id).await.unwrap().unwrap();
    assert_eq!(old.state, HostState::Archived);

    // Deleting a host: not listed any more, still readable with its history.
    let other = register_for(&store, Some(g2.id), "db", "machine-db").await;
    store
        .retire_host(other, HostState::Deleted, &admin(), Utc::now())
        .await
        .unwrap();
    assert!(store
        .list_hosts()
        .await
        .unwrap()
        .iter()
        .all(|h| h.id != other));
    assert_eq!(
        store.get_host(other).await.unwrap().unwrap().state,
        HostState::Deleted
    );
    assert!(matches!(
        store
            .retire_host(HostId::new(), HostState::Deleted, &admin(), Utc::now())
            .await,
        Err(StoreError::NotFound(_))
    ));
}
