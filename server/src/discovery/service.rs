//! The discovery service: one pass per cluster every `interval_secs` and on demand, the
//! in-memory tree every read is served from, and the PVE nodes' own apt update lists.
//!
//! A pass asks PVE twice (`/cluster/status`, `/cluster/resources`), diffs the result against
//! what the store holds with `canopy_inventory::reconcile`, and hands the new observation and
//! the changes (as events) to the store in one transaction. The tree is then rebuilt from
//! the store, so the database stays the one source of truth. A pass that fails as a whole
//! keeps the last known tree and records the error on the cluster; a node that does not
//! answer its own requests (apt updates) gets the error on its vertex while the rest refresh.

use super::{build, connect, Target};
use crate::auth::sealed::Sealer;
use anyhow::{Context, Result};
use canopy_api_types::clusters::{DiscoveryReport, NodeError};
use canopy_api_types::hosts::Host;
use canopy_api_types::{ClusterId, GuestId, HostId};
use canopy_hypervisor::{Hypervisor, PveClient};
use canopy_inventory::{reconcile, Counts, Inventory, Kind, PathId, Vertex};
use canopy_store::{ClusterRecord, DiscoveryWrite, InventoryEvent, InventorySnapshot, Store};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Notify;

/// An agent that has not checked in for this long shows as offline in the tree.
const AGENT_OFFLINE_AFTER: chrono::Duration = chrono::Duration::minutes(5);

pub struct Discovery {
    store: Arc<dyn Store>,
    sealer: Sealer,
    timeout: Duration,
    node_updates_every: chrono::Duration,
    tree: RwLock<Arc<Inventory>>,
    /// (cluster name, vmid) → guest id, for history lookups by path.
    guest_ids: RwLock<HashMap<(String, u32), GuestId>>,
    clients: Mutex<HashMap<ClusterId, Arc<PveClient>>>,
    pass_locks: Mutex<HashMap<ClusterId, Arc<tokio::sync::Mutex<()>>>>,
    wake: Notify,
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
        Self {
            store,
            sealer,
            timeout: Duration::from_secs(settings.pve_timeout_secs.max(1)),
            node_updates_every: chrono::Duration::seconds(
                settings.node_updates_interval_secs as i64,
            ),
            tree: RwLock::new(Arc::new(Inventory::new())),
            guest_ids: RwLock::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            pass_locks: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        }
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The current tree (cheap to clone; replaced, never mutated, after each pass).
    pub fn tree(&self) -> Arc<Inventory> {
        self.tree.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn guest_id(&self, path: &PathId) -> Option<GuestId> {
        let vmid = path.vmid()?;
        self.guest_ids
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(path.cluster_name().to_string(), vmid))
            .copied()
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
        match self.pass(record, force_node_updates, &mut report).await {
            Ok(due) => {
                if let Err(e) = self.refresh_node_updates(record, due, &mut report).await {
                    tracing::warn!(cluster = %record.name, error = %format!("{e:#}"), "node updates refresh failed");
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
                report.error = Some(msg);
            }
        }
        if let Err(e) = self.rebuild().await {
            tracing::error!(error = %format!("{e:#}"), "cannot rebuild the tree");
        }
        report
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
        let snapshot = self.store.inventory().await?;
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

    /// Fetch the apt lists of `due` nodes concurrently, each with the PVE timeout.
    async fn refresh_node_updates(
        &self,
        record: &ClusterRecord,
        due: Vec<String>,
        report: &mut DiscoveryReport,
    ) -> Result<()> {
        let client = self.client(record)?;
        let mut set = tokio::task::JoinSet::new();
        for node in due {
            let client = client.clone();
            set.spawn(async move {
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
        }
        report.node_errors.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(())
    }

    /// Rebuild the in-memory tree from the store: clusters, nodes, guests, attached agents.
    pub async fn rebuild(&self) -> Result<()> {
        let snapshot = self.store.inventory().await?;
        let hosts = self.store.list_hosts().await?;
        let (inv, ids) = assemble(&snapshot, &hosts)?;
        *self.tree.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(inv);
        *self.guest_ids.write().unwrap_or_else(|e| e.into_inner()) = ids;
        Ok(())
    }

    /// Attach a newly enrolled host to the one unattached, non-template guest with its
    /// hostname, if there is exactly one (the same rule discovery passes apply).
    pub async fn attach_by_hostname(&self, host: &Host) -> Result<()> {
        let tree = self.tree();
        let candidates: Vec<PathId> = tree
            .iter()
            .filter(|v| v.kind.is_guest() && !v.template && v.name == host.hostname)
            .map(|v| v.id.clone())
            .collect();
        let [only] = candidates.as_slice() else {
            return Ok(());
        };
        if tree.get(only).is_some_and(|v| v.host_id.is_some()) {
            return Ok(());
        }
        if let Some(guest) = self.guest_id(only) {
            self.store
                .attach_host(guest, host.id, &canopy_store::Actor::System)
                .await?;
            tracing::info!(host = %host.id, guest = %only, "host attached to its guest by hostname");
            self.rebuild().await?;
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

/// The observation the store holds for one cluster (the "old" side of reconcile).
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

type GuestIds = HashMap<(String, u32), GuestId>;

/// The whole tree from stored rows and hosts: agents attached to their guests, counts.
pub fn assemble(snap: &InventorySnapshot, hosts: &[Host]) -> Result<(Inventory, GuestIds)> {
    let hosts: HashMap<HostId, &Host> = hosts.iter().map(|h| (h.id, h)).collect();
    let names: HashMap<ClusterId, &ClusterRecord> =
        snap.clusters.iter().map(|c| (c.id, c)).collect();
    let mut inv = Inventory::new();
    let mut ids = GuestIds::new();
    for c in &snap.clusters {
        let mut v = Vertex::new(PathId::cluster(&c.name)?);
        v.error = c.last_error.clone();
        inv.upsert(v)?;
    }
    for n in &snap.nodes {
        let Some(c) = names.get(&n.cluster_id) else {
            continue;
        };
        let Ok(id) = PathId::cluster(&c.name)?.node(&n.row.name) else {
            continue;
        };
        let mut v = Vertex::new(id).with_status(n.row.status.clone());
        v.error = n
            .row
            .error
            .clone()
            .or_else(|| n.apt_error.as_ref().map(|e| format!("node updates: {e}")));
        inv.upsert(v)?;
    }
    let now = Utc::now();
    for g in &snap.guests {
        let Some(c) = names.get(&g.cluster_id) else {
            continue;
        };
        let kind = if g.row.kind == "lxc" {
            Kind::Lxc
        } else {
            Kind::Vm
        };
        let Ok(id) = PathId::cluster(&c.name)?
            .node(&g.row.node)
            .and_then(|n| n.guest(kind, g.row.vmid))
        else {
            continue;
        };
        ids.insert((c.name.clone(), g.row.vmid), g.id);
        let mut v = Vertex::new(id)
            .with_name(g.row.name.clone())
            .with_status(g.row.status.clone())
            .with_template(g.row.template)
            .with_tags(g.row.tags.clone());
        v.os = g.os.clone();
        let mut counts = Counts::default();
        match g.host_id.and_then(|h| hosts.get(&h)) {
            Some(h) => {
                v.host_id = Some(h.id.to_string());
                v.machine_id = Some(h.machine_id.clone());
                if v.os.is_none() && !h.os_id.is_empty() {
                    v.os = Some(h.os_id.clone());
                }
                counts.pending = h.pending_updates as u32;
                counts.security = h.security_updates as u32;
                counts.reboot_required = u32::from(h.reboot_required);
                if h.agentless {
                    // Scanned through pct exec: counts, but no agent to be online.
                    v.agent = Some("agentless".into());
                } else {
                    let online = h.last_seen.is_some_and(|t| now - t < AGENT_OFFLINE_AFTER);
                    v.agent = Some(if online { "online" } else { "offline" }.into());
                    v.agent_user = (!h.run_as.is_empty()).then(|| h.run_as.clone());
                    counts.agents_offline = u32::from(!online);
                }
            }
            None if !g.row.template && kind == Kind::Lxc => {
                v.agent = Some("missing".into());
                counts.agents_missing = 1;
            }
            None => {}
        }
        v.counts = counts;
        inv.upsert(v)?;
    }
    Ok((inv, ids))
}
