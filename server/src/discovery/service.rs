//! The discovery service: one pass per cluster every `interval_secs` and on demand, the
//! in-memory tree every read is served from, and the PVE nodes' own apt update lists.
//!
//! A pass asks PVE twice (`/cluster/status`, `/cluster/resources`), diffs the result against
//! what the store holds with `canopy_inventory::reconcile`, and hands the new observation and
//! the changes (as events) to the store in one transaction, so the database stays the one
//! source of truth. A pass that changed something rebuilds its cluster's subtree from the
//! store (only that cluster's rows are read, here as before the diff); one that
//! changed nothing only updates the errors it shows and follows hosts it attached by name
//! ([`super::live`] keeps the tree current between passes, [`super::hosts`] feeds it what
//! agents do). A pass that fails as a whole keeps the last known tree and records the error
//! on the cluster; a node that does not answer its own requests (apt updates) gets the error
//! on its vertex while the rest refresh.

use super::containers::Docker;
use super::live::{node_error, Live};
use super::{build, connect, Target};
use crate::auth::sealed::Sealer;
use anyhow::{Context, Result};
use canopy_api_types::clusters::{DiscoveryReport, NodeError};
use canopy_api_types::{ClusterId, GuestId, HostId};
use canopy_hypervisor::{Hypervisor, PveClient};
use canopy_inventory::{reconcile, Inventory, PathId};
use canopy_store::{ClusterRecord, DiscoveryWrite, InventoryEvent, InventorySnapshot, Store};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// Nodes whose apt list is fetched at once, per cluster.
const NODE_UPDATES_AT_ONCE: usize = 16;

pub struct Discovery {
    pub(super) store: Arc<dyn Store>,
    sealer: Sealer,
    timeout: Duration,
    node_updates_every: chrono::Duration,
    offline_after: chrono::Duration,
    /// The tree and what it shows of each host (never held across an await).
    live: Mutex<Live>,
    /// Held by whatever reads the store to change the tree's shape or a host's place in it
    /// (a rebuild, a host's refresh), so that two of them never interleave.
    pub(super) structure: tokio::sync::Mutex<()>,
    /// Orders check-ins against store reads (see [`Live::refresh`]).
    tickets: AtomicU64,
    clients: Mutex<HashMap<ClusterId, Arc<PveClient>>>,
    pass_locks: Mutex<HashMap<ClusterId, Arc<tokio::sync::Mutex<()>>>>,
    wake: Notify,
    /// The tree's changes, for its followers ([`super::news`]).
    pub(super) news: tokio::sync::broadcast::Sender<Arc<Vec<super::news::TreeEvent>>>,
    /// A pump runs for them.
    pub(super) pumping: std::sync::atomic::AtomicBool,
    /// A change the pump has not settled yet.
    pub(super) stir: Notify,
}

/// The tree, locked; tells the pump when it leaves work behind.
pub(super) struct LiveGuard<'a> {
    guard: MutexGuard<'a, Live>,
    stir: &'a Notify,
}

impl std::ops::Deref for LiveGuard<'_> {
    type Target = Live;
    fn deref(&self) -> &Live {
        &self.guard
    }
}

impl std::ops::DerefMut for LiveGuard<'_> {
    fn deref_mut(&mut self) -> &mut Live {
        &mut self.guard
    }
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        if self.guard.has_news() {
            self.stir.notify_one();
        }
    }
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery").finish_non_exhaustive()
    }
}

impl Discovery {
    pub fn new(
        store: Arc<dyn Store>,
        sealer: Sealer,
        settings: &crate::settings::Settings,
    ) -> Self {
        // At least a second; at most about a century (what chrono holds with room to add).
        let offline_after = chrono::Duration::seconds(
            settings.agent_offline_after_secs.clamp(1, 3_000_000_000) as i64,
        );
        Self {
            store,
            sealer,
            timeout: Duration::from_secs(settings.pve_timeout_secs.max(1)),
            node_updates_every: chrono::Duration::seconds(
                settings.node_updates_interval_secs as i64,
            ),
            offline_after,
            live: Mutex::new(Live::empty(offline_after)),
            structure: tokio::sync::Mutex::new(()),
            tickets: AtomicU64::new(1),
            clients: Mutex::new(HashMap::new()),
            pass_locks: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            news: tokio::sync::broadcast::channel(64).0,
            pumping: std::sync::atomic::AtomicBool::new(false),
            stir: Notify::new(),
        }
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The current tree, with every change recorded since the last read shown (cheap when
    /// nothing changed: one clone of an `Arc`). A tree handed out is never changed; the
    /// next change copies it if a reader still holds it.
    pub fn tree(&self) -> Arc<Inventory> {
        self.live().settle(Utc::now())
    }

    pub(super) fn live(&self) -> LiveGuard<'_> {
        LiveGuard {
            guard: self.live.lock().unwrap_or_else(|e| e.into_inner()),
            stir: &self.stir,
        }
    }

    pub(super) fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::Relaxed)
    }

    /// The guest at `path` by its stable identity (cluster, vmid), on whatever node.
    pub fn guest_id(&self, path: &PathId) -> Option<GuestId> {
        let vmid = path.vmid()?;
        self.live().guest_id(path.cluster_name(), vmid)
    }

    /// Hosts attached to the vertices `selector` matches or to any vertex below them.
    pub fn hosts_under(&self, selector: &canopy_inventory::Selector) -> Vec<HostId> {
        let tree = self.tree();
        let mut hosts: Vec<HostId> = tree
            .select(selector)
            .iter()
            .flat_map(|id| tree.get(id).into_iter().chain(tree.descendants(id)))
            .filter_map(|v| v.host_id.as_deref()?.parse().ok())
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// Run the periodic loop now (a cluster was added).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Forget the cached client of a cluster (deleted or changed).
    pub fn forget(&self, cluster: ClusterId) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&cluster);
    }

    /// The PVE client of the cluster named `name` (bulk updates snapshot, roll back and
    /// reboot through it).
    pub async fn cluster_client(&self, name: &str) -> Result<Arc<PveClient>> {
        let record = self
            .store
            .cluster_by_name(name)
            .await?
            .with_context(|| format!("cluster {name} is not known"))?;
        self.client(&record)
    }

    fn client(&self, record: &ClusterRecord) -> Result<Arc<PveClient>> {
        if let Some(c) = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&record.id)
        {
            return Ok(c.clone());
        }
        let secret = self
            .sealer
            .open(&record.token_secret_sealed)
            .with_context(|| format!("cannot unseal the API token of cluster {}", record.name))?;
        let token = format!("{}={secret}", record.token_id).parse()?;
        let client = Arc::new(connect(&Target {
            endpoints: record.endpoints.clone(),
            token,
            fingerprints: record.fingerprints.clone(),
            ca_pem: record.ca_pem.clone(),
            timeout: self.timeout,
        })?);
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(record.id, client.clone());
        Ok(client)
    }

    fn pass_lock(&self, cluster: ClusterId) -> Arc<tokio::sync::Mutex<()>> {
        self.pass_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(cluster)
            .or_default()
            .clone()
    }

    /// One discovery pass of `record` (serialised per cluster). `force_node_updates`
    /// refreshes every node's apt list now instead of when it is due.
    pub async fn run_pass(
        &self,
        record: &ClusterRecord,
        force_node_updates: bool,
    ) -> DiscoveryReport {
        let lock = self.pass_lock(record.id);
        let _guard = lock.lock().await;
        let now = Utc::now();
        let mut report = DiscoveryReport {
            cluster: record.name.clone(),
            at: Some(now),
            ..DiscoveryReport::default()
        };
        let cluster = PathId::cluster(&record.name).ok();
        let shown = match self.pass(record, force_node_updates, &mut report).await {
            Ok(due) => {
                let node_errors = self
                    .refresh_node_updates(record, due, &mut report)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(cluster = %record.name, error = %format!("{e:#}"), "node updates refresh failed");
                        Vec::new()
                    });
                if report.changes.is_empty() {
                    // Nothing moved: the errors shown, and hosts the pass attached by name.
                    if let Some(c) = &cluster {
                        self.show_errors(c, None, node_errors);
                    }
                    match &cluster {
                        Some(c) => self.follow_name_matches(c).await,
                        None => Ok(()),
                    }
                } else {
                    self.rebuild_cluster(record).await
                }
            }
            Err(e) => {
                let msg = format!("{e:#}");
                tracing::warn!(cluster = %record.name, error = %msg, "discovery pass failed");
                if let Err(e) = self
                    .store
                    .record_discovery_error(record.id, now, &msg)
                    .await
                {
                    tracing::error!(cluster = %record.name, error = %e, "cannot record the discovery error");
                }
                if let Some(c) = &cluster {
                    self.show_errors(c, Some(msg.clone()), Vec::new());
                }
                report.error = Some(msg);
                Ok(())
            }
        };
        if let Err(e) = shown {
            tracing::error!(error = %format!("{e:#}"), "cannot update the tree after a pass");
        }
        report
    }

    /// The errors a pass leaves on the cluster's vertex and its nodes' (apt lists).
    fn show_errors(
        &self,
        cluster: &PathId,
        error: Option<String>,
        nodes: Vec<(String, Option<String>)>,
    ) {
        let mut live = self.live();
        live.set_error(cluster, error);
        for (node, error) in nodes {
            if let Ok(n) = cluster.node(&node) {
                live.set_error(&n, error);
            }
        }
    }

    /// Observe, reconcile and write one pass; returns the online nodes whose apt list is
    /// due (all of them when `force_node_updates`), judged on the snapshot read here.
    async fn pass(
        &self,
        record: &ClusterRecord,
        force_node_updates: bool,
        report: &mut DiscoveryReport,
    ) -> Result<Vec<String>> {
        let client = self.client(record)?;
        let before = client.requests_sent();
        let result = build::observe(client.as_ref(), Some(&record.name)).await;
        report.api_calls = client.requests_sent() - before;
        let mut obs = result?;
        let snapshot = self.store.cluster_inventory(record.id).await?;
        let old = stored_observation(record, &snapshot);
        // An offline node's guests lose their names in /cluster/resources; keep the last known.
        for g in obs
            .guests
            .iter_mut()
            .filter(|g| obs.unnamed.contains(&g.vmid))
        {
            if let Some(known) = old.guests.iter().find(|o| o.vmid == g.vmid) {
                g.name = known.name.clone();
            }
        }
        let (old_inv, _) = build::to_inventory(&old)?;
        let (new_inv, warnings) = build::to_inventory(&obs)?;
        for w in warnings {
            tracing::warn!(cluster = %record.name, "{w}");
        }
        let changes = reconcile(&old_inv, &new_inv);
        report.changes = changes
            .iter()
            .map(|c| format!("{} {}", c.event_type(), c.subject()))
            .collect();
        report.nodes = obs.nodes.len();
        report.guests = obs.guests.len();
        let now = Utc::now();
        let due = obs
            .nodes
            .iter()
            .filter(|n| n.status == "online")
            .filter(|n| {
                force_node_updates
                    || snapshot
                        .nodes
                        .iter()
                        .find(|s| s.cluster_id == record.id && s.row.name == n.name)
                        .and_then(|s| s.apt_checked_at)
                        .is_none_or(|t| now - t >= self.node_updates_every)
            })
            .map(|n| n.name.clone())
            .collect();
        let events = changes
            .iter()
            .map(|c| InventoryEvent {
                event_type: c.event_type(),
                subject: c.subject().to_string(),
                vmid: c.subject().vmid(),
                payload: serde_json::to_value(c).unwrap_or_default(),
            })
            .collect();
        self.store
            .apply_discovery(DiscoveryWrite {
                cluster_id: record.id,
                at: report.at.unwrap_or_else(Utc::now),
                standalone: obs.standalone,
                nodes: obs.nodes,
                guests: obs.guests,
                events,
            })
            .await?;
        Ok(due)
    }

    /// Fetch the apt lists of `due` nodes, [`NODE_UPDATES_AT_ONCE`] at a time, each with the
    /// PVE timeout; returns the error each refreshed node now shows.
    async fn refresh_node_updates(
        &self,
        record: &ClusterRecord,
        due: Vec<String>,
        report: &mut DiscoveryReport,
    ) -> Result<Vec<(String, Option<String>)>> {
        let mut shown = Vec::new();
        let client = self.client(record)?;
        // Hundreds of nodes at once would each hold a TLS connection (and its buffers).
        let slots = Arc::new(tokio::sync::Semaphore::new(NODE_UPDATES_AT_ONCE));
        let mut set = tokio::task::JoinSet::new();
        for node in due {
            let (client, slots) = (client.clone(), slots.clone());
            set.spawn(async move {
                let _slot = slots.acquire_owned().await;
                let r = client.node_apt_updates(&node).await;
                (node, r)
            });
        }
        while let Some(joined) = set.join_next().await {
            let Ok((node, result)) = joined else { continue };
            let (updates, error) = match result {
                Ok(list) => (Some(serde_json::to_value(list)?), None),
                Err(e) => {
                    report.node_errors.push(NodeError {
                        node: node.clone(),
                        error: e.to_string(),
                    });
                    (None, Some(e.to_string()))
                }
            };
            self.store
                .set_node_updates(record.id, &node, Utc::now(), updates, error.as_deref())
                .await?;
            shown.push((node, node_error(None, error.as_deref())));
        }
        report.node_errors.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(shown)
    }

    /// Rebuild the in-memory tree from the store: clusters, nodes, guests, attached agents.
    /// For changes of shape (a cluster added or removed, a pass that changed something);
    /// what agents do reaches the tree through [`super::hosts`].
    pub async fn rebuild(&self) -> Result<()> {
        let _shape = self.structure.lock().await;
        let ticket = self.ticket();
        let snapshot = self.store.inventory().await?;
        let hosts = self.store.list_hosts().await?;
        let docker = Docker::by_host(
            self.store.list_containers().await?,
            self.store.open_image_updates(None).await?,
        );
        let built = Live::build(&snapshot, &hosts, docker, Utc::now(), self.offline_after)?;
        self.live().install(built, ticket);
        Ok(())
    }

    /// After a pass of `record` that changed something: that cluster's subtree again from its
    /// rows in the store (the other clusters are not read).
    async fn rebuild_cluster(&self, record: &ClusterRecord) -> Result<()> {
        let _shape = self.structure.lock().await;
        let ticket = self.ticket();
        let snap = self.store.cluster_inventory(record.id).await?;
        let unknown: Vec<(HostId, GuestId)> = {
            let mut live = self.live();
            live.replace_cluster(&record.name, &snap, Utc::now())?;
            snap.guests
                .iter()
                .filter_map(|g| Some((g.host_id?, g.id)))
                .filter(|(h, _)| !live.knows(*h))
                .collect()
        };
        // Each host reaches the tree at its registration; one attached here that it does not
        // know yet is read now.
        for (host, guest) in unknown {
            if let Some(h) = self.store.get_host(host).await? {
                let docker = self.docker_of(host).await?;
                self.live().refresh(&h, Some(guest), docker, ticket);
            }
        }
        Ok(())
    }

    /// Passes every due cluster, forever: the loop `serve` spawns.
    /// The tree was built by `prepare` before serving, so this only schedules passes.
    pub async fn run_forever(self: Arc<Self>, default_interval: u32) {
        loop {
            let mut sleep_for = Duration::from_secs(60);
            match self.store.list_clusters().await {
                Ok(clusters) => {
                    let now = Utc::now();
                    let mut set = tokio::task::JoinSet::new();
                    for c in clusters {
                        let interval = if c.interval_secs == 0 {
                            default_interval
                        } else {
                            c.interval_secs
                        };
                        let next = c
                            .last_discovery_at
                            .map(|t| t + chrono::Duration::seconds(interval as i64));
                        match next {
                            Some(next) if next > now => {
                                let wait = (next - now).to_std().unwrap_or_default();
                                sleep_for = sleep_for.min(wait);
                            }
                            _ => {
                                let me = self.clone();
                                set.spawn(async move { me.run_pass(&c, false).await });
                                sleep_for =
                                    sleep_for.min(Duration::from_secs(interval.max(1) as u64));
                            }
                        }
                    }
                    while set.join_next().await.is_some() {}
                }
                Err(e) => tracing::error!(error = %e, "cannot list clusters"),
            }
            tokio::select! {
                _ = tokio::time::sleep(sleep_for.max(Duration::from_millis(200))) => {}
                _ = self.wake.notified() => {}
            }
        }
    }
}

/// The observation the store holds for one cluster (the "old" side of reconcile), from its
/// [`Store::cluster_inventory`](canopy_store::InventoryStore::cluster_inventory).
fn stored_observation(record: &ClusterRecord, snap: &InventorySnapshot) -> build::Observed {
    build::Observed {
        name: record.name.clone(),
        standalone: record.standalone,
        nodes: snap
            .nodes
            .iter()
            .filter(|n| n.cluster_id == record.id)
            .map(|n| n.row.clone())
            .collect(),
        guests: snap
            .guests
            .iter()
            .filter(|g| g.cluster_id == record.id)
            .map(|g| g.row.clone())
            .collect(),
        unnamed: Default::default(),
    }
}
