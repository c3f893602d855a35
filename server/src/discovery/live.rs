//! The tree every read is served from, kept current in memory (docs/design.md §3): the
//! estate as the store last gave it (clusters, nodes, guests), and what the tree shows of
//! each active host (its agent's state, counts, who it runs as), attached to its guest.
//!
//! The shape changes only through a build from the store: of everything ([`Live::build`], at
//! start-up and when a cluster is added or removed) or of one cluster after a discovery pass
//! of it that changed something ([`Live::replace_cluster`]).
//! Host facts change in place: a check-in ([`Live::seen`]) or a fresh read of one host
//! ([`Live::refresh`]) records the host and marks its guest; an agent's five minutes running
//! out are kept in a queue of deadlines. Marked guests are shown again at the next read
//! ([`Live::settle`]), all at once, so many changes between two reads cost one copy of the
//! tree at most (none when no reader still holds the old one), and a read with nothing
//! marked costs nothing. While someone follows the tree ([`super::news`]), what each change
//! showed differently is also gathered as [`News`].

use super::containers::{self, Docker};
use super::news::News;
use anyhow::Result;
use canopy_api_types::agent::HostFacts;
use canopy_api_types::hosts::{Host, HostState};
use canopy_api_types::{ClusterId, GuestId, HostId};
use canopy_inventory::{Counts, Inventory, Kind, PathId, Vertex};
use canopy_store::{ClusterRecord, InventorySnapshot};
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// A guest as the tree needs it beside its vertex.
#[derive(Debug, Clone)]
struct Guest {
    path: PathId,
    /// The OS the store knows for the guest itself (the host's is the fallback).
    os: Option<String>,
    host: Option<HostId>,
}

/// What the tree shows of one active host.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Agent {
    hostname: String,
    machine_id: String,
    os_id: String,
    run_as: String,
    agentless: bool,
    last_seen: Option<DateTime<Utc>>,
    pending: u32,
    security: u32,
    reboot_required: bool,
    /// Its containers and their open image updates.
    docker: Docker,
    /// When a check-in last set the facts above (see [`Live::refresh`]).
    seen_ticket: u64,
}

impl Agent {
    fn of(h: &Host, docker: Docker) -> Agent {
        Agent {
            hostname: h.hostname.clone(),
            machine_id: h.machine_id.clone(),
            os_id: h.os_id.clone(),
            run_as: h.run_as.clone(),
            agentless: h.agentless,
            last_seen: h.last_seen,
            pending: u32::try_from(h.pending_updates).unwrap_or(u32::MAX),
            security: u32::try_from(h.security_updates).unwrap_or(u32::MAX),
            reboot_required: h.reboot_required,
            docker,
            seen_ticket: 0,
        }
    }

    /// Keeps what a check-in after `ticket` told (it is newer than a read started then).
    fn keep_newer_seen(&mut self, old: &Agent, ticket: u64) {
        if old.seen_ticket > ticket {
            self.hostname.clone_from(&old.hostname);
            self.os_id.clone_from(&old.os_id);
            self.run_as.clone_from(&old.run_as);
            self.seen_ticket = old.seen_ticket;
        }
        self.last_seen = self.last_seen.max(old.last_seen);
    }
}

pub(super) struct Live {
    pub(super) tree: Arc<Inventory>,
    guests: HashMap<GuestId, Guest>,
    /// (cluster, vmid) → guest: a guest's stable identity, whatever node it is on.
    keys: HashMap<(String, u32), GuestId>,
    hosts: HashMap<HostId, Agent>,
    /// Host → the guest it is attached to.
    at: HashMap<HostId, GuestId>,
    /// When each agent that is online now goes offline, earliest first.
    deadlines: BTreeSet<(DateTime<Utc>, HostId)>,
    /// Guests whose vertex is shown again at the next [`Live::settle`].
    dirty: HashSet<GuestId>,
    offline_after: Duration,
    /// Someone follows the tree: gather [`News`].
    pub(super) listening: bool,
    pub(super) news: News,
}

impl Live {
    pub(super) fn empty(offline_after: Duration) -> Live {
        Live {
            tree: Arc::new(Inventory::new()),
            guests: HashMap::new(),
            keys: HashMap::new(),
            hosts: HashMap::new(),
            at: HashMap::new(),
            deadlines: BTreeSet::new(),
            dirty: HashSet::new(),
            offline_after,
            listening: false,
            news: News::default(),
        }
    }

    /// The whole tree from stored rows and the active hosts among `hosts` (with what
    /// `docker` holds of their containers).
    pub(super) fn build(
        snap: &InventorySnapshot,
        hosts: &[Host],
        mut docker: HashMap<HostId, Docker>,
        now: DateTime<Utc>,
        offline_after: Duration,
    ) -> Result<Live> {
        let mut live = Live::empty(offline_after);
        for h in hosts.iter().filter(|h| h.state == HostState::Active) {
            let d = docker.remove(&h.id).unwrap_or_default();
            live.hosts.insert(h.id, Agent::of(h, d));
            live.set_deadline(h.id, None);
        }
        let mut inv = Inventory::new();
        live.add(&mut inv, snap, now)?;
        // Agents already offline are shown so: no deadline left to wait for.
        live.deadlines.retain(|&(d, _)| d > now);
        live.tree = Arc::new(inv);
        Ok(live)
    }

    /// Replaces one cluster's subtree with `snap` (that cluster's rows alone, as the store
    /// has them after a pass that changed something); the other clusters stay as they are.
    pub(super) fn replace_cluster(
        &mut self,
        name: &str,
        snap: &InventorySnapshot,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tree = std::mem::take(&mut self.tree);
        let inv = Arc::make_mut(&mut tree);
        let cluster = PathId::cluster(name)?;
        let old = inv.remove(&cluster);
        for v in &old {
            let Some(vmid) = v.vmid.filter(|_| v.kind.is_guest()) else {
                continue;
            };
            if let Some(g) = self.keys.remove(&(name.to_string(), vmid)) {
                self.dirty.remove(&g);
                if let Some(h) = self.guests.remove(&g).and_then(|guest| guest.host) {
                    self.at.remove(&h);
                }
            }
        }
        let added = self.add(inv, snap, now);
        if self.listening {
            self.news_of_replace(inv, &cluster, old);
        }
        self.tree = tree;
        added
    }

    /// What replacing the cluster's old vertices with those now in `inv` showed: vertices
    /// changed in place, and the parents of those added or removed.
    fn news_of_replace(&mut self, inv: &Inventory, cluster: &PathId, old: Vec<Vertex>) {
        let mut before: HashMap<PathId, Vertex> =
            old.into_iter().map(|v| (v.id.clone(), v)).collect();
        let now: Vec<&Vertex> = inv
            .get(cluster)
            .into_iter()
            .chain(inv.descendants(cluster))
            .collect();
        for v in now {
            match before.remove(&v.id) {
                Some(b) if b != *v => {
                    self.news.changed.insert(v.id.clone());
                }
                Some(_) => {}
                None => match v.id.parent() {
                    Some(p) => {
                        self.news.reshaped.insert(p);
                    }
                    None => self.news.all = true,
                },
            }
        }
        for gone in before.into_keys() {
            match gone.parent() {
                Some(p) => {
                    self.news.reshaped.insert(p);
                }
                None => self.news.all = true,
            }
        }
    }

    /// Work the tree stream waits for: guests to show again, or news to send.
    pub(super) fn has_news(&self) -> bool {
        self.listening && (!self.dirty.is_empty() || !self.news.is_empty())
    }

    /// When the next agent's time runs out.
    pub(super) fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.deadlines.first().map(|&(d, _)| d)
    }

    /// The vertices of `snap`'s clusters, nodes and guests into `inv`, the guests shown with
    /// the hosts known here.
    fn add(
        &mut self,
        inv: &mut Inventory,
        snap: &InventorySnapshot,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let offline_after = self.offline_after;
        let names: HashMap<ClusterId, &ClusterRecord> =
            snap.clusters.iter().map(|c| (c.id, c)).collect();
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
            v.error = node_error(n.row.error.as_deref(), n.apt_error.as_deref());
            inv.upsert(v)?;
        }
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
            let host = g.host_id.filter(|h| self.hosts.contains_key(h));
            let guest = Guest {
                path: id.clone(),
                os: g.os.clone(),
                host,
            };
            let mut v = Vertex::new(id)
                .with_name(g.row.name.clone())
                .with_status(g.row.status.clone())
                .with_template(g.row.template)
                .with_tags(g.row.tags.clone());
            let agent = host.and_then(|h| self.hosts.get(&h));
            show(&mut v, &guest, agent, now, offline_after);
            let path = v.id.clone();
            inv.upsert(v)?;
            containers::show(inv, &path, agent.map(|a| &a.docker));
            if let Some(h) = host {
                if let Some(before) = self.at.insert(h, g.id).filter(|b| *b != g.id) {
                    // Attached elsewhere before (a host is one machine).
                    if let Some(other) = self.guests.get_mut(&before) {
                        other.host = None;
                    }
                    self.dirty.insert(before);
                }
            }
            self.keys.insert((c.name.clone(), g.row.vmid), g.id);
            self.guests.insert(g.id, guest);
        }
        Ok(())
    }

    /// Takes `built` (read from the store after `ticket` was drawn) as the new state, keeping
    /// what check-ins told since.
    pub(super) fn install(&mut self, mut built: Live, ticket: u64) {
        for (id, old) in &self.hosts {
            if let Some(agent) = built.hosts.get_mut(id) {
                let before = agent.clone();
                agent.keep_newer_seen(old, ticket);
                if *agent != before {
                    if let Some(&g) = built.at.get(id) {
                        built.dirty.insert(g);
                    }
                    built.set_deadline(*id, before.last_seen);
                }
            }
        }
        built.listening = self.listening;
        built.news = std::mem::take(&mut self.news);
        built.news.all = built.listening;
        *self = built;
    }

    pub(super) fn guest_id(&self, cluster: &str, vmid: u32) -> Option<GuestId> {
        self.keys.get(&(cluster.to_string(), vmid)).copied()
    }

    /// Active hosts no guest holds, with their hostnames (a pass may attach them by name).
    pub(super) fn unattached(&self) -> Vec<(HostId, String)> {
        self.hosts
            .iter()
            .filter(|(h, _)| !self.at.contains_key(h))
            .map(|(h, a)| (*h, a.hostname.clone()))
            .collect()
    }

    /// The host is active and known here.
    pub(super) fn knows(&self, host: HostId) -> bool {
        self.hosts.contains_key(&host)
    }

    pub(super) fn attached(&self, host: HostId) -> bool {
        self.at.contains_key(&host)
    }

    /// An agent checked in at `now` with `facts` (already stored).
    pub(super) fn seen(
        &mut self,
        host: HostId,
        facts: &HostFacts,
        now: DateTime<Utc>,
        ticket: u64,
    ) {
        let offline_after = self.offline_after;
        let Some(a) = self.hosts.get_mut(&host) else {
            return; // not active (retired meanwhile) or not known yet: its refresh adds it
        };
        let before = a.clone();
        let was_online = online(a.last_seen, now, offline_after);
        a.hostname.clone_from(&facts.hostname);
        a.os_id.clone_from(&facts.os_id);
        a.run_as.clone_from(&facts.run_as);
        a.last_seen = a.last_seen.max(Some(now));
        a.seen_ticket = ticket;
        let shown_differently = !was_online || a.os_id != before.os_id || a.run_as != before.run_as;
        self.set_deadline(host, before.last_seen);
        if shown_differently {
            self.mark(host);
        }
    }

    /// `host` as read from the store after `ticket` was drawn, attached to `guest`. Returns
    /// a host that attaching it displaced from that guest (the store archived it).
    pub(super) fn refresh(
        &mut self,
        host: &Host,
        guest: Option<GuestId>,
        docker: Docker,
        ticket: u64,
    ) -> Option<HostId> {
        if host.state != HostState::Active {
            self.forget(host.id);
            return None;
        }
        let mut agent = Agent::of(host, docker);
        let old_seen = self.hosts.get(&host.id).and_then(|a| a.last_seen);
        if let Some(old) = self.hosts.get(&host.id) {
            agent.keep_newer_seen(old, ticket);
        }
        self.hosts.insert(host.id, agent);
        self.set_deadline(host.id, old_seen);
        let guest = guest.filter(|g| self.guests.contains_key(g));
        let mut displaced = None;
        if self.at.get(&host.id).copied() != guest {
            self.detach(host.id);
            if let Some(g) = guest {
                let entry = self.guests.get_mut(&g).expect("checked above");
                if let Some(other) = entry.host.replace(host.id) {
                    self.at.remove(&other);
                    displaced = Some(other);
                }
                self.at.insert(host.id, g);
            }
        }
        self.mark(host.id);
        displaced
    }

    /// The host is no longer active (or no longer exists): its guest shows no agent.
    pub(super) fn forget(&mut self, host: HostId) {
        if let Some(a) = self.hosts.remove(&host) {
            if let Some(d) = self.deadline(a.agentless, a.last_seen) {
                self.deadlines.remove(&(d, host));
            }
        }
        self.detach(host);
    }

    /// The error shown on a cluster or node vertex (a pass's or a node apt list's).
    pub(super) fn set_error(&mut self, id: &PathId, error: Option<String>) {
        if self.tree.get(id).is_some_and(|v| v.error != error) {
            let _ = Arc::make_mut(&mut self.tree).update(id, |v| v.error = error);
            if self.listening {
                self.news.changed.insert(id.clone());
            }
        }
    }

    /// Shows every marked guest and every agent whose time ran out by `now`, and returns
    /// the tree.
    pub(super) fn settle(&mut self, now: DateTime<Utc>) -> Arc<Inventory> {
        while let Some(&(deadline, host)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            self.mark(host);
        }
        if !self.dirty.is_empty() {
            let tree = Arc::make_mut(&mut self.tree);
            for g in self.dirty.drain() {
                let Some(guest) = self.guests.get(&g) else {
                    continue;
                };
                let agent = guest.host.and_then(|h| self.hosts.get(&h));
                let shown = tree.update(&guest.path, |v| {
                    let before = self.listening.then(|| v.clone());
                    show(v, guest, agent, now, self.offline_after);
                    before.is_some_and(|b| b != *v)
                });
                let inside = containers::show(tree, &guest.path, agent.map(|a| &a.docker));
                if self.listening {
                    if matches!(shown, Ok(true)) {
                        self.news.changed.insert(guest.path.clone());
                    }
                    if inside.reshaped {
                        self.news.reshaped.insert(guest.path.clone());
                    }
                    self.news.changed.extend(inside.changed);
                }
            }
        }
        self.tree.clone()
    }

    fn detach(&mut self, host: HostId) {
        if let Some(g) = self.at.remove(&host) {
            if let Some(guest) = self.guests.get_mut(&g) {
                guest.host = None;
            }
            self.dirty.insert(g);
        }
    }

    fn mark(&mut self, host: HostId) {
        if let Some(&g) = self.at.get(&host) {
            self.dirty.insert(g);
        }
    }

    fn deadline(&self, agentless: bool, last_seen: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        (!agentless).then_some(last_seen?.checked_add_signed(self.offline_after)?)
    }

    /// Moves `host`'s deadline from the one `old_seen` gave to its current one.
    fn set_deadline(&mut self, host: HostId, old_seen: Option<DateTime<Utc>>) {
        let Some(a) = self.hosts.get(&host) else {
            return;
        };
        let (agentless, seen) = (a.agentless, a.last_seen);
        if let Some(d) = self.deadline(agentless, old_seen) {
            self.deadlines.remove(&(d, host));
        }
        if let Some(d) = self.deadline(agentless, seen) {
            self.deadlines.insert((d, host));
        }
    }
}

fn online(last_seen: Option<DateTime<Utc>>, now: DateTime<Utc>, offline_after: Duration) -> bool {
    last_seen.is_some_and(|t| now - t < offline_after)
}

/// A node's error: its own, else its apt list's.
pub(super) fn node_error(own: Option<&str>, apt: Option<&str>) -> Option<String> {
    own.map(str::to_string)
        .or_else(|| apt.map(|e| format!("node updates: {e}")))
}

/// What a guest's vertex shows of its host (or of its missing agent).
fn show(
    v: &mut Vertex,
    guest: &Guest,
    agent: Option<&Agent>,
    now: DateTime<Utc>,
    offline_after: Duration,
) {
    v.os = guest.os.clone();
    v.host_id = None;
    v.machine_id = None;
    v.agent = None;
    v.agent_user = None;
    let mut counts = Counts::default();
    match (guest.host, agent) {
        (Some(id), Some(h)) => {
            v.host_id = Some(id.to_string());
            v.machine_id = Some(h.machine_id.clone());
            if v.os.is_none() && !h.os_id.is_empty() {
                v.os = Some(h.os_id.clone());
            }
            // Image updates are counted on the containers they move (`containers`).
            counts.pending = h.pending.saturating_sub(h.docker.pending());
            counts.security = h.security;
            counts.reboot_required = u32::from(h.reboot_required);
            if h.agentless {
                // Scanned through pct exec: counts, but no agent to be online.
                v.agent = Some("agentless".into());
            } else {
                let up = online(h.last_seen, now, offline_after);
                v.agent = Some(if up { "online" } else { "offline" }.into());
                v.agent_user = (!h.run_as.is_empty()).then(|| h.run_as.clone());
                counts.agents_offline = u32::from(!up);
            }
        }
        _ if !v.template && v.kind == Kind::Lxc => {
            v.agent = Some("missing".into());
            counts.agents_missing = 1;
        }
        _ => {}
    }
    v.counts = counts;
}
