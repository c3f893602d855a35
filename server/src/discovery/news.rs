//! What changed in the in-memory tree, pushed to whoever follows it (`GET /tree/events`,
//! the web UI's live tree; docs/design.md §7.2). Only while someone listens: [`News`] is
//! gathered by [`super::live::Live`] as it applies changes (a guest shown differently, an
//! error, a pass that added or removed vertices, a rebuild), and one pump task per
//! [`Discovery`] settles the tree a short while after a change (so a burst of check-ins is
//! one message) or when an agent's time runs out, and broadcasts it. Nobody listening: no
//! pump, nothing gathered, the tree settles at its next read as before.
//!
//! A message costs the change, not the estate: the changed vertices and their ancestors as
//! one-vertex views (`depth=0`: their facts, rollups and `child_count`), and the vertices
//! whose children changed, for the client to reload those children if it shows them.

use super::Discovery;
use canopy_api_types::clusters::TreeReload;
use canopy_inventory::{Inventory, PathId};
use chrono::Utc;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// How long the pump waits after a change before it settles: changes in that time go out
/// as one message (and the tree is copied at most this often for a reader holding it).
const GATHER: Duration = Duration::from_millis(200);

/// Changes gathered since the last message.
#[derive(Debug, Default)]
pub(super) struct News {
    /// Vertices shown differently in place (their ancestors' rollups follow).
    pub(super) changed: BTreeSet<PathId>,
    /// Vertices whose children were added, removed or moved.
    pub(super) reshaped: BTreeSet<PathId>,
    /// The whole tree was rebuilt.
    pub(super) all: bool,
}

impl News {
    pub(super) fn is_empty(&self) -> bool {
        !self.all && self.changed.is_empty() && self.reshaped.is_empty()
    }
}

/// One server-sent event of the tree stream: its name and its JSON data.
#[derive(Debug, Clone)]
pub struct TreeEvent {
    pub name: &'static str,
    pub data: String,
}

impl TreeEvent {
    /// Reload everything shown (a rebuild, or a follower that fell behind).
    pub fn reload_all() -> TreeEvent {
        TreeEvent::reload(&TreeReload {
            all: true,
            parents: Vec::new(),
        })
    }

    fn reload(r: &TreeReload) -> TreeEvent {
        TreeEvent {
            name: "reload",
            data: serde_json::to_string(r).expect("a reload serialises"),
        }
    }
}

/// The events `news` becomes, written from `inv` (the settled tree).
pub(super) fn events(inv: &Inventory, news: &News) -> Vec<TreeEvent> {
    if news.all {
        return vec![TreeEvent::reload_all()];
    }
    let mut shown: BTreeSet<PathId> = BTreeSet::new();
    for id in news.changed.iter().chain(&news.reshaped) {
        let mut at = Some(id.clone());
        while let Some(p) = at {
            if !shown.insert(p.clone()) {
                break; // its ancestors are in already
            }
            at = p.parent();
        }
    }
    let views: Vec<_> = shown
        .iter()
        .filter_map(|id| inv.view(id, Some(0)))
        .collect();
    let mut out = Vec::new();
    if !views.is_empty() {
        out.push(TreeEvent {
            name: "vertices",
            data: serde_json::to_string(&views).expect("tree views serialise"),
        });
    }
    if !news.reshaped.is_empty() {
        out.push(TreeEvent::reload(&TreeReload {
            all: false,
            parents: news.reshaped.iter().map(ToString::to_string).collect(),
        }));
    }
    out
}

impl Discovery {
    /// Follow the tree's changes; starts the pump if none runs.
    pub fn subscribe(self: &Arc<Self>) -> broadcast::Receiver<Arc<Vec<TreeEvent>>> {
        let rx = self.news.subscribe();
        self.live().listening = true;
        if !self.pumping.swap(true, Ordering::SeqCst) {
            tokio::spawn(self.clone().pump());
        }
        rx
    }

    /// Settles and broadcasts after each change while anyone listens; ends when nobody does.
    async fn pump(self: Arc<Self>) {
        loop {
            if self.news.receiver_count() == 0 {
                {
                    let mut live = self.live();
                    live.listening = false;
                    live.news = News::default();
                }
                self.pumping.store(false, Ordering::SeqCst);
                // One that subscribed meanwhile found the pump running: take over.
                if self.news.receiver_count() == 0 || self.pumping.swap(true, Ordering::SeqCst) {
                    return;
                }
                self.live().listening = true;
            }
            let next = self.live().next_deadline();
            let until = next
                .and_then(|d| (d - Utc::now()).to_std().ok())
                .unwrap_or(Duration::from_secs(if next.is_some() { 0 } else { 30 }));
            tokio::select! {
                _ = self.stir.notified() => {}
                _ = tokio::time::sleep(until) => {}
            }
            tokio::time::sleep(GATHER).await;
            let (inv, news) = {
                let mut live = self.live();
                let inv = live.settle(Utc::now());
                (inv, std::mem::take(&mut live.news))
            };
            if news.is_empty() {
                continue;
            }
            let events = tokio::task::spawn_blocking(move || events(&inv, &news))
                .await
                .unwrap_or_else(|_| vec![TreeEvent::reload_all()]);
            if !events.is_empty() {
                let _ = self.news.send(Arc::new(events));
            }
        }
    }
}
