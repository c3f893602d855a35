//! What agents and operators do to hosts, carried into the in-memory tree as it happens
//! ([`super::live`]): a check-in (its agent online, who it runs as), a host whose store rows
//! changed (a report or a result changes its counts; a registration, an agentless scan, an
//! attachment or a retirement changes where it sits), and the attach-by-hostname rule a
//! registration applies. Each store write that changes what the tree shows of a host is
//! followed by one of these, so `GET /tree` never has to read the database.

use super::containers::Docker;
use super::Discovery;
use anyhow::Result;
use canopy_api_types::agent::HostFacts;
use canopy_api_types::hosts::Host;
use canopy_api_types::HostId;
use canopy_inventory::PathId;
use chrono::{DateTime, Utc};
use std::collections::HashSet;

impl Discovery {
    /// An agent checked in at `now` with `facts` (whatever of them the store keeps is
    /// written already). No store read: the tree learns it from the check-in itself.
    pub fn agent_seen(&self, host: HostId, facts: &HostFacts, now: DateTime<Utc>) {
        let ticket = self.ticket();
        self.live().seen(host, facts, now, ticket);
    }

    /// Reads `host` again (its counts, facts, state and the guest it is attached to) and
    /// shows it: after a report, a command's result, a registration, an agentless scan, an
    /// attachment or a retirement. A host an attachment displaced is read again too.
    pub async fn host_changed(&self, host: HostId) -> Result<()> {
        let _shape = self.structure.lock().await;
        let mut next = Some(host);
        let mut read = 0;
        while let Some(id) = next.take() {
            let ticket = self.ticket();
            let Some(h) = self.store.get_host(id).await? else {
                self.live().forget(id);
                continue;
            };
            let guest = self.store.guest_of_host(id).await?;
            let docker = self.docker_of(id).await?;
            next = self.live().refresh(&h, guest, docker, ticket);
            read += 1;
            if read > 3 {
                break; // a chain of displacements; each host is read at its own next change
            }
        }
        Ok(())
    }

    /// What the tree shows of the host's containers, read from the store.
    pub(super) async fn docker_of(&self, host: HostId) -> Result<Docker> {
        Ok(Docker::new(
            self.store.host_containers(host).await?,
            self.store
                .open_image_updates(Some(host))
                .await?
                .into_iter()
                .map(|(_, reference)| reference),
        ))
    }

    /// A host enrolled: show it where the store attached it (a deploy's token bound to its
    /// guest); otherwise attach it to the one unattached, non-template guest with its
    /// hostname, if there is exactly one (the rule discovery passes apply).
    pub async fn host_registered(&self, host: &Host) -> Result<()> {
        self.host_changed(host.id).await?;
        if self.live().attached(host.id) {
            return Ok(());
        }
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
            self.host_changed(host.id).await?;
        }
        Ok(())
    }

    /// After a pass of `cluster` that changed nothing: reads again the unattached hosts the
    /// pass may have attached by name (a hostname equal to one of its guests' names).
    pub(super) async fn follow_name_matches(&self, cluster: &PathId) -> Result<()> {
        let unattached = self.live().unattached();
        if unattached.is_empty() {
            return Ok(());
        }
        let tree = self.tree();
        let names: HashSet<&str> = tree
            .descendants(cluster)
            .filter(|v| v.kind.is_guest() && !v.template)
            .map(|v| v.name.as_str())
            .collect();
        for (host, _) in unattached
            .iter()
            .filter(|(_, name)| names.contains(name.as_str()))
        {
            self.host_changed(*host).await?;
        }
        Ok(())
    }
}
