//! Pure planning of one discovery pass against a cluster's stored guests, shared by both
//! backends: which id each observed guest keeps or gets, which rows go, and which guest
//! each event is linked to. The backends only turn the plan into bulk SQL.
//!
//! Rules (the conformance suite pins them):
//! - A guest's identity is `(cluster, vmid)` and its kind: the same vmid and kind on
//!   another node keeps its id. A vmid that comes back with another kind is another guest
//!   (PVE frees a vmid when its guest is destroyed): the old row goes, a new one comes.
//! - PVE never lists a vmid (or a node) twice; if a pass does, the last one wins (one
//!   upsert must not touch a row twice).
//! - An event's `vmid` links it to the observed guest of that vmid, else to the stored one;
//!   a `guest_removed` event links to the stored guest first (the one that went away).

use crate::common::{micros, prepare_event, PreparedEvent};
use crate::inventory::{DiscoveryWrite, GuestRow, NodeRow};
use crate::{events, Actor, NewEvent};
use canopy_api_types::GuestId;
use std::collections::{HashMap, HashSet};

/// A guest row as loaded for planning.
#[derive(Debug, Clone)]
pub(crate) struct StoredGuest {
    pub id: GuestId,
    pub vmid: u32,
    pub kind: String,
}

#[derive(Debug)]
pub(crate) struct DiscoveryPlan {
    /// Observed nodes, one per name.
    pub nodes: Vec<NodeRow>,
    /// Observed guests, one per vmid, with the id each keeps (stored) or gets (new).
    pub guests: Vec<(GuestId, GuestRow)>,
    /// Stored guests not observed again (or observed with another kind).
    pub delete: Vec<GuestId>,
    /// The pass's events, stamped `at`, actor `system`, linked to their guests.
    pub events: Vec<PreparedEvent>,
}

/// Keep the last of each key, in first-seen order.
fn last_per_key<T, K: std::hash::Hash + Eq>(items: Vec<T>, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut at: HashMap<K, usize> = HashMap::with_capacity(items.len());
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        match at.get(&key(&item)) {
            Some(&i) => out[i] = item,
            None => {
                at.insert(key(&item), out.len());
                out.push(item);
            }
        }
    }
    out
}

pub(crate) fn plan(stored: Vec<StoredGuest>, write: DiscoveryWrite) -> DiscoveryPlan {
    let at = micros(write.at);
    let nodes = last_per_key(write.nodes, |n| n.name.clone());
    let observed = last_per_key(write.guests, |g| g.vmid);
    let old: HashMap<u32, StoredGuest> = stored.into_iter().map(|s| (s.vmid, s)).collect();

    let guests: Vec<(GuestId, GuestRow)> = observed
        .into_iter()
        .map(|g| match old.get(&g.vmid) {
            Some(s) if s.kind == g.kind => (s.id, g),
            _ => (GuestId::new(), g),
        })
        .collect();
    let kept: HashSet<GuestId> = guests.iter().map(|(id, _)| *id).collect();
    let mut delete: Vec<GuestId> = old
        .values()
        .map(|s| s.id)
        .filter(|id| !kept.contains(id))
        .collect();
    delete.sort_by_key(|id| id.0);

    let now: HashMap<u32, GuestId> = guests.iter().map(|(id, g)| (g.vmid, *id)).collect();
    let events = write
        .events
        .into_iter()
        .map(|e| {
            let stored = |v: &u32| old.get(v).map(|s| s.id);
            let current = |v: &u32| now.get(v).copied();
            let guest = e.vmid.and_then(|v| {
                if e.event_type == events::GUEST_REMOVED {
                    stored(&v).or_else(|| current(&v))
                } else {
                    current(&v).or_else(|| stored(&v))
                }
            });
            let ev = NewEvent {
                event_type: e.event_type,
                subject: e.subject,
                actor: Actor::System,
                correlation: None,
                causation: None,
                payload: e.payload,
            };
            prepare_event(ev, None, at).with_guest(guest)
        })
        .collect();
    DiscoveryPlan {
        nodes,
        guests,
        delete,
        events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::InventoryEvent;
    use canopy_api_types::ClusterId;
    use chrono::Utc;

    fn guest(kind: &str, vmid: u32, node: &str) -> GuestRow {
        GuestRow {
            kind: kind.into(),
            vmid,
            node: node.into(),
            name: format!("g{vmid}"),
            status: "running".into(),
            template: false,
            tags: vec![],
        }
    }

    fn event(event_type: &str, vmid: u32) -> InventoryEvent {
        InventoryEvent {
            event_type: event_type.into(),
            subject: format!("x/{vmid}"),
            vmid: Some(vmid),
            payload: serde_json::json!({}),
        }
    }

    fn write(guests: Vec<GuestRow>, events: Vec<InventoryEvent>) -> DiscoveryWrite {
        DiscoveryWrite {
            cluster_id: ClusterId::new(),
            at: Utc::now(),
            standalone: false,
            nodes: vec![],
            guests,
            events,
        }
    }

    #[test]
    fn ids_are_kept_by_vmid_and_kind() {
        let (a, b, c) = (GuestId::new(), GuestId::new(), GuestId::new());
        let stored = vec![
            StoredGuest {
                id: a,
                vmid: 100,
                kind: "lxc".into(),
            },
            StoredGuest {
                id: b,
                vmid: 101,
                kind: "lxc".into(),
            },
            StoredGuest {
                id: c,
                vmid: 102,
                kind: "vm".into(),
            },
        ];
        let p = plan(
            stored,
            write(
                vec![
                    guest("lxc", 100, "pve2"),
                    guest("vm", 101, "pve1"),
                    guest("lxc", 103, "pve1"),
                ],
                vec![
                    event("guest_moved", 100),
                    event("guest_removed", 101),
                    event("guest_added", 101),
                    event("guest_removed", 102),
                    event("guest_added", 103),
                ],
            ),
        );
        assert_eq!(p.guests[0].0, a, "moved guest keeps its id");
        let new_101 = p.guests[1].0;
        assert_ne!(new_101, b, "vmid reused with another kind is a new guest");
        let mut gone = vec![b, c];
        gone.sort_by_key(|id| id.0);
        assert_eq!(p.delete, gone);
        let links: Vec<_> = p.events.iter().map(|e| e.guest_id).collect();
        assert_eq!(
            links,
            vec![
                Some(a),
                Some(b),
                Some(new_101),
                Some(c),
                Some(p.guests[2].0)
            ]
        );
        assert!(p.events.iter().all(|e| e.event.actor == Actor::System));
    }

    #[test]
    fn repeated_vmid_or_node_keeps_the_last() {
        let mut w = write(
            vec![guest("lxc", 100, "pve1"), guest("lxc", 100, "pve2")],
            vec![],
        );
        w.nodes = vec![
            NodeRow {
                name: "pve1".into(),
                status: "online".into(),
                ip: None,
                error: None,
            },
            NodeRow {
                name: "pve1".into(),
                status: "offline".into(),
                ip: None,
                error: None,
            },
        ];
        let p = plan(vec![], w);
        assert_eq!(p.guests.len(), 1);
        assert_eq!(p.guests[0].1.node, "pve2");
        assert_eq!(p.nodes.len(), 1);
        assert_eq!(p.nodes[0].status, "offline");
    }
}
